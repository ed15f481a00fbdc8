//! Cache paired base/chat activations of a corpus into an on-disk store for crosscoder training.
//!
//! ```text
//! cargo run --release --example cache_activations -- \
//!     --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --corpus corpus.jsonl --hook blocks.13.hook_resid_post --dtype bf16 --out results/store
//! ```
//!
//! The same token ids go through both models (index 0 = base, 1 = chat); the store holds
//! `manifest.json` and `shard-NNNNN.safetensors` files with `activations [n, 2, d_model]` and
//! per-token metadata. Kill the run at any moment and start the same command again: it resumes
//! at the first document not yet stored. `--sequential` holds one model in memory at a time.
//!
//! Without downloads (the tiny fixture as both models):
//! ```text
//! cargo run --release --example cache_activations -- --base fixtures/gemma/tiny-window \
//!     --chat fixtures/gemma/tiny-window --corpus corpus.txt --hook blocks.1.hook_resid_post --out /tmp/store
//! ```
//!
//! On many machines (a Kubernetes Indexed Job, a Slurm job array, or by hand), each worker caches
//! one task of `N` into the same store, here on S3-compatible object storage, and one finalize
//! writes the manifest once all are done (byte-identical to a one-process run):
//! ```text
//! cargo run --release --example cache_activations -- ... --out s3://bucket/store --num-tasks 4 --task-index 0
//! # ... tasks 1, 2, 3 anywhere, in any order; a killed task is simply rerun ...
//! cargo run --release --example cache_activations -- --finalize --out s3://bucket/store
//! ```
//! `--num-tasks N` alone takes the index from `JOB_COMPLETION_INDEX` (Kubernetes) or
//! `SLURM_ARRAY_TASK_ID`; inside a Slurm array neither flag is needed.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use activation_cache::{
    cache_corpus, cache_task, finalize_store, ActivationStore, BatchOptions, CacheEvent,
    CacheOptions, Corpus, FinalizeOptions, StoreDtype, StoreLocation, TaskPartition,
};
use anyhow::{Context, Result};
use clap::Parser;
use gemma_model::{load_model, BackendKind, ComputeDtype, HookPoint, LoadOptions, ModelSource};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::{PairedSource, SequentialPair, StereoRunner, TokenizationMode};

/// Cache paired base/chat residual-stream activations of a corpus (resumable).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0): a local directory in hub layout or a hub id such as google/gemma-2-2b.
    #[arg(long, required_unless_present = "finalize")]
    base: Option<String>,
    /// Hub revision (branch, tag or commit) of --base.
    #[arg(long)]
    base_revision: Option<String>,
    /// Chat model (index 1): a local directory or a hub id such as google/gemma-2-2b-it.
    #[arg(long, required_unless_present = "finalize")]
    chat: Option<String>,
    /// Hub revision (branch, tag or commit) of --chat.
    #[arg(long)]
    chat_revision: Option<String>,
    /// Corpus: .txt (one document per non-empty line) or .jsonl ({"text": ...} or {"messages": [...]} per line).
    #[arg(long, required_unless_present = "finalize")]
    corpus: Option<PathBuf>,
    /// Hook to read in both models (TransformerLens name).
    #[arg(long, default_value = "blocks.13.hook_resid_post")]
    hook: String,
    /// Wrap text documents in the Gemma chat template (one user turn) for both models; chat documents always are.
    #[arg(long)]
    chat_template: bool,
    /// Storage dtype of the activations: f32 or bf16 (half the disk; read back as f32, or as stored with `read_rows_bf16`).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// The store: a directory (created, or resumed if it holds a store made with the same
    /// settings), file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    /// (credentials from the cloud's standard variables; AWS_ENDPOINT for MinIO, Ceph, R2).
    #[arg(long)]
    out: String,
    /// This worker's task (0-based) of --num-tasks; defaults to JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID.
    #[arg(long)]
    task_index: Option<usize>,
    /// Split the corpus into this many tasks (by whole shards of whole documents) and cache one.
    #[arg(long, value_parser = stereo::cli::count)]
    num_tasks: Option<usize>,
    /// Check that every task is done and write the store manifest (no models needed).
    #[arg(long, conflicts_with_all = ["base", "chat", "corpus", "task_index", "num_tasks"])]
    finalize: bool,
    /// With --finalize: download every shard and check its sha256 (otherwise sizes and statistics only).
    #[arg(long, requires = "finalize")]
    verify_checksums: bool,
    /// Stop once the store holds this many tokens (a later run with a larger limit continues it).
    #[arg(long, value_parser = stereo::cli::count_u64)]
    max_tokens: Option<u64>,
    /// Tokens per shard (a shard holds whole documents, so slightly more).
    #[arg(long, default_value_t = 32_768, value_parser = stereo::cli::count)]
    shard_tokens: usize,
    /// Documents are truncated to this many tokens, <bos> included.
    #[arg(long, default_value_t = 1_024, value_parser = stereo::cli::count)]
    context_len: usize,
    /// Documents per forward batch.
    #[arg(long, default_value_t = 8, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Hold one model in memory at a time: for each group of shards, load base, run, drop it, then chat.
    #[arg(long)]
    sequential: bool,
    /// With --sequential: shards per model swap (more = fewer loads, more memory for the base half).
    #[arg(long, default_value_t = 1, value_parser = stereo::cli::count)]
    shards_per_group: usize,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models: f32, or bf16 (bf16 weights and product inputs, f32 sums; flex
    /// and cuda). `--dtype` is the store's.
    #[arg(long, default_value_t = ComputeDtype::F32)]
    compute_dtype: ComputeDtype,
    /// Read the hub cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Seed of the shuffled batch read back from the finished store as a check.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.finalize {
        return finalize(&args.out, args.verify_checksums);
    }
    let task = TaskPartition::resolve(args.task_index, args.num_tasks, |name| {
        std::env::var(name).ok()
    })?;
    let remote = args.out.contains("://");
    let (base, chat, corpus_path) = match (&args.base, &args.chat, &args.corpus) {
        (Some(base), Some(chat), Some(corpus)) => (base, chat, corpus),
        _ => anyhow::bail!("--base, --chat and --corpus are required to cache"),
    };
    let hook: HookPoint = args.hook.parse()?;
    let dtype: StoreDtype = args.dtype.parse()?;

    let start = Instant::now();
    let corpus = Corpus::from_path(corpus_path)?;
    eprintln!(
        "corpus {}: {} documents ({:.2}s)",
        corpus_path.display(),
        corpus.len(),
        start.elapsed().as_secs_f64()
    );
    let source = load_source(&args, base, chat, hook)?;
    let options = CacheOptions {
        dtype,
        tokenization: if args.chat_template {
            TokenizationMode::ChatTemplate
        } else {
            TokenizationMode::Raw
        },
        shard_tokens: args.shard_tokens,
        context_len: args.context_len,
        max_tokens: args.max_tokens,
        shards_per_group: args.shards_per_group,
    };
    match (task, remote) {
        (None, false) => {
            cache_locally(source.as_ref(), &corpus, Path::new(&args.out), &options)?;
            read_back(Path::new(&args.out), args.seed)
        }
        (Some(task), _) => run_task(source.as_ref(), &corpus, &args.out, &options, task),
        // One process into object storage: the whole corpus as one task, then the manifest.
        (None, true) => {
            let task = TaskPartition::new(0, 1)?;
            run_task(source.as_ref(), &corpus, &args.out, &options, task)?;
            finalize(&args.out, false)
        }
    }
}

/// Loads both models (or resolves them, with `--sequential`).
fn load_source(
    args: &Args,
    base: &str,
    chat: &str,
    hook: HookPoint,
) -> Result<Box<dyn PairedSource>> {
    let mut load_options = LoadOptions::for_hooks(&[hook]).with_backend(args.backend);
    load_options.dtype = args.compute_dtype;
    load_options.hub.offline |= args.offline;
    let base_source = ModelSource::parse(base)?.with_revision(args.base_revision.clone());
    let chat_source = ModelSource::parse(chat)?.with_revision(args.chat_revision.clone());

    let start = Instant::now();
    let source: Box<dyn PairedSource> = if args.sequential {
        let pair = SequentialPair::from_sources([base_source, chat_source], load_options, hook)?;
        Box::new(pair.with_batch_size(args.batch_size))
    } else {
        let base_model = load_model(&base_source, &load_options)
            .with_context(|| format!("loading {base_source}"))?;
        let chat_model = load_model(&chat_source, &load_options)
            .with_context(|| format!("loading {chat_source}"))?;
        Box::new(
            StereoRunner::from_loaded(base_model, chat_model, hook)?
                .with_batch_size(args.batch_size),
        )
    };
    eprintln!(
        "{} base {base} and chat {chat} at {hook}, d_model {} ({:.1}s{})",
        if args.sequential {
            "resolved"
        } else {
            "loaded"
        },
        source.d_model(),
        start.elapsed().as_secs_f64(),
        if args.sequential {
            "; weights are loaded per group, one model at a time"
        } else {
            ""
        }
    );
    Ok(source)
}

/// The progress bar of a caching run over `documents` documents.
fn progress_bar(documents: u64) -> Result<ProgressBar> {
    let bar = ProgressBar::new(documents);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents {msg} [{elapsed_precise} < {eta}]",
        )?
        .progress_chars("=> "),
    );
    Ok(bar)
}

/// Shows a caching event on `bar`, documents counted from `first_document`.
fn show_event(bar: &ProgressBar, event: &CacheEvent, first_document: usize) -> ControlFlow<()> {
    match event {
        CacheEvent::Started {
            stored_tokens,
            next_document,
            ..
        } => {
            bar.set_position(next_document.saturating_sub(first_document) as u64);
            if *stored_tokens > 0 {
                bar.println(format!("resuming: {stored_tokens} tokens already stored"));
            }
        }
        CacheEvent::Forward {
            first_shard,
            progress,
            ..
        } => {
            let model = if progress.model == 0 { "base" } else { "chat" };
            bar.set_message(format!(
                "shard {first_shard}: {model} {}/{}",
                progress.done, progress.total
            ));
        }
        CacheEvent::ShardCommitted {
            stored_tokens,
            documents_done,
            ..
        } => {
            bar.set_position(documents_done.saturating_sub(first_document) as u64);
            bar.set_message(format!("{stored_tokens} tokens"));
        }
        _ => {}
    }
    ControlFlow::Continue(())
}

/// One process, one local directory: the resumable store that readers may open while it grows.
fn cache_locally(
    source: &dyn PairedSource,
    corpus: &Corpus,
    out: &Path,
    options: &CacheOptions,
) -> Result<()> {
    let bar = progress_bar(corpus.len() as u64)?;
    let summary = cache_corpus(source, corpus, out, options, |event| {
        show_event(&bar, event, 0)
    })?;
    bar.finish_and_clear();
    eprintln!(
        "cached {} new tokens in {} shards in {:.1}s: {:.1} tokens/s; the store holds {} tokens{}",
        summary.new_tokens,
        summary.new_shards,
        summary.seconds,
        summary.new_tokens as f64 / summary.seconds.max(1e-9),
        summary.stored_tokens,
        if summary.corpus_done {
            " (corpus done)"
        } else {
            " (corpus not done: run again to continue)"
        }
    );
    Ok(())
}

/// One task of a partitioned job into `out` (a directory or an object-store URL).
fn run_task(
    source: &dyn PairedSource,
    corpus: &Corpus,
    out: &str,
    options: &CacheOptions,
    task: TaskPartition,
) -> Result<()> {
    let location = StoreLocation::parse(out)?;
    eprintln!(
        "task {} of {} into {location}: planning shards",
        task.index, task.count
    );
    let bar = progress_bar(0)?;
    let mut first_document = 0;
    let summary = cache_task(source, corpus, &location, options, task, |event| {
        if let CacheEvent::TaskPlanned {
            shards,
            documents,
            total_shards,
        } = event
        {
            bar.println(format!(
                "task {} of {}: shards {shards:?} of {total_shards}, documents {documents:?}",
                task.index, task.count
            ));
            first_document = documents.start;
            bar.set_length(documents.len() as u64);
        }
        show_event(&bar, event, first_document)
    })?;
    bar.finish_and_clear();
    if summary.already_done {
        eprintln!(
            "task {} of {} was already done (shards {:?}): nothing to do",
            task.index, task.count, summary.shards
        );
    } else {
        eprintln!(
            "task {} of {}: shards {:?} (documents {:?}) done; {} new tokens in {} shards in {:.1}s: {:.1} tokens/s",
            task.index,
            task.count,
            summary.shards,
            summary.documents,
            summary.new_tokens,
            summary.new_shards,
            summary.seconds,
            summary.new_tokens as f64 / summary.seconds.max(1e-9)
        );
    }
    Ok(())
}

/// Checks that every task is done and writes the store manifest.
fn finalize(out: &str, verify_checksums: bool) -> Result<()> {
    let location = StoreLocation::parse(out)?;
    let (manifest, summary) = finalize_store(&location, FinalizeOptions { verify_checksums })?;
    eprintln!(
        "finalized {location}: {} tasks, {} shards, {} tokens ({} documents, {:.1} MB{}) in {:.2}s",
        summary.num_tasks,
        summary.shards,
        summary.n_tokens,
        manifest.n_documents,
        summary.bytes as f64 / 1e6,
        if verify_checksums {
            ", checksums verified"
        } else {
            ""
        },
        summary.seconds
    );
    Ok(())
}

/// Opens the finished local store like a trainer would, and reads one shuffled batch back.
fn read_back(out: &Path, seed: u64) -> Result<()> {
    let start = Instant::now();
    let store = ActivationStore::open(out)?;
    let manifest = store.manifest();
    eprintln!(
        "verified {} shards ({} tokens, {} BOS, {} template) in {:.2}s",
        manifest.shards.len(),
        manifest.n_tokens,
        manifest.n_bos,
        manifest.n_template,
        start.elapsed().as_secs_f64()
    );
    for (m, name) in ["base", "chat"].iter().enumerate() {
        let stats = &store.statistics()[m];
        eprintln!(
            "{name}: mean norm {:.2} without BOS, {:.2} with; normalisation factor sqrt(d)/mean||x|| = {:.4}",
            stats.without_bos.mean_norm(),
            stats.all.mean_norm(),
            store.normalization_factors(false)[m]
        );
    }
    let batch_options = BatchOptions {
        batch_size: 64,
        seed,
        ..BatchOptions::default()
    };
    let start = Instant::now();
    if let Some(batch) = store.batches(batch_options)?.next() {
        eprintln!(
            "read back one shuffled batch {:?} (seed {seed}) in {:.3}s",
            batch.shape(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
