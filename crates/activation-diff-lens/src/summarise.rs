//! From computed differences to `adl.json`: read every flavour ([`read_difference`]), decide whether
//! anything was found, and steer the chat model with the first layer's mean difference of the first
//! flavour that holds one (the corpus first).

use crosscoder::Crosscoder;
use gemma_model::{GemmaTokenizer, LanguageModel};

use crate::analysis::{read_difference, ReadOptions};
use crate::contrast::ContrastDifference;
use crate::difference::ActivationDifference;
use crate::error::{AdlError, Result};
use crate::output::{AdlSummary, ContrastSummary, CorpusSummary, SteeringSummary};
use crate::steer::{steering_search, AdlSteeringSpec};

/// A persona contrast's difference under its names.
#[derive(Debug, Clone, Copy)]
pub struct NamedContrast<'a> {
    /// The category (`child_vs_adult`).
    pub category: &'a str,
    /// The positive and the negative variant.
    pub sides: [&'a str; 2],
    /// The difference.
    pub difference: &'a ContrastDifference,
}

/// What to steer with the first mean difference found (nothing when `prompts` is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct SteeringRequest {
    /// The prompts the chat model answers.
    pub prompts: Vec<String>,
    /// The largest strength tried, times the chat model's mean activation norm.
    pub max_strength: f32,
    /// New tokens per answer.
    pub max_new_tokens: usize,
}

/// The models an ADL summary reads with: both with their unembedding, the chat model whole for the
/// Patchscope and steering.
#[derive(Clone, Copy)]
pub struct AdlModels<'a> {
    /// Base (0) and chat (1).
    pub models: [&'a dyn LanguageModel; 2],
    /// Their tokenizer.
    pub tokenizer: &'a GemmaTokenizer,
    /// A crosscoder of the pair, to compare the differences with.
    pub crosscoder: Option<&'a dyn Crosscoder>,
}

/// Reads the corpus difference (under its source's name) and the contrasts, and steers.
pub fn summarise(
    with: AdlModels<'_>,
    corpus: Option<(&str, &ActivationDifference)>,
    contrasts: &[NamedContrast<'_>],
    read: &ReadOptions,
    steering: &SteeringRequest,
) -> Result<AdlSummary> {
    let (k, layers) = match (corpus, contrasts.first()) {
        (Some((_, d)), _) => (d.k, d.layers.clone()),
        (None, Some(c)) => (c.difference.k, c.difference.layers.clone()),
        (None, None) => {
            return Err(AdlError::InvalidInput {
                reason: "nothing to summarise: neither a corpus difference nor a contrast".into(),
            })
        }
    };
    let reading = |view| read_difference(view, with.models, with.tokenizer, with.crosscoder, read);
    let corpus_summary = corpus
        .map(|(source, d)| {
            Ok::<_, AdlError>(CorpusSummary {
                source: source.to_string(),
                texts: d.texts,
                skipped: d.skipped,
                reading: reading(d.view())?,
            })
        })
        .transpose()?;
    let contrast_summaries = contrasts
        .iter()
        .map(|c| {
            Ok(ContrastSummary::new(
                c.category,
                c.sides,
                c.difference,
                reading(c.difference.view())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut summary = AdlSummary::new(
        [
            with.models[0].name().to_string(),
            with.models[1].name().to_string(),
        ],
        k,
        layers,
        corpus_summary,
        contrast_summaries,
    );
    if !steering.prompts.is_empty() {
        summary.steering = steer(with, &summary, corpus, contrasts, steering)?;
    }
    Ok(summary)
}

/// Steers with the first layer's mean of the first flavour whose mean there is not negligible.
fn steer(
    with: AdlModels<'_>,
    summary: &AdlSummary,
    corpus: Option<(&str, &ActivationDifference)>,
    contrasts: &[NamedContrast<'_>],
    request: &SteeringRequest,
) -> Result<Option<SteeringSummary>> {
    let mean_found = |readings: &[crate::PositionReading]| {
        readings
            .iter()
            .any(|r| r.layer == summary.layers[0] && r.position.is_none() && !r.negligible)
    };
    let mut candidates = Vec::new();
    if let (Some((_, d)), Some(s)) = (corpus, &summary.corpus) {
        if mean_found(&s.reading.readings) {
            candidates.push(("corpus".to_string(), d.view()));
        }
    }
    for (c, s) in contrasts.iter().zip(&summary.contrasts) {
        if mean_found(&s.reading.readings) {
            candidates.push((format!("contrast {}", c.category), c.difference.view()));
        }
    }
    let Some((vector, view)) = candidates.into_iter().next() else {
        return Ok(None);
    };
    let mut spec = AdlSteeringSpec::new(summary.layers[0], view.chat_norm(0) as f32);
    spec.max_strength = request.max_strength;
    spec.max_new_tokens = request.max_new_tokens;
    let search = steering_search(
        with.models[1],
        with.tokenizer,
        view.mean.row(0),
        &request.prompts,
        &spec,
    )?;
    Ok(Some(SteeringSummary { vector, search }))
}
