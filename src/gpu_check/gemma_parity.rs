//! Gemma-2 against HF transformers: every hook of every layer and the logits of each golden prompt
//! (`fixtures/gemma/generate_fixtures.py`: eager attention, f32; one model with a sliding window shorter than
//! the prompts, one with GQA and BF16 shards).

use gemma_model::{load_dir, HookPoint, LoadOptions, RunRequest, TokenBatch};
use serde::Deserialize;

use super::golden::{read_golden, read_json, relative_error, tensor, Tally};
use super::{CheckError, CheckOptions, CheckRecord};

/// The golden models under `fixtures/gemma`.
pub const MODELS: [&str; 2] = ["tiny-window", "tiny-gqa-bf16"];

#[derive(Deserialize)]
struct GoldenPrompt {
    index: usize,
    n_tokens: usize,
}

#[derive(Deserialize)]
struct GoldenMeta {
    prompts: Vec<GoldenPrompt>,
}

pub fn check(options: &CheckOptions) -> Result<CheckRecord, CheckError> {
    let mut tally = Tally::new("gemma_parity", options.tolerances.gemma);
    for model_name in MODELS {
        let dir = options.fixtures.join("gemma").join(model_name);
        let golden_path = dir.join("golden.safetensors");
        let golden = read_golden(&golden_path)?;
        let meta: GoldenMeta = read_json(&dir.join("golden.json"))?;
        let loaded = load_dir(&dir, &LoadOptions::default().with_backend(options.backend))?;
        let hooks = HookPoint::all(loaded.model.config().num_hidden_layers);
        let request = RunRequest::capture(hooks.iter().copied()).with_logits();
        let mut model_worst = 0f64;
        for prompt in &meta.prompts {
            let i = prompt.index;
            let key = |name: &str| format!("prompt.{i}.{name}");
            let ids: Vec<u32> = tensor(&golden, &golden_path, &key("input_ids"))?
                .values
                .iter()
                .map(|v| *v as u32)
                .collect();
            tally.require(
                &format!("{model_name} prompt {i} has {} tokens", prompt.n_tokens),
                ids.len() == prompt.n_tokens,
            );
            let out = loaded.model.run(&TokenBatch::single(ids)?, &request)?;
            let mut compare = |name: String, actual: Option<&[f32]>| {
                let what = format!("{model_name} prompt {i} {name}");
                match (actual, golden.get(&key(&name))) {
                    (Some(a), Some(e)) => {
                        let err = relative_error(a, &e.values);
                        model_worst = model_worst.max(err);
                        tally.record(&what, err);
                    }
                    _ => tally.require(&format!("{what} present on both sides"), false),
                }
            };
            for hook in &hooks {
                compare(
                    hook.to_string(),
                    out.activations.get(hook).and_then(|a| a.as_slice()),
                );
            }
            compare(
                "logits".into(),
                out.logits.as_ref().and_then(|l| l.as_slice()),
            );
        }
        tally.note(format!(
            "{model_name}: {} prompts x ({} hooks + logits), worst relative error {model_worst:.2e}",
            meta.prompts.len(),
            hooks.len()
        ));
    }
    Ok(tally.finish())
}
