//! What goes into a stereo run and what comes out: prompts, how they are tokenized, and the paired
//! activations with one [`TokenMeta`] per row.

use gemma_model::{ChatMessage, GemmaTokenizer};
use ndarray::Array3;

use crate::error::Result;

/// One prompt: raw text, or a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Text, tokenized with one leading `<bos>` (chat-templated as one user turn in
    /// [`TokenizationMode::ChatTemplate`]).
    Text(String),
    /// A conversation (user first, alternating); rendered with the chat template in both modes.
    Chat(Vec<ChatMessage>),
}

impl From<&str> for PromptInput {
    fn from(text: &str) -> Self {
        PromptInput::Text(text.to_string())
    }
}

/// How text prompts become tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizationMode {
    /// `<bos>` + the text, the same for both models (the seed notebook's mode).
    #[default]
    Raw,
    /// The Gemma chat template, one user turn plus the generation prompt, for both models.
    ChatTemplate,
}

/// What one row of a stereo run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenMeta {
    /// Index of the prompt in the run.
    pub prompt: usize,
    /// Position of the token in its prompt (0 = `<bos>`).
    pub position: usize,
    /// The token id.
    pub token_id: u32,
    /// The `<bos>` token (the attention sink: huge norm, excluded from statistics by default).
    pub is_bos: bool,
    /// A padding row (only present when padding rows are kept).
    pub is_pad: bool,
    /// A chat-template token: `<start_of_turn>`, the role name and its newline, `<end_of_turn>` and
    /// its newline.
    pub is_template: bool,
}

impl TokenMeta {
    /// Neither BOS, padding nor template: a token of the user's own text.
    pub fn is_content(&self) -> bool {
        !(self.is_bos || self.is_pad || self.is_template)
    }
}

/// Paired activations of a stereo run.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedActivations {
    /// `[tokens, 2, d_model]`: row `i` holds the base (`[i, 0, :]`) and chat (`[i, 1, :]`) activation
    /// of token `tokens[i]`.
    pub activations: Array3<f32>,
    /// One entry per row.
    pub tokens: Vec<TokenMeta>,
}

impl PairedActivations {
    /// Number of rows.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Row indices of prompt `p`, in position order.
    pub fn rows_of_prompt(&self, p: usize) -> Vec<usize> {
        self.tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| t.prompt == p)
            .map(|(i, _)| i)
            .collect()
    }
}

/// Token ids of `prompt` in `mode` with `tokenizer`, with the chat-template flag of each token.
pub fn tokenize_prompt(
    tokenizer: &GemmaTokenizer,
    prompt: &PromptInput,
    mode: TokenizationMode,
) -> Result<(Vec<u32>, Vec<bool>)> {
    let ids = match (prompt, mode) {
        (PromptInput::Text(text), TokenizationMode::Raw) => tokenizer.encode(text)?,
        (PromptInput::Text(text), TokenizationMode::ChatTemplate) => {
            tokenizer.encode_chat(&[ChatMessage::user(text.clone())], true)?
        }
        (PromptInput::Chat(messages), _) => tokenizer.encode_chat(messages, true)?,
    };
    let template = template_flags(tokenizer, &ids);
    Ok((ids, template))
}

/// The metadata rows of one tokenized prompt (`ids` with their chat-template flags; no padding rows).
pub fn token_meta(prompt: usize, ids: &[u32], template: &[bool], bos_id: u32) -> Vec<TokenMeta> {
    ids.iter()
        .zip(template)
        .enumerate()
        .map(|(position, (&token_id, &is_template))| TokenMeta {
            prompt,
            position,
            token_id,
            is_bos: position == 0 && token_id == bos_id,
            is_pad: false,
            is_template,
        })
        .collect()
}

/// Marks the chat-template tokens of `ids`: `<start_of_turn>`, the role token after it and the
/// newline after the role, `<end_of_turn>` and the newline after it.
pub fn template_flags(tokenizer: &GemmaTokenizer, ids: &[u32]) -> Vec<bool> {
    let start = tokenizer.token_to_id("<start_of_turn>");
    let end = tokenizer.token_to_id("<end_of_turn>");
    let newline = tokenizer.token_to_id("\n");
    let mut flags = vec![false; ids.len()];
    let mut i = 0;
    while i < ids.len() {
        let id = Some(ids[i]);
        if id == start {
            flags[i] = true;
            if i + 1 < ids.len() {
                flags[i + 1] = true; // the role name
            }
            if i + 2 < ids.len() && Some(ids[i + 2]) == newline {
                flags[i + 2] = true;
            }
            i += 3;
        } else if id == end {
            flags[i] = true;
            if i + 1 < ids.len() && Some(ids[i + 1]) == newline {
                flags[i + 1] = true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    flags
}
