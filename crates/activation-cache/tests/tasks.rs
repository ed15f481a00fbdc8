//! Partitioned caching: any number of tasks, run in any order, killed and rerun, then finalized,
//! give a store byte-identical (shards and manifest) to a one-process run; foreign objects, missing
//! and unfinished tasks are refused by name.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::OnceLock;

use activation_cache::{
    cache_corpus, cache_task, finalize_store, shard_file_name, ActivationStore, CacheError,
    CacheEvent, FinalizeOptions, StoreLocation, TaskPartition, MANIFEST_FILE,
};
use bytes::Bytes;
use common::*;
use proptest::prelude::*;

const N_DOCS: usize = 14;

/// The files of the one-process store: name -> bytes.
fn reference() -> &'static BTreeMap<String, Vec<u8>> {
    static REFERENCE: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        cache_corpus(&runner(), &corpus(N_DOCS), dir.path(), &options(), go_on).unwrap();
        let files = store_files(dir.path());
        assert!(files.len() >= 5, "{:?}", files.keys());
        files
    })
}

/// The manifest and shards of the store in `dir` (task files and anything else left out).
fn store_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == MANIFEST_FILE || (n.starts_with("shard-") && n.ends_with(".safetensors")))
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

fn run_task(location: &StoreLocation, index: usize, count: usize) -> activation_cache::Result<()> {
    let task = TaskPartition::new(index, count).unwrap();
    cache_task(
        &runner(),
        &corpus(N_DOCS),
        location,
        &options(),
        task,
        go_on,
    )
    .map(|_| ())
}

/// Runs task `index` of `count` until it has seen `kill_at` events, then stops like a kill.
fn run_task_until(location: &StoreLocation, index: usize, count: usize, kill_at: usize) -> bool {
    let task = TaskPartition::new(index, count).unwrap();
    let mut seen = 0;
    let result = cache_task(
        &runner(),
        &corpus(N_DOCS),
        location,
        &options(),
        task,
        |_| {
            seen += 1;
            if seen == kill_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    match result {
        Ok(_) => false,
        Err(CacheError::Interrupted { .. }) => true,
        Err(e) => panic!("task {index} of {count}: {e}"),
    }
}

fn assert_identical(dir: &Path) {
    let got = store_files(dir);
    let want = reference();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in want {
        assert!(
            got[name] == *bytes,
            "{name} differs from the one-process run"
        );
    }
}

#[test]
fn every_partition_run_in_any_order_finalizes_to_the_one_process_store() {
    for (count, order) in [
        (1, vec![0]),
        (2, vec![1, 0]),
        (3, vec![2, 0, 1]),
        (4, vec![3, 1, 0, 2]),
        (9, vec![8, 7, 6, 5, 4, 3, 2, 1, 0]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::local(dir.path()).unwrap();
        for index in order {
            run_task(&location, index, count).unwrap();
        }
        let (manifest, summary) = finalize_store(&location, FinalizeOptions::default()).unwrap();
        assert_eq!(summary.num_tasks, count);
        assert_eq!(summary.shards, manifest.shards.len());
        assert_identical(dir.path());
        // The finalized store reads like any other, checksums included.
        let store = ActivationStore::open(dir.path()).unwrap();
        assert_eq!(store.n_tokens(), manifest.n_tokens);
        let checked = FinalizeOptions {
            verify_checksums: true,
        };
        finalize_store(&location, checked).unwrap();
        assert_identical(dir.path());
    }
}

#[test]
fn a_task_killed_at_every_event_and_rerun_gives_the_same_bytes() {
    let count = 3;
    let mut kill_at = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::local(dir.path()).unwrap();
        run_task(&location, 0, count).unwrap();
        run_task(&location, 2, count).unwrap();
        if !run_task_until(&location, 1, count, kill_at) {
            break;
        }
        // A kill during a task: finalize names it (unless the kill came after the done marker).
        let done = dir.path().join("tasks/task-00001-of-00003.done").exists();
        match finalize_store(&location, FinalizeOptions::default()) {
            Err(CacheError::TaskNotDone {
                task: 1,
                num_tasks: 3,
                ..
            }) => assert!(!done),
            Ok(_) => assert!(done),
            Err(other) => panic!("{other}"),
        }
        // Killed again one event later in the rerun, then rerun to the end.
        let _ = run_task_until(&location, 1, count, kill_at + 1);
        run_task(&location, 1, count).unwrap();
        finalize_store(&location, FinalizeOptions::default()).unwrap();
        assert_identical(dir.path());
        kill_at += 1;
    }
    assert!(kill_at > 6, "only {kill_at} events");
}

#[test]
fn a_rerun_of_a_done_task_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    run_task(&location, 0, 2).unwrap();
    let before = std::fs::read(dir.path().join("tasks/task-00000-of-00002.json")).unwrap();
    let task = TaskPartition::new(0, 2).unwrap();
    let mut events = Vec::new();
    let summary = cache_task(
        &runner(),
        &corpus(N_DOCS),
        &location,
        &options(),
        task,
        |e| {
            events.push(e.clone());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert!(summary.already_done);
    assert_eq!(summary.new_shards, 0);
    assert!(events.is_empty(), "{events:?}");
    let after = std::fs::read(dir.path().join("tasks/task-00000-of-00002.json")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn a_foreign_object_at_a_shard_key_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    // Task 0 of 2 owns shard 1; someone else's bytes sit there.
    let foreign = Bytes::from_static(b"not a shard of this store");
    location
        .put_if_absent(&shard_file_name(1), foreign.clone())
        .unwrap();
    let err = run_task(&location, 0, 2).unwrap_err();
    match &err {
        CacheError::ForeignObject { object, reason } => {
            assert!(object.ends_with("shard-00001.safetensors"), "{object}");
            assert!(reason.contains("sha256"), "{reason}");
        }
        other => panic!("expected ForeignObject, got {other}"),
    }
    assert_eq!(
        std::fs::read(dir.path().join(shard_file_name(1))).unwrap(),
        foreign
    );
    // A corrupt copy of the right shard (one byte flipped) is refused the same way.
    let reference_shard = &reference()[&shard_file_name(1)];
    let mut corrupt = reference_shard.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    std::fs::write(dir.path().join(shard_file_name(1)), &corrupt).unwrap();
    assert!(matches!(
        run_task(&location, 0, 2).unwrap_err(),
        CacheError::ForeignObject { .. }
    ));
    // The right bytes (an earlier attempt's upload) are accepted.
    std::fs::write(dir.path().join(shard_file_name(1)), reference_shard).unwrap();
    run_task(&location, 0, 2).unwrap();
    run_task(&location, 1, 2).unwrap();
    finalize_store(&location, FinalizeOptions::default()).unwrap();
    assert_identical(dir.path());
}

#[test]
fn finalize_names_a_missing_task_and_refuses_mixed_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    let err = finalize_store(&location, FinalizeOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no task files"), "{err}");
    run_task(&location, 0, 3).unwrap();
    run_task(&location, 2, 3).unwrap();
    let err = finalize_store(&location, FinalizeOptions::default()).unwrap_err();
    match &err {
        CacheError::TaskNotDone {
            task,
            num_tasks,
            reason,
            ..
        } => {
            assert_eq!((*task, *num_tasks), (1, 3));
            assert!(reason.contains("never started"), "{reason}");
        }
        other => panic!("expected TaskNotDone, got {other}"),
    }
    assert!(!dir.path().join(MANIFEST_FILE).exists());
    // Another partition's task in the same store.
    run_task(&location, 0, 2).unwrap();
    let err = finalize_store(&location, FinalizeOptions::default()).unwrap_err();
    assert!(matches!(err, CacheError::TaskMismatch { .. }), "{err}");
    assert!(err.to_string().contains("several partitions"), "{err}");
}

#[test]
fn finalize_refuses_a_truncated_shard() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    run_task(&location, 0, 1).unwrap();
    let path = dir.path().join(shard_file_name(2));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
    let err = finalize_store(&location, FinalizeOptions::default()).unwrap_err();
    assert!(matches!(err, CacheError::ShardSize { .. }), "{err}");
    // Same size, other bytes: only the checksum check sees it.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let checked = FinalizeOptions {
        verify_checksums: true,
    };
    let err = finalize_store(&location, checked).unwrap_err();
    assert!(matches!(err, CacheError::ChecksumMismatch { .. }), "{err}");
}

#[test]
fn a_task_with_other_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::local(dir.path()).unwrap();
    let task = TaskPartition::new(0, 2).unwrap();
    let killed = cache_task(
        &runner(),
        &corpus(N_DOCS),
        &location,
        &options(),
        task,
        |e| {
            if matches!(e, CacheEvent::ShardCommitted { .. }) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    assert!(matches!(killed, Err(CacheError::Interrupted { .. })));
    let mut other = options();
    other.context_len += 1;
    let err = cache_task(&runner(), &corpus(N_DOCS), &location, &other, task, go_on).unwrap_err();
    assert!(matches!(err, CacheError::TaskMismatch { .. }), "{err}");
    assert!(err.to_string().contains("context_len"), "{err}");
    other = options();
    other.max_tokens = Some(10);
    let err = cache_task(&runner(), &corpus(N_DOCS), &location, &other, task, go_on).unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn the_task_comes_from_flags_kubernetes_or_slurm() {
    let task = |i: Option<usize>, n: Option<usize>, vars: &[(&str, &str)]| {
        TaskPartition::resolve(i, n, env(vars))
    };
    let some = |index, count| Some(TaskPartition { index, count });
    assert_eq!(task(Some(2), Some(4), &[]).unwrap(), some(2, 4));
    assert_eq!(task(None, None, &[]).unwrap(), None);
    assert_eq!(
        task(None, Some(4), &[("JOB_COMPLETION_INDEX", "3")]).unwrap(),
        some(3, 4)
    );
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "8"),
    ];
    assert_eq!(task(None, None, &slurm).unwrap(), some(4, 8));
    assert_eq!(task(None, Some(8), &slurm).unwrap(), some(4, 8));
    // The flags win over the environment.
    assert_eq!(task(Some(0), Some(2), &slurm).unwrap(), some(0, 2));
    for (i, n, vars, message) in [
        (None, Some(8), &[][..], "JOB_COMPLETION_INDEX"),
        (Some(1), None, &[][..], "--num-tasks"),
        (Some(4), Some(4), &[][..], "0..4"),
        (None, Some(3), &slurm[..], "SLURM_ARRAY_TASK_COUNT=8"),
        (
            None,
            Some(2),
            &[("JOB_COMPLETION_INDEX", "x")][..],
            "JOB_COMPLETION_INDEX",
        ),
        (None, Some(2), &[("JOB_COMPLETION_INDEX", "2")][..], "0..2"),
    ] {
        let err = task(i, n, vars).unwrap_err().to_string();
        assert!(err.contains(message), "{err} should name {message}");
    }
}

proptest! {
    #[test]
    fn the_tasks_tile_the_shards_in_order(n_shards in 0usize..500, count in 1usize..40) {
        let mut next = 0;
        for index in 0..count {
            let shards = TaskPartition::new(index, count).unwrap().shards(n_shards);
            prop_assert_eq!(shards.start, next);
            prop_assert!(shards.len() <= n_shards / count + 1);
            prop_assert!(shards.len() >= n_shards / count);
            next = shards.end;
        }
        prop_assert_eq!(next, n_shards);
    }
}
