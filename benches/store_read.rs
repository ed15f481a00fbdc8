//! Read throughput of the activation store, in MB/s of shard bytes: one epoch of training batches from
//! the memory-mapped reader, from the streaming reader on a local directory, and from the streaming
//! reader on an S3 server when `STEREO_TEST_S3_BUCKET` (and `AWS_ENDPOINT`, credentials) are set.
//!
//! Also: the whole store read in order, 1,024 rows at a time, as f32 and as bf16 (`read_rows_bf16`).
//!
//! The store is synthetic (Gemma-2-2b width, bf16 as caching writes it): 8 shards of 2,048 rows,
//! 2 x 2,304 values per row, 151 MB.
//!
//! `cargo bench --bench store_read`

use std::ops::ControlFlow;
use std::path::Path;

use activation_cache::{
    ActivationStore, BatchOptions, CorpusInfo, StepBatches, StoreConfig, StoreDtype, StoreLocation,
    StoreWriter, StreamOptions, StreamingStore,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use model_pair::{ModelInfo, TokenMeta, TokenizationMode};
use ndarray::Array3;
use stereo_core::rng::SplitMix64;

const D_MODEL: usize = 2304;
const SHARDS: usize = 8;
const ROWS: usize = 2048;
const DOCS_PER_SHARD: usize = 16;
const BATCH: usize = 4096;

/// Writes the synthetic store into `dir`.
fn write_store(dir: &Path) {
    let model = |name: &str| ModelInfo {
        name: name.into(),
        revision: None,
    };
    let config = StoreConfig {
        models: [model("base"), model("chat")],
        hook: "blocks.13.hook_resid_post".parse().unwrap(),
        d_model: D_MODEL,
        dtype: StoreDtype::Bf16,
        tokenization: TokenizationMode::Raw,
        context_len: ROWS / DOCS_PER_SHARD,
        shard_tokens: ROWS,
        corpus: CorpusInfo {
            path: "synthetic".into(),
            fingerprint: "synthetic".into(),
            n_documents: SHARDS * DOCS_PER_SHARD,
        },
    };
    let mut writer = StoreWriter::create_or_resume(dir, &config).unwrap();
    let mut rng = SplitMix64::new(5);
    let per_doc = ROWS / DOCS_PER_SHARD;
    for shard in 0..SHARDS {
        let first = shard * DOCS_PER_SHARD;
        let activations =
            Array3::from_shape_fn((ROWS, 2, D_MODEL), |_| rng.uniform() as f32 * 4.0 - 2.0);
        let tokens: Vec<TokenMeta> = (0..ROWS)
            .map(|i| TokenMeta {
                prompt: first + i / per_doc,
                position: i % per_doc,
                token_id: 7,
                is_bos: i % per_doc == 0,
                is_pad: false,
                is_template: false,
                is_assistant: false,
            })
            .collect();
        writer
            .commit_shard(
                activations.view(),
                &tokens,
                first..first + DOCS_PER_SHARD,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap();
    }
    writer.finish().unwrap();
}

fn batch_options() -> BatchOptions {
    BatchOptions {
        batch_size: BATCH,
        seed: 1,
        include_bos: true,
        ..BatchOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let mapped = ActivationStore::open(dir.path()).unwrap();
    let bytes: u64 = mapped.manifest().shards.iter().map(|s| s.bytes).sum();
    let mut group = c.benchmark_group("store_read_epoch");
    group.sample_size(10).throughput(Throughput::Bytes(bytes));

    group.bench_function("mapped_global_shuffle", |b| {
        let mut batches = StepBatches::new(&mapped, batch_options()).unwrap();
        let steps = batches.batches_per_epoch();
        b.iter(|| {
            (0..steps)
                .map(|s| batches.batch(s).unwrap().len())
                .sum::<usize>()
        });
    });
    // The whole store in store order, 1,024 rows at a time: as f32 (each bf16 value widened into a
    // new f32 batch) and as bf16 (the values as stored, what a bf16 crosscoder reads).
    let all_rows: Vec<u64> = (0..mapped.n_tokens()).collect();
    group.bench_function("rows_in_order_as_f32", |b| {
        b.iter(|| {
            all_rows
                .chunks(1024)
                .map(|rows| mapped.read_rows(rows).unwrap().len())
                .sum::<usize>()
        });
    });
    group.bench_function("rows_in_order_as_bf16", |b| {
        b.iter(|| {
            all_rows
                .chunks(1024)
                .map(|rows| mapped.read_rows_bf16(rows).unwrap().len())
                .sum::<usize>()
        });
    });
    let streamed = |location: StoreLocation| {
        let options = StreamOptions {
            buffer_shards: 2,
            ..StreamOptions::default()
        };
        StreamingStore::open(location, options).unwrap()
    };
    let local = streamed(StoreLocation::local(dir.path()).unwrap());
    group.bench_function("streamed_local_buffer2", |b| {
        b.iter(|| {
            // A fresh reader per epoch: every shard is fetched again.
            let mut batches = local.step_batches(batch_options()).unwrap();
            let steps = batches.batches_per_epoch();
            (0..steps)
                .map(|s| batches.batch(s).unwrap().len())
                .sum::<usize>()
        });
    });
    if let Ok(bucket) = std::env::var("STEREO_TEST_S3_BUCKET") {
        let prefix = format!("s3://{bucket}/bench-store-read-{}", std::process::id());
        let remote = StoreLocation::parse(&prefix).unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            remote
                .put(&name, std::fs::read(entry.path()).unwrap())
                .unwrap();
        }
        let s3 = streamed(remote);
        group.bench_function("streamed_s3_buffer2", |b| {
            b.iter(|| {
                let mut batches = s3.step_batches(batch_options()).unwrap();
                let steps = batches.batches_per_epoch();
                (0..steps)
                    .map(|s| batches.batch(s).unwrap().len())
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
