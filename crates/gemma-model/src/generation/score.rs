//! Teacher forcing: the logits a stepper gives to a fixed continuation of each prompt, for
//! distribution-shift (KL) and likelihood measures on the same tokens under different interventions.

use ndarray::{s, Array2};

use super::{StepPhase, TokenStepper};
use crate::batch::{PaddingSide, TokenBatch};
use crate::error::GemmaError;
use crate::hooks::LogitPositions;

/// For each prompt and its continuation, the logits that predict each continuation token,
/// `[continuation.len(), vocab]`: the prompt's last position, then every continuation token but the
/// last. Two steps: the left-padded prompts, then the right-padded continuations (phase
/// [`StepPhase::Generated`] with index 0, so scoped interventions see them as generated tokens).
pub fn score_continuations<S: TokenStepper + ?Sized>(
    stepper: &mut S,
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
    pad_token_id: u32,
) -> Result<Vec<Array2<f32>>, S::Error> {
    if prompts.len() != continuations.len() || prompts.len() != stepper.batch_size() {
        return Err(GemmaError::InvalidInput {
            reason: format!(
                "{} prompts and {} continuations for a stepper of {} rows",
                prompts.len(),
                continuations.len(),
                stepper.batch_size()
            ),
        }
        .into());
    }
    if let Some(row) = continuations.iter().position(Vec::is_empty) {
        return Err(GemmaError::InvalidInput {
            reason: format!("continuation {row} has no token to score"),
        }
        .into());
    }
    let batch = TokenBatch::new(prompts, pad_token_id, PaddingSide::Left)?;
    let first = stepper.step(&batch, StepPhase::Prompt, LogitPositions::Last)?;
    // Every continuation but its last token; a one-token continuation feeds a pad it ignores.
    let fed: Vec<Vec<u32>> = continuations
        .iter()
        .map(|c| {
            if c.len() > 1 {
                c[..c.len() - 1].to_vec()
            } else {
                vec![pad_token_id]
            }
        })
        .collect();
    let rest = if continuations.iter().any(|c| c.len() > 1) {
        let batch = TokenBatch::new(&fed, pad_token_id, PaddingSide::Right)?;
        Some(stepper.step(
            &batch,
            StepPhase::Generated { index: 0 },
            LogitPositions::All,
        )?)
    } else {
        None
    };
    let vocab = first.logits.dim().2;
    Ok(continuations
        .iter()
        .enumerate()
        .map(|(row, c)| {
            let mut out = Array2::zeros((c.len(), vocab));
            out.row_mut(0).assign(&first.logits.slice(s![row, 0, ..]));
            if let Some(rest) = &rest {
                out.slice_mut(s![1.., ..])
                    .assign(&rest.logits.slice(s![row, ..c.len() - 1, ..]));
            }
            out
        })
        .collect())
}
