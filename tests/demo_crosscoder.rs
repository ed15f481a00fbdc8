//! The demo's crosscoder against the truth we planted: a chat-only latent along each planted direction and
//! no base-only latent; and the negative control (chat = base) trained by the same recipe on a shorter
//! schedule: no chat-only latent.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use activation_cache::{cache_corpus, ActivationStore, CacheOptions, Corpus};
use crosscoder::{
    nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderLoader, DecoderAnalysis,
    LatentClass, RelativeNormThresholds, BASE, CHAT,
};
use crosscoder_train::{train_on_store, Start, StoreTraining, TrainConfig, TrainingSummary};
use diff_analysis::{ConclusionStatus, Day1, Day1Options};
use gemma_model::{load_dir, HookPoint, LoadOptions};
use model_pair::StereoRunner;
use persona_dataset::PersonaDataset;
use stereo::demo::{generate, DemoSpec};

use common::{demo_dir, planted_directions};

/// The latent whose chat decoder vector is closest in direction to `direction`, with that cosine.
fn best_chat_latent(cc: &dyn Crosscoder, direction: &[f32]) -> (usize, f32) {
    nearest_decoder_latent(cc, CHAT, direction).unwrap()
}

#[test]
fn committed_crosscoder_has_a_chat_only_latent_per_plant_and_no_base_only_latent() {
    let cc = CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
        .backend(BackendKind::NdArray)
        .load()
        .unwrap();
    assert_eq!(
        cc.config().hook.map(|h| h.to_string()).as_deref(),
        Some("blocks.1.hook_resid_post")
    );
    let analysis =
        DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default()).unwrap();
    let mut found = Vec::new();
    for (mechanism, direction) in planted_directions() {
        let (latent, cosine) = best_chat_latent(cc.as_ref(), &direction);
        println!(
            "{mechanism}: latent #{latent}, chat decoder cosine {cosine:.3}, relative norm {:.3}",
            analysis.relative_norms[latent]
        );
        assert!(cosine > 0.9, "{mechanism}: cosine {cosine}");
        assert_eq!(
            analysis.classes[latent],
            LatentClass::ChatOnly,
            "{mechanism}"
        );
        found.push(latent);
    }
    assert_ne!(found[0], found[1], "one latent per mechanism");
    let counts = analysis.counts();
    assert_eq!(counts.base_only, 0);
    assert_eq!(
        counts.chat_only, 2,
        "only the plants are chat-only: {counts:?}"
    );
}

/// The pair in `dir` as a stereo runner at the demo hook.
fn runner(dir: &Path) -> StereoRunner {
    let hook: HookPoint = "blocks.1.hook_resid_post".parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]);
    let base = load_dir(dir.join("base"), &options).unwrap();
    let chat = load_dir(dir.join("chat"), &options).unwrap();
    StereoRunner::from_loaded(base, chat, hook).unwrap()
}

/// Caches the corpus of the pair in `dir` and returns the store directory.
fn cache(runner: &StereoRunner, dir: &Path) -> PathBuf {
    let corpus = Corpus::from_path(dir.join("corpus.jsonl")).unwrap();
    let store = dir.join("store");
    cache_corpus(runner, &corpus, &store, &CacheOptions::default(), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    store
}

#[test]
fn negative_control_trains_to_no_chat_only_latent() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = DemoSpec {
        corpus_entries: 1000,
        ..DemoSpec::negative_control()
    };
    generate(&spec, tmp.path()).unwrap();
    let runner = runner(tmp.path());
    let store = ActivationStore::open(cache(&runner, tmp.path())).unwrap();

    // The demo recipe (ckkissane L1, F = 256, lr 1e-3) on a shorter schedule, through the store glue the
    // train_crosscoder example uses.
    let mut config = TrainConfig::ckkissane(2, 64, 256, 600);
    config.lr = 1e-3;
    config.batch_size = 512;
    let run = StoreTraining {
        out: tmp.path().join("trained"),
        backend: BackendKind::Flex,
        seed: 0,
        validation_fraction: 0.05,
        input_scaling: true,
        checkpoint_every: 200,
        progress: false,
        replicas: 1,
    };
    let outcome = train_on_store(&store, Start::Fresh(config), &run).unwrap();
    let last = outcome.summary.last_step.clone().unwrap();
    println!("negative control: {last:?}");
    assert_eq!(outcome.fit.steps_run, 600);
    assert!(
        last.fvu.iter().all(|v| *v < 0.5),
        "it learned something: {:?}",
        last.fvu
    );
    assert!(outcome.summary.validation_fvu.iter().all(|v| *v < 0.5));
    // The summary on disk is the one returned; resuming a finished run runs no step and changes nothing.
    let written: TrainingSummary = serde_json::from_str(
        &std::fs::read_to_string(run.out.join("training_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written, outcome.summary);
    let weights = std::fs::read(run.out.join("crosscoder.safetensors")).unwrap();
    let resumed = train_on_store(&store, Start::Resume, &run).unwrap();
    assert_eq!(resumed.fit.steps_run, 0);
    assert_eq!(resumed.summary.classes, outcome.summary.classes);
    assert_eq!(
        std::fs::read(run.out.join("crosscoder.safetensors")).unwrap(),
        weights
    );

    let cc = CrosscoderLoader::new(run.out.to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .unwrap();
    let analysis =
        DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default()).unwrap();
    let counts = analysis.counts();
    let extreme = analysis
        .relative_norms
        .iter()
        .fold((1.0f32, 0.0f32), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    println!(
        "negative control classes {counts:?}, relative norms in [{:.3}, {:.3}]",
        extreme.0, extreme.1
    );
    assert_eq!(counts.chat_only, 0, "{counts:?}");
    assert_eq!(counts.base_only, 0, "{counts:?}");

    // The day1 pipeline on the control: content latents still differ between novice and expert prompts
    // (in both models alike), but none is chat-specific, so there is no candidate and no sentence.
    let dataset = PersonaDataset::shipped();
    let options = Day1Options {
        progress: false,
        ..Day1Options::default()
    };
    let results = Day1::new(&runner, Some(cc.as_ref()), &dataset)
        .options(options)
        .run()
        .unwrap();
    println!("{}", results.terminal_summary());
    assert!(results.hunts.iter().all(|h| h.candidates.is_empty()));
    for probe in &results.conclusion.per_probe {
        assert_eq!(
            probe.status,
            ConclusionStatus::NoCandidates,
            "{}",
            probe.sentence
        );
    }
}
