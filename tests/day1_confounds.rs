//! Confound probes on the embedded demo (`fixtures/persona/confound_probes.json`, given like
//! `day1 --verification FILE`): the sets are run with the direct verification prompts but kept out of the
//! verdict, reported per set, and summarised as a verdict. The demo's planted child mechanism reads cue
//! *words* (`school`, `kid`, `years old`, ...) wherever they are, so its latent is honestly reported as a
//! cue detector: it fires when the child is someone else. (A demo whose mechanism reads "I'm" + an age is
//! the next step of the issue; then the same test must find a user model.)

mod common;

use diff_analysis::confounds::ConfoundVerdict;
use diff_analysis::{Day1, Day1Options};
use persona_dataset::{Expectation, PersonaDataset};

#[test]
fn the_demo_child_latent_is_reported_as_a_cue_detector_set_by_set() {
    let (runner, crosscoder, _) = common::demo_runner(false);
    let confounds = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/persona/confound_probes.json");
    let dataset = PersonaDataset::shipped()
        .with_verification_from_path(&confounds)
        .unwrap();
    let results = Day1::new(&runner, Some(crosscoder.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            latent_scaling: false,
            ..Day1Options::default()
        })
        .run()
        .unwrap();
    let child = results
        .verifications
        .iter()
        .find(|v| v.probe == "child_novice" && v.passed)
        .expect("a verified child candidate");
    // The direct verdict is unchanged by the confound prompts: only direct prompts are in it.
    assert_eq!(child.prompts.len(), 126);
    let sets: Vec<&str> = child.confounds.iter().map(|c| c.set.as_str()).collect();
    assert_eq!(
        sets,
        [
            "third_person",
            "negated",
            "quoted",
            "expert",
            "implicit",
            "earlier_turn"
        ]
    );
    for c in &child.confounds {
        println!(
            "{}: {} {}/{} on the expected side, mean a {:.3}, AUROC vs direct {:?}",
            c.set,
            c.expected.label(),
            c.passed,
            c.n,
            c.mean_activation,
            c.auroc_vs_direct
        );
        assert_eq!(c.n, 8);
    }
    let third = child
        .confounds
        .iter()
        .find(|c| c.set == "third_person")
        .unwrap();
    assert_eq!(third.expected, Expectation::Silent);
    assert!(
        !third.ok,
        "the word-reading demo latent fires on third-person cues"
    );
    let expert = child.confounds.iter().find(|c| c.set == "expert").unwrap();
    assert!(expert.ok, "experts carry no cue word");
    assert_eq!(child.confound_verdict, Some(ConfoundVerdict::CueDetector));
    // The word detector it is compared with: chosen on the discovery items alone, scored like the latent.
    let lexical = child.lexical.as_ref().expect("a lexical baseline");
    println!(
        "best single token `{}` (discovery balanced accuracy {:.2}, direct AUROC {:?}): {} confound prompts on the expected side, the latent {}",
        lexical.token,
        lexical.discovery_balanced_accuracy,
        lexical.direct_auroc,
        lexical.confound_passed(),
        child.confounds.iter().map(|c| c.passed).sum::<usize>()
    );
    assert_eq!(lexical.sets.len(), 6);
    assert!(lexical.discovery_balanced_accuracy > 0.5);
    let sentence = &results.conclusion.sentence;
    assert!(sentence.contains("cue detector"), "{sentence}");
    let out = tempfile::tempdir().unwrap();
    results.write(out.path()).unwrap();
    let report = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(report.contains("Confound probes") && report.contains("third_person"));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("day1_summary.json")).unwrap(),
    )
    .unwrap();
    let first = summary["verification"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["confound_verdict"].is_string())
        .unwrap();
    assert_eq!(first["confounds"].as_array().unwrap().len(), 6);
}
