//! Stereo runs: the same token ids through the base model (index 0) and the chat model (index 1),
//! paired activations at one hook, with per-token metadata.

use gemma_model::{
    ChatMessage, GemmaTokenizer, HookPoint, LanguageModel, LoadedModel, PaddingSide, RunRequest,
    TokenBatch,
};
use ndarray::{s, Array3};

use crate::error::{CacheError, Result};
use crate::manifest::ModelInfo;
use crate::source::{ForwardProgress, PairedSource};

/// Model index of the base model.
pub const BASE: usize = 0;
/// Model index of the chat model.
pub const CHAT: usize = 1;

/// One prompt: raw text, or a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Text, tokenized with one leading `<bos>` (chat-templated as one user turn in
    /// [`TokenizationMode::ChatTemplate`]).
    Text(String),
    /// A conversation (user first, alternating); rendered with the chat template in both modes.
    Chat(Vec<ChatMessage>),
}

impl From<&str> for PromptInput {
    fn from(text: &str) -> Self {
        PromptInput::Text(text.to_string())
    }
}

/// How text prompts become tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizationMode {
    /// `<bos>` + the text, the same for both models (the seed notebook's mode).
    #[default]
    Raw,
    /// The Gemma chat template, one user turn plus the generation prompt, for both models.
    ChatTemplate,
}

/// What one row of a stereo run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenMeta {
    /// Index of the prompt in the run.
    pub prompt: usize,
    /// Position of the token in its prompt (0 = `<bos>`).
    pub position: usize,
    /// The token id.
    pub token_id: u32,
    /// The `<bos>` token (the attention sink: huge norm, excluded from statistics by default).
    pub is_bos: bool,
    /// A padding row (only present when padding rows are kept).
    pub is_pad: bool,
    /// A chat-template token: `<start_of_turn>`, the role name and its newline, `<end_of_turn>` and
    /// its newline.
    pub is_template: bool,
}

impl TokenMeta {
    /// Neither BOS, padding nor template: a token of the user's own text.
    pub fn is_content(&self) -> bool {
        !(self.is_bos || self.is_pad || self.is_template)
    }
}

/// Paired activations of a stereo run.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedActivations {
    /// `[tokens, 2, d_model]`: row `i` holds the base (`[i, 0, :]`) and chat (`[i, 1, :]`) activation
    /// of token `tokens[i]`.
    pub activations: Array3<f32>,
    /// One entry per row.
    pub tokens: Vec<TokenMeta>,
}

impl PairedActivations {
    /// Number of rows.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Row indices of prompt `p`, in position order.
    pub fn rows_of_prompt(&self, p: usize) -> Vec<usize> {
        self.tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.prompt == p)
            .map(|(i, _)| i)
            .collect()
    }
}

/// The base and chat models, their shared tokenizer and the hook to read.
pub struct StereoRunner {
    models: [Box<dyn LanguageModel>; 2],
    tokenizer: GemmaTokenizer,
    hook: HookPoint,
    batch_size: usize,
    revisions: [Option<String>; 2],
}

impl std::fmt::Debug for StereoRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StereoRunner")
            .field("base", &self.models[BASE].name())
            .field("chat", &self.models[CHAT].name())
            .field("hook", &self.hook)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl StereoRunner {
    /// Pairs `base` (index 0) and `chat` (index 1) at `hook`.
    ///
    /// `tokenizers` are the two models' own tokenizers: they must be identical, since the same ids go
    /// through both models. The models must have the same width and vocabulary, and both must be
    /// loaded at least as deep as the hook.
    pub fn new(
        base: Box<dyn LanguageModel>,
        chat: Box<dyn LanguageModel>,
        tokenizers: [GemmaTokenizer; 2],
        hook: HookPoint,
    ) -> Result<Self> {
        let [base_tok, chat_tok] = tokenizers;
        check_pair(&base_tok, &chat_tok, [base.as_ref(), chat.as_ref()], hook)?;
        Ok(StereoRunner {
            models: [base, chat],
            tokenizer: base_tok,
            hook,
            batch_size: 8,
            revisions: [None, None],
        })
    }

    /// Pairs two models as [`gemma_model::load_model`] returns them (their tokenizers and hub
    /// revisions come along). Errors if a model directory has no `tokenizer.json`.
    pub fn from_loaded(base: LoadedModel, chat: LoadedModel, hook: HookPoint) -> Result<Self> {
        let tokenizer = |loaded: &LoadedModel, i: usize| {
            loaded
                .tokenizer
                .clone()
                .ok_or_else(|| CacheError::Mismatch {
                    reason: format!(
                    "model {i} ({}) has no tokenizer.json: the shared tokenizer cannot be checked",
                    loaded.model.name()
                ),
                })
        };
        let tokenizers = [tokenizer(&base, BASE)?, tokenizer(&chat, CHAT)?];
        let revisions = [base.revision, chat.revision];
        let mut runner = Self::new(base.model, chat.model, tokenizers, hook)?;
        runner.revisions = revisions;
        Ok(runner)
    }

    /// Prompts per forward batch (default 8).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The hook read.
    pub fn hook(&self) -> HookPoint {
        self.hook
    }

    /// The shared tokenizer.
    pub fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    /// Model `i` (0 = base, 1 = chat).
    pub fn model(&self, i: usize) -> &dyn LanguageModel {
        self.models[i].as_ref()
    }

    /// `d_model` of both models.
    pub fn d_model(&self) -> usize {
        self.models[BASE].config().hidden_size
    }

    /// Token ids of `prompt` in `mode`, with the template flag of each token.
    pub fn tokenize(
        &self,
        prompt: &PromptInput,
        mode: TokenizationMode,
    ) -> Result<(Vec<u32>, Vec<bool>)> {
        tokenize_prompt(&self.tokenizer, prompt, mode)
    }

    /// Runs `prompts` through both models; rows are the real tokens of every prompt, in order.
    pub fn run(
        &self,
        prompts: &[PromptInput],
        mode: TokenizationMode,
    ) -> Result<PairedActivations> {
        self.run_with_progress(prompts, mode, |_, _| {})
    }

    /// [`run`](Self::run), calling `progress(done, total)` after each batch of prompts.
    pub fn run_with_progress(
        &self,
        prompts: &[PromptInput],
        mode: TokenizationMode,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<PairedActivations> {
        if prompts.is_empty() {
            return Err(CacheError::InvalidInput {
                reason: "no prompts to run".into(),
            });
        }
        let tokenized = prompts
            .iter()
            .map(|p| self.tokenize(p, mode))
            .collect::<Result<Vec<_>>>()?;
        let sequences: Vec<Vec<u32>> = tokenized.iter().map(|(ids, _)| ids.clone()).collect();
        let activations = self.run_sequences(&sequences, &mut |p: ForwardProgress| {
            if p.model == CHAT {
                progress(p.done, p.total);
            }
        })?;
        let tokens = tokenized
            .iter()
            .enumerate()
            .flat_map(|(prompt, (ids, template))| {
                token_meta(prompt, ids, template, self.tokenizer.bos_id())
            })
            .collect();
        Ok(PairedActivations {
            activations,
            tokens,
        })
    }
}

impl PairedSource for StereoRunner {
    fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    fn hook(&self) -> HookPoint {
        self.hook
    }

    fn d_model(&self) -> usize {
        StereoRunner::d_model(self)
    }

    fn models(&self) -> [ModelInfo; 2] {
        [BASE, CHAT].map(|m| ModelInfo {
            name: self.models[m].name().to_string(),
            revision: self.revisions[m].clone(),
        })
    }

    /// Both models on each batch of `batch_size` sequences in turn.
    fn run_sequences(
        &self,
        sequences: &[Vec<u32>],
        progress: &mut dyn FnMut(ForwardProgress),
    ) -> Result<Array3<f32>> {
        let n_rows = sequences.iter().map(Vec::len).sum();
        let mut out = Array3::<f32>::zeros((n_rows, 2, self.d_model()));
        let mut row = 0;
        let mut done = 0;
        for chunk in sequences.chunks(self.batch_size) {
            done += chunk.len();
            for (m, model) in self.models.iter().enumerate() {
                run_batch_into(model.as_ref(), m, chunk, self.hook, &mut out, row)?;
                progress(ForwardProgress {
                    model: m,
                    done,
                    total: sequences.len(),
                });
            }
            row += chunk.iter().map(Vec::len).sum::<usize>();
        }
        Ok(out)
    }
}

/// Checks that two models (with their tokenizers) can be paired at `hook`: identical tokenizers,
/// equal width and vocabulary, both loaded at least as deep as the hook.
pub(crate) fn check_pair(
    base_tok: &GemmaTokenizer,
    chat_tok: &GemmaTokenizer,
    models: [&dyn LanguageModel; 2],
    hook: HookPoint,
) -> Result<()> {
    if !base_tok.same_as(chat_tok) {
        return Err(CacheError::Mismatch {
            reason: format!(
                "their tokenizers differ ({} vs {}); the same token ids must go through both",
                base_tok.path().display(),
                chat_tok.path().display()
            ),
        });
    }
    let (b, c) = (models[BASE].config(), models[CHAT].config());
    if b.hidden_size != c.hidden_size || b.vocab_size != c.vocab_size {
        return Err(CacheError::Mismatch {
            reason: format!(
                "d_model {} vs {}, vocab {} vs {}",
                b.hidden_size, c.hidden_size, b.vocab_size, c.vocab_size
            ),
        });
    }
    for (i, m) in models.into_iter().enumerate() {
        check_depth(m, i, hook)?;
    }
    Ok(())
}

/// Checks that model `i` is loaded at least as deep as `hook`.
pub(crate) fn check_depth(model: &dyn LanguageModel, i: usize, hook: HookPoint) -> Result<()> {
    if hook.layers_needed() > model.loaded_layers() {
        return Err(CacheError::Mismatch {
            reason: format!(
                "hook {hook} needs {} layers, but model {i} ({}) has {} loaded",
                hook.layers_needed(),
                model.name(),
                model.loaded_layers()
            ),
        });
    }
    Ok(())
}

/// Runs one padded batch of `sequences` through `model` (index `m`) and writes the real tokens'
/// activations at `hook` into `out[row.., m, ..]` (`out`: `[rows, 2, d_model]`), in order.
pub(crate) fn run_batch_into(
    model: &dyn LanguageModel,
    m: usize,
    sequences: &[Vec<u32>],
    hook: HookPoint,
    out: &mut Array3<f32>,
    row: usize,
) -> Result<()> {
    let model_error = |source| CacheError::model(m, model.name(), source);
    let batch = TokenBatch::new(sequences, model.config().pad_token_id, PaddingSide::Right)
        .map_err(model_error)?;
    let output = model
        .run(&batch, &RunRequest::capture([hook]))
        .map_err(model_error)?;
    let acts = output.activations.get(&hook).ok_or_else(|| {
        let reason = format!("the run returned no activation at {hook}");
        CacheError::model(
            m,
            model.name(),
            gemma_model::GemmaError::InvalidInput { reason },
        )
    })?;
    let mut r = row;
    for (b, seq) in sequences.iter().enumerate() {
        out.slice_mut(s![r..r + seq.len(), m, ..])
            .assign(&acts.slice(s![b, ..seq.len(), ..]));
        r += seq.len();
    }
    Ok(())
}

/// Token ids of `prompt` in `mode` with `tokenizer`, with the chat-template flag of each token.
pub fn tokenize_prompt(
    tokenizer: &GemmaTokenizer,
    prompt: &PromptInput,
    mode: TokenizationMode,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let ids = match (prompt, mode) {
        (PromptInput::Text(text), TokenizationMode::Raw) => tokenizer.encode(text)?,
        (PromptInput::Text(text), TokenizationMode::ChatTemplate) => {
            tokenizer.encode_chat(&[ChatMessage::user(text.clone())], true)?
        }
        (PromptInput::Chat(messages), _) => tokenizer.encode_chat(messages, true)?,
    };
    let template = template_flags(tokenizer, &ids);
    Ok((ids, template))
}

/// The metadata rows of one tokenized prompt (no padding rows).
pub(crate) fn token_meta(
    prompt: usize,
    ids: &[u32],
    template: &[bool],
    bos_id: u32,
) -> Vec<TokenMeta> {
    ids.iter()
        .zip(template)
        .enumerate()
        .map(|(position, (&token_id, &is_template))| TokenMeta {
            prompt,
            position,
            token_id,
            is_bos: position == 0 && token_id == bos_id,
            is_pad: false,
            is_template,
        })
        .collect()
}

/// Marks the chat-template tokens of `ids`: `<start_of_turn>`, the role token after it and the
/// newline after the role, `<end_of_turn>` and the newline after it.
pub fn template_flags(tokenizer: &GemmaTokenizer, ids: &[u32]) -> Vec<bool> {
    let start = tokenizer.token_to_id("<start_of_turn>");
    let end = tokenizer.token_to_id("<end_of_turn>");
    let newline = tokenizer.token_to_id("\n");
    let mut flags = vec![false; ids.len()];
    let mut i = 0;
    while i < ids.len() {
        let id = Some(ids[i]);
        if id == start {
            flags[i] = true;
            if i + 1 < ids.len() {
                flags[i + 1] = true; // the role name
            }
            if i + 2 < ids.len() && Some(ids[i + 2]) == newline {
                flags[i + 2] = true;
            }
            i += 3;
        } else if id == end {
            flags[i] = true;
            if i + 1 < ids.len() && Some(ids[i + 1]) == newline {
                flags[i + 1] = true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    flags
}
