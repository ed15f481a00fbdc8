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
//! - `training_summary.json`: validation FVU / L0 / dead latents and latent class counts (schema in
//!   `crosscoder_train::store`, which does the whole run: this example is its command line).
//!
//! The store may also be on object storage (`--store s3://bucket/prefix`, `gs://`, `az://`; a
//! partitioned store finalized by `cache_activations --finalize`): its shards are streamed a window at
//! a time (`--shuffle-buffer-shards`, the memory bound), with a seeded two-level shuffle (shard order per
//! epoch, then rows within the window) that gives the same batches, step for step, from the bucket or
//! from a local copy read with the same `--shuffle-buffer-shards`.
//!
//! Activations are scaled per model by `sqrt(d) / mean ||x||` from the store's statistics (BOS excluded;
//! the ckkissane normalisation), and the factors are saved with the crosscoder so it takes raw activations.

use std::path::PathBuf;

use activation_cache::{
    ActivationStore, DictionaryLearningCache, StoreLocation, StreamOptions, StreamingStore,
};
use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::{BackendKind, BASE, CHAT};
use crosscoder_train::{
    train_on_store, Objective, Reconstruction, Start, StoreTraining, TrainConfig, TrainingData,
};

/// Train a crosscoder (L1 or BatchTopK) on cached paired activations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Activation store (from the cache_activations example): a directory, or s3://, gs://, az:// (streamed).
    #[arg(long, required_unless_present = "dictionary_learning_cache")]
    store: Option<String>,
    /// Train on a cache written by the science-of-finetuning dictionary_learning code instead, read in
    /// place: the base and the chat model's cache directories (PairedActivationCache's two store dirs).
    #[arg(long, num_args = 2, value_names = ["BASE_DIR", "CHAT_DIR"], conflicts_with_all = ["store", "shuffle_buffer_shards"])]
    dictionary_learning_cache: Option<Vec<PathBuf>>,
    /// With --dictionary-learning-cache: the submodule folder inside each directory.
    #[arg(
        long,
        default_value = "layer_13_out",
        requires = "dictionary_learning_cache"
    )]
    submodule: String,
    /// Stream the store's shards this many at a time, shuffling rows within the window (the memory
    /// bound: twice this many shards are held; part of the batch order, so keep it when resuming).
    /// Default for object storage: 8; a local directory without it is memory-mapped whole.
    #[arg(long, value_parser = stereo::cli::count)]
    shuffle_buffer_shards: Option<usize>,
    /// Number of latents F.
    #[arg(long, value_parser = stereo::cli::count)]
    dict_size: usize,
    /// Objective: `l1` (ckkissane recipe) or `batch-topk` (dictionary_learning fork).
    #[arg(long, default_value = "batch-topk")]
    objective: String,
    /// BatchTopK: latents per row.
    #[arg(long, default_value_t = 100, value_parser = stereo::cli::count)]
    k: usize,
    /// BatchTopK: start at this k and anneal linearly to --k over --k-annealing-steps.
    #[arg(long, value_parser = stereo::cli::count)]
    k_initial: Option<usize>,
    /// BatchTopK: steps of k annealing.
    #[arg(long, default_value_t = 0)]
    k_annealing_steps: usize,
    /// L1: sparsity coefficient (default: the preset's, 2.0 for the ckkissane recipe).
    #[arg(long, value_parser = stereo::cli::non_negative)]
    lambda: Option<f32>,
    /// L1: reconstruction term: squared-sum (ckkissane), mse or l2 (dictionary_learning).
    #[arg(long)]
    reconstruction: Option<String>,
    /// Training steps.
    #[arg(long, default_value_t = 10_000, value_parser = stereo::cli::count)]
    steps: usize,
    /// Rows per batch (default: the preset's, 4096 for L1 and 2048 for BatchTopK).
    #[arg(long, value_parser = stereo::cli::count)]
    batch_size: Option<usize>,
    /// Learning rate (default: the preset's).
    #[arg(long, value_parser = stereo::cli::positive)]
    lr: Option<f32>,
    /// Backend: flex, ndarray or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Seed of the initialisation and of the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of documents held out for validation.
    #[arg(long, default_value_t = 0.05, value_parser = stereo::cli::fraction_f64)]
    validation_fraction: f64,
    /// Train on the activations as stored (no per-model scaling).
    #[arg(long)]
    no_input_scaling: bool,
    /// Continue from `--out/trainer.safetensors`.
    #[arg(long)]
    resume: bool,
    /// Write the trainer checkpoint every this many steps.
    #[arg(long, default_value_t = 1000, value_parser = stereo::cli::count)]
    checkpoint_every: usize,
    /// Train on this many devices at once (the first N GPUs with --backend cuda; CPU replicas share the
    /// CPU): burn's collective all-reduce averages the gradients; L1 objectives only; the batch size
    /// must divide by N.
    #[arg(long, default_value_t = 1, value_parser = stereo::cli::count)]
    data_parallel: usize,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// The training data the flags name, opened.
struct Opened {
    name: String,
    mapped: Option<ActivationStore>,
    streaming: Option<StreamingStore>,
    foreign: Option<DictionaryLearningCache>,
}

impl Opened {
    fn data(&self) -> TrainingData<'_> {
        match (&self.mapped, &self.streaming, &self.foreign) {
            (Some(store), _, _) => store.into(),
            (_, Some(store), _) => store.into(),
            (_, _, Some(cache)) => cache.into(),
            _ => unreachable!("open_training_data opens one"),
        }
    }
}

/// Opens --store (memory-mapped, or streamed for URLs and --shuffle-buffer-shards) or
/// --dictionary-learning-cache.
fn open_training_data(args: &Args) -> Result<Opened> {
    let mut opened = Opened {
        name: String::new(),
        mapped: None,
        streaming: None,
        foreign: None,
    };
    if let Some(dirs) = &args.dictionary_learning_cache {
        let cache = DictionaryLearningCache::open(&dirs[0], &dirs[1], &args.submodule)
            .with_context(|| format!("opening the dictionary_learning cache {dirs:?}"))?;
        opened.name = format!("{} and {}", dirs[0].display(), dirs[1].display());
        opened.foreign = Some(cache);
        return Ok(opened);
    }
    let store = args.store.as_deref().unwrap_or_default();
    opened.name = store.to_string();
    if store.contains("://") || args.shuffle_buffer_shards.is_some() {
        let location = StoreLocation::parse(store)?;
        let options = StreamOptions {
            buffer_shards: args.shuffle_buffer_shards.unwrap_or(8),
            ..StreamOptions::default()
        };
        let streaming = StreamingStore::open(location, options)
            .with_context(|| format!("opening the store {store}"))?;
        opened.streaming = Some(streaming);
    } else {
        let mapped =
            ActivationStore::open(store).with_context(|| format!("opening the store {store}"))?;
        opened.mapped = Some(mapped);
    }
    Ok(opened)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let opened = open_training_data(&args)?;
    let store = opened.data();
    let start = if args.resume {
        Start::Resume
    } else {
        Start::Fresh(build_config(&args, store.d_model())?)
    };
    let run = StoreTraining {
        out: args.out.clone(),
        backend: args.backend,
        seed: args.seed,
        validation_fraction: args.validation_fraction,
        input_scaling: !args.no_input_scaling,
        checkpoint_every: args.checkpoint_every,
        progress: true,
        replicas: args.data_parallel,
    };
    let outcome = train_on_store(store, start, &run)
        .with_context(|| format!("training on {} into {}", opened.name, args.out.display()))?;
    let (state, s) = (&outcome.started, &outcome.summary);
    let config = &state.config;
    if args.resume {
        println!("resumed at step {} of {}", state.step, config.total_steps);
    }
    if let Some(factors) = &state.input_scaling {
        println!("input scaling factors (sqrt(d) / mean ||x||, BOS excluded): {factors:?}");
    }
    println!(
        "{} crosscoder: 2 x {} -> {} latents, {} steps of {} rows on {} ({} batches per epoch)",
        s.objective,
        config.d_model,
        s.dict_size,
        s.steps,
        config.batch_size,
        args.backend,
        outcome.batches_per_epoch
    );
    let fit = &outcome.fit;
    println!(
        "{} steps in {:.1} s ({:.2} steps/s)",
        fit.steps_run,
        fit.seconds,
        fit.steps_run as f64 / fit.seconds.max(1e-9)
    );
    println!(
        "validation ({} rows): FVU base {:.4} chat {:.4} (dictionary_learning FVE {:.4}), L0 {:.1}, dead {} of {}",
        s.validation_rows,
        s.validation_fvu[BASE],
        s.validation_fvu[CHAT],
        s.validation_frac_variance_explained,
        s.validation_l0,
        s.dead_latents,
        s.dict_size
    );
    println!(
        "latents: {} shared, {} base-only, {} chat-only, {} other -> {}",
        s.classes.shared,
        s.classes.base_only,
        s.classes.chat_only,
        s.classes.other,
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
