//! Choosing the next token from a row of logits: greedy, or sampled after HF's warpers in HF's order
//! (temperature, then top-k, then top-p).

use stereo_core::rng::SplitMix64;

use crate::error::{GemmaError, Result};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// The most likely token (the first one on an exact tie, as `torch.argmax`).
    #[default]
    Greedy,
    /// A draw from the warped distribution.
    Sample(SamplingParams),
}

/// The warpers of a sampled decoding, applied in HF's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by this (must be positive).
    pub temperature: f32,
    /// Keep the `k` most likely tokens (and any tied with the k-th).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (in `(0, 1]`).
    pub top_p: Option<f32>,
    /// Seeds the draws: the same seed gives the same tokens on every run of the same backend (on
    /// different backends, logits that differ in the last bits may break near-ties differently).
    pub seed: u64,
}

impl Sampling {
    /// Checks the parameters (a positive temperature, `top_k >= 1`, `top_p` in `(0, 1]`).
    pub fn validate(&self) -> Result<()> {
        let Sampling::Sample(p) = self else {
            return Ok(());
        };
        let bad = |reason: String| Err(GemmaError::InvalidInput { reason });
        if !(p.temperature.is_finite() && p.temperature > 0.0) {
            return bad(format!(
                "temperature must be positive, got {}",
                p.temperature
            ));
        }
        if p.top_k == Some(0) {
            return bad("top-k must be at least 1".into());
        }
        if let Some(top_p) = p.top_p {
            if !(top_p > 0.0 && top_p <= 1.0) {
                return bad(format!("top-p must be in (0, 1], got {top_p}"));
            }
        }
        Ok(())
    }
}

/// Draws tokens for every row of a batch, one generator for the whole run (rows in order).
pub(crate) struct Sampler {
    sampling: Sampling,
    rng: SplitMix64,
}

impl Sampler {
    pub(crate) fn new(sampling: Sampling) -> Result<Self> {
        sampling.validate()?;
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Sample(p) => p.seed,
        };
        Ok(Sampler {
            sampling,
            rng: SplitMix64::new(seed),
        })
    }

    /// The next token of a row with these logits.
    pub(crate) fn next_token(&mut self, logits: &[f32]) -> Result<u32> {
        if let Some(i) = logits.iter().position(|v| v.is_nan()) {
            return Err(GemmaError::InvalidInput {
                reason: format!("the logit of token {i} is NaN"),
            });
        }
        match self.sampling {
            Sampling::Greedy => Ok(argmax(logits)),
            Sampling::Sample(p) => {
                let probs = warped_probabilities(logits, &p);
                Ok(draw(&probs, self.rng.uniform()))
            }
        }
    }
}

/// The index of the largest value, the first one on a tie.
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The distribution after temperature, top-k and top-p (tokens removed get probability 0).
pub(crate) fn warped_probabilities(logits: &[f32], p: &SamplingParams) -> Vec<f64> {
    let mut scores: Vec<f64> = logits
        .iter()
        .map(|v| f64::from(*v / p.temperature))
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Most likely first; the stable sort keeps ids in order among ties.
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    if let Some(k) = p.top_k {
        let k = k.min(scores.len());
        let kth = scores[order[k - 1]];
        for s in scores.iter_mut() {
            if *s < kth {
                *s = f64::NEG_INFINITY;
            }
        }
    }
    let mut probs = softmax(&scores);
    if let Some(top_p) = p.top_p {
        // HF sorts ascending and removes the tokens whose cumulative probability is <= 1 - top_p,
        // always keeping the most likely one. Equivalently, from the most likely down: keep a token
        // while the mass of the tokens less likely than it (itself excluded) is above 1 - top_p.
        let threshold = 1.0 - f64::from(top_p);
        let mut below = 1.0f64;
        for (rank, &i) in order.iter().enumerate() {
            below -= probs[i];
            let cumulative_ascending = below + probs[i];
            if rank > 0 && cumulative_ascending <= threshold {
                probs[i] = 0.0;
            }
        }
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
    }
    probs
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// The token whose cumulative probability first exceeds `u` (in `[0, 1)`).
fn draw(probs: &[f64], u: f64) -> u32 {
    let mut cumulative = 0.0;
    let mut last_possible = 0;
    for (i, q) in probs.iter().enumerate() {
        if *q > 0.0 {
            cumulative += q;
            last_possible = i;
            if u < cumulative {
                return i as u32;
            }
        }
    }
    last_possible as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let p = warped_probabilities(&[1.0, 3.0, 2.0, 2.0, 0.0], &params(1.0, Some(2), None));
        assert!(p[0] == 0.0 && p[4] == 0.0);
        assert!(p[1] > 0.0 && p[2] > 0.0 && p[3] > 0.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn top_p_matches_hf_on_a_worked_example() {
        // probabilities 0.5, 0.3, 0.15, 0.05: HF sorts ascending (0.05, 0.15, 0.3, 0.5), cumulative
        // 0.05, 0.2, 0.5, 1.0, and removes cumulative <= 1 - 0.75 = 0.25: the 0.05 and 0.15 tokens.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let p = warped_probabilities(&logits, &params(1.0, None, Some(0.75)));
        assert!(
            (p[0] - 0.625).abs() < 1e-6 && (p[1] - 0.375).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!((p[2], p[3]), (0.0, 0.0));
        // A tiny top-p keeps the most likely token only.
        let p = warped_probabilities(&logits, &params(1.0, None, Some(1e-6)));
        assert_eq!(p, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0f32, 0.0];
        let cold = warped_probabilities(&logits, &params(0.5, None, None));
        let hot = warped_probabilities(&logits, &params(2.0, None, None));
        assert!(cold[0] > hot[0] && hot[0] > 0.5);
        let expected = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((cold[0] - expected).abs() < 1e-12);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_frequencies_follow_the_probabilities() {
        let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
        let sampling = Sampling::Sample(SamplingParams {
            seed: 7,
            ..params(1.0, None, None)
        });
        let run = || {
            let mut s = Sampler::new(sampling).unwrap();
            (0..20_000)
                .map(|_| s.next_token(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let share = |t: u32| a.iter().filter(|x| **x == t).count() as f64 / a.len() as f64;
        assert!((share(0) - 0.6).abs() < 0.015 && (share(2) - 0.1).abs() < 0.01);
    }

    #[test]
    fn bad_parameters_and_nan_logits_are_errors() {
        for bad in [
            params(0.0, None, None),
            params(1.0, Some(0), None),
            params(1.0, None, Some(0.0)),
            params(1.0, None, Some(1.5)),
        ] {
            assert!(Sampler::new(Sampling::Sample(bad)).is_err());
        }
        let mut s = Sampler::new(Sampling::Greedy).unwrap();
        assert!(s.next_token(&[0.0, f32::NAN]).is_err());
    }
}
