//! Generate text with Gemma-2 (KV cache, batched prompts, greedy or sampled), streaming the first
//! prompt's tokens as they come.
//!
//! ```text
//! # The embedded demo chat model:
//! cargo run --release --example generate -- --prompt "I am 7 years old. Why is the sky blue?" --out gen.json
//!
//! # A real model, two prompts through the chat template, sampled:
//! cargo run --release --example generate -- --model google/gemma-2-2b-it --chat-template \
//!     --prompt "Explain photosynthesis." --prompt "I'm a biologist. Explain photosynthesis." \
//!     --max-new-tokens 64 --temperature 0.7 --top-p 0.9 --seed 1 --out gen.json
//! ```
//!
//! Writes `{"model", "chat_template", "generations": [{"prompt", "prompt_ids", "token_ids", "text",
//! "stop"}]}`: `token_ids` are the generated ids only (the stop token included when one was hit), `text`
//! their decoding without special tokens. Stops at the `eos_token_id` of `generation_config.json`
//! (Gemma-2-it: `<eos>` and `<end_of_turn>`), at `--stop` strings, or after `--max-new-tokens`.
//! Sampling is reproducible for a seed on one backend; on another, near-ties may break differently.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use gemma_model::generation::ModelStepper;
use gemma_model::generation::{generate_texts, GenerationsFile, Sampling, SamplingParams};
use gemma_model::throughput::{
    benchmark_batch, peak_rss_bytes, read_bandwidth_gb_per_s, time_decode, weight_bytes_per_step_in,
};
use gemma_model::{
    load_model, random_model, BackendKind, ComputeDtype, Gemma2Config, LoadOptions, ModelSource,
};
use stereo::demo::embedded_source;

/// Generate continuations of prompts with a Gemma-2 model.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Model: hub id or local directory [default: the embedded demo chat model, fixtures/demo/chat].
    #[arg(long)]
    model: Option<String>,
    /// A prompt; repeat for a batch.
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// Wrap each prompt as a user turn of the Gemma chat template, with the generation prompt.
    #[arg(long)]
    chat_template: bool,
    /// The most new tokens per prompt.
    #[arg(long, default_value_t = 32, value_parser = stereo::cli::count)]
    max_new_tokens: usize,
    /// Greedy decoding (the default unless a sampling flag is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    greedy: bool,
    /// Sample at this temperature.
    #[arg(long, value_parser = stereo::cli::positive)]
    temperature: Option<f32>,
    /// Sample from the smallest set of tokens whose probability reaches this.
    #[arg(long, value_parser = stereo::cli::probability)]
    top_p: Option<f32>,
    /// Sample from the k most likely tokens.
    #[arg(long, value_parser = stereo::cli::count)]
    top_k: Option<usize>,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also stop once the text contains this string (repeatable).
    #[arg(long = "stop")]
    stop_strings: Vec<String>,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value_t = BackendKind::DEFAULT_CPU)]
    backend: BackendKind,
    /// Compute dtype: f32, or bf16 (bf16 weights and product inputs, f32 sums; flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Output JSON file.
    #[arg(long, required_unless_present = "bench_decode", value_parser = stereo::cli::output_file)]
    out: Option<PathBuf>,
    /// Benchmark decoding instead: random Gemma-2-2b weights (f32), a 128-token prompt and
    /// --max-new-tokens new tokens at each of these batch sizes; prints JSON lines with tokens/s, the
    /// weight bytes a step reads, this machine's read bandwidth and the share of its limit reached.
    #[arg(long, value_delimiter = ',', value_parser = stereo::cli::count)]
    bench_decode: Option<Vec<usize>>,
    /// Do not stream the first prompt's tokens to the terminal.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(batches) = &args.bench_decode {
        return bench_decode(batches, args.max_new_tokens, args.backend, args.dtype);
    }
    let Some(out) = args.out.clone() else {
        bail!("give --out FILE.json");
    };
    if args.prompts.is_empty() {
        bail!("give at least one --prompt");
    }
    let model = match &args.model {
        Some(m) => m.clone(),
        None => embedded_source("chat")?,
    };
    let started = Instant::now();
    let source = ModelSource::parse(&model)?;
    let options = LoadOptions {
        dtype: args.dtype,
        ..LoadOptions::default()
    };
    let loaded = load_model(&source, &options.with_backend(args.backend))?;
    let config = loaded.model.config();
    let defaults = &loaded.generation;
    let mut generation = defaults.config(args.max_new_tokens, args.seed, config);
    let sampled = args.temperature.is_some() || args.top_p.is_some() || args.top_k.is_some();
    if sampled {
        generation.sampling = Sampling::Sample(SamplingParams {
            temperature: args.temperature.unwrap_or(1.0),
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        });
    } else if args.greedy || !defaults.do_sample {
        generation.sampling = Sampling::Greedy;
    }
    generation.stop_strings = args.stop_strings.clone();
    eprintln!(
        "loaded {model} on {} in {:.1?}; {} prompt(s), {:?}",
        args.backend,
        started.elapsed(),
        args.prompts.len(),
        generation.sampling
    );

    let tokenizer = loaded.tokenizer.clone();
    let stream = !args.quiet;
    let started = Instant::now();
    let mut printed = 0usize;
    // The first prompt's text so far: each new token prints what it adds to the decoded text (a
    // token decoded alone may lose its leading space).
    let (mut first_ids, mut first_text) = (Vec::new(), String::new());
    let mut on_token = |row: usize, token: u32| {
        printed += 1;
        if stream && row == 0 {
            first_ids.push(token);
            if let Some(text) = tokenizer
                .as_ref()
                .and_then(|t| t.decode_text(&first_ids).ok())
            {
                print!("{}", text.get(first_text.len()..).unwrap_or(""));
                let _ = std::io::stdout().flush();
                first_text = text;
            }
        }
    };
    let generations = generate_texts(
        &loaded,
        &args.prompts,
        args.chat_template,
        &generation,
        &mut on_token,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if stream {
        println!();
    }
    let file = GenerationsFile {
        model,
        chat_template: args.chat_template,
        generations,
    };
    file.write(&out)?;
    eprintln!(
        "{printed} tokens in {seconds:.2} s ({:.1} tokens/s over the batch); wrote {}",
        printed as f64 / seconds,
        out.display()
    );
    Ok(())
}

/// `--bench-decode`: decode speed at Gemma-2-2b shapes against this machine's memory-bandwidth limit.
fn bench_decode(
    batches: &[usize],
    new_tokens: usize,
    backend: BackendKind,
    dtype: ComputeDtype,
) -> Result<()> {
    const PROMPT_LEN: usize = 128;
    let config = Gemma2Config::gemma_2_2b();
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let model = random_model(&config, &options.with_backend(backend), 0)?;
    let bytes = weight_bytes_per_step_in(&config, config.num_hidden_layers, true, dtype);
    let bandwidth = read_bandwidth_gb_per_s(2 << 30);
    for &batch in batches {
        let prompts = benchmark_batch(&config, batch, PROMPT_LEN, 0)?;
        let mut stepper = ModelStepper::new(model.as_ref(), batch, PROMPT_LEN + new_tokens)?;
        let t = time_decode(&mut stepper, &prompts, new_tokens)?;
        // A decode step reads every weight once: at best one step per `bytes / bandwidth` seconds.
        let limit = batch as f64 * bandwidth * 1e9 / bytes as f64;
        println!(
            "{}",
            serde_json::json!({
                "impl": "stereo",
                "backend": backend.name(),
                "dtype": dtype.name(),
                "batch": batch,
                "prompt_len": PROMPT_LEN,
                "new_tokens": new_tokens,
                "prefill_s": t.prefill_s,
                "decode_s": t.decode_s,
                "decode_tokens_per_s": t.decode_tokens_per_s(),
                "seconds_per_step": t.seconds_per_step(),
                "weight_bytes_per_step": bytes,
                "read_bandwidth_gb_per_s": bandwidth,
                "bandwidth_limit_tokens_per_s": limit,
                "share_of_limit": t.decode_tokens_per_s() / limit,
                "peak_rss_bytes": peak_rss_bytes(),
            })
        );
    }
    Ok(())
}
