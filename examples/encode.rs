//! Encode paired activations with a crosscoder and write latents, reconstructions and decoder norms.
//!
//! ```text
//! cargo run --release --example encode -- \
//!     --crosscoder science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04 \
//!     --activations acts.safetensors --out latents.safetensors
//! ```
//!
//! Input: a safetensors file with `activations [N, n_models, d]` (f32; model 0 = base, 1 = chat).
//! Output (names are stable): `latents [N, F]` (raw f, not multiplied by the code normalisation),
//! `reconstruction [N, n_models, d]` (in the input's space), `decoder_norms [n_models, F]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use crosscoder::{
    encode_file, relative_norm_histogram, BackendKind, CrosscoderLoader, DecoderAnalysis,
    HistogramOptions, RelativeNormThresholds, BASE, CHAT,
};
use indicatif::{ProgressBar, ProgressStyle};
use stereo_core::ComputeDtype;

/// Encode activations with a crosscoder (dictionary_learning, ckkissane, hub id, or our format).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Crosscoder: a directory, a `.pt` / `.safetensors` file, or a hub id (`org/name[/subfolder]`).
    #[arg(long)]
    crosscoder: String,
    /// Input safetensors file with `activations [N, n_models, d]` (f32).
    #[arg(long)]
    activations: PathBuf,
    /// Output safetensors file (`latents`, `reconstruction`, `decoder_norms`).
    #[arg(long, value_parser = stereo::cli::output_file)]
    out: PathBuf,
    /// Per-model scaling factors, comma-separated (ckkissane: they multiply the activations before encoding).
    #[arg(long, value_delimiter = ',', value_parser = stereo::cli::positive)]
    scaling_factors: Option<Vec<f32>>,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Compute dtype of the crosscoder: f32, or bf16 (bf16 weights and product inputs, f32 sums;
    /// flex and cuda).
    #[arg(long, default_value_t = ComputeDtype::F32)]
    dtype: ComputeDtype,
    /// Rows per encode call (bounds the memory of intermediate results).
    #[arg(long, default_value_t = 1024, value_parser = stereo::cli::count)]
    batch_size: usize,
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    revision: Option<String>,
    /// Only read the local hub cache (same as HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Also draw the relative decoder norm histogram (base = model 0, chat = model 1) to this PNG.
    #[arg(long)]
    histogram: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();

    let t = Instant::now();
    let mut loader = CrosscoderLoader::new(&args.crosscoder)
        .backend(args.backend)
        .dtype(args.dtype);
    if let Some(f) = &args.scaling_factors {
        loader = loader.scaling_factors(f.clone());
    }
    if let Some(r) = &args.revision {
        loader = loader.revision(r);
    }
    if args.offline {
        loader = loader.offline(true);
    }
    let cc = loader
        .load()
        .with_context(|| format!("loading crosscoder `{}`", args.crosscoder))?;
    let cfg = cc.config();
    println!(
        "loaded {} in {:.2?}: n_models={} d={} F={} activation={} code_norm={} normaliser={} backend={}",
        cfg.source.as_deref().unwrap_or(&args.crosscoder),
        t.elapsed(),
        cfg.n_models,
        cfg.d_model,
        cfg.dict_size,
        cfg.activation.name(),
        cfg.code_normalization.reference_name(),
        cc.normalizer().name(),
        cc.backend(),
    );

    let t = Instant::now();
    let x = encode_file::read_activations(&args.activations)?;
    println!("read activations {:?} in {:.2?}", x.dim(), t.elapsed());

    let t = Instant::now();
    let rows = x.dim().0;
    let bar = ProgressBar::new(rows as u64).with_style(
        ProgressStyle::with_template("encoding {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})")
            .expect("a valid template"),
    );
    let encoded = encode_file::encode_in_chunks(cc.as_ref(), x.view(), args.batch_size, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let m = &encoded.metrics;
    println!(
        "encoded + decoded {rows} rows in {secs:.3} s: {:.0} tokens/s",
        rows as f64 / secs.max(1e-9)
    );
    for (i, (mse, fvu)) in m.mse.iter().zip(&m.fvu).enumerate() {
        let name = cfg.models.get(i).map(String::as_str).unwrap_or("?");
        println!("  model {i} ({name}): MSE {mse:.6}  FVU {fvu:.4}");
    }
    println!(
        "  dictionary_learning FVE {:.4}   L0 {:.2}   alive latents {} / {}",
        m.frac_variance_explained,
        m.l0,
        encoded.activity.alive_count(),
        cc.dict_size()
    );

    if let Some(png) = &args.histogram {
        if cc.n_models() < 2 {
            bail!("--histogram needs a crosscoder over two models");
        }
        let diff =
            DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())?;
        let r: Vec<f32> = diff.relative_norms.to_vec();
        relative_norm_histogram(&r, png, &HistogramOptions::default())?;
        println!(
            "classes {:?}; histogram written to {}",
            diff.counts(),
            png.display()
        );
    }

    let t = Instant::now();
    encode_file::write_encoded(&args.out, &encoded, cc.decoder_norms())?;
    println!("wrote {} in {:.2?}", args.out.display(), t.elapsed());
    Ok(())
}
