//! # diff-analysis
//!
//! The latent hunt of model diffing, done right: which crosscoder latents did chat training add that
//! model the user ("the user is a child", "the user states a belief")? This crate is the seed
//! notebook's sections 6-9 (the diff analysis, the hunt, the verification, the summary) with the
//! statistics, the held-out verification and the outputs a researcher can trust.
//!
//! It composes trait objects only: a [`model_pair::PairedSource`] (base = index 0, chat = index 1, same
//! token ids; both models in memory or one at a time) and a [`crosscoder::Crosscoder`], so the same code
//! runs on every backend and in either memory mode.
//!
//! ## Overview
//!
//! - [`Day1`] runs everything for a [`persona_dataset::PersonaDataset`] with [`Day1Options`] and
//!   returns [`Day1Results`]; [`Day1Results::write`] writes the results directory
//!   (`day1_summary.json`, documented in `SCHEMA.md`; `latent_stats.csv`; `token_activations.json`;
//!   PNG figures; a self-contained `report.html`).
//! - [`plan()`] and [`check_crosscoder`] (with `model_pair::check_configs` and
//!   `gemma_model::ModelSource::read_config` for the models) catch bad options, empty contrasts and a
//!   crosscoder trained on another hook or width **before any model is loaded**.
//! - [`Pooling`]: how a prompt's tokens become one vector (mean over content tokens by default; max;
//!   last token; template tokens only; the notebook's mean over everything).
//! - [`hunt()`](hunt::hunt) on [`PairedFeatures`]: per feature, the paired differences between the
//!   two variants of each item; mean, sd, effect size `d_z`, sign fraction, a paired sign-flip
//!   permutation p-value, Benjamini-Hochberg across the features active anywhere; significant
//!   features ranked by effect size, each with its decoder class ([`DecoderInfo`]). Also the
//!   notebook's own ranking ([`notebook_ranking`]) for comparison, and the residual-dimension
//!   fallback without a crosscoder ([`FeatureKind::ResidualDimension`]).
//! - [`stats`]: the statistics themselves, checked against SciPy.
//! - [`verify`]: held-out verification through both models and the crosscoder, a threshold fitted on
//!   the discovery set, AUROC, and the sentence ([`Conclusion`]).
//!
//! ## Example
//!
//! The statistical core works on any pooled features; here a planted latent among noise:
//!
//! ```
//! use diff_analysis::{hunt, ContrastName, FeatureKind, HuntOptions, PairedFeatures};
//! use ndarray::Array2;
//!
//! let (items, features) = (12, 50);
//! // Latent 7 fires on every positive variant and never on the negative one; the rest is noise.
//! let noise = |i: usize, j: usize, s: usize| ((i * 31 + j * 17 + s * 7) % 11) as f32 * 0.05;
//! let positive = Array2::from_shape_fn((items, features), |(i, j)| noise(i, j, 0) + if j == 7 { 2.0 } else { 0.0 });
//! let negative = Array2::from_shape_fn((items, features), |(i, j)| noise(i, j, 1));
//! let ids = (0..items).map(|i| format!("item_{i}")).collect();
//! let pairs = PairedFeatures::new(ids, positive, negative)?;
//! let contrast = ContrastName { category: "expertise_level".into(), positive: "novice".into(), negative: "expert".into() };
//! let result = hunt(&contrast, &pairs, FeatureKind::CrosscoderLatent, None, &HuntOptions::default())?;
//! let best = result.candidate_stats().next().expect("the planted latent is found");
//! assert_eq!(best.feature, 7);
//! assert!(best.q_value <= 0.05);
//! # Ok::<(), diff_analysis::AnalysisError>(())
//! ```
//!
//! With models: load both with [`gemma_model::load_model`] (`LoadOptions::for_hooks`), pair them in a
//! `model_pair::StereoRunner` (or a `model_pair::SequentialPair`, one model in memory at a time), load a
//! crosscoder, then
//! `Day1::new(&runner, Some(cc.as_ref()), &dataset).options(options).run()?.write("results")?`.
//! The `day1` example of the workspace does exactly that, with flags.
//!
//! ## Cargo features
//!
//! None.

pub mod adl;
pub mod behaviour;
pub mod causal;
pub mod circuit_step;
pub mod confounds;
mod error;
mod extract;
pub mod hunt;
pub mod lexical;
mod options;
pub mod output;
mod pipeline;
mod plan;
mod pooling;
mod results;
pub mod setup;
pub mod stats;
pub mod verify;

pub use error::{AnalysisError, Result};
pub use extract::{prompt_input, FeatureSpace};
pub use hunt::{
    hunt, notebook_ranking, replicate, ContrastHunt, ContrastName, DecoderInfo, FeatureKind,
    HuntOptions, LatentStats, NotebookEntry, PairedFeatures, Replication, ScalingInfo,
};
pub use options::Day1Options;
pub use output::summary::{Day1Summary, SUMMARY_FILE};
pub use pipeline::Day1;
pub use plan::{
    check_crosscoder, crosscoder_hook, default_probe, plan, validate_options, ContrastPlan, Plan,
    MIN_DISCOVERY_ITEMS,
};
pub use pooling::Pooling;
pub use results::{
    CrosscoderInfo, Day1Results, ProbeTokens, RunInfo, Timings, TokenRole, TokenizedPrompt,
};
pub use stats::{PairedSummary, PermutationOptions, PermutationResult};
pub use verify::{
    CandidateVerification, Conclusion, ConclusionStatus, ProbeConclusion, PromptResult,
    VerificationCriteria,
};
