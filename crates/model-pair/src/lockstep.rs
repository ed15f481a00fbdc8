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

use std::collections::BTreeMap;
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
    /// The change a clamp of each `source` would make, written along another latent's decoder vector:
    /// `x' = h^c + sum (v - f_source) * scale * d_target^c`. With `scale = ||d_source^c|| /
    /// ||d_target^c||` it moves the stream by exactly as much, at exactly the same positions, as the
    /// clamp of the source, in a different direction: the matched-norm control of a clamp or an
    /// ablation.
    Redirected(Vec<RedirectedClamp>),
}

/// One entry of [`LatentEdit::Redirected`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedirectedClamp {
    /// The latent whose activation sets the size of the change.
    pub source: usize,
    /// The latent whose decoder vector gives its direction.
    pub target: usize,
    /// The value the source is notionally clamped to (0: an ablation).
    pub value: f32,
    /// The factor on the target's decoder vector.
    pub scale: f32,
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
            LatentEdit::Redirected(v) => v.iter().flat_map(|r| [r.source, r.target]).collect(),
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

    /// The edited chat rows, given the base and chat rows `[n, d]` at the hook. To apply one edit
    /// many times, [`prepare`](Self::prepare) it once.
    pub fn apply(
        &self,
        crosscoder: &dyn Crosscoder,
        base: ArrayView2<'_, f32>,
        chat: ArrayView2<'_, f32>,
    ) -> std::result::Result<Array2<f32>, CrosscoderError> {
        self.prepare(crosscoder)?.apply(crosscoder, base, chat)
    }

    /// The edit with the raw-unit directions of the latents it names decoded once (when it names at
    /// most [`PreparedEdit::MAX_PRECOMPUTED`]; more are decoded densely at each application).
    pub fn prepare(
        &self,
        crosscoder: &dyn Crosscoder,
    ) -> std::result::Result<PreparedEdit, CrosscoderError> {
        if let LatentEdit::Redirected(entries) = self {
            return PreparedEdit::redirected(self, entries, crosscoder);
        }
        // Each latent once; a latent named twice takes its last value.
        let named: BTreeMap<usize, f32> = match self {
            LatentEdit::Clamp(v) | LatentEdit::Steer(v) => v.iter().copied().collect(),
            LatentEdit::PatchIntoBase { latents: Some(set) } => {
                set.iter().map(|j| (*j, 0.0)).collect()
            }
            LatentEdit::PatchIntoBase { latents: None } => BTreeMap::new(),
            LatentEdit::Redirected(_) => unreachable!("prepared above"),
        };
        let (latents, values): (Vec<usize>, Vec<f32>) = named.into_iter().unzip();
        let directions = if latents.len() <= PreparedEdit::MAX_PRECOMPUTED
            && !matches!(self, LatentEdit::PatchIntoBase { latents: None })
        {
            Some(decoded_directions(crosscoder, &latents)?)
        } else {
            None
        };
        Ok(PreparedEdit {
            edit: self.clone(),
            latents,
            values,
            sources: Vec::new(),
            scales: Vec::new(),
            directions,
        })
    }
}

/// `decode(e_j) - decode(0)` for each of `latents`, `[latents, n_models * d]`: any affine
/// normaliser is undone.
fn decoded_directions(
    crosscoder: &dyn Crosscoder,
    latents: &[usize],
) -> std::result::Result<Array2<f32>, CrosscoderError> {
    let mut one_hot = Array2::zeros((latents.len() + 1, crosscoder.dict_size()));
    for (row, j) in latents.iter().enumerate() {
        one_hot[[row + 1, *j]] = 1.0;
    }
    let decoded = crosscoder.decode(one_hot.view())?;
    let (_, m, d) = decoded.dim();
    Ok(Array2::from_shape_fn((latents.len(), m * d), |(l, c)| {
        decoded[[l + 1, c / d, c % d]] - decoded[[0, c / d, c % d]]
    }))
}

/// A [`LatentEdit`] ready to apply at every step of a generation: the decoder directions of the
/// latents it names are decoded once, so that a step costs one encode (clamp, patch) or nothing
/// (steer) on top of the models, instead of two dense decodes.
#[derive(Debug, Clone)]
pub struct PreparedEdit {
    edit: LatentEdit,
    /// The named latents, ascending, each once.
    latents: Vec<usize>,
    /// Their clamp values or steering strengths (0 for a patch).
    values: Vec<f32>,
    /// For a redirected clamp: each entry's source latent (whose activation sets the size).
    sources: Vec<usize>,
    /// For a redirected clamp: each entry's scale.
    scales: Vec<f32>,
    /// `decode(e_j) - decode(0)` for each named latent, `[latents, n_models * d]`.
    directions: Option<Array2<f32>>,
}

impl PreparedEdit {
    /// Edits naming at most this many latents have their directions decoded in advance.
    pub const MAX_PRECOMPUTED: usize = 256;

    /// The edit.
    pub fn edit(&self) -> &LatentEdit {
        &self.edit
    }

    /// A redirected clamp: the targets' directions decoded, entries kept in order.
    fn redirected(
        edit: &LatentEdit,
        entries: &[RedirectedClamp],
        crosscoder: &dyn Crosscoder,
    ) -> std::result::Result<PreparedEdit, CrosscoderError> {
        let latents: Vec<usize> = entries.iter().map(|r| r.target).collect();
        Ok(PreparedEdit {
            edit: edit.clone(),
            directions: Some(decoded_directions(crosscoder, &latents)?),
            latents,
            values: entries.iter().map(|r| r.value).collect(),
            sources: entries.iter().map(|r| r.source).collect(),
            scales: entries.iter().map(|r| r.scale).collect(),
        })
    }

    /// The edited chat rows, given the base and chat rows `[n, d]` at the hook.
    pub fn apply(
        &self,
        crosscoder: &dyn Crosscoder,
        base: ArrayView2<'_, f32>,
        chat: ArrayView2<'_, f32>,
    ) -> std::result::Result<Array2<f32>, CrosscoderError> {
        let n = base.nrows();
        let encode = || {
            let mut x = Array3::zeros((n, 2, base.ncols()));
            x.index_axis_mut(Axis(1), BASE).assign(&base);
            x.index_axis_mut(Axis(1), CHAT).assign(&chat);
            crosscoder.encode(x.view())
        };
        match &self.edit {
            LatentEdit::Clamp(_) => {
                let f = encode()?;
                let coefficients = Array2::from_shape_fn((n, self.latents.len()), |(r, l)| {
                    self.values[l] - f[[r, self.latents[l]]]
                });
                let c = self.contribution(crosscoder, &coefficients)?;
                Ok(&chat + &c.index_axis(Axis(1), CHAT))
            }
            LatentEdit::Steer(_) => {
                let coefficients =
                    Array2::from_shape_fn((n, self.latents.len()), |(_, l)| self.values[l]);
                let c = self.contribution(crosscoder, &coefficients)?;
                Ok(&chat + &c.index_axis(Axis(1), CHAT))
            }
            LatentEdit::Redirected(_) => {
                let f = encode()?;
                let coefficients = Array2::from_shape_fn((n, self.latents.len()), |(r, l)| {
                    (self.values[l] - f[[r, self.sources[l]]]) * self.scales[l]
                });
                let c = self.contribution(crosscoder, &coefficients)?;
                Ok(&chat + &c.index_axis(Axis(1), CHAT))
            }
            LatentEdit::PatchIntoBase { latents } => {
                let f = encode()?;
                let c = match latents {
                    None => dense_contribution(crosscoder, f)?,
                    Some(_) => {
                        let coefficients =
                            Array2::from_shape_fn((n, self.latents.len()), |(r, l)| {
                                f[[r, self.latents[l]]]
                            });
                        self.contribution(crosscoder, &coefficients)?
                    }
                };
                let mut patched = &base + &c.index_axis(Axis(1), CHAT);
                patched -= &c.index_axis(Axis(1), BASE);
                Ok(patched)
            }
        }
    }

    /// `sum_l coefficients[:, l] d_{latents[l]}` in raw units, `[n, n_models, d]`.
    fn contribution(
        &self,
        crosscoder: &dyn Crosscoder,
        coefficients: &Array2<f32>,
    ) -> std::result::Result<Array3<f32>, CrosscoderError> {
        let n = coefficients.nrows();
        let (m, d) = (crosscoder.n_models(), crosscoder.d_model());
        match &self.directions {
            Some(directions) => {
                let flat = coefficients.dot(directions);
                Ok(Array3::from_shape_fn((n, m, d), |(r, a, b)| {
                    flat[[r, a * d + b]]
                }))
            }
            None => {
                let mut delta = Array2::zeros((n, crosscoder.dict_size()));
                for (l, j) in self.latents.iter().enumerate() {
                    delta.column_mut(*j).assign(&coefficients.column(l));
                }
                dense_contribution(crosscoder, delta)
            }
        }
    }
}

/// `decode(delta) - decode(0)`: the latents' contribution in the model's raw units, `[n, n_models,
/// d]` (an affine input normaliser is undone exactly).
pub fn dense_contribution(
    crosscoder: &dyn Crosscoder,
    delta: Array2<f32>,
) -> std::result::Result<Array3<f32>, CrosscoderError> {
    let zero = crosscoder.decode(Array2::zeros((1, crosscoder.dict_size())).view())?;
    let mut out = crosscoder.decode(delta.view())?;
    out -= &zero;
    Ok(out)
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
    /// The plan's edit, prepared once.
    prepared: Option<Arc<PreparedEdit>>,
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
            prepared: None,
        })
    }

    /// Applies `plan` from the next step on.
    pub fn with_plan(mut self, plan: EditPlan) -> Result<Self> {
        plan.edit.check(self.crosscoder.dict_size())?;
        let prepared = plan
            .edit
            .prepare(self.crosscoder.as_ref())
            .map_err(|e| PairError::Crosscoder(Box::new(e)))?;
        self.prepared = Some(Arc::new(prepared));
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
        let Some(prepared) = self.prepared.clone() else {
            return request;
        };
        let editable: Vec<bool> = tokens
            .ids()
            .iter()
            .zip(tokens.mask())
            .map(|(id, real)| *real && (plan.edit_bos || *id != self.bos_token_id))
            .collect();
        let (crosscoder, failure) = (self.crosscoder.clone(), failure.clone());
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
                match prepared.apply(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crosscoder::throughput::uniform;
    use crosscoder::{
        BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights, InputNormalizer,
    };
    use ndarray::{Array1, Array3};

    const D: usize = 8;
    const F: usize = 12;

    fn crosscoder() -> Box<dyn Crosscoder> {
        let weights = CrosscoderWeights {
            w_enc: Array3::from_shape_vec((2, D, F), uniform(2 * D * F, 1, 0.3)).unwrap(),
            b_enc: Array1::from_vec(uniform(F, 2, 0.05)),
            w_dec: Array3::from_shape_vec((2, F, D), uniform(2 * D * F, 3, 1.0)).unwrap(),
            b_dec: Array2::from_shape_vec((2, D), uniform(2 * D, 4, 0.5)).unwrap(),
        };
        CrosscoderCheckpoint::new(
            CrosscoderConfig::relu(2, D, F),
            weights,
            InputNormalizer::ScalingFactors(vec![2.0, 0.5]),
        )
        .unwrap()
        .build(BackendKind::Flex)
        .unwrap()
    }

    #[test]
    fn precomputed_directions_equal_the_dense_decode_for_every_edit() {
        let cc = crosscoder();
        let base = Array2::from_shape_vec((3, D), uniform(3 * D, 5, 2.0)).unwrap();
        let chat = Array2::from_shape_vec((3, D), uniform(3 * D, 6, 2.0)).unwrap();
        let edits = [
            // Latent 2 named twice: the last value holds.
            LatentEdit::Clamp(vec![(2, 0.5), (5, 0.0), (2, 1.5)]),
            LatentEdit::Steer(vec![(7, -2.0), (1, 3.0)]),
            LatentEdit::PatchIntoBase {
                latents: Some(vec![4, 0, 4]),
            },
            LatentEdit::Redirected(vec![RedirectedClamp {
                source: 3,
                target: 9,
                value: 2.0,
                scale: 1.5,
            }]),
        ];
        for edit in edits {
            let prepared = edit.prepare(cc.as_ref()).unwrap();
            assert!(prepared.directions.is_some());
            let dense = PreparedEdit {
                directions: None,
                ..prepared.clone()
            };
            let fast = prepared
                .apply(cc.as_ref(), base.view(), chat.view())
                .unwrap();
            let slow = dense.apply(cc.as_ref(), base.view(), chat.view()).unwrap();
            let err = (&fast - &slow).iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(err < 1e-5, "{edit:?}: {err}");
            assert!((&fast - &chat).iter().any(|v| v.abs() > 1e-3), "{edit:?}");
        }
    }

    #[test]
    fn a_redirected_clamp_moves_the_stream_as_far_as_the_clamp_in_another_direction() {
        let cc = crosscoder();
        let base = Array2::from_shape_vec((4, D), uniform(4 * D, 7, 2.0)).unwrap();
        let chat = Array2::from_shape_vec((4, D), uniform(4 * D, 8, 2.0)).unwrap();
        let apply = |edit: LatentEdit| edit.apply(cc.as_ref(), base.view(), chat.view()).unwrap();
        let clamp = apply(LatentEdit::Clamp(vec![(3, 0.25)]));
        // Onto itself with scale 1 it is the clamp.
        let onto_itself = apply(LatentEdit::Redirected(vec![RedirectedClamp {
            source: 3,
            target: 3,
            value: 0.25,
            scale: 1.0,
        }]));
        let err = (&clamp - &onto_itself)
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(err < 1e-5, "{err}");
        // Onto latent 9 with the norm ratio: the same change per row, along d_9.
        let norms = LatentEdit::Steer(vec![(3, 1.0)])
            .apply(cc.as_ref(), base.view(), chat.view())
            .unwrap()
            - &chat;
        let norm_3 = norms.row(0).dot(&norms.row(0)).sqrt();
        let d9 = LatentEdit::Steer(vec![(9, 1.0)])
            .apply(cc.as_ref(), base.view(), chat.view())
            .unwrap()
            - &chat;
        let norm_9 = d9.row(0).dot(&d9.row(0)).sqrt();
        let redirected = apply(LatentEdit::Redirected(vec![RedirectedClamp {
            source: 3,
            target: 9,
            value: 0.25,
            scale: norm_3 / norm_9,
        }]));
        for r in 0..4 {
            let a = &clamp.row(r) - &chat.row(r);
            let b = &redirected.row(r) - &chat.row(r);
            let (na, nb) = (a.dot(&a).sqrt(), b.dot(&b).sqrt());
            assert!(
                (na - nb).abs() < 1e-4 * na.max(1.0),
                "row {r}: {na} vs {nb}"
            );
            let cos = b.dot(&d9.row(0)) / (nb * norm_9).max(1e-12);
            assert!(nb < 1e-6 || cos.abs() > 0.999, "row {r}: along d_9 ({cos})");
        }
        assert_eq!(
            LatentEdit::Redirected(vec![RedirectedClamp {
                source: 3,
                target: 9,
                value: 0.0,
                scale: 1.0
            }])
            .latents(),
            vec![3, 9]
        );
    }
}
