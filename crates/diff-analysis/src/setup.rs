//! Everything the main job decides before a model is loaded, in the order that fails fastest: the
//! crosscoder's config (read on the host, nothing built), the hook, both models' `config.json`, then
//! the cross-checks (the pair agrees; the crosscoder fits the hook and the width). Then the pair is
//! loaded, both models in memory or one at a time, behind one `&dyn PairedSource`.
//!
//! ```no_run
//! use diff_analysis::setup::{CrosscoderSpec, Day1Setup, HookChoice};
//! use gemma_model::{BackendKind, ComputeDtype, HubOptions};
//!
//! let prepared = Day1Setup {
//!     base: "google/gemma-2-2b".into(),
//!     chat: "google/gemma-2-2b-it".into(),
//!     crosscoder: Some(CrosscoderSpec::new(
//!         "science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04",
//!     )),
//!     hook: HookChoice::default(),
//!     backend: BackendKind::Flex,
//!     dtype: ComputeDtype::F32,
//!     hub: HubOptions::from_env(),
//! }
//! .prepare()?;
//! let pair = prepared.load_pair(false, 8)?;
//! # Ok::<(), diff_analysis::AnalysisError>(())
//! ```

use crosscoder::{CrosscoderCheckpoint, CrosscoderConfig, CrosscoderLoader};
use gemma_model::{
    load_model, BackendKind, ComputeDtype, Gemma2Config, HookPoint, HubOptions, LoadOptions,
    LoadedModel, ModelSource,
};
use model_pair::{check_configs, PairedSource, SequentialPair, StereoRunner};

use crate::error::{AnalysisError, Result};
use crate::plan::{check_crosscoder, crosscoder_hook};

/// Layer of the seed notebook (the middle of Gemma-2-2b's 26), used when neither the user nor the
/// crosscoder names one.
pub const DEFAULT_LAYER: usize = 13;

/// A crosscoder to load: a directory, a `.pt` / `.safetensors` file or a hub id, and optional
/// per-model scaling factors (ckkissane checkpoints; they multiply the activations before encoding).
#[derive(Debug, Clone, PartialEq)]
pub struct CrosscoderSpec {
    /// Where the crosscoder is.
    pub source: String,
    /// Per-model input scaling factors, base first.
    pub scaling_factors: Option<Vec<f32>>,
}

impl CrosscoderSpec {
    /// A crosscoder with no scaling factors.
    pub fn new(source: impl Into<String>) -> Self {
        CrosscoderSpec {
            source: source.into(),
            scaling_factors: None,
        }
    }
}

/// What the user said about the hook; [`HookChoice::resolve`] turns it into one [`HookPoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookChoice {
    /// A full hook (`--hook`).
    pub hook: Option<HookPoint>,
    /// A layer (`--layer`): `resid_post` there, or a check on `hook`'s layer.
    pub layer: Option<usize>,
}

impl HookChoice {
    /// The hook to read: the explicit hook (which must sit on the explicit layer, when both are
    /// given), else `resid_post` at the explicit layer, else the crosscoder's own hook, else
    /// `resid_post` at [`DEFAULT_LAYER`].
    pub fn resolve(self, crosscoder: Option<&CrosscoderConfig>) -> Result<HookPoint> {
        match (self.hook, self.layer) {
            (Some(hook), Some(layer)) if hook.layer() != Some(layer) => Err(AnalysisError::option(
                "--hook",
                format!("{hook} is not on --layer {layer}: give one or make them agree"),
            )),
            (Some(hook), _) => Ok(hook),
            (None, Some(layer)) => Ok(HookPoint::ResidPost(layer)),
            (None, None) => Ok(crosscoder
                .and_then(crosscoder_hook)
                .unwrap_or(HookPoint::ResidPost(DEFAULT_LAYER))),
        }
    }
}

/// The inputs of the main job, before anything is read.
#[derive(Debug, Clone)]
pub struct Day1Setup {
    /// Base model (index 0): hub id or local directory.
    pub base: String,
    /// Chat model (index 1): hub id or local directory.
    pub chat: String,
    /// The crosscoder; `None` runs on the chat model's residual dimensions.
    pub crosscoder: Option<CrosscoderSpec>,
    /// The hook, as the user gave it.
    pub hook: HookChoice,
    /// The compute backend of the models and the crosscoder.
    pub backend: BackendKind,
    /// The precision the models and the crosscoder compute in (`--dtype`).
    pub dtype: ComputeDtype,
    /// How to reach the hub (offline, token, cache).
    pub hub: HubOptions,
}

/// What [`Day1Setup::prepare`] read and checked: everything but the weights.
pub struct Prepared {
    /// The hook both models are read at.
    pub hook: HookPoint,
    /// The base model's source.
    pub base: ModelSource,
    /// The chat model's source.
    pub chat: ModelSource,
    /// The base model's `config.json`.
    pub base_config: Gemma2Config,
    /// The chat model's `config.json`.
    pub chat_config: Gemma2Config,
    /// The crosscoder's weights on the host, checked against the hook and the models' width.
    pub checkpoint: Option<CrosscoderCheckpoint>,
    backend: BackendKind,
    dtype: ComputeDtype,
    hub: HubOptions,
}

impl Day1Setup {
    /// Reads the crosscoder's checkpoint, chooses the hook, reads both models' configs and checks
    /// that the pair agrees and that the crosscoder fits them. No model is loaded.
    pub fn prepare(self) -> Result<Prepared> {
        let checkpoint = self
            .crosscoder
            .as_ref()
            .map(|spec| self.read_crosscoder(spec))
            .transpose()?;
        let hook = self
            .hook
            .resolve(checkpoint.as_ref().map(CrosscoderCheckpoint::config))?;
        let base = ModelSource::parse(&self.base)?;
        let chat = ModelSource::parse(&self.chat)?;
        let base_config = base.read_config(&self.hub)?;
        let chat_config = chat.read_config(&self.hub)?;
        check_configs(&base_config, &chat_config, hook)?;
        if let Some(c) = &checkpoint {
            check_crosscoder(c.config(), hook, base_config.hidden_size)?;
        }
        Ok(Prepared {
            hook,
            base,
            chat,
            base_config,
            chat_config,
            checkpoint,
            backend: self.backend,
            dtype: self.dtype,
            hub: self.hub,
        })
    }

    fn read_crosscoder(&self, spec: &CrosscoderSpec) -> Result<CrosscoderCheckpoint> {
        let mut loader = CrosscoderLoader::new(&spec.source)
            .backend(self.backend)
            .offline(self.hub.offline);
        if let Some(factors) = &spec.scaling_factors {
            loader = loader.scaling_factors(factors.clone());
        }
        Ok(loader.load_checkpoint()?)
    }
}

impl Prepared {
    /// The backend everything runs on.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// The precision everything computes in.
    pub fn dtype(&self) -> ComputeDtype {
        self.dtype
    }

    /// Loads the pair, only the layers the hook needs: both models now (`sequential = false`), or
    /// each model when it runs and dropped after (`sequential = true`, one in memory at a time; same
    /// results). Prompts run `batch_size` at a time.
    pub fn load_pair(&self, sequential: bool, batch_size: usize) -> Result<Box<dyn PairedSource>> {
        // The final norm and unembedding too, for the dashboards' logit lens (Gemma ties its
        // unembedding to the embedding, so this adds only the final norm).
        let options = LoadOptions {
            hub: self.hub.clone(),
            unembedding: true,
            dtype: self.dtype,
            ..LoadOptions::for_hooks(&[self.hook])
        }
        .with_backend(self.backend);
        let sources = [self.base.clone(), self.chat.clone()];
        Ok(if sequential {
            Box::new(
                SequentialPair::from_sources(sources, options, self.hook)?
                    .with_batch_size(batch_size),
            )
        } else {
            let [base, chat] = sources.map(|source| load_model(&source, &options));
            Box::new(
                StereoRunner::from_loaded(base?, chat?, self.hook)?.with_batch_size(batch_size),
            )
        })
    }

    /// Loads the pair for generation with a latent edited in lockstep: the base model up to the hook
    /// (and its unembedding, for the logit lens), the chat model whole. Returns `(base, chat)`.
    pub fn load_for_generation(&self) -> Result<(LoadedModel, LoadedModel)> {
        let base_options = LoadOptions {
            hub: self.hub.clone(),
            unembedding: true,
            dtype: self.dtype,
            ..LoadOptions::for_hooks(&[self.hook])
        }
        .with_backend(self.backend);
        let chat_options = LoadOptions {
            hub: self.hub.clone(),
            dtype: self.dtype,
            ..LoadOptions::default()
        }
        .with_backend(self.backend);
        Ok((
            load_model(&self.base, &base_options)?,
            load_model(&self.chat, &chat_options)?,
        ))
    }

    /// Builds the crosscoder on the backend (taking it out of `self`); `None` without one.
    pub fn build_crosscoder(&mut self) -> Result<Option<Box<dyn crosscoder::Crosscoder>>> {
        Ok(self
            .checkpoint
            .take()
            .map(|c| c.build_in(self.backend, self.dtype))
            .transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_explicit_then_layer_then_crosscoder_then_default() {
        let mut config = CrosscoderConfig::relu(2, 8, 16);
        config.hook = Some(HookPoint::ResidPre(4));
        let explicit = HookChoice {
            hook: Some(HookPoint::ResidPre(2)),
            layer: None,
        };
        assert_eq!(
            explicit.resolve(Some(&config)).unwrap(),
            HookPoint::ResidPre(2)
        );
        let layer = HookChoice {
            hook: None,
            layer: Some(3),
        };
        assert_eq!(
            layer.resolve(Some(&config)).unwrap(),
            HookPoint::ResidPost(3)
        );
        let none = HookChoice::default();
        assert_eq!(none.resolve(Some(&config)).unwrap(), HookPoint::ResidPre(4));
        assert_eq!(
            none.resolve(None).unwrap(),
            HookPoint::ResidPost(DEFAULT_LAYER)
        );
    }

    #[test]
    fn a_hook_off_the_given_layer_is_an_error_naming_both() {
        let choice = HookChoice {
            hook: Some(HookPoint::ResidPost(5)),
            layer: Some(6),
        };
        let err = choice.resolve(None).unwrap_err().to_string();
        assert!(
            err.contains("blocks.5.hook_resid_post") && err.contains("6"),
            "{err}"
        );
        let agreeing = HookChoice {
            hook: Some(HookPoint::ResidPost(6)),
            layer: Some(6),
        };
        assert_eq!(agreeing.resolve(None).unwrap(), HookPoint::ResidPost(6));
    }
}
