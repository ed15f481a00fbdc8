//! `x @ W` for an `x` of a few rows, the products of a decoding step (one row per sequence), on the
//! host: every weight is read from memory exactly once, in order, so a step runs at the memory
//! bandwidth rather than at the speed of a GEMM made for many rows.
//!
//! The rows of `W` (`[k, n]`, row-major) are split into one contiguous range per thread, so that each
//! thread streams its share of the weights front to back; each thread sums its range into partial
//! outputs, which are added at the end. Within a range, four weight rows at a time are combined with
//! two rows of `x` at a time over a tile of columns small enough for the tile's outputs and weights to
//! stay in the L2 cache. On x86-64 CPUs with AVX2 the loops are compiled for AVX2 (chosen at run
//! time).
//!
//! The weights are f32 or bf16 ([`WeightElement`]); bf16 weights are widened to f32 in the registers,
//! so a bf16 step reads half the bytes of an f32 one. Sums are f32 either way.

use rayon::prelude::*;

use super::WeightElement;

/// Products with at most this many rows go through [`skinny_matmul`]; larger ones are GEMMs.
pub const MAX_ROWS: usize = 12;

/// Columns of a tile when `x` has several rows: four rows of weights and two of outputs, 96 KiB, stay
/// in the L2 cache while a tile is worked on (measured best of 512 to 9216 on a Zen 3 EPYC).
const TILE_COLUMNS: usize = 4096;

/// `x @ w` with `x` `[rows, k]` and `w` `[k, n]`, both row-major; returns `[rows, n]`.
///
/// # Panics
/// If `x` is not `rows * k` long or `w` not `k * n`.
pub fn skinny_matmul<W: WeightElement>(
    x: &[f32],
    w: &[W],
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x");
    assert_eq!(w.len(), k * n, "w");
    let parts = rayon::current_num_threads().clamp(1, k.div_ceil(4).max(1));
    let per_part = k.div_ceil(parts).next_multiple_of(4);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let start = (part * per_part).min(k);
            let end = (start + per_part).min(k);
            let mut out = vec![0.0; rows * n];
            accumulate(&mut out, x, w, (rows, k, n), start..end);
            out
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut out = partials.next().unwrap_or_else(|| vec![0.0; rows * n]);
    for partial in partials {
        for (o, p) in out.iter_mut().zip(&partial) {
            *o += p;
        }
    }
    out
}

/// `x @ w_t^T` with `x` `[rows, k]` and `w_t` `[n, k]` (the weight stored transposed, as the tied
/// embedding is), both row-major; returns `[rows, n]`. Each output is one dot product over a
/// contiguous row of `w_t`; threads take contiguous ranges of those rows.
///
/// # Panics
/// If `x` is not `rows * k` long or `w_t` not `n * k`.
pub fn skinny_matmul_transposed<W: WeightElement>(
    x: &[f32],
    w_t: &[W],
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x");
    assert_eq!(w_t.len(), n * k, "w_t");
    if k == 0 {
        return vec![0.0; rows * n];
    }
    const COLUMNS_PER_TASK: usize = 256;
    // `[n, rows]` first: each task writes a contiguous block.
    let mut by_column = vec![0.0; n * rows];
    by_column
        .par_chunks_mut(COLUMNS_PER_TASK * rows.max(1))
        .zip(w_t.par_chunks(COLUMNS_PER_TASK * k))
        .for_each(|(out, w_t)| dots(out, x, w_t, rows, k));
    let mut out = vec![0.0; rows * n];
    for (j, column) in by_column.chunks_exact(rows.max(1)).enumerate() {
        for (r, &v) in column.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
    out
}

/// `out[j, r] = x[r] . w_t[j]` for the rows `j` of `w_t`, compiled for AVX2 where the CPU has it.
fn dots<W: WeightElement>(out: &mut [f32], x: &[f32], w_t: &[W], rows: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `dots_avx2`.
        unsafe { dots_avx2(out, x, w_t, rows, k) };
        return;
    }
    dots_portable(out, x, w_t, rows, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dots_avx2<W: WeightElement>(out: &mut [f32], x: &[f32], w_t: &[W], rows: usize, k: usize) {
    dots_portable(out, x, w_t, rows, k);
}

/// The loops of [`dots`], inlined into each instruction-set variant.
#[inline(always)]
fn dots_portable<W: WeightElement>(out: &mut [f32], x: &[f32], w_t: &[W], rows: usize, k: usize) {
    const LANES: usize = 16;
    for (out, w_row) in out.chunks_exact_mut(rows).zip(w_t.chunks_exact(k)) {
        for (o, x_row) in out.iter_mut().zip(x.chunks_exact(k)) {
            let mut acc = [0f32; LANES];
            let (w_chunks, x_chunks) = (w_row.chunks_exact(LANES), x_row.chunks_exact(LANES));
            let tail: f32 = w_chunks
                .remainder()
                .iter()
                .zip(x_chunks.remainder())
                .map(|(a, b)| a.widen() * b)
                .sum();
            for (wc, xc) in w_chunks.zip(x_chunks) {
                for ((a, &wv), &xv) in acc.iter_mut().zip(wc).zip(xc) {
                    *a += wv.widen() * xv;
                }
            }
            *o = acc.iter().sum::<f32>() + tail;
        }
    }
}

/// `out += x[:, range] @ w[range, :]`, compiled for AVX2 where the CPU has it.
fn accumulate<W: WeightElement>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    shape: (usize, usize, usize),
    range: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only requirement of `accumulate_avx2`.
        unsafe { accumulate_avx2(out, x, w, shape, range) };
        return;
    }
    accumulate_portable(out, x, w, shape, range);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_avx2<W: WeightElement>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    shape: (usize, usize, usize),
    range: std::ops::Range<usize>,
) {
    accumulate_portable(out, x, w, shape, range);
}

/// The loops of [`accumulate`], inlined into each instruction-set variant.
#[inline(always)]
fn accumulate_portable<W: WeightElement>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    (rows, k, n): (usize, usize, usize),
    range: std::ops::Range<usize>,
) {
    // One row of `x` streams the weights once: the tile is the whole row of outputs.
    let tile = if rows == 1 { n } else { TILE_COLUMNS.min(n) };
    // With one row of bf16 weights eight weight rows go together: half the passes over the row of
    // outputs (in the L2 cache) per byte of weights read (measured 1.2x on a bf16 decoding step).
    let eight = rows == 1 && std::mem::size_of::<W>() == 2;
    let mut c0 = 0;
    while c0 < n {
        let nb = tile.min(n - c0);
        let columns = c0..c0 + nb;
        let i = if eight {
            sweep::<W, 8>(out, x, w, (rows, k, n), columns, range.clone())
        } else {
            sweep::<W, 4>(out, x, w, (rows, k, n), columns, range.clone())
        };
        for i in i..range.end {
            let w_row = &w[i * n + c0..][..nb];
            for r in 0..rows {
                let xi = x[r * k + i];
                let acc = &mut out[r * n + c0..][..nb];
                for (a, &v) in acc.iter_mut().zip(w_row) {
                    *a += xi * v.widen();
                }
            }
        }
        c0 += nb;
    }
}

/// `out[:, columns] += x[:, i..i + R] @ w[i..i + R, columns]` for the weight rows `i` of `range` in
/// groups of `R`; returns the first row not done (fewer than `R` were left).
#[inline(always)]
fn sweep<W: WeightElement, const R: usize>(
    out: &mut [f32],
    x: &[f32],
    w: &[W],
    (rows, k, n): (usize, usize, usize),
    columns: std::ops::Range<usize>,
    range: std::ops::Range<usize>,
) -> usize {
    let mut i = range.start;
    while i + R <= range.end {
        let w_rows: [&[W]; R] =
            std::array::from_fn(|d| &w[(i + d) * n + columns.start..][..columns.len()]);
        let mut r = 0;
        while r < rows {
            let group = (rows - r).min(2);
            let mut accs = out[r * n..(r + group) * n]
                .chunks_exact_mut(n)
                .map(|row| &mut row[columns.clone()]);
            let x_rows = |g: usize| -> [f32; R] { std::array::from_fn(|d| x[(r + g) * k + i + d]) };
            if group == 2 {
                let a = [(); 2].map(|_| accs.next().unwrap_or_default());
                row_group(a, [x_rows(0), x_rows(1)], w_rows)
            } else {
                let a = [(); 1].map(|_| accs.next().unwrap_or_default());
                row_group(a, [x_rows(0)], w_rows)
            }
            r += group;
        }
        i += R;
    }
    i
}

/// `acc[g] += x[g][0] w[0] + ... + x[g][R - 1] w[R - 1]` (summed left to right) for `G` rows at once,
/// so that each weight is loaded once for all of them (`G` at most 2: more spills the broadcast `x`
/// values out of the registers).
#[inline(always)]
fn row_group<W: WeightElement, const G: usize, const R: usize>(
    mut acc: [&mut [f32]; G],
    x: [[f32; R]; G],
    w: [&[W]; R],
) {
    let nb = w[0].len();
    let w = w.map(|row| &row[..nb]);
    for a in acc.iter_mut() {
        assert_eq!(a.len(), nb);
    }
    for j in 0..nb {
        let v: [f32; R] = std::array::from_fn(|d| w[d][j].widen());
        for g in 0..G {
            let mut sum = x[g][0] * v[0];
            for d in 1..R {
                sum += x[g][d] * v[d];
            }
            acc[g][j] += sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..n {
                    out[r * n + j] += x[r * k + i] as f64 * w[i * n + j] as f64;
                }
            }
        }
        out
    }

    /// A skinny product `(x, w, rows, k, n) -> [rows, n]`.
    type Product = fn(&[f32], &[f32], usize, usize, usize) -> Vec<f32>;

    /// `product(x, w as given, rows, k, n)` against a naive product, for 1 to [`MAX_ROWS`] rows; `w` is
    /// handed over `[n, k]` when `transposed`.
    fn check_against_naive(product: Product, transposed: bool, shapes: &[(usize, usize)]) {
        for &(k, n) in shapes {
            for rows in 1..=MAX_ROWS {
                let x = values(rows * k, (rows * 31 + k) as u64);
                let w = values(k * n, (n * 7 + k) as u64);
                let given = if transposed {
                    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
                } else {
                    w.clone()
                };
                let got = product(&x, &given, rows, k, n);
                let want = naive(&x, &w, rows, k, n);
                for (j, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - e).abs() <= 1e-5 * (k as f64).sqrt().max(1.0),
                        "rows {rows} k {k} n {n} [{j}]: {g} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn equals_a_naive_product_for_every_row_count_and_ragged_shape() {
        let shapes = [(1, 1), (3, 5), (4, 17), (37, 700), (130, 1031), (8, 2)];
        check_against_naive(skinny_matmul::<f32>, false, &shapes);
    }

    #[test]
    fn the_transposed_form_equals_a_naive_product() {
        check_against_naive(
            skinny_matmul_transposed::<f32>,
            true,
            &[(1, 1), (3, 5), (17, 600), (40, 257)],
        );
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros() {
        assert_eq!(skinny_matmul::<f32>(&[], &[], 3, 0, 2), vec![0.0; 6]);
        assert_eq!(
            skinny_matmul_transposed::<f32>(&[], &[], 3, 0, 2),
            vec![0.0; 6]
        );
    }

    #[test]
    #[should_panic(expected = "w")]
    fn refuses_a_weight_of_the_wrong_length() {
        skinny_matmul::<f32>(&[1.0, 2.0], &[1.0; 5], 1, 2, 3);
    }
}
