//! Fused, multi-threaded Gemma-2 kernels on host memory, for CPU backends whose tensors already
//! live in host memory (burn-flex, where moving a tensor in and out of `TensorData` is free).
//!
//! Each kernel computes the same math, in the same order and precision, as the chain of burn ops
//! in `model.rs` that it replaces (which follows HF transformers' eager Gemma-2), but in one pass
//! over memory and on every rayon thread: burn-flex runs element-wise ops on one thread, and a
//! chain of them (RMSNorm is six ops; rotary embedding, head transposes, soft-cap, mask and softmax
//! about twenty) costs about a third of a CPU forward pass on two cores.
//!
//! The attention products go through the `gemm` crate, the same GEMM burn-flex uses.

use rayon::prelude::*;

/// `x * rsqrt(mean(x^2) + eps) * scale` over rows of `scale.len()`; `scale` holds `1 + w`.
pub(crate) fn rms_norm(x: &[f32], scale: &[f32], eps: f32) -> Vec<f32> {
    let d = scale.len();
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .for_each(|(out_row, row)| {
            let inv_rms = 1.0 / (sum_of_squares(row) / d as f32 + eps).sqrt();
            for ((o, &v), &s) in out_row.iter_mut().zip(row).zip(scale) {
                *o = v * inv_rms * s;
            }
        });
    out
}

/// `sum(x^2)` with sixteen independent accumulators, so that it vectorises.
fn sum_of_squares(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v * v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `-2u = x * (GELU_MINUS_TWO_U.0 + GELU_MINUS_TWO_U.1 * x^2)` for the tanh GELU, where
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`; shared by both kernel paths.
pub(crate) const GELU_MINUS_TWO_U: (f64, f64) = {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    (-2.0 * SQRT_2_OVER_PI, -2.0 * SQRT_2_OVER_PI * 0.044715)
};

/// `gelu_tanh(gate) * up`, element-wise, with `gelu_tanh(x) = x / (1 + exp(-2u))` (see
/// `model::gelu_tanh`).
pub(crate) fn gelu_tanh_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    const A: f32 = GELU_MINUS_TWO_U.0 as f32;
    const B: f32 = GELU_MINUS_TWO_U.1 as f32;
    let mut out = vec![0.0; gate.len()];
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(out, (gate, up))| {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                let minus_two_u = (g * g * B + A) * g;
                *o = g / (minus_two_u.exp() + 1.0) * u;
            }
        });
    out
}

/// `cap * tanh(x / cap)` in place: Gemma-2's soft-capping of the final logits.
pub(crate) fn softcap(x: &mut [f32], cap: f32) {
    x.par_chunks_mut(1 << 14).for_each(|chunk| {
        for v in chunk {
            *v = (*v / cap).tanh() * cap;
        }
    });
}

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub batch: usize,
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Everything one attention call reads. Projections are row-major `[batch, pos, heads * head_dim]`
/// straight out of the linear layers.
pub(crate) struct AttentionInputs<'a> {
    pub shape: AttentionShape,
    /// `[batch, pos, n_heads * head_dim]`.
    pub q: &'a [f32],
    /// `[batch, pos, n_kv_heads * head_dim]`.
    pub k: &'a [f32],
    /// `[batch, pos, n_kv_heads * head_dim]`.
    pub v: &'a [f32],
    /// Rotary tables `[batch, pos, head_dim]`.
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    /// Additive mask `[batch, pos, keys]` (0 or `f32::MIN`); `keys = pos` without a cache.
    pub mask: &'a [f32],
    /// Multiplies `q k^T`.
    pub scale: f32,
    /// `cap * tanh(s / cap)`, applied after the scale and before the mask.
    pub softcap: Option<f32>,
}

/// Gemma-2 eager attention: rotary embedding on `q` and `k`, `softmax(softcap(q k^T * scale) +
/// mask) v` per head, query head `h` reading KV head `h / (n_heads / n_kv_heads)`. Returns
/// `[batch, pos, n_heads * head_dim]`, the input of `o_proj`.
///
/// # Panics
/// If a slice's length does not match `shape` (the callers build both from the same tensors).
pub(crate) fn attention(inputs: &AttentionInputs) -> Vec<f32> {
    let AttentionShape {
        batch: b,
        seq_len: t,
        n_kv_heads,
        head_dim: hd,
        ..
    } = inputs.shape;
    let mut cache = KvBuffers::new(b, n_kv_heads, hd, t);
    cache.write(inputs, 0);
    attend_cached(inputs, &cache, t)
}

/// Rotated keys and values of every position a decoding session has seen, `[batch, kv_heads,
/// capacity, head_dim]` each, on the host.
pub(crate) struct KvBuffers {
    keys: Vec<f32>,
    values: Vec<f32>,
    batch: usize,
    n_kv_heads: usize,
    head_dim: usize,
    capacity: usize,
}

impl KvBuffers {
    /// Zeroed buffers with room for `capacity` positions.
    pub(crate) fn new(batch: usize, n_kv_heads: usize, head_dim: usize, capacity: usize) -> Self {
        let len = batch * n_kv_heads * capacity * head_dim;
        KvBuffers {
            keys: vec![0.0; len],
            values: vec![0.0; len],
            batch,
            n_kv_heads,
            head_dim,
            capacity,
        }
    }

    /// Room for at least `needed` positions, keeping the first `keep`; the capacity at least doubles.
    pub(crate) fn reserve(&mut self, needed: usize, keep: usize) {
        if needed <= self.capacity {
            return;
        }
        let capacity = needed.max(2 * self.capacity);
        let mut grown = KvBuffers::new(self.batch, self.n_kv_heads, self.head_dim, capacity);
        let hd = self.head_dim;
        for bh in 0..self.batch * self.n_kv_heads {
            let (from, to) = (bh * self.capacity * hd, bh * capacity * hd);
            grown.keys[to..][..keep * hd].copy_from_slice(&self.keys[from..][..keep * hd]);
            grown.values[to..][..keep * hd].copy_from_slice(&self.values[from..][..keep * hd]);
        }
        *self = grown;
    }

    /// Writes the rotated keys and the values of `inputs`' positions at slots `start..start + t`.
    ///
    /// # Panics
    /// If the buffers' shape differs from `inputs.shape` or lack room (callers `reserve` first).
    pub(crate) fn write(&mut self, inputs: &AttentionInputs, start: usize) {
        let AttentionShape {
            batch: b,
            seq_len: t,
            n_kv_heads,
            head_dim: hd,
            ..
        } = inputs.shape;
        assert!(b == self.batch && n_kv_heads == self.n_kv_heads && hd == self.head_dim);
        assert!(start + t <= self.capacity, "cache capacity");
        assert_eq!(inputs.k.len(), b * t * n_kv_heads * hd, "k");
        assert_eq!(inputs.v.len(), b * t * n_kv_heads * hd, "v");
        let span = self.capacity * hd;
        self.keys
            .par_chunks_mut(span)
            .zip(self.values.par_chunks_mut(span))
            .enumerate()
            .for_each(|(bh, (keys, values))| {
                let (s, kv) = (bh / n_kv_heads, bh % n_kv_heads);
                rotate_head(
                    inputs,
                    inputs.k,
                    n_kv_heads,
                    s,
                    kv,
                    &mut keys[start * hd..][..t * hd],
                );
                for (i, dst) in values[start * hd..][..t * hd]
                    .chunks_exact_mut(hd)
                    .enumerate()
                {
                    dst.copy_from_slice(&inputs.v[((s * t + i) * n_kv_heads + kv) * hd..][..hd]);
                }
            });
    }
}

/// Attention of `inputs`' queries (the newest positions, already written to `cache`) over the first
/// `len` slots of `cache`; `inputs.mask` is `[batch, pos, len]`. Returns `[batch, pos, n_heads *
/// head_dim]`, the input of `o_proj`.
///
/// # Panics
/// If a slice's length does not match `shape` or `len` exceeds the cache.
pub(crate) fn attend_cached(inputs: &AttentionInputs, cache: &KvBuffers, len: usize) -> Vec<f32> {
    let AttentionShape {
        batch: b,
        seq_len: t,
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = inputs.shape;
    assert_eq!(inputs.q.len(), b * t * n_heads * hd, "q");
    assert_eq!(inputs.cos.len(), b * t * hd, "cos");
    assert_eq!(inputs.sin.len(), b * t * hd, "sin");
    assert_eq!(inputs.mask.len(), b * t * len, "mask");
    assert!(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "GQA groups");
    assert!(len <= cache.capacity && len >= t, "cache length");
    if b * t == 0 {
        return Vec::new();
    }
    let groups = n_heads / n_kv_heads;

    // One task per (sequence, query head), each writing `[pos, head_dim]`.
    let mut per_head = vec![0.0; b * n_heads * t * hd];
    per_head
        .par_chunks_mut(t * hd)
        .enumerate()
        .for_each(|(bh, out)| {
            let (s, h) = (bh / n_heads, bh % n_heads);
            let slots = (s * n_kv_heads + h / groups) * cache.capacity * hd;
            let key = &cache.keys[slots..][..len * hd];
            let value = &cache.values[slots..][..len * hd];
            let mut query = vec![0.0; t * hd];
            rotate_head(inputs, inputs.q, n_heads, s, h, &mut query);
            let mut scores = vec![0.0; t * len];
            // scores[i, j] = sum_p query[i, p] key[j, p]
            matmul(
                &mut scores,
                (t, len, hd),
                &query,
                (hd, 1),
                key,
                (1, hd as isize),
            );
            let mask = &inputs.mask[s * t * len..][..t * len];
            for (row, mask_row) in scores.chunks_exact_mut(len).zip(mask.chunks_exact(len)) {
                softmax_row(row, mask_row, inputs.scale, inputs.softcap);
            }
            // out[i, p] = sum_j probs[i, j] value[j, p]
            matmul(
                out,
                (t, hd, len),
                &scores,
                (len, 1),
                value,
                (hd as isize, 1),
            );
        });

    // `[batch, head, pos, head_dim]` -> `[batch, pos, head * head_dim]`.
    let mut out = vec![0.0; b * t * n_heads * hd];
    out.par_chunks_mut(n_heads * hd)
        .enumerate()
        .for_each(|(row, out_row)| {
            let (s, i) = (row / t, row % t);
            for (h, dst) in out_row.chunks_exact_mut(hd).enumerate() {
                dst.copy_from_slice(&per_head[((s * n_heads + h) * t + i) * hd..][..hd]);
            }
        });
    out
}

/// Rotary embedding of head `head` of sequence `s` of `x` (`[batch, pos, n * head_dim]`) into
/// `out` (`[pos, head_dim]`): `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`.
fn rotate_head(
    inputs: &AttentionInputs,
    x: &[f32],
    n: usize,
    s: usize,
    head: usize,
    out: &mut [f32],
) {
    let (t, hd) = (inputs.shape.seq_len, inputs.shape.head_dim);
    let half = hd / 2;
    for (i, out_row) in out.chunks_exact_mut(hd).enumerate() {
        let row = &x[((s * t + i) * n + head) * hd..][..hd];
        let cos = &inputs.cos[(s * t + i) * hd..][..hd];
        let sin = &inputs.sin[(s * t + i) * hd..][..hd];
        for p in 0..half {
            out_row[p] = row[p] * cos[p] + (-row[p + half]) * sin[p];
            out_row[p + half] = row[p + half] * cos[p + half] + row[p] * sin[p + half];
        }
    }
}

/// One attention row in place: `softmax(softcap(row * scale) + mask)`, in f32 like HF's
/// `softmax(..., dtype=float32)`.
fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32, softcap: Option<f32>) {
    for (s, &m) in row.iter_mut().zip(mask) {
        let mut x = *s * scale;
        if let Some(cap) = softcap {
            x = (x / cap).tanh() * cap;
        }
        *s = x + m;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in row.iter_mut() {
        *s /= sum;
    }
}

/// `dst[m, n] = lhs[m, k] @ rhs[k, n]` on one thread; `dst` is row-major, `lhs` and `rhs` are
/// given with their (row, column) strides.
///
/// # Panics
/// If a stride would read outside `lhs` or `rhs`, or `dst` is not `m * n` long.
fn matmul(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (isize, isize),
) {
    assert_eq!(dst.len(), m * n, "dst");
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(k == 0 || last(m, k, lhs_rs, lhs_cs) < lhs.len(), "lhs");
    assert!(
        k == 0 || last(k, n, rhs_rs as usize, rhs_cs as usize) < rhs.len(),
        "rhs"
    );
    // SAFETY: every index gemm reads is `r * rs + c * cs` for `r < rows`, `c < cols`, which the
    // asserts above bound by the slices' lengths; `dst` is exactly `m * n` elements, row-major,
    // and borrowed mutably, so it aliases neither input. `read_dst = false`: `dst` is overwritten.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn matmul_with_strides_matches_a_naive_product() {
        let (m, n, k) = (5, 7, 3);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut out = vec![0.0; m * n];
        matmul(&mut out, (m, n, k), &a, (k, 1), &b, (n as isize, 1));
        let expected = naive_matmul(&a, &b, m, n, k);
        for (x, y) in out.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // The same product with `b` stored transposed, `[n, k]`.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(&mut out, (m, n, k), &a, (k, 1), &bt, (1, k as isize));
        for (x, y) in out.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    #[should_panic(expected = "rhs")]
    fn matmul_refuses_strides_outside_the_slice() {
        let mut out = vec![0.0; 4];
        matmul(&mut out, (2, 2, 2), &[0.0; 4], (2, 1), &[0.0; 3], (2, 1));
    }

    #[test]
    fn sum_of_squares_matches_a_plain_sum_for_every_tail_length() {
        for n in [0, 1, 15, 16, 17, 33, 2304] {
            let x = values(n, 7);
            let plain: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            assert!((sum_of_squares(&x) as f64 - plain).abs() <= 1e-5 * plain.max(1.0));
        }
    }

    #[test]
    fn softmax_row_masks_and_normalises() {
        let mut row = vec![1.0, 2.0, 3.0];
        softmax_row(&mut row, &[0.0, 0.0, f32::MIN], 1.0, None);
        let e = 1f32.exp();
        assert!((row[0] - 1.0 / (1.0 + e)).abs() < 1e-6);
        assert!((row[1] - e / (1.0 + e)).abs() < 1e-6);
        assert_eq!(row[2], 0.0);
        // A soft-cap of 1 squeezes large scores towards 1.
        let mut row = vec![100.0, 0.0];
        softmax_row(&mut row, &[0.0, 0.0], 1.0, Some(1.0));
        let e = 100f32.tanh().exp();
        assert!((row[0] - e / (1.0 + e)).abs() < 1e-6);
    }
}
