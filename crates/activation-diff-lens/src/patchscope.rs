//! The token-identity Patchscope (the diffing toolkit's `patchscope_lens`): write a vector, scaled, into
//! the last position of identity prompts (`man -> man\n1135 -> 1135\nhello -> hello\n?`) at a layer of a
//! model, and read what the model predicts next. Where the readout agrees across prompts, the vector says
//! something the model can put into words.

use std::collections::BTreeSet;

use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel, RunRequest, TokenBatch};
use ndarray::{Array1, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::error::{AdlError, Result};
use crate::read::LensEntry;

/// The identity prompts of the diffing toolkit (`default_id_prompt_targets`).
pub fn identity_prompts() -> Vec<String> {
    [
        ["man", "1135", "hello"],
        ["bear", "42", "blue"],
        ["921", "target", "anna"],
    ]
    .iter()
    .map(|words| {
        let mut prompt: String = words.iter().map(|w| format!("{w} -> {w}\n")).collect();
        prompt.push('?');
        prompt
    })
    .collect()
}

/// How to run a Patchscope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchscopeSpec {
    /// The layer whose output (`blocks.{layer}.hook_resid_post`) is replaced at the last position.
    pub layer: usize,
    /// The vector is scaled to `scale x target_norm` (unit direction times each scale).
    pub scales: Vec<f32>,
    /// The norm the scales multiply (the model's mean activation norm there, say).
    pub target_norm: f32,
    /// The prompts (default: [`identity_prompts`]).
    pub prompts: Vec<String>,
    /// Tokens reported per scale, and the size of the per-prompt top sets compared for consistency.
    pub top: usize,
}

/// The readout at one scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchscopeScale {
    /// The scale (times `target_norm`).
    pub scale: f32,
    /// The tokens with the highest probability averaged over the prompts, highest first
    /// (`logit` is the mean log-probability).
    pub tokens: Vec<LensEntry>,
    /// Mean pairwise overlap of the prompts' top-`top` token sets (1: every prompt reads the same).
    pub consistency: f64,
}

/// The readouts at every scale, and the most consistent scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchscopeReadout {
    /// The spec.
    pub spec: PatchscopeSpec,
    /// One readout per scale, in the spec's order.
    pub scales: Vec<PatchscopeScale>,
    /// The index in `scales` with the highest consistency (the first on a tie).
    pub best: usize,
}

/// Runs `spec` with `vector` on `model` (loaded whole, with its unembedding).
pub fn patchscope(
    vector: ArrayView1<'_, f32>,
    model: &dyn LanguageModel,
    tokenizer: &GemmaTokenizer,
    spec: &PatchscopeSpec,
) -> Result<PatchscopeReadout> {
    let norm = vector.dot(&vector).sqrt();
    if !norm.is_finite()
        || norm == 0.0
        || spec.scales.is_empty()
        || spec.prompts.is_empty()
        || spec.top == 0
    {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "a Patchscope needs a non-zero vector (norm {norm}), scales, prompts and top >= 1"
            ),
        });
    }
    let unit: Array1<f32> = vector.mapv(|v| v / norm);
    let hook = HookPoint::ResidPost(spec.layer);
    let prompts = spec
        .prompts
        .iter()
        .map(|p| tokenizer.encode(p).map_err(AdlError::from))
        .collect::<Result<Vec<_>>>()?;
    let mut scales = Vec::with_capacity(spec.scales.len());
    for &scale in &spec.scales {
        let patch = unit.mapv(|v| v * scale * spec.target_norm);
        // Per prompt, the next-token log-probabilities with the patch.
        let mut per_prompt: Vec<Vec<f64>> = Vec::new();
        for ids in &prompts {
            let last = ids.len() - 1;
            let written = patch.clone();
            let request =
                RunRequest::default()
                    .with_last_logits()
                    .with_intervention(hook, move |x| {
                        x.slice_mut(ndarray::s![0, last, ..]).assign(&written);
                    });
            let out = model.run(&TokenBatch::single(ids.clone())?, &request)?;
            let logits = out.logits.ok_or_else(|| AdlError::InvalidInput {
                reason: "the model returned no logits".into(),
            })?;
            per_prompt.push(log_softmax(logits.slice(ndarray::s![0, 0, ..])));
        }
        scales.push(readout(scale, &per_prompt, tokenizer, spec.top));
    }
    let best = scales.iter().enumerate().fold(0, |b, (i, s)| {
        if s.consistency > scales[b].consistency {
            i
        } else {
            b
        }
    });
    Ok(PatchscopeReadout {
        spec: spec.clone(),
        scales,
        best,
    })
}

fn log_softmax(logits: ArrayView1<'_, f32>) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let total = logits
        .iter()
        .map(|v| f64::from(v - max).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|v| f64::from(v - max) - total).collect()
}

fn top_ids(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn readout(
    scale: f32,
    per_prompt: &[Vec<f64>],
    tokenizer: &GemmaTokenizer,
    top: usize,
) -> PatchscopeScale {
    let vocab = per_prompt[0].len();
    let n = per_prompt.len() as f64;
    let mean_prob: Vec<f64> = (0..vocab)
        .map(|v| per_prompt.iter().map(|p| p[v].exp()).sum::<f64>() / n)
        .collect();
    let ids = top_ids(&mean_prob, top);
    let strings = tokenizer.tokens(&ids.iter().map(|i| *i as u32).collect::<Vec<_>>());
    let tokens = ids
        .iter()
        .zip(strings)
        .map(|(&i, token)| LensEntry {
            id: i as u32,
            token,
            logit: (per_prompt.iter().map(|p| p[i]).sum::<f64>() / n) as f32,
            probability: mean_prob[i],
        })
        .collect();
    let sets: Vec<BTreeSet<usize>> = per_prompt
        .iter()
        .map(|p| top_ids(p, top).into_iter().collect())
        .collect();
    let mut overlap = 0.0;
    let mut pairs = 0;
    for a in 0..sets.len() {
        for b in a + 1..sets.len() {
            overlap += sets[a].intersection(&sets[b]).count() as f64 / top as f64;
            pairs += 1;
        }
    }
    PatchscopeScale {
        scale,
        tokens,
        consistency: if pairs == 0 {
            1.0
        } else {
            overlap / pairs as f64
        },
    }
}
