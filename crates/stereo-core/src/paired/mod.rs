//! Paired statistics with SciPy's conventions: the summary of paired differences and the two-sided
//! sign-flip permutation test of their mean (`diff-analysis` checks both against SciPy's numbers in
//! `fixtures/diff-analysis/stats_fixtures.json`), and the Student-t interval of a mean (checked
//! against SciPy in `crates/steering/tests/paired_statistics.rs`). Shared by the hunt and by the
//! causal tests.
//!
//! **The permutation test.** Under the null hypothesis (the edit or the variant does not matter) each
//! difference is as likely to be `+d_i` as `-d_i`. The statistic is `T = sum_i d_i`, the
//! p-value the share of sign patterns `s` with `|sum_i s_i d_i| >= |T|` (a relative tolerance of
//! `1e-9 * sum_i |d_i|` absorbs rounding, so exact ties count as ties). This equals SciPy's
//! `permutation_test((d,), mean, permutation_type='samples', alternative='two-sided')`, since the
//! sign-flip null is symmetric.
//! - For `n <= exact_max_items` (default 16, at most 65,536 patterns) every pattern is enumerated:
//!   the p-value is exact and equals SciPy's.
//! - Otherwise patterns are drawn at random (SplitMix64, seeded by the run's seed and a stream index,
//!   so results are reproducible and independent of thread scheduling), with the sequential
//!   stopping rule of Besag & Clifford (1991): stop at the `h`-th exceedance after `l` draws with
//!   `p = h / l`, or after `m` draws with `b < h` exceedances and `p = (b + 1) / (m + 1)`. Both are
//!   valid p-values; tests far from significance stop after a few dozen draws, and only strong ones
//!   use all `m`. `m` must be large enough for FDR control over many tests to be reachable (the
//!   smallest possible p-value is `1 / (m + 1)`, the first Benjamini-Hochberg cut is `q / k` for `k`
//!   tests): [`PermutationOptions::resolving`] picks `m >= 10 k / q`.

mod student_t;

pub use student_t::{t_cdf, t_quantile};

use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// Mean, spread, effect size and sign consistency of paired differences.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedSummary {
    /// Number of items.
    pub n: usize,
    /// Mean difference.
    pub mean: f64,
    /// Sample standard deviation (`ddof = 1`); NaN for fewer than two items.
    pub sd: f64,
    /// Paired Cohen's `d_z = mean / sd` (±inf for `sd = 0 != mean`, 0 for `sd = 0 = mean`, NaN for `n < 2`).
    pub effect_size: f64,
    /// Fraction of items whose difference is positive.
    pub sign_fraction: f64,
}

/// [`PairedSummary`] of differences `d` (accumulated in f64).
pub fn paired_summary(d: &[f64]) -> PairedSummary {
    let n = d.len();
    if n == 0 {
        return PairedSummary {
            n,
            mean: f64::NAN,
            sd: f64::NAN,
            effect_size: f64::NAN,
            sign_fraction: f64::NAN,
        };
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = if n < 2 {
        f64::NAN
    } else {
        (d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    let effect_size = if sd.is_nan() {
        f64::NAN
    } else if sd > 0.0 {
        mean / sd
    } else if mean == 0.0 {
        0.0
    } else {
        mean.signum() * f64::INFINITY
    };
    let sign_fraction = d.iter().filter(|x| **x > 0.0).count() as f64 / n as f64;
    PairedSummary {
        n,
        mean,
        sd,
        effect_size,
        sign_fraction,
    }
}

/// Mean of `x` (NaN when empty).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        f64::NAN
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// How the sign-flip permutation test runs. Defaults: exact up to 16 items, at most 100,000 random
/// sign patterns beyond, stop after 50 exceedances, seed 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermutationOptions {
    /// Enumerate all `2^n` sign patterns when `n <= exact_max_items` (at most 24).
    pub exact_max_items: usize,
    /// Most random sign patterns per latent (`m`).
    pub max_resamples: usize,
    /// Stop a latent's sampling at this many exceedances (`h` of Besag & Clifford).
    pub stop_after_exceedances: usize,
    /// Seed of the random sign patterns.
    pub seed: u64,
}

impl Default for PermutationOptions {
    fn default() -> Self {
        PermutationOptions {
            exact_max_items: 16,
            max_resamples: 100_000,
            stop_after_exceedances: 50,
            seed: 0,
        }
    }
}

impl PermutationOptions {
    /// Largest accepted `exact_max_items` (2^24 patterns per latent).
    pub const EXACT_LIMIT: usize = 24;
    /// Largest number of random patterns [`resolving`](Self::resolving) asks for.
    pub const MAX_AUTO_RESAMPLES: usize = 20_000_000;

    /// The same options with `max_resamples` raised so that the smallest attainable p-value,
    /// `1 / (m + 1)`, is ten times below the first Benjamini-Hochberg cut `fdr / n_tests`
    /// (capped at [`MAX_AUTO_RESAMPLES`](Self::MAX_AUTO_RESAMPLES)).
    pub fn resolving(mut self, n_tests: usize, fdr: f64) -> Self {
        let needed = (10.0 * n_tests.max(1) as f64 / fdr.max(1e-12)).ceil();
        let needed = needed.min(Self::MAX_AUTO_RESAMPLES as f64) as usize;
        self.max_resamples = self.max_resamples.max(needed);
        self
    }

    /// The smallest p-value a test of `n` items can return under these options (exact: `2 / 2^n`,
    /// since a pattern and its mirror image give the same `|T|`).
    pub fn p_floor(&self, n: usize) -> f64 {
        if n <= self.exact_max_items.min(Self::EXACT_LIMIT) {
            2f64.powi(1 - n as i32).min(1.0)
        } else {
            1.0 / (self.max_resamples as f64 + 1.0)
        }
    }
}

/// The outcome of one permutation test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PermutationResult {
    /// The two-sided p-value.
    pub p_value: f64,
    /// Sign patterns evaluated (`2^n` when exact).
    pub resamples: usize,
    /// Whether every pattern was enumerated.
    pub exact: bool,
}

/// The seed of latent `stream`'s sign patterns under `seed`.
fn stream_seed(seed: u64, stream: u64) -> u64 {
    let mut g = SplitMix64::new(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
    g.next_u64()
}

/// Sums of signed differences for every byte of a sign mask: `table[c][mask]` is
/// `sum_k (bit k of mask ? -d : +d)` over the items `8c .. 8c + 8`.
fn byte_tables(d: &[f64]) -> Vec<[f64; 256]> {
    d.chunks(8)
        .map(|chunk| {
            let mut table = [0f64; 256];
            for (mask, entry) in table.iter_mut().enumerate() {
                *entry = chunk
                    .iter()
                    .enumerate()
                    .map(|(k, v)| if mask >> k & 1 == 1 { -v } else { *v })
                    .sum();
            }
            table
        })
        .collect()
}

/// Two-sided paired sign-flip permutation p-value of the mean of `d` (see the module docs).
/// `stream` names the latent, so that every latent gets its own reproducible random patterns.
pub fn sign_flip_test(d: &[f64], options: &PermutationOptions, stream: u64) -> PermutationResult {
    let n = d.len();
    let observed: f64 = d.iter().sum::<f64>().abs();
    let scale: f64 = d.iter().map(|x| x.abs()).sum();
    if n == 0 || scale == 0.0 || !scale.is_finite() {
        return PermutationResult {
            p_value: 1.0,
            resamples: 0,
            exact: true,
        };
    }
    let cut = observed - 1e-9 * scale;
    let tables = byte_tables(d);
    let signed_sum = |mask_words: &[u64]| -> f64 {
        let mut s = 0.0;
        for (c, table) in tables.iter().enumerate() {
            let byte = (mask_words[c / 8] >> ((c % 8) * 8)) & 0xff;
            s += table[byte as usize];
        }
        s
    };
    let exact_max = options.exact_max_items.min(PermutationOptions::EXACT_LIMIT);
    if n <= exact_max {
        let total = 1u64 << n;
        let mut hits = 0u64;
        let mut word = [0u64; 1];
        for mask in 0..total {
            word[0] = mask;
            if signed_sum(&word).abs() >= cut {
                hits += 1;
            }
        }
        return PermutationResult {
            p_value: hits as f64 / total as f64,
            resamples: total as usize,
            exact: true,
        };
    }
    let m = options.max_resamples.max(1);
    let h = options.stop_after_exceedances.max(1);
    let mut rng = SplitMix64::new(stream_seed(options.seed, stream));
    let n_words = n.div_ceil(64);
    let mut words = vec![0u64; n_words];
    let mut exceed = 0usize;
    for l in 1..=m {
        for w in words.iter_mut() {
            *w = rng.next_u64();
        }
        if signed_sum(&words).abs() >= cut {
            exceed += 1;
            if exceed == h {
                return PermutationResult {
                    p_value: h as f64 / l as f64,
                    resamples: l,
                    exact: false,
                };
            }
        }
    }
    PermutationResult {
        p_value: (exceed as f64 + 1.0) / (m as f64 + 1.0),
        resamples: m,
        exact: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_numbers() {
        let s = paired_summary(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.sd - 1.290_994_448_735_805_6).abs() < 1e-12);
        assert_eq!(s.sign_fraction, 1.0);
        let constant = paired_summary(&[0.5, 0.5]);
        assert_eq!(constant.effect_size, f64::INFINITY);
        assert_eq!(paired_summary(&[0.0, 0.0]).effect_size, 0.0);
        assert!(paired_summary(&[1.0]).sd.is_nan());
    }

    #[test]
    fn exact_test_of_all_positive_differences_hits_its_floor() {
        let d = [1.0, 2.0, 3.0, 4.0, 5.0];
        let r = sign_flip_test(&d, &PermutationOptions::default(), 0);
        assert!(r.exact);
        assert_eq!(r.resamples, 32);
        assert_eq!(r.p_value, 2.0 / 32.0);
        assert_eq!(PermutationOptions::default().p_floor(5), r.p_value);
        assert_eq!(
            sign_flip_test(&[0.0, 0.0], &PermutationOptions::default(), 0).p_value,
            1.0
        );
    }

    #[test]
    fn monte_carlo_agrees_with_exact_and_is_reproducible() {
        let mut rng = SplitMix64::new(3);
        // Box-Muller normals.
        let mut normal = || {
            let u1 = 1.0 - rng.uniform();
            let u2 = rng.uniform();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let d: Vec<f64> = (0..16).map(|_| normal() + 0.3).collect();
        let exact = sign_flip_test(&d, &PermutationOptions::default(), 7);
        let mc_options = PermutationOptions {
            exact_max_items: 8,
            max_resamples: 200_000,
            stop_after_exceedances: 100_000,
            seed: 11,
        };
        let mc = sign_flip_test(&d, &mc_options, 7);
        assert!(!mc.exact);
        let se = (exact.p_value * (1.0 - exact.p_value) / mc.resamples as f64).sqrt();
        assert!(
            (mc.p_value - exact.p_value).abs() < 4.0 * se + 1e-5,
            "mc {} vs exact {}",
            mc.p_value,
            exact.p_value
        );
        assert_eq!(mc, sign_flip_test(&d, &mc_options, 7));
        assert_ne!(mc.p_value, sign_flip_test(&d, &mc_options, 8).p_value);
    }

    #[test]
    fn sequential_stopping_ends_early_for_null_latents() {
        let d: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let r = sign_flip_test(&d, &PermutationOptions::default(), 0);
        assert_eq!(r.resamples, 50, "every pattern exceeds |T| = 0");
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn resolving_reaches_the_bh_cut() {
        let o = PermutationOptions::default().resolving(20_000, 0.05);
        assert!(o.p_floor(40) < 0.05 / 20_000.0 / 5.0);
        let small = PermutationOptions::default().resolving(10, 0.05);
        assert_eq!(small.max_resamples, 100_000);
    }
}
