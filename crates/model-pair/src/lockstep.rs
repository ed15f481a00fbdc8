//! Generation with a crosscoder latent edited in the chat model's residual stream.
//!
//! Clamping latent `j` needs its activation `f_j`, and `f_j` needs both halves `[h^b, h^c]` at the
//! crosscoder's layer. So the base model decodes in lockstep with the chat model, with its own KV
//! cache, but only up to the hook (it is loaded no further). At every step the pair is encoded and the
//! chat stream is edited before the chat model's later layers see it ([`LockstepStepper`]).
//!
//! The edits ([`LatentEdit`], REFERENCE.md section 5) keep the crosscoder's error term, and are made in
//! the model's raw units (a crosscoder that scales or centres its inputs decodes back to them):
//! - clamp `j` to `v`: `x' = h^c + (v - f_j) d_j^c` (ablation is `v = 0`); several latents at once;
//! - steer: `x' = h^c + alpha d_j^c`;
//! - patch into base (science-of-finetuning's half-step): `x' = h^b + sum_{j in S} f_j (d_j^c - d_j^b)`.
//!
//! Each `d_j^m` term is computed as `decode(delta)_m - decode(0)_m`, so that any affine input
//! normaliser is undone exactly. `<bos>` is left unedited unless asked (its norm is huge).

use std::sync::{Arc, Mutex};

use crosscoder::{Crosscoder, CrosscoderError};
use gemma_model::generation::{InterventionScope, StepOutput, StepPhase, TokenStepper};
use gemma_model::{
    DecodeSession, HookPoint, Intervention, LanguageModel, LogitPositions, RunRequest, TokenBatch,
};
use ndarray::{s, Array2, Array3, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{PairError, Result};
use crate::{BASE, CHAT};

/// What to do to the chat stream at the crosscoder's hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentEdit {
    /// Set each latent `j` to `v`, keeping the error: `x' = h^c + sum (v - f_j) d_j^c`.
    Clamp(Vec<(usize, f32)>),
    /// Add `alpha d_j^c` for each `(j, alpha)`.
    Steer(Vec<(usize, f32)>),
    /// Replace the chat stream by `h^b + sum_{j in S} f_j (d_j^c - d_j^b)`; `None` is every latent.
    PatchIntoBase {
        /// The latents `S` whose chat-minus-base contribution is added.
        latents: Option<Vec<usize>>,
    },
}

impl LatentEdit {
    /// Setting each of `latents` to 0.
    pub fn ablate(latents: &[usize]) -> Self {
        LatentEdit::Clamp(latents.iter().map(|j| (*j, 0.0)).collect())
    }

    /// The latents the edit names (every latent for a patch of all).
    pub fn latents(&self) -> Vec<usize> {
        match self {
            LatentEdit::Clamp(v) | LatentEdit::Steer(v) => v.iter().map(|(j, _)| *j).collect(),
            LatentEdit::PatchIntoBase { latents } => latents.clone().unwrap_or_default(),
        }
    }

    /// Checks the latent indices against a dictionary of `dict_size` latents.
    pub fn check(&self, dict_size: usize) -> Result<()> {
        if let Some(j) = self.latents().into_iter().find(|j| *j >= dict_size) {
            return Err(PairError::InvalidInput {
                reason: format!("latent {j} is out of range: the crosscoder has {dict_size}"),
            });
        }
        Ok(())
    }

    /// The edited chat rows, given the base and chat rows `[n, d]` at the hook.
    pub fn apply(
        &self,
        crosscoder: &dyn Crosscoder,
        base: ArrayView2<'_, f32>,
        chat: ArrayView2<'_, f32>,
    ) -> std::result::Result<Array2<f32>, CrosscoderError> {
        let n = base.nrows();
        let f_dim = crosscoder.dict_size();
        // decode(delta) - decode(0): the latents' contribution in the model's raw units.
        let contribution =
            |delta: &Array2<f32>| -> std::result::Result<Array3<f32>, CrosscoderError> {
                let zero = crosscoder.decode(Array2::zeros((1, f_dim)).view())?;
                let mut out = crosscoder.decode(delta.view())?;
                out -= &zero;
                Ok(out)
            };
        let encode = || {
            let mut x = Array3::zeros((n, 2, base.ncols()));
            x.index_axis_mut(Axis(1), BASE).assign(&base);
            x.index_axis_mut(Axis(1), CHAT).assign(&chat);
            crosscoder.encode(x.view())
        };
        match self {
            LatentEdit::Clamp(values) => {
                let f = encode()?;
                let mut delta = Array2::zeros((n, f_dim));
                for (j, v) in values {
                    delta.column_mut(*j).assign(&f.column(*j).mapv(|fj| v - fj));
                }
                Ok(&chat + &contribution(&delta)?.index_axis(Axis(1), CHAT))
            }
            LatentEdit::Steer(values) => {
                let mut delta = Array2::zeros((n, f_dim));
                for (j, alpha) in values {
                    delta.column_mut(*j).fill(*alpha);
                }
                Ok(&chat + &contribution(&delta)?.index_axis(Axis(1), CHAT))
            }
            LatentEdit::PatchIntoBase { latents } => {
                let f = encode()?;
                let kept = match latents {
                    None => f,
                    Some(set) => {
                        let mut kept = Array2::zeros((n, f_dim));
                        for j in set {
                            kept.column_mut(*j).assign(&f.column(*j));
                        }
                        kept
                    }
                };
                let c = contribution(&kept)?;
                let mut patched = &base + &c.index_axis(Axis(1), CHAT);
                patched -= &c.index_axis(Axis(1), BASE);
                Ok(patched)
            }
        }
    }
}

/// An edit and where it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditPlan {
    /// The edit.
    pub edit: LatentEdit,
    /// The prompt, the generated tokens, or both.
    pub scope: InterventionScope,
    /// Whether `<bos>` positions are edited too (default no: their norm is huge).
    pub edit_bos: bool,
}

impl EditPlan {
    /// `edit` at every position but `<bos>`.
    pub fn everywhere(edit: LatentEdit) -> Self {
        EditPlan {
            edit,
            scope: InterventionScope::All,
            edit_bos: false,
        }
    }
}

/// The base model up to the hook and the chat model, decoding the same tokens, with an optional
/// [`EditPlan`] applied to the chat stream at the hook through the crosscoder.
pub struct LockstepStepper<'m> {
    base: Box<dyn DecodeSession + 'm>,
    chat: Box<dyn DecodeSession + 'm>,
    names: [String; 2],
    crosscoder: Arc<dyn Crosscoder>,
    hook: HookPoint,
    bos_token_id: u32,
    plan: Option<EditPlan>,
}

impl<'m> LockstepStepper<'m> {
    /// Both models decoding `batch_size` rows with room for `capacity` positions. The base model runs
    /// only the layers the hook needs; the chat model runs every layer (it needs the unembedding).
    pub fn new(
        base: &'m dyn LanguageModel,
        chat: &'m dyn LanguageModel,
        crosscoder: Arc<dyn Crosscoder>,
        hook: HookPoint,
        batch_size: usize,
        capacity: usize,
    ) -> Result<Self> {
        check_lockstep(base, chat, crosscoder.as_ref(), hook)?;
        let names = [base.name().to_string(), chat.name().to_string()];
        let base_session = base
            .start_decoding(batch_size, hook.layers_needed(), capacity)
            .map_err(|e| PairError::model(BASE, &names[BASE], e))?;
        let chat_session = chat
            .start_decoding(batch_size, chat.config().num_hidden_layers, capacity)
            .map_err(|e| PairError::model(CHAT, &names[CHAT], e))?;
        Ok(LockstepStepper {
            base: base_session,
            chat: chat_session,
            names,
            crosscoder,
            hook,
            bos_token_id: chat.config().bos_token_id,
            plan: None,
        })
    }

    /// Applies `plan` from the next step on.
    pub fn with_plan(mut self, plan: EditPlan) -> Result<Self> {
        plan.edit.check(self.crosscoder.dict_size())?;
        self.plan = Some(plan);
        Ok(self)
    }

    /// The chat request of a step: logits, and the edit where the plan applies.
    fn chat_request(
        &self,
        tokens: &TokenBatch,
        phase: StepPhase,
        base_at_hook: Array3<f32>,
        failure: &Arc<Mutex<Option<CrosscoderError>>>,
    ) -> RunRequest {
        let mut request = RunRequest::default().with_logits();
        let Some(plan) = self.plan.as_ref().filter(|p| p.scope.applies_to(phase)) else {
            return request;
        };
        let editable: Vec<bool> = tokens
            .ids()
            .iter()
            .zip(tokens.mask())
            .map(|(id, real)| *real && (plan.edit_bos || *id != self.bos_token_id))
            .collect();
        let (edit, crosscoder, failure) =
            (plan.edit.clone(), self.crosscoder.clone(), failure.clone());
        request.interventions.push(Intervention {
            hook: self.hook,
            edit: Arc::new(move |chat: &mut Array3<f32>| {
                let (b, t, d) = chat.dim();
                let rows: Vec<(usize, usize)> = (0..b * t)
                    .filter(|i| editable[*i])
                    .map(|i| (i / t, i % t))
                    .collect();
                if rows.is_empty() {
                    return;
                }
                let gather = |x: &Array3<f32>| {
                    let mut out = Array2::zeros((rows.len(), d));
                    for (k, (r, p)) in rows.iter().enumerate() {
                        out.row_mut(k).assign(&x.slice(s![*r, *p, ..]));
                    }
                    out
                };
                match edit.apply(
                    crosscoder.as_ref(),
                    gather(&base_at_hook).view(),
                    gather(chat).view(),
                ) {
                    Ok(edited) => {
                        for (k, (r, p)) in rows.iter().enumerate() {
                            chat.slice_mut(s![*r, *p, ..]).assign(&edited.row(k));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = failure.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            }),
        });
        request
    }
}

impl TokenStepper for LockstepStepper<'_> {
    type Error = PairError;

    fn batch_size(&self) -> usize {
        self.chat.batch_size()
    }

    fn step(
        &mut self,
        tokens: &TokenBatch,
        phase: StepPhase,
        logits: LogitPositions,
    ) -> Result<StepOutput> {
        let base_out = self
            .base
            .feed(tokens, &RunRequest::capture([self.hook]))
            .map_err(|e| PairError::model(BASE, &self.names[BASE], e))?;
        let base_at_hook =
            base_out
                .activations
                .into_values()
                .next()
                .ok_or_else(|| PairError::InvalidInput {
                    reason: format!("the base model returned nothing at {}", self.hook),
                })?;
        let failure = Arc::new(Mutex::new(None));
        let mut request = self.chat_request(tokens, phase, base_at_hook, &failure);
        request.logits_at = logits;
        let out = self
            .chat
            .feed(tokens, &request)
            .map_err(|e| PairError::model(CHAT, &self.names[CHAT], e))?;
        if let Some(e) = failure.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(PairError::Crosscoder(Box::new(e)));
        }
        StepOutput::from_run(out).map_err(|e| PairError::model(CHAT, &self.names[CHAT], e))
    }
}

/// Checks that the pair and the crosscoder fit: two models of the crosscoder's width, the base model
/// loaded up to the hook, the chat model loaded whole with its unembedding.
fn check_lockstep(
    base: &dyn LanguageModel,
    chat: &dyn LanguageModel,
    crosscoder: &dyn Crosscoder,
    hook: HookPoint,
) -> Result<()> {
    crate::check_configs(base.config(), chat.config(), hook)?;
    let d = base.config().hidden_size;
    if crosscoder.n_models() != 2 || crosscoder.d_model() != d {
        return Err(PairError::Mismatch {
            reason: format!(
                "the crosscoder encodes {} models of width {}, the pair has 2 of width {d}",
                crosscoder.n_models(),
                crosscoder.d_model()
            ),
        });
    }
    if base.loaded_layers() < hook.layers_needed() {
        return Err(PairError::Mismatch {
            reason: format!(
                "the base model {} is loaded to layer {} but the hook {hook} needs {}",
                base.name(),
                base.loaded_layers(),
                hook.layers_needed()
            ),
        });
    }
    if chat.loaded_layers() < chat.config().num_hidden_layers || !chat.has_unembedding() {
        return Err(PairError::Mismatch {
            reason: format!(
                "the chat model {} must be loaded whole, with its unembedding, to generate",
                chat.name()
            ),
        });
    }
    Ok(())
}
