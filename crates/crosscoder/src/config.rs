//! What a crosscoder is, besides its weights: sizes, activation function, code normalisation, input
//! normalisation, and where its activations come from (models, hook, layer).

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use stereo_core::hook::HookPoint;

/// The two models of the workspace, in index order: 0 = base, 1 = chat.
pub const GEMMA_2_2B_MODELS: [&str; 2] = ["google/gemma-2-2b", "google/gemma-2-2b-it"];

pub use stereo_core::{BASE, CHAT};

/// The latent activation function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// `f = relu(pre)`: L1-trained crosscoders (Anthropic, ckkissane, dictionary_learning `CrossCoder`).
    Relu,
    /// dictionary_learning `BatchTopKCrossCoder` at inference: `f = relu(pre) * (relu(pre) * w_j > threshold)`,
    /// where `w_j` is the code normalisation of latent `j` (see [`CodeNormalization`]). `k` is the training
    /// sparsity (kept for the record; inference uses the threshold only). A negative threshold (the
    /// reference's initial `-1`, never calibrated) keeps every positive value.
    BatchTopK {
        /// Latents per row kept during training (`k * batch` over the batch).
        k: usize,
        /// Inference threshold on the scaled activation `relu(pre) * w_j`.
        threshold: f32,
    },
}

impl Activation {
    /// Short name: `relu` or `batch_top_k`.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::BatchTopK { .. } => "batch_top_k",
        }
    }
}

/// dictionary_learning's code normalisation: the per-latent weight `w_j` that multiplies `f_j` in the
/// sparsity penalty, in BatchTopK's selection, and in the "scaled" latents that `forward(output_features=True)`
/// and `get_activations` return. Ids are those of the reference's `CodeNormalization` enum
/// (the `code_normalization_id` buffer). `DECOUPLED` (id 5) is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CodeNormalization {
    /// id 1: `w_j = sum_m ||W_dec[m, j]||` (the reference default; also ckkissane's L1 weighting).
    Crosscoder,
    /// id 2: `w_j = ||concat_m W_dec[m, j]||` (the norm of the stacked decoder vector).
    Sae,
    /// id 3: `w_j = alpha_sae * sae_j + alpha_cc * crosscoder_j`.
    Mixed {
        /// Weight of the SAE norm (reference default 1.0).
        alpha_sae: f32,
        /// Weight of the crosscoder norm (reference default 0.1).
        alpha_cc: f32,
    },
    /// id 4: `w_j = 1`.
    None,
}

impl CodeNormalization {
    /// The reference's default `alpha_sae` for MIXED.
    pub const DEFAULT_ALPHA_SAE: f32 = 1.0;
    /// The reference's default `alpha_cc` for MIXED.
    pub const DEFAULT_ALPHA_CC: f32 = 0.1;

    /// The reference's enum value (`code_normalization_id`).
    pub fn id(&self) -> i64 {
        match self {
            CodeNormalization::Crosscoder => 1,
            CodeNormalization::Sae => 2,
            CodeNormalization::Mixed { .. } => 3,
            CodeNormalization::None => 4,
        }
    }

    /// The reference's enum name (`CROSSCODER`, `SAE`, `MIXED`, `NONE`).
    pub fn reference_name(&self) -> &'static str {
        match self {
            CodeNormalization::Crosscoder => "CROSSCODER",
            CodeNormalization::Sae => "SAE",
            CodeNormalization::Mixed { .. } => "MIXED",
            CodeNormalization::None => "NONE",
        }
    }

    /// Parses a reference id; `None` for DECOUPLED (5) and unknown ids.
    pub fn from_id(id: i64, alpha_sae: f32, alpha_cc: f32) -> Option<Self> {
        Some(match id {
            1 => CodeNormalization::Crosscoder,
            2 => CodeNormalization::Sae,
            3 => CodeNormalization::Mixed {
                alpha_sae,
                alpha_cc,
            },
            4 => CodeNormalization::None,
            _ => return None,
        })
    }

    /// Parses a reference name (case-insensitive); `None` for DECOUPLED and unknown names.
    pub fn from_reference_name(name: &str, alpha_sae: f32, alpha_cc: f32) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "CROSSCODER" => CodeNormalization::Crosscoder,
            "SAE" => CodeNormalization::Sae,
            "MIXED" => CodeNormalization::Mixed {
                alpha_sae,
                alpha_cc,
            },
            "NONE" => CodeNormalization::None,
            _ => return None,
        })
    }

    /// `w_j` for every latent, from the per-model decoder norms `norms [n_models, F]` (the SAE norm of the
    /// stacked decoder vector is `sqrt(sum_m norms[m, j]^2)`).
    pub fn weights(&self, norms: &Array2<f32>) -> Array1<f32> {
        let f = norms.ncols();
        let cc = || norms.sum_axis(ndarray::Axis(0));
        let sae = || {
            norms
                .mapv(|x| x * x)
                .sum_axis(ndarray::Axis(0))
                .mapv(f32::sqrt)
        };
        match *self {
            CodeNormalization::Crosscoder => cc(),
            CodeNormalization::Sae => sae(),
            CodeNormalization::Mixed {
                alpha_sae,
                alpha_cc,
            } => sae() * alpha_sae + cc() * alpha_cc,
            CodeNormalization::None => Array1::ones(f),
        }
    }
}

/// How activations are normalised before encoding (and the normalisation undone after decoding), so that
/// the caller always works in its own activation space: reconstructions are comparable with the input.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum InputNormalizer {
    /// Activations are used as given.
    #[default]
    Identity,
    /// The ckkissane recipe: model `m`'s activations are MULTIPLIED by `factors[m]` before encoding (the
    /// replication trains on `x * sqrt(d) / mean ||x||`), and the reconstruction is divided by it.
    ScalingFactors(Vec<f32>),
    /// dictionary_learning's `NormalizableMixin` with `keep_relative_variance = True` (the only mode a
    /// `CrossCoder` can be built with): encode uses `(x - mean[m]) * global_scale[m]`, decode
    /// `x / (global_scale[m] + 1e-8) + mean[m]`, where
    /// `global_scale[m] = target_rms / sqrt(sum_i std[m, i]^2 + 1e-8)`. The `activation_global_scale`
    /// buffer of the checkpoint, when present, is used as is (it is what the reference uses).
    MeanStd {
        /// `activation_mean [n_models, d]`.
        mean: Array2<f32>,
        /// `activation_std [n_models, d]` (used only through `global_scale`; kept to round-trip).
        std: Array2<f32>,
        /// `target_rms` (reference default 1.0).
        target_rms: f32,
        /// `activation_global_scale [n_models]`.
        global_scale: Array1<f32>,
    },
}

impl InputNormalizer {
    /// The reference's epsilon in `global_scale` and in the decode divisor.
    pub const EPS: f32 = 1e-8;

    /// Builds a dictionary_learning normaliser, computing `global_scale` from `std` and `target_rms`.
    pub fn mean_std(mean: Array2<f32>, std: Array2<f32>, target_rms: f32) -> Self {
        let global_scale = std
            .mapv(|s| s * s)
            .sum_axis(ndarray::Axis(1))
            .mapv(|v| target_rms / (v + Self::EPS).sqrt());
        InputNormalizer::MeanStd {
            mean,
            std,
            target_rms,
            global_scale,
        }
    }

    /// Short name: `identity`, `scaling_factors` or `mean_std`.
    pub fn name(&self) -> &'static str {
        match self {
            InputNormalizer::Identity => "identity",
            InputNormalizer::ScalingFactors(_) => "scaling_factors",
            InputNormalizer::MeanStd { .. } => "mean_std",
        }
    }

    /// The per-feature affine map as `(shift [n, d], encode_scale [n], decode_divisor [n])`:
    /// encode `x' = (x - shift) * encode_scale`, decode `x = x' / decode_divisor + shift`.
    /// `None` for the identity.
    pub(crate) fn affine(
        &self,
        n_models: usize,
        d_model: usize,
    ) -> Option<(Array2<f32>, Vec<f32>, Vec<f32>)> {
        match self {
            InputNormalizer::Identity => None,
            InputNormalizer::ScalingFactors(f) => {
                Some((Array2::zeros((n_models, d_model)), f.clone(), f.clone()))
            }
            InputNormalizer::MeanStd {
                mean, global_scale, ..
            } => Some((
                mean.clone(),
                global_scale.to_vec(),
                global_scale.iter().map(|g| g + Self::EPS).collect(),
            )),
        }
    }
}

/// Everything about a crosscoder except its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrosscoderConfig {
    /// Number of models whose activations are encoded together (2 for model diffing).
    pub n_models: usize,
    /// Activation width per model (`d`, 2304 for Gemma-2-2b).
    pub d_model: usize,
    /// Number of latents (`F`, the dictionary size).
    pub dict_size: usize,
    /// The latent activation function.
    pub activation: Activation,
    /// The code normalisation `w_j` (see [`CodeNormalization`]).
    pub code_normalization: CodeNormalization,
    /// Model names in index order (0 = base, 1 = chat); empty when the checkpoint does not say.
    #[serde(default)]
    pub models: Vec<String>,
    /// The hook of the activations, e.g. `blocks.13.hook_resid_post`, when known (stored under its
    /// TransformerLens name).
    #[serde(default)]
    pub hook: Option<HookPoint>,
    /// Layer of the activations, when known.
    #[serde(default)]
    pub layer: Option<usize>,
    /// Where the checkpoint came from (format and path or hub id), for reports.
    #[serde(default)]
    pub source: Option<String>,
}

impl CrosscoderConfig {
    /// A ReLU crosscoder config with the reference's default code normalisation and no metadata.
    pub fn relu(n_models: usize, d_model: usize, dict_size: usize) -> Self {
        CrosscoderConfig {
            n_models,
            d_model,
            dict_size,
            activation: Activation::Relu,
            code_normalization: CodeNormalization::Crosscoder,
            models: Vec::new(),
            hook: None,
            layer: None,
            source: None,
        }
    }

    /// The released L1 crosscoder `science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04`
    /// (Minder et al.): Gemma-2-2b base/it, layer 13 resid_post, F = 73,728, ReLU, CROSSCODER code norm.
    pub fn preset_science_of_finetuning_l13() -> Self {
        CrosscoderConfig {
            models: GEMMA_2_2B_MODELS.iter().map(|s| s.to_string()).collect(),
            hook: Some(HookPoint::ResidPost(13)),
            layer: Some(13),
            ..CrosscoderConfig::relu(2, 2304, 73_728)
        }
    }

    /// The ckkissane replication `ckkissane/crosscoder-gemma-2-2b-model-diff` (folder
    /// `blocks.14.hook_resid_pre`): Gemma-2-2b base/it, layer 14 resid_pre, F = 16,384, ReLU.
    pub fn preset_ckkissane_gemma_2_2b() -> Self {
        CrosscoderConfig {
            models: GEMMA_2_2B_MODELS.iter().map(|s| s.to_string()).collect(),
            hook: Some(HookPoint::ResidPre(14)),
            layer: Some(14),
            ..CrosscoderConfig::relu(2, 2304, 16_384)
        }
    }

    /// Metadata known for published crosscoders, by hub repository id (without subfolder).
    pub fn known_metadata(repo_id: &str) -> Option<Self> {
        let name = repo_id.rsplit('/').next().unwrap_or(repo_id);
        if name == "gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04" {
            Some(Self::preset_science_of_finetuning_l13())
        } else if name == "crosscoder-gemma-2-2b-model-diff" {
            Some(Self::preset_ckkissane_gemma_2_2b())
        } else {
            None
        }
    }

    /// Fills `models`, `hook` and `layer` from `other` where this config leaves them unset.
    pub(crate) fn fill_metadata_from(&mut self, other: &CrosscoderConfig) {
        if self.models.is_empty() {
            self.models = other.models.clone();
        }
        if self.hook.is_none() {
            self.hook = other.hook;
        }
        if self.layer.is_none() {
            self.layer = other.layer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn code_normalisation_weights_match_their_definitions() {
        let norms = array![[3.0f32, 0.0], [4.0, 2.0]];
        assert_eq!(
            CodeNormalization::Crosscoder.weights(&norms),
            array![7.0, 2.0]
        );
        assert_eq!(CodeNormalization::Sae.weights(&norms), array![5.0, 2.0]);
        let mixed = CodeNormalization::Mixed {
            alpha_sae: 1.0,
            alpha_cc: 0.1,
        }
        .weights(&norms);
        assert!((mixed[0] - 5.7).abs() < 1e-6 && (mixed[1] - 2.2).abs() < 1e-6);
        assert_eq!(CodeNormalization::None.weights(&norms), array![1.0, 1.0]);
    }

    #[test]
    fn ids_and_names_round_trip_and_decoupled_is_refused() {
        for cn in [
            CodeNormalization::Crosscoder,
            CodeNormalization::Sae,
            CodeNormalization::Mixed {
                alpha_sae: 1.0,
                alpha_cc: 0.1,
            },
            CodeNormalization::None,
        ] {
            assert_eq!(CodeNormalization::from_id(cn.id(), 1.0, 0.1), Some(cn));
            assert_eq!(
                CodeNormalization::from_reference_name(cn.reference_name(), 1.0, 0.1),
                Some(cn)
            );
        }
        assert_eq!(CodeNormalization::from_id(5, 1.0, 0.1), None);
        assert_eq!(
            CodeNormalization::from_reference_name("DECOUPLED", 1.0, 0.1),
            None
        );
    }

    #[test]
    fn mean_std_global_scale_follows_the_reference_formula() {
        let n = InputNormalizer::mean_std(Array2::zeros((1, 2)), array![[3.0f32, 4.0]], 2.0);
        let InputNormalizer::MeanStd { global_scale, .. } = n else {
            unreachable!()
        };
        assert!((global_scale[0] - 0.4).abs() < 1e-7);
    }
}
