//! What the causal and inspection examples share: the base/chat pair and crosscoder they name, each part
//! defaulting to the embedded demo's, prepared (configs read, hook chosen, crosscoder checked against the
//! models) before any weight is loaded.

use std::sync::Arc;

use diff_analysis::setup::{CrosscoderSpec, Day1Setup, HookChoice, Prepared};
use diff_analysis::AnalysisError;
use gemma_model::{
    BackendKind, ComputeDtype, GemmaError, GemmaTokenizer, HookPoint, HubOptions, LoadedModel,
};
use steering::SteeringModels;

use crate::demo::embedded_source;

/// The parts an example was given (`None`: the embedded demo's).
#[derive(Debug, Clone, Default)]
pub struct PairChoice {
    /// Base model (index 0).
    pub base: Option<String>,
    /// Chat model (index 1).
    pub chat: Option<String>,
    /// The crosscoder.
    pub crosscoder: Option<String>,
    /// A full hook name overriding the crosscoder's.
    pub hook: Option<String>,
    /// Read the hub cache only.
    pub offline: bool,
    /// The precision the models and the crosscoder compute in.
    pub dtype: ComputeDtype,
}

impl PairChoice {
    /// Reads the configs and the crosscoder, chooses the hook and checks that everything fits; loads no
    /// model.
    pub fn prepare(&self, backend: BackendKind) -> Result<Prepared, AnalysisError> {
        let part = |given: &Option<String>, name: &str| match given {
            Some(s) => Ok(s.clone()),
            None => embedded_source(name),
        };
        let mut hub = HubOptions::from_env();
        hub.offline |= self.offline;
        let hook = self
            .hook
            .as_deref()
            .map(str::parse::<HookPoint>)
            .transpose()
            .map_err(|e| AnalysisError::InvalidOption {
                option: "--hook".into(),
                reason: e.to_string(),
            })?;
        Day1Setup {
            base: part(&self.base, "base")?,
            chat: part(&self.chat, "chat")?,
            crosscoder: Some(CrosscoderSpec::new(part(&self.crosscoder, "crosscoder")?)),
            hook: HookChoice { hook, layer: None },
            backend,
            dtype: self.dtype,
            hub,
        }
        .prepare()
    }
}

/// The pair loaded for generation with a latent edited in lockstep (base to the hook, chat whole), its
/// tokenizer and the crosscoder: what [`SteeringModels`] borrows.
pub struct GenerationPair {
    /// The base model, to the hook.
    pub base: LoadedModel,
    /// The chat model, whole.
    pub chat: LoadedModel,
    /// The chat model's tokenizer.
    pub tokenizer: GemmaTokenizer,
    /// The crosscoder.
    pub crosscoder: Arc<dyn crosscoder::Crosscoder>,
    /// Its hook.
    pub hook: HookPoint,
}

impl GenerationPair {
    /// Loads `prepared`'s pair for generation and builds its crosscoder.
    pub fn load(mut prepared: Prepared) -> Result<Self, AnalysisError> {
        let (base, chat) = prepared.load_for_generation()?;
        let tokenizer = chat.tokenizer.clone().ok_or_else(|| {
            AnalysisError::from(GemmaError::InvalidInput {
                reason: format!("the chat model {} has no tokenizer.json", chat.model.name()),
            })
        })?;
        let crosscoder = prepared.build_crosscoder()?.ok_or_else(|| {
            AnalysisError::from(GemmaError::InvalidInput {
                reason: "a crosscoder is required".into(),
            })
        })?;
        Ok(GenerationPair {
            base,
            chat,
            tokenizer,
            crosscoder: Arc::from(crosscoder),
            hook: prepared.hook,
        })
    }

    /// The models as the steering crate takes them.
    pub fn models(&self) -> SteeringModels<'_> {
        SteeringModels {
            base: self.base.model.as_ref(),
            chat: self.chat.model.as_ref(),
            tokenizer: &self.tokenizer,
            crosscoder: self.crosscoder.clone(),
            hook: self.hook,
        }
    }
}
