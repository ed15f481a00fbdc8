//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong mapping a circuit.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    /// A model failed (loading, running, tokenizing, its weights).
    #[error("model: {0}")]
    Model(#[from] gemma_model::GemmaError),
    /// The crosscoder failed.
    #[error("crosscoder: {0}")]
    Crosscoder(#[from] crosscoder::CrosscoderError),
    /// A stereo run or a prompt failed.
    #[error("stereo run: {0}")]
    Pair(#[from] model_pair::PairError),
    /// A file could not be written.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The request is unusable (a latent out of range, a layer the crosscoder does not read, ...).
    #[error("invalid circuit request: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = CircuitError> = std::result::Result<T, E>;
