//! Helpers shared by the integration tests: fixture paths, golden tensors, error measures.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

/// `fixtures/gemma/<name>` of the workspace.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gemma")
        .join(name)
}

/// The two golden models.
pub const MODELS: [&str; 2] = ["tiny-window", "tiny-gqa-bf16"];

/// Every tensor of a safetensors file, widened to f64 for comparisons (ids as i64 values).
pub fn read_tensors(path: &Path) -> HashMap<String, ArrayD<f64>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("unexpected dtype {other:?} for {name}"),
            };
            (
                name,
                ArrayD::from_shape_vec(IxDyn(view.shape()), values).unwrap(),
            )
        })
        .collect()
}

/// `max |a - b| / max |b|`: the relative error used for every parity check.
pub fn relative_error(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let scale = expected.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    let diff = actual
        .iter()
        .zip(expected)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    diff / scale
}

/// Prompt metadata of `golden.json`.
#[derive(serde::Deserialize, Debug)]
pub struct GoldenPrompt {
    pub index: usize,
    pub text: String,
    pub chat_template: bool,
    pub n_tokens: usize,
}

#[derive(serde::Deserialize, Debug)]
pub struct GoldenMeta {
    pub prompts: Vec<GoldenPrompt>,
}

pub fn golden_meta(model: &str) -> GoldenMeta {
    let path = fixture(model).join("golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Token ids of prompt `i` from the golden file.
pub fn golden_ids(golden: &HashMap<String, ArrayD<f64>>, i: usize) -> Vec<u32> {
    golden[&format!("prompt.{i}.input_ids")]
        .iter()
        .map(|x| *x as u32)
        .collect()
}

/// Copies a fixture model directory into a temp dir (to corrupt it).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}
