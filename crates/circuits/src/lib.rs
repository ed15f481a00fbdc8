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

mod decompose;
mod error;
mod writers;

pub use decompose::{decompose, Component, ResidualDecomposition};
pub use error::{CircuitError, Result};
pub use writers::{
    attribute_writers, ComponentWriter, PatternView, TokenAttribution, WriterReport, WriterSpec,
    STANDOUT_SHARE,
};
