//! What a causal test asks for ([`SteeringSpec`]), and the models it runs on ([`SteeringModels`]).

use std::sync::Arc;

use crosscoder::Crosscoder;
use gemma_model::generation::InterventionScope;
use gemma_model::{GemmaTokenizer, HookPoint, LanguageModel};
use model_pair::LatentEdit;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SteeringError};

/// The kind of edit made to the chosen latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditKind {
    /// Set the latents to `strength` (x max activation, or absolute), keeping the error.
    Clamp,
    /// Set the latents to 0 (one run; strengths are ignored).
    Ablate,
    /// Add `strength` (x max activation, or absolute) times the latents' chat decoder vectors.
    Steer,
    /// Feed the base stream plus these latents' chat-minus-base contribution to the chat model's later
    /// layers (one run; strengths are ignored).
    PatchIntoBase,
}

impl EditKind {
    /// Whether the edit has a strength to sweep.
    pub fn has_strength(self) -> bool {
        matches!(self, EditKind::Clamp | EditKind::Steer)
    }
}

/// What a strength is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrengthUnit {
    /// Multiples of each latent's largest activation on the prompts (the diffing toolkit's habit).
    MaxActivation,
    /// The value itself (`v` of a clamp, `alpha` of a steer).
    Absolute,
}

/// When an intervened answer still counts as coherent (for the dose-response and `--auto-strength`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoherenceCriteria {
    /// The mean per-token NLL of the intervened answers under the unedited chat model may exceed the
    /// baseline answers' by at most this many nats.
    pub max_nll_increase: f64,
    /// The mean distinct-2 ratio of the intervened answers may fall below the baseline's by at most
    /// this much (a repetition loop has a low NLL, so NLL alone would call it coherent).
    pub max_distinct_2_drop: f64,
}

impl Default for CoherenceCriteria {
    fn default() -> Self {
        CoherenceCriteria {
            max_nll_increase: 1.0,
            max_distinct_2_drop: 0.25,
        }
    }
}

/// A causal test: which latents, which edit, which strengths, on which positions, measured how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringSpec {
    /// The latents edited together.
    pub latents: Vec<usize>,
    /// The edit.
    pub kind: EditKind,
    /// The strengths of the dose-response (clamp and steer), in `unit`.
    pub strengths: Vec<f32>,
    /// The unit of `strengths`.
    pub unit: StrengthUnit,
    /// Where the edit applies: the prompt, the generated tokens, or both.
    pub scope: InterventionScope,
    /// Whether `<bos>` is edited too.
    pub edit_bos: bool,
    /// New tokens per answer (greedy).
    pub max_new_tokens: usize,
    /// Wrap each prompt as a user turn of the chat template.
    pub chat_template: bool,
    /// Strings whose log-probability as the answer's continuation of the prompt is compared (for
    /// example `" simple"` vs `" rigorous"`).
    pub targets: Vec<String>,
    /// The coherence criteria.
    pub coherence: CoherenceCriteria,
    /// Prompts per generation batch.
    pub batch_size: usize,
}

impl SteeringSpec {
    /// Clamping `latent` over the default dose-response: -2, -1, 0, 1, 2, 4 times its maximum
    /// activation, on every position but `<bos>`, 32 new tokens through the chat template.
    pub fn clamp(latent: usize) -> Self {
        SteeringSpec {
            latents: vec![latent],
            kind: EditKind::Clamp,
            strengths: vec![-2.0, -1.0, 0.0, 1.0, 2.0, 4.0],
            unit: StrengthUnit::MaxActivation,
            scope: InterventionScope::All,
            edit_bos: false,
            max_new_tokens: 32,
            chat_template: true,
            targets: Vec::new(),
            coherence: CoherenceCriteria::default(),
            batch_size: 8,
        }
    }

    /// The strengths actually run: the list for clamp and steer, one nominal 0 otherwise.
    pub fn strengths_run(&self) -> Vec<f32> {
        if self.kind.has_strength() {
            self.strengths.clone()
        } else {
            vec![0.0]
        }
    }

    /// Checks the spec against a dictionary of `dict_size` latents.
    pub fn validate(&self, dict_size: usize) -> Result<()> {
        let bad = |reason: String| Err(SteeringError::InvalidInput { reason });
        check_latents(&self.latents, dict_size)?;
        if self.kind.has_strength() && self.strengths.is_empty() {
            return bad("give at least one strength".into());
        }
        if let Some(s) = self.strengths.iter().find(|s| !s.is_finite()) {
            return bad(format!("strength {s} is not a finite number"));
        }
        if self.max_new_tokens == 0 || self.batch_size == 0 {
            return bad("max_new_tokens and batch_size must be at least 1".into());
        }
        if self.targets.iter().any(|t| t.is_empty()) {
            return bad("a target string is empty".into());
        }
        Ok(())
    }

    /// The edit at `strength`, given each latent's maximum activation.
    pub fn edit_at(&self, strength: f32, max_activation: &[f32]) -> LatentEdit {
        let values = || {
            self.latents
                .iter()
                .zip(max_activation)
                .map(|(j, max)| {
                    let value = match self.unit {
                        StrengthUnit::MaxActivation => strength * max,
                        StrengthUnit::Absolute => strength,
                    };
                    (*j, value)
                })
                .collect()
        };
        match self.kind {
            EditKind::Clamp => LatentEdit::Clamp(values()),
            EditKind::Steer => LatentEdit::Steer(values()),
            EditKind::Ablate => LatentEdit::ablate(&self.latents),
            EditKind::PatchIntoBase => LatentEdit::PatchIntoBase {
                latents: Some(self.latents.clone()),
            },
        }
    }
}

/// Latents to edit: at least one, each within a dictionary of `dict_size`.
pub(crate) fn check_latents(latents: &[usize], dict_size: usize) -> Result<()> {
    let bad = |reason: String| Err(SteeringError::InvalidInput { reason });
    if latents.is_empty() {
        return bad("name at least one latent".into());
    }
    if let Some(j) = latents.iter().find(|j| **j >= dict_size) {
        return bad(format!(
            "latent {j} is out of range: the crosscoder has {dict_size}"
        ));
    }
    Ok(())
}

/// The models of a causal test: the base model (loaded at least to the hook), the chat model (whole),
/// their shared tokenizer, and the crosscoder at the hook.
#[derive(Clone)]
pub struct SteeringModels<'m> {
    /// Model 0, run in lockstep up to the hook.
    pub base: &'m dyn LanguageModel,
    /// Model 1, which generates.
    pub chat: &'m dyn LanguageModel,
    /// The tokenizer both share.
    pub tokenizer: &'m GemmaTokenizer,
    /// The crosscoder whose latents are edited.
    pub crosscoder: Arc<dyn Crosscoder>,
    /// The crosscoder's hook.
    pub hook: HookPoint,
}
