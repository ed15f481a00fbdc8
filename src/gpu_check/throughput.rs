//! The measurements: crosscoder encode on the device beside the backend's plain GEMM, and the Gemma-2 forward
//! pass to a middle layer with random weights. Names are shared with `benches/reference/gpu_reference.py`,
//! which times the same workloads in PyTorch.

use crosscoder::throughput::{device_encode, device_gemm, random_checkpoint, DeviceTiming};
use gemma_model::throughput::{benchmark_batch, time_forward};
use gemma_model::{random_model, Gemma2Config, HookPoint, LoadOptions, RunRequest};
use stereo_core::BackendKind;

use super::{CheckError, Measurement};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchShapes {
    /// Activation width `d` of the crosscoder (two models: the product's inner size is `2 d`).
    pub d_model: usize,
    /// Dictionary sizes `F`.
    pub dict_sizes: Vec<usize>,
    /// Rows per encode batch `N`.
    pub encode_rows: Vec<usize>,
    /// The model whose forward pass is timed (random weights).
    pub gemma: Gemma2Config,
    /// The forward pass stops after this layer's `resid_post`.
    pub stop_at_layer: usize,
    /// `(batch, tokens per sequence)` of the forward pass.
    pub forward: (usize, usize),
    /// Timed repetitions of each workload (after one untimed warm-up).
    pub repeats: usize,
}

impl BenchShapes {
    /// The workloads: encode `2 x 2304 -> 16,384 and 73,728` at `N = 4,096 and 16,384`, and
    /// Gemma-2-2b to layer 13 at 32 x 128 tokens.
    pub fn gemma_2_2b() -> Self {
        BenchShapes {
            d_model: 2304,
            dict_sizes: vec![16_384, 73_728],
            encode_rows: vec![4096, 16_384],
            gemma: Gemma2Config::gemma_2_2b(),
            stop_at_layer: 13,
            forward: (32, 128),
            repeats: 5,
        }
    }
}

/// One workload.
#[derive(Debug, Clone)]
pub enum Step {
    /// Encode (and the plain GEMM of the same shape) at one dictionary size, every batch size.
    Encode {
        /// `d`.
        d_model: usize,
        /// `F`.
        dict_size: usize,
        /// The batch sizes.
        rows: Vec<usize>,
        /// Timed repetitions.
        repeats: usize,
    },
    /// The forward pass.
    Forward {
        /// The model.
        config: Box<Gemma2Config>,
        /// Last layer run.
        stop_at_layer: usize,
        /// `(batch, tokens)`.
        shape: (usize, usize),
        /// Timed repetitions.
        repeats: usize,
    },
}

/// The steps of `shapes`, in the order they run.
pub fn plan(shapes: &BenchShapes) -> Vec<Step> {
    let mut steps: Vec<Step> = shapes
        .dict_sizes
        .iter()
        .map(|&dict_size| Step::Encode {
            d_model: shapes.d_model,
            dict_size,
            rows: shapes.encode_rows.clone(),
            repeats: shapes.repeats,
        })
        .collect();
    steps.push(Step::Forward {
        config: Box::new(shapes.gemma.clone()),
        stop_at_layer: shapes.stop_at_layer,
        shape: shapes.forward,
        repeats: shapes.repeats,
    });
    steps
}

/// `tf32` for burn-cuda's f32 products, `f32` on the CPU.
fn precision(backend: BackendKind) -> &'static str {
    if backend.is_cpu() {
        "f32"
    } else {
        "tf32"
    }
}

fn from_timing(t: &DeviceTiming) -> Measurement {
    Measurement {
        name: format!("{}/F{}/N{}", t.what, t.dict_size, t.rows),
        backend: t.backend.clone(),
        precision: precision(t.backend.parse().unwrap_or(BackendKind::Flex)).into(),
        tokens_per_second: t.tokens_per_second(),
        gflops: Some(t.gflops()),
        seconds: t.seconds.clone(),
    }
}

impl Step {
    /// A name for the log.
    pub fn label(&self) -> String {
        match self {
            Step::Encode {
                d_model,
                dict_size,
                rows,
                ..
            } => format!("encode 2 x {d_model} -> {dict_size} at N = {rows:?}"),
            Step::Forward {
                stop_at_layer,
                shape,
                ..
            } => format!(
                "Gemma-2 forward to layer {stop_at_layer} at {} x {} tokens",
                shape.0, shape.1
            ),
        }
    }

    /// Runs the workload on `backend`.
    pub fn run(&self, backend: BackendKind) -> Result<Vec<Measurement>, CheckError> {
        match self {
            Step::Encode {
                d_model,
                dict_size,
                rows,
                repeats,
            } => {
                let checkpoint = random_checkpoint(2, *d_model, *dict_size, 1)?;
                let mut out = Vec::new();
                for t in device_encode(checkpoint, backend, rows, *repeats)? {
                    out.push(from_timing(&t));
                }
                for &n in rows {
                    let t = device_gemm(backend, n, 2 * d_model, *dict_size, *repeats)?;
                    out.push(from_timing(&t));
                }
                Ok(out)
            }
            Step::Forward {
                config,
                stop_at_layer,
                shape,
                repeats,
            } => forward(config, *stop_at_layer, *shape, *repeats, backend).map(|m| vec![m]),
        }
    }
}

/// Times the forward pass (random weights, deterministic token ids) up to `blocks.{stop}.hook_resid_post`.
fn forward(
    config: &Gemma2Config,
    stop_at_layer: usize,
    (batch, seq_len): (usize, usize),
    repeats: usize,
    backend: BackendKind,
) -> Result<Measurement, CheckError> {
    let options = LoadOptions {
        stop_at_layer: Some(stop_at_layer),
        unembedding: false,
        ..LoadOptions::default()
    }
    .with_backend(backend);
    let model = random_model(config, &options, 0)?;
    let tokens = benchmark_batch(config, batch, seq_len, 0)?;
    let request = RunRequest::capture([HookPoint::ResidPost(stop_at_layer)]);
    let seconds = time_forward(model.as_ref(), &tokens, &request, repeats)?;
    let timing = DeviceTiming {
        what: "forward".into(),
        backend: backend.to_string(),
        rows: batch * seq_len,
        inner: 0,
        dict_size: 0,
        seconds,
    };
    Ok(Measurement {
        name: format!("forward/{batch}x{seq_len}"),
        backend: backend.to_string(),
        precision: precision(backend).into(),
        tokens_per_second: timing.tokens_per_second(),
        gflops: None,
        seconds: timing.seconds,
    })
}
