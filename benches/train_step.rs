//! Training steps per second at the real shape: 2 x 2304 activations -> 16,384 latents, batch 1,024, f32, on
//! each CPU backend, for both objectives (ckkissane L1 and BatchTopK with k = 100). One step is the full
//! user path of `CrosscoderTrainer::step`: host batch in, forward, backward through burn's autodiff, gradient
//! clipping, Adam update, metrics back to the host.
//!
//! `cargo bench --bench train_step` (add `-- flex` to filter). The PyTorch reference for the same step on the
//! same machine is `benches/reference/torch_train_step.py`. Each step is about 0.8 TFLOP
//! (5 GEMMs of 2 x 1024 x 4608 x 16384), so expect seconds per step on a 2-core CPU.

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use crosscoder::throughput::uniform;
use crosscoder::BackendKind;
use crosscoder_train::{TrainConfig, TrainerState};
use ndarray::Array3;

const D: usize = 2304;
const F: usize = 16_384;
const BATCH: usize = 1024;

/// Deterministic activations uniform in [-1, 1).
fn batch(seed: u64) -> Array3<f32> {
    Array3::from_shape_vec((BATCH, 2, D), uniform(BATCH * 2 * D, seed, 1.0)).expect("shape")
}

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30))
        .throughput(Throughput::Elements(BATCH as u64));
    let x = batch(1);
    for backend in [BackendKind::Flex, BackendKind::NdArray] {
        for (name, config) in [
            ("l1", TrainConfig::ckkissane(2, D, F, 1_000_000)),
            (
                "batch_topk_k100",
                TrainConfig::batch_top_k(2, D, F, 1_000_000, 100),
            ),
        ] {
            let mut trainer = TrainerState::new(config, 0)
                .expect("valid config")
                .build(backend)
                .expect("backend");
            // Step 0 of BatchTopK computes the geometric median of the batch: keep it out of the timing.
            trainer.step(x.view()).expect("step");
            group.bench_function(BenchmarkId::new(name, backend), |b| {
                b.iter(|| trainer.step(x.view()).expect("step"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, train_step);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
