//! Held-out verification of the candidates, and the sentence the user wants.
//!
//! The seed notebook verified on the chat model alone, feeding zeros as the base half of the
//! crosscoder input, which the crosscoder never saw in training. Here every verification prompt goes
//! through BOTH models and the crosscoder exactly as the discovery prompts did (same tokenization,
//! same pooling).
//!
//! Per candidate:
//! - **threshold**, fitted on the discovery set only: the midpoint between the candidate's mean
//!   pooled activation on the positive discovery prompts and on the negative ones
//!   ([`fit_threshold`]). (A Youden-optimal cut would fit the discovery set more tightly, and
//!   overfit on a dozen items; the midpoint has no free parameter.)
//! - per prompt: the pooled activation `a` and pass / fail: an `ACTIVATE` prompt passes when
//!   `a > threshold`, a `SILENT` prompt when `a <= threshold`; `NEUTRAL` prompts are reported with no
//!   verdict (they are the baseline).
//! - **AUROC** of ACTIVATE vs SILENT (threshold-free), pass rates and balanced accuracy.
//! - the candidate **passes** when AUROC >= `min_auroc` and balanced accuracy >= `min_balanced_accuracy`
//!   ([`VerificationCriteria`], defaults 0.8 and 0.75).
//!
//! [`conclude`] then picks, per probe, the passing candidate with the highest AUROC, preferring latents
//! the crosscoder classes as chat-only (what chat training added) over shared ones when both pass, and
//! builds the sentence from its data: `Latent #X activates when I say '<ACTIVATE prompt with the highest a>'
//! (a = ...) but not when I say '<SILENT prompt with the lowest a>' (a = ...)`, or says plainly that
//! no candidate passed, or that there was none.

use persona_dataset::Expectation;
use serde::{Deserialize, Serialize, Serializer};

use crosscoder::LatentClass;

use crate::hunt::{ContrastHunt, FeatureKind};
use crate::pooling::shorten;
use crate::stats::{auroc, mean};

/// When a candidate passes verification. Defaults: AUROC >= 0.8 and balanced accuracy >= 0.75.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerificationCriteria {
    /// Smallest AUROC of ACTIVATE vs SILENT.
    pub min_auroc: f64,
    /// Smallest mean of the ACTIVATE and SILENT pass rates at the discovery threshold.
    pub min_balanced_accuracy: f64,
}

impl Default for VerificationCriteria {
    fn default() -> Self {
        VerificationCriteria {
            min_auroc: 0.8,
            min_balanced_accuracy: 0.75,
        }
    }
}

/// The discovery threshold: midpoint of the mean pooled activation on the positive and on the
/// negative discovery prompts.
pub fn fit_threshold(positive: &[f64], negative: &[f64]) -> f64 {
    0.5 * (mean(positive) + mean(negative))
}

pub(crate) fn label<S: Serializer>(e: &Expectation, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(e.label())
}

/// One verification prompt's result for one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptResult {
    /// Index of the prompt among its probe's verification prompts.
    pub index: usize,
    /// `ACTIVATE`, `SILENT` or `NEUTRAL`.
    #[serde(serialize_with = "label")]
    pub expected: Expectation,
    /// The prompt (a conversation's turns joined by blank lines).
    pub prompt: String,
    /// Pooled activation.
    pub activation: f64,
    /// Pass / fail against the threshold (`None` for NEUTRAL).
    pub passed: Option<bool>,
}

/// A candidate's verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateVerification {
    /// The contrast the candidate came from.
    pub contrast: String,
    /// The probe whose prompts were used.
    pub probe: String,
    /// Feature index.
    pub feature: usize,
    /// Threshold fitted on the discovery set.
    pub threshold: f64,
    /// Every prompt of the probe, in dataset order.
    pub prompts: Vec<PromptResult>,
    /// AUROC of ACTIVATE vs SILENT (`None` without both).
    pub auroc: Option<f64>,
    /// Share of ACTIVATE prompts above the threshold.
    pub activate_pass_rate: Option<f64>,
    /// Share of SILENT prompts at or below the threshold.
    pub silent_pass_rate: Option<f64>,
    /// Mean of the two pass rates.
    pub balanced_accuracy: Option<f64>,
    /// Mean activation on ACTIVATE prompts.
    pub mean_activate: Option<f64>,
    /// Mean activation on SILENT prompts.
    pub mean_silent: Option<f64>,
    /// Mean activation on NEUTRAL prompts.
    pub mean_neutral: Option<f64>,
    /// Whether the candidate meets the [`VerificationCriteria`].
    pub passed: bool,
    /// The confound probe sets (kept out of everything above), per set (empty without them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub confounds: Vec<crate::confounds::ConfoundSetResult>,
    /// What the confound sets say: a user model, a cue detector, or narrow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confound_verdict: Option<crate::confounds::ConfoundVerdict>,
    /// The contrast's best single-token detector, scored on the same prompts (with confound sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical: Option<crate::lexical::LexicalBaseline>,
}

impl CandidateVerification {
    fn values(&self, e: Expectation) -> Vec<f64> {
        self.prompts
            .iter()
            .filter(|p| p.expected == e)
            .map(|p| p.activation)
            .collect()
    }

    fn count(&self, e: Expectation, passed: bool) -> usize {
        self.prompts
            .iter()
            .filter(|p| p.expected == e && p.passed == Some(passed))
            .count()
    }
}

fn non_nan(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// Verifies one candidate: `prompts` are the probe's verification prompts (expectation, text) and
/// `activations` their pooled activations, in the same order.
pub fn verify_candidate(
    contrast: &str,
    probe: &str,
    feature: usize,
    threshold: f64,
    prompts: &[(Expectation, String)],
    activations: &[f64],
    criteria: &VerificationCriteria,
) -> CandidateVerification {
    let results: Vec<PromptResult> = prompts
        .iter()
        .zip(activations)
        .enumerate()
        .map(|(index, ((expected, text), a))| PromptResult {
            index,
            expected: *expected,
            prompt: text.clone(),
            activation: *a,
            passed: match expected {
                Expectation::Activate => Some(*a > threshold),
                Expectation::Silent => Some(*a <= threshold),
                Expectation::Neutral => None,
            },
        })
        .collect();
    let mut v = CandidateVerification {
        contrast: contrast.to_string(),
        probe: probe.to_string(),
        feature,
        threshold,
        prompts: results,
        auroc: None,
        activate_pass_rate: None,
        silent_pass_rate: None,
        balanced_accuracy: None,
        mean_activate: None,
        mean_silent: None,
        mean_neutral: None,
        passed: false,
        confounds: Vec::new(),
        confound_verdict: None,
        lexical: None,
    };
    let act = v.values(Expectation::Activate);
    let sil = v.values(Expectation::Silent);
    v.auroc = auroc(&act, &sil);
    let rate = |e: Expectation, n: usize| (n > 0).then(|| v.count(e, true) as f64 / n as f64);
    let (activate_rate, silent_rate) = (
        rate(Expectation::Activate, act.len()),
        rate(Expectation::Silent, sil.len()),
    );
    v.activate_pass_rate = activate_rate;
    v.silent_pass_rate = silent_rate;
    v.balanced_accuracy = match (v.activate_pass_rate, v.silent_pass_rate) {
        (Some(a), Some(s)) => Some(0.5 * (a + s)),
        _ => None,
    };
    v.mean_activate = non_nan(mean(&act));
    v.mean_silent = non_nan(mean(&sil));
    v.mean_neutral = non_nan(mean(&v.values(Expectation::Neutral)));
    v.passed = v.auroc.is_some_and(|a| a >= criteria.min_auroc)
        && v.balanced_accuracy
            .is_some_and(|b| b >= criteria.min_balanced_accuracy);
    v
}

/// Whether a candidate was found, none passed, or there was none to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConclusionStatus {
    /// A candidate passed verification: the sentence names it.
    Found,
    /// Candidates were verified but none passed.
    NonePassed,
    /// No feature survived FDR with a positive effect, or the probe has no prompts.
    NoCandidates,
}

/// The conclusion for one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConclusion {
    /// The probe (`child_novice`, `sycophancy`, ...).
    pub probe: String,
    /// Found, none passed, or no candidates.
    pub status: ConclusionStatus,
    /// The sentence, built from the data.
    pub sentence: String,
    /// Supporting numbers in one line.
    pub details: String,
    /// The feature the sentence is about (the best passing one, else the best verified one).
    pub feature: Option<usize>,
    /// Its contrast.
    pub contrast: Option<String>,
    /// The ACTIVATE prompt with the highest activation, and that activation.
    pub activate_example: Option<(String, f64)>,
    /// The SILENT prompt with the lowest activation, and that activation.
    pub silent_example: Option<(String, f64)>,
}

/// The run's conclusion: the headline sentence and one conclusion per probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conclusion {
    /// The headline status (of the first probe with a found feature, else the first probe).
    pub status: ConclusionStatus,
    /// The headline sentence.
    pub sentence: String,
    /// Per probe, in the order given to [`conclude`].
    pub per_probe: Vec<ProbeConclusion>,
}

fn fmt_a(x: f64) -> String {
    format!("{x:.3}")
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2}"))
}

/// Builds the conclusion from the verifications (see the module docs). `probes` lists the probes in
/// headline priority order, each with the contrasts it verifies.
pub fn conclude(
    verifications: &[CandidateVerification],
    hunts: &[ContrastHunt],
    kind: FeatureKind,
    probes: &[(String, Vec<String>)],
    criteria: &VerificationCriteria,
    fdr: f64,
) -> Conclusion {
    let wording = Wording::of(kind);
    let per_probe: Vec<ProbeConclusion> = probes
        .iter()
        .map(|(probe, contrasts)| {
            let verified: Vec<&CandidateVerification> =
                verifications.iter().filter(|v| &v.probe == probe).collect();
            if verified.is_empty() {
                no_candidate(probe, contrasts, hunts, &wording, fdr)
            } else {
                verified_probe(probe, &verified, hunts, &wording, criteria)
            }
        })
        .collect();
    let headline = per_probe
        .iter()
        .find(|p| p.status == ConclusionStatus::Found)
        .or_else(|| {
            per_probe
                .iter()
                .find(|p| p.status == ConclusionStatus::NonePassed)
        })
        .or(per_probe.first());
    let (status, sentence) = match headline {
        Some(p) => (p.status, p.sentence.clone()),
        None => (
            ConclusionStatus::NoCandidates,
            "No contrast had verification prompts, so nothing was verified.".to_string(),
        ),
    };
    Conclusion {
        status,
        sentence,
        per_probe,
    }
}

/// How the features are named in sentences: `Latent`, or `Dim ... of the chat residual stream`.
struct Wording {
    noun: &'static str,
    suffix: String,
}

impl Wording {
    fn of(kind: FeatureKind) -> Self {
        let suffix = match kind {
            FeatureKind::CrosscoderLatent => String::new(),
            FeatureKind::ResidualDimension { model } => format!(
                " of the {} residual stream",
                if model == 0 { "base" } else { "chat" }
            ),
        };
        Wording {
            noun: kind.noun(),
            suffix,
        }
    }
}

/// The conclusion of a probe with nothing to verify: no significant feature, or only shared ones.
fn no_candidate(
    probe: &str,
    contrasts: &[String],
    hunts: &[ContrastHunt],
    wording: &Wording,
    fdr: f64,
) -> ProbeConclusion {
    let probe_hunts = || {
        hunts
            .iter()
            .filter(|h| contrasts.contains(&h.contrast.category))
    };
    let tested: Vec<String> = probe_hunts()
        .map(|h| {
            format!(
                "{}: {} tested, {} significant",
                h.contrast.category,
                h.n_tested(),
                h.ranked.len()
            )
        })
        .collect();
    // Significant latents with a positive effect that the chat-only filter left out.
    let filtered_out: usize = probe_hunts()
        .map(|h| {
            h.ranked_stats()
                .filter(|s| s.summary.mean > 0.0)
                .filter(|s| s.decoder.is_some_and(|d| d.class != LatentClass::ChatOnly))
                .count()
        })
        .sum();
    let no_candidates = probe_hunts().all(|h| h.candidates.is_empty());
    let noun = wording.noun.to_lowercase();
    let sentence = if filtered_out > 0 && no_candidates {
        format!(
            "{filtered_out} {} survived FDR at {:.0}% with a positive effect in the contrasts of probe \
             `{probe}` ({}), but none of them is chat-only (they decode into the base model too), so \
             there was no chat-specific candidate to verify.",
            if filtered_out == 1 { noun } else { format!("{noun}s") },
            fdr * 100.0,
            contrasts.join(", ")
        )
    } else {
        format!(
            "No {noun} survived FDR at {:.0}% with a positive effect in the contrasts of probe `{probe}` ({}), \
             so there was no candidate to verify.",
            fdr * 100.0,
            contrasts.join(", ")
        )
    };
    ProbeConclusion {
        probe: probe.to_string(),
        status: ConclusionStatus::NoCandidates,
        sentence,
        details: tested.join("; "),
        feature: None,
        contrast: None,
        activate_example: None,
        silent_example: None,
    }
}

/// The best verified candidate of a probe: passed first, then robust chat-only (by Latent Scaling), then
/// chat-only (by its decoder), then AUROC, then balanced accuracy, then the lowest index.
fn best_candidate<'a>(
    verified: &[&'a CandidateVerification],
    hunts: &[ContrastHunt],
) -> &'a CandidateVerification {
    let decoder = |v: &CandidateVerification| {
        hunts
            .iter()
            .filter(|h| h.contrast.category == v.contrast)
            .filter_map(|h| h.stats_of(v.feature)?.decoder)
            .next()
    };
    let score = |v: &CandidateVerification| {
        let d = decoder(v);
        (
            v.passed,
            (
                d.and_then(|d| d.latent_scaling)
                    .is_some_and(|l| l.robust_chat_only),
                d.is_some_and(|d| d.class == LatentClass::ChatOnly),
            ),
            v.auroc.unwrap_or(f64::NEG_INFINITY),
            v.balanced_accuracy.unwrap_or(f64::NEG_INFINITY),
        )
    };
    verified
        .iter()
        .copied()
        .max_by(|a, b| {
            let (pa, ca, aa, ba) = score(a);
            let (pb, cb, ab, bb) = score(b);
            pa.cmp(&pb)
                .then(ca.cmp(&cb))
                .then(aa.total_cmp(&ab))
                .then(ba.total_cmp(&bb))
                .then(b.feature.cmp(&a.feature))
        })
        .expect("non-empty")
}

/// The prompt of `expected` with the highest activation (ACTIVATE) or the lowest (SILENT), shortened.
fn example(best: &CandidateVerification, expected: Expectation) -> Option<(String, f64)> {
    let highest = expected == Expectation::Activate;
    best.prompts
        .iter()
        .filter(|p| p.expected == expected)
        .fold(None::<&PromptResult>, |acc, p| match acc {
            // Ties keep the earlier prompt.
            Some(a) if highest && a.activation >= p.activation => Some(a),
            Some(a) if !highest && a.activation <= p.activation => Some(a),
            _ => Some(p),
        })
        .map(|p| (shorten(&p.prompt, 200), p.activation))
}

/// What Latent Scaling says of a chat-only candidate, as a sentence to append (empty where it did not run
/// or the latent is not chat-only by its decoder).
fn scaling_clause(hunts: &[ContrastHunt], best: &CandidateVerification) -> String {
    let decoder = hunts
        .iter()
        .filter(|h| h.contrast.category == best.contrast)
        .find_map(|h| h.stats_of(best.feature)?.decoder);
    let Some((d, l)) = decoder.and_then(|d| Some((d, d.latent_scaling?))) else {
        return String::new();
    };
    if l.robust_chat_only {
        format!(
            " Latent Scaling confirms it is chat-only (nu_error {:.2}, nu_reconstruction {:.2}).",
            l.nu_error, l.nu_reconstruction
        )
    } else if d.class == LatentClass::ChatOnly {
        format!(
            " It is chat-only by its decoder norm, but Latent Scaling does not confirm it (nu_error {:.2}, \
             nu_reconstruction {:.2}): the base model may carry it too.",
            l.nu_error, l.nu_reconstruction
        )
    } else {
        String::new()
    }
}

/// The discovery numbers of the best candidate, with its decoder class, in one line.
fn discovery_details(hunts: &[ContrastHunt], best: &CandidateVerification) -> String {
    let hunt = hunts.iter().find(|h| h.contrast.category == best.contrast);
    hunt.and_then(|h| h.stats_of(best.feature).map(|s| (h, s)))
        .map(|(h, s)| {
            let decoder = s.decoder.map_or(String::new(), |d| {
                let cosine = if d.cosine_similarity.is_finite() {
                    format!("{:.2}", d.cosine_similarity)
                } else {
                    "n/a: one decoder vector is zero".into()
                };
                let scaling = d.latent_scaling.map_or(String::new(), |l| {
                    format!(
                        "; Latent Scaling: nu_error {:.2}, nu_reconstruction {:.2}, {}",
                        l.nu_error,
                        l.nu_reconstruction,
                        if l.robust_chat_only {
                            "robust chat-only"
                        } else {
                            "not robust chat-only"
                        }
                    )
                });
                format!(
                    "; decoder: {} (relative norm {:.2}, cosine {cosine}){scaling}",
                    serde_json::to_value(d.class)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    d.relative_norm,
                )
            });
            format!(
                "discovery on {} ({} vs {}, {} items): mean difference {:.3}, d_z {:.2}, q {:.2e}{decoder}",
                h.contrast.category,
                h.contrast.positive,
                h.contrast.negative,
                s.summary.n,
                s.summary.mean,
                s.summary.effect_size,
                s.q_value
            )
        })
        .unwrap_or_default()
}

/// The conclusion of a probe whose candidates were verified: the best one, found or not.
fn verified_probe(
    probe: &str,
    verified: &[&CandidateVerification],
    hunts: &[ContrastHunt],
    wording: &Wording,
    criteria: &VerificationCriteria,
) -> ProbeConclusion {
    let best = best_candidate(verified, hunts);
    let activate_example = example(best, Expectation::Activate);
    let silent_example = example(best, Expectation::Silent);
    let count = |e: Expectation| best.prompts.iter().filter(|p| p.expected == e).count();
    let (n_activate, n_silent) = (count(Expectation::Activate), count(Expectation::Silent));
    let details = format!(
        "{}; held-out probe `{probe}`: AUROC {} ({n_activate} ACTIVATE vs {n_silent} SILENT), \
         {}/{n_activate} ACTIVATE above and {}/{n_silent} SILENT at or below the discovery threshold {:.3} \
         (balanced accuracy {})",
        discovery_details(hunts, best),
        fmt_opt(best.auroc),
        best.count(Expectation::Activate, true),
        best.count(Expectation::Silent, true),
        best.threshold,
        fmt_opt(best.balanced_accuracy),
    );
    let Wording { noun, suffix } = wording;
    let (status, sentence) = if best.passed {
        let (a_text, a_val) = activate_example.clone().unwrap_or_default();
        let (s_text, s_val) = silent_example.clone().unwrap_or_default();
        (
            ConclusionStatus::Found,
            format!(
                "{noun} #{}{suffix} activates when I say '{a_text}' (a = {}) but not when I say '{s_text}' (a = {}).{}{}",
                best.feature,
                fmt_a(a_val),
                fmt_a(s_val),
                scaling_clause(hunts, best),
                crate::confounds::confound_clause(
                    &best.confounds,
                    best.confound_verdict,
                    best.lexical.as_ref()
                )
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default(),
            ),
        )
    } else {
        (
            ConclusionStatus::NonePassed,
            format!(
                "No candidate passed verification on probe `{probe}` ({} verified; criteria: AUROC >= {:.2} and \
                 balanced accuracy >= {:.2}). The best, {noun} #{}{suffix} from {}, reached AUROC {} and \
                 balanced accuracy {}.",
                verified.len(),
                criteria.min_auroc,
                criteria.min_balanced_accuracy,
                best.feature,
                best.contrast,
                fmt_opt(best.auroc),
                fmt_opt(best.balanced_accuracy)
            ),
        )
    };
    ProbeConclusion {
        probe: probe.to_string(),
        status,
        sentence,
        details,
        feature: Some(best.feature),
        contrast: Some(best.contrast.clone()),
        activate_example,
        silent_example,
    }
}

#[cfg(test)]
mod tests;
