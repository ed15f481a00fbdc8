//! The activations file: a run's captured hooks (and logits) in one safetensors file with stable names, what
//! the `activations` example writes and other tools read.
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | each captured hook, named exactly by the hook (`blocks.13.hook_resid_post`) | f32 | `[n_prompts, max_len, d_model]` |
//! | each captured per-head hook, named by the hook (`blocks.13.attn.hook_z`) | f32 | its shape (`HeadHook`), e.g. `[n_prompts, max_len, heads, head_dim]` |
//! | `logits` (when the run computed them) | f32 | `[n_prompts, max_len, vocab]` |
//! | `input_ids` | i64 | `[n_prompts, max_len]` |
//! | `attention_mask` | i64 | `[n_prompts, max_len]` (1 for real tokens) |
//!
//! Metadata: `model`, `revision` (empty when unknown), `chat_template` (`true`/`false`) and `padding`
//! (the batch's padding side). Padding positions hold zeros. The file is replaced atomically.

use std::path::Path;

use stereo_core::safetensors_file::{metadata, write, OwnedTensor};

use crate::batch::{PaddingSide, TokenBatch};
use crate::error::{GemmaError, Result};
use crate::model::RunOutput;

/// What the file records about where the activations came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationsSource {
    /// The model (hub id or directory).
    pub model: String,
    /// Its hub revision, if known.
    pub revision: Option<String>,
    /// Whether the prompts were wrapped in the chat template.
    pub chat_template: bool,
}

/// The tensors of the file for `output`, a run of `batch`, in the order they are listed above.
pub fn activation_tensors(batch: &TokenBatch, output: &RunOutput) -> Vec<OwnedTensor> {
    let mut tensors: Vec<OwnedTensor> = output
        .activations
        .iter()
        .map(|(hook, acts)| {
            OwnedTensor::f32(
                hook.to_string(),
                acts.shape().to_vec(),
                acts.iter().copied(),
            )
        })
        .collect();
    tensors.extend(output.heads.iter().map(|(hook, values)| {
        OwnedTensor::f32(
            hook.to_string(),
            values.shape().to_vec(),
            values.iter().copied(),
        )
    }));
    if let Some(logits) = &output.logits {
        tensors.push(OwnedTensor::f32(
            "logits",
            logits.shape().to_vec(),
            logits.iter().copied(),
        ));
    }
    let shape = vec![batch.batch_size(), batch.seq_len()];
    tensors.push(OwnedTensor::i64(
        "input_ids",
        shape.clone(),
        batch.ids_array().iter().copied(),
    ));
    tensors.push(OwnedTensor::i64(
        "attention_mask",
        shape,
        batch.mask_array().iter().copied(),
    ));
    tensors
}

/// Writes the activations file of `output` (a run of `batch`) to `path`, atomically; returns the number
/// of tensors written.
///
/// # Errors
/// [`GemmaError::Io`] naming the file when it cannot be encoded or written.
pub fn write_activations(
    path: &Path,
    batch: &TokenBatch,
    output: &RunOutput,
    source: &ActivationsSource,
) -> Result<usize> {
    let tensors = activation_tensors(batch, output);
    let padding = match batch.padding_side() {
        PaddingSide::Left => "left",
        PaddingSide::Right => "right",
    };
    let metadata = metadata([
        ("model", source.model.clone()),
        ("revision", source.revision.clone().unwrap_or_default()),
        ("chat_template", source.chat_template.to_string()),
        ("padding", padding.to_string()),
    ]);
    write(path, &tensors, metadata).map_err(|e| GemmaError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(tensors.len())
}
