//! From prompts to pooled feature vectors: stereo run (both models), then the crosscoder (or the
//! residual stream itself), then pooling per prompt.

use std::sync::Mutex;

use crosscoder::{Crosscoder, LatentScaling};
use gemma_model::ChatMessage;
use indicatif::ProgressBar;
use model_pair::{PairedActivations, PairedSource, PromptInput, TokenMeta, TokenizationMode};
use ndarray::{s, Array2, ArrayView3, Axis};
use persona_dataset::{PromptText, Role};

use crate::error::{AnalysisError, Result};
use crate::hunt::FeatureKind;
use crate::pooling::Pooling;

/// Where the features of a prompt come from.
#[derive(Clone, Copy)]
pub enum FeatureSpace<'a> {
    /// Crosscoder latents of the paired activations `[tokens, 2, d]` (raw `f`, see
    /// [`Crosscoder::encode`]).
    Crosscoder(&'a dyn Crosscoder),
    /// One model's residual stream at the hook (0 = base, 1 = chat): the fallback without a crosscoder.
    Residual {
        /// Model index.
        model: usize,
    },
}

impl std::fmt::Debug for FeatureSpace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureSpace::Crosscoder(cc) => write!(
                f,
                "Crosscoder({})",
                cc.config().source.as_deref().unwrap_or("?")
            ),
            FeatureSpace::Residual { model } => write!(f, "Residual {{ model: {model} }}"),
        }
    }
}

impl FeatureSpace<'_> {
    /// What the features are.
    pub fn kind(&self) -> FeatureKind {
        match self {
            FeatureSpace::Crosscoder(_) => FeatureKind::CrosscoderLatent,
            FeatureSpace::Residual { model } => FeatureKind::ResidualDimension { model: *model },
        }
    }

    /// Number of features for activations of width `d_model`.
    pub fn n_features(&self, d_model: usize) -> usize {
        match self {
            FeatureSpace::Crosscoder(cc) => cc.dict_size(),
            FeatureSpace::Residual { .. } => d_model,
        }
    }

    /// Features `[rows, F]` of paired activations `[rows, 2, d]`.
    fn features(&self, acts: ArrayView3<'_, f32>) -> Result<Array2<f32>> {
        match self {
            FeatureSpace::Crosscoder(cc) => Ok(cc.encode(acts)?),
            FeatureSpace::Residual { model } => Ok(acts.index_axis(Axis(1), *model).to_owned()),
        }
    }
}

/// A dataset prompt as a stereo-run input: raw mode flattens conversations to plain text (the
/// dataset's rule); chat-template mode keeps their turns.
pub fn prompt_input(prompt: &PromptText, mode: TokenizationMode) -> PromptInput {
    match (prompt, mode) {
        (PromptText::Single(text), _) => PromptInput::Text(text.clone()),
        (PromptText::Turns(_), TokenizationMode::Raw) => PromptInput::Text(prompt.to_plain_text()),
        (PromptText::Turns(turns), TokenizationMode::ChatTemplate) => PromptInput::Chat(
            turns
                .iter()
                .map(|t| match t.role {
                    Role::User => ChatMessage::user(t.content.clone()),
                    Role::Model => ChatMessage::model(t.content.clone()),
                })
                .collect(),
        ),
    }
}

/// Pooled features of a list of prompts, and (for chosen columns) every token's value.
#[derive(Debug, Clone)]
pub(crate) struct Extracted {
    /// `[n_prompts, F]` (or `[n_prompts, columns.len()]` when columns were chosen).
    pub pooled: Array2<f32>,
    /// Per prompt, its tokens.
    pub tokens: Vec<Vec<TokenMeta>>,
    /// Per prompt, `[T, columns.len()]` (empty when no columns were chosen).
    pub token_values: Vec<Array2<f32>>,
}

/// The row range of every prompt (rows are in prompt order).
fn prompt_ranges(
    paired: &PairedActivations,
    n_prompts: usize,
) -> Result<Vec<std::ops::Range<usize>>> {
    let mut ranges = vec![0..0; n_prompts];
    let mut start = 0;
    for (i, t) in paired.tokens.iter().enumerate() {
        let next = paired.tokens.get(i + 1);
        if next.is_none_or(|n| n.prompt != t.prompt) {
            if t.prompt >= n_prompts || !ranges[t.prompt].is_empty() {
                return Err(AnalysisError::Shape {
                    what: "stereo run rows".into(),
                    expected: format!("rows grouped by prompt 0..{n_prompts}"),
                    actual: format!("prompt {} at row {i}", t.prompt),
                });
            }
            ranges[t.prompt] = start..i + 1;
            start = i + 1;
        }
    }
    if let Some(p) = ranges.iter().position(|r| r.is_empty()) {
        return Err(AnalysisError::Shape {
            what: "stereo run rows".into(),
            expected: format!("every prompt of {n_prompts} to have rows"),
            actual: format!("prompt {p} has none"),
        });
    }
    Ok(ranges)
}

/// Options of one extraction.
pub(crate) struct ExtractSpec<'a> {
    pub mode: TokenizationMode,
    pub pooling: Pooling,
    pub columns: Option<&'a [usize]>,
    pub encode_rows: usize,
    /// Every token row of a crosscoder extraction over all latents is added to this pass.
    pub latent_scaling: Option<&'a Mutex<LatentScaling>>,
}

/// Runs `prompts` through both models, encodes and pools them. `texts` name the prompts in errors.
pub(crate) fn extract(
    runner: &dyn PairedSource,
    space: &FeatureSpace<'_>,
    prompts: &[PromptInput],
    texts: &[String],
    spec: &ExtractSpec<'_>,
    bar: &ProgressBar,
) -> Result<Extracted> {
    let start = bar.position();
    let paired = runner.run_with_progress(prompts, spec.mode, &mut |done, _| {
        bar.set_position(start + done as u64);
    })?;
    bar.set_position(start + prompts.len() as u64);
    let ranges = prompt_ranges(&paired, prompts.len())?;
    let n_out = spec
        .columns
        .map_or(space.n_features(runner.d_model()), <[usize]>::len);
    let mut pooled = Array2::<f32>::zeros((prompts.len(), n_out));
    let mut token_values = Vec::new();
    let mut tokens = Vec::with_capacity(prompts.len());
    let mut p = 0;
    while p < prompts.len() {
        // A chunk of whole prompts, at most `encode_rows` rows (at least one prompt).
        let mut q = p + 1;
        while q < prompts.len() && ranges[q].end - ranges[p].start <= spec.encode_rows.max(1) {
            q += 1;
        }
        let rows = ranges[p].start..ranges[q - 1].end;
        let acts = paired.activations.slice(s![rows.clone(), .., ..]);
        let feats = space.features(acts)?;
        if let (FeatureSpace::Crosscoder(cc), Some(scaling), None) =
            (space, spec.latent_scaling, spec.columns)
        {
            let reconstruction = cc.decode(feats.view())?;
            scaling
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add_forward(acts, feats.view(), reconstruction.view())?;
        }
        let feats = match spec.columns {
            Some(cols) => feats.select(Axis(1), cols),
            None => feats,
        };
        for k in p..q {
            let local = ranges[k].start - rows.start..ranges[k].end - rows.start;
            let metas = &paired.tokens[ranges[k].clone()];
            let values = feats.slice(s![local, ..]);
            let v = spec.pooling.pool(values, metas, &texts[k])?;
            pooled.row_mut(k).assign(&v);
            if spec.columns.is_some() {
                token_values.push(values.to_owned());
            }
            tokens.push(metas.to_vec());
        }
        p = q;
    }
    Ok(Extracted {
        pooled,
        tokens,
        token_values,
    })
}
