//! # crosscoder
//!
//! Load a crosscoder someone else trained, encode paired activations of a base and a chat model into
//! latents, decode them back, and read the model diff off the decoder weights.
//!
//! A two-model (in general `n`-model) acausal crosscoder maps the activations `x_m` of each model `m` at
//! one hook to shared latents and back:
//!
//! ```text
//! f    = act( sum_m norm(x)_m @ W_enc[m] + b_enc )       W_enc [n, d, F], b_enc [F]
//! x̂_m = denorm( f @ W_dec[m] + b_dec[m] )               W_dec [n, F, d], b_dec [n, d]
//! ```
//!
//! Model index 0 is the base model, 1 the chat model, everywhere ([`BASE`], [`CHAT`]).
//!
//! ## Overview
//!
//! - [`CrosscoderLoader`] (or [`load`]) reads a checkpoint from a directory, a `.pt` / `.safetensors` file or a
//!   hub id, and builds it on a backend chosen at run time ([`BackendKind`]: `ndarray`, `flex`, `cuda`).
//!   Formats: dictionary_learning's `CrossCoder` / `BatchTopKCrossCoder` (hub layout and `torch.save`
//!   training output), the ckkissane replication (`cfg.json` + `cc_weights.pt`), and [our own](formats::ours).
//!   Torch pickles are read as data only ([`CrosscoderError::ForbiddenPickleGlobal`] for anything else).
//! - [`CrosscoderCheckpoint`] is the validated host form of any of them (config, [`CrosscoderWeights`],
//!   [`InputNormalizer`]); [`CrosscoderCheckpoint::build`] turns it into a runnable [`Crosscoder`];
//!   [`CrosscoderCheckpoint::save`] writes our format.
//! - [`Crosscoder`] is the object-safe trait the rest of the workspace uses, with host arrays in and out:
//!   [`encode`](Crosscoder::encode) (raw latents `f`), [`encode_scaled`](Crosscoder::encode_scaled)
//!   (`f * w_j`, what dictionary_learning's `forward(output_features=True)` and `get_activations` return),
//!   [`encode_top_k`](Crosscoder::encode_top_k) ([`SparseLatents`]), [`decode`](Crosscoder::decode),
//!   [`forward`](Crosscoder::forward), decoder norms and vectors.
//! - [`metrics`]: MSE, fraction of variance unexplained and L0 per model ([`MetricsAccumulator`] over a
//!   stream), dead/alive latents ([`LatentActivity`]).
//! - [`analysis`]: relative decoder norms `n_chat / (n_base + n_chat)`, latent classes
//!   ([`RelativeNormThresholds`], [`DecoderAnalysis`]), decoder cosine similarity; [`plot`] draws the
//!   relative-norm histogram to a PNG.
//!
//! Training lives in the `crosscoder-train` crate; [`tensors`] gives it (and any crate adding a format)
//! the checkpoint tensor I/O.
//!
//! - [`latent_scaling`]: Latent Scaling (Minder et al.), the streaming closed-form fit that tells robust
//!   chat-only latents from sparsity artifacts ([`LatentScaling`], [`RobustThresholds`]).
//!
//! Activations that do not match the crosscoder (`n_models` or `d`) are a typed error
//! ([`CrosscoderError::ActivationShape`]) before any compute.
//!
//! ## Example
//!
//! ```
//! use crosscoder::{
//!     Activation, BackendKind, CrosscoderCheckpoint, CrosscoderConfig, CrosscoderWeights, DecoderAnalysis,
//!     InputNormalizer, RelativeNormThresholds, BASE, CHAT,
//! };
//! use ndarray::{Array1, Array2, Array3};
//!
//! // A toy crosscoder over 2 models, d = 3, F = 4 (real ones come from `CrosscoderLoader`).
//! let (n, d, f) = (2, 3, 4);
//! let weights = CrosscoderWeights {
//!     w_enc: Array3::from_shape_fn((n, d, f), |(m, i, j)| ((m + i + j) % 3) as f32 - 0.5),
//!     b_enc: Array1::from_elem(f, 0.1),
//!     w_dec: Array3::from_shape_fn((n, f, d), |(m, j, i)| if m == 1 && j == 0 { 0.0 } else { (i + j) as f32 * 0.1 }),
//!     b_dec: Array2::zeros((n, d)),
//! };
//! let config = CrosscoderConfig::relu(n, d, f);
//! let checkpoint = CrosscoderCheckpoint::new(config, weights, InputNormalizer::Identity)?;
//! let cc = checkpoint.build(BackendKind::NdArray)?;
//!
//! // Encode a batch of paired activations [batch, n_models, d] into raw latents [batch, F] ...
//! let x = Array3::from_shape_fn((5, n, d), |(b, m, i)| (b + m + i) as f32 * 0.3);
//! let latents = cc.encode(x.view())?;
//! assert_eq!(latents.dim(), (5, f));
//! assert!(latents.iter().all(|v| *v >= 0.0));
//!
//! // ... and back to [batch, n_models, d].
//! let reconstruction = cc.decode(latents.view())?;
//! assert_eq!(reconstruction.dim(), (5, n, d));
//! let quality = cc.evaluate(x.view())?;
//! println!("FVU base {:.3}, chat {:.3}, L0 {:.1}", quality.fvu[BASE], quality.fvu[CHAT], quality.l0);
//!
//! // The model diff lives in the decoder norms: latent 0 decodes only into the base model.
//! let diff = DecoderAnalysis::new(cc.as_ref(), BASE, CHAT, RelativeNormThresholds::default())?;
//! assert_eq!(diff.relative_norms[0], 0.0);
//! println!("{:?}", diff.counts());
//!
//! // Activations of the wrong width are refused before any compute.
//! assert!(cc.encode(Array3::zeros((1, 2, 7)).view()).is_err());
//! # assert_eq!(cc.config().activation, Activation::Relu);
//! # Ok::<(), crosscoder::CrosscoderError>(())
//! ```
//!
//! ## Cargo features
//!
//! - `cuda`: compiles the CUDA backend (`stereo-core/cuda`); it is used only where a CUDA driver is found
//!   at run time.

pub mod analysis;
mod checkpoint;
mod config;
pub mod encode_file;
mod error;
pub mod formats;
mod hub;
pub mod latent_scaling;
mod latents;
mod loader;
pub mod metrics;
mod model;
mod pickle;
pub mod plot;
pub mod tensors;
pub mod throughput;
mod traits;

pub use analysis::{
    nearest_decoder_latent, ClassCounts, DecoderAnalysis, LatentClass, RelativeNormThresholds,
};
pub use checkpoint::{CrosscoderCheckpoint, CrosscoderWeights};
pub use config::{
    Activation, CodeNormalization, CrosscoderConfig, InputNormalizer, BASE, CHAT, GEMMA_2_2B_MODELS,
};
pub use error::{CrosscoderError, Result};
pub use formats::CheckpointFormat;
pub use hub::{is_hub_id, split_hub_id};
pub use latent_scaling::{
    raw_directions, LatentScaling, LatentScalingResult, LatentScalingState, RobustThresholds,
};
pub use latents::SparseLatents;
pub use loader::{load, CrosscoderLoader};
pub use metrics::{
    reconstruction_metrics, LatentActivity, MetricsAccumulator, ReconstructionMetrics,
};
pub use plot::{relative_norm_histogram, HistogramOptions};
pub use stereo_core::hub::HubOptions;
pub use stereo_core::BackendKind;
pub use traits::{Crosscoder, ForwardOutput};
