//! Gemma-2 (Gemma Team, 2024) in burn, generic over the backend.
//!
//! The math follows HF transformers' `modeling_gemma2.py` with eager attention, the reference our
//! golden fixtures come from (REFERENCE.md section 1):
//!
//! ```text
//! h = embed(ids) * sqrt(d_model)
//! for each layer:
//!     h = h + post_attention_layernorm(attention(input_layernorm(h)))        # resid_mid
//!     h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))  # resid_post
//! logits = softcap(final_norm(h) @ embed^T, 30)
//! ```
//! - RMSNorm computes `x * rsqrt(mean(x^2) + eps) * (1 + w)` in f32 (the stored weight is an offset).
//! - Attention: GQA, NeoX RoPE (`rotate_half`), scores scaled by `query_pre_attn_scalar^-0.5`,
//!   soft-capped `cap * tanh(s / cap)` BEFORE the causal / sliding-window mask, softmax in f32.
//! - MLP: `down(gelu_tanh(gate(x)) * up(x))`.
//!
//! Linear weights are stored transposed, `[in, out]`, so every projection is one `x @ W`.
//!
//! Two kernel paths compute the non-GEMM parts (see [`Kernels`]): chains of burn ops, which run on
//! every backend and are the reading of the math above, and fused multi-threaded host kernels
//! (`host_kernels.rs`) on burn-flex. Both are held to the same golden fixtures. Parameters come through
//! `parameters.rs` (`ParameterSource`); a run's captures and interventions live in `hook_state.rs`.

use std::collections::BTreeMap;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Int, Tensor, TensorData};
use ndarray::Array3;

use crate::batch::TokenBatch;
use crate::config::{AttentionKind, Gemma2Config};
use crate::error::{GemmaError, Result};
use crate::hook_state::{raw_to_host, to_host, HookState};
use crate::hooks::{HookPoint, LogitPositions, RunRequest};
use crate::host_kernels::{self, AttentionInputs, AttentionShape};
use crate::language_model::ComputeDtype;
use crate::parameters::{transpose, ParameterSource};
use stereo_core::flex_bridge::{self, HostTensor};
use stereo_core::matmul::tensors::{host_product, product};
use stereo_core::matmul::WeightLayout;

mod checks;
mod decode;
mod heads;
mod layer_weights;
mod linear;
mod positions;
mod resume;
pub(crate) use decode::KvCache;
pub use layer_weights::LayerWeights;
use linear::Linear;
use positions::{layer_mask, Rope, RopeTables, RunPositions};

/// How RMSNorm, GeGLU, attention and the products of a decoding step (at most
/// [`MAX_SKINNY_ROWS`](stereo_core::matmul::MAX_SKINNY_ROWS) rows) run; see
/// [`product`] for the other products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// Chains of burn ops: every backend.
    BurnOps,
    /// Fused, multi-threaded kernels on the tensors' host buffers (`host_kernels.rs`,
    /// `stereo_core::matmul`): burn-flex only.
    Host,
}

impl Kernels {
    /// Whether this is [`Kernels::Host`].
    pub fn host(self) -> bool {
        self == Kernels::Host
    }

    /// The fastest path `B` supports: [`Kernels::Host`] on burn-flex if `fused`.
    pub fn for_backend<B: Backend>(fused: bool) -> Self {
        if fused && flex_bridge::is_flex::<B>() {
            Kernels::Host
        } else {
            Kernels::BurnOps
        }
    }
}

/// The host values of `x` (burn-flex only; see [`Kernels::Host`]).
fn host<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<HostTensor> {
    flex_bridge::host(x).ok_or_else(host_kernels_unavailable)
}

/// A tensor owning `values` (burn-flex only; see [`Kernels::Host`]).
fn from_host<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> Result<Tensor<B, D>> {
    flex_bridge::from_host(values, shape).ok_or_else(host_kernels_unavailable)
}

fn host_kernels_unavailable() -> GemmaError {
    GemmaError::InvalidInput {
        reason: "the fused host kernels need f32 tensors of the burn-flex backend".into(),
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    /// Captured activations, `[batch, pos, d_model]` each; padding positions are zero.
    pub activations: BTreeMap<HookPoint, Array3<f32>>,
    /// Logits `[batch, pos, vocab]` if requested; padding positions are zero.
    pub logits: Option<Array3<f32>>,
    /// Captured per-head tensors (shapes in [`HeadHook`](crate::HeadHook)); padding positions zero.
    pub heads: BTreeMap<crate::HeadHook, ndarray::Array4<f32>>,
}

/// Gemma's RMSNorm; `scale` holds `1 + w`.
#[derive(Debug, Clone)]
struct RmsNorm<B: Backend> {
    scale: Tensor<B, 1>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    fn forward(&self, x: Tensor<B, 3>, kernels: Kernels) -> Result<Tensor<B, 3>> {
        match kernels {
            Kernels::BurnOps => Ok(self.forward_burn(x)),
            Kernels::Host => {
                let dims = x.dims();
                let (x, scale) = (host(x)?, host(self.scale.clone())?);
                let out = host_kernels::rms_norm(x.values(), scale.values(), self.eps as f32);
                from_host(out, dims)
            }
        }
    }

    fn forward_burn(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = self.scale.dims()[0];
        let mean_square = (x.clone() * x.clone()).mean_dim(2);
        // A true division: burn-ndarray's SIMD `recip` is an approximation (about 2e-5 relative).
        let rms = (mean_square + self.eps).sqrt();
        x / rms * self.scale.clone().reshape([1, 1, d])
    }
}

#[derive(Debug, Clone)]
struct Attention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    softcap: Option<f32>,
}

impl<B: Backend> Attention<B> {
    /// `x`: `[batch, pos, d_model]`; the layer's `kind` picks the mask.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        positions: &RunPositions<B>,
        kind: AttentionKind,
    ) -> Result<Tensor<B, 3>> {
        let kernels = positions.kernels();
        let q = self.q_proj.forward(x.clone(), kernels);
        let k = self.k_proj.forward(x.clone(), kernels);
        let v = self.v_proj.forward(x, kernels);
        let out = match positions {
            RunPositions::Burn {
                rope,
                full_mask,
                sliding_mask,
            } => {
                let mask = layer_mask(kind, full_mask, sliding_mask).clone();
                self.attend_burn([q, k, v], rope, mask)
            }
            RunPositions::Host {
                rope,
                full_mask,
                sliding_mask,
            } => {
                let mask = layer_mask(kind, full_mask, sliding_mask);
                self.attend_host([q, k, v], rope, mask)?
            }
        };
        Ok(self.o_proj.forward(out, kernels))
    }

    /// The fused host kernel; `mask`: additive `[batch, pos, pos]`.
    fn attend_host(
        &self,
        qkv: [Tensor<B, 3>; 3],
        rope: &RopeTables,
        mask: &[f32],
    ) -> Result<Tensor<B, 3>> {
        self.with_host_inputs(qkv, rope, mask, host_kernels::attention)
    }

    /// `kernel` on the host values of the projections `q`, `k`, `v` (`[batch, pos, heads *
    /// head_dim]`), returning the attention output `[batch, pos, n_heads * head_dim]`.
    fn with_host_inputs(
        &self,
        [q, k, v]: [Tensor<B, 3>; 3],
        rope: &RopeTables,
        mask: &[f32],
        kernel: impl FnOnce(&AttentionInputs) -> Vec<f32>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t, _] = q.dims();
        let (q, k, v) = (host(q)?, host(k)?, host(v)?);
        let out = kernel(&AttentionInputs {
            shape: AttentionShape {
                batch: b,
                seq_len: t,
                n_heads: self.n_heads,
                n_kv_heads: self.n_kv_heads,
                head_dim: self.head_dim,
            },
            q: q.values(),
            k: k.values(),
            v: v.values(),
            cos: &rope.cos,
            sin: &rope.sin,
            mask,
            scale: self.scale,
            softcap: self.softcap,
        });
        from_host(out, [b, t, self.n_heads * self.head_dim])
    }

    /// Burn ops; `mask`: additive `[batch, 1, pos, pos]`.
    fn attend_burn(
        &self,
        [q, k, v]: [Tensor<B, 3>; 3],
        rope: &Rope<B>,
        mask: Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = q.dims();
        let heads = |x: Tensor<B, 3>, n: usize| x.reshape([b, t, n, self.head_dim]).swap_dims(1, 2);
        let q = rope.apply(heads(q, self.n_heads));
        let k = self.repeat_kv(rope.apply(heads(k, self.n_kv_heads)));
        let v = self.repeat_kv(heads(v, self.n_kv_heads));

        let mut scores = q.matmul(k.swap_dims(2, 3)) * self.scale;
        if let Some(cap) = self.softcap {
            scores = (scores / cap).tanh() * cap;
        }
        softmax(scores + mask, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, self.n_heads * self.head_dim])
    }

    /// `[batch, kv_heads, pos, head_dim]` -> `[batch, heads, pos, head_dim]`; query head `h` uses
    /// KV head `h / (heads / kv_heads)`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let groups = self.n_heads / self.n_kv_heads;
        if groups == 1 {
            return x;
        }
        let [b, kv, t, hd] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, groups, t, hd])
            .reshape([b, kv * groups, t, hd])
    }
}

#[derive(Debug, Clone)]
struct Mlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>, kernels: Kernels) -> Result<Tensor<B, 3>> {
        let gate = self.gate_proj.forward(x.clone(), kernels);
        let up = self.up_proj.forward(x, kernels);
        let hidden = match kernels {
            Kernels::BurnOps => gelu_tanh(gate) * up,
            Kernels::Host => {
                let dims = gate.dims();
                let (gate, up) = (host(gate)?, host(up)?);
                from_host(
                    host_kernels::gelu_tanh_mul(gate.values(), up.values()),
                    dims,
                )?
            }
        };
        Ok(self.down_proj.forward(hidden, kernels))
    }
}

/// PyTorch's `gelu(approximate="tanh")`, `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`,
/// computed as the identical `x / (1 + exp(-2u))` (since `(1 + tanh(u)) / 2 = sigmoid(2u)`): one `exp`
/// instead of a `tanh` (about 3x cheaper on CPU backends), and no cancellation where `tanh(u)` is near -1.
fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let (a, b) = host_kernels::GELU_MINUS_TWO_U;
    let minus_two_u = (x.clone() * x.clone() * b + a) * x.clone();
    x / (minus_two_u.exp() + 1.0)
}

#[derive(Debug, Clone)]
struct DecoderLayer<B: Backend> {
    self_attn: Attention<B>,
    mlp: Mlp<B>,
    input_layernorm: RmsNorm<B>,
    post_attention_layernorm: RmsNorm<B>,
    pre_feedforward_layernorm: RmsNorm<B>,
    post_feedforward_layernorm: RmsNorm<B>,
    kind: AttentionKind,
}

impl<B: Backend> DecoderLayer<B> {
    /// The layer with its seven projections held for `kernels` ([`Linear::held_for`]).
    fn held_for(self, kernels: Kernels) -> Self {
        let (a, m) = (self.self_attn, self.mlp);
        Self {
            self_attn: Attention {
                q_proj: a.q_proj.held_for(kernels),
                k_proj: a.k_proj.held_for(kernels),
                v_proj: a.v_proj.held_for(kernels),
                o_proj: a.o_proj.held_for(kernels),
                ..a
            },
            mlp: Mlp {
                gate_proj: m.gate_proj.held_for(kernels),
                up_proj: m.up_proj.held_for(kernels),
                down_proj: m.down_proj.held_for(kernels),
            },
            ..self
        }
    }
}

/// The unembedding: final norm plus either the tied embedding or a separate `lm_head`.
#[derive(Debug, Clone)]
struct Unembedding<B: Backend> {
    norm: RmsNorm<B>,
    /// `[d_model, vocab]` when not tied; `None` means tied to the embedding.
    lm_head: Option<Tensor<B, 2>>,
    softcap: Option<f32>,
}

/// Gemma-2 with the layers `0..layers.len()` loaded.
#[derive(Debug, Clone)]
pub(crate) struct Gemma2<B: Backend> {
    config: Gemma2Config,
    /// `[vocab, d_model]`.
    embed_tokens: Tensor<B, 2>,
    layers: Vec<DecoderLayer<B>>,
    unembedding: Option<Unembedding<B>>,
    kernels: Kernels,
    device: B::Device,
}

impl<B: Backend> Gemma2<B> {
    /// Loads the embedding, layers `0..n_layers` and, if `unembedding`, the final norm and head.
    pub fn load(
        config: &Gemma2Config,
        source: &mut dyn ParameterSource,
        (n_layers, unembedding): (usize, bool),
        dtype: ComputeDtype,
        device: &B::Device,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let c = config;
        let (d, q, kv, ff) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let total = n_layers + 1 + unembedding as usize;
        let embed_tokens = matrix(
            source,
            "embed_tokens.weight",
            [c.vocab_size, d],
            dtype,
            device,
        )?;
        progress(1, total);
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let p = |name: &str| format!("layers.{l}.{name}");
            let mut linear = |name: &str, out_dim: usize, in_dim: usize| -> Result<Linear<B>> {
                Ok(Linear::new(transposed_matrix(
                    source,
                    &p(name),
                    [out_dim, in_dim],
                    dtype,
                    device,
                )?))
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj.weight", q, d)?,
                k_proj: linear("self_attn.k_proj.weight", kv, d)?,
                v_proj: linear("self_attn.v_proj.weight", kv, d)?,
                o_proj: linear("self_attn.o_proj.weight", d, q)?,
                n_heads: c.num_attention_heads,
                n_kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
                scale: c.attention_scale(),
                softcap: c.attn_logit_softcapping.map(|x| x as f32),
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj.weight", ff, d)?,
                up_proj: linear("mlp.up_proj.weight", ff, d)?,
                down_proj: linear("mlp.down_proj.weight", d, ff)?,
            };
            let mut norm = |name: &str| norm(source, &p(name), c, device);
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: norm("input_layernorm.weight")?,
                post_attention_layernorm: norm("post_attention_layernorm.weight")?,
                pre_feedforward_layernorm: norm("pre_feedforward_layernorm.weight")?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm.weight")?,
                kind: c.attention_kind(l),
            });
            progress(l + 2, total);
        }
        let unembedding = if unembedding {
            let lm_head = if c.tie_word_embeddings {
                None
            } else {
                Some(transposed_matrix(
                    source,
                    "lm_head.weight",
                    [c.vocab_size, d],
                    dtype,
                    device,
                )?)
            };
            let u = Unembedding {
                norm: norm(source, "norm.weight", c, device)?,
                lm_head,
                softcap: c.final_logit_softcapping.map(|x| x as f32),
            };
            progress(total, total);
            Some(u)
        } else {
            None
        };
        Ok(Gemma2 {
            config: c.clone(),
            embed_tokens,
            layers,
            unembedding,
            kernels: Kernels::BurnOps,
            device: device.clone(),
        }
        .with_kernels(Kernels::for_backend::<B>(true)))
    }

    /// Random weights in the config's shapes, generated on the device.
    pub fn random(
        config: &Gemma2Config,
        (n_layers, unembedding): (usize, bool),
        dtype: ComputeDtype,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        B::seed(device, seed);
        let c = config;
        let normal = |shape: [usize; 2]| {
            let options = (device, dtype.weight_dtype());
            Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.02), options)
        };
        let ones = |n: usize| RmsNorm {
            scale: Tensor::<B, 1>::ones([n], device),
            eps: c.rms_norm_eps,
        };
        let (d, q, kv, ff) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let linear = |i: usize, o: usize| Linear::new(normal([i, o]));
        let layers = (0..n_layers)
            .map(|l| DecoderLayer {
                self_attn: Attention {
                    q_proj: linear(d, q),
                    k_proj: linear(d, kv),
                    v_proj: linear(d, kv),
                    o_proj: linear(q, d),
                    n_heads: c.num_attention_heads,
                    n_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                    scale: c.attention_scale(),
                    softcap: c.attn_logit_softcapping.map(|x| x as f32),
                },
                mlp: Mlp {
                    gate_proj: linear(d, ff),
                    up_proj: linear(d, ff),
                    down_proj: linear(ff, d),
                },
                input_layernorm: ones(d),
                post_attention_layernorm: ones(d),
                pre_feedforward_layernorm: ones(d),
                post_feedforward_layernorm: ones(d),
                kind: c.attention_kind(l),
            })
            .collect();
        let unembedding = unembedding.then(|| Unembedding {
            norm: ones(d),
            lm_head: None,
            softcap: c.final_logit_softcapping.map(|x| x as f32),
        });
        Gemma2 {
            config: c.clone(),
            embed_tokens: normal([c.vocab_size, d]),
            layers,
            unembedding,
            kernels: Kernels::BurnOps,
            device: device.clone(),
        }
        .with_kernels(Kernels::for_backend::<B>(true))
    }

    /// The same model running its non-GEMM parts on `kernels` (see [`Kernels::for_backend`]),
    /// its projections held the fastest way for them ([`Linear::held_for`]: bf16 weights packed for
    /// `vdpbf16ps` with [`Kernels::Host`] on CPUs with AVX512-BF16).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self.layers = self
            .layers
            .into_iter()
            .map(|layer| layer.held_for(kernels))
            .collect();
        self
    }

    pub fn config(&self) -> &Gemma2Config {
        &self.config
    }

    pub fn n_loaded_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn has_unembedding(&self) -> bool {
        self.unembedding.is_some()
    }

    /// Runs the batch as far as `request` needs; see [`RunRequest`].
    pub fn run(&self, batch: &TokenBatch, request: &RunRequest) -> Result<RunOutput> {
        self.check_request(batch, request)?;
        let n_layers = request.layers_needed(self.config.num_hidden_layers);
        let mut hooks = HookState::new(request, batch);
        let (first_layer, mut h) = match &request.resume {
            None => (0, self.embed(batch, &mut hooks)?),
            Some(resume) => (resume.layer + 1, self.resumed(resume, &mut hooks)?),
        };
        let positions = RunPositions::new(batch, &self.config, self.kernels, &self.device);
        let host_positions = request
            .head_hooks()
            .next()
            .map(|_| heads::HostPositions::new(batch, &self.config));
        for (l, layer) in self
            .layers
            .iter()
            .enumerate()
            .take(n_layers)
            .skip(first_layer)
        {
            h = self.layer_forward(l, h, &mut hooks, |x, hooks| {
                match (&host_positions, request.has_head_hooks(l)) {
                    (Some(host), true) => {
                        layer
                            .self_attn
                            .forward_heads(x, host, layer.kind, l, self.kernels, hooks)
                    }
                    _ => layer.self_attn.forward(x, &positions, layer.kind),
                }
            })?;
        }
        self.finish(h, batch, request, hooks)
    }

    /// `embed(ids) * sqrt(d_model)`, through the `hook_embed` and `blocks.0.hook_resid_pre` hooks.
    pub(crate) fn embed(
        &self,
        batch: &TokenBatch,
        hooks: &mut HookState<'_>,
    ) -> Result<Tensor<B, 3>> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let d = self.config.hidden_size;
        let ids: Vec<i64> = batch.ids().iter().map(|&x| x as i64).collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [b * t]), &self.device);
        let rows = self.embed_tokens.clone().select(0, ids);
        let h = rows.cast(FloatDType::F32).reshape([b, t, d]) * self.config.embedding_scale();
        let h = hooks.visit(HookPoint::Embed, h)?;
        hooks.visit(HookPoint::ResidPre(0), h)
    }

    /// Layer `l` on the residual `h`, through its hooks; `attend` maps the normalised input to the
    /// attention output (after `o_proj`), with or without a KV cache.
    pub(crate) fn layer_forward<'r>(
        &self,
        l: usize,
        mut h: Tensor<B, 3>,
        hooks: &mut HookState<'r>,
        attend: impl FnOnce(Tensor<B, 3>, &mut HookState<'r>) -> Result<Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>> {
        let layer = &self.layers[l];
        let kernels = self.kernels;
        let attn = attend(layer.input_layernorm.forward(h.clone(), kernels)?, hooks)?;
        let attn_out = hooks.visit(
            HookPoint::AttnOut(l),
            layer.post_attention_layernorm.forward(attn, kernels)?,
        )?;
        h = hooks.visit(HookPoint::ResidMid(l), h + attn_out)?;
        let mlp_in = layer
            .pre_feedforward_layernorm
            .forward(h.clone(), kernels)?;
        let mlp = layer.mlp.forward(mlp_in, kernels)?;
        let mlp_out = hooks.visit(
            HookPoint::MlpOut(l),
            layer.post_feedforward_layernorm.forward(mlp, kernels)?,
        )?;
        h = hooks.visit(HookPoint::ResidPost(l), h + mlp_out)?;
        // blocks.{l+1}.hook_resid_pre is the same tensor, visited even when layer l+1 does not run.
        if l + 1 < self.config.num_hidden_layers {
            h = hooks.visit(HookPoint::ResidPre(l + 1), h)?;
        }
        Ok(h)
    }

    /// The captures and, if asked, the logits of a pass that ended with residual `h`.
    pub(crate) fn finish(
        &self,
        h: Tensor<B, 3>,
        batch: &TokenBatch,
        request: &RunRequest,
        hooks: HookState<'_>,
    ) -> Result<RunOutput> {
        let logits = if request.logits {
            Some(match request.logits_at {
                LogitPositions::All => to_host(self.logits(h)?, batch)?,
                LogitPositions::Last => {
                    let last = last_real_rows::<B>(batch, &self.device);
                    let [b, t, d] = h.dims();
                    let h = h.reshape([b * t, d]).select(0, last).reshape([b, 1, d]);
                    raw_to_host(self.logits(h)?)?
                }
            })
        } else {
            None
        };
        Ok(RunOutput {
            activations: hooks.captured,
            logits,
            heads: hooks.captured_heads,
        })
    }

    /// Refuses `tokens` positions beyond `max_position_embeddings`.
    pub(crate) fn check_length(&self, what: &str, tokens: usize) -> Result<()> {
        let max = self.config.max_position_embeddings;
        if tokens > max {
            return Err(GemmaError::SequenceTooLong {
                what: what.into(),
                tokens,
                max,
            });
        }
        Ok(())
    }

    /// Soft-capped logits `[batch, pos, vocab]` of the final residual `h`.
    fn logits(&self, h: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let u = self
            .unembedding
            .as_ref()
            .ok_or_else(|| GemmaError::NotLoaded {
                what: "logits".into(),
                loaded: "no unembedding".into(),
            })?;
        let [b, t, d] = h.dims();
        let h = u.norm.forward(h, self.kernels)?.reshape([b * t, d]);
        let (head, layout) = match &u.lm_head {
            Some(w) => (w, WeightLayout::InOut),
            None => (&self.embed_tokens, WeightLayout::OutIn),
        };
        let vocab = self.config.vocab_size;
        if let Some(mut logits) = host_product(&h, head, layout, self.kernels.host()) {
            if let Some(cap) = u.softcap {
                host_kernels::softcap(&mut logits, cap);
            }
            return from_host(logits, [b, t, vocab]);
        }
        let mut logits = product(h, head, layout, self.kernels.host());
        if let Some(cap) = u.softcap {
            logits = (logits / cap).tanh() * cap;
        }
        Ok(logits.reshape([b, t, vocab]))
    }
}

/// The flat `[batch * pos]` index of each row's last real token.
fn last_real_rows<B: Backend>(batch: &TokenBatch, device: &B::Device) -> Tensor<B, 1, Int> {
    let t = batch.seq_len();
    let last: Vec<i64> = (0..batch.batch_size())
        .map(|row| {
            let mask = &batch.mask()[row * t..(row + 1) * t];
            let index = mask.iter().rposition(|real| *real).unwrap_or(t - 1);
            (row * t + index) as i64
        })
        .collect();
    let n = last.len();
    Tensor::from_data(TensorData::new(last, [n]), device)
}

/// Parameter `key` (`shape`) as a tensor of `dtype`'s weight type.
fn matrix<B: Backend>(
    source: &mut dyn ParameterSource,
    key: &str,
    shape: [usize; 2],
    dtype: ComputeDtype,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let data = match dtype {
        ComputeDtype::F32 => TensorData::new(source.read(key, &shape)?, shape),
        ComputeDtype::Bf16 => TensorData::new(source.read_bf16(key, &shape)?, shape),
    };
    Ok(Tensor::from_data(data, (device, dtype.weight_dtype())))
}

/// A linear weight stored `[out, in]` (HF's layout) as the `[in, out]` tensor `x @ W` multiplies by.
fn transposed_matrix<B: Backend>(
    source: &mut dyn ParameterSource,
    key: &str,
    [out_dim, in_dim]: [usize; 2],
    dtype: ComputeDtype,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    let shape = [&[in_dim, out_dim][..], &[out_dim, in_dim][..]];
    let data = match dtype {
        ComputeDtype::F32 => {
            let w = source.read(key, shape[1])?;
            TensorData::new(transpose(&w, out_dim, in_dim), shape[0])
        }
        ComputeDtype::Bf16 => {
            let w = source.read_bf16(key, shape[1])?;
            TensorData::new(transpose(&w, out_dim, in_dim), shape[0])
        }
    };
    Ok(Tensor::from_data(data, (device, dtype.weight_dtype())))
}

fn norm<B: Backend>(
    source: &mut dyn ParameterSource,
    key: &str,
    c: &Gemma2Config,
    device: &B::Device,
) -> Result<RmsNorm<B>> {
    let w = source.read(key, &[c.hidden_size])?;
    let scale: Vec<f32> = w.iter().map(|x| 1.0 + x).collect();
    Ok(RmsNorm {
        scale: Tensor::from_data(TensorData::new(scale, [c.hidden_size]), device),
        eps: c.rms_norm_eps,
    })
}
