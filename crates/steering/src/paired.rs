//! Paired statistics over items: each item measured twice (unedited and edited), and the question is
//! whether the change is real. Reported as the mean change with its 95% Student-t interval (SciPy's
//! `ttest_1samp(d).confidence_interval(0.95)`) and the two-sided sign-flip permutation p-value of the
//! mean (SciPy's `permutation_test((d,), mean, permutation_type="samples")`), from
//! `stereo_core::paired`: exact over all `2^n` sign patterns up to [`EXACT_SIGN_FLIP_MAX_ITEMS`] items,
//! seeded Monte Carlo above. `tests/paired_statistics.rs` checks both against SciPy on fixed numbers.

use serde::Serialize;
use stereo_core::paired::{paired_summary, sign_flip_test, t_quantile, PermutationOptions};

/// Up to this many items the sign-flip test enumerates every sign pattern (2^20 = 1,048,576).
pub const EXACT_SIGN_FLIP_MAX_ITEMS: usize = 20;
/// Most random sign patterns drawn above [`EXACT_SIGN_FLIP_MAX_ITEMS`] items.
pub const SIGN_FLIP_RESAMPLES: usize = 200_000;

/// The change of a per-item measurement from unedited to edited, over items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedStats {
    /// Items with a finite change.
    pub n: usize,
    /// The mean change.
    pub mean: f64,
    /// The sample standard deviation of the changes (n - 1; NaN below two items).
    pub sd: f64,
    /// The lower end of the 95% t interval of the mean (NaN below two items).
    pub ci_low: f64,
    /// The upper end.
    pub ci_high: f64,
    /// The two-sided sign-flip p-value of the mean.
    pub p_value: f64,
    /// Whether `p_value` enumerated every sign pattern.
    pub exact: bool,
}

impl PairedStats {
    /// The statistics of `after[i] - before[i]`.
    ///
    /// # Panics
    /// If the two slices differ in length (a programming error: the items are the same).
    pub fn of_pairs(before: &[f64], after: &[f64]) -> Self {
        assert_eq!(before.len(), after.len(), "paired measurements");
        let changes: Vec<f64> = before.iter().zip(after).map(|(b, a)| a - b).collect();
        Self::of_changes(&changes)
    }

    /// The statistics of per-item changes; non-finite changes are left out (and not counted in `n`).
    pub fn of_changes(changes: &[f64]) -> Self {
        let d: Vec<f64> = changes.iter().copied().filter(|v| v.is_finite()).collect();
        let summary = paired_summary(&d);
        let n = d.len();
        let half = if n > 1 {
            t_quantile(0.975, (n - 1) as f64) * summary.sd / (n as f64).sqrt()
        } else {
            f64::NAN
        };
        let options = PermutationOptions {
            exact_max_items: EXACT_SIGN_FLIP_MAX_ITEMS,
            max_resamples: SIGN_FLIP_RESAMPLES,
            stop_after_exceedances: SIGN_FLIP_RESAMPLES,
            seed: 0,
        };
        let test = sign_flip_test(&d, &options, 0);
        PairedStats {
            n,
            mean: summary.mean,
            sd: summary.sd,
            ci_low: summary.mean - half,
            ci_high: summary.mean + half,
            p_value: if n == 0 { f64::NAN } else { test.p_value },
            exact: test.exact,
        }
    }

    /// Whether the 95% interval lies wholly on one side of 0.
    pub fn excludes_zero(&self) -> bool {
        self.ci_low > 0.0 || self.ci_high < 0.0
    }

    /// `"+0.412 [0.201, 0.623], p = 0.001, n = 30"`.
    pub fn describe(&self) -> String {
        format!(
            "{:+.3} [{:.3}, {:.3}], p = {}, n = {}",
            self.mean,
            self.ci_low,
            self.ci_high,
            format_p(self.p_value),
            self.n
        )
    }
}

/// A p-value with as many digits as it needs (`0.043`, `2.4e-5`).
pub fn format_p(p: f64) -> String {
    if p >= 0.001 || p == 0.0 || !p.is_finite() {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consistent_shift_is_significant_and_noise_is_not() {
        let shift: Vec<f64> = (0..12).map(|i| 1.0 + 0.1 * f64::from(i % 3)).collect();
        let stats = PairedStats::of_changes(&shift);
        assert!(stats.excludes_zero() && stats.mean > 1.0);
        // Every change positive: only the all-plus and all-minus patterns are as extreme.
        assert_eq!(stats.p_value, 2.0 / 4096.0);
        assert!(stats.exact);
        let noise = [0.5, -0.4, 0.3, -0.6, 0.1, -0.2, 0.45, -0.35];
        let stats = PairedStats::of_changes(&noise);
        assert!(!stats.excludes_zero() && stats.p_value > 0.5);
    }

    #[test]
    fn degenerate_inputs_give_nan_not_a_panic() {
        let none = PairedStats::of_changes(&[f64::NAN]);
        assert_eq!(none.n, 0);
        assert!(none.mean.is_nan() && none.p_value.is_nan());
        let one = PairedStats::of_changes(&[2.0]);
        assert_eq!((one.n, one.mean, one.p_value), (1, 2.0, 1.0));
        assert!(one.ci_low.is_nan() && !one.excludes_zero());
        assert_eq!(PairedStats::of_changes(&[0.0; 5]).p_value, 1.0);
    }

    #[test]
    fn many_items_use_the_seeded_monte_carlo_estimate() {
        let d: Vec<f64> = (0..30).map(|i| f64::from(i % 7) - 2.0).collect();
        let first = PairedStats::of_changes(&d);
        assert!(!first.exact);
        assert_eq!(first, PairedStats::of_changes(&d));
        assert!(first.p_value > 0.0 && first.p_value <= 1.0);
    }

    #[test]
    fn p_values_print_readably() {
        assert_eq!(format_p(0.0432), "0.043");
        assert_eq!(format_p(0.000_024), "2.4e-5");
    }
}
