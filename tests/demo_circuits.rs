//! Circuit writers on the demo pair: the latent's pre-activation splits exactly over both models'
//! components, and the heads planted to write the child/novice and belief directions (layer 1, heads 2
//! and 3 of the chat model) rank first as what chat training changed; with chat = base nothing stands out.

mod common;

use circuits::{attribute_writers, find_readers, Component, ReaderSpec, WriterSpec};
use crosscoder::{nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderLoader, CHAT};
use gemma_model::{load_dir, HookPoint, LoadOptions, LoadedModel, RunRequest, TokenBatch};
use model_pair::PromptInput;
use ndarray::Array3;
use persona_dataset::PersonaDataset;

use common::demo_dir;

fn demo_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap()).unwrap()
}

fn load(name: &str) -> LoadedModel {
    load_dir(
        demo_dir().join(name),
        &LoadOptions::for_hooks(&[HookPoint::ResidPost(1)]),
    )
    .unwrap()
}

fn crosscoder() -> Box<dyn Crosscoder> {
    CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
        .backend(BackendKind::Flex)
        .load()
        .unwrap()
}

/// The crosscoder latent nearest to planted mechanism `i` (0 child/novice, 1 belief).
fn planted_latent(cc: &dyn Crosscoder, i: usize) -> usize {
    let direction: Vec<f32> =
        serde_json::from_value(demo_json()["mechanisms"][i]["designed_direction"].clone()).unwrap();
    nearest_decoder_latent(cc, CHAT, &direction).unwrap().0
}

/// The positive side of a shipped contrast.
fn prompts(category: &str) -> Vec<PromptInput> {
    let dataset = PersonaDataset::shipped();
    let contrast = dataset.contrast(category).unwrap();
    contrast
        .pairs(&dataset)
        .unwrap()
        .iter()
        .map(|p| diff_analysis::prompt_input(p.positive, model_pair::TokenizationMode::Raw))
        .collect()
}

#[test]
fn the_planted_heads_rank_first_as_writers_and_the_attribution_is_exact() {
    let (base, chat) = (load("base"), load("chat"));
    let tokenizer = chat.tokenizer.clone().unwrap();
    let cc = crosscoder();
    for (mechanism, category, head) in [(0, "child_vs_adult", 2), (1, "sycophancy_triggers", 3)] {
        let latent = planted_latent(cc.as_ref(), mechanism);
        let prompts = prompts(category);
        let (report, tokens) = attribute_writers(
            [base.model.as_ref(), chat.model.as_ref()],
            &tokenizer,
            cc.as_ref(),
            &prompts,
            &WriterSpec::new(latent, 1),
        )
        .unwrap();
        let top: Vec<String> = report
            .components
            .iter()
            .take(4)
            .map(|w| {
                format!(
                    "{} {:.3}±{:.3}",
                    w.label, w.difference.mean, w.difference.half_width
                )
            })
            .collect();
        println!(
            "latent #{latent} on {category}: {top:?}, stands out {:?}",
            report.stands_out
        );
        let planted = Component::Head { layer: 1, head };
        assert_eq!(report.components[0].component, planted, "{top:?}");
        assert_eq!(report.stands_out, vec![planted]);
        assert!(report.components[0].difference.low() > 0.0);
        // The base model's planted head writes nothing.
        assert_eq!(report.components[0].base.mean, 0.0);
        assert!(!report.patterns.is_empty());

        // Exact: per token the contributions and the constant sum to the pre-activation, and where the
        // latent fires that is what the crosscoder encodes.
        let mut worst = 0.0f32;
        for (p, t) in tokens.iter().enumerate() {
            let sum = t.contributions[0].sum_axis(ndarray::Axis(0))
                + t.contributions[1].sum_axis(ndarray::Axis(0))
                + t.constant;
            let scale = t.pre_activation.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = (&sum - &t.pre_activation)
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()))
                / scale;
            worst = worst.max(err);
            assert!(err < 1e-5, "prompt {p}: {err}");
            if p < 4 {
                let batch = TokenBatch::single(t.ids.clone()).unwrap();
                let request = RunRequest::capture([HookPoint::ResidPost(1)]);
                let residuals = [&base, &chat].map(|m| {
                    m.model.run(&batch, &request).unwrap().activations[&HookPoint::ResidPost(1)]
                        .clone()
                });
                let n = t.ids.len();
                let pair = Array3::from_shape_fn((n, 2, 64), |(i, m, c)| residuals[m][[0, i, c]]);
                let codes = cc.encode(pair.view()).unwrap();
                for i in 0..n {
                    let code = codes[[i, latent]];
                    let pre = t.pre_activation[i];
                    assert!(
                        (pre.max(0.0) - code).abs() <= 1e-4 * (1.0 + code.abs()),
                        "token {i}: {pre} vs {code}"
                    );
                }
            }
        }
        println!("  worst relative error of the sum: {worst:.2e}");
    }
}

#[test]
fn with_chat_equal_to_base_no_writer_stands_out() {
    let (base, same) = (load("base"), load("base"));
    let tokenizer = base.tokenizer.clone().unwrap();
    let cc = crosscoder();
    let latent = planted_latent(cc.as_ref(), 0);
    let (report, _) = attribute_writers(
        [base.model.as_ref(), same.model.as_ref()],
        &tokenizer,
        cc.as_ref(),
        &prompts("child_vs_adult"),
        &WriterSpec::new(latent, 1),
    )
    .unwrap();
    assert!(report.stands_out.is_empty());
    assert!(report.components.iter().all(|w| w.difference.mean == 0.0));
}

#[test]
fn the_planted_reader_ranks_first_as_a_reader() {
    let base = load("base");
    let chat = load_dir(demo_dir().join("chat"), &LoadOptions::default()).unwrap();
    let tokenizer = chat.tokenizer.clone().unwrap();
    let cc = crosscoder();
    let latent = planted_latent(cc.as_ref(), 0);
    let report = find_readers(
        [base.model.as_ref(), chat.model.as_ref()],
        &tokenizer,
        cc.as_ref(),
        &prompts("child_vs_adult"),
        &ReaderSpec::new(latent, 1),
    )
    .unwrap();
    for r in report.components.iter().take(5) {
        println!(
            "{}: ablation {:.3} ± {:.3}, composition {:?}, neurons {:?}",
            r.label,
            r.ablation.mean,
            r.ablation.half_width,
            r.composition,
            r.neurons
                .iter()
                .take(2)
                .map(|n| (n.neuron, n.gate_cosine))
                .collect::<Vec<_>>()
        );
    }
    let reader = demo_json()["reader"].clone();
    let layers: Vec<usize> = serde_json::from_value(reader["layers"].clone()).unwrap();
    // The two planted reader MLPs are the two most affected components, and their most aligned
    // neurons are the planted ones (the last two of each MLP).
    let top2: Vec<Component> = report
        .components
        .iter()
        .take(2)
        .map(|r| r.component)
        .collect();
    for layer in &layers {
        assert!(top2.contains(&Component::Mlp { layer: *layer }), "{top2:?}");
        let mlp = report
            .components
            .iter()
            .find(|r| r.component == Component::Mlp { layer: *layer })
            .unwrap();
        let mut neurons: Vec<usize> = mlp.neurons.iter().take(2).map(|n| n.neuron).collect();
        neurons.sort();
        assert_eq!(neurons, vec![126, 127], "{:?}", mlp.neurons);
    }
    assert_eq!(report.components.len(), 2 * (4 + 1));
}
