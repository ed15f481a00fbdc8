//! The one-shot device check: everything stereo promises, run on one backend in a few minutes, written to
//! `gpu_report.json`.
//!
//! A GPU node often has no Rust toolchain and no network, and GPU time is short. So the checks are built on
//! an ordinary machine into one binary (`examples/gpu_check.rs`, gathered with its fixtures by
//! `scripts/gpu-check build`) and run on the node as one program. The same checks run on the CPU backends
//! in CI (`tests/gpu_check.rs`), so the program itself is tested everywhere.
//!
//! What is checked on the chosen backend (each against an independent reference):
//!
//! | check | reference |
//! |---|---|
//! | [`gemma_parity`]: every hook and the logits of the golden prompts | HF transformers (eager, f32), `fixtures/gemma` |
//! | [`bf16_parity`]: Gemma-2 with `--dtype bf16` (resid_post, logits); the host bf16 kernels (`vdpbf16ps` where the CPU has AVX512-BF16, widening) on odd shapes | HF transformers' bf16 eager run and the f32 goldens; a naive product of the same bf16 inputs |
//! | [`crosscoder_parity`]: latents, reconstructions, norms, metrics of every checkpoint format | dictionary_learning / PyTorch, `fixtures/crosscoder` |
//! | [`training_step`]: three steps of each objective from the same weights and batches | the reference CPU backend |
//! | [`demo_day1`]: the day1 workflow on the embedded demo pair | the planted latents and the reference CPU backend |
//! | [`generation`]: greedy generation with the KV cache, tokens and per-step logits | HF transformers `generate`, `fixtures/generation` |
//!
//! What is measured ([`throughput`]): crosscoder encode on the device at `2 x 2304 -> F` beside the backend's
//! plain GEMM, and the Gemma-2-2b forward pass to layer 13 (random weights). The PyTorch numbers for the same
//! workloads on the same card come from `benches/reference/gpu_reference.py`; when its JSON is handed in
//! ([`CheckOptions::reference`]), it is copied into the report and each ratio is computed.
//!
//! Each check runs to completion or failure on its own: a panic inside one (a device error in a backend, say)
//! is recorded as that check's failure, and the report is rewritten after every step, so a run cut short
//! still leaves what it did.

mod bf16;
mod crosscoder_parity;
mod demo_day1;
mod error;
mod gemma_parity;
mod generation;
mod golden;
mod report;
pub mod throughput;
mod training;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use stereo_core::BackendKind;

pub use error::CheckError;
pub use report::{CheckRecord, GpuReport, Measurement, ReportError};
pub use throughput::BenchShapes;

/// What to run, where, and against what.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The backend under test (`cuda` on a GPU node).
    pub backend: BackendKind,
    /// The backend whose results the device's are compared with where the reference is "the CPU result".
    pub reference_backend: BackendKind,
    /// The workspace's `fixtures/` folder (or the bundle's copy).
    pub fixtures: PathBuf,
    /// Tolerances of the parity checks.
    pub tolerances: Tolerances,
    /// Shapes and repetitions of the measurements; `None` skips them.
    pub bench: Option<BenchShapes>,
    /// `gpu_reference.py`'s JSON (PyTorch on the same card), copied into the report.
    pub reference: Option<PathBuf>,
    /// Where the report is (re)written after every step.
    pub report_path: PathBuf,
}

/// Largest relative errors (`max |a - b| / max |b|` per tensor) a check accepts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Tolerances {
    /// Gemma-2 hooks and logits against HF transformers.
    pub gemma: f64,
    /// Crosscoder outputs against dictionary_learning / PyTorch.
    pub crosscoder: f64,
    /// Trained weights and losses against the reference backend.
    pub training: f64,
    /// day1's pooled latent activations against the reference backend.
    pub demo: f64,
}

impl Tolerances {
    /// The tolerances of the CPU test suite: exact f32 products.
    pub const F32: Tolerances = Tolerances {
        gemma: 1e-4,
        crosscoder: 1e-5,
        training: 1e-4,
        demo: 1e-4,
    };

    /// For a backend whose f32 matrix products run on tensor cores in TF32 (10-bit mantissa, unit roundoff
    /// 2^-11 = 4.9e-4 on each input): burn-cuda 0.21 does, for every f32 matmul (cubek-matmul's tensor-core
    /// kernels; there is no switch). A product of length K then carries a relative error of a few 1e-4,
    /// and a residual stream sums dozens of them.
    pub const TF32: Tolerances = Tolerances {
        gemma: 1e-2,
        crosscoder: 5e-3,
        training: 1e-2,
        demo: 1e-2,
    };

    /// The tolerances for `backend`'s f32 arithmetic.
    pub fn for_backend(backend: BackendKind) -> Tolerances {
        if backend.is_cpu() {
            Tolerances::F32
        } else {
            Tolerances::TF32
        }
    }
}

/// Runs every check (and the measurements when asked), rewriting `options.report_path` after each step,
/// and returns the report.
///
/// # Errors
/// Only when the report cannot be written; a failed check is recorded in the report, not returned.
pub fn run(options: &CheckOptions) -> Result<GpuReport, ReportError> {
    let mut report = GpuReport::new(options);
    report.write(&options.report_path)?;
    let checks: [(&str, CheckFn); 6] = [
        ("gemma_parity", gemma_parity),
        ("bf16", bf16_parity),
        ("generation", generation),
        ("crosscoder_parity", crosscoder_parity),
        ("training_step", training_step),
        ("demo_day1", demo_day1),
    ];
    for (name, check) in checks {
        eprintln!("== {name} on {}", options.backend);
        let record = guarded(name, || check(options));
        eprintln!(
            "   {} in {:.1} s: {}",
            if record.passed { "PASS" } else { "FAIL" },
            record.seconds,
            record.summary
        );
        report.checks.push(record);
        report.write(&options.report_path)?;
    }
    if let Some(shapes) = &options.bench {
        for step in throughput::plan(shapes) {
            eprintln!("== measure {}", step.label());
            let started = Instant::now();
            match catch_unwind(AssertUnwindSafe(|| step.run(options.backend))) {
                Ok(Ok(measured)) => {
                    for m in measured {
                        eprintln!("   {}", m.describe());
                        report.measurements.push(m);
                    }
                }
                Ok(Err(e)) => report
                    .measurement_errors
                    .push(format!("{}: {e}", step.label())),
                Err(panic) => report.measurement_errors.push(format!(
                    "{}: panicked: {}",
                    step.label(),
                    panic_text(&panic)
                )),
            }
            eprintln!("   ({:.1} s)", started.elapsed().as_secs_f64());
            report.write(&options.report_path)?;
        }
    }
    if let Some(path) = &options.reference {
        report.attach_reference(path);
    }
    report.finish();
    report.write(&options.report_path)?;
    Ok(report)
}

/// A check: `Ok` with what it measured (passed or not), `Err` when it could not run at all.
type CheckFn = fn(&CheckOptions) -> Result<CheckRecord, CheckError>;

/// Runs a check, turning an error or a panic into a failed record.
fn guarded(name: &str, check: impl FnOnce() -> Result<CheckRecord, CheckError>) -> CheckRecord {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(check));
    let seconds = started.elapsed().as_secs_f64();
    let mut record = match outcome {
        Ok(Ok(record)) => record,
        Ok(Err(error)) => CheckRecord::failed(name, format!("could not run: {error}")),
        Err(panic) => CheckRecord::failed(name, format!("panicked: {}", panic_text(&panic))),
    };
    record.seconds = seconds;
    record
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Gemma-2 golden parity: every hook and the logits of every golden prompt of both tiny models.
pub fn gemma_parity(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    gemma_parity::check(options)
}

/// Gemma-2 in bf16 against HF's bf16 run, and the host bf16 kernels on this CPU.
pub fn bf16_parity(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    bf16::check(options)
}

/// Greedy generation against HF `generate` on the trained tiny fixtures.
pub fn generation(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    generation::check(options)
}

/// Crosscoder golden parity for every checkpoint format.
pub fn crosscoder_parity(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    crosscoder_parity::check(options)
}

/// Three training steps of each objective on the backend under test and on the reference backend.
pub fn training_step(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    training::check(options)
}

/// The day1 workflow on the embedded demo pair: the planted latents are named, as on the reference backend.
pub fn demo_day1(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    demo_day1::check(options)
}
