//! Analysis on the decoder weights: per-model decoder norms, the relative norm, latent classes
//! (shared / base-only / chat-only / other) and the cosine similarity of a latent's decoder vectors.
//!
//! **Convention.** The relative norm of latent `j` between a base model and a chat model is
//! `r_j = n_chat_j / (n_base_j + n_chat_j)` (ckkissane, Anthropic's model-diffing figures): `r = 0` means the
//! latent only decodes into the base model, `r = 1` only into the chat model, `r = 0.5` equally into both.
//! science-of-finetuning plots the mirrored quantity (`dec_norm_diff`, base-leaning high); use `1 - r` to
//! compare with their figures. A latent whose decoder vectors are both zero has `r = NaN` and the class
//! [`LatentClass::Other`].

use ndarray::{Array1, Array2, ArrayView2, ArrayView3, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::error::{CrosscoderError, Result};
use crate::traits::Crosscoder;

/// `||W_dec[m, j]||` for every model `m` and latent `j`: `[n_models, F]` from `W_dec [n_models, F, d]`
/// (accumulated in f64).
pub fn decoder_norms(w_dec: ArrayView3<'_, f32>) -> Array2<f32> {
    let (n, f, _) = w_dec.dim();
    let mut out = Array2::zeros((n, f));
    Zip::from(&mut out)
        .and(w_dec.lanes(Axis(2)))
        .for_each(|o, v| {
            *o = v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt() as f32
        });
    out
}

/// Cosine similarity of corresponding rows of `a [F, d]` and `b [F, d]`, `[F]` (NaN where a row is zero).
pub fn cosine_rows(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array1<f32> {
    let mut out = Array1::zeros(a.nrows());
    Zip::from(&mut out)
        .and(a.rows())
        .and(b.rows())
        .for_each(|o, x, y| {
            let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for (p, q) in x.iter().zip(y) {
                let (p, q) = (f64::from(*p), f64::from(*q));
                dot += p * q;
                xx += p * p;
                yy += q * q;
            }
            let denom = (xx * yy).sqrt();
            *o = if denom > 0.0 {
                (dot / denom) as f32
            } else {
                f32::NAN
            };
        });
    out
}

/// The latent whose decoder vector for `model` points most nearly along `direction` (for example a
/// planted or probe direction), with that cosine similarity. Latents with a zero decoder vector are skipped.
///
/// # Errors
/// `model` is out of range, `direction` does not have `d_model` values, or no latent has a non-zero
/// decoder vector.
pub fn nearest_decoder_latent(
    cc: &dyn Crosscoder,
    model: usize,
    direction: &[f32],
) -> Result<(usize, f32)> {
    if model >= cc.n_models() {
        return Err(CrosscoderError::ModelIndex {
            index: model,
            n_models: cc.n_models(),
        });
    }
    if direction.len() != cc.d_model() {
        return Err(CrosscoderError::InvalidOption(format!(
            "the direction has {} values, the crosscoder's d_model is {}",
            direction.len(),
            cc.d_model()
        )));
    }
    let latents: Vec<usize> = (0..cc.dict_size()).collect();
    let vectors = cc.decoder_vectors(&latents)?;
    let decoder = vectors.index_axis(Axis(1), model);
    let target = ArrayView2::from_shape((1, direction.len()), direction)
        .map_err(|e| CrosscoderError::InvalidOption(e.to_string()))?;
    let target = target
        .broadcast(decoder.raw_dim())
        .ok_or_else(|| CrosscoderError::InvalidOption("direction shape".into()))?;
    cosine_rows(decoder, target)
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| !c.is_nan())
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or_else(|| {
            CrosscoderError::InvalidOption(
                "no latent has a non-zero decoder vector for this model".into(),
            )
        })
}

/// `r_j = norms[chat, j] / (norms[base, j] + norms[chat, j])`, `[F]` (NaN where both norms are zero).
///
/// # Errors
/// [`CrosscoderError::ModelIndex`] when `base` or `chat` is not a row of `norms`.
pub fn relative_norms(norms: ArrayView2<'_, f32>, base: usize, chat: usize) -> Result<Array1<f32>> {
    let n = norms.nrows();
    for index in [base, chat] {
        if index >= n {
            return Err(CrosscoderError::ModelIndex { index, n_models: n });
        }
    }
    let (nb, nc) = (norms.row(base), norms.row(chat));
    Ok(Zip::from(&nb).and(&nc).map_collect(|b, c| {
        let total = b + c;
        if total > 0.0 {
            c / total
        } else {
            f32::NAN
        }
    }))
}

/// The class of a latent by its relative norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentClass {
    /// Decodes into both models about equally.
    Shared,
    /// Decodes (almost) only into the base model.
    BaseOnly,
    /// Decodes (almost) only into the chat model.
    ChatOnly,
    /// In between, or with zero decoder norms.
    Other,
}

/// Relative-norm thresholds of the latent classes. Defaults:
///
/// | class | rule | default |
/// |---|---|---|
/// | base-only | `r <= base_only_max` | 0.1 |
/// | shared | `shared_min <= r <= shared_max` | 0.3 .. 0.7 |
/// | chat-only | `r >= chat_only_min` | 0.9 |
///
/// 0.1 / 0.9 are the "exclusive" cut-offs of the crosscoder model-diffing literature (Anthropic's and
/// ckkissane's histograms show clusters at the ends); 0.3..0.7 is the shared band of REFERENCE.md.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RelativeNormThresholds {
    /// Largest `r` of a base-only latent.
    pub base_only_max: f32,
    /// Smallest `r` of a shared latent.
    pub shared_min: f32,
    /// Largest `r` of a shared latent.
    pub shared_max: f32,
    /// Smallest `r` of a chat-only latent.
    pub chat_only_min: f32,
}

impl Default for RelativeNormThresholds {
    fn default() -> Self {
        RelativeNormThresholds {
            base_only_max: 0.1,
            shared_min: 0.3,
            shared_max: 0.7,
            chat_only_min: 0.9,
        }
    }
}

impl RelativeNormThresholds {
    /// The four class boundaries, left to right: base-only max, shared min, shared max, chat-only min.
    pub fn lines(&self) -> Vec<f32> {
        vec![
            self.base_only_max,
            self.shared_min,
            self.shared_max,
            self.chat_only_min,
        ]
    }

    /// Checks `0 <= base_only_max < shared_min <= shared_max < chat_only_min <= 1`.
    ///
    /// # Errors
    /// [`CrosscoderError::InvalidOption`] naming the thresholds.
    pub fn validate(&self) -> Result<()> {
        let t = self;
        let ok = 0.0 <= t.base_only_max
            && t.base_only_max < t.shared_min
            && t.shared_min <= t.shared_max
            && t.shared_max < t.chat_only_min
            && t.chat_only_min <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(CrosscoderError::InvalidOption(format!(
                "relative-norm thresholds must satisfy 0 <= base_only_max < shared_min <= shared_max < \
                 chat_only_min <= 1, got {t:?}"
            )))
        }
    }

    /// The class of one relative norm.
    pub fn classify(&self, r: f32) -> LatentClass {
        if r.is_nan() {
            LatentClass::Other
        } else if r <= self.base_only_max {
            LatentClass::BaseOnly
        } else if r >= self.chat_only_min {
            LatentClass::ChatOnly
        } else if r >= self.shared_min && r <= self.shared_max {
            LatentClass::Shared
        } else {
            LatentClass::Other
        }
    }
}

/// How many latents fall in each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// Shared latents.
    pub shared: usize,
    /// Base-only latents.
    pub base_only: usize,
    /// Chat-only latents.
    pub chat_only: usize,
    /// Everything else.
    pub other: usize,
}

/// The decoder analysis of a two-model comparison inside a crosscoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderAnalysis {
    /// Model index used as "base".
    pub base: usize,
    /// Model index used as "chat".
    pub chat: usize,
    /// Decoder norms `[n_models, F]`.
    pub norms: Array2<f32>,
    /// Relative norms `r_j`, `[F]`.
    pub relative_norms: Array1<f32>,
    /// Cosine similarity of the base and chat decoder vectors, `[F]`.
    pub cosine_similarity: Array1<f32>,
    /// Class of each latent, `[F]`.
    pub classes: Vec<LatentClass>,
    /// The thresholds used.
    pub thresholds: RelativeNormThresholds,
}

impl DecoderAnalysis {
    /// Analyses models `base` and `chat` of a crosscoder (use [`crate::BASE`] and [`crate::CHAT`]).
    ///
    /// # Errors
    /// [`CrosscoderError::ModelIndex`] for a bad model index, [`CrosscoderError::InvalidOption`] for
    /// inconsistent thresholds.
    pub fn new(
        cc: &dyn Crosscoder,
        base: usize,
        chat: usize,
        thresholds: RelativeNormThresholds,
    ) -> Result<Self> {
        thresholds.validate()?;
        let norms = cc.decoder_norms().clone();
        let relative_norms = relative_norms(norms.view(), base, chat)?;
        let cosine_similarity = cc.decoder_cosine_similarity(base, chat)?;
        let classes = relative_norms
            .iter()
            .map(|r| thresholds.classify(*r))
            .collect();
        Ok(DecoderAnalysis {
            base,
            chat,
            norms,
            relative_norms,
            cosine_similarity,
            classes,
            thresholds,
        })
    }

    /// Counts per class.
    pub fn counts(&self) -> ClassCounts {
        let mut c = ClassCounts::default();
        for class in &self.classes {
            match class {
                LatentClass::Shared => c.shared += 1,
                LatentClass::BaseOnly => c.base_only += 1,
                LatentClass::ChatOnly => c.chat_only += 1,
                LatentClass::Other => c.other += 1,
            }
        }
        c
    }

    /// Indices of the latents of one class, in index order.
    pub fn latents_of(&self, class: LatentClass) -> Vec<usize> {
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == class)
            .map(|(j, _)| j)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn relative_norm_and_classes() {
        let norms = array![[1.0f32, 0.0, 1.0, 0.0, 3.0], [0.0, 1.0, 1.0, 0.0, 1.0]];
        let r = relative_norms(norms.view(), 0, 1).unwrap();
        assert_eq!(r[0], 0.0);
        assert_eq!(r[1], 1.0);
        assert_eq!(r[2], 0.5);
        assert!(r[3].is_nan());
        assert_eq!(r[4], 0.25);
        let t = RelativeNormThresholds::default();
        let classes: Vec<_> = r.iter().map(|x| t.classify(*x)).collect();
        use LatentClass::*;
        assert_eq!(classes, vec![BaseOnly, ChatOnly, Shared, Other, Other]);
    }

    #[test]
    fn inconsistent_thresholds_are_refused() {
        let t = RelativeNormThresholds {
            shared_min: 0.05,
            ..Default::default()
        };
        assert!(t.validate().is_err());
        assert!(RelativeNormThresholds::default().validate().is_ok());
    }

    #[test]
    fn cosine_of_parallel_and_opposite_rows() {
        let a = array![[1.0f32, 2.0], [1.0, 0.0], [0.0, 0.0]];
        let b = array![[2.0f32, 4.0], [-3.0, 0.0], [1.0, 0.0]];
        let c = cosine_rows(a.view(), b.view());
        assert!((c[0] - 1.0).abs() < 1e-7 && (c[1] + 1.0).abs() < 1e-7 && c[2].is_nan());
    }

    #[test]
    fn nearest_decoder_latent_finds_the_most_aligned_chat_vector() {
        use crate::{BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights};
        // d = 2, F = 3; chat decoder rows: (1, 0), (1, 1), (0, 0); base rows point elsewhere.
        let w_dec = ndarray::Array3::from_shape_vec(
            (2, 3, 2),
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        )
        .unwrap();
        let weights = CrosscoderWeights {
            w_enc: ndarray::Array3::zeros((2, 2, 3)),
            b_enc: Array1::zeros(3),
            w_dec,
            b_dec: Array2::zeros((2, 2)),
        };
        let cc = CrosscoderCheckpoint::new(
            CrosscoderConfig::relu(2, 2, 3),
            weights,
            crate::InputNormalizer::Identity,
        )
        .unwrap()
        .build(BackendKind::NdArray)
        .unwrap();
        let (j, cos) = nearest_decoder_latent(cc.as_ref(), 1, &[1.0, 0.9]).unwrap();
        let expected = (1.0 + 0.9) / (2f32.sqrt() * (1.0f32 + 0.81).sqrt());
        assert_eq!(j, 1);
        assert!((cos - expected).abs() < 1e-6, "{cos} vs {expected}");
        assert_eq!(
            nearest_decoder_latent(cc.as_ref(), 1, &[1.0, 0.0])
                .unwrap()
                .0,
            0
        );
        assert!(matches!(
            nearest_decoder_latent(cc.as_ref(), 2, &[1.0, 0.0]),
            Err(CrosscoderError::ModelIndex { index: 2, .. })
        ));
        assert!(nearest_decoder_latent(cc.as_ref(), 1, &[1.0]).is_err());
    }

    #[test]
    fn bad_model_index_is_an_error() {
        let norms = array![[1.0f32], [1.0]];
        assert!(matches!(
            relative_norms(norms.view(), 0, 2),
            Err(CrosscoderError::ModelIndex { index: 2, .. })
        ));
    }
}
