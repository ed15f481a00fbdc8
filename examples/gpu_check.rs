//! The one-shot device check: Gemma-2 and crosscoder golden parity, training steps and the day1 demo on one
//! backend, then throughput, all written to `gpu_report.json` (see `stereo::gpu_check`).
//!
//! ```text
//! # On a GPU node, from the bundle made by `scripts/gpu-check build OUTDIR` (no Rust needed there):
//! scripts/gpu-check run OUTDIR REPORTDIR
//!
//! # Or directly, anywhere (the CPU backends run the same checks; --bench off by default on the CPU):
//! cargo run --release --example gpu_check -- --backend flex --reference-backend ndarray --out results/
//! cargo run --release --features cuda --example gpu_check -- --backend cuda --bench --out results/
//! ```
//!
//! Exits with status 1 when a check fails (the report says which and by how much), 2 on a usage error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use stereo::backend::BackendKind;
use stereo::gpu_check::{self, BenchShapes, CheckOptions, Tolerances};

/// Check stereo on one backend and measure it; writes `gpu_report.json`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The backend under test: cuda, flex or ndarray.
    #[arg(long, default_value = "cuda")]
    backend: BackendKind,
    /// The backend whose results training and the demo are compared with.
    #[arg(long, default_value = "flex")]
    reference_backend: BackendKind,
    /// The `fixtures/` folder [default: `fixtures/` beside the binary's folder (the bundle), else the
    /// workspace's].
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Also measure throughput at Gemma-2-2b shapes (encode 2 x 2304 -> 16,384 / 73,728 at N = 4,096 /
    /// 16,384; forward to layer 13 at 32 x 128 tokens).
    #[arg(long)]
    bench: bool,
    /// Timed repetitions of each measurement.
    #[arg(long, default_value_t = 5, value_parser = stereo::cli::count)]
    repeats: usize,
    /// `gpu_reference.py`'s JSON (PyTorch on the same card), to put beside ours in the report.
    #[arg(long)]
    torch_reference: Option<PathBuf>,
    /// Tolerances: `f32` (exact f32 products, the CPU suite's) or `tf32` (tensor-core f32, burn-cuda's)
    /// [default: by backend].
    #[arg(long)]
    tolerances: Option<String>,
    /// Where `gpu_report.json` goes.
    #[arg(long, default_value = "results")]
    out: PathBuf,
}

/// `fixtures/` of the bundle (`OUTDIR/bin/gpu_check` beside `OUTDIR/fixtures`), else of the workspace.
fn default_fixtures() -> PathBuf {
    let bundled = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("fixtures")));
    match bundled {
        Some(dir) if dir.join("gemma").is_dir() => dir,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tolerances = match args.tolerances.as_deref() {
        None => Tolerances::for_backend(args.backend),
        Some("f32") => Tolerances::F32,
        Some("tf32") => Tolerances::TF32,
        Some(other) => {
            eprintln!("--tolerances {other}: expected f32 or tf32");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let options = CheckOptions {
        backend: args.backend,
        reference_backend: args.reference_backend,
        fixtures: args.fixtures.unwrap_or_else(default_fixtures),
        tolerances,
        bench: args.bench.then(|| BenchShapes {
            repeats: args.repeats,
            ..BenchShapes::gemma_2_2b()
        }),
        reference: args.torch_reference,
        report_path: args.out.join("gpu_report.json"),
    };
    eprintln!(
        "gpu_check: {} (reference {}), fixtures {}",
        options.backend,
        options.reference_backend,
        options.fixtures.display()
    );
    let report = gpu_check::run(&options)?;
    for c in &report.comparisons {
        eprintln!(
            "{} vs PyTorch {}: {:.0} vs {:.0} tokens/s = {:.2}x",
            c.name, c.torch_precision, c.ours, c.torch, c.ratio
        );
    }
    for e in &report.measurement_errors {
        eprintln!("measurement error: {e}");
    }
    eprintln!(
        "{}: {} of {} checks passed; report {}",
        if report.all_passed { "PASS" } else { "FAIL" },
        report.checks.iter().filter(|c| c.passed).count(),
        report.checks.len(),
        options.report_path.display()
    );
    if !report.all_passed {
        std::process::exit(1);
    }
    Ok(())
}
