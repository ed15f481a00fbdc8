//! [`ActivationStore`]: a store opened for reading (memory-mapped shards), with seeded shuffled
//! batches, a validation split, normalisation factors and compatibility checks.

use std::path::{Path, PathBuf};

use gemma_model::HookPoint;
use half::bf16;
use ndarray::Array3;
use stereo_core::rng::{mix64, SplitMix64};

use crate::error::{CacheError, Result};
use crate::manifest::Manifest;
use crate::shard::{MappedShard, RowElement, FLAG_BOS, FLAG_PAD};
use crate::stats::ModelStatistics;
use model_pair::TokenMeta;

/// How [`ActivationStore::open_with`] checks the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Hash every shard and compare with the manifest's sha256 (default true). Without it, opening
    /// still checks existence, sizes, tensor layout, document ranges and flag counts, which
    /// catches truncation but not a flipped byte inside the activations.
    pub verify_checksums: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksums: true,
        }
    }
}

/// Which documents a batch iterator draws from. The split is by document (a hash of the document
/// index, independent of the seed), so train and validation never share a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// Documents outside the validation fraction.
    #[default]
    Train,
    /// The `validation_fraction` of documents held out.
    Validation,
    /// Every document.
    All,
}

/// What [`ActivationStore::batches`] returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOptions {
    /// Rows per batch (default 4,096).
    pub batch_size: usize,
    /// Seed of the shuffle (default 0); use a different seed per epoch.
    pub seed: u64,
    /// Include `<bos>` rows (default false: the attention sink's norm is far larger than others').
    pub include_bos: bool,
    /// Include padding rows (default false).
    pub include_pad: bool,
    /// Train, validation or all documents (default train).
    pub split: Split,
    /// Fraction of documents in the validation split, in `[0, 1]` (default 0: no validation).
    pub validation_fraction: f64,
    /// Drop the last batch if it is smaller than `batch_size` (default false).
    pub drop_last: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            batch_size: 4096,
            seed: 0,
            include_bos: false,
            include_pad: false,
            split: Split::Train,
            validation_fraction: 0.0,
            drop_last: false,
        }
    }
}

/// An activation store opened for reading.
///
/// Rows are numbered globally in store order (shard 0's rows, then shard 1's, ...).
#[derive(Debug)]
pub struct ActivationStore {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<MappedShard>,
    /// First global row of each shard, plus the total at the end.
    offsets: Vec<u64>,
}

impl ActivationStore {
    /// Opens the store in `dir`, checking every listed shard including its checksum.
    ///
    /// Errors: [`CacheError::MissingManifest`], [`CacheError::ManifestJson`],
    /// [`CacheError::ManifestInconsistent`], [`CacheError::MissingShard`], [`CacheError::ShardSize`],
    /// [`CacheError::ChecksumMismatch`], [`CacheError::CorruptShard`], [`CacheError::ShardMismatch`].
    /// Shard files the manifest does not list (an interrupted run's) are ignored.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, &OpenOptions::default())
    }

    /// [`open`](Self::open) with explicit checks.
    pub fn open_with(dir: impl AsRef<Path>, options: &OpenOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = Manifest::load(&dir)?;
        let shards = manifest
            .shards
            .iter()
            .map(|entry| MappedShard::open(&dir, entry, &manifest, options.verify_checksums))
            .collect::<Result<Vec<_>>>()?;
        let mut totals = [
            ModelStatistics::new(manifest.d_model),
            ModelStatistics::new(manifest.d_model),
        ];
        for shard in &shards {
            for (total, s) in totals.iter_mut().zip(shard.statistics()) {
                total.merge(&s);
            }
        }
        for (m, (total, listed)) in totals.iter().zip(&manifest.statistics).enumerate() {
            if !total.approx_eq(listed, 1e-9) {
                return Err(CacheError::ManifestInconsistent {
                    path: Manifest::path(&dir),
                    field: format!("statistics[{m}]"),
                    reason: "differs from the sum of the shards' own statistics".into(),
                });
            }
        }
        let mut offsets = Vec::with_capacity(shards.len() + 1);
        let mut total = 0u64;
        for shard in &shards {
            offsets.push(total);
            total += shard.n_tokens() as u64;
        }
        offsets.push(total);
        Ok(ActivationStore {
            dir,
            manifest,
            shards,
            offsets,
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Rows stored.
    pub fn n_tokens(&self) -> u64 {
        self.manifest.n_tokens
    }

    /// Width of the activations.
    pub fn d_model(&self) -> usize {
        self.manifest.d_model
    }

    /// Per-model statistics (index 0 = base, 1 = chat).
    pub fn statistics(&self) -> &[ModelStatistics; 2] {
        &self.manifest.statistics
    }

    /// Per-model normalisation factors `sqrt(d_model) / mean ||x||` (see
    /// [`Manifest::normalization_factors`]).
    pub fn normalization_factors(&self, include_bos: bool) -> [f32; 2] {
        self.manifest.normalization_factors(include_bos)
    }

    /// Checks that the store was made from `models` (base, chat; compared with the manifest's model
    /// names) at `hook` with width `d_model`: [`CacheError::IncompatibleStore`] names what differs.
    pub fn check_compatible(
        &self,
        models: [&str; 2],
        hook: HookPoint,
        d_model: usize,
    ) -> Result<()> {
        self.manifest
            .check_compatible(&self.dir, models, hook, d_model)
    }

    /// The shard holding global row `row` and the row's index inside it.
    fn locate(&self, row: u64) -> Option<(&MappedShard, usize)> {
        if row >= self.offsets.last().copied().unwrap_or(0) {
            return None;
        }
        let s = self.offsets.partition_point(|&o| o <= row) - 1;
        Some((&self.shards[s], (row - self.offsets[s]) as usize))
    }

    /// The metadata of global row `row` (`None` past the end).
    pub fn token_meta(&self, row: u64) -> Option<TokenMeta> {
        self.locate(row).map(|(shard, i)| shard.meta(i))
    }

    /// Global rows `rows` as `[rows.len(), 2, d_model]` f32 (base `[.., 0, ..]`, chat `[.., 1, ..]`).
    pub fn read_rows(&self, rows: &[u64]) -> Result<Array3<f32>> {
        self.read_rows_as(rows)
    }

    /// [`Self::read_rows`] in bf16: a bf16 store's values as they are (half the memory of the f32
    /// rows, and no widening pass; what a crosscoder's `encode_bf16` reads), an f32 store's rounded
    /// to the nearest bf16 (ties to even).
    pub fn read_rows_bf16(&self, rows: &[u64]) -> Result<Array3<bf16>> {
        self.read_rows_as(rows)
    }

    /// Global rows `rows` as `[rows.len(), 2, d_model]` of `T`.
    pub fn read_rows_as<T: RowElement>(&self, rows: &[u64]) -> Result<Array3<T>> {
        let mut out = Array3::<T>::default((rows.len(), 2, self.d_model()));
        for (dst, &row) in out.outer_iter_mut().zip(rows) {
            let (shard, i) = self.locate(row).ok_or_else(|| CacheError::InvalidInput {
                reason: format!("row {row} is past the store's {} rows", self.n_tokens()),
            })?;
            shard.read_row_finite(i, dst)?;
        }
        Ok(out)
    }

    /// The global rows `options` selects (BOS, padding and split filters), in store order.
    pub fn selected_rows(&self, options: &BatchOptions) -> Result<Vec<u64>> {
        let filter = RowFilter::new(options)?;
        let mut rows = Vec::new();
        for (shard, &offset) in self.shards.iter().zip(&self.offsets) {
            rows.extend(
                filter
                    .select(shard)
                    .into_iter()
                    .map(|i| offset + u64::from(i)),
            );
        }
        Ok(rows)
    }

    /// One epoch of shuffled batches `[batch_size, 2, d_model]` (f32 whatever the storage dtype):
    /// every selected row exactly once, in an order drawn from `options.seed` across all shards.
    pub fn batches(&self, options: BatchOptions) -> Result<Batches<'_>> {
        if options.batch_size == 0 {
            return Err(CacheError::InvalidInput {
                reason: "batch_size must be positive".into(),
            });
        }
        let mut order = self.selected_rows(&options)?;
        shuffle(&mut order, options.seed);
        if options.drop_last {
            order.truncate(order.len() - order.len() % options.batch_size);
        }
        Ok(Batches {
            store: self,
            order,
            next: 0,
            batch_size: options.batch_size,
        })
    }
}

/// Training batches addressed by step, for training runs that must resume exactly: epoch
/// `e = step / batches_per_epoch` is the selection shuffled with seed `options.seed + e`, and step `s` reads
/// the `s % batches_per_epoch`-th full batch of it (the last partial batch of each epoch is dropped).
/// The batch of a step is the same whether a run started at step 0 or resumed later.
#[derive(Debug)]
pub struct StepBatches<'a> {
    store: &'a ActivationStore,
    order: EpochOrder,
}

/// The rows of each step of a step-addressed run: epoch `e = step / batches_per_epoch` is `selected`
/// shuffled with seed `seed + e`, step `s` its `s % batches_per_epoch`-th full batch.
#[derive(Debug)]
pub(crate) struct EpochOrder {
    selected: Vec<u64>,
    batch_size: usize,
    seed: u64,
    epoch: Option<(u64, Vec<u64>)>,
}

impl EpochOrder {
    /// The order of `selected` rows in batches of `batch_size` (positive, at most the rows).
    pub fn new(selected: Vec<u64>, batch_size: usize, seed: u64) -> Self {
        EpochOrder {
            selected,
            batch_size,
            seed,
            epoch: None,
        }
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.selected.len() / self.batch_size
    }

    /// The rows of `step`.
    pub fn rows(&mut self, step: usize) -> &[u64] {
        let per_epoch = self.batches_per_epoch();
        let epoch = (step / per_epoch) as u64;
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut order = self.selected.clone();
            shuffle(&mut order, self.seed.wrapping_add(epoch));
            self.epoch = Some((epoch, order));
        }
        let order = &self.epoch.as_ref().expect("set above").1;
        let start = (step % per_epoch) * self.batch_size;
        &order[start..start + self.batch_size]
    }
}

impl<'a> StepBatches<'a> {
    /// Selects the rows once (BOS, padding, split as `options` says).
    ///
    /// # Errors
    /// [`CacheError::InvalidInput`] when `batch_size` is 0 or larger than the selection.
    pub fn new(store: &'a ActivationStore, options: BatchOptions) -> Result<Self> {
        let selected = store.selected_rows(&options)?;
        if options.batch_size == 0 || options.batch_size > selected.len() {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "batch_size {} does not fit the {} selected rows of `{}`",
                    options.batch_size,
                    selected.len(),
                    store.dir().display()
                ),
            });
        }
        Ok(StepBatches {
            store,
            order: EpochOrder::new(selected, options.batch_size, options.seed),
        })
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.order.batches_per_epoch()
    }

    /// The batch of `step`, `[batch_size, 2, d_model]`.
    ///
    /// # Errors
    /// As [`ActivationStore::read_rows`].
    pub fn batch(&mut self, step: usize) -> Result<Array3<f32>> {
        self.store.read_rows(self.order.rows(step))
    }
}

/// An epoch of batches from [`ActivationStore::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    store: &'a ActivationStore,
    order: Vec<u64>,
    next: usize,
    batch_size: usize,
}

impl Batches<'_> {
    /// The epoch's global rows, in the order the batches deliver them.
    pub fn rows(&self) -> &[u64] {
        &self.order
    }

    /// Rows in the epoch.
    pub fn n_tokens(&self) -> usize {
        self.order.len()
    }
}

impl Iterator for Batches<'_> {
    type Item = Array3<f32>;

    fn next(&mut self) -> Option<Array3<f32>> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let rows = &self.order[self.next..end];
        self.next = end;
        let mut out = Array3::<f32>::zeros((rows.len(), 2, self.store.d_model()));
        for (mut dst, &row) in out.outer_iter_mut().zip(rows) {
            // Each row of the new array is contiguous.
            if let (Some((shard, i)), Some(dst)) = (self.store.locate(row), dst.as_slice_mut()) {
                shard.read_row_into(i, dst);
            }
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.order.len() - self.next).div_ceil(self.batch_size);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Fisher-Yates shuffle seeded by `seed`.
pub(crate) fn shuffle(rows: &mut [u64], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..rows.len()).rev() {
        let j = rng.below(i + 1);
        rows.swap(i, j);
    }
}

/// Which rows of a shard a batch iterator takes (BOS, padding and split filters).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowFilter {
    skip: u8,
    split: Split,
    fraction: f64,
}

impl RowFilter {
    /// The filter of `options` ([`CacheError::InvalidInput`] for a fraction outside `[0, 1]`).
    pub fn new(options: &BatchOptions) -> Result<Self> {
        if !(0.0..=1.0).contains(&options.validation_fraction) {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "validation_fraction {} is outside [0, 1]",
                    options.validation_fraction
                ),
            });
        }
        let mut skip = 0u8;
        if !options.include_bos {
            skip |= FLAG_BOS;
        }
        if !options.include_pad {
            skip |= FLAG_PAD;
        }
        Ok(RowFilter {
            skip,
            split: options.split,
            fraction: options.validation_fraction,
        })
    }

    /// Whether a row with `flags` from document `prompt` is taken.
    pub fn keeps(&self, flags: u8, prompt: u64) -> bool {
        flags & self.skip == 0
            && match self.split {
                Split::All => true,
                Split::Train => !in_validation(prompt, self.fraction),
                Split::Validation => in_validation(prompt, self.fraction),
            }
    }

    /// Whether the filter looks at documents (a split), not only at flags.
    pub fn needs_documents(&self) -> bool {
        self.split != Split::All && self.fraction > 0.0
    }

    /// The rows of `shard` taken, in order.
    pub(crate) fn select(&self, shard: &MappedShard) -> Vec<u32> {
        (0..shard.n_tokens())
            .filter(|&i| self.keeps(shard.flags(i), shard.prompt(i)))
            .map(|i| i as u32)
            .collect()
    }
}

/// Whether document `prompt` is in the validation split of `fraction`.
fn in_validation(prompt: u64, fraction: f64) -> bool {
    const SALT: u64 = 0x5EED_0F5A_117D_A7C3;
    let u = (mix64(prompt ^ SALT) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u64> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        let mut c: Vec<u64> = (0..1000).collect();
        shuffle(&mut c, 8);
        assert_ne!(a, c);
        a.sort_unstable();
        assert_eq!(a, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn validation_fraction_is_respected() {
        let n = (0..100_000).filter(|&p| in_validation(p, 0.1)).count();
        assert!((9_000..11_000).contains(&n), "{n}");
        assert_eq!((0..1000).filter(|&p| in_validation(p, 0.0)).count(), 0);
        assert_eq!((0..1000).filter(|&p| in_validation(p, 1.0)).count(), 1000);
    }
}
