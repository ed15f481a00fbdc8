//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the hunt, the verification or while writing the results.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// A stereo run failed (tokenizing, one of the two models), or the two models cannot be paired.
    #[error("stereo run: {0}")]
    Run(#[from] model_pair::PairError),
    /// The crosscoder refused an input or failed.
    #[error("crosscoder: {0}")]
    Crosscoder(#[from] crosscoder::CrosscoderError),
    /// The persona dataset is unusable.
    #[error("dataset: {0}")]
    Dataset(#[from] persona_dataset::DatasetError),
    /// The Activation Difference Lens failed.
    #[error("activation difference lens: {0}")]
    Adl(#[from] activation_diff_lens::AdlError),
    /// Mapping a circuit failed.
    #[error("circuit: {0}")]
    Circuit(#[from] circuits::CircuitError),
    /// A model's files or config could not be read.
    #[error("model: {0}")]
    Model(#[from] gemma_model::GemmaError),
    /// An option is out of range, or two options contradict each other.
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        /// The option (as the `day1` flag is spelled).
        option: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A contrast has too few items on one side of the discovery / held-out split.
    #[error(
        "contrast `{contrast}` has {found} {side} item(s) but needs at least {needed} \
         ({total} item(s) in the dataset, discovery ratio {ratio}, seed {seed}){hint}"
    )]
    TooFewItems {
        /// The category.
        contrast: String,
        /// `discovery` or `dataset`.
        side: &'static str,
        /// Items found on that side.
        found: usize,
        /// Items needed.
        needed: usize,
        /// Items of the category in the whole dataset.
        total: usize,
        /// The discovery ratio of the split.
        ratio: f64,
        /// The split seed.
        seed: u64,
        /// A suggestion (may be empty).
        hint: String,
    },
    /// A contrast was asked for that the dataset does not have.
    #[error("the dataset has no contrast `{name}` (it has: {available})")]
    UnknownContrast {
        /// What was asked for.
        name: String,
        /// The contrasts the dataset has, comma-separated.
        available: String,
    },
    /// The crosscoder does not fit the models or the hook requested.
    #[error("the crosscoder {source_name} does not fit this run: it was trained on {field} {crosscoder}, but {requested} was requested")]
    CrosscoderMismatch {
        /// Where the crosscoder came from.
        source_name: String,
        /// `hook`, `layer`, `d_model` or `n_models`.
        field: &'static str,
        /// The crosscoder's value.
        crosscoder: String,
        /// The value of the run.
        requested: String,
    },
    /// The pooling selected no token of a prompt.
    #[error("pooling `{pooling}` selects no token of prompt {prompt:?}: {reason}")]
    EmptyPooling {
        /// The pooling's name.
        pooling: String,
        /// The prompt (its text, shortened).
        prompt: String,
        /// Why (e.g. no template token in a raw prompt).
        reason: String,
    },
    /// Arrays of the wrong shape were given.
    #[error("shape mismatch in {what}: expected {expected}, got {actual}")]
    Shape {
        /// Which array.
        what: String,
        /// The expected shape.
        expected: String,
        /// The actual shape.
        actual: String,
    },
    /// A file of the default demo (or another required input) is missing.
    #[error("{what} not found at {}: {hint}", path.display())]
    MissingInput {
        /// What was looked for.
        what: String,
        /// Where.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        reason: String,
    },
    /// A figure could not be drawn (names the file).
    #[error(transparent)]
    Figure(#[from] figures::FigureError),

    #[error("causal test: {0}")]
    Steering(#[from] steering::SteeringError),
    /// A latent dashboard could not be built.
    #[error(transparent)]
    Dashboard(#[from] latent_dashboard::DashboardError),
}

impl AnalysisError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AnalysisError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn option(option: &str, reason: impl Into<String>) -> Self {
        AnalysisError::InvalidOption {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = AnalysisError> = std::result::Result<T, E>;
