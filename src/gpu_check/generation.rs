//! Greedy generation against HF transformers `generate`: the trained tiny fixtures of
//! `fixtures/generation` (a left-padded batch of raw prompts, chat-templated conversations, one prompt far
//! past the sliding window), token for token, and each step's logits within the Gemma tolerance.

use std::collections::BTreeMap;

use gemma_model::generation::{generate, GenerationConfig, ModelStepper};
use gemma_model::{load_dir, LoadOptions};
use serde::Deserialize;

use super::golden::{read_golden, read_json, relative_error, tensor, Tally};
use super::{CheckError, CheckOptions, CheckRecord};

/// The generation fixtures under `fixtures/generation`.
pub const MODELS: [&str; 2] = ["tiny-window", "tiny-gqa-bf16"];

#[derive(Deserialize)]
struct Golden {
    eos_token_ids: Vec<u32>,
    cases: BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Case {
    prompts: Vec<Vec<u32>>,
    generated: Vec<Vec<u32>>,
}

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let mut tally = Tally::new("generation", options.tolerances.gemma);
    for model_name in MODELS {
        let dir = options.fixtures.join("generation").join(model_name);
        let golden_path = dir.join("generation_golden.safetensors");
        let tensors = read_golden(&golden_path)?;
        let golden: Golden = read_json(&dir.join("generation_golden.json"))?;
        let loaded = load_dir(&dir, &LoadOptions::default().with_backend(options.backend))?;
        let config = loaded.model.config();
        for (name, case) in &golden.cases {
            let new_tokens = case.generated.first().map_or(0, Vec::len);
            let generation = GenerationConfig {
                stop_token_ids: golden.eos_token_ids.clone(),
                keep_logits: true,
                ..GenerationConfig::greedy(new_tokens, config)
            };
            let capacity = case.prompts.iter().map(Vec::len).max().unwrap_or(0) + new_tokens;
            let mut stepper =
                ModelStepper::new(loaded.model.as_ref(), case.prompts.len(), capacity)?;
            let ours = generate(
                &mut stepper,
                &case.prompts,
                &generation,
                None,
                &mut |_, _| {},
            )?;
            let logits = tensor(&tensors, &golden_path, &format!("{name}.logits"))?;
            let vocab = logits.shape[2];
            let batch = logits.shape[1];
            for (row, g) in ours.iter().enumerate() {
                let hf = &case.generated[row];
                let end = hf
                    .iter()
                    .position(|t| golden.eos_token_ids.contains(t))
                    .map_or(hf.len(), |i| i + 1);
                tally.require(
                    &format!("{model_name}/{name} row {row}: the same tokens as HF"),
                    g.token_ids == hf[..end],
                );
                if let Some(stepped) = &g.logits {
                    for (step, values) in stepped.rows().into_iter().enumerate() {
                        let start = (step * batch + row) * vocab;
                        let expected = &logits.values[start..start + vocab];
                        let actual: Vec<f32> = values.to_vec();
                        tally.record(
                            &format!("{model_name}/{name} row {row} step {step} logits"),
                            relative_error(&actual, expected),
                        );
                    }
                }
            }
        }
        tally.note(format!(
            "{model_name}: {} cases greedy, tokens and per-step logits against HF generate",
            golden.cases.len()
        ));
    }
    Ok(tally.finish())
}
