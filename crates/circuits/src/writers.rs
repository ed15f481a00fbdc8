//! Which components write a latent. The crosscoder's pre-activation of latent `j` is affine in the two
//! residuals it reads (`pre_j = sum_m x_m . W[j, m] + b[j]`, [`Crosscoder::pre_activation_affine`]), and
//! each residual is a sum of components ([`decompose`]), so per token
//! `pre_j = b[j] + sum_m sum_c W[j, m] . c_m` exactly. Per component and prompt (mean over the real
//! tokens after `<bos>`): its contribution in the base model `W[j, base] . c_base`, in the chat model
//! `W[j, chat] . c_chat`, and what chat training changed, `W[j, chat] . (c_chat - c_base)` (zero for a
//! component whose output did not change). Over the prompts: means with 95% intervals.

use crosscoder::Crosscoder;
use gemma_model::{GemmaTokenizer, LanguageModel, PaddingSide, TokenBatch};
use model_pair::{tokenize_prompt, PromptInput, TokenizationMode};
use ndarray::{s, Array1, Array2, Array3, ArrayView1, Axis};
use serde::Serialize;
use steering::MeanCi;

use crate::decompose::{decompose, Component, ResidualDecomposition};
use crate::error::{CircuitError, Result};

/// A component's share of the total absolute change above which (with an interval excluding 0) it
/// "stands out" as a writer chat training changed.
pub const STANDOUT_SHARE: f64 = 0.1;

/// What to attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriterSpec {
    /// The latent.
    pub latent: usize,
    /// The layer of the crosscoder's hook (`blocks.{layer}.hook_resid_post`).
    pub layer: usize,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// How text prompts are tokenized.
    #[serde(skip)]
    pub tokenization: TokenizationMode,
    /// How many of the top heads get their attention patterns kept, and on how many prompts.
    pub pattern_heads: usize,
    /// Prompts whose patterns are kept per top head.
    pub pattern_prompts: usize,
}

impl WriterSpec {
    /// `latent` at `layer`: batches of 8, raw tokenization, patterns of the top 3 heads on 3 prompts.
    pub fn new(latent: usize, layer: usize) -> Self {
        WriterSpec {
            latent,
            layer,
            batch_size: 8,
            tokenization: TokenizationMode::Raw,
            pattern_heads: 3,
            pattern_prompts: 3,
        }
    }
}

/// One prompt's attribution, token by token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAttribution {
    /// The prompt's token ids.
    pub ids: Vec<u32>,
    /// Per model (0 base, 1 chat), `[components, tokens]`: `W[j, m] . c_m` at each token.
    pub contributions: [Array2<f32>; 2],
    /// `[components, tokens]`: `W[j, chat] . (c_chat - c_base)`.
    pub differences: Array2<f32>,
    /// The constant `b[j]` (the encoder bias with the normaliser's shift folded in).
    pub constant: f32,
    /// The pre-activation at each token, from the residuals themselves.
    pub pre_activation: Array1<f32>,
}

/// A component's writes over the prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentWriter {
    /// The component.
    pub component: Component,
    /// `embed`, `L1H2`, `L1 MLP`.
    pub label: String,
    /// Its contribution in the base model.
    pub base: MeanCi,
    /// Its contribution in the chat model.
    pub chat: MeanCi,
    /// What chat training changed: `W[j, chat] . (c_chat - c_base)`.
    pub difference: MeanCi,
}

/// One head's attention pattern on one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternView {
    /// The head.
    pub component: Component,
    /// The prompt's index among the attributed prompts.
    pub prompt: usize,
    /// Its tokens.
    pub tokens: Vec<String>,
    /// Per model (base, chat), the pattern `[query][key]` over the real tokens.
    pub patterns: [Vec<Vec<f32>>; 2],
}

/// The writers of a latent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WriterReport {
    /// The spec.
    pub spec: WriterSpec,
    /// Prompts attributed.
    pub prompts: usize,
    /// The constant `b[j]`.
    pub constant: f32,
    /// The latent's mean pre-activation per prompt.
    pub pre_activation: MeanCi,
    /// Every component, largest absolute mean difference first.
    pub components: Vec<ComponentWriter>,
    /// The components that stand out: interval of the difference excluding 0 and at least
    /// [`STANDOUT_SHARE`] of the total absolute mean difference.
    pub stands_out: Vec<Component>,
    /// Attention patterns of the top heads by difference.
    pub patterns: Vec<PatternView>,
}

/// Attributes latent `spec.latent`'s pre-activation on every prompt to both models' components.
/// `models`: base and chat, loaded at least to `spec.layer` (any backend); `crosscoder` reads
/// `blocks.{spec.layer}.hook_resid_post` of both.
pub fn attribute_writers(
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    crosscoder: &dyn Crosscoder,
    prompts: &[PromptInput],
    spec: &WriterSpec,
) -> Result<(WriterReport, Vec<TokenAttribution>)> {
    check(models, crosscoder, spec)?;
    if prompts.is_empty() || spec.batch_size == 0 {
        return Err(CircuitError::InvalidInput {
            reason: "need at least one prompt and batch_size >= 1".into(),
        });
    }
    let (weights, bias) = crosscoder.pre_activation_affine(&[spec.latent])?;
    let weights = weights.index_axis(Axis(0), 0).to_owned();
    let constant = bias[0];
    let ids = prompts
        .iter()
        .map(|p| Ok(tokenize_prompt(tokenizer, p, spec.tokenization)?.ids))
        .collect::<Result<Vec<_>>>()?;
    let pad = models[1].config().pad_token_id;
    let mut attributions = Vec::with_capacity(prompts.len());
    let mut kept_patterns: Vec<[Vec<ndarray::Array4<f32>>; 2]> = Vec::new();
    for chunk in ids.chunks(spec.batch_size) {
        let batch = TokenBatch::new(chunk, pad, PaddingSide::Right)?;
        let parts = [
            decompose(models[0], &batch, spec.layer)?,
            decompose(models[1], &batch, spec.layer)?,
        ];
        for (row, seq) in chunk.iter().enumerate() {
            attributions.push(token_attribution(&parts, row, seq, &weights, constant));
        }
        // Keep whole batches only until they hold the first `pattern_prompts` prompts.
        if kept_patterns.len() * spec.batch_size < spec.pattern_prompts {
            kept_patterns.push([parts[0].patterns.clone(), parts[1].patterns.clone()]);
        }
    }
    let components = Component::all(spec.layer, models[1].config().num_attention_heads);
    let mut report = summarise(spec, &components, &attributions, constant);
    report.patterns = pattern_views(&report, &kept_patterns, &ids, tokenizer, spec);
    Ok((report, attributions))
}

fn check(
    models: [&dyn LanguageModel; 2],
    crosscoder: &dyn Crosscoder,
    spec: &WriterSpec,
) -> Result<()> {
    let d = models[1].config().hidden_size;
    if crosscoder.n_models() != 2 || crosscoder.d_model() != d {
        return Err(CircuitError::InvalidInput {
            reason: format!(
                "the crosscoder reads {} x {}, the models are {} wide",
                crosscoder.n_models(),
                crosscoder.d_model(),
                d
            ),
        });
    }
    if spec.latent >= crosscoder.dict_size() {
        return Err(CircuitError::InvalidInput {
            reason: format!(
                "latent {} does not exist: the crosscoder has {}",
                spec.latent,
                crosscoder.dict_size()
            ),
        });
    }
    if let Some(layer) = crosscoder.config().layer {
        if layer != spec.layer {
            return Err(CircuitError::InvalidInput {
                reason: format!(
                    "the crosscoder reads layer {layer}, the attribution was asked at layer {}",
                    spec.layer
                ),
            });
        }
    }
    Ok(())
}

/// Row `row` of a batch, every real token.
fn token_attribution(
    parts: &[ResidualDecomposition; 2],
    row: usize,
    seq: &[u32],
    weights: &Array2<f32>,
    constant: f32,
) -> TokenAttribution {
    let t = seq.len();
    let n_components = parts[0].components.len();
    let dot = |m: usize, c: usize, i: usize| -> f32 {
        parts[m]
            .writes
            .slice(s![c, row, i, ..])
            .dot(&weights.row(m))
    };
    let contributions =
        [0, 1].map(|m| Array2::from_shape_fn((n_components, t), |(c, i)| dot(m, c, i)));
    let differences = Array2::from_shape_fn((n_components, t), |(c, i)| {
        let change: Array1<f32> =
            &parts[1].writes.slice(s![c, row, i, ..]) - &parts[0].writes.slice(s![c, row, i, ..]);
        change.dot(&weights.row(1))
    });
    let pre_activation = Array1::from_shape_fn(t, |i| {
        constant
            + (0..2)
                .map(|m| {
                    let x: ArrayView1<'_, f32> = parts[m].residual.slice(s![row, i, ..]);
                    x.dot(&weights.row(m))
                })
                .sum::<f32>()
    });
    TokenAttribution {
        ids: seq.to_vec(),
        contributions,
        differences,
        constant,
        pre_activation,
    }
}

/// Mean over the real tokens after `<bos>` (every token when there is only one).
fn pooled(row: ArrayView1<'_, f32>) -> f64 {
    let from = usize::from(row.len() > 1);
    let tail = row.slice(s![from..]);
    tail.iter().map(|v| f64::from(*v)).sum::<f64>() / tail.len() as f64
}

fn summarise(
    spec: &WriterSpec,
    components: &[Component],
    attributions: &[TokenAttribution],
    constant: f32,
) -> WriterReport {
    let per_prompt = |f: &dyn Fn(&TokenAttribution) -> f64| -> MeanCi {
        MeanCi::of(&attributions.iter().map(f).collect::<Vec<_>>())
    };
    let mut writers: Vec<ComponentWriter> = components
        .iter()
        .enumerate()
        .map(|(c, component)| ComponentWriter {
            component: *component,
            label: component.label(),
            base: per_prompt(&|a| pooled(a.contributions[0].row(c))),
            chat: per_prompt(&|a| pooled(a.contributions[1].row(c))),
            difference: per_prompt(&|a| pooled(a.differences.row(c))),
        })
        .collect();
    writers.sort_by(|a, b| {
        b.difference
            .mean
            .abs()
            .total_cmp(&a.difference.mean.abs())
            .then(a.component.cmp(&b.component))
    });
    let total: f64 = writers.iter().map(|w| w.difference.mean.abs()).sum();
    let stands_out = writers
        .iter()
        .filter(|w| {
            let d = &w.difference;
            total > 0.0
                && d.mean.abs() >= STANDOUT_SHARE * total
                && (d.low() > 0.0 || d.high() < 0.0)
        })
        .map(|w| w.component)
        .collect();
    WriterReport {
        spec: spec.clone(),
        prompts: attributions.len(),
        constant,
        pre_activation: per_prompt(&|a| pooled(a.pre_activation.view())),
        components: writers,
        stands_out,
        patterns: Vec::new(),
    }
}

/// The attention patterns of the top heads by difference on the first prompts, real tokens only.
fn pattern_views(
    report: &WriterReport,
    kept: &[[Vec<ndarray::Array4<f32>>; 2]],
    ids: &[Vec<u32>],
    tokenizer: &GemmaTokenizer,
    spec: &WriterSpec,
) -> Vec<PatternView> {
    let heads: Vec<Component> = report
        .components
        .iter()
        .filter(|w| matches!(w.component, Component::Head { .. }) && w.difference.mean != 0.0)
        .take(spec.pattern_heads)
        .map(|w| w.component)
        .collect();
    let mut views = Vec::new();
    for component in heads {
        let Component::Head { layer, head } = component else {
            continue;
        };
        // Batches were kept whole: prompt p sits in batch p / batch_size, row p % batch_size.
        for (p, prompt_ids) in ids.iter().enumerate().take(spec.pattern_prompts) {
            let Some(batch) = kept.get(p / spec.batch_size) else {
                break;
            };
            let row = p % spec.batch_size;
            let t = prompt_ids.len();
            let matrix = |m: usize| -> Vec<Vec<f32>> {
                let pattern: &Array3<f32> = &batch[m][layer].slice(s![row, .., .., ..]).to_owned();
                (0..t)
                    .map(|q| pattern.slice(s![head, q, ..t]).to_vec())
                    .collect()
            };
            views.push(PatternView {
                component,
                prompt: p,
                tokens: tokenizer.tokens(prompt_ids),
                patterns: [matrix(0), matrix(1)],
            });
        }
    }
    views
}
