//! Hub resolution against a directory tree that mimics the hub cache
//! (`<cache>/models--org--name/{refs/main, snapshots/<commit>/...}`), offline.

mod common;

use std::path::Path;

use common::fixtures;
use crosscoder::{CrosscoderError, CrosscoderLoader, CHAT};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Lays `files` (fixture-relative source, repo-relative destination) out as a cached snapshot.
pub fn fake_cache(cache: &Path, repo: &str, files: &[(&str, &str)]) {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).expect("mkdir");
    std::fs::write(repo_dir.join("refs/main"), COMMIT).expect("ref");
    for (src, dst) in files {
        let to = repo_dir.join("snapshots").join(COMMIT).join(dst);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(fixtures().join(src), &to).expect("copy");
    }
}

#[test]
fn dictionary_learning_repo_from_the_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = "science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04";
    fake_cache(
        tmp.path(),
        repo,
        &[
            ("dl_relu/config.json", "config.json"),
            ("dl_relu/model.safetensors", "model.safetensors"),
        ],
    );
    let ckpt = CrosscoderLoader::new(repo)
        .cache_dir(tmp.path())
        .offline(true)
        .load_checkpoint()
        .expect("load");
    assert_eq!(ckpt.config().dict_size, 53);
    // Known release: metadata filled in from the preset.
    assert_eq!(ckpt.config().models[CHAT], "google/gemma-2-2b-it");
    assert_eq!(
        ckpt.config().hook.map(|h| h.to_string()).as_deref(),
        Some("blocks.13.hook_resid_post")
    );
    assert_eq!(ckpt.config().layer, Some(13));
    assert!(ckpt
        .config()
        .source
        .as_deref()
        .unwrap_or_default()
        .contains("from hub"));
    // Same weights as the local directory.
    let local = CrosscoderLoader::new(fixtures().join("dl_relu").to_string_lossy())
        .load_checkpoint()
        .expect("local");
    assert_eq!(ckpt.weights(), local.weights());
    // By commit hash, too.
    let by_commit = CrosscoderLoader::new(repo)
        .cache_dir(tmp.path())
        .offline(true)
        .revision(COMMIT)
        .load_checkpoint();
    assert!(by_commit.is_ok(), "{by_commit:?}");
}

#[test]
fn ckkissane_repo_with_a_subfolder_from_the_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = "ckkissane/crosscoder-gemma-2-2b-model-diff";
    let folder = "ckkissane/blocks.14.hook_resid_pre";
    fake_cache(
        tmp.path(),
        repo,
        &[
            (
                &format!("{folder}/cfg.json"),
                "blocks.14.hook_resid_pre/cfg.json",
            ),
            (
                &format!("{folder}/cc_weights.pt"),
                "blocks.14.hook_resid_pre/cc_weights.pt",
            ),
        ],
    );
    // Named subfolder.
    let named = CrosscoderLoader::new(format!("{repo}/blocks.14.hook_resid_pre"))
        .cache_dir(tmp.path())
        .offline(true)
        .scaling_factors(vec![0.37, 1.9])
        .load_checkpoint()
        .expect("named");
    assert_eq!(named.config().layer, Some(14));
    // The only crosscoder folder of the repository is found without naming it.
    let found = CrosscoderLoader::new(repo)
        .cache_dir(tmp.path())
        .offline(true)
        .load_checkpoint()
        .expect("found");
    assert_eq!(found.weights(), named.weights());
}

#[test]
fn offline_and_not_cached_is_a_hub_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    match CrosscoderLoader::new("org/absent")
        .cache_dir(tmp.path())
        .offline(true)
        .load_checkpoint()
    {
        Err(CrosscoderError::Hub { repo, reason }) => {
            assert_eq!(repo, "org/absent");
            assert!(reason.contains("offline"), "{reason}");
        }
        other => panic!("expected a hub error, got {other:?}"),
    }
    let repo = "org/other-revision";
    fake_cache(
        tmp.path(),
        repo,
        &[
            ("dl_relu/config.json", "config.json"),
            ("dl_relu/model.safetensors", "model.safetensors"),
        ],
    );
    let err = CrosscoderLoader::new(repo)
        .cache_dir(tmp.path())
        .offline(true)
        .revision("v2")
        .load_checkpoint();
    assert!(matches!(err, Err(CrosscoderError::Hub { .. })), "{err:?}");
    // A full commit hash is found in the cache without a ref naming it.
    let pinned = CrosscoderLoader::new(repo)
        .cache_dir(tmp.path())
        .offline(true)
        .revision(COMMIT)
        .load_checkpoint()
        .expect("pinned commit");
    assert_eq!(pinned.config().dict_size, 53);
}
