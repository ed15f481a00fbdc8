//! Greedy generation equals HF transformers `generate(do_sample=False)` token for token, and its
//! per-step logits to 1e-4, on the trained tiny fixtures of `fixtures/generation/` (made by
//! `generate_generation_fixtures.py`): a left-padded batch of raw prompts, a batch of chat-templated
//! conversations (whose prompt ids our template must reproduce), and one prompt decoded far past the
//! sliding window; f32 and bf16-sharded GQA models; fused and burn-op kernels, flex and ndarray.

mod common;

use std::path::PathBuf;

use common::read_tensors;
use gemma_model::generation::{
    generate, generate_texts, GenerationConfig, GenerationDefaults, ModelStepper, StopReason,
};
use gemma_model::{load_dir, BackendKind, ChatMessage, LoadOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    eos_token_ids: Vec<u32>,
    cases: std::collections::BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Case {
    prompts: Vec<Vec<u32>>,
    generated: Vec<Vec<u32>>,
    min_margin: f64,
    #[serde(default)]
    texts: Vec<String>,
    #[serde(default)]
    messages: Vec<Vec<ChatMessage>>,
}

fn dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/generation")
        .join(model)
}

fn golden(model: &str) -> Golden {
    let text = std::fs::read_to_string(dir(model).join("generation_golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// HF's row up to and including its first stop token (HF pads a finished row).
fn until_stop(row: &[u32], stop: &[u32]) -> Vec<u32> {
    let end = row
        .iter()
        .position(|t| stop.contains(t))
        .map_or(row.len(), |i| i + 1);
    row[..end].to_vec()
}

fn check(model: &str, backend: BackendKind, fused_kernels: bool) {
    let golden = golden(model);
    let tensors = read_tensors(&dir(model).join("generation_golden.safetensors"));
    let options = LoadOptions {
        fused_kernels,
        ..LoadOptions::default()
    }
    .with_backend(backend);
    let loaded = load_dir(dir(model), &options).unwrap();
    let config = loaded.model.config();
    let defaults = GenerationDefaults::for_dir(dir(model), config).unwrap();
    assert_eq!(defaults.eos_token_ids, golden.eos_token_ids);
    for (name, case) in &golden.cases {
        assert!(case.min_margin >= 1e-3, "{name}: a near tie in the golden");
        let tokenizer = loaded.tokenizer.as_ref().unwrap();
        // Our tokenizer and chat template give HF's prompt ids.
        let encoded: Vec<Vec<u32>> = if case.messages.is_empty() {
            case.texts
                .iter()
                .map(|t| tokenizer.encode(t).unwrap())
                .collect()
        } else {
            case.messages
                .iter()
                .map(|m| tokenizer.encode_chat(m, true).unwrap())
                .collect()
        };
        assert_eq!(encoded, case.prompts, "{model}/{name}: prompt ids");

        let new_tokens = case.generated[0].len();
        let generation = GenerationConfig {
            keep_logits: true,
            ..defaults.config(new_tokens, 0, config)
        };
        let capacity = case.prompts.iter().map(Vec::len).max().unwrap() + new_tokens;
        let mut stepper =
            ModelStepper::new(loaded.model.as_ref(), case.prompts.len(), capacity).unwrap();
        let ours = generate(
            &mut stepper,
            &case.prompts,
            &generation,
            Some(tokenizer),
            &mut |_, _| {},
        )
        .unwrap();
        let logits = &tensors[&format!("{name}.logits")]; // [steps, batch, vocab]
        for (row, generation) in ours.iter().enumerate() {
            let expected = until_stop(&case.generated[row], &golden.eos_token_ids);
            assert_eq!(
                generation.token_ids, expected,
                "{model}/{name} row {row} ({backend}, fused {fused_kernels})"
            );
            let stepped = generation.logits.as_ref().unwrap();
            for (step, ours) in stepped.rows().into_iter().enumerate() {
                let reference: Vec<f64> = (0..config.vocab_size)
                    .map(|v| logits[[step, row, v]])
                    .collect();
                let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let err = ours
                    .iter()
                    .zip(&reference)
                    .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs() / scale));
                assert!(err < 1e-4, "{model}/{name} row {row} step {step}: {err:e}");
            }
        }
    }
}

#[test]
fn greedy_generation_equals_hf_on_the_window_model() {
    check("tiny-window", BackendKind::Flex, true);
    check("tiny-window", BackendKind::Flex, false);
}

#[test]
fn greedy_generation_equals_hf_on_the_bf16_gqa_model() {
    check("tiny-gqa-bf16", BackendKind::Flex, true);
}

#[test]
fn greedy_generation_equals_hf_on_ndarray() {
    check("tiny-window", BackendKind::NdArray, false);
}

#[test]
fn generate_texts_encodes_decodes_and_matches_hf() {
    let golden = golden("tiny-gqa-bf16");
    let loaded = load_dir(dir("tiny-gqa-bf16"), &LoadOptions::default()).unwrap();
    let tokenizer = loaded.tokenizer.as_ref().unwrap();
    for (name, chat) in [("raw", false), ("chat", true)] {
        let case = &golden.cases[name];
        // generate_texts sends one user turn: the single-turn conversations (multi-turn ones are
        // checked above), each row against its golden row.
        let rows: Vec<usize> = (0..case.prompts.len())
            .filter(|r| !chat || case.messages[*r].len() == 1)
            .collect();
        let prompts: Vec<String> = rows
            .iter()
            .map(|r| {
                if chat {
                    case.messages[*r][0].content.clone()
                } else {
                    case.texts[*r].clone()
                }
            })
            .collect();
        let config = loaded
            .generation
            .config(case.generated[0].len(), 0, loaded.model.config());
        let mut streamed = vec![Vec::new(); prompts.len()];
        let out = generate_texts(&loaded, &prompts, chat, &config, &mut |row, t| {
            streamed[row].push(t)
        })
        .unwrap();
        for ((i, g), row) in out.iter().enumerate().zip(rows) {
            assert_eq!(g.prompt_ids, case.prompts[row]);
            assert_eq!(
                g.token_ids,
                until_stop(&case.generated[row], &golden.eos_token_ids)
            );
            assert_eq!(streamed[i], g.token_ids);
            assert_eq!(g.text, tokenizer.decode_text(&g.token_ids).unwrap());
            let stopped = golden.eos_token_ids.contains(g.token_ids.last().unwrap());
            assert_eq!(matches!(g.stop, StopReason::StopToken(_)), stopped);
        }
    }
}
