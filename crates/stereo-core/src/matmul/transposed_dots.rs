//! `x @ W^T` for a few rows of `x` and bf16 weights stored `[n, k]` (the tied embedding, as the
//! unembedding of a decoding step reads it) with `vdpbf16ps`: each output is a dot product over one
//! contiguous row of the weights, 32 bf16 per instruction, four accumulators deep.
//!
//! The one-pass kernel of [`skinny`](super::skinny) widens each bf16 to f32 and multiplies and adds
//! them in separate instructions; here one instruction does all of it for 32 values, so a thread
//! keeps more of the memory's bandwidth busy (the unembedding is a fifth of a Gemma-2-2b decoding
//! step's bytes).

use half::bf16;
use rayon::prelude::*;

use super::Bf16Input;

/// Rows of the weights (outputs) per task.
const ROWS_PER_TASK: usize = 256;

/// bf16 values per instruction.
const LANES: usize = 32;

/// Whether this CPU runs the kernel (AVX512-BF16, with AVX512F and AVX512BW for its masked loads).
pub(super) fn is_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x @ w_t^T` with `x` `[rows, k]` (f32, rounded to bf16 first, or bf16) and `w_t` `[n, k]`;
/// returns `[rows, n]` f32.
///
/// # Panics
/// If the lengths do not match the shape, or the CPU lacks the kernel's instructions
/// ([`is_available`]).
pub(super) fn matmul<X: Bf16Input>(
    x: &[X],
    w_t: &[bf16],
    (rows, k, n): (usize, usize, usize),
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x");
    assert_eq!(w_t.len(), n * k, "w_t");
    assert!(is_available(), "vdpbf16ps needs AVX512-BF16");
    let x: Vec<bf16> = x.iter().map(|v| v.to_bf16()).collect();
    let mut by_column = vec![0f32; n * rows];
    if rows == 0 || k == 0 {
        return by_column;
    }
    by_column
        .par_chunks_mut(ROWS_PER_TASK * rows)
        .zip(w_t.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(out, w_t)| {
            for (out, w_row) in out.chunks_exact_mut(rows).zip(w_t.chunks_exact(k)) {
                for (o, x_row) in out.iter_mut().zip(x.chunks_exact(k)) {
                    // SAFETY: the CPU has the instructions (checked above); both rows hold `k`.
                    *o = unsafe { avx512_dot(x_row, w_row) };
                }
            }
        });
    if rows == 1 {
        return by_column;
    }
    let mut out = vec![0f32; rows * n];
    for (j, column) in by_column.chunks_exact(rows).enumerate() {
        for (r, &v) in column.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
    out
}

/// `a . b` in f32, pairs of products summed by `vdpbf16ps` in four chains of 16 lanes.
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512-BF16; `a` and `b` have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn avx512_dot(a: &[bf16], b: &[bf16]) -> f32 {
    use std::arch::x86_64::*;
    let len = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr().cast::<i16>(), b.as_ptr().cast::<i16>());
    // SAFETY (all loads): offsets below `len`, or masked to the values below it.
    let load = |p: *const i16, i: usize| unsafe {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.add(i).cast()))
    };
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 4 * LANES <= len {
        for (c, acc) in acc.iter_mut().enumerate() {
            let at = i + c * LANES;
            *acc = _mm512_dpbf16_ps(*acc, load(pa, at), load(pb, at));
        }
        i += 4 * LANES;
    }
    while i < len {
        let left = (len - i).min(LANES);
        let mask = if left == LANES {
            u32::MAX
        } else {
            (1u32 << left) - 1
        };
        // SAFETY: the mask keeps the loads to the `left` values from `i`, inside both slices.
        let (x, y) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, pa.add(i))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, pb.add(i))),
            )
        };
        acc[0] = _mm512_dpbf16_ps(acc[0], x, y);
        i += left;
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx512_dot(_: &[bf16], _: &[bf16]) -> f32 {
    unreachable!("checked by is_available")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::test_support::{assert_within, naive, transposed};
    use crate::matmul::to_bf16;

    #[test]
    fn equals_a_naive_product_on_odd_shapes() {
        if !is_available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // `k` below, at and past one block of four instructions, with every kind of tail.
        for (rows, k, n) in [
            (1, 1, 1),
            (1, 31, 300),
            (2, 128, 257),
            (3, 161, 40),
            (12, 2304, 9),
        ] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let w = to_bf16(
                &(0..n * k)
                    .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
                    .collect::<Vec<_>>(),
            );
            let got = matmul(&x, &w, (rows, k, n));
            // `w` is `[n, k]`: read as `[k, n]` for the naive product.
            let want = naive(&x, &transposed(&w, n, k), rows, k, n);
            assert_within(&got, &want, 1e-5 * k as f64, &format!("{rows}x{k}x{n}"));
        }
    }
}
