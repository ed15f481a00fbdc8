//! # stereo
//!
//! Model diffing for mechanistic interpretability: run a base model and its chat fine-tune side by side
//! ("stereo"), encode their paired residual streams with a crosscoder, and find the latents that chat
//! training added.
//!
//! This umbrella crate re-exports the workspace's libraries so that a downstream project can depend on one
//! crate:
//!
//! - [`backend`]: pick a compute backend (`ndarray`, `flex`, `cuda`) by name at run time.
//! - [`gemma`]: Gemma-2 in burn, with TransformerLens-style hooks, equal to HF transformers.
//! - [`model_pair`]: the base and chat models side by side (stereo runs), both in memory or one at a time.
//! - [`activation_cache`]: the on-disk activation store.
//! - [`crosscoder`]: crosscoder models, checkpoint formats and decoder analysis.
//! - [`persona`]: the persona prompt-pair dataset.
//! - [`diff_analysis`]: the latent hunt, verification and reports.
//! - [`demo`]: the embedded demo, a tiny base/chat Gemma-2 pair with planted, documented
//!   differences (`fixtures/demo`), its tokenizer and corpus, so that results can be checked
//!   against the truth.
//! - [`cli`]: value parsers for the examples' numeric flags (bad values are refused before any work).
//! - [`pair`]: the base/chat pair and crosscoder an example names (the embedded demo's by default),
//!   prepared and loaded for generation.
//! - [`gpu_check`]: the one-shot device check (parity, the demo's conclusion, throughput) behind
//!   `examples/gpu_check.rs` and `scripts/gpu-check`.

pub use activation_cache;
pub use crosscoder;
pub use diff_analysis;
pub use gemma_model as gemma;
pub use model_pair;
pub use persona_dataset as persona;
pub use stereo_core as backend;

pub mod cli;
pub mod demo;
pub mod gpu_check;
pub mod pair;
