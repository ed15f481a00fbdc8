//! `manifest.json`: what a store holds (models, hook, dtype, tokenisation, corpus), its completed
//! shards with their checksums, and the statistics aggregated over exactly those shards.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Result};
use crate::stats::ModelStatistics;
use gemma_model::HookPoint;
use model_pair::{ModelInfo, TokenizationMode};
use stereo_core::atomic_file::write_atomic;

/// Name of the manifest file in a store directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The `format` field of every manifest.
pub const STORE_FORMAT: &str = "stereo-activation-store";
/// The store format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// How activations are stored. Reading always returns f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 4 bytes per value, exact.
    #[default]
    F32,
    /// 2 bytes per value, rounded to nearest even (relative error below 2^-8).
    Bf16,
}

impl StoreDtype {
    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            StoreDtype::F32 => 4,
            StoreDtype::Bf16 => 2,
        }
    }

    /// The name used on command lines and in files (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            StoreDtype::F32 => "f32",
            StoreDtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StoreDtype {
    type Err = CacheError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(StoreDtype::F32),
            "bf16" | "bfloat16" => Ok(StoreDtype::Bf16),
            _ => Err(CacheError::InvalidInput {
                reason: format!("unknown store dtype `{s}`: expected f32 or bf16"),
            }),
        }
    }
}

/// The corpus a store was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusInfo {
    /// Where it was read from (informative; resuming compares the fingerprint, not the path).
    pub path: String,
    /// sha256 of the parsed documents (see [`crate::Corpus::fingerprint`]).
    pub fingerprint: String,
    /// Number of documents in the corpus.
    pub n_documents: usize,
}

/// What a completed shard holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the store directory, `shard-{index:05}.safetensors`.
    pub file: String,
    /// Number of rows (tokens).
    pub n_tokens: u64,
    /// Rows flagged `<bos>`.
    pub n_bos: u64,
    /// Rows flagged padding.
    pub n_pad: u64,
    /// Rows flagged chat template.
    pub n_template: u64,
    /// Corpus documents covered, `[start, end)`.
    pub documents: [usize; 2],
    /// File size in bytes.
    pub bytes: u64,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// The file name of shard `index`.
pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// The settings that define a store; a run may only resume a store made with equal settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Base (index 0) and chat (index 1).
    pub models: [ModelInfo; 2],
    /// The hook (`blocks.13.hook_resid_post`).
    pub hook: HookPoint,
    /// Width of the activations.
    pub d_model: usize,
    /// Storage dtype.
    pub dtype: StoreDtype,
    /// How documents were tokenized.
    pub tokenization: TokenizationMode,
    /// Documents are truncated to this many tokens (`<bos>` included).
    pub context_len: usize,
    /// A shard is closed once it holds at least this many tokens.
    pub shard_tokens: usize,
    /// The corpus.
    pub corpus: CorpusInfo,
}

/// The contents of `manifest.json`.
///
/// Everything in it describes the completed shards it lists, and nothing else: a shard file that
/// is not listed (a run killed between writing a shard and updating the manifest) is not part of
/// the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`STORE_FORMAT`].
    pub format: String,
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// Base (index 0) and chat (index 1).
    pub models: [ModelInfo; 2],
    /// The hook, stored under its TransformerLens name.
    pub hook: HookPoint,
    /// Width of the activations.
    pub d_model: usize,
    /// Storage dtype of `activations`.
    pub dtype: StoreDtype,
    /// How documents were tokenized (`raw` or `chat_template`).
    pub tokenization: TokenizationMode,
    /// Documents are truncated to this many tokens.
    pub context_len: usize,
    /// Target tokens per shard.
    pub shard_tokens: usize,
    /// The corpus.
    pub corpus: CorpusInfo,
    /// Rows stored, summed over `shards`.
    pub n_tokens: u64,
    /// Rows flagged `<bos>`, summed over `shards`.
    pub n_bos: u64,
    /// Rows flagged padding, summed over `shards`.
    pub n_pad: u64,
    /// Rows flagged chat template, summed over `shards`.
    pub n_template: u64,
    /// Corpus documents covered by `shards` (`0..n_documents`).
    pub n_documents: usize,
    /// Whether the whole corpus is stored.
    pub finished: bool,
    /// Completed shards, in order.
    pub shards: Vec<ShardEntry>,
    /// Per-model statistics over every listed shard, index 0 = base, 1 = chat.
    pub statistics: [ModelStatistics; 2],
}

impl Manifest {
    /// An empty store with `config`.
    pub fn new(config: &StoreConfig) -> Self {
        Manifest {
            format: STORE_FORMAT.into(),
            version: FORMAT_VERSION,
            models: config.models.clone(),
            hook: config.hook,
            d_model: config.d_model,
            dtype: config.dtype,
            tokenization: config.tokenization,
            context_len: config.context_len,
            shard_tokens: config.shard_tokens,
            corpus: config.corpus.clone(),
            n_tokens: 0,
            n_bos: 0,
            n_pad: 0,
            n_template: 0,
            n_documents: 0,
            finished: false,
            shards: Vec::new(),
            statistics: [
                ModelStatistics::new(config.d_model),
                ModelStatistics::new(config.d_model),
            ],
        }
    }

    /// The manifest path of store `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// Reads and checks `dir/manifest.json` (self-consistency only; the shards are checked by
    /// [`crate::ActivationStore::open`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::MissingManifest {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(CacheError::io(&path, e)),
        };
        Self::from_json(text.as_bytes(), &path)
    }

    /// Writes `dir/manifest.json` atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn save(&self, dir: &Path) -> Result<()> {
        Ok(write_atomic(&Self::path(dir), &self.to_json()?)?)
    }

    /// The bytes of `manifest.json` (pretty-printed JSON; the same manifest always gives the
    /// same bytes).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| CacheError::InvalidInput {
            reason: format!("the manifest cannot be serialized: {e}"),
        })
    }

    /// Parses and checks the text of a manifest read from `path` (for messages).
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| CacheError::ManifestJson {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Adds a committed shard: its entry, counts and statistics (merged in shard order, so the
    /// totals depend only on the shards).
    pub(crate) fn push_shard(&mut self, entry: ShardEntry, statistics: &[ModelStatistics; 2]) {
        self.n_tokens += entry.n_tokens;
        self.n_bos += entry.n_bos;
        self.n_pad += entry.n_pad;
        self.n_template += entry.n_template;
        self.n_documents = entry.documents[1];
        for (total, shard) in self.statistics.iter_mut().zip(statistics) {
            total.merge(shard);
        }
        self.shards.push(entry);
    }

    /// Per-model normalisation factors `sqrt(d_model) / mean ||x||` (the ckkissane recipe: a factor
    /// multiplies that model's activations before encoding), from the stored statistics. BOS rows
    /// are excluded unless `include_bos` (the replication included them; pass `true` for parity).
    /// A model with no counted row gets 1.
    pub fn normalization_factors(&self, include_bos: bool) -> [f32; 2] {
        [0, 1].map(|m| self.statistics[m].normalization_factor(include_bos))
    }

    /// Checks that the store (at `store`, for messages) was made from `models` (base, chat;
    /// compared with the model names) at `hook` with width `d_model`:
    /// [`CacheError::IncompatibleStore`] names what differs.
    pub fn check_compatible(
        &self,
        store: &Path,
        models: [&str; 2],
        hook: HookPoint,
        d_model: usize,
    ) -> Result<()> {
        let differ = |field: String, found: String, expected: String| {
            Err(CacheError::IncompatibleStore {
                dir: store.to_path_buf(),
                field,
                store: found,
                expected,
            })
        };
        for (m, name) in models.iter().enumerate() {
            if self.models[m].name != *name {
                return differ(
                    format!("models[{m}]"),
                    self.models[m].name.clone(),
                    name.to_string(),
                );
            }
        }
        if self.hook != hook {
            return differ("hook".into(), self.hook.to_string(), hook.to_string());
        }
        if self.d_model != d_model {
            return differ(
                "d_model".into(),
                self.d_model.to_string(),
                d_model.to_string(),
            );
        }
        Ok(())
    }

    /// The settings this store was made with.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            models: self.models.clone(),
            hook: self.hook,
            d_model: self.d_model,
            dtype: self.dtype,
            tokenization: self.tokenization,
            context_len: self.context_len,
            shard_tokens: self.shard_tokens,
            corpus: self.corpus.clone(),
        }
    }

    /// Checks that the manifest agrees with itself.
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, reason: String| CacheError::ManifestInconsistent {
            path: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        if self.format != STORE_FORMAT {
            return Err(bad(
                "format",
                format!("`{}`, expected `{STORE_FORMAT}`", self.format),
            ));
        }
        if self.version != FORMAT_VERSION {
            return Err(bad(
                "version",
                format!(
                    "{} is not supported (this build reads version {FORMAT_VERSION})",
                    self.version
                ),
            ));
        }
        if self.d_model == 0 {
            return Err(bad("d_model", "must be positive".into()));
        }
        let mut next_document = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            let field = format!("shards[{i}]");
            if shard.file != shard_file_name(i) {
                return Err(bad(
                    &format!("{field}.file"),
                    format!("`{}`, expected `{}`", shard.file, shard_file_name(i)),
                ));
            }
            let [start, end] = shard.documents;
            if start != next_document || end <= start {
                return Err(bad(
                    &format!("{field}.documents"),
                    format!("[{start}, {end}) does not continue at document {next_document}"),
                ));
            }
            if shard
                .n_bos
                .checked_add(shard.n_pad)
                .is_none_or(|flagged| flagged > shard.n_tokens)
            {
                return Err(bad(
                    &format!("{field}.n_bos"),
                    "more BOS and padding rows than rows".into(),
                ));
            }
            next_document = end;
        }
        // Sums of numbers read from the file: an overflow is a lie of the file, not a panic.
        let sum = |f: fn(&ShardEntry) -> u64| {
            self.shards
                .iter()
                .try_fold(0u64, |total, s| total.checked_add(f(s)))
        };
        for (field, total, shards) in [
            ("n_tokens", self.n_tokens, sum(|s| s.n_tokens)),
            ("n_bos", self.n_bos, sum(|s| s.n_bos)),
            ("n_pad", self.n_pad, sum(|s| s.n_pad)),
            ("n_template", self.n_template, sum(|s| s.n_template)),
        ] {
            let Some(shards) = shards else {
                return Err(bad(
                    field,
                    "the shards' counts overflow a 64-bit sum".into(),
                ));
            };
            if total != shards {
                return Err(bad(
                    field,
                    format!("{total}, but the shards sum to {shards}"),
                ));
            }
        }
        if self.n_documents != next_document {
            return Err(bad(
                "n_documents",
                format!(
                    "{}, but the shards cover documents 0..{next_document}",
                    self.n_documents
                ),
            ));
        }
        if self.n_documents > self.corpus.n_documents {
            return Err(bad(
                "n_documents",
                format!(
                    "{} exceeds the corpus' {} documents",
                    self.n_documents, self.corpus.n_documents
                ),
            ));
        }
        if self.finished && self.n_documents != self.corpus.n_documents {
            return Err(bad(
                "finished",
                format!(
                    "true, but only {} of {} documents are stored",
                    self.n_documents, self.corpus.n_documents
                ),
            ));
        }
        for (m, stats) in self.statistics.iter().enumerate() {
            let stored = self.n_tokens - self.n_pad;
            let without_bos = stored - self.n_bos;
            for (name, moments, expected) in [
                ("all", &stats.all, stored),
                ("without_bos", &stats.without_bos, without_bos),
            ] {
                let field = format!("statistics[{m}].{name}");
                if moments.count != expected {
                    return Err(bad(
                        &format!("{field}.count"),
                        format!(
                            "{}, but the shards hold {expected} such rows",
                            moments.count
                        ),
                    ));
                }
                if moments.sum.len() != self.d_model || moments.sum_sq.len() != self.d_model {
                    return Err(bad(
                        &field,
                        format!("the sums do not have d_model = {} entries", self.d_model),
                    ));
                }
            }
        }
        Ok(())
    }
}
