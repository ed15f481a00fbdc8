//! The persona-contrast flavour of the Activation Difference Lens on the demo pair, and the negative
//! control. Child (and novice) prompts minus adult (expert) prompts, per position from the cue, give the
//! planted `user:child_novice` direction (cosine > 0.9 at every position); biased minus neutral gives
//! `user:belief`; the crosscoder latent it aligns with best is the planted child latent; after the
//! planted reader (layer 3) the chat head reads the difference as the reader's words. With chat = base,
//! every difference is exactly zero and nothing is reported as found.

mod common;

use activation_cache::Corpus;
use activation_diff_lens::{
    accumulate, contrast_difference, summarise, AdlModels, AdlSpec, AdlState, ContrastDifference,
    ContrastSpec, NamedContrast, ReadOptions, SteeringRequest,
};
use crosscoder::{nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderLoader, CHAT};
use gemma_model::{load_dir, GemmaTokenizer, LoadOptions, LoadedModel};
use model_pair::TokenizationMode;
use ndarray::{s, Array1, ArrayView1};
use persona_dataset::PersonaDataset;

use common::demo_dir;

fn demo_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap()).unwrap()
}

/// The designed direction of mechanism `i` (0: child/novice, 1: belief).
fn planted(i: usize) -> Array1<f32> {
    let values: Vec<f32> =
        serde_json::from_value(demo_json()["mechanisms"][i]["designed_direction"].clone()).unwrap();
    values.into()
}

fn cosine(a: ArrayView1<'_, f32>, b: &Array1<f32>) -> f32 {
    a.dot(b) / (a.dot(&a).sqrt() * b.dot(b).sqrt())
}

fn load(name: &str) -> LoadedModel {
    load_dir(demo_dir().join(name), &LoadOptions::default()).unwrap()
}

/// Every contrast of the shipped dataset at layers 1 (the hook) and 3 (after the reader).
fn contrasts(
    models: [&LoadedModel; 2],
    tokenizer: &GemmaTokenizer,
) -> Vec<(persona_dataset::Contrast, ContrastDifference)> {
    let dataset = PersonaDataset::shipped();
    let spec = ContrastSpec::new(vec![1, 3]);
    dataset
        .contrasts()
        .into_iter()
        .map(|c| {
            let pairs =
                diff_analysis::adl::contrast_prompts(&dataset, &c, TokenizationMode::ChatTemplate)
                    .unwrap();
            let difference = contrast_difference(
                [models[0].model.as_ref(), models[1].model.as_ref()],
                tokenizer,
                &pairs,
                &spec,
                &indicatif::ProgressBar::hidden(),
            )
            .unwrap();
            (c, difference)
        })
        .collect()
}

fn named(list: &[(persona_dataset::Contrast, ContrastDifference)]) -> Vec<NamedContrast<'_>> {
    list.iter()
        .map(|(c, d)| NamedContrast {
            category: &c.category,
            sides: [&c.positive, &c.negative],
            difference: d,
        })
        .collect()
}

#[test]
fn contrasts_recover_the_planted_directions_latent_and_reader() {
    let (base, chat) = (load("base"), load("chat"));
    let tokenizer = chat.tokenizer.clone().unwrap();
    let list = contrasts([&base, &chat], &tokenizer);
    let (child, belief) = (planted(0), planted(1));
    for (c, d) in &list {
        // Layer 1 is the hook: the planted heads write there, nothing else differs.
        let want = if c.category == "sycophancy_triggers" {
            &belief
        } else {
            &child
        };
        assert!(
            d.pairs >= 20 && d.counts.iter().all(|n| *n == d.pairs),
            "{c:?}: {d:?}"
        );
        for j in 0..d.k {
            let v: ArrayView1<'_, f32> = d.delta.slice(s![0, j, ..]);
            let norm = v.dot(&v).sqrt();
            // The belief cue's first token ("I" of "I think") is not yet the cue: nothing differs there.
            if norm < 1e-3 {
                assert!(
                    c.category == "sycophancy_triggers" && j == 0,
                    "{}: position {j}",
                    c.category
                );
                continue;
            }
            let cos = cosine(v, want);
            println!(
                "{} position {j}: |delta| {norm:.3}, cosine {cos:.3}",
                c.category
            );
            assert!(cos > 0.9, "{} position {j}: cosine {cos}", c.category);
        }
        assert!(cosine(d.delta_mean.row(0), want) > 0.9);
    }

    // Read: the best-aligned crosscoder latent is the planted child latent; after the reader the chat
    // head reads simple-register words on the child contrasts and not on the belief contrast.
    let crosscoder: Box<dyn Crosscoder> =
        CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
            .backend(BackendKind::Flex)
            .load()
            .unwrap();
    let (child_latent, _) =
        nearest_decoder_latent(crosscoder.as_ref(), CHAT, &child.to_vec()).unwrap();
    let (belief_latent, _) =
        nearest_decoder_latent(crosscoder.as_ref(), CHAT, &belief.to_vec()).unwrap();
    let register: Vec<u32> =
        serde_json::from_value(demo_json()["reader"]["register_token_ids"].clone()).unwrap();
    let summary = summarise(
        AdlModels {
            models: [base.model.as_ref(), chat.model.as_ref()],
            tokenizer: &tokenizer,
            crosscoder: Some(crosscoder.as_ref()),
        },
        None,
        &named(&list),
        &ReadOptions {
            top: 10,
            patchscope_scales: vec![1.0, 2.0],
        },
        &SteeringRequest {
            prompts: Vec::new(),
            max_strength: 2.0,
            max_new_tokens: 8,
        },
    )
    .unwrap();
    assert!(summary.found && summary.corpus.is_none());
    for c in &summary.contrasts {
        let mean = |layer: usize| {
            c.reading
                .readings
                .iter()
                .find(|r| r.layer == layer && r.position.is_none())
                .unwrap()
        };
        let top5 = |layer: usize| -> Vec<u32> {
            mean(layer).lens[1]
                .promoted
                .iter()
                .take(5)
                .map(|e| e.id)
                .collect()
        };
        let says_register = top5(3).iter().any(|id| register.contains(id));
        println!(
            "{}: layer 3 chat head {:?}, best latent {:?}",
            c.category,
            mean(3).lens[1]
                .promoted
                .iter()
                .take(5)
                .map(|e| e.token.as_str())
                .collect::<Vec<_>>(),
            mean(1).aligned_latents.first()
        );
        // A shared latent of the L1 crosscoder carries a small part of a planted direction in its
        // decoder difference and may align as well; the best-aligned chat-only latent is the plant.
        let best_chat_only = || {
            mean(1)
                .aligned_latents
                .iter()
                .find(|a| a.relative_norm >= 0.9)
                .unwrap()
        };
        if c.category == "sycophancy_triggers" {
            assert!(!says_register);
            let chat_only = best_chat_only();
            assert_eq!(
                chat_only.latent,
                belief_latent,
                "{:?}",
                mean(1).aligned_latents
            );
            assert!(chat_only.cosine > 0.9);
        } else {
            assert!(says_register, "{}", c.category);
            assert!(register.contains(&top5(3)[0]));
            let chat_only = best_chat_only();
            assert_eq!(
                chat_only.latent,
                child_latent,
                "{:?}",
                mean(1).aligned_latents
            );
            assert!(chat_only.cosine > 0.8);
        }
        // The Patchscope ran for both layers' means.
        assert_eq!(c.reading.patchscope.len(), 2);
    }
    // The files: JSON, two figures, the page (figures embedded, renders offline, nothing fetched).
    let dir = tempfile::tempdir().unwrap();
    let files = activation_diff_lens::output::write_all(&summary, dir.path()).unwrap();
    assert_eq!(files.len(), 4, "{files:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adl.json")).unwrap())
            .unwrap();
    assert_eq!(json["contrasts"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["contrasts"][0]["readings"].as_array().unwrap().len(),
        12
    );
    if let Some(rendered) = common::browser::render_offline(&dir.path().join("adl.html")) {
        assert!(
            rendered.fetched.is_empty() && rendered.broken == 0,
            "{rendered:?}"
        );
        assert_eq!(rendered.images, 2, "{rendered:?}");
    }
}

#[test]
fn with_chat_equal_to_base_every_difference_is_zero_and_nothing_is_found() {
    let (base, same) = (load("base"), load("base"));
    let tokenizer = base.tokenizer.clone().unwrap();
    let models = [base.model.as_ref(), same.model.as_ref()];
    let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
    let mut spec = AdlSpec::new(vec![1, 3]);
    spec.max_texts = Some(300);
    let mut state = AdlState::new(spec, 64);
    accumulate(
        models,
        &tokenizer,
        corpus.documents(),
        &mut state,
        &mut |_| Ok(()),
        false,
    )
    .unwrap();
    let difference = state.result().unwrap();
    let list = contrasts([&base, &same], &tokenizer);
    let zero = |values: &mut dyn Iterator<Item = &f32>| values.copied().all(|v: f32| v == 0.0);
    assert!(zero(&mut difference.delta.iter()) && zero(&mut difference.delta_mean.iter()));
    for (_, d) in &list {
        assert!(zero(&mut d.delta.iter()) && zero(&mut d.positive.iter()));
    }
    let summary = summarise(
        AdlModels {
            models,
            tokenizer: &tokenizer,
            crosscoder: None,
        },
        Some(("demo corpus", &difference)),
        &named(&list),
        &ReadOptions::default(),
        &SteeringRequest {
            prompts: vec!["Why is the sky blue?".into()],
            max_strength: 2.0,
            max_new_tokens: 8,
        },
    )
    .unwrap();
    assert!(!summary.found);
    assert!(summary.steering.is_none());
    let readings = summary
        .corpus
        .iter()
        .map(|c| &c.reading)
        .chain(summary.contrasts.iter().map(|c| &c.reading));
    for reading in readings {
        assert!(reading.patchscope.is_empty());
        assert!(reading
            .readings
            .iter()
            .all(|r| r.negligible && r.lens.is_empty() && r.norm == 0.0));
    }
    let dir = tempfile::tempdir().unwrap();
    let files = activation_diff_lens::output::write_all(&summary, dir.path()).unwrap();
    assert_eq!(files.len(), 3, "{files:?}");
    let page = std::fs::read_to_string(dir.path().join("adl.html")).unwrap();
    assert!(page.contains("No difference found"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adl.json")).unwrap())
            .unwrap();
    assert_eq!(json["found"], false);
    assert_eq!(json["schema_version"], 2);
}
