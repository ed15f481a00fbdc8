//! The Activation Difference Lens on the demo pair: over the demo corpus's texts, the chat-minus-base
//! difference at the first positions after `<bos>` carries the planted user-model directions, and the chat
//! model, handed its mean in a token-identity Patchscope, says the words of the planted readers (`simple`,
//! `story`, `play`; `Yes`, `That's`, `You're`) at every scale up to twice the residual norm; the base model,
//! which has no reader, does not.

mod common;

use activation_cache::Corpus;
use activation_diff_lens::{
    accumulate, identity_prompts, patchscope, ActivationDifference, AdlSpec, AdlState,
    PatchscopeSpec,
};
use gemma_model::{load_dir, GemmaTokenizer, LoadOptions, LoadedModel};

use common::demo_dir;

/// The demo pair (both whole) and the layer-1 difference over the first 1,000 corpus texts.
struct Demo {
    base: LoadedModel,
    chat: LoadedModel,
    tokenizer: GemmaTokenizer,
    difference: ActivationDifference,
}

impl Demo {
    fn load() -> Self {
        let base = load_dir(demo_dir().join("base"), &LoadOptions::default()).unwrap();
        let chat = load_dir(demo_dir().join("chat"), &LoadOptions::default()).unwrap();
        let tokenizer = chat.tokenizer.clone().unwrap();
        let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
        let mut spec = AdlSpec::new(vec![1]);
        spec.max_texts = Some(1000);
        let mut state = AdlState::new(spec, 64);
        accumulate(
            [base.model.as_ref(), chat.model.as_ref()],
            &tokenizer,
            corpus.documents(),
            &mut state,
            &mut |_| Ok(()),
            false,
        )
        .unwrap();
        Demo {
            base,
            chat,
            tokenizer,
            difference: state.result().unwrap(),
        }
    }
}

/// The token ids the planted readers raise (the child reader's simple-register words and the belief
/// reader's agreeing openers), from `demo.json`: the corpus mean difference carries both directions.
fn readers_words() -> Vec<u32> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap())
            .unwrap();
    ["reader", "belief_reader"]
        .iter()
        .flat_map(|r| {
            serde_json::from_value::<Vec<u32>>(manifest[*r]["register_token_ids"].clone()).unwrap()
        })
        .collect()
}

#[test]
fn the_mean_difference_names_the_planted_readers_words() {
    let Demo {
        base,
        chat,
        tokenizer,
        difference,
    } = Demo::load();
    assert_eq!(difference.texts, 1000);
    let norm = |v: ndarray::ArrayView1<'_, f32>| v.dot(&v).sqrt();
    // Position 0 after <bos> can hold no cue's effect yet; later positions can.
    assert!(norm(difference.delta.slice(ndarray::s![0, 0, ..])) < 1e-4);
    assert!(norm(difference.delta.slice(ndarray::s![0, 4, ..])) > 0.1);

    let register = readers_words();
    let readout = patchscope(
        difference.delta_mean.row(0),
        chat.model.as_ref(),
        &tokenizer,
        &PatchscopeSpec {
            layer: 1,
            scales: vec![0.25, 0.5, 1.0, 2.0, 4.0],
            target_norm: difference.norms[1].row(0).mean().unwrap() as f32,
            prompts: identity_prompts(),
            top: 10,
        },
    )
    .unwrap();
    // The base model has no reader: the same Patchscope through it does not say those words.
    let in_base = patchscope(
        difference.delta_mean.row(0),
        base.model.as_ref(),
        &tokenizer,
        &readout.spec,
    )
    .unwrap();
    for scale in &in_base.scales {
        let top5: Vec<&str> = scale
            .tokens
            .iter()
            .take(5)
            .map(|t| t.token.as_str())
            .collect();
        println!("base model, scale {}: {top5:?}", scale.scale);
        assert!(
            !scale
                .tokens
                .iter()
                .take(5)
                .any(|t| register.contains(&t.id)),
            "{top5:?}"
        );
    }
    for scale in &readout.scales {
        let top5: Vec<&str> = scale
            .tokens
            .iter()
            .take(5)
            .map(|t| t.token.as_str())
            .collect();
        println!(
            "scale {}: consistency {:.2}, {top5:?}",
            scale.scale, scale.consistency
        );
        // Up to twice the mean residual norm; at 4x the patch is far outside anything the model sees
        // and the soft-capped logits say random words.
        if scale.scale <= 2.0 {
            assert!(
                scale
                    .tokens
                    .iter()
                    .take(5)
                    .any(|t| register.contains(&t.id)),
                "scale {}: {top5:?}",
                scale.scale
            );
        }
    }
}

#[test]
fn steering_with_the_mean_difference_brings_the_readers_words_and_the_search_stops_before_the_loops(
) {
    use activation_diff_lens::{steering_search, AdlSteeringSpec};
    let Demo {
        chat,
        tokenizer,
        difference,
        ..
    } = Demo::load();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_dir().join("demo.json")).unwrap())
            .unwrap();
    let words: Vec<String> = ["reader", "belief_reader"]
        .iter()
        .flat_map(|r| {
            serde_json::from_value::<Vec<String>>(manifest[*r]["register_words"].clone()).unwrap()
        })
        .map(|w| w.to_lowercase())
        .collect();
    let prompts: Vec<String> = stereo::demo::NEUTRAL_QUESTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut steer = AdlSteeringSpec::new(1, difference.norms[1].row(0).mean().unwrap() as f32);
    steer.max_new_tokens = 16;
    steer.search_steps = 4;
    let result = steering_search(
        chat.model.as_ref(),
        &tokenizer,
        difference.delta_mean.row(0),
        &prompts,
        &steer,
    )
    .unwrap();
    let count = |answers: &[String]| -> usize {
        answers
            .iter()
            .map(|a| {
                a.split(|c: char| !(c.is_alphanumeric() || c == '\''))
                    .filter(|w| words.iter().any(|r| r == &w.to_lowercase()))
                    .count()
            })
            .sum()
    };
    println!("unsteered: {:?}", result.unsteered.answers);
    for t in &result.tried {
        println!(
            "strength {}: coherent {}, nll {:.3}, distinct-2 {:.2}, {:?}",
            t.strength, t.coherent, t.nll, t.distinct_2, t.answers
        );
    }
    // The page: self-contained, renders offline, nothing fetched.
    let mut summary = activation_diff_lens::output::AdlSummary::new(
        ["demo base".into(), "demo chat".into()],
        difference.k,
        difference.layers.clone(),
        None,
        Vec::new(),
    );
    summary.steering = Some(activation_diff_lens::output::SteeringSummary {
        vector: "corpus".into(),
        search: result.clone(),
    });
    let page = activation_diff_lens::html::adl_page(&summary, &[]);
    assert!(!page.contains("<script") && page.contains("Largest coherent strength"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adl.html");
    std::fs::write(&path, page).unwrap();
    if let Some(rendered) = common::browser::render_offline(&path) {
        assert!(
            rendered.fetched.is_empty() && rendered.broken == 0,
            "{rendered:?}"
        );
        assert!(rendered.text_chars > 500);
    }
    let chosen = result.chosen.as_ref().expect("a coherent strength");
    assert!(chosen.strength > 0.0);
    // The steered answers bring the readers' words (`simple`, `That's`, ...), but in this tiny random
    // model only once greedy decoding has collapsed into loops: the coherence search tries those
    // strengths and stops below them.
    let with_words: Vec<f32> = result
        .tried
        .iter()
        .filter(|t| count(&t.answers) > count(&result.unsteered.answers))
        .map(|t| t.strength)
        .collect();
    assert!(
        !with_words.is_empty(),
        "no strength brings the readers' words"
    );
    assert!(
        with_words.iter().all(|s| *s > chosen.strength),
        "{with_words:?} vs chosen {}",
        chosen.strength
    );
    assert!(result
        .tried
        .iter()
        .filter(|t| with_words.contains(&t.strength))
        .all(|t| !t.coherent));
}
