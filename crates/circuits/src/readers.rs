//! What reads a latent downstream, in the chat model's layers after the crosscoder's.
//!
//! - **Composition scores** (Elhage et al. 2021, with a vector for the earlier matrix): how much a later
//!   head's queries, keys or values, or an MLP's gate and up projections, read the latent's chat decoder
//!   direction `d` through the norm before them (its `1 + w` folded into the weights):
//!   `||d^T diag(g) W|| / (||d|| ||diag(g) W||_F)`. A random direction scores about `1 / sqrt(d_model)`
//!   ([`ReaderReport::baseline`]). Keys and values are per KV head (shared by its query heads). For MLPs,
//!   the neurons whose gate or up column is most aligned with `diag(g) d` are listed too, since a few
//!   neurons can read a direction that the whole matrix dilutes.
//! - **Ablation**: the latent set to 0 at its layer in the chat model (the causal tests' edit: the
//!   crosscoder's encode of both models' residuals, `x' = h^c - f_j d_j^c`, error kept), the pass resumed
//!   from there, and each later head's `hook_result` and MLP's `hook_mlp_out` compared with the unedited
//!   pass: `||change|| / ||unedited||` per token, averaged over the real tokens after `<bos>` of each
//!   prompt; over prompts a mean with a 95% interval. Readers rank by it.

use crosscoder::Crosscoder;
use gemma_model::{
    GemmaTokenizer, HeadHook, HookPoint, LanguageModel, LayerWeights, PaddingSide, RunRequest,
    TokenBatch,
};
use model_pair::{tokenize_prompt, LatentEdit, PromptInput, TokenizationMode};
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, Axis};
use serde::Serialize;
use steering::MeanCi;

use crate::decompose::Component;
use crate::error::{CircuitError, Result};

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReaderSpec {
    /// The latent.
    pub latent: usize,
    /// The crosscoder's layer; readers are the chat model's layers after it.
    pub layer: usize,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// How text prompts are tokenized.
    #[serde(skip)]
    pub tokenization: TokenizationMode,
    /// Neurons listed per MLP.
    pub top_neurons: usize,
}

impl ReaderSpec {
    /// `latent` at `layer`: batches of 8, raw tokenization, 5 neurons per MLP.
    pub fn new(latent: usize, layer: usize) -> Self {
        ReaderSpec {
            latent,
            layer,
            batch_size: 8,
            tokenization: TokenizationMode::Raw,
            top_neurons: 5,
        }
    }
}

/// An MLP neuron and how its input columns align with the direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NeuronReader {
    /// The neuron.
    pub neuron: usize,
    /// Cosine of its `gate_proj` column with `diag(g) d`.
    pub gate_cosine: f32,
    /// Cosine of its `up_proj` column with `diag(g) d`.
    pub up_cosine: f32,
}

/// One later component as a reader of the direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentReader {
    /// The head or MLP.
    pub component: Component,
    /// `L2H0`, `L3 MLP`.
    pub label: String,
    /// Composition scores: `q`, `k`, `v` for a head (`k`, `v` of its KV head); `gate`, `up` for an MLP.
    pub composition: Vec<(String, f32)>,
    /// For an MLP, its most aligned neurons (by the larger absolute cosine).
    pub neurons: Vec<NeuronReader>,
    /// The relative change of its output when the latent is ablated.
    pub ablation: MeanCi,
}

/// The readers of a latent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReaderReport {
    /// The spec.
    pub spec: ReaderSpec,
    /// Prompts measured.
    pub prompts: usize,
    /// The composition score of a random direction, `1 / sqrt(d_model)`.
    pub baseline: f32,
    /// Every head and MLP after the layer, largest mean ablation effect first.
    pub components: Vec<ComponentReader>,
}

/// Measures every head and MLP of `chat` after `spec.layer` as a reader of latent `spec.latent`.
/// `base` runs to the layer (the crosscoder reads both models); `chat` must be loaded whole enough to
/// have a layer after it.
pub fn find_readers(
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    crosscoder: &dyn Crosscoder,
    prompts: &[PromptInput],
    spec: &ReaderSpec,
) -> Result<ReaderReport> {
    let chat = models[1];
    let config = chat.config().clone();
    let last = chat.loaded_layers();
    if spec.layer + 1 >= last || spec.latent >= crosscoder.dict_size() || prompts.is_empty() {
        return Err(CircuitError::InvalidInput {
            reason: format!(
                "readers need a layer after {} (the chat model has layers 0..{last}), a latent below {} (got {}) and prompts",
                spec.layer,
                crosscoder.dict_size(),
                spec.latent
            ),
        });
    }
    let raw = model_pair::dense_contribution(crosscoder, {
        let mut one = Array2::zeros((1, crosscoder.dict_size()));
        one[[0, spec.latent]] = 1.0;
        one
    })?;
    // The raw-unit chat direction (what the ablation removes per unit of the latent).
    let raw_direction = raw.slice(s![0, 1, ..]).to_owned();
    let effects = ablation_effects(models, tokenizer, crosscoder, prompts, spec)?;
    let heads = config.num_attention_heads;
    let group = heads / config.num_key_value_heads;
    let e = config.head_dim;
    let mut components = Vec::new();
    for layer in spec.layer + 1..last {
        let w = chat.layer_weights(layer)?;
        for head in 0..heads {
            let kv = head / group;
            let score = |weight: &Array2<f32>, h: usize| {
                composition(
                    raw_direction.view(),
                    &w.input_norm,
                    weight.slice(s![.., h * e..(h + 1) * e]),
                )
            };
            let component = Component::Head { layer, head };
            components.push(ComponentReader {
                component,
                label: component.label(),
                composition: vec![
                    ("q".into(), score(&w.q_proj, head)),
                    ("k".into(), score(&w.k_proj, kv)),
                    ("v".into(), score(&w.v_proj, kv)),
                ],
                neurons: Vec::new(),
                ablation: effects[&component],
            });
        }
        let component = Component::Mlp { layer };
        components.push(ComponentReader {
            component,
            label: component.label(),
            composition: vec![
                (
                    "gate".into(),
                    composition(
                        raw_direction.view(),
                        &w.pre_feedforward_norm,
                        w.gate_proj.view(),
                    ),
                ),
                (
                    "up".into(),
                    composition(
                        raw_direction.view(),
                        &w.pre_feedforward_norm,
                        w.up_proj.view(),
                    ),
                ),
            ],
            neurons: neurons(raw_direction.view(), &w, spec.top_neurons),
            ablation: effects[&component],
        });
    }
    components.sort_by(|a, b| {
        b.ablation
            .mean
            .total_cmp(&a.ablation.mean)
            .then(a.component.cmp(&b.component))
    });
    Ok(ReaderReport {
        spec: spec.clone(),
        prompts: prompts.len(),
        baseline: 1.0 / (config.hidden_size as f32).sqrt(),
        components,
    })
}

/// `||d^T diag(g) W|| / (||d|| ||diag(g) W||_F)`.
fn composition(d: ArrayView1<'_, f32>, g: &Array1<f32>, w: ArrayView2<'_, f32>) -> f32 {
    let scaled = &w * &g.view().insert_axis(Axis(1));
    let read = d.dot(&scaled);
    let frobenius = scaled.iter().map(|v| v * v).sum::<f32>().sqrt();
    let norm = d.dot(&d).sqrt();
    if frobenius == 0.0 || norm == 0.0 {
        return 0.0;
    }
    read.dot(&read).sqrt() / (norm * frobenius)
}

/// The MLP neurons whose gate or up column is most aligned with `diag(g) d`.
fn neurons(d: ArrayView1<'_, f32>, w: &LayerWeights, top: usize) -> Vec<NeuronReader> {
    let read: Array1<f32> = &d * &w.pre_feedforward_norm;
    let read_norm = read.dot(&read).sqrt();
    let cosine = |m: &Array2<f32>, n: usize| {
        let col = m.column(n);
        let norm = col.dot(&col).sqrt();
        if norm == 0.0 || read_norm == 0.0 {
            0.0
        } else {
            col.dot(&read) / (norm * read_norm)
        }
    };
    let mut all: Vec<NeuronReader> = (0..w.gate_proj.ncols())
        .map(|n| NeuronReader {
            neuron: n,
            gate_cosine: cosine(&w.gate_proj, n),
            up_cosine: cosine(&w.up_proj, n),
        })
        .collect();
    let strength = |r: &NeuronReader| r.gate_cosine.abs().max(r.up_cosine.abs());
    all.sort_by(|a, b| {
        strength(b)
            .total_cmp(&strength(a))
            .then(a.neuron.cmp(&b.neuron))
    });
    all.truncate(top);
    all
}

/// Per later component, the relative change of its output when the latent is ablated.
fn ablation_effects(
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    crosscoder: &dyn Crosscoder,
    prompts: &[PromptInput],
    spec: &ReaderSpec,
) -> Result<std::collections::BTreeMap<Component, MeanCi>> {
    let (base, chat) = (models[0], models[1]);
    let last = chat.loaded_layers();
    let heads = chat.config().num_attention_heads;
    let hook = HookPoint::ResidPost(spec.layer);
    let edit = LatentEdit::ablate(&[spec.latent]).prepare(crosscoder)?;
    let mut later = RunRequest::default();
    for l in spec.layer + 1..last {
        later.capture.push(HookPoint::MlpOut(l));
        later = later.capture_head(HeadHook::Result(l));
    }
    let ids = prompts
        .iter()
        .map(|p| Ok(tokenize_prompt(tokenizer, p, spec.tokenization)?.ids))
        .collect::<Result<Vec<_>>>()?;
    let pad = chat.config().pad_token_id;
    let mut per_prompt: std::collections::BTreeMap<Component, Vec<f64>> = Default::default();
    for chunk in ids.chunks(spec.batch_size.max(1)) {
        let batch = TokenBatch::new(chunk, pad, PaddingSide::Right)?;
        let capture = RunRequest::capture([hook]);
        let residual = |m: &dyn LanguageModel| -> Result<Array3<f32>> {
            m.run(&batch, &capture)?
                .activations
                .remove(&hook)
                .ok_or_else(|| CircuitError::InvalidInput {
                    reason: format!("{} returned no {hook}", m.name()),
                })
        };
        let (h_base, h_chat) = (residual(base)?, residual(chat)?);
        let (b, t, d) = h_chat.dim();
        let flat = |x: &Array3<f32>| {
            x.view()
                .into_shape_with_order((b * t, d))
                .map(|v| v.to_owned())
        };
        let edited = edit
            .apply(
                crosscoder,
                flat(&h_base).map_err(shape)?.view(),
                flat(&h_chat).map_err(shape)?.view(),
            )?
            .into_shape_with_order((b, t, d))
            .map_err(shape)?;
        let unedited = chat.run(&batch, &later.clone().resumed_from(spec.layer, h_chat))?;
        let ablated = chat.run(&batch, &later.clone().resumed_from(spec.layer, edited))?;
        for l in spec.layer + 1..last {
            let (r0, r1) = (
                &unedited.heads[&HeadHook::Result(l)],
                &ablated.heads[&HeadHook::Result(l)],
            );
            for h in 0..heads {
                let component = Component::Head { layer: l, head: h };
                for (row, seq) in chunk.iter().enumerate() {
                    let change = relative_change(
                        r0.slice(s![row, ..seq.len(), h, ..]),
                        r1.slice(s![row, ..seq.len(), h, ..]),
                    );
                    per_prompt.entry(component).or_default().push(change);
                }
            }
            let (m0, m1) = (
                &unedited.activations[&HookPoint::MlpOut(l)],
                &ablated.activations[&HookPoint::MlpOut(l)],
            );
            for (row, seq) in chunk.iter().enumerate() {
                let change = relative_change(
                    m0.slice(s![row, ..seq.len(), ..]),
                    m1.slice(s![row, ..seq.len(), ..]),
                );
                per_prompt
                    .entry(Component::Mlp { layer: l })
                    .or_default()
                    .push(change);
            }
        }
    }
    Ok(per_prompt
        .into_iter()
        .map(|(c, values)| (c, MeanCi::of(&values)))
        .collect())
}

fn shape(e: ndarray::ShapeError) -> CircuitError {
    CircuitError::InvalidInput {
        reason: format!("residual of an unexpected shape: {e}"),
    }
}

/// Mean over the tokens after `<bos>` of `||after - before|| / ||before||` (0 where both are 0).
fn relative_change(before: ArrayView2<'_, f32>, after: ArrayView2<'_, f32>) -> f64 {
    let from = usize::from(before.nrows() > 1);
    let values: Vec<f64> = (from..before.nrows())
        .map(|i| {
            let (x, y) = (before.row(i), after.row(i));
            let diff: f64 = x
                .iter()
                .zip(y.iter())
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let norm: f64 = x.iter().map(|a| f64::from(*a).powi(2)).sum();
            if norm == 0.0 {
                if diff == 0.0 {
                    0.0
                } else {
                    1.0
                }
            } else {
                (diff / norm).sqrt()
            }
        })
        .collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
