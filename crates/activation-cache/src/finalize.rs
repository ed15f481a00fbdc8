//! [`finalize_store`]: the store manifest of a partitioned job, once every task is done.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::error::{CacheError, Result};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::object_storage::StoreLocation;
use crate::shard::check_checksum;
use crate::shard_stats::read_shard_summary;
use crate::task::{TaskManifest, TaskPartition, TASKS_DIR};

/// How [`finalize_store`] checks the shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinalizeOptions {
    /// Download every shard and check its sha256 against its task manifest (reads the whole
    /// store; without it, each shard's size and statistics are checked with small range reads).
    pub verify_checksums: bool,
}

/// What [`finalize_store`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalizeSummary {
    /// Number of tasks.
    pub num_tasks: usize,
    /// Shards in the store.
    pub shards: usize,
    /// Tokens in the store.
    pub n_tokens: u64,
    /// Bytes of shards.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Checks that every task of the partitioned store at `location` is done and writes its
/// `manifest.json`: the shards in order with their checksums, the token counts, and the per-model
/// statistics merged shard by shard in order from each shard's own `stats.*` tensors, so the
/// manifest is byte-identical to the one a one-process run writes.
///
/// Errors name what is wrong: [`CacheError::TaskNotDone`] for a task that never started or has
/// not finished, [`CacheError::TaskMismatch`] for task files that disagree (another number of
/// tasks, other settings, shard ranges that do not tile the store), [`CacheError::MissingShard`],
/// [`CacheError::ShardSize`] or [`CacheError::ChecksumMismatch`] for shards.
pub fn finalize_store(
    location: &StoreLocation,
    options: FinalizeOptions,
) -> Result<(Manifest, FinalizeSummary)> {
    let start = Instant::now();
    let num_tasks = count_tasks(location)?;
    let mut tasks = Vec::with_capacity(num_tasks);
    for index in 0..num_tasks {
        let task = TaskPartition::new(index, num_tasks)?;
        let not_done = |reason: String| CacheError::TaskNotDone {
            store: location.to_string(),
            task: index,
            num_tasks,
            reason,
        };
        let key = task.manifest_key();
        let Some(bytes) = location.get_optional(&key)? else {
            return Err(not_done(format!(
                "{key} is missing: the task never started"
            )));
        };
        let manifest = TaskManifest::parse(location, &key, &bytes)?;
        let [first, end] = manifest.shard_range;
        if !manifest.finished || location.size(&task.done_key())?.is_none() {
            return Err(not_done(format!(
                "{} of its {} shards are committed and it has no done marker; rerun it",
                manifest.shards.len(),
                end - first
            )));
        }
        if manifest.shards.len() != end - first {
            return Err(not_done(format!(
                "it is marked done with {} of its {} shards",
                manifest.shards.len(),
                end - first
            )));
        }
        tasks.push((key, manifest));
    }

    let (_, first) = &tasks[0];
    let mut store = Manifest::new(&first.config);
    let mut bytes = 0;
    for (key, task) in &tasks {
        let mismatch = |reason: String| CacheError::TaskMismatch {
            object: location.describe(key),
            reason,
        };
        if task.config != first.config {
            return Err(mismatch(format!(
                "its settings differ from task 0's ({})",
                location.describe(&tasks[0].0)
            )));
        }
        if task.total_shards != first.total_shards || task.shard_range[0] != store.shards.len() {
            return Err(mismatch(format!(
                "it holds shards {:?} of {}, expected shards from {} of {}",
                task.shard_range,
                task.total_shards,
                store.shards.len(),
                first.total_shards
            )));
        }
        for entry in &task.shards {
            if entry.documents[0] != store.n_documents {
                return Err(mismatch(format!(
                    "{} covers documents {:?}, expected documents from {}",
                    entry.file, entry.documents, store.n_documents
                )));
            }
            let shard_path = || std::path::PathBuf::from(location.describe(&entry.file));
            let size = location
                .size(&entry.file)?
                .ok_or_else(|| CacheError::MissingShard {
                    shard: shard_path(),
                })?;
            if size != entry.bytes {
                return Err(CacheError::ShardSize {
                    shard: shard_path(),
                    expected: entry.bytes,
                    actual: size,
                });
            }
            if options.verify_checksums {
                check_checksum(&shard_path(), &location.get(&entry.file)?, entry)?;
            }
            let summary = read_shard_summary(location, &entry.file, size, store.d_model)?;
            if summary.documents != entry.documents {
                return Err(CacheError::ShardMismatch {
                    shard: shard_path(),
                    field: "documents".into(),
                    manifest: format!("{:?}", entry.documents),
                    shard_value: format!("{:?}", summary.documents),
                });
            }
            bytes += size;
            store.push_shard(entry.clone(), &summary.statistics);
        }
    }
    if store.shards.len() != first.total_shards || store.n_documents != store.corpus.n_documents {
        return Err(CacheError::TaskMismatch {
            object: location.describe(&tasks[num_tasks - 1].0),
            reason: format!(
                "the tasks cover {} of {} shards and {} of {} documents",
                store.shards.len(),
                first.total_shards,
                store.n_documents,
                store.corpus.n_documents
            ),
        });
    }
    store.finished = true;
    let json = store.to_json()?;
    // Checked like any manifest read from disk before it is published.
    let store = Manifest::from_json(&json, location.describe(MANIFEST_FILE).as_ref())?;
    location.put(MANIFEST_FILE, json)?;
    let summary = FinalizeSummary {
        num_tasks,
        shards: store.shards.len(),
        n_tokens: store.n_tokens,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((store, summary))
}

/// The number of tasks, from the names of the task files (all must agree).
fn count_tasks(location: &StoreLocation) -> Result<usize> {
    let keys = location.list(TASKS_DIR)?;
    let counts: BTreeSet<usize> = keys
        .iter()
        .filter_map(|key| {
            let name = key.rsplit('/').next()?;
            let stem = name.strip_suffix(".json").or(name.strip_suffix(".done"))?;
            let (_, count) = stem.strip_prefix("task-")?.split_once("-of-")?;
            count.parse().ok()
        })
        .collect();
    match counts.len() {
        0 => Err(CacheError::InvalidInput {
            reason: format!(
                "{} holds no task files ({TASKS_DIR}/task-*-of-*.json): nothing to finalize; \
                 run the tasks first (cache_activations --num-tasks N --task-index I)",
                location
            ),
        }),
        1 => Ok(*counts.iter().next().expect("one count")),
        _ => Err(CacheError::TaskMismatch {
            object: location.describe(TASKS_DIR),
            reason: format!(
                "task files of several partitions ({counts:?} tasks) share this store; \
                 remove those of the runs you do not want"
            ),
        }),
    }
}
