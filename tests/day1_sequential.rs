//! `day1 --sequential` (one model in memory at a time, `model_pair::SequentialPair`) gives the same
//! results as the default mode (both models in memory, `model_pair::StereoRunner`) on the embedded demo:
//! the same `day1_summary.json` but for the timings, the same statistics table, the same sentence.

use std::path::{Path, PathBuf};

use crosscoder::{BackendKind, CrosscoderLoader};
use diff_analysis::output::summary::{stats_csv, summarize};
use diff_analysis::{Day1, Day1Options, Day1Results};
use gemma_model::{load_dir, HookPoint, LoadOptions, ModelSource};
use model_pair::{PairedSource, SequentialPair, StereoRunner};
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

#[test]
fn sequential_mode_gives_the_same_summary_as_both_models_in_memory() {
    let dir = demo();
    let hook: HookPoint = stereo::demo::HOOK.parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]).with_backend(BackendKind::Flex);
    let both = StereoRunner::from_loaded(
        load_dir(dir.join("base"), &options).unwrap(),
        load_dir(dir.join("chat"), &options).unwrap(),
        hook,
    )
    .unwrap();
    let one_at_a_time = SequentialPair::from_sources(
        [
            ModelSource::Local(dir.join("base")),
            ModelSource::Local(dir.join("chat")),
        ],
        options,
        hook,
    )
    .unwrap();
    let a = day1(&both, &dir);
    let b = day1(&one_at_a_time, &dir);
    assert_eq!(a.conclusion.sentence, b.conclusion.sentence);
    assert!(
        a.conclusion.sentence.contains("activates when I say"),
        "{}",
        a.conclusion.sentence
    );
    assert_eq!(stats_csv(&a), stats_csv(&b));
    assert_eq!(summary_without_timings(&a), summary_without_timings(&b));
}
