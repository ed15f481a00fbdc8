//! Gemma-2-2b decoding with a KV cache: a 128-token prompt, then 64 greedy new tokens, batch 1 and 8,
//! random weights in the real shapes (26 layers and the 256000-token unembedding), f32.
//!
//! `cargo bench --bench gemma_decode`. Environment: `STEREO_BENCH_BACKENDS` (default `flex`),
//! `STEREO_BENCH_DECODE_TOKENS` (default 64), `STEREO_BENCH_BATCHES` (default `1,8`). Throughput is in
//! generated tokens per second (all rows); each iteration is one whole generation, prefill included.
//! The HF reference is `benches/reference/hf_gemma_generate.py`; `benches/README.md` has both.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemma_model::generation::ModelStepper;
use gemma_model::throughput::{benchmark_batch, time_decode};
use gemma_model::{random_model, BackendKind, Gemma2Config, LoadOptions};

const PROMPT_LEN: usize = 128;

fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn decode(c: &mut Criterion) {
    let config = Gemma2Config::gemma_2_2b();
    let new_tokens = env_list::<usize>("STEREO_BENCH_DECODE_TOKENS", "64")[0];
    let mut group = c.benchmark_group("gemma2_2b_decode");
    group.sample_size(10);
    for backend in env_list::<BackendKind>("STEREO_BENCH_BACKENDS", "flex") {
        let options = LoadOptions::default().with_backend(backend);
        let model = match random_model(&config, &options, 0) {
            Ok(model) => model,
            Err(e) => {
                eprintln!("skipping {backend}: {e}");
                continue;
            }
        };
        for batch in env_list::<usize>("STEREO_BENCH_BATCHES", "1,8") {
            let prompts = benchmark_batch(&config, batch, PROMPT_LEN, 0).unwrap();
            group.throughput(Throughput::Elements((batch * new_tokens) as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.name(), format!("{batch}x{PROMPT_LEN}+{new_tokens}")),
                &prompts,
                |bench, prompts| {
                    bench.iter(|| {
                        let mut stepper =
                            ModelStepper::new(model.as_ref(), batch, PROMPT_LEN + new_tokens)
                                .unwrap();
                        time_decode(&mut stepper, prompts, new_tokens).unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
