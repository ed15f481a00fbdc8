//! The workspace's one safetensors writer: owned tensors in, bytes out ([`encode`]), or a file replaced
//! atomically ([`write`](fn@write), through [`crate::atomic_file`]). Every format of ours that writes safetensors
//! (crosscoder checkpoints, trainer states, encode outputs, activation-store shards, the demo's weights, the
//! `activations` example's output) goes through it.
//!
//! ```
//! use stereo_core::safetensors_file::{metadata, write, OwnedTensor};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("x.safetensors");
//! let tensors = [
//!     OwnedTensor::f32("weights", vec![2, 2], [1.0, 2.0, 3.0, 4.0]),
//!     OwnedTensor::i64("ids", vec![3], [2, 7, 9]),
//! ];
//! write(&path, &tensors, metadata([("format", "pt")]))?;
//! let bytes = std::fs::read(&path)?;
//! let file = safetensors::SafeTensors::deserialize(&bytes)?;
//! assert_eq!(file.tensor("ids")?.shape(), &[3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
pub use safetensors::Dtype;

use crate::atomic_file::{write_atomic, FileError};

/// A tensor to be written: name, dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    /// The key in the file.
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements, little-endian, row-major.
    pub data: Vec<u8>,
}

impl OwnedTensor {
    /// An f32 tensor from its elements in row-major order.
    pub fn f32(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: impl IntoIterator<Item = f32>,
    ) -> Self {
        Self::from_le(name, Dtype::F32, shape, values, f32::to_le_bytes)
    }

    /// An f64 tensor from its elements in row-major order.
    pub fn f64(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: impl IntoIterator<Item = f64>,
    ) -> Self {
        Self::from_le(name, Dtype::F64, shape, values, f64::to_le_bytes)
    }

    /// An i64 tensor from its elements in row-major order.
    pub fn i64(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: impl IntoIterator<Item = i64>,
    ) -> Self {
        Self::from_le(name, Dtype::I64, shape, values, i64::to_le_bytes)
    }

    fn from_le<T, const N: usize>(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        values: impl IntoIterator<Item = T>,
        bytes: fn(T) -> [u8; N],
    ) -> Self {
        OwnedTensor {
            name: name.into(),
            dtype,
            shape,
            data: values.into_iter().flat_map(bytes).collect(),
        }
    }
}

/// Writing a safetensors file failed.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsWriteError {
    /// The tensors do not make a valid file (a shape that disagrees with the bytes, say).
    #[error("cannot encode {path} as safetensors: {reason}")]
    Encode {
        /// The file they were meant for.
        path: PathBuf,
        /// What the safetensors library reported.
        reason: String,
    },
    /// The file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// String metadata of a file (`None` writes no `__metadata__` entry; an empty map writes an empty one).
pub type Metadata = Option<HashMap<String, String>>;

/// Metadata from `(key, value)` pairs.
pub fn metadata<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Metadata {
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
    )
}

/// The safetensors bytes of `tensors` with `metadata` (in the library's canonical order, so equal inputs
/// give equal bytes). `path` only names the destination in errors.
///
/// # Errors
/// [`SafetensorsWriteError::Encode`] when a tensor's bytes disagree with its dtype and shape.
pub fn encode(
    path: &Path,
    tensors: &[OwnedTensor],
    metadata: Metadata,
) -> Result<Vec<u8>, SafetensorsWriteError> {
    let encode_error = |e: safetensors::SafeTensorError| SafetensorsWriteError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let views = tensors
        .iter()
        .map(|t| TensorView::new(t.dtype, t.shape.clone(), &t.data).map(|v| (t.name.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(encode_error)?;
    safetensors::serialize(views, metadata).map_err(encode_error)
}

/// Writes `tensors` and `metadata` to `path`, atomically: a reader sees the old file or the new one.
///
/// # Errors
/// As [`encode`], and [`SafetensorsWriteError::File`] naming the file when it cannot be written.
pub fn write(
    path: &Path,
    tensors: &[OwnedTensor],
    metadata: Metadata,
) -> Result<(), SafetensorsWriteError> {
    let bytes = encode(path, tensors, metadata)?;
    Ok(write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_give_the_bytes_of_the_library_and_read_back() {
        let t = [
            OwnedTensor::f32("b", vec![2], [1.5, -2.0]),
            OwnedTensor::f64("a", vec![1], [0.25]),
        ];
        let bytes = encode(Path::new("x"), &t, metadata([("k", "v")])).unwrap();
        let views: Vec<(&str, TensorView<'_>)> = t
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
                )
            })
            .collect();
        let library = safetensors::serialize(
            views,
            Some(HashMap::from([("k".to_string(), "v".to_string())])),
        )
        .unwrap();
        assert_eq!(bytes, library);
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("a").unwrap().data(), 0.25f64.to_le_bytes());
    }

    #[test]
    fn bytes_that_disagree_with_the_shape_are_an_error_naming_the_file() {
        let bad = OwnedTensor {
            name: "w".into(),
            dtype: Dtype::F32,
            shape: vec![3],
            data: vec![0; 8],
        };
        let err = encode(Path::new("/out/w.safetensors"), &[bad], None).unwrap_err();
        assert!(err.to_string().contains("/out/w.safetensors"), "{err}");
    }
}
