//! Latent Scaling's cost against the encode it builds on, at the real shape: 2 x 2304 activations,
//! 16,384 latents, a BatchTopK crosscoder whose threshold keeps about k = 100 latents per token (the
//! science-of-finetuning setting), on burn-flex, 1,024 tokens per batch.
//!
//! `cargo bench --bench latent_scaling`. The goal: a Latent Scaling pass costs no more than three
//! encode passes over the same tokens. A pass is one crosscoder forward (encode and decode) plus the
//! sparse accumulation over the latents that fire (`crosscoder::latent_scaling`).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crosscoder::throughput::{random_checkpoint, uniform};
use crosscoder::{Activation, BackendKind, Crosscoder, CrosscoderCheckpoint, LatentScaling};
use ndarray::Array3;

const D: usize = 2304;
const F: usize = 16_384;
const K: usize = 100;
const ROWS: usize = 1024;

fn activations(rows: usize, seed: u64) -> Array3<f32> {
    Array3::from_shape_vec((rows, 2, D), uniform(rows * 2 * D, seed, 1.0)).expect("shape")
}

/// A random crosscoder at the real shape whose BatchTopK threshold keeps about `K` latents per token.
fn crosscoder() -> Box<dyn Crosscoder> {
    let relu = random_checkpoint(2, D, F, 1).expect("valid");
    let probe = relu.clone().build(BackendKind::Flex).expect("flex");
    let mut scaled: Vec<f32> = probe
        .encode_scaled(activations(64, 9).view())
        .expect("encode")
        .into_iter()
        .collect();
    let cut = scaled.len() - 64 * K;
    scaled.select_nth_unstable_by(cut, f32::total_cmp);
    let threshold = scaled[cut];
    let (mut config, weights, normalizer) = relu.into_parts();
    config.activation = Activation::BatchTopK { k: K, threshold };
    CrosscoderCheckpoint::new(config, weights, normalizer)
        .expect("valid")
        .build(BackendKind::Flex)
        .expect("flex")
}

fn bench(c: &mut Criterion) {
    let cc = crosscoder();
    let x = activations(ROWS, 4);
    let l0 = cc
        .encode(x.view())
        .expect("encode")
        .iter()
        .filter(|v| **v != 0.0)
        .count() as f64
        / ROWS as f64;
    eprintln!("# BatchTopK threshold set for k = {K}: L0 {l0:.1} latents per token");
    let mut group = c.benchmark_group("latent_scaling");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(ROWS as u64));
    group.bench_function(BenchmarkId::new("encode", ROWS), |b| {
        b.iter(|| cc.encode(x.view()).expect("encode"))
    });
    let mut pass = LatentScaling::new(cc.as_ref(), None).expect("pass");
    group.bench_function(BenchmarkId::new("latent_scaling", ROWS), |b| {
        b.iter(|| pass.add_batch(cc.as_ref(), x.view()).expect("add"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
