//! The KL evaluation (science-of-finetuning's half-step patch): how much of what chat training changed in
//! the next-token distribution does a set of latents carry?
//!
//! ```text
//! # The embedded demo (fixtures/demo/): the planted latents on the demo corpus's conversations
//! cargo run --release --example kl_evaluation -- --latents 19,224 --out kl/
//!
//! # Real models: the robust chat-only latents Latent Scaling found, on chat conversations
//! cargo run --release --example kl_evaluation -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 \
//!     --latent-scaling scaling/latent_scaling.json --top 50 --conversations chats.jsonl --out kl/
//! ```
//!
//! Both models read the same conversations (`.jsonl`, one `{"messages": [{"role", "content"}, ...]}` per
//! line, with at least one model turn; rendered with the chat template). At the crosscoder's hook the chat
//! model's later layers are fed: the base residual (`base`: the base->chat gap), the base residual plus the
//! chat-minus-base contribution of every latent (`all_latents`), of the chosen set S (`chosen`) and of
//! random sets of the same size (`random_seed_*`), and the chat residual minus every latent's contribution
//! (`chat_error`). Reported: `KL(p_chat || p_patched)` over the positions that predict assistant tokens,
//! over the first `--k-first` of each turn and over the rest, with 95% intervals, and the fraction of the
//! base->chat gap each set-up closes. Writes `kl_evaluation.json` (schema: crates/steering/SCHEMA.md) and
//! `kl_evaluation.png` to `--out`.

use std::path::PathBuf;

use activation_cache::Corpus;
use anyhow::{bail, Context, Result};
use clap::Parser;
use gemma_model::ComputeDtype;
use gemma_model::{BackendKind, ChatMessage, Role};
use model_pair::PromptInput;
use steering::kl_evaluation::{kl_table, write_kl_evaluation};
use steering::{run_kl_evaluation, KlEvaluationSpec};
use stereo::demo::embedded_source;
use stereo::pair::{GenerationPair, PairChoice};

/// Measure how much of the base->chat change of the next-token distribution a set of latents carries.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base model (index 0) [default: the embedded demo's].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1) [default: the embedded demo's].
    #[arg(long)]
    chat: Option<String>,
    /// Crosscoder [default: the embedded demo's].
    #[arg(long)]
    crosscoder: Option<String>,
    /// The latent set S, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "latent_scaling")]
    latents: Option<Vec<usize>>,
    /// Take S from the robust chat-only latents of a `latent_scaling.json` (the `latent_scaling`
    /// example's summary), lowest nu_error first.
    #[arg(long)]
    latent_scaling: Option<PathBuf>,
    /// With --latent-scaling: at most this many latents.
    #[arg(long, value_parser = stereo::cli::count)]
    top: Option<usize>,
    /// Conversations (.jsonl of {"messages": [...]}) [default: the embedded demo's corpus].
    #[arg(long)]
    conversations: Option<PathBuf>,
    /// Use at most this many conversations (those with a model turn, in file order).
    #[arg(long, default_value_t = 64, value_parser = stereo::cli::count)]
    max_conversations: usize,
    /// Random sets of |S| latents, one per seed 0..N (0: none).
    #[arg(long, default_value_t = 5, value_parser = stereo::cli::count_or_zero)]
    random_seeds: usize,
    /// The first K predictions of each assistant turn are also reported on their own.
    #[arg(long, default_value_t = 10, value_parser = stereo::cli::count)]
    k_first: usize,
    /// Conversations per forward batch (the chat logits of a batch are batch x tokens x vocab floats).
    #[arg(long, default_value_t = 2, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Cut conversations to this many tokens.
    #[arg(long, default_value_t = 1024, value_parser = stereo::cli::count)]
    max_tokens: usize,
    /// Leave this many leading positions unpatched (1 keeps <bos> as the chat model computed it).
    #[arg(long, default_value_t = 0, value_parser = stereo::cli::count_or_zero)]
    unpatched_prefix: usize,
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
    #[arg(long, default_value = "kl_evaluation")]
    out: PathBuf,
    /// Read the hub cache only.
    #[arg(long)]
    offline: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The set S: given, or the robust chat-only latents of a Latent Scaling summary.
fn chosen_latents(args: &Args) -> Result<Vec<usize>> {
    if let Some(latents) = &args.latents {
        return Ok(latents.clone());
    }
    let Some(path) = &args.latent_scaling else {
        bail!("give the latent set: --latents J,K,... or --latent-scaling latent_scaling.json");
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let summary: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let entries = summary["robust_chat_only"].as_array().with_context(|| {
        format!(
            "{}: no `robust_chat_only` list (is it the latent_scaling example's summary?)",
            path.display()
        )
    })?;
    let mut robust: Vec<(f64, usize)> = entries
        .iter()
        .map(|e| {
            let latent = e["latent"]
                .as_u64()
                .with_context(|| format!("{}: an entry without `latent`", path.display()))?;
            Ok((
                e["nu_error"].as_f64().unwrap_or(f64::INFINITY),
                latent as usize,
            ))
        })
        .collect::<Result<_>>()?;
    robust.sort_by(|a, b| a.0.total_cmp(&b.0));
    let latents: Vec<usize> = robust
        .into_iter()
        .take(args.top.unwrap_or(usize::MAX))
        .map(|(_, j)| j)
        .collect();
    if latents.is_empty() {
        bail!("{} lists no robust chat-only latent", path.display());
    }
    Ok(latents)
}

/// The conversations with a model turn, at most `--max-conversations`.
fn conversations(args: &Args) -> Result<Vec<Vec<ChatMessage>>> {
    let path = match &args.conversations {
        Some(path) => path.clone(),
        None => PathBuf::from(embedded_source("corpus.jsonl")?),
    };
    let corpus = Corpus::from_path(&path)
        .with_context(|| format!("reading conversations from {}", path.display()))?;
    let conversations: Vec<Vec<ChatMessage>> = corpus
        .documents()
        .iter()
        .filter_map(|d| match d {
            PromptInput::Chat(messages) if messages.iter().any(|m| m.role == Role::Model) => {
                Some(messages.clone())
            }
            _ => None,
        })
        .take(args.max_conversations)
        .collect();
    if conversations.is_empty() {
        bail!(
            "{} has no conversation with a model turn ({{\"messages\": [...]}} lines)",
            path.display()
        );
    }
    Ok(conversations)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut spec = KlEvaluationSpec::new(chosen_latents(&args)?);
    spec.random_seeds = (0..args.random_seeds as u64).collect();
    spec.k_first = args.k_first;
    spec.batch_size = args.batch_size;
    spec.max_tokens = args.max_tokens;
    spec.unpatched_prefix = args.unpatched_prefix;
    let conversations = conversations(&args)?;
    let pair = GenerationPair::load(
        PairChoice {
            base: args.base.clone(),
            chat: args.chat.clone(),
            crosscoder: args.crosscoder.clone(),
            hook: args.hook.clone(),
            offline: args.offline,
            dtype: args.dtype,
        }
        .prepare(args.backend)?,
    )?;
    let models = pair.models();
    let results = run_kl_evaluation(&models, &conversations, &spec, !args.quiet)?;
    print!("{}", kl_table(&results));
    let files = write_kl_evaluation(&results, &args.out)?;
    println!("wrote {} files to {}", files.len(), args.out.display());
    Ok(())
}
