//! Training on an activation store (`activation-cache`), start to finish: what `train_crosscoder` runs.
//!
//! [`train_on_store`] starts a run (or resumes one from `out/trainer.safetensors`, refusing a store with other
//! models, hook or width), scales the activations per model by `sqrt(d) / mean ||x||` from the store's
//! statistics (BOS excluded; saved with the crosscoder so that it takes raw activations), draws seeded
//! batches that depend on the step only (so a resumed run equals an uninterrupted one), trains with
//! [`fit`](crate::fit), and then evaluates the crosscoder on the held-out documents.
//!
//! What lands in `out`:
//!
//! | file | what |
//! |---|---|
//! | `crosscoder.safetensors`, `crosscoder_config.json` | the crosscoder in our format (models, hook and input scaling recorded) |
//! | `trainer.safetensors` | the resumable trainer state, replaced atomically every `checkpoint_every` steps |
//! | `metrics.jsonl` | one [`StepMetrics`](crate::StepMetrics) per line |
//! | `relative_norms.png` | the relative decoder-norm histogram with the class thresholds |
//! | `training_summary.json` | a [`TrainingSummary`] |
//! | `batch_order.json` | `{"batch_order": ...}`: the reader and its window; a resume with another is refused |
//!
//! `training_summary.json` (keys in this order):
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `classes` | `{base_only, chat_only, other, shared}` (counts) | latent classes by relative decoder norm (default thresholds) |
//! | `dead_latents` | integer | latents that never fired on the validation rows |
//! | `dict_size` | integer | `F` |
//! | `last_step` | [`StepMetrics`](crate::StepMetrics) or `null` | the last step run by this call |
//! | `objective` | `"l1"` or `"batch_top_k"` | the objective's name |
//! | `steps` | integer | the run's total steps |
//! | `validation_frac_variance_explained` | number | dictionary_learning's FVE, pooled over both models |
//! | `validation_fvu` | `[base, chat]` | fraction of variance unexplained per model |
//! | `validation_l0` | number | mean active latents per row |
//! | `validation_mse` | `[base, chat]` | mean squared error per model |
//! | `validation_rows` | integer | rows evaluated (the held-out documents, or all rows without a split) |

use std::path::{Path, PathBuf};

use activation_cache::{
    ActivationStore, BatchOptions, CacheError, DictionaryLearningCache, ForeignStepBatches,
    Manifest, Split, StepBatches, StreamedBatches, StreamingStore,
};
use crosscoder::{
    relative_norm_histogram, BackendKind, CrosscoderError, DecoderAnalysis, HistogramOptions,
    LatentActivity, MetricsAccumulator, RelativeNormThresholds, BASE, CHAT,
};
use ndarray::Array3;
use serde::{Deserialize, Serialize};
use stereo_core::hook::HookPoint;

use crate::data_parallel::DataParallelTrainer;
use crate::fit::{fit, FitOptions, FitSummary};
use crate::{StepMetrics, TrainConfig, TrainerState};

/// The trainer checkpoint in the output directory.
pub const TRAINER_FILE: &str = "trainer.safetensors";
/// The per-step metrics in the output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The histogram in the output directory.
pub const HISTOGRAM_FILE: &str = "relative_norms.png";
/// The summary in the output directory.
pub const SUMMARY_FILE: &str = "training_summary.json";
/// How the run draws its batches, in the output directory: a resumed run must draw them the same way.
pub const BATCH_ORDER_FILE: &str = "batch_order.json";

/// A training run could not start, continue or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] CacheError),
    /// Training, saving or evaluating the crosscoder failed.
    #[error(transparent)]
    Crosscoder(#[from] CrosscoderError),
}

/// The store a run trains on.
#[derive(Debug, Clone, Copy)]
pub enum TrainingData<'a> {
    /// Memory-mapped shards: batches shuffled across the whole store.
    Mapped(&'a ActivationStore),
    /// Shards streamed from a directory or object storage: the two-level shuffle of
    /// [`activation_cache::StreamingStore`] (the same batches from a bucket or a local copy).
    Streamed(&'a StreamingStore),
    /// A science-of-finetuning `dictionary_learning` cache read in place: batches shuffled across
    /// all rows, the validation split the last rows ([`DictionaryLearningCache`]).
    DictionaryLearning(&'a DictionaryLearningCache),
}

impl<'a> From<&'a DictionaryLearningCache> for TrainingData<'a> {
    fn from(cache: &'a DictionaryLearningCache) -> Self {
        TrainingData::DictionaryLearning(cache)
    }
}

impl<'a> From<&'a ActivationStore> for TrainingData<'a> {
    fn from(store: &'a ActivationStore) -> Self {
        TrainingData::Mapped(store)
    }
}

impl<'a> From<&'a StreamingStore> for TrainingData<'a> {
    fn from(store: &'a StreamingStore) -> Self {
        TrainingData::Streamed(store)
    }
}

impl TrainingData<'_> {
    /// The store's manifest (`None` for a foreign cache).
    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            TrainingData::Mapped(store) => Some(store.manifest()),
            TrainingData::Streamed(store) => Some(store.manifest()),
            TrainingData::DictionaryLearning(_) => None,
        }
    }

    /// Width of the activations.
    pub fn d_model(&self) -> usize {
        match self {
            TrainingData::Mapped(store) => store.d_model(),
            TrainingData::Streamed(store) => store.manifest().d_model,
            TrainingData::DictionaryLearning(cache) => cache.d_model(),
        }
    }

    /// How the batches are drawn (which reader, which window): part of the run's batch order.
    pub fn batch_order(&self) -> String {
        match self {
            TrainingData::Mapped(_) => "memory-mapped store, shuffled across all rows".into(),
            TrainingData::Streamed(store) => format!(
                "streamed store, rows shuffled within windows of {} shards",
                store.options().buffer_shards
            ),
            TrainingData::DictionaryLearning(_) => {
                "dictionary_learning cache, shuffled across all rows".into()
            }
        }
    }

    /// The models' names (base, chat), the hook and the per-model normalisation factors (BOS
    /// excluded where the store marks it).
    fn describe(&self) -> Result<(Vec<String>, HookPoint, [f32; 2]), TrainError> {
        let of_manifest = |m: &Manifest| {
            (
                m.models.iter().map(|m| m.name.clone()).collect(),
                m.hook,
                m.normalization_factors(false),
            )
        };
        match self {
            TrainingData::Mapped(store) => Ok(of_manifest(store.manifest())),
            TrainingData::Streamed(store) => Ok(of_manifest(store.manifest())),
            TrainingData::DictionaryLearning(cache) => {
                let names = cache.dirs().map(|d| d.display().to_string()).to_vec();
                let statistics = cache.statistics();
                let factors = [0, 1].map(|m| statistics[m].normalization_factor(false));
                Ok((names, cache.hook()?, factors))
            }
        }
    }

    fn step_batches(&self, options: BatchOptions) -> Result<StepSource<'_>, CacheError> {
        Ok(match self {
            TrainingData::Mapped(store) => StepSource::Mapped(StepBatches::new(store, options)?),
            TrainingData::Streamed(store) => {
                StepSource::Streamed(Box::new(store.step_batches(options)?))
            }
            TrainingData::DictionaryLearning(cache) => {
                StepSource::Foreign(cache.step_batches(options)?)
            }
        })
    }

    /// Every selected row once, in batches, given to `each`.
    fn for_each_batch(
        &self,
        options: BatchOptions,
        mut each: impl FnMut(Array3<f32>) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        match self {
            TrainingData::Mapped(store) => {
                for batch in store.batches(options)? {
                    each(batch)?;
                }
                Ok(())
            }
            TrainingData::DictionaryLearning(cache) => {
                relay(each, |forward| cache.for_each_batch(options, forward))
            }
            TrainingData::Streamed(store) => {
                relay(each, |forward| store.for_each_batch(options, forward))
            }
        }
    }
}

/// Runs a store's batch loop `run` with a callback that hands each batch to `each`; an error of
/// `each` stops the loop and comes back as itself, not as the store's.
fn relay(
    mut each: impl FnMut(Array3<f32>) -> Result<(), TrainError>,
    run: impl FnOnce(&mut dyn FnMut(Array3<f32>) -> Result<(), CacheError>) -> Result<(), CacheError>,
) -> Result<(), TrainError> {
    let mut failure = None;
    let mut forward = |batch| match each(batch) {
        Ok(()) => Ok(()),
        Err(e) => {
            failure = Some(e);
            Err(CacheError::Interrupted {
                stage: "by the evaluation".into(),
            })
        }
    };
    let outcome = run(&mut forward);
    outcome.map_err(|e| failure.take().unwrap_or(TrainError::Store(e)))
}

/// Step-addressed batches of either kind of store.
enum StepSource<'a> {
    Mapped(StepBatches<'a>),
    Streamed(Box<StreamedBatches>),
    Foreign(ForeignStepBatches<'a>),
}

impl StepSource<'_> {
    fn batches_per_epoch(&self) -> usize {
        match self {
            StepSource::Mapped(b) => b.batches_per_epoch(),
            StepSource::Streamed(b) => b.batches_per_epoch(),
            StepSource::Foreign(b) => b.batches_per_epoch(),
        }
    }

    fn batch(&mut self, step: usize) -> Result<Array3<f32>, CacheError> {
        match self {
            StepSource::Mapped(b) => b.batch(step),
            StepSource::Streamed(b) => b.batch(step),
            StepSource::Foreign(b) => b.batch(step),
        }
    }
}

/// How a run starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A new run with this configuration (its width must be the store's).
    Fresh(TrainConfig),
    /// Continue from `out/trainer.safetensors`.
    Resume,
}

/// Where and how to train.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreTraining {
    /// The output directory (created if missing).
    pub out: PathBuf,
    /// The backend.
    pub backend: BackendKind,
    /// Seed of the initialisation and of the batch order.
    pub seed: u64,
    /// Fraction of documents held out for validation (0: evaluate on every row).
    pub validation_fraction: f64,
    /// Scale each model's activations by `sqrt(d) / mean ||x||` (a fresh run only; a resumed run keeps
    /// its own).
    pub input_scaling: bool,
    /// Write the trainer checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Train on this many devices at once ([`crate::data_parallel::DataParallelTrainer`]; 1: one
    /// trainer). The batch size must divide by it.
    pub replicas: usize,
}

/// Latent counts per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classes {
    /// Base-only latents.
    pub base_only: usize,
    /// Chat-only latents.
    pub chat_only: usize,
    /// Everything else.
    pub other: usize,
    /// Shared latents.
    pub shared: usize,
}

/// `training_summary.json` (see the module docs for the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Latent classes by relative decoder norm.
    pub classes: Classes,
    /// Latents that never fired on the validation rows.
    pub dead_latents: usize,
    /// `F`.
    pub dict_size: usize,
    /// The last step run by this call.
    pub last_step: Option<StepMetrics>,
    /// The objective's name.
    pub objective: String,
    /// The run's total steps.
    pub steps: usize,
    /// dictionary_learning's fraction of variance explained, pooled over both models.
    pub validation_frac_variance_explained: f32,
    /// Fraction of variance unexplained per model.
    pub validation_fvu: Vec<f32>,
    /// Mean active latents per row.
    pub validation_l0: f32,
    /// Mean squared error per model.
    pub validation_mse: Vec<f32>,
    /// Rows evaluated.
    pub validation_rows: usize,
}

/// What [`train_on_store`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreTrainingOutcome {
    /// The state the run started from (step, configuration, input scaling).
    pub started: TrainerState,
    /// Batches per epoch of the training split.
    pub batches_per_epoch: usize,
    /// The training loop's own summary (steps run, seconds).
    pub fit: FitSummary,
    /// The summary written to `training_summary.json`.
    pub summary: TrainingSummary,
}

/// The trainer state a run starts from: fresh (with the store's models, hook and, if asked, input
/// scaling) or resumed (checked against the store).
fn starting_state(
    store: TrainingData<'_>,
    start: Start,
    run: &StoreTraining,
) -> Result<TrainerState, TrainError> {
    let (models, hook, factors) = store.describe()?;
    let order_path = run.out.join(BATCH_ORDER_FILE);
    match start {
        Start::Resume => {
            let state = TrainerState::load(run.out.join(TRAINER_FILE))?;
            state.check_same_data(&models, Some(hook), store.d_model())?;
            // Runs from before the file existed resume as they are.
            if let Ok(text) = std::fs::read_to_string(&order_path) {
                let recorded: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| CrosscoderError::json(&order_path, e))?;
                let recorded = recorded["batch_order"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if recorded != store.batch_order() {
                    return Err(CrosscoderError::ResumeMismatch {
                        field: "batch order".into(),
                        checkpoint: recorded,
                        data: store.batch_order(),
                    }
                    .into());
                }
            }
            Ok(state)
        }
        Start::Fresh(config) => {
            let order = serde_json::json!({ "batch_order": store.batch_order() });
            stereo_core::atomic_file::write_atomic(&order_path, format!("{order:#}\n").as_bytes())
                .map_err(CrosscoderError::from)?;
            let mut state = TrainerState::new(config, run.seed)?.with_metadata(models, Some(hook));
            if run.input_scaling {
                state = state.with_input_scaling(factors.to_vec())?;
            }
            Ok(state)
        }
    }
}

/// Trains a crosscoder on `store` into `run.out` (see the module docs).
///
/// # Errors
/// [`TrainError::Store`] when the store cannot be read; [`TrainError::Crosscoder`] for an invalid
/// configuration, a resume on other data, a diverged step, or a file that cannot be written (each error
/// names its file or field).
pub fn train_on_store<'a>(
    store: impl Into<TrainingData<'a>>,
    start: Start,
    run: &StoreTraining,
) -> Result<StoreTrainingOutcome, TrainError> {
    let store = store.into();
    std::fs::create_dir_all(&run.out).map_err(|e| CrosscoderError::io(&run.out, e))?;
    let started = starting_state(store, start, run)?;
    let config = started.config.clone();
    let mut batches = store.step_batches(BatchOptions {
        batch_size: config.batch_size,
        seed: run.seed,
        split: Split::Train,
        validation_fraction: run.validation_fraction,
        ..BatchOptions::default()
    })?;
    let batches_per_epoch = batches.batches_per_epoch();
    let mut trainer: Box<dyn crate::CrosscoderTrainer> = if run.replicas > 1 {
        Box::new(DataParallelTrainer::new(
            started.clone(),
            run.backend,
            run.replicas,
        )?)
    } else {
        started.clone().build(run.backend)?
    };
    let fitted = fit(
        trainer.as_mut(),
        |step| {
            batches
                .batch(step)
                .map_err(|e| CrosscoderError::TrainingData {
                    step,
                    reason: e.to_string(),
                })
        },
        &FitOptions {
            until_step: None,
            checkpoint: Some(run.out.join(TRAINER_FILE)),
            checkpoint_every: run.checkpoint_every,
            metrics: Some(run.out.join(METRICS_FILE)),
            progress: run.progress,
        },
    )?;
    let checkpoint = trainer.crosscoder()?;
    checkpoint.save(&run.out)?;
    let summary = evaluate(store, checkpoint, &config, run, fitted.last.clone())?;
    write_summary(&run.out.join(SUMMARY_FILE), &summary)?;
    Ok(StoreTrainingOutcome {
        started,
        batches_per_epoch,
        fit: fitted,
        summary,
    })
}

/// Reconstruction and dead latents on the held-out documents (all rows without a split), the latent
/// classes and their histogram.
fn evaluate(
    store: TrainingData<'_>,
    checkpoint: crosscoder::CrosscoderCheckpoint,
    config: &TrainConfig,
    run: &StoreTraining,
    last_step: Option<StepMetrics>,
) -> Result<TrainingSummary, TrainError> {
    let crosscoder = checkpoint.build(run.backend)?;
    let split = if run.validation_fraction > 0.0 {
        Split::Validation
    } else {
        Split::All
    };
    let mut accumulator = MetricsAccumulator::new(2, store.d_model());
    let mut activity = LatentActivity::new(config.dict_size);
    let options = BatchOptions {
        batch_size: 1024,
        split,
        validation_fraction: run.validation_fraction,
        ..BatchOptions::default()
    };
    store.for_each_batch(options, |batch| {
        let out = crosscoder.forward(batch.view())?;
        accumulator.update(batch.view(), out.reconstruction.view(), out.latents.view())?;
        activity.update(out.latents.view())?;
        Ok(())
    })?;
    let validation = accumulator.finish();
    let thresholds = RelativeNormThresholds::default();
    let analysis = DecoderAnalysis::new(crosscoder.as_ref(), BASE, CHAT, thresholds)?;
    relative_norm_histogram(
        analysis.relative_norms.as_slice().unwrap_or(&[]),
        &run.out.join(HISTOGRAM_FILE),
        &HistogramOptions {
            title: format!("Relative decoder norm, {}", config.objective.name()),
            thresholds: Some(thresholds),
            ..HistogramOptions::default()
        },
    )?;
    let counts = analysis.counts();
    Ok(TrainingSummary {
        classes: Classes {
            base_only: counts.base_only,
            chat_only: counts.chat_only,
            other: counts.other,
            shared: counts.shared,
        },
        dead_latents: activity.dead().len(),
        dict_size: config.dict_size,
        last_step,
        objective: config.objective.name().to_string(),
        steps: config.total_steps,
        validation_frac_variance_explained: validation.frac_variance_explained,
        validation_fvu: validation.fvu,
        validation_l0: validation.l0,
        validation_mse: validation.mse,
        validation_rows: validation.rows,
    })
}

fn write_summary(path: &Path, summary: &TrainingSummary) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| CrosscoderError::json(path, e))?;
    stereo_core::atomic_file::write_atomic(path, (text + "\n").as_bytes())
        .map_err(CrosscoderError::from)?;
    Ok(())
}
