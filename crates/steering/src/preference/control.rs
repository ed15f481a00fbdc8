//! The matched-norm random-latent control: for each candidate latent, a random other latent whose
//! edit moves the chat residual stream about as much on the same prompts.
//!
//! A latent that never fires on the prompts would make a trivial control (ablating it changes
//! nothing), so latents are matched on their *contribution* to the chat stream over the prompts,
//! `c_r = ||d_r^chat|| * sum_t f_r(x_t)` (non-`<bos>` prompt tokens): the control is drawn (seeded)
//! among the latents with `c_j / 2 <= c_r <= 2 c_j` whose chat decoder direction is not close to the
//! candidate's (`|cos| < 0.5`), or is the nearest in `|ln(c_r / c_j)|` when none is in range. A clamp or
//! steer value is scaled by `||d_j^chat|| / ||d_r^chat||` so that it writes the same norm.

use gemma_model::{PaddingSide, RunRequest, TokenBatch};
use model_pair::{BASE, CHAT};
use ndarray::{s, Array3};
use serde::Serialize;
use stereo_core::rng::SplitMix64;

use crate::error::{Result, SteeringError};
use crate::spec::SteeringModels;

/// Decoder directions at least this close (|cosine|, chat side) to the candidate's are not controls.
pub const MAX_CONTROL_COSINE: f32 = 0.5;
/// Prompts per batch when measuring contributions.
const BATCH: usize = 8;

/// A control latent and how it was matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlLatent {
    /// The control.
    pub latent: usize,
    /// The candidate it is matched to.
    pub matched_to: usize,
    /// Its contribution `c_r` on the prompts.
    pub contribution: f64,
    /// The candidate's `c_j`.
    pub candidate_contribution: f64,
    /// Whether `c_r` lies within a factor 2 of `c_j` (else the nearest was taken).
    pub in_range: bool,
    /// The factor applied to clamp and steer values, `||d_j^chat|| / ||d_r^chat||`.
    pub value_scale: f32,
}

/// Each latent's summed activation over the non-`<bos>` tokens of `prompts`.
fn activation_sums(models: &SteeringModels<'_>, prompts: &[Vec<u32>]) -> Result<Vec<f64>> {
    let pad = models.chat.config().pad_token_id;
    let bos = models.chat.config().bos_token_id;
    let mut sums = vec![0.0f64; models.crosscoder.dict_size()];
    let request = RunRequest::capture([models.hook]);
    for chunk in prompts.chunks(BATCH) {
        let batch = TokenBatch::new(chunk, pad, PaddingSide::Right)?;
        let base = models.base.run(&batch, &request)?.activations;
        let chat = models.chat.run(&batch, &request)?.activations;
        let (base, chat) = (&base[&models.hook], &chat[&models.hook]);
        let (b, t, d) = base.dim();
        let rows: Vec<usize> = (0..b * t)
            .filter(|i| batch.mask()[*i] && batch.ids()[*i] != bos)
            .collect();
        let mut x = Array3::zeros((rows.len(), 2, d));
        for (k, i) in rows.iter().enumerate() {
            x.slice_mut(s![k, BASE, ..])
                .assign(&base.slice(s![i / t, i % t, ..]));
            x.slice_mut(s![k, CHAT, ..])
                .assign(&chat.slice(s![i / t, i % t, ..]));
        }
        let f = models.crosscoder.encode(x.view())?;
        for (j, column) in f.columns().into_iter().enumerate() {
            sums[j] += column.iter().map(|v| f64::from(*v)).sum::<f64>();
        }
    }
    Ok(sums)
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

/// One control per candidate, none a candidate or another's control.
///
/// # Errors
/// [`SteeringError::InvalidInput`] when the crosscoder has no latent left to serve as a control.
pub fn choose_controls(
    models: &SteeringModels<'_>,
    candidates: &[usize],
    prompts: &[Vec<u32>],
    seed: u64,
) -> Result<Vec<ControlLatent>> {
    let sums = activation_sums(models, prompts)?;
    let norms = models.crosscoder.decoder_norms().row(CHAT).to_owned();
    let contribution = |j: usize| sums[j] * f64::from(norms[j]);
    let mut rng = SplitMix64::new(seed);
    let mut taken: Vec<usize> = candidates.to_vec();
    let mut controls = Vec::with_capacity(candidates.len());
    for &j in candidates {
        let target = contribution(j);
        let usable = |r: usize, taken: &[usize]| -> Result<bool> {
            if taken.contains(&r) || norms[r] <= 0.0 || contribution(r) <= 0.0 {
                return Ok(false);
            }
            Ok(chat_cosine(models, j, r)?.abs() < MAX_CONTROL_COSINE)
        };
        let mut in_range: Vec<usize> = (0..sums.len())
            .filter(|r| {
                let c = contribution(*r);
                c > 0.0 && c >= target / 2.0 && c <= target * 2.0
            })
            .collect();
        // Fisher-Yates, then the first usable one.
        for k in (1..in_range.len()).rev() {
            in_range.swap(k, rng.below(k + 1));
        }
        let mut chosen = None;
        for r in in_range {
            if usable(r, &taken)? {
                chosen = Some((r, true));
                break;
            }
        }
        if chosen.is_none() {
            let mut by_distance: Vec<usize> =
                (0..sums.len()).filter(|r| contribution(*r) > 0.0).collect();
            let distance = |r: usize| (contribution(r) / target.max(f64::MIN_POSITIVE)).ln().abs();
            by_distance.sort_by(|a, b| distance(*a).total_cmp(&distance(*b)));
            for r in by_distance {
                if usable(r, &taken)? {
                    chosen = Some((r, false));
                    break;
                }
            }
        }
        let Some((r, in_range)) = chosen else {
            return Err(SteeringError::InvalidInput {
                reason: format!(
                    "no latent fires on the prompts that could serve as a control for latent {j}"
                ),
            });
        };
        taken.push(r);
        controls.push(ControlLatent {
            latent: r,
            matched_to: j,
            contribution: contribution(r),
            candidate_contribution: target,
            in_range,
            value_scale: norms[j] / norms[r],
        });
    }
    Ok(controls)
}
