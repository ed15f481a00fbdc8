//! # gemma-model
//!
//! Gemma-2 (`google/gemma-2-2b`, `google/gemma-2-2b-it`) in burn, with TransformerLens-style hooks,
//! numerically equal to HF transformers (eager attention, f32): golden fixtures made by HF are
//! matched to 1e-4 relative on every hook and on the logits.
//!
//! ## Overview
//! - [`load_model`] reads a checkpoint (a local directory or a hub id through the standard cache,
//!   see [`ModelSource`]) into a `Box<dyn` [`LanguageModel`]`>` for a backend chosen by name
//!   ([`LoadOptions::backend`]: `ndarray`, `flex`, or `cuda` with the `cuda` feature). With
//!   [`LoadOptions::stop_at_layer`] only the layers a run needs are read and allocated.
//! - [`GemmaTokenizer`] encodes prompts (exactly one `<bos>`) and renders the chat template
//!   ([`render_chat_template`]).
//! - [`TokenBatch`] pads prompts of different lengths; every real token's activations equal those
//!   of its prompt run alone.
//! - [`RunRequest`] names the [`HookPoint`]s to capture (`blocks.13.hook_resid_post`, ...), whether
//!   to return logits, and [`Intervention`]s that replace activations; the pass stops at the
//!   deepest hook.
//! - [`Gemma2Config`] reads `config.json` in both dialects (transformers 4.4x and >= 5).
//! - On `flex`, RMSNorm, GeGLU and attention run as fused multi-threaded kernels on the tensors'
//!   host buffers ([`LoadOptions::fused_kernels`]), and a decoding step's products read every weight
//!   once, at the memory bandwidth; other backends run them as burn ops.
//!
//! ## Example
//! ```no_run
//! use gemma_model::{load_model, HookPoint, LoadOptions, ModelSource, RunRequest, TokenBatch, PaddingSide};
//!
//! # fn main() -> Result<(), gemma_model::GemmaError> {
//! let hook: HookPoint = "blocks.13.hook_resid_post".parse()?;
//! let options = LoadOptions::for_hooks(&[hook]); // loads layers 0..=13 only
//! let loaded = load_model(&ModelSource::parse("google/gemma-2-2b")?, &options)?;
//! let tokenizer = loaded.tokenizer.expect("the hub repo has tokenizer.json");
//! let prompts = ["I'm 5 years old. Why is the sky blue?", "As a physicist, explain Rayleigh scattering."];
//! let ids = prompts.iter().map(|p| tokenizer.encode(p)).collect::<Result<Vec<_>, _>>()?;
//! let batch = TokenBatch::new(&ids, loaded.model.config().pad_token_id, PaddingSide::Right)?;
//! let out = loaded.model.run(&batch, &RunRequest::capture([hook]))?;
//! let resid = &out.activations[&hook]; // [2, max_len, 2304]
//! # let _ = resid; Ok(()) }
//! ```
//!
//! ## Cargo features
//! - `cuda`: the CUDA backend (builds without a CUDA toolkit; the driver is loaded at run time, and
//!   asking for CUDA where there is none is an error).

pub mod activations_file;
mod batch;
mod config;
mod error;
pub mod generation;
mod head_hooks;
mod hook_state;
mod hooks;
mod host_kernels;
mod language_model;
mod model;
mod parameters;
mod source;
pub mod throughput;
mod tokenizer;
mod weights;

pub use batch::{PaddingSide, TokenBatch};
pub use config::{AttentionKind, Gemma2Config};
pub use error::{GemmaError, Result};
pub use head_hooks::{HeadEditFn, HeadHook, HeadIntervention};
pub use hooks::{EditFn, HookPoint, Intervention, LogitPositions, ResumeFrom, RunRequest};
pub use language_model::{
    load_dir, load_model, random_model, ComputeDtype, DecodeSession, LanguageModel, LoadOptions,
    LoadedModel,
};
pub use model::{LayerWeights, RunOutput};
pub use source::{ModelSource, ResolvedModel};
pub use stereo_core::hub::HubOptions;
pub use stereo_core::BackendKind;
pub use tokenizer::{render_chat_template, ChatMessage, GemmaTokenizer, Role};
pub use weights::WeightFiles;
