//! Attention head by head on the host, for the layers whose per-head hooks ([`HeadHook`]) a request
//! names: the projections run as usual, then rotary, scores, soft-cap, mask, softmax, the value mix and
//! (when asked) each head's share of `o_proj` are explicit `[batch, pos, head, ...]` arrays that the
//! hooks read and edit. The same math as the fused kernel and the burn ops (HF's eager attention), on
//! every backend; only layers that need it pay for it.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::{s, Array4, ArrayView1};

use super::positions::{layer_mask, RopeTables};
use super::{Attention, Kernels};
use crate::batch::TokenBatch;
use crate::config::{AttentionKind, Gemma2Config};
use crate::error::{GemmaError, Result};
use crate::head_hooks::HeadHook;
use crate::hook_state::HookState;

/// Rotary tables and masks of a run on the host, whatever the kernels (built once per run that has
/// per-head hooks).
pub(in crate::model) struct HostPositions {
    rope: RopeTables,
    full_mask: Vec<f32>,
    sliding_mask: Option<Vec<f32>>,
}

impl HostPositions {
    pub(in crate::model) fn new(batch: &TokenBatch, config: &Gemma2Config) -> Self {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        HostPositions {
            rope: RopeTables::new(&batch.positions(), b, t, config.head_dim, config.rope_theta),
            full_mask: super::positions::additive_mask(batch, None),
            sliding_mask: config
                .sliding_window
                .map(|w| super::positions::additive_mask(batch, Some(w))),
        }
    }
}

/// The values of any tensor, on the host (every backend).
fn values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Vec<f32>> {
    x.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| GemmaError::DeviceData {
            reason: format!("unreadable data: {e:?}"),
        })
}

fn array4(values: Vec<f32>, shape: [usize; 4]) -> Result<Array4<f32>> {
    Array4::from_shape_vec(shape, values).map_err(|e| GemmaError::DeviceData {
        reason: format!("a tensor of the wrong size for {shape:?}: {e}"),
    })
}

/// `x * cos + rotate_half(x) * sin` per head; `x`: `[batch, pos, heads, head_dim]`, tables
/// `[batch, pos, head_dim]`.
fn rotate(x: &Array4<f32>, rope: &RopeTables) -> Array4<f32> {
    let (b, t, _, e) = x.dim();
    let half = e / 2;
    let mut out = x.clone();
    for bi in 0..b {
        for i in 0..t {
            let at = (bi * t + i) * e;
            let (cos, sin) = (&rope.cos[at..at + e], &rope.sin[at..at + e]);
            for (mut head_out, head) in out
                .slice_mut(s![bi, i, .., ..])
                .outer_iter_mut()
                .zip(x.slice(s![bi, i, .., ..]).outer_iter())
            {
                for d in 0..e {
                    let rotated = if d < half {
                        -head[d + half]
                    } else {
                        head[d - half]
                    };
                    head_out[d] = head[d] * cos[d] + rotated * sin[d];
                }
            }
        }
    }
    out
}

fn dot(a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f32 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

impl<B: Backend> Attention<B> {
    /// Attention of layer `layer` head by head, through its per-head hooks; returns `o_proj`'s output
    /// `[batch, pos, d_model]` (before the post-attention norm).
    pub(in crate::model) fn forward_heads(
        &self,
        x: Tensor<B, 3>,
        positions: &HostPositions,
        kind: AttentionKind,
        layer: usize,
        kernels: Kernels,
        hooks: &mut HookState<'_>,
    ) -> Result<Tensor<B, 3>> {
        let device = x.device();
        let [b, t, _] = x.dims();
        let (n, kv, e) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let group = n / kv;
        let project = |proj: &super::Linear<B>, heads: usize| {
            array4(values(proj.forward(x.clone(), kernels))?, [b, t, heads, e])
        };
        let q = hooks.visit_head(HeadHook::Q(layer), project(&self.q_proj, n)?)?;
        let k = hooks.visit_head(HeadHook::K(layer), project(&self.k_proj, kv)?)?;
        let v = hooks.visit_head(HeadHook::V(layer), project(&self.v_proj, kv)?)?;
        let q = hooks.visit_head(HeadHook::RotQ(layer), rotate(&q, &positions.rope))?;
        let k = hooks.visit_head(HeadHook::RotK(layer), rotate(&k, &positions.rope))?;

        let mask = layer_mask(kind, &positions.full_mask, &positions.sliding_mask);
        let mut scores = Array4::<f32>::zeros((b, n, t, t));
        for ((bi, h, i, j), score) in scores.indexed_iter_mut() {
            let mut value =
                dot(q.slice(s![bi, i, h, ..]), k.slice(s![bi, j, h / group, ..])) * self.scale;
            if let Some(cap) = self.softcap {
                value = (value / cap).tanh() * cap;
            }
            *score = value + mask[(bi * t + i) * t + j];
        }
        let scores = hooks.visit_head(HeadHook::AttnScores(layer), scores)?;
        let mut pattern = scores;
        for mut row in pattern.rows_mut() {
            let max = row.fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            row.mapv_inplace(|v| (v - max).exp());
            let total: f32 = row.sum();
            row.mapv_inplace(|v| v / total);
        }
        let pattern = hooks.visit_head(HeadHook::Pattern(layer), pattern)?;

        let mut z = Array4::<f32>::zeros((b, t, n, e));
        for bi in 0..b {
            for h in 0..n {
                for i in 0..t {
                    let mut out = z.slice_mut(s![bi, i, h, ..]);
                    for j in 0..t {
                        let p = pattern[[bi, h, i, j]];
                        if p != 0.0 {
                            out.scaled_add(p, &v.slice(s![bi, j, h / group, ..]));
                        }
                    }
                }
            }
        }
        let z = hooks.visit_head(HeadHook::Z(layer), z)?;
        if !hooks.wants_head(HeadHook::Result(layer)) {
            let z = Tensor::from_data(
                TensorData::new(z.into_iter().collect::<Vec<f32>>(), [b, t, n * e]),
                &device,
            );
            return Ok(self.o_proj.forward(z, kernels));
        }
        // Each head's share of o_proj: z_h @ W_O[h * e .. (h + 1) * e, :].
        let w_o = values(self.o_proj.weight_tensor())?;
        let d = w_o.len() / (n * e);
        let w_o = ndarray::Array2::from_shape_vec((n * e, d), w_o).map_err(|err| {
            GemmaError::DeviceData {
                reason: format!("o_proj of the wrong size: {err}"),
            }
        })?;
        // One product per head over every token: [b * t, e] @ [e, d].
        let mut result = Array4::<f32>::zeros((b, t, n, d));
        for h in 0..n {
            let z_h = z
                .slice(s![.., .., h, ..])
                .to_owned()
                .into_shape_with_order((b * t, e))
                .map_err(|err| GemmaError::DeviceData {
                    reason: format!("z of an unexpected shape: {err}"),
                })?;
            let share = z_h.dot(&w_o.slice(s![h * e..(h + 1) * e, ..]));
            let share =
                share
                    .into_shape_with_order((b, t, d))
                    .map_err(|err| GemmaError::DeviceData {
                        reason: format!("a head's share of an unexpected shape: {err}"),
                    })?;
            result.slice_mut(s![.., .., h, ..]).assign(&share);
        }
        let result = hooks.visit_head(HeadHook::Result(layer), result)?;
        let out = result.sum_axis(ndarray::Axis(2));
        Ok(Tensor::from_data(
            TensorData::new(out.into_iter().collect::<Vec<f32>>(), [b, t, d]),
            &device,
        ))
    }
}
