//! A data-only reader of torch `.pt` files (the zip format `torch.save` writes since torch 1.6).
//!
//! The archive holds `<name>/data.pkl` (a pickle of the saved object, protocol 2), one file per storage
//! under `<name>/data/<key>`, and `<name>/byteorder`. Python's unpickler runs whatever callables the
//! pickle names; this reader **executes nothing**: it interprets the opcodes of a stack machine whose only
//! "callables" are a fixed allow-list of tensor and container constructors, rebuilt structurally here
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `collections.OrderedDict`, the `torch.*Storage`
//! types). Any other global (`posix.system`, `builtins.eval`, a user class) is refused with
//! [`CrosscoderError::ForbiddenPickleGlobal`] before anything else happens.
//!
//! The result is the flat map `name -> tensor` of a `state_dict` (nested dicts are flattened with `.`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use crate::error::{CrosscoderError, Result};
use crate::tensors::{decode_le, dtype_size, HostTensor, TensorMap};

mod machine;
use machine::Unpickler;

/// A value on the unpickler's stack. Only data: no Python object is ever constructed. (Some payloads are
/// only read through `Debug`, in error messages.)
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An allow-listed global (module, name), not yet applied.
    Global(Global),
    /// A storage reference from a persistent id: dtype name and archive key.
    Storage {
        dtype: &'static str,
        key: String,
    },
    /// A rebuilt tensor: a view on a storage.
    Tensor(TensorRef),
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    TensorClass,
    ParameterClass,
    Storage(&'static str),
}

#[derive(Debug, Clone)]
struct TensorRef {
    dtype: &'static str,
    key: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Maps a pickle global to the allow-list, or refuses it.
fn allowed_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "Tensor") => Global::TensorClass,
        ("torch.nn.parameter", "Parameter") => Global::ParameterClass,
        ("torch", storage) => Global::Storage(match storage {
            "FloatStorage" => "f32",
            "DoubleStorage" => "f64",
            "HalfStorage" => "f16",
            "BFloat16Storage" => "bf16",
            "LongStorage" => "i64",
            "IntStorage" => "i32",
            "ShortStorage" => "i16",
            "CharStorage" => "i8",
            "ByteStorage" => "u8",
            "BoolStorage" => "bool",
            _ => return None,
        }),
        _ => return None,
    })
}

/// Reads a torch zip archive as a flat tensor map.
pub(crate) fn read_torch_file(path: &Path) -> Result<TensorMap> {
    let bad = |reason: String| pickle_error(path, reason);
    let file = std::fs::File::open(path).map_err(|e| CrosscoderError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not a zip archive ({e}); only the zip format of torch >= 1.6 is supported (re-save with \
             `torch.save(obj, path)` from a recent torch)"
        ))
    })?;
    let pkl_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).map(str::to_string))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| bad("the archive has no data.pkl".to_string()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    if let Ok(mut f) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut order = String::new();
        f.read_to_string(&mut order)
            .map_err(|e| CrosscoderError::io(path, e))?;
        if order.trim() != "little" {
            return Err(bad(format!(
                "byteorder `{}` is not supported",
                order.trim()
            )));
        }
    }
    let pkl = read_entry(&mut archive, &pkl_name, path)?;
    let root = Unpickler::new(&pkl, path).run()?;

    let mut flat = Vec::new();
    flatten(String::new(), root, &mut flat, path)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for (name, t) in flat {
        if !storages.contains_key(&t.key) {
            let bytes = read_entry(&mut archive, &format!("{prefix}data/{}", t.key), path)?;
            storages.insert(t.key.clone(), bytes);
        }
        let bytes = &storages[&t.key];
        let host = materialize(&t, bytes).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, host);
    }
    Ok(TensorMap::new(path, tensors))
}

/// A [`CrosscoderError::Pickle`] about the file at `path`.
fn pickle_error(path: &Path, reason: impl std::fmt::Display) -> CrosscoderError {
    CrosscoderError::Pickle {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// How far a size read from the file may exceed the file: an archive entry over the archive's length, a
/// (strided, possibly overlapping) tensor view over its storage's length.
const MAX_EXPANSION: usize = 64;

/// The bytes of one archive entry of the torch file at `path`.
fn read_entry(
    archive: &mut zip::ZipArchive<std::fs::File>,
    name: &str,
    path: &Path,
) -> Result<Vec<u8>> {
    let entry_error =
        |e: &dyn std::fmt::Display| pickle_error(path, format!("archive entry `{name}`: {e}"));
    let archive_len = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| CrosscoderError::io(path, e))?;
    let f = archive.by_name(name).map_err(|e| entry_error(&e))?;
    // The declared size is a claim of the file: trust it only as far as the file could hold it
    // (torch writes stored, uncompressed entries), and read at most that much.
    let declared = f.size();
    let limit = declared.min(archive_len.saturating_mul(MAX_EXPANSION as u64));
    if declared > limit {
        return Err(entry_error(&format!(
            "declares {declared} bytes, more than {MAX_EXPANSION} times the {archive_len}-byte file"
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(declared.min(archive_len)).unwrap_or(0));
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| entry_error(&e))?;
    Ok(buf)
}

/// Flattens the unpickled object into `(dotted name, tensor)` pairs. The root must be a dict.
fn flatten(
    prefix: String,
    v: Value,
    out: &mut Vec<(String, TensorRef)>,
    path: &Path,
) -> Result<()> {
    match v {
        Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s,
                    Value::Int(i) => i.to_string(),
                    other => {
                        return Err(pickle_error(
                            path,
                            format!("dict key {other:?} is not a string"),
                        ))
                    }
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                match v {
                    Value::Tensor(_) | Value::Dict(_) => flatten(name, v, out, path)?,
                    // Non-tensor entries (ints, strings, None) carry no weights: skip them.
                    _ => {}
                }
            }
            Ok(())
        }
        Value::Tensor(t) if !prefix.is_empty() => {
            out.push((prefix, t));
            Ok(())
        }
        other => Err(pickle_error(
            path,
            format!(
                "the saved object is not a dict of tensors (a state_dict); its root is {}",
                kind_name(&other)
            ),
        )),
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Global(_) => "a global",
        Value::Storage { .. } => "a storage",
        Value::Tensor(_) => "a tensor",
        Value::Mark => "a mark",
    }
}

/// Why a tensor view cannot be read out of its storage.
#[derive(Debug, thiserror::Error)]
enum ViewError {
    #[error("dtype {0} has no known element size")]
    UnknownDtype(&'static str),
    #[error("size {size:?} has more elements than fit in memory")]
    TooLarge { size: Vec<usize> },
    #[error("view [{start}, {end}) exceeds the storage of {len} bytes")]
    ViewOutOfStorage {
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("element {element} exceeds the storage of {len} bytes")]
    ElementOutOfStorage { element: usize, len: usize },
    #[error("the view reads {bytes} bytes out of a storage of {storage}: more than {MAX_EXPANSION} times over")]
    Expands { bytes: usize, storage: usize },
    #[error("cannot decode {bytes} bytes as {dtype}")]
    Undecodable { bytes: usize, dtype: &'static str },
}

/// Whether `size` with `stride` is a row-major contiguous layout (size-1 dimensions may have any stride).
fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (s, st) in size.iter().zip(stride).rev() {
        if *s != 1 && *st != expect {
            return false;
        }
        expect = expect.saturating_mul(*s);
    }
    true
}

/// Copies a (possibly strided) view out of its storage bytes.
fn materialize(t: &TensorRef, bytes: &[u8]) -> std::result::Result<HostTensor, ViewError> {
    let size = dtype_size(t.dtype).ok_or(ViewError::UnknownDtype(t.dtype))?;
    let too_large = || ViewError::TooLarge {
        size: t.size.clone(),
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |acc, s| acc.checked_mul(*s))
        .ok_or_else(too_large)?;
    let view_bytes = numel.checked_mul(size).ok_or_else(too_large)?;
    // A view can repeat storage elements (stride 0), but not without bound.
    if view_bytes > MAX_EXPANSION.saturating_mul(bytes.len().max(size)) {
        return Err(ViewError::Expands {
            bytes: view_bytes,
            storage: bytes.len(),
        });
    }
    let raw: Vec<u8> = if numel == 0 {
        Vec::new()
    } else if is_contiguous(&t.size, &t.stride) {
        let start = t.offset.checked_mul(size).ok_or_else(too_large)?;
        let end = start.checked_add(view_bytes).ok_or_else(too_large)?;
        bytes
            .get(start..end)
            .ok_or(ViewError::ViewOutOfStorage {
                start,
                end,
                len: bytes.len(),
            })?
            .to_vec()
    } else {
        let mut raw = Vec::with_capacity(view_bytes.min(bytes.len()));
        let mut idx = vec![0usize; t.size.len()];
        let out_of_storage = |element: usize| ViewError::ElementOutOfStorage {
            element,
            len: bytes.len(),
        };
        for _ in 0..numel {
            let element = idx
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset, |acc, (i, s)| acc.checked_add(i.checked_mul(*s)?))
                .ok_or_else(too_large)?;
            let chunk = element
                .checked_mul(size)
                .and_then(|first| bytes.get(first..first.checked_add(size)?))
                .ok_or_else(|| out_of_storage(element))?;
            raw.extend_from_slice(chunk);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        raw
    };
    let data = decode_le(t.dtype, &raw).ok_or(ViewError::Undecodable {
        bytes: raw.len(),
        dtype: t.dtype,
    })?;
    Ok(HostTensor {
        shape: t.size.clone(),
        data,
        dtype: t.dtype.to_string(),
    })
}

/// Returns a host tensor's values as f32 (test helper).
#[cfg(test)]
pub(crate) fn f32_values(t: &HostTensor) -> Vec<f32> {
    use crate::tensors::HostData;
    match &t.data {
        HostData::F32(v) => v.clone(),
        HostData::I64(v) => v.iter().map(|x| *x as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpickle(bytes: &[u8]) -> Result<Value> {
        Unpickler::new(bytes, Path::new("test.pkl")).run()
    }

    #[test]
    fn refuses_os_system_without_running_it() {
        // pickle.dumps of a REDUCE of posix.system, protocol 2.
        let mut p = vec![0x80, 2, b'c'];
        p.extend_from_slice(b"posix\nsystem\n");
        p.extend_from_slice(&[b'X', 4, 0, 0, 0]);
        p.extend_from_slice(b"true");
        p.extend_from_slice(&[0x85, b'R', b'.']);
        match unpickle(&p) {
            Err(CrosscoderError::ForbiddenPickleGlobal { module, name, .. }) => {
                assert_eq!((module.as_str(), name.as_str()), ("posix", "system"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn refuses_stack_global_eval() {
        let mut p = vec![0x80, 4, 0x8c, 8];
        p.extend_from_slice(b"builtins");
        p.extend_from_slice(&[0x8c, 4]);
        p.extend_from_slice(b"eval");
        p.extend_from_slice(&[0x93, b'.']);
        assert!(matches!(
            unpickle(&p),
            Err(CrosscoderError::ForbiddenPickleGlobal { .. })
        ));
    }

    #[test]
    fn reads_containers_and_numbers() {
        // {'a': [1, -2, 70000, 1.5], 'b': (None, True)} by hand, protocol 2.
        let mut p = vec![0x80, 2, b'}', b'(', 0x8c, 1, b'a', b']', b'(', b'K', 1];
        p.extend_from_slice(b"J");
        p.extend_from_slice(&(-2i32).to_le_bytes());
        p.extend_from_slice(&[0x8a, 3, 0x70, 0x11, 0x01]); // LONG1 70000
        p.push(b'G');
        p.extend_from_slice(&1.5f64.to_be_bytes());
        p.extend_from_slice(&[b'e', 0x8c, 1, b'b', b'N', 0x88, 0x86, b'u', b'.']);
        let v = unpickle(&p).unwrap();
        let Value::Dict(items) = v else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 2);
        match &items[0].1 {
            Value::List(l) => {
                assert!(matches!(l[0], Value::Int(1)));
                assert!(matches!(l[1], Value::Int(-2)));
                assert!(matches!(l[2], Value::Int(70000)));
                assert!(matches!(l[3], Value::Float(x) if x == 1.5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strided_views_are_gathered() {
        // A 2x3 f32 storage read through its transpose (size [3, 2], stride [1, 3]).
        let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            dtype: "f32",
            key: "0".into(),
            offset: 0,
            size: vec![3, 2],
            stride: vec![1, 3],
        };
        let h = materialize(&t, &storage).unwrap();
        assert_eq!(f32_values(&h), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn a_view_that_repeats_its_storage_without_bound_is_refused() {
        let storage: Vec<u8> = 1.0f32.to_le_bytes().to_vec();
        let t = TensorRef {
            key: "0".into(),
            dtype: "f32",
            offset: 0,
            size: vec![1 << 40],
            stride: vec![0],
        };
        let err = materialize(&t, &storage).unwrap_err().to_string();
        assert!(err.contains("more than 64 times over"), "{err}");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(matches!(
            unpickle(&[0x80, 2, b'X', 9, 0]),
            Err(CrosscoderError::Pickle { .. })
        ));
        assert!(matches!(
            unpickle(b"a"),
            Err(CrosscoderError::Pickle { .. })
        ));
    }
}
