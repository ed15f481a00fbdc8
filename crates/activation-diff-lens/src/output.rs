//! `adl.safetensors` (the vectors) and `adl.json` (what they say).

use std::path::Path;

use serde::Serialize;
use stereo_core::safetensors_file::{metadata, write, OwnedTensor};

use crate::difference::ActivationDifference;
use crate::error::{AdlError, Result};
use crate::read::{Alignment, LensReadout};

/// The tensors file.
pub const TENSORS_FILE: &str = "adl.safetensors";
/// The summary.
pub const JSON_FILE: &str = "adl.json";
/// The version of both layouts.
pub const SCHEMA_VERSION: u32 = 1;

/// Writes `delta [L, k, d]`, `delta_mean [L, d]`, `base_mean`, `chat_mean [L, k, d]` (f32),
/// `base_norms`, `chat_norms [L, k]` (f64) and `layers [L]` (i64) to `path`.
pub fn write_tensors(difference: &ActivationDifference, path: &Path) -> Result<()> {
    let shape3 = difference.delta.shape().to_vec();
    let shape2 = difference.delta_mean.shape().to_vec();
    let tensors = vec![
        OwnedTensor::f32("delta", shape3.clone(), difference.delta.iter().copied()),
        OwnedTensor::f32("delta_mean", shape2, difference.delta_mean.iter().copied()),
        OwnedTensor::f32(
            "base_mean",
            shape3.clone(),
            difference.base_mean.iter().copied(),
        ),
        OwnedTensor::f32("chat_mean", shape3, difference.chat_mean.iter().copied()),
        OwnedTensor::f64(
            "base_norms",
            difference.norms[0].shape().to_vec(),
            difference.norms[0].iter().copied(),
        ),
        OwnedTensor::f64(
            "chat_norms",
            difference.norms[1].shape().to_vec(),
            difference.norms[1].iter().copied(),
        ),
        OwnedTensor::i64(
            "layers",
            vec![difference.layers.len()],
            difference.layers.iter().map(|l| *l as i64),
        ),
    ];
    let meta = metadata([
        ("format", "stereo-adl/1".to_string()),
        ("k", difference.k.to_string()),
        ("texts", difference.texts.to_string()),
    ]);
    write(path, &tensors, meta).map_err(|e| AdlError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// One position (or the mean over positions, `position: null`) of one layer, read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionReading {
    /// The layer.
    pub layer: usize,
    /// The position after `<bos>` (0-based), or `None` for the mean over the `k` positions.
    pub position: Option<usize>,
    /// `||delta||`.
    pub norm: f32,
    /// Mean norms of the base and the chat activations there (`None` for the mean over positions).
    pub model_norms: Option<[f64; 2]>,
    /// The lens through each model's head given (base first).
    pub lens: Vec<LensReadout>,
    /// The crosscoder latents it aligns with best (empty without a crosscoder).
    pub aligned_latents: Vec<Alignment>,
}

/// `adl.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdlSummary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Base and chat model names.
    pub models: [String; 2],
    /// The corpus.
    pub corpus: String,
    /// Positions after `<bos>`.
    pub k: usize,
    /// The layers.
    pub layers: Vec<usize>,
    /// Texts averaged.
    pub texts: usize,
    /// Texts skipped (fewer than `k` tokens after `<bos>`).
    pub skipped: usize,
    /// Every layer's positions, then its mean over positions.
    pub readings: Vec<PositionReading>,
    /// Per layer, the token-identity Patchscope of its mean difference through the chat model (empty
    /// when not run).
    pub patchscope: Vec<LayerPatchscope>,
    /// Steering the chat model with the first layer's mean difference: the largest coherent strength
    /// and the answers side by side (absent when not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steering: Option<crate::AdlSteering>,
}

/// The Patchscope of one layer's mean difference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerPatchscope {
    /// The layer.
    pub layer: usize,
    /// The readout at every scale.
    #[serde(flatten)]
    pub readout: crate::PatchscopeReadout,
}

/// Writes `summary` to `path`.
pub fn write_summary(summary: &AdlSummary, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| AdlError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    stereo_core::atomic_file::write_atomic(path, text.as_bytes()).map_err(|e| AdlError::File {
        path: e.path,
        reason: e.source.to_string(),
    })
}
