//! Paired statistics for the hunt, with the conventions SciPy uses (checked against SciPy's own
//! numbers in `fixtures/diff-analysis/stats_fixtures.json`).
//!
//! For one latent and a contrast, item `i` gives a difference `d_i = pooled(positive_i) - pooled(negative_i)`.
//!
//! | quantity | definition | SciPy |
//! |---|---|---|
//! | mean | `sum d_i / n` | `np.mean` |
//! | sd | sample standard deviation, `ddof = 1` (NaN for `n < 2`) | `np.std(ddof=1)` |
//! | effect size | paired Cohen's `d_z = mean / sd` (±inf when `sd = 0` and `mean != 0`, 0 when both are 0) | `ttest_rel(...).statistic / sqrt(n)` |
//! | sign fraction | fraction of items with `d_i > 0` (the expected sign: more active on the positive variant) | - |
//! | p-value | two-sided paired sign-flip permutation test of the mean difference | `permutation_test(..., permutation_type='samples')` |
//! | q-value | Benjamini-Hochberg adjusted p-value | `false_discovery_control(method='bh')` |
//! | AUROC | Mann-Whitney `U / (n1 n2)`, ties count one half | `mannwhitneyu(x, y).statistic / (n1 n2)` |
//!
//! The paired summary and the sign-flip permutation test (exact up to `exact_max_items` items,
//! Monte Carlo with Besag & Clifford's sequential stopping beyond, seeded per latent) live in
//! `stereo_core::paired`, shared with the causal tests, and are re-exported here.

pub use stereo_core::paired::{
    mean, paired_summary, sign_flip_test, PairedSummary, PermutationOptions, PermutationResult,
};

/// Benjamini-Hochberg adjusted p-values (q-values), in the order of `p`: `q_(i) = min_{j >= i} p_(j) k / j`
/// over the p-values sorted ascending, capped at 1. A latent is a discovery at level `alpha` when
/// `q <= alpha`. NaN p-values are treated as 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let k = p.len();
    let clean: Vec<f64> = p
        .iter()
        .map(|v| if v.is_nan() { 1.0 } else { *v })
        .collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|a, b| clean[*a].total_cmp(&clean[*b]).then(a.cmp(b)));
    let mut q = vec![0.0; k];
    let mut running = f64::INFINITY;
    for (rank, &i) in order.iter().enumerate().rev() {
        let value = clean[i] * k as f64 / (rank + 1) as f64;
        running = running.min(value);
        q[i] = running.min(1.0);
    }
    q
}

/// Area under the ROC curve of `positive` vs `negative` scores: the Mann-Whitney `U` of `positive`
/// divided by `n1 n2` (ties count one half). `None` when either side is empty.
pub fn auroc(positive: &[f64], negative: &[f64]) -> Option<f64> {
    if positive.is_empty() || negative.is_empty() {
        return None;
    }
    let mut u = 0.0;
    for a in positive {
        for b in negative {
            if a > b {
                u += 1.0;
            } else if a == b {
                u += 0.5;
            }
        }
    }
    Some(u / (positive.len() * negative.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bh_of_a_classic_example() {
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.02, 0.05]);
        for v in q {
            assert!((v - 0.05).abs() < 1e-12);
        }
        assert_eq!(benjamini_hochberg(&[]), Vec::<f64>::new());
    }

    #[test]
    fn auroc_counts_ties_as_half() {
        assert_eq!(auroc(&[1.0, 1.0], &[1.0]), Some(0.5));
        assert_eq!(auroc(&[2.0], &[1.0, 3.0]), Some(0.5));
        assert_eq!(auroc(&[], &[1.0]), None);
    }
}
