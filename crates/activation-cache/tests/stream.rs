//! The streaming reader: every selected row once per epoch, batches that depend only on the step
//! (a restarted reader gets the same ones), store-order passes equal to the mapped reader's, and
//! damaged shards refused when fetched.

mod common;

use activation_cache::{
    cache_corpus, shard_file_name, ActivationStore, BatchOptions, CacheError, Split, StoreLocation,
    StreamOptions, StreamingStore,
};
use common::*;
use ndarray::{Array3, Axis};

const N_DOCS: usize = 30;

fn store_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cache_corpus(&runner(), &corpus(N_DOCS), dir.path(), &options(), go_on).unwrap();
    dir
}

fn streaming(dir: &std::path::Path, buffer_shards: usize) -> StreamingStore {
    let options = StreamOptions {
        buffer_shards,
        ..StreamOptions::default()
    };
    StreamingStore::open(StoreLocation::local(dir).unwrap(), options).unwrap()
}

/// The rows of `batches` as sorted bit patterns, to compare sets of rows.
fn sorted_rows(batches: &[Array3<f32>]) -> Vec<Vec<u32>> {
    let mut rows: Vec<Vec<u32>> = batches
        .iter()
        .flat_map(|b| {
            b.outer_iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    rows
}

fn batching(batch_size: usize, seed: u64) -> BatchOptions {
    BatchOptions {
        batch_size,
        seed,
        ..BatchOptions::default()
    }
}

#[test]
fn an_epoch_holds_every_selected_row_once_for_any_buffer() {
    let dir = store_dir();
    let mapped = ActivationStore::open(dir.path()).unwrap();
    let n_shards = mapped.manifest().shards.len();
    assert!(n_shards >= 6, "{n_shards} shards");
    let all = mapped
        .read_rows(&mapped.selected_rows(&batching(1, 0)).unwrap())
        .unwrap();
    for buffer in [1, 2, 3, n_shards, n_shards + 5] {
        // Batches of 1 leave no tail: the epoch is every row.
        let mut batches = streaming(dir.path(), buffer)
            .step_batches(batching(1, 7))
            .unwrap();
        let per_epoch = batches.batches_per_epoch();
        assert_eq!(per_epoch, all.shape()[0]);
        let epoch: Vec<_> = (0..per_epoch).map(|s| batches.batch(s).unwrap()).collect();
        assert_eq!(
            sorted_rows(&epoch),
            sorted_rows(std::slice::from_ref(&all)),
            "buffer {buffer}"
        );
        // The next epoch is the same rows in another order.
        let next: Vec<_> = (per_epoch..2 * per_epoch)
            .map(|s| batches.batch(s).unwrap())
            .collect();
        assert_eq!(sorted_rows(&next), sorted_rows(&epoch));
        assert_ne!(next, epoch, "buffer {buffer}: epochs in the same order");
    }
}

#[test]
fn the_batch_of_a_step_does_not_depend_on_the_steps_read_before() {
    let dir = store_dir();
    let mut straight = streaming(dir.path(), 2)
        .step_batches(batching(16, 3))
        .unwrap();
    let per_epoch = straight.batches_per_epoch();
    let total = 3 * per_epoch + 2;
    let run: Vec<_> = (0..total).map(|s| straight.batch(s).unwrap()).collect();
    assert!(run.iter().all(|b| b.shape() == [16, 2, 64]));
    // A restarted reader, jumping to a later step, then back.
    let mut restarted = streaming(dir.path(), 2)
        .step_batches(batching(16, 3))
        .unwrap();
    for step in [total - 1, per_epoch + 1, 0, 2 * per_epoch, 5] {
        assert_eq!(restarted.batch(step).unwrap(), run[step], "step {step}");
    }
    // Another seed, another order; another buffer, another order.
    let mut other_seed = streaming(dir.path(), 2)
        .step_batches(batching(16, 4))
        .unwrap();
    assert_ne!(other_seed.batch(0).unwrap(), run[0]);
    let mut other_buffer = streaming(dir.path(), 3)
        .step_batches(batching(16, 3))
        .unwrap();
    assert_ne!(other_buffer.batch(0).unwrap(), run[0]);
}

#[test]
fn a_store_order_pass_equals_the_mapped_readers_rows_and_splits_partition_them() {
    let dir = store_dir();
    let mapped = ActivationStore::open(dir.path()).unwrap();
    for split in [Split::All, Split::Train, Split::Validation] {
        let batch_options = BatchOptions {
            batch_size: 13,
            split,
            validation_fraction: 0.3,
            ..BatchOptions::default()
        };
        let want = mapped
            .read_rows(&mapped.selected_rows(&batch_options).unwrap())
            .unwrap();
        for buffer in [1, 4] {
            let mut got = Vec::new();
            streaming(dir.path(), buffer)
                .for_each_batch(batch_options, |batch| {
                    got.push(batch);
                    Ok(())
                })
                .unwrap();
            let sizes: Vec<usize> = got.iter().map(|b| b.shape()[0]).collect();
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&n| n == 13),
                "{sizes:?}"
            );
            let views: Vec<_> = got.iter().map(|b| b.view()).collect();
            let got = ndarray::concatenate(Axis(0), &views).unwrap();
            assert_eq!(got, want, "{split:?}, buffer {buffer}");
        }
        // The training batches of a split draw from that split only.
        let mut batches = streaming(dir.path(), 2)
            .step_batches(BatchOptions {
                batch_size: 1,
                ..batch_options
            })
            .unwrap();
        let epoch: Vec<_> = (0..batches.batches_per_epoch())
            .map(|s| batches.batch(s).unwrap())
            .collect();
        assert_eq!(sorted_rows(&epoch), sorted_rows(&[want]), "{split:?}");
    }
}

#[test]
fn damaged_shards_are_refused_by_name() {
    let dir = store_dir();
    let path = dir.path().join(shard_file_name(1));
    let bytes = std::fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    let at = bytes.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let store = streaming(dir.path(), 2);
    let mut batches = store.step_batches(batching(4, 0)).unwrap();
    let err = (0..batches.batches_per_epoch())
        .find_map(|s| batches.batch(s).err())
        .expect("the damaged shard is read in the epoch");
    assert!(matches!(err, CacheError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("shard-00001.safetensors"), "{err}");
    // Truncated: refused at opening.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    let err = StreamingStore::open(location, StreamOptions::default()).unwrap_err();
    assert!(matches!(err, CacheError::ShardSize { .. }), "{err}");
    // No manifest: named.
    let empty = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(empty.path()).unwrap();
    let err = StreamingStore::open(location, StreamOptions::default()).unwrap_err();
    assert!(matches!(err, CacheError::MissingManifest { .. }), "{err}");
}
