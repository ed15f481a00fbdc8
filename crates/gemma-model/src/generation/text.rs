//! Prompts in, texts out: the `generate` example's job as a library call, and its JSON file.

use std::path::Path;

use serde::Serialize;

use super::{generate, GenerationConfig, ModelStepper, StopReason};
use crate::error::{GemmaError, Result};
use crate::language_model::LoadedModel;
use crate::tokenizer::ChatMessage;

/// One prompt's generation, as the `generate` example writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextGeneration {
    /// The prompt as given (before the chat template).
    pub prompt: String,
    /// The prompt's token ids (template and `<bos>` included).
    pub prompt_ids: Vec<u32>,
    /// The generated ids only (the stop token included if one was hit).
    pub token_ids: Vec<u32>,
    /// The generated text, special tokens left out.
    pub text: String,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// The file the `generate` example writes: `{"generations": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationsFile {
    /// The model (hub id or directory).
    pub model: String,
    /// Whether prompts went through the chat template.
    pub chat_template: bool,
    /// One entry per prompt, in order.
    pub generations: Vec<TextGeneration>,
}

impl GenerationsFile {
    /// Writes the file as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| GemmaError::InvalidInput {
            reason: format!("cannot serialise the generations: {e}"),
        })?;
        stereo_core::atomic_file::write_atomic(path, text.as_bytes())
            .map_err(|e| GemmaError::io(e.path, e.source))
    }
}

/// Generates a continuation of each prompt (raw, or as one user turn through the chat template) in one
/// left-padded batch; `on_token(row, token)` sees every new token as it is chosen.
pub fn generate_texts(
    loaded: &LoadedModel,
    prompts: &[String],
    chat_template: bool,
    config: &GenerationConfig,
    on_token: &mut dyn FnMut(usize, u32),
) -> Result<Vec<TextGeneration>> {
    let tokenizer = loaded
        .tokenizer
        .as_ref()
        .ok_or_else(|| GemmaError::InvalidInput {
            reason: format!(
                "the model {} has no tokenizer.json to encode prompts with",
                loaded.model.name()
            ),
        })?;
    if prompts.is_empty() {
        return Err(GemmaError::InvalidInput {
            reason: "no prompt to generate from".into(),
        });
    }
    let ids = prompts
        .iter()
        .map(|p| {
            if chat_template {
                tokenizer.encode_chat(&[ChatMessage::user(p.clone())], true)
            } else {
                tokenizer.encode(p)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let capacity = ids.iter().map(Vec::len).max().unwrap_or(0) + config.max_new_tokens;
    let mut stepper = ModelStepper::new(loaded.model.as_ref(), ids.len(), capacity)?;
    let generations = generate(&mut stepper, &ids, config, Some(tokenizer), on_token)?;
    generations
        .into_iter()
        .zip(prompts)
        .map(|(g, prompt)| {
            Ok(TextGeneration {
                prompt: prompt.clone(),
                text: tokenizer.decode_text(&g.token_ids)?,
                prompt_ids: g.prompt_ids,
                token_ids: g.token_ids,
                stop: g.stop,
            })
        })
        .collect()
}
