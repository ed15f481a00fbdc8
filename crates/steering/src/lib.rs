//! # steering
//!
//! Causal tests of crosscoder latents: does turning a latent on make the chat model answer as if to a
//! child, and turning it off make it stop? The chat model generates with a latent clamped, ablated,
//! steered or patched into base (the edits of `model_pair::LatentEdit`, run in lockstep with the base
//! model up to the crosscoder's hook), and the change is measured on the same tokens.
//!
//! ## Overview
//! - [`SteeringSpec`]: the latents, the edit ([`EditKind`]), the dose-response strengths (multiples of the
//!   latent's maximum activation, or absolute), where it applies, target strings, coherence criteria.
//! - [`run_steering`] on [`SteeringModels`] (base to the hook, chat whole, tokenizer, crosscoder)
//!   returns [`SteeringResults`]: per prompt the baseline and intervened answers, per position
//!   `KL(p_chat || p_intervened)`, the NLL of each answer under the unedited chat model, its distinct-2
//!   ratio, the change of each target's log-probability; per strength their means with 95% intervals
//!   ([`MeanCi`]); and the automatic strength (the largest coherent one).
//! - [`output`] writes `steering.json` (schema in `SCHEMA.md` of this crate), the dose-response PNG and a
//!   self-contained `steering.html` (answers side by side, tokens shaded by KL).
//!
//! ## Example
//! ```no_run
//! use std::sync::Arc;
//! use crosscoder::Crosscoder;
//! use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel};
//! use steering::{run_steering, SteeringError, SteeringModels, SteeringSpec};
//!
//! /// Clamps latent 1234 over the default dose-response and writes the three files.
//! fn causal_test(
//!     base: &dyn LanguageModel, // loaded to the hook (`LoadOptions::for_hooks`)
//!     chat: &dyn LanguageModel, // loaded whole
//!     tokenizer: &GemmaTokenizer,
//!     crosscoder: Arc<dyn Crosscoder>,
//!     hook: HookPoint,
//! ) -> Result<(), SteeringError> {
//!     let models = SteeringModels { base, chat, tokenizer, crosscoder, hook };
//!     let mut spec = SteeringSpec::clamp(1234);
//!     spec.targets = vec![" simple".into(), " rigorous".into()];
//!     let results = run_steering(&models, &spec, &["Explain photosynthesis.".to_string()], true)?;
//!     println!("auto strength: {:?}", results.auto_strength);
//!     steering::output::write_all(&results, "steering-out".as_ref())?;
//!     Ok(())
//! }
//! ```

mod error;
mod experiment;
pub mod kl_evaluation;
mod measures;
pub mod output;
mod paired;
pub mod preference;
mod spec;

pub use error::{Result, SteeringError};
pub use experiment::{
    auto_strength, max_activations, run_steering, Answer, IntervenedAnswer, PromptOutcome,
    SteeringResults, StrengthOutcome,
};
pub use kl_evaluation::{run_kl_evaluation, KlEvaluation, KlEvaluationSpec};
pub use measures::{distinct_n, kl_divergence, log_softmax, negative_log_likelihood, MeanCi};
pub use paired::{format_p, PairedStats, EXACT_SIGN_FLIP_MAX_ITEMS, SIGN_FLIP_RESAMPLES};
pub use preference::{
    run_preference, PreferenceEdit, PreferenceItem, PreferenceResults, PreferenceSpec, Verdict,
};
pub use spec::{CoherenceCriteria, EditKind, SteeringModels, SteeringSpec, StrengthUnit};
