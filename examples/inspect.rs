//! A latent's dashboard: what it fires on, how often, on whose tokens, and what it writes.
//!
//! ```text
//! # The embedded demo: the planted child latent over the demo corpus (cached into --out/store first)
//! cargo run --release --example inspect -- --latent 19 --out inspect/
//!
//! # Real models, over an activation store made by cache_activations
//! cargo run --release --example inspect -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 \
//!     --store store/ --latent 1234 --latent 5678 --out inspect/
//! ```
//!
//! For each `--latent`: the top-activating contexts (a window around the peak, shaded by activation, one
//! per document) and samples from each activation interval, the histogram and firing density, the share
//! of its activation on user, assistant, chat-template and `<bos>` tokens, and the tokens its base and
//! chat decoder vectors promote and suppress through each model's final norm and unembedding. Writes
//! `inspect.html` (self-contained: inline CSS and SVG, no script, nothing fetched) and `inspect.json` to
//! `--out`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use activation_cache::{cache_corpus, ActivationStore, CacheOptions, Corpus};
use anyhow::{bail, Context, Result};
use clap::Parser;
use gemma_model::ComputeDtype;
use gemma_model::{load_model, BackendKind, HubOptions, LanguageModel, LoadOptions, ModelSource};
use latent_dashboard::{
    attach_lens, build_dashboards, dashboards_page, DashboardOptions, StoreLatents,
};
use stereo::demo::embedded_source;
use stereo::pair::PairChoice;

/// Show what crosscoder latents fire on and what they write.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A latent to inspect; repeatable.
    #[arg(long = "latent", required = true)]
    latents: Vec<usize>,
    /// Base model (index 0) [default: the embedded demo's].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1) [default: the embedded demo's].
    #[arg(long)]
    chat: Option<String>,
    /// Crosscoder [default: the embedded demo's].
    #[arg(long)]
    crosscoder: Option<String>,
    /// An activation store of the pair (`cache_activations`).
    #[arg(long, conflicts_with = "corpus")]
    store: Option<PathBuf>,
    /// A corpus (.txt or .jsonl) to cache into `<out>/store` first [default without --store: the
    /// embedded demo's corpus].
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Top-activating contexts shown.
    #[arg(long, default_value_t = 12, value_parser = stereo::cli::count)]
    top: usize,
    /// Activation intervals sampled below the top.
    #[arg(long, default_value_t = 4, value_parser = stereo::cli::count)]
    intervals: usize,
    /// Contexts per interval.
    #[arg(long, default_value_t = 3, value_parser = stereo::cli::count)]
    per_interval: usize,
    /// Tokens shown before the peak.
    #[arg(long, default_value_t = 12, value_parser = stereo::cli::count_or_zero)]
    window_before: usize,
    /// Tokens shown after the peak.
    #[arg(long, default_value_t = 4, value_parser = stereo::cli::count_or_zero)]
    window_after: usize,
    /// Tokens listed per side of the logit lens.
    #[arg(long, default_value_t = 10, value_parser = stereo::cli::count)]
    lens_tokens: usize,
    /// Skip the logit lens (it loads each model's embedding and final norm).
    #[arg(long)]
    no_lens: bool,
    /// Full hook name [default: the crosscoder's].
    #[arg(long)]
    hook: Option<String>,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models and the crosscoder: f32, or bf16 (bf16 weights and product
    /// inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Results directory.
    #[arg(long, default_value = "inspect")]
    out: PathBuf,
    /// Read the hub cache only.
    #[arg(long)]
    offline: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut prepared = PairChoice {
        base: args.base.clone(),
        chat: args.chat.clone(),
        crosscoder: args.crosscoder.clone(),
        hook: args.hook.clone(),
        offline: args.offline,
        dtype: args.dtype,
    }
    .prepare(args.backend)?;
    let mut hub = HubOptions::from_env();
    hub.offline |= args.offline;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    // The rows: a store, or a corpus cached into <out>/store (resumable).
    let store_dir = match &args.store {
        Some(dir) => dir.clone(),
        None => {
            let corpus_path = match &args.corpus {
                Some(path) => path.clone(),
                None => PathBuf::from(embedded_source("corpus.jsonl")?),
            };
            let corpus = Corpus::from_path(&corpus_path)
                .with_context(|| format!("reading {}", corpus_path.display()))?;
            let dir = args.out.join("store");
            let pair = prepared.load_pair(false, 8)?;
            cache_corpus(
                pair.as_ref(),
                &corpus,
                &dir,
                &CacheOptions::default(),
                |_| ControlFlow::Continue(()),
            )?;
            dir
        }
    };
    let store = ActivationStore::open(&store_dir)
        .with_context(|| format!("opening the store {}", store_dir.display()))?;
    let crosscoder: Arc<dyn crosscoder::Crosscoder> = Arc::from(
        prepared
            .build_crosscoder()?
            .context("a crosscoder is required")?,
    );
    if let Some(j) = args.latents.iter().find(|j| **j >= crosscoder.dict_size()) {
        bail!(
            "latent {j} is out of range: the crosscoder has {}",
            crosscoder.dict_size()
        );
    }

    // The lens needs each model's embedding and final norm only: load layer 0 and the unembedding.
    let lens_options = LoadOptions {
        stop_at_layer: Some(0),
        unembedding: true,
        hub,
        dtype: args.dtype,
        ..LoadOptions::default()
    }
    .with_backend(args.backend);
    let load = |source: &ModelSource| -> Result<gemma_model::LoadedModel> {
        Ok(load_model(source, &lens_options)?)
    };
    let base = if args.no_lens {
        None
    } else {
        Some(load(&prepared.base)?)
    };
    let chat = load(&prepared.chat)?;
    let tokenizer = chat
        .tokenizer
        .clone()
        .context("the chat model has no tokenizer.json")?;

    let options = DashboardOptions {
        top_contexts: args.top,
        intervals: args.intervals,
        per_interval: args.per_interval,
        window_before: args.window_before,
        window_after: args.window_after,
        ..DashboardOptions::default()
    };
    let source = StoreLatents::new(&store, crosscoder.clone())?;
    let mut dashboards =
        build_dashboards(&source, &args.latents, &tokenizer, &options, !args.quiet)?;
    let chat_model: Option<&dyn LanguageModel> = (!args.no_lens).then(|| chat.model.as_ref());
    let base_model: Option<&dyn LanguageModel> = base.as_ref().map(|b| b.model.as_ref());
    attach_lens(
        &mut dashboards,
        crosscoder.as_ref(),
        [base_model, chat_model],
        &tokenizer,
        args.lens_tokens,
    )?;

    let html = args.out.join("inspect.html");
    let title = format!(
        "Latent dashboards: {} ({} vs {}, {})",
        args.latents
            .iter()
            .map(|j| format!("#{j}"))
            .collect::<Vec<_>>()
            .join(", "),
        prepared.base,
        prepared.chat,
        prepared.hook
    );
    stereo::backend::atomic_file::write_atomic(
        &html,
        dashboards_page(&title, &dashboards).as_bytes(),
    )?;
    let json = args.out.join("inspect.json");
    stereo::backend::atomic_file::write_atomic(
        &json,
        serde_json::to_string_pretty(&dashboards)?.as_bytes(),
    )?;
    for d in &dashboards {
        println!(
            "latent #{}: fires on {} of {} tokens (density {:.4}), max {:.3}; top context: {}",
            d.latent,
            d.firing,
            d.tokens,
            d.density,
            d.max_activation,
            d.top_contexts
                .first()
                .map(|c| c
                    .tokens
                    .iter()
                    .map(|t| t.token.replace('▁', " "))
                    .collect::<String>())
                .unwrap_or_else(|| "(never fires)".into())
        );
    }
    println!("wrote {} and {}", html.display(), json.display());
    Ok(())
}
