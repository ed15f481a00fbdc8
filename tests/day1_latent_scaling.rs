//! Latent Scaling inside day1 on the demo pair: it runs over every token of the discovery prompts,
//! tags each latent, reaches the hunt tables, the summary and the sentence, and the planted child latent
//! is confirmed robust chat-only. Off (`latent_scaling: false`), nothing is tagged.

use std::path::PathBuf;

use crosscoder::{BackendKind, CrosscoderLoader};
use diff_analysis::output::summary::summarize;
use diff_analysis::{ConclusionStatus, Day1, Day1Options, Day1Results};
use gemma_model::{load_dir, LoadOptions};
use model_pair::StereoRunner;
use persona_dataset::PersonaDataset;

fn demo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

fn day1(latent_scaling: bool) -> Day1Results {
    let dir = demo_dir();
    let hook = "blocks.1.hook_resid_post".parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]);
    let base = load_dir(dir.join("base"), &options).unwrap();
    let chat = load_dir(dir.join("chat"), &options).unwrap();
    let runner = StereoRunner::from_loaded(base, chat, hook).unwrap();
    let crosscoder = CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .unwrap();
    let dataset = PersonaDataset::shipped();
    Day1::new(&runner, Some(crosscoder.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            latent_scaling,
            ..Day1Options::default()
        })
        .run()
        .unwrap()
}

#[test]
fn the_planted_child_latent_is_confirmed_robust_chat_only_in_the_tables_summary_and_sentence() {
    let results = day1(true);
    let child = results
        .conclusion
        .per_probe
        .iter()
        .find(|p| p.probe == "child_novice")
        .unwrap();
    assert_eq!(child.status, ConclusionStatus::Found);
    let feature = child.feature.unwrap();
    let stats = results
        .hunts
        .iter()
        .find_map(|h| h.stats_of(feature))
        .unwrap();
    let scaling = stats.decoder.unwrap().latent_scaling.unwrap();
    println!("latent #{feature}: {scaling:?}");
    assert!(scaling.robust_chat_only, "{scaling:?}");
    assert!(scaling.nu_error < 0.2 && scaling.nu_reconstruction < 0.5);
    assert!(
        child.sentence.contains(&format!(
            "Latent Scaling confirms it is chat-only (nu_error {:.2}",
            scaling.nu_error
        )),
        "{}",
        child.sentence
    );
    // Every tested latent that fired carries a verdict.
    let tagged = results.hunts[0]
        .stats
        .iter()
        .filter(|s| s.decoder.is_some_and(|d| d.latent_scaling.is_some()))
        .count();
    assert_eq!(tagged, results.hunts[0].stats.len());
    let summary = serde_json::to_value(summarize(&results, Vec::new())).unwrap();
    let text = summary.to_string();
    assert!(
        text.contains("\"robust_chat_only\":true"),
        "the summary carries the tag"
    );
}

#[test]
fn without_latent_scaling_nothing_is_tagged_and_the_sentence_says_nothing_of_it() {
    let results = day1(false);
    assert!(results
        .hunts
        .iter()
        .flat_map(|h| &h.stats)
        .all(|s| s.decoder.is_some_and(|d| d.latent_scaling.is_none())));
    assert!(!results.conclusion.sentence.contains("Latent Scaling"));
}
