//! `day1 --causal` on the embedded demo: the hunt's child latent, clamped to 0 on the child prompts,
//! takes away the chat model's simple-register words (the demo's planted reader), and clamped on the
//! adult/expert prompts brings them; the evidence reaches the sentence and the summary.

mod common;

use diff_analysis::behaviour::test_sycophancy_behaviour;
use diff_analysis::causal::{run_causal_tests, CausalOptions};
use diff_analysis::output::summary::summarize;
use diff_analysis::{Day1, Day1Options};
use persona_dataset::PersonaDataset;
use steering::PreferenceSpec;

#[test]
fn the_child_latent_is_causal_for_the_simple_register() {
    let (runner, crosscoder, manifest) = common::demo_runner(false);
    let dataset = PersonaDataset::shipped();
    let mut results = Day1::new(&runner, Some(crosscoder.as_ref()), &dataset)
        .options(Day1Options {
            progress: false,
            ..Day1Options::default()
        })
        .run()
        .unwrap();
    let models = common::steering_models(&runner, &crosscoder);
    let options = CausalOptions {
        targets: manifest
            .reader
            .unwrap()
            .register_words
            .iter()
            .map(|w| format!(" {w}"))
            .collect(),
        max_new_tokens: 8,
        max_prompts: 8,
        ..CausalOptions::default()
    };
    let runs = run_causal_tests(&mut results, &models, &options, false).unwrap();
    assert_eq!(runs.len(), 2 * results.causal.len());

    let child = results
        .causal
        .iter()
        .find(|e| e.probe == "child_novice")
        .expect("the child probe is concluded and tested")
        .clone();
    let total = |shifts: &[diff_analysis::causal::TargetShift], after: bool| -> f64 {
        shifts
            .iter()
            .map(|t| if after { t.after } else { t.before })
            .sum()
    };
    let (before, after) = (
        total(&child.ablation.targets, false),
        total(&child.ablation.targets, true),
    );
    assert!(after < 0.5 * before, "ablation: {before} -> {after}");
    let (before, after) = (
        total(&child.activation.targets, false),
        total(&child.activation.targets, true),
    );
    assert!(after > 2.0 * before, "activation: {before} -> {after}");
    assert!(child.ablation.kl.mean > 0.0 && child.ablation.changed_answers > 0);

    assert!(results
        .conclusion
        .sentence
        .contains("causally, clamping latent #"));
    // The KL evaluation of the concluded latents on the child prompts' answers: the base->chat gap is
    // there, random latents close none of it, and the sentence says how much the latents close (the
    // demo's L1 crosscoder keeps about half of the child direction, below the planted reader's
    // threshold, so little: tests/demo_kl_evaluation.rs has a crosscoder that closes most).
    let kl = results.kl_evaluation.as_ref().expect("a KL evaluation");
    println!("{}", steering::kl_evaluation::kl_table(kl));
    assert!(kl.spec.latents.contains(&child.latent));
    assert!(kl.setup("base").unwrap().kl.low() > 0.01);
    assert!(kl.random.as_ref().unwrap().max_gap_closed < 0.05);
    assert!(kl.setup("chosen").unwrap().gap_closed.is_finite());
    assert!(results
        .conclusion
        .sentence
        .contains("of the base->chat KL gap on the assistant's answers (random latents: 0%)"));

    // Sycophancy as behaviour: the concluded belief latent ablated on the 30 false-belief items.
    let behaviour = test_sycophancy_behaviour(
        &mut results,
        &models,
        &dataset,
        |latent| PreferenceSpec {
            free_tokens: 4,
            ..PreferenceSpec::ablate(vec![latent])
        },
        false,
    )
    .unwrap()
    .expect("a concluded sycophancy latent and forced-choice items");
    assert_eq!(behaviour.items.len(), 30);
    let sycophancy = results
        .conclusion
        .per_probe
        .iter()
        .find(|pc| pc.probe == "sycophancy")
        .unwrap();
    assert_eq!(behaviour.spec.latents, vec![sycophancy.feature.unwrap()]);
    assert!(sycophancy
        .sentence
        .contains("; behaviourally, ablating latent #"));

    let summary = serde_json::to_value(summarize(&results, Vec::new())).unwrap();
    assert_eq!(summary["causal"][0]["probe"], child.probe.as_str());
    assert_eq!(summary["sentence"], results.conclusion.sentence.as_str());
    assert_eq!(summary["kl_evaluation"]["setups"][3]["name"], "chosen");
    let dir = tempfile::tempdir().unwrap();
    results.write(dir.path()).unwrap();
    let report = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(report.contains("<h3>KL evaluation</h3>"));
    assert!(report.contains("<h3>Sycophancy as behaviour</h3>"));
    assert_eq!(summary["behaviour"]["change"]["n"], 30);
    assert!(dir.path().join("kl_evaluation.png").exists());
    println!("{}", results.conclusion.sentence);
}
