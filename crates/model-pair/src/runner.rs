//! [`StereoRunner`]: both models in memory, each batch through the base model then the chat model.

use gemma_model::{
    GemmaTokenizer, HookPoint, LanguageModel, LoadedModel, PaddingSide, RunRequest, TokenBatch,
};
use ndarray::{s, Array3};
use stereo_core::BackendKind;

use crate::checks::check_pair;
use crate::error::{PairError, Result};
use crate::source::{ForwardProgress, ModelInfo, PairedSource};
use crate::{BASE, CHAT};

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
            loaded.tokenizer.clone().ok_or_else(|| PairError::Mismatch {
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

    fn backend(&self) -> BackendKind {
        self.models[BASE].backend()
    }

    fn loaded_model(&self, i: usize) -> Option<&dyn LanguageModel> {
        self.models.get(i).map(|m| m.as_ref())
    }

    fn max_positions(&self) -> Option<usize> {
        self.models
            .iter()
            .map(|m| m.config().max_position_embeddings)
            .min()
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
    let model_error = |source| PairError::model(m, model.name(), source);
    let batch = TokenBatch::new(sequences, model.config().pad_token_id, PaddingSide::Right)
        .map_err(model_error)?;
    let output = model
        .run(&batch, &RunRequest::capture([hook]))
        .map_err(model_error)?;
    let acts = output.activations.get(&hook).ok_or_else(|| {
        let reason = format!("the run returned no activation at {hook}");
        PairError::model(
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
