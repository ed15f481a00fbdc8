//! Text generation with a KV cache: prefill the prompts once, then one position per step.
//!
//! The loop ([`generate`]) is written against a [`TokenStepper`], anything that takes the next tokens
//! and returns the logits of each row's last one: one model ([`ModelStepper`], with hooks read and
//! interventions applied at every step), or a pair of models in lockstep (the model-pair crate). It
//! does what HF `generate` does: left-padded batches of prompts of different lengths, greedy or
//! sampled decoding ([`Sampling`]), stop tokens (`eos_token_id` of `generation_config.json`, see
//! [`GenerationDefaults`]), stop strings and `max_new_tokens`; a row that has stopped is fed the pad
//! token while the others go on, and its output is ignored.
//!
//! ```no_run
//! use gemma_model::generation::{generate, GenerationConfig, ModelStepper};
//! use gemma_model::{load_dir, LoadOptions};
//!
//! # fn main() -> Result<(), gemma_model::GemmaError> {
//! let loaded = load_dir("fixtures/demo/chat", &LoadOptions::default())?;
//! let tokenizer = loaded.tokenizer.as_ref().expect("tokenizer.json");
//! let prompt = tokenizer.encode("I am 7 years old. Why is the sky blue?")?;
//! let config = GenerationConfig::greedy(20, loaded.model.config());
//! let mut stepper = ModelStepper::new(loaded.model.as_ref(), 1, prompt.len() + 20)?;
//! let generations = generate(&mut stepper, &[prompt], &config, Some(tokenizer), &mut |_, _| {})?;
//! println!("{}", tokenizer.decode(&generations[0].token_ids)?);
//! # Ok(()) }
//! ```

mod defaults;
mod sampling;
mod score;
mod stepper;
mod text;

use std::collections::BTreeMap;

use ndarray::{s, Array2, Array3, Axis};

pub use defaults::GenerationDefaults;
pub use sampling::{Sampling, SamplingParams};
pub use score::score_continuations;
pub use stepper::{InterventionScope, ModelStepper, ScopedIntervention};
pub use text::{generate_texts, GenerationsFile, TextGeneration};

use crate::batch::{PaddingSide, TokenBatch};
use crate::config::Gemma2Config;
use crate::error::{GemmaError, Result};
use crate::hooks::{HookPoint, LogitPositions};
use crate::model::RunOutput;
use crate::tokenizer::GemmaTokenizer;
pub(crate) use sampling::argmax;
use sampling::Sampler;

/// Which tokens a step feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    /// The prompts (left-padded), all at once.
    Prompt,
    /// Generated token number `index` (0-based) of every row.
    Generated {
        /// How many tokens each row had generated before this one.
        index: usize,
    },
}

/// What one step returns.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The logits the step was asked for: `[batch, 1, vocab]` at each row's last real token
    /// ([`LogitPositions::Last`]), or `[batch, new, vocab]` at every fed position (padding zeroed).
    pub logits: Array3<f32>,
    /// Activations read at the fed positions, `[batch, new, d_model]` each (padding zeroed).
    pub activations: BTreeMap<HookPoint, Array3<f32>>,
}

impl StepOutput {
    /// The step output of a decoding session's run (which must have been asked for logits).
    pub fn from_run(out: RunOutput) -> Result<Self> {
        let logits = out.logits.ok_or_else(|| GemmaError::DeviceData {
            reason: "the step returned no logits".into(),
        })?;
        Ok(StepOutput {
            logits,
            activations: out.activations,
        })
    }
}

/// One model, or several in lockstep, that decode incrementally.
pub trait TokenStepper {
    /// What a step can fail with (a model's [`GemmaError`], or more for a stepper that also runs a
    /// crosscoder).
    type Error: From<GemmaError>;
    /// Rows decoded together.
    fn batch_size(&self) -> usize;
    /// Feeds `tokens` (`[batch, new]`) and returns the logits at `logits` positions.
    fn step(
        &mut self,
        tokens: &TokenBatch,
        phase: StepPhase,
        logits: LogitPositions,
    ) -> std::result::Result<StepOutput, Self::Error>;
}

/// When and how generation stops and chooses tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens generated per row (stop token included).
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Generating one of these ends a row (kept as its last token).
    pub stop_token_ids: Vec<u32>,
    /// A row ends once its decoded text contains one of these (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Fed to rows that have stopped, and used to pad prompts.
    pub pad_token_id: u32,
    /// Keep the logits of every generated position (`[new, vocab]` per row).
    pub keep_logits: bool,
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens, stopping at the model's `eos_token_id`.
    pub fn greedy(max_new_tokens: usize, config: &Gemma2Config) -> Self {
        GenerationConfig {
            max_new_tokens,
            sampling: Sampling::Greedy,
            stop_token_ids: config.eos_token_ids.clone(),
            stop_strings: Vec::new(),
            pad_token_id: config.pad_token_id,
            keep_logits: false,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It generated this stop token (the last of `token_ids`).
    StopToken(u32),
    /// Its text came to contain this stop string.
    StopString(String),
    /// It reached `max_new_tokens`.
    MaxNewTokens,
}

/// The result for one prompt.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The prompt's tokens.
    pub prompt_ids: Vec<u32>,
    /// The generated tokens only (the stop token included when one was hit).
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// The logits that chose each generated token, `[new, vocab]` (with `keep_logits`).
    pub logits: Option<Array2<f32>>,
    /// Activations read at every fed position of this row (the prompt, then each generated token
    /// but the last, which is never fed), `[positions, d_model]` per hook.
    pub activations: BTreeMap<HookPoint, Array2<f32>>,
}

/// Per-row progress of a generation.
struct Row {
    generated: Vec<u32>,
    stop: Option<StopReason>,
    logits: Vec<Vec<f32>>,
    activations: BTreeMap<HookPoint, Vec<Vec<f32>>>,
}

/// Generates a continuation of every prompt; `on_token(row, token)` is called for each new token as
/// it is chosen (for streaming). Prompts are left-padded with `config.pad_token_id`.
pub fn generate<S: TokenStepper + ?Sized>(
    stepper: &mut S,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    tokenizer: Option<&GemmaTokenizer>,
    on_token: &mut dyn FnMut(usize, u32),
) -> std::result::Result<Vec<Generation>, S::Error> {
    if prompts.len() != stepper.batch_size() {
        return Err(GemmaError::InvalidInput {
            reason: format!(
                "{} prompts for a stepper of {} rows",
                prompts.len(),
                stepper.batch_size()
            ),
        }
        .into());
    }
    if !config.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(GemmaError::InvalidInput {
            reason: "stop strings need a tokenizer to decode the generated text".into(),
        }
        .into());
    }
    let mut sampler = Sampler::new(config.sampling)?;
    let mut rows: Vec<Row> = prompts
        .iter()
        .map(|_| Row {
            generated: Vec::new(),
            stop: None,
            logits: Vec::new(),
            activations: BTreeMap::new(),
        })
        .collect();
    if config.max_new_tokens == 0 {
        return Ok(finish(prompts, rows)?);
    }
    let mut tokens = TokenBatch::new(prompts, config.pad_token_id, PaddingSide::Left)?;
    let mut phase = StepPhase::Prompt;
    loop {
        let out = stepper.step(&tokens, phase, LogitPositions::Last)?;
        record_activations(&mut rows, &tokens, &out);
        let mut next = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter_mut().enumerate() {
            if row.stop.is_some() {
                next.push(vec![config.pad_token_id]);
                continue;
            }
            let logits = out.logits.slice(s![i, 0, ..]);
            let logits = logits.as_slice().expect("standard layout");
            let token = sampler.next_token(logits)?;
            row.generated.push(token);
            if config.keep_logits {
                row.logits.push(logits.to_vec());
            }
            on_token(i, token);
            row.stop = stop_reason(row, token, config, tokenizer)?;
            next.push(vec![token]);
        }
        if rows.iter().all(|r| r.stop.is_some()) {
            break;
        }
        phase = StepPhase::Generated {
            index: match phase {
                StepPhase::Prompt => 0,
                StepPhase::Generated { index } => index + 1,
            },
        };
        tokens = TokenBatch::new(&next, config.pad_token_id, PaddingSide::Left)?;
    }
    Ok(finish(prompts, rows)?)
}

/// Why `row` stops after generating `token`, if it does.
fn stop_reason(
    row: &Row,
    token: u32,
    config: &GenerationConfig,
    tokenizer: Option<&GemmaTokenizer>,
) -> Result<Option<StopReason>> {
    if config.stop_token_ids.contains(&token) {
        return Ok(Some(StopReason::StopToken(token)));
    }
    if let (false, Some(tokenizer)) = (config.stop_strings.is_empty(), tokenizer) {
        let text = tokenizer.decode(&row.generated)?;
        if let Some(s) = config
            .stop_strings
            .iter()
            .find(|s| text.contains(s.as_str()))
        {
            return Ok(Some(StopReason::StopString(s.clone())));
        }
    }
    Ok((row.generated.len() >= config.max_new_tokens).then_some(StopReason::MaxNewTokens))
}

/// Appends the activations of each still-running row's real fed positions.
fn record_activations(rows: &mut [Row], tokens: &TokenBatch, out: &StepOutput) {
    let t = tokens.seq_len();
    for (hook, values) in &out.activations {
        for (i, row) in rows.iter_mut().enumerate() {
            if row.stop.is_some() {
                continue;
            }
            let kept = row.activations.entry(*hook).or_default();
            for (p, real) in tokens.mask()[i * t..(i + 1) * t].iter().enumerate() {
                if *real {
                    kept.push(values.index_axis(Axis(0), i).row(p).to_vec());
                }
            }
        }
    }
}

fn finish(prompts: &[Vec<u32>], rows: Vec<Row>) -> Result<Vec<Generation>> {
    rows.into_iter()
        .zip(prompts)
        .map(|(row, prompt)| {
            let logits = if row.logits.is_empty() {
                None
            } else {
                Some(stack(&row.logits)?)
            };
            let activations = row
                .activations
                .iter()
                .map(|(hook, v)| Ok((*hook, stack(v)?)))
                .collect::<Result<_>>()?;
            Ok(Generation {
                prompt_ids: prompt.clone(),
                token_ids: row.generated,
                stop: row.stop.unwrap_or(StopReason::MaxNewTokens),
                logits,
                activations,
            })
        })
        .collect()
}

/// Rows of equal length as one array.
fn stack(rows: &[Vec<f32>]) -> Result<Array2<f32>> {
    let width = rows.first().map_or(0, Vec::len);
    Array2::from_shape_vec((rows.len(), width), rows.concat()).map_err(|e| GemmaError::DeviceData {
        reason: format!("rows of different widths: {e}"),
    })
}
