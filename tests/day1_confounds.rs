//! Confound probes on the embedded demo (`fixtures/persona/confound_probes.json`, given like
//! `day1 --verification FILE`): the sets are run with the direct verification prompts but kept out of the
//! verdict, reported per set, and summarised as a verdict. The demo's planted child mechanism reads the
//! user speaking about themselves ("I'm 7", "I'm a kid", "my teacher", a child's spelling), not the cue
//! words alone: so its latent stays silent when the child is someone else ("my son is 5") or the cue is
//! negated ("I'm not a kid"), fires on a child's writing and when the cue came in an earlier turn, and the
//! best single-token word detector fails exactly the sets the latent passes.

mod common;

use diff_analysis::confounds::ConfoundVerdict;
use diff_analysis::{Day1, Day1Options};
use persona_dataset::{Expectation, PersonaDataset};

#[test]
fn the_demo_child_latent_models_the_user_set_by_set_and_the_word_detector_does_not() {
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
    let set = |name: &str| child.confounds.iter().find(|c| c.set == name).unwrap();
    for (name, expected) in [
        ("third_person", Expectation::Silent),
        ("negated", Expectation::Silent),
        ("expert", Expectation::Silent),
    ] {
        assert_eq!(set(name).expected, expected);
        assert_eq!(set(name).passed, 8, "{name}: silent on all eight");
    }
    for name in ["implicit", "earlier_turn"] {
        assert!(set(name).ok && set(name).passed >= 7, "{name}");
    }
    // Quoted speech: one prompt, "My teacher once said 'I'm 5 ...'", opens with the user's own
    // teacher, a first-person cue the demo reads.
    assert!(set("quoted").passed >= 7);
    assert_eq!(child.confound_verdict, Some(ConfoundVerdict::UserModel));
    // The word detector it is compared with: chosen on the discovery items alone, scored like the
    // latent. It cannot tell "I'm 5" from "my son is 5": it fails the sets the latent passes.
    let lexical = child.lexical.as_ref().expect("a lexical baseline");
    println!(
        "best single token `{}` (discovery balanced accuracy {:.2}, direct AUROC {:?}): {} confound prompts on the expected side, the latent {}",
        lexical.token,
        lexical.discovery_balanced_accuracy,
        lexical.direct_auroc,
        lexical.confound_passed(),
        child.confounds.iter().map(|c| c.passed).sum::<usize>()
    );
    for s in &lexical.sets {
        println!("  word detector on {}: {}/{}", s.set, s.passed, s.n);
    }
    assert_eq!(lexical.sets.len(), 6);
    assert!(lexical.discovery_balanced_accuracy > 0.5);
    assert!(
        lexical.confound_passed() + 8 <= child.confounds.iter().map(|c| c.passed).sum::<usize>()
    );
    let sentence = &results.conclusion.sentence;
    assert!(sentence.contains("as a model of the user"), "{sentence}");
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
