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
    /// A token the model speaks: the content of a model turn and the `<end_of_turn>` that closes it
    /// (HF's assistant-token mask, the `{% generation %}` block of the Gemma template). Stores and
    /// runs written before roles were recorded read as `false`.
    #[serde(default)]
    pub is_assistant: bool,
}

/// Who a token belongs to, for attributing a latent's activation mass.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// The `<bos>` token.
    Bos,
    /// A padding row.
    Pad,
    /// Chat-template control: `<start_of_turn>`, the role name and newline, `<end_of_turn>` and its
    /// newline (the `<end_of_turn>` closing a model turn counts here too).
    Template,
    /// Text the user wrote (every content token of a raw-text prompt).
    User,
    /// Text of a model turn.
    Assistant,
}

impl TokenRole {
    /// Every role, in display order.
    pub const ALL: [TokenRole; 5] = [
        TokenRole::Bos,
        TokenRole::User,
        TokenRole::Assistant,
        TokenRole::Template,
        TokenRole::Pad,
    ];

    /// The role's name in JSON and reports.
    pub fn name(self) -> &'static str {
        match self {
            TokenRole::Bos => "bos",
            TokenRole::Pad => "pad",
            TokenRole::Template => "template",
            TokenRole::User => "user",
            TokenRole::Assistant => "assistant",
        }
    }
}

impl TokenMeta {
    /// Neither BOS, padding nor template: a token of the user's own text.
    pub fn is_content(&self) -> bool {
        !(self.is_bos || self.is_pad || self.is_template)
    }

    /// The token's role (template wins over assistant for the `<end_of_turn>` of a model turn).
    pub fn role(&self) -> TokenRole {
        if self.is_bos {
            TokenRole::Bos
        } else if self.is_pad {
            TokenRole::Pad
        } else if self.is_template {
            TokenRole::Template
        } else if self.is_assistant {
            TokenRole::Assistant
        } else {
            TokenRole::User
        }
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

/// A tokenized prompt: its ids and, per token, whether it is chat-template control and whether the
/// model speaks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPrompt {
    /// The token ids (starting with `<bos>`).
    pub ids: Vec<u32>,
    /// [`template_flags`] of the ids.
    pub template: Vec<bool>,
    /// [`assistant_flags`] of the ids.
    pub assistant: Vec<bool>,
}

impl TokenizedPrompt {
    /// `ids` with their flags.
    pub fn new(tokenizer: &GemmaTokenizer, ids: Vec<u32>) -> Self {
        TokenizedPrompt {
            template: template_flags(tokenizer, &ids),
            assistant: assistant_flags(tokenizer, &ids),
            ids,
        }
    }

    /// Keeps the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        self.template.truncate(len);
        self.assistant.truncate(len);
    }

    /// The metadata rows of the prompt, number `prompt` of a run (no padding rows).
    pub fn token_meta(&self, prompt: usize, bos_id: u32) -> Vec<TokenMeta> {
        (0..self.ids.len())
            .map(|position| TokenMeta {
                prompt,
                position,
                token_id: self.ids[position],
                is_bos: position == 0 && self.ids[position] == bos_id,
                is_pad: false,
                is_template: self.template[position],
                is_assistant: self.assistant[position],
            })
            .collect()
    }
}

/// `prompt` tokenized in `mode` with `tokenizer`, with the flags of each token.
pub fn tokenize_prompt(
    tokenizer: &GemmaTokenizer,
    prompt: &PromptInput,
    mode: TokenizationMode,
) -> Result<TokenizedPrompt> {
    let ids = match (prompt, mode) {
        (PromptInput::Text(text), TokenizationMode::Raw) => tokenizer.encode(text)?,
        (PromptInput::Text(text), TokenizationMode::ChatTemplate) => {
            tokenizer.encode_chat(&[ChatMessage::user(text.clone())], true)?
        }
        (PromptInput::Chat(messages), _) => tokenizer.encode_chat(messages, true)?,
    };
    Ok(TokenizedPrompt::new(tokenizer, ids))
}

/// Marks the tokens the model speaks: from the newline after `<start_of_turn>model` to the
/// `<end_of_turn>` that closes the turn, both ends' content and that `<end_of_turn>` included (HF's
/// `return_assistant_tokens_mask` with the Gemma template's `{% generation %}` block). A trailing
/// generation prompt (`<start_of_turn>model\n` with nothing after it) marks nothing.
pub fn assistant_flags(tokenizer: &GemmaTokenizer, ids: &[u32]) -> Vec<bool> {
    let start = tokenizer.token_to_id("<start_of_turn>");
    let end = tokenizer.token_to_id("<end_of_turn>");
    let model = tokenizer.token_to_id("model");
    let newline = tokenizer.token_to_id("\n");
    let mut flags = vec![false; ids.len()];
    let mut in_model_turn = false;
    let mut i = 0;
    while i < ids.len() {
        let id = Some(ids[i]);
        if id == start {
            in_model_turn = i + 1 < ids.len() && Some(ids[i + 1]) == model;
            // Skip the role name and its newline.
            i += if i + 2 < ids.len() && Some(ids[i + 2]) == newline {
                3
            } else {
                2
            };
            continue;
        }
        if in_model_turn {
            flags[i] = true;
            if id == end {
                in_model_turn = false;
            }
        }
        i += 1;
    }
    flags
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
