//! Property-based fuzzing of every reader of a model directory: `config.json` (the hub dialect of
//! transformers 4.42 and the transformers 5 dialect), the safetensors weights (headers that lie about
//! shapes and offsets), `tokenizer.json` and `tokenizer_config.json`, loaded whole through `load_dir`.
//! Valid fixtures are mutated (truncation, bit flips, overwritten runs, inflated numbers); property: an
//! `Err` or a model, never a panic or an abort, and no single allocation beyond 64 x the input plus
//! 64 MiB. `STEREO_FUZZ_CASES=N` runs longer (CI: 48 per case kind).

mod common;

use std::path::Path;

use common::fixture;
use fuzz_support::{
    apply, bound, cases, largest_request, mutations, reset_largest_request, Mutation,
};
use gemma_model::{load_dir, Gemma2Config, LoadOptions};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzz_support::PeakAllocator = fuzz_support::PeakAllocator;

/// Runs `f` on an input of `bytes` bytes: no panic, bounded allocation.
fn check<T>(
    what: &str,
    bytes: usize,
    f: impl FnOnce() -> T + std::panic::UnwindSafe,
) -> std::result::Result<(), TestCaseError> {
    reset_largest_request();
    let result = std::panic::catch_unwind(f);
    let largest = largest_request();
    prop_assert!(result.is_ok(), "{what}: panicked");
    prop_assert!(
        largest <= bound(bytes),
        "{what}: one allocation of {largest} bytes for {bytes} bytes"
    );
    Ok(())
}

/// The tiny-window model directory copied into `to`, file `name` mutated; returns the bytes read.
fn mutated_model(name: &str, to: &Path, ms: &[Mutation]) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(fixture("tiny-window")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if file.starts_with("golden") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if file == name {
            bytes = apply(&bytes, ms);
        }
        total += bytes.len();
        std::fs::write(to.join(&file), bytes).unwrap();
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn configs_in_both_dialects(ms in mutations(), which in 0usize..3) {
        let file = [
            fixture("hub-configs/gemma-2-2b.config.json"),
            fixture("hub-configs/gemma-2-2b.transformers5.config.json"),
            fixture("tiny-window/config.json"),
        ][which].clone();
        let bytes = apply(&std::fs::read(&file).unwrap(), &ms);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check("config.json", bytes.len(), || Gemma2Config::from_json_str(&text, &file).is_ok())?;
    }

    #[test]
    fn model_directories(ms in mutations(), which in 0usize..4) {
        let name = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"][which];
        let tmp = tempfile::tempdir().unwrap();
        let total = mutated_model(name, tmp.path(), &ms);
        let dir = tmp.path().to_path_buf();
        check(name, total, move || {
            load_dir(&dir, &LoadOptions::default()).map(|m| m.tokenizer.is_some()).is_ok()
        })?;
    }
}

#[test]
fn the_unmutated_model_loads() {
    let tmp = tempfile::tempdir().unwrap();
    mutated_model("none", tmp.path(), &[]);
    let loaded = load_dir(tmp.path(), &LoadOptions::default()).unwrap();
    assert!(loaded.tokenizer.is_some());
}
