//! The store on real stereo data from the tiny fixture model: round trip, bf16, statistics and
//! normalisation, batches, splits, compatibility, sequential mode.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use activation_cache::{
    cache_corpus, ActivationStore, BatchOptions, CacheError, CacheOptions, Split, StoreDtype,
    MANIFEST_FILE,
};
use common::*;
use gemma_model::{BackendKind, HookPoint, LoadOptions, ModelSource};
use model_pair::{
    ModelFactory, ModelInfo, PairError, PairedSource, SequentialPair, TokenizationMode,
};

fn build(dir: &std::path::Path, n_docs: usize, options: &CacheOptions) -> ActivationStore {
    let summary = cache_corpus(&runner(), &corpus(n_docs), dir, options, go_on).unwrap();
    assert!(summary.corpus_done);
    ActivationStore::open(dir).unwrap()
}

#[test]
fn round_trip_equals_a_direct_stereo_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 17, &options());
    let m = store.manifest();
    assert!(
        m.shards.len() >= 3,
        "the corpus should span several shards: {}",
        m.shards.len()
    );
    assert_eq!((m.hook, m.d_model, m.dtype), (HOOK, 64, StoreDtype::F32));
    assert_eq!(
        m.models.each_ref().map(|i| i.name.as_str()),
        ["base", "chat"]
    );
    assert_eq!(
        (m.n_documents, m.corpus.n_documents, m.finished),
        (17, 17, true)
    );
    assert!(dir.path().join(MANIFEST_FILE).exists());
    // The hook is stored under its TransformerLens name.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["hook"], HOOK_NAME);

    // The same documents through the runner directly (truncated to the context length).
    let runner = runner();
    let mut want = Vec::new();
    for (p, doc) in corpus(17).documents().iter().enumerate() {
        let ids = runner.tokenize(doc, TokenizationMode::Raw).unwrap().ids;
        let n = ids.len().min(options().context_len);
        let run = runner
            .run(std::slice::from_ref(doc), TokenizationMode::Raw)
            .unwrap();
        for t in 0..n {
            let mut meta = run.tokens[t];
            meta.prompt = p;
            want.push((
                meta,
                run.activations
                    .slice(ndarray::s![t, .., ..])
                    .iter()
                    .copied()
                    .collect::<Vec<f32>>(),
            ));
        }
    }
    let got = dump(&store);
    assert_same_tokens(&got, &want, 1e-4);
    // Store order is corpus order, and every row's chat half is its base half + the offset.
    let keys: Vec<_> = got.iter().map(|(t, _)| (t.prompt, t.position)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    for (t, acts) in &got {
        let (base, chat) = acts.split_at(64);
        assert!(
            base.iter()
                .zip(chat)
                .all(|(b, c)| (c - b - CHAT_OFFSET).abs() < 1e-4),
            "{t:?}"
        );
    }
    assert_eq!(m.n_tokens as usize, got.len());
    assert_eq!(m.n_bos, 17);
}

#[test]
fn chat_template_mode_flags_template_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions {
        tokenization: TokenizationMode::ChatTemplate,
        context_len: 64,
        ..options()
    };
    let store = build(dir.path(), 6, &options);
    assert_eq!(
        store.manifest().tokenization,
        TokenizationMode::ChatTemplate
    );
    let rows = dump(&store);
    let template = rows.iter().filter(|(t, _)| t.is_template).count() as u64;
    assert!(
        template >= 6 * 8,
        "every prompt has at least 8 template tokens: {template}"
    );
    assert_eq!(store.manifest().n_template, template);
}

#[test]
fn bf16_storage_round_trips_within_bf16_precision() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let exact = build(a.path(), 9, &options());
    let rounded = build(
        b.path(),
        9,
        &CacheOptions {
            dtype: StoreDtype::Bf16,
            ..options()
        },
    );
    assert_eq!(rounded.manifest().dtype, StoreDtype::Bf16);
    let (x, y) = (dump(&exact), dump(&rounded));
    assert_eq!(x.len(), y.len());
    let mut max_rel = 0f32;
    for ((tx, ax), (ty, ay)) in x.iter().zip(&y) {
        assert_eq!(tx, ty);
        for (u, v) in ax.iter().zip(ay) {
            // bf16 keeps 8 significant bits: rounding to nearest moves a value by at most 2^-8 relative.
            assert!((u - v).abs() <= u.abs() * 2f32.powi(-8), "{u} vs {v}");
            max_rel = max_rel.max((u - v).abs() / u.abs().max(1e-6));
        }
    }
    assert!(max_rel > 0.0, "bf16 must actually round");
    // Batches come back as f32 of the stored bf16 values.
    let batch = rounded
        .batches(BatchOptions {
            batch_size: 5,
            ..BatchOptions::default()
        })
        .unwrap()
        .next()
        .unwrap();
    assert!(batch
        .iter()
        .all(|v| half::bf16::from_f32(*v).to_f32() == *v));
    // Read as bf16, the rows are the stored values as they are (in any order); an f32 store's are
    // rounded to the nearest bf16, which is what the bf16 store holds.
    let rows: Vec<u64> = (0..rounded.n_tokens()).rev().step_by(3).collect();
    let as_bf16 = rounded.read_rows_bf16(&rows).unwrap();
    let as_f32 = rounded.read_rows(&rows).unwrap();
    assert_eq!(as_bf16.dim(), (rows.len(), 2, 64));
    assert_eq!(as_bf16.mapv(|v| v.to_f32()), as_f32);
    assert_eq!(exact.read_rows_bf16(&rows).unwrap(), as_bf16);
    assert!(matches!(
        rounded.read_rows_bf16(&[rounded.n_tokens()]),
        Err(CacheError::InvalidInput { .. })
    ));
    // The activations take half the bytes (headers and metadata aside).
    let bytes = |s: &ActivationStore| s.manifest().shards.iter().map(|e| e.bytes).sum::<u64>();
    let saved = bytes(&exact) - bytes(&rounded);
    let half_of_activations = exact.n_tokens() * 2 * 64 * 2;
    assert!(
        saved.abs_diff(half_of_activations) <= 16 * exact.manifest().shards.len() as u64,
        "{saved} vs {half_of_activations}"
    );
}

#[test]
fn statistics_and_normalization_factors_equal_a_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(
        dir.path(),
        13,
        &CacheOptions {
            dtype: StoreDtype::Bf16,
            ..options()
        },
    );
    let rows = dump(&store);
    for include_bos in [false, true] {
        let factors = store.normalization_factors(include_bos);
        for m in 0..2 {
            let norms: Vec<f64> = rows
                .iter()
                .filter(|(t, _)| include_bos || !t.is_bos)
                .map(|(_, a)| {
                    a[m * 64..(m + 1) * 64]
                        .iter()
                        .map(|v| f64::from(*v).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let mean_norm = norms.iter().sum::<f64>() / norms.len() as f64;
            let want = (64f64).sqrt() / mean_norm;
            assert!(
                (f64::from(factors[m]) - want).abs() < 1e-5 * want,
                "model {m} bos {include_bos}: {} vs {want}",
                factors[m]
            );
            let stats = store.statistics()[m].select(include_bos);
            assert_eq!(stats.count as usize, norms.len());
            assert!((stats.mean_norm() - mean_norm).abs() < 1e-9 * mean_norm);
            // Mean and variance of dimension 5.
            let xs: Vec<f64> = rows
                .iter()
                .filter(|(t, _)| include_bos || !t.is_bos)
                .map(|(_, a)| f64::from(a[m * 64 + 5]))
                .collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!((stats.mean()[5] - mean).abs() < 1e-9);
            assert!((stats.variance()[5] - var).abs() < 1e-9);
        }
        assert_ne!(factors[0], factors[1], "base and chat differ by the offset");
    }
    // The BOS rows change the estimate (their norm differs from the other tokens').
    assert_ne!(
        store.normalization_factors(true),
        store.normalization_factors(false)
    );
}

#[test]
fn batches_cover_every_selected_token_once_per_epoch_in_a_seeded_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 21, &options());
    let all: Vec<_> = dump(&store);
    let non_bos: BTreeSet<u64> = (0..store.n_tokens())
        .filter(|&r| !all[r as usize].0.is_bos)
        .collect();
    let epoch = |seed: u64, include_bos: bool| {
        let options = BatchOptions {
            batch_size: 16,
            seed,
            include_bos,
            ..BatchOptions::default()
        };
        let batches = store.batches(options).unwrap();
        let rows = batches.rows().to_vec();
        assert_eq!(batches.len(), rows.len().div_ceil(16));
        let mut seen = Vec::new();
        for (b, batch) in batches.enumerate() {
            assert_eq!(batch.shape()[1..], [2, 64]);
            // Each delivered row is the stored row the order names.
            for (k, row) in batch.outer_iter().enumerate() {
                let r = rows[b * 16 + k];
                let stored = &all[r as usize].1;
                assert!(row.iter().zip(stored).all(|(x, y)| x == y));
                seen.push(r);
            }
        }
        assert_eq!(seen, rows);
        rows
    };
    let a = epoch(1, false);
    let unique: BTreeSet<u64> = a.iter().copied().collect();
    assert_eq!(unique.len(), a.len(), "a token was drawn twice");
    assert_eq!(
        unique, non_bos,
        "BOS excluded by default, everything else exactly once"
    );
    assert_eq!(epoch(1, false), a, "same seed, same order");
    let b = epoch(2, false);
    assert_ne!(b, a, "another seed, another order");
    assert_eq!(b.iter().copied().collect::<BTreeSet<_>>(), non_bos);
    // The shuffle mixes shards: the first batch draws from several of them.
    let shard_of = |r: u64| {
        store
            .manifest()
            .shards
            .iter()
            .scan(0u64, |acc, s| {
                *acc += s.n_tokens;
                Some(*acc)
            })
            .position(|end| r < end)
            .unwrap()
    };
    let first: BTreeSet<usize> = a[..16].iter().map(|&r| shard_of(r)).collect();
    assert!(first.len() > 1, "{first:?}");
    // BOS included on request.
    let with_bos = epoch(1, true);
    assert_eq!(with_bos.len() as u64, store.n_tokens());
    // drop_last.
    let n = store
        .batches(BatchOptions {
            batch_size: 16,
            drop_last: true,
            ..BatchOptions::default()
        })
        .unwrap()
        .map(|b| b.shape()[0])
        .collect::<Vec<_>>();
    assert!(n.iter().all(|&k| k == 16) && n.len() == non_bos.len() / 16);
}

#[test]
fn validation_split_is_by_document_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(
        dir.path(),
        40,
        &CacheOptions {
            shard_tokens: 100,
            ..options()
        },
    );
    let rows = |split, seed| {
        let options = BatchOptions {
            split,
            seed,
            validation_fraction: 0.25,
            ..BatchOptions::default()
        };
        store
            .batches(options)
            .unwrap()
            .rows()
            .iter()
            .copied()
            .collect::<BTreeSet<u64>>()
    };
    let (train, val, all) = (
        rows(Split::Train, 0),
        rows(Split::Validation, 0),
        rows(Split::All, 0),
    );
    assert!(!train.is_empty() && !val.is_empty());
    assert!(train.is_disjoint(&val));
    assert_eq!(train.union(&val).copied().collect::<BTreeSet<_>>(), all);
    assert_eq!(
        rows(Split::Validation, 9),
        val,
        "the split does not depend on the seed"
    );
    let docs = |rows: &BTreeSet<u64>| {
        rows.iter()
            .map(|&r| store.token_meta(r).unwrap().prompt)
            .collect::<BTreeSet<_>>()
    };
    assert!(
        docs(&train).is_disjoint(&docs(&val)),
        "no document is in both splits"
    );
    let bad = BatchOptions {
        validation_fraction: 1.5,
        ..BatchOptions::default()
    };
    assert!(matches!(
        store.batches(bad),
        Err(CacheError::InvalidInput { .. })
    ));
    assert!(store
        .batches(BatchOptions {
            batch_size: 0,
            ..BatchOptions::default()
        })
        .is_err());
}

#[test]
fn a_store_made_for_other_models_or_another_hook_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 4, &options());
    store.check_compatible(["base", "chat"], HOOK, 64).unwrap();
    let field = |r: Result<(), CacheError>| match r {
        Err(CacheError::IncompatibleStore { field, .. }) => field,
        other => panic!("expected IncompatibleStore, got {other:?}"),
    };
    assert_eq!(
        field(store.check_compatible(["google/gemma-2-2b", "chat"], HOOK, 64)),
        "models[0]"
    );
    assert_eq!(
        field(store.check_compatible(["base", "base"], HOOK, 64)),
        "models[1]"
    );
    assert_eq!(
        field(store.check_compatible(["base", "chat"], HookPoint::ResidPost(13), 64)),
        "hook"
    );
    assert_eq!(
        field(store.check_compatible(["base", "chat"], HOOK, 2304)),
        "d_model"
    );
    let err = store
        .check_compatible(["base", "chat"], HookPoint::ResidPre(2), 64)
        .unwrap_err();
    assert!(
        err.to_string().contains("blocks.1.hook_resid_post"),
        "{err}"
    );
}

#[test]
fn max_tokens_stops_early_and_a_later_run_completes_the_same_tokens() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = build(a.path(), 15, &options());
    let limited = CacheOptions {
        max_tokens: Some(50),
        ..options()
    };
    let summary = cache_corpus(&runner(), &corpus(15), b.path(), &limited, go_on).unwrap();
    assert!(!summary.corpus_done);
    assert!(
        (50..50 + 12).contains(&summary.stored_tokens),
        "{}",
        summary.stored_tokens
    );
    let partial = ActivationStore::open(b.path()).unwrap();
    assert!(!partial.manifest().finished);
    let summary = cache_corpus(&runner(), &corpus(15), b.path(), &options(), go_on).unwrap();
    assert!(summary.corpus_done);
    assert_eq!(summary.stored_tokens, reference.n_tokens());
    assert_same_tokens(
        &dump(&ActivationStore::open(b.path()).unwrap()),
        &dump(&reference),
        1e-4,
    );
    // A finished store: running again adds nothing.
    let again = cache_corpus(&runner(), &corpus(15), b.path(), &options(), go_on).unwrap();
    assert_eq!((again.new_tokens, again.new_shards), (0, 0));
}

/// A factory for the fixture model (plus `offset`) that records how many models are alive.
fn factory(offset: f32, live: Arc<AtomicUsize>, max_live: Arc<AtomicUsize>) -> ModelFactory {
    Box::new(move || {
        let loaded = load(HOOK);
        let model = Offset::new(
            loaded.model,
            if offset == 0.0 { "base" } else { "chat" },
            offset,
            Some(live.clone()),
        );
        max_live.fetch_max(live.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(Box::new(model) as Box<dyn gemma_model::LanguageModel>)
    })
}

#[test]
fn sequential_mode_holds_one_model_at_a_time_and_stores_the_same_tokens() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let reference = build(a.path(), 12, &options());
    let (live, max_live) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tok = load(HOOK).tokenizer.unwrap();
    let models = [
        ModelInfo {
            name: "base".into(),
            revision: None,
        },
        ModelInfo {
            name: "chat".into(),
            revision: None,
        },
    ];
    let pair = SequentialPair::new(
        models,
        [
            factory(0.0, live.clone(), max_live.clone()),
            factory(CHAT_OFFSET, live.clone(), max_live.clone()),
        ],
        [tok.clone(), tok],
        HOOK,
        64,
        BackendKind::Flex,
    )
    .unwrap()
    .with_batch_size(3);
    let options = CacheOptions {
        shards_per_group: 2,
        ..options()
    };
    cache_corpus(&pair, &corpus(12), b.path(), &options, go_on).unwrap();
    assert_eq!(
        max_live.load(Ordering::SeqCst),
        1,
        "never two models in memory"
    );
    assert_eq!(live.load(Ordering::SeqCst), 0);
    let store = ActivationStore::open(b.path()).unwrap();
    assert_eq!(store.manifest().models, reference.manifest().models);
    assert_same_tokens(&dump(&store), &dump(&reference), 1e-4);
}

#[test]
fn sequential_pair_from_sources_reads_configs_and_checks_the_pair() {
    let hook = HookPoint::ResidPost(1);
    let sources = [
        ModelSource::Local(fixture("tiny-window")),
        ModelSource::Local(fixture("tiny-window")),
    ];
    let pair =
        SequentialPair::from_sources(sources, LoadOptions::for_hooks(&[hook]), hook).unwrap();
    assert_eq!(pair.d_model(), 64);
    let dir = tempfile::tempdir().unwrap();
    cache_corpus(&pair, &corpus(3), dir.path(), &options(), go_on).unwrap();
    let store = ActivationStore::open(dir.path()).unwrap();
    let name = fixture("tiny-window").display().to_string();
    store.check_compatible([&name, &name], HOOK, 64).unwrap();
    // Identical models: both halves equal.
    assert!(dump(&store).iter().all(|(_, a)| a[..64] == a[64..]));
    // A hook deeper than the model, or two models of different widths, are refused before loading.
    let deep = HookPoint::ResidPost(9);
    let sources = [
        ModelSource::Local(fixture("tiny-window")),
        ModelSource::Local(fixture("tiny-window")),
    ];
    assert!(matches!(
        SequentialPair::from_sources(sources, LoadOptions::for_hooks(&[hook]), deep),
        Err(PairError::Mismatch { .. })
    ));
    let sources = [
        ModelSource::Local(fixture("tiny-window")),
        ModelSource::Local(fixture("tiny-gqa-bf16")),
    ];
    assert!(matches!(
        SequentialPair::from_sources(sources, LoadOptions::for_hooks(&[hook]), hook),
        Err(PairError::Mismatch { .. })
    ));
}

#[test]
fn step_batches_depend_only_on_the_step_and_cover_each_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), 21, &options());
    let options = BatchOptions {
        batch_size: 16,
        seed: 5,
        ..BatchOptions::default()
    };
    let mut from_start = activation_cache::StepBatches::new(&store, options).unwrap();
    let per_epoch = from_start.batches_per_epoch();
    assert!(per_epoch >= 2);
    let steps: Vec<_> = (0..2 * per_epoch + 1)
        .map(|s| from_start.batch(s).unwrap())
        .collect();
    // A resumed reader asked for step s first gives the same batch as one that read 0..s.
    let mut resumed = activation_cache::StepBatches::new(&store, options).unwrap();
    for s in [per_epoch + 1, 3, 2 * per_epoch] {
        assert_eq!(resumed.batch(s).unwrap(), steps[s]);
    }
    // Epoch 0 is the seed's order (full batches only); epoch 1 is reshuffled with the next seed.
    let epoch0: Vec<u64> = store.batches(options).unwrap().rows().to_vec();
    let all = dump(&store);
    for (b, batch) in steps[..per_epoch].iter().enumerate() {
        for (k, row) in batch.outer_iter().enumerate() {
            let stored = &all[epoch0[b * 16 + k] as usize].1;
            assert!(row.iter().zip(stored).all(|(x, y)| x == y));
        }
    }
    assert_ne!(steps[0], steps[per_epoch]);
    let too_big = BatchOptions {
        batch_size: 1 << 20,
        ..options
    };
    let err = activation_cache::StepBatches::new(&store, too_big).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

#[test]
fn a_document_longer_than_the_models_positions_is_refused_before_it_runs() {
    let long = vec!["sky"; 600].join(" ");
    let corpus = activation_cache::Corpus::from_documents(
        "long-corpus",
        vec![
            model_pair::PromptInput::Text("a short one".into()),
            model_pair::PromptInput::Text(long),
        ],
    );
    let source = runner();
    assert_eq!(
        source.max_positions(),
        Some(512),
        "the fixture's config.json"
    );
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions {
        context_len: 1024,
        ..CacheOptions::default()
    };
    let err = cache_corpus(&source, &corpus, dir.path(), &options, go_on)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("document 1 of long-corpus")
            && err.contains("(512)")
            && err.contains("--context-len 512"),
        "{err}"
    );
    // Truncated, as the message says, it is cached.
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions {
        context_len: 512,
        ..CacheOptions::default()
    };
    let summary = cache_corpus(&source, &corpus, dir.path(), &options, go_on).unwrap();
    assert!(summary.corpus_done);
}
