//! [`cache_corpus`]: a corpus through a [`PairedSource`] into a store, resumable.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use ndarray::{s, Array3};

use crate::corpus::Corpus;
use crate::error::{CacheError, Result};
use crate::manifest::{CorpusInfo, StoreConfig, StoreDtype};
use crate::plan::{shard_open, PlannedShard};
use crate::writer::{emit, CacheEvent, StoreWriter};
use model_pair::{PairedSource, TokenizationMode};

/// How [`cache_corpus`] builds a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Storage dtype (default f32).
    pub dtype: StoreDtype,
    /// Raw text or chat template (default raw). Chat documents are templated in both modes.
    pub tokenization: TokenizationMode,
    /// A shard is closed once it holds at least this many tokens (default 32,768). Shards hold
    /// whole documents, so a shard has fewer than `shard_tokens + context_len` tokens.
    pub shard_tokens: usize,
    /// Documents are truncated to this many tokens, `<bos>` included (default 1,024).
    pub context_len: usize,
    /// Stop once the store holds this many tokens (rounded up to a whole document); a later run
    /// with a larger limit, or none, continues the store.
    pub max_tokens: Option<u64>,
    /// Shards whose activations are computed by one call of [`PairedSource::run_sequences`]
    /// (default 1). With a [`crate::SequentialPair`] each call loads both models once, so larger
    /// groups mean fewer loads but `group tokens x 2 x d_model x 4` bytes held in memory.
    pub shards_per_group: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            dtype: StoreDtype::F32,
            tokenization: TokenizationMode::Raw,
            shard_tokens: 32_768,
            context_len: 1_024,
            max_tokens: None,
            shards_per_group: 1,
        }
    }
}

/// What a [`cache_corpus`] run did.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSummary {
    /// Tokens this run added.
    pub new_tokens: u64,
    /// Shards this run added.
    pub new_shards: usize,
    /// Tokens in the store now.
    pub stored_tokens: u64,
    /// Whether the whole corpus is stored.
    pub corpus_done: bool,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Runs `corpus` through `source` into the store at `dir`, creating it or resuming it.
///
/// Documents are tokenized (truncated to `context_len`), grouped into shards of whole documents,
/// run through both models and committed shard by shard (see [`StoreWriter`]). Run it again after
/// a crash, a kill or a [`CacheEvent`] `Break`: it continues at the first document not yet
/// committed. `on_event` sees every [`CacheEvent`] and may stop the run
/// ([`CacheError::Interrupted`]).
pub fn cache_corpus(
    source: &dyn PairedSource,
    corpus: &Corpus,
    dir: impl AsRef<Path>,
    options: &CacheOptions,
    mut on_event: impl FnMut(&CacheEvent) -> ControlFlow<()>,
) -> Result<CacheSummary> {
    let start = Instant::now();
    let on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()> = &mut on_event;
    check_options(corpus, options)?;
    let config = store_config(source, corpus, options);
    let mut writer = StoreWriter::create_or_resume(dir, &config)?;
    let (start_tokens, start_shards) = (writer.manifest().n_tokens, writer.manifest().shards.len());
    emit(
        on_event,
        CacheEvent::Started {
            stored_shards: start_shards,
            stored_tokens: start_tokens,
            next_document: writer.manifest().n_documents,
            total_documents: corpus.len(),
        },
        || "at the start".into(),
    )?;
    let below_limit = |tokens: u64| options.max_tokens.is_none_or(|max| tokens < max);
    loop {
        let manifest = writer.manifest();
        if manifest.n_documents == corpus.len() {
            writer.finish()?;
            break;
        }
        if !below_limit(manifest.n_tokens) {
            break;
        }
        let first_shard = manifest.shards.len();
        let group = plan_group(
            source,
            corpus,
            options,
            manifest.n_documents,
            manifest.n_tokens,
            &below_limit,
        )?;
        let sequences: Vec<Vec<u32>> = group
            .iter()
            .flat_map(|g| g.sequences.iter().cloned())
            .collect();
        let activations = forward(source, &sequences, first_shard, on_event)?;
        let mut row = 0;
        for shard in group {
            let n = shard.tokens.len();
            writer.commit_shard(
                activations.slice(s![row..row + n, .., ..]),
                &shard.tokens,
                shard.documents,
                on_event,
            )?;
            row += n;
        }
    }
    let manifest = writer.manifest();
    let summary = CacheSummary {
        new_tokens: manifest.n_tokens - start_tokens,
        new_shards: manifest.shards.len() - start_shards,
        stored_tokens: manifest.n_tokens,
        corpus_done: manifest.finished,
        seconds: start.elapsed().as_secs_f64(),
    };
    emit(
        on_event,
        CacheEvent::Finished {
            stored_tokens: summary.stored_tokens,
            corpus_done: summary.corpus_done,
        },
        || "at the end".into(),
    )?;
    Ok(summary)
}

/// Runs `sequences` (the documents of the shards from `first_shard` on) through both models,
/// reporting [`CacheEvent::Forward`]; a `Break` stops the run once the pass ends.
pub(crate) fn forward(
    source: &dyn PairedSource,
    sequences: &[Vec<u32>],
    first_shard: usize,
    on_event: &mut dyn FnMut(&CacheEvent) -> ControlFlow<()>,
) -> Result<Array3<f32>> {
    let group_tokens = sequences.iter().map(Vec::len).sum();
    let mut stop = false;
    let activations = source.run_sequences(sequences, &mut |progress| {
        let event = CacheEvent::Forward {
            first_shard,
            group_tokens,
            progress,
        };
        stop |= on_event(&event).is_break();
    })?;
    if stop {
        return Err(CacheError::Interrupted {
            stage: format!("during the forward pass of shard {first_shard}"),
        });
    }
    Ok(activations)
}

/// Refuses empty corpora and zero sizes.
pub(crate) fn check_options(corpus: &Corpus, options: &CacheOptions) -> Result<()> {
    if options.shard_tokens == 0 || options.context_len == 0 || options.shards_per_group == 0 {
        return Err(CacheError::InvalidInput {
            reason: format!(
                "shard_tokens ({}), context_len ({}) and shards_per_group ({}) must be positive",
                options.shard_tokens, options.context_len, options.shards_per_group
            ),
        });
    }
    if corpus.is_empty() {
        return Err(CacheError::InvalidInput {
            reason: format!("the corpus {} has no document", corpus.source()),
        });
    }
    Ok(())
}

/// The settings of a store of `corpus` made by `source` with `options`.
pub(crate) fn store_config(
    source: &dyn PairedSource,
    corpus: &Corpus,
    options: &CacheOptions,
) -> StoreConfig {
    StoreConfig {
        models: source.models(),
        hook: source.hook(),
        d_model: source.d_model(),
        dtype: options.dtype,
        tokenization: options.tokenization,
        context_len: options.context_len,
        shard_tokens: options.shard_tokens,
        corpus: CorpusInfo {
            path: corpus.source().to_string(),
            fingerprint: corpus.fingerprint(),
            n_documents: corpus.len(),
        },
    }
}

/// Tokenizes the documents of the next `shards_per_group` shards, starting at document `first`
/// with `stored` tokens already in the store.
fn plan_group(
    source: &dyn PairedSource,
    corpus: &Corpus,
    options: &CacheOptions,
    first: usize,
    stored: u64,
    below_limit: &dyn Fn(u64) -> bool,
) -> Result<Vec<PlannedShard>> {
    let mut group = Vec::with_capacity(options.shards_per_group);
    let (mut doc, mut planned) = (first, stored);
    while group.len() < options.shards_per_group && doc < corpus.len() && below_limit(planned) {
        let mut shard = PlannedShard::empty(doc);
        while doc < corpus.len()
            && shard_open(shard.tokens.len(), options)
            && below_limit(planned + shard.tokens.len() as u64)
        {
            shard.push(source, corpus, options, doc)?;
            doc += 1;
        }
        planned += shard.tokens.len() as u64;
        group.push(shard);
    }
    Ok(group)
}
