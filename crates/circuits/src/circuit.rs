//! One call for a latent's whole circuit: its writers, its readers when the chat model has layers after
//! the crosscoder's, in one [`CircuitReport`].

use crosscoder::Crosscoder;
use gemma_model::{GemmaTokenizer, LanguageModel};
use model_pair::{PromptInput, TokenizationMode};

use crate::error::{CircuitError, Result};
use crate::output::{CircuitReport, SCHEMA_VERSION};
use crate::readers::{find_readers, ReaderSpec};
use crate::writers::{attribute_writers, WriterSpec};

/// How to map a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOptions {
    /// The crosscoder's layer, when its config does not record it.
    pub layer: Option<usize>,
    /// Prompts per forward batch.
    pub batch_size: usize,
    /// How text prompts are tokenized.
    pub tokenization: TokenizationMode,
    /// Measure the readers too (needs the chat model beyond the layer).
    pub readers: bool,
    /// Top heads whose attention patterns are kept, on how many prompts.
    pub pattern_heads: usize,
    /// Prompts per kept head.
    pub pattern_prompts: usize,
    /// Neurons listed per MLP reader.
    pub top_neurons: usize,
}

impl Default for CircuitOptions {
    /// The crosscoder's layer, batches of 8, raw tokenization, readers, 3 heads x 3 prompts of
    /// patterns, 5 neurons.
    fn default() -> Self {
        CircuitOptions {
            layer: None,
            batch_size: 8,
            tokenization: TokenizationMode::Raw,
            readers: true,
            pattern_heads: 3,
            pattern_prompts: 3,
            top_neurons: 5,
        }
    }
}

/// What a circuit is mapped with: base (to the layer) and chat (beyond it for readers), their
/// tokenizer, the crosscoder and its name.
#[derive(Clone, Copy)]
pub struct CircuitModels<'a> {
    /// Base (0) and chat (1).
    pub models: [&'a dyn LanguageModel; 2],
    /// Their tokenizer.
    pub tokenizer: &'a GemmaTokenizer,
    /// The crosscoder.
    pub crosscoder: &'a dyn Crosscoder,
    /// Its name (hub id or path), for the report.
    pub crosscoder_name: &'a str,
}

/// Maps latent `latent`'s circuit on `prompts` (described by `label`).
pub fn map_circuit(
    with: CircuitModels<'_>,
    prompts: &[PromptInput],
    label: &str,
    latent: usize,
    options: &CircuitOptions,
) -> Result<CircuitReport> {
    let layer = options
        .layer
        .or(with.crosscoder.config().layer)
        .ok_or_else(|| CircuitError::InvalidInput {
            reason: "the crosscoder does not record its layer; give it".into(),
        })?;
    let mut writer_spec = WriterSpec::new(latent, layer);
    writer_spec.batch_size = options.batch_size;
    writer_spec.tokenization = options.tokenization;
    writer_spec.pattern_heads = options.pattern_heads;
    writer_spec.pattern_prompts = options.pattern_prompts;
    let (writers, _) = attribute_writers(
        with.models,
        with.tokenizer,
        with.crosscoder,
        prompts,
        &writer_spec,
    )?;
    let chat = with.models[1];
    let last_layer = chat.loaded_layers().saturating_sub(1);
    let readers = if options.readers && last_layer > layer {
        let mut spec = ReaderSpec::new(latent, layer);
        spec.batch_size = options.batch_size;
        spec.tokenization = options.tokenization;
        spec.top_neurons = options.top_neurons;
        Some(find_readers(
            with.models,
            with.tokenizer,
            with.crosscoder,
            prompts,
            &spec,
        )?)
    } else {
        None
    };
    Ok(CircuitReport {
        schema_version: SCHEMA_VERSION,
        models: [with.models[0].name().to_string(), chat.name().to_string()],
        crosscoder: with.crosscoder_name.to_string(),
        latent,
        layer,
        prompts: label.to_string(),
        heads: chat.config().num_attention_heads,
        last_layer,
        writers,
        readers,
    })
}
