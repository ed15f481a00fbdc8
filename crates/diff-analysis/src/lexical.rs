//! The word detector a latent must beat. From a contrast's discovery items alone, the single token whose
//! presence best separates the positive prompts from the negative ones (balanced accuracy; ties to the
//! lower id). It is then scored on the probe's direct verification prompts (AUROC of presence) and on every
//! confound set, exactly as a latent is: a SILENT prompt passes when the token is absent, an ACTIVATE prompt
//! when it is present. A latent that passes no more confound prompts than this detector is no evidence of a
//! user model (`confounds::ConfoundVerdict::CueDetector`).

use persona_dataset::Expectation;
use serde::Serialize;

use crate::stats::auroc;
use crate::verify::label;

/// One confound set, scored by the word detector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LexicalSet {
    /// The set.
    pub set: String,
    /// Its expectation.
    #[serde(serialize_with = "label")]
    pub expected: Expectation,
    /// Prompts on the expected side.
    pub passed: usize,
    /// Its prompts.
    pub n: usize,
}

/// The best single-token detector of a contrast, and how it fares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LexicalBaseline {
    /// The token, as the vocabulary spells it.
    pub token: String,
    /// Its id.
    pub token_id: u32,
    /// Its balanced accuracy on the discovery items (positive prompts contain it, negative ones do not).
    pub discovery_balanced_accuracy: f64,
    /// AUROC of presence on the direct verification prompts, ACTIVATE vs SILENT.
    pub direct_auroc: Option<f64>,
    /// Per confound set.
    pub sets: Vec<LexicalSet>,
}

impl LexicalBaseline {
    /// Confound prompts on the expected side, over all sets.
    pub fn confound_passed(&self) -> usize {
        self.sets.iter().map(|s| s.passed).sum()
    }
}

/// A tokenized prompt with what it should do.
pub struct TokenizedPrompt<'a> {
    /// Its confound set (`None`: a direct prompt).
    pub set: Option<&'a str>,
    /// Its expectation.
    pub expected: Expectation,
    /// Its token ids.
    pub ids: Vec<u32>,
}

/// The best token on `positive` vs `negative` (each prompt's ids) and its scores on `prompts`; `None` when
/// no token separates the sides at all. `spell` names a token.
pub fn lexical_baseline(
    positive: &[Vec<u32>],
    negative: &[Vec<u32>],
    prompts: &[TokenizedPrompt<'_>],
    spell: &dyn Fn(u32) -> String,
) -> Option<LexicalBaseline> {
    if positive.is_empty() || negative.is_empty() {
        return None;
    }
    let share = |side: &[Vec<u32>], token: u32| {
        side.iter().filter(|ids| ids.contains(&token)).count() as f64 / side.len() as f64
    };
    let mut candidates: Vec<u32> = positive.iter().flatten().copied().collect();
    candidates.sort_unstable();
    candidates.dedup();
    let (token, accuracy) = candidates
        .into_iter()
        .map(|t| (t, 0.5 * (share(positive, t) + 1.0 - share(negative, t))))
        .fold(None, |best: Option<(u32, f64)>, (t, a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((t, a)),
        })?;
    if accuracy <= 0.5 {
        return None;
    }
    let present = |p: &TokenizedPrompt<'_>| f64::from(u8::from(p.ids.contains(&token)));
    let direct = |e: Expectation| -> Vec<f64> {
        prompts
            .iter()
            .filter(|p| p.set.is_none() && p.expected == e)
            .map(present)
            .collect()
    };
    let mut sets: Vec<LexicalSet> = Vec::new();
    for p in prompts {
        let Some(set) = p.set else { continue };
        let passed = match p.expected {
            Expectation::Activate => present(p) > 0.0,
            Expectation::Silent => present(p) == 0.0,
            Expectation::Neutral => true,
        };
        match sets.iter_mut().find(|s| s.set == set) {
            Some(s) => {
                s.n += 1;
                s.passed += usize::from(passed);
            }
            None => sets.push(LexicalSet {
                set: set.to_string(),
                expected: p.expected,
                passed: usize::from(passed),
                n: 1,
            }),
        }
    }
    Some(LexicalBaseline {
        token: spell(token),
        token_id: token,
        discovery_balanced_accuracy: accuracy,
        direct_auroc: auroc(&direct(Expectation::Activate), &direct(Expectation::Silent)),
        sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_token_is_found_and_scored_like_a_latent() {
        // Token 7 ("kid") is in every positive prompt and no negative one.
        let positive = vec![vec![1, 7, 3], vec![1, 7, 4], vec![1, 7, 5]];
        let negative = vec![vec![1, 8, 3], vec![1, 9, 4]];
        let prompts = vec![
            TokenizedPrompt {
                set: None,
                expected: Expectation::Activate,
                ids: vec![1, 7],
            },
            TokenizedPrompt {
                set: None,
                expected: Expectation::Silent,
                ids: vec![1, 2],
            },
            TokenizedPrompt {
                set: Some("third_person"),
                expected: Expectation::Silent,
                ids: vec![1, 7],
            },
            TokenizedPrompt {
                set: Some("third_person"),
                expected: Expectation::Silent,
                ids: vec![1, 2],
            },
        ];
        let b = lexical_baseline(&positive, &negative, &prompts, &|t| format!("t{t}")).unwrap();
        assert_eq!((b.token_id, b.token.as_str()), (7, "t7"));
        assert_eq!(b.discovery_balanced_accuracy, 1.0);
        assert_eq!(b.direct_auroc, Some(1.0));
        assert_eq!(b.sets.len(), 1);
        assert_eq!((b.sets[0].passed, b.sets[0].n), (1, 2));
        assert_eq!(b.confound_passed(), 1);
        // Nothing separates identical sides.
        assert!(lexical_baseline(&positive, &positive, &prompts, &|t| t.to_string()).is_none());
    }
}
