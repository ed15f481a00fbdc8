//! The products of a Gemma-2-2b layer with bf16 weights beside the f32 ones: the GEMM of a forward
//! pass (512 x 2304 x 9216, eight prompts of 64 tokens times `gate_proj`; 64 x 2304 x 9216, one
//! prompt) and the one-row product of
//! a decoding step (1 x 2304 x 9216), each with f32 weights (burn-flex's `gemm` crate; the one-pass
//! product for the row), bf16 weights on every bf16 kernel this CPU runs (`avx512-bf16`, `widening`),
//! and bf16 through burn-flex's own bf16 matmul (which widens every element to f32 and back).
//!
//! `cargo bench --bench bf16_gemm`. Throughput is in multiply-adds x 2 (FLOP). The torch reference
//! is `benches/reference/torch_gemm.py --dtype bfloat16`; `benches/README.md` has both.

use burn::tensor::{DType, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stereo_core::matmul::{
    bf16_matmul_transposed, bf16_matmul_with, skinny_matmul, skinny_matmul_transposed, to_bf16,
    Bf16Kernel, PackedBf16, WeightLayout,
};
use stereo_core::FlexBackend;

/// `(rows, k, n)` of the benchmarked products.
const SHAPES: [(usize, usize, usize); 3] = [(512, 2304, 9216), (64, 2304, 9216), (1, 2304, 9216)];

/// Uniform values in `[-0.5, 0.5)`, the same on every platform.
fn values(len: usize, seed: u64) -> Vec<f32> {
    crosscoder::throughput::uniform(len, seed, 0.5)
}

fn products(c: &mut Criterion) {
    stereo_core::tune_cpu_gemm();
    let mut group = c.benchmark_group("bf16_gemm");
    group.sample_size(10);
    let device = Default::default();
    for (rows, k, n) in SHAPES {
        let shape = format!("{rows}x{k}x{n}");
        let (x, w) = (values(rows * k, 1), values(k * n, 2));
        let w_bf16 = to_bf16(&w);
        group.throughput(Throughput::Elements((2 * rows * k * n) as u64));
        if rows == 1 {
            group.bench_function(BenchmarkId::new("f32-one-pass", &shape), |b| {
                b.iter(|| skinny_matmul(&x, &w, rows, k, n))
            });
        } else {
            let xt =
                Tensor::<FlexBackend, 2>::from_data(TensorData::new(x.clone(), [rows, k]), &device);
            let wt =
                Tensor::<FlexBackend, 2>::from_data(TensorData::new(w.clone(), [k, n]), &device);
            group.bench_function(BenchmarkId::new("f32-gemm", &shape), |b| {
                b.iter(|| xt.clone().matmul(wt.clone()).into_data())
            });
            let (xb, wb) = (xt.clone().cast(DType::BF16), wt.clone().cast(DType::BF16));
            group.bench_function(BenchmarkId::new("burn-flex-bf16", &shape), |b| {
                b.iter(|| xb.clone().matmul(wb.clone()).into_data())
            });
        }
        if rows == 1 {
            // The tied unembedding of a decoding step: `x @ embed^T`, `[256000, 2304]` stored.
            let vocab = 256_000;
            let embed = values(vocab * k, 3);
            let embed_bf16 = to_bf16(&embed);
            let shape = format!("{rows}x{k}x{vocab}-transposed");
            group.throughput(Throughput::Elements((2 * rows * k * vocab) as u64));
            group.bench_function(BenchmarkId::new("f32-one-pass", &shape), |b| {
                b.iter(|| skinny_matmul_transposed(&x, &embed, rows, k, vocab))
            });
            group.bench_function(BenchmarkId::new("bf16-one-pass", &shape), |b| {
                b.iter(|| bf16_matmul_transposed(&x, &embed_bf16, rows, k, vocab))
            });
            group.throughput(Throughput::Elements((2 * rows * k * n) as u64));
        }
        if PackedBf16::is_supported() {
            // The weights packed once (as a loaded model holds them), read in place.
            let packed = PackedBf16::new(&w_bf16, WeightLayout::InOut, k, n);
            group.bench_function(BenchmarkId::new("bf16-packed-once", &shape), |b| {
                b.iter(|| packed.matmul(&x, rows))
            });
        }
        for kernel in [Bf16Kernel::DotProduct, Bf16Kernel::Widening] {
            if !kernel.is_available() {
                eprintln!("{}: not available on this CPU", kernel.name());
                continue;
            }
            group.bench_function(
                BenchmarkId::new(format!("bf16-{}", kernel.name()), &shape),
                |b| {
                    b.iter(|| {
                        bf16_matmul_with(kernel, &x, &w_bf16, WeightLayout::InOut, (rows, k, n))
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
