//! The half-step patches: what the chat model's layers after the crosscoder's hook are fed
//! (REFERENCE.md section 5, science-of-finetuning's `CrossCoderSteeringLatent`).

use crosscoder::Crosscoder;
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SteeringError};

/// One way of building the residual the chat model's later layers read. `f = enc([h^b; h^c])`, and
/// `sum_S f_j (d_j^c - d_j^b)` is the latents' chat-minus-base contribution in the models' raw units
/// (the decoder-bias difference is not transferred).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Patch {
    /// `h^b`: how far the chat model's later layers are from themselves on the base residual (the
    /// base->chat gap).
    Base,
    /// `h^b + sum_all f_j (d_j^c - d_j^b)`: everything the crosscoder explains.
    AllLatents,
    /// `h^c - sum_all f_j (d_j^c - d_j^b)`: the chat residual with the crosscoder's explanation of the
    /// difference taken away (what is left is in its error).
    ChatError,
    /// `h^b + sum_{j in S} f_j (d_j^c - d_j^b)`.
    Latents {
        /// The set `S`.
        latents: Vec<usize>,
    },
}

/// A named patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchSetup {
    /// Its name in reports (`base`, `all_latents`, `chat_error`, `chosen`, `random_seed_3`, ...).
    pub name: String,
    /// The patch.
    pub patch: Patch,
}

impl PatchSetup {
    /// `patch` named `name`.
    pub fn new(name: impl Into<String>, patch: Patch) -> Self {
        PatchSetup {
            name: name.into(),
            patch,
        }
    }
}

/// The patched residual of `n` positions, from their base and chat rows `[n, d]` and the latent
/// activations `f` `[n, F]` of the pair.
pub(crate) fn patched_rows(
    crosscoder: &dyn Crosscoder,
    patch: &Patch,
    base: ArrayView2<'_, f32>,
    chat: ArrayView2<'_, f32>,
    f: &Array2<f32>,
) -> Result<Array2<f32>> {
    let difference = |keep: Option<&[usize]>| -> Result<Array2<f32>> {
        let code = match keep {
            None => f.clone(),
            Some(latents) => {
                let mut code = Array2::zeros(f.raw_dim());
                for &j in latents {
                    code.column_mut(j).assign(&f.column(j));
                }
                code
            }
        };
        let contribution = model_pair::dense_contribution(crosscoder, code)?;
        Ok(&contribution.index_axis(Axis(1), stereo_core::CHAT)
            - &contribution.index_axis(Axis(1), stereo_core::BASE))
    };
    Ok(match patch {
        Patch::Base => base.to_owned(),
        Patch::AllLatents => &base + &difference(None)?,
        Patch::ChatError => &chat - &difference(None)?,
        Patch::Latents { latents } => &base + &difference(Some(latents))?,
    })
}

/// Checks the latents a patch names against a dictionary of `dict_size` latents.
pub(crate) fn check_patch(setup: &PatchSetup, dict_size: usize) -> Result<()> {
    if let Patch::Latents { latents } = &setup.patch {
        if latents.is_empty() {
            return Err(SteeringError::InvalidInput {
                reason: format!("patch set-up `{}` names no latent", setup.name),
            });
        }
        if let Some(j) = latents.iter().find(|j| **j >= dict_size) {
            return Err(SteeringError::InvalidInput {
                reason: format!(
                    "patch set-up `{}` names latent {j}, but the crosscoder has {dict_size}",
                    setup.name
                ),
            });
        }
    }
    Ok(())
}
