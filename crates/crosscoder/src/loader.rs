//! [`CrosscoderLoader`]: one door for every source (local directory, `.pt`, `.safetensors`, hub id) and
//! every backend.

use std::path::{Path, PathBuf};

use stereo_core::{BackendKind, ComputeDtype};

use crate::checkpoint::CrosscoderCheckpoint;
use crate::config::CrosscoderConfig;
use crate::error::{CrosscoderError, Result};
use crate::formats::{load_local, CheckpointFormat};
use crate::hub::{self, HubOverrides};
use crate::traits::Crosscoder;
use stereo_core::hook::HookPoint;
use stereo_core::hub::HubOptions;

/// Loads a crosscoder from a local path or a hub id, and builds it on a backend.
///
/// | option | default |
/// |---|---|
/// | [`backend`](Self::backend) | [`BackendKind::DEFAULT_CPU`] (`flex`) |
/// | [`scaling_factors`](Self::scaling_factors) | none (ckkissane checkpoints need them: see [`crate::formats`]) |
/// | [`revision`](Self::revision) | `main` |
/// | [`offline`](Self::offline) | `HF_HUB_OFFLINE` |
/// | [`cache_dir`](Self::cache_dir) | `$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub` |
/// | [`token`](Self::token) | `HF_TOKEN`, then the cache's token file |
/// | [`models`](Self::models), [`hook`](Self::hook) | what the checkpoint says, else known presets by hub id |
///
/// ```no_run
/// use crosscoder::{BackendKind, CrosscoderLoader};
/// let cc = CrosscoderLoader::new("science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04")
///     .backend(BackendKind::Flex)
///     .load()?;
/// assert_eq!(cc.dict_size(), 73_728);
/// # Ok::<(), crosscoder::CrosscoderError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CrosscoderLoader {
    source: String,
    backend: BackendKind,
    dtype: ComputeDtype,
    scaling_factors: Option<Vec<f32>>,
    hub: HubOverrides,
    models: Option<Vec<String>>,
    hook: Option<HookPoint>,
}

impl CrosscoderLoader {
    /// A loader for `source`: a directory, a `.pt` / `.safetensors` file, or a hub id
    /// (`org/name`, `org/name/subfolder`). An existing local path always wins over a hub id.
    pub fn new(source: impl Into<String>) -> Self {
        CrosscoderLoader {
            source: source.into(),
            backend: BackendKind::DEFAULT_CPU,
            dtype: ComputeDtype::F32,
            scaling_factors: None,
            hub: HubOverrides::default(),
            models: None,
            hook: None,
        }
    }

    /// The backend to build on.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// The precision to compute in (see [`CrosscoderCheckpoint::build_in`]).
    pub fn dtype(mut self, dtype: ComputeDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Per-model scaling factors: multiply activations before encoding, divide reconstructions after.
    pub fn scaling_factors(mut self, factors: Vec<f32>) -> Self {
        self.scaling_factors = Some(factors);
        self
    }

    /// Hub revision (branch, tag or commit).
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.hub.revision = Some(revision.into());
        self
    }

    /// Only read the hub cache (overrides `HF_HUB_OFFLINE`).
    pub fn offline(mut self, offline: bool) -> Self {
        self.hub.offline = Some(offline);
        self
    }

    /// The hub cache directory (the one holding `models--org--name`).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hub.cache_dir = Some(dir.into());
        self
    }

    /// Hub access token (overrides `HF_TOKEN`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.hub.token = Some(token.into());
        self
    }

    /// All hub settings at once (the same [`HubOptions`] the models load with), keeping the revision.
    pub fn hub_options(mut self, options: HubOptions) -> Self {
        self.hub = HubOverrides::pinning(options, self.hub.revision.take());
        self
    }

    /// Model names in index order (0 = base, 1 = chat), overriding the checkpoint's.
    pub fn models(mut self, models: Vec<String>) -> Self {
        self.models = Some(models);
        self
    }

    /// The hook of the activations (e.g. `blocks.13.hook_resid_post`), overriding the checkpoint's.
    pub fn hook(mut self, hook: HookPoint) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Reads and validates the checkpoint on the host, without building it on a backend.
    ///
    /// # Errors
    /// Any [`CrosscoderError`] of the format readers, the hub, or the scaling factors.
    pub fn load_checkpoint(&self) -> Result<CrosscoderCheckpoint> {
        let local = Path::new(&self.source);
        let (mut ckpt, format, repo_id) = if local.exists() {
            let (c, f) = load_local(local)?;
            (c, f, None)
        } else if hub::is_hub_id(&self.source) {
            let dir = hub::resolve(&self.source, &self.hub)?;
            let (c, f) = load_local(&dir)?;
            (c, f, Some(hub::split_hub_id(&self.source).0))
        } else {
            return Err(CrosscoderError::io(
                local,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory, and not a hub id (org/name)",
                ),
            ));
        };
        tracing::info!(source = %self.source, %format, n_models = ckpt.config().n_models, d = ckpt.config().d_model,
            dict_size = ckpt.config().dict_size, activation = ckpt.config().activation.name(), "crosscoder checkpoint read");

        let mut config: CrosscoderConfig = ckpt.config().clone();
        if let Some(repo) = &repo_id {
            if let Some(known) = CrosscoderConfig::known_metadata(repo) {
                config.fill_metadata_from(&known);
            }
            config.source = Some(format!("{format} from hub {}", self.source));
        }
        let models = self.models.clone().unwrap_or(config.models);
        let hook = self.hook.or(config.hook);
        let layer = if let Some(h) = self.hook {
            h.layer()
        } else {
            config.layer
        };
        ckpt.set_metadata(models, hook, layer);
        if let Some(source) = config.source {
            ckpt.set_source(source);
        }

        if let Some(factors) = &self.scaling_factors {
            ckpt = ckpt.with_scaling_factors(factors.clone())?;
        } else if format == CheckpointFormat::Ckkissane {
            tracing::warn!(
                source = %self.source,
                "ckkissane crosscoder loaded without scaling factors: it was trained on activations scaled by \
                 sqrt(d) / mean ||x|| per model; pass the factors for faithful latents"
            );
        }
        Ok(ckpt)
    }

    /// Reads the checkpoint and builds it on the chosen backend.
    ///
    /// # Errors
    /// As [`load_checkpoint`](Self::load_checkpoint), plus [`CrosscoderError::Backend`].
    pub fn load(&self) -> Result<Box<dyn Crosscoder>> {
        self.load_checkpoint()?.build_in(self.backend, self.dtype)
    }
}

/// Loads `source` with default options on the default CPU backend (see [`CrosscoderLoader`]).
///
/// # Errors
/// As [`CrosscoderLoader::load`].
pub fn load(source: impl Into<String>) -> Result<Box<dyn Crosscoder>> {
    CrosscoderLoader::new(source).load()
}
