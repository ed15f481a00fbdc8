//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong building or writing a dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// A model failed (the logit lens, tokenizing).
    #[error("model: {0}")]
    Model(#[from] gemma_model::GemmaError),
    /// The crosscoder failed.
    #[error("crosscoder: {0}")]
    Crosscoder(#[from] crosscoder::CrosscoderError),
    /// The activation store failed.
    #[error("activation store: {0}")]
    Store(#[from] activation_cache::CacheError),
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
    #[error("invalid dashboard request: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = DashboardError> = std::result::Result<T, E>;
