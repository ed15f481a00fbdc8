//! The activation difference: over texts unrelated to the fine-tune, the mean chat-minus-base residual at
//! each of the first `k` positions after `<bos>`, per layer (Minder et al. 2025, the diffing toolkit's
//! `compute_differences`). Only those `k + 1` tokens of a text run, and each model only up to the deepest
//! chosen layer. The sums are kept in f64 and can be saved and resumed ([`AdlState`]).

use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel, PaddingSide, RunRequest, TokenBatch};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::{tokenize_prompt, PromptInput, TokenizationMode};
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

use crate::error::{AdlError, Result};

/// What to compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdlSpec {
    /// The layers whose `blocks.{l}.hook_resid_post` is read (0-based).
    pub layers: Vec<usize>,
    /// Positions after `<bos>` (the paper's and the toolkit's default is 5).
    pub k: usize,
    /// Texts per forward batch (every text of a batch has exactly `k + 1` tokens: no padding).
    pub batch_size: usize,
    /// Stop after this many texts have been used (`None`: every text).
    pub max_texts: Option<usize>,
}

impl AdlSpec {
    /// `layers` with `k = 5`, batches of 32, every text.
    pub fn new(layers: Vec<usize>) -> Self {
        AdlSpec {
            layers,
            k: 5,
            batch_size: 32,
            max_texts: None,
        }
    }

    fn check(&self, n_layers: usize) -> Result<()> {
        check_request(&self.layers, self.k, self.batch_size, n_layers)
    }
}

/// At least one existing layer, `k >= 1`, `batch_size >= 1`.
pub(crate) fn check_request(
    layers: &[usize],
    k: usize,
    batch_size: usize,
    n_layers: usize,
) -> Result<()> {
    if layers.is_empty() || k == 0 || batch_size == 0 {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "need at least one layer, k >= 1 and batch_size >= 1 (layers {layers:?}, k {k}, batch_size {batch_size})"
            ),
        });
    }
    if let Some(l) = layers.iter().find(|l| **l >= n_layers) {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "layer {l} does not exist: the models have {n_layers} (0..={})",
                n_layers - 1
            ),
        });
    }
    Ok(())
}

/// The running sums of a computation, serialisable so that a killed run resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdlState {
    /// The spec the sums belong to.
    pub spec: AdlSpec,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Documents consumed so far (used or skipped), in corpus order.
    pub consumed: usize,
    /// Texts used.
    pub texts: usize,
    /// Texts skipped: fewer than `k` tokens after `<bos>`.
    pub skipped: usize,
    /// Per model, `sum h` over texts, `[layers, k, d]` row-major.
    pub sums: [Vec<f64>; 2],
    /// Per model, `sum ||h||` over texts, `[layers, k]`.
    pub norm_sums: [Vec<f64>; 2],
}

impl AdlState {
    /// Empty sums for `spec` at width `d_model`.
    pub fn new(spec: AdlSpec, d_model: usize) -> Self {
        let (l, k) = (spec.layers.len(), spec.k);
        AdlState {
            spec,
            d_model,
            consumed: 0,
            texts: 0,
            skipped: 0,
            sums: [vec![0.0; l * k * d_model], vec![0.0; l * k * d_model]],
            norm_sums: [vec![0.0; l * k], vec![0.0; l * k]],
        }
    }

    /// Adds one batch's activations of model `m` at every chosen layer, `[texts, k + 1, d]` each.
    fn add(&mut self, m: usize, activations: &[&Array3<f32>]) {
        let (k, d) = (self.spec.k, self.d_model);
        for (li, acts) in activations.iter().enumerate() {
            for text in acts.outer_iter() {
                for j in 0..k {
                    let row = text.row(j + 1);
                    let base = (li * k + j) * d;
                    let mut norm = 0.0f64;
                    for (c, v) in row.iter().enumerate() {
                        let v = f64::from(*v);
                        self.sums[m][base + c] += v;
                        norm += v * v;
                    }
                    self.norm_sums[m][li * k + j] += norm.sqrt();
                }
            }
        }
    }

    /// The result so far.
    pub fn result(&self) -> Result<ActivationDifference> {
        if self.texts == 0 {
            return Err(AdlError::InvalidInput {
                reason: format!(
                    "no text had {} tokens after <bos> ({} skipped)",
                    self.spec.k, self.skipped
                ),
            });
        }
        let (l, k, d) = (self.spec.layers.len(), self.spec.k, self.d_model);
        let n = self.texts as f64;
        let mean = |m: usize| {
            Array3::from_shape_fn((l, k, d), |(a, j, c)| self.sums[m][(a * k + j) * d + c] / n)
        };
        let (base, chat) = (mean(stereo_core::BASE), mean(stereo_core::CHAT));
        let delta = &chat - &base;
        let delta_mean = Array2::from_shape_fn((l, d), |(a, c)| {
            (0..k).map(|j| delta[[a, j, c]]).sum::<f64>() / k as f64
        });
        let norms =
            |m: usize| Array2::from_shape_fn((l, k), |(a, j)| self.norm_sums[m][a * k + j] / n);
        Ok(ActivationDifference {
            layers: self.spec.layers.clone(),
            k,
            texts: self.texts,
            skipped: self.skipped,
            delta: delta.mapv(|v| v as f32),
            delta_mean: delta_mean.mapv(|v| v as f32),
            base_mean: base.mapv(|v| v as f32),
            chat_mean: chat.mapv(|v| v as f32),
            norms: [norms(stereo_core::BASE), norms(stereo_core::CHAT)],
        })
    }
}

/// The mean activations and their difference.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationDifference {
    /// The layers, in the order of the first axis below.
    pub layers: Vec<usize>,
    /// Positions after `<bos>`.
    pub k: usize,
    /// Texts averaged.
    pub texts: usize,
    /// Texts skipped (too short).
    pub skipped: usize,
    /// `delta[l, j] = mean h^chat_j - mean h^base_j` at layer `layers[l]`, position `j + 1`, `[L, k, d]`.
    pub delta: Array3<f32>,
    /// `delta` averaged over the `k` positions, `[L, d]`.
    pub delta_mean: Array2<f32>,
    /// Mean base activation, `[L, k, d]`.
    pub base_mean: Array3<f32>,
    /// Mean chat activation, `[L, k, d]`.
    pub chat_mean: Array3<f32>,
    /// Per model (0 base, 1 chat), the mean L2 norm of its activations, `[L, k]` (to scale steering
    /// and Patchscope sensibly).
    pub norms: [Array2<f64>; 2],
}

/// Runs `documents` (raw text: `<bos>` + text; conversations: the chat template) through both models
/// and accumulates into `state` (fresh or resumed: documents before `state.consumed` are skipped);
/// `checkpoint` is called with the state after every batch (save it to resume).
pub fn accumulate(
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    documents: &[PromptInput],
    state: &mut AdlState,
    checkpoint: &mut dyn FnMut(&AdlState) -> Result<()>,
    progress: bool,
) -> Result<()> {
    let config = models[stereo_core::CHAT].config();
    state.spec.check(config.num_hidden_layers)?;
    if config.hidden_size != state.d_model {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "the saved sums are {} wide, the models {}",
                state.d_model, config.hidden_size
            ),
        });
    }
    let bar = progress_bar(progress, documents.len(), state.consumed);
    let k = state.spec.k;
    let limit = state.spec.max_texts.unwrap_or(usize::MAX);
    while state.consumed < documents.len() && state.texts < limit {
        let mut batch = Vec::new();
        let mut consumed = state.consumed;
        let mut skipped = 0;
        while consumed < documents.len()
            && batch.len() < state.spec.batch_size
            && state.texts + batch.len() < limit
        {
            let ids = tokenize_prompt(tokenizer, &documents[consumed], TokenizationMode::Raw)
                .map_err(|e| AdlError::InvalidInput {
                    reason: format!("document {consumed}: {e}"),
                })?
                .ids;
            consumed += 1;
            if ids.len() > k {
                batch.push(ids[..=k].to_vec());
            } else {
                skipped += 1;
            }
        }
        if !batch.is_empty() {
            add_sequences(models, &batch, state)?;
        }
        state.skipped += skipped;
        state.consumed = consumed;
        bar.set_position(consumed as u64);
        checkpoint(state)?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Adds texts already tokenized, each exactly `<bos>` + `k` tokens, to `state` (one forward batch per
/// model; what [`accumulate`] does per batch, and what a benchmark times).
pub fn add_sequences(
    models: [&dyn LanguageModel; 2],
    sequences: &[Vec<u32>],
    state: &mut AdlState,
) -> Result<()> {
    let k = state.spec.k;
    if let Some(bad) = sequences.iter().position(|s| s.len() != k + 1) {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "sequence {bad} has {} tokens; the difference reads exactly k + 1 = {}",
                sequences[bad].len(),
                k + 1
            ),
        });
    }
    let hooks: Vec<HookPoint> = state
        .spec
        .layers
        .iter()
        .map(|l| HookPoint::ResidPost(*l))
        .collect();
    let request = RunRequest::capture(hooks.iter().copied());
    let pad = models[stereo_core::CHAT].config().pad_token_id;
    let tokens = TokenBatch::new(sequences, pad, PaddingSide::Right)?;
    // Both models run before anything is added, so a failure leaves the sums as they were.
    let outs = models
        .iter()
        .map(|model| model.run(&tokens, &request))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for (m, (model, out)) in models.iter().zip(&outs).enumerate() {
        let acts = hooks
            .iter()
            .map(|h| {
                out.activations
                    .get(h)
                    .ok_or_else(|| AdlError::InvalidInput {
                        reason: format!("{} returned no activation at {h}", model.name()),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        state.add(m, &acts);
    }
    state.texts += sequences.len();
    Ok(())
}

fn progress_bar(show: bool, total: usize, done: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "activation difference [{bar:36}] {pos}/{len} texts ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done as u64);
    bar
}
