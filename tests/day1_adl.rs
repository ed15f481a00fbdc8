//! `day1 --no-crosscoder` on the embedded demo runs the Activation Difference Lens beside the residual
//! fallback: the persona contrasts and the corpus difference at the hook's layer reach the summary, the
//! terminal summary and the report, and `adl/` holds the ADL's own JSON, figures and page.

mod common;

use activation_cache::Corpus;
use activation_diff_lens::AdlModels;
use diff_analysis::adl::{run_adl, AdlOptions};
use diff_analysis::{plan, Day1, Day1Options};
use gemma_model::{load_dir, LoadOptions};
use model_pair::{StereoRunner, TokenizationMode, BASE, CHAT};
use persona_dataset::{Contrast, PersonaDataset};
use stereo::demo::{fixture_dir, DemoManifest};

#[test]
fn no_crosscoder_day1_reports_the_activation_difference_lens() {
    let dir = fixture_dir();
    let manifest = DemoManifest::load(&dir).unwrap();
    let hook = manifest.hook.parse().unwrap();
    let base = load_dir(
        dir.join("base"),
        &LoadOptions {
            unembedding: true,
            ..LoadOptions::for_hooks(&[hook])
        },
    )
    .unwrap();
    let chat = load_dir(dir.join("chat"), &LoadOptions::default()).unwrap();
    let runner = StereoRunner::from_loaded(base, chat, hook).unwrap();
    let dataset = PersonaDataset::shipped();
    let options = Day1Options {
        progress: false,
        ..Day1Options::default()
    };
    let planned = plan(&dataset, &options).unwrap();
    let mut results = Day1::new(&runner, None, &dataset)
        .options(options)
        .run()
        .unwrap();
    let corpus = Corpus::from_path(dir.join("corpus.jsonl")).unwrap();
    let mut adl = AdlOptions {
        corpus: Some(("demo corpus".into(), corpus.documents().to_vec())),
        max_texts: Some(500),
        ..AdlOptions::default()
    };
    adl.steering.prompts = vec!["Why is the sky blue?".into(), "What makes thunder?".into()];
    adl.steering.max_new_tokens = 8;
    let contrasts: Vec<Contrast> = planned
        .contrasts
        .iter()
        .map(|c| Contrast {
            category: c.contrast.category.clone(),
            positive: c.contrast.positive.clone(),
            negative: c.contrast.negative.clone(),
        })
        .collect();
    results.adl = Some(
        run_adl(
            AdlModels {
                models: [runner.model(BASE), runner.model(CHAT)],
                tokenizer: runner.tokenizer(),
                crosscoder: None,
            },
            &dataset,
            &contrasts,
            &[manifest.hook_layer],
            TokenizationMode::Raw,
            &adl,
            false,
        )
        .unwrap(),
    );
    let summary = results.adl.as_ref().unwrap();
    assert!(summary.found);
    assert_eq!(summary.corpus.as_ref().unwrap().texts, 500);
    assert_eq!(summary.contrasts.len(), 3);
    assert!(summary
        .steering
        .as_ref()
        .is_some_and(|s| s.vector == "corpus"));
    // The child contrast's Patchscope says the planted reader's words at its most consistent scale.
    let register: Vec<String> = manifest.reader.unwrap().register_words;
    let child = summary
        .contrasts
        .iter()
        .find(|c| c.category == "child_vs_adult")
        .unwrap();
    let best = &child.reading.patchscope[0].readout;
    let words: Vec<String> = best.scales[best.best]
        .tokens
        .iter()
        .take(5)
        .map(|t| t.token.trim_start_matches('▁').to_string())
        .collect();
    assert!(words.iter().any(|w| register.contains(w)), "{words:?}");

    let terminal = results.terminal_summary();
    assert!(
        terminal.contains("ADL child minus adult, layer 1 mean"),
        "{terminal}"
    );
    let out = tempfile::tempdir().unwrap();
    let files = results.write(out.path()).unwrap();
    for name in [
        "adl/adl.json",
        "adl/adl.html",
        "adl/adl_norms.png",
        "adl/adl_patchscope.png",
    ] {
        assert!(files.contains(&out.path().join(name)), "{name}: {files:?}");
    }
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("day1_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["adl"]["found"], true);
    assert_eq!(json["adl"]["contrasts"].as_array().unwrap().len(), 3);
    assert!(json["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "adl/adl.json"));
    let report = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(report.contains("<h2>Activation Difference Lens</h2>"));
    if let Some(rendered) = common::browser::render_offline(&out.path().join("report.html")) {
        assert!(
            rendered.fetched.is_empty() && rendered.broken == 0,
            "{rendered:?}"
        );
        assert!(rendered.images >= 6, "{rendered:?}");
    }
}
