//! The matched-norm random-latent control: for each candidate latent `j`, a random other latent `r`
//! (seeded; its chat decoder direction not close to `j`'s, `|cos| < 0.5`), edited by
//! [`LatentEdit::Redirected`](model_pair::LatentEdit::Redirected): at every token the change the
//! candidate's edit would make, `(v - f_j) ||d_j^chat||`, written along `d_r^chat` instead. So the
//! control moves the chat residual stream by exactly the candidate's norm, at exactly the candidate's
//! positions, in a direction the crosscoder learned for something else: what is left is the
//! difference the candidate's *direction* makes.

use model_pair::{LatentEdit, RedirectedClamp, CHAT};
use ndarray::s;
use serde::Serialize;
use stereo_core::rng::SplitMix64;

use super::PreferenceEdit;
use crate::error::{Result, SteeringError};
use crate::spec::SteeringModels;

/// Decoder directions at least this close (|cosine|, chat side) to the candidate's are not controls.
pub const MAX_CONTROL_COSINE: f32 = 0.5;

/// A control latent and how it stands to its candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlLatent {
    /// The control.
    pub latent: usize,
    /// The candidate it stands in for.
    pub matched_to: usize,
    /// `||d_j^chat|| / ||d_r^chat||`: the factor that gives the control's change the candidate's norm.
    pub value_scale: f32,
    /// The cosine of the two chat decoder directions.
    pub cosine: f32,
}

/// The cosine of two latents' chat decoder vectors.
fn chat_cosine(models: &SteeringModels<'_>, a: usize, b: usize) -> Result<f32> {
    let v = models.crosscoder.decoder_vectors(&[a, b])?;
    let (x, y) = (v.slice(s![0, CHAT, ..]), v.slice(s![1, CHAT, ..]));
    let dot = |p: &ndarray::ArrayView1<'_, f32>, q: &ndarray::ArrayView1<'_, f32>| -> f32 {
        p.iter().zip(q.iter()).map(|(u, v)| u * v).sum()
    };
    let norms = (dot(&x, &x) * dot(&y, &y)).sqrt().max(f32::MIN_POSITIVE);
    Ok(dot(&x, &y) / norms)
}

/// `draws` controls, each one random latent per candidate; no latent serves twice or is a candidate.
/// Drawn with `seed`.
///
/// # Errors
/// [`SteeringError::InvalidInput`] when the crosscoder has no latent left to serve as a control.
pub fn choose_controls(
    models: &SteeringModels<'_>,
    candidates: &[usize],
    seed: u64,
    draws: usize,
) -> Result<Vec<Vec<ControlLatent>>> {
    let norms = models.crosscoder.decoder_norms().row(CHAT).to_owned();
    let mut rng = SplitMix64::new(seed);
    let mut taken: Vec<usize> = candidates.to_vec();
    let mut all = Vec::with_capacity(draws);
    for _ in 0..draws {
        let mut controls = Vec::with_capacity(candidates.len());
        for &j in candidates {
            let control = draw_one(models, &norms, j, &taken, &mut rng)?;
            taken.push(control.latent);
            controls.push(control);
        }
        all.push(controls);
    }
    Ok(all)
}

/// A random latent standing in for candidate `j`: not taken, its chat decoder direction not close
/// to `j`'s.
fn draw_one(
    models: &SteeringModels<'_>,
    norms: &ndarray::Array1<f32>,
    j: usize,
    taken: &[usize],
    rng: &mut SplitMix64,
) -> Result<ControlLatent> {
    {
        let mut pool: Vec<usize> = (0..norms.len())
            .filter(|r| !taken.contains(r) && norms[*r] > 0.0)
            .collect();
        // Fisher-Yates, then the first whose direction is not close to the candidate's.
        for k in (1..pool.len()).rev() {
            pool.swap(k, rng.below(k + 1));
        }
        let mut chosen = None;
        for r in pool {
            let cosine = chat_cosine(models, j, r)?;
            if cosine.abs() < MAX_CONTROL_COSINE {
                chosen = Some((r, cosine));
                break;
            }
        }
        let Some((r, cosine)) = chosen else {
            return Err(SteeringError::InvalidInput {
                reason: format!(
                    "no latent of the crosscoder can serve as a control for latent {j}"
                ),
            });
        };
        Ok(ControlLatent {
            latent: r,
            matched_to: j,
            value_scale: norms[j] / norms[r],
            cosine,
        })
    }
}

/// The controls' edit: a clamp or ablation redirected along each control's direction, a steer along
/// it with the scaled strength.
pub fn control_edit(edit: PreferenceEdit, controls: &[ControlLatent]) -> LatentEdit {
    match edit {
        PreferenceEdit::Ablate | PreferenceEdit::Clamp(_) => {
            let value = match edit {
                PreferenceEdit::Clamp(v) => v,
                _ => 0.0,
            };
            LatentEdit::Redirected(
                controls
                    .iter()
                    .map(|c| RedirectedClamp {
                        source: c.matched_to,
                        target: c.latent,
                        value,
                        scale: c.value_scale,
                    })
                    .collect(),
            )
        }
        PreferenceEdit::Steer(v) => LatentEdit::Steer(
            controls
                .iter()
                .map(|c| (c.latent, v * c.value_scale))
                .collect(),
        ),
    }
}
