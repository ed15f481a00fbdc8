//! Shared helpers of the integration tests: fixture paths, expected tensors, tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// `fixtures/crosscoder/` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/crosscoder")
}

/// Every f32 tensor of a safetensors file.
pub fn read_f32(path: &std::path::Path) -> HashMap<String, ArrayD<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{k}");
            let data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                k,
                ArrayD::from_shape_vec(IxDyn(v.shape()), data).expect("shape"),
            )
        })
        .collect()
}

/// `max |a - b| / max |b|` (the error relative to the tensor's scale), NaN-aware (NaN == NaN).
pub fn rel_err(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max)
        .max(1e-30);
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| {
            if a.is_nan() && b.is_nan() {
                0.0
            } else {
                f64::from((a - b).abs())
            }
        })
        .fold(0.0, f64::max)
        / scale
}

/// Asserts `rel_err <= 1e-5` and that the shapes agree.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], actual_shape: &[usize], expected: &ArrayD<f32>) {
    assert_eq!(actual_shape, expected.shape(), "{what}: shape");
    let e: Vec<f32> = expected.iter().copied().collect();
    let err = rel_err(actual, &e);
    eprintln!("{what}: relative error {err:.2e}");
    assert!(err <= 1e-5, "{what}: relative error {err:.3e} > 1e-5");
}
