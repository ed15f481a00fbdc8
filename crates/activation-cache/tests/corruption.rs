//! Damaged stores: corrupt or truncated shards and manifests that disagree with the shards are
//! typed errors naming the file.

mod common;

use std::path::{Path, PathBuf};

use activation_cache::{
    cache_corpus, shard_file_name, ActivationStore, CacheError, OpenOptions, MANIFEST_FILE,
};
use common::*;

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    cache_corpus(&runner(), &corpus(10), dir.path(), &options(), go_on).unwrap();
    assert!(
        ActivationStore::open(dir.path())
            .unwrap()
            .manifest()
            .shards
            .len()
            >= 3
    );
    dir
}

fn shard(dir: &Path, i: usize) -> PathBuf {
    dir.join(shard_file_name(i))
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(MANIFEST_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

#[test]
fn a_flipped_byte_is_a_checksum_error_naming_the_shard() {
    let dir = store();
    let path = shard(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2; // inside the activations
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match ActivationStore::open(dir.path()).unwrap_err() {
        CacheError::ChecksumMismatch {
            shard,
            expected,
            actual,
        } => {
            assert_eq!(shard, path);
            assert_ne!(expected, actual);
        }
        other => panic!("expected ChecksumMismatch, got {other}"),
    }
    // Without checksums a flipped activation byte goes unnoticed, but the layout is still checked.
    ActivationStore::open_with(
        dir.path(),
        &OpenOptions {
            verify_checksums: false,
        },
    )
    .unwrap();
}

#[test]
fn a_corrupt_header_is_a_typed_error_even_without_checksums() {
    let dir = store();
    let path = shard(dir.path(), 0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes()); // header length
    std::fs::write(&path, &bytes).unwrap();
    let err = ActivationStore::open_with(
        dir.path(),
        &OpenOptions {
            verify_checksums: false,
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, CacheError::CorruptShard { shard, .. } if *shard == path),
        "{err}"
    );
}

#[test]
fn a_truncated_shard_is_a_size_error() {
    let dir = store();
    let path = shard(dir.path(), 2);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    for verify_checksums in [true, false] {
        match ActivationStore::open_with(dir.path(), &OpenOptions { verify_checksums }).unwrap_err()
        {
            CacheError::ShardSize {
                shard,
                expected,
                actual,
            } => {
                assert_eq!(shard, path);
                assert_eq!(expected, actual + 100);
            }
            other => panic!("expected ShardSize, got {other}"),
        }
    }
    // The writer refuses to resume on top of it as well.
    let err = cache_corpus(&runner(), &corpus(10), dir.path(), &options(), go_on).unwrap_err();
    assert!(matches!(err, CacheError::ShardSize { .. }), "{err}");
}

#[test]
fn a_missing_shard_is_named() {
    let dir = store();
    std::fs::remove_file(shard(dir.path(), 1)).unwrap();
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::MissingShard { shard: s } if *s == shard(dir.path(), 1)),
        "{err}"
    );
    assert!(err.to_string().contains("shard-00001.safetensors"), "{err}");
}

#[test]
fn shards_swapped_on_disk_are_detected() {
    let dir = store();
    std::fs::copy(shard(dir.path(), 0), shard(dir.path(), 1)).unwrap();
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::ShardSize { .. } | CacheError::ChecksumMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn a_manifest_that_disagrees_with_a_shard_is_a_mismatch_error() {
    let dir = store();
    // Self-consistent manifest (totals adjusted) that misstates shard 1's template-token count.
    edit_manifest(dir.path(), |m| {
        let n = m["shards"][1]["n_template"].as_u64().unwrap();
        m["shards"][1]["n_template"] = (n + 1).into();
        m["n_template"] = (m["n_template"].as_u64().unwrap() + 1).into();
    });
    match ActivationStore::open(dir.path()).unwrap_err() {
        CacheError::ShardMismatch { shard, field, .. } => {
            assert_eq!(shard, shard_path_1(dir.path()));
            assert_eq!(field, "n_template");
        }
        other => panic!("expected ShardMismatch, got {other}"),
    }
}

fn shard_path_1(dir: &Path) -> PathBuf {
    shard(dir, 1)
}

#[test]
fn manifest_document_ranges_must_match_the_shards() {
    let dir = store();
    // Move the boundary between shards 0 and 1 by one document, consistently within the manifest.
    edit_manifest(dir.path(), |m| {
        let end = m["shards"][0]["documents"][1].as_u64().unwrap();
        m["shards"][0]["documents"][1] = (end + 1).into();
        m["shards"][1]["documents"][0] = (end + 1).into();
    });
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::ShardMismatch { field, .. } if field == "documents"),
        "{err}"
    );
}

#[test]
fn manifest_totals_and_statistics_are_checked() {
    let dir = store();
    edit_manifest(dir.path(), |m| {
        m["n_tokens"] = (m["n_tokens"].as_u64().unwrap() + 1).into()
    });
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::ManifestInconsistent { field, .. } if field == "n_tokens"),
        "{err}"
    );

    let dir = store();
    edit_manifest(dir.path(), |m| {
        let x = m["statistics"][1]["without_bos"]["sum"][3]
            .as_f64()
            .unwrap();
        m["statistics"][1]["without_bos"]["sum"][3] = (x + 1.0).into();
    });
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::ManifestInconsistent { field, .. } if field == "statistics[1]"),
        "{err}"
    );

    let dir = store();
    edit_manifest(dir.path(), |m| {
        m["shards"][2]["file"] = "shard-00007.safetensors".into()
    });
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::ManifestInconsistent { field, .. } if field == "shards[2].file"),
        "{err}"
    );
}

#[test]
fn a_broken_or_missing_manifest_is_a_typed_error() {
    let dir = store();
    std::fs::write(
        dir.path().join(MANIFEST_FILE),
        "{\n  \"format\": \"stereo-activation-store\",\n  oops\n}",
    )
    .unwrap();
    match ActivationStore::open(dir.path()).unwrap_err() {
        CacheError::ManifestJson { line, .. } => assert_eq!(line, 3),
        other => panic!("expected ManifestJson, got {other}"),
    }
    edit_manifest_raw(dir.path(), "{}");
    assert!(matches!(
        ActivationStore::open(dir.path()).unwrap_err(),
        CacheError::ManifestJson { .. }
    ));
    std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
    assert!(matches!(
        ActivationStore::open(dir.path()).unwrap_err(),
        CacheError::MissingManifest { .. }
    ));
    let err = ActivationStore::open(dir.path().join("nowhere")).unwrap_err();
    assert!(matches!(err, CacheError::MissingManifest { .. }), "{err}");
}

fn edit_manifest_raw(dir: &Path, text: &str) {
    std::fs::write(dir.join(MANIFEST_FILE), text).unwrap();
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = store();
    edit_manifest(dir.path(), |m| m["version"] = 99.into());
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CacheError::ManifestInconsistent { field, .. } if field == "version"),
        "{err}"
    );
}

#[test]
fn a_model_producing_nan_stops_the_run_naming_it_and_leaves_the_store_as_it_was() {
    use gemma_model::LanguageModel;
    let (b, c) = (load(HOOK), load(HOOK));
    let tok = b.tokenizer.clone().unwrap();
    let base: Box<dyn LanguageModel> = Box::new(Offset::new(b.model, "base", 0.0, None));
    let chat: Box<dyn LanguageModel> =
        Box::new(Offset::new(c.model, "broken chat", f32::NAN, None));
    let runner = model_pair::StereoRunner::new(base, chat, [tok.clone(), tok], HOOK)
        .unwrap()
        .with_batch_size(3);
    let dir = tempfile::tempdir().unwrap();
    let err = cache_corpus(&runner, &corpus(6), dir.path(), &options(), go_on).unwrap_err();
    let message = err.to_string();
    match err {
        CacheError::NonFiniteActivation {
            model, index, hook, ..
        } => {
            assert_eq!((model.as_str(), index), ("broken chat", 1));
            assert_eq!(hook, HOOK.to_string());
        }
        other => panic!("expected NonFiniteActivation, got {other}"),
    }
    assert!(message.contains("document 0"), "{message}");
    assert!(!shard(dir.path(), 0).exists());
    if dir.path().join(MANIFEST_FILE).exists() {
        let store = ActivationStore::open(dir.path()).unwrap();
        assert_eq!(store.n_tokens(), 0);
    }
}

#[test]
fn a_nan_inside_a_shard_is_named_by_shard_row_and_token_when_read() {
    let dir = store();
    let path = shard(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start =
        8 + header_len + header["activations"]["data_offsets"][0].as_u64().unwrap() as usize;
    let (row, width) = (2usize, 2 * 64);
    let dtype_size = if header["activations"]["dtype"] == "F32" {
        4
    } else {
        2
    };
    let at = start + (row * width + 64 + 5) * dtype_size; // chat half of row 2
    bytes[at..at + dtype_size].copy_from_slice(&f32::NAN.to_le_bytes()[4 - dtype_size..]);
    std::fs::write(&path, &bytes).unwrap();
    let store = ActivationStore::open_with(
        dir.path(),
        &OpenOptions {
            verify_checksums: false,
        },
    )
    .unwrap();
    let rows: Vec<u64> = (0..store.n_tokens()).collect();
    // Read as bf16 too, the NaN is named the same way.
    let in_bf16 = store.read_rows_bf16(&rows).unwrap_err().to_string();
    let err = store.read_rows(&rows).unwrap_err();
    assert_eq!(in_bf16, err.to_string());
    match &err {
        CacheError::NonFiniteInStore {
            shard,
            row: r,
            model,
            ..
        } => {
            assert_eq!(shard, &path);
            assert_eq!((*r, *model), (row, 1));
        }
        other => panic!("expected NonFiniteInStore, got {other}"),
    }
    assert!(err.to_string().contains("document"), "{err}");
}
