//! The object-safe [`LanguageModel`] trait and the loaders that build one for a backend chosen by name.

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use ndarray::Array3;
use stereo_core::hub::HubOptions;
use stereo_core::{dispatch, BackendKind, BackendVisitor};

use crate::batch::TokenBatch;
use crate::config::Gemma2Config;
use crate::error::{GemmaError, Result};
use crate::generation::GenerationDefaults;
use crate::hooks::{HookPoint, RunRequest};
use crate::model::{Gemma2, Kernels, KvCache, RunOutput};
use crate::parameters::CheckpointSource;
use crate::source::ModelSource;
use crate::tokenizer::GemmaTokenizer;
use crate::weights::WeightFiles;

/// A transformer language model with hooks, host arrays in and out. No burn type appears here, so
/// analysis code is the same for every backend.
pub trait LanguageModel: Send + Sync {
    /// A human-readable name (the hub id or directory).
    fn name(&self) -> &str;
    /// The model's hyper-parameters.
    fn config(&self) -> &Gemma2Config;
    /// The backend it runs on.
    fn backend(&self) -> BackendKind;
    /// How many layers are loaded (`0..n`).
    fn loaded_layers(&self) -> usize;
    /// Whether the final norm and unembedding are loaded (needed for logits).
    fn has_unembedding(&self) -> bool;
    /// Runs a padded batch: captured activations are `[batch, pos, d_model]`, logits
    /// `[batch, pos, vocab]`; padding positions are zero. Stops at the deepest hook requested.
    fn run(&self, batch: &TokenBatch, request: &RunRequest) -> Result<RunOutput>;
    /// The logits of residual-stream vectors `[batch, pos, d_model]` through the final norm and the
    /// unembedding alone (soft-capped as the model caps them): a logit lens. Needs the unembedding, not
    /// the layers.
    fn unembed(&self, residual: &Array3<f32>) -> Result<Array3<f32>> {
        let _ = residual;
        Err(GemmaError::InvalidInput {
            reason: format!("the model {} has no logit lens", self.name()),
        })
    }
    /// Layer `layer`'s weights copied to the host (circuit analysis: composition scores, the
    /// post-attention norm that scales each head's write).
    fn layer_weights(&self, layer: usize) -> Result<crate::LayerWeights> {
        let _ = layer;
        Err(GemmaError::InvalidInput {
            reason: format!("the model {} does not expose its weights", self.name()),
        })
    }
    /// Starts incremental decoding of `batch_size` rows through layers `0..n_layers` (all of them for
    /// logits; fewer for a model that only feeds a hook, as the base model of a lockstep pair). The key
    /// and value cache stays on the device; `capacity` is the number of positions to allocate for
    /// (prompt plus new tokens; it grows if exceeded).
    fn start_decoding(
        &self,
        batch_size: usize,
        n_layers: usize,
        capacity: usize,
    ) -> Result<Box<dyn DecodeSession + '_>> {
        let _ = (batch_size, n_layers, capacity);
        Err(GemmaError::InvalidInput {
            reason: format!("the model {} cannot decode incrementally", self.name()),
        })
    }
}

/// An incremental decoding session of a [`LanguageModel`]: each [`feed`](DecodeSession::feed) runs
/// only the new tokens, attending to every earlier one through the cache.
pub trait DecodeSession: Send {
    /// Rows decoded together.
    fn batch_size(&self) -> usize;
    /// Cache slots filled so far (padding included).
    fn len(&self) -> usize;
    /// Whether nothing has been fed yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Layers every step runs.
    fn n_layers(&self) -> usize;
    /// Appends `tokens` (`[batch_size, new]`; left-padded prompts on the first step, one token per
    /// row after) and runs them: captures, interventions and logits as in
    /// [`LanguageModel::run`], on the new positions only.
    fn feed(&mut self, tokens: &TokenBatch, request: &RunRequest) -> Result<RunOutput>;
}

pub use stereo_core::ComputeDtype;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The compute backend.
    pub backend: BackendKind,
    /// Compute precision.
    pub dtype: ComputeDtype,
    /// Load only layers `0..=stop_at_layer` (`None` = all). Later layers are never allocated.
    pub stop_at_layer: Option<usize>,
    /// Load the final norm and unembedding (needed for logits; the unembedding is tied to the
    /// embedding for Gemma-2, so this costs only the final norm unless the checkpoint is untied).
    pub unembedding: bool,
    /// How to reach the hub.
    pub hub: HubOptions,
    /// On burn-flex, run RMSNorm, GeGLU and attention as fused multi-threaded kernels on the
    /// tensors' host buffers (the default, about 1.3x faster); `false` runs them as chains of burn
    /// ops, the path of every other backend. Both agree with HF transformers to 1e-4 (tested).
    pub fused_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: BackendKind::DEFAULT_CPU,
            dtype: ComputeDtype::F32,
            stop_at_layer: None,
            unembedding: true,
            hub: HubOptions::from_env(),
            fused_kernels: true,
        }
    }
}

impl LoadOptions {
    /// Options that load just what `hooks` need (no unembedding, layers up to the deepest hook).
    pub fn for_hooks(hooks: &[HookPoint]) -> Self {
        let depth = hooks.iter().map(|h| h.layers_needed()).max().unwrap_or(0);
        LoadOptions {
            stop_at_layer: depth.checked_sub(1),
            unembedding: false,
            ..Default::default()
        }
    }

    /// The same options on `backend`.
    pub fn with_backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    fn n_layers(&self, config: &Gemma2Config) -> usize {
        self.stop_at_layer.map_or(config.num_hidden_layers, |l| {
            (l + 1).min(config.num_hidden_layers)
        })
    }

    fn check(&self, config: &Gemma2Config) -> Result<()> {
        if let Some(l) = self.stop_at_layer {
            if l >= config.num_hidden_layers {
                return Err(GemmaError::HookOutOfRange {
                    hook: format!(
                        "stop_at_layer = {l} (the deepest layer the requested hooks need)"
                    ),
                    layer: l,
                    n_layers: config.num_hidden_layers,
                });
            }
        }
        if self.dtype == ComputeDtype::Bf16 && self.backend == BackendKind::NdArray {
            return Err(GemmaError::UnsupportedDtype {
                dtype: "bf16".into(),
                backend: self.backend.to_string(),
            });
        }
        self.backend.ensure_available()?;
        Ok(())
    }
}

/// A loaded model and, when the checkpoint has one, its tokenizer.
pub struct LoadedModel {
    /// The model.
    pub model: Box<dyn LanguageModel>,
    /// `tokenizer.json` of the same directory, if present.
    pub tokenizer: Option<GemmaTokenizer>,
    /// The hub commit the files came from, if known.
    pub revision: Option<String>,
    /// Stop tokens and sampling defaults: `generation_config.json` when the checkpoint has one.
    pub generation: GenerationDefaults,
}

/// Loads a model from a local directory or hub id for the backend in `options`.
///
/// Only the embedding, the layers `0..=stop_at_layer` and (if asked) the unembedding are read from
/// disk and allocated.
pub fn load_model(source: &ModelSource, options: &LoadOptions) -> Result<LoadedModel> {
    let resolved = source.resolve(&options.hub)?;
    let config = Gemma2Config::from_file(resolved.config_path())?;
    options.check(&config)?;
    let tokenizer_path = resolved.tokenizer_path();
    let tokenizer = if tokenizer_path.exists() {
        Some(GemmaTokenizer::from_file(&tokenizer_path)?)
    } else {
        None
    };
    if let Some(tok) = &tokenizer {
        if tok.vocab_size() > config.vocab_size {
            return Err(GemmaError::InvalidConfigField {
                path: resolved.config_path(),
                field: "vocab_size".into(),
                value: config.vocab_size.to_string(),
                reason: format!(
                    "the tokenizer {} has {} tokens",
                    tokenizer_path.display(),
                    tok.vocab_size()
                ),
            });
        }
    }
    let files = WeightFiles::open_dir(&resolved.dir)?;
    let model = load_checkpoint(&source.to_string(), &config, &files, options)?;
    let generation = GenerationDefaults::for_dir(&resolved.dir, &config)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        revision: resolved.revision,
        generation,
    })
}

/// Loads a model directory (shortcut for [`load_model`] with a local source).
pub fn load_dir(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<LoadedModel> {
    load_model(&ModelSource::Local(dir.as_ref().to_path_buf()), options)
}

/// Builds a model with random weights in `config`'s shapes (for benchmarks; nothing is read).
pub fn random_model(
    config: &Gemma2Config,
    options: &LoadOptions,
    seed: u64,
) -> Result<Box<dyn LanguageModel>> {
    options.check(config)?;
    let n_layers = options.n_layers(config);
    struct Random<'a> {
        config: &'a Gemma2Config,
        n_layers: usize,
        unembedding: bool,
        seed: u64,
        kind: BackendKind,
        fused_kernels: bool,
        dtype: ComputeDtype,
    }
    impl BackendVisitor for Random<'_> {
        type Output = Box<dyn LanguageModel>;
        fn visit<B: Backend>(self, device: B::Device) -> Self::Output {
            let model = Gemma2::<B>::random(
                self.config,
                (self.n_layers, self.unembedding),
                self.dtype,
                self.seed,
                &device,
            )
            .with_kernels(Kernels::for_backend::<B>(self.fused_kernels));
            Box::new(BurnModel {
                name: "random".into(),
                backend: self.kind,
                model,
            })
        }
    }
    let visitor = Random {
        config,
        n_layers,
        unembedding: options.unembedding,
        seed,
        kind: options.backend,
        fused_kernels: options.fused_kernels,
        dtype: options.dtype,
    };
    Ok(dispatch(options.backend, visitor)?)
}

fn load_checkpoint(
    name: &str,
    config: &Gemma2Config,
    files: &WeightFiles,
    options: &LoadOptions,
) -> Result<Box<dyn LanguageModel>> {
    struct Load<'a> {
        name: &'a str,
        config: &'a Gemma2Config,
        files: &'a WeightFiles,
        n_layers: usize,
        unembedding: bool,
        kind: BackendKind,
        fused_kernels: bool,
        dtype: ComputeDtype,
    }
    impl BackendVisitor for Load<'_> {
        type Output = Result<Box<dyn LanguageModel>>;
        fn visit<B: Backend>(self, device: B::Device) -> Self::Output {
            let start = Instant::now();
            let mut source = CheckpointSource::new(self.files);
            let model = Gemma2::<B>::load(
                self.config,
                &mut source,
                (self.n_layers, self.unembedding),
                self.dtype,
                &device,
                |done, total| {
                    tracing::debug!(done, total, "loading {}", self.name);
                },
            )?
            .with_kernels(Kernels::for_backend::<B>(self.fused_kernels));
            tracing::info!(
                model = self.name,
                layers = self.n_layers,
                seconds = start.elapsed().as_secs_f64(),
                "loaded"
            );
            Ok(Box::new(BurnModel {
                name: self.name.to_string(),
                backend: self.kind,
                model,
            }))
        }
    }
    let visitor = Load {
        name,
        config,
        files,
        n_layers: options.n_layers(config),
        unembedding: options.unembedding,
        kind: options.backend,
        fused_kernels: options.fused_kernels,
        dtype: options.dtype,
    };
    dispatch(options.backend, visitor)?
}

/// A [`Gemma2`] on backend `B`, behind the trait.
struct BurnModel<B: Backend> {
    name: String,
    backend: BackendKind,
    model: Gemma2<B>,
}

impl<B: Backend> LanguageModel for BurnModel<B> {
    fn name(&self) -> &str {
        &self.name
    }
    fn config(&self) -> &Gemma2Config {
        self.model.config()
    }
    fn backend(&self) -> BackendKind {
        self.backend
    }
    fn loaded_layers(&self) -> usize {
        self.model.n_loaded_layers()
    }
    fn has_unembedding(&self) -> bool {
        self.model.has_unembedding()
    }
    fn run(&self, batch: &TokenBatch, request: &RunRequest) -> Result<RunOutput> {
        self.model.run(batch, request)
    }
    fn unembed(&self, residual: &Array3<f32>) -> Result<Array3<f32>> {
        self.model.unembed(residual)
    }
    fn layer_weights(&self, layer: usize) -> Result<crate::LayerWeights> {
        self.model.layer_weights(layer)
    }
    fn start_decoding(
        &self,
        batch_size: usize,
        n_layers: usize,
        capacity: usize,
    ) -> Result<Box<dyn DecodeSession + '_>> {
        let cache = self.model.new_cache(batch_size, n_layers, capacity)?;
        Ok(Box::new(BurnSession {
            model: &self.model,
            cache,
        }))
    }
}

/// A decoding session of a [`Gemma2`] on backend `B`.
struct BurnSession<'a, B: Backend> {
    model: &'a Gemma2<B>,
    cache: KvCache<B>,
}

impl<B: Backend> DecodeSession for BurnSession<'_, B> {
    fn batch_size(&self) -> usize {
        self.cache.batch_size()
    }
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn n_layers(&self) -> usize {
        self.cache.n_layers()
    }
    fn feed(&mut self, tokens: &TokenBatch, request: &RunRequest) -> Result<RunOutput> {
        self.model.feed(&mut self.cache, tokens, request)
    }
}
