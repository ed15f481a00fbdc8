//! Shared helpers of the store tests: the tiny fixture model as base, a shifted copy as chat, a
//! small mixed corpus, and a dump of a store's rows.
#![allow(dead_code)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use activation_cache::{ActivationStore, CacheEvent, CacheOptions, Corpus};
use gemma_model::{
    load_dir, BackendKind, ChatMessage, Gemma2Config, HookPoint, LanguageModel, LoadOptions,
    RunOutput, RunRequest, TokenBatch,
};
use model_pair::{PromptInput, StereoRunner, TokenMeta};

pub const HOOK: HookPoint = HookPoint::ResidPost(1);
pub const HOOK_NAME: &str = "blocks.1.hook_resid_post";
/// What the "chat" model adds to every activation of the base model.
pub const CHAT_OFFSET: f32 = 1.0;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gemma")
        .join(name)
}

pub fn load(hook: HookPoint) -> gemma_model::LoadedModel {
    load_dir(fixture("tiny-window"), &LoadOptions::for_hooks(&[hook])).unwrap()
}

/// The fixture model with `offset` added to every captured activation: a "chat" model whose
/// activations differ from the base model's in a known way. Counts live instances in `live`.
pub struct Offset {
    pub inner: Box<dyn LanguageModel>,
    pub name: String,
    pub offset: f32,
    pub live: Option<Arc<AtomicUsize>>,
}

impl Offset {
    pub fn new(
        inner: Box<dyn LanguageModel>,
        name: &str,
        offset: f32,
        live: Option<Arc<AtomicUsize>>,
    ) -> Self {
        if let Some(live) = &live {
            live.fetch_add(1, Ordering::SeqCst);
        }
        Offset {
            inner,
            name: name.into(),
            offset,
            live,
        }
    }
}

impl Drop for Offset {
    fn drop(&mut self) {
        if let Some(live) = &self.live {
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl LanguageModel for Offset {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &Gemma2Config {
        self.inner.config()
    }
    fn backend(&self) -> BackendKind {
        self.inner.backend()
    }
    fn loaded_layers(&self) -> usize {
        self.inner.loaded_layers()
    }
    fn has_unembedding(&self) -> bool {
        self.inner.has_unembedding()
    }
    fn run(&self, batch: &TokenBatch, request: &RunRequest) -> gemma_model::Result<RunOutput> {
        let mut out = self.inner.run(batch, request)?;
        for acts in out.activations.values_mut() {
            *acts += self.offset;
        }
        Ok(out)
    }
}

/// Base = the fixture ("base"), chat = the fixture + [`CHAT_OFFSET`] ("chat").
pub fn runner() -> StereoRunner {
    let (b, c) = (load(HOOK), load(HOOK));
    let tok = b.tokenizer.clone().unwrap();
    let base = Box::new(Offset::new(b.model, "base", 0.0, None));
    let chat = Box::new(Offset::new(c.model, "chat", CHAT_OFFSET, None));
    StereoRunner::new(base, chat, [tok.clone(), tok], HOOK)
        .unwrap()
        .with_batch_size(3)
}

/// `n` documents: texts of different lengths and a few chat conversations.
pub fn corpus(n: usize) -> Corpus {
    let words = [
        "the",
        "sky",
        "is",
        "blue",
        "because",
        "of",
        "Rayleigh",
        "scattering",
        "I'm",
        "five",
        "years",
        "old",
    ];
    let documents = (0..n)
        .map(|i| {
            let len = 2 + (i * 7) % 11;
            let text: Vec<&str> = (0..len).map(|k| words[(i + 3 * k) % words.len()]).collect();
            let text = text.join(" ");
            if i % 5 == 3 {
                PromptInput::Chat(vec![
                    ChatMessage::user(text),
                    ChatMessage::model("Sure."),
                    ChatMessage::user("Why?"),
                ])
            } else {
                PromptInput::Text(text)
            }
        })
        .collect();
    Corpus::from_documents("test-corpus", documents)
}

/// Small shards so that a tiny corpus spans several of them.
pub fn options() -> CacheOptions {
    CacheOptions {
        shard_tokens: 40,
        context_len: 12,
        ..CacheOptions::default()
    }
}

pub fn go_on(_: &CacheEvent) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Every row of a store in store order: metadata and `[2 * d_model]` activations.
pub fn dump(store: &ActivationStore) -> Vec<(TokenMeta, Vec<f32>)> {
    let rows: Vec<u64> = (0..store.n_tokens()).collect();
    let acts = store.read_rows(&rows).unwrap();
    rows.iter()
        .zip(acts.outer_iter())
        .map(|(&r, a)| (store.token_meta(r).unwrap(), a.iter().copied().collect()))
        .collect()
}

/// Asserts that two dumps hold the same tokens (same metadata, each `(prompt, position)` once) with
/// activations equal to `tol`, relative to `max(1, |x|)` (runs in batches of other compositions
/// round differently).
pub fn assert_same_tokens(got: &[(TokenMeta, Vec<f32>)], want: &[(TokenMeta, Vec<f32>)], tol: f32) {
    let key = |t: &TokenMeta| (t.prompt, t.position);
    let mut got: Vec<_> = got.iter().collect();
    got.sort_by_key(|(t, _)| key(t));
    let mut keys: Vec<_> = got.iter().map(|(t, _)| key(t)).collect();
    keys.dedup();
    assert_eq!(keys.len(), got.len(), "a token is stored twice");
    let mut want: Vec<_> = want.iter().collect();
    want.sort_by_key(|(t, _)| key(t));
    assert_eq!(got.len(), want.len(), "token counts differ");
    for ((gt, ga), (wt, wa)) in got.iter().zip(&want) {
        assert_eq!(gt, wt);
        let err = ga
            .iter()
            .zip(wa.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs() / b.abs().max(1.0)));
        assert!(err <= tol, "token {gt:?}: max error {err}");
    }
}
