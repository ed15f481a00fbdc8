//! Corpus files: plain text and JSONL, with errors that name the line.

use std::path::PathBuf;

use activation_cache::{CacheError, Corpus, TextSplit};
use gemma_model::{ChatMessage, Role};
use model_pair::PromptInput;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn text_files_hold_one_document_per_non_empty_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "c.txt", "first line\r\n\n   \nsecond line\nthird\n");
    let corpus = Corpus::from_path(&path).unwrap();
    assert_eq!(
        corpus.documents(),
        &[
            PromptInput::from("first line"),
            "second line".into(),
            "third".into()
        ]
    );
    assert_eq!(corpus.source(), path.display().to_string());
    let paragraphs = Corpus::from_text_file(&path, TextSplit::Paragraphs).unwrap();
    assert_eq!(
        paragraphs.documents(),
        &[PromptInput::from("first line"), "second line\nthird".into()]
    );
}

#[test]
fn jsonl_files_hold_texts_and_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"text": "Why is the sky blue?", "id": 7}

{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Why?"}]}
"#;
    let corpus = Corpus::from_path(write(&dir, "c.jsonl", text)).unwrap();
    assert_eq!(corpus.len(), 2);
    assert_eq!(
        corpus.documents()[0],
        PromptInput::from("Why is the sky blue?")
    );
    let PromptInput::Chat(messages) = &corpus.documents()[1] else {
        panic!("expected a chat")
    };
    assert_eq!(
        messages[1],
        ChatMessage {
            role: Role::Model,
            content: "Hello".into()
        }
    );
    // The fingerprint depends on the documents, not on the file format.
    let same = Corpus::from_path(write(
        &dir,
        "c2.jsonl",
        "{\"text\": \"Why is the sky blue?\"}\n",
    ))
    .unwrap();
    let txt = Corpus::from_path(write(&dir, "c3.txt", "Why is the sky blue?\n")).unwrap();
    assert_eq!(same.fingerprint(), txt.fingerprint());
    assert_ne!(same.fingerprint(), corpus.fingerprint());
}

fn line_error(name: &str, text: &str) -> (usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, text);
    match Corpus::from_path(&path).unwrap_err() {
        CacheError::CorpusLine {
            path: p,
            line,
            reason,
        } => {
            assert_eq!(p, path);
            (line, reason)
        }
        other => panic!("expected CorpusLine, got {other}"),
    }
}

#[test]
fn bad_jsonl_lines_are_errors_with_line_numbers() {
    let ok = r#"{"text": "fine"}"#;
    let cases = [
        (format!("{ok}\n\n{{\"text\": \"unterminated}}\n"), 3, "not valid JSON"),
        (format!("{ok}\n[1, 2]\n"), 2, "JSON object"),
        (format!("{ok}\n{{\"prompt\": \"x\"}}\n"), 2, "neither"),
        (format!("{{\"text\": \"a\", \"messages\": []}}\n{ok}\n"), 1, "both"),
        (format!("{ok}\n{ok}\n{{\"text\": 5}}\n"), 3, "`text` must be a string"),
        ("{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}\n".to_string(), 1, "messages"),
        (format!("{ok}\n{{\"messages\": [{{\"role\": \"user\", \"content\": \"a\"}}, {{\"role\": \"user\", \"content\": \"b\"}}]}}\n"), 2, "alternate"),
        (format!("{ok}\n{{\"messages\": []}}\n"), 2, "no messages"),
        (format!("{ok}\n{{\"messages\": \"hi\"}}\n"), 2, "messages"),
    ];
    for (text, line, needle) in cases {
        let (got, reason) = line_error("c.jsonl", &text);
        assert_eq!(got, line, "{text}: {reason}");
        assert!(
            reason.contains(needle),
            "{text}: `{reason}` lacks `{needle}`"
        );
    }
}

#[test]
fn invalid_utf8_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.txt");
    std::fs::write(&path, b"fine\nalso fine\nbad \xff byte\n").unwrap();
    assert!(matches!(
        Corpus::from_path(&path).unwrap_err(),
        CacheError::CorpusLine { line: 3, .. }
    ));
}

#[test]
fn unknown_formats_empty_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Corpus::from_path(write(&dir, "c.csv", "a,b\n")).unwrap_err();
    assert!(matches!(err, CacheError::CorpusFormat { .. }), "{err}");
    let err = Corpus::from_path(write(&dir, "empty.txt", "\n  \n")).unwrap_err();
    assert!(err.to_string().contains("no document"), "{err}");
    let err = Corpus::from_path(dir.path().join("missing.jsonl")).unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }), "{err}");
}
