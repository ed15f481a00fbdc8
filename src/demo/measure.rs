//! Running the demo pair and measuring what the planted circuits do at the hook.
//!
//! [`DemoPair`] loads the two committed models (through `gemma_model::load_dir`, the code path of
//! `google/gemma-2-2b`) and returns, per prompt, the base and chat residual streams at the hook
//! with the tokens and the cues the reference detector finds ([`PromptActivations`]).
//! [`effective_directions`] measures the planted direction of each mechanism as the normalised
//! mean of `chat - base` over the tokens at and after its first cue; [`effect_sizes`] summarises
//! how large and how clean the difference is.

use std::path::Path;

use gemma_model::{
    load_dir, ChatMessage, GemmaTokenizer, HookPoint, LanguageModel, LoadOptions, PaddingSide,
    RunRequest, TokenBatch,
};
use ndarray::{Array2, ArrayView1};
use serde::{Deserialize, Serialize};

use super::corpus::CorpusEntry;
use super::cues::{find_cues, first_cue, CueHit, Mechanism};
use super::error::{DemoError, Result};
use super::HOOK_POINT;

/// The demo base and chat models at the hook, with their shared tokenizer.
pub struct DemoPair {
    base: Box<dyn LanguageModel>,
    chat: Box<dyn LanguageModel>,
    tokenizer: GemmaTokenizer,
    hook: HookPoint,
}

impl std::fmt::Debug for DemoPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoPair")
            .field("base", &self.base.name())
            .field("chat", &self.chat.name())
            .field("hook", &self.hook)
            .finish()
    }
}

/// A prompt for [`DemoPair::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoPrompt {
    /// `<bos>` + text.
    Raw(String),
    /// The chat template; `add_generation_prompt` when the last turn is the user's.
    Chat(Vec<ChatMessage>),
}

impl From<&CorpusEntry> for DemoPrompt {
    fn from(e: &CorpusEntry) -> Self {
        match e {
            CorpusEntry::Text { text } => DemoPrompt::Raw(text.clone()),
            CorpusEntry::Chat { messages } => DemoPrompt::Chat(messages.clone()),
        }
    }
}

/// One prompt's paired activations at the hook.
#[derive(Debug, Clone)]
pub struct PromptActivations {
    /// Token ids (the first is `<bos>`).
    pub ids: Vec<u32>,
    /// Token strings.
    pub tokens: Vec<String>,
    /// The cues the reference detector finds.
    pub cues: Vec<CueHit>,
    /// Base model residual stream `[pos, d_model]`.
    pub base: Array2<f32>,
    /// Chat model residual stream `[pos, d_model]`.
    pub chat: Array2<f32>,
}

impl PromptActivations {
    /// `chat - base` at position `pos`.
    pub fn diff(&self, pos: usize) -> Vec<f32> {
        self.chat
            .row(pos)
            .iter()
            .zip(self.base.row(pos))
            .map(|(c, b)| c - b)
            .collect()
    }

    /// `|chat - base| / |base|` at position `pos`.
    pub fn relative_diff(&self, pos: usize) -> f32 {
        norm(&self.diff(pos)) / norm_view(self.base.row(pos))
    }

    /// The first cue position of `mechanism`, if the prompt has one.
    pub fn first_cue(&self, mechanism: Mechanism) -> Option<usize> {
        first_cue(&self.cues, mechanism)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the prompt has no tokens (never: every prompt has `<bos>`).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl DemoPair {
    /// Loads `dir/base` and `dir/chat` (a demo fixture directory) up to the hook layer.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_dirs(&dir.join("base"), &dir.join("chat"))
    }

    /// Loads two model directories up to the hook layer.
    pub fn load_dirs(base: &Path, chat: &Path) -> Result<Self> {
        let hook = HOOK_POINT;
        let options = LoadOptions::for_hooks(&[hook]);
        let base = load_dir(base, &options)?;
        let chat = load_dir(chat, &options)?;
        let tokenizer = base.tokenizer.ok_or_else(|| DemoError::Tokenizer {
            reason: "the base model directory has no tokenizer.json".into(),
        })?;
        Ok(DemoPair {
            base: base.model,
            chat: chat.model,
            tokenizer,
            hook,
        })
    }

    /// The shared tokenizer.
    pub fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    /// The hook.
    pub fn hook(&self) -> HookPoint {
        self.hook
    }

    /// Token ids of a prompt.
    pub fn encode(&self, prompt: &DemoPrompt) -> Result<Vec<u32>> {
        Ok(match prompt {
            DemoPrompt::Raw(text) => self.tokenizer.encode(text)?,
            DemoPrompt::Chat(messages) => {
                let generation = messages
                    .last()
                    .is_some_and(|m| m.role == gemma_model::Role::User);
                self.tokenizer.encode_chat(messages, generation)?
            }
        })
    }

    /// Runs prompts through both models (batches of 32, right padding).
    pub fn run(&self, prompts: &[DemoPrompt]) -> Result<Vec<PromptActivations>> {
        let sequences = prompts
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>>>()?;
        self.run_ids(&sequences)
    }

    /// Runs token id sequences through both models.
    pub fn run_ids(&self, sequences: &[Vec<u32>]) -> Result<Vec<PromptActivations>> {
        let mut out = Vec::with_capacity(sequences.len());
        let request = RunRequest::capture([self.hook]);
        for chunk in sequences.chunks(32) {
            let batch = TokenBatch::new(chunk, 0, PaddingSide::Right)?;
            let base = self.base.run(&batch, &request)?;
            let chat = self.chat.run(&batch, &request)?;
            let (base, chat) = (&base.activations[&self.hook], &chat.activations[&self.hook]);
            for (b, ids) in chunk.iter().enumerate() {
                let n = ids.len();
                let tokens = self.tokenizer.tokens(ids);
                out.push(PromptActivations {
                    cues: find_cues(&tokens),
                    tokens,
                    ids: ids.clone(),
                    base: base.slice(ndarray::s![b, ..n, ..]).to_owned(),
                    chat: chat.slice(ndarray::s![b, ..n, ..]).to_owned(),
                });
            }
        }
        Ok(out)
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn norm_view(v: ArrayView1<f32>) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    d / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}

/// Prompts whose cues all belong to `mechanism` (and that have one).
fn only(
    runs: &[PromptActivations],
    mechanism: Mechanism,
) -> impl Iterator<Item = &PromptActivations> {
    runs.iter()
        .filter(move |r| !r.cues.is_empty() && r.cues.iter().all(|c| c.mechanism == mechanism))
}

/// The measured planted direction of each mechanism (in [`Mechanism::ALL`] order): the normalised
/// mean of `chat - base` over every token at or after the first cue, over the prompts whose cues
/// all belong to that mechanism.
pub fn effective_directions(runs: &[PromptActivations]) -> Result<Vec<Vec<f32>>> {
    Mechanism::ALL
        .iter()
        .map(|&m| {
            let mut sum: Vec<f64> = Vec::new();
            let mut count = 0usize;
            for r in only(runs, m) {
                let first = r.first_cue(m).expect("filtered on cues");
                for pos in first..r.len() {
                    let d = r.diff(pos);
                    if sum.is_empty() {
                        sum = vec![0.0; d.len()];
                    }
                    sum.iter_mut()
                        .zip(&d)
                        .for_each(|(s, x)| *s += f64::from(*x));
                    count += 1;
                }
            }
            if count == 0 {
                return Err(DemoError::Measurement {
                    reason: format!("no prompt with a {m} cue"),
                });
            }
            let n = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n < 1e-9 * count as f64 {
                // No difference at all (the negative control): no direction.
                return Ok(vec![0.0; sum.len()]);
            }
            Ok(sum.iter().map(|x| (x / n) as f32).collect())
        })
        .collect()
}

/// How large and how clean `chat - base` is, per mechanism, on a set of prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MechanismEffects {
    /// Prompts whose cues all belong to this mechanism.
    pub prompts: usize,
    /// Mean `|chat - base|` on cue tokens, on tokens after the first cue, on tokens before it.
    pub diff_norm_on_cue: f32,
    pub diff_norm_after_cue: f32,
    pub diff_norm_before_cue: f32,
    /// Mean `|base|` on the tokens at and after the first cue (BOS excluded).
    pub resid_norm: f32,
    /// Mean projection of `chat - base` on this mechanism's direction, at and after the first cue.
    pub projection_after_cue: f32,
    /// Mean projection on the *other* mechanism's direction there (cross-talk).
    pub cross_projection: f32,
    /// Cosine of each prompt's mean `chat - base` (at and after the first cue) with the direction:
    /// minimum and mean over prompts; and the mean per-token cosine.
    pub prompt_cosine_min: f32,
    pub prompt_cosine_mean: f32,
    pub token_cosine_mean: f32,
}

/// Effect sizes of both mechanisms plus the no-cue control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectSizes {
    /// Per mechanism, in [`Mechanism::ALL`] order.
    pub mechanisms: Vec<MechanismEffects>,
    /// Prompts without any cue.
    pub no_cue_prompts: usize,
    /// Largest `|chat - base| / |base|` over every token of every prompt without a cue.
    pub no_cue_max_relative_diff: f32,
}

/// Measures [`EffectSizes`] on `runs` against `directions` (from [`effective_directions`]).
pub fn effect_sizes(runs: &[PromptActivations], directions: &[Vec<f32>]) -> EffectSizes {
    let mean = |v: &[f32]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f32>() / v.len() as f32
        }
    };
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mechanisms = Mechanism::ALL
        .iter()
        .map(|&m| {
            let dir = &directions[m.index()];
            let other = &directions[1 - m.index()];
            let (mut on, mut after, mut before, mut resid) = (vec![], vec![], vec![], vec![]);
            let (mut proj, mut cross, mut prompt_cos, mut token_cos) =
                (vec![], vec![], vec![], vec![]);
            let mut prompts = 0;
            for r in only(runs, m) {
                prompts += 1;
                let first = r.first_cue(m).expect("filtered on cues");
                let cue_positions: Vec<usize> = r.cues.iter().map(|c| c.position).collect();
                let mut mean_diff = vec![0.0f32; dir.len()];
                for pos in 1..r.len() {
                    let d = r.diff(pos);
                    if pos < first {
                        before.push(norm(&d));
                        continue;
                    }
                    if cue_positions.contains(&pos) {
                        on.push(norm(&d));
                    } else {
                        after.push(norm(&d));
                    }
                    resid.push(norm_view(r.base.row(pos)));
                    proj.push(dot(&d, dir));
                    cross.push(dot(&d, other));
                    token_cos.push(cosine(&d, dir));
                    mean_diff.iter_mut().zip(&d).for_each(|(s, x)| *s += x);
                }
                prompt_cos.push(cosine(&mean_diff, dir));
            }
            MechanismEffects {
                prompts,
                diff_norm_on_cue: mean(&on),
                diff_norm_after_cue: mean(&after),
                diff_norm_before_cue: mean(&before),
                resid_norm: mean(&resid),
                projection_after_cue: mean(&proj),
                cross_projection: mean(&cross),
                prompt_cosine_min: if prompt_cos.is_empty() {
                    0.0
                } else {
                    prompt_cos.iter().copied().fold(f32::INFINITY, f32::min)
                },
                prompt_cosine_mean: mean(&prompt_cos),
                token_cosine_mean: mean(&token_cos),
            }
        })
        .collect();
    let no_cue: Vec<&PromptActivations> = runs.iter().filter(|r| r.cues.is_empty()).collect();
    let no_cue_max_relative_diff = no_cue
        .iter()
        .flat_map(|r| (0..r.len()).map(move |p| r.relative_diff(p)))
        .fold(0.0f32, f32::max);
    EffectSizes {
        mechanisms,
        no_cue_prompts: no_cue.len(),
        no_cue_max_relative_diff,
    }
}
