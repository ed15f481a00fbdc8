//! The crate's one error type. Every variant carries the evidence a user needs: the file, the key,
//! the field, the expected and the actual value.

use std::path::PathBuf;

/// Everything that can go wrong when loading or running a Gemma-2 model.
#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path} is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// `config.json` describes a model this crate does not implement.
    #[error("{path}: unsupported architecture `{found}` (this crate implements Gemma-2: model_type `gemma2`, Gemma2ForCausalLM)")]
    UnsupportedArchitecture {
        /// The config file.
        path: PathBuf,
        /// What the config names.
        found: String,
    },
    /// A required field is missing from `config.json`.
    #[error("{path}: required field `{field}` is missing")]
    MissingConfigField {
        /// The config file.
        path: PathBuf,
        /// The missing field (for nested fields, a dotted path).
        field: String,
    },
    /// A field of `config.json` has a value this crate cannot use.
    #[error("{path}: field `{field}` = {value} is invalid: {reason}")]
    InvalidConfigField {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// Its value, as written.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A safetensors file is malformed, truncated or corrupt.
    #[error("{path}: corrupt or truncated safetensors file: {reason}")]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is in no weight file.
    #[error("tensor `{key}` is missing from the checkpoint ({location})")]
    MissingTensor {
        /// The dotted HF tensor name.
        key: String,
        /// Where it was looked for.
        location: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("{path}: tensor `{key}` has shape {actual:?}, expected {expected:?} from config.json")]
    TensorShape {
        /// The file holding the tensor.
        path: PathBuf,
        /// The dotted HF tensor name.
        key: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape in the file.
        actual: Vec<usize>,
    },
    /// A tensor is stored in a dtype this loader does not read.
    #[error("{path}: tensor `{key}` has dtype {dtype}; supported are F32, BF16 and F16")]
    TensorDtype {
        /// The file holding the tensor.
        path: PathBuf,
        /// The dotted HF tensor name.
        key: String,
        /// The stored dtype.
        dtype: String,
    },
    /// A weight contains NaN or infinity.
    #[error("{path}: tensor `{key}` contains non-finite values")]
    NonFiniteWeights {
        /// The file holding the tensor.
        path: PathBuf,
        /// The dotted HF tensor name.
        key: String,
    },
    /// The hub could not provide a file (gated repo without token, not cached offline, not found).
    #[error(transparent)]
    Hub(#[from] stereo_core::hub::HubError),
    /// The tokenizer could not be loaded or used.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A chat conversation cannot be rendered with the Gemma template.
    #[error("invalid chat conversation: {reason}")]
    ChatTemplate {
        /// What is wrong with it.
        reason: String,
    },
    /// A hook name could not be parsed.
    #[error("unknown hook `{name}`: expected `hook_embed` or `blocks.{{layer}}.hook_{{resid_pre|attn_out|resid_mid|mlp_out|resid_post}}`")]
    UnknownHook {
        /// The name given.
        name: String,
    },
    /// A hook or layer beyond the model.
    #[error("`{hook}` needs layer {layer}, but the model has {n_layers} layers (0..={last})", last = n_layers.saturating_sub(1))]
    HookOutOfRange {
        /// The hook.
        hook: String,
        /// The layer it needs.
        layer: usize,
        /// Layers in the model.
        n_layers: usize,
    },
    /// A run asks for something the model was loaded without.
    #[error("the run needs {what}, but the model was loaded with only {loaded}: load it with a later `stop_at_layer` (or without one)")]
    NotLoaded {
        /// What the run needs.
        what: String,
        /// What was loaded.
        loaded: String,
    },
    /// A sequence is longer than the model's positions (`max_position_embeddings` in `config.json`).
    #[error(
        "{what} is {tokens} tokens long, more than the model's max_position_embeddings ({max}); \
         shorten it or truncate it (for example --context-len {max})"
    )]
    SequenceTooLong {
        /// What is too long: "the batch", "a decoding session (prompt + new tokens)".
        what: String,
        /// Its length in tokens.
        tokens: usize,
        /// The model's limit.
        max: usize,
    },
    /// The input tokens are unusable.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The backend returned data that cannot be read back to the host (a device failure).
    #[error("the backend returned {reason}")]
    DeviceData {
        /// What was wrong with it.
        reason: String,
    },
    /// An intervention returned an activation of the wrong shape.
    #[error(
        "intervention on `{hook}` changed the activation shape from {expected:?} to {actual:?}"
    )]
    InterventionShape {
        /// The hook.
        hook: String,
        /// The shape given to the intervention.
        expected: Vec<usize>,
        /// The shape it returned.
        actual: Vec<usize>,
    },
    /// The requested backend is not available.
    #[error(transparent)]
    Backend(#[from] stereo_core::BackendError),
    /// The requested compute dtype is not supported by the backend.
    #[error("compute dtype {dtype} is not supported on backend `{backend}` (use f32; bf16 compute needs a backend with bf16 kernels)")]
    UnsupportedDtype {
        /// The dtype requested.
        dtype: String,
        /// The backend.
        backend: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = GemmaError> = std::result::Result<T, E>;

impl From<stereo_core::UnknownDtype> for GemmaError {
    fn from(e: stereo_core::UnknownDtype) -> Self {
        GemmaError::InvalidInput {
            reason: e.to_string(),
        }
    }
}

impl From<stereo_core::hook::UnknownHook> for GemmaError {
    fn from(e: stereo_core::hook::UnknownHook) -> Self {
        GemmaError::UnknownHook { name: e.name }
    }
}

impl GemmaError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GemmaError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a serde_json error with the path it concerns.
    pub(crate) fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> Self {
        GemmaError::Json {
            path: path.into(),
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }
}
