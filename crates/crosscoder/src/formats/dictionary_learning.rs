//! dictionary_learning (science-of-finetuning fork): `CrossCoder` and `BatchTopKCrossCoder`.
//!
//! Two layouts share one reader:
//! - **hub** (`PyTorchModelHubMixin.save_pretrained`): `config.json` (the constructor's arguments) +
//!   `model.safetensors` (the `state_dict`);
//! - **local training output**: `model_final.pt` / `checkpoint_{step}.pt` (`torch.save(state_dict)`, keys
//!   possibly prefixed with `_orig_mod.` by `torch.compile`, possibly without `code_normalization_id`), with
//!   the trainer's `config.json` (`{"trainer": {"dict_class": ..., "layer": ..., ...}}`) beside it.
//!
//! `state_dict` keys: `encoder.weight [n, d, F]`, `encoder.bias [F]`, `decoder.weight [n, F, d]`,
//! `decoder.bias [n, d]`, `code_normalization_id` (absent in older files: CROSSCODER, as the reference
//! assumes), `activation_mean [n, d]` / `activation_std [n, d]` (NaN = no normaliser), `target_rms`,
//! `activation_global_scale [n]`; BatchTopK adds `k` and `threshold`.
//!
//! **The tensors are the truth.** `config.json` cannot hold tensors: `save_pretrained` writes
//! `activation_mean: null` while the buffers in `model.safetensors` are set, and the reference's
//! `load_state_dict` then overwrites the constructor's values. This reader does the same. Where config and
//! tensors contradict each other on something both state (sizes, class, code normalisation), it is an error.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Ix1, Ix2, Ix3};
use serde_json::Value;
use stereo_core::hook::HookPoint;

use crate::checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
use crate::config::{Activation, CodeNormalization, CrosscoderConfig, InputNormalizer};
use crate::error::{CrosscoderError, Result};
use crate::tensors::TensorMap;

/// The `config.json` of a dictionary_learning checkpoint: the hub mixin's constructor arguments, or the
/// `trainer` section of a training run's config.
#[derive(Debug, Clone)]
pub(crate) struct DlConfig {
    pub path: PathBuf,
    pub fields: serde_json::Map<String, Value>,
}

impl DlConfig {
    /// Reads a `config.json`; the `trainer` section is used when present.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CrosscoderError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| CrosscoderError::json(path, e))?;
        let fields = match v {
            Value::Object(mut m) => match m.remove("trainer") {
                Some(Value::Object(t)) => t,
                Some(other) => {
                    m.insert("trainer".into(), other);
                    m
                }
                None => m,
            },
            _ => {
                return Err(CrosscoderError::UnrecognizedFormat {
                    path: path.to_path_buf(),
                    reason: "config.json is not a JSON object".into(),
                })
            }
        };
        Ok(DlConfig {
            path: path.to_path_buf(),
            fields,
        })
    }

    fn usize(&self, key: &str) -> Option<usize> {
        self.fields
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    }

    fn f32(&self, key: &str) -> Option<f32> {
        self.fields
            .get(key)
            .and_then(Value::as_f64)
            .map(|v| v as f32)
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    fn is_set(&self, key: &str) -> bool {
        self.fields.get(key).is_some_and(|v| !v.is_null())
    }

    fn mismatch(
        &self,
        field: &str,
        config: impl ToString,
        tensors: impl ToString,
    ) -> CrosscoderError {
        CrosscoderError::ConfigMismatch {
            path: self.path.clone(),
            field: field.to_string(),
            config: config.to_string(),
            tensors: tensors.to_string(),
        }
    }
}

/// Builds a checkpoint from a dictionary_learning `state_dict` and its optional config: the class, the code
/// normalisation, the weights (checked against the config), the activation and the input normaliser, in
/// that order (so the first problem found is the one reported).
pub(crate) fn from_tensors(
    mut t: TensorMap,
    cfg: Option<DlConfig>,
) -> Result<CrosscoderCheckpoint> {
    let prefix = if t.contains("encoder.weight") {
        ""
    } else {
        t.strip_prefix_through("_orig_mod.");
        "_orig_mod."
    };
    let path = t.path.clone();
    let batch_top_k = is_batch_top_k(&t, cfg.as_ref())?;
    let code_normalization = code_normalization(&mut t, cfg.as_ref())?;

    let w_enc = t.take_array::<Ix3>("encoder.weight", "[n_models, d, F]")?;
    let (n, d, f) = w_enc.dim();
    let w_dec = t.take_array::<Ix3>("decoder.weight", "[n_models, F, d]")?;
    let b_enc = t.take_array::<Ix1>("encoder.bias", "[F]")?;
    let b_dec = t.take_array::<Ix2>("decoder.bias", "[n_models, d]")?;
    if let Some(c) = &cfg {
        check_config_against_weights(c, [n, d, f])?;
    }

    let activation = if batch_top_k {
        batch_top_k_activation(&mut t, cfg.as_ref())?
    } else {
        Activation::Relu
    };
    let normalizer = read_normalizer(&mut t, cfg.as_ref())?;

    let mut config = CrosscoderConfig {
        activation,
        code_normalization,
        source: Some(format!(
            "dictionary_learning {} ({})",
            if batch_top_k {
                "BatchTopKCrossCoder"
            } else {
                "CrossCoder"
            },
            path.display()
        )),
        ..CrosscoderConfig::relu(n, d, f)
    };
    if let Some(c) = &cfg {
        set_layer_and_hook(&mut config, c);
    }
    if !t.tensors.is_empty() {
        tracing::debug!(keys = %t.remaining_keys(), "ignoring extra tensors in the dictionary_learning checkpoint");
    }
    CrosscoderCheckpoint::with_origin(
        config,
        CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        },
        normalizer,
        path,
    )
    .map_err(|e| e.with_file_keys(&file_keys(prefix)))
}

/// Our names of the checkpoint's tensors and theirs in a dictionary_learning `state_dict` (with the
/// `_orig_mod.` prefix of a compiled model when the file has it), so that an error names the key the user
/// can find in the file.
fn file_keys(prefix: &str) -> Vec<(&'static str, String)> {
    [
        ("W_enc", "encoder.weight"),
        ("b_enc", "encoder.bias"),
        ("W_dec", "decoder.weight"),
        ("b_dec", "decoder.bias"),
        ("activation_mean", "activation_mean"),
        ("activation_std", "activation_std"),
        ("activation_global_scale", "activation_global_scale"),
        ("target_rms", "target_rms"),
        ("threshold", "threshold"),
    ]
    .into_iter()
    .map(|(ours, theirs)| (ours, format!("{prefix}{theirs}")))
    .collect()
}

/// The class: named by the config (and then it must agree with the buffers), else inferred from the
/// BatchTopK buffers (`k`, `threshold`).
fn is_batch_top_k(t: &TensorMap, cfg: Option<&DlConfig>) -> Result<bool> {
    let has_topk_buffers = t.contains("threshold") || t.contains("k");
    let Some((c, class)) = cfg.and_then(|c| c.str("dict_class").map(|s| (c, s.to_string()))) else {
        return Ok(has_topk_buffers);
    };
    let is_topk = match class.as_str() {
        "CrossCoder" => false,
        "BatchTopKCrossCoder" => true,
        _ => {
            return Err(CrosscoderError::UnknownDictClass {
                path: c.path.clone(),
                class,
            })
        }
    };
    if is_topk != has_topk_buffers {
        let found = if has_topk_buffers {
            "BatchTopKCrossCoder (k/threshold buffers present)"
        } else {
            "CrossCoder (no k/threshold buffers)"
        };
        return Err(c.mismatch("dict_class", class, found));
    }
    Ok(is_topk)
}

/// The code normalisation: the buffer, else the config's name, else CROSSCODER (the reference's fallback);
/// buffer and config must agree when both are there.
fn code_normalization(t: &mut TensorMap, cfg: Option<&DlConfig>) -> Result<CodeNormalization> {
    let path = t.path.clone();
    let alpha_sae = cfg
        .and_then(|c| c.f32("code_normalization_alpha_sae"))
        .unwrap_or(CodeNormalization::DEFAULT_ALPHA_SAE);
    let alpha_cc = cfg
        .and_then(|c| c.f32("code_normalization_alpha_cc"))
        .unwrap_or(CodeNormalization::DEFAULT_ALPHA_CC);
    let unsupported = |name: String| CrosscoderError::UnsupportedCodeNormalization {
        path: path.clone(),
        name,
    };
    let from_buffer = match t.take_scalar("code_normalization_id")? {
        Some(id) => {
            let id = id as i64;
            Some(
                CodeNormalization::from_id(id, alpha_sae, alpha_cc)
                    .ok_or_else(|| unsupported(id_name(id)))?,
            )
        }
        None => None,
    };
    let from_config = match cfg.and_then(|c| c.str("code_normalization")) {
        Some(name) => {
            let name = name.rsplit('.').next().unwrap_or(name);
            Some(
                CodeNormalization::from_reference_name(name, alpha_sae, alpha_cc)
                    .ok_or_else(|| unsupported(name.to_string()))?,
            )
        }
        None => None,
    };
    match (from_buffer, from_config) {
        (Some(b), Some(c)) if b.id() != c.id() => Err(CrosscoderError::ConfigMismatch {
            path: cfg.map_or_else(|| path.clone(), |c| c.path.clone()),
            field: "code_normalization".into(),
            config: c.reference_name().into(),
            tensors: format!(
                "code_normalization_id = {} ({})",
                b.id(),
                b.reference_name()
            ),
        }),
        (Some(b), _) => Ok(b),
        (None, Some(c)) => Ok(c),
        (None, None) => {
            tracing::warn!(path = %path.display(), "no code_normalization_id: assuming CROSSCODER, as the reference does");
            Ok(CodeNormalization::Crosscoder)
        }
    }
}

/// The config's sizes must be the weights' `[n, d, F]`, and settings we cannot honour are refused.
fn check_config_against_weights(c: &DlConfig, [n, d, f]: [usize; 3]) -> Result<()> {
    for (field, tensors) in [("activation_dim", d), ("dict_size", f), ("num_layers", n)] {
        if let Some(v) = c.usize(field) {
            if v != tensors {
                return Err(c.mismatch(
                    field,
                    v,
                    format!("{tensors} (from encoder.weight {:?})", [n, d, f]),
                ));
            }
        }
    }
    if c.is_set("latent_processor") {
        return Err(CrosscoderError::Unsupported {
            path: c.path.clone(),
            setting: "latent_processor (a Python callable)".into(),
        });
    }
    if let Some(v) = c.fields.get("encoder_layers").filter(|v| !v.is_null()) {
        let identity: Vec<Value> = (0..n).map(|i| Value::from(i as u64)).collect();
        if v.as_array() != Some(&identity) {
            return Err(CrosscoderError::Unsupported {
                path: c.path.clone(),
                setting: format!("encoder_layers = {v}"),
            });
        }
    }
    if let Some(v) = c.usize("num_decoder_layers") {
        if v != n {
            return Err(CrosscoderError::Unsupported {
                path: c.path.clone(),
                setting: format!("num_decoder_layers = {v} != num_layers = {n}"),
            });
        }
    }
    Ok(())
}

/// BatchTopK's `k` (the buffer, else the config) and learned `threshold` (the buffer).
fn batch_top_k_activation(t: &mut TensorMap, cfg: Option<&DlConfig>) -> Result<Activation> {
    let missing = |t: &TensorMap, key: &str| CrosscoderError::MissingTensor {
        path: t.path.clone(),
        key: key.into(),
        available: t.keys_joined(),
    };
    let k = match t.take_scalar("k")? {
        Some(k) => k as usize,
        None => cfg
            .and_then(|c| c.usize("k"))
            .ok_or_else(|| missing(t, "k"))?,
    };
    let threshold = t
        .take_scalar("threshold")?
        .ok_or_else(|| missing(t, "threshold"))? as f32;
    if threshold < 0.0 {
        tracing::warn!(threshold, path = %t.path.display(), "BatchTopK threshold was never calibrated: every positive latent is kept");
    }
    Ok(Activation::BatchTopK { k, threshold })
}

/// The layer (config `layer`) and hook: the fork hooks `model.layers.{l}` (a decoder layer's output), which
/// is TransformerLens `blocks.{l}.hook_resid_post`.
fn set_layer_and_hook(config: &mut CrosscoderConfig, c: &DlConfig) {
    config.layer = c.usize("layer");
    if let Some(l) = c
        .str("submodule_name")
        .and_then(|s| s.strip_prefix("model.layers."))
        .and_then(|s| s.parse::<usize>().ok())
    {
        config.hook = Some(HookPoint::ResidPost(l));
        config.layer = config.layer.or(Some(l));
    }
}

fn id_name(id: i64) -> String {
    match id {
        5 => "DECOUPLED (code_normalization_id = 5)".into(),
        other => format!("code_normalization_id = {other}"),
    }
}

fn shape_err(path: &Path, key: &str, e: ndarray::ShapeError) -> CrosscoderError {
    CrosscoderError::Pickle {
        path: path.to_path_buf(),
        reason: format!("tensor `{key}`: {e}"),
    }
}

/// The `NormalizableMixin` buffers. NaN-filled mean/std (the reference's "off" marker) give no normaliser;
/// a buffer that is only partly NaN is refused (the reference would silently switch normalisation off).
fn read_normalizer(t: &mut TensorMap, cfg: Option<&DlConfig>) -> Result<InputNormalizer> {
    let path = t.path.clone();
    let mean = t.take_f32_opt("activation_mean", 2, "[n_models, d]")?;
    let std = t.take_f32_opt("activation_std", 2, "[n_models, d]")?;
    let global = t.take_f32_opt("activation_global_scale", 1, "[n_models]")?;
    let target_rms_buffer = t.take_scalar("target_rms")?;
    let (Some(mean), Some(std)) = (mean, std) else {
        return Ok(InputNormalizer::Identity);
    };
    let all_nan = |a: &ndarray::ArrayD<f32>| a.iter().all(|x| x.is_nan());
    if all_nan(&mean) || all_nan(&std) {
        return Ok(InputNormalizer::Identity);
    }
    for (key, a) in [("activation_mean", &mean), ("activation_std", &std)] {
        if let Some((index, value)) = a.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(CrosscoderError::NonFiniteWeight {
                path: path.clone(),
                key: key.into(),
                index,
                value: *value,
            });
        }
    }
    let to2 = |a: ndarray::ArrayD<f32>, key: &str| -> Result<Array2<f32>> {
        a.into_dimensionality::<Ix2>()
            .map_err(|e| shape_err(&path, key, e))
    };
    let mean = to2(mean, "activation_mean")?;
    let std = to2(std, "activation_std")?;
    let target_rms = target_rms_buffer
        .map(|v| v as f32)
        .or_else(|| cfg.and_then(|c| c.f32("target_rms")))
        .unwrap_or(1.0);
    let computed = InputNormalizer::mean_std(mean, std, target_rms);
    Ok(match (computed, global) {
        // The buffer is what the reference uses (its shape is checked with the other weights).
        (
            InputNormalizer::MeanStd {
                mean,
                std,
                target_rms,
                ..
            },
            Some(g),
        ) => {
            let global_scale: Array1<f32> = g
                .into_dimensionality::<Ix1>()
                .map_err(|e| shape_err(&path, "activation_global_scale", e))?;
            InputNormalizer::MeanStd {
                mean,
                std,
                target_rms,
                global_scale,
            }
        }
        (computed, _) => computed,
    })
}
