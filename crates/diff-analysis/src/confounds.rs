//! Confound probes: does a verified latent model *the user*, or detect a word? A probe's confound sets
//! (`persona_dataset::CONFOUND_SETS`: the cue about someone else, denied, quoted; a child's writing with
//! no cue word; the cue in an earlier turn; a belief attributed to someone else, ...) are run with its
//! direct prompts but kept out of the pooled verdict. Per set, at the candidate's discovery threshold:
//! how many prompts land on the expected side, the mean activation, and the AUROC of the set against the
//! direct prompts of the opposite expectation (a SILENT set against the direct ACTIVATE prompts: 1 means
//! perfectly separated, 0.5 means the latent cannot tell the confound from the real thing).
//!
//! A candidate is reported as a **user model** when every confound set passes (at least
//! `min_balanced_accuracy` of its prompts on the expected side), as a **cue detector** when a SILENT set
//! fails, and as **narrow** when only an ACTIVATE set fails (it misses the cue without its word).

use persona_dataset::Expectation;
use serde::Serialize;

use crate::lexical::LexicalBaseline;
use crate::stats::{auroc, mean};
use crate::verify::{label, CandidateVerification};

/// One confound set's result for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfoundSetResult {
    /// The set (`third_person`, `negated`, ...).
    pub set: String,
    /// What its prompts expect.
    #[serde(serialize_with = "label")]
    pub expected: Expectation,
    /// Its prompts.
    pub n: usize,
    /// Prompts on the expected side of the threshold.
    pub passed: usize,
    /// `passed / n`.
    pub pass_rate: f64,
    /// Mean pooled activation.
    pub mean_activation: f64,
    /// AUROC of the set against the direct prompts of the opposite expectation (`None` without them).
    pub auroc_vs_direct: Option<f64>,
    /// Whether the pass rate reaches the criterion.
    pub ok: bool,
    /// Per prompt: the text and its activation.
    pub prompts: Vec<(String, f64)>,
}

/// What the confound sets say about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfoundVerdict {
    /// Every set passes.
    UserModel,
    /// A SILENT set fails: it fires on the cue word where the user is not the one described.
    CueDetector,
    /// Only an ACTIVATE set fails: it misses the user's state without the cue word.
    Narrow,
}

/// A confound prompt with its activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfoundPrompt {
    /// Its set.
    pub set: String,
    /// Its expectation.
    pub expected: Expectation,
    /// Its text.
    pub text: String,
    /// The candidate's pooled activation on it.
    pub activation: f64,
}

/// The per-set results of a candidate, in first-appearance order of the sets, and the verdict (`None`
/// without confound prompts). With a `lexical` baseline, a candidate that passes every set but no more
/// confound prompts than the word detector is a cue detector too.
pub fn confound_results(
    v: &CandidateVerification,
    prompts: &[ConfoundPrompt],
    min_pass_rate: f64,
    lexical: Option<&LexicalBaseline>,
) -> (Vec<ConfoundSetResult>, Option<ConfoundVerdict>) {
    let mut sets: Vec<&str> = Vec::new();
    for p in prompts {
        if !sets.contains(&p.set.as_str()) {
            sets.push(&p.set);
        }
    }
    let direct = |e: Expectation| -> Vec<f64> {
        v.prompts
            .iter()
            .filter(|p| p.expected == e)
            .map(|p| p.activation)
            .collect()
    };
    let results: Vec<ConfoundSetResult> = sets
        .iter()
        .map(|set| {
            let members: Vec<&ConfoundPrompt> = prompts.iter().filter(|p| p.set == *set).collect();
            let expected = members[0].expected;
            let values: Vec<f64> = members.iter().map(|p| p.activation).collect();
            let passed = members
                .iter()
                .filter(|p| match p.expected {
                    Expectation::Activate => p.activation > v.threshold,
                    Expectation::Silent => p.activation <= v.threshold,
                    Expectation::Neutral => true,
                })
                .count();
            let auroc_vs_direct = match expected {
                Expectation::Silent => auroc(&direct(Expectation::Activate), &values),
                Expectation::Activate => auroc(&values, &direct(Expectation::Silent)),
                Expectation::Neutral => None,
            };
            let pass_rate = passed as f64 / members.len() as f64;
            ConfoundSetResult {
                set: set.to_string(),
                expected,
                n: members.len(),
                passed,
                pass_rate,
                mean_activation: mean(&values),
                auroc_vs_direct,
                ok: expected == Expectation::Neutral || pass_rate >= min_pass_rate,
                prompts: members
                    .iter()
                    .map(|p| (p.text.clone(), p.activation))
                    .collect(),
            }
        })
        .collect();
    let verdict = (!results.is_empty()).then(|| {
        let failed = |e: Expectation| results.iter().any(|r| r.expected == e && !r.ok);
        let passed: usize = results.iter().map(|r| r.passed).sum();
        let no_better_than_words = lexical.is_some_and(|l| passed <= l.confound_passed());
        if failed(Expectation::Silent) || (no_better_than_words && !failed(Expectation::Activate)) {
            ConfoundVerdict::CueDetector
        } else if failed(Expectation::Activate) {
            ConfoundVerdict::Narrow
        } else {
            ConfoundVerdict::UserModel
        }
    });
    (results, verdict)
}

/// The sentence's clause for a candidate's confound results (`None` without them).
pub fn confound_clause(
    results: &[ConfoundSetResult],
    verdict: Option<ConfoundVerdict>,
    lexical: Option<&LexicalBaseline>,
) -> Option<String> {
    let verdict = verdict?;
    let list = |ok: bool| -> String {
        results
            .iter()
            .filter(|r| r.ok == ok)
            .map(|r| format!("{} {}/{}", r.set.replace('_', " "), r.passed, r.n))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match verdict {
        ConfoundVerdict::UserModel => format!(
            "On the confound probes it behaves as a model of the user ({}).",
            list(true)
        ),
        ConfoundVerdict::CueDetector => {
            let failing = list(false);
            let words = lexical
                .map(|l| {
                    format!(
                        " The word `{}` alone puts {} of the {} confound prompts on the expected side; the latent {}.",
                        l.token.replace('\u{2581}', ""),
                        l.confound_passed(),
                        results.iter().map(|r| r.n).sum::<usize>(),
                        results.iter().map(|r| r.passed).sum::<usize>()
                    )
                })
                .unwrap_or_default();
            if failing.is_empty() {
                format!("But on the confound probes it does no better than a word detector: a cue detector, not a user model.{words}")
            } else {
                format!(
                    "But on the confound probes it fires where the user is not the one described ({failing} on the expected side): a cue detector, not a user model.{words}"
                )
            }
        }
        ConfoundVerdict::Narrow => format!(
            "On the confound probes it stays silent where it should, but misses the user without the cue word ({} on the expected side).",
            list(false)
        ),
    })
}
