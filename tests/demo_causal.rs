//! The embedded demo is causally checkable: the chat model has a planted downstream reader (layer 3) that
//! raises the logits of the simple-register words (`simple`, `story`, `play`) when the child direction is
//! in the residual stream. So the truth is known, and the causal machinery must find it:
//!
//! - on child prompts the chat model favours the register words over the base model, on expert prompts not;
//! - ablating the crosscoder's child latent (in lockstep) removes the boost, and the distribution moves
//!   back towards the unplanted (base) model;
//! - clamping the child latent on expert prompts creates the boost;
//! - steering a random latent of matched decoder norm does not;
//! - in the negative-control pair (chat = base) the same clamp does nothing;
//! - the dose-response of the clamp is monotone in the strength.
//!
//! The measure is `log sum_{t in register} p(t)` at the prompt's last position (the first answer token).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crosscoder::{BackendKind, Crosscoder, CrosscoderLoader};
use gemma_model::generation::{StepPhase, TokenStepper};
use gemma_model::{
    load_dir, GemmaTokenizer, HookPoint, LoadOptions, LoadedModel, LogitPositions, PaddingSide,
    RunRequest, TokenBatch,
};
use model_pair::{EditPlan, LatentEdit, LockstepStepper, CHAT};
use persona_dataset::PersonaDataset;
use steering::{log_softmax, run_steering, EditKind, SteeringModels, SteeringSpec, StrengthUnit};
use stereo::demo::{fixture_dir, DemoManifest, DemoSpec};

struct Demo {
    base: LoadedModel,
    chat: LoadedModel,
    tokenizer: GemmaTokenizer,
    crosscoder: Arc<dyn Crosscoder>,
    hook: HookPoint,
    register: Vec<u32>,
    child_latent: usize,
}

fn load_pair(dir: &Path) -> (LoadedModel, LoadedModel) {
    let options = LoadOptions::default().with_backend(BackendKind::Flex);
    (
        load_dir(dir.join("base"), &options).unwrap(),
        load_dir(dir.join("chat"), &options).unwrap(),
    )
}

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = fixture_dir();
        let manifest = DemoManifest::load(&dir).unwrap();
        let (base, chat) = load_pair(&dir);
        let tokenizer = chat.tokenizer.clone().unwrap();
        let crosscoder: Arc<dyn Crosscoder> = Arc::from(
            CrosscoderLoader::new(dir.join("crosscoder").to_string_lossy())
                .backend(BackendKind::Flex)
                .load()
                .unwrap(),
        );
        // The child latent: the one whose chat decoder vector is closest to the planted direction.
        let child = &manifest.mechanisms[0].measured_direction;
        let all: Vec<usize> = (0..crosscoder.dict_size()).collect();
        let vectors = crosscoder.decoder_vectors(&all).unwrap();
        let cosine = |j: usize| {
            let v = vectors.slice(ndarray::s![j, CHAT, ..]);
            let dot: f32 = v.iter().zip(child).map(|(a, b)| a * b).sum();
            dot / v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12)
        };
        let child_latent = all
            .iter()
            .copied()
            .max_by(|a, b| cosine(*a).total_cmp(&cosine(*b)))
            .unwrap();
        assert!(cosine(child_latent) > 0.9, "{}", cosine(child_latent));
        Demo {
            base,
            chat,
            tokenizer,
            crosscoder,
            hook: manifest.hook.parse().unwrap(),
            register: manifest.reader.unwrap().register_token_ids,
            child_latent,
        }
    })
}

/// Child and expert prompts of the shipped persona dataset (`child_vs_adult`, `expertise_level`).
fn prompts(side: &str) -> Vec<Vec<u32>> {
    let dataset = PersonaDataset::shipped();
    let mut out = Vec::new();
    for contrast in dataset.contrasts() {
        for pair in contrast.pairs(&dataset).unwrap() {
            let variant = match side {
                "child" if contrast.positive == "child" => pair.positive,
                "expert" if contrast.negative == "expert" => pair.negative,
                _ => continue,
            };
            let text = variant.to_plain_text();
            out.push(demo().tokenizer.encode(&text).unwrap());
        }
    }
    assert!(out.len() >= 8, "{side}: {}", out.len());
    out.truncate(12);
    out
}

/// `log p(register)` and the log-softmax at each prompt's last position.
fn last_position(logits: &ndarray::Array3<f32>, register: &[u32]) -> Vec<(f64, Vec<f64>)> {
    (0..logits.dim().0)
        .map(|row| {
            let lp = log_softmax(logits.slice(ndarray::s![row, 0, ..]));
            let mass: f64 = register.iter().map(|t| lp[*t as usize].exp()).sum();
            (mass.ln(), lp)
        })
        .collect()
}

fn unedited(model: &LoadedModel, prompts: &[Vec<u32>]) -> Vec<(f64, Vec<f64>)> {
    let batch = TokenBatch::new(prompts, 0, PaddingSide::Left).unwrap();
    let out = model
        .model
        .run(&batch, &RunRequest::default().with_last_logits())
        .unwrap();
    last_position(&out.logits.unwrap(), &demo().register)
}

fn edited(
    base: &LoadedModel,
    chat: &LoadedModel,
    prompts: &[Vec<u32>],
    edit: LatentEdit,
) -> Vec<(f64, Vec<f64>)> {
    let d = demo();
    let mut stepper = LockstepStepper::new(
        base.model.as_ref(),
        chat.model.as_ref(),
        d.crosscoder.clone(),
        d.hook,
        prompts.len(),
        64,
    )
    .unwrap()
    .with_plan(EditPlan::everywhere(edit))
    .unwrap();
    let batch = TokenBatch::new(prompts, 0, PaddingSide::Left).unwrap();
    let out = stepper
        .step(&batch, StepPhase::Prompt, LogitPositions::Last)
        .unwrap();
    last_position(&out.logits, &d.register)
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(lp, lq)| lp.exp() * (lp - lq)).sum()
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

/// Mean `log p(register)` of `a` minus that of `b`.
fn boost(a: &[(f64, Vec<f64>)], b: &[(f64, Vec<f64>)]) -> f64 {
    mean(a.iter().zip(b).map(|(x, y)| x.0 - y.0))
}

/// The child latent's largest activation on child prompts.
fn child_max_activation() -> f32 {
    let d = demo();
    let models = SteeringModels {
        base: d.base.model.as_ref(),
        chat: d.chat.model.as_ref(),
        tokenizer: &d.tokenizer,
        crosscoder: d.crosscoder.clone(),
        hook: d.hook,
    };
    steering::max_activations(&models, &[d.child_latent], &prompts("child")).unwrap()[0]
}

#[test]
fn the_reader_raises_the_register_words_only_on_child_prompts() {
    let d = demo();
    let child = prompts("child");
    let expert = prompts("expert");
    let on_child = boost(&unedited(&d.chat, &child), &unedited(&d.base, &child));
    let on_expert = boost(&unedited(&d.chat, &expert), &unedited(&d.base, &expert));
    assert!(on_child > 1.0, "child prompts: {on_child}");
    assert!(on_expert.abs() < 0.05, "expert prompts: {on_expert}");
}

#[test]
fn ablating_the_child_latent_removes_the_boost_and_moves_towards_the_base_model() {
    let d = demo();
    let child = prompts("child");
    let base = unedited(&d.base, &child);
    let chat = unedited(&d.chat, &child);
    let ablated = edited(
        &d.base,
        &d.chat,
        &child,
        LatentEdit::ablate(&[d.child_latent]),
    );
    let (before, after) = (boost(&chat, &base), boost(&ablated, &base));
    assert!(after < 0.3 * before, "boost {before} -> {after}");
    let kl_chat = mean(base.iter().zip(&chat).map(|(b, c)| kl(&b.1, &c.1)));
    let kl_ablated = mean(base.iter().zip(&ablated).map(|(b, a)| kl(&b.1, &a.1)));
    assert!(
        kl_ablated < 0.5 * kl_chat,
        "KL to base {kl_chat} -> {kl_ablated}"
    );
}

#[test]
fn clamping_the_child_latent_on_expert_prompts_creates_the_boost_and_a_random_latent_does_not() {
    let d = demo();
    let expert = prompts("expert");
    let base = unedited(&d.base, &expert);
    let value = 2.0 * child_max_activation();
    let clamped = edited(
        &d.base,
        &d.chat,
        &expert,
        LatentEdit::Clamp(vec![(d.child_latent, value)]),
    );
    let created = boost(&clamped, &base);
    assert!(created > 1.0, "clamped on expert prompts: {created}");

    // Latents whose chat decoder norm is within 20% of the child latent's, steered by the same amount
    // of decoder norm: no register boost (a large random push can lower the register words a little: it
    // dims everything the final norm reads, the reader's input with it).
    let norms = d.crosscoder.decoder_norms();
    let target = norms[[CHAT, d.child_latent]];
    let others: Vec<usize> = (0..d.crosscoder.dict_size())
        .filter(|j| *j != d.child_latent && (norms[[CHAT, *j]] / target - 1.0).abs() < 0.2)
        .step_by(7)
        .take(4)
        .collect();
    assert!(!others.is_empty());
    for j in others {
        let alpha = value * target / norms[[CHAT, j]];
        let steered = edited(
            &d.base,
            &d.chat,
            &expert,
            LatentEdit::Steer(vec![(j, alpha)]),
        );
        let random = boost(&steered, &base);
        assert!(random < 0.2 * created, "latent {j}: {random} vs {created}");
    }
}

#[test]
fn the_negative_control_pair_shows_no_effect() {
    let d = demo();
    let dir = tempfile::tempdir().unwrap();
    stereo::demo::generate(&DemoSpec::negative_control(), dir.path()).unwrap();
    let (base, chat) = load_pair(dir.path());
    let expert = prompts("expert");
    let value = 2.0 * child_max_activation();
    let clamped = edited(
        &base,
        &chat,
        &expert,
        LatentEdit::Clamp(vec![(d.child_latent, value)]),
    );
    let effect = boost(&clamped, &unedited(&base, &expert));
    assert!(effect.abs() < 0.05, "negative control: {effect}");
}

#[test]
fn the_clamp_dose_response_is_monotone_and_auto_strength_is_coherent() {
    let d = demo();
    let models = SteeringModels {
        base: d.base.model.as_ref(),
        chat: d.chat.model.as_ref(),
        tokenizer: &d.tokenizer,
        crosscoder: d.crosscoder.clone(),
        hook: d.hook,
    };
    // On expert prompts the child latent is silent: strengths are multiples of its largest
    // activation on child prompts, given as absolute values.
    let max = child_max_activation();
    let mut spec = SteeringSpec::clamp(d.child_latent);
    spec.kind = EditKind::Clamp;
    spec.unit = StrengthUnit::Absolute;
    spec.strengths = [0.0, 0.5, 1.0, 1.5, 2.0, 8.0]
        .iter()
        .map(|s| s * max)
        .collect();
    spec.chat_template = false;
    spec.max_new_tokens = 8;
    spec.targets = vec![" simple".into(), " story".into(), " play".into()];
    let expert: Vec<String> = prompts("expert")
        .iter()
        .take(6)
        .map(|ids| d.tokenizer.decode_text(ids).unwrap())
        .collect();
    let results = run_steering(&models, &spec, &expert, false).unwrap();
    // Monotone over the first five strengths (up to 2x); 8x is the degenerate end.
    for t in 0..spec.targets.len() {
        let by_strength: Vec<f64> = results.strengths[..5]
            .iter()
            .map(|s| s.target_logprob_change[t].mean)
            .collect();
        assert!(
            // Monotone up to 0.15 nats: a clamp below the reader's threshold moves the stream a
            // little through the latent's off-direction part, and past it the boost saturates and
            // sags as the clamped direction crowds the rest of the residual out of the final norm
            // (`story`: 1.73, 1.67, 1.57 nats at 1x, 1.5x, 2x on the demo of 2026-12-07).
            by_strength.windows(2).all(|w| w[1] >= w[0] - 0.15),
            "{}: {by_strength:?}",
            spec.targets[t]
        );
        assert!(
            by_strength.last().unwrap() - by_strength[0] > 1.0,
            "{by_strength:?}"
        );
    }
    // The automatic strength is a coherent one below the degenerate end, and every weaker positive
    // strength is coherent too.
    let last = results.strengths.last().unwrap();
    assert!(!last.coherent, "8x should degenerate: NLL {:?}", last.nll);
    let auto = results.auto_strength.expect("a coherent positive strength");
    assert!(auto < last.strength);
    for s in results
        .strengths
        .iter()
        .filter(|s| s.strength > 0.0 && s.strength <= auto)
    {
        assert!(s.coherent, "{}", s.strength);
    }
}
