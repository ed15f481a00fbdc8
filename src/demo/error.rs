//! The demo's error type.

use std::path::PathBuf;

/// Errors of the demo generator and its measurements.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Reading or writing a fixture file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A fixture file is not what the generator wrote.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Building or using the tokenizer failed.
    #[error("tokenizer: {reason}")]
    Tokenizer {
        /// What went wrong.
        reason: String,
    },
    /// Writing safetensors failed.
    #[error("safetensors: {reason}")]
    Safetensors {
        /// What went wrong.
        reason: String,
    },
    /// Loading or running a demo model failed.
    #[error(transparent)]
    Model(#[from] gemma_model::GemmaError),
    /// The persona dataset failed to load.
    #[error(transparent)]
    Dataset(#[from] persona_dataset::DatasetError),
    /// A measurement found no data to measure on.
    #[error("measurement: {reason}")]
    Measurement {
        /// What was missing.
        reason: String,
    },
}

impl DemoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DemoError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with [`DemoError`].
pub type Result<T, E = DemoError> = std::result::Result<T, E>;
