//! Encode throughput at the real shape: 2 x 2304 activations -> 16,384 latents (ckkissane size) at batch 256,
//! 1,024 and 4,096, and -> 73,728 latents (the science-of-finetuning release) at batch 1,024, f32, on each
//! CPU backend; next to each backend's plain GEMM `[N, 4608] @ [4608, F]` on device tensors.
//!
//! `cargo bench --bench encode_throughput` (criterion reports elements/s = tokens/s). Achieved GFLOP/s =
//! tokens/s x 2 x 4608 x F / 1e9 (the bias and ReLU are not counted). Filter with criterion's usual
//! arguments, e.g. `cargo bench --bench encode_throughput -- flex`.
//!
//! "encode" is the full user path: host `ndarray` in, host `ndarray` out, through the object-safe
//! `Crosscoder::encode` (upload, GEMM, bias, ReLU, download).

use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use crosscoder::{
    BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights, InputNormalizer,
};
use ndarray::{Array1, Array2, Array3};
use stereo_backend::{dispatch, BackendVisitor};

const D: usize = 2304;
const N_MODELS: usize = 2;

/// Deterministic uniform values in [-scale, scale) (xorshift; no RNG dependency needed).
fn uniform(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn checkpoint(f: usize) -> CrosscoderCheckpoint {
    let scale = 1.0 / ((N_MODELS * D) as f32).sqrt();
    let weights = CrosscoderWeights {
        w_enc: Array3::from_shape_vec((N_MODELS, D, f), uniform(N_MODELS * D * f, 1, scale))
            .expect("shape"),
        b_enc: Array1::from_vec(uniform(f, 2, 0.05)),
        w_dec: Array3::from_shape_vec((N_MODELS, f, D), uniform(N_MODELS * D * f, 3, scale))
            .expect("shape"),
        b_dec: Array2::zeros((N_MODELS, D)),
    };
    CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(N_MODELS, D, f),
        weights,
        InputNormalizer::Identity,
    )
    .expect("valid")
}

fn activations(rows: usize) -> Array3<f32> {
    Array3::from_shape_vec((rows, N_MODELS, D), uniform(rows * N_MODELS * D, 4, 1.0))
        .expect("shape")
}

/// The backend's plain GEMM `[rows, n*d] @ [n*d, F]` on device tensors (no bias, no activation, no copies).
struct Gemm<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, criterion::measurement::WallTime>,
    kind: BackendKind,
    rows: usize,
    f: usize,
}

impl BackendVisitor for Gemm<'_, '_> {
    type Output = ();

    fn visit<B: Backend>(self, device: B::Device) {
        let k = N_MODELS * D;
        let a = Tensor::<B, 2>::from_data(
            TensorData::new(uniform(self.rows * k, 5, 1.0), [self.rows, k]),
            &device,
        );
        let w = Tensor::<B, 2>::from_data(
            TensorData::new(uniform(k * self.f, 6, 0.01), [k, self.f]),
            &device,
        );
        let id = BenchmarkId::new(format!("gemm/{}/F{}", self.kind, self.f), self.rows);
        self.group.bench_function(id, |bench| {
            bench.iter(|| {
                let out = a.clone().matmul(w.clone());
                // Force completion (lazy or asynchronous backends) by reading one value back.
                out.slice([0..1, 0..1]).into_data()
            })
        });
    }
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_throughput");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    let cases: [(usize, &[usize]); 2] = [(16_384, &[256, 1024, 4096]), (73_728, &[1024])];
    for kind in [BackendKind::Flex, BackendKind::NdArray] {
        for (f, batches) in cases {
            let cc = checkpoint(f).build(kind).expect("backend");
            for &rows in batches {
                let x = activations(rows);
                group.throughput(Throughput::Elements(rows as u64));
                let flop_per_token = 2.0 * (N_MODELS * D * f) as f64;
                eprintln!(
                    "# {kind} F={f} N={rows}: {:.1} MFLOP per token",
                    flop_per_token / 1e6
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("encode/{kind}/F{f}"), rows),
                    &x,
                    |bench, x| bench.iter(|| cc.encode(x.view()).expect("encode")),
                );
                if rows == 4096 || f == 73_728 {
                    dispatch(
                        kind,
                        Gemm {
                            group: &mut group,
                            kind,
                            rows,
                            f,
                        },
                    )
                    .expect("backend");
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
