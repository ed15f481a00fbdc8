//! Lockstep generation with crosscoder edits: the identities of REFERENCE.md section 5, raw units under an
//! input-scaling crosscoder, and incremental lockstep decoding equal to a full re-forward with the same edit.
//!
//! Base: the random tiny fixture (`fixtures/gemma/tiny-window`), loaded only to the hook. Chat: the trained
//! tiny fixture of the same shape (`fixtures/generation/tiny-window`). Crosscoder: deterministic uniform
//! weights with a non-zero decoder bias and per-model scaling factors 2.0 and 0.5, so that an edit made in the
//! crosscoder's normalised units instead of the model's would be off by 2x or 4x.

use std::path::PathBuf;
use std::sync::Arc;

use crosscoder::throughput::uniform;
use crosscoder::{
    BackendKind, Crosscoder, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights,
    InputNormalizer,
};
use gemma_model::generation::{
    generate, GenerationConfig, InterventionScope, ModelStepper, Sampling, SamplingParams,
};
use gemma_model::{load_dir, HookPoint, LoadOptions, LoadedModel, RunRequest, TokenBatch};
use model_pair::{EditPlan, LatentEdit, LockstepStepper, BASE, CHAT};
use ndarray::{s, Array1, Array2, Array3, Axis};

const HOOK: HookPoint = HookPoint::ResidPost(1);
const D: usize = 64;
const F: usize = 24;
const FACTORS: [f32; 2] = [2.0, 0.5];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn models() -> (LoadedModel, LoadedModel) {
    let base = load_dir(
        fixtures().join("gemma/tiny-window"),
        &LoadOptions::for_hooks(&[HOOK]),
    )
    .unwrap();
    let chat = load_dir(
        fixtures().join("generation/tiny-window"),
        &LoadOptions::default(),
    )
    .unwrap();
    (base, chat)
}

fn weights() -> CrosscoderWeights {
    let scale = 0.4 / (2.0 * D as f32).sqrt();
    CrosscoderWeights {
        w_enc: Array3::from_shape_vec((2, D, F), uniform(2 * D * F, 1, scale)).unwrap(),
        b_enc: Array1::from_vec(uniform(F, 2, 0.05)),
        w_dec: Array3::from_shape_vec((2, F, D), uniform(2 * D * F, 3, 1.0)).unwrap(),
        b_dec: Array2::from_shape_vec((2, D), uniform(2 * D, 4, 0.5)).unwrap(),
    }
}

fn crosscoder() -> Arc<dyn Crosscoder> {
    let checkpoint = CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(2, D, F),
        weights(),
        InputNormalizer::ScalingFactors(FACTORS.to_vec()),
    )
    .unwrap();
    Arc::from(checkpoint.build(BackendKind::Flex).unwrap())
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![2, 404, 415, 470],
        vec![2, 530, 412, 409, 444, 471, 403, 480],
    ]
}

/// Paired activations at the hook of one prompt, `[T, D]` each (base, chat).
fn at_hook(base: &LoadedModel, chat: &LoadedModel, ids: &[u32]) -> (Array2<f32>, Array2<f32>) {
    let batch = TokenBatch::single(ids.to_vec()).unwrap();
    let run = |m: &LoadedModel| {
        m.model
            .run(&batch, &RunRequest::capture([HOOK]))
            .unwrap()
            .activations[&HOOK]
            .slice(s![0, .., ..])
            .to_owned()
    };
    (run(base), run(chat))
}

/// `[T, 2, D]`: base at index 0, chat at 1.
fn stacked(hb: &Array2<f32>, hc: &Array2<f32>) -> Array3<f32> {
    let mut x = Array3::zeros((hb.nrows(), 2, D));
    x.index_axis_mut(Axis(1), BASE).assign(hb);
    x.index_axis_mut(Axis(1), CHAT).assign(hc);
    x
}

fn max_abs(a: &Array2<f32>) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn clamping_a_latent_to_its_own_value_changes_nothing() {
    let (base, chat) = models();
    let cc = crosscoder();
    let (hb, hc) = at_hook(&base, &chat, &prompts()[1]);
    let x = stacked(&hb, &hc);
    let f = cc.encode(x.view()).unwrap();
    assert!(
        f.iter().filter(|v| **v > 0.0).count() > f.len() / 10,
        "latents fire"
    );
    for row in 1..hb.nrows() {
        let own: Vec<(usize, f32)> = (0..F).map(|j| (j, f[[row, j]])).collect();
        let edited = LatentEdit::Clamp(own)
            .apply(
                cc.as_ref(),
                hb.slice(s![row..=row, ..]),
                hc.slice(s![row..=row, ..]),
            )
            .unwrap();
        let diff = &edited - &hc.slice(s![row..=row, ..]);
        assert!(max_abs(&diff) < 1e-5 * max_abs(&hc), "{}", max_abs(&diff));
    }
}

#[test]
fn ablating_every_latent_leaves_the_error_plus_the_decoder_bias_in_raw_units() {
    let (base, chat) = models();
    let cc = crosscoder();
    let (hb, hc) = at_hook(&base, &chat, &prompts()[1]);
    let x = stacked(&hb, &hc);
    let reconstruction = cc.forward(x.view()).unwrap().reconstruction;
    let all: Vec<usize> = (0..F).collect();
    let edited = LatentEdit::ablate(&all)
        .apply(cc.as_ref(), hb.view(), hc.view())
        .unwrap();
    // eps^c + b^c, with b^c in raw chat units: b_dec[chat] / factor[chat].
    let bias = weights().b_dec.row(CHAT).mapv(|b| b / FACTORS[CHAT]);
    let expected = &hc - &reconstruction.index_axis(Axis(1), CHAT) + &bias;
    let diff = &edited - &expected;
    assert!(max_abs(&diff) < 1e-4 * max_abs(&hc), "{}", max_abs(&diff));
}

#[test]
fn patching_every_latent_into_base_equals_the_direct_sum() {
    let (base, chat) = models();
    let cc = crosscoder();
    let (hb, hc) = at_hook(&base, &chat, &prompts()[1]);
    let x = stacked(&hb, &hc);
    let f = cc.encode(x.view()).unwrap();
    let w = weights();
    // h^b + sum_j f_j (d_j^c - d_j^b), each decoder row in its model's raw units.
    let raw = |m: usize| w.w_dec.index_axis(Axis(0), m).mapv(|v| v / FACTORS[m]);
    let expected = &hb + &f.dot(&(raw(CHAT) - raw(BASE)));
    let edited = LatentEdit::PatchIntoBase { latents: None }
        .apply(cc.as_ref(), hb.view(), hc.view())
        .unwrap();
    let diff = &edited - &expected;
    assert!(
        max_abs(&diff) < 1e-4 * max_abs(&expected),
        "{}",
        max_abs(&diff)
    );
    // A subset adds only its latents' difference.
    let subset = LatentEdit::PatchIntoBase {
        latents: Some(vec![3, 7]),
    }
    .apply(cc.as_ref(), hb.view(), hc.view())
    .unwrap();
    let mut only = Array2::zeros(f.dim());
    for j in [3, 7] {
        only.column_mut(j).assign(&f.column(j));
    }
    let expected = &hb + &only.dot(&(raw(CHAT) - raw(BASE)));
    assert!(max_abs(&(&subset - &expected)) < 1e-4 * max_abs(&expected));
}

#[test]
fn steering_adds_alpha_times_the_raw_chat_decoder_vector() {
    let (base, chat) = models();
    let cc = crosscoder();
    let (hb, hc) = at_hook(&base, &chat, &prompts()[0]);
    let edited = LatentEdit::Steer(vec![(5, 3.0)])
        .apply(cc.as_ref(), hb.view(), hc.view())
        .unwrap();
    let direction = weights()
        .w_dec
        .slice(s![CHAT, 5, ..])
        .mapv(|v| 3.0 * v / FACTORS[CHAT]);
    let expected = &hc + &direction;
    assert!(max_abs(&(&edited - &expected)) < 1e-5 * max_abs(&expected));
}

fn sampled(new_tokens: usize, chat: &LoadedModel) -> GenerationConfig {
    GenerationConfig {
        stop_token_ids: Vec::new(),
        keep_logits: true,
        sampling: Sampling::Sample(SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 9,
        }),
        ..GenerationConfig::greedy(new_tokens, chat.model.config())
    }
}

#[test]
fn lockstep_without_an_edit_or_with_a_zero_steer_is_the_chat_model() {
    let (base, chat) = models();
    let config = sampled(6, &chat);
    let prompts = prompts();
    let mut plain = ModelStepper::new(chat.model.as_ref(), 2, 16).unwrap();
    let alone = generate(&mut plain, &prompts, &config, None, &mut |_, _| {}).unwrap();
    for plan in [
        None,
        Some(EditPlan::everywhere(LatentEdit::Steer(vec![(2, 0.0)]))),
    ] {
        let mut lockstep = LockstepStepper::new(
            base.model.as_ref(),
            chat.model.as_ref(),
            crosscoder(),
            HOOK,
            2,
            16,
        )
        .unwrap();
        if let Some(plan) = plan {
            lockstep = lockstep.with_plan(plan).unwrap();
        }
        let paired = generate(&mut lockstep, &prompts, &config, None, &mut |_, _| {}).unwrap();
        for (a, b) in alone.iter().zip(&paired) {
            assert_eq!(a.token_ids, b.token_ids);
            assert_eq!(a.logits, b.logits);
        }
    }
}

#[test]
fn lockstep_decoding_equals_a_full_forward_with_the_same_edit() {
    let (base, chat) = models();
    let cc = crosscoder();
    let edit = LatentEdit::Clamp(vec![(4, 6.0), (11, 0.0)]);
    for scope in [InterventionScope::All, InterventionScope::GeneratedOnly] {
        let plan = EditPlan {
            edit: edit.clone(),
            scope,
            edit_bos: false,
        };
        let mut lockstep = LockstepStepper::new(
            base.model.as_ref(),
            chat.model.as_ref(),
            cc.clone(),
            HOOK,
            2,
            16,
        )
        .unwrap()
        .with_plan(plan)
        .unwrap();
        let new_tokens = 6;
        let out = generate(
            &mut lockstep,
            &prompts(),
            &sampled(new_tokens, &chat),
            None,
            &mut |_, _| {},
        )
        .unwrap();
        for g in &out {
            let prompt_len = g.prompt_ids.len();
            let mut ids = g.prompt_ids.clone();
            ids.extend(&g.token_ids[..new_tokens - 1]);
            let (hb, _) = at_hook(&base, &chat, &ids);
            let first_edited = match scope {
                InterventionScope::GeneratedOnly => prompt_len,
                _ => 1, // <bos> is not edited
            };
            let (edit, cc) = (edit.clone(), cc.clone());
            let request = RunRequest::default()
                .with_logits()
                .with_intervention(HOOK, move |x| {
                    let rows = first_edited..x.dim().1;
                    let chat_rows = x.slice(s![0, rows.clone(), ..]).to_owned();
                    let edited = edit
                        .apply(
                            cc.as_ref(),
                            hb.slice(s![rows.clone(), ..]),
                            chat_rows.view(),
                        )
                        .unwrap();
                    x.slice_mut(s![0, rows, ..]).assign(&edited);
                });
            let full = chat
                .model
                .run(&TokenBatch::single(ids.clone()).unwrap(), &request)
                .unwrap()
                .logits
                .unwrap();
            let stepped = g.logits.as_ref().unwrap();
            for k in 0..new_tokens {
                let expected = full.slice(s![0, prompt_len - 1 + k, ..]);
                let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = stepped
                    .row(k)
                    .iter()
                    .zip(expected.iter())
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs() / scale));
                assert!(err < 1e-4, "{scope:?} step {k}: {err:e}");
            }
        }
    }
}

#[test]
fn mismatched_crosscoders_and_latents_are_errors() {
    let (base, chat) = models();
    let narrow = CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(2, 32, 8),
        CrosscoderWeights {
            w_enc: Array3::zeros((2, 32, 8)),
            b_enc: Array1::zeros(8),
            w_dec: Array3::zeros((2, 8, 32)),
            b_dec: Array2::zeros((2, 32)),
        },
        InputNormalizer::Identity,
    )
    .unwrap();
    let narrow: Arc<dyn Crosscoder> = Arc::from(narrow.build(BackendKind::Flex).unwrap());
    let err = LockstepStepper::new(base.model.as_ref(), chat.model.as_ref(), narrow, HOOK, 1, 8)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("width 32") && err.contains("64"), "{err}");
    let stepper = LockstepStepper::new(
        base.model.as_ref(),
        chat.model.as_ref(),
        crosscoder(),
        HOOK,
        1,
        8,
    )
    .unwrap();
    let err = stepper
        .with_plan(EditPlan::everywhere(LatentEdit::ablate(&[F])))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("latent {F}")), "{err}");
    // The base model loaded to the hook cannot be the generating one.
    let err = LockstepStepper::new(
        chat.model.as_ref(),
        base.model.as_ref(),
        crosscoder(),
        HOOK,
        1,
        8,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("loaded whole"), "{err}");
}

#[test]
fn edits_are_in_raw_units_under_a_dictionary_learning_normaliser() {
    let (base, chat) = models();
    let global_scale = Array1::from_vec(vec![0.25f32, 3.0]);
    let normalizer = InputNormalizer::MeanStd {
        mean: Array2::from_shape_vec((2, D), uniform(2 * D, 8, 0.3)).unwrap(),
        std: Array2::ones((2, D)),
        target_rms: 1.0,
        global_scale: global_scale.clone(),
    };
    let checkpoint =
        CrosscoderCheckpoint::new(CrosscoderConfig::relu(2, D, F), weights(), normalizer).unwrap();
    let cc: Arc<dyn Crosscoder> = Arc::from(checkpoint.build(BackendKind::Flex).unwrap());
    let (hb, hc) = at_hook(&base, &chat, &prompts()[0]);
    let edited = LatentEdit::Steer(vec![(9, -2.0)])
        .apply(cc.as_ref(), hb.view(), hc.view())
        .unwrap();
    // decode divides by (global_scale + 1e-8) and adds the mean: a direction is only divided.
    let direction = weights()
        .w_dec
        .slice(s![CHAT, 9, ..])
        .mapv(|v| -2.0 * v / (global_scale[CHAT] + 1e-8));
    let expected = &hc + &direction;
    assert!(max_abs(&(&edited - &expected)) < 1e-5 * max_abs(&expected));
}
