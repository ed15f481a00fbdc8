//! A shard's tensors read through range requests; its statistics: the safetensors header, then the `stats.*`
//! and `documents` tensors only, so finalizing a store on object storage reads kilobytes per shard,
//! not the activations.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;

use crate::error::{CacheError, Result};
use crate::object_storage::StoreLocation;
use crate::stats::{ModelStatistics, Moments};

/// The largest safetensors header a shard may have (ours are a few hundred bytes).
const MAX_HEADER: u64 = 1 << 20;

#[derive(Deserialize)]
struct TensorHeader {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// What finalizing needs from a shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardSummary {
    /// Corpus documents the shard covers.
    pub documents: [usize; 2],
    /// Per-model statistics, as stored in the shard.
    pub statistics: [ModelStatistics; 2],
}

/// A tensor to read from a shard: name, dtype (safetensors name) and shape.
pub(crate) type WantedTensor<'a> = (&'a str, &'a str, Vec<usize>);

/// Reads tensors `wanted` of the shard at `key` (of `size` bytes) with range reads: the header,
/// then one request for the wanted tensors' bytes (the store coalesces the ranges). Dtypes,
/// shapes and offsets are checked against the header and the file size; the bytes come back in the
/// order of `wanted`.
pub(crate) fn read_tensors(
    location: &StoreLocation,
    key: &str,
    size: u64,
    wanted: &[WantedTensor<'_>],
) -> Result<Vec<Bytes>> {
    let object = location.describe(key);
    let corrupt = |reason: String| CacheError::CorruptShard {
        shard: object.clone().into(),
        reason,
    };
    if size < 8 {
        return Err(corrupt(format!("{size} bytes is too short for a shard")));
    }
    let n = u64::from_le_bytes(
        location.get_range(key, 0..8)?[..]
            .try_into()
            .expect("8 bytes"),
    );
    if n > MAX_HEADER || 8 + n > size {
        return Err(corrupt(format!(
            "header length {n} does not fit the file of {size} bytes"
        )));
    }
    let header = location.get_range(key, 8..8 + n)?;
    let mut tensors: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("the safetensors header is not JSON: {e}")))?;
    tensors.remove("__metadata__");
    let data_start = 8 + n;
    let data_len = tensors
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if data_start + data_len != size {
        return Err(corrupt(format!(
            "the header describes {} bytes, the file has {size}",
            data_start + data_len
        )));
    }
    let mut ranges: Vec<Range<u64>> = Vec::with_capacity(wanted.len());
    for (name, dtype, shape) in wanted {
        let value = tensors
            .get(*name)
            .ok_or_else(|| corrupt(format!("tensor `{name}` is missing")))?;
        let tensor: TensorHeader = serde_json::from_value(value.clone())
            .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
        let [start, end] = tensor.data_offsets;
        let element = if *dtype == "U8" { 1 } else { 8 };
        let elements: usize = shape.iter().product();
        if tensor.dtype != *dtype
            || tensor.shape != *shape
            || end < start
            || end - start != element * elements as u64
        {
            return Err(corrupt(format!(
                "tensor `{name}` is {} {:?} at bytes [{start}, {end}), expected {dtype} {shape:?}",
                tensor.dtype, tensor.shape
            )));
        }
        ranges.push(data_start + start..data_start + end);
    }
    location.get_ranges(key, &ranges)
}

/// Little-endian 64-bit words of `bytes`.
pub(crate) fn words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// Reads the `documents` and `stats.*` tensors of the shard at `key` (of `size` bytes, width
/// `d_model`) with range reads, checking dtypes, shapes and offsets against the file size.
pub(crate) fn read_shard_summary(
    location: &StoreLocation,
    key: &str,
    size: u64,
    d_model: usize,
) -> Result<ShardSummary> {
    let wanted: [WantedTensor<'_>; 5] = [
        ("documents", "I64", vec![2]),
        ("stats.count", "I64", vec![2]),
        ("stats.sum", "F64", vec![2, 2, d_model]),
        ("stats.sum_sq", "F64", vec![2, 2, d_model]),
        ("stats.sum_norm", "F64", vec![2, 2]),
    ];
    let tensors = read_tensors(location, key, size, &wanted)?;
    let [documents, count, sum, sum_sq, sum_norm] = [0, 1, 2, 3, 4].map(|i| words(&tensors[i]));
    let documents = [documents[0] as usize, documents[1] as usize];
    let f64s = |w: &[u64]| -> Vec<f64> { w.iter().map(|&b| f64::from_bits(b)).collect() };
    let (sum, sum_sq, sum_norm) = (f64s(&sum), f64s(&sum_sq), f64s(&sum_norm));
    let moments = |m: usize, subset: usize| {
        let row = (m * 2 + subset) * d_model..(m * 2 + subset + 1) * d_model;
        Moments {
            count: count[subset],
            sum: sum[row.clone()].to_vec(),
            sum_sq: sum_sq[row].to_vec(),
            sum_norm: sum_norm[m * 2 + subset],
        }
    };
    Ok(ShardSummary {
        documents,
        statistics: [0, 1].map(|m| ModelStatistics {
            all: moments(m, 0),
            without_bos: moments(m, 1),
        }),
    })
}
