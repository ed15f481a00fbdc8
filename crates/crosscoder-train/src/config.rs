//! What a training run does: objective, optimiser, schedules, initialisation. Presets reproduce the
//! published recipes (`REFERENCE.md` section 2).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crosscoder::CodeNormalization;
use crosscoder::{CrosscoderError, Result};

/// The reconstruction term of the L1 objective, with `e_m = x_m - x̂_m` per model:
///
/// | name | formula | used by |
/// |---|---|---|
/// | `squared-sum` | `mean_b sum_m ||e_m||²` | ckkissane replication (and Anthropic) |
/// | `mse` | `mean_{b,m} ||e_m||²` | dictionary_learning with `use_mse_loss=True` |
/// | `l2` | `mean_{b,m} ||e_m||` (not squared) | dictionary_learning default (and BatchTopK) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reconstruction {
    /// Squared error summed over models and dimensions, averaged over the batch.
    SquaredSum,
    /// Squared error summed over dimensions, averaged over batch and models.
    Mse,
    /// Euclidean norm of the error, averaged over batch and models.
    L2,
}

impl Reconstruction {
    /// The name used on the command line and in metrics: `squared-sum`, `mse` or `l2`.
    pub fn name(&self) -> &'static str {
        match self {
            Reconstruction::SquaredSum => "squared-sum",
            Reconstruction::Mse => "mse",
            Reconstruction::L2 => "l2",
        }
    }
}

impl FromStr for Reconstruction {
    type Err = CrosscoderError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "squared-sum" => Ok(Reconstruction::SquaredSum),
            "mse" => Ok(Reconstruction::Mse),
            "l2" => Ok(Reconstruction::L2),
            other => Err(CrosscoderError::TrainConfig {
                field: "reconstruction".into(),
                reason: format!("is `{other}`; expected squared-sum, mse or l2"),
            }),
        }
    }
}

/// The BatchTopK objective of the dictionary_learning fork (`BatchTopKCrossCoderTrainer`).
///
/// Training keeps the `k * batch` largest values of `relu(pre) * w_j` over the whole batch (the kept values
/// are the unscaled `relu(pre)`); the loss is the `l2` reconstruction plus `auxk_alpha` times the AuxK loss on
/// latents that have not fired for `dead_tokens` tokens. The inference threshold is an EMA of the smallest
/// kept scaled activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchTopKObjective {
    /// Target latents per row.
    pub k: usize,
    /// `k` at step 0, annealed linearly to `k` over `k_annealing_steps` (equal to `k`: no annealing).
    pub k_initial: usize,
    /// Steps of linear k annealing (0: none).
    pub k_annealing_steps: usize,
    /// Weight of the AuxK loss (reference 1/32).
    pub auxk_alpha: f32,
    /// Latents per row the AuxK loss may use (reference `d / 2`).
    pub top_k_aux: usize,
    /// A latent that has not fired for this many tokens is dead (reference 10,000,000).
    pub dead_tokens: u64,
    /// EMA coefficient of the threshold (reference 0.999; f64 like the Python float).
    pub threshold_beta: f64,
    /// The threshold is updated on steps strictly greater than this one (reference 1,000).
    pub threshold_start_step: i64,
}

impl BatchTopKObjective {
    /// `k` in effect at `step` (the reference's linear annealing, rounded half to even like Python's
    /// `round`, at least 1).
    pub fn k_at(&self, step: usize) -> usize {
        if self.k_annealing_steps == 0 || self.k_initial == self.k {
            return self.k_initial;
        }
        if step >= self.k_annealing_steps {
            return self.k;
        }
        let progress = step as f64 / self.k_annealing_steps as f64;
        let k = self.k_initial as f64 - (self.k_initial as f64 - self.k as f64) * progress;
        (k.round_ties_even() as usize).max(1)
    }
}

/// The training objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// `loss = recon + lambda_t * mean_b sum_j f_j * w_j`, with `w_j` the code normalisation (by default
    /// `sum_m ||W_dec[m, j]||`: the sum of separate per-model decoder norms is what lets a latent live in
    /// one model only). `lambda_t` ramps linearly from 0 over `lambda_warmup_steps` (ckkissane), then stays.
    L1 {
        /// The reconstruction term.
        reconstruction: Reconstruction,
        /// The sparsity coefficient.
        lambda: f32,
        /// Steps of linear lambda warm-up (0: constant).
        lambda_warmup_steps: usize,
    },
    /// BatchTopK (Minder et al. 2025).
    BatchTopK(BatchTopKObjective),
}

impl Objective {
    /// `l1` or `batch-topk`.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::L1 { .. } => "l1",
            Objective::BatchTopK(_) => "batch-topk",
        }
    }
}

/// The learning-rate factor of dictionary_learning's `get_lr_schedule`: linear warm-up from 0 over
/// `warmup_steps`, constant, then linear decay to 0 from `decay_start` to the last step. ckkissane's schedule
/// is `warmup_steps = 0, decay_start = 0.8 * steps`. The factor of update `t` (0-based) is `factor(t)`,
/// as with torch's `LambdaLR`, so with a warm-up the first update has learning rate 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// First step of the linear decay, if any.
    pub decay_start: Option<usize>,
}

impl LrSchedule {
    /// The factor multiplying the base learning rate at `step` of `total_steps`.
    pub fn factor(&self, step: usize, total_steps: usize) -> f32 {
        if step < self.warmup_steps {
            return step as f32 / self.warmup_steps as f32;
        }
        match self.decay_start {
            Some(start) if step >= start => {
                total_steps.saturating_sub(step) as f32 / (total_steps - start) as f32
            }
            _ => 1.0,
        }
    }
}

/// How the decoder bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecoderBiasInit {
    /// Zeros.
    Zero,
    /// The per-model geometric median of the first batch (dictionary_learning's BatchTopK trainer, at step 0).
    GeometricMedian,
}

/// Everything a training run needs besides data. Build it from a preset ([`TrainConfig::ckkissane`],
/// [`TrainConfig::dictionary_learning_l1`], [`TrainConfig::batch_top_k`]) and adjust fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Models encoded together (2: index 0 = base, 1 = chat).
    pub n_models: usize,
    /// Activation width per model.
    pub d_model: usize,
    /// Number of latents.
    pub dict_size: usize,
    /// The objective.
    pub objective: Objective,
    /// The code normalisation `w_j` used by the sparsity penalty and BatchTopK's selection.
    pub code_normalization: CodeNormalization,
    /// Base learning rate of Adam.
    pub lr: f32,
    /// Adam's `(beta1, beta2)`, in f64 like the Python floats the reference uses (`1 - 0.999` computed in
    /// f32 is off by 1.3e-5 relative, which shows in the second moments).
    pub betas: [f64; 2],
    /// Adam's epsilon (torch default 1e-8; note burn's own Adam defaults to 1e-5).
    pub eps: f32,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Total number of steps (the schedules depend on it).
    pub total_steps: usize,
    /// Clip the global gradient norm to this value (torch `clip_grad_norm_`), if set.
    pub grad_clip: Option<f32>,
    /// Each `W_dec[m, j]` starts as a random direction of this norm, and `W_enc[m, :, j]` as its transpose;
    /// `b_enc` starts at zero.
    pub init_norm: f32,
    /// How `b_dec` starts.
    pub decoder_bias_init: DecoderBiasInit,
    /// Rows per batch (the trainer accepts any batch size; this is what the data loader is asked for).
    pub batch_size: usize,
}

impl TrainConfig {
    /// The ckkissane replication (Anthropic's recipe): L1 with squared-sum reconstruction, lambda ramping
    /// 0 -> 2 over the first 5% of steps, Adam(0.9, 0.999) at lr 5e-5 with linear decay over the last 20%,
    /// gradient-norm clip 1.0, batch 4096, decoder rows initialised to norm 0.08 with `W_enc = W_dec^T`.
    pub fn ckkissane(
        n_models: usize,
        d_model: usize,
        dict_size: usize,
        total_steps: usize,
    ) -> Self {
        TrainConfig {
            n_models,
            d_model,
            dict_size,
            objective: Objective::L1 {
                reconstruction: Reconstruction::SquaredSum,
                lambda: 2.0,
                lambda_warmup_steps: total_steps / 20,
            },
            code_normalization: CodeNormalization::Crosscoder,
            lr: 5e-5,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: LrSchedule {
                warmup_steps: 0,
                decay_start: Some(total_steps * 4 / 5),
            },
            total_steps,
            grad_clip: Some(1.0),
            init_norm: 0.08,
            decoder_bias_init: DecoderBiasInit::Zero,
            batch_size: 4096,
        }
    }

    /// dictionary_learning's `CrossCoderTrainer` (the released science-of-finetuning L1 crosscoder used
    /// `lambda = 0.041`, lr 1e-4): non-squared `l2` reconstruction, constant lambda, linear lr warm-up over
    /// 1,000 steps (at most a tenth of the run), no clipping, `W_dec = W_enc^T` at the norm
    /// `kaiming_uniform` gives on average (`sqrt(2 / F)`).
    pub fn dictionary_learning_l1(
        n_models: usize,
        d_model: usize,
        dict_size: usize,
        total_steps: usize,
        lambda: f32,
    ) -> Self {
        TrainConfig {
            n_models,
            d_model,
            dict_size,
            objective: Objective::L1 {
                reconstruction: Reconstruction::L2,
                lambda,
                lambda_warmup_steps: 0,
            },
            code_normalization: CodeNormalization::Crosscoder,
            lr: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: LrSchedule {
                warmup_steps: 1000.min(total_steps / 10),
                decay_start: None,
            },
            total_steps,
            grad_clip: None,
            init_norm: (2.0 / dict_size as f32).sqrt(),
            decoder_bias_init: DecoderBiasInit::Zero,
            batch_size: 2048,
        }
    }

    /// dictionary_learning's `BatchTopKCrossCoderTrainer` with `k` latents per row (the paper's preset is
    /// `k = 100`, `F = 32 d`, lr 1e-4, batch 2048): AuxK alpha 1/32 over `d / 2` latents, dead after 10M
    /// tokens, threshold EMA beta 0.999 from step 1,000, lr warm-up over 1,000 steps, gradient clip 1.0,
    /// geometric-median decoder bias, unit-norm tied initialisation. Warm-up and threshold start are capped at
    /// a tenth of the run for short runs.
    pub fn batch_top_k(
        n_models: usize,
        d_model: usize,
        dict_size: usize,
        total_steps: usize,
        k: usize,
    ) -> Self {
        let warmup = 1000.min(total_steps / 10);
        TrainConfig {
            n_models,
            d_model,
            dict_size,
            objective: Objective::BatchTopK(BatchTopKObjective {
                k,
                k_initial: k,
                k_annealing_steps: 0,
                auxk_alpha: 1.0 / 32.0,
                top_k_aux: d_model / 2,
                dead_tokens: 10_000_000,
                threshold_beta: 0.999,
                threshold_start_step: warmup as i64,
            }),
            code_normalization: CodeNormalization::Crosscoder,
            lr: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            schedule: LrSchedule {
                warmup_steps: warmup,
                decay_start: None,
            },
            total_steps,
            grad_clip: Some(1.0),
            init_norm: 1.0,
            decoder_bias_init: DecoderBiasInit::GeometricMedian,
            batch_size: 2048,
        }
    }

    /// The sparsity coefficient at `step` (L1 only; 0 for BatchTopK).
    pub fn lambda_at(&self, step: usize) -> f32 {
        match &self.objective {
            Objective::L1 {
                lambda,
                lambda_warmup_steps,
                ..
            } => {
                if step < *lambda_warmup_steps {
                    lambda * step as f32 / *lambda_warmup_steps as f32
                } else {
                    *lambda
                }
            }
            Objective::BatchTopK(_) => 0.0,
        }
    }

    /// The learning rate at `step`.
    pub fn lr_at(&self, step: usize) -> f32 {
        self.lr * self.schedule.factor(step, self.total_steps)
    }

    /// Checks sizes, rates and schedules.
    ///
    /// # Errors
    /// [`CrosscoderError::TrainConfig`] naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(CrosscoderError::TrainConfig {
                field: field.into(),
                reason,
            })
        };
        for (field, value) in [
            ("n_models", self.n_models),
            ("d_model", self.d_model),
            ("dict_size", self.dict_size),
            ("total_steps", self.total_steps),
            ("batch_size", self.batch_size),
        ] {
            if value == 0 {
                return bad(field, "must be positive".into());
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("is {}; must be finite and positive", self.lr));
        }
        if !self.betas.iter().all(|b| (0.0..1.0).contains(b)) {
            return bad(
                "betas",
                format!("are {:?}; each must be in [0, 1)", self.betas),
            );
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("is {}; must be positive", self.eps));
        }
        if !(self.init_norm.is_finite() && self.init_norm > 0.0) {
            return bad(
                "init_norm",
                format!("is {}; must be positive", self.init_norm),
            );
        }
        if let Some(clip) = self.grad_clip {
            if !(clip.is_finite() && clip > 0.0) {
                return bad("grad_clip", format!("is {clip}; must be positive"));
            }
        }
        if self.schedule.warmup_steps > self.total_steps {
            return bad(
                "schedule.warmup_steps",
                format!(
                    "is {}, more than total_steps {}",
                    self.schedule.warmup_steps, self.total_steps
                ),
            );
        }
        if let Some(start) = self.schedule.decay_start {
            if start >= self.total_steps || start < self.schedule.warmup_steps {
                return bad(
                    "schedule.decay_start",
                    format!(
                        "is {start}; must be in [warmup_steps {}, total_steps {})",
                        self.schedule.warmup_steps, self.total_steps
                    ),
                );
            }
        }
        match &self.objective {
            Objective::L1 { lambda, .. } => {
                if !(lambda.is_finite() && *lambda >= 0.0) {
                    return bad("objective.lambda", format!("is {lambda}; must be >= 0"));
                }
            }
            Objective::BatchTopK(o) => {
                if o.k == 0
                    || o.k > self.dict_size
                    || o.k_initial == 0
                    || o.k_initial > self.dict_size
                {
                    return bad(
                        "objective.k",
                        format!(
                            "k = {}, k_initial = {}: each must be in 1..={} (the dictionary size)",
                            o.k, o.k_initial, self.dict_size
                        ),
                    );
                }
                if !(0.0..1.0).contains(&o.threshold_beta) {
                    return bad(
                        "objective.threshold_beta",
                        format!("is {}; must be in [0, 1)", o.threshold_beta),
                    );
                }
                if !(o.auxk_alpha.is_finite() && o.auxk_alpha >= 0.0) {
                    return bad("objective.auxk_alpha", format!("is {}", o.auxk_alpha));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_annealing_follows_the_reference_rounding() {
        let o = BatchTopKObjective {
            k: 4,
            k_initial: 8,
            k_annealing_steps: 10,
            auxk_alpha: 1.0 / 32.0,
            top_k_aux: 8,
            dead_tokens: 64,
            threshold_beta: 0.999,
            threshold_start_step: 0,
        };
        let ks: Vec<usize> = (0..12).map(|s| o.k_at(s)).collect();
        // 8 - 4 * s / 10, rounded half to even like Python's round().
        assert_eq!(ks, vec![8, 8, 7, 7, 6, 6, 6, 5, 5, 4, 4, 4]);
    }

    #[test]
    fn presets_validate_and_bad_fields_are_named() {
        TrainConfig::ckkissane(2, 16, 64, 100).validate().unwrap();
        TrainConfig::batch_top_k(2, 16, 64, 100, 4)
            .validate()
            .unwrap();
        TrainConfig::dictionary_learning_l1(2, 16, 64, 100, 0.04)
            .validate()
            .unwrap();
        let mut c = TrainConfig::batch_top_k(2, 16, 64, 100, 4);
        c.objective = Objective::BatchTopK(BatchTopKObjective {
            k: 65,
            ..match c.objective {
                Objective::BatchTopK(o) => o,
                _ => unreachable!(),
            }
        });
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("objective.k"), "{err}");
        let mut c = TrainConfig::ckkissane(2, 16, 64, 100);
        c.lr = f32::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("`lr`"));
        assert!("l3".parse::<Reconstruction>().is_err());
    }
}
