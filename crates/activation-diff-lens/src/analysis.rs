//! Reading a whole difference (either flavour): every position of every layer and each layer's mean
//! through both models' logit lens and a crosscoder's latents, each layer's mean through the Patchscope,
//! and what counts as no difference at all.

use crosscoder::Crosscoder;
use gemma_model::{GemmaTokenizer, LanguageModel};
use ndarray::{s, Array2, ArrayView2, ArrayView3};
use serde::Serialize;

use crate::contrast::ContrastDifference;
use crate::difference::ActivationDifference;
use crate::error::Result;
use crate::patchscope::{identity_prompts, patchscope, PatchscopeReadout, PatchscopeSpec};
use crate::read::{align_with_crosscoder, logit_lens, Alignment, LensReadout};

/// A difference smaller than this fraction of the chat model's activation norm there is no difference:
/// float noise (two identical models give exactly 0; the same weights through another dtype or backend
/// give about 1e-6). Nothing is read from it and nothing is reported as found.
pub const NEGLIGIBLE_RELATIVE_NORM: f64 = 1e-4;

/// The vectors of one difference: per layer, `k` positions and their mean, with both models' mean
/// activation norms at each position.
#[derive(Debug, Clone, Copy)]
pub struct DifferenceView<'a> {
    /// The layers, in the order of the first axis.
    pub layers: &'a [usize],
    /// `[L, k, d]`.
    pub positions: ArrayView3<'a, f32>,
    /// `[L, d]`.
    pub mean: ArrayView2<'a, f32>,
    /// Per model (0 base, 1 chat), `[L, k]` (0 where a position holds nothing).
    pub norms: [ArrayView2<'a, f64>; 2],
}

impl ActivationDifference {
    /// The vectors to read.
    pub fn view(&self) -> DifferenceView<'_> {
        DifferenceView {
            layers: &self.layers,
            positions: self.delta.view(),
            mean: self.delta_mean.view(),
            norms: [self.norms[0].view(), self.norms[1].view()],
        }
    }
}

impl ContrastDifference {
    /// The vectors to read.
    pub fn view(&self) -> DifferenceView<'_> {
        DifferenceView {
            layers: &self.layers,
            positions: self.delta.view(),
            mean: self.delta_mean.view(),
            norms: [self.norms[0].view(), self.norms[1].view()],
        }
    }
}

impl DifferenceView<'_> {
    /// The chat model's mean activation norm at layer index `l` over the positions that hold something.
    pub fn chat_norm(&self, l: usize) -> f64 {
        let filled: Vec<f64> = self.norms[1]
            .row(l)
            .iter()
            .copied()
            .filter(|n| *n > 0.0)
            .collect();
        if filled.is_empty() {
            0.0
        } else {
            filled.iter().sum::<f64>() / filled.len() as f64
        }
    }
}

/// One position (or the mean over positions, `position: null`) of one layer, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionReading {
    /// The layer.
    pub layer: usize,
    /// The position (0-based), or `None` for the mean over the positions.
    pub position: Option<usize>,
    /// `||delta||`.
    pub norm: f32,
    /// `||delta||` over the chat model's mean activation norm there (0 where that is 0).
    pub relative_norm: f64,
    /// Below [`NEGLIGIBLE_RELATIVE_NORM`]: not read (no lens, no latents).
    pub negligible: bool,
    /// Mean norms of the base and the chat activations there (`None` for the mean over positions).
    pub model_norms: Option<[f64; 2]>,
    /// The lens through each model's head (base first); empty when negligible.
    pub lens: Vec<LensReadout>,
    /// The crosscoder latents it aligns with best (empty without a crosscoder or when negligible).
    pub aligned_latents: Vec<Alignment>,
}

/// The Patchscope of one layer's mean difference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerPatchscope {
    /// The layer.
    pub layer: usize,
    /// The readout at every scale.
    #[serde(flatten)]
    pub readout: PatchscopeReadout,
}

/// How to read a difference.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Tokens per side of each lens readout, latents per alignment, tokens per Patchscope scale.
    pub top: usize,
    /// Patchscope scales (times the chat model's mean activation norm at the layer); empty: no
    /// Patchscope (it needs the chat model whole).
    pub patchscope_scales: Vec<f32>,
}

impl Default for ReadOptions {
    /// Ten tokens, the Patchscope at 0.25, 0.5, 1, 2 and 4 times the norm.
    fn default() -> Self {
        ReadOptions {
            top: 10,
            patchscope_scales: vec![0.25, 0.5, 1.0, 2.0, 4.0],
        }
    }
}

/// A difference, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DifferenceReading {
    /// Every layer's positions, then its mean over positions.
    pub readings: Vec<PositionReading>,
    /// Per layer whose mean is not negligible, the token-identity Patchscope of the mean through the
    /// chat model (empty when not asked for).
    pub patchscope: Vec<LayerPatchscope>,
}

impl DifferenceReading {
    /// Whether any position or mean is more than float noise.
    pub fn found(&self) -> bool {
        self.readings.iter().any(|r| !r.negligible)
    }
}

/// Reads every vector of `view` through both models' heads (`models` loaded with their unembedding;
/// the chat model whole when the Patchscope runs) and `crosscoder`'s latents.
pub fn read_difference(
    view: DifferenceView<'_>,
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    crosscoder: Option<&dyn Crosscoder>,
    options: &ReadOptions,
) -> Result<DifferenceReading> {
    let (_, k, d) = view.positions.dim();
    let mut reading = DifferenceReading {
        readings: Vec::new(),
        patchscope: Vec::new(),
    };
    for (l, &layer) in view.layers.iter().enumerate() {
        let mut rows = Array2::zeros((k + 1, d));
        rows.slice_mut(s![..k, ..])
            .assign(&view.positions.slice(s![l, .., ..]));
        rows.row_mut(k).assign(&view.mean.row(l));
        let chat_norms: Vec<f64> = (0..k)
            .map(|j| view.norms[1][[l, j]])
            .chain([view.chat_norm(l)])
            .collect();
        let norms: Vec<f32> = rows.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
        let relative: Vec<f64> = norms
            .iter()
            .zip(&chat_norms)
            .map(|(n, h)| if *h > 0.0 { f64::from(*n) / h } else { 0.0 })
            .collect();
        let readable: Vec<usize> = (0..=k)
            .filter(|j| relative[*j] >= NEGLIGIBLE_RELATIVE_NORM)
            .collect();
        let selected = rows.select(ndarray::Axis(0), &readable);
        let (lenses, aligned) = if readable.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let lenses = models
                .iter()
                .map(|m| logit_lens(selected.view(), *m, tokenizer, options.top))
                .collect::<Result<Vec<_>>>()?;
            let aligned = match crosscoder {
                Some(cc) => align_with_crosscoder(selected.view(), cc, options.top)?,
                None => vec![Vec::new(); readable.len()],
            };
            (lenses, aligned)
        };
        for j in 0..=k {
            let at = readable.iter().position(|r| *r == j);
            reading.readings.push(PositionReading {
                layer,
                position: (j < k).then_some(j),
                norm: norms[j],
                relative_norm: relative[j],
                negligible: at.is_none(),
                model_norms: (j < k).then(|| [view.norms[0][[l, j]], view.norms[1][[l, j]]]),
                lens: at.map_or_else(Vec::new, |i| lenses.iter().map(|m| m[i].clone()).collect()),
                aligned_latents: at.map_or_else(Vec::new, |i| aligned[i].clone()),
            });
        }
        if !options.patchscope_scales.is_empty() && readable.contains(&k) {
            let spec = PatchscopeSpec {
                layer,
                scales: options.patchscope_scales.clone(),
                target_norm: chat_norms[k] as f32,
                prompts: identity_prompts(),
                top: options.top,
            };
            reading.patchscope.push(LayerPatchscope {
                layer,
                readout: patchscope(view.mean.row(l), models[1], tokenizer, &spec)?,
            });
        }
    }
    Ok(reading)
}
