//! The persona-contrast flavour of the difference: for prompt pairs that differ in who the user is
//! (child vs adult, novice vs expert, a stated belief vs none), the chat-minus-base difference on the
//! positive side minus the same on the negative side, per position of the cue. What both sides share
//! (the chat template, the question, whatever chat training changed everywhere) cancels; what is left is
//! what the fine-tune does with the cue.
//!
//! The cue of a pair starts where its two sides' tokens first differ (`<bos>`, the template and any
//! common opening are identical); position `j` is token `start + j` of each side, `j = 0..k-1`. A side
//! shorter than `start + j + 1` tokens leaves that position of the pair out (`counts` says how many pairs
//! each position averages). Only the tokens up to `start + k` run, each model only up to the deepest
//! chosen layer.

use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel, PaddingSide, RunRequest, TokenBatch};
use indicatif::ProgressBar;
use model_pair::{tokenize_prompt, PromptInput, TokenizationMode};
use ndarray::{Array2, Array3};
use serde::{Deserialize, Serialize};

use crate::error::{AdlError, Result};

/// What to compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContrastSpec {
    /// The layers whose `blocks.{l}.hook_resid_post` is read (0-based).
    pub layers: Vec<usize>,
    /// Positions from the start of the cue.
    pub k: usize,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// How a text prompt is tokenized (conversations always get the chat template).
    pub tokenization: TokenizationMode,
}

impl ContrastSpec {
    /// `layers`, `k = 5`, batches of 16, the chat template (persona prompts are user turns).
    pub fn new(layers: Vec<usize>) -> Self {
        ContrastSpec {
            layers,
            k: 5,
            batch_size: 16,
            tokenization: TokenizationMode::ChatTemplate,
        }
    }
}

/// One prompt pair of a contrast: the side expected to carry the cue first.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastPrompts {
    /// The positive side (`child`, `novice`, `biased`).
    pub positive: PromptInput,
    /// The negative side (`adult`, `expert`, `neutral`).
    pub negative: PromptInput,
}

/// The contrast difference of one contrast.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastDifference {
    /// The layers, in the order of the first axis below.
    pub layers: Vec<usize>,
    /// Positions from the start of the cue.
    pub k: usize,
    /// Pairs used.
    pub pairs: usize,
    /// Pairs left out: both sides tokenize identically (no cue to align on).
    pub skipped: usize,
    /// Per position, the pairs it averages (both sides long enough).
    pub counts: Vec<usize>,
    /// `mean h^chat - mean h^base` on the positive side, `[L, k, d]`.
    pub positive: Array3<f32>,
    /// The same on the negative side.
    pub negative: Array3<f32>,
    /// `positive - negative`, `[L, k, d]`: the contrast difference.
    pub delta: Array3<f32>,
    /// `delta` averaged over the positions that hold at least one pair, `[L, d]`.
    pub delta_mean: Array2<f32>,
    /// Per model (0 base, 1 chat), the mean L2 norm of its activations over both sides, `[L, k]`.
    pub norms: [Array2<f64>; 2],
    /// The first pairs' aligned tokens, positive side then negative, `k` each (or fewer).
    pub examples: Vec<[Vec<String>; 2]>,
}

/// How many pairs' aligned tokens [`ContrastDifference::examples`] keeps.
pub const EXAMPLES: usize = 5;

/// One side of one pair, tokenized and cut after its cue window.
struct Side {
    ids: Vec<u32>,
    /// The index of the cue's first token.
    start: usize,
    positive: bool,
}

/// Computes the contrast difference of `pairs` (both models loaded at least to the deepest layer).
pub fn contrast_difference(
    models: [&dyn LanguageModel; 2],
    tokenizer: &GemmaTokenizer,
    pairs: &[ContrastPrompts],
    spec: &ContrastSpec,
    progress: &ProgressBar,
) -> Result<ContrastDifference> {
    let config = models[stereo_core::CHAT].config();
    let d = config.hidden_size;
    crate::difference::check_request(
        &spec.layers,
        spec.k,
        spec.batch_size,
        config.num_hidden_layers,
    )?;
    let aligned = align(tokenizer, pairs, spec)?;
    let (l_count, k) = (spec.layers.len(), spec.k);
    let hooks: Vec<HookPoint> = spec
        .layers
        .iter()
        .map(|l| HookPoint::ResidPost(*l))
        .collect();
    let request = RunRequest::capture(hooks.iter().copied());
    let pad = config.pad_token_id;
    // sums[side][model][(l * k + j) * d + c] (side 0 positive), norm_sums[model][l * k + j].
    let mut sums = [
        [vec![0.0f64; l_count * k * d], vec![0.0f64; l_count * k * d]],
        [vec![0.0f64; l_count * k * d], vec![0.0f64; l_count * k * d]],
    ];
    let mut norm_sums = [vec![0.0f64; l_count * k], vec![0.0f64; l_count * k]];
    progress.set_length(aligned.sides.len() as u64);
    for chunk in aligned.sides.chunks(spec.batch_size) {
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|s| s.ids.clone()).collect();
        let tokens = TokenBatch::new(&sequences, pad, PaddingSide::Right)?;
        // Both models run before anything is added.
        let outs = models
            .iter()
            .map(|m| m.run(&tokens, &request))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (m, out) in outs.iter().enumerate() {
            for (li, hook) in hooks.iter().enumerate() {
                let acts = out
                    .activations
                    .get(hook)
                    .ok_or_else(|| AdlError::InvalidInput {
                        reason: format!("{} returned no activation at {hook}", models[m].name()),
                    })?;
                for (row, side) in chunk.iter().enumerate() {
                    let which = usize::from(!side.positive);
                    for j in 0..side.ids.len() - side.start {
                        let h = acts.slice(ndarray::s![row, side.start + j, ..]);
                        let at = (li * k + j) * d;
                        let mut norm = 0.0f64;
                        for (c, v) in h.iter().enumerate() {
                            let v = f64::from(*v);
                            sums[which][m][at + c] += v;
                            norm += v * v;
                        }
                        norm_sums[m][li * k + j] += norm.sqrt();
                    }
                }
            }
        }
        progress.inc(chunk.len() as u64);
    }
    let counts = aligned.counts;
    if counts[0] == 0 {
        return Err(AdlError::InvalidInput {
            reason: format!(
                "none of the {} pairs differs between its two sides: no cue to align on",
                pairs.len()
            ),
        });
    }
    let mean = |values: &[f64], a: usize, j: usize, c: usize| -> f64 {
        let n = counts[j];
        if n == 0 {
            0.0
        } else {
            values[(a * k + j) * d + c] / n as f64
        }
    };
    let side_delta = |side: usize| {
        Array3::from_shape_fn((l_count, k, d), |(a, j, c)| {
            mean(&sums[side][stereo_core::CHAT], a, j, c)
                - mean(&sums[side][stereo_core::BASE], a, j, c)
        })
    };
    let (positive, negative) = (side_delta(0), side_delta(1));
    let delta = &positive - &negative;
    let filled: Vec<usize> = (0..k).filter(|j| counts[*j] > 0).collect();
    let delta_mean = Array2::from_shape_fn((l_count, d), |(a, c)| {
        filled.iter().map(|j| delta[[a, *j, c]]).sum::<f64>() / filled.len() as f64
    });
    let norms = |m: usize| {
        Array2::from_shape_fn((l_count, k), |(a, j)| {
            if counts[j] == 0 {
                0.0
            } else {
                norm_sums[m][a * k + j] / (2 * counts[j]) as f64
            }
        })
    };
    let norms = [norms(stereo_core::BASE), norms(stereo_core::CHAT)];
    Ok(ContrastDifference {
        layers: spec.layers.clone(),
        k,
        pairs: pairs.len() - aligned.skipped,
        skipped: aligned.skipped,
        counts,
        positive: positive.mapv(|v| v as f32),
        negative: negative.mapv(|v| v as f32),
        delta: delta.mapv(|v| v as f32),
        delta_mean: delta_mean.mapv(|v| v as f32),
        norms,
        examples: aligned.examples,
    })
}

/// The pairs' sides cut to their common cue window, and what the alignment found.
struct Aligned {
    sides: Vec<Side>,
    skipped: usize,
    counts: Vec<usize>,
    examples: Vec<[Vec<String>; 2]>,
}

/// Tokenizes both sides of every pair, finds where they first differ, and cuts both to the same
/// window of at most `k` tokens from there (so that every position averages complete pairs).
fn align(
    tokenizer: &GemmaTokenizer,
    pairs: &[ContrastPrompts],
    spec: &ContrastSpec,
) -> Result<Aligned> {
    let tokenize = |prompt: &PromptInput, p: usize, side: &str| -> Result<Vec<u32>> {
        Ok(tokenize_prompt(tokenizer, prompt, spec.tokenization)
            .map_err(|e| AdlError::InvalidInput {
                reason: format!("pair {p}, {side} side: {e}"),
            })?
            .ids)
    };
    let mut aligned = Aligned {
        sides: Vec::new(),
        skipped: 0,
        counts: vec![0; spec.k],
        examples: Vec::new(),
    };
    for (p, pair) in pairs.iter().enumerate() {
        let positive = tokenize(&pair.positive, p, "positive")?;
        let negative = tokenize(&pair.negative, p, "negative")?;
        let start = positive
            .iter()
            .zip(&negative)
            .position(|(a, b)| a != b)
            .unwrap_or(positive.len().min(negative.len()));
        let window = spec
            .k
            .min(positive.len() - start)
            .min(negative.len() - start);
        if window == 0 {
            aligned.skipped += 1;
            continue;
        }
        for count in &mut aligned.counts[..window] {
            *count += 1;
        }
        if aligned.examples.len() < EXAMPLES {
            aligned.examples.push([
                tokenizer.tokens(&positive[start..start + window]),
                tokenizer.tokens(&negative[start..start + window]),
            ]);
        }
        for (ids, is_positive) in [(positive, true), (negative, false)] {
            aligned.sides.push(Side {
                ids: ids[..start + window].to_vec(),
                start,
                positive: is_positive,
            });
        }
    }
    Ok(aligned)
}
