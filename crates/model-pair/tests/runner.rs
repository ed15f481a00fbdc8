//! Stereo runs on the golden fixture models.

use std::path::{Path, PathBuf};

use gemma_model::{
    load_dir, GemmaTokenizer, HookPoint, LoadOptions, PaddingSide, RunRequest, TokenBatch,
};
use model_pair::{PairError, PairedSource, PromptInput, StereoRunner, TokenizationMode};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gemma")
        .join(name)
}

fn runner(base: &str, chat: &str, hook: HookPoint) -> Result<StereoRunner, PairError> {
    let load = |name: &str| load_dir(fixture(name), &LoadOptions::for_hooks(&[hook])).unwrap();
    let (b, c) = (load(base), load(chat));
    StereoRunner::new(
        b.model,
        c.model,
        [b.tokenizer.unwrap(), c.tokenizer.unwrap()],
        hook,
    )
}

#[test]
fn rows_equal_each_model_run_alone_with_metadata() {
    let hook = HookPoint::ResidPost(1);
    let runner = runner("tiny-window", "tiny-window", hook)
        .unwrap()
        .with_batch_size(2);
    let prompts: Vec<PromptInput> = [
        "I'm 5 years old. Why is the sky blue?",
        "Explain gravity.",
        "I think the earth is flat.",
    ]
    .map(Into::into)
    .to_vec();
    let out = runner.run(&prompts, TokenizationMode::Raw).unwrap();
    let single = load_dir(fixture("tiny-window"), &LoadOptions::for_hooks(&[hook])).unwrap();
    let tok = single.tokenizer.unwrap();
    let mut row = 0;
    for (p, prompt) in prompts.iter().enumerate() {
        let PromptInput::Text(text) = prompt else {
            unreachable!()
        };
        let ids = tok.encode(text).unwrap();
        let alone = single
            .model
            .run(
                &TokenBatch::new(std::slice::from_ref(&ids), 0, PaddingSide::Right).unwrap(),
                &RunRequest::capture([hook]),
            )
            .unwrap();
        let acts = &alone.activations[&hook];
        assert_eq!(
            out.rows_of_prompt(p),
            (row..row + ids.len()).collect::<Vec<_>>()
        );
        for (t, id) in ids.iter().enumerate() {
            let meta = out.tokens[row + t];
            assert_eq!((meta.prompt, meta.position, meta.token_id), (p, t, *id));
            assert_eq!(meta.is_bos, t == 0);
            assert!(!meta.is_template && !meta.is_pad);
            for m in 0..2 {
                let got = out.activations.slice(ndarray::s![row + t, m, ..]);
                let want = acts.slice(ndarray::s![0, t, ..]);
                let err = got
                    .iter()
                    .zip(want.iter())
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(err < 1e-4, "prompt {p} token {t} model {m}: {err}");
            }
        }
        row += ids.len();
    }
    assert_eq!(out.n_tokens(), row);
}

#[test]
fn chat_template_tokens_are_flagged() {
    let hook = HookPoint::ResidPost(0);
    let runner = runner("tiny-window", "tiny-window", hook).unwrap();
    let out = runner
        .run(
            &["Why is the sky blue?".into()],
            TokenizationMode::ChatTemplate,
        )
        .unwrap();
    let tok = runner.tokenizer();
    let strings = tok.tokens(&out.tokens.iter().map(|t| t.token_id).collect::<Vec<_>>());
    let template: Vec<&str> = out
        .tokens
        .iter()
        .zip(&strings)
        .filter(|(t, _)| t.is_template)
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(
        template,
        [
            "<start_of_turn>",
            "user",
            "\n",
            "<end_of_turn>",
            "\n",
            "<start_of_turn>",
            "model",
            "\n"
        ]
    );
    let content: String = out
        .tokens
        .iter()
        .zip(&strings)
        .filter(|(t, _)| t.is_content())
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(content.replace('▁', " ").trim(), "Why is the sky blue?");
}

#[test]
fn every_token_of_a_conversation_has_its_role() {
    use gemma_model::ChatMessage;
    use model_pair::TokenRole;
    let hook = HookPoint::ResidPost(1);
    let runner = runner("tiny-window", "tiny-window", hook).unwrap();
    let conversation = PromptInput::Chat(vec![
        ChatMessage::user("Why is the sky blue?"),
        ChatMessage::model("Light scatters."),
        ChatMessage::user("Thanks"),
    ]);
    let out = runner.run(&[conversation], TokenizationMode::Raw).unwrap();
    let tok = runner.tokenizer();
    let strings = tok.tokens(&out.tokens.iter().map(|t| t.token_id).collect::<Vec<_>>());
    let text_of = |role: TokenRole| -> String {
        out.tokens
            .iter()
            .zip(&strings)
            .filter(|(t, _)| t.role() == role)
            .map(|(_, s)| s.as_str())
            .collect::<String>()
            .replace('▁', " ")
    };
    assert_eq!(text_of(TokenRole::Bos), "<bos>");
    assert_eq!(
        text_of(TokenRole::User).trim(),
        "Why is the sky blue?Thanks"
    );
    assert_eq!(text_of(TokenRole::Assistant).trim(), "Light scatters.");
    // The `<end_of_turn>` closing the model turn is template and assistant (it is what the model says).
    let closing: Vec<&str> = out
        .tokens
        .iter()
        .zip(&strings)
        .filter(|(t, _)| t.is_assistant && t.is_template)
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(closing, ["<end_of_turn>"]);
    // The trailing generation prompt marks nothing as assistant.
    assert!(!out.tokens.last().unwrap().is_assistant);
}

#[test]
fn models_that_cannot_be_paired_are_refused() {
    let hook = HookPoint::ResidPost(1);
    let err = runner("tiny-window", "tiny-gqa-bf16", hook).unwrap_err();
    assert!(matches!(err, PairError::Mismatch { .. }), "{err}");
    // A hook deeper than what was loaded.
    let b = load_dir(
        fixture("tiny-window"),
        &LoadOptions::for_hooks(&[HookPoint::ResidPost(0)]),
    )
    .unwrap();
    let c = load_dir(
        fixture("tiny-window"),
        &LoadOptions::for_hooks(&[HookPoint::ResidPost(0)]),
    )
    .unwrap();
    let err = StereoRunner::new(
        b.model,
        c.model,
        [b.tokenizer.unwrap(), c.tokenizer.unwrap()],
        hook,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("blocks.1.hook_resid_post"),
        "{err}"
    );
}

#[test]
fn different_tokenizers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tokenizer/tokenizer.json");
    let text = std::fs::read_to_string(&src)
        .unwrap()
        .replace("\"<unused0>\"", "\"<unused_zero>\"");
    assert_ne!(
        text,
        std::fs::read_to_string(&src).unwrap(),
        "the edit must change the vocabulary"
    );
    let other = dir.path().join("tokenizer.json");
    std::fs::write(&other, text).unwrap();
    let hook = HookPoint::ResidPost(0);
    let b = load_dir(fixture("tiny-window"), &LoadOptions::for_hooks(&[hook])).unwrap();
    let c = load_dir(fixture("tiny-window"), &LoadOptions::for_hooks(&[hook])).unwrap();
    let err = StereoRunner::new(
        b.model,
        c.model,
        [
            b.tokenizer.unwrap(),
            GemmaTokenizer::from_file(&other).unwrap(),
        ],
        hook,
    )
    .unwrap_err();
    assert!(err.to_string().contains("tokenizers differ"), "{err}");
}
