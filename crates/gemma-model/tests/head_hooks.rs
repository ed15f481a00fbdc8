//! Per-head hooks against HF transformers (eager, f32; `fixtures/gemma/generate_head_fixtures.py`):
//! queries, keys and values before and after rotary, patterns from `output_attentions`, `z` (the input of
//! `o_proj`) and each head's share of `o_proj`, on both CPU backends and both kernel paths, in a padded
//! batch; zeroing one head's `z` equals HF with that head's slice of `o_proj` zeroed; the run with head
//! hooks changes nothing else; bad requests are typed errors.

mod common;

use common::*;
use gemma_model::{
    load_dir, BackendKind, HeadHook, HookPoint, LoadOptions, LoadedModel, PaddingSide, RunRequest,
    TokenBatch,
};
use ndarray::{s, Array4, ArrayD};

const TOLERANCE: f64 = 1e-4;

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("heads/manifest.json")).unwrap()).unwrap()
}

fn sequences() -> Vec<Vec<u32>> {
    serde_json::from_value(manifest()["sequences"].clone()).unwrap()
}

fn load(backend: BackendKind, fused: bool) -> LoadedModel {
    let options = LoadOptions {
        fused_kernels: fused,
        ..LoadOptions::default().with_backend(backend)
    };
    load_dir(fixture("tiny-window"), &options).unwrap()
}

/// Row `row`'s real part of a captured tensor, in HF's single-sequence layout.
fn real_part(hook: HeadHook, x: &Array4<f32>, row: usize, len: usize) -> ArrayD<f32> {
    match hook {
        HeadHook::Pattern(_) | HeadHook::AttnScores(_) => {
            x.slice(s![row, .., ..len, ..len]).to_owned().into_dyn()
        }
        _ => x.slice(s![row, ..len, .., ..]).to_owned().into_dyn(),
    }
}

fn check(backend: BackendKind, fused: bool) {
    let expected = read_tensors(&fixture("heads/expected.safetensors"));
    let layers: Vec<usize> = serde_json::from_value(manifest()["layers"].clone()).unwrap();
    let loaded = load(backend, fused);
    let seqs = sequences();
    let batch = TokenBatch::new(&seqs, 0, PaddingSide::Right).unwrap();
    let mut request = RunRequest::default().with_logits();
    for &l in &layers {
        for hook in HeadHook::all(l) {
            request = request.capture_head(hook);
        }
    }
    let out = loaded.model.run(&batch, &request).unwrap();
    let plain = loaded
        .model
        .run(&batch, &RunRequest::default().with_logits())
        .unwrap();
    let mut worst = 0.0f64;
    for (row, seq) in seqs.iter().enumerate() {
        let len = seq.len();
        for &l in &layers {
            for (name, hook) in [
                ("q", HeadHook::Q(l)),
                ("k", HeadHook::K(l)),
                ("v", HeadHook::V(l)),
                ("rot_q", HeadHook::RotQ(l)),
                ("rot_k", HeadHook::RotK(l)),
                ("pattern", HeadHook::Pattern(l)),
                ("z", HeadHook::Z(l)),
                ("result", HeadHook::Result(l)),
            ] {
                let got = real_part(hook, &out.heads[&hook], row, len);
                let want = &expected[&format!("{row}.{name}.{l}")];
                assert_eq!(got.shape(), want.shape(), "{hook}");
                let err = relative_error(got.as_slice().unwrap(), want.as_slice().unwrap());
                worst = worst.max(err);
                assert!(
                    err <= TOLERANCE,
                    "{backend} fused {fused}: row {row} {hook}: {err:.2e}"
                );
            }
            // The pattern is the softmax of the scores; padding query rows are zeroed in captures.
            let scores = &out.heads[&HeadHook::AttnScores(l)];
            let pattern = &out.heads[&HeadHook::Pattern(l)];
            for h in 0..scores.dim().1 {
                for i in 0..len {
                    let row_scores = scores.slice(s![row, h, i, ..]);
                    let max = row_scores.fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                    let total: f32 = row_scores.iter().map(|v| (v - max).exp()).sum();
                    for j in 0..scores.dim().3 {
                        let p = (scores[[row, h, i, j]] - max).exp() / total;
                        assert!((p - pattern[[row, h, i, j]]).abs() < 1e-6);
                    }
                }
                for i in len..scores.dim().2 {
                    assert!(pattern.slice(s![row, h, i, ..]).iter().all(|v| *v == 0.0));
                }
            }
        }
        // Reading per-head tensors changes nothing downstream.
        let logits = out
            .logits
            .as_ref()
            .unwrap()
            .slice(s![row, ..len, ..])
            .to_owned();
        let plain_logits = plain
            .logits
            .as_ref()
            .unwrap()
            .slice(s![row, ..len, ..])
            .to_owned();
        let err = logits
            .iter()
            .zip(plain_logits.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-4, "row {row}: logits moved by {err}");
        let want = &expected[&format!("{row}.logits")];
        let err = relative_error(logits.as_slice().unwrap(), want.as_slice().unwrap());
        assert!(err <= TOLERANCE, "row {row} logits {err:.2e}");
    }
    eprintln!("{backend} fused {fused}: worst per-head relative error {worst:.2e}");
}

#[test]
fn per_head_hooks_match_hf_on_flex_fused() {
    check(BackendKind::Flex, true);
}

#[test]
fn per_head_hooks_match_hf_on_flex_burn_ops() {
    check(BackendKind::Flex, false);
}

#[test]
fn per_head_hooks_match_hf_on_ndarray() {
    check(BackendKind::NdArray, true);
}

#[test]
fn zeroing_a_heads_z_equals_hf_with_its_o_proj_slice_zeroed() {
    let expected = read_tensors(&fixture("heads/expected.safetensors"));
    let m = manifest();
    let (layer, head) = (
        m["ablated"]["layer"].as_u64().unwrap() as usize,
        m["ablated"]["head"].as_u64().unwrap() as usize,
    );
    for (backend, fused) in [(BackendKind::Flex, true), (BackendKind::NdArray, true)] {
        let loaded = load(backend, fused);
        let seqs = sequences();
        let batch = TokenBatch::new(&seqs, 0, PaddingSide::Right).unwrap();
        let request = RunRequest::default()
            .with_logits()
            .with_head_intervention(HeadHook::Z(layer), move |z| {
                z.slice_mut(s![.., .., head, ..]).fill(0.0)
            });
        let out = loaded.model.run(&batch, &request).unwrap();
        for (row, seq) in seqs.iter().enumerate() {
            let got = out
                .logits
                .as_ref()
                .unwrap()
                .slice(s![row, ..seq.len(), ..])
                .to_owned();
            let want = &expected[&format!("{row}.ablated_logits")];
            let err = relative_error(got.as_slice().unwrap(), want.as_slice().unwrap());
            assert!(err <= TOLERANCE, "{backend}: row {row}: {err:.2e}");
            // And it is a real change.
            let unablated = &expected[&format!("{row}.logits")];
            assert!(relative_error(got.as_slice().unwrap(), unablated.as_slice().unwrap()) > 1e-3);
        }
    }
}

#[test]
fn head_results_sum_to_the_attention_output_and_bad_requests_are_errors() {
    let loaded = load(BackendKind::Flex, true);
    let seqs = sequences();
    let batch = TokenBatch::new(&seqs, 0, PaddingSide::Right).unwrap();
    let out = loaded
        .model
        .run(
            &batch,
            &RunRequest::capture([HookPoint::ResidPost(3)])
                .capture_head(HeadHook::Result(1))
                .capture_head(HeadHook::Z(1)),
        )
        .unwrap();
    let plain = loaded
        .model
        .run(&batch, &RunRequest::capture([HookPoint::ResidPost(3)]))
        .unwrap();
    let (a, b) = (
        &out.activations[&HookPoint::ResidPost(3)],
        &plain.activations[&HookPoint::ResidPost(3)],
    );
    assert!(a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-4));
    assert_eq!(out.heads[&HeadHook::Result(1)].dim(), (2, 9, 4, 64));
    assert_eq!(out.heads[&HeadHook::Z(1)].dim(), (2, 9, 4, 16));

    // Out of range, wrong shapes and decoding steps are refused by name.
    let err = loaded
        .model
        .run(&batch, &RunRequest::default().capture_head(HeadHook::Z(9)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.9.attn.hook_z"), "{err}");
    let err = loaded
        .model
        .run(
            &batch,
            &RunRequest::default()
                .capture_head(HeadHook::Z(0))
                .with_head_intervention(HeadHook::Pattern(0), |p| *p = Array4::zeros((1, 1, 1, 1))),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.attn.hook_pattern"), "{err}");
}
