//! Capture Gemma-2 activations at any hook and write them to a safetensors file.
//!
//! ```text
//! cargo run --release --example activations -- \
//!     --model google/gemma-2-2b --prompt "I'm 5 years old. Why is the sky blue?" \
//!     --hook blocks.13.hook_resid_post --out acts.safetensors
//! ```
//!
//! The output holds one f32 tensor per hook, named exactly by the hook and shaped
//! `[n_prompts, max_len, d_model]`, plus `input_ids` and `attention_mask` (`[n_prompts, max_len]`, i64)
//! and, with `--logits`, `logits` `[n_prompts, max_len, vocab]`. Prompts are right-padded; padding
//! positions hold zeros. These names and shapes are stable: other tools read them
//! (`gemma_model::activations_file` writes the file; its golden test reads it back against HF).
//!
//! Benchmark mode: `--random-weights gemma-2-2b --stop-at-layer 13 --batch 8 --seq-len 64` builds random
//! weights in the real shapes (nothing is downloaded) and reports tokens/s and peak memory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use gemma_model::activations_file::{write_activations, ActivationsSource};
use gemma_model::throughput::{benchmark_batch, forward_flops, peak_rss_bytes, time_forward};
use gemma_model::{
    load_model, random_model, BackendKind, ChatMessage, ComputeDtype, Gemma2Config, HeadHook,
    HookPoint, LoadOptions, ModelSource, PaddingSide, RunRequest, TokenBatch,
};

/// Capture Gemma-2 activations at TransformerLens-named hooks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model: a local directory in hub layout, or a hub id such as google/gemma-2-2b.
    #[arg(long, required_unless_present = "random_weights")]
    model: Option<String>,
    /// Hub revision (branch, tag or commit) of --model.
    #[arg(long)]
    revision: Option<String>,
    /// A prompt; repeat for a batch.
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A hook to capture, e.g. blocks.13.hook_resid_post; repeat for several.
    #[arg(long = "hook")]
    hooks: Vec<String>,
    /// Also write the logits (runs every layer and the unembedding).
    #[arg(long)]
    logits: bool,
    /// Wrap each prompt in the Gemma chat template as one user turn, with the generation prompt.
    #[arg(long)]
    chat_template: bool,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype: f32, or bf16 (bf16 weights and product inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Run RMSNorm, GeGLU and attention as chains of burn ops even on flex (for comparison).
    #[arg(long)]
    no_fused_kernels: bool,
    /// Read the hub cache only (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Output safetensors file.
    #[arg(long, required_unless_present = "random_weights")]
    out: Option<PathBuf>,
    /// Benchmark mode: random weights in the shapes of this preset (gemma-2-2b); nothing is read.
    #[arg(long)]
    random_weights: Option<String>,
    /// Load and run layers 0..=N only (default: as deep as the hooks need).
    #[arg(long)]
    stop_at_layer: Option<usize>,
    /// Benchmark mode: sequences per batch.
    #[arg(long, default_value_t = 1, value_parser = stereo::cli::count)]
    batch: usize,
    /// Benchmark mode: tokens per sequence.
    #[arg(long, default_value_t = 64, value_parser = stereo::cli::count)]
    seq_len: usize,
    /// Benchmark mode: timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 5, value_parser = stereo::cli::count)]
    iters: usize,
    /// Seed of the random weights and token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dtype = args.dtype;
    // Residual-stream hooks (`blocks.13.hook_resid_post`) and per-head ones (`blocks.13.attn.hook_z`).
    let mut hooks: Vec<HookPoint> = Vec::new();
    let mut head_hooks: Vec<HeadHook> = Vec::new();
    for name in &args.hooks {
        match (name.parse::<HookPoint>(), name.parse::<HeadHook>()) {
            (Ok(h), _) => hooks.push(h),
            (_, Ok(h)) => head_hooks.push(h),
            (Err(e), Err(_)) => bail!("{e}, or a per-head hook `blocks.{{layer}}.attn.hook_{{q|k|v|rot_q|rot_k|attn_scores|pattern|z|result}}`"),
        }
    }
    if let Some(preset) = &args.random_weights {
        return benchmark(&args, preset, dtype, &head_hooks);
    }
    if args.prompts.is_empty() {
        bail!("give at least one --prompt");
    }
    if hooks.is_empty() && head_hooks.is_empty() && !args.logits {
        bail!(
            "nothing to capture: give --hook NAME (e.g. blocks.13.hook_resid_post) and/or --logits"
        );
    }
    let out = args.out.clone().context("--out is required")?;

    // A per-head hook needs its layer loaded, as that layer's resid_post does.
    let depth: Vec<HookPoint> = hooks
        .iter()
        .copied()
        .chain(head_hooks.iter().map(|h| HookPoint::ResidPost(h.layer())))
        .collect();
    let mut options = LoadOptions::for_hooks(&depth).with_backend(args.backend);
    options.dtype = dtype;
    options.unembedding = args.logits;
    options.hub.offline |= args.offline;
    options.fused_kernels = !args.no_fused_kernels;
    if args.logits {
        options.stop_at_layer = None;
    } else if let Some(l) = args.stop_at_layer {
        options.stop_at_layer = Some(l);
    }
    let source = ModelSource::parse(args.model.as_deref().unwrap_or_default())?
        .with_revision(args.revision.clone());

    let start = Instant::now();
    let loaded = load_model(&source, &options)?;
    let config = loaded.model.config().clone();
    eprintln!(
        "loaded {source} ({} of {} layers, backend {}) in {:.1}s",
        loaded.model.loaded_layers(),
        config.num_hidden_layers,
        args.backend,
        start.elapsed().as_secs_f64()
    );
    let tokenizer = loaded
        .tokenizer
        .as_ref()
        .context("the model directory has no tokenizer.json")?;
    let ids = args
        .prompts
        .iter()
        .map(|p| {
            if args.chat_template {
                tokenizer.encode_chat(&[ChatMessage::user(p.clone())], true)
            } else {
                tokenizer.encode(p)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = TokenBatch::new(&ids, config.pad_token_id, PaddingSide::Right)?;

    let start = Instant::now();
    let mut request = RunRequest::capture(hooks.iter().copied());
    request.logits = args.logits;
    for h in &head_hooks {
        request = request.capture_head(*h);
    }
    let output = loaded.model.run(&batch, &request)?;
    let seconds = start.elapsed().as_secs_f64();

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let written = write_activations(
        &out,
        &batch,
        &output,
        &ActivationsSource {
            model: source.to_string(),
            revision: loaded.revision.clone(),
            chat_template: args.chat_template,
        },
    )?;
    let n_tokens = batch.n_real_tokens();
    eprintln!(
        "ran {} prompts ({n_tokens} tokens) in {seconds:.2}s: {:.1} tokens/s; wrote {} ({} tensors)",
        batch.batch_size(),
        n_tokens as f64 / seconds,
        out.display(),
        written
    );
    Ok(())
}

/// Random weights in the real shapes; reports tokens/s and peak RSS.
/// With `head_hooks`, they are captured too (their layers' attention then runs head by head): the cost of
/// per-head hooks.
fn benchmark(
    args: &Args,
    preset: &str,
    dtype: ComputeDtype,
    head_hooks: &[HeadHook],
) -> Result<()> {
    let config = match preset {
        "gemma-2-2b" => Gemma2Config::gemma_2_2b(),
        other => bail!("unknown preset `{other}`: expected gemma-2-2b"),
    };
    let stop = args.stop_at_layer.unwrap_or(config.num_hidden_layers - 1);
    let options = LoadOptions {
        backend: args.backend,
        dtype,
        stop_at_layer: Some(stop),
        unembedding: false,
        fused_kernels: !args.no_fused_kernels,
        ..LoadOptions::default()
    };
    let start = Instant::now();
    let model = random_model(&config, &options, args.seed)?;
    let weight_bytes = config.parameters_up_to(stop + 1) * dtype.bytes_per_weight();
    eprintln!(
        "random {preset} up to layer {stop}: {:.2} GB of {dtype} weights, built in {:.1}s",
        weight_bytes as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    let batch = benchmark_batch(&config, args.batch, args.seq_len, args.seed)?;
    let mut request = RunRequest::capture([HookPoint::ResidPost(stop)]);
    for h in head_hooks {
        request = request.capture_head(*h);
    }
    let mut times = time_forward(model.as_ref(), &batch, &request, args.iters)?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (args.batch * args.seq_len) as f64;
    let flops = forward_flops(&config, stop + 1, args.seq_len) * args.batch as f64;
    let peak = peak_rss_bytes().unwrap_or(0);
    println!(
        "{{\"backend\": \"{}\", \"dtype\": \"{dtype}\", \"fused_kernels\": {}, \"head_hooks\": {}, \"batch\": {}, \"seq_len\": {}, \"layers\": {}, \"median_s\": {median:.4}, \"tokens_per_s\": {:.2}, \"gflops\": {:.1}, \"peak_rss_gb\": {:.3}, \"weight_gb\": {:.3}, \"rss_over_weights\": {:.3}}}",
        args.backend,
        !args.no_fused_kernels,
        head_hooks.len(),
        args.batch,
        args.seq_len,
        stop + 1,
        tokens / median,
        flops / median / 1e9,
        peak as f64 / 1e9,
        weight_bytes as f64 / 1e9,
        peak as f64 / weight_bytes as f64
    );
    Ok(())
}
