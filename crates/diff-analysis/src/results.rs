//! What a [`Day1`](crate::Day1) run produces: its options, what it ran on, the hunts, the verifications, the
//! per-token values and the conclusion. A leaf of the crate: the orchestrator (`pipeline`) fills these, the
//! writers (`output`) read them, and neither is imported here. The run's options are in `options`.

use crosscoder::{Crosscoder, DecoderAnalysis};
use model_pair::TokenMeta;
use persona_dataset::Expectation;
use serde::{Serialize, Serializer};

use crate::hunt::{ContrastHunt, FeatureKind, Replication};
use crate::options::Day1Options;
use crate::plan::Plan;
use crate::verify::{CandidateVerification, Conclusion};

/// The crosscoder's identity, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrosscoderInfo {
    /// Where it came from (format and path or hub id).
    pub source: String,
    /// Latents `F`.
    pub dict_size: usize,
    /// Width `d`.
    pub d_model: usize,
    /// `relu` or `batch_top_k`.
    pub activation: String,
    /// Code normalisation (`CROSSCODER`, ...).
    pub code_normalization: String,
    /// Input normaliser (`identity`, `scaling_factors`, `mean_std`).
    pub input_normalization: String,
    /// The hook it was trained on, if recorded.
    pub hook: Option<String>,
    /// The layer, if recorded.
    pub layer: Option<usize>,
    /// Model names in index order, if recorded.
    pub models: Vec<String>,
}

impl CrosscoderInfo {
    /// The facts of `cc`.
    pub fn of(cc: &dyn Crosscoder) -> Self {
        let c = cc.config();
        CrosscoderInfo {
            source: c.source.clone().unwrap_or_else(|| "(in memory)".into()),
            dict_size: c.dict_size,
            d_model: c.d_model,
            activation: c.activation.name().into(),
            code_normalization: c.code_normalization.reference_name().into(),
            input_normalization: cc.normalizer().name().into(),
            hook: c.hook.map(|h| h.to_string()),
            layer: c.layer,
            models: c.models.clone(),
        }
    }
}

/// What was run on what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    /// Base model (index 0) name.
    pub base_model: String,
    /// Chat model (index 1) name.
    pub chat_model: String,
    /// The hook read.
    pub hook: String,
    /// Its layer.
    pub layer: Option<usize>,
    /// Residual width.
    pub d_model: usize,
    /// Backend of the models.
    pub backend: String,
    /// The crosscoder, if one was used.
    pub crosscoder: Option<CrosscoderInfo>,
    /// Where the dataset came from.
    pub dataset: String,
}

/// What a token is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// `<bos>`.
    Bos,
    /// A chat-template token.
    Template,
    /// The user's text.
    Content,
    /// Text of a model turn (a conversation prompt in chat-template mode).
    Assistant,
}

impl TokenRole {
    /// The role of a token of a stereo run.
    pub fn of(meta: &TokenMeta) -> Self {
        if meta.is_bos {
            TokenRole::Bos
        } else if meta.is_template {
            TokenRole::Template
        } else if meta.is_assistant {
            TokenRole::Assistant
        } else {
            TokenRole::Content
        }
    }
}

fn label<S: Serializer>(e: &Expectation, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(e.label())
}

/// A verification prompt's tokens and the candidates' activation on each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenizedPrompt {
    /// `ACTIVATE`, `SILENT` or `NEUTRAL`.
    #[serde(serialize_with = "label")]
    pub expected: Expectation,
    /// The prompt text.
    pub prompt: String,
    /// Token strings (`▁` marks a leading space, as in the vocabulary).
    pub tokens: Vec<String>,
    /// What each token is.
    pub roles: Vec<TokenRole>,
    /// Whether the pooling read the token.
    pub pooled: Vec<bool>,
    /// `values[c][t]`: activation of candidate `features[c]` on token `t`.
    pub values: Vec<Vec<f32>>,
}

/// Token-level activations of one probe's candidates on its verification prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeTokens {
    /// The probe.
    pub probe: String,
    /// The candidate features, in column order of `values`.
    pub features: Vec<usize>,
    /// Every verification prompt of the probe.
    pub prompts: Vec<TokenizedPrompt>,
}

impl ProbeTokens {
    /// Column of `feature`.
    pub fn column(&self, feature: usize) -> Option<usize> {
        self.features.iter().position(|f| *f == feature)
    }
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Stereo runs, encoding and pooling of the contrast items.
    pub discovery_runs_s: f64,
    /// Statistics (permutation tests, FDR).
    pub statistics_s: f64,
    /// Verification runs and scoring.
    pub verification_s: f64,
    /// Everything.
    pub total_s: f64,
}

/// Everything a [`Day1`] run found.
#[derive(Debug, Clone)]
pub struct Day1Results {
    /// What was run on what.
    pub info: RunInfo,
    /// The options used.
    pub options: Day1Options,
    /// The plan (contrasts, split, probes).
    pub plan: Plan,
    /// Latents or residual dimensions.
    pub kind: FeatureKind,
    /// One hunt per contrast, in plan order.
    pub hunts: Vec<ContrastHunt>,
    /// Per contrast, the candidates' held-out replication (empty without held-out items).
    pub replications: Vec<Vec<Replication>>,
    /// Decoder analysis of the crosscoder (relative norms of every latent).
    pub decoder: Option<DecoderAnalysis>,
    /// Every candidate's verification.
    pub verifications: Vec<CandidateVerification>,
    /// Token-level activations per probe.
    pub tokens: Vec<ProbeTokens>,
    /// The sentence.
    pub conclusion: Conclusion,
    /// The causal tests of the concluded latents (`day1 --causal`; empty otherwise).
    pub causal: Vec<crate::causal::CausalEvidence>,
    /// The KL evaluation of the concluded latents (`day1 --causal`): their chat-minus-base contribution
    /// patched into the base residual, on the activating prompts' answers.
    pub kl_evaluation: Option<steering::KlEvaluation>,
    /// Sycophancy as behaviour (`day1 --causal`): the forced choice with the concluded sycophancy latent
    /// ablated, against a matched random latent.
    pub behaviour: Option<steering::PreferenceResults>,
    /// A dashboard per candidate latent, over its probe's verification prompts (first probe wins).
    pub dashboards: Vec<latent_dashboard::LatentDashboard>,
    /// The Activation Difference Lens at the hook's layer (`day1 --no-crosscoder`): the corpus and
    /// persona-contrast differences, read.
    pub adl: Option<activation_diff_lens::output::AdlSummary>,
    /// The circuits of the verified candidates (`day1 --circuits`).
    pub circuits: Vec<circuits::output::CircuitReport>,
    /// Phase timings.
    pub timings: Timings,
}

impl Day1Results {
    /// The verification of `feature` from `contrast`.
    pub fn verification(&self, contrast: &str, feature: usize) -> Option<&CandidateVerification> {
        self.verifications
            .iter()
            .find(|v| v.contrast == contrast && v.feature == feature)
    }

    /// The held-out replication of `feature` in contrast number `c`.
    pub fn replication(&self, c: usize, feature: usize) -> Option<&Replication> {
        self.replications
            .get(c)?
            .iter()
            .find(|r| r.feature == feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roles_follow_the_run_metadata() {
        let meta = |is_bos, is_template, is_assistant| TokenMeta {
            prompt: 0,
            position: 0,
            token_id: 0,
            is_bos,
            is_pad: false,
            is_template,
            is_assistant,
        };
        assert_eq!(TokenRole::of(&meta(true, false, false)), TokenRole::Bos);
        assert_eq!(TokenRole::of(&meta(false, true, true)), TokenRole::Template);
        assert_eq!(
            TokenRole::of(&meta(false, false, true)),
            TokenRole::Assistant
        );
        assert_eq!(
            TokenRole::of(&meta(false, false, false)),
            TokenRole::Content
        );
    }
}
