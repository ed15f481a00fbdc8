//! # activation-diff-lens
//!
//! Diffing without a crosscoder: the **Activation Difference Lens** (Minder et al. 2025, "Narrow
//! finetuning leaves clearly readable traces in activation differences", arXiv 2510.13900; the
//! science-of-finetuning diffing toolkit's main method). Over texts unrelated to the fine-tune, both
//! models read the same first `k + 1` tokens; per chosen layer and per position `j` after `<bos>`,
//! `delta_j = mean h^chat_j - mean h^base_j` ([`accumulate`], streaming and resumable through
//! [`AdlState`]; both models' activation norms are kept to scale steering). [`logit_lens`] reads a
//! difference through either model's final norm and unembedding, [`patchscope`] writes it into the last
//! position of identity prompts and reads what the model then says, and [`align_with_crosscoder`]
//! compares it with a crosscoder's chat-minus-base decoder directions where one exists.
//! [`steering_search`] adds it to the chat model while it answers and finds the largest coherent strength.
//!
//! The persona-contrast flavour ([`contrast_difference`]) takes prompt pairs that differ in who the user
//! is (child vs adult) and, per position from the first token where the two sides differ (the cue),
//! subtracts the negative side's chat-minus-base difference from the positive side's. [`read_difference`]
//! reads either flavour whole, marking vectors below [`NEGLIGIBLE_RELATIVE_NORM`] of the activation norm
//! as noise; [`summarise`] reads every flavour and steers; [`output::write_all`] writes `adl.json`, the
//! figures and `adl.html` (layouts in `SCHEMA.md`).
//!
//! ```no_run
//! use activation_diff_lens::{accumulate, AdlSpec, AdlState};
//! use gemma_model::{load_dir, LoadOptions};
//! use model_pair::PromptInput;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = LoadOptions { stop_at_layer: Some(13), ..LoadOptions::default() };
//! let base = load_dir("gemma-2-2b", &options)?;
//! let chat = load_dir("gemma-2-2b-it", &options)?;
//! let tokenizer = chat.tokenizer.clone().unwrap();
//! let texts = vec![PromptInput::Text("The history of the bicycle".into())];
//! let mut state = AdlState::new(AdlSpec::new(vec![13]), 2304);
//! accumulate([base.model.as_ref(), chat.model.as_ref()], &tokenizer, &texts, &mut state, &mut |_| Ok(()), true)?;
//! let difference = state.result()?;
//! let first: f32 = difference.delta.slice(ndarray::s![0, 0, ..]).iter().map(|v| v * v).sum();
//! println!("{} texts; ||delta_0|| at layer 13: {}", difference.texts, first.sqrt());
//! # Ok(()) }
//! ```

mod analysis;
mod contrast;
mod difference;
mod error;
pub mod html;
pub mod output;
mod patchscope;
pub mod plots;
mod read;
mod steer;
mod summarise;

pub use analysis::{
    read_difference, DifferenceReading, DifferenceView, LayerPatchscope, PositionReading,
    ReadOptions, NEGLIGIBLE_RELATIVE_NORM,
};
pub use contrast::{contrast_difference, ContrastDifference, ContrastPrompts, ContrastSpec};
pub use difference::{accumulate, add_sequences, ActivationDifference, AdlSpec, AdlState};
pub use error::{AdlError, Result};
pub use patchscope::{
    identity_prompts, patchscope, PatchscopeReadout, PatchscopeScale, PatchscopeSpec,
};
pub use read::{align_with_crosscoder, logit_lens, Alignment, LensEntry, LensReadout};
pub use steer::{steering_search, AdlSteering, AdlSteeringSpec, SteeredAnswers};
pub use summarise::{summarise, AdlModels, NamedContrast, SteeringRequest};
