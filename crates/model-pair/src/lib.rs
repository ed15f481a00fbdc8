//! # model-pair
//!
//! The base model and its chat fine-tune side by side ("stereo"): the same token ids through both, the
//! paired activations read at one hook. Model index 0 is the base model, 1 the chat model, everywhere
//! ([`BASE`], [`CHAT`]).
//!
//! ## Overview
//! - [`PairedSource`] is what everything downstream takes (`&dyn PairedSource`): the activation store
//!   writer, the latent hunt and its verification. It runs prompts ([`PairedSource::run`]) or token ids
//!   ([`PairedSource::run_sequences`]) through both models.
//! - [`StereoRunner`] holds both models in memory (each loaded only up to the hook: Gemma-2-2b up to
//!   layer 13 is 6.7 GB in f32, so the pair fits a 24 GiB machine).
//! - [`SequentialPair`] holds one model at a time (two model factories; the base half of the activations
//!   waits in memory while the chat model runs), for machines where the pair does not fit. Same results.
//! - [`PairedActivations`]: `[tokens, 2, d_model]` plus a [`TokenMeta`] per row (prompt, position, token
//!   id, BOS / padding / chat-template flags). Prompts are raw text (`<bos>` + text) or chat-templated for
//!   both models ([`TokenizationMode`]).
//! - [`check_configs`] tells from two `config.json`s alone whether the models can be paired at a hook,
//!   before any weight is read.
//!
//! ## Example
//! ```
//! use gemma_model::{load_dir, HookPoint, LoadOptions, ModelSource};
//! use model_pair::{PairedSource, PromptInput, SequentialPair, StereoRunner, TokenizationMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Base and chat (here the same tiny fixture twice), loaded up to the hook only.
//! let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/gemma/tiny-window");
//! let hook: HookPoint = "blocks.1.hook_resid_post".parse()?;
//! let options = LoadOptions::for_hooks(&[hook]);
//! let both = StereoRunner::from_loaded(load_dir(fixture, &options)?, load_dir(fixture, &options)?, hook)?;
//! let prompts = [PromptInput::from("I'm 5. Why is the sky blue?")];
//! let paired = both.run(&prompts, TokenizationMode::Raw)?;
//! assert_eq!(paired.activations.shape()[1..], [2, 64]); // [tokens, model, d_model]
//! assert!(paired.tokens[0].is_bos);
//!
//! // The same with one model in memory at a time.
//! let sources = [ModelSource::Local(fixture.into()), ModelSource::Local(fixture.into())];
//! let one_at_a_time = SequentialPair::from_sources(sources, options, hook)?;
//! let again = one_at_a_time.run(&prompts, TokenizationMode::Raw)?;
//! assert_eq!(again.tokens, paired.tokens);
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//! None. The models' backends are chosen at run time (see `gemma-model`).

mod checks;
mod error;
mod lockstep;
mod prompt;
mod runner;
mod sequential;
mod source;

pub use checks::check_configs;
pub use error::{PairError, Result};
pub use lockstep::{
    dense_contribution, EditPlan, LatentEdit, LockstepStepper, PreparedEdit, RedirectedClamp,
};
pub use prompt::{
    assistant_flags, template_flags, tokenize_prompt, PairedActivations, PromptInput, TokenMeta,
    TokenRole, TokenizationMode, TokenizedPrompt,
};
pub use runner::StereoRunner;
pub use sequential::{ModelFactory, SequentialPair};
pub use source::{ForwardProgress, ModelInfo, PairedSource};
pub use stereo_core::{BASE, CHAT};
