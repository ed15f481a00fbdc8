//! # circuits
//!
//! Map a crosscoder latent's circuit (the seed notebook's last next step, "which attention heads read
//! this feature?"):
//!
//! - [`decompose`]: a model's residual at `blocks.{L}.hook_resid_post` split exactly into the scaled
//!   embedding, every attention head's normalised write and every MLP's output (per-head hooks of
//!   `gemma-model`).
//! - [`attribute_writers`]: the latent's pre-activation, affine in both residuals, split over both models'
//!   components per token; per component its contribution in each model and what chat training changed
//!   (`W[j, chat] . (c_chat - c_base)`), aggregated over prompts with 95% intervals; the attention
//!   patterns of the top heads.
//! - [`find_readers`]: every later head and MLP of the chat model as a reader of the latent's chat
//!   decoder direction: composition scores through the norm before it, the most aligned MLP neurons, and
//!   the relative change of its output when the latent is ablated (the causal tests' edit).
//! - [`map_circuit`] does both into an [`output::CircuitReport`]; [`output::write_all`] writes
//!   `circuit.json` (schema in `SCHEMA.md`), `writers.png`, `readers.png` and `circuit.html`.

mod circuit;
mod decompose;
mod error;
pub mod html;
pub mod output;
pub mod plots;
mod readers;
mod writers;

pub use circuit::{map_circuit, CircuitModels, CircuitOptions};
pub use decompose::{decompose, Component, ResidualDecomposition};
pub use error::{CircuitError, Result};
pub use readers::{find_readers, ComponentReader, NeuronReader, ReaderReport, ReaderSpec};
pub use writers::{
    attribute_writers, ComponentWriter, PatternView, TokenAttribution, WriterReport, WriterSpec,
    STANDOUT_SHARE,
};
