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
//! positions hold zeros. These names and shapes are stable: other tools read them.
//!
//! Benchmark mode: `--random-weights gemma-2-2b --stop-at-layer 13 --batch 8 --seq-len 64` builds random
//! weights in the real shapes (nothing is downloaded) and reports tokens/s and peak memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use gemma_model::{
    load_model, random_model, BackendKind, ChatMessage, ComputeDtype, Gemma2Config, HookPoint,
    LoadOptions, ModelSource, PaddingSide, RunRequest, TokenBatch,
};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

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
    /// Compute dtype: f32 (bf16 needs a backend with bf16 kernels).
    #[arg(long, default_value = "f32")]
    dtype: String,
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
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Benchmark mode: tokens per sequence.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Benchmark mode: timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// Seed of the random weights and token ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dtype: ComputeDtype = args.dtype.parse()?;
    let hooks: Vec<HookPoint> = args
        .hooks
        .iter()
        .map(|h| h.parse())
        .collect::<Result<_, _>>()?;
    if let Some(preset) = &args.random_weights {
        return benchmark(&args, preset, dtype);
    }
    if args.prompts.is_empty() {
        bail!("give at least one --prompt");
    }
    if hooks.is_empty() && !args.logits {
        bail!(
            "nothing to capture: give --hook NAME (e.g. blocks.13.hook_resid_post) and/or --logits"
        );
    }
    let out = args.out.clone().context("--out is required")?;

    let mut options = LoadOptions::for_hooks(&hooks).with_backend(args.backend);
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
    let output = loaded.model.run(&batch, &request)?;
    let seconds = start.elapsed().as_secs_f64();

    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (hook, acts) in &output.activations {
        tensors.push((
            hook.to_string(),
            Dtype::F32,
            acts.shape().to_vec(),
            f32_bytes(acts.iter()),
        ));
    }
    if let Some(logits) = &output.logits {
        tensors.push((
            "logits".into(),
            Dtype::F32,
            logits.shape().to_vec(),
            f32_bytes(logits.iter()),
        ));
    }
    let shape = vec![batch.batch_size(), batch.seq_len()];
    tensors.push((
        "input_ids".into(),
        Dtype::I64,
        shape.clone(),
        i64_bytes(batch.ids_array().iter()),
    ));
    tensors.push((
        "attention_mask".into(),
        Dtype::I64,
        shape,
        i64_bytes(batch.mask_array().iter()),
    ));
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("model".to_string(), source.to_string()),
        (
            "revision".to_string(),
            loaded.revision.clone().unwrap_or_default(),
        ),
        ("chat_template".to_string(), args.chat_template.to_string()),
        ("padding".to_string(), "right".to_string()),
    ]);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    safetensors::serialize_to_file(views, Some(metadata), &out)?;
    let n_tokens = batch.n_real_tokens();
    eprintln!(
        "ran {} prompts ({n_tokens} tokens) in {seconds:.2}s: {:.1} tokens/s; wrote {} ({} tensors)",
        batch.batch_size(),
        n_tokens as f64 / seconds,
        out.display(),
        tensors.len()
    );
    Ok(())
}

/// Random weights in the real shapes; reports tokens/s and peak RSS.
fn benchmark(args: &Args, preset: &str, dtype: ComputeDtype) -> Result<()> {
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
    let weight_bytes = config.parameters_up_to(stop + 1) * 4;
    eprintln!(
        "random {preset} up to layer {stop}: {:.2} GB of f32 weights, built in {:.1}s",
        weight_bytes as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    let mut state = args
        .seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let sequences: Vec<Vec<u32>> = (0..args.batch)
        .map(|_| {
            (0..args.seq_len)
                .map(|i| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if i == 0 {
                        config.bos_token_id
                    } else {
                        (state >> 33) as u32 % config.vocab_size as u32
                    }
                })
                .collect()
        })
        .collect();
    let batch = TokenBatch::new(&sequences, config.pad_token_id, PaddingSide::Right)?;
    let request = RunRequest::capture([HookPoint::ResidPost(stop)]);
    model.run(&batch, &request)?; // warm-up
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let t = Instant::now();
        model.run(&batch, &request)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (args.batch * args.seq_len) as f64;
    let flops = forward_flops(&config, stop + 1, args.seq_len) * args.batch as f64;
    let peak = peak_rss_bytes().unwrap_or(0);
    println!(
        "{{\"backend\": \"{}\", \"fused_kernels\": {}, \"batch\": {}, \"seq_len\": {}, \"layers\": {}, \"median_s\": {median:.4}, \"tokens_per_s\": {:.2}, \"gflops\": {:.1}, \"peak_rss_gb\": {:.3}, \"weight_gb\": {:.3}, \"rss_over_weights\": {:.3}}}",
        args.backend,
        !args.no_fused_kernels,
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

/// Multiply-add FLOPs (2 per MAC) of one sequence of `t` tokens through `n_layers` layers.
fn forward_flops(c: &Gemma2Config, n_layers: usize, t: usize) -> f64 {
    let (d, q, kv, ff) = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let per_token = 2 * (d * q + 2 * d * kv + q * d + 3 * d * ff);
    let attention = 2 * 2 * c.num_attention_heads * c.head_dim * t * t; // scores and weighted sum
    (n_layers * (per_token * t + attention)) as f64
}

/// Peak resident set size (VmHWM) on Linux.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn f32_bytes<'a>(values: impl Iterator<Item = &'a f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes<'a>(values: impl Iterator<Item = &'a i64>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}
