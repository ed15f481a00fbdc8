//! [`ModelStepper`]: one model decoding with its KV cache, reading hooks and applying interventions
//! at the positions each intervention's [`InterventionScope`] names.

use crate::batch::TokenBatch;
use crate::error::{GemmaError, Result};
use crate::hooks::{HookPoint, Intervention, LogitPositions, RunRequest};
use crate::language_model::{DecodeSession, LanguageModel};

use super::{StepOutput, StepPhase, TokenStepper};

/// Which steps of a generation an intervention edits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterventionScope {
    /// The prompt and every generated position.
    #[default]
    All,
    /// The prompt's positions only.
    PromptOnly,
    /// The generated positions only.
    GeneratedOnly,
}

impl InterventionScope {
    /// Whether a step of `phase` is edited.
    pub fn applies_to(self, phase: StepPhase) -> bool {
        matches!(
            (self, phase),
            (InterventionScope::All, _)
                | (InterventionScope::PromptOnly, StepPhase::Prompt)
                | (
                    InterventionScope::GeneratedOnly,
                    StepPhase::Generated { .. }
                )
        )
    }
}

impl std::str::FromStr for InterventionScope {
    type Err = GemmaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(InterventionScope::All),
            "prompt" | "prompt-only" => Ok(InterventionScope::PromptOnly),
            "generated" | "generated-only" => Ok(InterventionScope::GeneratedOnly),
            _ => Err(GemmaError::InvalidInput {
                reason: format!(
                    "unknown intervention scope `{s}`: expected all, prompt or generated"
                ),
            }),
        }
    }
}

/// An intervention and the steps it applies to. The edit sees the step's new positions only
/// (`[batch, new, d_model]`; the whole left-padded prompt at the first step, one position after).
#[derive(Debug, Clone)]
pub struct ScopedIntervention {
    /// The edit.
    pub intervention: Intervention,
    /// When it applies.
    pub scope: InterventionScope,
}

/// A single model generating through its [`DecodeSession`].
pub struct ModelStepper<'m> {
    session: Box<dyn DecodeSession + 'm>,
    capture: Vec<HookPoint>,
    interventions: Vec<ScopedIntervention>,
}

impl<'m> ModelStepper<'m> {
    /// A stepper of `batch_size` rows through every layer of `model`, with room for `capacity`
    /// positions (prompt plus new tokens).
    pub fn new(model: &'m dyn LanguageModel, batch_size: usize, capacity: usize) -> Result<Self> {
        let n_layers = model.config().num_hidden_layers;
        Ok(ModelStepper {
            session: model.start_decoding(batch_size, n_layers, capacity)?,
            capture: Vec::new(),
            interventions: Vec::new(),
        })
    }

    /// Also reads `hooks` at every fed position (see [`super::Generation::activations`]).
    pub fn capture(mut self, hooks: impl IntoIterator<Item = HookPoint>) -> Self {
        self.capture.extend(hooks);
        self
    }

    /// Also applies `intervention` at the steps `scope` names.
    pub fn intervene(mut self, intervention: Intervention, scope: InterventionScope) -> Self {
        self.interventions.push(ScopedIntervention {
            intervention,
            scope,
        });
        self
    }
}

impl TokenStepper for ModelStepper<'_> {
    type Error = GemmaError;

    fn batch_size(&self) -> usize {
        self.session.batch_size()
    }

    fn step(
        &mut self,
        tokens: &TokenBatch,
        phase: StepPhase,
        logits: LogitPositions,
    ) -> Result<StepOutput> {
        let mut request = RunRequest::capture(self.capture.iter().copied()).with_logits();
        request.logits_at = logits;
        request.interventions = self
            .interventions
            .iter()
            .filter(|i| i.scope.applies_to(phase))
            .map(|i| i.intervention.clone())
            .collect();
        StepOutput::from_run(self.session.feed(tokens, &request)?)
    }
}
