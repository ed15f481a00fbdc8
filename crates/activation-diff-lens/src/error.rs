//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong computing or reading an activation difference.
#[derive(Debug, thiserror::Error)]
pub enum AdlError {
    /// A model failed (loading, running, tokenizing, the lens).
    #[error("model: {0}")]
    Model(#[from] gemma_model::GemmaError),
    /// The crosscoder failed.
    #[error("crosscoder: {0}")]
    Crosscoder(#[from] crosscoder::CrosscoderError),
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The request is unusable.
    #[error("invalid activation-difference request: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = AdlError> = std::result::Result<T, E>;
