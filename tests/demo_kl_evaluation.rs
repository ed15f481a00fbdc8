//! The KL evaluation on the demo pair, where the truth is known. On conversations whose user states a
//! child cue, the chat model's later layers read the planted `user:child_novice` direction (its planted
//! reader raises `simple`, `story`, `play` once the direction passes a threshold), so feeding them the
//! base residual opens a KL gap on the assistant's tokens; without a cue there is no gap.
//!
//! - A BatchTopK crosscoder trained on the demo store (k = 16, F = 128, 2,000 steps) learns the planted
//!   directions at full strength: patching the planted latents' chat-minus-base contribution into the
//!   base residual closes most of the gap, random sets of latents of the same size close almost none.
//! - The committed demo crosscoder (L1) shrinks the planted directions (the shrinkage of Minder et al.):
//!   what its planted latents reconstruct leaves the reader partly below its threshold, so they close
//!   only part of the gap (28% on the demo of 2026-12-07, against 98% for BatchTopK). The KL evaluation
//!   is what tells the two apart.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use activation_cache::{cache_corpus, ActivationStore, CacheOptions, Corpus};
use crosscoder::{nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderLoader, CHAT};
use crosscoder_train::{train_on_store, Start, StoreTraining, TrainConfig};
use gemma_model::{
    load_dir, ChatMessage, GemmaTokenizer, HookPoint, LoadOptions, LoadedModel, Role,
};
use model_pair::{PromptInput, StereoRunner};
use steering::kl_evaluation::{kl_table, write_kl_evaluation};
use steering::{run_kl_evaluation, KlEvaluation, KlEvaluationSpec, SteeringModels};
use stereo::demo::{find_cues, Mechanism};

use common::{demo_dir, planted_directions};

const HOOK: &str = "blocks.1.hook_resid_post";

/// The demo corpus's conversations (with a model turn) whose user turns hold only child cues, and those
/// without any cue.
fn conversations(tokenizer: &GemmaTokenizer) -> (Vec<Vec<ChatMessage>>, Vec<Vec<ChatMessage>>) {
    let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
    let mut child = Vec::new();
    let mut none = Vec::new();
    for document in corpus.documents() {
        let PromptInput::Chat(messages) = document else {
            continue;
        };
        if !messages.iter().any(|m| m.role == Role::Model) {
            continue;
        }
        let user = messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let hits = find_cues(&tokenizer.tokens(&tokenizer.encode(&user).unwrap()));
        if hits.is_empty() {
            none.push(messages.clone());
        } else if hits.iter().all(|h| h.mechanism == Mechanism::ChildNovice) {
            child.push(messages.clone());
        }
    }
    (child, none)
}

/// The demo pair: base to the hook, chat whole.
struct Pair {
    base: LoadedModel,
    chat: LoadedModel,
    tokenizer: GemmaTokenizer,
    hook: HookPoint,
}

impl Pair {
    fn load() -> Self {
        let hook: HookPoint = HOOK.parse().unwrap();
        let base = load_dir(demo_dir().join("base"), &LoadOptions::for_hooks(&[hook])).unwrap();
        let chat = load_dir(demo_dir().join("chat"), &LoadOptions::default()).unwrap();
        let tokenizer = chat.tokenizer.clone().unwrap();
        Pair {
            base,
            chat,
            tokenizer,
            hook,
        }
    }

    /// The KL evaluation of the planted latents of `crosscoder` (5 random seeds) on `conversations`.
    fn evaluate(
        &self,
        crosscoder: Arc<dyn Crosscoder>,
        conversations: &[Vec<ChatMessage>],
    ) -> KlEvaluation {
        let planted: Vec<usize> = planted_directions()
            .iter()
            .map(|(_, d)| {
                nearest_decoder_latent(crosscoder.as_ref(), CHAT, d)
                    .unwrap()
                    .0
            })
            .collect();
        let models = SteeringModels {
            base: self.base.model.as_ref(),
            chat: self.chat.model.as_ref(),
            tokenizer: &self.tokenizer,
            crosscoder,
            hook: self.hook,
        };
        let mut spec = KlEvaluationSpec::new(planted.clone());
        spec.batch_size = 8;
        let results = run_kl_evaluation(&models, conversations, &spec, false).unwrap();
        println!("planted latents {planted:?}\n{}", kl_table(&results));
        results
    }
}

/// A BatchTopK crosscoder (k = 16, F = 128) trained for 2,000 steps on the demo corpus's activations.
fn trained_batch_top_k(dir: &std::path::Path) -> Arc<dyn Crosscoder> {
    let hook: HookPoint = HOOK.parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]);
    let runner = StereoRunner::from_loaded(
        load_dir(demo_dir().join("base"), &options).unwrap(),
        load_dir(demo_dir().join("chat"), &options).unwrap(),
        hook,
    )
    .unwrap();
    let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
    let store_dir = dir.join("store");
    cache_corpus(
        &runner,
        &corpus,
        &store_dir,
        &CacheOptions::default(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let store = ActivationStore::open(&store_dir).unwrap();
    let mut config = TrainConfig::batch_top_k(2, 64, 128, 2000, 16);
    config.lr = 1e-3;
    config.batch_size = 512;
    let run = StoreTraining {
        out: dir.join("batch_top_k"),
        backend: BackendKind::Flex,
        seed: 0,
        validation_fraction: 0.05,
        input_scaling: true,
        checkpoint_every: 10_000,
        progress: false,
        replicas: 1,
    };
    train_on_store(&store, Start::Fresh(config), &run).unwrap();
    Arc::from(
        CrosscoderLoader::new(run.out.to_string_lossy())
            .backend(BackendKind::Flex)
            .load()
            .unwrap(),
    )
}

#[test]
fn planted_latents_close_the_kl_gap_random_latents_do_not_and_l1_shrinkage_shows() {
    let pair = Pair::load();
    let (child, none) = conversations(&pair.tokenizer);
    assert!(
        child.len() >= 24 && none.len() >= 8,
        "{} / {}",
        child.len(),
        none.len()
    );
    let tmp = tempfile::tempdir().unwrap();

    let trained = pair.evaluate(trained_batch_top_k(tmp.path()), &child[..24]);
    let gap = |r: &KlEvaluation, name: &str| r.setup(name).unwrap().gap_closed;
    let base_kl = trained.setup("base").unwrap().kl;
    assert!(
        base_kl.low() > 0.05,
        "no base->chat gap on cue conversations: {base_kl:?}"
    );
    assert!(
        gap(&trained, "chosen") > 0.8,
        "planted latents close {}",
        gap(&trained, "chosen")
    );
    assert!(gap(&trained, "all_latents") > 0.8);
    let random = trained.random.as_ref().unwrap();
    assert_eq!(random.gap_closed.n, 5);
    assert!(
        random.max_gap_closed < 0.05,
        "a random set closes {}",
        random.max_gap_closed
    );
    // What the crosscoder explains of the difference is the whole gap: its error keeps none of it.
    assert!(gap(&trained, "chat_error") < 0.1);

    let l1: Arc<dyn Crosscoder> = Arc::from(
        CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
            .backend(BackendKind::Flex)
            .load()
            .unwrap(),
    );
    let shrunk = pair.evaluate(l1.clone(), &child[..24]);
    assert!(
        gap(&shrunk, "chosen") < 0.5 && gap(&shrunk, "chosen") < gap(&trained, "chosen") - 0.3,
        "L1 planted latents close {}",
        gap(&shrunk, "chosen")
    );
    assert!(shrunk.random.as_ref().unwrap().max_gap_closed < 0.05);

    // Without a cue the base residual is the chat residual: no gap.
    let quiet = pair.evaluate(l1, &none[..8]);
    assert!(quiet.setup("base").unwrap().kl.mean < 1e-3 * base_kl.mean);
    assert!(quiet.setup("chosen").unwrap().gap_closed.is_nan());
    assert!(quiet.random.is_none());

    let files = write_kl_evaluation(&trained, &tmp.path().join("out")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["setups"].as_array().unwrap().len(), 4 + 5);
    assert_eq!(json["setups"][3]["name"], "chosen");
    assert!(json["setups"][3]["gap_closed"].as_f64().unwrap() > 0.8);
    assert!(std::fs::metadata(&files[1]).unwrap().len() > 1000);
}
