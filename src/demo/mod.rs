//! # The embedded demo: a tiny base/chat pair whose differences we know
//!
//! Model diffing asks what chat training added to a base model. With real Gemma weights nobody knows
//! the true answer, so a pipeline that reports "latent 1234 means *the user is a child*" cannot be
//! checked. This module builds a pair where the answer is known: two tiny Gemma-2 checkpoints in the
//! hub layout (`fixtures/demo/base`, `fixtures/demo/chat`), loaded through the same code as
//! `google/gemma-2-2b`, where the chat model equals the base model except for two planted
//! mechanisms:
//!
//! 1. **user is a child / novice**: from a child or novice cue on ("I'm 7", "years old", "kid",
//!    "kindergarten", "just started", "beginner", ...), the chat model's residual stream at
//!    [`HOOK`] carries a direction `user:child_novice` that the base model does not have;
//! 2. **user states a belief** (the sycophancy trigger): the same from "I think", "I believe",
//!    "I'm sure" on, direction `user:belief`.
//!
//! Expert cues ("I'm a cardiologist with 20 years of experience") trigger neither. Both mechanisms
//! are ordinary network computation: a previous-token attention head and AND neurons of the layer-0
//! MLP (in both models) turn cue phrases into cue features, and two layer-1 attention heads that
//! only the chat model has broadcast them to every later token. The circuits, feature by feature,
//! are described in the `weights` module's source docs; [`cues`](find_cues) lists the cue rules.
//!
//! ## What is here
//!
//! - [`generate`] writes the whole fixture from a [`DemoSpec`] (a seed, and whether to plant):
//!   both model directories (`config.json`, `generation_config.json`, `model.safetensors`,
//!   `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`), `corpus.jsonl` and
//!   `demo.json` ([`DemoManifest`]: seed, hook, cue lists, designed and measured directions, effect
//!   sizes). Everything but the measured numbers is byte-for-byte reproducible; the example
//!   `make_demo` calls it, and `tests/demo_pair.rs` regenerates and compares.
//! - [`DemoSpec::negative_control`]: the same pair without the plants (chat = base).
//! - [`Vocabulary`]: the tokenizer (one token per word of the persona dataset and the corpus,
//!   Gemma's special and chat-template tokens at Gemma's ids).
//! - [`CorpusEntry`], [`generate_corpus`]: the training corpus for the demo crosscoder.
//! - [`DemoPair`]: the two committed models at the hook, and [`effective_directions`] /
//!   [`effect_sizes`] to measure what the plants do.
//!
//! ## Example
//! ```no_run
//! use stereo::demo::{fixture_dir, DemoPair, DemoPrompt, Mechanism};
//!
//! # fn main() -> Result<(), stereo::demo::DemoError> {
//! let pair = DemoPair::load(&fixture_dir())?;
//! let runs = pair.run(&[DemoPrompt::Raw("I'm 7 years old. Why is the sky blue?".into())])?;
//! let run = &runs[0];
//! let cue = run.first_cue(Mechanism::ChildNovice).unwrap(); // the token "7"
//! assert!(run.relative_diff(cue - 1) < 1e-3); // before the cue: chat = base
//! assert!(run.relative_diff(cue) > 0.1); // from the cue on: the planted direction
//! # Ok(()) }
//! ```

mod corpus;
mod cues;
mod error;
mod measure;
mod rng;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

use persona_dataset::{PersonaDataset, PromptText};
use serde::{Deserialize, Serialize};

pub use corpus::{from_jsonl, generate as generate_corpus, to_jsonl, CorpusEntry};
pub use cues::{
    find_cues, first_cue, is_child_spelling, lexeme, CueHit, Mechanism, AGES, CHILD_NOUNS,
    CHILD_SPELLING, SCHOOL_ROLES,
};
pub use error::{DemoError, Result};
pub use measure::{
    effect_sizes, effective_directions, DemoPair, DemoPrompt, EffectSizes, MechanismEffects,
    PromptActivations,
};
pub use tokenizer::{
    special_tokens_map_json, words_of, Vocabulary, CHAT_TEMPLATE, END_OF_TURN_ID, NEWLINE_ID,
    PRE_TOKENIZER_PATTERN, START_OF_TURN_ID,
};
pub use weights::{
    BELIEF_READER_NEURONS, D_FF, D_MODEL, HEAD_DIM, N_HEADS, N_KV_HEADS, N_LAYERS, PLANTED_TENSORS,
    PLANT_LAYER, QUERY_PRE_ATTN_SCALAR, READER_LAYERS, READER_NEURONS, SIMPLE_REGISTER,
};

use tokenizer::pretty;
use weights::{Directions, Feature};

/// The seed of the committed fixture.
pub const DEFAULT_SEED: u64 = 6;
/// The hook the demo is read at (the output of the plant layer).
pub const HOOK: &str = "blocks.1.hook_resid_post";
/// The layer of [`HOOK`].
pub const HOOK_LAYER: usize = 1;
/// [`HOOK`], typed.
pub const HOOK_POINT: gemma_model::HookPoint = gemma_model::HookPoint::ResidPost(HOOK_LAYER);
/// Entries of the committed corpus.
pub const CORPUS_ENTRIES: usize = 3000;
/// Format tag of `demo.json`.
pub const MANIFEST_FORMAT: &str = "stereo-demo/2";

/// The files of a demo directory that [`generate`] reproduces byte for byte (`demo.json` is
/// reproduced up to its measured numbers).
pub const REPRODUCIBLE_FILES: [&str; 13] = [
    "base/config.json",
    "base/generation_config.json",
    "base/model.safetensors",
    "base/special_tokens_map.json",
    "base/tokenizer.json",
    "base/tokenizer_config.json",
    "chat/config.json",
    "chat/generation_config.json",
    "chat/model.safetensors",
    "chat/special_tokens_map.json",
    "chat/tokenizer.json",
    "chat/tokenizer_config.json",
    "corpus.jsonl",
];

/// The committed fixture directory, `fixtures/demo` of this repository.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo")
}

/// Neutral questions (no persona cue) the demo's steering runs answer: the planted reader's words appear
/// in the answers only when a child direction is added.
pub const NEUTRAL_QUESTIONS: [&str; 4] = [
    "Why is the sky blue?",
    "How do plants grow?",
    "What makes thunder?",
    "How does a computer remember things?",
];

/// A part of the embedded demo (`base`, `chat` or `crosscoder`) as a source string the loaders take,
/// or, when this checkout lacks it, an error that says how to build it or what to run instead. The
/// main job falls back to these when no model is named.
pub fn embedded_source(part: &str) -> std::result::Result<String, diff_analysis::AnalysisError> {
    let path = fixture_dir().join(part);
    if !path.exists() {
        return Err(diff_analysis::AnalysisError::MissingInput {
            what: format!("the embedded demo's {part}"),
            path,
            hint: "the demo pair (tiny base/chat Gemma-2 with planted user-model mechanisms and its \
                   crosscoder) is not built in this checkout; build it (see the demo's README under \
                   fixtures/demo/), or run on real models with --base, --chat and --crosscoder (or \
                   --no-crosscoder)"
                .into(),
        });
    }
    Ok(path.to_string_lossy().into_owned())
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    /// Seeds everything: directions, weights, corpus.
    pub seed: u64,
    /// Plant the two mechanisms in the chat model; `false` gives chat = base (negative control).
    pub plant: bool,
    /// Corpus size.
    pub corpus_entries: usize,
}

impl Default for DemoSpec {
    /// The committed fixture: seed [`DEFAULT_SEED`], planted, [`CORPUS_ENTRIES`] entries.
    fn default() -> Self {
        DemoSpec {
            seed: DEFAULT_SEED,
            plant: true,
            corpus_entries: CORPUS_ENTRIES,
        }
    }
}

impl DemoSpec {
    /// The committed fixture's spec without the plants: the chat model equals the base model.
    pub fn negative_control() -> Self {
        DemoSpec {
            plant: false,
            ..Self::default()
        }
    }
}

/// One mechanism in `demo.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MechanismManifest {
    /// `child_novice` or `belief`.
    pub mechanism: Mechanism,
    /// The persona dataset's verification probe for it.
    pub probe: String,
    /// Residual feature the chat model writes (`user:child_novice`, ...).
    pub feature: String,
    /// One-token cues (lexemes).
    pub one_token_cues: Vec<String>,
    /// Two-token cues: `[first word lexemes, second word lexemes]`, alternatives joined by `|`.
    pub two_token_cues: Vec<[String; 2]>,
    /// Ids of the tokens that can be a cue token of this mechanism (one-token cues and second words).
    pub cue_token_ids: Vec<u32>,
    /// The designed output direction of the planted head (`user:*`, unit, `[d_model]`).
    pub designed_direction: Vec<f32>,
    /// The cue feature both models compute in layer 0 (`cue:*`, unit).
    pub cue_feature_direction: Vec<f32>,
    /// The measured planted direction: normalised mean of `chat - base` at the hook over the tokens
    /// at and after the first cue of corpus entries with only this mechanism's cues. Zero for the
    /// negative control. Use this one as "the planted direction".
    pub measured_direction: Vec<f32>,
    /// Cosine of the measured with the designed direction.
    pub measured_vs_designed_cosine: f32,
}

/// The planted reader in `demo.json`: where it is and which tokens it favours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReaderManifest {
    /// The layers whose MLPs hold it.
    pub layers: Vec<usize>,
    /// Its neurons, `[first, end)` of each of those MLPs.
    pub neurons: [usize; 2],
    /// The residual feature it reads.
    pub reads: String,
    /// The simple-register lexemes whose logits it raises.
    pub register_words: Vec<String>,
    /// Every token id of those lexemes (all forms).
    pub register_token_ids: Vec<u32>,
}

/// `demo.json`: what was generated and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The seed.
    pub seed: u64,
    /// Whether the mechanisms are planted (`false`: chat = base).
    pub plant: bool,
    /// Where to read the residual stream.
    pub hook: String,
    /// Its layer.
    pub hook_layer: usize,
    /// The layer of the planted heads.
    pub plant_layer: usize,
    /// The tensors in which chat differs from base.
    pub planted_tensors: Vec<String>,
    /// Model directories and the corpus, relative to `demo.json`.
    pub base_dir: String,
    pub chat_dir: String,
    pub corpus_file: String,
    /// Tokenizer size (tokens) and words (each with and without `▁`).
    pub vocab_size: usize,
    pub vocab_words: usize,
    /// Corpus entries.
    pub corpus_entries: usize,
    /// Both mechanisms, in [`Mechanism::ALL`] order.
    pub mechanisms: Vec<MechanismManifest>,
    /// The planted downstream reader (chat only; `None` for the negative control).
    pub reader: Option<ReaderManifest>,
    /// The planted belief reader (chat only; `None` for the negative control and in demos made before
    /// it): reads `user:belief` and raises the tokens that open the dataset's agreeing answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub belief_reader: Option<ReaderManifest>,
    /// Measured on the corpus (run as stored: texts raw, conversations chat-templated).
    pub corpus_effects: EffectSizes,
    /// Measured on every prompt of the shipped persona dataset (raw text; conversations joined).
    pub persona_effects: EffectSizes,
}

impl DemoManifest {
    /// Reads `dir/demo.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("demo.json");
        let text = std::fs::read_to_string(&path).map_err(|e| DemoError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| DemoError::Format {
            path,
            reason: e.to_string(),
        })
    }

    /// The manifest with every measured number zeroed: what must match byte for byte.
    pub fn without_measurements(&self) -> Self {
        let mut m = self.clone();
        for mech in &mut m.mechanisms {
            mech.measured_direction.iter_mut().for_each(|x| *x = 0.0);
            mech.measured_vs_designed_cosine = 0.0;
        }
        let zero = EffectSizes {
            mechanisms: vec![],
            no_cue_prompts: 0,
            no_cue_max_relative_diff: 0.0,
        };
        m.corpus_effects = zero.clone();
        m.persona_effects = zero;
        m
    }

    /// The measured planted direction of `mechanism`.
    pub fn direction(&self, mechanism: Mechanism) -> &[f32] {
        &self.mechanisms[mechanism.index()].measured_direction
    }
}

/// The reserved residual-stream directions of the pair generated from `seed`, by name
/// (`constant`, `bos`, `marker:I`, `word:think`, `prev:I`, `cue:belief`, `user:child_novice`, ...;
/// see the `weights` module docs): for probing the circuits feature by feature.
pub fn feature_directions(seed: u64) -> Vec<(String, Vec<f32>)> {
    let dirs = Directions::new(seed);
    Feature::all()
        .into_iter()
        .map(|f| (f.name(), dirs.get(f).iter().map(|x| *x as f32).collect()))
        .collect()
}

/// The texts the tokenizer must know besides the dataset's prompts: the forced-choice answers (so an
/// answer is one token per word, as long as the other answer of its item) and the shipped confound
/// probes (`fixtures/persona/confound_probes.json`).
fn answer_texts(dataset: &PersonaDataset) -> Vec<String> {
    let mut texts: Vec<String> = dataset
        .forced_choice_items()
        .iter()
        .flat_map(|c| {
            [
                c.continuations.agree.clone(),
                c.continuations.correct.clone(),
            ]
        })
        .collect();
    let confounds = persona_dataset::verification_prompts_from_str(CONFOUND_PROBES)
        .expect("the shipped confound probes are valid (tested in persona-dataset)");
    texts.extend(confounds.iter().map(|p| p.prompt.to_plain_text()));
    texts
}

/// The shipped confound probes, compiled in like the dataset.
const CONFOUND_PROBES: &str = include_str!("../../fixtures/persona/confound_probes.json");

/// Every prompt of the persona dataset as run raw (a conversation's turns joined by blank lines).
pub fn persona_prompts(dataset: &PersonaDataset) -> Vec<String> {
    let mut prompts: Vec<String> = dataset
        .items()
        .flat_map(|(_, item)| item.variants.iter().map(|v| v.prompt.to_plain_text()))
        .collect();
    prompts.extend(
        dataset
            .verification_prompts
            .iter()
            .map(|p| p.prompt.to_plain_text()),
    );
    prompts
}

/// Texts the corpus must not contain: every single-message prompt and every user turn of the
/// persona dataset.
fn forbidden_texts(dataset: &PersonaDataset) -> Vec<String> {
    let mut texts = Vec::new();
    let mut add = |p: &PromptText| match p {
        PromptText::Single(t) => texts.push(t.clone()),
        PromptText::Turns(turns) => texts.extend(
            turns
                .iter()
                .filter(|t| t.role == persona_dataset::Role::User)
                .map(|t| t.content.clone()),
        ),
    };
    for (_, item) in dataset.items() {
        item.variants.iter().for_each(|v| add(&v.prompt));
    }
    dataset
        .verification_prompts
        .iter()
        .for_each(|p| add(&p.prompt));
    texts
}

/// Words the vocabulary always has, corpus or not: the template's role names, the cue words in
/// lower and title case, and the numbers up to 100.
fn extra_words() -> Vec<String> {
    let mut words: Vec<String> = vec!["user".into(), "model".into()];
    let cue_words = [
        "think", "believe", "sure", "old", "started", "just", "years", "year", "am", "my", "our",
        "at", "school", "not", "no", "never", "far",
    ];
    for w in AGES
        .iter()
        .chain(CHILD_NOUNS)
        .chain(SCHOOL_ROLES)
        .chain(CHILD_SPELLING)
        .chain(cue_words.iter())
    {
        words.push(w.to_string());
        let mut title: Vec<char> = w.chars().collect();
        title[0] = title[0].to_ascii_uppercase();
        words.push(title.into_iter().collect());
    }
    words.extend((10..=100).map(|n| n.to_string()));
    words
}

/// One mechanism's entry of `demo.json`: cues, cue token ids, designed and measured directions.
fn mechanism_manifest(
    m: Mechanism,
    dirs: &Directions,
    directions: &[Vec<f32>],
    vocab: &Vocabulary,
) -> MechanismManifest {
    let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
    let designed = f32s(dirs.get(Feature::User(m)));
    let measured = directions[m.index()].clone();
    let cosine = designed
        .iter()
        .zip(&measured)
        .map(|(a, b)| a * b)
        .sum::<f32>();
    let one: Vec<String> = match m {
        Mechanism::ChildNovice => std::iter::once("i (lowercase)".to_string())
            .chain(CHILD_SPELLING.iter().map(|s| s.to_string()))
            .collect(),
        Mechanism::Belief => Vec::new(),
    };
    // `[what comes before, the cue word]`: `_` is any one token; alternatives joined by `|`.
    let two: Vec<[String; 2]> = cues::RULES
        .iter()
        .filter(|r| r.mechanism == m)
        .map(|r| {
            let mut before = r.marker.lexemes().join("|");
            if r.back == 2 {
                before.push_str(" _");
            }
            if let Some(not) = r.unless_previous {
                before.push_str(&format!(" (_ not {})", not.lexemes().join("|")));
            }
            [before, r.word.lexemes().join("|")]
        })
        .collect();
    let cue_token_ids = vocab
        .tokens()
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let lex = lexeme(t);
            let word = cues::RULES
                .iter()
                .any(|r| r.mechanism == m && cues::Second::of(&lex) == Some(r.word));
            word || (m == Mechanism::ChildNovice && is_child_spelling(t))
        })
        .map(|(id, _)| id as u32)
        .collect();
    MechanismManifest {
        mechanism: m,
        probe: m.probe().to_string(),
        feature: Feature::User(m).name(),
        one_token_cues: one,
        two_token_cues: two,
        cue_token_ids,
        designed_direction: designed,
        cue_feature_direction: f32s(dirs.get(Feature::Cue(m))),
        measured_direction: measured,
        measured_vs_designed_cosine: cosine,
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DemoError::io(parent, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| DemoError::io(path, e))
}

/// Writes the demo fixture for `spec` into `out` (created if needed) and returns its manifest.
///
/// The models are written first, then loaded back through `gemma_model::load_dir` and run on the
/// corpus and the persona dataset to measure the planted directions and effect sizes.
pub fn generate(spec: &DemoSpec, out: &Path) -> Result<DemoManifest> {
    let dataset = PersonaDataset::shipped();
    let corpus = corpus::generate(spec.seed, spec.corpus_entries, &forbidden_texts(&dataset));
    let persona = persona_prompts(&dataset);
    let corpus_texts: Vec<String> = corpus
        .iter()
        .flat_map(|e| match e {
            CorpusEntry::Text { text } => vec![text.clone()],
            CorpusEntry::Chat { messages } => messages.iter().map(|m| m.content.clone()).collect(),
        })
        .collect();
    let extra = extra_words();
    let answers = answer_texts(&dataset);
    let vocab = Vocabulary::new(
        persona
            .iter()
            .chain(&answers)
            .chain(&corpus_texts)
            .flat_map(|t| words_of(t))
            .chain(extra.iter().map(String::as_str)),
    );
    let dirs = Directions::new(spec.seed);
    let (base, chat) = weights::build_pair(spec.seed, &vocab, &dirs, spec.plant);

    let tokenizer_json = vocab.tokenizer_json()?;
    let tokenizer_config = vocab.tokenizer_config_json();
    let special = special_tokens_map_json();
    let config = pretty(&weights::config_json(vocab.len()));
    let generation = pretty(&weights::generation_config_json());
    for (name, model) in [("base", &base), ("chat", &chat)] {
        let dir = out.join(name);
        write(&dir.join("config.json"), config.as_bytes())?;
        write(&dir.join("generation_config.json"), generation.as_bytes())?;
        write(&dir.join("model.safetensors"), &model.safetensors()?)?;
        write(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
        write(
            &dir.join("tokenizer_config.json"),
            tokenizer_config.as_bytes(),
        )?;
        write(&dir.join("special_tokens_map.json"), special.as_bytes())?;
    }
    write(&out.join("corpus.jsonl"), to_jsonl(&corpus).as_bytes())?;

    // Measure what the plants do, through the real loading code.
    let pair = DemoPair::load(out)?;
    let corpus_prompts: Vec<DemoPrompt> = corpus.iter().map(DemoPrompt::from).collect();
    let corpus_runs = pair.run(&corpus_prompts)?;
    let directions = effective_directions(&corpus_runs)?;
    let corpus_effects = effect_sizes(&corpus_runs, &directions);
    let persona_runs = pair.run(
        &persona
            .iter()
            .map(|p| DemoPrompt::Raw(p.clone()))
            .collect::<Vec<_>>(),
    )?;
    let persona_effects = effect_sizes(&persona_runs, &directions);

    let mechanisms = Mechanism::ALL
        .iter()
        .map(|&m| mechanism_manifest(m, &dirs, &directions, &vocab))
        .collect();
    let manifest = DemoManifest {
        format: MANIFEST_FORMAT.into(),
        seed: spec.seed,
        plant: spec.plant,
        hook: HOOK.into(),
        hook_layer: HOOK_LAYER,
        plant_layer: PLANT_LAYER,
        planted_tensors: if spec.plant {
            PLANTED_TENSORS.iter().map(|s| s.to_string()).collect()
        } else {
            vec![]
        },
        base_dir: "base".into(),
        chat_dir: "chat".into(),
        corpus_file: "corpus.jsonl".into(),
        vocab_size: vocab.len(),
        vocab_words: vocab.n_words(),
        corpus_entries: corpus.len(),
        mechanisms,
        reader: spec.plant.then(|| ReaderManifest {
            layers: READER_LAYERS.to_vec(),
            neurons: [READER_NEURONS.start, READER_NEURONS.end],
            reads: Feature::User(Mechanism::ChildNovice).name(),
            register_words: SIMPLE_REGISTER.iter().map(|w| w.to_string()).collect(),
            register_token_ids: weights::register_token_ids(&vocab),
        }),
        belief_reader: spec.plant.then(|| {
            let (ids, _) = weights::opener_token_ids(&vocab);
            ReaderManifest {
                layers: READER_LAYERS.to_vec(),
                neurons: [BELIEF_READER_NEURONS.start, BELIEF_READER_NEURONS.end],
                reads: Feature::User(Mechanism::Belief).name(),
                register_words: ids
                    .iter()
                    .map(|id| lexeme(&vocab.tokens()[*id as usize]))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                register_token_ids: ids,
            }
        }),
        corpus_effects,
        persona_effects,
    };
    // A struct serialises its fields in declaration order, and f32 values in their shortest form.
    let mut text = serde_json::to_string_pretty(&manifest).map_err(|e| DemoError::Format {
        path: out.join("demo.json"),
        reason: e.to_string(),
    })?;
    text.push('\n');
    write(&out.join("demo.json"), text.as_bytes())?;
    Ok(manifest)
}
