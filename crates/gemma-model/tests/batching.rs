//! Padding invariance, stop-at-layer equivalence and interventions, on the golden fixtures.

mod common;

use common::*;
use gemma_model::{
    load_dir, BackendKind, GemmaError, HookPoint, LoadOptions, PaddingSide, RunRequest, TokenBatch,
};

fn prompts(model: &str) -> Vec<Vec<u32>> {
    let golden = read_tensors(&fixture(model).join("golden.safetensors"));
    golden_meta(model)
        .prompts
        .iter()
        .map(|p| golden_ids(&golden, p.index))
        .collect()
}

#[test]
fn every_real_token_of_a_padded_batch_equals_its_prompt_alone() {
    for model in MODELS {
        for backend in [BackendKind::NdArray, BackendKind::Flex] {
            let loaded = load_dir(
                fixture(model),
                &LoadOptions::default().with_backend(backend),
            )
            .unwrap();
            let n_layers = loaded.model.config().num_hidden_layers;
            let hooks = HookPoint::all(n_layers);
            let request = RunRequest::capture(hooks.iter().copied()).with_logits();
            let seqs = prompts(model);
            let mut worst = 0f64;
            let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
            assert!(
                lengths.iter().min() != lengths.iter().max(),
                "fixtures need prompts of different lengths"
            );
            for side in [PaddingSide::Right, PaddingSide::Left] {
                let batch = TokenBatch::new(&seqs, 0, side).unwrap();
                let together = loaded.model.run(&batch, &request).unwrap();
                for (b, seq) in seqs.iter().enumerate() {
                    let alone = loaded
                        .model
                        .run(&TokenBatch::single(seq.clone()).unwrap(), &request)
                        .unwrap();
                    let offset = match side {
                        PaddingSide::Right => 0,
                        PaddingSide::Left => batch.seq_len() - seq.len(),
                    };
                    let mut check =
                        |name: &str,
                         padded: &ndarray::Array3<f32>,
                         single: &ndarray::Array3<f32>| {
                            let rows = padded.slice(ndarray::s![b, offset..offset + seq.len(), ..]);
                            let want: Vec<f64> = single.iter().map(|x| *x as f64).collect();
                            let got: Vec<f32> = rows.iter().copied().collect();
                            let err = relative_error(&got, &want);
                            // Equal up to float rounding (GEMM blocking differs with the batch shape).
                            assert!(
                                err < 2e-5,
                                "{model} {backend} {side:?} prompt {b} {name}: {err:.2e}"
                            );
                            worst = worst.max(err);
                        };
                    for hook in &hooks {
                        check(
                            &hook.to_string(),
                            &together.activations[hook],
                            &alone.activations[hook],
                        );
                    }
                    check(
                        "logits",
                        together.logits.as_ref().unwrap(),
                        alone.logits.as_ref().unwrap(),
                    );
                    // Padding positions are zero.
                    let pads = batch.seq_len() - seq.len();
                    let pad_range = match side {
                        PaddingSide::Right => seq.len()..batch.seq_len(),
                        PaddingSide::Left => 0..pads,
                    };
                    let last = &together.activations[&HookPoint::ResidPost(n_layers - 1)];
                    assert!(last
                        .slice(ndarray::s![b, pad_range, ..])
                        .iter()
                        .all(|x| *x == 0.0));
                }
            }
            eprintln!(
                "{model} on {backend}: padded vs alone, worst relative difference {worst:.2e}"
            );
        }
    }
}

/// flex's fused host kernels against its burn-op path on padded batches (both sides): the same
/// activations and logits up to float rounding, padding positions included in the comparison.
#[test]
fn fused_host_kernels_equal_burn_ops_on_padded_batches() {
    for model in MODELS {
        let load = |fused_kernels| {
            let options = LoadOptions {
                fused_kernels,
                ..LoadOptions::default().with_backend(BackendKind::Flex)
            };
            load_dir(fixture(model), &options).unwrap()
        };
        let (fused, burn) = (load(true), load(false));
        let hooks = HookPoint::all(fused.model.config().num_hidden_layers);
        let request = RunRequest::capture(hooks.iter().copied()).with_logits();
        for side in [PaddingSide::Right, PaddingSide::Left] {
            let batch = TokenBatch::new(&prompts(model), 0, side).unwrap();
            let (a, b) = (
                fused.model.run(&batch, &request).unwrap(),
                burn.model.run(&batch, &request).unwrap(),
            );
            let mut worst = 0f64;
            for hook in &hooks {
                let want: Vec<f64> = b.activations[hook].iter().map(|x| *x as f64).collect();
                let err = relative_error(a.activations[hook].as_slice().unwrap(), &want);
                assert!(err < 2e-5, "{model} {side:?} {hook}: {err:.2e}");
                worst = worst.max(err);
            }
            let want: Vec<f64> = b.logits.unwrap().iter().map(|x| *x as f64).collect();
            let err = relative_error(a.logits.unwrap().as_slice().unwrap(), &want);
            assert!(err < 2e-5, "{model} {side:?} logits: {err:.2e}");
            eprintln!(
                "{model} {side:?}: fused vs burn ops, worst {:.2e}",
                worst.max(err)
            );
        }
    }
}

#[test]
fn stopping_at_a_layer_gives_the_same_activations_and_refuses_deeper_hooks() {
    let model = "tiny-window";
    let full = load_dir(fixture(model), &LoadOptions::default()).unwrap();
    let hook = HookPoint::ResidPost(1);
    let partial = load_dir(fixture(model), &LoadOptions::for_hooks(&[hook])).unwrap();
    assert_eq!(partial.model.loaded_layers(), 2);
    assert!(!partial.model.has_unembedding());
    let batch = TokenBatch::new(&prompts(model), 0, PaddingSide::Right).unwrap();
    let a = full
        .model
        .run(&batch, &RunRequest::capture([hook]))
        .unwrap();
    let b = partial
        .model
        .run(&batch, &RunRequest::capture([hook]))
        .unwrap();
    assert_eq!(a.activations[&hook], b.activations[&hook]);
    let err = partial
        .model
        .run(&batch, &RunRequest::capture([HookPoint::ResidPost(2)]))
        .unwrap_err();
    assert!(matches!(err, GemmaError::NotLoaded { .. }), "{err}");
    let err = partial
        .model
        .run(&batch, &RunRequest::default().with_logits())
        .unwrap_err();
    assert!(matches!(err, GemmaError::NotLoaded { .. }), "{err}");
    let err = full
        .model
        .run(&batch, &RunRequest::capture([HookPoint::MlpOut(99)]))
        .unwrap_err();
    assert!(
        matches!(err, GemmaError::HookOutOfRange { layer: 99, .. }),
        "{err}"
    );
}

#[test]
fn interventions_replace_activations_downstream() {
    let model = "tiny-window";
    let loaded = load_dir(fixture(model), &LoadOptions::default()).unwrap();
    let batch = TokenBatch::new(&prompts(model), 0, PaddingSide::Right).unwrap();
    let edit_at = HookPoint::ResidPost(1);
    let read_at = HookPoint::ResidPre(2);
    let clean = loaded
        .model
        .run(&batch, &RunRequest::capture([edit_at, read_at]))
        .unwrap();
    // Identity edit: nothing changes.
    let same = loaded
        .model
        .run(
            &batch,
            &RunRequest::capture([read_at]).with_intervention(edit_at, |_x| {}),
        )
        .unwrap();
    assert_eq!(same.activations[&read_at], clean.activations[&read_at]);
    // Zero ablation at resid_post(1) is what layer 2 reads; later layers change.
    let ablated = loaded
        .model
        .run(
            &batch,
            &RunRequest::capture([read_at, HookPoint::ResidPost(3)])
                .with_intervention(edit_at, |x| x.fill(0.0)),
        )
        .unwrap();
    assert!(ablated.activations[&read_at].iter().all(|x| *x == 0.0));
    let full = loaded
        .model
        .run(&batch, &RunRequest::capture([HookPoint::ResidPost(3)]))
        .unwrap();
    assert_ne!(
        ablated.activations[&HookPoint::ResidPost(3)],
        full.activations[&HookPoint::ResidPost(3)]
    );
    // Changing the shape is an error.
    let err = loaded
        .model
        .run(
            &batch,
            &RunRequest::capture([read_at])
                .with_intervention(edit_at, |x| *x = ndarray::Array3::zeros((1, 1, 1))),
        )
        .unwrap_err();
    assert!(matches!(err, GemmaError::InterventionShape { .. }), "{err}");
}

#[test]
fn out_of_vocabulary_ids_are_refused() {
    let loaded = load_dir(fixture("tiny-window"), &LoadOptions::default()).unwrap();
    let vocab = loaded.model.config().vocab_size as u32;
    let err = loaded
        .model
        .run(
            &TokenBatch::single(vec![2, vocab]).unwrap(),
            &RunRequest::capture([HookPoint::Embed]),
        )
        .unwrap_err();
    assert!(err.to_string().contains(&vocab.to_string()), "{err}");
}

#[test]
fn a_pass_resumed_from_a_residual_equals_the_pass_that_replaced_it() {
    let model = "tiny-window";
    for backend in [BackendKind::NdArray, BackendKind::Flex] {
        let loaded = load_dir(
            fixture(model),
            &LoadOptions::default().with_backend(backend),
        )
        .unwrap();
        let n_layers = loaded.model.config().num_hidden_layers;
        let batch = TokenBatch::new(&prompts(model), 0, PaddingSide::Right).unwrap();
        let at = HookPoint::ResidPost(1);
        let clean = loaded
            .model
            .run(&batch, &RunRequest::capture([at]).with_logits())
            .unwrap();
        // An edited residual: the clean one scaled and shifted.
        let mut edited = clean.activations[&at].clone();
        edited.mapv_inplace(|x| 0.7 * x + 0.05);
        let replacement = edited.clone();
        let last = HookPoint::ResidPost(n_layers - 1);
        let replaced = loaded
            .model
            .run(
                &batch,
                &RunRequest::capture([last])
                    .with_logits()
                    .with_intervention(at, move |x| x.assign(&replacement)),
            )
            .unwrap();
        let resumed = loaded
            .model
            .run(
                &batch,
                &RunRequest::capture([last])
                    .with_logits()
                    .resumed_from(1, edited.clone()),
            )
            .unwrap();
        for (got, want) in [
            (&resumed.logits, &replaced.logits),
            (
                &Some(resumed.activations[&last].clone()),
                &Some(replaced.activations[&last].clone()),
            ),
        ] {
            let got: Vec<f32> = got.as_ref().unwrap().iter().copied().collect();
            let want: Vec<f64> = want.as_ref().unwrap().iter().map(|x| *x as f64).collect();
            assert!(relative_error(&got, &want) < 1e-6, "{backend:?}");
        }
        assert_ne!(resumed.logits, clean.logits);
        // Hooks at or before the resume point, a wrong shape and a layer the model lacks are refused.
        for (request, needle) in [
            (
                RunRequest::capture([at]).resumed_from(1, edited.clone()),
                "blocks.1.hook_resid_post comes before",
            ),
            (
                RunRequest::capture([HookPoint::Embed]).resumed_from(1, edited.clone()),
                "hook_embed comes before",
            ),
            (
                RunRequest::default()
                    .with_logits()
                    .resumed_from(1, ndarray::Array3::zeros((1, 2, 3))),
                "has shape [1, 2, 3]",
            ),
            (
                RunRequest::default()
                    .with_logits()
                    .resumed_from(n_layers, edited.clone()),
                "but the model has",
            ),
        ] {
            let err = loaded.model.run(&batch, &request).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut poisoned = edited.clone();
        poisoned[[0, 0, 0]] = f32::NAN;
        let err = loaded
            .model
            .run(
                &batch,
                &RunRequest::default()
                    .with_logits()
                    .resumed_from(1, poisoned),
            )
            .unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
    }
}
