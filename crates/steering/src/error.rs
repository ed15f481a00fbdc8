//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in a causal test.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    /// A model failed (loading, running, tokenizing).
    #[error("model: {0}")]
    Model(#[from] gemma_model::GemmaError),
    /// The pair or a lockstep step failed.
    #[error(transparent)]
    Pair(#[from] model_pair::PairError),
    /// The crosscoder failed.
    #[error("crosscoder: {0}")]
    Crosscoder(#[from] crosscoder::CrosscoderError),
    /// A figure could not be drawn.
    #[error(transparent)]
    Figure(#[from] figures::FigureError),
    /// A file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The request is unusable.
    #[error("invalid steering request: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = SteeringError> = std::result::Result<T, E>;
