//! The numbers a causal test reports, from logits and token ids: KL divergence between two next-token
//! distributions, negative log-likelihood, the distinct-n repetition guard, and means with 95% confidence
//! intervals across prompts.

use ndarray::ArrayView1;
use serde::Serialize;

/// `log softmax(logits)` in f64.
pub fn log_softmax(logits: ArrayView1<'_, f32>) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v)));
    let log_total = logits
        .iter()
        .map(|v| (f64::from(*v) - max).exp())
        .sum::<f64>()
        .ln();
    logits
        .iter()
        .map(|v| f64::from(*v) - max - log_total)
        .collect()
}

/// `KL(p || q) = sum_v p(v) [log p(v) - log q(v)]` of the distributions with logits `p` and `q`
/// (REFERENCE.md section 5: `p` is the unedited chat model, `q` the intervened one).
pub fn kl_divergence(p: ArrayView1<'_, f32>, q: ArrayView1<'_, f32>) -> f64 {
    let (log_p, log_q) = (log_softmax(p), log_softmax(q));
    log_p
        .iter()
        .zip(&log_q)
        .map(|(lp, lq)| lp.exp() * (lp - lq))
        .sum::<f64>()
        .max(0.0)
}

/// `-log p(token)` under `logits`.
pub fn negative_log_likelihood(logits: ArrayView1<'_, f32>, token: u32) -> f64 {
    -log_softmax(logits)[token as usize]
}

/// Distinct n-grams over all n-grams of `tokens` (1 when there are none): a repetition loop has a low
/// NLL but a low distinct-n ratio.
pub fn distinct_n(tokens: &[u32], n: usize) -> f64 {
    if n == 0 || tokens.len() < n {
        return 1.0;
    }
    let grams: Vec<&[u32]> = tokens.windows(n).collect();
    let mut unique = grams.clone();
    unique.sort_unstable();
    unique.dedup();
    unique.len() as f64 / grams.len() as f64
}

/// A mean across prompts with its 95% normal confidence interval, `mean ± 1.96 sqrt(var / n)` with the
/// sample variance (n - 1), as the science-of-finetuning evaluation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanCi {
    /// The mean.
    pub mean: f64,
    /// Half the interval's width, `1.96 sqrt(var / n)` (0 for one value).
    pub half_width: f64,
    /// How many values.
    pub n: usize,
}

impl MeanCi {
    /// The mean and interval of the finite `values` (NaN mean when there are none).
    pub fn of(values: &[f64]) -> Self {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len();
        if n == 0 {
            return MeanCi {
                mean: f64::NAN,
                half_width: f64::NAN,
                n,
            };
        }
        let mean = finite.iter().sum::<f64>() / n as f64;
        let half_width = if n > 1 {
            let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            1.96 * (variance / n as f64).sqrt()
        } else {
            0.0
        };
        MeanCi {
            mean,
            half_width,
            n,
        }
    }

    /// The interval's lower end.
    pub fn low(&self) -> f64 {
        self.mean - self.half_width
    }

    /// The interval's upper end.
    pub fn high(&self) -> f64 {
        self.mean + self.half_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr1;

    #[test]
    fn mean_and_interval_match_a_reference_computation() {
        // numpy: x = [1, 2, 3, 4, 10]; x.mean() = 4.0; 1.96 * sqrt(x.var(ddof=1) / 5) = 3.0990321...
        let ci = MeanCi::of(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(ci.mean, 4.0);
        assert!(
            (ci.half_width - 3.099_032_106_9).abs() < 1e-9,
            "{}",
            ci.half_width
        );
        assert!((ci.low() - 0.900_967_893_1).abs() < 1e-9);
        // Non-finite values are left out; one value has no width; none has no mean.
        let one = MeanCi::of(&[f64::NAN, 2.5]);
        assert_eq!((one.mean, one.half_width, one.n), (2.5, 0.0, 1));
        assert!(MeanCi::of(&[]).mean.is_nan());
    }

    #[test]
    fn kl_matches_a_hand_computation_and_is_zero_for_equal_logits() {
        // p = softmax([0, ln 3]) = (1/4, 3/4); q = (1/2, 1/2).
        let p = arr1(&[0.0f32, 3.0f32.ln()]);
        let q = arr1(&[0.0f32, 0.0]);
        let expected = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((kl_divergence(p.view(), q.view()) - expected).abs() < 1e-7);
        assert_eq!(kl_divergence(p.view(), p.view()), 0.0);
        // Shifting all logits changes nothing.
        let shifted = p.mapv(|v| v + 7.0);
        assert!(kl_divergence(p.view(), shifted.view()) < 1e-12);
    }

    #[test]
    fn nll_and_distinct_n() {
        let logits = arr1(&[0.0f32, 0.0, 0.0, 0.0]);
        assert!((negative_log_likelihood(logits.view(), 2) - 4f64.ln()).abs() < 1e-12);
        assert_eq!(distinct_n(&[1, 2, 3, 4], 2), 1.0);
        assert_eq!(distinct_n(&[5, 5, 5, 5, 5], 2), 0.25);
        assert_eq!(distinct_n(&[1], 2), 1.0);
    }
}
