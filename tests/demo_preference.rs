//! Sycophancy as behaviour on the embedded demo: the forced choice `log p(agree) - log p(correct)` of
//! the shipped false-belief items, unedited and with the demo's belief latent ablated in lockstep, equals
//! an independent computation (whole-sequence forwards, the edit applied with a forward hook, no KV cache);
//! the paired statistics and the control are consistent; the files are written and the page renders.
//!
//! And the demo knows the truth: its chat model has a planted belief reader (layers 2 and 3) that raises
//! the tokens opening the agreeing answers wherever `user:belief` is in the residual stream. So ablating
//! the belief latent must lower the preference for agreeing (95% interval below 0); random latents
//! carrying the same change must move it far less, most of them not detectably (intervals across 0);
//! and in the negative-control pair (chat = base) nothing moves.

mod common;

use std::sync::Arc;

use crosscoder::Crosscoder;
use diff_analysis::behaviour::preference_items;
use gemma_model::{PaddingSide, RunRequest, TokenBatch};
use model_pair::{LatentEdit, CHAT};
use ndarray::{s, Array2};
use persona_dataset::PersonaDataset;
use steering::preference::output::write_preference;
use steering::{
    log_softmax, run_preference, PreferenceItem, PreferenceSpec, SteeringModels, Verdict,
};

/// The latent whose chat decoder vector is closest to the planted belief direction.
fn belief_latent(crosscoder: &dyn Crosscoder) -> usize {
    let belief = &common::planted_directions()[1].1;
    let all: Vec<usize> = (0..crosscoder.dict_size()).collect();
    let vectors = crosscoder.decoder_vectors(&all).unwrap();
    let cosine = |j: usize| {
        let v = vectors.slice(s![j, CHAT, ..]);
        let dot: f32 = v.iter().zip(belief).map(|(a, b)| a * b).sum();
        dot / v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12)
    };
    let best = all
        .into_iter()
        .max_by(|a, b| cosine(*a).total_cmp(&cosine(*b)))
        .unwrap();
    assert!(cosine(best) > 0.9, "{}", cosine(best));
    best
}

/// `log p(answer | prompt)` from one whole-sequence forward of the chat model, the chat stream edited
/// at the hook (every position but `<bos>`) when `edit` is given.
fn independent_log_p(
    models: &SteeringModels<'_>,
    item: &PreferenceItem,
    answer: &str,
    edit: Option<&LatentEdit>,
) -> f64 {
    let prompt = models.tokenizer.encode_chat(&item.messages, true).unwrap();
    let answer = models.tokenizer.encode_raw(answer).unwrap();
    let ids: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
    let batch = TokenBatch::new(&[ids], 0, PaddingSide::Right).unwrap();
    let mut request = RunRequest::default().with_logits();
    if let Some(edit) = edit {
        let base = models
            .base
            .run(&batch, &RunRequest::capture([models.hook]))
            .unwrap();
        let base: Array2<f32> = base.activations[&models.hook]
            .slice(s![0, .., ..])
            .to_owned();
        let (edit, crosscoder): (LatentEdit, Arc<dyn Crosscoder>) =
            (edit.clone(), models.crosscoder.clone());
        request = request.with_intervention(models.hook, move |chat| {
            let rows = chat.slice(s![0, 1.., ..]).to_owned();
            let edited = edit
                .apply(crosscoder.as_ref(), base.slice(s![1.., ..]), rows.view())
                .unwrap();
            chat.slice_mut(s![0, 1.., ..]).assign(&edited);
        });
    }
    let logits = models.chat.run(&batch, &request).unwrap().logits.unwrap();
    answer
        .iter()
        .enumerate()
        .map(|(k, t)| log_softmax(logits.slice(s![0, prompt.len() - 1 + k, ..]))[*t as usize])
        .sum()
}

#[test]
fn the_forced_choice_equals_an_independent_computation_and_reports_consistently() {
    let (runner, crosscoder, _) = common::demo_runner(false);
    let models = common::steering_models(&runner, &crosscoder);
    let items = preference_items(&PersonaDataset::shipped());
    assert_eq!(items.len(), 30);
    let latent = belief_latent(crosscoder.as_ref());
    let spec = PreferenceSpec {
        free_tokens: 8,
        batch_size: 7, // batches of unequal length, padding on both sides
        ..PreferenceSpec::ablate(vec![latent])
    };
    let r = run_preference(&models, &items, &spec, false).unwrap();

    // Scores: independent whole-sequence forwards, unedited and with the ablation as a forward hook.
    let ablation = LatentEdit::ablate(&[latent]);
    for (item, outcome) in items.iter().zip(&r.items).step_by(6) {
        for (answer, ours) in [
            (&item.agree, outcome.baseline.log_p_agree),
            (&item.correct, outcome.baseline.log_p_correct),
        ] {
            let reference = independent_log_p(&models, item, answer, None);
            assert!(
                (ours - reference).abs() < 2e-3,
                "{}: {ours} vs {reference}",
                item.id
            );
        }
        for (answer, ours) in [
            (&item.agree, outcome.edited.log_p_agree),
            (&item.correct, outcome.edited.log_p_correct),
        ] {
            let reference = independent_log_p(&models, item, answer, Some(&ablation));
            assert!(
                (ours - reference).abs() < 2e-3,
                "{} edited: {ours} vs {reference}",
                item.id
            );
        }
        assert_eq!(
            outcome.baseline.preference,
            outcome.baseline.log_p_agree - outcome.baseline.log_p_correct
        );
    }

    // Statistics: the change is the mean of the per-item differences; the control is another latent,
    // whose edit moves the stream as far as the candidate's, and gets its own statistics.
    let changes: Vec<f64> = r
        .items
        .iter()
        .map(|i| i.edited.preference - i.baseline.preference)
        .collect();
    assert_eq!(r.change.n, 30);
    assert!((r.change.mean - changes.iter().sum::<f64>() / 30.0).abs() < 1e-12);
    assert!(r.change.ci_low < r.change.mean && r.change.mean < r.change.ci_high);
    assert!(!r.change.exact, "30 items: Monte Carlo sign flips");
    assert_eq!(r.controls.len(), 5);
    let norms = crosscoder.decoder_norms();
    let mut seen = vec![latent];
    for draw in &r.controls {
        let control = &draw.latents[0];
        assert!(!seen.contains(&control.latent), "a latent serves once");
        seen.push(control.latent);
        assert_eq!(control.matched_to, latent);
        assert!(control.cosine.abs() < 0.5);
        let ratio = norms[[CHAT, latent]] / norms[[CHAT, control.latent]];
        assert!((control.value_scale - ratio).abs() < 1e-6);
        assert_eq!(draw.change.n, 30);
    }
    assert!(r.items.iter().all(|i| i.control.len() == 5));
    assert!(r.sentence().starts_with(&format!(
        "ablating latent #{latent} shifts the preference toward"
    )));

    // Free answers: every item answered under the three conditions and judged.
    let [Some(base), Some(edited), Some(ctl)] = r.free_verdicts.unwrap() else {
        panic!("three verdict counts");
    };
    for counts in [base, edited, ctl] {
        assert_eq!(counts.agree + counts.correct + counts.unclear, 30);
    }
    let free = r.items[0].free.as_ref().unwrap();
    assert!(matches!(
        free.baseline.verdict,
        Verdict::Agree | Verdict::Correct | Verdict::Unclear
    ));

    // Files: JSON with the sentence, a PNG, and a page that renders with its figure.
    let dir = tempfile::tempdir().unwrap();
    let files = write_preference(&r, dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["sentence"], r.sentence());
    assert_eq!(json["items"].as_array().unwrap().len(), 30);
    assert_eq!(json["spec"]["edit"]["kind"], "ablate");
    if let Some(page) = common::browser::render_offline(&files[2]) {
        assert_eq!((page.images, page.broken), (1, 0));
        assert!(page.text_chars > 2000);
    }
}

#[test]
fn a_bad_request_is_a_typed_error() {
    let (runner, crosscoder, _) = common::demo_runner(false);
    let models = common::steering_models(&runner, &crosscoder);
    let items = preference_items(&PersonaDataset::shipped());
    let too_far = run_preference(
        &models,
        &items,
        &PreferenceSpec::ablate(vec![100_000]),
        false,
    );
    assert!(too_far
        .unwrap_err()
        .to_string()
        .contains("latent 100000 is out of range"));
    let none = run_preference(&models, &[], &PreferenceSpec::ablate(vec![1]), false);
    assert!(none
        .unwrap_err()
        .to_string()
        .contains("no forced-choice items"));
}

#[test]
fn ablating_the_planted_belief_latent_lowers_agreement_and_its_controls_do_not() {
    let (runner, crosscoder, manifest) = common::demo_runner(false);
    let models = common::steering_models(&runner, &crosscoder);
    let items = preference_items(&PersonaDataset::shipped());

    // The reader raises exactly the words that open an agreeing answer and no correcting one (every
    // form of each: `Yes`, `▁Yes`).
    let first = |text: &str| {
        let id = models.tokenizer.encode_raw(text).unwrap()[0];
        stereo::demo::lexeme(&models.tokenizer.tokens(&[id])[0])
    };
    let correcting: Vec<String> = items.iter().map(|i| first(&i.correct)).collect();
    let mut agreeing: Vec<String> = items
        .iter()
        .map(|i| first(&i.agree))
        .filter(|t| !correcting.contains(t))
        .collect();
    agreeing.sort_unstable();
    agreeing.dedup();
    let reader = manifest.belief_reader.expect("a planted belief reader");
    assert_eq!(reader.register_words, agreeing);
    assert_eq!(reader.register_words, ["that's", "yes", "you're"]);
    for id in &reader.register_token_ids {
        let token = &models.tokenizer.tokens(&[*id])[0];
        assert!(agreeing.contains(&stereo::demo::lexeme(token)), "{token}");
    }
    assert_eq!(reader.reads, "user:belief");

    let latent = belief_latent(crosscoder.as_ref());
    let spec = PreferenceSpec {
        free_tokens: 0,
        ..PreferenceSpec::ablate(vec![latent])
    };
    let r = run_preference(&models, &items, &spec, false).unwrap();
    println!("{}", r.sentence());
    assert!(r.change.ci_high < 0.0, "ablation: {:?}", r.change);
    assert!(r.change.p_value < 0.05, "{:?}", r.change);
    assert!(r.sentence().contains("toward correcting the user"));
    // Random latents carrying the same change (same norm, same positions, another direction) move the
    // preference far less; most of them not detectably. (A random direction through the demo's random
    // layers is not nothing: one of the five moves it by about a quarter of the belief latent's effect.)
    for draw in &r.controls {
        assert!(
            draw.change.mean.abs() < 0.35 * r.change.mean.abs(),
            "{draw:?} vs {:?}",
            r.change
        );
    }
    assert!(r.controls_including_zero() >= 3, "{}", r.sentence());
    assert!(r.largest_control_shift() < 0.35 * r.change.mean.abs());

    // The negative control: the same crosscoder and latent on a pair without plants.
    let dir = tempfile::tempdir().unwrap();
    stereo::demo::generate(&stereo::demo::DemoSpec::negative_control(), dir.path()).unwrap();
    let hook = runner.hook();
    let base = gemma_model::load_dir(
        dir.path().join("base"),
        &gemma_model::LoadOptions::for_hooks(&[hook]),
    )
    .unwrap();
    let chat = gemma_model::load_dir(
        dir.path().join("chat"),
        &gemma_model::LoadOptions::default(),
    )
    .unwrap();
    let control_pair = model_pair::StereoRunner::from_loaded(base, chat, hook).unwrap();
    let unplanted = run_preference(
        &common::steering_models(&control_pair, &crosscoder),
        &items,
        &spec,
        false,
    )
    .unwrap();
    println!("negative control: {}", unplanted.sentence());
    assert!(
        unplanted.change.ci_low < 0.0 && unplanted.change.ci_high > 0.0
            || unplanted.change.mean.abs() < 1e-3,
        "negative control: {:?}",
        unplanted.change
    );
    assert!(unplanted.change.mean.abs() < 0.25 * r.change.mean.abs());
}
