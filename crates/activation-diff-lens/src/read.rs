//! Reading an activation difference: the logit lens of both models' heads, and how it aligns with a
//! crosscoder's chat-minus-base decoder directions.

use crosscoder::{raw_directions, Crosscoder};
use gemma_model::{GemmaTokenizer, LanguageModel};
use ndarray::{s, Array3, ArrayView1, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{AdlError, Result};

/// One token of a lens readout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensEntry {
    /// Token id.
    pub id: u32,
    /// The token as the vocabulary spells it.
    pub token: String,
    /// Its (soft-capped) logit.
    pub logit: f32,
    /// Its probability (softmax over the vocabulary).
    pub probability: f64,
}

/// What a vector says through one model's final norm and unembedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensReadout {
    /// The model's name.
    pub model: String,
    /// The most promoted tokens, highest first.
    pub promoted: Vec<LensEntry>,
    /// The most suppressed, lowest first.
    pub suppressed: Vec<LensEntry>,
}

/// The logit lens of each row of `vectors` (`[n, d]`) through `model` (loaded with its unembedding),
/// `top` tokens per side.
pub fn logit_lens(
    vectors: ArrayView2<'_, f32>,
    model: &dyn LanguageModel,
    tokenizer: &GemmaTokenizer,
    top: usize,
) -> Result<Vec<LensReadout>> {
    let (n, d) = vectors.dim();
    let rows = Array3::from_shape_fn((1, n, d), |(_, i, c)| vectors[[i, c]]);
    let logits = model.unembed(&rows)?;
    Ok((0..n)
        .map(|i| readout(logits.slice(s![0, i, ..]), model.name(), tokenizer, top))
        .collect())
}

fn readout(
    logits: ArrayView1<'_, f32>,
    model: &str,
    tokenizer: &GemmaTokenizer,
    top: usize,
) -> LensReadout {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let log_total = logits
        .iter()
        .map(|v| f64::from(v - max).exp())
        .sum::<f64>()
        .ln();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let top = top.min(order.len());
    let entries = |ids: Vec<usize>| -> Vec<LensEntry> {
        let tokens = tokenizer.tokens(&ids.iter().map(|i| *i as u32).collect::<Vec<_>>());
        ids.into_iter()
            .zip(tokens)
            .map(|(i, token)| LensEntry {
                id: i as u32,
                token,
                logit: logits[i],
                probability: (f64::from(logits[i] - max) - log_total).exp(),
            })
            .collect()
    };
    LensReadout {
        model: model.to_string(),
        promoted: entries(order[..top].to_vec()),
        suppressed: entries(order.iter().rev().take(top).copied().collect()),
    }
}

/// A latent and how well its chat-minus-base decoder direction aligns with a difference vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alignment {
    /// The latent.
    pub latent: usize,
    /// Cosine of `d_j^chat - d_j^base` (raw units) with the vector.
    pub cosine: f32,
    /// `||d_j^chat - d_j^base||` (raw units): how much of a difference the latent carries at all (a
    /// shared latent can align well with a tiny difference).
    pub difference_norm: f32,
    /// The latent's relative decoder norm `||d^chat|| / (||d^base|| + ||d^chat||)` (1: chat-only).
    pub relative_norm: f32,
}

/// For each row of `vectors` (`[n, d]`), the `top` latents whose chat-minus-base decoder direction has
/// the largest cosine with it (ties by index). Latents whose two decoder vectors are equal are skipped.
pub fn align_with_crosscoder(
    vectors: ArrayView2<'_, f32>,
    crosscoder: &dyn Crosscoder,
    top: usize,
) -> Result<Vec<Vec<Alignment>>> {
    if crosscoder.n_models() != 2 || crosscoder.d_model() != vectors.ncols() {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "the crosscoder reads {} x {}, the differences are {} wide",
                crosscoder.n_models(),
                crosscoder.d_model(),
                vectors.ncols()
            ),
        });
    }
    let norms: Vec<f32> = vectors
        .axis_iter(Axis(0))
        .map(|v| v.dot(&v).sqrt())
        .collect();
    let mut best: Vec<Vec<Alignment>> = vec![Vec::new(); vectors.nrows()];
    let f = crosscoder.dict_size();
    // In chunks, so that memory stays bounded at any dictionary size.
    for start in (0..f).step_by(4096) {
        let latents: Vec<usize> = (start..(start + 4096).min(f)).collect();
        let directions = raw_directions(crosscoder, &latents)?;
        for (l, &j) in latents.iter().enumerate() {
            let base: ArrayView1<'_, f32> = directions.slice(s![l, 0, ..]);
            let chat: ArrayView1<'_, f32> = directions.slice(s![l, 1, ..]);
            let diff: ndarray::Array1<f32> = &chat - &base;
            let norm = diff.dot(&diff).sqrt();
            if norm == 0.0 {
                continue;
            }
            let (base_norm, chat_norm) = (base.dot(&base).sqrt(), chat.dot(&chat).sqrt());
            let relative_norm = chat_norm / (base_norm + chat_norm);
            for (i, v) in vectors.axis_iter(Axis(0)).enumerate() {
                if norms[i] == 0.0 {
                    continue;
                }
                best[i].push(Alignment {
                    latent: j,
                    cosine: v.dot(&diff) / (norms[i] * norm),
                    difference_norm: norm,
                    relative_norm,
                });
            }
        }
        for list in &mut best {
            list.sort_by(|a, b| b.cosine.total_cmp(&a.cosine).then(a.latent.cmp(&b.latent)));
            list.truncate(top);
        }
    }
    Ok(best)
}
