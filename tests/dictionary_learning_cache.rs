//! Training on a cache written by the science-of-finetuning `dictionary_learning` code, read in place
//! (`fixtures/interop`, from that code's own `cache.py`): `train_crosscoder --dictionary-learning-cache`
//! trains, records the hook the submodule names, holds out the last rows, and is deterministic.

mod common;

use std::path::Path;
use std::process::Command;

use common::example;

fn train(out: &Path, steps: usize) -> std::process::Output {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/interop/dictionary_learning");
    let mut command = Command::new(example("train_crosscoder"));
    command
        .arg("--dictionary-learning-cache")
        .arg(fixture.join("base"))
        .arg(fixture.join("chat"))
        .args([
            "--submodule",
            "layer_1_out",
            "--dict-size",
            "16",
            "--objective",
            "l1",
        ])
        .args([
            "--batch-size",
            "32",
            "--lr",
            "1e-3",
            "--checkpoint-every",
            "5",
            "--seed",
            "3",
        ])
        .args([
            "--validation-fraction",
            "0.1",
            "--steps",
            &steps.to_string(),
        ])
        .arg("--out")
        .arg(out);
    command.output().unwrap()
}

#[test]
fn train_crosscoder_reads_a_dictionary_learning_cache_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let output = train(&whole, 20);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(whole.join("crosscoder_config.json")).unwrap(),
    )
    .unwrap();
    assert!(
        config.to_string().contains("blocks.1.hook_resid_post"),
        "{config}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(whole.join("training_summary.json")).unwrap(),
    )
    .unwrap();
    // The held-out tail: 10% of the 344 rows.
    assert_eq!(summary["validation_rows"], 34, "{summary}");
    // Seeded: a second run gives the same crosscoder, byte for byte.
    let again = dir.path().join("again");
    assert!(train(&again, 20).status.success());
    assert_eq!(
        std::fs::read(whole.join("crosscoder.safetensors")).unwrap(),
        std::fs::read(again.join("crosscoder.safetensors")).unwrap()
    );
    // A submodule that names no hook is refused by name.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/interop/dictionary_learning");
    let output = Command::new(example("train_crosscoder"))
        .arg("--dictionary-learning-cache")
        .arg(fixture.join("base"))
        .arg(fixture.join("chat"))
        .args(["--submodule", "layer_9_out", "--dict-size", "16", "--out"])
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("layer_9_out"), "{message}");
}
