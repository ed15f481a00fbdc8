//! Why a check could not run (a check that ran and disagreed is a failed [`CheckRecord`](super::CheckRecord),
//! not an error).

use std::path::PathBuf;

use crosscoder::CrosscoderError;
use diff_analysis::AnalysisError;
use gemma_model::GemmaError;

use crate::demo::DemoError;

/// A check or measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A fixture file is missing, unreadable or not what the check expects.
    #[error("fixture {path}: {reason}")]
    Fixture {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Loading or running a Gemma-2 model failed.
    #[error(transparent)]
    Gemma(#[from] GemmaError),
    /// Loading, running or training a crosscoder failed.
    #[error(transparent)]
    Crosscoder(#[from] CrosscoderError),
    /// Building the model pair failed.
    #[error(transparent)]
    Pair(#[from] model_pair::PairError),
    /// The day1 workflow failed.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    /// The demo's manifest could not be read.
    #[error(transparent)]
    Demo(#[from] DemoError),
}

impl CheckError {
    /// A [`CheckError::Fixture`] for `path`.
    pub fn fixture(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        CheckError::Fixture {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
