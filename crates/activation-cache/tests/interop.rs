//! The `dictionary_learning` cache reader against that code's own reader: a cache written by the
//! science-of-finetuning `cache.py` (fixtures/interop, pinned generator script) read in place gives
//! exactly the rows `PairedActivationCache` returns; damaged caches are refused by name.

use std::path::{Path, PathBuf};

use activation_cache::{CacheError, DictionaryLearningCache, ForeignDtype};
use half::bf16;
use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/interop/dictionary_learning")
}

const SUBMODULE: &str = "layer_1_out";

/// A tensor of the reference file as f32 (BF16 widened, I64 converted).
fn reference(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensor = file.tensor(name).unwrap();
    let values = match tensor.dtype() {
        safetensors::Dtype::BF16 => tensor
            .data()
            .chunks_exact(2)
            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        safetensors::Dtype::I64 => tensor
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => panic!("{other:?}"),
    };
    (tensor.shape().to_vec(), values)
}

#[test]
fn rows_equal_the_ones_paired_activation_cache_returns() {
    let cache =
        DictionaryLearningCache::open(fixture().join("base"), fixture().join("chat"), SUBMODULE)
            .unwrap();
    assert_eq!(cache.dtype(), ForeignDtype::Bf16);
    assert!(cache.n_shards() >= 4, "{} shards", cache.n_shards());
    let (shape, want) = reference("rows");
    assert_eq!(shape, vec![cache.len() as usize, 2, cache.d_model()]);
    let rows: Vec<u64> = (0..cache.len()).collect();
    let got = cache.read_rows(&rows).unwrap();
    assert_eq!(got.as_slice().unwrap(), &want[..]);
    // Base and chat differ (two models), and bf16 is kept: every value is a bf16.
    assert!(got.outer_iter().any(|r| r.row(0) != r.row(1)));
    assert!(got.iter().all(|v| bf16::from_f32(*v).to_f32() == *v));
    // A slice read (their reader's other path).
    let (_, bounds) = reference("slice");
    let (lo, hi) = (bounds[0] as u64, bounds[1] as u64);
    let (_, want) = reference("slice_rows");
    let got = cache.read_rows(&(lo..hi).collect::<Vec<_>>()).unwrap();
    assert_eq!(got.as_slice().unwrap(), &want[..]);
    assert!(matches!(
        cache.read_rows(&[cache.len()]),
        Err(CacheError::InvalidInput { .. })
    ));
}

/// A copy of the fixture to damage.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for model in ["base", "chat"] {
        let from = fixture().join(model).join(SUBMODULE);
        let to = dir.path().join(model).join(SUBMODULE);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    dir
}

fn open(dir: &Path) -> Result<DictionaryLearningCache, CacheError> {
    DictionaryLearningCache::open(dir.join("base"), dir.join("chat"), SUBMODULE)
}

#[test]
fn damaged_caches_are_refused_by_name() {
    let dir = copy();
    let shard = dir
        .path()
        .join("chat")
        .join(SUBMODULE)
        .join("shard_2.memmap");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, CacheError::ShardSize { .. }), "{err}");
    assert!(err.to_string().contains("shard_2.memmap"), "{err}");

    let dir = copy();
    let meta = dir.path().join("base").join(SUBMODULE).join("shard_1.meta");
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("torch.bfloat16", "torch.int8");
    std::fs::write(&meta, text).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, CacheError::ForeignCache { .. }), "{err}");
    assert!(
        err.to_string().contains("shard_1.meta") && err.to_string().contains("torch.int8"),
        "{err}"
    );

    let dir = copy();
    let config = dir.path().join("chat").join(SUBMODULE).join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let total = format!("\"total_size\": {}", open(&fixture()).unwrap().len());
    std::fs::write(&config, text.replace(&total, "\"total_size\": 7")).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("total_size 7"), "{err}");

    let dir = copy();
    std::fs::remove_file(dir.path().join("base").join(SUBMODULE).join("config.json")).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn training_batches_cover_the_split_once_per_epoch_and_the_hook_is_named() {
    use activation_cache::{BatchOptions, Split};
    use gemma_model::HookPoint;
    let cache =
        DictionaryLearningCache::open(fixture().join("base"), fixture().join("chat"), SUBMODULE)
            .unwrap();
    assert_eq!(cache.hook().unwrap(), HookPoint::ResidPost(1));
    let options = |split, batch_size| BatchOptions {
        batch_size,
        seed: 4,
        split,
        validation_fraction: 0.25,
        ..BatchOptions::default()
    };
    let n = cache.len() as usize;
    let validation = (n as f64 * 0.25).round() as usize;
    let mut batches = cache.step_batches(options(Split::Train, 1)).unwrap();
    assert_eq!(batches.batches_per_epoch(), n - validation);
    let mut seen: Vec<Vec<u32>> = (0..batches.batches_per_epoch())
        .map(|s| {
            batches
                .batch(s)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect();
    let mut want: Vec<Vec<u32>> = (0..(n - validation) as u64)
        .map(|r| {
            cache
                .read_rows(&[r])
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect();
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
    let mut rows = 0;
    cache
        .for_each_batch(options(Split::Validation, 7), |b| {
            rows += b.shape()[0];
            Ok(())
        })
        .unwrap();
    assert_eq!(rows, validation);
    // Statistics over every row of each model.
    let statistics = cache.statistics();
    assert_eq!(statistics[0].all.count, cache.len());
    assert!(statistics[0].normalization_factor(false) != statistics[1].normalization_factor(false));
}
