//! Encode throughput at the real shape: 2 x 2304 activations -> 16,384 latents (ckkissane size) at batch 256,
//! 1,024 and 4,096, and -> 73,728 latents (the science-of-finetuning release) at batch 1,024, f32, on each
//! CPU backend, and bf16 on flex (`encode-bf16`; `encode-bf16-rows` takes bf16 rows, as a bf16 store
//! holds them, at F = 16,384 and N = 1,024); next to each backend's plain GEMM
//! `[N, 4608] @ [4608, F]` on device tensors.
//!
//! `cargo bench --bench encode_throughput` (criterion reports elements/s = tokens/s). Achieved GFLOP/s =
//! tokens/s x 2 x 4608 x F / 1e9 (the bias and ReLU are not counted). Filter with criterion's usual
//! arguments, e.g. `cargo bench --bench encode_throughput -- flex`.
//!
//! `ENCODE_AB=1 cargo bench --bench encode_throughput` alternates encode and GEMM instead (see
//! `interleaved_ratio`), which keeps the ratio honest on a machine whose load drifts.
//!
//! "encode" is the full user path: host `ndarray` in, host `ndarray` out, through the object-safe
//! `Crosscoder::encode` (upload, GEMM, bias, ReLU, download).

use std::cell::OnceCell;
use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use crosscoder::throughput::{random_checkpoint, uniform};
use crosscoder::{BackendKind, Crosscoder, CrosscoderCheckpoint};
use half::bf16;
use ndarray::Array3;
use stereo_core::{dispatch, BackendVisitor, ComputeDtype};

const D: usize = 2304;
const N_MODELS: usize = 2;

fn checkpoint(f: usize) -> CrosscoderCheckpoint {
    random_checkpoint(N_MODELS, D, f, 1).expect("valid")
}

fn activations(rows: usize) -> Array3<f32> {
    Array3::from_shape_vec((rows, N_MODELS, D), uniform(rows * N_MODELS * D, 4, 1.0))
        .expect("shape")
}

/// The backend's plain GEMM `[rows, n*d] @ [n*d, F]` on device tensors (no bias, no activation, no copies).
/// The operands are made inside the benchmark closure, so that a filtered-out case allocates nothing.
struct Gemm<'a, 'b> {
    group: &'a mut BenchmarkGroup<'b, criterion::measurement::WallTime>,
    kind: BackendKind,
    rows: usize,
    f: usize,
}

impl BackendVisitor for Gemm<'_, '_> {
    type Output = ();

    fn visit<B: Backend>(self, device: B::Device) {
        let (rows, f) = (self.rows, self.f);
        let k = N_MODELS * D;
        let id = BenchmarkId::new(format!("gemm/{}/F{f}", self.kind), rows);
        let operands: OnceCell<(Tensor<B, 2>, Tensor<B, 2>)> = OnceCell::new();
        self.group.bench_function(id, |bench| {
            let (a, w) = operands.get_or_init(|| {
                let a = Tensor::<B, 2>::from_data(
                    TensorData::new(uniform(rows * k, 5, 1.0), [rows, k]),
                    &device,
                );
                let w = Tensor::<B, 2>::from_data(
                    TensorData::new(uniform(k * f, 6, 0.01), [k, f]),
                    &device,
                );
                (a, w)
            });
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
    let runs = [
        (BackendKind::Flex, ComputeDtype::F32),
        (BackendKind::Flex, ComputeDtype::Bf16),
        (BackendKind::NdArray, ComputeDtype::F32),
    ];
    for (kind, dtype) in runs {
        let path = match dtype {
            ComputeDtype::F32 => "encode",
            ComputeDtype::Bf16 => "encode-bf16",
        };
        for (f, batches) in cases {
            // Built on first use, so that a filtered-out case costs nothing.
            let cc: OnceCell<Box<dyn Crosscoder>> = OnceCell::new();
            for &rows in batches {
                group.throughput(Throughput::Elements(rows as u64));
                let id = BenchmarkId::new(format!("{path}/{kind}/F{f}"), rows);
                let x: OnceCell<Array3<f32>> = OnceCell::new();
                group.bench_function(id, |bench| {
                    let cc =
                        cc.get_or_init(|| checkpoint(f).build_in(kind, dtype).expect("backend"));
                    let x = x.get_or_init(|| {
                        eprintln!(
                            "# {kind} F={f} N={rows}: {:.1} MFLOP per token (GFLOP/s = tokens/s x {:.4})",
                            2.0 * (N_MODELS * D * f) as f64 / 1e6,
                            2.0 * (N_MODELS * D * f) as f64 / 1e9
                        );
                        activations(rows)
                    });
                    bench.iter(|| cc.encode(x.view()).expect("encode"))
                });
                if dtype == ComputeDtype::Bf16 && f == 16_384 && rows == 1024 {
                    // The rows of a bf16 store, as they are: no f32 copy, no rounding pass.
                    let id = BenchmarkId::new(format!("encode-bf16-rows/{kind}/F{f}"), rows);
                    let x: OnceCell<Array3<bf16>> = OnceCell::new();
                    group.bench_function(id, |bench| {
                        let cc = cc
                            .get_or_init(|| checkpoint(f).build_in(kind, dtype).expect("backend"));
                        let x = x.get_or_init(|| activations(rows).mapv(bf16::from_f32));
                        bench.iter(|| cc.encode_bf16(x.view()).expect("encode"))
                    });
                }
                if dtype == ComputeDtype::F32 && (rows == 4096 || f == 73_728) {
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

/// `ENCODE_AB=1 cargo bench --bench encode_throughput`: instead of criterion, alternate encode and plain GEMM
/// at F = 16,384, N = 4,096 on each CPU backend (5 pairs) and print the ratio of each pair, so that load
/// drifting during the run (a shared machine) cancels out of the comparison.
fn interleaved_ratio() {
    struct Ab {
        kind: BackendKind,
    }
    impl BackendVisitor for Ab {
        type Output = ();
        fn visit<B: Backend>(self, device: B::Device) {
            let (rows, f, k) = (4096, 16_384, N_MODELS * D);
            let cc = checkpoint(f).build(self.kind).expect("backend");
            let x = activations(rows);
            let a = Tensor::<B, 2>::from_data(
                TensorData::new(uniform(rows * k, 5, 1.0), [rows, k]),
                &device,
            );
            let w = Tensor::<B, 2>::from_data(
                TensorData::new(uniform(k * f, 6, 0.01), [k, f]),
                &device,
            );
            let _ = cc.encode(x.view()).expect("encode");
            for pair in 0..5 {
                let t = std::time::Instant::now();
                let _ = a.clone().matmul(w.clone()).slice([0..1, 0..1]).into_data();
                let gemm = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                let _ = cc.encode(x.view()).expect("encode");
                let enc = t.elapsed().as_secs_f64();
                let gflop = 2.0 * (rows * k * f) as f64 / 1e9;
                println!(
                    "{} pair {pair}: gemm {gemm:.3} s ({:.1} GFLOP/s), encode {enc:.3} s ({:.1} GFLOP/s, {:.0} tokens/s): encode = {:.1}% of GEMM rate",
                    self.kind,
                    gflop / gemm,
                    gflop / enc,
                    rows as f64 / enc,
                    100.0 * gemm / enc
                );
            }
        }
    }
    for kind in [BackendKind::Flex, BackendKind::NdArray] {
        dispatch(kind, Ab { kind }).expect("backend");
    }
}

criterion_group!(benches, bench_encode);

fn main() {
    if std::env::var_os("ENCODE_AB").is_some() {
        interleaved_ratio();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
