//! Host tensors read from checkpoint files (safetensors or torch pickles), keyed by name, with the
//! look-ups the format readers need: take a float tensor of an expected rank, read a scalar, and fail with
//! the key, the file and the shapes when something is off. Public for crates that add files of their own
//! next to the crosscoder formats (the trainer's checkpoint in `crosscoder-train`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use stereo_core::safetensors_file::{encode, OwnedTensor};

use crate::error::{CrosscoderError, Result};

/// The element data of a host tensor: floats are widened or narrowed to f32, integers to i64.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// F16, BF16, F32 or F64 in the file.
    F32(Vec<f32>),
    /// Any integer or bool dtype in the file.
    I64(Vec<i64>),
}

/// One tensor read from a file: row-major data and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
    /// The dtype's name in the file, for error messages.
    pub dtype: String,
}

impl HostTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The tensors of one checkpoint, with the file they came from.
#[derive(Debug, Clone)]
pub struct TensorMap {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// Every key the file had, for error messages (tensors are removed as they are taken).
    all_keys: Vec<String>,
}

impl TensorMap {
    pub fn new(path: impl Into<PathBuf>, tensors: BTreeMap<String, HostTensor>) -> Self {
        let all_keys = tensors.keys().cloned().collect();
        TensorMap {
            path: path.into(),
            tensors,
            all_keys,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Every key the file had, comma-separated.
    pub fn keys_joined(&self) -> String {
        self.all_keys.join(", ")
    }

    /// Keys not taken yet, comma-separated.
    pub fn remaining_keys(&self) -> String {
        self.tensors.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    fn missing(&self, key: &str) -> CrosscoderError {
        CrosscoderError::MissingTensor {
            path: self.path.clone(),
            key: key.to_string(),
            available: self.keys_joined(),
        }
    }

    /// Removes and returns a float tensor of rank `R`, checking its rank. `axes` names the axes for
    /// error messages, e.g. `"[n_models, d, F]"`.
    pub fn take_f32(&mut self, key: &str, rank: usize, axes: &str) -> Result<ArrayD<f32>> {
        let t = self.tensors.remove(key).ok_or_else(|| self.missing(key))?;
        if t.shape.len() != rank {
            return Err(CrosscoderError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: axes.to_string(),
                actual: t.shape,
            });
        }
        match t.data {
            HostData::F32(v) => {
                ArrayD::from_shape_vec(IxDyn(&t.shape), v).map_err(|e| CrosscoderError::Pickle {
                    path: self.path.clone(),
                    reason: format!("tensor `{key}`: {e}"),
                })
            }
            HostData::I64(_) => Err(CrosscoderError::UnsupportedDtype {
                path: self.path.clone(),
                key: key.to_string(),
                dtype: t.dtype,
            }),
        }
    }

    /// Like [`TensorMap::take_f32`], with the rank fixed by the array type `D` (`Ix1`, `Ix2`, `Ix3`).
    pub fn take_array<D: ndarray::Dimension>(
        &mut self,
        key: &str,
        axes: &str,
    ) -> Result<ndarray::Array<f32, D>> {
        let rank = D::NDIM.expect("a fixed-rank array type");
        let a = self.take_f32(key, rank, axes)?;
        let actual = a.shape().to_vec();
        a.into_dimensionality::<D>()
            .map_err(|_| CrosscoderError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: axes.to_string(),
                actual,
            })
    }

    /// Like [`TensorMap::take_f32`], but `None` when the key is absent.
    pub fn take_f32_opt(
        &mut self,
        key: &str,
        rank: usize,
        axes: &str,
    ) -> Result<Option<ArrayD<f32>>> {
        if self.contains(key) {
            self.take_f32(key, rank, axes).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Removes a one-element tensor (shape `[]` or `[1]`) and returns it as f64.
    pub fn take_scalar(&mut self, key: &str) -> Result<Option<f64>> {
        let Some(t) = self.tensors.remove(key) else {
            return Ok(None);
        };
        if t.numel() != 1 {
            return Err(CrosscoderError::ShapeMismatch {
                path: self.path.clone(),
                key: key.to_string(),
                expected: "a scalar ([] or [1])".to_string(),
                actual: t.shape,
            });
        }
        Ok(Some(match &t.data {
            HostData::F32(v) => f64::from(v[0]),
            HostData::I64(v) => v[0] as f64,
        }))
    }

    /// Renames keys: strips everything up to and including `marker` from keys that contain it (the
    /// `_orig_mod.` prefix of `torch.compile`d modules), as the reference's `k.split("_orig_mod.")[1]`.
    pub fn strip_prefix_through(&mut self, marker: &str) {
        let old = std::mem::take(&mut self.tensors);
        self.tensors = old
            .into_iter()
            .map(|(k, v)| match k.find(marker) {
                Some(i) => (k[i + marker.len()..].to_string(), v),
                None => (k, v),
            })
            .collect();
        self.all_keys = self.tensors.keys().cloned().collect();
    }
}

/// Reads every tensor of a safetensors file, and its `__metadata__`.
pub fn read_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| CrosscoderError::io(path, e))?;
    let bad = |reason: String| CrosscoderError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = host_tensor_from_view(&view).ok_or_else(|| CrosscoderError::UnsupportedDtype {
            path: path.to_path_buf(),
            key: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        tensors.insert(name, t);
    }
    Ok((TensorMap::new(path, tensors), metadata))
}

fn host_tensor_from_view(view: &TensorView<'_>) -> Option<HostTensor> {
    let shape = view.shape().to_vec();
    let dtype = view.dtype();
    let data = decode_le(dtype_name(dtype)?, view.data())?;
    Some(HostTensor {
        shape,
        data,
        dtype: format!("{dtype:?}"),
    })
}

fn dtype_name(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
        Dtype::F16 => "f16",
        Dtype::BF16 => "bf16",
        Dtype::I64 => "i64",
        Dtype::I32 => "i32",
        Dtype::I16 => "i16",
        Dtype::I8 => "i8",
        Dtype::U8 => "u8",
        Dtype::BOOL => "bool",
        _ => return None,
    })
}

/// Size in bytes of one element of a dtype named as in [`dtype_name`].
pub(crate) fn dtype_size(name: &str) -> Option<usize> {
    Some(match name {
        "f64" | "i64" => 8,
        "f32" | "i32" => 4,
        "f16" | "bf16" | "i16" => 2,
        "i8" | "u8" | "bool" => 1,
        _ => return None,
    })
}

/// Decodes little-endian bytes of the named dtype.
pub(crate) fn decode_le(name: &str, bytes: &[u8]) -> Option<HostData> {
    let size = dtype_size(name)?;
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let chunks = bytes.chunks_exact(size);
    Some(match name {
        "f32" => HostData::F32(
            chunks
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "f64" => HostData::F32(
            chunks
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
        ),
        "f16" => HostData::F32(
            chunks
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        "bf16" => HostData::F32(
            chunks
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        "i64" => HostData::I64(
            chunks
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        "i32" => HostData::I64(
            chunks
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        "i16" => HostData::I64(
            chunks
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        "i8" => HostData::I64(chunks.map(|c| i64::from(c[0] as i8)).collect()),
        "u8" | "bool" => HostData::I64(chunks.map(|c| i64::from(c[0])).collect()),
        _ => return None,
    })
}

/// The four tensors of `w` as entries named `W_enc`, `b_enc`, `W_dec`, `b_dec`, each after `prefix.` when
/// `prefix` is not empty.
pub fn weight_entries(prefix: &str, w: &crate::checkpoint::CrosscoderWeights) -> Vec<OwnedTensor> {
    let name = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    vec![
        f32_entry(name("W_enc"), w.w_enc.shape(), w.w_enc.iter()),
        f32_entry(name("b_enc"), w.b_enc.shape(), w.b_enc.iter()),
        f32_entry(name("W_dec"), w.w_dec.shape(), w.w_dec.iter()),
        f32_entry(name("b_dec"), w.b_dec.shape(), w.b_dec.iter()),
    ]
}

/// One f32 entry from an array's shape and elements (in logical order).
pub fn f32_entry<'a>(
    name: String,
    shape: &[usize],
    values: impl Iterator<Item = &'a f32>,
) -> OwnedTensor {
    OwnedTensor::f32(name, shape.to_vec(), values.copied())
}

/// Serialises entries and string metadata into safetensors bytes (the workspace's one writer,
/// `stereo_core::safetensors_file`); errors name `path`, the file they are meant for.
pub fn serialize_f32(
    entries: &[OwnedTensor],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    encode(path, entries, Some(metadata)).map_err(|e| CrosscoderError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_float_width_to_f32() {
        let v = 1.5f32;
        assert_eq!(
            decode_le("f32", &v.to_le_bytes()),
            Some(HostData::F32(vec![1.5]))
        );
        assert_eq!(
            decode_le("f64", &1.5f64.to_le_bytes()),
            Some(HostData::F32(vec![1.5]))
        );
        assert_eq!(
            decode_le("bf16", &half::bf16::from_f32(1.5).to_le_bytes()),
            Some(HostData::F32(vec![1.5]))
        );
        assert_eq!(
            decode_le("f16", &half::f16::from_f32(1.5).to_le_bytes()),
            Some(HostData::F32(vec![1.5]))
        );
        assert_eq!(
            decode_le("i32", &(-3i32).to_le_bytes()),
            Some(HostData::I64(vec![-3]))
        );
        assert_eq!(decode_le("f32", &[0, 0, 0]), None, "ragged byte count");
    }

    #[test]
    fn strips_the_torch_compile_prefix() {
        let t = HostTensor {
            shape: vec![],
            data: HostData::I64(vec![1]),
            dtype: "i64".into(),
        };
        let mut m = TensorMap::new(
            "x.pt",
            [
                ("_orig_mod.encoder.weight".to_string(), t.clone()),
                ("k".to_string(), t),
            ]
            .into_iter()
            .collect(),
        );
        m.strip_prefix_through("_orig_mod.");
        assert!(m.contains("encoder.weight") && m.contains("k"));
    }
}
