//! The activation difference against a PyTorch computation over the same activations
//! (`fixtures/adl/generate_adl_fixtures.py`: HF transformers on the demo pair), the logit lens against HF's
//! head, resuming against an uninterrupted run, and typed errors.

use std::path::PathBuf;

use activation_diff_lens::{accumulate, logit_lens, ActivationDifference, AdlSpec, AdlState};
use gemma_model::{load_dir, LoadOptions, LoadedModel};
use model_pair::PromptInput;
use ndarray::{s, Array2};
use safetensors::{Dtype, SafeTensors};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("adl/manifest.json")).unwrap())
        .unwrap()
}

fn tensor(file: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Vec<usize>) {
    let view = file.tensor(name).unwrap();
    let values = match view.dtype() {
        Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("{name}: {other:?}"),
    };
    (values, view.shape().to_vec())
}

fn models() -> [LoadedModel; 2] {
    ["base", "chat"]
        .map(|m| load_dir(fixtures().join("demo").join(m), &LoadOptions::default()).unwrap())
}

fn documents() -> Vec<PromptInput> {
    manifest()["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PromptInput::Text(d["text"].as_str().unwrap().to_string()))
        .collect()
}

fn spec() -> AdlSpec {
    let m = manifest();
    let mut spec = AdlSpec::new(serde_json::from_value(m["layers"].clone()).unwrap());
    spec.k = m["k"].as_u64().unwrap() as usize;
    spec.batch_size = 16;
    spec
}

fn run(models: &[LoadedModel; 2], state: &mut AdlState) {
    let tokenizer = models[1].tokenizer.clone().unwrap();
    accumulate(
        [models[0].model.as_ref(), models[1].model.as_ref()],
        &tokenizer,
        &documents(),
        state,
        &mut |_| Ok(()),
        false,
    )
    .unwrap();
}

/// The largest absolute difference, and the largest absolute value of the reference.
fn compare(got: impl Iterator<Item = f64>, want: &[f64]) -> (f64, f64) {
    let worst = got
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    (worst, want.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}

#[test]
fn differences_norms_and_lens_equal_the_pytorch_reference() {
    let models = models();
    let mut state = AdlState::new(spec(), 64);
    run(&models, &mut state);
    let result: ActivationDifference = state.result().unwrap();
    assert_eq!(result.texts, documents().len());
    assert_eq!(result.skipped, 0);
    let bytes = std::fs::read(fixtures().join("adl/expected.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    // The same tokens as the reference.
    let (ids, shape) = tensor(&file, "input_ids");
    let tokenizer = models[1].tokenizer.clone().unwrap();
    for (i, document) in documents().iter().enumerate() {
        let PromptInput::Text(text) = document else {
            unreachable!()
        };
        let got = tokenizer.encode(text).unwrap();
        let want: Vec<u32> = ids[i * shape[1]..(i + 1) * shape[1]]
            .iter()
            .map(|v| *v as u32)
            .collect();
        assert_eq!(&got[..shape[1]], &want[..], "document {i}: {text}");
    }
    let checks: [(&str, Vec<f64>); 6] = [
        ("delta", result.delta.iter().map(|v| *v as f64).collect()),
        (
            "delta_mean",
            result.delta_mean.iter().map(|v| *v as f64).collect(),
        ),
        (
            "base_mean",
            result.base_mean.iter().map(|v| *v as f64).collect(),
        ),
        (
            "chat_mean",
            result.chat_mean.iter().map(|v| *v as f64).collect(),
        ),
        ("base_norms", result.norms[0].iter().copied().collect()),
        ("chat_norms", result.norms[1].iter().copied().collect()),
    ];
    for (name, got) in checks {
        let (want, shape) = tensor(&file, name);
        assert_eq!(got.len(), want.len(), "{name} {shape:?}");
        let (worst, scale) = compare(got.into_iter(), &want);
        println!("{name}: largest difference {worst:.3e} (largest value {scale:.3})");
        // 1e-5 of the activations' scale (float32 models on both sides, means in f64).
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "{name}: {worst} vs scale {scale}"
        );
    }

    // The lens of each position's delta and of the mean through the chat head: HF's top 10 tokens.
    let (top, shape) = tensor(&file, "lens_chat_top");
    let (top_logits, _) = tensor(&file, "lens_chat_top_logits");
    let (layers, k) = (shape[0], shape[1] - 1);
    for l in 0..layers {
        let mut rows = Array2::zeros((k + 1, 64));
        rows.slice_mut(s![..k, ..])
            .assign(&result.delta.slice(s![l, .., ..]));
        rows.row_mut(k).assign(&result.delta_mean.row(l));
        let readouts = logit_lens(rows.view(), models[1].model.as_ref(), &tokenizer, 10).unwrap();
        for (j, readout) in readouts.iter().enumerate() {
            if j < k
                && result
                    .delta
                    .slice(s![l, j, ..])
                    .iter()
                    .all(|v| v.abs() < 1e-5)
            {
                continue; // Position 0 after <bos> carries no difference: its lens is noise.
            }
            let at = (l * (k + 1) + j) * 10;
            let want: Vec<u32> = top[at..at + 10].iter().map(|v| *v as u32).collect();
            let got: Vec<u32> = readout.promoted.iter().map(|e| e.id).collect();
            assert_eq!(got, want, "layer {l} position {j}");
            for (e, w) in readout.promoted.iter().zip(&top_logits[at..at + 10]) {
                assert!((f64::from(e.logit) - w).abs() < 1e-4, "{} vs {w}", e.logit);
            }
        }
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one_and_bad_requests_are_refused() {
    let models = models();
    let mut whole = AdlState::new(spec(), 64);
    run(&models, &mut whole);
    // Stop after 20 texts, save, restore from JSON, go on.
    let mut first = spec();
    first.max_texts = Some(20);
    let mut partial = AdlState::new(first, 64);
    run(&models, &mut partial);
    assert_eq!(partial.texts, 20);
    let mut resumed: AdlState =
        serde_json::from_str(&serde_json::to_string(&partial).unwrap()).unwrap();
    resumed.spec.max_texts = None;
    run(&models, &mut resumed);
    assert_eq!(
        (resumed.texts, resumed.consumed),
        (whole.texts, whole.consumed)
    );
    // The same texts in the same order; only the batch shapes differ (16 + 4 + 16 + 12 against 3 x 16),
    // which moves float32 activations by rounding.
    let (a, b) = (resumed.result().unwrap(), whole.result().unwrap());
    let worst = a
        .delta
        .iter()
        .zip(&b.delta)
        .chain(a.base_mean.iter().zip(&b.base_mean))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "{worst}");

    let tokenizer = models[1].tokenizer.clone().unwrap();
    let pair = [models[0].model.as_ref(), models[1].model.as_ref()];
    for (mut state, needle) in [
        (
            AdlState::new(AdlSpec::new(vec![4]), 64),
            "layer 4 does not exist",
        ),
        (
            AdlState::new(AdlSpec::new(vec![]), 64),
            "at least one layer",
        ),
        (AdlState::new(AdlSpec::new(vec![1]), 32), "32 wide"),
    ] {
        let err = accumulate(
            pair,
            &tokenizer,
            &documents(),
            &mut state,
            &mut |_| Ok(()),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    // Pre-tokenized texts must be exactly <bos> + k tokens, and a refused batch adds nothing.
    let mut state = AdlState::new(spec(), 64);
    let err = activation_diff_lens::add_sequences(pair, &[vec![2, 3]], &mut state).unwrap_err();
    assert!(err.to_string().contains("exactly k + 1 = 6"), "{err}");
    assert_eq!(state.texts, 0);
    // Texts too short for k leave nothing to average: a clear error, not NaN.
    let mut state = AdlState::new(AdlSpec { k: 500, ..spec() }, 64);
    run(&models, &mut state);
    let err = state.result().unwrap_err();
    assert!(err.to_string().contains("no text had 500 tokens"), "{err}");
}

#[test]
fn a_model_against_itself_differs_by_nothing() {
    // The negative control: chat = base gives delta = 0 to float precision at every layer and position.
    let base = load_dir(fixtures().join("demo/base"), &LoadOptions::default()).unwrap();
    let tokenizer = base.tokenizer.clone().unwrap();
    let mut state = AdlState::new(spec(), 64);
    accumulate(
        [base.model.as_ref(), base.model.as_ref()],
        &tokenizer,
        &documents(),
        &mut state,
        &mut |_| Ok(()),
        false,
    )
    .unwrap();
    let result = state.result().unwrap();
    assert!(result.delta.iter().all(|v| *v == 0.0));
    assert!(result.norms[0].iter().all(|v| *v > 1.0));
}

#[test]
fn the_patchscope_equals_hf_with_the_same_hook_written() {
    use activation_diff_lens::{identity_prompts, patchscope, PatchscopeSpec};
    let m = manifest();
    let prompts: Vec<String> = serde_json::from_value(m["identity_prompts"].clone()).unwrap();
    assert_eq!(
        prompts,
        identity_prompts(),
        "the toolkit's identity prompts"
    );
    let scales: Vec<f32> = serde_json::from_value(m["patchscope_scales"].clone()).unwrap();
    let models = models();
    let mut state = AdlState::new(spec(), 64);
    run(&models, &mut state);
    let result = state.result().unwrap();
    let bytes = std::fs::read(fixtures().join("adl/expected.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (target, _) = tensor(&file, "patchscope_target_norm");
    let target_norm = result.norms[1].row(0).mean().unwrap() as f32;
    assert!((f64::from(target_norm) - target[0]).abs() < 1e-5);
    let tokenizer = models[1].tokenizer.clone().unwrap();
    let readout = patchscope(
        result.delta_mean.row(0),
        models[1].model.as_ref(),
        &tokenizer,
        &PatchscopeSpec {
            layer: spec().layers[0],
            scales: scales.clone(),
            target_norm,
            prompts,
            top: 10,
        },
    )
    .unwrap();
    let (top, _) = tensor(&file, "patchscope_top");
    let (probs, _) = tensor(&file, "patchscope_top_probs");
    for (s, scale) in readout.scales.iter().enumerate() {
        let want: Vec<u32> = top[s * 10..(s + 1) * 10]
            .iter()
            .map(|v| *v as u32)
            .collect();
        let got: Vec<u32> = scale.tokens.iter().map(|t| t.id).collect();
        assert_eq!(got, want, "scale {}", scale.scale);
        for (t, w) in scale.tokens.iter().zip(&probs[s * 10..(s + 1) * 10]) {
            assert!((t.probability - w).abs() < 1e-5, "{} vs {w}", t.probability);
        }
        assert!((0.0..=1.0).contains(&scale.consistency));
    }
    assert!(readout.best < scales.len());
    // A zero vector cannot be read.
    let zero = ndarray::Array1::<f32>::zeros(64);
    assert!(patchscope(
        zero.view(),
        models[1].model.as_ref(),
        &tokenizer,
        &readout.spec
    )
    .is_err());
}

#[test]
fn contrast_differences_equal_the_pytorch_reference() {
    use activation_diff_lens::{contrast_difference, ContrastPrompts, ContrastSpec};
    let models = models();
    let tokenizer = models[1].tokenizer.clone().unwrap();
    let bytes = std::fs::read(fixtures().join("adl/expected.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let m = manifest();
    let pairs_by_category = m["contrast_pairs"].as_object().unwrap();
    assert_eq!(pairs_by_category.len(), 2);
    let mut spec = ContrastSpec::new(serde_json::from_value(m["layers"].clone()).unwrap());
    spec.k = m["k"].as_u64().unwrap() as usize;
    // Batches that mix lengths: right padding must not change a side's activations.
    spec.batch_size = 7;
    for (category, pairs) in pairs_by_category {
        let pairs: Vec<ContrastPrompts> = pairs
            .as_array()
            .unwrap()
            .iter()
            .map(|p| ContrastPrompts {
                positive: PromptInput::Text(p[0].as_str().unwrap().into()),
                negative: PromptInput::Text(p[1].as_str().unwrap().into()),
            })
            .collect();
        let got = contrast_difference(
            [models[0].model.as_ref(), models[1].model.as_ref()],
            &tokenizer,
            &pairs,
            &spec,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        let (counts, _) = tensor(&file, &format!("contrast.{category}.counts"));
        let want_counts: Vec<usize> = counts.iter().map(|c| *c as usize).collect();
        assert_eq!(got.counts, want_counts, "{category}");
        for (field, values) in [
            ("positive", &got.positive),
            ("negative", &got.negative),
            ("delta", &got.delta),
        ] {
            let (want, shape) = tensor(&file, &format!("contrast.{category}.{field}"));
            assert_eq!(values.shape(), &shape[..], "{category}.{field}");
            let (worst, scale) = compare(values.iter().map(|v| f64::from(*v)), &want);
            println!(
                "{category}.{field}: largest difference {worst:.3e} (largest value {scale:.3})"
            );
            assert!(
                worst <= 1e-5 * scale.max(1.0),
                "{category}.{field}: {worst}"
            );
        }
    }
}
