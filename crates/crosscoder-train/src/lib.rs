//! # crosscoder-train
//!
//! Training crosscoders on burn's autodiff: the L1 objective (ckkissane and dictionary_learning flavours)
//! and BatchTopK (dictionary_learning fork), with Adam, schedules, clipping, atomic checkpoints that resume
//! bit for bit, JSONL metrics and a progress bar. [`train_on_store`] does a whole run on an activation
//! store (`activation-cache`): batches, checkpoints, the trained crosscoder, validation and
//! `training_summary.json` ([`store`] documents the files); the `train_crosscoder` example is its command
//! line.
//!
//! ```no_run
//! use crosscoder_train::{fit, FitOptions, TrainConfig, TrainerState};
//! use crosscoder::BackendKind;
//! use ndarray::Array3;
//!
//! // A BatchTopK crosscoder over two models of width 64 with 512 latents, k = 16, 2,000 steps.
//! let config = TrainConfig::batch_top_k(2, 64, 512, 2_000, 16);
//! let mut trainer = TrainerState::new(config, 0)?.build(BackendKind::Flex)?;
//! let next_batch = |_step: usize| -> crosscoder::Result<Array3<f32>> {
//!     Ok(Array3::zeros((256, 2, 64))) // your paired activations [batch, 2, d] here
//! };
//! let summary = fit(trainer.as_mut(), next_batch, &FitOptions::default())?;
//! println!("final loss {:?}", summary.last.map(|m| m.loss));
//! trainer.crosscoder()?.save("my-crosscoder")?;
//! # Ok::<(), crosscoder::CrosscoderError>(())
//! ```
//!
//! The objectives, exactly (`e_m = x_m - x̂_m`, `w_j` the code normalisation, by default
//! `||W_dec[0, j]|| + ||W_dec[1, j]||`):
//!
//! - **L1**: `loss = recon + lambda_t * mean_b sum_j f_j w_j`, `recon` one of [`Reconstruction`].
//! - **BatchTopK**: keep the `k * batch` largest `relu(pre) * w_j` of the batch (values unscaled);
//!   `loss = mean_{b,m} ||e_m|| + auxk_alpha * AuxK`, where AuxK reconstructs the detached error from the
//!   `top_k_aux` largest dead latents per row (no decoder bias) and is normalised by the error's variance.
//!   The threshold is `beta * threshold + (1 - beta) * min kept scaled activation` after
//!   `threshold_start_step`. Selections are made on the host; values and gradients stay on the device.
//!
//! One step of each objective equals the reference (PyTorch and dictionary_learning's trainers): see
//! `tests/training_parity.rs`.
//!
//! ## Cargo features
//!
//! - `cuda`: the CUDA backend (`stereo-core/cuda`).

mod config;
pub mod data_parallel;
mod device;
mod fit;
mod select;
mod state;
pub mod store;

use ndarray::ArrayView3;
use serde::{Deserialize, Serialize};
use stereo_core::BackendKind;

pub use config::{
    BatchTopKObjective, DecoderBiasInit, LrSchedule, Objective, Reconstruction, TrainConfig,
};
pub use device::L1_DEAD_WINDOW_TOKENS;
pub use fit::{fit, FitOptions, FitSummary};
pub use state::TrainerState;
pub use store::{
    train_on_store, Start, StoreTraining, StoreTrainingOutcome, TrainError, TrainingData,
    TrainingSummary,
};

use crosscoder::Result;
use crosscoder::{CrosscoderCheckpoint, CrosscoderWeights};

/// What one training step measured (one line of the metrics JSONL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step (0-based).
    pub step: usize,
    /// Learning rate used by this step's Adam update.
    pub lr: f32,
    /// The minimised loss.
    pub loss: f32,
    /// `mean_{b,m} ||x_m - x̂_m||` (dictionary_learning's `l2_loss`).
    pub l2_loss: f32,
    /// `mean_{b,m} ||x_m - x̂_m||²` (dictionary_learning's `mse_loss`).
    pub mse_loss: f32,
    /// L1 only: `mean_b sum_j f_j w_j`.
    pub sparsity_loss: Option<f32>,
    /// L1 only: the sparsity coefficient used.
    pub lambda: Option<f32>,
    /// BatchTopK only: the normalised AuxK loss (0 while no latent is dead).
    pub auxk_loss: Option<f32>,
    /// BatchTopK only: `k` used.
    pub k: Option<usize>,
    /// BatchTopK only: the inference threshold after this step.
    pub threshold: Option<f32>,
    /// Mean number of nonzero latents per row.
    pub l0: f32,
    /// Fraction of variance unexplained per model (index 0 = base, 1 = chat), over this batch.
    pub fvu: Vec<f32>,
    /// Latents that have not fired for the dead window (BatchTopK: `dead_tokens`; L1:
    /// [`L1_DEAD_WINDOW_TOKENS`]).
    pub dead_latents: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Whether clipping scaled the gradients.
    pub clipped: bool,
}

/// A training run on some backend, behind an object-safe interface (host arrays in and out).
/// Build one with [`TrainerState::build`].
pub trait CrosscoderTrainer: Send {
    /// The run's configuration.
    fn config(&self) -> &TrainConfig;

    /// The backend it runs on.
    fn backend(&self) -> BackendKind;

    /// The index of the next step (updates done so far).
    fn step_index(&self) -> usize;

    /// One optimisation step on `batch [rows, n_models, d]` (raw activations: the input scaling, if any,
    /// is applied inside).
    ///
    /// # Errors
    /// [`crosscoder::CrosscoderError::TrainingData`] for a batch of the wrong shape;
    /// [`crosscoder::CrosscoderError::Diverged`] for a non-finite loss or gradient (parameters unchanged).
    fn step(&mut self, batch: ArrayView3<'_, f32>) -> Result<StepMetrics>;

    /// Like [`CrosscoderTrainer::step`], also returning the gradients before clipping, in the reference
    /// layouts (for parity tests and debugging; costs a device-to-host copy).
    ///
    /// # Errors
    /// As [`CrosscoderTrainer::step`].
    fn step_with_gradients(
        &mut self,
        batch: ArrayView3<'_, f32>,
    ) -> Result<(StepMetrics, CrosscoderWeights)>;

    /// Joins a data-parallel group as `replica` (see [`data_parallel`]): from then on each step
    /// averages its gradients with the other replicas' (burn's collective all-reduce) before clipping
    /// and Adam. Call it on every replica, each from its own thread.
    ///
    /// # Errors
    /// [`crosscoder::CrosscoderError::InvalidOption`] for an objective that does not split by rows;
    /// [`crosscoder::CrosscoderError::Device`] when the collective refuses the registration.
    fn join_data_parallel(&mut self, replica: data_parallel::Replica) -> Result<()>;

    /// Leaves the data-parallel group (every replica, after its last step), so that another group
    /// can form in this process. Nothing happens outside a group.
    ///
    /// # Errors
    /// [`crosscoder::CrosscoderError::Device`] when the collective refuses.
    fn leave_data_parallel(&mut self) -> Result<()>;

    /// A host snapshot of everything needed to resume (see [`TrainerState::save`]).
    ///
    /// # Errors
    /// [`crosscoder::CrosscoderError::Device`] if the backend's data cannot be read back.
    fn state(&self) -> Result<TrainerState>;

    /// The crosscoder trained so far, in this crate's format (see [`TrainerState::crosscoder`]).
    ///
    /// # Errors
    /// As [`CrosscoderTrainer::state`] and [`TrainerState::crosscoder`].
    fn crosscoder(&self) -> Result<CrosscoderCheckpoint> {
        self.state()?.crosscoder()
    }
}

impl TrainerState {
    /// Builds a trainer on `backend` that continues from this state.
    ///
    /// # Errors
    /// [`crosscoder::CrosscoderError::Backend`] when the backend is not compiled in or not usable here.
    pub fn build(self, backend: BackendKind) -> Result<Box<dyn CrosscoderTrainer>> {
        Ok(stereo_core::dispatch(
            backend,
            device::BuildTrainer {
                state: self,
                kind: backend,
            },
        )?)
    }

    /// Like [`TrainerState::build`], on device `index` of the backend (the `index`-th GPU for CUDA; the
    /// CPU backends have one device).
    ///
    /// # Errors
    /// As [`TrainerState::build`].
    pub fn build_on(
        self,
        backend: BackendKind,
        index: usize,
    ) -> Result<Box<dyn CrosscoderTrainer>> {
        Ok(stereo_core::dispatch_on(
            backend,
            index,
            device::BuildTrainer {
                state: self,
                kind: backend,
            },
        )?)
    }
}
