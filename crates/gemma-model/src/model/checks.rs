//! What a run request must satisfy before anything runs: the batch's length and token ids, the hooks'
//! layers (per-head hooks too), the loaded layers and unembedding, a resumed residual's shape.

use burn::tensor::backend::Backend;

use super::Gemma2;
use crate::batch::TokenBatch;
use crate::error::{GemmaError, Result};
use crate::hooks::RunRequest;

impl<B: Backend> Gemma2<B> {
    /// Refuses a request this model cannot run, by name.
    pub(super) fn check_request(&self, batch: &TokenBatch, request: &RunRequest) -> Result<()> {
        self.check_length("the batch", batch.seq_len())?;
        let n_layers = self.config.num_hidden_layers;
        for hook in request.head_hooks() {
            if hook.layer() >= n_layers {
                return Err(GemmaError::HookOutOfRange {
                    hook: hook.to_string(),
                    layer: hook.layer(),
                    n_layers,
                });
            }
        }
        for hook in request
            .capture
            .iter()
            .chain(request.interventions.iter().map(|i| &i.hook))
        {
            if let Some(layer) = hook.layer() {
                if layer >= n_layers {
                    return Err(GemmaError::HookOutOfRange {
                        hook: hook.to_string(),
                        layer,
                        n_layers,
                    });
                }
            }
        }
        if let Some(resume) = &request.resume {
            self.check_resume(batch, request, resume)?;
        }
        let needed = request.layers_needed(n_layers);
        if needed > self.layers.len() {
            return Err(GemmaError::NotLoaded {
                what: format!("layers 0..={}", needed - 1),
                loaded: format!("layers 0..{} (stop_at_layer)", self.layers.len()),
            });
        }
        if request.logits && self.unembedding.is_none() {
            return Err(GemmaError::NotLoaded {
                what: "logits".into(),
                loaded: "no unembedding".into(),
            });
        }
        if let Some(bad) = batch
            .ids()
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(GemmaError::InvalidInput {
                reason: format!(
                    "token id {bad} is outside the vocabulary of {} tokens",
                    self.config.vocab_size
                ),
            });
        }
        Ok(())
    }
}
