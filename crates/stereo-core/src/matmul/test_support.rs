//! What the tests of the products share: the naive product they are held to, the weights in the
//! other layout, and the comparison.

use half::bf16;

use super::{rounded_through_bf16, WeightElement};

/// The product of the bf16-rounded `x` (`[rows, k]`) and `w` (`[k, n]`), in f64.
pub(super) fn naive(x: &[f32], w: &[bf16], rows: usize, k: usize, n: usize) -> Vec<f64> {
    let x = rounded_through_bf16(x);
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for i in 0..k {
            for j in 0..n {
                out[r * n + j] += x[r * k + i] as f64 * w[i * n + j].widen() as f64;
            }
        }
    }
    out
}

/// `w` (`[k, n]`) stored `[n, k]`, as [`WeightLayout::OutIn`](super::WeightLayout::OutIn) reads it.
pub(super) fn transposed(w: &[bf16], k: usize, n: usize) -> Vec<bf16> {
    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
}

/// Asserts that `got` and `want` have the same length and differ by at most `tolerance` at every
/// index; a failure names `what`, the index and both values.
pub(super) fn assert_within(got: &[f32], want: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (j, (g, e)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - e).abs() <= tolerance,
            "{what} [{j}]: {g} vs {e}"
        );
    }
}
