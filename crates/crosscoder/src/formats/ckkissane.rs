//! The ckkissane crosscoder replication (`ckkissane/crosscoder-gemma-2-2b-model-diff`): a folder per hook
//! (`blocks.14.hook_resid_pre/`) with `cfg.json` (the training config: `d_in`, `dict_size`, `hook_point`,
//! `model_name`, ...) and `cc_weights.pt` (`torch.save` of the module's `state_dict`):
//!
//! | key | shape |
//! |---|---|
//! | `W_enc` | `[2, d, F]` |
//! | `W_dec` | `[F, 2, d]` (note: latent-major, unlike dictionary_learning) |
//! | `b_enc` | `[F]` |
//! | `b_dec` | `[2, d]` |
//!
//! The replication trains on activations scaled per model by `sqrt(d) / mean ||x||`; the factors are not
//! stored with the weights. Pass them with
//! [`CrosscoderCheckpoint::with_scaling_factors`](crate::CrosscoderCheckpoint::with_scaling_factors) (or
//! `CrosscoderLoader::scaling_factors`): they multiply the activations before encoding and divide the
//! reconstruction afterwards.

use std::path::{Path, PathBuf};

use ndarray::{Ix1, Ix2, Ix3};
use serde_json::Value;

use crate::checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
use crate::config::{CrosscoderConfig, InputNormalizer, GEMMA_2_2B_MODELS};
use crate::error::{CrosscoderError, Result};
use crate::tensors::TensorMap;
use stereo_core::hook::HookPoint;

/// The replication's `cfg.json` (only the fields this crate uses are read).
#[derive(Debug, Clone)]
pub(crate) struct CkConfig {
    pub path: PathBuf,
    pub fields: serde_json::Map<String, Value>,
}

impl CkConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CrosscoderError::io(path, e))?;
        match serde_json::from_str(&text).map_err(|e| CrosscoderError::json(path, e))? {
            Value::Object(fields) => Ok(CkConfig {
                path: path.to_path_buf(),
                fields,
            }),
            _ => Err(CrosscoderError::UnrecognizedFormat {
                path: path.to_path_buf(),
                reason: "cfg.json is not a JSON object".into(),
            }),
        }
    }

    fn usize(&self, key: &str) -> Option<usize> {
        self.fields
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// Builds a checkpoint from the replication's tensors and optional `cfg.json`.
pub(crate) fn from_tensors(
    mut t: TensorMap,
    cfg: Option<CkConfig>,
) -> Result<CrosscoderCheckpoint> {
    let path = t.path.clone();
    let w_enc = t.take_array::<Ix3>("W_enc", "[n_models, d, F]")?;
    let w_dec_fnd = t.take_array::<Ix3>("W_dec", "[F, n_models, d]")?;
    let b_enc = t.take_array::<Ix1>("b_enc", "[F]")?;
    let b_dec = t.take_array::<Ix2>("b_dec", "[n_models, d]")?;
    let (n, d, f) = w_enc.dim();
    if w_dec_fnd.dim() != (f, n, d) {
        return Err(CrosscoderError::ShapeMismatch {
            path: path.clone(),
            key: "W_dec".into(),
            expected: format!("[F, n_models, d] = {:?}", [f, n, d]),
            actual: w_dec_fnd.shape().to_vec(),
        });
    }
    let w_dec = w_dec_fnd
        .permuted_axes([1, 0, 2])
        .as_standard_layout()
        .into_owned();

    let mut config = CrosscoderConfig {
        source: Some(format!("ckkissane replication ({})", path.display())),
        ..CrosscoderConfig::relu(n, d, f)
    };
    if let Some(c) = &cfg {
        for (field, tensors) in [("d_in", d), ("dict_size", f)] {
            if let Some(v) = c.usize(field) {
                if v != tensors {
                    return Err(CrosscoderError::ConfigMismatch {
                        path: c.path.clone(),
                        field: field.into(),
                        config: v.to_string(),
                        tensors: format!("{tensors} (from W_enc {:?})", [n, d, f]),
                    });
                }
            }
        }
        if let Some(name) = c.str("hook_point") {
            let hook: HookPoint = name.parse().map_err(|_| CrosscoderError::UnknownHook {
                path: c.path.clone(),
                field: "hook_point".into(),
                name: name.to_string(),
            })?;
            config.hook = Some(hook);
            config.layer = hook.layer();
        }
        // The replication names only the base model; its pair is the instruction-tuned sibling.
        if n == 2
            && c.str("model_name")
                .is_some_and(|m| m == "gemma-2-2b" || m == "google/gemma-2-2b")
        {
            config.models = GEMMA_2_2B_MODELS.iter().map(|s| s.to_string()).collect();
        }
    }
    CrosscoderCheckpoint::with_origin(
        config,
        CrosscoderWeights {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
        },
        InputNormalizer::Identity,
        path,
    )
}
