//! [`StreamingStore`]: a store read shard by shard from any [`StoreLocation`] (object storage or a
//! local directory), for stores too large to map or kept in a bucket.
//!
//! Training batches follow a seeded two-level shuffle that needs only a window of shards in
//! memory: in epoch `e` the shards are visited in an order drawn from `(seed, e)`; consecutive
//! runs of `buffer_shards` shards form a group whose selected rows are shuffled together (seed
//! `(seed, e, group)`); the epoch is the groups' rows one after the other, cut into full batches
//! (the tail is dropped). The batch of a step depends only on the step, the seed, the options and
//! `buffer_shards`, so a resumed or restarted trainer reads exactly the same batches, from a
//! bucket or from a local copy of the same store.
//!
//! Memory: the group being read plus the next one, fetched in the background while the trainer
//! works (`2 x buffer_shards` shards at most).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use ndarray::{s, Array3, Axis};
use stereo_core::rng::{mix64, SplitMix64};

use crate::error::{CacheError, Result};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::object_storage::StoreLocation;
use crate::reader::{BatchOptions, RowFilter};
use crate::shard::MappedShard;
use crate::shard_stats::read_tensors;

/// Bytes per range request when a shard is fetched (several run at once).
const FETCH_CHUNK: u64 = 16 << 20;

/// How a [`StreamingStore`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// Shards whose rows are shuffled together (default 8); part of the batch order.
    pub buffer_shards: usize,
    /// Check each fetched shard's sha256 against the manifest (default true).
    pub verify_checksums: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            buffer_shards: 8,
            verify_checksums: true,
        }
    }
}

/// A finalized store read by streaming its shards (see the module docs).
#[derive(Debug, Clone)]
pub struct StreamingStore {
    location: StoreLocation,
    manifest: Arc<Manifest>,
    options: StreamOptions,
}

impl StreamingStore {
    /// Opens the store at `location`: reads and checks `manifest.json` (a partitioned store must be
    /// finalized first) and the size of every listed shard.
    pub fn open(location: StoreLocation, options: StreamOptions) -> Result<Self> {
        if options.buffer_shards == 0 {
            return Err(CacheError::InvalidInput {
                reason: "buffer_shards must be positive".into(),
            });
        }
        let Some(bytes) = location.get_optional(MANIFEST_FILE)? else {
            return Err(CacheError::MissingManifest {
                dir: PathBuf::from(location.to_string()),
            });
        };
        let manifest = Manifest::from_json(&bytes, location.describe(MANIFEST_FILE).as_ref())?;
        for entry in &manifest.shards {
            let shard = || PathBuf::from(location.describe(&entry.file));
            match location.size(&entry.file)? {
                None => return Err(CacheError::MissingShard { shard: shard() }),
                Some(actual) if actual != entry.bytes => {
                    return Err(CacheError::ShardSize {
                        shard: shard(),
                        expected: entry.bytes,
                        actual,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(StreamingStore {
            location,
            manifest: Arc::new(manifest),
            options,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the store is.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// The reading options.
    pub fn options(&self) -> StreamOptions {
        self.options
    }

    /// Fetches shard `index` whole (concurrent range reads) and checks it.
    fn fetch(&self, index: usize) -> Result<MappedShard> {
        let entry = &self.manifest.shards[index];
        let ranges: Vec<Range<u64>> = (0..entry.bytes)
            .step_by(FETCH_CHUNK as usize)
            .map(|start| start..(start + FETCH_CHUNK).min(entry.bytes))
            .collect();
        let parts = self.location.get_ranges(&entry.file, &ranges)?;
        let mut bytes = Vec::with_capacity(entry.bytes as usize);
        parts.iter().for_each(|part| bytes.extend_from_slice(part));
        MappedShard::from_bytes(
            PathBuf::from(self.location.describe(&entry.file)),
            bytes.into(),
            entry,
            &self.manifest,
            self.options.verify_checksums,
        )
    }

    /// Fetches shards `indices` in the background.
    fn fetch_in_background(&self, indices: Vec<usize>) -> Fetch {
        let store = self.clone();
        std::thread::spawn(move || indices.into_iter().map(|i| store.fetch(i)).collect())
    }

    /// Rows of each shard that `filter` takes, counted with small range reads (flags, and the
    /// document of each row when a split needs it).
    fn selected_counts(&self, filter: &RowFilter) -> Result<Vec<usize>> {
        self.manifest
            .shards
            .iter()
            .map(|entry| {
                let n = entry.n_tokens as usize;
                if !filter.needs_documents() {
                    let flags = read_tensors(
                        &self.location,
                        &entry.file,
                        entry.bytes,
                        &[("flags", "U8", vec![n])],
                    )?;
                    return Ok(flags[0].iter().filter(|&&f| filter.keeps(f, 0)).count());
                }
                let tensors = read_tensors(
                    &self.location,
                    &entry.file,
                    entry.bytes,
                    &[("flags", "U8", vec![n]), ("prompt", "I64", vec![n])],
                )?;
                let prompts = crate::shard_stats::words(&tensors[1]);
                Ok(tensors[0]
                    .iter()
                    .zip(prompts)
                    .filter(|(&f, p)| filter.keeps(f, *p))
                    .count())
            })
            .collect()
    }

    /// Training batches addressed by step (see the module docs), `[batch_size, 2, d_model]`.
    ///
    /// # Errors
    /// [`CacheError::InvalidInput`] when `batch_size` is 0 or larger than the selection.
    pub fn step_batches(&self, options: BatchOptions) -> Result<StreamedBatches> {
        let filter = RowFilter::new(&options)?;
        let counts = self.selected_counts(&filter)?;
        let selected: usize = counts.iter().sum();
        if options.batch_size == 0 || options.batch_size > selected {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "batch_size {} does not fit the {selected} selected rows of `{}`",
                    options.batch_size, self.location
                ),
            });
        }
        Ok(StreamedBatches {
            store: self.clone(),
            options,
            filter,
            counts,
            plan: None,
            loaded: None,
            prefetch: None,
        })
    }

    /// Every selected row once, in store order, in batches of `options.batch_size` (the last one
    /// smaller), given to `each` (for evaluation; `options.seed` is not used). Shards are fetched
    /// one group ahead.
    pub fn for_each_batch(
        &self,
        options: BatchOptions,
        mut each: impl FnMut(Array3<f32>) -> Result<()>,
    ) -> Result<()> {
        let filter = RowFilter::new(&options)?;
        if options.batch_size == 0 {
            return Err(CacheError::InvalidInput {
                reason: "batch_size must be positive".into(),
            });
        }
        let groups: Vec<Vec<usize>> = (0..self.manifest.shards.len())
            .collect::<Vec<_>>()
            .chunks(self.options.buffer_shards)
            .map(<[usize]>::to_vec)
            .collect();
        let d = self.manifest.d_model;
        let mut held = Array3::<f32>::zeros((0, 2, d));
        let mut next = groups.first().map(|g| self.fetch_in_background(g.clone()));
        for g in 0..groups.len() {
            let shards = join(next.take().expect("fetched ahead"))?;
            next = groups
                .get(g + 1)
                .map(|n| self.fetch_in_background(n.clone()));
            let rows: Vec<(usize, u32)> = shards
                .iter()
                .enumerate()
                .flat_map(|(slot, shard)| filter.select(shard).into_iter().map(move |i| (slot, i)))
                .collect();
            let group_rows = read(&shards, &rows, d)?;
            held = ndarray::concatenate(Axis(0), &[held.view(), group_rows.view()])
                .expect("rows of the same shape");
            let full = held.shape()[0] - held.shape()[0] % options.batch_size;
            for start in (0..full).step_by(options.batch_size) {
                each(
                    held.slice(s![start..start + options.batch_size, .., ..])
                        .to_owned(),
                )?;
            }
            held = held.slice(s![full.., .., ..]).to_owned();
        }
        if held.shape()[0] > 0 {
            each(held)?;
        }
        Ok(())
    }
}

/// Shards being fetched in the background.
type Fetch = JoinHandle<Result<Vec<MappedShard>>>;

/// Waits for a background fetch.
fn join(handle: Fetch) -> Result<Vec<MappedShard>> {
    handle.join().map_err(|_| CacheError::InvalidInput {
        reason: "a shard fetch thread panicked".into(),
    })?
}

/// Rows `(slot, row)` of `shards` as `[rows.len(), 2, d_model]`.
fn read(shards: &[MappedShard], rows: &[(usize, u32)], d_model: usize) -> Result<Array3<f32>> {
    let mut out = Array3::<f32>::zeros((rows.len(), 2, d_model));
    for (dst, &(slot, row)) in out.outer_iter_mut().zip(rows) {
        shards[slot].read_row_finite(row as usize, dst)?;
    }
    Ok(out)
}

/// The shard order of one epoch and where each group's rows start in it.
#[derive(Debug)]
struct EpochPlan {
    epoch: u64,
    groups: Vec<Vec<usize>>,
    /// First epoch row of each group, plus the total at the end.
    starts: Vec<usize>,
}

/// A group of shards in memory with its shuffled rows.
#[derive(Debug)]
struct LoadedGroup {
    key: (u64, usize),
    shards: Vec<MappedShard>,
    rows: Vec<(usize, u32)>,
}

/// Step-addressed training batches of a [`StreamingStore`] (see the module docs).
#[derive(Debug)]
pub struct StreamedBatches {
    store: StreamingStore,
    options: BatchOptions,
    filter: RowFilter,
    counts: Vec<usize>,
    plan: Option<EpochPlan>,
    loaded: Option<LoadedGroup>,
    prefetch: Option<((u64, usize), Fetch)>,
}

impl StreamedBatches {
    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.counts.iter().sum::<usize>() / self.options.batch_size
    }

    /// The batch of `step`, `[batch_size, 2, d_model]`.
    pub fn batch(&mut self, step: usize) -> Result<Array3<f32>> {
        let per_epoch = self.batches_per_epoch();
        let epoch = (step / per_epoch) as u64;
        let start = (step % per_epoch) * self.options.batch_size;
        let end = start + self.options.batch_size;
        self.plan_epoch(epoch);
        let d = self.store.manifest.d_model;
        let mut out = Array3::<f32>::zeros((self.options.batch_size, 2, d));
        let mut filled = 0;
        while filled < self.options.batch_size {
            let at = start + filled;
            let plan = self.plan.as_ref().expect("planned above");
            let group = plan.starts.partition_point(|&s| s <= at) - 1;
            let (group_start, group_end) = (plan.starts[group], plan.starts[group + 1]);
            self.load(epoch, group)?;
            let loaded = self.loaded.as_ref().expect("loaded above");
            let take = (group_end.min(end) - at).min(self.options.batch_size - filled);
            for (k, &(slot, row)) in loaded.rows[at - group_start..at - group_start + take]
                .iter()
                .enumerate()
            {
                let dst = out.index_axis_mut(Axis(0), filled + k);
                loaded.shards[slot].read_row_finite(row as usize, dst)?;
            }
            filled += take;
        }
        Ok(out)
    }

    /// Draws the shard order of `epoch` (once per epoch).
    fn plan_epoch(&mut self, epoch: u64) {
        if self.plan.as_ref().is_some_and(|p| p.epoch == epoch) {
            return;
        }
        let mut order: Vec<usize> = (0..self.counts.len()).collect();
        let mut rng = SplitMix64::new(mix64(self.options.seed ^ SHARD_ORDER_SALT) ^ epoch);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let groups: Vec<Vec<usize>> = order
            .chunks(self.store.options.buffer_shards)
            .map(<[usize]>::to_vec)
            .collect();
        let mut starts = vec![0];
        for group in &groups {
            let rows: usize = group.iter().map(|&s| self.counts[s]).sum();
            starts.push(starts.last().expect("starts at 0") + rows);
        }
        self.plan = Some(EpochPlan {
            epoch,
            groups,
            starts,
        });
    }

    /// Makes group `group` of `epoch` the loaded one, and starts fetching the group after it.
    fn load(&mut self, epoch: u64, group: usize) -> Result<()> {
        let key = (epoch, group);
        if self.loaded.as_ref().is_some_and(|l| l.key == key) {
            return Ok(());
        }
        let plan = self.plan.as_ref().expect("planned before loading");
        let indices = plan.groups[group].clone();
        let shards = match self.prefetch.take() {
            Some((k, handle)) if k == key => join(handle)?,
            Some((_, handle)) => {
                let _ = handle.join();
                indices
                    .iter()
                    .map(|&i| self.store.fetch(i))
                    .collect::<Result<_>>()?
            }
            None => indices
                .iter()
                .map(|&i| self.store.fetch(i))
                .collect::<Result<_>>()?,
        };
        let mut rows = Vec::new();
        for (slot, (shard, &index)) in shards.iter().zip(&indices).enumerate() {
            let selected = self.filter.select(shard);
            if selected.len() != self.counts[index] {
                return Err(CacheError::CorruptShard {
                    shard: shard.path().to_path_buf(),
                    reason: format!(
                        "{} rows selected when read whole, {} from its flags",
                        selected.len(),
                        self.counts[index]
                    ),
                });
            }
            rows.extend(selected.into_iter().map(|i| (slot, i)));
        }
        let mut rng = SplitMix64::new(
            mix64(mix64(self.options.seed ^ ROW_ORDER_SALT) ^ epoch) ^ group as u64,
        );
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.below(i + 1));
        }
        self.loaded = Some(LoadedGroup { key, shards, rows });
        // The next group in reading order, wrapping into the next epoch.
        let next = if group + 1 < plan.groups.len() {
            Some(((epoch, group + 1), plan.groups[group + 1].clone()))
        } else {
            None
        };
        if let Some((next_key, next_indices)) = next {
            self.prefetch = Some((next_key, self.store.fetch_in_background(next_indices)));
        }
        Ok(())
    }
}

/// Salts of the two levels of the shuffle.
const SHARD_ORDER_SALT: u64 = 0x5348_4152_445f_4f52;
const ROW_ORDER_SALT: u64 = 0x524f_575f_4f52_4445;
