//! Property-based fuzzing of the activation store's readers and the corpus reader: a small valid store
//! (made once from the tiny fixture models) is copied and its manifest or a shard mutated (truncation, bit
//! flips, overwritten runs, inflated numbers: token counts, shapes, offsets), then opened (with and
//! without checksums) and every row read; corpora (`.jsonl` and `.txt`) are mutated and read. Property: an
//! `Err` or a valid result, never a panic or an abort, and no single allocation beyond 64 x the input plus
//! 64 MiB. `STEREO_FUZZ_CASES=N` runs longer (CI: 48 per case kind).

mod common;

use std::path::Path;
use std::sync::OnceLock;

use activation_cache::{
    cache_corpus, shard_file_name, ActivationStore, Corpus, OpenOptions, MANIFEST_FILE,
};
use common::*;
use fuzz_support::{apply, bound, cases, largest_request, mutations, reset_largest_request};
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: fuzz_support::PeakAllocator = fuzz_support::PeakAllocator;

/// The store every case starts from.
fn original() -> &'static Path {
    static STORE: OnceLock<tempfile::TempDir> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            cache_corpus(&runner(), &corpus(6), dir.path(), &options(), go_on).unwrap();
            dir
        })
        .path()
}

fn copy_dir(from: &Path, to: &Path) -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            total += bytes.len();
            std::fs::write(to.join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    total
}

/// Opens `dir` and reads every row; no panic, bounded allocation.
fn read_all(dir: &Path, bytes: usize, verify: bool) -> std::result::Result<(), TestCaseError> {
    reset_largest_request();
    let dir = dir.to_path_buf();
    let result = std::panic::catch_unwind(move || {
        let store = ActivationStore::open_with(
            &dir,
            &OpenOptions {
                verify_checksums: verify,
            },
        )?;
        let rows: Vec<u64> = (0..store.n_tokens()).collect();
        for chunk in rows.chunks(64) {
            store.read_rows(chunk)?;
        }
        Ok::<_, activation_cache::CacheError>(())
    });
    let largest = largest_request();
    prop_assert!(result.is_ok(), "the store reader panicked");
    prop_assert!(
        largest <= bound(bytes),
        "one allocation of {largest} bytes for a {bytes}-byte store"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn stores_with_a_mutated_manifest_or_shard(ms in mutations(), which in 0usize..3, verify in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let total = copy_dir(original(), tmp.path());
        let name = if which == 0 { MANIFEST_FILE.to_string() } else { shard_file_name(which - 1) };
        let path = tmp.path().join(&name);
        let bytes = apply(&std::fs::read(&path).unwrap(), &ms);
        std::fs::write(&path, bytes).unwrap();
        read_all(tmp.path(), total, verify)?;
    }

    #[test]
    fn corpora(ms in mutations(), jsonl in any::<bool>()) {
        let tmp = tempfile::tempdir().unwrap();
        let (name, text) = if jsonl {
            ("corpus.jsonl", "{\"text\": \"one document\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n{\"text\": \"a third, 42 tokens\"}\n")
        } else {
            ("corpus.txt", "one line\nanother line of 12 words\n\nlast\n")
        };
        let bytes = apply(text.as_bytes(), &ms);
        let path = tmp.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        reset_largest_request();
        let result = std::panic::catch_unwind(|| Corpus::from_path(&path).map(|c| c.documents().len()).is_ok());
        prop_assert!(result.is_ok(), "the corpus reader panicked");
        prop_assert!(largest_request() <= bound(bytes.len()));
    }
}

#[test]
fn the_original_store_reads() {
    let store = ActivationStore::open(original()).unwrap();
    assert!(store.n_tokens() > 0);
    assert!(store.manifest().shards.len() >= 2);
}
