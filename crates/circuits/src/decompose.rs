//! The residual stream as a sum of what wrote it. At `blocks.{L}.hook_resid_post`, Gemma-2's residual is
//! exactly the scaled embedding plus, for every layer `l <= L`, the normalised attention output and the
//! normalised MLP output. The attention output is `post_attention_layernorm(sum_h result_h)`; with the
//! norm's per-token scale `s = 1 / sqrt(mean(S^2) + eps)` of the heads' sum `S` frozen, head `h` writes
//! `s (1 + w) * result_h`, and the heads' writes sum to the attention output. Every component is then a
//! `[batch, pos, d_model]` array whose sum is the residual (to float rounding).

use gemma_model::{HeadHook, HookPoint, LanguageModel, RunRequest, TokenBatch};
use ndarray::{s, Array3, Array4, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{CircuitError, Result};

/// What wrote part of the residual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Component {
    /// The scaled token embedding (`hook_embed`).
    Embed,
    /// Attention head `head` of layer `layer` (its normalised share of the attention output).
    Head {
        /// The layer.
        layer: usize,
        /// The query head.
        head: usize,
    },
    /// The MLP of layer `layer` (`hook_mlp_out`).
    Mlp {
        /// The layer.
        layer: usize,
    },
}

impl Component {
    /// `embed`, `L3H5`, `L3 MLP`.
    pub fn label(&self) -> String {
        match self {
            Component::Embed => "embed".into(),
            Component::Head { layer, head } => format!("L{layer}H{head}"),
            Component::Mlp { layer } => format!("L{layer} MLP"),
        }
    }

    /// Every component of a model's residual at `blocks.{layer}.hook_resid_post`, in forward order
    /// (per layer its heads, then its MLP).
    pub fn all(layer: usize, heads: usize) -> Vec<Component> {
        let mut out = vec![Component::Embed];
        for l in 0..=layer {
            out.extend((0..heads).map(|head| Component::Head { layer: l, head }));
            out.push(Component::Mlp { layer: l });
        }
        out
    }
}

/// One model's residual at a layer, split into its components.
#[derive(Debug, Clone)]
pub struct ResidualDecomposition {
    /// The layer of `blocks.{layer}.hook_resid_post`.
    pub layer: usize,
    /// The components, in the order of [`Component::all`].
    pub components: Vec<Component>,
    /// Their writes, `[components, batch, pos, d_model]`; padding positions are zero.
    pub writes: Array4<f32>,
    /// The residual the model computed, `[batch, pos, d_model]` (for checking the sum).
    pub residual: Array3<f32>,
    /// The attention patterns of every layer, `[layer][batch, heads, query, key]`.
    pub patterns: Vec<Array4<f32>>,
}

impl ResidualDecomposition {
    /// The sum of the writes, `[batch, pos, d_model]` (equals `residual`).
    pub fn sum(&self) -> Array3<f32> {
        self.writes.sum_axis(Axis(0))
    }
}

/// Runs `batch` through `model` (loaded at least to `layer`, any backend) and splits its residual at
/// `blocks.{layer}.hook_resid_post` into the embedding, every head and every MLP.
pub fn decompose(
    model: &dyn LanguageModel,
    batch: &TokenBatch,
    layer: usize,
) -> Result<ResidualDecomposition> {
    let config = model.config();
    if layer >= model.loaded_layers() {
        return Err(CircuitError::InvalidInput {
            reason: format!(
                "layer {layer} is not loaded ({} has layers 0..{})",
                model.name(),
                model.loaded_layers()
            ),
        });
    }
    let heads = config.num_attention_heads;
    let mut request = RunRequest::capture([HookPoint::Embed, HookPoint::ResidPost(layer)]);
    for l in 0..=layer {
        request.capture.push(HookPoint::MlpOut(l));
        request = request
            .capture_head(HeadHook::Result(l))
            .capture_head(HeadHook::Pattern(l));
    }
    let mut out = model.run(batch, &request)?;
    let components = Component::all(layer, heads);
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let d = config.hidden_size;
    let mut writes = Array4::<f32>::zeros((components.len(), b, t, d));
    let take = |out: &mut gemma_model::RunOutput, hook: HookPoint| {
        out.activations
            .remove(&hook)
            .ok_or_else(|| CircuitError::InvalidInput {
                reason: format!("{} returned no {hook}", model.name()),
            })
    };
    writes
        .index_axis_mut(Axis(0), 0)
        .assign(&take(&mut out, HookPoint::Embed)?);
    let eps = config.rms_norm_eps as f32;
    let mut patterns = Vec::with_capacity(layer + 1);
    for l in 0..=layer {
        let result =
            out.heads
                .remove(&HeadHook::Result(l))
                .ok_or_else(|| CircuitError::InvalidInput {
                    reason: format!("{} returned no {}", model.name(), HeadHook::Result(l)),
                })?;
        let norm = model.layer_weights(l)?.post_attention_norm;
        let first = 1 + l * (heads + 1);
        for bi in 0..b {
            for i in 0..t {
                let heads_out = result.slice(s![bi, i, .., ..]);
                let total = heads_out.sum_axis(Axis(0));
                let scale = 1.0 / (total.mapv(|v| v * v).mean().unwrap_or(0.0) + eps).sqrt();
                for h in 0..heads {
                    let write = &heads_out.row(h) * &norm * scale;
                    writes.slice_mut(s![first + h, bi, i, ..]).assign(&write);
                }
            }
        }
        writes
            .index_axis_mut(Axis(0), first + heads)
            .assign(&take(&mut out, HookPoint::MlpOut(l))?);
        patterns.push(out.heads.remove(&HeadHook::Pattern(l)).unwrap_or_default());
    }
    // Padding positions hold nothing.
    for (i, real) in batch.mask().iter().enumerate() {
        if !real {
            writes.slice_mut(s![.., i / t, i % t, ..]).fill(0.0);
        }
    }
    Ok(ResidualDecomposition {
        layer,
        components,
        writes,
        residual: take(&mut out, HookPoint::ResidPost(layer))?,
        patterns,
    })
}
