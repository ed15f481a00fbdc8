//! One shard file: a safetensors file holding the paired activations of a run of whole corpus
//! documents, their per-token metadata and the shard's sufficient statistics.
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `activations` | F32 or BF16 | `[n, 2, d_model]` | row `i`: base `[i, 0]`, chat `[i, 1]` |
//! | `prompt` | I64 | `[n]` | corpus document index |
//! | `position` | I64 | `[n]` | position in the document (0 = `<bos>`) |
//! | `token_id` | I64 | `[n]` | token id |
//! | `flags` | U8 | `[n]` | bit 0 BOS, bit 1 padding, bit 2 chat template |
//! | `documents` | I64 | `[2]` | corpus documents covered, `[start, end)` |
//! | `stats.count` | I64 | `[2]` | rows counted: all non-padding, non-padding non-BOS |
//! | `stats.sum`, `stats.sum_sq` | F64 | `[2, 2, d_model]` | `[model, subset, d]`, subset 0 = all, 1 = without BOS |
//! | `stats.sum_norm` | F64 | `[2, 2]` | `[model, subset]` |
//!
//! The safetensors `__metadata__` holds one key, `format` = `stereo-activation-shard/1` (one key,
//! so that the same content always gives the same bytes and checksum).

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::bf16;
use memmap2::Mmap;
use ndarray::{ArrayView1, ArrayView3};
use safetensors::tensor::SafeTensors;
use safetensors::Dtype;
use sha2::{Digest, Sha256};

use crate::error::{CacheError, Result};
use crate::manifest::{Manifest, ShardEntry, StoreDtype};
use crate::stats::{ModelStatistics, Moments};
use model_pair::TokenMeta;
use stereo_core::atomic_file::sync_file;
use stereo_core::safetensors_file::{encode, metadata, OwnedTensor};

/// `flags` bit of the `<bos>` token.
pub const FLAG_BOS: u8 = 1;
/// `flags` bit of a padding row.
pub const FLAG_PAD: u8 = 2;
/// `flags` bit of a chat-template token.
pub const FLAG_TEMPLATE: u8 = 4;
/// `flags` bit of a token the model speaks (model-turn content and its `<end_of_turn>`).
pub const FLAG_ASSISTANT: u8 = 8;

/// The `format` metadata value of a shard (name / format version).
const SHARD_FORMAT: &str = "stereo-activation-shard/1";

/// The element type rows are read into: f32 (bf16 shards widened, exactly), or bf16 (bf16 shards
/// as they are, with no f32 copy; f32 shards rounded to the nearest bf16, ties to even).
pub trait RowElement: Copy + Default + Send + Sync + 'static {
    /// An f32 value of the store.
    fn from_f32(value: f32) -> Self;
    /// A bf16 value of the store.
    fn from_bf16(value: bf16) -> Self;
    /// The value as f32 (exact).
    fn to_f32(self) -> f32;
    /// Neither NaN nor infinite.
    fn is_finite(self) -> bool {
        self.to_f32().is_finite()
    }
    /// `out[i]` from the `i`th little-endian value of `bytes`, stored as `dtype`.
    fn read_stored(dtype: StoreDtype, bytes: &[u8], out: &mut [Self]) {
        match dtype {
            StoreDtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = Self::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            StoreDtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = Self::from_bf16(bf16::from_bits(u16::from_le_bytes([b[0], b[1]])));
                }
            }
        }
    }
}

impl RowElement for f32 {
    fn from_f32(value: f32) -> Self {
        value
    }

    fn from_bf16(value: bf16) -> Self {
        value.to_f32()
    }

    fn to_f32(self) -> f32 {
        self
    }
}

impl RowElement for bf16 {
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }

    fn from_bf16(value: bf16) -> Self {
        value
    }

    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }

    fn is_finite(self) -> bool {
        bf16::is_finite(self)
    }
}

/// The `flags` byte of a token.
pub(crate) fn flags_of(meta: &TokenMeta) -> u8 {
    let bit = |set: bool, flag: u8| if set { flag } else { 0 };
    bit(meta.is_bos, FLAG_BOS)
        | bit(meta.is_pad, FLAG_PAD)
        | bit(meta.is_template, FLAG_TEMPLATE)
        | bit(meta.is_assistant, FLAG_ASSISTANT)
}

/// A shard encoded in memory.
#[derive(Debug, Clone)]
pub(crate) struct EncodedShard {
    /// The manifest entry (file name filled in by the caller).
    pub entry: ShardEntry,
    /// Statistics of the stored (rounded) values, per model.
    pub statistics: [ModelStatistics; 2],
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// Writes a shard to `path` (the caller's temporary file) and flushes it to disk (see
/// [`encode_shard`]).
pub(crate) fn write_shard(
    path: &Path,
    activations: ArrayView3<f32>,
    tokens: &[TokenMeta],
    documents: [usize; 2],
    dtype: StoreDtype,
) -> Result<EncodedShard> {
    let shard = encode_shard(path, activations, tokens, documents, dtype)?;
    std::fs::write(path, &shard.bytes).map_err(|e| CacheError::io(path, e))?;
    sync_file(path)?;
    Ok(shard)
}

/// Encodes a shard: its file bytes, manifest entry and statistics.
///
/// `activations` is `[n, 2, d_model]`, `tokens` has `n` entries, `documents` is the corpus range
/// `[start, end)` the rows come from; `name` names the shard in errors. Statistics are computed on
/// the values as stored (after rounding to bf16), so they always describe exactly what a reader
/// gets. The bytes depend only on the inputs, so the same rows always give the same checksum.
pub(crate) fn encode_shard(
    name: &Path,
    activations: ArrayView3<f32>,
    tokens: &[TokenMeta],
    documents: [usize; 2],
    dtype: StoreDtype,
) -> Result<EncodedShard> {
    let (n, pair, d) = activations.dim();
    if pair != 2 || n != tokens.len() || n == 0 || d == 0 {
        return Err(CacheError::InvalidInput {
            reason: format!(
                "a shard needs activations [n, 2, d] with n = {} token rows and n, d > 0; got {:?}",
                tokens.len(),
                activations.shape()
            ),
        });
    }
    let mut statistics = [ModelStatistics::new(d), ModelStatistics::new(d)];
    let mut data = Vec::with_capacity(n * 2 * d * dtype.size());
    let mut stored = vec![0f32; d];
    for (i, meta) in tokens.iter().enumerate() {
        for (m, stats) in statistics.iter_mut().enumerate() {
            let row = activations.slice(ndarray::s![i, m, ..]);
            for (s, &x) in stored.iter_mut().zip(row.iter()) {
                match dtype {
                    StoreDtype::F32 => {
                        data.extend_from_slice(&x.to_le_bytes());
                        *s = x;
                    }
                    StoreDtype::Bf16 => {
                        let b = bf16::from_f32(x);
                        data.extend_from_slice(&b.to_bits().to_le_bytes());
                        *s = b.to_f32();
                    }
                }
            }
            if !meta.is_pad {
                stats.push(ArrayView1::from(&stored[..]), meta.is_bos);
            }
        }
    }
    let activations_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::Bf16 => Dtype::BF16,
    };
    let counts = [
        statistics[0].all.count as i64,
        statistics[0].without_bos.count as i64,
    ];
    let subsets = |m: &ModelStatistics| [m.all.clone(), m.without_bos.clone()];
    let moments: Vec<Moments> = statistics.iter().flat_map(subsets).collect();
    let moment = |f: fn(&Moments) -> &[f64]| -> Vec<f64> {
        moments.iter().flat_map(|m| f(m).iter().copied()).collect()
    };
    let tensors = [
        OwnedTensor {
            name: "activations".into(),
            dtype: activations_dtype,
            shape: vec![n, 2, d],
            data,
        },
        OwnedTensor::i64("prompt", vec![n], tokens.iter().map(|t| t.prompt as i64)),
        OwnedTensor::i64(
            "position",
            vec![n],
            tokens.iter().map(|t| t.position as i64),
        ),
        OwnedTensor::i64(
            "token_id",
            vec![n],
            tokens.iter().map(|t| i64::from(t.token_id)),
        ),
        OwnedTensor {
            name: "flags".into(),
            dtype: Dtype::U8,
            shape: vec![n],
            data: tokens.iter().map(flags_of).collect(),
        },
        OwnedTensor::i64("documents", vec![2], documents.iter().map(|&d| d as i64)),
        OwnedTensor::i64("stats.count", vec![2], counts),
        OwnedTensor::f64("stats.sum", vec![2, 2, d], moment(|m| &m.sum)),
        OwnedTensor::f64("stats.sum_sq", vec![2, 2, d], moment(|m| &m.sum_sq)),
        OwnedTensor::f64(
            "stats.sum_norm",
            vec![2, 2],
            moments.iter().map(|m| m.sum_norm),
        ),
    ];
    let bytes = encode(name, &tensors, metadata([("format", SHARD_FORMAT)])).map_err(|e| {
        CacheError::io(
            name,
            std::io::Error::other(format!("cannot encode the shard: {e}")),
        )
    })?;
    let count = |bit: u8| tokens.iter().filter(|t| flags_of(t) & bit != 0).count() as u64;
    Ok(EncodedShard {
        entry: ShardEntry {
            file: String::new(),
            n_tokens: n as u64,
            n_bos: count(FLAG_BOS),
            n_pad: count(FLAG_PAD),
            n_template: count(FLAG_TEMPLATE),
            documents,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        },
        statistics,
        bytes,
    })
}

/// [`CacheError::ChecksumMismatch`] naming `shard` unless `bytes` hash to `entry.sha256`.
pub(crate) fn check_checksum(shard: &Path, bytes: &[u8], entry: &ShardEntry) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual != entry.sha256 {
        return Err(CacheError::ChecksumMismatch {
            shard: shard.to_path_buf(),
            expected: entry.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The bytes of a shard: memory-mapped from a local file, or fetched from object storage.
#[derive(Debug)]
pub(crate) enum ShardBytes {
    /// A local file, mapped.
    Mapped(Mmap),
    /// Fetched into memory.
    Owned(bytes::Bytes),
}

impl std::ops::Deref for ShardBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ShardBytes::Mapped(mmap) => mmap,
            ShardBytes::Owned(bytes) => bytes,
        }
    }
}

/// A validated shard, memory-mapped or in memory.
#[derive(Debug)]
pub(crate) struct MappedShard {
    path: PathBuf,
    mmap: ShardBytes,
    n: usize,
    d: usize,
    dtype: StoreDtype,
    activations: Range<usize>,
    prompt: Range<usize>,
    position: Range<usize>,
    token_id: Range<usize>,
    flags: Range<usize>,
    stats: [Range<usize>; 4],
}

impl MappedShard {
    /// Maps `dir/entry.file` and checks it against the manifest: existence, size, checksum (if
    /// `verify_checksum`), format, tensor names, dtypes and shapes, document range and flag counts.
    pub fn open(
        dir: &Path,
        entry: &ShardEntry,
        manifest: &Manifest,
        verify_checksum: bool,
    ) -> Result<Self> {
        let path = dir.join(&entry.file);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheError::MissingShard { shard: path })
            }
            Err(e) => return Err(CacheError::io(&path, e)),
        };
        let actual = file.metadata().map_err(|e| CacheError::io(&path, e))?.len();
        if actual != entry.bytes {
            return Err(CacheError::ShardSize {
                shard: path,
                expected: entry.bytes,
                actual,
            });
        }
        // SAFETY: shards are immutable once committed (written to a temporary file, then renamed);
        // the store never modifies or truncates a committed shard while it is mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| CacheError::io(&path, e))?;
        if verify_checksum {
            check_checksum(&path, &mmap, entry)?;
        }
        Self::parse(path, ShardBytes::Mapped(mmap), entry, manifest)
    }

    /// Checks a shard fetched into memory (`name` names it in errors) like [`Self::open`] does.
    pub fn from_bytes(
        name: PathBuf,
        bytes: bytes::Bytes,
        entry: &ShardEntry,
        manifest: &Manifest,
        verify_checksum: bool,
    ) -> Result<Self> {
        if bytes.len() as u64 != entry.bytes {
            return Err(CacheError::ShardSize {
                shard: name,
                expected: entry.bytes,
                actual: bytes.len() as u64,
            });
        }
        if verify_checksum {
            check_checksum(&name, &bytes, entry)?;
        }
        Self::parse(name, ShardBytes::Owned(bytes), entry, manifest)
    }

    fn parse(
        path: PathBuf,
        mmap: ShardBytes,
        entry: &ShardEntry,
        manifest: &Manifest,
    ) -> Result<Self> {
        check_format(&path, &mmap)?;
        let st = SafeTensors::deserialize(&mmap[..])
            .map_err(|e| CacheError::corrupt(&path, format!("not a safetensors file: {e}")))?;
        let (n, d, dtype) = activations_layout(&st, &path, entry, manifest)?;
        let base = mmap.as_ptr() as usize;
        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Range<usize>> {
            let view = st
                .tensor(name)
                .map_err(|_| CacheError::corrupt(&path, format!("tensor `{name}` is missing")))?;
            if view.dtype() != dtype {
                return Err(CacheError::corrupt(
                    &path,
                    format!("tensor `{name}` is {:?}, expected {dtype:?}", view.dtype()),
                ));
            }
            if view.shape() != shape {
                return Err(CacheError::corrupt(
                    &path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        view.shape()
                    ),
                ));
            }
            let start = view.data().as_ptr() as usize - base;
            Ok(start..start + view.data().len())
        };
        let activations_dtype = match dtype {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::Bf16 => Dtype::BF16,
        };
        let activations = tensor("activations", activations_dtype, &[n, 2, d])?;
        let (prompt, position, token_id, flags) = (
            tensor("prompt", Dtype::I64, &[n])?,
            tensor("position", Dtype::I64, &[n])?,
            tensor("token_id", Dtype::I64, &[n])?,
            tensor("flags", Dtype::U8, &[n])?,
        );
        let stats = [
            tensor("stats.count", Dtype::I64, &[2])?,
            tensor("stats.sum", Dtype::F64, &[2, 2, d])?,
            tensor("stats.sum_sq", Dtype::F64, &[2, 2, d])?,
            tensor("stats.sum_norm", Dtype::F64, &[2, 2])?,
        ];
        let range = tensor("documents", Dtype::I64, &[2])?;
        let at = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&mmap[range.start + 8 * k..range.start + 8 * k + 8]);
            i64::from_le_bytes(b)
        };
        let documents = [at(0), at(1)];
        if documents != entry.documents.map(|d| d as i64) {
            return Err(mismatch(
                &path,
                "documents",
                format!("{:?}", entry.documents),
                format!("{documents:?}"),
            ));
        }
        drop(st);
        let shard = MappedShard {
            path: path.clone(),
            mmap,
            n,
            d,
            dtype,
            activations,
            prompt,
            position,
            token_id,
            flags,
            stats,
        };
        shard.check_flag_counts(&path, entry)?;
        Ok(shard)
    }

    /// The BOS, padding and template counts of the rows against the manifest entry's.
    fn check_flag_counts(&self, path: &Path, entry: &ShardEntry) -> Result<()> {
        let count = |bit: u8| (0..self.n).filter(|&i| self.flags(i) & bit != 0).count() as u64;
        for (field, bit, listed) in [
            ("n_bos", FLAG_BOS, entry.n_bos),
            ("n_pad", FLAG_PAD, entry.n_pad),
            ("n_template", FLAG_TEMPLATE, entry.n_template),
        ] {
            let actual = count(bit);
            if actual != listed {
                return Err(mismatch(
                    path,
                    field,
                    listed.to_string(),
                    actual.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Number of rows.
    pub fn n_tokens(&self) -> usize {
        self.n
    }

    fn i64_at(&self, range: &Range<usize>, i: usize) -> i64 {
        let at = range.start + 8 * i;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.mmap[at..at + 8]);
        i64::from_le_bytes(b)
    }

    fn f64_at(&self, range: &Range<usize>, i: usize) -> f64 {
        f64::from_bits(self.i64_at(range, i) as u64)
    }

    /// The `flags` byte of row `i`.
    pub fn flags(&self, i: usize) -> u8 {
        self.mmap[self.flags.start + i]
    }

    /// The corpus document of row `i`.
    pub fn prompt(&self, i: usize) -> u64 {
        self.i64_at(&self.prompt, i) as u64
    }

    /// The metadata of row `i`.
    pub fn meta(&self, i: usize) -> TokenMeta {
        let flags = self.flags(i);
        TokenMeta {
            prompt: self.i64_at(&self.prompt, i) as usize,
            position: self.i64_at(&self.position, i) as usize,
            token_id: self.i64_at(&self.token_id, i) as u32,
            is_bos: flags & FLAG_BOS != 0,
            is_pad: flags & FLAG_PAD != 0,
            is_template: flags & FLAG_TEMPLATE != 0,
            is_assistant: flags & FLAG_ASSISTANT != 0,
        }
    }

    /// The shard's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes row `i` (`[2, d_model]`, base then chat) into `out`, `2 * d_model` values, as f32 or
    /// bf16 ([`RowElement`]).
    pub fn read_row_into<T: RowElement>(&self, i: usize, out: &mut [T]) {
        let width = 2 * self.d;
        let size = self.dtype.size();
        let start = self.activations.start + i * width * size;
        T::read_stored(self.dtype, &self.mmap[start..start + width * size], out);
    }

    /// Writes row `i` into `out` (`[2, d_model]`), refusing a NaN or an infinity: a store written
    /// elsewhere (or before non-finite values were refused at writing) may hold them, named here by
    /// shard, row and token, never handed to a trainer.
    pub fn read_row_finite<T: RowElement>(
        &self,
        i: usize,
        mut out: ndarray::ArrayViewMut2<T>,
    ) -> Result<()> {
        match out.as_slice_mut() {
            Some(out) => self.read_row_into(i, out),
            None => {
                let mut row = vec![T::default(); 2 * self.d];
                self.read_row_into(i, &mut row);
                out.iter_mut().zip(row).for_each(|(o, v)| *o = v);
            }
        }
        if let Some((flat, value)) = out.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let meta = self.meta(i);
            return Err(CacheError::NonFiniteInStore {
                shard: self.path.clone(),
                row: i,
                model: flat / self.d,
                document: meta.prompt,
                position: meta.position,
                value: value.to_f32(),
            });
        }
        Ok(())
    }

    /// The shard's own statistics (`stats.*` tensors), per model.
    pub fn statistics(&self) -> [ModelStatistics; 2] {
        let [count, sum, sum_sq, sum_norm] = &self.stats;
        let d = self.d;
        let moments = |m: usize, subset: usize| Moments {
            count: self.i64_at(count, subset) as u64,
            sum: (0..d)
                .map(|k| self.f64_at(sum, (m * 2 + subset) * d + k))
                .collect(),
            sum_sq: (0..d)
                .map(|k| self.f64_at(sum_sq, (m * 2 + subset) * d + k))
                .collect(),
            sum_norm: self.f64_at(sum_norm, m * 2 + subset),
        };
        [0, 1].map(|m| ModelStatistics {
            all: moments(m, 0),
            without_bos: moments(m, 1),
        })
    }
}

/// A [`CacheError::ShardMismatch`] of `path`.
fn mismatch(path: &Path, field: &str, manifest: String, shard: String) -> CacheError {
    CacheError::ShardMismatch {
        shard: path.to_path_buf(),
        field: field.into(),
        manifest,
        shard_value: shard,
    }
}

/// Checks that the shard's metadata says it is one of ours ([`SHARD_FORMAT`]).
fn check_format(path: &Path, bytes: &[u8]) -> Result<()> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| CacheError::corrupt(path, format!("not a safetensors file: {e}")))?;
    let format = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned())
        .ok_or_else(|| CacheError::corrupt(path, "metadata `format` is missing"))?;
    if format != SHARD_FORMAT {
        return Err(CacheError::corrupt(
            path,
            format!("metadata `format` is `{format}`, expected `{SHARD_FORMAT}`"),
        ));
    }
    Ok(())
}

/// `(n, d_model, dtype)` of the shard's `activations`, checked against the manifest and the shard's entry.
fn activations_layout(
    st: &SafeTensors<'_>,
    path: &Path,
    entry: &ShardEntry,
    manifest: &Manifest,
) -> Result<(usize, usize, StoreDtype)> {
    let acts = st
        .tensor("activations")
        .map_err(|_| CacheError::corrupt(path, "tensor `activations` is missing"))?;
    let shape = acts.shape().to_vec();
    let dtype = match acts.dtype() {
        Dtype::F32 => StoreDtype::F32,
        Dtype::BF16 => StoreDtype::Bf16,
        other => {
            return Err(CacheError::corrupt(
                path,
                format!("tensor `activations` is {other:?}, expected F32 or BF16"),
            ))
        }
    };
    if dtype != manifest.dtype {
        return Err(mismatch(
            path,
            "dtype",
            manifest.dtype.to_string(),
            dtype.to_string(),
        ));
    }
    let &[n, 2, d] = shape.as_slice() else {
        return Err(CacheError::corrupt(
            path,
            format!("tensor `activations` has shape {shape:?}, expected [n, 2, d_model]"),
        ));
    };
    if d != manifest.d_model {
        return Err(mismatch(
            path,
            "d_model",
            manifest.d_model.to_string(),
            d.to_string(),
        ));
    }
    if n as u64 != entry.n_tokens {
        return Err(mismatch(
            path,
            "n_tokens",
            entry.n_tokens.to_string(),
            n.to_string(),
        ));
    }
    Ok((n, d, dtype))
}
