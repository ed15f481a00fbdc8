//! The host form of a training run: parameters, Adam moments, step, dead-latent counters, threshold.
//! It is what a checkpoint holds, what a trainer is built from, and what a trainer hands back.

use std::collections::HashMap;
use std::path::Path;
use stereo_core::hook::HookPoint;

use ndarray::{Array1, Array2, Array3, Ix1, Ix2, Ix3};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::config::{Objective, TrainConfig};
use crosscoder::tensors::{read_safetensors, serialize_f32, weight_entries};
use crosscoder::{Activation, CrosscoderConfig, InputNormalizer};
use crosscoder::{CrosscoderCheckpoint, CrosscoderWeights};
use crosscoder::{CrosscoderError, Result};

/// Key of the JSON header inside a trainer checkpoint's safetensors metadata.
const HEADER_KEY: &str = "stereo_trainer_state";
/// Format name written in the header.
const FORMAT_NAME: &str = "stereo-crosscoder-trainer";

/// Everything needed to continue a training run exactly where it stopped.
///
/// Parameters and Adam moments are kept in the reference layouts ([`CrosscoderWeights`]:
/// `W_enc [n, d, F]`, `b_enc [F]`, `W_dec [n, F, d]`, `b_dec [n, d]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Updates done so far: the index of the next step. Schedules (learning rate, lambda, k) and the
    /// step-0 decoder-bias initialisation follow it.
    pub step: usize,
    /// Adam updates done so far (Adam's bias corrections use `adam_step + 1`). Equal to `step` in a run
    /// that started at step 0; separate so a run can start mid-schedule with a fresh optimiser.
    pub adam_step: usize,
    /// The parameters.
    pub weights: CrosscoderWeights,
    /// Adam's first moments (`exp_avg`).
    pub adam_m: CrosscoderWeights,
    /// Adam's second moments (`exp_avg_sq`).
    pub adam_v: CrosscoderWeights,
    /// Tokens since each latent last fired (BatchTopK's dead-latent counter; also kept for L1).
    pub tokens_since_fired: Vec<u64>,
    /// BatchTopK's inference threshold (`-1` until first set, as in the reference).
    pub threshold: f32,
    /// Per-model factors that multiply the activations before they reach the crosscoder (the ckkissane
    /// normalisation `sqrt(d) / mean ||x||`); saved with the trained crosscoder so callers pass raw
    /// activations. `None`: activations are used as given.
    pub input_scaling: Option<Vec<f32>>,
    /// Model names in index order (0 = base, 1 = chat), recorded in the trained crosscoder.
    pub models: Vec<String>,
    /// Hook of the activations, recorded in the trained crosscoder.
    pub hook: Option<HookPoint>,
}

/// The JSON header of a checkpoint file: everything but the tensors.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: u32,
    config: TrainConfig,
    step: usize,
    adam_step: usize,
    threshold: f32,
    tokens_since_fired: Vec<u64>,
    input_scaling: Option<Vec<f32>>,
    models: Vec<String>,
    hook: Option<HookPoint>,
}

impl TrainerState {
    /// A fresh run: each `W_dec[m, j]` a random direction of norm `config.init_norm` (from `seed`),
    /// `W_enc[m, :, j]` its transpose, zero biases, zero Adam moments, step 0.
    ///
    /// # Errors
    /// [`CrosscoderError::TrainConfig`] for an invalid config.
    pub fn new(config: TrainConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let (n, d, f) = (config.n_models, config.d_model, config.dict_size);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w_dec = Array3::<f32>::zeros((n, f, d));
        for m in 0..n {
            for j in 0..f {
                let mut row = w_dec.slice_mut(ndarray::s![m, j, ..]);
                row.mapv_inplace(|_| StandardNormal.sample(&mut rng));
                let norm = row
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::MIN_POSITIVE);
                row.mapv_inplace(|v| v / norm * config.init_norm);
            }
        }
        let w_enc = w_dec
            .view()
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .into_owned();
        let weights = CrosscoderWeights {
            w_enc,
            b_enc: Array1::zeros(f),
            w_dec,
            b_dec: Array2::zeros((n, d)),
        };
        Self::from_weights(config, weights)
    }

    /// A run starting from given weights (fine-tuning, or parity tests against a reference's initial state).
    ///
    /// # Errors
    /// [`CrosscoderError::TrainConfig`] for an invalid config; [`CrosscoderError::ShapeMismatch`] when the
    /// weights do not have the config's sizes.
    pub fn from_weights(config: TrainConfig, weights: CrosscoderWeights) -> Result<Self> {
        config.validate()?;
        check_weight_shapes(&config, &weights, Path::new("<memory>"))?;
        let zeros = zeros_like(&weights);
        Ok(TrainerState {
            tokens_since_fired: vec![0; config.dict_size],
            threshold: -1.0,
            step: 0,
            adam_step: 0,
            adam_m: zeros.clone(),
            adam_v: zeros,
            weights,
            config,
            input_scaling: None,
            models: Vec::new(),
            hook: None,
        })
    }

    /// Sets the per-model input scaling factors (see [`TrainerState::input_scaling`]).
    ///
    /// # Errors
    /// [`CrosscoderError::ScalingFactors`] for a wrong count or a factor that is not finite and positive.
    pub fn with_input_scaling(mut self, factors: Vec<f32>) -> Result<Self> {
        if factors.len() != self.config.n_models
            || !factors.iter().all(|f| f.is_finite() && *f > 0.0)
        {
            return Err(CrosscoderError::ScalingFactors {
                factors,
                n_models: self.config.n_models,
                reason: "need one finite positive factor per model".into(),
            });
        }
        self.input_scaling = Some(factors);
        Ok(self)
    }

    /// Records the models (index 0 = base, 1 = chat) and hook of the training activations.
    pub fn with_metadata(mut self, models: Vec<String>, hook: Option<HookPoint>) -> Self {
        self.models = models;
        self.hook = hook;
        self
    }

    /// Checks that training data with `models` (index order), `hook` and width `d_model` is what this
    /// run started on, so that a resumed run never continues on other activations. Models and hook
    /// are compared only where the state recorded them ([`TrainerState::with_metadata`]).
    ///
    /// # Errors
    /// [`CrosscoderError::ResumeMismatch`] naming the first field that differs.
    pub fn check_same_data(
        &self,
        models: &[String],
        hook: Option<HookPoint>,
        d_model: usize,
    ) -> Result<()> {
        let differ = |field: &str, checkpoint: String, data: String| {
            Err(CrosscoderError::ResumeMismatch {
                field: field.into(),
                checkpoint,
                data,
            })
        };
        if d_model != self.config.d_model {
            return differ(
                "d_model",
                self.config.d_model.to_string(),
                d_model.to_string(),
            );
        }
        if !self.models.is_empty() {
            if models.len() != self.models.len() {
                return differ(
                    "the model count",
                    self.models.len().to_string(),
                    models.len().to_string(),
                );
            }
            for (i, (ours, theirs)) in self.models.iter().zip(models).enumerate() {
                if ours != theirs {
                    return differ(&format!("models[{i}]"), ours.clone(), theirs.clone());
                }
            }
        }
        match (self.hook, hook) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                differ("hook", ours.to_string(), theirs.to_string())
            }
            (Some(ours), None) => differ("hook", ours.to_string(), "none recorded".into()),
            _ => Ok(()),
        }
    }

    /// The trained crosscoder as a checkpoint in this crate's format: ReLU for L1, BatchTopK with the
    /// target `k` and the learned threshold, the input scaling as [`InputNormalizer::ScalingFactors`].
    ///
    /// # Errors
    /// [`CrosscoderError::NonFiniteWeight`] when training left a non-finite weight.
    pub fn crosscoder(&self) -> Result<CrosscoderCheckpoint> {
        let mut config = CrosscoderConfig::relu(
            self.config.n_models,
            self.config.d_model,
            self.config.dict_size,
        );
        config.code_normalization = self.config.code_normalization;
        if let Objective::BatchTopK(o) = &self.config.objective {
            config.activation = Activation::BatchTopK {
                k: o.k,
                threshold: self.threshold,
            };
        }
        let normalizer = match &self.input_scaling {
            Some(f) => InputNormalizer::ScalingFactors(f.clone()),
            None => InputNormalizer::Identity,
        };
        let mut checkpoint = CrosscoderCheckpoint::new(config, self.weights.clone(), normalizer)?;
        checkpoint.set_metadata(self.models.clone(), self.hook, None);
        checkpoint.set_source(format!(
            "trained by stereo ({} objective, {} steps)",
            self.config.objective.name(),
            self.step
        ));
        Ok(checkpoint)
    }

    /// Writes the state to one safetensors file, atomically: a temporary file in the same directory is
    /// written, flushed to disk and renamed over `path`, so a crash leaves either the old checkpoint or the
    /// new one, never a torn file.
    ///
    /// # Errors
    /// [`CrosscoderError::Io`] / [`CrosscoderError::Safetensors`] on write failures.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let header = Header {
            format: FORMAT_NAME.into(),
            format_version: 1,
            config: self.config.clone(),
            step: self.step,
            adam_step: self.adam_step,
            threshold: self.threshold,
            tokens_since_fired: self.tokens_since_fired.clone(),
            input_scaling: self.input_scaling.clone(),
            models: self.models.clone(),
            hook: self.hook,
        };
        let json = serde_json::to_string(&header).map_err(|e| CrosscoderError::json(path, e))?;
        let mut entries = weight_entries("weights", &self.weights);
        entries.extend(weight_entries("adam_m", &self.adam_m));
        entries.extend(weight_entries("adam_v", &self.adam_v));
        let metadata: HashMap<String, String> = [(HEADER_KEY.to_string(), json)].into();
        let bytes = serialize_f32(&entries, metadata, path)?;
        Ok(stereo_core::atomic_file::write_atomic(path, &bytes)?)
    }

    /// Reads a checkpoint written by [`TrainerState::save`].
    ///
    /// # Errors
    /// [`CrosscoderError::TrainerCheckpoint`] when the file is not a trainer checkpoint or disagrees with
    /// its own config; I/O and safetensors errors naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (mut tensors, metadata) = read_safetensors(path)?;
        let bad = |reason: String| CrosscoderError::TrainerCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let json = metadata.get(HEADER_KEY).ok_or_else(|| {
            bad(format!(
                "no `{HEADER_KEY}` header: not a trainer checkpoint"
            ))
        })?;
        let header: Header =
            serde_json::from_str(json).map_err(|e| bad(format!("unreadable header: {e}")))?;
        if header.format != FORMAT_NAME || header.format_version != 1 {
            return Err(bad(format!(
                "format `{}` version {}, expected `{FORMAT_NAME}` version 1",
                header.format, header.format_version
            )));
        }
        header.config.validate()?;
        let mut take = |prefix: &str| -> Result<CrosscoderWeights> {
            Ok(CrosscoderWeights {
                w_enc: tensors.take_array::<Ix3>(&format!("{prefix}.W_enc"), "[n, d, F]")?,
                b_enc: tensors.take_array::<Ix1>(&format!("{prefix}.b_enc"), "[F]")?,
                w_dec: tensors.take_array::<Ix3>(&format!("{prefix}.W_dec"), "[n, F, d]")?,
                b_dec: tensors.take_array::<Ix2>(&format!("{prefix}.b_dec"), "[n, d]")?,
            })
        };
        let weights = take("weights")?;
        let adam_m = take("adam_m")?;
        let adam_v = take("adam_v")?;
        for w in [&weights, &adam_m, &adam_v] {
            check_weight_shapes(&header.config, w, path)?;
        }
        if header.tokens_since_fired.len() != header.config.dict_size {
            return Err(bad(format!(
                "{} dead-latent counters for a dictionary of {}",
                header.tokens_since_fired.len(),
                header.config.dict_size
            )));
        }
        if header.step > header.config.total_steps {
            return Err(bad(format!(
                "step {} is past total_steps {}",
                header.step, header.config.total_steps
            )));
        }
        Ok(TrainerState {
            config: header.config,
            step: header.step,
            adam_step: header.adam_step,
            weights,
            adam_m,
            adam_v,
            tokens_since_fired: header.tokens_since_fired,
            threshold: header.threshold,
            input_scaling: header.input_scaling,
            models: header.models,
            hook: header.hook,
        })
    }
}

/// Zero arrays with the shapes of `w`.
fn zeros_like(w: &CrosscoderWeights) -> CrosscoderWeights {
    CrosscoderWeights {
        w_enc: Array3::zeros(w.w_enc.raw_dim()),
        b_enc: Array1::zeros(w.b_enc.raw_dim()),
        w_dec: Array3::zeros(w.w_dec.raw_dim()),
        b_dec: Array2::zeros(w.b_dec.raw_dim()),
    }
}

/// Every tensor must have the config's sizes.
fn check_weight_shapes(config: &TrainConfig, w: &CrosscoderWeights, path: &Path) -> Result<()> {
    let (n, d, f) = (config.n_models, config.d_model, config.dict_size);
    let checks: [(&str, &[usize], Vec<usize>, &str); 4] = [
        ("W_enc", w.w_enc.shape(), vec![n, d, f], "[n, d, F]"),
        ("b_enc", w.b_enc.shape(), vec![f], "[F]"),
        ("W_dec", w.w_dec.shape(), vec![n, f, d], "[n, F, d]"),
        ("b_dec", w.b_dec.shape(), vec![n, d], "[n, d]"),
    ];
    for (key, actual, expected, axes) in checks {
        if actual != expected.as_slice() {
            return Err(CrosscoderError::ShapeMismatch {
                path: path.to_path_buf(),
                key: key.into(),
                expected: format!("{axes} = {expected:?}"),
                actual: actual.to_vec(),
            });
        }
    }
    Ok(())
}
