//! The options of a [`Day1`](crate::Day1) run (a leaf: the plan, the run and the results read them).

use crosscoder::{RelativeNormThresholds, RobustThresholds, CHAT};
use latent_dashboard::DashboardOptions;
use model_pair::TokenizationMode;
use serde::Serialize;

use crate::hunt::HuntOptions;
use crate::pooling::Pooling;
use crate::verify::VerificationCriteria;

/// Options of a [`Day1`] run.
///
/// | option | default |
/// |---|---|
/// | `pooling` | [`Pooling::MeanContent`] |
/// | `tokenization` | [`TokenizationMode::Raw`] (the notebook's) |
/// | `discovery_ratio` | 0.75 (the rest of each contrast's items replicate the candidates; fewer discovery items cannot reach FDR significance over thousands of latents: 12 items give p >= 2^-11) |
/// | `seed` | 0 (split and permutation test) |
/// | `hunt` | [`HuntOptions::default`]: FDR 5%, top 10 |
/// | `criteria` | [`VerificationCriteria::default`]: AUROC >= 0.8, balanced accuracy >= 0.75 |
/// | `thresholds` | [`RelativeNormThresholds::default`] |
/// | `contrasts` | empty = every category with a contrast |
/// | `probes` | empty = [`default_probe`](crate::default_probe) per category |
/// | `residual_model` | 1 (chat), used without a crosscoder |
/// | `encode_rows` | 256 rows per crosscoder call |
/// | `progress` | true (a progress bar on stderr) |
/// | `latent_scaling` | true: Latent Scaling over the discovery prompts' tokens (crosscoder only) |
/// | `robust` | [`RobustThresholds::default`]: relative norm >= 0.9, `nu_error` < 0.2, `nu_reconstruction` < 0.5 |
/// | `dashboards` | `Some(DashboardOptions::default())`: a dashboard per candidate latent over its probe's verification prompts (crosscoder only) |
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day1Options {
    /// How a prompt's tokens are pooled.
    pub pooling: Pooling,
    /// Raw prompts or the chat template, for both models.
    pub tokenization: TokenizationMode,
    /// Share of each contrast's items used for discovery (by a stable hash of the item id).
    pub discovery_ratio: f64,
    /// Seed of the split and of the permutation tests.
    pub seed: u64,
    /// Statistics and ranking.
    pub hunt: HuntOptions,
    /// When a candidate passes verification.
    pub criteria: VerificationCriteria,
    /// Decoder classes.
    pub thresholds: RelativeNormThresholds,
    /// Categories to analyse (empty = all with a contrast).
    pub contrasts: Vec<String>,
    /// `(category, probe)` overrides of the verification probe.
    pub probes: Vec<(String, String)>,
    /// Residual stream used without a crosscoder (0 = base, 1 = chat).
    pub residual_model: usize,
    /// Rows per crosscoder call.
    pub encode_rows: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Run Latent Scaling (crosscoder only) over every token of the discovery prompts, and tag each
    /// latent robust chat-only or not.
    pub latent_scaling: bool,
    /// The robust chat-only thresholds of Latent Scaling.
    pub robust: RobustThresholds,
    /// Build a dashboard for every candidate latent (crosscoder only; `None` skips them).
    pub dashboards: Option<DashboardOptions>,
}

impl Default for Day1Options {
    fn default() -> Self {
        Day1Options {
            pooling: Pooling::MeanContent,
            tokenization: TokenizationMode::Raw,
            discovery_ratio: 0.75,
            seed: 0,
            hunt: HuntOptions::default(),
            criteria: VerificationCriteria::default(),
            thresholds: RelativeNormThresholds::default(),
            contrasts: Vec::new(),
            probes: Vec::new(),
            residual_model: CHAT,
            encode_rows: 256,
            progress: true,
            latent_scaling: true,
            robust: RobustThresholds::default(),
            dashboards: Some(DashboardOptions::default()),
        }
    }
}
