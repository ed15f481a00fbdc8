//! Train a crosscoder on a store of paired base/chat activations (made by `cache_activations`).
//!
//! ```text
//! cargo run --release --example train_crosscoder -- --store results/store --dict-size 16384 \
//!     --objective batch-topk --k 100 --steps 50000 --out results/crosscoder
//! cargo run --release --example train_crosscoder -- --store results/store --dict-size 16384 \
//!     --objective l1 --steps 50000 --out results/crosscoder-l1      # the ckkissane recipe
//! ```
//!
//! What lands in `--out`:
//! - `crosscoder.safetensors` + `crosscoder_config.json`: the trained crosscoder in our format (models,
//!   hook and input scaling recorded), loadable by `crosscoder::load` like any other checkpoint;
//! - `trainer.safetensors`: the resumable trainer state (written atomically every `--checkpoint-every`
//!   steps). Run the same command again with `--resume` after an interruption: the result equals an
//!   uninterrupted run. A store with other models, hook or width than the checkpoint's is refused;
//! - `metrics.jsonl`: one line per step (loss parts, L0, FVU per model, dead latents, threshold, lr);
//! - `relative_norms.png`: the decoder relative-norm histogram (0 = base-only, 1 = chat-only);
//! - `training_summary.json`: validation FVU / L0 / dead latents and latent class counts.
//!
//! Activations are scaled per model by `sqrt(d) / mean ||x||` from the store's statistics (BOS excluded;
//! the ckkissane normalisation), and the factors are saved with the crosscoder so it takes raw activations.

use std::path::PathBuf;

use activation_cache::{ActivationStore, BatchOptions, Split, StepBatches};
use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::train::{fit, FitOptions, Objective, Reconstruction, TrainConfig, TrainerState};
use crosscoder::{
    relative_norm_histogram, BackendKind, DecoderAnalysis, HistogramOptions, LatentActivity,
    MetricsAccumulator, RelativeNormThresholds, BASE, CHAT,
};

/// Train a crosscoder (L1 or BatchTopK) on cached paired activations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Activation store directory (from the cache_activations example).
    #[arg(long)]
    store: PathBuf,
    /// Number of latents F.
    #[arg(long)]
    dict_size: usize,
    /// Objective: `l1` (ckkissane recipe) or `batch-topk` (dictionary_learning fork).
    #[arg(long, default_value = "batch-topk")]
    objective: String,
    /// BatchTopK: latents per row.
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// BatchTopK: start at this k and anneal linearly to --k over --k-annealing-steps.
    #[arg(long)]
    k_initial: Option<usize>,
    /// BatchTopK: steps of k annealing.
    #[arg(long, default_value_t = 0)]
    k_annealing_steps: usize,
    /// L1: sparsity coefficient (default: the preset's, 2.0 for the ckkissane recipe).
    #[arg(long)]
    lambda: Option<f32>,
    /// L1: reconstruction term: squared-sum (ckkissane), mse or l2 (dictionary_learning).
    #[arg(long)]
    reconstruction: Option<String>,
    /// Training steps.
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Rows per batch (default: the preset's, 4096 for L1 and 2048 for BatchTopK).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate (default: the preset's).
    #[arg(long)]
    lr: Option<f32>,
    /// Backend: flex, ndarray or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Seed of the initialisation and of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of documents held out for validation.
    #[arg(long, default_value_t = 0.05)]
    validation_fraction: f64,
    /// Train on the activations as stored (no per-model scaling).
    #[arg(long)]
    no_input_scaling: bool,
    /// Continue from `--out/trainer.safetensors`.
    #[arg(long)]
    resume: bool,
    /// Write the trainer checkpoint every this many steps.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: usize,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let store = ActivationStore::open(&args.store)
        .with_context(|| format!("opening the store {}", args.store.display()))?;
    let manifest = store.manifest();
    let d = store.d_model();
    std::fs::create_dir_all(&args.out)?;
    let checkpoint_path = args.out.join("trainer.safetensors");

    let state = if args.resume {
        let state = TrainerState::load(&checkpoint_path)?;
        let store_models: Vec<String> = manifest.models.iter().map(|m| m.name.clone()).collect();
        state
            .check_same_data(&store_models, Some(manifest.hook), d)
            .with_context(|| {
                format!(
                    "resuming {} on {}",
                    checkpoint_path.display(),
                    args.store.display()
                )
            })?;
        println!(
            "resuming at step {} of {}",
            state.step, state.config.total_steps
        );
        state
    } else {
        let config = build_config(&args, d)?;
        let mut state = TrainerState::new(config, args.seed)?.with_metadata(
            manifest.models.iter().map(|m| m.name.clone()).collect(),
            Some(manifest.hook),
        );
        if !args.no_input_scaling {
            let factors = store.normalization_factors(false).to_vec();
            println!("input scaling factors (sqrt(d) / mean ||x||, BOS excluded): {factors:?}");
            state = state.with_input_scaling(factors)?;
        }
        state
    };
    let config = state.config.clone();
    println!(
        "{} crosscoder: 2 x {d} -> {} latents, {} steps of {} rows on {}",
        config.objective.name(),
        config.dict_size,
        config.total_steps,
        config.batch_size,
        args.backend
    );

    let train_options = BatchOptions {
        batch_size: config.batch_size,
        seed: args.seed,
        split: Split::Train,
        validation_fraction: args.validation_fraction,
        ..BatchOptions::default()
    };
    let mut batches = StepBatches::new(&store, train_options)?;
    println!(
        "{} batches per epoch ({:.1} epochs)",
        batches.batches_per_epoch(),
        config.total_steps as f64 / batches.batches_per_epoch() as f64
    );
    let mut trainer = state.build(args.backend)?;
    let summary = fit(
        trainer.as_mut(),
        |step| {
            batches
                .batch(step)
                .map_err(|e| crosscoder::CrosscoderError::TrainingData {
                    step,
                    reason: e.to_string(),
                })
        },
        &FitOptions {
            until_step: None,
            checkpoint: Some(checkpoint_path),
            checkpoint_every: args.checkpoint_every,
            metrics: Some(args.out.join("metrics.jsonl")),
            progress: true,
        },
    )?;
    println!(
        "{} steps in {:.1} s ({:.2} steps/s)",
        summary.steps_run,
        summary.seconds,
        summary.steps_run as f64 / summary.seconds.max(1e-9)
    );

    let checkpoint = trainer.crosscoder()?;
    checkpoint.save(&args.out)?;
    let crosscoder = checkpoint.build(args.backend)?;

    // Validation: reconstruction and dead latents on held-out documents (all of them if there are none).
    let split = if args.validation_fraction > 0.0 {
        Split::Validation
    } else {
        Split::All
    };
    let mut accumulator = MetricsAccumulator::new(2, d);
    let mut activity = LatentActivity::new(config.dict_size);
    for batch in store.batches(BatchOptions {
        batch_size: 1024,
        split,
        validation_fraction: args.validation_fraction,
        ..BatchOptions::default()
    })? {
        let out = crosscoder.forward(batch.view())?;
        accumulator.update(batch.view(), out.reconstruction.view(), out.latents.view())?;
        activity.update(out.latents.view())?;
    }
    let validation = accumulator.finish();
    let analysis = DecoderAnalysis::new(
        crosscoder.as_ref(),
        BASE,
        CHAT,
        RelativeNormThresholds::default(),
    )?;
    let counts = analysis.counts();
    relative_norm_histogram(
        analysis.relative_norms.as_slice().unwrap_or(&[]),
        &args.out.join("relative_norms.png"),
        &HistogramOptions {
            title: format!("Relative decoder norm, {}", config.objective.name()),
            thresholds: Some(RelativeNormThresholds::default()),
            ..HistogramOptions::default()
        },
    )?;
    let report = serde_json::json!({
        "objective": config.objective.name(),
        "dict_size": config.dict_size,
        "steps": config.total_steps,
        "validation_rows": validation.rows,
        "validation_fvu": validation.fvu,
        "validation_frac_variance_explained": validation.frac_variance_explained,
        "validation_mse": validation.mse,
        "validation_l0": validation.l0,
        "dead_latents": activity.dead().len(),
        "classes": {"shared": counts.shared, "base_only": counts.base_only, "chat_only": counts.chat_only, "other": counts.other},
        "last_step": summary.last,
    });
    std::fs::write(
        args.out.join("training_summary.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!(
        "validation ({} rows): FVU base {:.4} chat {:.4} (dictionary_learning FVE {:.4}), L0 {:.1}, dead {} of {}",
        validation.rows,
        validation.fvu[BASE],
        validation.fvu[CHAT],
        validation.frac_variance_explained,
        validation.l0,
        activity.dead().len(),
        config.dict_size
    );
    println!(
        "latents: {} shared, {} base-only, {} chat-only, {} other -> {}",
        counts.shared,
        counts.base_only,
        counts.chat_only,
        counts.other,
        args.out.display()
    );
    Ok(())
}

/// The preset for `--objective`, adjusted by the flags.
fn build_config(args: &Args, d: usize) -> Result<TrainConfig> {
    let mut config = match args.objective.as_str() {
        "l1" => TrainConfig::ckkissane(2, d, args.dict_size, args.steps),
        "batch-topk" => TrainConfig::batch_top_k(2, d, args.dict_size, args.steps, args.k),
        other => bail!("--objective must be l1 or batch-topk, not `{other}`"),
    };
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    if let Some(lr) = args.lr {
        config.lr = lr;
    }
    match &mut config.objective {
        Objective::L1 {
            lambda,
            reconstruction,
            ..
        } => {
            if let Some(l) = args.lambda {
                *lambda = l;
            }
            if let Some(r) = &args.reconstruction {
                *reconstruction = r.parse::<Reconstruction>()?;
            }
        }
        Objective::BatchTopK(o) => {
            o.k_initial = args.k_initial.unwrap_or(args.k);
            o.k_annealing_steps = args.k_annealing_steps;
        }
    }
    config.validate()?;
    Ok(config)
}
