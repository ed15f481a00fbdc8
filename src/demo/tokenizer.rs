//! The demo tokenizer: Gemma's special tokens and chat-template tokens at Gemma's ids, and one token
//! per word of the persona dataset and of the demo corpus.
//!
//! It is a `tokenizers` BPE model with Gemma's normaliser (`" "` -> `"▁"`), byte fallback and
//! decoder, and two differences from the real file, both so that every word is one token:
//!
//! - a `Split` pre-tokenizer cuts the text into words (`▁?[A-Za-z0-9'-]+`), single other
//!   characters, runs of `▁` and single whitespace characters;
//! - `ignore_merges: true` and no merges: a word in the vocabulary is one token, any other word
//!   falls back to its characters, and characters outside the vocabulary to `<0xNN>` byte pieces
//!   (nothing is ever `<unk>`).
//!
//! Id layout (the real Gemma ids where it matters):
//!
//! | ids | tokens |
//! |---|---|
//! | 0-4 | `<pad>` `<eos>` `<bos>` `<unk>` `<mask>` (special) |
//! | 5, 6 | `<2mass>`, `[@BOS@]` |
//! | 7-105 | `<unused0>` ... `<unused98>` (added, not special) |
//! | 106, 107 | `<start_of_turn>`, `<end_of_turn>` (special) |
//! | 108 | `"\n"` |
//! | 109-364 | `<0x00>` ... `<0xFF>` |
//! | 365-... | `▁`, the printable ASCII characters with and without `▁`, then every word with and without `▁`, sorted |

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::error::{DemoError, Result};

/// The pre-tokenizer's pattern, applied after `" "` became `"▁"`.
pub const PRE_TOKENIZER_PATTERN: &str = r"▁?[A-Za-z0-9'\-]+|▁?[^A-Za-z0-9'\-▁\s]|▁+|\s";

/// Id of `"\n"`, as in Gemma.
pub const NEWLINE_ID: u32 = 108;
/// Id of `<start_of_turn>`, as in Gemma.
pub const START_OF_TURN_ID: u32 = 106;
/// Id of `<end_of_turn>`, as in Gemma.
pub const END_OF_TURN_ID: u32 = 107;

/// The Gemma-2-it chat template, exactly as on the hub.
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

/// Whether `c` belongs to a word (`[A-Za-z0-9'-]`).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '\'' || c == '-'
}

/// The words of a text: maximal runs of `[A-Za-z0-9'-]`, as the pre-tokenizer cuts them.
pub fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
}

/// The vocabulary: token strings in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    tokens: Vec<String>,
    /// Number of distinct words (each appears with and without `▁`).
    n_words: usize,
}

/// Whether the token at `id` is a special token (`special: true` in `added_tokens`).
fn is_special(id: usize) -> bool {
    matches!(id, 0..=4 | 106 | 107)
}

impl Vocabulary {
    /// The vocabulary covering `words` (plus everything the layout above fixes).
    pub fn new<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut tokens: Vec<String> = [
            "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<2mass>", "[@BOS@]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokens.extend((0..=98).map(|i| format!("<unused{i}>")));
        tokens.push("<start_of_turn>".into());
        tokens.push("<end_of_turn>".into());
        tokens.push("\n".into());
        tokens.extend((0..=255u32).map(|b| format!("<0x{b:02X}>")));
        tokens.push("\u{2581}".into());
        for c in (33u8..=126).map(char::from) {
            tokens.push(c.to_string());
            tokens.push(format!("\u{2581}{c}"));
        }
        let words: BTreeSet<&str> = words
            .into_iter()
            .filter(|w| w.chars().count() > 1 && w.chars().all(is_word_char))
            .collect();
        for w in &words {
            tokens.push(w.to_string());
            tokens.push(format!("\u{2581}{w}"));
        }
        Vocabulary {
            tokens,
            n_words: words.len(),
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never: the fixed layout has 556 tokens).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Number of words (each is two tokens, with and without `▁`).
    pub fn n_words(&self) -> usize {
        self.n_words
    }

    /// The token strings in id order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The id of the first token of `text` encoded without special tokens: its first word when the
    /// vocabulary has it (without `▁`: it opens the text), else that word's first character;
    /// `None` for a text that starts with no printable ASCII character.
    pub fn first_token_id(&self, text: &str) -> Option<usize> {
        let first = text.chars().next()?;
        let word = if is_word_char(first) {
            text.split(|c: char| !is_word_char(c)).next().unwrap_or("")
        } else {
            ""
        };
        let find = |t: &str| self.tokens.iter().position(|token| token == t);
        find(word)
            .filter(|_| word.chars().count() > 1)
            .or_else(|| find(&first.to_string()))
    }

    /// `tokenizer.json`, built and serialised by the `tokenizers` crate (canonical, deterministic).
    pub fn tokenizer_json(&self) -> Result<String> {
        let vocab: serde_json::Map<String, Value> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), json!(id)))
            .collect();
        let added: Vec<Value> = self.tokens[..108]
            .iter()
            .enumerate()
            .map(|(id, t)| {
                json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": is_special(id)})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": PRE_TOKENIZER_PATTERN},
                              "behavior": "Isolated", "invert": false},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<bos>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}
            },
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "ignore_merges": true,
                      "vocab": vocab, "merges": []}
        });
        let tokenizer: tokenizers::Tokenizer =
            serde_json::from_value(spec).map_err(|e| DemoError::Tokenizer {
                reason: format!("the generated tokenizer spec does not parse: {e}"),
            })?;
        let mut text = tokenizer
            .to_string(true)
            .map_err(|e| DemoError::Tokenizer {
                reason: e.to_string(),
            })?;
        text.push('\n');
        Ok(text)
    }

    /// `tokenizer_config.json` (HF's `GemmaTokenizer` keys and the Gemma-2-it chat template).
    pub fn tokenizer_config_json(&self) -> String {
        let decoder: serde_json::Map<String, Value> = self.tokens[..108]
            .iter()
            .enumerate()
            .map(|(id, t)| {
                (
                    id.to_string(),
                    json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                           "single_word": false, "special": is_special(id)}),
                )
            })
            .collect();
        pretty(&json!({
            "add_bos_token": true,
            "add_eos_token": false,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
            "bos_token": "<bos>",
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": false,
            "eos_token": "<eos>",
            "mask_token": "<mask>",
            "model_max_length": 512,
            "pad_token": "<pad>",
            "padding_side": "left",
            "spaces_between_special_tokens": false,
            "tokenizer_class": "GemmaTokenizer",
            "unk_token": "<unk>",
            "use_default_system_prompt": false
        }))
    }
}

/// `special_tokens_map.json`.
pub fn special_tokens_map_json() -> String {
    let token = |t: &str| json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false});
    pretty(&json!({
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": token("<bos>"),
        "eos_token": token("<eos>"),
        "pad_token": token("<pad>"),
        "unk_token": token("<unk>")
    }))
}

/// Pretty JSON with a trailing newline and every object's keys sorted, whether or not a crate in
/// the build turns on serde_json's `preserve_order` (which would keep insertion order): the files
/// must not depend on feature unification.
pub(crate) fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(&Sorted(value)).expect("JSON values always serialise");
    s.push('\n');
    s
}

/// A JSON value that serialises its objects with sorted keys.
struct Sorted<'a>(&'a Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let sorted: std::collections::BTreeMap<&String, Sorted<'_>> =
                    map.iter().map(|(k, v)| (k, Sorted(v))).collect();
                serializer.collect_map(sorted)
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(Sorted)),
            other => serde::Serialize::serialize(other, serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_word_characters() {
        let w: Vec<&str> = words_of("I'm 5 years old. A 7-year-old's (toy)!").collect();
        assert_eq!(w, ["I'm", "5", "years", "old", "A", "7-year-old's", "toy"]);
    }

    #[test]
    fn layout_matches_gemma_ids() {
        let v = Vocabulary::new(["hello", "x"]);
        assert_eq!(v.tokens()[2], "<bos>");
        assert_eq!(v.tokens()[106], "<start_of_turn>");
        assert_eq!(v.tokens()[107], "<end_of_turn>");
        assert_eq!(v.tokens()[108], "\n");
        assert_eq!(v.tokens()[109], "<0x00>");
        assert_eq!(v.tokens()[364], "<0xFF>");
        assert_eq!(v.n_words(), 1);
        assert_eq!(v.len(), 365 + 1 + 2 * 94 + 2);
    }
}
