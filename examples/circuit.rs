//! Map a latent's circuit: which heads and MLPs write it (and which of them chat training changed), and
//! which later heads and MLPs read it.
//!
//! ```text
//! # The embedded demo: the planted child latent on the child side of child_vs_adult
//! cargo run --release --example circuit -- --latent 19 --out circuit/
//!
//! # Real models, a verified candidate of day1 on the novice side of expertise_level
//! cargo run --release --example circuit -- --base google/gemma-2-2b --chat google/gemma-2-2b-it \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 \
//!     --latent 1234 --contrast expertise_level --out circuit/
//! ```
//!
//! The latent's pre-activation is affine in both models' residuals, and each residual is exactly the
//! embedding plus every head's normalised write and every MLP's output, so the pre-activation splits over
//! both models' components token by token; per component: its contribution in each model and what chat
//! training changed (`W_chat . (c_chat - c_base)`), with 95% intervals over the prompts (the positive side
//! of `--contrast`, or `--prompts FILE`), and the attention patterns of the top heads. Then every later head
//! and MLP of the chat model as a reader: the relative change of its output when the latent is ablated,
//! and composition scores with the latent's chat decoder direction. Writes `circuit.json` (schema:
//! crates/circuits/SCHEMA.md), `writers.png`, `readers.png` and `circuit.html` to `--out`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use circuits::output::write_all;
use circuits::{map_circuit, CircuitModels, CircuitOptions, Component};
use clap::Parser;
use gemma_model::BackendKind;
use gemma_model::ComputeDtype;
use model_pair::{PromptInput, TokenizationMode};
use persona_dataset::PersonaDataset;
use stereo::pair::{GenerationPair, PairChoice};

/// Which components write a crosscoder latent, and which read it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The latent.
    #[arg(long)]
    latent: usize,
    /// Base model (index 0) [default: the embedded demo's].
    #[arg(long)]
    base: Option<String>,
    /// Chat model (index 1) [default: the embedded demo's].
    #[arg(long)]
    chat: Option<String>,
    /// The crosscoder [default: the embedded demo's].
    #[arg(long)]
    crosscoder: Option<String>,
    /// Persona dataset [default: the shipped one].
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// The contrast whose positive side gives the prompts.
    #[arg(long, default_value = "child_vs_adult", conflicts_with = "prompts")]
    contrast: String,
    /// Prompts instead, one per line.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Use at most this many prompts.
    #[arg(long, value_parser = stereo::cli::count)]
    max_prompts: Option<usize>,
    /// Wrap prompts in the chat template (default: raw `<bos>` + text, as the crosscoder's day1 runs).
    #[arg(long)]
    chat_template: bool,
    /// Skip the readers.
    #[arg(long)]
    no_readers: bool,
    /// Prompts per forward batch.
    #[arg(long, default_value_t = 8, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype of the models and the crosscoder: f32, or bf16 (bf16 weights and product
    /// inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Results directory.
    #[arg(long, default_value = "circuit")]
    out: PathBuf,
    /// Read the hub cache only.
    #[arg(long)]
    offline: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let choice = PairChoice {
        base: args.base.clone(),
        chat: args.chat.clone(),
        crosscoder: args.crosscoder.clone(),
        hook: None,
        offline: args.offline,
        dtype: args.dtype,
    };
    let crosscoder_name = match &args.crosscoder {
        Some(c) => c.clone(),
        None => stereo::demo::embedded_source("crosscoder")?,
    };
    let mode = if args.chat_template {
        TokenizationMode::ChatTemplate
    } else {
        TokenizationMode::Raw
    };
    let (mut prompts, label) = prompts(&args, mode)?;
    if let Some(n) = args.max_prompts {
        prompts.truncate(n);
    }
    let pair = GenerationPair::load(choice.prepare(args.backend)?)?;
    let report = map_circuit(
        CircuitModels {
            models: [pair.base.model.as_ref(), pair.chat.model.as_ref()],
            tokenizer: &pair.tokenizer,
            crosscoder: pair.crosscoder.as_ref(),
            crosscoder_name: &crosscoder_name,
        },
        &prompts,
        &label,
        args.latent,
        &CircuitOptions {
            batch_size: args.batch_size,
            tokenization: mode,
            readers: !args.no_readers,
            ..CircuitOptions::default()
        },
    )?;
    let files = write_all(&report, &args.out)?;
    let w = &report.writers;
    println!(
        "latent #{} at layer {} over {} prompts ({label}): mean pre-activation {:.3} ± {:.3}",
        report.latent, report.layer, w.prompts, w.pre_activation.mean, w.pre_activation.half_width
    );
    println!("  writers (chat minus base):");
    for c in w.components.iter().take(5) {
        println!(
            "    {:<10} {:>8.3} ± {:.3}{}",
            c.label,
            c.difference.mean,
            c.difference.half_width,
            if w.stands_out.contains(&c.component) {
                "  stands out"
            } else {
                ""
            }
        );
    }
    if let Some(r) = &report.readers {
        println!("  readers (relative output change when ablated):");
        for c in r.components.iter().take(5) {
            let neurons = match c.component {
                Component::Mlp { .. } => format!(
                    "  neurons {:?}",
                    c.neurons
                        .iter()
                        .take(3)
                        .map(|n| n.neuron)
                        .collect::<Vec<_>>()
                ),
                _ => String::new(),
            };
            println!(
                "    {:<10} {:>8.3} ± {:.3}{neurons}",
                c.label, c.ablation.mean, c.ablation.half_width
            );
        }
    }
    println!("wrote {} files to {}", files.len(), args.out.display());
    Ok(())
}

/// The prompts: a file's lines, or the positive side of a dataset contrast.
fn prompts(args: &Args, mode: TokenizationMode) -> Result<(Vec<PromptInput>, String)> {
    if let Some(path) = &args.prompts {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let prompts: Vec<PromptInput> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| PromptInput::Text(l.to_string()))
            .collect();
        anyhow::ensure!(!prompts.is_empty(), "{} holds no prompt", path.display());
        return Ok((prompts, path.display().to_string()));
    }
    let dataset = match &args.dataset {
        Some(path) => PersonaDataset::from_path(path)?,
        None => PersonaDataset::shipped(),
    };
    let contrast = dataset.contrast(&args.contrast)?;
    let prompts = contrast
        .pairs(&dataset)?
        .iter()
        .map(|p| diff_analysis::prompt_input(p.positive, mode))
        .collect();
    Ok((
        prompts,
        format!("{}: {}", contrast.category, contrast.positive),
    ))
}
