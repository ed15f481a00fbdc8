//! How a corpus is cut into shards: whole documents, a shard closed once it holds at least
//! `shard_tokens` tokens. The one rule both [`crate::cache_corpus`] and the partitioned tasks of
//! [`crate::cache_task`] follow, so that any partition yields the same shards.

use std::ops::Range;

use crate::cache::CacheOptions;
use crate::corpus::Corpus;
use crate::error::{CacheError, Result};
use model_pair::{tokenize_prompt, PairedSource, TokenMeta, TokenizedPrompt};

/// Whether a shard holding `tokens` tokens takes another document.
pub(crate) fn shard_open(tokens: usize, options: &CacheOptions) -> bool {
    tokens < options.shard_tokens
}

/// Document `doc` of `corpus` tokenized as the store holds it (truncated to `context_len`),
/// refused if it is longer than the models' positions.
pub(crate) fn tokenize_document(
    source: &dyn PairedSource,
    corpus: &Corpus,
    options: &CacheOptions,
    doc: usize,
) -> Result<TokenizedPrompt> {
    let mut tokenized = tokenize_prompt(
        source.tokenizer(),
        &corpus.documents()[doc],
        options.tokenization,
    )
    .map_err(|e| CacheError::InvalidInput {
        reason: format!("document {doc} of {}: {e}", corpus.source()),
    })?;
    tokenized.truncate(options.context_len);
    let len = tokenized.ids.len();
    if let Some(max) = source.max_positions().filter(|max| len > *max) {
        return Err(CacheError::InvalidInput {
            reason: format!(
                "document {doc} of {} is {len} tokens long (context_len {}), more than the \
                 models' max_position_embeddings ({max}); truncate it with --context-len {max}",
                corpus.source(),
                options.context_len
            ),
        });
    }
    Ok(tokenized)
}

/// One shard's worth of tokenized documents, waiting for its activations.
pub(crate) struct PlannedShard {
    /// Corpus documents, `[start, end)`.
    pub documents: Range<usize>,
    /// Their token ids.
    pub sequences: Vec<Vec<u32>>,
    /// Their rows' metadata.
    pub tokens: Vec<TokenMeta>,
}

impl PlannedShard {
    /// A shard starting at document `first`, holding nothing yet.
    pub fn empty(first: usize) -> Self {
        PlannedShard {
            documents: first..first,
            sequences: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Adds document `doc` (the next one) to the shard.
    pub fn push(
        &mut self,
        source: &dyn PairedSource,
        corpus: &Corpus,
        options: &CacheOptions,
        doc: usize,
    ) -> Result<()> {
        debug_assert_eq!(doc, self.documents.end);
        let tokenized = tokenize_document(source, corpus, options, doc)?;
        self.tokens
            .extend(tokenized.token_meta(doc, source.tokenizer().bos_id()));
        self.sequences.push(tokenized.ids);
        self.documents.end = doc + 1;
        Ok(())
    }

    /// The shard of documents `documents`, tokenized.
    pub fn of_documents(
        source: &dyn PairedSource,
        corpus: &Corpus,
        options: &CacheOptions,
        documents: Range<usize>,
    ) -> Result<Self> {
        let mut shard = PlannedShard::empty(documents.start);
        for doc in documents {
            shard.push(source, corpus, options, doc)?;
        }
        Ok(shard)
    }
}

/// The document ranges of every shard of the whole corpus, in order (tokenizes every document).
pub(crate) fn shard_ranges(
    source: &dyn PairedSource,
    corpus: &Corpus,
    options: &CacheOptions,
) -> Result<Vec<Range<usize>>> {
    let mut ranges = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for doc in 0..corpus.len() {
        tokens += tokenize_document(source, corpus, options, doc)?.ids.len();
        if !shard_open(tokens, options) {
            ranges.push(start..doc + 1);
            (start, tokens) = (doc + 1, 0);
        }
    }
    if start < corpus.len() {
        ranges.push(start..corpus.len());
    }
    Ok(ranges)
}
