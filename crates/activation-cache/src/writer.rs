//! [`StoreWriter`]: appends shards to a store, atomically, and resumes an interrupted one.

use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use ndarray::ArrayView3;

use crate::error::{CacheError, Result};
use crate::manifest::{shard_file_name, Manifest, ShardEntry, StoreConfig, MANIFEST_FILE};
use crate::shard::write_shard;
use model_pair::{ForwardProgress, TokenMeta};
use stereo_core::atomic_file::{commit, sync_dir, tmp_path, TMP_SUFFIX};

/// What a caching run is doing; the run's callback sees each event and may stop the run by
/// returning [`ControlFlow::Break`], which leaves the store exactly as a kill at that moment would.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// The store is open: what it already holds and where this run starts.
    Started {
        /// Shards already committed.
        stored_shards: usize,
        /// Tokens already committed.
        stored_tokens: u64,
        /// First document this run will process.
        next_document: usize,
        /// Documents in the corpus.
        total_documents: usize,
    },
    /// A partitioned task has cut the corpus into shards: these are its own (sent before
    /// [`CacheEvent::Started`]).
    TaskPlanned {
        /// The task's shards, `[start, end)`.
        shards: Range<usize>,
        /// The task's documents, `[start, end)`.
        documents: Range<usize>,
        /// Shards of the whole store.
        total_shards: usize,
    },
    /// A forward batch finished for the group of shards starting at `first_shard` (a `Break`
    /// here stops the run once the group's forward pass ends, before anything is written).
    Forward {
        /// Index of the group's first shard.
        first_shard: usize,
        /// Tokens the group will add.
        group_tokens: usize,
        /// Which model, how many sequences of the group done.
        progress: ForwardProgress,
    },
    /// `shard-N.safetensors.tmp` is written and flushed, not yet renamed.
    ShardStaged {
        /// The shard index.
        shard: usize,
    },
    /// `shard-N.safetensors` is in place, the manifest does not list it yet.
    ShardWritten {
        /// The shard index.
        shard: usize,
    },
    /// The manifest lists shard `N`: its tokens are part of the store.
    ShardCommitted {
        /// The shard index.
        shard: usize,
        /// Tokens in this shard.
        n_tokens: u64,
        /// Tokens in the store now.
        stored_tokens: u64,
        /// Documents covered now.
        documents_done: usize,
    },
    /// The run is over (the corpus is stored, or `max_tokens` reached).
    Finished {
        /// Tokens in the store.
        stored_tokens: u64,
        /// Whether the whole corpus is stored.
        corpus_done: bool,
    },
}

/// Sends `event` to `on_event`; a `Break` becomes [`CacheError::Interrupted`].
pub(crate) fn emit(
    on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()>,
    event: CacheEvent,
    stage: impl FnOnce() -> String,
) -> Result<()> {
    match on_event(&event) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(CacheError::Interrupted { stage: stage() }),
    }
}

/// Appends shards to a store directory.
///
/// Committing shard `N` is three steps, each leaving a readable store behind if the process dies
/// right after it:
/// 1. write `shard-N.safetensors.tmp` and flush it to disk (staged; readers ignore `.tmp` files);
/// 2. rename it to `shard-N.safetensors` and flush the directory (written, but not yet listed:
///    readers ignore unlisted shards);
/// 3. rewrite `manifest.json` atomically with shard `N`, its checksum, and the statistics merged in
///    (committed).
///
/// Resuming deletes every `.tmp` file and every shard file the manifest does not list, then
/// continues at the first document the manifest does not cover. Shards hold whole documents, so no
/// token is stored twice or lost; and since shard boundaries do not depend on where a run was
/// interrupted, a resumed store is bit-identical to an uninterrupted one on a deterministic backend.
///
/// There is no lock: two runs must not write the same directory at the same time.
#[derive(Debug)]
pub struct StoreWriter {
    dir: PathBuf,
    manifest: Manifest,
}

impl StoreWriter {
    /// Creates a store in `dir` (writing an empty manifest), or reopens the store there for
    /// appending if its settings equal `config` ([`CacheError::ResumeMismatch`] otherwise).
    ///
    /// Reopening deletes stale `.tmp` files and shard files the manifest does not list (work of a
    /// killed run that was never committed), and checks that every listed shard exists with its
    /// recorded size.
    pub fn create_or_resume(dir: impl AsRef<Path>, config: &StoreConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;
        let manifest = if Manifest::path(&dir).exists() {
            let manifest = Manifest::load(&dir)?;
            check_resume(&dir, &manifest.config(), config)?;
            manifest
        } else {
            let manifest = Manifest::new(config);
            manifest.save(&dir)?;
            manifest
        };
        remove_stale(&dir, &manifest)?;
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            let actual = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CacheError::MissingShard { shard: path })
                }
                Err(e) => return Err(CacheError::io(&path, e)),
            };
            if actual != entry.bytes {
                return Err(CacheError::ShardSize {
                    shard: path,
                    expected: entry.bytes,
                    actual,
                });
            }
        }
        Ok(StoreWriter { dir, manifest })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as committed so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes the next shard and commits it (see [`StoreWriter`] for the steps).
    ///
    /// `activations` is `[n, 2, d_model]`, `tokens` its `n` rows' metadata, `documents` the corpus
    /// documents they come from, which must start where the store ends. `on_event` sees
    /// [`CacheEvent::ShardStaged`], [`CacheEvent::ShardWritten`] and [`CacheEvent::ShardCommitted`].
    pub fn commit_shard(
        &mut self,
        activations: ArrayView3<f32>,
        tokens: &[TokenMeta],
        documents: Range<usize>,
        on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()>,
    ) -> Result<&ShardEntry> {
        let m = &self.manifest;
        if documents.start != m.n_documents
            || documents.end <= documents.start
            || documents.end > m.corpus.n_documents
        {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "shard documents {documents:?} must be non-empty, start at {} and end by {}",
                    m.n_documents, m.corpus.n_documents
                ),
            });
        }
        if let Some(t) = tokens.iter().find(|t| !documents.contains(&t.prompt)) {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "a row of document {} is outside the shard's documents {documents:?}",
                    t.prompt
                ),
            });
        }
        if activations.dim().2 != m.d_model {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "activations have width {}, the store {}",
                    activations.dim().2,
                    m.d_model
                ),
            });
        }
        check_finite(activations, tokens, &m.config())?;
        let index = m.shards.len();
        let file = shard_file_name(index);
        let path = self.dir.join(&file);
        let tmp = tmp_path(&path);
        let written = write_shard(
            &tmp,
            activations,
            tokens,
            [documents.start, documents.end],
            m.dtype,
        )?;
        emit(on_event, CacheEvent::ShardStaged { shard: index }, || {
            format!("after staging shard {index}")
        })?;
        commit(&tmp, &path)?;
        emit(on_event, CacheEvent::ShardWritten { shard: index }, || {
            format!("after writing shard {index}, before the manifest lists it")
        })?;

        let mut next = self.manifest.clone();
        let entry = ShardEntry {
            file,
            ..written.entry
        };
        next.push_shard(entry, &written.statistics);
        next.save(&self.dir)?;
        self.manifest = next;
        let m = &self.manifest;
        let n_tokens = m.shards[index].n_tokens;
        emit(
            on_event,
            CacheEvent::ShardCommitted {
                shard: index,
                n_tokens,
                stored_tokens: m.n_tokens,
                documents_done: m.n_documents,
            },
            || format!("after committing shard {index}"),
        )?;
        Ok(&self.manifest.shards[index])
    }

    /// Marks the store finished (the whole corpus is stored).
    pub fn finish(&mut self) -> Result<()> {
        if self.manifest.n_documents != self.manifest.corpus.n_documents {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "the store covers {} of the corpus' {} documents",
                    self.manifest.n_documents, self.manifest.corpus.n_documents
                ),
            });
        }
        if !self.manifest.finished {
            self.manifest.finished = true;
            self.manifest.save(&self.dir)?;
        }
        Ok(())
    }
}

/// Refuses activations with a NaN or an infinity, naming the model, document and position: checked
/// before anything is written, so a NaN never reaches the shards or the statistics.
pub(crate) fn check_finite(
    activations: ArrayView3<f32>,
    tokens: &[TokenMeta],
    config: &StoreConfig,
) -> Result<()> {
    for (row, pair) in activations.outer_iter().enumerate() {
        for (model, values) in pair.outer_iter().enumerate() {
            if let Some(value) = values.iter().find(|v| !v.is_finite()) {
                let token = tokens.get(row);
                return Err(CacheError::NonFiniteActivation {
                    model: config.models[model].name.clone(),
                    index: model,
                    hook: config.hook.to_string(),
                    document: token.map_or(0, |t| t.prompt),
                    position: token.map_or(row, |t| t.position),
                    value: *value,
                });
            }
        }
    }
    Ok(())
}

/// Refuses to resume a store made with other settings.
fn check_resume(dir: &Path, store: &StoreConfig, run: &StoreConfig) -> Result<()> {
    match config_difference(store, run) {
        None => Ok(()),
        Some((field, store, requested)) => Err(CacheError::ResumeMismatch {
            dir: dir.to_path_buf(),
            field,
            store,
            requested,
        }),
    }
}

/// The first setting on which `store` and `run` differ: `(field, store value, run value)`.
pub(crate) fn config_difference(
    store: &StoreConfig,
    run: &StoreConfig,
) -> Option<(String, String, String)> {
    for m in 0..2 {
        if store.models[m] != run.models[m] {
            return Some((
                format!("models[{m}]"),
                format!("{:?}", store.models[m]),
                format!("{:?}", run.models[m]),
            ));
        }
    }
    let fields: [(&str, String, String); 7] = [
        ("hook", store.hook.to_string(), run.hook.to_string()),
        (
            "d_model",
            store.d_model.to_string(),
            run.d_model.to_string(),
        ),
        ("dtype", store.dtype.to_string(), run.dtype.to_string()),
        (
            "tokenization",
            format!("{:?}", store.tokenization),
            format!("{:?}", run.tokenization),
        ),
        (
            "context_len",
            store.context_len.to_string(),
            run.context_len.to_string(),
        ),
        (
            "shard_tokens",
            store.shard_tokens.to_string(),
            run.shard_tokens.to_string(),
        ),
        (
            "corpus.fingerprint",
            store.corpus.fingerprint.clone(),
            run.corpus.fingerprint.clone(),
        ),
    ];
    fields
        .into_iter()
        .find(|(_, s, r)| s != r)
        .map(|(field, s, r)| (field.to_string(), s, r))
}

/// Deletes the store's `.tmp` files and the shard files that `manifest` does not list.
fn remove_stale(dir: &Path, manifest: &Manifest) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = |n: &str| {
            n == MANIFEST_FILE || (n.starts_with("shard-") && n.ends_with(".safetensors"))
        };
        let stale = match name.strip_suffix(TMP_SUFFIX) {
            Some(base) => ours(base),
            None => {
                ours(&name)
                    && name != MANIFEST_FILE
                    && !manifest.shards.iter().any(|s| s.file == name)
            }
        };
        if stale {
            tracing::warn!(file = %entry.path().display(), "removing uncommitted file of an interrupted run");
            std::fs::remove_file(entry.path()).map_err(|e| CacheError::io(entry.path(), e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}
