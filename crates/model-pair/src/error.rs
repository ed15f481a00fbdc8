//! The crate's error type: which model failed and why, or what keeps the two from pairing.

/// Everything that can go wrong in a stereo run.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// An error of one of the two models (loading, running).
    #[error("model {model} ({name}): {source}")]
    Model {
        /// 0 = base, 1 = chat.
        model: usize,
        /// The model's name.
        name: String,
        /// The underlying error.
        source: Box<gemma_model::GemmaError>,
    },
    /// A tokenizer error.
    #[error(transparent)]
    Tokenizer(Box<gemma_model::GemmaError>),
    /// The two models cannot be paired.
    #[error("the base and chat models cannot be paired: {reason}")]
    Mismatch {
        /// What differs.
        reason: String,
    },
    /// The crosscoder of a lockstep edit failed.
    #[error("crosscoder: {0}")]
    Crosscoder(Box<crosscoder::CrosscoderError>),
    /// The input is unusable.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = PairError> = std::result::Result<T, E>;

impl From<gemma_model::GemmaError> for PairError {
    fn from(e: gemma_model::GemmaError) -> Self {
        PairError::Tokenizer(Box::new(e))
    }
}

impl PairError {
    /// A [`PairError::Model`] of model `model` (0 = base, 1 = chat).
    pub fn model(model: usize, name: impl Into<String>, source: gemma_model::GemmaError) -> Self {
        PairError::Model {
            model,
            name: name.into(),
            source: Box::new(source),
        }
    }
}
