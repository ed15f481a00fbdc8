//! # activation-cache
//!
//! The on-disk store of paired base/chat activations that crosscoders train on. The activations come
//! from a [`model_pair::PairedSource`] (both models in memory, or one at a time). Model index 0 is the
//! base model, 1 the chat model, everywhere.
//!
//! ## Overview
//! - [`Corpus`] reads documents from `.txt` (one per line) or `.jsonl` (`{"text"}` or chat
//!   `{"messages"}`) files.
//! - [`cache_corpus`] runs a corpus through a [`PairedSource`](model_pair::PairedSource) into a store
//!   directory: `manifest.json` ([`Manifest`]: models, hook, dtype, tokenisation, corpus fingerprint, shard
//!   checksums, per-model running statistics) and `shard-NNNNN.safetensors` files (`activations
//!   [n, 2, d_model]` in f32 or bf16, `prompt`, `position`, `token_id`, `flags` with the bits
//!   [`FLAG_BOS`], [`FLAG_PAD`], [`FLAG_TEMPLATE`] and [`FLAG_ASSISTANT`]). Every write is atomic;
//!   a killed run resumes where it stopped, never storing a token twice or losing one ([`StoreWriter`]
//!   explains the protocol).
//! - [`ActivationStore`] opens a store for reading: memory-mapped shards checked against the
//!   manifest (sizes, sha256, layout), seeded shuffled [`Batches`] across shards with BOS and
//!   padding excluded by default and a by-document validation [`Split`],
//!   [`normalization_factors`](ActivationStore::normalization_factors) (`sqrt(d) / mean ||x||` per
//!   model) and [`check_compatible`](ActivationStore::check_compatible) for trainers.
//! - [`CacheError`] names the file, shard, line or field of every failure.
//!
//! ## Example
//! ```
//! use std::ops::ControlFlow;
//! use activation_cache::{
//!     cache_corpus, ActivationStore, BatchOptions, CacheOptions, Corpus, StoreDtype,
//! };
//! use gemma_model::{load_dir, HookPoint, LoadOptions};
//! use model_pair::{PromptInput, StereoRunner};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Base and chat (here the same tiny fixture twice), loaded up to the hook only.
//! let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/gemma/tiny-window");
//! let hook: HookPoint = "blocks.1.hook_resid_post".parse()?;
//! let options = LoadOptions::for_hooks(&[hook]);
//! let runner = StereoRunner::from_loaded(load_dir(fixture, &options)?, load_dir(fixture, &options)?, hook)?;
//!
//! // Cache a corpus (normally `Corpus::from_path("corpus.jsonl")?`).
//! let corpus = Corpus::from_documents(
//!     "inline",
//!     vec![PromptInput::from("Why is the sky blue?"), PromptInput::from("Explain gravity.")],
//! );
//! let dir = tempfile::tempdir()?;
//! let options = CacheOptions { dtype: StoreDtype::Bf16, shard_tokens: 8, ..CacheOptions::default() };
//! let summary = cache_corpus(&runner, &corpus, dir.path(), &options, |_| ControlFlow::Continue(()))?;
//! assert!(summary.corpus_done);
//!
//! // Train on it: check it was made for this crosscoder, scale, and draw shuffled batches.
//! let store = ActivationStore::open(dir.path())?;
//! let fixture_name = store.manifest().models[0].name.clone();
//! store.check_compatible([&fixture_name, &fixture_name], hook, 64)?;
//! let [base_scale, chat_scale] = store.normalization_factors(false);
//! let mut seen = 0;
//! for batch in store.batches(BatchOptions { batch_size: 4, seed: 1, ..BatchOptions::default() })? {
//!     assert_eq!(batch.shape()[1..], [2, 64]); // [batch, n_models, d_model], BOS excluded
//!     seen += batch.shape()[0];
//! }
//! assert_eq!(seen as u64, store.n_tokens() - store.manifest().n_bos);
//! # let _ = (base_scale, chat_scale);
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//! None. The models' backends are chosen at run time (see `gemma-model`).

mod cache;
mod corpus;
mod error;
mod finalize;
mod interop;
mod manifest;
mod object_storage;
mod plan;
mod reader;
mod shard;
mod shard_stats;
mod stats;
mod stream;
mod task;
mod writer;

pub use cache::{cache_corpus, CacheOptions, CacheSummary};
pub use corpus::{Corpus, TextSplit};
pub use error::{CacheError, Result};
pub use finalize::{finalize_store, FinalizeOptions, FinalizeSummary};
pub use interop::{DictionaryLearningCache, ForeignDtype, ForeignStepBatches};
pub use manifest::{
    shard_file_name, CorpusInfo, Manifest, ShardEntry, StoreConfig, StoreDtype, FORMAT_VERSION,
    MANIFEST_FILE, STORE_FORMAT,
};
pub use object_storage::{PendingPut, PutOutcome, StoreLocation};
pub use reader::{ActivationStore, BatchOptions, Batches, OpenOptions, Split, StepBatches};
pub use shard::{RowElement, FLAG_ASSISTANT, FLAG_BOS, FLAG_PAD, FLAG_TEMPLATE};
pub use stats::{ModelStatistics, Moments};
pub use stream::{StreamOptions, StreamedBatches, StreamingStore};
pub use task::{
    cache_task, TaskManifest, TaskPartition, TaskSummary, TASKS_DIR, TASK_FORMAT, TASK_VERSION,
};
pub use writer::{CacheEvent, StoreWriter};
