//! The Gemma tokenizer (`tokenizer.json` through the `tokenizers` crate) and the Gemma chat template.
//!
//! BOS is handled like HF: every encoded prompt starts with exactly one `<bos>`. A text that already
//! starts with the literal `<bos>` (a rendered chat template, say) does not get a second one; HF's
//! `tokenizer(text)` would prepend another, which is never what a caller wants.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{GemmaError, Result};

/// Who speaks a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model (HF calls it `assistant`; the template renders `model`).
    #[serde(alias = "assistant")]
    Model,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// The speaker.
    pub role: Role,
    /// The text (stripped of surrounding whitespace when rendered, as the template does).
    pub content: String,
}

impl ChatMessage {
    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    /// A model turn.
    pub fn model(content: impl Into<String>) -> Self {
        ChatMessage {
            role: Role::Model,
            content: content.into(),
        }
    }
}

/// Renders the Gemma-2 chat template exactly as the hub's jinja template does:
/// `<bos><start_of_turn>user\n{content.strip()}<end_of_turn>\n...<start_of_turn>model\n`.
///
/// Roles must alternate starting with the user; there is no system role.
pub fn render_chat_template(
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String> {
    if messages.is_empty() {
        return Err(GemmaError::ChatTemplate {
            reason: "the conversation has no messages".into(),
        });
    }
    let mut out = String::from("<bos>");
    for (i, m) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 { Role::User } else { Role::Model };
        if m.role != expected {
            return Err(GemmaError::ChatTemplate {
                reason: format!(
                    "roles must alternate user/model/user/..., but message {i} is from {:?}",
                    m.role
                ),
            });
        }
        let role = match m.role {
            Role::User => "user",
            Role::Model => "model",
        };
        out.push_str("<start_of_turn>");
        out.push_str(role);
        out.push('\n');
        out.push_str(python_strip(&m.content));
        out.push_str("<end_of_turn>\n");
    }
    if add_generation_prompt {
        out.push_str("<start_of_turn>model\n");
    }
    Ok(out)
}

/// `str.strip()` of Python (jinja's `trim`): Rust's whitespace plus the ASCII separators 0x1C-0x1F.
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A Gemma tokenizer loaded from `tokenizer.json`.
#[derive(Clone)]
pub struct GemmaTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    path: PathBuf,
}

impl std::fmt::Debug for GemmaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemmaTokenizer")
            .field("path", &self.path)
            .field("bos_id", &self.bos_id)
            .finish()
    }
}

impl GemmaTokenizer {
    /// Loads `tokenizer.json`; the BOS token is `<bos>`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(GemmaError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            ));
        }
        let bad = |reason: String| GemmaError::Tokenizer {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| GemmaError::io(&path, e))?;
        // Malformed JSON is reported here, with its line and column: the tokenizers library panics on
        // some of it (0.22, inside its decoder deserialisation) instead of returning an error.
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let parsed = std::panic::catch_unwind(|| text.parse::<Tokenizer>()).map_err(|_| {
            bad("the tokenizers library panicked reading it (a malformed section)".into())
        })?;
        let inner = parsed.map_err(|e| bad(e.to_string()))?;
        let bos_id = inner
            .token_to_id("<bos>")
            .ok_or_else(|| GemmaError::Tokenizer {
                path: path.clone(),
                reason: "the vocabulary has no `<bos>` token".into(),
            })?;
        Ok(GemmaTokenizer {
            inner,
            bos_id,
            path,
        })
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `<bos>` id.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The id of a token string, if it is in the vocabulary (e.g. `"<start_of_turn>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes `text` without any special token added.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes `text` with exactly one leading `<bos>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_raw(text)?;
        if ids.first() != Some(&self.bos_id) {
            ids.insert(0, self.bos_id);
        }
        Ok(ids)
    }

    /// Renders `messages` with the chat template and encodes them (one `<bos>`).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(&render_chat_template(messages, add_generation_prompt)?)
    }

    /// The token strings of `ids` (`▁` marks a leading space, as in the vocabulary).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| {
                self.inner
                    .id_to_token(id)
                    .unwrap_or_else(|| format!("<id {id}>"))
            })
            .collect()
    }

    /// Decodes `ids` to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Decodes `ids` to readable text: special tokens (`<eos>`, `<end_of_turn>`, ...) are left out.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| GemmaError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Whether two tokenizers map every text to the same ids (same vocabulary, merges, normaliser
    /// and added tokens).
    pub fn same_as(&self, other: &GemmaTokenizer) -> bool {
        self.inner.to_string(false).ok() == other.inner.to_string(false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_single_turn() {
        let s = render_chat_template(&[ChatMessage::user("  Hi there \n")], true).unwrap();
        assert_eq!(
            s,
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn template_multi_turn_without_generation_prompt() {
        let msgs = [
            ChatMessage::user("a"),
            ChatMessage::model("b"),
            ChatMessage::user("c"),
        ];
        let s = render_chat_template(&msgs, false).unwrap();
        assert_eq!(s, "<bos><start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nb<end_of_turn>\n<start_of_turn>user\nc<end_of_turn>\n");
    }

    #[test]
    fn template_refuses_bad_conversations() {
        assert!(render_chat_template(&[], true).is_err());
        assert!(render_chat_template(&[ChatMessage::model("x")], true).is_err());
        assert!(
            render_chat_template(&[ChatMessage::user("x"), ChatMessage::user("y")], true).is_err()
        );
    }

    #[test]
    fn roles_deserialise_with_the_hf_alias() {
        let m: ChatMessage =
            serde_json::from_str(r#"{"role": "assistant", "content": "x"}"#).unwrap();
        assert_eq!(m.role, Role::Model);
        assert!(
            serde_json::from_str::<ChatMessage>(r#"{"role": "system", "content": "x"}"#).is_err()
        );
    }
}
