//! The bf16 product on CPUs without bf16 arithmetic: the weights are widened to f32 one block of
//! columns at a time (in parallel, into a buffer that stays in the L3 cache), and each block is
//! multiplied by the `gemm` crate's f32 kernel straight into its columns of the output.
//!
//! Memory holds bf16 weights; the f32 copy is one block (at most [`BLOCK_BYTES`]) at a time. The
//! widening costs one pass over the block, amortised over every row of `x`.

use half::bf16;
use rayon::prelude::*;

use super::{WeightElement, WeightLayout};

/// The size of one widened block of weights: half of a 32 MiB L3 cache, so that the block is still
/// cached when `gemm` packs it, and few enough blocks that `gemm`'s per-call work (packing `x`,
/// waking its threads) stays small. Measured on a 2-core EPYC (32 MiB L3) at 64 and 512 rows of
/// `gate_proj`: 1 MiB 41 / - ms, 4 MiB 25.2 / 180 ms, 8 MiB 23.1 / 130 ms, 16 MiB 22.6 / 132 ms,
/// 32 MiB 26.5 / 133 ms (f32 `gemm`: 20.7 / 141 ms). `STEREO_BF16_BLOCK_BYTES` overrides it.
const BLOCK_BYTES: usize = 16 << 20;

/// [`BLOCK_BYTES`], or `STEREO_BF16_BLOCK_BYTES` when set to a number of bytes (read once).
fn block_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("STEREO_BF16_BLOCK_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&b: &usize| b > 0)
            .unwrap_or(BLOCK_BYTES)
    })
}

/// `x @ W` with `x` `[rows, k]` already rounded to bf16 values, `W` the `[k, n]` operand stored in
/// `layout`; returns `[rows, n]`.
pub(super) fn matmul(
    x: &[f32],
    w: &[bf16],
    layout: WeightLayout,
    (rows, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    if k == 0 || n == 0 || rows == 0 {
        return out;
    }
    let block = (block_bytes() / (4 * k)).clamp(16, n.next_multiple_of(16));
    let mut widened = vec![0f32; k * block];
    for n0 in (0..n).step_by(block) {
        let nb = block.min(n - n0);
        let widened = &mut widened[..k * nb];
        widen_block(w, layout, (k, n), n0..n0 + nb, widened);
        // The block as the `[k, nb]` right operand: element (i, j) at `i * rs + j * cs`.
        let (rs, cs) = match layout {
            WeightLayout::InOut => (nb, 1),
            WeightLayout::OutIn => (1, k),
        };
        // SAFETY: `x` holds `rows * k` values read at `r * k + i`; `widened` holds `k * nb` read at
        // `i * rs + j * cs < k * nb`; the output columns `n0..n0 + nb` of `out` (`rows * n` values)
        // are written at `r * n + n0 + j`. All three are live, distinct allocations.
        unsafe {
            gemm::gemm(
                rows,
                nb,
                k,
                out.as_mut_ptr().add(n0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                widened.as_ptr(),
                cs as isize,
                rs as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
    out
}

/// The columns `columns` of the `[k, n]` operand, widened into `out` in the block layout: `[k, nb]`
/// for [`WeightLayout::InOut`], `[nb, k]` for [`WeightLayout::OutIn`] (contiguous runs of the stored
/// matrix either way).
fn widen_block(
    w: &[bf16],
    layout: WeightLayout,
    (k, n): (usize, usize),
    columns: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let nb = columns.len();
    match layout {
        WeightLayout::InOut => out
            .par_chunks_mut(nb)
            .with_min_len(16)
            .enumerate()
            .for_each(|(i, row)| widen(&w[i * n + columns.start..][..nb], row)),
        WeightLayout::OutIn => out
            .par_chunks_mut(k)
            .with_min_len(4)
            .zip(w[columns.start * k..columns.end * k].par_chunks(k))
            .for_each(|(row, stored)| widen(stored, row)),
    }
}

/// `out[i] = values[i]` as f32.
fn widen(values: &[bf16], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = v.widen();
    }
}
