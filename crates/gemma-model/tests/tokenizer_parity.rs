//! The tokenizer and chat template against ids produced by HF's tokenizer on the same tokenizer.json.

mod common;

use common::fixture;
use gemma_model::{render_chat_template, ChatMessage, GemmaTokenizer};

#[derive(serde::Deserialize)]
struct Cases {
    encode: Vec<EncodeCase>,
    chat: Vec<ChatCase>,
}

#[derive(serde::Deserialize)]
struct EncodeCase {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct ChatCase {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    rendered: String,
    ids: Vec<u32>,
}

fn load() -> (GemmaTokenizer, Cases) {
    let tok = GemmaTokenizer::from_file(fixture("tokenizer/tokenizer.json")).unwrap();
    let cases =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer_cases.json")).unwrap())
            .unwrap();
    (tok, cases)
}

#[test]
fn encode_matches_hf() {
    let (tok, cases) = load();
    assert!(cases.encode.len() >= 10);
    for case in &cases.encode {
        assert_eq!(
            tok.encode_raw(&case.text).unwrap(),
            case.ids_no_special,
            "raw ids of {:?}",
            case.text
        );
        let ids = tok.encode(&case.text).unwrap();
        if case.ids_no_special.first() == Some(&tok.bos_id()) {
            // HF would prepend a second <bos>; we never do.
            assert_eq!(ids, case.ids_no_special, "{:?}", case.text);
        } else {
            assert_eq!(ids, case.ids, "ids of {:?}", case.text);
        }
        assert_eq!(
            ids.iter().filter(|&&id| id == tok.bos_id()).count().min(1),
            1
        );
        assert_eq!(ids[0], tok.bos_id());
    }
}

#[test]
fn chat_template_matches_hf() {
    let (tok, cases) = load();
    assert!(cases.chat.len() >= 3);
    for case in &cases.chat {
        let rendered = render_chat_template(&case.messages, case.add_generation_prompt).unwrap();
        assert_eq!(rendered, case.rendered);
        let ids = tok
            .encode_chat(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(ids, case.ids, "{:?}", case.rendered);
        assert_ne!(ids.get(1), Some(&tok.bos_id()), "double BOS");
    }
}

#[test]
fn special_token_ids_are_gemmas() {
    let (tok, _) = load();
    assert_eq!(tok.bos_id(), 2);
    assert_eq!(tok.token_to_id("<start_of_turn>"), Some(106));
    assert_eq!(tok.token_to_id("<end_of_turn>"), Some(107));
}

#[test]
fn missing_or_broken_tokenizer_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(GemmaTokenizer::from_file(dir.path().join("tokenizer.json")).is_err());
    let broken = dir.path().join("tokenizer.json");
    std::fs::write(&broken, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = GemmaTokenizer::from_file(&broken).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
