//! Checkpoint formats, and the detection that picks one for a local path.
//!
//! | layout | recognised by |
//! |---|---|
//! | ours | directory with `crosscoder_config.json` + `crosscoder.safetensors`, or a `.safetensors` with the embedded config |
//! | dictionary_learning hub | directory with `config.json` + `model.safetensors`, or a `.safetensors` with `encoder.weight` |
//! | dictionary_learning training output | a `.pt` whose keys are `encoder.weight`, ... (optionally `_orig_mod.`-prefixed), or a directory with `model_final.pt` (else its latest `checkpoint_{step}.pt`); a `config.json` beside it is read when present |
//! | ckkissane | directory with `cfg.json` + `cc_weights.pt`, or a `.pt`/`.safetensors` whose keys are `W_enc`, `W_dec`, ...; a `cfg.json` beside it is read when present |

pub(crate) mod ckkissane;
pub(crate) mod dictionary_learning;
pub mod ours;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::CrosscoderCheckpoint;
use crate::error::{CrosscoderError, Result};
use crate::tensors::{read_safetensors, TensorMap};

/// The layout a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointFormat {
    /// This crate's format ([`ours`]).
    Ours,
    /// dictionary_learning `save_pretrained` (`config.json` + `model.safetensors`).
    DictionaryLearningHub,
    /// dictionary_learning `torch.save(state_dict)` (`model_final.pt`, `checkpoint_*.pt`).
    DictionaryLearningPickle,
    /// The ckkissane replication (`cfg.json` + `cc_weights.pt`).
    Ckkissane,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::Ours => "stereo-crosscoder",
            CheckpointFormat::DictionaryLearningHub => "dictionary_learning (hub)",
            CheckpointFormat::DictionaryLearningPickle => "dictionary_learning (torch state_dict)",
            CheckpointFormat::Ckkissane => "ckkissane",
        })
    }
}

/// Files that identify each directory layout, in the order they are tried (hub resolution uses it too).
pub(crate) const DIR_LAYOUTS: [(CheckpointFormat, &[&str]); 4] = [
    (
        CheckpointFormat::Ours,
        &[ours::CONFIG_FILE, ours::WEIGHTS_FILE],
    ),
    (
        CheckpointFormat::DictionaryLearningHub,
        &["config.json", "model.safetensors"],
    ),
    (CheckpointFormat::Ckkissane, &["cfg.json", "cc_weights.pt"]),
    (
        CheckpointFormat::DictionaryLearningPickle,
        &["model_final.pt"],
    ),
];

/// Reads a local checkpoint (directory or file), detecting its format.
pub(crate) fn load_local(path: &Path) -> Result<(CrosscoderCheckpoint, CheckpointFormat)> {
    if path.is_dir() {
        load_dir(path)
    } else if path.is_file() {
        load_file(path)
    } else {
        Err(CrosscoderError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ))
    }
}

fn load_dir(dir: &Path) -> Result<(CrosscoderCheckpoint, CheckpointFormat)> {
    for (format, files) in DIR_LAYOUTS {
        if files.iter().all(|f| dir.join(f).is_file()) {
            tracing::debug!(dir = %dir.display(), %format, "detected checkpoint layout");
            return match format {
                CheckpointFormat::Ours => Ok((ours::load_dir(dir)?, format)),
                _ => load_file(&dir.join(files[files.len() - 1])),
            };
        }
    }
    if let Some(latest) = latest_training_checkpoint(dir)? {
        tracing::info!(file = %latest.display(), "no model_final.pt: loading the latest checkpoint_{{step}}.pt");
        return load_file(&latest);
    }
    let tried: Vec<String> = DIR_LAYOUTS
        .iter()
        .map(|(f, files)| format!("{f}: {}", files.join(" + ")))
        .collect();
    Err(CrosscoderError::UnrecognizedFormat {
        path: dir.to_path_buf(),
        reason: format!(
            "the directory holds none of the known layouts ({}), nor a dictionary_learning checkpoint_{{step}}.pt",
            tried.join("; ")
        ),
    })
}

/// The `checkpoint_{step}.pt` with the largest step in a dictionary_learning training directory (steps
/// compared as numbers, so `checkpoint_1000.pt` comes after `checkpoint_999.pt`).
fn latest_training_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CrosscoderError::io(dir, e))?;
    let mut latest: Option<(u64, PathBuf)> = None;
    for entry in entries {
        let path = entry.map_err(|e| CrosscoderError::io(dir, e))?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
            n.strip_prefix("checkpoint_")?
                .strip_suffix(".pt")?
                .parse::<u64>()
                .ok()
        });
        if let Some(step) = step.filter(|_| path.is_file()) {
            if latest.as_ref().is_none_or(|(best, _)| step > *best) {
                latest = Some((step, path));
            }
        }
    }
    Ok(latest.map(|(_, path)| path))
}

fn load_file(path: &Path) -> Result<(CrosscoderCheckpoint, CheckpointFormat)> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let (tensors, format_if_dl) = if is_safetensors {
        let (tensors, metadata) = read_safetensors(path)?;
        if let Some(ours) = ours::load_embedded(tensors.clone(), &metadata) {
            return Ok((ours?, CheckpointFormat::Ours));
        }
        (tensors, CheckpointFormat::DictionaryLearningHub)
    } else {
        (
            crate::pickle::read_torch_file(path)?,
            CheckpointFormat::DictionaryLearningPickle,
        )
    };
    from_tensor_map(tensors, format_if_dl)
}

fn sibling(path: &Path, name: &str) -> Option<PathBuf> {
    let p = path.parent()?.join(name);
    p.is_file().then_some(p)
}

fn from_tensor_map(
    t: TensorMap,
    format_if_dl: CheckpointFormat,
) -> Result<(CrosscoderCheckpoint, CheckpointFormat)> {
    let has = |k: &str| t.contains(k) || t.contains(&format!("_orig_mod.{k}"));
    if has("encoder.weight") {
        let cfg = sibling(&t.path, "config.json")
            .map(|p| dictionary_learning::DlConfig::read(&p))
            .transpose()?;
        return Ok((dictionary_learning::from_tensors(t, cfg)?, format_if_dl));
    }
    if t.contains("W_enc") && t.contains("W_dec") {
        let cfg = sibling(&t.path, "cfg.json")
            .map(|p| ckkissane::CkConfig::read(&p))
            .transpose()?;
        return Ok((
            ckkissane::from_tensors(t, cfg)?,
            CheckpointFormat::Ckkissane,
        ));
    }
    Err(CrosscoderError::UnrecognizedFormat {
        path: t.path.clone(),
        reason: format!(
            "its tensors ({}) are neither dictionary_learning's (encoder.weight, ...) nor ckkissane's (W_enc, W_dec, ...)",
            t.keys_joined()
        ),
    })
}
