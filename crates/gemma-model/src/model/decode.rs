//! Incremental decoding: the forward pass over new tokens only, with the keys and values of every
//! earlier position kept on the device in a [`KvCache`].
//!
//! Each step appends its tokens to the cache, so a query at cache slot `q` attends the keys at slots
//! `k <= q` that hold real tokens, and on sliding-window layers only `q - W < k` (exactly W slots, as
//! HF's `HybridCache`, also across the prompt / generation boundary). Slots are counted with the
//! padding, as HF counts cache positions; RoPE positions count real tokens only (HF's
//! `attention_mask.cumsum(-1) - 1`). The cache buffers are allocated once for a capacity and written
//! in place. On the host kernels' path they are plain host buffers read by a fused kernel
//! ([`KvBuffers`]); on other backends they are burn tensors, moved out of the cache while a step
//! writes them, so that burn's copy-on-write tensors are held once and never copied whole.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::{layer_mask, Attention, Gemma2, Kernels, RopeTables, RunPositions};
use crate::batch::TokenBatch;
use crate::config::AttentionKind;
use crate::error::{GemmaError, Result};
use crate::hook_state::HookState;
use crate::hooks::RunRequest;
use crate::host_kernels::{attend_cached, KvBuffers};
use crate::model::RunOutput;

/// The keys and values of one layer, `[batch, kv_heads, capacity, head_dim]`, rotated keys; each is
/// allocated by the first step.
enum LayerCache<B: Backend> {
    /// Burn tensors on the model's device ([`Kernels::BurnOps`]).
    Device {
        keys: Option<Tensor<B, 4>>,
        values: Option<Tensor<B, 4>>,
    },
    /// Host buffers ([`Kernels::Host`]).
    Host(Option<KvBuffers>),
}

impl<B: Backend> LayerCache<B> {
    fn empty(kernels: Kernels) -> Self {
        match kernels {
            Kernels::BurnOps => LayerCache::Device {
                keys: None,
                values: None,
            },
            Kernels::Host => LayerCache::Host(None),
        }
    }
}

/// Everything a decoding session keeps between steps: per-layer keys and values on the device, and on
/// the host which slots hold real tokens and each row's next RoPE position.
pub(crate) struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    batch: usize,
    capacity: usize,
    /// Slots filled so far (the same for every row).
    len: usize,
    /// `[batch][slot]`: whether the slot holds a real token (padding does not).
    real: Vec<Vec<bool>>,
    /// Each row's RoPE position for its next real token.
    next_position: Vec<u32>,
    /// Set while a step runs: a step that failed half-way leaves the cache unusable.
    broken: bool,
}

impl<B: Backend> KvCache<B> {
    /// Slots filled so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Layers every step runs.
    pub(crate) fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Rows decoded together.
    pub(crate) fn batch_size(&self) -> usize {
        self.batch
    }
}

impl<B: Backend> Gemma2<B> {
    /// An empty cache for `batch` rows through layers `0..n_layers`, with room for `capacity` slots
    /// (it grows when a step needs more).
    pub(crate) fn new_cache(
        &self,
        batch: usize,
        n_layers: usize,
        capacity: usize,
    ) -> Result<KvCache<B>> {
        if batch == 0 {
            return Err(GemmaError::InvalidInput {
                reason: "a decoding session needs at least one row".into(),
            });
        }
        self.check_length("a decoding session (prompt + new tokens)", capacity)?;
        if n_layers > self.layers.len() {
            return Err(GemmaError::NotLoaded {
                what: format!("layers 0..{n_layers} for decoding"),
                loaded: format!("layers 0..{} (stop_at_layer)", self.layers.len()),
            });
        }
        Ok(KvCache {
            layers: (0..n_layers)
                .map(|_| LayerCache::empty(self.kernels))
                .collect(),
            batch,
            capacity: capacity.max(1),
            len: 0,
            real: vec![Vec::new(); batch],
            next_position: vec![0; batch],
            broken: false,
        })
    }

    /// Runs the new tokens `batch` (one row per cache row; pads marked in its mask) through the
    /// cache's layers, appending their keys and values. Captures, interventions and logits are those
    /// of `request`, on the new positions only.
    pub(crate) fn feed(
        &self,
        cache: &mut KvCache<B>,
        batch: &TokenBatch,
        request: &RunRequest,
    ) -> Result<RunOutput> {
        self.check_feed(cache, batch, request)?;
        cache.broken = true;
        let step = self.step_positions(cache, batch);
        let mut hooks = HookState::new(request, batch);
        let mut h = self.embed(batch, &mut hooks)?;
        let start = cache.len;
        for l in 0..cache.layers.len() {
            let layer = &self.layers[l];
            let layer_cache = &mut cache.layers[l];
            let capacity = cache.capacity;
            h = self.layer_forward(l, h, &mut hooks, |x, _| {
                layer
                    .self_attn
                    .forward_cached(x, layer_cache, start, capacity, &step, layer.kind)
            })?;
        }
        let out = self.finish(h, batch, request, hooks)?;
        cache.len += batch.seq_len();
        cache.capacity = cache.capacity.max(cache.len);
        cache.broken = false;
        Ok(out)
    }

    fn check_feed(
        &self,
        cache: &KvCache<B>,
        batch: &TokenBatch,
        request: &RunRequest,
    ) -> Result<()> {
        if request.resume.is_some() {
            return Err(GemmaError::InvalidInput {
                reason: "a decoding step cannot resume from a residual; run the whole pass instead"
                    .into(),
            });
        }
        if let Some(hook) = request.head_hooks().next() {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "per-head hooks ({hook}) are read on a whole pass, not on a decoding step with a KV cache"
                ),
            });
        }
        if cache.broken {
            return Err(GemmaError::InvalidInput {
                reason: "an earlier step of this decoding session failed; start a new session"
                    .into(),
            });
        }
        self.check_length(
            "the decoding session (cached + new tokens)",
            cache.len + batch.seq_len(),
        )?;
        if batch.batch_size() != cache.batch {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "the step has {} rows but the session decodes {}",
                    batch.batch_size(),
                    cache.batch
                ),
            });
        }
        let n_layers = self.config.num_hidden_layers;
        let needed = request.layers_needed(n_layers);
        if needed > cache.layers.len() || (request.logits && cache.layers.len() < n_layers) {
            return Err(GemmaError::NotLoaded {
                what: if request.logits {
                    "logits".to_string()
                } else {
                    format!("layers 0..{needed}")
                },
                loaded: format!(
                    "a decoding session through layers 0..{}",
                    cache.layers.len()
                ),
            });
        }
        self.check_request(batch, request)
    }

    /// Extends the cache's bookkeeping by the step's tokens and builds their RoPE tables and masks
    /// (`[batch, new, len + new]`).
    fn step_positions(&self, cache: &mut KvCache<B>, batch: &TokenBatch) -> RunPositions<B> {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let mut positions = vec![0u32; b * t];
        for row in 0..b {
            for i in 0..t {
                let real = batch.mask()[row * t + i];
                if real {
                    positions[row * t + i] = cache.next_position[row];
                    cache.next_position[row] += 1;
                }
                cache.real[row].push(real);
            }
        }
        let rope = RopeTables::new(
            &positions,
            b,
            t,
            self.config.head_dim,
            self.config.rope_theta,
        );
        let start = cache.len;
        let total = start + t;
        let mask = |window: Option<usize>| {
            let mut values = vec![f32::MIN; b * t * total];
            for row in 0..b {
                for i in 0..t {
                    let query = start + i;
                    let out = &mut values[(row * t + i) * total..][..total];
                    if !batch.mask()[row * t + i] {
                        out[query] = 0.0; // a padding query attends itself only
                        continue;
                    }
                    for (key, v) in out.iter_mut().enumerate().take(query + 1) {
                        let in_window = window.is_none_or(|w| query - key < w);
                        if cache.real[row][key] && in_window {
                            *v = 0.0;
                        }
                    }
                }
            }
            values
        };
        RunPositions::from_tables(
            rope,
            mask(None),
            self.config.sliding_window.map(|w| mask(Some(w))),
            [b, t, total],
            self.kernels,
            &self.device,
        )
    }
}

impl<B: Backend> Attention<B> {
    /// Attention of the new tokens `x` (`[batch, new, d_model]`, starting at cache slot `start`) over
    /// the cached keys and their own, after appending theirs to `cache`.
    fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        cache: &mut LayerCache<B>,
        start: usize,
        capacity: usize,
        step: &RunPositions<B>,
        kind: AttentionKind,
    ) -> Result<Tensor<B, 3>> {
        let [b, t, _] = x.dims();
        let kernels = step.kernels();
        let q = self.q_proj.forward(x.clone(), kernels);
        let k = self.k_proj.forward(x.clone(), kernels);
        let v = self.v_proj.forward(x, kernels);
        let out = match (cache, step) {
            (
                LayerCache::Host(buffers),
                RunPositions::Host {
                    rope,
                    full_mask,
                    sliding_mask,
                },
            ) => {
                let buffers = buffers.get_or_insert_with(|| {
                    KvBuffers::new(b, self.n_kv_heads, self.head_dim, capacity.max(start + t))
                });
                buffers.reserve(start + t, start);
                let mask = layer_mask(kind, full_mask, sliding_mask);
                self.with_host_inputs([q, k, v], rope, mask, |inputs| {
                    buffers.write(inputs, start);
                    attend_cached(inputs, buffers, start + t)
                })?
            }
            (
                LayerCache::Device { keys, values },
                RunPositions::Burn {
                    rope,
                    full_mask,
                    sliding_mask,
                },
            ) => {
                let heads =
                    |x: Tensor<B, 3>, n: usize| x.reshape([b, t, n, self.head_dim]).swap_dims(1, 2);
                let q = rope.apply(heads(q, self.n_heads));
                let k = rope.apply(heads(k, self.n_kv_heads));
                let v = heads(v, self.n_kv_heads);
                let keys = append(keys, k, start, capacity);
                let values = append(values, v, start, capacity);
                let mut scores = q.matmul(self.repeat_kv(keys).swap_dims(2, 3)) * self.scale;
                if let Some(cap) = self.softcap {
                    scores = (scores / cap).tanh() * cap;
                }
                let mask = layer_mask(kind, full_mask, sliding_mask).clone();
                softmax(scores + mask, 3)
                    .matmul(self.repeat_kv(values))
                    .swap_dims(1, 2)
                    .reshape([b, t, self.n_heads * self.head_dim])
            }
            _ => {
                return Err(GemmaError::InvalidInput {
                    reason: "a decoding step ran on other kernels than its cache was made for"
                        .into(),
                })
            }
        };
        Ok(self.o_proj.forward(out, kernels))
    }
}

/// Writes `new` (`[batch, kv_heads, new, head_dim]`) at slots `start..start + new` of the buffer in
/// `slot` (allocated for `capacity` slots, doubled when full) and returns the filled slots
/// `0..start + new`. The buffer is moved out while it is written, so the write happens in place.
fn append<B: Backend>(
    slot: &mut Option<Tensor<B, 4>>,
    new: Tensor<B, 4>,
    start: usize,
    capacity: usize,
) -> Tensor<B, 4> {
    let [b, kv, t, hd] = new.dims();
    let end = start + t;
    let device = new.device();
    let mut buffer = slot
        .take()
        .unwrap_or_else(|| Tensor::zeros([b, kv, capacity.max(end), hd], &device));
    let room = buffer.dims()[2];
    if room < end {
        let grown = Tensor::zeros([b, kv, end.max(2 * room), hd], &device);
        buffer = if start == 0 {
            grown
        } else {
            grown.slice_assign([0..b, 0..kv, 0..start, 0..hd], buffer.narrow(2, 0, start))
        };
    }
    buffer = buffer.slice_assign([0..b, 0..kv, start..end, 0..hd], new);
    let filled = buffer.clone().narrow(2, 0, end);
    *slot = Some(buffer);
    filled
}
