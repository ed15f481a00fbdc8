//! Reading HF safetensors checkpoints: one file, or shards listed by `model.safetensors.index.json`.
//!
//! Headers are parsed once; a tensor's bytes are read only when the model asks for it, converted chunk
//! by chunk into the element type the model computes with (f32, or bf16), so loading holds about one
//! copy of the weights that a run needs. Truncated files, malformed headers, missing tensors, wrong shapes,
//! unknown dtypes and non-finite values are typed errors naming the file and the key.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde::Deserialize;

use crate::error::{GemmaError, Result};

/// The name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Bytes converted per chunk.
const CHUNK_BYTES: usize = 16 << 20;

/// One safetensors file whose header has been read.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    /// Byte offset of the data section (8 + header length).
    data_start: u64,
    tensors: HashMap<String, TensorInfo>,
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let corrupt = |reason: String| GemmaError::CorruptWeights {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| GemmaError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| GemmaError::io(path, e))?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|_| corrupt(format!("file is {file_len} bytes, too short for a header")))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > 100 << 20 || 8 + header_len > file_len {
            return Err(corrupt(format!(
                "header length {header_len} does not fit in a file of {file_len} bytes"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| GemmaError::io(path, e))?;
        let header = std::str::from_utf8(&header)
            .map_err(|e| corrupt(format!("header is not UTF-8: {e}")))?;
        let metadata: Metadata = serde_json::from_str(header)
            .map_err(|e| corrupt(format!("header is not a valid safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let tensors: HashMap<String, TensorInfo> = metadata
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        for (key, info) in &tensors {
            let (begin, end) = info.data_offsets;
            if end as u64 > data_len {
                return Err(corrupt(format!(
                    "tensor `{key}` ends at byte {end} of the data section, but the file holds only {data_len} data bytes (truncated?)"
                )));
            }
            let numel: usize = info.shape.iter().product();
            if numel * info.dtype.bitsize() / 8 != end - begin {
                return Err(corrupt(format!(
                    "tensor `{key}` has {} bytes for shape {:?} of {:?}",
                    end - begin,
                    info.shape,
                    info.dtype
                )));
            }
        }
        Ok(Shard {
            path: path.to_path_buf(),
            data_start,
            tensors,
        })
    }

    /// Reads tensor `key` (already validated) as `T`, converting chunk by chunk.
    fn read_as<T: StoredElement>(&self, key: &str, info: &TensorInfo) -> Result<Vec<T>> {
        let numel: usize = info.shape.iter().product();
        let element_bytes = match info.dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            other => {
                return Err(GemmaError::TensorDtype {
                    path: self.path.clone(),
                    key: key.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let mut file = File::open(&self.path).map_err(|e| GemmaError::io(&self.path, e))?;
        file.seek(SeekFrom::Start(
            self.data_start + info.data_offsets.0 as u64,
        ))
        .map_err(|e| GemmaError::io(&self.path, e))?;
        let read_err = |e: std::io::Error| GemmaError::CorruptWeights {
            path: self.path.clone(),
            reason: format!("cannot read tensor `{key}`: {e}"),
        };
        let mut out = vec![T::default(); numel];
        let mut chunk = vec![0u8; CHUNK_BYTES.min(numel * element_bytes)];
        for dst in out.chunks_mut(CHUNK_BYTES / element_bytes) {
            let src = &mut chunk[..dst.len() * element_bytes];
            file.read_exact(src).map_err(read_err)?;
            let stored = src.chunks_exact(element_bytes);
            match info.dtype {
                Dtype::F32 => dst.iter_mut().zip(stored).for_each(|(d, s)| {
                    *d = T::from_f32(f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                }),
                Dtype::BF16 => dst
                    .iter_mut()
                    .zip(stored)
                    .for_each(|(d, s)| *d = T::from_bf16(half::bf16::from_le_bytes([s[0], s[1]]))),
                _ => dst.iter_mut().zip(stored).for_each(|(d, s)| {
                    *d = T::from_f32(half::f16::from_le_bytes([s[0], s[1]]).to_f32())
                }),
            }
        }
        if out.iter().any(|x| !x.is_finite()) {
            return Err(GemmaError::NonFiniteWeights {
                path: self.path.clone(),
                key: key.into(),
            });
        }
        Ok(out)
    }
}

/// An element type weights are read as: f32 (BF16 and F16 widened exactly), or bf16 (BF16 kept as
/// stored, F32 and F16 rounded to the nearest bf16, ties to even).
pub(crate) trait StoredElement: Copy + Default {
    /// From a stored f32 (or a widened f16).
    fn from_f32(value: f32) -> Self;
    /// From a stored bf16.
    fn from_bf16(value: half::bf16) -> Self;
    /// Whether the value is finite.
    fn is_finite(self) -> bool;
}

impl StoredElement for f32 {
    fn from_f32(value: f32) -> Self {
        value
    }
    fn from_bf16(value: half::bf16) -> Self {
        value.to_f32()
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl StoredElement for half::bf16 {
    fn from_f32(value: f32) -> Self {
        stereo_core::matmul::round_to_bf16(value)
    }
    fn from_bf16(value: half::bf16) -> Self {
        value
    }
    fn is_finite(self) -> bool {
        half::bf16::is_finite(self)
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The weight files of a checkpoint, with every header read.
#[derive(Debug)]
pub struct WeightFiles {
    shards: Vec<Shard>,
    /// Tensor name -> index into `shards`.
    owner: HashMap<String, usize>,
    /// Where the weights came from, for error messages.
    location: String,
}

impl WeightFiles {
    /// Opens the weights of a model directory: `model.safetensors.index.json` and its shards if the
    /// index exists, else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| GemmaError::io(&index, e))?;
            let parsed: ShardIndex =
                serde_json::from_str(&text).map_err(|e| GemmaError::json(&index, &e))?;
            let mut files: Vec<&String> = parsed.weight_map.values().collect();
            files.sort();
            files.dedup();
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            for p in &paths {
                if !p.exists() {
                    return Err(GemmaError::io(
                        p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("shard listed in {INDEX_FILE} is missing"),
                        ),
                    ));
                }
            }
            let files = Self::open_files(&paths)?;
            // The index must agree with the shards.
            for (key, file) in &parsed.weight_map {
                let listed = dir.join(file);
                match files.owner.get(key) {
                    Some(&i) if files.shards[i].path == listed => {}
                    _ => {
                        return Err(GemmaError::CorruptWeights {
                            path: listed,
                            reason: format!("{INDEX_FILE} lists tensor `{key}` in this shard, but the shard does not hold it"),
                        })
                    }
                }
            }
            return Ok(files);
        }
        let single = dir.join(SINGLE_FILE);
        if single.exists() {
            return Self::open_files(&[single]);
        }
        Err(GemmaError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {SINGLE_FILE} or {INDEX_FILE} in this directory"),
            ),
        ))
    }

    /// Opens an explicit list of safetensors files.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut owner = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let shard = Shard::open(path)?;
            for key in shard.tensors.keys() {
                if let Some(prev) = owner.insert(key.clone(), i) {
                    return Err(GemmaError::CorruptWeights {
                        path: path.clone(),
                        reason: format!(
                            "tensor `{key}` is also in {}",
                            shards_path(&shards, prev).display()
                        ),
                    });
                }
            }
            shards.push(shard);
        }
        let location = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(WeightFiles {
            shards,
            owner,
            location,
        })
    }

    /// Whether the checkpoint holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.owner.contains_key(key)
    }

    /// Every tensor name in the checkpoint.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    /// The stored shape of `key`.
    pub fn shape(&self, key: &str) -> Result<&[usize]> {
        let (_, info) = self.find(key)?;
        Ok(&info.shape)
    }

    /// Reads `key` as f32, checking its shape against `expected`.
    pub fn read(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.read_as(key, expected)
    }

    /// Reads `key` as bf16 (see [`StoredElement`]), checking its shape against `expected`.
    pub(crate) fn read_bf16(&self, key: &str, expected: &[usize]) -> Result<Vec<half::bf16>> {
        self.read_as(key, expected)
    }

    fn read_as<T: StoredElement>(&self, key: &str, expected: &[usize]) -> Result<Vec<T>> {
        let (shard, info) = self.find(key)?;
        if info.shape != expected {
            return Err(GemmaError::TensorShape {
                path: shard.path.clone(),
                key: key.into(),
                expected: expected.to_vec(),
                actual: info.shape.clone(),
            });
        }
        shard.read_as(key, info)
    }

    fn find(&self, key: &str) -> Result<(&Shard, &TensorInfo)> {
        let missing = || GemmaError::MissingTensor {
            key: key.into(),
            location: self.location.clone(),
        };
        let &i = self.owner.get(key).ok_or_else(missing)?;
        let shard = &self.shards[i];
        Ok((shard, shard.tensors.get(key).ok_or_else(missing)?))
    }
}

fn shards_path(shards: &[Shard], i: usize) -> &Path {
    &shards[i].path
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_f32_bf16_f16() {
        let dir = tempfile::tempdir().unwrap();
        let vals = [1.0f32, -2.5, 0.15625, 3.0e-3];
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        let hf: Vec<u8> = vals
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        write(
            &dir.path().join(SINGLE_FILE),
            &[
                ("a", Dtype::F32, vec![2, 2], f32_bytes(&vals)),
                ("b", Dtype::BF16, vec![4], bf),
                ("c", Dtype::F16, vec![4], hf),
            ],
        );
        let w = WeightFiles::open_dir(dir.path()).unwrap();
        assert_eq!(w.read("a", &[2, 2]).unwrap(), vals);
        let b = w.read("b", &[4]).unwrap();
        for (x, y) in b.iter().zip(vals) {
            assert_eq!(*x, half::bf16::from_f32(y).to_f32());
        }
        let c = w.read("c", &[4]).unwrap();
        for (x, y) in c.iter().zip(vals) {
            assert_eq!(*x, half::f16::from_f32(y).to_f32());
        }
    }

    #[test]
    fn wrong_shape_missing_key_and_nan_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join(SINGLE_FILE),
            &[
                ("w", Dtype::F32, vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
                ("bad", Dtype::F32, vec![1], f32_bytes(&[f32::NAN])),
            ],
        );
        let w = WeightFiles::open_dir(dir.path()).unwrap();
        let err = w.read("w", &[4]).unwrap_err();
        assert!(
            matches!(&err, GemmaError::TensorShape { key, expected, actual, .. } if key == "w" && expected == &[4] && actual == &[3]),
            "{err}"
        );
        let err = w.read("nope", &[1]).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let err = w.read("bad", &[1]).unwrap_err();
        assert!(matches!(err, GemmaError::NonFiniteWeights { .. }), "{err}");
    }

    #[test]
    fn truncated_and_garbage_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        write(&path, &[("w", Dtype::F32, vec![64], f32_bytes(&[0.5; 64]))]);
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 10]).unwrap();
        let err = WeightFiles::open_dir(dir.path()).unwrap_err();
        assert!(matches!(err, GemmaError::CorruptWeights { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::write(&path, b"not a safetensors file at all").unwrap();
        assert!(matches!(
            WeightFiles::open_dir(dir.path()).unwrap_err(),
            GemmaError::CorruptWeights { .. }
        ));
        std::fs::write(&path, b"abc").unwrap();
        assert!(matches!(
            WeightFiles::open_dir(dir.path()).unwrap_err(),
            GemmaError::CorruptWeights { .. }
        ));
    }

    #[test]
    fn shards_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("s1.safetensors"),
            &[("x", Dtype::F32, vec![1], f32_bytes(&[1.0]))],
        );
        write(
            &dir.path().join("s2.safetensors"),
            &[("y", Dtype::F32, vec![1], f32_bytes(&[2.0]))],
        );
        let index = r#"{"metadata": {"total_size": 8}, "weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let w = WeightFiles::open_dir(dir.path()).unwrap();
        assert_eq!(w.read("y", &[1]).unwrap(), vec![2.0]);
        // An index that lies about where a tensor is.
        let index = r#"{"weight_map": {"x": "s2.safetensors", "y": "s2.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        assert!(matches!(
            WeightFiles::open_dir(dir.path()).unwrap_err(),
            GemmaError::CorruptWeights { .. }
        ));
        // A missing shard.
        let index = r#"{"weight_map": {"x": "s1.safetensors", "y": "s3.safetensors"}}"#;
        std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
        let err = WeightFiles::open_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("s3.safetensors"), "{err}");
    }
}
