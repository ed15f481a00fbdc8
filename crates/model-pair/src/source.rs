//! [`PairedSource`]: whatever turns prompts or token ids into paired activations. Two implementations:
//! [`crate::StereoRunner`] (both models in memory) and [`crate::SequentialPair`] (one model in memory at a
//! time). Everything downstream (the activation store, the latent hunt) takes `&dyn PairedSource`.

use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel};
use ndarray::Array3;
use serde::{Deserialize, Serialize};
use stereo_core::BackendKind;

use crate::error::{PairError, Result};
use crate::prompt::{
    tokenize_prompt, PairedActivations, PromptInput, TokenizationMode, TokenizedPrompt,
};
use crate::CHAT;

/// Progress of a forward pass over a list of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardProgress {
    /// The model that just finished a batch (0 = base, 1 = chat).
    pub model: usize,
    /// Sequences this model has finished.
    pub done: usize,
    /// Sequences to run.
    pub total: usize,
}

/// One of the two models: its name and, when known, its hub revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The hub id or local directory (as the model reports its name).
    pub name: String,
    /// The hub commit, if known.
    pub revision: Option<String>,
}

/// Runs the same token ids through a base model (index 0) and a chat model (index 1).
pub trait PairedSource {
    /// The tokenizer both models share.
    fn tokenizer(&self) -> &GemmaTokenizer;
    /// The hook read.
    fn hook(&self) -> HookPoint;
    /// Width of the activations.
    fn d_model(&self) -> usize;
    /// Names and revisions of base and chat.
    fn models(&self) -> [ModelInfo; 2];
    /// The backend the models run on.
    fn backend(&self) -> BackendKind;
    /// Model `i` (0 base, 1 chat) when it stays in memory between runs (a [`StereoRunner`] holds both;
    /// a sequential pair loads each only while it runs: `None`).
    ///
    /// [`StereoRunner`]: crate::StereoRunner
    fn loaded_model(&self, i: usize) -> Option<&dyn LanguageModel> {
        let _ = i;
        None
    }
    /// The longest sequence both models accept (the smaller `max_position_embeddings`), when it is
    /// known before they run; longer sequences are refused by the models themselves.
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Runs `sequences` (token ids, each starting with `<bos>`) through both models and returns
    /// `[sum of lengths, 2, d_model]`: the rows of sequence 0, then of sequence 1, ...; row `[i, m]`
    /// is model `m`'s activation at the hook. `progress` is called after every forward batch.
    fn run_sequences(
        &self,
        sequences: &[Vec<u32>],
        progress: &mut dyn FnMut(ForwardProgress),
    ) -> Result<Array3<f32>>;

    /// Token ids of `prompt` in `mode`, with the chat-template and assistant flags of each token.
    fn tokenize(&self, prompt: &PromptInput, mode: TokenizationMode) -> Result<TokenizedPrompt> {
        tokenize_prompt(self.tokenizer(), prompt, mode)
    }

    /// Runs `prompts` through both models; rows are the real tokens of every prompt, in order.
    fn run(&self, prompts: &[PromptInput], mode: TokenizationMode) -> Result<PairedActivations> {
        self.run_with_progress(prompts, mode, &mut |_, _| {})
    }

    /// [`run`](Self::run), calling `progress(done, total)` each time the chat model finishes a batch
    /// of prompts.
    fn run_with_progress(
        &self,
        prompts: &[PromptInput],
        mode: TokenizationMode,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<PairedActivations> {
        if prompts.is_empty() {
            return Err(PairError::InvalidInput {
                reason: "no prompts to run".into(),
            });
        }
        let tokenized = prompts
            .iter()
            .map(|p| self.tokenize(p, mode))
            .collect::<Result<Vec<_>>>()?;
        let sequences: Vec<Vec<u32>> = tokenized.iter().map(|t| t.ids.clone()).collect();
        let activations = self.run_sequences(&sequences, &mut |p: ForwardProgress| {
            if p.model == CHAT {
                progress(p.done, p.total);
            }
        })?;
        let bos = self.tokenizer().bos_id();
        let tokens = tokenized
            .iter()
            .enumerate()
            .flat_map(|(prompt, t)| t.token_meta(prompt, bos))
            .collect();
        Ok(PairedActivations {
            activations,
            tokens,
        })
    }
}
