//! The whole day-1 pipeline on real model code: the tiny Gemma-2 fixture as both base and chat, a
//! crosscoder with random weights (d = 64), the shipped persona dataset. And the embedded demo pair
//! when it is present (`fixtures/demo/`).

use std::path::{Path, PathBuf};

use crosscoder::{
    BackendKind, Crosscoder, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderLoader,
    CrosscoderWeights, InputNormalizer,
};
use diff_analysis::{
    AnalysisError, ConclusionStatus, Day1, Day1Options, FeatureKind, HuntOptions, Pooling,
};
use gemma_model::{load_dir, HookPoint, LoadOptions};
use model_pair::{StereoRunner, TokenizationMode};
use ndarray::{Array1, Array2, Array3};
use persona_dataset::PersonaDataset;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runner_for(base: &Path, chat: &Path, hook: HookPoint) -> StereoRunner {
    let options = LoadOptions::for_hooks(&[hook]).with_backend(BackendKind::NdArray);
    let b = load_dir(base, &options).expect("base loads");
    let c = load_dir(chat, &options).expect("chat loads");
    let tokenizers = [
        b.tokenizer.expect("tokenizer"),
        c.tokenizer.expect("tokenizer"),
    ];
    StereoRunner::new(b.model, c.model, tokenizers, hook).expect("the pair is valid")
}

fn tiny_runner(hook: HookPoint) -> StereoRunner {
    let tiny = workspace().join("fixtures/gemma/tiny-window");
    runner_for(&tiny, &tiny, hook)
}

/// A ReLU crosscoder with deterministic pseudo-random weights; latents 0..16 decode only into the
/// chat model, 16..24 only into the base model.
fn random_crosscoder(d: usize, f: usize, hook: &str) -> Box<dyn Crosscoder> {
    let mut state = 0x1234_5678u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let w_enc = Array3::from_shape_fn((2, d, f), |_| next() * 0.6);
    let b_enc = Array1::from_shape_fn(f, |_| next() * 0.2);
    let mut w_dec = Array3::from_shape_fn((2, f, d), |_| next() * 0.3);
    for j in 0..16 {
        w_dec.slice_mut(ndarray::s![0, j, ..]).fill(0.0);
    }
    for j in 16..24 {
        w_dec.slice_mut(ndarray::s![1, j, ..]).fill(0.0);
    }
    let weights = CrosscoderWeights {
        w_enc,
        b_enc,
        w_dec,
        b_dec: Array2::zeros((2, d)),
    };
    let mut config = CrosscoderConfig::relu(2, d, f);
    let hook: HookPoint = hook.parse().expect("a hook name");
    config.hook = Some(hook);
    config.layer = hook.layer();
    config.source = Some("random test crosscoder".into());
    CrosscoderCheckpoint::new(config, weights, InputNormalizer::Identity)
        .expect("valid checkpoint")
        .build(BackendKind::NdArray)
        .expect("builds")
}

fn quiet(options: Day1Options) -> Day1Options {
    Day1Options {
        progress: false,
        ..options
    }
}

#[test]
fn day1_end_to_end_on_the_tiny_pair_with_a_random_crosscoder() {
    let hook = HookPoint::ResidPost(1);
    let runner = tiny_runner(hook);
    let cc = random_crosscoder(64, 128, "blocks.1.hook_resid_post");
    let dataset = PersonaDataset::shipped();
    let options = quiet(Day1Options {
        hunt: HuntOptions {
            top_k: 3,
            ..HuntOptions::default()
        },
        ..Day1Options::default()
    });
    let results = Day1::new(&runner, Some(cc.as_ref()), &dataset)
        .options(options)
        .dataset_label("shipped")
        .run()
        .expect("the pipeline runs");

    assert_eq!(results.kind, FeatureKind::CrosscoderLatent);
    assert_eq!(results.hunts.len(), 3);
    for (h, cp) in results.hunts.iter().zip(&results.plan.contrasts) {
        assert_eq!(h.item_ids, cp.discovery);
        assert_eq!(h.n_features, 128);
        assert!(h.n_tested() > 0 && h.n_tested() <= 128);
        assert!(h.candidates.len() <= 3);
        for s in h.candidate_stats() {
            assert!(s.significant && s.summary.mean > 0.0);
            assert!(s.decoder.is_some());
            let v = results
                .verification(&h.contrast.category, s.feature)
                .expect("every candidate is verified");
            let probe = cp.probe.as_deref().unwrap();
            assert_eq!(v.probe, probe);
            assert_eq!(
                v.prompts.len(),
                dataset.verification_for_probe(probe).count()
            );
            assert!(v.auroc.is_some());
        }
    }
    // Chat-only latents are classed as such.
    let d = results.decoder.as_ref().unwrap();
    assert_eq!(d.classes[0], crosscoder::LatentClass::ChatOnly);
    assert_eq!(d.classes[20], crosscoder::LatentClass::BaseOnly);
    // Token views cover every verified candidate on every prompt of its probe.
    for pt in &results.tokens {
        for p in &pt.prompts {
            assert_eq!(p.values.len(), pt.features.len());
            assert!(p.values.iter().all(|v| v.len() == p.tokens.len()));
            assert_eq!(p.roles[0], diff_analysis::TokenRole::Bos);
            assert!(!p.pooled[0], "BOS is never pooled by the default pooling");
        }
    }
    assert!(!results.conclusion.sentence.is_empty());
    let summary_text = results.terminal_summary();
    assert!(summary_text.contains("expertise_level"), "{summary_text}");

    let dir = tempfile::tempdir().unwrap();
    let files = results.write(dir.path()).expect("outputs are written");
    for name in [
        "day1_summary.json",
        "latent_stats.csv",
        "token_activations.json",
        "report.html",
        "top_candidates.png",
        "consistency.png",
        "relative_norm_histogram.png",
    ] {
        let path = dir.path().join(name);
        assert!(path.is_file(), "{name} missing");
        assert!(files.contains(&path));
    }
    for png in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
    {
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("day1_summary.json")).unwrap(),
    )
    .unwrap();
    // The notebook's keys, then ours.
    for key in [
        "base_model",
        "chat_model",
        "target_layer",
        "n_pairs_analyzed",
        "cross_coder_available",
        "top_candidates",
        "pooling",
        "statistics",
        "contrasts",
        "verification",
        "conclusion",
        "sentence",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}");
    }
    assert_eq!(summary["schema"], "stereo.day1_summary");
    assert_eq!(summary["target_layer"], 1);
    assert_eq!(summary["cross_coder_available"], true);
    assert_eq!(summary["pooling"]["name"], "mean");
    assert_eq!(summary["contrasts"].as_array().unwrap().len(), 3);
    for c in summary["top_candidates"].as_array().unwrap() {
        for key in [
            "feature_idx",
            "mean_score",
            "std_score",
            "n_pairs",
            "q_value",
            "decoder_class",
        ] {
            assert!(c.get(key).is_some(), "candidate lacks {key}");
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("latent_stats.csv")).unwrap();
    let rows = csv.lines().count() - 1;
    assert_eq!(
        rows,
        results.hunts.iter().map(|h| h.n_tested()).sum::<usize>()
    );

    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script")
    );
    assert!(html.contains("data:image/png;base64,"));
    assert!(html.contains(&diff_analysis::output::report::escape(
        &results.conclusion.sentence
    )));
    if !results.verifications.is_empty() {
        assert!(html.contains("class=\"prompt\""), "token views present");
    }
}

#[test]
fn chat_template_with_template_pooling_and_the_residual_fallback() {
    let hook = HookPoint::ResidPost(0);
    let runner = tiny_runner(hook);
    let dataset = PersonaDataset::shipped();
    let options = quiet(Day1Options {
        tokenization: TokenizationMode::ChatTemplate,
        pooling: Pooling::TemplateOnly,
        contrasts: vec!["child_vs_adult".into()],
        discovery_ratio: 1.0,
        hunt: HuntOptions {
            top_k: 2,
            ..HuntOptions::default()
        },
        ..Day1Options::default()
    });
    let results = Day1::new(&runner, None, &dataset)
        .options(options)
        .run()
        .expect("runs without a crosscoder");
    assert_eq!(results.kind, FeatureKind::ResidualDimension { model: 1 });
    assert_eq!(results.hunts.len(), 1);
    assert_eq!(results.hunts[0].n_features, 64);
    assert!(results.decoder.is_none());
    for pt in &results.tokens {
        for p in &pt.prompts {
            // Only template tokens are pooled.
            for (role, pooled) in p.roles.iter().zip(&p.pooled) {
                assert_eq!(*pooled, *role == diff_analysis::TokenRole::Template);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    results.write(dir.path()).unwrap();
    assert!(!dir.path().join("relative_norm_histogram.png").exists());
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("day1_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["cross_coder_available"], false);
    assert_eq!(summary["tokenization"], "chat_template");
    assert_eq!(summary["pooling"]["name"], "template");
    assert!(summary["feature_label"]
        .as_str()
        .unwrap()
        .contains("residual dimension"));
}

#[test]
fn a_crosscoder_of_another_hook_or_width_is_refused_before_any_run() {
    let runner = tiny_runner(HookPoint::ResidPost(1));
    let dataset = PersonaDataset::shipped();
    let other_layer = random_crosscoder(64, 32, "blocks.2.hook_resid_post");
    let e = Day1::new(&runner, Some(other_layer.as_ref()), &dataset)
        .check()
        .unwrap_err();
    assert!(
        matches!(e, AnalysisError::CrosscoderMismatch { field: "hook", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("blocks.2.hook_resid_post"), "{e}");
    let other_width = random_crosscoder(32, 32, "blocks.1.hook_resid_post");
    let e = Day1::new(&runner, Some(other_width.as_ref()), &dataset)
        .run()
        .unwrap_err();
    assert!(
        matches!(
            e,
            AnalysisError::CrosscoderMismatch {
                field: "d_model",
                ..
            }
        ),
        "{e}"
    );
    let raw_template = quiet(Day1Options {
        pooling: Pooling::TemplateOnly,
        ..Day1Options::default()
    });
    let e = Day1::new(&runner, None, &dataset)
        .options(raw_template)
        .run()
        .unwrap_err();
    assert!(matches!(e, AnalysisError::InvalidOption { .. }), "{e}");
}

/// The embedded demo pair of the demo issue (tiny base/chat Gemma-2 with planted user-model
/// mechanisms, plus its crosscoder). Skipped, with a message, until `fixtures/demo/` exists.
#[test]
fn demo_pair_end_to_end() {
    let demo = workspace().join("fixtures/demo");
    let parts = ["base", "chat", "crosscoder"].map(|p| demo.join(p));
    if let Some(missing) = parts.iter().find(|p| !p.exists()) {
        eprintln!(
            "skipped: the demo pair is not built ({} is missing)",
            missing.display()
        );
        return;
    }
    let checkpoint = CrosscoderLoader::new(parts[2].to_string_lossy())
        .load_checkpoint()
        .expect("the demo crosscoder loads");
    let hook = diff_analysis::crosscoder_hook(checkpoint.config())
        .expect("the demo crosscoder records its hook");
    let cc = checkpoint.build(BackendKind::NdArray).unwrap();
    // As `day1` loads them: to the hook, with the final norm and (tied) unembedding for the lens.
    let options = LoadOptions {
        unembedding: true,
        ..LoadOptions::for_hooks(&[hook])
    }
    .with_backend(BackendKind::NdArray);
    let runner = StereoRunner::from_loaded(
        load_dir(&parts[0], &options).unwrap(),
        load_dir(&parts[1], &options).unwrap(),
        hook,
    )
    .unwrap();
    let dataset = PersonaDataset::shipped();
    let results = Day1::new(&runner, Some(cc.as_ref()), &dataset)
        .options(quiet(Day1Options::default()))
        .run()
        .expect("the demo runs");
    println!("{}", results.terminal_summary());
    let child = results
        .conclusion
        .per_probe
        .iter()
        .find(|p| p.probe == persona_dataset::PROBE_CHILD_NOVICE)
        .expect("the child/novice probe is concluded");
    assert_eq!(child.status, ConclusionStatus::Found, "{}", child.sentence);

    // The planted latents, found independently of the pipeline: the latent whose chat decoder vector
    // points along each mechanism's measured direction (demo.json).
    let planted = |mechanism: &str| -> usize {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(demo.join("demo.json")).unwrap())
                .unwrap();
        let direction: Vec<f32> = manifest["mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mechanism"] == mechanism)
            .unwrap()["measured_direction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let (best, cos) = crosscoder::nearest_decoder_latent(cc.as_ref(), 1, &direction).unwrap();
        assert!(cos > 0.9, "{mechanism}: best chat decoder cosine {cos}");
        best
    };
    let (child_latent, belief_latent) = (planted("child_novice"), planted("belief"));
    let decoder = results.decoder.as_ref().expect("decoder analysis");
    for latent in [child_latent, belief_latent] {
        assert_eq!(decoder.classes[latent], crosscoder::LatentClass::ChatOnly);
    }
    assert_eq!(
        decoder.counts().base_only,
        0,
        "no base-only latent in the demo"
    );

    // Top user-model candidate = the child latent, verified on held-out prompts with AUROC >= 0.95.
    assert_eq!(child.feature, Some(child_latent), "{}", child.sentence);
    let top = |category: &str| -> usize {
        let hunt = results
            .hunts
            .iter()
            .find(|h| h.contrast.category == category)
            .unwrap_or_else(|| panic!("no {category} hunt"));
        hunt.candidate_stats().next().expect("a candidate").feature
    };
    assert_eq!(top("expertise_level"), child_latent);
    // The sycophancy analysis finds the belief latent.
    assert_eq!(top("sycophancy_triggers"), belief_latent);
    for (latent, probe) in [
        (child_latent, persona_dataset::PROBE_CHILD_NOVICE),
        (belief_latent, persona_dataset::PROBE_SYCOPHANCY),
    ] {
        let auroc = results
            .verifications
            .iter()
            .filter(|v| v.feature == latent && v.probe == probe)
            .filter_map(|v| v.auroc)
            .fold(f64::NAN, f64::max);
        // 0.9, not 1: the demo's child mechanism reads the user speaking about themselves in a few set
        // ways, and 6 of the 42 direct ACTIVATE prompts say it otherwise ("I'm a complete beginner",
        // "I'm just a kid", `I'm` three tokens back): the latent is silent there, as designed.
        assert!(auroc >= 0.9, "{probe}: latent {latent} AUROC {auroc}");
    }

    // The child latent's dashboard over its probe's verification prompts: its top contexts are all
    // prompts where it should fire; its base decoder vector is negligible, its chat one has a lens.
    let dashboard = results
        .dashboards
        .iter()
        .find(|d| d.latent == child_latent)
        .expect("a dashboard per candidate");
    let probe_tokens = results
        .tokens
        .iter()
        .find(|t| t.probe == persona_dataset::PROBE_CHILD_NOVICE)
        .unwrap();
    assert!(!dashboard.top_contexts.is_empty());
    for c in &dashboard.top_contexts {
        let prompt = &probe_tokens.prompts[c.document];
        assert_eq!(
            prompt.expected,
            persona_dataset::Expectation::Activate,
            "{}",
            prompt.prompt
        );
    }
    assert_eq!(dashboard.lens.len(), 2);
    assert!(dashboard.lens[0].promoted.is_empty());
    assert_eq!(dashboard.lens[1].promoted.len(), 10);
    let candidates: std::collections::BTreeSet<usize> =
        results.verifications.iter().map(|v| v.feature).collect();
    let shown: std::collections::BTreeSet<usize> =
        results.dashboards.iter().map(|d| d.latent).collect();
    assert_eq!(candidates, shown, "one dashboard per candidate latent");

    let dir = tempfile::tempdir().unwrap();
    let files = results.write(dir.path()).unwrap();
    assert!(files.contains(&dir.path().join("dashboards.json")));
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains(&format!("id=\"latent-{child_latent}\"")));
    assert!(!html.contains("<script"));
    if let Some(rendered) = browser::render_offline(&dir.path().join("report.html")) {
        println!("{rendered:?}");
        assert!(
            rendered.fetched.is_empty(),
            "fetched {:?}",
            rendered.fetched
        );
        assert!(rendered.images >= 5);
        assert_eq!(rendered.broken, 0);
        assert!(rendered.svgs >= results.dashboards.len());
    }
}

#[path = "../../../tests/common/browser.rs"]
mod browser;
