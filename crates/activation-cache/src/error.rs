//! The crate's one error type. Every variant carries its evidence: the file, the shard, the field,
//! the expected and the actual value.

use std::path::PathBuf;

/// Everything that can go wrong with the activation store (and, wrapped, with the model pair feeding it).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The model pair failed (loading, tokenizing, running, or the two cannot be paired).
    #[error(transparent)]
    Pair(#[from] model_pair::PairError),
    /// The input is unusable.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a corpus file is unusable.
    #[error("{path}:{line}: {reason}")]
    CorpusLine {
        /// The corpus file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A corpus file as a whole is unusable (unknown extension, no document).
    #[error("corpus {path}: {reason}")]
    CorpusFormat {
        /// The corpus file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds no `manifest.json`: it is not an activation store.
    #[error("{dir} is not an activation store: it has no manifest.json")]
    MissingManifest {
        /// The directory.
        dir: PathBuf,
    },
    /// `manifest.json` is not valid JSON or lacks a field.
    #[error("{path} is not a valid store manifest (line {line}, column {column}): {message}")]
    ManifestJson {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// `manifest.json` parses but contradicts itself (totals that are not the sum of the shards,
    /// a gap in the document ranges, an unknown format version).
    #[error("{path}: field `{field}` is inconsistent: {reason}")]
    ManifestInconsistent {
        /// The manifest file.
        path: PathBuf,
        /// The field (dotted path, e.g. `shards[3].documents`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A shard listed in the manifest does not exist.
    #[error("shard {shard} is listed in the manifest but missing")]
    MissingShard {
        /// The shard file.
        shard: PathBuf,
    },
    /// A shard's size differs from the manifest's (a truncated or overwritten file).
    #[error(
        "shard {shard} has {actual} bytes, the manifest says {expected} (truncated or replaced)"
    )]
    ShardSize {
        /// The shard file.
        shard: PathBuf,
        /// Size recorded in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A shard's sha256 differs from the manifest's (a corrupted file).
    #[error("shard {shard} is corrupt: sha256 {actual}, the manifest says {expected}")]
    ChecksumMismatch {
        /// The shard file.
        shard: PathBuf,
        /// Checksum recorded in the manifest.
        expected: String,
        /// Checksum of the file on disk.
        actual: String,
    },
    /// A shard cannot be parsed or lacks a tensor of the store format.
    #[error("shard {shard} is corrupt: {reason}")]
    CorruptShard {
        /// The shard file.
        shard: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A shard's content disagrees with what the manifest says about it.
    #[error("shard {shard} disagrees with the manifest on `{field}`: manifest {manifest}, shard {shard_value}")]
    ShardMismatch {
        /// The shard file.
        shard: PathBuf,
        /// What differs (`n_tokens`, `documents`, `d_model`, `dtype`, `statistics`, ...).
        field: String,
        /// The manifest's value.
        manifest: String,
        /// The shard's value.
        shard_value: String,
    },
    /// The store was made with other models, another hook or another width than the consumer's.
    #[error(
        "the store {dir} is incompatible: it has {field} = {store}, but {expected} was expected"
    )]
    IncompatibleStore {
        /// The store directory.
        dir: PathBuf,
        /// What differs (`models[0]`, `models[1]`, `hook`, `d_model`).
        field: String,
        /// The store's value.
        store: String,
        /// The consumer's value.
        expected: String,
    },
    /// An existing store cannot be resumed with these settings (another corpus, models, hook...).
    #[error("cannot resume the store {dir}: it was made with {field} = {store}, this run asks for {requested}")]
    ResumeMismatch {
        /// The store directory.
        dir: PathBuf,
        /// The setting that differs.
        field: String,
        /// The store's value.
        store: String,
        /// This run's value.
        requested: String,
    },
    /// A model produced a NaN or an infinity: nothing of the batch is written (the store stays as it
    /// was, readable and resumable), and the error names where it came from.
    #[error(
        "{model} (model {index}) produced a non-finite activation {value} at {hook}, document {document}, \
         position {position}: the store is left as it was before this shard"
    )]
    NonFiniteActivation {
        /// The model's name.
        model: String,
        /// 0 base, 1 chat.
        index: usize,
        /// The hook.
        hook: String,
        /// The corpus document.
        document: usize,
        /// The token position in it.
        position: usize,
        /// The value.
        value: f32,
    },
    /// A shard holds a NaN or an infinity.
    #[error(
        "{} holds a non-finite activation {value} at row {row} (model {model}, document {document}, position {position})",
        shard.display()
    )]
    NonFiniteInStore {
        /// The shard file.
        shard: PathBuf,
        /// The row in the shard.
        row: usize,
        /// 0 base, 1 chat.
        model: usize,
        /// The corpus document of the row.
        document: usize,
        /// Its token position.
        position: usize,
        /// The value.
        value: f32,
    },
    /// The run was stopped by its event callback; the store is left exactly as a kill at that
    /// moment would leave it (readable, and resumable by the next run).
    #[error("the caching run was interrupted {stage}")]
    Interrupted {
        /// Where it stopped, e.g. `after staging shard 3`.
        stage: String,
    },
    /// A file of a foreign activation cache (`dictionary_learning`'s `cache.py`) is not what that
    /// code writes, or two caches do not pair.
    #[error("{path}: {reason}")]
    ForeignCache {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request to the store's storage failed (after the client's retries, for object storage).
    #[error("{operation} {location}/{key} failed: {message}")]
    Storage {
        /// The store location (directory or URL).
        location: String,
        /// `get`, `get_range`, `head`, `put`, `list` or `delete`.
        operation: String,
        /// The object's key inside the store.
        key: String,
        /// What the storage said.
        message: String,
    },
    /// An object a task was about to write is already there with other contents: another
    /// corpus, model pair or settings wrote this prefix, or the object is corrupt. The task does
    /// not touch it.
    #[error("{object} is not the shard this task writes (foreign or corrupt object): {reason}; delete it or use another --out")]
    ForeignObject {
        /// `location/key` of the object.
        object: String,
        /// What differs.
        reason: String,
    },
    /// A partitioned store cannot be finalized: a task has not finished.
    #[error("{store}: task {task} of {num_tasks} is not done: {reason}")]
    TaskNotDone {
        /// The store location.
        store: String,
        /// The task index (0-based).
        task: usize,
        /// Number of tasks.
        num_tasks: usize,
        /// What is missing.
        reason: String,
    },
    /// The task files of a partitioned store disagree with each other or with this run.
    #[error("{object}: {reason}")]
    TaskMismatch {
        /// `location/key` of the task file.
        object: String,
        /// What disagrees.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

impl CacheError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`CacheError::CorruptShard`].
    pub(crate) fn corrupt(shard: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        CacheError::CorruptShard {
            shard: shard.into(),
            reason: reason.into(),
        }
    }
}

impl From<stereo_core::atomic_file::FileError> for CacheError {
    fn from(e: stereo_core::atomic_file::FileError) -> Self {
        CacheError::Io {
            path: e.path,
            source: e.source,
        }
    }
}
