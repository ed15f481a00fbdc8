//! `HF_HOME` + `HF_HUB_OFFLINE` are honoured (own test binary: it sets process-wide environment variables).

mod common;

use common::fixtures;
use crosscoder::CrosscoderLoader;

#[test]
fn hf_home_and_hf_hub_offline_are_honoured() {
    let home = tempfile::tempdir().expect("tempdir");
    let repo_dir = home.path().join("hub/models--org--cached-crosscoder");
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    std::fs::create_dir_all(repo_dir.join("refs")).expect("mkdir");
    std::fs::write(repo_dir.join("refs/main"), commit).expect("ref");
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("dl_batchtopk").join(f), snap.join(f)).expect("copy");
    }
    // This binary has a single test, so nothing else reads the environment concurrently.
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::remove_var("HF_HUB_CACHE");
    let ckpt = CrosscoderLoader::new("org/cached-crosscoder")
        .load_checkpoint()
        .expect("from HF_HOME");
    assert_eq!(ckpt.config().activation.name(), "batch_top_k");
    // Offline: an uncached repository is an error, not a download attempt.
    assert!(CrosscoderLoader::new("org/not-cached")
        .load_checkpoint()
        .is_err());
}
