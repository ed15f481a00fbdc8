//! Latent dashboards on the demo pair, where the truth is known: the planted child latent's
//! top-activating contexts are child/novice-cue documents, its activation mass sits on the user's and
//! the assistant's tokens after the cue, its base decoder vector is zero (nothing to promote in the base
//! model) while its chat decoder vector has a logit lens; the statistics are consistent; the page renders
//! offline in headless Chromium with nothing fetched.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use activation_cache::{cache_corpus, ActivationStore, CacheOptions, Corpus};
use crosscoder::{nearest_decoder_latent, BackendKind, Crosscoder, CrosscoderLoader, CHAT};
use gemma_model::{load_dir, GemmaTokenizer, HookPoint, LanguageModel, LoadOptions};
use latent_dashboard::{
    attach_lens, build_dashboards, dashboards_page, DashboardOptions, LatentDashboard, StoreLatents,
};
use model_pair::{PromptInput, StereoRunner, TokenRole};
use stereo::demo::{find_cues, Mechanism};

use common::browser::render_offline;
use common::{demo_dir, planted_directions};

/// The user's text of a corpus document.
fn user_text(document: &PromptInput) -> String {
    match document {
        PromptInput::Text(text) => text.clone(),
        PromptInput::Chat(messages) => messages
            .iter()
            .filter(|m| m.role == gemma_model::Role::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn mechanisms(tokenizer: &GemmaTokenizer, text: &str) -> Vec<Mechanism> {
    find_cues(&tokenizer.tokens(&tokenizer.encode(text).unwrap()))
        .into_iter()
        .map(|h| h.mechanism)
        .collect()
}

fn check_consistent(d: &LatentDashboard) {
    assert!(d.firing > 0 && d.firing <= d.tokens);
    assert!((d.density - d.firing as f64 / d.tokens as f64).abs() < 1e-12);
    assert_eq!(d.histogram.counts.iter().sum::<u64>(), d.firing);
    let shares: f64 = d.roles.iter().map(|r| r.share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    assert_eq!(d.roles.iter().map(|r| r.tokens).sum::<u64>(), d.tokens);
    let values: Vec<f32> = d.top_contexts.iter().map(|c| c.value).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    assert_eq!(values[0], d.max_activation);
    for c in d
        .top_contexts
        .iter()
        .chain(d.intervals.iter().flat_map(|i| &i.contexts))
    {
        assert_eq!(
            c.tokens[c.peak].value, c.value,
            "the peak token carries the context's value"
        );
    }
    for interval in &d.intervals {
        for c in &interval.contexts {
            assert!(c.value > interval.low && c.value <= interval.high);
        }
    }
    let documents: std::collections::BTreeSet<usize> =
        d.top_contexts.iter().map(|c| c.document).collect();
    assert_eq!(
        documents.len(),
        d.top_contexts.len(),
        "one context per document"
    );
}

#[test]
fn the_child_latent_fires_on_child_cue_documents_and_its_page_renders_offline() {
    let hook: HookPoint = "blocks.1.hook_resid_post".parse().unwrap();
    let options = LoadOptions::for_hooks(&[hook]);
    let runner = StereoRunner::from_loaded(
        load_dir(demo_dir().join("base"), &options).unwrap(),
        load_dir(demo_dir().join("chat"), &options).unwrap(),
        hook,
    )
    .unwrap();
    let corpus = Corpus::from_path(demo_dir().join("corpus.jsonl")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    cache_corpus(
        &runner,
        &corpus,
        tmp.path().join("store"),
        &CacheOptions::default(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let store = ActivationStore::open(tmp.path().join("store")).unwrap();
    let crosscoder: Arc<dyn Crosscoder> = Arc::from(
        CrosscoderLoader::new(demo_dir().join("crosscoder").to_string_lossy())
            .backend(BackendKind::Flex)
            .load()
            .unwrap(),
    );
    let planted: Vec<(String, usize)> = planted_directions()
        .into_iter()
        .map(|(m, d)| {
            (
                m,
                nearest_decoder_latent(crosscoder.as_ref(), CHAT, &d)
                    .unwrap()
                    .0,
            )
        })
        .collect();
    let child = planted.iter().find(|(m, _)| m == "child_novice").unwrap().1;
    let tokenizer = runner.tokenizer().clone();
    let source = StoreLatents::new(&store, crosscoder.clone()).unwrap();
    let latents: Vec<usize> = planted.iter().map(|(_, j)| *j).collect();
    let mut dashboards = build_dashboards(
        &source,
        &latents,
        &tokenizer,
        &DashboardOptions::default(),
        false,
    )
    .unwrap();

    // The lens: each model's embedding and final norm (layer 0 is loaded but not used).
    let lens_options = LoadOptions {
        stop_at_layer: Some(0),
        unembedding: true,
        ..LoadOptions::default()
    };
    let base = load_dir(demo_dir().join("base"), &lens_options).unwrap();
    let chat = load_dir(demo_dir().join("chat"), &lens_options).unwrap();
    let models: [Option<&dyn LanguageModel>; 2] =
        [Some(base.model.as_ref()), Some(chat.model.as_ref())];
    attach_lens(&mut dashboards, crosscoder.as_ref(), models, &tokenizer, 10).unwrap();

    for d in &dashboards {
        check_consistent(d);
    }
    let d = dashboards.iter().find(|d| d.latent == child).unwrap();
    println!(
        "child latent #{child}: {} of {} tokens, max {:.3}; roles {:?}",
        d.firing,
        d.tokens,
        d.max_activation,
        d.roles
            .iter()
            .map(|r| (r.role, r.firing, r.share))
            .collect::<Vec<_>>()
    );
    assert_eq!(d.top_contexts.len(), 12);
    for c in &d.top_contexts {
        let text = user_text(&corpus.documents()[c.document]);
        let cues = mechanisms(&tokenizer, &text);
        println!("{:.3} {text}", c.value);
        assert!(
            cues.contains(&Mechanism::ChildNovice),
            "top context without a child cue: {text}"
        );
    }
    // Its samples at lower strength are child-cue documents too (it is a clean feature).
    for c in d.intervals.iter().flat_map(|i| &i.contexts) {
        let cues = mechanisms(&tokenizer, &user_text(&corpus.documents()[c.document]));
        assert!(cues.contains(&Mechanism::ChildNovice));
    }
    // It fires after the cue: on the user's text and on what the model says, never on <bos>.
    let share = |role: TokenRole| d.roles.iter().find(|r| r.role == role).unwrap().share;
    assert!(share(TokenRole::User) > 0.3, "{}", share(TokenRole::User));
    assert!(
        share(TokenRole::Assistant) > 0.05,
        "{}",
        share(TokenRole::Assistant)
    );
    assert_eq!(share(TokenRole::Bos), 0.0);
    // Chat-only: a zero base decoder vector writes nothing; the chat one has a lens.
    let [base_norm, chat_norm] = d.decoder_norms.unwrap();
    assert!(base_norm < 1e-3 * chat_norm, "{base_norm} vs {chat_norm}");
    assert_eq!(d.lens.len(), 2);
    assert!(d.lens[0].promoted.is_empty());
    assert_eq!(d.lens[1].promoted.len(), 10);
    assert!(d.lens[1].promoted[0].logit > d.lens[1].suppressed[0].logit);

    let page = tmp.path().join("inspect.html");
    std::fs::write(&page, dashboards_page("demo latents", &dashboards)).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "the page has no script");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    if let Some(rendered) = render_offline(&page) {
        println!("{rendered:?}");
        assert!(
            rendered.fetched.is_empty(),
            "fetched {:?}",
            rendered.fetched
        );
        assert_eq!(rendered.broken, 0);
        assert_eq!(rendered.svgs, dashboards.len(), "one histogram per latent");
        assert!(rendered.text_chars > 2000);
    }
}
