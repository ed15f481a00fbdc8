//! Reading activation caches written by the science-of-finetuning `dictionary_learning` code
//! (`dictionary_learning/cache.py`), in place: the terabytes a user already cached are read as
//! they are, bf16 included, without caching again.
//!
//! Their layout, one directory per model (`PairedActivationCache(base_dir, chat_dir, submodule)`):
//!
//! | path | what |
//! |---|---|
//! | `<store>/<submodule>/config.json` | `shard_count`, `total_size`, `d_model`, ... |
//! | `<store>/<submodule>/shard_<i>.memmap` | raw little-endian rows `[n_i, d_model]` (bf16 as its 16 bits) |
//! | `<store>/<submodule>/shard_<i>.meta` | `{"shape": [n_i, d_model], "dtype": "torch.bfloat16"}` (no dtype: f32) |
//! | `<store>/<submodule>/{mean,std,count,M2}.pt` | Welford statistics (not read here) |
//! | `<store>/tokens.pt`, `<store>/sequence_ranges.pt` | token ids and document starts, when stored |
//!
//! `<submodule>` is the cache's name plus `_out` or `_in` (`layer_13_out`). Row `i` of the pair is
//! row `i` of each model's cache, base (index 0) then chat (index 1), as their reader stacks them.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use ndarray::{Array3, ArrayViewMut2};
use serde::Deserialize;

use crate::error::{CacheError, Result};
use crate::reader::{BatchOptions, EpochOrder, Split};
use crate::stats::{ModelStatistics, Moments};
use gemma_model::HookPoint;

/// How a `dictionary_learning` shard stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignDtype {
    /// `torch.float32` (or no dtype in the `.meta` file).
    F32,
    /// `torch.bfloat16`, stored as its 16 bits.
    Bf16,
    /// `torch.float16`.
    F16,
}

impl ForeignDtype {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "torch.float32" | "<f4" | "float32" => Some(ForeignDtype::F32),
            "torch.bfloat16" => Some(ForeignDtype::Bf16),
            "torch.float16" | "<f2" | "float16" => Some(ForeignDtype::F16),
            _ => None,
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            ForeignDtype::F32 => 4,
            ForeignDtype::Bf16 | ForeignDtype::F16 => 2,
        }
    }
}

#[derive(Deserialize)]
struct CacheConfig {
    shard_count: usize,
    total_size: u64,
    d_model: usize,
}

#[derive(Deserialize)]
struct ShardMeta {
    shape: Vec<usize>,
    dtype: Option<String>,
}

/// One memory-mapped `shard_<i>.memmap`.
#[derive(Debug)]
struct ForeignShard {
    mmap: Mmap,
    rows: usize,
}

/// One model's cache: `<store>/<submodule>`.
#[derive(Debug)]
struct ModelCache {
    dir: PathBuf,
    shards: Vec<ForeignShard>,
    /// First row of each shard, plus the total at the end.
    offsets: Vec<u64>,
    d_model: usize,
    dtype: ForeignDtype,
}

impl ModelCache {
    fn open(store: &Path, submodule: &str) -> Result<Self> {
        let dir = store.join(submodule);
        let bad = |path: &Path, reason: String| CacheError::ForeignCache {
            path: path.to_path_buf(),
            reason,
        };
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| CacheError::io(&config_path, e))?;
        let config: CacheConfig = serde_json::from_str(&text)
            .map_err(|e| bad(&config_path, format!("not a cache.py config: {e}")))?;
        if config.d_model == 0 {
            return Err(bad(&config_path, "d_model is 0".into()));
        }
        let mut shards = Vec::with_capacity(config.shard_count);
        let mut offsets = vec![0u64];
        let mut dtype = None;
        for i in 0..config.shard_count {
            let meta_path = dir.join(format!("shard_{i}.meta"));
            let text =
                std::fs::read_to_string(&meta_path).map_err(|e| CacheError::io(&meta_path, e))?;
            let meta: ShardMeta = serde_json::from_str(&text)
                .map_err(|e| bad(&meta_path, format!("not a cache.py shard meta: {e}")))?;
            let &[rows, width] = meta.shape.as_slice() else {
                return Err(bad(
                    &meta_path,
                    format!("shape {:?} is not [rows, d_model]", meta.shape),
                ));
            };
            if width != config.d_model {
                return Err(bad(
                    &meta_path,
                    format!(
                        "rows of width {width}, config.json says d_model {}",
                        config.d_model
                    ),
                ));
            }
            let name = meta.dtype.as_deref().unwrap_or("torch.float32");
            let shard_dtype = ForeignDtype::parse(name).ok_or_else(|| {
                bad(
                    &meta_path,
                    format!("dtype `{name}` is not float32, bfloat16 or float16"),
                )
            })?;
            if dtype.is_some_and(|d| d != shard_dtype) {
                return Err(bad(
                    &meta_path,
                    format!("dtype {name} differs from shard 0's"),
                ));
            }
            dtype = Some(shard_dtype);
            let path = dir.join(format!("shard_{i}.memmap"));
            let file = File::open(&path).map_err(|e| CacheError::io(&path, e))?;
            let size = file.metadata().map_err(|e| CacheError::io(&path, e))?.len();
            let expected = (rows * width * shard_dtype.size()) as u64;
            if size != expected {
                return Err(CacheError::ShardSize {
                    shard: path,
                    expected,
                    actual: size,
                });
            }
            // SAFETY: cache.py never modifies a shard after writing it; the map is read-only.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CacheError::io(&path, e))?;
            shards.push(ForeignShard { mmap, rows });
            offsets.push(offsets.last().expect("starts at 0") + rows as u64);
        }
        let total = *offsets.last().expect("starts at 0");
        if total != config.total_size {
            return Err(bad(
                &config_path,
                format!(
                    "total_size {}, but the shards hold {total} rows",
                    config.total_size
                ),
            ));
        }
        Ok(ModelCache {
            dir,
            shards,
            offsets,
            d_model: config.d_model,
            dtype: dtype.unwrap_or(ForeignDtype::F32),
        })
    }

    fn len(&self) -> u64 {
        *self.offsets.last().expect("starts at 0")
    }

    /// Writes row `row` into `out` (`[d_model]`), widened to f32.
    fn read_row<'a>(&self, row: u64, out: impl Iterator<Item = &'a mut f32>) {
        let s = self.offsets.partition_point(|&o| o <= row) - 1;
        let shard = &self.shards[s];
        let size = self.dtype.size();
        let start = (row - self.offsets[s]) as usize * self.d_model * size;
        let bytes = &shard.mmap[start..start + self.d_model * size];
        match self.dtype {
            ForeignDtype::F32 => {
                for (o, b) in out.zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            ForeignDtype::Bf16 => {
                for (o, b) in out.zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            ForeignDtype::F16 => {
                for (o, b) in out.zip(bytes.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
        }
        debug_assert!(shard.rows > 0);
    }
}

/// A paired `dictionary_learning` cache (base and chat), opened in place.
#[derive(Debug)]
pub struct DictionaryLearningCache {
    models: [ModelCache; 2],
}

impl DictionaryLearningCache {
    /// Opens the caches of base (`base_store`) and chat (`chat_store`) for `submodule`
    /// (`layer_13_out`), as `PairedActivationCache(base_store, chat_store, submodule)` does:
    /// checks every config and `.meta` file and every shard's size.
    ///
    /// Errors: [`CacheError::Io`] for a missing file, [`CacheError::ForeignCache`] for a file that
    /// is not what `cache.py` writes or two caches that do not pair (width, dtype, length; caches of
    /// different lengths are not read, where `cache.py` would compare their stored tokens),
    /// [`CacheError::ShardSize`] for a truncated shard.
    pub fn open(
        base_store: impl AsRef<Path>,
        chat_store: impl AsRef<Path>,
        submodule: &str,
    ) -> Result<Self> {
        let base = ModelCache::open(base_store.as_ref(), submodule)?;
        let chat = ModelCache::open(chat_store.as_ref(), submodule)?;
        let mismatch = |what: &str, a: String, b: String| CacheError::ForeignCache {
            path: chat.dir.clone(),
            reason: format!(
                "{what} {b} differs from the base cache's {a} ({})",
                base.dir.display()
            ),
        };
        if base.d_model != chat.d_model {
            return Err(mismatch(
                "d_model",
                base.d_model.to_string(),
                chat.d_model.to_string(),
            ));
        }
        if base.dtype != chat.dtype {
            return Err(mismatch(
                "dtype",
                format!("{:?}", base.dtype),
                format!("{:?}", chat.dtype),
            ));
        }
        if base.len() != chat.len() {
            return Err(mismatch(
                "length",
                base.len().to_string(),
                chat.len().to_string(),
            ));
        }
        Ok(DictionaryLearningCache {
            models: [base, chat],
        })
    }

    /// Paired rows.
    pub fn len(&self) -> u64 {
        self.models[0].len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Width of the activations.
    pub fn d_model(&self) -> usize {
        self.models[0].d_model
    }

    /// How the values are stored.
    pub fn dtype(&self) -> ForeignDtype {
        self.models[0].dtype
    }

    /// Shards per model.
    pub fn n_shards(&self) -> usize {
        self.models[0].shards.len()
    }

    /// Writes row `row` (`[2, d_model]`, base then chat) into `out`.
    pub fn read_row(&self, row: u64, mut out: ArrayViewMut2<f32>) -> Result<()> {
        if row >= self.len() {
            return Err(CacheError::InvalidInput {
                reason: format!("row {row} is past the cache's {} rows", self.len()),
            });
        }
        for (m, model) in self.models.iter().enumerate() {
            model.read_row(row, out.row_mut(m).iter_mut());
        }
        Ok(())
    }

    /// Rows `rows` as `[rows.len(), 2, d_model]` f32.
    pub fn read_rows(&self, rows: &[u64]) -> Result<Array3<f32>> {
        let mut out = Array3::<f32>::zeros((rows.len(), 2, self.d_model()));
        for (dst, &row) in out.outer_iter_mut().zip(rows) {
            self.read_row(row, dst)?;
        }
        Ok(out)
    }
}

impl DictionaryLearningCache {
    /// The hook the cache holds, from its submodule name: `layer_{l}_out` is the output of decoder
    /// layer `l` (`blocks.{l}.hook_resid_post`), `layer_{l}_in` its input (`blocks.{l}.hook_resid_pre`).
    pub fn hook(&self) -> Result<HookPoint> {
        let dir = &self.models[0].dir;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = name.strip_prefix("layer_").and_then(|rest| {
            let (layer, io) = rest.rsplit_once('_')?;
            let layer: usize = layer.parse().ok()?;
            match io {
                "out" => Some(HookPoint::ResidPost(layer)),
                "in" => Some(HookPoint::ResidPre(layer)),
                _ => None,
            }
        });
        parsed.ok_or_else(|| CacheError::ForeignCache {
            path: dir.clone(),
            reason: format!(
                "submodule `{name}` is not layer_<l>_out or layer_<l>_in: the hook is unknown"
            ),
        })
    }

    /// The two caches' directories (`<store>/<submodule>`), base then chat.
    pub fn dirs(&self) -> [&Path; 2] {
        [self.models[0].dir.as_path(), self.models[1].dir.as_path()]
    }

    /// Per-model statistics over every row, in one pass (`cache.py` does not mark `<bos>` rows, so
    /// `without_bos` counts them too; its own `mean.pt`/`std.pt` hold no norms).
    pub fn statistics(&self) -> [ModelStatistics; 2] {
        let d = self.d_model();
        let mut moments = [Moments::new(d), Moments::new(d)];
        let mut row = vec![0f32; d];
        for (model, stats) in self.models.iter().zip(moments.iter_mut()) {
            for r in 0..model.len() {
                model.read_row(r, row.iter_mut());
                stats.push(ndarray::ArrayView1::from(&row[..]));
            }
        }
        moments.map(|m| ModelStatistics {
            all: m.clone(),
            without_bos: m,
        })
    }

    /// The rows of `split`: the cache keeps documents in order, so the validation split is the last
    /// `validation_fraction` of the rows (whole documents but for the one at the boundary).
    fn split_rows(&self, options: &BatchOptions) -> Result<std::ops::Range<u64>> {
        if !(0.0..=1.0).contains(&options.validation_fraction) {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "validation_fraction {} is outside [0, 1]",
                    options.validation_fraction
                ),
            });
        }
        let n = self.len();
        let boundary = n - (n as f64 * options.validation_fraction).round() as u64;
        Ok(match options.split {
            Split::All => 0..n,
            Split::Train => 0..boundary,
            Split::Validation => boundary..n,
        })
    }

    /// Training batches by step, as [`crate::StepBatches`] draws them: epoch `e` is the split's
    /// rows shuffled with seed `options.seed + e`, cut into full batches.
    pub fn step_batches(&self, options: BatchOptions) -> Result<ForeignStepBatches<'_>> {
        let rows = self.split_rows(&options)?;
        let selected = rows.end - rows.start;
        if options.batch_size == 0 || options.batch_size as u64 > selected {
            return Err(CacheError::InvalidInput {
                reason: format!(
                    "batch_size {} does not fit the {selected} rows of {}",
                    options.batch_size,
                    self.models[0].dir.display()
                ),
            });
        }
        Ok(ForeignStepBatches {
            cache: self,
            order: EpochOrder::new(rows.collect(), options.batch_size, options.seed),
        })
    }

    /// Every row of the split once, in order, in batches of `options.batch_size`.
    pub fn for_each_batch(
        &self,
        options: BatchOptions,
        mut each: impl FnMut(Array3<f32>) -> Result<()>,
    ) -> Result<()> {
        let rows: Vec<u64> = self.split_rows(&options)?.collect();
        if options.batch_size == 0 {
            return Err(CacheError::InvalidInput {
                reason: "batch_size must be positive".into(),
            });
        }
        for chunk in rows.chunks(options.batch_size) {
            each(self.read_rows(chunk)?)?;
        }
        Ok(())
    }
}

/// Step-addressed training batches of a [`DictionaryLearningCache`].
#[derive(Debug)]
pub struct ForeignStepBatches<'a> {
    cache: &'a DictionaryLearningCache,
    order: EpochOrder,
}

impl ForeignStepBatches<'_> {
    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.order.batches_per_epoch()
    }

    /// The batch of `step`, `[batch_size, 2, d_model]`.
    pub fn batch(&mut self, step: usize) -> Result<Array3<f32>> {
        self.cache.read_rows(self.order.rows(step))
    }
}
