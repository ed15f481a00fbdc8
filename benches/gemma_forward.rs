//! Gemma-2-2b forward pass up to `blocks.13.hook_resid_post`, random weights in the real shapes.
//!
//! `cargo bench --bench gemma_forward` (set `STEREO_BENCH_BACKENDS=flex,ndarray` to choose backends).
//! Throughput is reported in tokens/s; see `benches/README.md` for recorded numbers.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemma_model::throughput::benchmark_batch;
use gemma_model::{random_model, BackendKind, Gemma2Config, HookPoint, LoadOptions, RunRequest};

const STOP_AT_LAYER: usize = 13;

fn backends() -> Vec<BackendKind> {
    std::env::var("STEREO_BENCH_BACKENDS")
        .unwrap_or_else(|_| "flex,ndarray".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn forward(c: &mut Criterion) {
    let config = Gemma2Config::gemma_2_2b();
    let hook = HookPoint::ResidPost(STOP_AT_LAYER);
    let mut group = c.benchmark_group("gemma2_2b_to_layer13");
    group.sample_size(10);
    for backend in backends() {
        let options = LoadOptions {
            stop_at_layer: Some(STOP_AT_LAYER),
            unembedding: false,
            ..LoadOptions::default()
        }
        .with_backend(backend);
        let model = match random_model(&config, &options, 0) {
            Ok(model) => model,
            Err(e) => {
                eprintln!("skipping {backend}: {e}");
                continue;
            }
        };
        for (batch, seq_len) in [(1usize, 64usize), (8, 64)] {
            let tokens = benchmark_batch(&config, batch, seq_len, 0).unwrap();
            let request = RunRequest::capture([hook]);
            group.throughput(Throughput::Elements((batch * seq_len) as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.name(), format!("{batch}x{seq_len}")),
                &tokens,
                |bench, tokens| bench.iter(|| model.run(tokens, &request).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
