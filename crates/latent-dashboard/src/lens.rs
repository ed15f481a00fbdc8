//! The logit lens of a latent's decoder vectors: the tokens each model's decoder vector promotes and
//! suppresses through that model's final norm and unembedding (soft-capped logits, as the model
//! computes them; the norm makes the result independent of the vector's length).

use crosscoder::Crosscoder;
use gemma_model::{GemmaTokenizer, LanguageModel};
use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::dashboard::LatentDashboard;
use crate::error::{DashboardError, Result};

/// One token and its logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensToken {
    /// The token id.
    pub id: u32,
    /// The token as the vocabulary spells it.
    pub token: String,
    /// Its logit.
    pub logit: f32,
}

/// What one model's decoder vector of a latent does to that model's next-token logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensTokens {
    /// Model index (0 base, 1 chat): the decoder vector and the unembedding are that model's.
    pub model: usize,
    /// The model's name.
    pub model_name: String,
    /// The decoder vector's norm in raw units (a vector below [`NEGLIGIBLE`] of the latent's larger
    /// decoder vector writes nothing worth reading: `promoted` and `suppressed` are then empty).
    pub norm: f32,
    /// The highest logits, highest first.
    pub promoted: Vec<LensToken>,
    /// The lowest logits, lowest first.
    pub suppressed: Vec<LensToken>,
}

/// A decoder vector below this fraction of the latent's larger one writes nothing worth a lens.
pub const NEGLIGIBLE: f32 = 1e-2;

/// Adds to each dashboard its raw-unit decoder norms and, for each model given (index 0 base, 1
/// chat; loaded with its unembedding), the `k` tokens its decoder vector promotes and suppresses.
pub fn attach_lens(
    dashboards: &mut [LatentDashboard],
    crosscoder: &dyn Crosscoder,
    models: [Option<&dyn LanguageModel>; 2],
    tokenizer: &GemmaTokenizer,
    k: usize,
) -> Result<()> {
    if crosscoder.n_models() != 2 {
        return Err(DashboardError::InvalidInput {
            reason: format!(
                "the lens compares two models; the crosscoder has {}",
                crosscoder.n_models()
            ),
        });
    }
    let latents: Vec<usize> = dashboards.iter().map(|d| d.latent).collect();
    let f = crosscoder.dict_size();
    if let Some(j) = latents.iter().find(|j| **j >= f) {
        return Err(DashboardError::InvalidInput {
            reason: format!("latent {j} is out of range: the crosscoder has {f}"),
        });
    }
    let directions = crosscoder::raw_directions(crosscoder, &latents)?;
    let d = crosscoder.d_model();
    let norm = |l: usize, m: usize| -> f32 {
        (0..d)
            .map(|c| directions[[l, m, c]].powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let pairs: Vec<[f32; 2]> = (0..latents.len())
        .map(|l| [norm(l, 0), norm(l, 1)])
        .collect();
    for (dashboard, pair) in dashboards.iter_mut().zip(&pairs) {
        dashboard.decoder_norms = Some(*pair);
    }
    for (m, model) in models.iter().enumerate() {
        let Some(model) = model else { continue };
        if model.config().hidden_size != d {
            return Err(DashboardError::InvalidInput {
                reason: format!(
                    "model {} is {} wide, the crosscoder {d}",
                    model.name(),
                    model.config().hidden_size
                ),
            });
        }
        let rows = Array3::from_shape_fn((1, latents.len(), d), |(_, l, c)| directions[[l, m, c]]);
        let logits = model.unembed(&rows)?;
        for (l, dashboard) in dashboards.iter_mut().enumerate() {
            let row: Vec<f32> = logits.slice(ndarray::s![0, l, ..]).to_vec();
            // The final norm rescales any vector to the same length, so a vector negligible next
            // to the latent's other decoder vector would show its noise as words.
            let (promoted, suppressed) = if pairs[l][m] > NEGLIGIBLE * pairs[l][0].max(pairs[l][1])
            {
                extremes(&row, k, tokenizer)
            } else {
                (Vec::new(), Vec::new())
            };
            dashboard.lens.push(LensTokens {
                model: m,
                model_name: model.name().to_string(),
                norm: pairs[l][m],
                promoted,
                suppressed,
            });
        }
    }
    Ok(())
}

/// The `k` highest and `k` lowest logits of `row`.
fn extremes(row: &[f32], k: usize, tokenizer: &GemmaTokenizer) -> (Vec<LensToken>, Vec<LensToken>) {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let pick = |ids: Vec<usize>| -> Vec<LensToken> {
        let tokens = tokenizer.tokens(&ids.iter().map(|&i| i as u32).collect::<Vec<_>>());
        ids.into_iter()
            .zip(tokens)
            .map(|(i, token)| LensToken {
                id: i as u32,
                token,
                logit: row[i],
            })
            .collect()
    };
    let k = k.min(row.len());
    let top = order[..k].to_vec();
    let bottom = order.iter().rev().take(k).copied().collect();
    (pick(top), pick(bottom))
}
