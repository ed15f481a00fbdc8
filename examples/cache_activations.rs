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

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use activation_cache::{
    cache_corpus, ActivationStore, BatchOptions, CacheEvent, CacheOptions, Corpus, StoreDtype,
};
use anyhow::{Context, Result};
use clap::Parser;
use gemma_model::{load_model, BackendKind, HookPoint, LoadOptions, ModelSource};
use indicatif::{ProgressBar, ProgressStyle};
use model_pair::{PairedSource, SequentialPair, StereoRunner, TokenizationMode};

/// Cache paired base/chat residual-stream activations of a corpus (resumable).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0): a local directory in hub layout or a hub id such as google/gemma-2-2b.
    #[arg(long)]
    base: String,
    /// Hub revision (branch, tag or commit) of --base.
    #[arg(long)]
    base_revision: Option<String>,
    /// Chat model (index 1): a local directory or a hub id such as google/gemma-2-2b-it.
    #[arg(long)]
    chat: String,
    /// Hub revision (branch, tag or commit) of --chat.
    #[arg(long)]
    chat_revision: Option<String>,
    /// Corpus: .txt (one document per non-empty line) or .jsonl ({"text": ...} or {"messages": [...]} per line).
    #[arg(long)]
    corpus: PathBuf,
    /// Hook to read in both models (TransformerLens name).
    #[arg(long, default_value = "blocks.13.hook_resid_post")]
    hook: String,
    /// Wrap text documents in the Gemma chat template (one user turn) for both models; chat documents always are.
    #[arg(long)]
    chat_template: bool,
    /// Storage dtype of the activations: f32 or bf16 (half the disk; reads return f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Store directory (created, or resumed if it holds a store made with the same settings).
    #[arg(long)]
    out: PathBuf,
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
    /// Read the hub cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Seed of the shuffled batch read back from the finished store as a check.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let hook: HookPoint = args.hook.parse()?;
    let dtype: StoreDtype = args.dtype.parse()?;

    let start = Instant::now();
    let corpus = Corpus::from_path(&args.corpus)?;
    eprintln!(
        "corpus {}: {} documents ({:.2}s)",
        args.corpus.display(),
        corpus.len(),
        start.elapsed().as_secs_f64()
    );

    let mut load_options = LoadOptions::for_hooks(&[hook]).with_backend(args.backend);
    load_options.hub.offline |= args.offline;
    let base = ModelSource::parse(&args.base)?.with_revision(args.base_revision.clone());
    let chat = ModelSource::parse(&args.chat)?.with_revision(args.chat_revision.clone());

    let start = Instant::now();
    let source: Box<dyn PairedSource> = if args.sequential {
        let pair = SequentialPair::from_sources([base, chat], load_options, hook)?;
        Box::new(pair.with_batch_size(args.batch_size))
    } else {
        let base_model =
            load_model(&base, &load_options).with_context(|| format!("loading {base}"))?;
        let chat_model =
            load_model(&chat, &load_options).with_context(|| format!("loading {chat}"))?;
        Box::new(
            StereoRunner::from_loaded(base_model, chat_model, hook)?
                .with_batch_size(args.batch_size),
        )
    };
    eprintln!(
        "{} base {} and chat {} at {hook}, d_model {} ({:.1}s{})",
        if args.sequential {
            "resolved"
        } else {
            "loaded"
        },
        args.base,
        args.chat,
        source.d_model(),
        start.elapsed().as_secs_f64(),
        if args.sequential {
            "; weights are loaded per group, one model at a time"
        } else {
            ""
        }
    );

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
    let bar = ProgressBar::new(corpus.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents {msg} [{elapsed_precise} < {eta}]",
        )?
        .progress_chars("=> "),
    );
    let summary = cache_corpus(source.as_ref(), &corpus, &args.out, &options, |event| {
        match event {
            CacheEvent::Started {
                stored_tokens,
                next_document,
                ..
            } => {
                bar.set_position(*next_document as u64);
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
                bar.set_position(*documents_done as u64);
                bar.set_message(format!("{stored_tokens} tokens"));
            }
            _ => {}
        }
        ControlFlow::Continue(())
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

    let start = Instant::now();
    let store = ActivationStore::open(&args.out)?;
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
        seed: args.seed,
        ..BatchOptions::default()
    };
    let start = Instant::now();
    if let Some(batch) = store.batches(batch_options)?.next() {
        eprintln!(
            "read back one shuffled batch {:?} (seed {}) in {:.3}s",
            batch.shape(),
            args.seed,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
