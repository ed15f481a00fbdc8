//! `day1 --sequential` (one model in memory at a time, `model_pair::SequentialPair`) gives the same
//! results as the default mode (both models in memory, `model_pair::StereoRunner`) on the embedded demo:
//! the same `day1_summary.json` but for the timings, the same statistics table, the same sentence. Both
//! pairs come from the library setup the `day1` example uses (`diff_analysis::setup`).

use std::path::{Path, PathBuf};

use crosscoder::{BackendKind, CrosscoderLoader};
use diff_analysis::output::summary::{stats_csv, summarize};
use diff_analysis::setup::{CrosscoderSpec, Day1Setup, HookChoice, Prepared};
use diff_analysis::{Day1, Day1Options, Day1Results};
use gemma_model::HubOptions;
use model_pair::PairedSource;
use persona_dataset::PersonaDataset;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

fn day1(pair: &dyn PairedSource, dir: &Path) -> Day1Results {
    let cc = CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .unwrap();
    let dataset = PersonaDataset::shipped();
    Day1::new(pair, Some(cc.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            ..Day1Options::default()
        })
        .run()
        .unwrap()
}

/// The summary as JSON without its timings (the only part that may differ).
fn summary_without_timings(r: &Day1Results) -> serde_json::Value {
    let mut v = serde_json::to_value(summarize(r, Vec::new())).unwrap();
    v.as_object_mut().unwrap().remove("timings");
    v
}

/// The main job's setup on the embedded demo (what `day1` does without flags).
fn prepared() -> Prepared {
    let dir = demo();
    let part = |p: &str| dir.join(p).to_string_lossy().into_owned();
    Day1Setup {
        base: part("base"),
        chat: part("chat"),
        crosscoder: Some(CrosscoderSpec::new(part("crosscoder"))),
        hook: HookChoice::default(),
        backend: BackendKind::Flex,
        dtype: Default::default(),
        hub: HubOptions::from_env(),
    }
    .prepare()
    .unwrap()
}

#[test]
fn the_setup_takes_the_hook_from_the_demo_crosscoder() {
    let prepared = prepared();
    assert_eq!(prepared.hook.to_string(), stereo::demo::HOOK);
    assert_eq!(
        prepared.base_config.hidden_size,
        prepared.chat_config.hidden_size
    );
    assert!(prepared.checkpoint.is_some());
}

#[test]
fn sequential_mode_gives_the_same_summary_as_both_models_in_memory() {
    let dir = demo();
    let prepared = prepared();
    let both = prepared.load_pair(false, 8).unwrap();
    let one_at_a_time = prepared.load_pair(true, 8).unwrap();
    let a = day1(both.as_ref(), &dir);
    let b = day1(one_at_a_time.as_ref(), &dir);
    assert_eq!(a.conclusion.sentence, b.conclusion.sentence);
    assert!(
        a.conclusion.sentence.contains("activates when I say"),
        "{}",
        a.conclusion.sentence
    );
    assert_eq!(stats_csv(&a), stats_csv(&b));
    assert_eq!(summary_without_timings(&a), summary_without_timings(&b));
}
