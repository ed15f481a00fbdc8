//! Crash safety: a run killed at any point leaves a readable store, and the next run completes it
//! with exactly the tokens of an uninterrupted run (none twice, none lost).
//!
//! A kill is simulated by the run's event callback returning `Break`: the run stops on the spot,
//! without any clean-up, leaving the files exactly as a kill at that moment would. Kills in the
//! middle of a write (a truncated temporary file) are simulated by damaging the files by hand.

mod common;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

use activation_cache::{
    cache_corpus, shard_file_name, ActivationStore, CacheError, CacheEvent, CacheOptions,
    StoreDtype, MANIFEST_FILE,
};
use common::*;
use model_pair::{TokenMeta, TokenizationMode};

const N_DOCS: usize = 14;

/// The uninterrupted run: its rows, how many events it emits, its shards' checksums.
struct Reference {
    rows: Vec<(TokenMeta, Vec<f32>)>,
    events: usize,
    sha256: Vec<String>,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut events = 0;
        cache_corpus(&runner(), &corpus(N_DOCS), dir.path(), &options(), |_| {
            events += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        let store = ActivationStore::open(dir.path()).unwrap();
        assert!(store.manifest().shards.len() >= 4);
        let sha256 = store
            .manifest()
            .shards
            .iter()
            .map(|s| s.sha256.clone())
            .collect();
        Reference {
            rows: dump(&store),
            events,
            sha256,
        }
    })
}

/// Runs until the callback has seen `kill_at` events (1-based), then stops like a kill.
fn run_until(dir: &Path, kill_at: usize) -> Result<(), CacheError> {
    let mut seen = 0;
    cache_corpus(&runner(), &corpus(N_DOCS), dir, &options(), |_| {
        seen += 1;
        if seen == kill_at {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map(|_| ())
}

/// Runs until `pred` matches an event, then stops like a kill.
fn run_until_event(dir: &Path, pred: impl Fn(&CacheEvent) -> bool) {
    let err = cache_corpus(&runner(), &corpus(N_DOCS), dir, &options(), |e| {
        if pred(e) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(matches!(err, CacheError::Interrupted { .. }), "{err}");
}

/// The interrupted store is readable and holds a prefix of the reference's documents, whole.
fn assert_readable_prefix(dir: &Path, reference: &[(TokenMeta, Vec<f32>)]) -> usize {
    let store = ActivationStore::open(dir).unwrap();
    let rows = dump(&store);
    let docs = store.manifest().n_documents;
    let want: Vec<_> = reference
        .iter()
        .filter(|(t, _)| t.prompt < docs)
        .cloned()
        .collect();
    assert_same_tokens(&rows, &want, 1e-4);
    docs
}

fn complete(dir: &Path, reference: &[(TokenMeta, Vec<f32>)]) {
    let summary = cache_corpus(&runner(), &corpus(N_DOCS), dir, &options(), go_on).unwrap();
    assert!(summary.corpus_done);
    let store = ActivationStore::open(dir).unwrap();
    assert!(store.manifest().finished);
    assert_same_tokens(&dump(&store), reference, 1e-4);
    // Shards always start at the same documents and batches, so they are even bit-identical.
    let sha256: Vec<_> = store
        .manifest()
        .shards
        .iter()
        .map(|s| s.sha256.clone())
        .collect();
    assert_eq!(sha256, crate::reference().sha256);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn killed_at_every_event_then_resumed_gives_the_uninterrupted_tokens() {
    let (reference, n_events) = (&reference().rows, reference().events);
    assert!(n_events > 12, "{n_events}");
    for kill_at in 1..=n_events {
        let dir = tempfile::tempdir().unwrap();
        let err = run_until(dir.path(), kill_at).unwrap_err();
        assert!(
            matches!(err, CacheError::Interrupted { .. }),
            "event {kill_at}: {err}"
        );
        assert_readable_prefix(dir.path(), reference);
        complete(dir.path(), reference);
    }
}

#[test]
fn killed_again_and_again_still_completes() {
    let reference = &reference().rows;
    let dir = tempfile::tempdir().unwrap();
    // Every run is killed three events after its first commit.
    let mut kills = 0;
    loop {
        let mut after_commit: Option<usize> = None;
        let result = cache_corpus(&runner(), &corpus(N_DOCS), dir.path(), &options(), |e| {
            if let Some(k) = after_commit.as_mut() {
                *k += 1;
                if *k == 3 {
                    return ControlFlow::Break(());
                }
            }
            if matches!(e, CacheEvent::ShardCommitted { .. }) && after_commit.is_none() {
                after_commit = Some(0);
            }
            ControlFlow::Continue(())
        });
        match result {
            Ok(_) => break,
            Err(CacheError::Interrupted { .. }) => {
                assert_readable_prefix(dir.path(), reference);
                kills += 1;
                assert!(kills < 100, "no progress");
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(kills >= 2, "{kills}");
    complete(dir.path(), reference);
}

#[test]
fn a_staged_shard_left_behind_is_ignored_then_replaced() {
    let reference = &reference().rows;
    let dir = tempfile::tempdir().unwrap();
    run_until_event(dir.path(), |e| {
        matches!(e, CacheEvent::ShardStaged { shard: 2 })
    });
    let tmp = dir.path().join(format!("{}.tmp", shard_file_name(2)));
    assert!(tmp.exists());
    assert!(!dir.path().join(shard_file_name(2)).exists());
    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(store.manifest().shards.len(), 2);
    drop(store);
    complete(dir.path(), reference);
}

#[test]
fn a_truncated_temporary_shard_and_manifest_from_a_kill_mid_write_are_discarded() {
    let reference = &reference().rows;
    let dir = tempfile::tempdir().unwrap();
    run_until_event(dir.path(), |e| {
        matches!(e, CacheEvent::ShardStaged { shard: 1 })
    });
    // The kill came in the middle of writing: half the shard and half a new manifest on disk.
    let tmp = dir.path().join(format!("{}.tmp", shard_file_name(1)));
    let bytes = std::fs::read(&tmp).unwrap();
    std::fs::write(&tmp, &bytes[..bytes.len() / 2]).unwrap();
    let manifest = std::fs::read(dir.path().join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        dir.path().join(format!("{MANIFEST_FILE}.tmp")),
        &manifest[..manifest.len() / 3],
    )
    .unwrap();
    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(store.manifest().shards.len(), 1);
    drop(store);
    assert_readable_prefix(dir.path(), reference);
    complete(dir.path(), reference);
}

#[test]
fn a_shard_the_manifest_does_not_list_yet_is_not_read_and_not_stored_twice() {
    let reference = &reference().rows;
    let dir = tempfile::tempdir().unwrap();
    run_until_event(dir.path(), |e| {
        matches!(e, CacheEvent::ShardWritten { shard: 3 })
    });
    // The shard file is complete and in place, but the manifest lags behind it.
    assert!(dir.path().join(shard_file_name(3)).exists());
    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(store.manifest().shards.len(), 3);
    let before = store.n_tokens();
    assert_eq!(dump(&store).len() as u64, before);
    drop(store);
    complete(dir.path(), reference);
}

#[test]
fn a_kill_right_after_a_commit_resumes_at_the_next_document() {
    let reference = &reference().rows;
    let dir = tempfile::tempdir().unwrap();
    run_until_event(dir.path(), |e| {
        matches!(e, CacheEvent::ShardCommitted { shard: 0, .. })
    });
    let docs = assert_readable_prefix(dir.path(), reference);
    let mut started = None;
    cache_corpus(&runner(), &corpus(N_DOCS), dir.path(), &options(), |e| {
        if let CacheEvent::Started {
            next_document,
            stored_shards,
            ..
        } = e
        {
            started = Some((*next_document, *stored_shards));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(started, Some((docs, 1)));
    complete(dir.path(), reference);
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run_until_event(dir.path(), |e| {
        matches!(e, CacheEvent::ShardCommitted { shard: 1, .. })
    });
    let field = |r: Result<activation_cache::CacheSummary, CacheError>| match r {
        Err(CacheError::ResumeMismatch { field, .. }) => field,
        other => panic!("expected ResumeMismatch, got {other:?}"),
    };
    let runner = runner();
    let other_corpus = corpus(N_DOCS + 1);
    assert_eq!(
        field(cache_corpus(
            &runner,
            &other_corpus,
            dir.path(),
            &options(),
            go_on
        )),
        "corpus.fingerprint"
    );
    let bf16 = CacheOptions {
        dtype: StoreDtype::Bf16,
        ..options()
    };
    assert_eq!(
        field(cache_corpus(
            &runner,
            &corpus(N_DOCS),
            dir.path(),
            &bf16,
            go_on
        )),
        "dtype"
    );
    let chat = CacheOptions {
        tokenization: TokenizationMode::ChatTemplate,
        ..options()
    };
    assert_eq!(
        field(cache_corpus(
            &runner,
            &corpus(N_DOCS),
            dir.path(),
            &chat,
            go_on
        )),
        "tokenization"
    );
    let shards = CacheOptions {
        shard_tokens: 41,
        ..options()
    };
    assert_eq!(
        field(cache_corpus(
            &runner,
            &corpus(N_DOCS),
            dir.path(),
            &shards,
            go_on
        )),
        "shard_tokens"
    );
    // Other models: a runner whose chat half has another name.
    let (b, c) = (load(HOOK), load(HOOK));
    let tok = b.tokenizer.clone().unwrap();
    let other = model_pair::StereoRunner::new(
        Box::new(Offset::new(b.model, "base", 0.0, None)),
        Box::new(Offset::new(c.model, "another-chat", 0.0, None)),
        [tok.clone(), tok],
        HOOK,
    )
    .unwrap();
    assert_eq!(
        field(cache_corpus(
            &other,
            &corpus(N_DOCS),
            dir.path(),
            &options(),
            go_on
        )),
        "models[1]"
    );
    // Nothing was changed by the refused runs.
    assert_eq!(
        ActivationStore::open(dir.path())
            .unwrap()
            .manifest()
            .shards
            .len(),
        2
    );
}
