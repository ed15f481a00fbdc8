use super::*;

fn prompts() -> Vec<(Expectation, String)> {
    vec![
        (Expectation::Activate, "I'm 5 years old.".into()),
        (Expectation::Activate, "I'm a kid.".into()),
        (Expectation::Silent, "As a PhD researcher.".into()),
        (Expectation::Silent, "I'm a professor.".into()),
        (Expectation::Neutral, "What is a computer?".into()),
    ]
}

#[test]
fn a_separating_candidate_passes_and_gets_its_sentence() {
    let threshold = fit_threshold(&[2.0, 4.0], &[0.0, 0.0]);
    assert_eq!(threshold, 1.5);
    let v = verify_candidate(
        "expertise_level",
        "child_novice",
        42,
        threshold,
        &prompts(),
        &[3.0, 2.0, 0.0, 0.5, 0.2],
        &VerificationCriteria::default(),
    );
    assert_eq!(v.auroc, Some(1.0));
    assert_eq!(v.balanced_accuracy, Some(1.0));
    assert!(v.passed);
    assert_eq!(v.prompts[4].passed, None);
    let probes = vec![(
        "child_novice".to_string(),
        vec!["expertise_level".to_string()],
    )];
    let c = conclude(
        &[v],
        &[],
        FeatureKind::CrosscoderLatent,
        &probes,
        &VerificationCriteria::default(),
        0.05,
    );
    assert_eq!(c.status, ConclusionStatus::Found);
    assert_eq!(
        c.sentence,
        "Latent #42 activates when I say 'I'm 5 years old.' (a = 3.000) but not when I say \
         'As a PhD researcher.' (a = 0.000)."
    );
}

#[test]
fn failing_and_missing_candidates_are_said_plainly() {
    let v = verify_candidate(
        "expertise_level",
        "child_novice",
        7,
        1.0,
        &prompts(),
        &[0.0, 2.0, 3.0, 0.5, 0.2],
        &VerificationCriteria::default(),
    );
    assert!(!v.passed);
    assert_eq!(
        v.auroc,
        Some(0.25),
        "one of four ACTIVATE-SILENT pairs is ordered right"
    );
    let probes = vec![
        (
            "child_novice".to_string(),
            vec!["expertise_level".to_string()],
        ),
        (
            "sycophancy".to_string(),
            vec!["sycophancy_triggers".to_string()],
        ),
    ];
    let c = conclude(
        &[v],
        &[],
        FeatureKind::CrosscoderLatent,
        &probes,
        &VerificationCriteria::default(),
        0.05,
    );
    assert_eq!(c.status, ConclusionStatus::NonePassed);
    assert!(
        c.sentence.starts_with("No candidate passed verification"),
        "{}",
        c.sentence
    );
    assert!(c.sentence.contains("Latent #7"));
    assert_eq!(c.per_probe[1].status, ConclusionStatus::NoCandidates);
    assert!(c.per_probe[1].sentence.contains("no candidate to verify"));
}

#[test]
fn a_passing_chat_only_latent_is_preferred_over_a_better_shared_one() {
    use crate::hunt::{hunt, ContrastName, HuntOptions, PairedFeatures};
    use crosscoder::{
        BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights, DecoderAnalysis,
        InputNormalizer, RelativeNormThresholds,
    };
    use ndarray::{Array1, Array2, Array3};

    // Latent 0 decodes into both models (shared), latent 1 only into the chat model.
    let weights = CrosscoderWeights {
        w_enc: Array3::from_elem((2, 2, 2), 0.5),
        b_enc: Array1::zeros(2),
        w_dec: Array3::from_shape_fn(
            (2, 2, 2),
            |(m, j, _)| {
                if m == 0 && j == 1 {
                    0.0
                } else {
                    1.0
                }
            },
        ),
        b_dec: Array2::zeros((2, 2)),
    };
    let checkpoint = CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(2, 2, 2),
        weights,
        InputNormalizer::Identity,
    )
    .unwrap();
    let cc = checkpoint.build(BackendKind::NdArray).unwrap();
    let analysis =
        DecoderAnalysis::new(cc.as_ref(), 0, 1, RelativeNormThresholds::default()).unwrap();
    // Both latents fire more on the positive variant of every item: both are significant.
    let n = 12;
    let features = PairedFeatures::new(
        (0..n).map(|i| format!("item{i}")).collect(),
        Array2::from_shape_fn((n, 2), |(i, j)| 2.0 + (i + j) as f32 * 0.1),
        Array2::from_elem((n, 2), 0.1),
    )
    .unwrap();
    let contrast = ContrastName {
        category: "expertise_level".into(),
        positive: "novice".into(),
        negative: "expert".into(),
    };
    let run = |options: HuntOptions| {
        hunt(
            &contrast,
            &features,
            FeatureKind::CrosscoderLatent,
            Some(&analysis),
            &options,
        )
        .unwrap()
    };
    // By default only the chat-only latent is a candidate ...
    let default = run(HuntOptions::default());
    let features_of = |h: &crate::hunt::ContrastHunt| -> Vec<usize> {
        h.candidate_stats().map(|s| s.feature).collect()
    };
    assert_eq!(default.ranked.len(), 2, "both are significant");
    assert_eq!(features_of(&default), vec![1]);
    // ... and with every class kept, the sentence still names the chat-only one.
    let h = run(HuntOptions {
        chat_only_candidates: false,
        ..HuntOptions::default()
    });
    assert_eq!(features_of(&h).len(), 2);

    let prompts: Vec<(Expectation, String)> = [
        (Expectation::Activate, "I'm 5."),
        (Expectation::Activate, "I'm a kid."),
        (Expectation::Activate, "I'm in kindergarten."),
        (Expectation::Silent, "As a PhD researcher."),
        (Expectation::Silent, "I'm a professor."),
        (Expectation::Silent, "I review papers."),
    ]
    .into_iter()
    .map(|(e, p)| (e, p.to_string()))
    .collect();
    let criteria = VerificationCriteria::default();
    // The shared latent separates perfectly; the chat-only one passes with AUROC 8/9.
    let shared = verify_candidate(
        "expertise_level",
        "child_novice",
        0,
        1.0,
        &prompts,
        &[3.0, 2.0, 2.0, 0.0, 0.0, 0.0],
        &criteria,
    );
    let chat_only = verify_candidate(
        "expertise_level",
        "child_novice",
        1,
        1.0,
        &prompts,
        &[3.0, 2.0, 0.4, 0.5, 0.0, 0.0],
        &criteria,
    );
    assert!(shared.passed && chat_only.passed);
    assert!(shared.auroc > chat_only.auroc);
    let probes = vec![(
        "child_novice".to_string(),
        vec!["expertise_level".to_string()],
    )];
    let c = conclude(
        &[shared, chat_only],
        &[h],
        FeatureKind::CrosscoderLatent,
        &probes,
        &criteria,
        0.05,
    );
    assert_eq!(c.per_probe[0].feature, Some(1), "{}", c.sentence);
    assert!(
        c.sentence.starts_with("Latent #1 activates"),
        "{}",
        c.sentence
    );
}
