//! One layer's weights copied to the host, for circuit analysis: which heads and MLPs can read a
//! direction (composition scores), and how Gemma-2's post-attention norm scales each head's write.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ndarray::{Array1, Array2};

use super::{Gemma2, RmsNorm};
use crate::error::{GemmaError, Result};

/// The weights of one decoder layer on the host. Products are `x @ W` (`[in, out]`); norms hold
/// Gemma's `1 + w` (what multiplies the normalised input).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// The layer.
    pub layer: usize,
    /// `q_proj`, `[d_model, heads * head_dim]` (head `h`: columns `h * head_dim ..`).
    pub q_proj: Array2<f32>,
    /// `k_proj`, `[d_model, kv_heads * head_dim]`.
    pub k_proj: Array2<f32>,
    /// `v_proj`, `[d_model, kv_heads * head_dim]`.
    pub v_proj: Array2<f32>,
    /// `o_proj`, `[heads * head_dim, d_model]` (head `h`: rows `h * head_dim ..`).
    pub o_proj: Array2<f32>,
    /// `gate_proj`, `[d_model, intermediate]`.
    pub gate_proj: Array2<f32>,
    /// `up_proj`, `[d_model, intermediate]`.
    pub up_proj: Array2<f32>,
    /// `down_proj`, `[intermediate, d_model]`.
    pub down_proj: Array2<f32>,
    /// `input_layernorm` (before attention), `[d_model]`.
    pub input_norm: Array1<f32>,
    /// `post_attention_layernorm` (on the sum of the heads' outputs), `[d_model]`.
    pub post_attention_norm: Array1<f32>,
    /// `pre_feedforward_layernorm` (before the MLP), `[d_model]`.
    pub pre_feedforward_norm: Array1<f32>,
    /// `post_feedforward_layernorm` (on the MLP's output), `[d_model]`.
    pub post_feedforward_norm: Array1<f32>,
}

fn host2<B: Backend>(x: &Tensor<B, 2>) -> Result<Array2<f32>> {
    let [r, c] = x.dims();
    let values: Vec<f32> = x
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| GemmaError::DeviceData {
            reason: format!("unreadable weight: {e:?}"),
        })?;
    Array2::from_shape_vec((r, c), values).map_err(|e| GemmaError::DeviceData {
        reason: format!("a weight of the wrong size for [{r}, {c}]: {e}"),
    })
}

fn host_norm<B: Backend>(norm: &RmsNorm<B>) -> Result<Array1<f32>> {
    let d = norm.scale.dims()[0];
    Ok(host2(&norm.scale.clone().reshape([1, d]))?
        .row(0)
        .to_owned())
}

impl<B: Backend> Gemma2<B> {
    /// Layer `layer`'s weights on the host.
    pub(crate) fn layer_weights(&self, layer: usize) -> Result<LayerWeights> {
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| GemmaError::NotLoaded {
                what: format!("the weights of layer {layer}"),
                loaded: format!("layers 0..{}", self.layers.len()),
            })?;
        let attn = &l.self_attn;
        Ok(LayerWeights {
            layer,
            q_proj: host2(&attn.q_proj.weight_tensor())?,
            k_proj: host2(&attn.k_proj.weight_tensor())?,
            v_proj: host2(&attn.v_proj.weight_tensor())?,
            o_proj: host2(&attn.o_proj.weight_tensor())?,
            gate_proj: host2(&l.mlp.gate_proj.weight_tensor())?,
            up_proj: host2(&l.mlp.up_proj.weight_tensor())?,
            down_proj: host2(&l.mlp.down_proj.weight_tensor())?,
            input_norm: host_norm(&l.input_layernorm)?,
            post_attention_norm: host_norm(&l.post_attention_layernorm)?,
            pre_feedforward_norm: host_norm(&l.pre_feedforward_layernorm)?,
            post_feedforward_norm: host_norm(&l.post_feedforward_layernorm)?,
        })
    }
}
