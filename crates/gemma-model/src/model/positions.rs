//! Where each token sits: rotary tables (NeoX half-split, HF's f32 angles) and the additive causal and
//! sliding-window masks of a run, on the host or on the device.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::Kernels;
use crate::batch::TokenBatch;
use crate::config::{AttentionKind, Gemma2Config};

/// Rotary tables on the host, NeoX half-split layout: `cos`/`sin` are `[batch, pos, head_dim]`.
pub(super) struct RopeTables {
    pub(super) cos: Vec<f32>,
    pub(super) sin: Vec<f32>,
    shape: [usize; 4],
}

impl RopeTables {
    /// Angles `pos * inv_freq` in f32, `inv_freq[i] = 1 / theta^(2i / head_dim)`, duplicated
    /// over both halves, as HF computes them.
    pub(super) fn new(
        positions: &[u32],
        batch: usize,
        seq_len: usize,
        head_dim: usize,
        theta: f64,
    ) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * head_dim);
        let mut sin = Vec::with_capacity(positions.len() * head_dim);
        for &p in positions {
            for _half in 0..2 {
                for f in &inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        RopeTables {
            cos,
            sin,
            shape: [batch, 1, seq_len, head_dim],
        }
    }

    pub(super) fn to_device<B: Backend>(&self, device: &B::Device) -> Rope<B> {
        let tensor = |values: &[f32]| {
            Tensor::from_data(TensorData::new(values.to_vec(), self.shape), device)
        };
        Rope {
            cos: tensor(&self.cos),
            sin: tensor(&self.sin),
        }
    }
}

/// Rotary position embedding on the device. `cos`/`sin`: `[batch, 1, pos, head_dim]`.
pub(super) struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    /// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = cat(-x[half:], x[:half])`.
    pub(super) fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let first = x.clone().narrow(3, 0, half);
        let second = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// Rotary tables and attention masks of one run, in the form the chosen kernels read.
pub(super) enum RunPositions<B: Backend> {
    /// Masks `[batch, 1, pos, pos]` on the device.
    Burn {
        rope: Rope<B>,
        full_mask: Tensor<B, 4>,
        sliding_mask: Option<Tensor<B, 4>>,
    },
    /// Masks `[batch, pos, pos]` on the host.
    Host {
        rope: RopeTables,
        full_mask: Vec<f32>,
        sliding_mask: Option<Vec<f32>>,
    },
}

impl<B: Backend> RunPositions<B> {
    pub(super) fn new(
        batch: &TokenBatch,
        config: &Gemma2Config,
        kernels: Kernels,
        device: &B::Device,
    ) -> Self {
        let (b, t) = (batch.batch_size(), batch.seq_len());
        let rope = RopeTables::new(&batch.positions(), b, t, config.head_dim, config.rope_theta);
        let full_mask = additive_mask(batch, None);
        let sliding_mask = config.sliding_window.map(|w| additive_mask(batch, Some(w)));
        Self::from_tables(rope, full_mask, sliding_mask, [b, t, t], kernels, device)
    }

    /// The tables in the form `kernels` read; the masks are `[batch, pos, keys]` (`keys` counts the
    /// cached positions too when decoding).
    pub(super) fn from_tables(
        rope: RopeTables,
        full_mask: Vec<f32>,
        sliding_mask: Option<Vec<f32>>,
        [b, t, keys]: [usize; 3],
        kernels: Kernels,
        device: &B::Device,
    ) -> Self {
        match kernels {
            Kernels::Host => RunPositions::Host {
                rope,
                full_mask,
                sliding_mask,
            },
            Kernels::BurnOps => {
                let tensor = |values: Vec<f32>| {
                    Tensor::from_data(TensorData::new(values, [b, 1, t, keys]), device)
                };
                RunPositions::Burn {
                    rope: rope.to_device(device),
                    full_mask: tensor(full_mask),
                    sliding_mask: sliding_mask.map(tensor),
                }
            }
        }
    }

    /// The kernels these tables are for.
    pub(super) fn kernels(&self) -> Kernels {
        match self {
            RunPositions::Burn { .. } => Kernels::BurnOps,
            RunPositions::Host { .. } => Kernels::Host,
        }
    }
}

/// The mask a layer of `kind` uses: the sliding-window one on sliding layers (if the model has a
/// window), the full causal one otherwise.
pub(super) fn layer_mask<'a, M>(kind: AttentionKind, full: &'a M, sliding: &'a Option<M>) -> &'a M {
    match (kind, sliding) {
        (AttentionKind::Sliding, Some(m)) => m,
        _ => full,
    }
}

/// Additive attention mask `[batch, pos, pos]`: 0 where query `i` may attend key `j`
/// (`j` real, `j <= i`, and `i - j < window` for sliding layers), `f32::MIN` elsewhere, as HF.
/// A padding query attends itself only, so that no row is fully masked.
pub(super) fn additive_mask(batch: &TokenBatch, window: Option<usize>) -> Vec<f32> {
    let (b, t) = (batch.batch_size(), batch.seq_len());
    let mask = batch.mask();
    let mut values = vec![f32::MIN; b * t * t];
    for s in 0..b {
        for i in 0..t {
            let row = &mut values[(s * t + i) * t..(s * t + i + 1) * t];
            if !mask[s * t + i] {
                row[i] = 0.0;
                continue;
            }
            for (j, v) in row.iter_mut().enumerate().take(i + 1) {
                let in_window = window.is_none_or(|w| i - j < w);
                if mask[s * t + j] && in_window {
                    *v = 0.0;
                }
            }
        }
    }
    values
}
