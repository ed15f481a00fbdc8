//! Parity with HF transformers (eager attention, f32): every hook of every layer and the logits of
//! the golden fixtures (`fixtures/gemma/generate_fixtures.py`), on both CPU backends.

mod common;

use common::*;
use gemma_model::{load_dir, BackendKind, HookPoint, LoadOptions, RunRequest, TokenBatch};

const TOLERANCE: f64 = 1e-4;

/// Runs every golden prompt on `backend`; `fused` picks flex's fused host kernels (`false`: burn ops).
fn check_model(model_name: &str, backend: BackendKind, fused: bool) {
    let dir = fixture(model_name);
    let golden = read_tensors(&dir.join("golden.safetensors"));
    let meta = golden_meta(model_name);
    let options = LoadOptions {
        fused_kernels: fused,
        ..LoadOptions::default().with_backend(backend)
    };
    let loaded = load_dir(&dir, &options).unwrap();
    let n_layers = loaded.model.config().num_hidden_layers;
    let hooks = HookPoint::all(n_layers);
    let mut worst = (0.0f64, String::new());
    for prompt in &meta.prompts {
        let i = prompt.index;
        let ids = golden_ids(&golden, i);
        assert_eq!(ids.len(), prompt.n_tokens);
        let out = loaded
            .model
            .run(
                &TokenBatch::single(ids).unwrap(),
                &RunRequest::capture(hooks.iter().copied()).with_logits(),
            )
            .unwrap();
        let mut compare = |name: String, actual: &[f32]| {
            let expected = &golden[&format!("prompt.{i}.{name}")];
            let err = relative_error(actual, expected.as_slice().unwrap());
            assert!(err <= TOLERANCE, "{model_name} on {backend} (fused {fused}): prompt {i} `{name}`: relative error {err:.2e} > {TOLERANCE:e}");
            if err > worst.0 {
                worst = (err, format!("prompt {i} {name}"));
            }
        };
        for hook in &hooks {
            compare(hook.to_string(), out.activations[hook].as_slice().unwrap());
        }
        compare(
            "logits".into(),
            out.logits.as_ref().unwrap().as_slice().unwrap(),
        );
    }
    eprintln!(
        "{model_name} on {backend} (fused {fused}): worst relative error {:.2e} at {}",
        worst.0, worst.1
    );
}

#[test]
fn tiny_window_matches_hf_on_ndarray() {
    check_model("tiny-window", BackendKind::NdArray, true);
}

#[test]
fn tiny_window_matches_hf_on_flex() {
    check_model("tiny-window", BackendKind::Flex, true);
}

#[test]
fn tiny_window_matches_hf_on_flex_with_burn_ops() {
    check_model("tiny-window", BackendKind::Flex, false);
}

#[test]
fn tiny_gqa_bf16_shards_match_hf_on_ndarray() {
    check_model("tiny-gqa-bf16", BackendKind::NdArray, true);
}

#[test]
fn tiny_gqa_bf16_shards_match_hf_on_flex() {
    check_model("tiny-gqa-bf16", BackendKind::Flex, true);
}

#[test]
fn tiny_gqa_bf16_shards_match_hf_on_flex_with_burn_ops() {
    check_model("tiny-gqa-bf16", BackendKind::Flex, false);
}

/// The fixtures must exercise both soft-caps; otherwise the parity above proves less than it says.
#[test]
fn golden_fixtures_exercise_both_softcaps() {
    for model in MODELS {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(model).join("golden.json")).unwrap(),
        )
        .unwrap();
        let attn = meta["max_abs_attn_score_precap"].as_f64().unwrap();
        let logits = meta["frac_positions_logit_precap_over_cap"]
            .as_f64()
            .unwrap();
        assert!(
            attn > 50.0,
            "{model}: attention soft-cap never bites (max {attn})"
        );
        assert!(
            logits > 0.1,
            "{model}: final soft-cap bites on only {logits} of positions"
        );
    }
}
