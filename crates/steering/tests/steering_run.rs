//! A causal test end to end on the tiny fixtures: base = the random tiny Gemma-2 (to the hook), chat = the
//! trained one of the same shape, a deterministic crosscoder. A zero steer changes nothing (KL 0, the same
//! answers, no target change); a strong steer moves the distribution; strengths are measured against the
//! latent's maximum activation; the three output files are written and the JSON has the documented keys.

use std::path::PathBuf;
use std::sync::Arc;

use crosscoder::throughput::uniform;
use crosscoder::{
    BackendKind, Crosscoder, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights,
    InputNormalizer,
};
use gemma_model::{load_dir, GemmaTokenizer, HookPoint, LoadOptions, LoadedModel};
use ndarray::{Array1, Array2, Array3};
use steering::{run_steering, EditKind, SteeringModels, SteeringSpec, StrengthUnit};

const HOOK: HookPoint = HookPoint::ResidPost(1);
const D: usize = 64;
const F: usize = 16;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn crosscoder() -> Arc<dyn Crosscoder> {
    let scale = 0.4 / (2.0 * D as f32).sqrt();
    let weights = CrosscoderWeights {
        w_enc: Array3::from_shape_vec((2, D, F), uniform(2 * D * F, 21, scale)).unwrap(),
        b_enc: Array1::from_vec(uniform(F, 22, 0.05)),
        w_dec: Array3::from_shape_vec((2, F, D), uniform(2 * D * F, 23, 1.0)).unwrap(),
        b_dec: Array2::zeros((2, D)),
    };
    let checkpoint = CrosscoderCheckpoint::new(
        CrosscoderConfig::relu(2, D, F),
        weights,
        InputNormalizer::Identity,
    )
    .unwrap();
    Arc::from(checkpoint.build(BackendKind::Flex).unwrap())
}

/// Base to the hook, chat whole, their tokenizer.
struct Fixture {
    base: LoadedModel,
    chat: LoadedModel,
    tokenizer: GemmaTokenizer,
}

impl Fixture {
    fn load() -> Self {
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
        let tokenizer = chat.tokenizer.clone().unwrap();
        Fixture {
            base,
            chat,
            tokenizer,
        }
    }

    fn models(&self) -> SteeringModels<'_> {
        SteeringModels {
            base: self.base.model.as_ref(),
            chat: self.chat.model.as_ref(),
            tokenizer: &self.tokenizer,
            crosscoder: crosscoder(),
            hook: HOOK,
        }
    }
}

#[test]
fn a_zero_steer_changes_nothing_and_a_strong_one_moves_the_answers() {
    let fixture = Fixture::load();
    let models = fixture.models();
    let prompts: Vec<String> = [
        "the licence",
        "you may convey a work",
        "permission is <hereby>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spec = SteeringSpec::clamp(3);
    spec.kind = EditKind::Steer;
    spec.strengths = vec![0.0, 2.0, 40.0];
    spec.chat_template = false;
    spec.max_new_tokens = 6;
    spec.batch_size = 2; // two batches: 2 + 1 prompts
    spec.targets = vec![" the".into(), " program".into()];
    let results = run_steering(&models, &spec, &prompts, false).unwrap();

    assert_eq!(results.prompts.len(), 3);
    assert!(results.max_activation[0] > 0.0);
    let zero = &results.strengths[0];
    // The same tokens scored in one teacher-forced chunk and step by step: equal to rounding.
    assert!(zero.kl.mean.abs() < 1e-9, "{}", zero.kl.mean);
    assert_eq!(zero.changed_answers, 0);
    assert!(zero
        .target_logprob_change
        .iter()
        .all(|t| t.mean.abs() < 1e-6));
    for p in &results.prompts {
        assert_eq!(p.intervened[0].answer.token_ids, p.baseline.token_ids);
        assert!((p.intervened[0].answer.nll - p.baseline.nll).abs() < 1e-5);
        assert_eq!(p.baseline_target_logprob.len(), 2);
        assert!(p.baseline_target_logprob.iter().all(|lp| *lp < 0.0));
    }
    // Larger steers move the distribution more.
    let strong = &results.strengths[2];
    assert!(strong.kl.mean > results.strengths[1].kl.mean && results.strengths[1].kl.mean > 0.0);
    assert!(strong.values.as_ref().unwrap()[0] == 40.0 * results.max_activation[0]);

    let dir = tempfile::tempdir().unwrap();
    let files = steering::output::write_all(&results, dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    for key in [
        "spec",
        "hook",
        "models",
        "max_activation",
        "strengths",
        "prompts",
        "auto_strength",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let html = std::fs::read_to_string(&files[2]).unwrap();
    assert!(html.contains("&lt;hereby&gt;") && !html.contains("<hereby>"));
    assert!(html.contains("data:image/png;base64,"));
}

#[test]
fn bad_specs_are_errors_that_say_why() {
    let fixture = Fixture::load();
    let models = fixture.models();
    let prompts = vec!["x".to_string()];
    let mut spec = SteeringSpec::clamp(F);
    let err = run_steering(&models, &spec, &prompts, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("latent {F}")), "{err}");
    spec.latents = vec![0];
    spec.strengths = vec![f32::NAN];
    spec.unit = StrengthUnit::Absolute;
    assert!(run_steering(&models, &spec, &prompts, false).is_err());
    spec.strengths = vec![1.0];
    assert!(run_steering(&models, &spec, &[], false).is_err());
}
