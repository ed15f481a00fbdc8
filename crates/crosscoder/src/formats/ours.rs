//! This crate's own format: one directory with
//!
//! - `crosscoder.safetensors`: `W_enc [n, d, F]`, `b_enc [F]`, `W_dec [n, F, d]`, `b_dec [n, d]` (f32), plus
//!   `activation_mean [n, d]`, `activation_std [n, d]`, `activation_global_scale [n]` for a dictionary_learning
//!   normaliser; the config JSON is also embedded in the file's `__metadata__` under
//!   `stereo_crosscoder_config`, so the file alone is self-describing;
//! - `crosscoder_config.json`: the same config, for people (and `jq`).
//!
//! The config records everything needed to use the weights: sizes, models (index 0 = base, 1 = chat),
//! hook, layer, activation (with BatchTopK's `k` and threshold), code normalisation, input normalisation
//! (with scaling factors inline), and the source it was converted from:
//!
//! ```json
//! {
//!   "format": "stereo-crosscoder", "format_version": 1,
//!   "n_models": 2, "d_model": 2304, "dict_size": 73728,
//!   "activation": {"kind": "relu"},
//!   "code_normalization": {"kind": "crosscoder"},
//!   "models": ["google/gemma-2-2b", "google/gemma-2-2b-it"],
//!   "hook": "blocks.13.hook_resid_post", "layer": 13,
//!   "source": "dictionary_learning CrossCoder (...)",
//!   "input_normalization": {"kind": "identity"}
//! }
//! ```
//!
//! Loading a directory reads `crosscoder_config.json` (so hand-edited metadata is honoured); loading the
//! `.safetensors` file alone reads the embedded copy. Save then load gives back an identical checkpoint.

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array1, Array2, Ix1, Ix2, Ix3};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
use crate::config::{CrosscoderConfig, InputNormalizer};
use crate::error::{CrosscoderError, Result};
use crate::tensors::{f32_entry, read_safetensors, serialize_f32, weight_entries, TensorMap};

/// File name of the weights.
pub const WEIGHTS_FILE: &str = "crosscoder.safetensors";
/// File name of the config.
pub const CONFIG_FILE: &str = "crosscoder_config.json";
/// `__metadata__` key holding the config inside the safetensors file.
pub const METADATA_KEY: &str = "stereo_crosscoder_config";
/// Value of the `format` field.
pub const FORMAT_NAME: &str = "stereo-crosscoder";
/// Current `format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// The input normalisation as recorded in the config (arrays live in the safetensors file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum NormalizationSpec {
    Identity,
    ScalingFactors { factors: Vec<f32> },
    MeanStd { target_rms: f32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileConfig {
    format: String,
    format_version: u32,
    #[serde(flatten)]
    config: CrosscoderConfig,
    input_normalization: NormalizationSpec,
}

/// Writes `checkpoint` to `dir` (created if needed).
pub(crate) fn save(checkpoint: &CrosscoderCheckpoint, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CrosscoderError::io(dir, e))?;
    let spec = match checkpoint.normalizer() {
        InputNormalizer::Identity => NormalizationSpec::Identity,
        InputNormalizer::ScalingFactors(f) => {
            NormalizationSpec::ScalingFactors { factors: f.clone() }
        }
        InputNormalizer::MeanStd { target_rms, .. } => NormalizationSpec::MeanStd {
            target_rms: *target_rms,
        },
    };
    let file_config = FileConfig {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        config: checkpoint.config().clone(),
        input_normalization: spec,
    };
    let config_path = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&file_config)
        .map_err(|e| CrosscoderError::json(&config_path, e))?;

    let mut entries = weight_entries("", checkpoint.weights());
    if let InputNormalizer::MeanStd {
        mean,
        std,
        global_scale,
        ..
    } = checkpoint.normalizer()
    {
        entries.push(f32_entry(
            "activation_mean".into(),
            mean.shape(),
            mean.iter(),
        ));
        entries.push(f32_entry("activation_std".into(), std.shape(), std.iter()));
        entries.push(f32_entry(
            "activation_global_scale".into(),
            global_scale.shape(),
            global_scale.iter(),
        ));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let metadata: HashMap<String, String> = [(METADATA_KEY.to_string(), json.clone())].into();
    let bytes = serialize_f32(&entries, metadata, &weights_path)?;
    std::fs::write(&weights_path, bytes).map_err(|e| CrosscoderError::io(&weights_path, e))?;
    std::fs::write(&config_path, json + "\n").map_err(|e| CrosscoderError::io(&config_path, e))?;
    tracing::info!(dir = %dir.display(), "saved crosscoder");
    Ok(())
}

/// Loads a directory in this format.
pub(crate) fn load_dir(dir: &Path) -> Result<CrosscoderCheckpoint> {
    let config_path = dir.join(CONFIG_FILE);
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| CrosscoderError::io(&config_path, e))?;
    let file_config: FileConfig =
        serde_json::from_str(&text).map_err(|e| CrosscoderError::json(&config_path, e))?;
    let (tensors, _) = read_safetensors(&dir.join(WEIGHTS_FILE))?;
    from_parts(file_config, tensors, &config_path)
}

/// Loads a tensor map whose file carries the embedded config (`None` if it does not).
pub(crate) fn load_embedded(
    tensors: TensorMap,
    metadata: &HashMap<String, String>,
) -> Option<Result<CrosscoderCheckpoint>> {
    let json = metadata.get(METADATA_KEY)?;
    let path = tensors.path.clone();
    Some(
        serde_json::from_str::<FileConfig>(json)
            .map_err(|e| CrosscoderError::json(&path, e))
            .and_then(|cfg| from_parts(cfg, tensors, &path)),
    )
}

fn from_parts(
    file_config: FileConfig,
    mut t: TensorMap,
    config_path: &Path,
) -> Result<CrosscoderCheckpoint> {
    if file_config.format != FORMAT_NAME || file_config.format_version > FORMAT_VERSION {
        return Err(CrosscoderError::UnrecognizedFormat {
            path: config_path.to_path_buf(),
            reason: format!(
                "format `{}` version {} (this build reads `{FORMAT_NAME}` up to version {FORMAT_VERSION})",
                file_config.format, file_config.format_version
            ),
        });
    }
    let path = t.path.clone();
    let w_enc = t.take_array::<Ix3>("W_enc", "[n_models, d, F]")?;
    let b_enc = t.take_array::<Ix1>("b_enc", "[F]")?;
    let w_dec = t.take_array::<Ix3>("W_dec", "[n_models, F, d]")?;
    let b_dec = t.take_array::<Ix2>("b_dec", "[n_models, d]")?;
    let normalizer = match file_config.input_normalization {
        NormalizationSpec::Identity => InputNormalizer::Identity,
        NormalizationSpec::ScalingFactors { factors } => InputNormalizer::ScalingFactors(factors),
        NormalizationSpec::MeanStd { target_rms } => {
            let mean: Array2<f32> = t.take_array::<Ix2>("activation_mean", "[n_models, d]")?;
            let std: Array2<f32> = t.take_array::<Ix2>("activation_std", "[n_models, d]")?;
            let global_scale: Array1<f32> =
                t.take_array::<Ix1>("activation_global_scale", "[n_models]")?;
            InputNormalizer::MeanStd {
                mean,
                std,
                target_rms,
                global_scale,
            }
        }
    };
    CrosscoderCheckpoint::with_origin(
        file_config.config,
        CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        },
        normalizer,
        path,
    )
}
