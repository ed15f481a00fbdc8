//! Caching as an embarrassingly parallel job: the corpus' shards split into `N` tasks, each task
//! writing its own shards, task manifest and done marker, in any order, on any machine
//! ([`cache_task`]); [`crate::finalize_store`] then writes the store manifest.
//!
//! Layout under the store location (the shards have the same names and bytes as a one-process
//! run's):
//!
//! | key | written by | what |
//! |---|---|---|
//! | `shard-NNNNN.safetensors` | the task owning shard `N` | the shard, created only if absent |
//! | `tasks/task-IIIII-of-NNNNN.json` | task `I` | [`TaskManifest`]: settings, shard range, committed shards |
//! | `tasks/task-IIIII-of-NNNNN.done` | task `I`, last | the done marker |
//! | `manifest.json` | finalize | the store manifest, as a one-process run writes it |

use std::ops::{ControlFlow, Range};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cache::{check_options, forward, store_config, CacheOptions};
use crate::corpus::Corpus;
use crate::error::{CacheError, Result};
use crate::manifest::{shard_file_name, ShardEntry, StoreConfig};
use crate::object_storage::{PendingPut, PutOutcome, StoreLocation};
use crate::plan::{shard_ranges, PlannedShard};
use crate::shard::{encode_shard, sha256_hex};
use crate::writer::{check_finite, config_difference, emit, CacheEvent};
use model_pair::PairedSource;

/// The `format` field of every task manifest.
pub const TASK_FORMAT: &str = "stereo-activation-task";
/// The task manifest version this crate writes and reads.
pub const TASK_VERSION: u32 = 1;
/// The folder of task manifests and done markers inside a store.
pub const TASKS_DIR: &str = "tasks";

/// One task of a partitioned caching job: task `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPartition {
    /// This task, `0..count`.
    pub index: usize,
    /// Number of tasks.
    pub count: usize,
}

impl TaskPartition {
    /// Task `index` of `count`, checked.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(CacheError::InvalidInput {
                reason: format!("task index {index} is not in 0..{count} (the number of tasks)"),
            });
        }
        Ok(TaskPartition { index, count })
    }

    /// The task of this process, from the command line and the environment of a job array.
    ///
    /// - `--task-index I --num-tasks N`: task `I` of `N`;
    /// - `--num-tasks N` alone: the index from `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job)
    ///   or `SLURM_ARRAY_TASK_ID` (minus `SLURM_ARRAY_TASK_MIN`, so `--array=1-4` works too);
    /// - neither: a Slurm array (`SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`) if there is
    ///   one, else `None` (one process caches everything).
    ///
    /// `env` reads a variable (`|name| std::env::var(name).ok()` in a program).
    pub fn resolve(
        index: Option<usize>,
        count: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(value) => {
                    value
                        .trim()
                        .parse()
                        .map(Some)
                        .map_err(|_| CacheError::InvalidInput {
                            reason: format!("{name}={value:?} is not a non-negative integer"),
                        })
                }
            }
        };
        let slurm_index = || -> Result<Option<usize>> {
            let Some(id) = number("SLURM_ARRAY_TASK_ID")? else {
                return Ok(None);
            };
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            id.checked_sub(min)
                .map(Some)
                .ok_or_else(|| CacheError::InvalidInput {
                    reason: format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"),
                })
        };
        let slurm_count = number("SLURM_ARRAY_TASK_COUNT")?;
        match (index, count) {
            (Some(index), Some(count)) => Self::new(index, count).map(Some),
            (Some(index), None) => Err(CacheError::InvalidInput {
                reason: format!("--task-index {index} needs --num-tasks"),
            }),
            (None, Some(count)) => {
                if let Some(slurm) = slurm_count.filter(|&n| n != count) {
                    return Err(CacheError::InvalidInput {
                        reason: format!(
                            "--num-tasks {count} disagrees with SLURM_ARRAY_TASK_COUNT={slurm}"
                        ),
                    });
                }
                let index = match number("JOB_COMPLETION_INDEX")? {
                    Some(index) => index,
                    None => slurm_index()?.ok_or_else(|| CacheError::InvalidInput {
                        reason: format!(
                            "--num-tasks {count} without --task-index needs JOB_COMPLETION_INDEX \
                             (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm job array)"
                        ),
                    })?,
                };
                Self::new(index, count).map(Some)
            }
            (None, None) => match (slurm_index()?, slurm_count) {
                (Some(index), Some(count)) => Self::new(index, count).map(Some),
                _ => Ok(None),
            },
        }
    }

    /// The shards of this task among `n_shards`: a contiguous block, the blocks as equal as
    /// whole shards allow (a task may get none when there are more tasks than shards).
    pub fn shards(&self, n_shards: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * n_shards as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// The key of this task's manifest, `tasks/task-IIIII-of-NNNNN.json`.
    pub fn manifest_key(&self) -> String {
        format!("{TASKS_DIR}/{}.json", self.stem())
    }

    /// The key of this task's done marker, `tasks/task-IIIII-of-NNNNN.done`.
    pub fn done_key(&self) -> String {
        format!("{TASKS_DIR}/{}.done", self.stem())
    }

    fn stem(&self) -> String {
        format!("task-{:05}-of-{:05}", self.index, self.count)
    }
}

/// A task's manifest: what it was asked to cache and which of its shards are committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManifest {
    /// Always [`TASK_FORMAT`].
    pub format: String,
    /// [`TASK_VERSION`].
    pub version: u32,
    /// This task's index.
    pub task: usize,
    /// Number of tasks.
    pub num_tasks: usize,
    /// The store settings (equal across the tasks of a store).
    pub config: StoreConfig,
    /// Shards of the whole store.
    pub total_shards: usize,
    /// This task's shards, `[start, end)`.
    pub shard_range: [usize; 2],
    /// This task's documents, `[start, end)`.
    pub documents: [usize; 2],
    /// Committed shards, in order from `shard_range[0]`.
    pub shards: Vec<ShardEntry>,
    /// Whether every shard of the task is committed.
    pub finished: bool,
}

impl TaskManifest {
    /// Parses the task manifest at `key` (bytes read from `location`).
    pub fn parse(location: &StoreLocation, key: &str, bytes: &[u8]) -> Result<Self> {
        let object = location.describe(key);
        let manifest: TaskManifest =
            serde_json::from_slice(bytes).map_err(|e| CacheError::TaskMismatch {
                object: object.clone(),
                reason: format!("not a task manifest: {e}"),
            })?;
        if manifest.format != TASK_FORMAT || manifest.version != TASK_VERSION {
            return Err(CacheError::TaskMismatch {
                object,
                reason: format!(
                    "format {} version {}, expected {TASK_FORMAT} version {TASK_VERSION}",
                    manifest.format, manifest.version
                ),
            });
        }
        let [start, end] = manifest.shard_range;
        if start > end || end > manifest.total_shards || manifest.shards.len() > end - start {
            return Err(CacheError::TaskMismatch {
                object,
                reason: format!(
                    "shard range [{start}, {end}) of {} with {} committed is inconsistent",
                    manifest.total_shards,
                    manifest.shards.len()
                ),
            });
        }
        Ok(manifest)
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a task manifest always serializes")
    }
}

/// What a [`cache_task`] run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    /// The task.
    pub task: TaskPartition,
    /// Its shards.
    pub shards: Range<usize>,
    /// Its documents.
    pub documents: Range<usize>,
    /// Shards this run added.
    pub new_shards: usize,
    /// Tokens this run added.
    pub new_tokens: u64,
    /// Whether the task was already done (the run did nothing).
    pub already_done: bool,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Caches task `task` of a partitioned job into the store at `location`.
///
/// Every task tokenizes the whole corpus to cut it into shards exactly as [`crate::cache_corpus`]
/// would, then computes its own block of shards ([`TaskPartition::shards`]). A shard is uploaded
/// with a conditional put (created only if absent) while the next one is computed, and committed
/// to the task manifest once the upload is done; an object already at a shard's key is accepted
/// only if its bytes are exactly the shard's ([`CacheError::ForeignObject`] otherwise). When all
/// its shards are committed the task writes its done marker. A rerun of a done task does nothing;
/// a rerun of a killed task continues after its last committed shard and gives the same bytes on a
/// deterministic backend. `options.max_tokens` must be `None`.
pub fn cache_task(
    source: &dyn PairedSource,
    corpus: &Corpus,
    location: &StoreLocation,
    options: &CacheOptions,
    task: TaskPartition,
    mut on_event: impl FnMut(&CacheEvent) -> ControlFlow<()>,
) -> Result<TaskSummary> {
    let start = Instant::now();
    let on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()> = &mut on_event;
    check_options(corpus, options)?;
    if let Some(max) = options.max_tokens {
        return Err(CacheError::InvalidInput {
            reason: format!(
                "max_tokens ({max}) cannot be combined with tasks: a partitioned job caches the whole corpus"
            ),
        });
    }
    let config = store_config(source, corpus, options);
    let key = task.manifest_key();
    let existing = match location.get_optional(&key)? {
        Some(bytes) => Some(TaskManifest::parse(location, &key, &bytes)?),
        None => None,
    };
    if let Some(done) = &existing {
        check_same_task(location, &key, done, &config, task)?;
        if location.size(&task.done_key())?.is_some() && done.finished {
            return Ok(TaskSummary {
                task,
                shards: done.shard_range[0]..done.shard_range[1],
                documents: done.documents[0]..done.documents[1],
                new_shards: 0,
                new_tokens: 0,
                already_done: true,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
    }
    let ranges = shard_ranges(source, corpus, options)?;
    let shards = task.shards(ranges.len());
    let documents = match (ranges.get(shards.start), shards.is_empty()) {
        (Some(first), false) => first.start..ranges[shards.end - 1].end,
        _ => 0..0,
    };
    let plan = TaskPlan {
        task,
        shards: shards.clone(),
        documents: documents.clone(),
        total_shards: ranges.len(),
    };
    let mut manifest = continue_or_start(location, &key, existing, config, &plan)?;
    let resume_at = shards.start + manifest.shards.len();
    emit(
        on_event,
        CacheEvent::TaskPlanned {
            shards: shards.clone(),
            documents: documents.clone(),
            total_shards: ranges.len(),
        },
        || "after planning".into(),
    )?;
    emit(
        on_event,
        CacheEvent::Started {
            stored_shards: manifest.shards.len(),
            stored_tokens: manifest.shards.iter().map(|s| s.n_tokens).sum(),
            next_document: ranges.get(resume_at).map_or(documents.end, |r| r.start),
            total_documents: corpus.len(),
        },
        || "at the start".into(),
    )?;
    let mut new_tokens = 0;
    let mut pending: Option<(PendingPut, ShardEntry)> = None;
    for (index, range) in ranges.iter().enumerate().take(shards.end).skip(resume_at) {
        let planned = PlannedShard::of_documents(source, corpus, options, range.clone())?;
        let activations = forward(source, &planned.sequences, index, on_event)?;
        check_finite(activations.view(), &planned.tokens, &manifest.config)?;
        let file = shard_file_name(index);
        let encoded = encode_shard(
            std::path::Path::new(&file),
            activations.view(),
            &planned.tokens,
            [planned.documents.start, planned.documents.end],
            manifest.config.dtype,
        )?;
        if let Some((upload, entry)) = pending.take() {
            new_tokens += commit(location, &key, &mut manifest, upload, entry, on_event)?;
        }
        let entry = ShardEntry {
            file: file.clone(),
            ..encoded.entry
        };
        emit(on_event, CacheEvent::ShardStaged { shard: index }, || {
            format!("after encoding shard {index}")
        })?;
        pending = Some((
            location.put_if_absent_background(&file, Bytes::from(encoded.bytes)),
            entry,
        ));
    }
    if let Some((upload, entry)) = pending.take() {
        new_tokens += commit(location, &key, &mut manifest, upload, entry, on_event)?;
    }
    manifest.finished = true;
    location.put(&key, manifest.to_json())?;
    let marker = serde_json::json!({
        "task": task.index,
        "num_tasks": task.count,
        "shards": manifest.shard_range,
        "task_manifest_sha256": sha256_hex(&manifest.to_json()),
    });
    location.put(&task.done_key(), marker.to_string().into_bytes())?;
    let stored_tokens = manifest.shards.iter().map(|s| s.n_tokens).sum();
    emit(
        on_event,
        CacheEvent::Finished {
            stored_tokens,
            corpus_done: true,
        },
        || "at the end".into(),
    )?;
    Ok(TaskSummary {
        task,
        shards,
        documents,
        new_shards: manifest.shards.len() - (resume_at - manifest.shard_range[0]),
        new_tokens,
        already_done: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What a task is to cache.
struct TaskPlan {
    task: TaskPartition,
    shards: Range<usize>,
    documents: Range<usize>,
    total_shards: usize,
}

/// The task manifest to continue (checked against `plan`), or a new one, written at `key`.
fn continue_or_start(
    location: &StoreLocation,
    key: &str,
    existing: Option<TaskManifest>,
    config: StoreConfig,
    plan: &TaskPlan,
) -> Result<TaskManifest> {
    let TaskPlan {
        task,
        shards,
        documents,
        total_shards,
    } = plan;
    match existing {
        Some(manifest) => {
            if manifest.shard_range != [shards.start, shards.end]
                || manifest.total_shards != *total_shards
            {
                return Err(CacheError::TaskMismatch {
                    object: location.describe(key),
                    reason: format!(
                        "it holds shards {:?} of {}, this run plans shards {shards:?} of {total_shards}",
                        manifest.shard_range, manifest.total_shards,
                    ),
                });
            }
            Ok(manifest)
        }
        None => {
            let manifest = TaskManifest {
                format: TASK_FORMAT.into(),
                version: TASK_VERSION,
                task: task.index,
                num_tasks: task.count,
                config,
                total_shards: *total_shards,
                shard_range: [shards.start, shards.end],
                documents: [documents.start, documents.end],
                shards: Vec::new(),
                finished: false,
            };
            location.put(key, manifest.to_json())?;
            Ok(manifest)
        }
    }
}

/// Waits for a shard's upload, checks what is at its key, and commits it to the task manifest;
/// returns its token count.
fn commit(
    location: &StoreLocation,
    key: &str,
    manifest: &mut TaskManifest,
    upload: PendingPut,
    entry: ShardEntry,
    on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()>,
) -> Result<u64> {
    if upload.wait()? == PutOutcome::AlreadyExists {
        check_existing_shard(location, &entry)?;
    }
    let index = manifest.shard_range[0] + manifest.shards.len();
    emit(on_event, CacheEvent::ShardWritten { shard: index }, || {
        format!("after uploading shard {index}, before the task manifest lists it")
    })?;
    let (n_tokens, documents_done) = (entry.n_tokens, entry.documents[1]);
    manifest.shards.push(entry);
    location.put(key, manifest.to_json())?;
    emit(
        on_event,
        CacheEvent::ShardCommitted {
            shard: index,
            n_tokens,
            stored_tokens: manifest.shards.iter().map(|s| s.n_tokens).sum(),
            documents_done,
        },
        || format!("after committing shard {index}"),
    )?;
    Ok(n_tokens)
}

/// An object was already at the shard's key (an earlier attempt uploaded it, or someone else
/// wrote there): accepted only if it is byte for byte the shard.
fn check_existing_shard(location: &StoreLocation, entry: &ShardEntry) -> Result<()> {
    let found = location.get(&entry.file)?;
    let sha256 = sha256_hex(&found);
    if found.len() as u64 != entry.bytes || sha256 != entry.sha256 {
        return Err(CacheError::ForeignObject {
            object: location.describe(&entry.file),
            reason: format!(
                "it has {} bytes with sha256 {sha256}, this task computed {} bytes with sha256 {}",
                found.len(),
                entry.bytes,
                entry.sha256
            ),
        });
    }
    Ok(())
}

/// Refuses to continue a task manifest written for other settings or another partition.
fn check_same_task(
    location: &StoreLocation,
    key: &str,
    manifest: &TaskManifest,
    config: &StoreConfig,
    task: TaskPartition,
) -> Result<()> {
    let reason = if manifest.task != task.index || manifest.num_tasks != task.count {
        format!(
            "it is task {} of {}, not {} of {}",
            manifest.task, manifest.num_tasks, task.index, task.count
        )
    } else if let Some((field, store, run)) = config_difference(&manifest.config, config) {
        format!("it was made with {field} = {store}, this run asks for {run}")
    } else {
        return Ok(());
    };
    Err(CacheError::TaskMismatch {
        object: location.describe(key),
        reason,
    })
}
