//! The main job in bf16 (`day1 --dtype bf16`: both models and the crosscoder with bf16 weights and
//! product inputs, f32 sums) reaches the same conclusion on the embedded demo as in f32: every probe
//! has the same status and names the same feature, and the headline still says the planted latent
//! "activates when I say ...". The numbers behind it move by bf16 rounding only.

use std::path::PathBuf;

use diff_analysis::setup::{CrosscoderSpec, Day1Setup, HookChoice};
use diff_analysis::{Day1, Day1Options, Day1Results};
use gemma_model::{BackendKind, ComputeDtype, HubOptions};
use persona_dataset::PersonaDataset;

fn day1_in(dtype: ComputeDtype) -> Day1Results {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let part = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let mut prepared = Day1Setup {
        base: part("base"),
        chat: part("chat"),
        crosscoder: Some(CrosscoderSpec::new(part("crosscoder"))),
        hook: HookChoice::default(),
        backend: BackendKind::Flex,
        dtype,
        hub: HubOptions::from_env(),
    }
    .prepare()
    .unwrap();
    assert_eq!(prepared.dtype(), dtype);
    let pair = prepared.load_pair(false, 8).unwrap();
    let crosscoder = prepared.build_crosscoder().unwrap().unwrap();
    Day1::new(
        pair.as_ref(),
        Some(crosscoder.as_ref()),
        &PersonaDataset::shipped(),
    )
    .options(Day1Options {
        progress: false,
        ..Day1Options::default()
    })
    .run()
    .unwrap()
}

#[test]
fn day1_in_bf16_names_the_same_latents_as_in_f32() {
    let (exact, bf16) = (day1_in(ComputeDtype::F32), day1_in(ComputeDtype::Bf16));
    assert!(
        bf16.conclusion.sentence.contains("activates when I say"),
        "{}",
        bf16.conclusion.sentence
    );
    assert_eq!(exact.conclusion.status, bf16.conclusion.status);
    assert_eq!(
        exact.conclusion.per_probe.len(),
        bf16.conclusion.per_probe.len()
    );
    for (a, b) in exact
        .conclusion
        .per_probe
        .iter()
        .zip(&bf16.conclusion.per_probe)
    {
        assert_eq!(a.probe, b.probe);
        assert_eq!(a.status, b.status, "probe {}", a.probe);
        assert_eq!(a.feature, b.feature, "probe {}", a.probe);
        assert_eq!(a.contrast, b.contrast, "probe {}", a.probe);
    }
    // And it did run in bf16: the activations behind the sentence moved.
    let example = |r: &Day1Results| r.conclusion.per_probe[0].activate_example.clone();
    let (a, b) = (example(&exact), example(&bf16));
    if let (Some((_, x)), Some((_, y))) = (a, b) {
        assert!(x != y, "bf16 gave the f32 activation {x} exactly");
        assert!((x - y).abs() <= 0.05 * x.abs().max(1e-3), "{x} vs {y}");
    }
}
