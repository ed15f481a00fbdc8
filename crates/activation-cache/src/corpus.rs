//! Corpora: the documents a store is made from, read from plain text or JSONL files.
//!
//! - `.txt` / `.text`: by default one document per non-empty line ([`TextSplit::Lines`]); with
//!   [`TextSplit::Paragraphs`], blocks separated by blank lines (lines joined with `\n`).
//! - `.jsonl` / `.ndjson`: one JSON object per non-empty line, either `{"text": "..."}` or
//!   `{"messages": [{"role": "user", "content": "..."}, ...]}` (roles `user` and `model`/`assistant`,
//!   alternating, user first), rendered with the Gemma chat template. Other keys are ignored.
//!
//! Any unusable line is a [`CacheError::CorpusLine`] naming the file and the 1-based line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use gemma_model::{render_chat_template, ChatMessage, Role};
use sha2::{Digest, Sha256};

use crate::error::{CacheError, Result};
use model_pair::PromptInput;

/// How a plain text file is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextSplit {
    /// One document per non-empty line (the line without its line ending).
    #[default]
    Lines,
    /// One document per block of non-empty lines; blank lines separate documents.
    Paragraphs,
}

/// An ordered list of documents. Document `i` is the `prompt` index of its tokens in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    source: String,
    documents: Vec<PromptInput>,
}

impl Corpus {
    /// Reads a corpus file, choosing the format by extension (`.txt`/`.text`: lines, `.jsonl`/
    /// `.ndjson`: JSON objects). Errors on an unknown extension, an unusable line, or a file with
    /// no document.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("txt" | "text") => Self::from_text_file(path, TextSplit::Lines),
            Some("jsonl" | "ndjson") => Self::from_jsonl_file(path),
            _ => Err(CacheError::CorpusFormat {
                path: path.to_path_buf(),
                reason: "unknown extension: expected .txt (one document per line) or .jsonl \
                         ({\"text\": ...} or {\"messages\": [...]} per line)"
                    .into(),
            }),
        }
    }

    /// Reads a plain text file split by `split`.
    pub fn from_text_file(path: impl AsRef<Path>, split: TextSplit) -> Result<Self> {
        let path = path.as_ref();
        let mut documents = Vec::new();
        let mut paragraph: Vec<String> = Vec::new();
        for (_, line) in lines(path)? {
            let line = line?;
            let blank = line.trim().is_empty();
            match split {
                TextSplit::Lines if !blank => documents.push(PromptInput::Text(line)),
                TextSplit::Lines => {}
                TextSplit::Paragraphs if blank => {
                    if !paragraph.is_empty() {
                        documents.push(PromptInput::Text(paragraph.join("\n")));
                        paragraph.clear();
                    }
                }
                TextSplit::Paragraphs => paragraph.push(line),
            }
        }
        if !paragraph.is_empty() {
            documents.push(PromptInput::Text(paragraph.join("\n")));
        }
        Self::named(path, documents)
    }

    /// Reads a JSONL file of `{"text": ...}` and `{"messages": [...]}` objects.
    pub fn from_jsonl_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut documents = Vec::new();
        for (i, line) in lines(path)? {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let document = parse_json_document(&line, path, i)?;
            documents.push(document);
        }
        Self::named(path, documents)
    }

    /// A corpus of documents given in memory (`source` names it in manifests).
    pub fn from_documents(source: impl Into<String>, documents: Vec<PromptInput>) -> Self {
        Corpus {
            source: source.into(),
            documents,
        }
    }

    fn named(path: &Path, documents: Vec<PromptInput>) -> Result<Self> {
        if documents.is_empty() {
            return Err(CacheError::CorpusFormat {
                path: path.to_path_buf(),
                reason: "the file holds no document".into(),
            });
        }
        Ok(Self::from_documents(path.display().to_string(), documents))
    }

    /// Where the corpus came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The documents, in order.
    pub fn documents(&self) -> &[PromptInput] {
        &self.documents
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether there is no document.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// sha256 (lowercase hex) of the documents in a canonical binary form: equal for the same
    /// documents whatever file format they were read from. A store records it so that a run can
    /// only resume on the same corpus.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |tag: &[u8], bytes: &[u8]| {
            h.update(tag);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for doc in &self.documents {
            match doc {
                PromptInput::Text(text) => field(b"T", text.as_bytes()),
                PromptInput::Chat(messages) => {
                    field(b"C", &(messages.len() as u64).to_le_bytes());
                    for m in messages {
                        let role: &[u8] = match m.role {
                            Role::User => b"U",
                            Role::Model => b"M",
                        };
                        field(role, m.content.as_bytes());
                    }
                }
            }
        }
        format!("{:x}", h.finalize())
    }
}

/// The lines of `path`, numbered from 1; a line that cannot be read (not UTF-8) is a
/// [`CacheError::CorpusLine`].
fn lines(path: &Path) -> Result<impl Iterator<Item = (usize, Result<String>)> + '_> {
    let file = File::open(path).map_err(|e| CacheError::io(path, e))?;
    Ok(BufReader::new(file).lines().enumerate().map(|(i, line)| {
        let line = line
            .map(|l| l.trim_end_matches('\r').to_string())
            .map_err(|e| line_error(path, i + 1, format!("cannot read the line: {e}")));
        (i + 1, line)
    }))
}

fn line_error(path: &Path, line: usize, reason: String) -> CacheError {
    CacheError::CorpusLine {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

/// One JSONL line (line `number` of `path`): `{"text": "..."}` or `{"messages": [...]}`.
fn parse_json_document(line: &str, path: &Path, number: usize) -> Result<PromptInput> {
    let bad = |reason: String| line_error(path, number, reason);
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("expected a JSON object with a `text` or a `messages` field".into()))?;
    match (object.get("text"), object.get("messages")) {
        (Some(_), Some(_)) => Err(bad(
            "the object has both `text` and `messages`; give one".into()
        )),
        (None, None) => Err(bad(
            "the object has neither a `text` nor a `messages` field".into(),
        )),
        (Some(text), None) => text
            .as_str()
            .map(|t| PromptInput::Text(t.to_string()))
            .ok_or_else(|| bad("`text` must be a string".into())),
        (None, Some(messages)) => {
            let messages: Vec<ChatMessage> = serde_json::from_value(messages.clone()).map_err(
                |e| bad(format!("`messages` must be a list of {{\"role\", \"content\"}} objects with roles user/model/assistant: {e}")),
            )?;
            render_chat_template(&messages, true).map_err(|e| bad(e.to_string()))?;
            Ok(PromptInput::Chat(messages))
        }
    }
}
