//! Sequential stereo runs: one model in memory at a time. See [`SequentialPair`].

use gemma_model::{
    load_model, Gemma2Config, GemmaTokenizer, HookPoint, LanguageModel, LoadOptions, ModelSource,
};
use ndarray::Array3;

use stereo_core::BackendKind;

use crate::checks::{check_configs, check_depth};
use crate::error::{PairError, Result};
use crate::runner::run_batch_into;
use crate::source::{ForwardProgress, ModelInfo, PairedSource};
use crate::{BASE, CHAT};

/// Builds a model on demand (typically a closure around [`gemma_model::load_model`]).
pub type ModelFactory = Box<dyn Fn() -> gemma_model::Result<Box<dyn LanguageModel>> + Send + Sync>;

/// Base (index 0) and chat (index 1) loaded one at a time, for machines where the two models do
/// not fit side by side.
///
/// A [`SequentialPair`] holds two model *factories* instead of two models. For each call of
/// [`PairedSource::run_sequences`] it loads the base model, runs every sequence, drops it, then
/// loads the chat model and does the same; only the base half of the activations waits in memory
/// in between. Peak memory is one model's weights (up to the hook) plus `[rows, 2, d_model]` f32.
///
/// The trade-off: every call loads both models once. The store writer calls it once per group of
/// `shards_per_group` shards (`activation_cache::CacheOptions`), so larger groups load the models less often
/// but hold more activations in memory and lose more work if the run is killed (a shard is only
/// committed once both halves exist, which keeps resuming as simple as in the parallel mode).
pub struct SequentialPair {
    factories: [ModelFactory; 2],
    models: [ModelInfo; 2],
    tokenizer: GemmaTokenizer,
    hook: HookPoint,
    d_model: usize,
    backend: BackendKind,
    batch_size: usize,
    /// The smaller `max_position_embeddings` of the two configs, when they were read up front.
    max_positions: Option<usize>,
}

impl std::fmt::Debug for SequentialPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequentialPair")
            .field("models", &self.models)
            .field("hook", &self.hook)
            .field("d_model", &self.d_model)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl SequentialPair {
    /// Pairs two model factories at `hook`.
    ///
    /// `models` name the models in the store's manifest; `tokenizers` are the models' own
    /// tokenizers and must be identical; every model a factory builds must have width `d_model`
    /// and be loaded at least as deep as `hook` (checked on each load), on `backend`.
    pub fn new(
        models: [ModelInfo; 2],
        factories: [ModelFactory; 2],
        tokenizers: [GemmaTokenizer; 2],
        hook: HookPoint,
        d_model: usize,
        backend: BackendKind,
    ) -> Result<Self> {
        let [base_tok, chat_tok] = tokenizers;
        if !base_tok.same_as(&chat_tok) {
            return Err(PairError::Mismatch {
                reason: format!(
                    "their tokenizers differ ({} vs {}); the same token ids must go through both",
                    base_tok.path().display(),
                    chat_tok.path().display()
                ),
            });
        }
        Ok(SequentialPair {
            factories,
            models,
            tokenizer: base_tok,
            hook,
            d_model,
            backend,
            batch_size: 8,
            max_positions: None,
        })
    }

    /// Pairs two checkpoints (local directories or hub ids). Their configs and tokenizers are read
    /// now (and checked: same tokenizer, width and vocabulary, deep enough for the hook); their
    /// weights are loaded with `options` only when a run needs them, one model at a time.
    /// `options` should load only the layers the hook needs ([`LoadOptions::for_hooks`]).
    pub fn from_sources(
        sources: [ModelSource; 2],
        options: LoadOptions,
        hook: HookPoint,
    ) -> Result<Self> {
        let read = |m: usize| -> Result<(ModelInfo, Gemma2Config, GemmaTokenizer)> {
            let source = &sources[m];
            let model_error = |e| PairError::model(m, source.to_string(), e);
            let resolved = source.resolve(&options.hub).map_err(model_error)?;
            let config = Gemma2Config::from_file(resolved.config_path()).map_err(model_error)?;
            let tokenizer =
                GemmaTokenizer::from_file(resolved.tokenizer_path()).map_err(model_error)?;
            let info = ModelInfo {
                name: source.to_string(),
                revision: resolved.revision,
            };
            Ok((info, config, tokenizer))
        };
        let (base_info, b, base_tok) = read(BASE)?;
        let (chat_info, c, chat_tok) = read(CHAT)?;
        check_configs(&b, &c, hook)?;
        let factory = |source: ModelSource| -> ModelFactory {
            let options = options.clone();
            Box::new(move || Ok(load_model(&source, &options)?.model))
        };
        let [base_source, chat_source] = sources.clone();
        let mut pair = Self::new(
            [base_info, chat_info],
            [factory(base_source), factory(chat_source)],
            [base_tok, chat_tok],
            hook,
            b.hidden_size,
            options.backend,
        )?;
        pair.max_positions = Some(b.max_position_embeddings.min(c.max_position_embeddings));
        Ok(pair)
    }

    /// Prompts per forward batch (default 8).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Loads model `m` and checks it against the pair's width and hook.
    fn load(&self, m: usize) -> Result<Box<dyn LanguageModel>> {
        let model = (self.factories[m])()
            .map_err(|source| PairError::model(m, self.models[m].name.clone(), source))?;
        if model.config().hidden_size != self.d_model {
            return Err(PairError::Mismatch {
                reason: format!(
                    "model {m} ({}) has d_model {}, the pair expects {}",
                    model.name(),
                    model.config().hidden_size,
                    self.d_model
                ),
            });
        }
        if model.backend() != self.backend {
            return Err(PairError::Mismatch {
                reason: format!(
                    "model {m} ({}) runs on {}, the pair on {}",
                    model.name(),
                    model.backend(),
                    self.backend
                ),
            });
        }
        check_depth(model.as_ref(), m, self.hook)?;
        Ok(model)
    }
}

impl PairedSource for SequentialPair {
    fn tokenizer(&self) -> &GemmaTokenizer {
        &self.tokenizer
    }

    fn hook(&self) -> HookPoint {
        self.hook
    }

    fn d_model(&self) -> usize {
        self.d_model
    }

    fn backend(&self) -> BackendKind {
        self.backend
    }

    fn max_positions(&self) -> Option<usize> {
        self.max_positions
    }

    fn models(&self) -> [ModelInfo; 2] {
        self.models.clone()
    }

    /// Loads base, runs every sequence, drops it; then the same with chat.
    fn run_sequences(
        &self,
        sequences: &[Vec<u32>],
        progress: &mut dyn FnMut(ForwardProgress),
    ) -> Result<Array3<f32>> {
        let n_rows = sequences.iter().map(Vec::len).sum();
        let mut out = Array3::<f32>::zeros((n_rows, 2, self.d_model));
        for m in [BASE, CHAT] {
            let model = self.load(m)?;
            let mut row = 0;
            let mut done = 0;
            for chunk in sequences.chunks(self.batch_size) {
                run_batch_into(model.as_ref(), m, chunk, self.hook, &mut out, row)?;
                row += chunk.iter().map(Vec::len).sum::<usize>();
                done += chunk.len();
                progress(ForwardProgress {
                    model: m,
                    done,
                    total: sequences.len(),
                });
            }
            drop(model);
        }
        Ok(out)
    }
}
