//! Property-based fuzzing of every crosscoder file reader: the dictionary_learning directory
//! (`config.json` + `model.safetensors`), its torch `.pt` (a zip holding a pickle and storages), and the
//! ckkissane `.pt` + `cfg.json`. Valid fixtures are mutated (truncation, bit flips, overwritten runs,
//! inflated numbers in headers and configs); for a `.pt`, the pickle inside is also mutated and zipped
//! again with a valid CRC, so the unpickler itself is reached. Property: an `Err` or a checkpoint, never a
//! panic or an abort, and no single allocation beyond 64 x the input plus 64 MiB
//! (`fuzz_support::bound`). `STEREO_FUZZ_CASES=N` runs longer (CI: 48 per case kind).

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::fixtures;
use crosscoder::CrosscoderLoader;
use fuzz_support::{
    apply, bound, cases, largest_request, mutations, reset_largest_request, Mutation,
};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzz_support::PeakAllocator = fuzz_support::PeakAllocator;

/// Loads `source`; returns whether it loaded. Panics (failing the property) on a panic inside.
fn load(source: &Path, input_bytes: usize) -> std::result::Result<bool, TestCaseError> {
    reset_largest_request();
    let result = std::panic::catch_unwind(|| {
        CrosscoderLoader::new(source.to_string_lossy())
            .load_checkpoint()
            .is_ok()
    });
    let largest = largest_request();
    prop_assert!(
        result.is_ok(),
        "the loader panicked on {}",
        source.display()
    );
    prop_assert!(
        largest <= bound(input_bytes),
        "{}: one allocation of {largest} bytes for {input_bytes} bytes of input",
        source.display()
    );
    Ok(result.unwrap_or(false))
}

/// Copies `dir`'s files into `to`, the one named `name` mutated.
fn mutated_dir(dir: &Path, name: &str, to: &Path, mutations: &[Mutation]) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let mut bytes = std::fs::read(&path).unwrap();
        if file == name {
            bytes = apply(&bytes, mutations);
        }
        total += bytes.len();
        std::fs::write(to.join(&file), bytes).unwrap();
    }
    total
}

/// A torch zip with every entry copied, the pickle (`*/data.pkl`) mutated, CRCs valid.
fn rezipped(pt: &Path, mutations: &[Mutation]) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(pt).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name.ends_with("data.pkl") {
            bytes = apply(&bytes, mutations);
        }
        out.start_file(name, options).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn dictionary_learning_directories(ms in mutations(), config in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let name = if config { "config.json" } else { "model.safetensors" };
        let total = mutated_dir(&fixtures().join("dl_relu"), name, tmp.path(), &ms);
        load(tmp.path(), total)?;
    }

    #[test]
    fn torch_files_mutated_as_bytes(ms in mutations()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixtures().join("dl_pt_batchtopk");
        let bytes = apply(&std::fs::read(src.join("model_final.pt")).unwrap(), &ms);
        std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
        let pt = tmp.path().join("model_final.pt");
        std::fs::write(&pt, &bytes).unwrap();
        load(&pt, bytes.len())?;
    }

    #[test]
    fn torch_pickles_mutated_inside_a_valid_zip(ms in mutations()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixtures().join("dl_pt_batchtopk");
        let bytes = rezipped(&src.join("model_final.pt"), &ms);
        std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
        let pt = tmp.path().join("model_final.pt");
        std::fs::write(&pt, &bytes).unwrap();
        load(&pt, bytes.len())?;
    }

    #[test]
    fn ckkissane_checkpoints(ms in mutations(), config in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let name = if config { "cfg.json" } else { "cc_weights.pt" };
        let src = fixtures().join("ckkissane/blocks.14.hook_resid_pre");
        let total = mutated_dir(&src, name, tmp.path(), &ms);
        std::fs::remove_file(tmp.path().join("expected.safetensors")).ok();
        load(&tmp.path().join("cc_weights.pt"), total)?;
    }
}

#[test]
fn the_allocator_sees_large_requests() {
    reset_largest_request();
    let v: Vec<u8> = Vec::with_capacity(3 << 20);
    assert!(largest_request() >= 3 << 20);
    drop(v);
}

#[test]
fn the_unmutated_fixtures_load() {
    let src = fixtures().join("dl_pt_batchtopk");
    let tmp = tempfile::tempdir().unwrap();
    let bytes = rezipped(&src.join("model_final.pt"), &[]);
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("model_final.pt"), &bytes).unwrap();
    assert!(
        CrosscoderLoader::new(tmp.path().join("model_final.pt").to_string_lossy())
            .load_checkpoint()
            .is_ok()
    );
    assert!(
        CrosscoderLoader::new(fixtures().join("dl_relu").to_string_lossy())
            .load_checkpoint()
            .is_ok()
    );
}
