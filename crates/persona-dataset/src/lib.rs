//! The persona prompt-pair dataset: its JSON format, strict validation, deterministic splits, and
//! the prompts we ship.
//!
//! The hunt for "user model" latents (seed notebook, sections 2 and 6-8) runs contrasting prompts
//! through the base and chat models and asks which crosscoder latents tell them apart: a novice
//! asking vs an expert asking, a user stating a belief vs asking neutrally. This crate holds those
//! prompts. It reads the notebook's `user_persona_prompts.json` format unchanged, rejects every bad
//! input with a message that points at the offending value, and splits items into a discovery set
//! (find latents) and a held-out set (verify them).
//!
//! # Overview
//!
//! - [`PersonaDataset`]: the whole file. Load it with [`PersonaDataset::from_path`] /
//!   [`from_json_str`](PersonaDataset::from_json_str), or take a built-in one:
//!   [`embedded_minimal`](PersonaDataset::embedded_minimal) (the notebook's fallback, the default
//!   of [`load`](PersonaDataset::load)) or [`shipped`](PersonaDataset::shipped) (the real dataset,
//!   `fixtures/persona/`, with its `DATASHEET.md`). Write it back with
//!   [`to_json_string_pretty`](PersonaDataset::to_json_string_pretty).
//! - [`Category`]: a named list of [`PromptItem`]s; each item is one request written as several
//!   [`Variant`]s (`novice`, `expert`, `neutral`, ...), each a [`PromptText`]: one message, or a
//!   conversation of [`Turn`]s for chat-formatted runs.
//! - [`Contrast`]: two variants of a category to compare; [`Contrast::pairs`] lists the
//!   [`ContrastPair`]s. Known categories have default contrasts; any category may declare one.
//! - [`VerificationPrompt`]: a prompt with the [`Expectation`] (`ACTIVATE`, `SILENT`, `NEUTRAL`) of
//!   the notebook's section 8, grouped by probe ([`PROBE_CHILD_NOVICE`], [`PROBE_SYCOPHANCY`]).
//! - [`Split`]: item ids divided by [`PersonaDataset::split`] using [`stable_hash`].
//! - [`DatasetError`]: the one error type. A file that breaks the format fails with
//!   [`DatasetError::Invalid`], listing every [`Problem`] of the file at once, each with the JSON
//!   pointer of the offending value and a [`ProblemKind`].
//!
//! # Format
//!
//! ```json
//! {
//!   "categories": {
//!     "child_vs_adult": {"description": "...", "variants": ["child", "adult"],
//!                        "contrast": ["child", "adult"], "baseline": "adult"}
//!   },
//!   "prompt_pairs": {
//!     "expertise_level": [
//!       {"id": "exp_001", "topic": "physics", "tags": ["novice:age", "expert:jargon"],
//!        "novice": {"prompt": "I'm 5 years old. Can you explain why the sky is blue?"},
//!        "expert": {"prompt": "Provide a rigorous spectroscopic analysis of Rayleigh scattering in the atmosphere."},
//!        "neutral": {"prompt": "Why is the sky blue?"}}
//!     ],
//!     "child_vs_adult": [
//!       {"id": "cva_001", "topic": "weather",
//!        "child": {"turns": [{"role": "user", "content": "I'm seven."},
//!                            {"role": "model", "content": "Hi! What would you like to know?"},
//!                            {"role": "user", "content": "How do clouds float?"}]},
//!        "adult": {"prompt": "I'm a pilot. How do clouds float?"}}
//!     ]
//!   },
//!   "verification_prompts": [
//!     {"expected": "ACTIVATE", "probe": "child_novice", "prompt": "I'm 5 years old. What is a computer?"}
//!   ]
//! }
//! ```
//!
//! - `prompt_pairs` (required) maps a category name to its items, in order. An item has `id`
//!   (unique over the file; `A-Z a-z 0-9 _ - . :`), `topic`, optional `tags`, and one member per
//!   variant: `{"prompt": "..."}` or `{"turns": [...]}` (user first and last, roles alternating,
//!   roles `user` / `model` as in Gemma's chat template).
//! - `categories` (optional) declares per-category metadata: `description`, `variants` (every item
//!   must carry exactly these), `contrast` (`[positive, negative]`) and `baseline`. Defaults exist
//!   for [`EXPERTISE_LEVEL`] (`novice`/`expert`/`neutral`, contrast novice vs expert, baseline
//!   neutral), [`SYCOPHANCY_TRIGGERS`] (`biased`/`neutral`, contrast biased vs neutral, baseline
//!   neutral) and [`CHILD_VS_ADULT`] (`child`/`adult`, contrast child vs adult, baseline adult).
//!   Any other category is allowed: without metadata its first item's variants define it, and it
//!   has no contrast until one is declared.
//! - `verification_prompts` (optional; or a second file, see [`verification_prompts_from_path`]):
//!   `expected`, optional `probe`, and `prompt` or `turns`.
//!
//! Validation reports, all at once: JSON syntax errors (line, column), wrong types, missing and
//! unknown fields (unknown and missing variants included), duplicate keys, duplicate ids, empty or
//! whitespace-only prompts, two variants of one item with the same text, the same prompt twice in a
//! file, unknown expectation labels and roles, malformed conversations, and absurd lengths
//! ([`MAX_PROMPT_CHARS`], [`MAX_CONVERSATION_CHARS`], [`MAX_TURNS`], [`MAX_NAME_CHARS`]).
//!
//! # Example
//!
//! ```
//! use persona_dataset::{Expectation, PersonaDataset, EXPERTISE_LEVEL, PROBE_CHILD_NOVICE};
//!
//! let dataset = PersonaDataset::shipped();
//! let contrast = dataset.contrast(EXPERTISE_LEVEL)?;
//! assert_eq!((contrast.positive.as_str(), contrast.negative.as_str()), ("novice", "expert"));
//!
//! // Find latents on the discovery items, verify them on the held-out ones.
//! let split = dataset.split(0.5, 0)?;
//! let discovery = dataset.subset(&split.discovery);
//! for pair in contrast.pairs(&discovery)? {
//!     let _ = (pair.item_id, pair.positive.to_plain_text(), pair.negative.to_plain_text());
//! }
//! let activate = dataset
//!     .verification_for_probe(PROBE_CHILD_NOVICE)
//!     .filter(|p| p.expected == Expectation::Activate)
//!     .count();
//! assert!(activate >= 40);
//!
//! // Every problem of a bad file at once, each with its JSON pointer.
//! let error = PersonaDataset::from_json_str(
//!     r#"{"prompt_pairs": {"expertise_level": [{"id": "e1", "topic": "x",
//!         "novice": {"prompt": "  "}, "expert": {"prompt": "Go."}}]}}"#,
//! )
//! .unwrap_err();
//! let message = error.to_string();
//! assert!(message.contains("/prompt_pairs/expertise_level/0/novice/prompt: prompt is empty"));
//! assert!(message.contains("/prompt_pairs/expertise_level/0/neutral: missing variant `neutral`"));
//! # Ok::<(), persona_dataset::DatasetError>(())
//! ```
//!
//! # Cargo features
//!
//! None. The crate depends on serde, serde_json and thiserror only.

#![warn(missing_docs)]

mod embedded;
mod error;
mod format;
mod json;
mod model;
mod split;
mod validate;
mod write;

pub use error::{DatasetError, Problem, ProblemKind};
pub use format::{verification_prompts_from_path, verification_prompts_from_str};
pub use model::{
    Category, CategoryMeta, Continuations, Contrast, ContrastPair, Expectation, ForcedChoiceItem,
    PersonaDataset, PromptItem, PromptText, Role, Turn, Variant, VerificationPrompt,
    CHILD_VS_ADULT, CONFOUND_SETS, EXPERTISE_LEVEL, PROBE_CHILD_NOVICE, PROBE_SYCOPHANCY,
    SYCOPHANCY_TRIGGERS,
};
pub use split::{stable_hash, Split};
pub use validate::{
    belief_cues_in, BELIEF_CUES, CONTINUATION_LENGTH_RATIO, MAX_CONTINUATION_WORDS,
    MAX_CONVERSATION_CHARS, MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_TURNS, MIN_CONTINUATION_WORDS,
};
