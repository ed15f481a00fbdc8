//! The crate's one error type. Every variant carries the evidence needed to act on it: the file, the
//! tensor key, the expected and actual shapes.

use std::path::PathBuf;

/// Errors of loading, validating, running and analysing crosscoders.
#[derive(Debug, thiserror::Error)]
pub enum CrosscoderError {
    /// Reading or writing a file failed.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON config could not be parsed (or written).
    #[error("invalid JSON in `{path}`: {source}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A safetensors file could not be parsed or written.
    #[error("invalid safetensors file `{path}`: {reason}")]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// What the safetensors library reported.
        reason: String,
    },
    /// A torch `.pt` file is not a readable torch zip archive, or its pickle is malformed.
    #[error("cannot read torch pickle `{path}`: {reason}")]
    Pickle {
        /// The `.pt` file.
        path: PathBuf,
        /// What went wrong (opcode, offset, missing record...).
        reason: String,
    },
    /// A pickle names a callable outside the data-only allow-list. Nothing was executed.
    #[error(
        "refusing to unpickle `{path}`: it references `{module}.{name}`, which is not a tensor or container \
         constructor (the pickle is read as data only; nothing was executed)"
    )]
    ForbiddenPickleGlobal {
        /// The `.pt` file.
        path: PathBuf,
        /// Python module of the global.
        module: String,
        /// Python name of the global.
        name: String,
    },
    /// A tensor the format requires is absent.
    #[error("`{path}` has no tensor `{key}` (it has: {available})")]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The missing key.
        key: String,
        /// The keys that are present, comma-separated.
        available: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{key}` in `{path}` has shape {actual:?}, expected {expected}")]
    ShapeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The expected shape, with axis names (e.g. `[n_models=2, d=2304, F]`).
        expected: String,
        /// The actual shape.
        actual: Vec<usize>,
    },
    /// A tensor has a dtype this crate cannot use for that key.
    #[error("tensor `{key}` in `{path}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The dtype's name.
        dtype: String,
    },
    /// The backend cannot compute in the requested dtype.
    #[error("the crosscoder cannot compute in {dtype} on backend `{backend}` (burn-ndarray has no bf16 tensors: use flex or cuda, or f32)")]
    DtypeOnBackend {
        /// The dtype asked for.
        dtype: String,
        /// The backend.
        backend: String,
    },
    /// The config and the tensors disagree.
    #[error("`{path}`: config says {field} = {config}, but the tensors say {tensors}")]
    ConfigMismatch {
        /// The checkpoint (or its config file).
        path: PathBuf,
        /// The config field.
        field: String,
        /// The config's value.
        config: String,
        /// The value implied by the tensors.
        tensors: String,
    },
    /// The checkpoint names a dictionary class this crate does not implement.
    #[error(
        "`{path}`: unknown crosscoder class `{class}` (supported: CrossCoder, BatchTopKCrossCoder)"
    )]
    UnknownDictClass {
        /// The checkpoint or config.
        path: PathBuf,
        /// The class named in the config.
        class: String,
    },
    /// The checkpoint uses a code normalisation this crate does not implement (e.g. DECOUPLED).
    #[error(
        "`{path}`: unsupported code normalisation {name} (supported: CROSSCODER, SAE, MIXED, NONE)"
    )]
    UnsupportedCodeNormalization {
        /// The checkpoint.
        path: PathBuf,
        /// The name or numeric id found.
        name: String,
    },
    /// The checkpoint uses an option of the reference this crate does not implement.
    #[error("`{path}`: unsupported setting {setting}")]
    Unsupported {
        /// The checkpoint.
        path: PathBuf,
        /// The setting and its value.
        setting: String,
    },
    /// A weight is NaN or infinite.
    #[error("tensor `{key}` in `{path}` holds a non-finite value {value} at flat index {index}")]
    NonFiniteWeight {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// Activations read from a file hold NaN or an infinity (refused where they enter: a NaN would
    /// run through every statistic and come out as a NaN metric with exit status 0).
    #[error(
        "`activations` in `{path}` holds a non-finite value {value} at row {row}, model {model}, \
         dimension {dim}"
    )]
    NonFiniteActivation {
        /// The activations file.
        path: PathBuf,
        /// Row (token) of the first bad value.
        row: usize,
        /// Model index (0 base, 1 chat).
        model: usize,
        /// Dimension within the model's activation.
        dim: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// Nothing at this location looks like a crosscoder checkpoint.
    #[error("`{path}` is not a recognised crosscoder checkpoint: {reason}")]
    UnrecognizedFormat {
        /// What was given.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// Activations given to encode do not match the crosscoder.
    #[error(
        "activations have shape {actual:?}, expected [batch, n_models={n_models}, d={d_model}] for this crosscoder"
    )]
    ActivationShape {
        /// The crosscoder's model count.
        n_models: usize,
        /// The crosscoder's activation width.
        d_model: usize,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// Latents given to decode do not match the crosscoder.
    #[error("latents have shape {actual:?}, expected [batch, F={dict_size}]")]
    LatentShape {
        /// The crosscoder's dictionary size.
        dict_size: usize,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// A latent index is out of range.
    #[error("latent index {index} is out of range for a dictionary of {dict_size} latents")]
    LatentIndex {
        /// The index asked for.
        index: usize,
        /// The dictionary size.
        dict_size: usize,
    },
    /// A model index is out of range.
    #[error("model index {index} is out of range for a crosscoder over {n_models} models")]
    ModelIndex {
        /// The index asked for.
        index: usize,
        /// The crosscoder's model count.
        n_models: usize,
    },
    /// Scaling factors are malformed (wrong count, zero, negative or non-finite).
    #[error(
        "invalid scaling factors {factors:?} for a crosscoder over {n_models} models: {reason}"
    )]
    ScalingFactors {
        /// The factors given.
        factors: Vec<f32>,
        /// The crosscoder's model count.
        n_models: usize,
        /// What is wrong with them.
        reason: String,
    },
    /// Two normalisations were requested at once.
    #[error("{0}")]
    NormalizerConflict(String),
    /// Thresholds or options are inconsistent.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A hub repository could not be resolved.
    #[error("hub repository `{repo}`: {reason}")]
    Hub {
        /// The repository id (with subfolder, if any).
        repo: String,
        /// What went wrong (not cached in offline mode, download failure, no known layout).
        reason: String,
    },
    /// The compute backend returned data that could not be read back (an internal inconsistency).
    #[error("backend data error: {0}")]
    Device(String),
    /// The requested backend is unavailable.
    #[error(transparent)]
    Backend(#[from] stereo_core::BackendError),
    /// A training configuration is inconsistent.
    #[error("invalid training configuration: `{field}` {reason}")]
    TrainConfig {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A training batch does not fit the trainer, or the batch source failed.
    #[error("training step {step}: {reason}")]
    TrainingData {
        /// The step that needed the batch.
        step: usize,
        /// What went wrong.
        reason: String,
    },
    /// Training produced a non-finite loss or gradient; the parameters were left as they were.
    #[error("training diverged at step {step}: {what} is not finite (lower the learning rate or clip gradients)")]
    Diverged {
        /// The step.
        step: usize,
        /// Which quantity (loss part or gradient).
        what: String,
    },
    /// A trainer checkpoint is unreadable or disagrees with itself.
    #[error("trainer checkpoint `{path}`: {reason}")]
    TrainerCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A run was asked to resume on other training data than it started on.
    #[error("cannot resume: the checkpoint was trained with {field} = {checkpoint}, but the training data has {data}")]
    ResumeMismatch {
        /// What differs (`models[0]`, `hook`, `d_model`, ...).
        field: String,
        /// The checkpoint's value.
        checkpoint: String,
        /// The training data's value.
        data: String,
    },
    /// A checkpoint names a hook that is not a TransformerLens hook of ours.
    #[error("{path}: field `{field}` is `{name}`, not a hook name (hook_embed or blocks.{{layer}}.hook_*)")]
    UnknownHook {
        /// The config file.
        path: PathBuf,
        /// The field, as in the file.
        field: String,
        /// Its value.
        name: String,
    },
    /// A figure could not be drawn (names the file).
    #[error(transparent)]
    Figure(#[from] figures::FigureError),
}

/// The crate's result type.
pub type Result<T, E = CrosscoderError> = std::result::Result<T, E>;

impl CrosscoderError {
    /// The same error with a tensor key renamed from ours (`W_enc`) to the file's (`encoder.weight`):
    /// `keys` maps our names to the file's. Errors without a key are returned unchanged.
    pub fn with_file_keys(self, keys: &[(&str, String)]) -> Self {
        let rename = |key: String| {
            keys.iter()
                .find(|(ours, _)| *ours == key)
                .map_or(key, |(_, theirs)| theirs.clone())
        };
        match self {
            CrosscoderError::ShapeMismatch {
                path,
                key,
                expected,
                actual,
            } => CrosscoderError::ShapeMismatch {
                path,
                key: rename(key),
                expected,
                actual,
            },
            CrosscoderError::NonFiniteWeight {
                path,
                key,
                index,
                value,
            } => CrosscoderError::NonFiniteWeight {
                path,
                key: rename(key),
                index,
                value,
            },
            other => other,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CrosscoderError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        CrosscoderError::Json {
            path: path.into(),
            source,
        }
    }
}

impl From<stereo_core::atomic_file::FileError> for CrosscoderError {
    fn from(e: stereo_core::atomic_file::FileError) -> Self {
        CrosscoderError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
