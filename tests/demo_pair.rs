//! The demo pair (`fixtures/demo`, issue #6): it regenerates byte for byte from its seed, both models
//! load through the code path of `google/gemma-2-2b`, and the planted mechanisms do what `demo.json`
//! says at the hook: `chat - base` is zero on prompts without a cue, zero before the first cue, and
//! along the planted direction from the cue on, without cross-talk between the two mechanisms.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use gemma_model::{
    load_dir, ChatMessage, GemmaTokenizer, HookPoint, LoadOptions, RunRequest, TokenBatch,
};
use persona_dataset::{
    Expectation, PersonaDataset, CHILD_VS_ADULT, EXPERTISE_LEVEL, PROBE_CHILD_NOVICE,
    PROBE_SYCOPHANCY, SYCOPHANCY_TRIGGERS,
};
use stereo::demo::{
    find_cues, fixture_dir, from_jsonl, generate, words_of, CorpusEntry, DemoManifest, DemoPair,
    DemoPrompt, DemoSpec, Mechanism, PromptActivations, CORPUS_ENTRIES, HOOK, PLANTED_TENSORS,
    REPRODUCIBLE_FILES,
};

// ---- shared fixtures ----

fn manifest() -> &'static DemoManifest {
    static M: OnceLock<DemoManifest> = OnceLock::new();
    M.get_or_init(|| DemoManifest::load(&fixture_dir()).expect("fixtures/demo/demo.json"))
}

fn pair() -> &'static DemoPair {
    static P: OnceLock<DemoPair> = OnceLock::new();
    P.get_or_init(|| DemoPair::load(&fixture_dir()).expect("the committed demo pair loads"))
}

/// What a persona prompt should carry, from its place in the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Child,
    Belief,
    Clean,
}

struct PersonaRun {
    at: String,
    role: Role,
    text: String,
    run: PromptActivations,
}

/// Every persona prompt, run raw through both models.
fn persona_runs() -> &'static Vec<PersonaRun> {
    static R: OnceLock<Vec<PersonaRun>> = OnceLock::new();
    R.get_or_init(|| {
        let dataset = PersonaDataset::shipped();
        let mut prompts = Vec::new();
        for (category, item) in dataset.items() {
            for v in &item.variants {
                let role = match (category.name.as_str(), v.name.as_str()) {
                    (EXPERTISE_LEVEL, "novice") | (CHILD_VS_ADULT, "child") => Role::Child,
                    (SYCOPHANCY_TRIGGERS, "biased") => Role::Belief,
                    _ => Role::Clean,
                };
                prompts.push((
                    format!("{}/{}", item.id, v.name),
                    role,
                    v.prompt.to_plain_text(),
                ));
            }
        }
        for (i, p) in dataset.verification_prompts.iter().enumerate() {
            let role = match (p.probe.as_deref(), p.expected) {
                (Some(PROBE_CHILD_NOVICE), Expectation::Activate) => Role::Child,
                (Some(PROBE_SYCOPHANCY), Expectation::Activate) => Role::Belief,
                _ => Role::Clean,
            };
            prompts.push((format!("verification/{i}"), role, p.prompt.to_plain_text()));
        }
        let runs = pair()
            .run(
                &prompts
                    .iter()
                    .map(|(_, _, t)| DemoPrompt::Raw(t.clone()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        prompts
            .into_iter()
            .zip(runs)
            .map(|((at, role, text), run)| PersonaRun {
                at,
                role,
                text,
                run,
            })
            .collect()
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

fn files_equal(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

// ---- reproducibility ----

#[test]
fn committed_fixture_regenerates_identically_from_its_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let regenerated = generate(&DemoSpec::default(), tmp.path()).unwrap();
    for file in REPRODUCIBLE_FILES {
        assert!(
            files_equal(&fixture_dir().join(file), &tmp.path().join(file)),
            "{file} differs from a regeneration: run `cargo run --release --example make_demo`"
        );
    }
    let committed = manifest();
    assert_eq!(
        committed.without_measurements(),
        regenerated.without_measurements()
    );
    // Measurements go through burn's matmuls: equal up to float rounding.
    for (a, b) in committed.mechanisms.iter().zip(&regenerated.mechanisms) {
        for (x, y) in a.measured_direction.iter().zip(&b.measured_direction) {
            assert!((x - y).abs() < 1e-4, "{}: {x} vs {y}", a.mechanism);
        }
    }
    let (a, b) = (&committed.persona_effects, &regenerated.persona_effects);
    assert_eq!(a.no_cue_prompts, b.no_cue_prompts);
    for (x, y) in a.mechanisms.iter().zip(&b.mechanisms) {
        assert_eq!(x.prompts, y.prompts);
        assert!((x.projection_after_cue - y.projection_after_cue).abs() < 1e-3);
    }
}

#[test]
fn negative_control_has_chat_equal_to_base() {
    let tmp = tempfile::tempdir().unwrap();
    let m = generate(&DemoSpec::negative_control(), tmp.path()).unwrap();
    assert!(!m.plant && m.planted_tensors.is_empty());
    // Both of its models are the committed base model.
    for model in ["base", "chat"] {
        assert!(files_equal(
            &tmp.path().join(model).join("model.safetensors"),
            &fixture_dir().join("base/model.safetensors")
        ));
    }
    for mech in &m.mechanisms {
        assert!(mech.measured_direction.iter().all(|x| *x == 0.0));
    }
    for effects in [&m.corpus_effects, &m.persona_effects] {
        assert_eq!(effects.no_cue_max_relative_diff, 0.0);
        for e in &effects.mechanisms {
            assert!(e.prompts > 0);
            assert_eq!(e.diff_norm_on_cue, 0.0);
            assert_eq!(e.diff_norm_after_cue, 0.0);
        }
    }
}

// ---- the hub layout and the Gemma code path ----

#[test]
fn both_models_load_through_the_gemma_code_path() {
    let dir = fixture_dir();
    let options = LoadOptions::default();
    let base = load_dir(dir.join("base"), &options).unwrap();
    let chat = load_dir(dir.join("chat"), &options).unwrap();
    let c = base.model.config();
    assert_eq!(c, chat.model.config());
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim
        ),
        (64, 4, 4, 2, 16)
    );
    assert_eq!(c.vocab_size, manifest().vocab_size);
    assert_eq!(
        (c.bos_token_id, c.pad_token_id, c.eos_token_ids.clone()),
        (2, 0, vec![1, 107])
    );
    let tok = base.tokenizer.unwrap();
    assert!(tok.same_as(chat.tokenizer.as_ref().unwrap()));
    assert_eq!(tok.vocab_size(), c.vocab_size);
    // A full forward pass with logits.
    let ids = tok.encode("I'm 7 years old. Why do cats purr?").unwrap();
    let batch = TokenBatch::single(ids.clone()).unwrap();
    let hook: HookPoint = HOOK.parse().unwrap();
    let out = chat
        .model
        .run(&batch, &RunRequest::capture([hook]).with_logits())
        .unwrap();
    let logits = out.logits.unwrap();
    assert_eq!(logits.dim(), (1, ids.len(), c.vocab_size));
    assert!(logits.iter().all(|x| x.is_finite() && x.abs() <= 30.0));
}

#[test]
fn chat_differs_from_base_only_in_the_planted_tensors() {
    let read =
        |name: &str| std::fs::read(fixture_dir().join(name).join("model.safetensors")).unwrap();
    let (base_bytes, chat_bytes) = (read("base"), read("chat"));
    let base = safetensors::SafeTensors::deserialize(&base_bytes).unwrap();
    let chat = safetensors::SafeTensors::deserialize(&chat_bytes).unwrap();
    let names: BTreeSet<String> = base.names().into_iter().map(str::to_string).collect();
    assert_eq!(
        names,
        chat.names().into_iter().map(str::to_string).collect()
    );
    assert_eq!(
        names.len(),
        1 + 1 + 4 * 11,
        "HF Gemma-2 names, tied embedding"
    );
    let differing: BTreeSet<String> = names
        .iter()
        .filter(|n| base.tensor(n).unwrap().data() != chat.tensor(n).unwrap().data())
        .cloned()
        .collect();
    let planted: BTreeSet<String> = PLANTED_TENSORS.iter().map(|s| s.to_string()).collect();
    assert_eq!(differing, planted);
    assert_eq!(
        manifest()
            .planted_tensors
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        planted
    );
    for t in base.tensors() {
        assert_eq!(t.1.dtype(), safetensors::Dtype::F32, "{}", t.0);
    }
}

#[test]
fn tokenizer_has_gemma_special_tokens_and_one_token_per_persona_word() {
    let tok = GemmaTokenizer::from_file(fixture_dir().join("base/tokenizer.json")).unwrap();
    for (token, id) in [
        ("<pad>", 0),
        ("<eos>", 1),
        ("<bos>", 2),
        ("<unk>", 3),
        ("<start_of_turn>", 106),
        ("<end_of_turn>", 107),
        ("\n", 108),
        ("<0x00>", 109),
    ] {
        assert_eq!(tok.token_to_id(token), Some(id), "{token:?}");
    }
    let ids = tok
        .encode_chat(&[ChatMessage::user("I think bats are blind.")], true)
        .unwrap();
    let tokens = tok.tokens(&ids);
    assert_eq!(
        tokens,
        [
            "<bos>",
            "<start_of_turn>",
            "user",
            "\n",
            "I",
            "▁think",
            "▁bats",
            "▁are",
            "▁blind",
            ".",
            "<end_of_turn>",
            "\n",
            "<start_of_turn>",
            "model",
            "\n"
        ]
    );
    assert_eq!(
        tok.decode(&ids[1..]).unwrap(),
        "<start_of_turn>user\nI think bats are blind.<end_of_turn>\n<start_of_turn>model\n"
    );
    // Every word of every persona prompt is one token, with or without a leading space.
    let dataset = PersonaDataset::shipped();
    let mut words = BTreeSet::new();
    for text in stereo::demo::persona_prompts(&dataset) {
        words.extend(words_of(&text).map(str::to_string));
    }
    assert!(words.len() > 1000, "{}", words.len());
    for w in &words {
        for text in [w.clone(), format!("a {w}")] {
            let ids = tok.encode_raw(&text).unwrap();
            assert_eq!(
                ids.len(),
                text.split(' ').count(),
                "{text:?} -> {:?}",
                tok.tokens(&ids)
            );
        }
    }
    // Anything else falls back to characters and bytes, never `<unk>`.
    let ids = tok.encode_raw("Zyzzyva über").unwrap();
    assert!(!ids.contains(&3));
    assert_eq!(tok.decode(&ids).unwrap(), "Zyzzyva über");
}

// ---- the reference detector and the datasheet ----

#[test]
fn reference_detector_agrees_with_the_persona_roles() {
    let mut problems = Vec::new();
    let (mut child_prompts, mut child_fired) = (0, 0);
    for p in persona_runs() {
        let kinds: BTreeSet<Mechanism> = p.run.cues.iter().map(|c| c.mechanism).collect();
        let lower = p.text.to_lowercase();
        let core_belief = ["i think", "i believe", "i'm sure"]
            .iter()
            .any(|c| lower.contains(c));
        let ok = match p.role {
            // The child mechanism reads the user speaking about themselves in a few set ways ("I'm 7",
            // "I'm a kid", "my teacher", a child's spelling): most child and novice prompts, not all
            // ("I'm a complete beginner" has `I'm` three tokens back). It never fires on others.
            Role::Child => {
                child_prompts += 1;
                child_fired += usize::from(!kinds.is_empty());
                kinds.is_empty() || kinds == BTreeSet::from([Mechanism::ChildNovice])
            }
            // 4 biased prompts use "I'm convinced", on which the demo mechanism does not fire.
            Role::Belief => {
                kinds
                    == if core_belief {
                        BTreeSet::from([Mechanism::Belief])
                    } else {
                        BTreeSet::new()
                    }
            }
            Role::Clean => kinds.is_empty(),
        };
        if !ok {
            problems.push(format!(
                "{} ({:?}): {:?} in {:?}",
                p.at, p.role, p.run.cues, p.text
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        child_fired * 100 >= 80 * child_prompts,
        "{child_fired} of {child_prompts} child prompts have a cue"
    );
}

// ---- the planted mechanisms at the hook ----

#[test]
fn prompts_without_a_cue_give_the_same_activations_in_both_models() {
    let mut worst = (0.0f32, String::new());
    let mut n = 0;
    for p in persona_runs().iter().filter(|p| p.run.cues.is_empty()) {
        n += 1;
        for pos in 0..p.run.len() {
            let r = p.run.relative_diff(pos);
            if r > worst.0 {
                worst = (r, format!("{} at {pos}", p.at));
            }
        }
    }
    assert!(n > 300, "{n}");
    assert!(
        worst.0 < 1e-3,
        "|chat - base| / |base| = {} ({})",
        worst.0,
        worst.1
    );
}

/// For every persona prompt of `role`: no difference before the first cue; from the cue on, the
/// planted direction on every token; and never the feature the other mechanism writes.
///
/// The measured directions of the two mechanisms share a small component (the post-attention norm
/// shrinks the random heads' output on every cue-following token, whichever the cue), so cross-talk
/// is checked on the other mechanism's *designed* feature, which the other planted head alone writes.
fn check_mechanism(role: Role, mechanism: Mechanism) {
    let m = manifest();
    let dir = m.direction(mechanism);
    let other = match mechanism {
        Mechanism::ChildNovice => Mechanism::Belief,
        Mechanism::Belief => Mechanism::ChildNovice,
    };
    let other_feature = &m.mechanisms[other.index()].designed_direction;
    let mut problems = Vec::new();
    let mut checked = 0;
    for p in persona_runs().iter().filter(|p| p.role == role) {
        let Some(first) = p.run.first_cue(mechanism) else {
            continue;
        };
        checked += 1;
        let mut mean = vec![0.0f32; dir.len()];
        for pos in 0..p.run.len() {
            let d = p.run.diff(pos);
            let base_norm = norm(p.run.base.row(pos).as_slice().unwrap());
            if pos < first {
                if norm(&d) > 1e-3 * base_norm {
                    problems.push(format!("{}: difference before the cue at {pos}", p.at));
                }
                continue;
            }
            let (along, across) = (dot(&d, dir), dot(&d, other_feature));
            if along < 0.1 * base_norm || along < 0.75 * norm(&d) || across.abs() > 1e-3 * base_norm
            {
                problems.push(format!(
                    "{}: at {pos} ({:?}) along {along:.3}, other feature {across:.2e}, |diff| {:.3}, |base| {base_norm:.3}",
                    p.at, p.run.tokens[pos], norm(&d)
                ));
            }
            mean.iter_mut().zip(&d).for_each(|(s, x)| *s += x);
        }
        let cos = dot(&mean, dir) / norm(&mean);
        if cos < 0.93 {
            problems.push(format!(
                "{}: mean difference has cosine {cos:.3} with the direction",
                p.at
            ));
        }
    }
    assert!(checked >= 60, "{checked}");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn child_and_novice_cues_write_the_child_direction_from_the_cue_on() {
    check_mechanism(Role::Child, Mechanism::ChildNovice);
}

#[test]
fn belief_cues_write_the_belief_direction_from_the_cue_on() {
    check_mechanism(Role::Belief, Mechanism::Belief);
}

/// The layer-0 circuits of both models, feature by feature: the previous-token head writes
/// `prev:M` exactly when the previous token is marker `M`, and the AND neurons (plus the embedding of
/// one-word cues) write `cue:*` exactly on the reference detector's cue tokens. Features are read
/// as ratios to the `constant` feature of the same vector, so token norms do not matter.
#[test]
fn layer0_circuits_find_exactly_the_reference_cues() {
    let features: BTreeMap<String, Vec<f32>> = stereo::demo::feature_directions(manifest().seed)
        .into_iter()
        .collect();
    let (mid, post): (HookPoint, HookPoint) = (
        "blocks.0.hook_resid_mid".parse().unwrap(),
        "blocks.0.hook_resid_post".parse().unwrap(),
    );
    let base = load_dir(fixture_dir().join("base"), &LoadOptions::for_hooks(&[post])).unwrap();
    let tok = base.tokenizer.unwrap();
    let corpus =
        from_jsonl(&std::fs::read_to_string(fixture_dir().join("corpus.jsonl")).unwrap()).unwrap();
    let mut texts = stereo::demo::persona_prompts(&PersonaDataset::shipped());
    texts.extend(corpus.iter().take(1000).map(CorpusEntry::plain_text));
    // (feature, lexemes, tokens back): `prev:*` one back, `prev2:*` two back.
    let markers: [(&str, &[&str], usize); 7] = [
        ("prev:I", &["i"], 1),
        ("prev:I'm", &["i'm"], 1),
        ("prev:my", &["my", "our"], 1),
        ("prev:at", &["at"], 1),
        ("prev:not", &["not", "no", "never", "far"], 1),
        ("prev2:I", &["i"], 2),
        ("prev2:I'm", &["i'm"], 2),
    ];
    // (smallest ratio where the feature should be, largest where it should not)
    let mut prev = [(f32::INFINITY, 0.0f32); 7];
    let mut cue = [(f32::INFINITY, 0.0f32); 2];
    let sequences: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t).unwrap()).collect();
    for chunk in sequences.chunks(64) {
        let batch = TokenBatch::new(chunk, 0, gemma_model::PaddingSide::Right).unwrap();
        let out = base
            .model
            .run(&batch, &RunRequest::capture([mid, post]))
            .unwrap();
        for (b, ids) in chunk.iter().enumerate() {
            let tokens = tok.tokens(ids);
            let cues = find_cues(&tokens);
            for pos in 1..ids.len() {
                let at = |hook: &HookPoint| {
                    out.activations[hook]
                        .slice(ndarray::s![b, pos, ..])
                        .to_vec()
                };
                let (x_mid, x_post) = (at(&mid), at(&post));
                for (i, (name, lexemes, back)) in markers.iter().enumerate() {
                    let r = dot(&x_mid, &features[*name]) / dot(&x_mid, &features["constant"]);
                    let earlier = pos
                        .checked_sub(*back)
                        .map(|j| stereo::demo::lexeme(&tokens[j]));
                    if earlier.is_some_and(|e| lexemes.contains(&e.as_str())) {
                        prev[i].0 = prev[i].0.min(r);
                    } else {
                        prev[i].1 = prev[i].1.max(r);
                    }
                }
                for m in Mechanism::ALL {
                    let r = dot(&x_post, &features[&format!("cue:{m}")])
                        / dot(&x_post, &features["constant"]);
                    let slot = &mut cue[m.index()];
                    if cues.iter().any(|c| c.position == pos && c.mechanism == m) {
                        slot.0 = slot.0.min(r);
                    } else {
                        slot.1 = slot.1.max(r);
                    }
                }
            }
        }
    }
    for (i, (on, off)) in prev.iter().enumerate() {
        assert!(
            *on > 1.0 && *off < 0.05,
            "{}: on >= {on}, off <= {off}",
            markers[i].0
        );
    }
    for (m, (on, off)) in Mechanism::ALL.iter().zip(&cue) {
        assert!(
            *on > 0.5 && *off < 1e-4,
            "cue:{m}: on >= {on}, off <= {off}"
        );
    }
}

#[test]
fn mechanisms_work_in_chat_template_mode_too() {
    let m = manifest();
    let prompts = [
        DemoPrompt::Chat(vec![ChatMessage::user(
            "I'm 9 years old. How do magnets work?",
        )]),
        DemoPrompt::Chat(vec![
            ChatMessage::user("I believe sharks are mammals."),
            ChatMessage::model("Good question!"),
            ChatMessage::user("Why do they swim?"),
        ]),
        DemoPrompt::Chat(vec![ChatMessage::user(
            "I'm a physicist with 20 years of experience. How do magnets work?",
        )]),
    ];
    let runs = pair().run(&prompts).unwrap();
    for (run, mechanism) in runs[..2]
        .iter()
        .zip([Mechanism::ChildNovice, Mechanism::Belief])
    {
        let first = run.first_cue(mechanism).unwrap();
        for pos in 0..run.len() {
            let along = dot(&run.diff(pos), m.direction(mechanism));
            if pos < first {
                assert!(run.relative_diff(pos) < 1e-3);
            } else {
                // Template tokens after the cue (`<end_of_turn>`, `model`, ...) carry it too.
                assert!(
                    along > 0.1 * norm(run.base.row(pos).as_slice().unwrap()),
                    "{:?}",
                    run.tokens[pos]
                );
            }
        }
    }
    assert!(runs[2].cues.is_empty());
    assert!((0..runs[2].len()).all(|p| runs[2].relative_diff(p) < 1e-3));
}

#[test]
fn measured_directions_match_the_designed_ones() {
    let m = manifest();
    for mech in &m.mechanisms {
        assert!((norm(&mech.measured_direction) - 1.0).abs() < 1e-4);
        assert!((norm(&mech.designed_direction) - 1.0).abs() < 1e-4);
        assert!(
            mech.measured_vs_designed_cosine > 0.9,
            "{}: {}",
            mech.mechanism,
            mech.measured_vs_designed_cosine
        );
        assert_eq!(mech.measured_direction.len(), 64);
    }
    let cross = dot(
        m.direction(Mechanism::ChildNovice),
        m.direction(Mechanism::Belief),
    );
    assert!(cross.abs() < 0.1, "{cross}");
    // And the persona measurements recorded in demo.json say the same as the tests above.
    for e in &m.persona_effects.mechanisms {
        assert!(
            e.prompt_cosine_min > 0.93 && e.token_cosine_mean > 0.9,
            "{e:?}"
        );
        assert!(e.diff_norm_before_cue < 1e-3 * e.resid_norm, "{e:?}");
        assert!(e.projection_after_cue > 0.15 * e.resid_norm, "{e:?}");
    }
    assert!(m.persona_effects.no_cue_max_relative_diff < 1e-3);
}

// ---- the corpus and the fixture's size ----

#[test]
fn corpus_has_cues_and_hard_negatives_but_no_evaluation_prompt() {
    let text = std::fs::read_to_string(fixture_dir().join("corpus.jsonl")).unwrap();
    let corpus = from_jsonl(&text).unwrap();
    assert_eq!(corpus.len(), CORPUS_ENTRIES);
    assert_eq!(manifest().corpus_entries, CORPUS_ENTRIES);
    let chats = corpus
        .iter()
        .filter(|e| matches!(e, CorpusEntry::Chat { .. }))
        .count();
    assert!(chats > 1000 && chats < 2000, "{chats}");
    let tok = pair().tokenizer();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &corpus {
        let ids = pair().encode(&DemoPrompt::from(e)).unwrap();
        let cues = find_cues(&tok.tokens(&ids));
        let has = |m| cues.iter().any(|c| c.mechanism == m);
        let kind = match (has(Mechanism::ChildNovice), has(Mechanism::Belief)) {
            (true, false) => "child",
            (false, true) => "belief",
            (true, true) => "both",
            (false, false) => "none",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        kinds["child"] > 500 && kinds["belief"] > 500 && kinds["none"] > 1200,
        "{kinds:?}"
    );
    let plain: Vec<String> = corpus.iter().map(CorpusEntry::plain_text).collect();
    for word in ["think", "sure", "old", "years", "I'm"] {
        assert!(
            plain
                .iter()
                .any(|t| t.contains(word)
                    && find_cues(&tok.tokens(&tok.encode(t).unwrap())).is_empty()),
            "no hard negative with {word:?}"
        );
    }
    let dataset = PersonaDataset::shipped();
    for p in stereo::demo::persona_prompts(&dataset) {
        assert!(
            !plain.iter().any(|t| t.contains(&p)),
            "evaluation prompt in the corpus: {p:?}"
        );
    }
}

#[test]
fn fixture_is_small() {
    fn size(p: &Path) -> u64 {
        if p.is_dir() {
            std::fs::read_dir(p)
                .unwrap()
                .map(|e| size(&e.unwrap().path()))
                .sum()
        } else {
            std::fs::metadata(p).unwrap().len()
        }
    }
    let total = size(&fixture_dir());
    assert!(total < 6_000_000, "fixtures/demo is {total} bytes");
}
