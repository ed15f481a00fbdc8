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
    relative_norm_histogram, BackendKind, CrosscoderLoader, DecoderAnalysis, HistogramOptions,
    LatentActivity, MetricsAccumulator, RelativeNormThresholds, BASE, CHAT,
};
use ndarray::{s, Array2, Array3, ArrayView3, Axis};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

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
    #[arg(long)]
    out: PathBuf,
    /// Per-model scaling factors, comma-separated (ckkissane: they multiply the activations before encoding).
    #[arg(long, value_delimiter = ',')]
    scaling_factors: Option<Vec<f32>>,
    /// Compute backend: ndarray, flex or cuda.
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Rows per encode call (bounds the memory of intermediate results).
    #[arg(long, default_value_t = 1024)]
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
    if args.batch_size == 0 {
        bail!("--batch-size must be positive");
    }

    let t = Instant::now();
    let mut loader = CrosscoderLoader::new(&args.crosscoder).backend(args.backend);
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
    let bytes = std::fs::read(&args.activations)
        .with_context(|| format!("reading {}", args.activations.display()))?;
    let st = SafeTensors::deserialize(&bytes).context("parsing the activations file")?;
    let view = st
        .tensor("activations")
        .context("the activations file has no tensor `activations`")?;
    if view.dtype() != Dtype::F32 || view.shape().len() != 3 {
        bail!(
            "`activations` must be f32 [N, n_models, d], got {:?} {:?}",
            view.dtype(),
            view.shape()
        );
    }
    let shape = (view.shape()[0], view.shape()[1], view.shape()[2]);
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let x = Array3::from_shape_vec(shape, values)?;
    println!("read activations {:?} in {:.2?}", x.dim(), t.elapsed());

    let t = Instant::now();
    let (rows, n, d) = x.dim();
    let mut latents = Array2::<f32>::zeros((rows, cc.dict_size()));
    let mut reconstruction = Array3::<f32>::zeros((rows, n, d));
    let mut metrics = MetricsAccumulator::new(cc.n_models(), cc.d_model());
    let mut activity = LatentActivity::new(cc.dict_size());
    for start in (0..rows).step_by(args.batch_size) {
        let end = (start + args.batch_size).min(rows);
        let chunk: ArrayView3<f32> = x.slice(s![start..end, .., ..]);
        let out = cc.forward(chunk)?;
        metrics.update(chunk, out.reconstruction.view(), out.latents.view())?;
        activity.update(out.latents.view())?;
        latents.slice_mut(s![start..end, ..]).assign(&out.latents);
        reconstruction
            .slice_mut(s![start..end, .., ..])
            .assign(&out.reconstruction);
    }
    let secs = t.elapsed().as_secs_f64();
    let m = metrics.finish();
    println!(
        "encoded + decoded {rows} rows in {secs:.3} s: {:.0} tokens/s",
        rows as f64 / secs.max(1e-9)
    );
    for (i, (mse, fvu)) in m.mse.iter().zip(&m.fvu).enumerate() {
        let name = cfg.models.get(i).map(String::as_str).unwrap_or("?");
        println!("  model {i} ({name}): MSE {mse:.6}  FVU {fvu:.4}");
    }
    println!(
        "  L0 {:.2}   alive latents {} / {}",
        m.l0,
        activity.alive_count(),
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
    let norms = cc.decoder_norms();
    let le = |a: &mut dyn Iterator<Item = f32>| a.flat_map(f32::to_le_bytes).collect::<Vec<u8>>();
    let tensors = [
        (
            "latents",
            vec![rows, cc.dict_size()],
            le(&mut latents.iter().copied()),
        ),
        (
            "reconstruction",
            vec![rows, n, d],
            le(&mut reconstruction.iter().copied()),
        ),
        (
            "decoder_norms",
            vec![norms.len_of(Axis(0)), norms.len_of(Axis(1))],
            le(&mut norms.iter().copied()),
        ),
    ];
    let views = tensors
        .iter()
        .map(|(k, shape, data)| {
            Ok((
                k.to_string(),
                TensorView::new(Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, &args.out)?;
    println!("wrote {} in {:.2?}", args.out.display(), t.elapsed());
    Ok(())
}
