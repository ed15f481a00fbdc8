//! [`PairedSource`]: whatever turns token ids into paired activations for the store writer. Two
//! implementations: [`crate::StereoRunner`] (both models in memory) and [`crate::SequentialPair`]
//! (one model in memory at a time).

use gemma_model::{GemmaTokenizer, HookPoint};
use ndarray::Array3;

use crate::error::Result;
use crate::manifest::ModelInfo;

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

/// Runs the same token ids through a base model (index 0) and a chat model (index 1).
pub trait PairedSource {
    /// The tokenizer both models share.
    fn tokenizer(&self) -> &GemmaTokenizer;
    /// The hook read.
    fn hook(&self) -> HookPoint;
    /// Width of the activations.
    fn d_model(&self) -> usize;
    /// Names and revisions of base and chat, recorded in a store's manifest.
    fn models(&self) -> [ModelInfo; 2];
    /// Runs `sequences` (token ids, each starting with `<bos>`) through both models and returns
    /// `[sum of lengths, 2, d_model]`: the rows of sequence 0, then of sequence 1, ...; row `[i, m]`
    /// is model `m`'s activation at the hook. `progress` is called after every forward batch.
    fn run_sequences(
        &self,
        sequences: &[Vec<u32>],
        progress: &mut dyn FnMut(ForwardProgress),
    ) -> Result<Array3<f32>>;
}
