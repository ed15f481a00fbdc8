//! A crosscoder on the host: config, weights and input normaliser, validated, in one canonical layout
//! whatever file it came from. Every format reader produces a [`CrosscoderCheckpoint`]; [`CrosscoderCheckpoint::build`]
//! turns it into a runnable [`Crosscoder`](crate::Crosscoder) on the backend chosen at run time.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Array3, ArrayView, Axis, Dimension};
use stereo_core::hook::HookPoint;
use stereo_core::{dispatch, BackendKind, ComputeDtype};

use crate::analysis;
use crate::config::{CrosscoderConfig, InputNormalizer};
use crate::error::{CrosscoderError, Result};
use crate::model::BuildVisitor;
use crate::Crosscoder;

/// Crosscoder weights in the dictionary_learning layout (all f32).
///
/// | field | shape |
/// |---|---|
/// | `w_enc` | `[n_models, d, F]` |
/// | `b_enc` | `[F]` |
/// | `w_dec` | `[n_models, F, d]` |
/// | `b_dec` | `[n_models, d]` |
#[derive(Debug, Clone, PartialEq)]
pub struct CrosscoderWeights {
    /// Encoder `W_enc [n_models, d, F]`.
    pub w_enc: Array3<f32>,
    /// Encoder bias `b_enc [F]`.
    pub b_enc: Array1<f32>,
    /// Decoder `W_dec [n_models, F, d]`.
    pub w_dec: Array3<f32>,
    /// Decoder bias `b_dec [n_models, d]`.
    pub b_dec: Array2<f32>,
}

impl CrosscoderWeights {
    /// `(n_models, d, F)` as implied by `w_enc`.
    pub fn dims(&self) -> (usize, usize, usize) {
        self.w_enc.dim()
    }
}

/// A validated crosscoder on the host. Equality compares config, weights and normaliser (not the origin).
#[derive(Debug, Clone)]
pub struct CrosscoderCheckpoint {
    config: CrosscoderConfig,
    weights: CrosscoderWeights,
    normalizer: InputNormalizer,
    origin: PathBuf,
}

impl PartialEq for CrosscoderCheckpoint {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.weights == other.weights
            && self.normalizer == other.normalizer
    }
}

impl CrosscoderCheckpoint {
    /// Validates and assembles a checkpoint: every shape must agree with `config`, every weight must be
    /// finite, the normaliser must fit `[n_models, d]`.
    ///
    /// # Errors
    /// [`CrosscoderError::ShapeMismatch`], [`CrosscoderError::NonFiniteWeight`],
    /// [`CrosscoderError::ScalingFactors`].
    pub fn new(
        config: CrosscoderConfig,
        weights: CrosscoderWeights,
        normalizer: InputNormalizer,
    ) -> Result<Self> {
        Self::with_origin(config, weights, normalizer, PathBuf::from("<memory>"))
    }

    pub(crate) fn with_origin(
        config: CrosscoderConfig,
        weights: CrosscoderWeights,
        normalizer: InputNormalizer,
        origin: PathBuf,
    ) -> Result<Self> {
        let ckpt = CrosscoderCheckpoint {
            config,
            weights,
            normalizer,
            origin,
        };
        ckpt.validate()?;
        Ok(ckpt)
    }

    fn validate(&self) -> Result<()> {
        let c = &self.config;
        let (n, d, f) = (c.n_models, c.d_model, c.dict_size);
        let w = &self.weights;
        let check = |key: &str, actual: &[usize], expected: &[usize], axes: &str| {
            if actual == expected {
                Ok(())
            } else {
                Err(CrosscoderError::ShapeMismatch {
                    path: self.origin.clone(),
                    key: key.to_string(),
                    expected: format!("{axes} = {expected:?}"),
                    actual: actual.to_vec(),
                })
            }
        };
        check("W_enc", w.w_enc.shape(), &[n, d, f], "[n_models, d, F]")?;
        check("b_enc", w.b_enc.shape(), &[f], "[F]")?;
        check("W_dec", w.w_dec.shape(), &[n, f, d], "[n_models, F, d]")?;
        check("b_dec", w.b_dec.shape(), &[n, d], "[n_models, d]")?;
        self.check_finite("W_enc", &w.w_enc.view())?;
        self.check_finite("b_enc", &w.b_enc.view())?;
        self.check_finite("W_dec", &w.w_dec.view())?;
        self.check_finite("b_dec", &w.b_dec.view())?;
        if let crate::Activation::BatchTopK { threshold, .. } = c.activation {
            if !threshold.is_finite() {
                return Err(CrosscoderError::NonFiniteWeight {
                    path: self.origin.clone(),
                    key: "threshold".into(),
                    index: 0,
                    value: threshold,
                });
            }
        }
        match &self.normalizer {
            InputNormalizer::Identity => {}
            InputNormalizer::ScalingFactors(factors) => validate_factors(factors, n)?,
            InputNormalizer::MeanStd {
                mean,
                std,
                target_rms,
                global_scale,
            } => {
                check("activation_mean", mean.shape(), &[n, d], "[n_models, d]")?;
                check("activation_std", std.shape(), &[n, d], "[n_models, d]")?;
                check(
                    "activation_global_scale",
                    global_scale.shape(),
                    &[n],
                    "[n_models]",
                )?;
                self.check_finite("activation_mean", &mean.view())?;
                self.check_finite("activation_std", &std.view())?;
                self.check_finite("activation_global_scale", &global_scale.view())?;
                if !target_rms.is_finite() {
                    return Err(CrosscoderError::NonFiniteWeight {
                        path: self.origin.clone(),
                        key: "target_rms".into(),
                        index: 0,
                        value: *target_rms,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_finite<D: Dimension>(&self, key: &str, a: &ArrayView<'_, f32, D>) -> Result<()> {
        match a.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(index) => Err(CrosscoderError::NonFiniteWeight {
                path: self.origin.clone(),
                key: key.to_string(),
                index,
                value: a.iter().nth(index).copied().unwrap_or(f32::NAN),
            }),
        }
    }

    /// The config.
    pub fn config(&self) -> &CrosscoderConfig {
        &self.config
    }

    /// Mutable access to the metadata part of the config (models, hook, layer, source). Sizes and the
    /// activation cannot change here, since they are tied to the weights.
    pub fn set_metadata(
        &mut self,
        models: Vec<String>,
        hook: Option<HookPoint>,
        layer: Option<usize>,
    ) {
        self.config.models = models;
        self.config.layer = layer.or_else(|| hook.and_then(HookPoint::layer));
        self.config.hook = hook;
    }

    /// Records where the checkpoint came from (shown in reports and saved with it).
    pub fn set_source(&mut self, source: impl Into<String>) {
        self.config.source = Some(source.into());
    }

    /// The weights.
    pub fn weights(&self) -> &CrosscoderWeights {
        &self.weights
    }

    /// The input normaliser.
    pub fn normalizer(&self) -> &InputNormalizer {
        &self.normalizer
    }

    /// The file or directory the checkpoint was read from (`<memory>` if built in code).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Splits the checkpoint into its parts.
    pub fn into_parts(self) -> (CrosscoderConfig, CrosscoderWeights, InputNormalizer) {
        (self.config, self.weights, self.normalizer)
    }

    /// Sets per-model scaling factors (ckkissane): activations of model `m` are multiplied by
    /// `factors[m]` before encoding, and reconstructions divided by it. Replaces earlier factors.
    ///
    /// # Errors
    /// [`CrosscoderError::ScalingFactors`] when the count differs from `n_models` or a factor is not
    /// finite and positive; [`CrosscoderError::NormalizerConflict`] when the checkpoint already carries a
    /// dictionary_learning mean/std normaliser.
    pub fn with_scaling_factors(mut self, factors: Vec<f32>) -> Result<Self> {
        validate_factors(&factors, self.config.n_models)?;
        match &self.normalizer {
            InputNormalizer::MeanStd { .. } => {
                return Err(CrosscoderError::NormalizerConflict(format!(
                    "`{}` already normalises its inputs with activation_mean/std buffers; scaling factors \
                     would be applied twice",
                    self.origin.display()
                )))
            }
            InputNormalizer::ScalingFactors(old) if old != &factors => {
                tracing::info!(?old, new = ?factors, "replacing the checkpoint's scaling factors");
            }
            _ => {}
        }
        self.normalizer = InputNormalizer::ScalingFactors(factors);
        Ok(self)
    }

    /// Per-model decoder norms `||W_dec[m, j]||`, shape `[n_models, F]`.
    pub fn decoder_norms(&self) -> Array2<f32> {
        analysis::decoder_norms(self.weights.w_dec.view())
    }

    /// The code normalisation `w_j` of every latent, shape `[F]`.
    pub fn code_normalization_weights(&self) -> Array1<f32> {
        self.config
            .code_normalization
            .weights(&self.decoder_norms())
    }

    /// Writes the checkpoint in this crate's own format (see [`crate::formats::ours`]).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        crate::formats::ours::save(self, dir.as_ref())
    }

    /// Builds a runnable crosscoder on `backend`. The encoder is laid out once as a `[n_models * d, F]`
    /// matrix, so that encoding a batch is one GEMM plus bias and activation.
    ///
    /// # Errors
    /// [`CrosscoderError::Backend`] when the backend is not compiled in or not usable here.
    pub fn build(self, backend: BackendKind) -> Result<Box<dyn Crosscoder>> {
        self.build_in(backend, ComputeDtype::F32)
    }

    /// [`build`](Self::build) computing in `dtype`: with [`ComputeDtype::Bf16`] the encoder and
    /// decoder matrices are held in bf16 (half the memory) and multiplied with bf16 inputs and f32
    /// sums; biases, the input normaliser and the activation stay f32.
    ///
    /// # Errors
    /// As [`build`](Self::build); [`CrosscoderError::DtypeOnBackend`] for bf16 on burn-ndarray,
    /// which has no bf16 tensors.
    pub fn build_in(
        self,
        backend: BackendKind,
        dtype: ComputeDtype,
    ) -> Result<Box<dyn Crosscoder>> {
        if dtype == ComputeDtype::Bf16 && backend == BackendKind::NdArray {
            return Err(CrosscoderError::DtypeOnBackend {
                dtype: dtype.to_string(),
                backend: backend.to_string(),
            });
        }
        Ok(dispatch(
            backend,
            BuildVisitor {
                checkpoint: self,
                kind: backend,
                dtype,
            },
        )?)
    }

    /// Stacked decoder `[F, n_models, d]` (the ckkissane layout), for building the device model.
    pub(crate) fn decoder_fnd(&self) -> Array3<f32> {
        self.weights
            .w_dec
            .view()
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned()
    }

    /// Per-pair cosine similarity of decoder vectors `[n_models, n_models, F]`.
    pub(crate) fn decoder_cosines(&self) -> Array3<f32> {
        let (n, f, _) = self.weights.w_dec.dim();
        let norms = self.decoder_norms();
        let mut out = Array3::zeros((n, n, f));
        for a in 0..n {
            for b in 0..n {
                let cos = if a == b {
                    norms.row(a).mapv(|x| if x > 0.0 { 1.0 } else { f32::NAN })
                } else if b < a {
                    out.index_axis(Axis(0), b).index_axis(Axis(0), a).to_owned()
                } else {
                    analysis::cosine_rows(
                        self.weights.w_dec.index_axis(Axis(0), a),
                        self.weights.w_dec.index_axis(Axis(0), b),
                    )
                };
                out.index_axis_mut(Axis(0), a)
                    .index_axis_mut(Axis(0), b)
                    .assign(&cos);
            }
        }
        out
    }
}

fn validate_factors(factors: &[f32], n_models: usize) -> Result<()> {
    let bad = |reason: &str| CrosscoderError::ScalingFactors {
        factors: factors.to_vec(),
        n_models,
        reason: reason.to_string(),
    };
    if factors.len() != n_models {
        return Err(bad("one factor per model is needed"));
    }
    if factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err(bad("factors must be finite and positive"));
    }
    Ok(())
}
