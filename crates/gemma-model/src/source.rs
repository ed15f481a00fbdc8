//! Where a model's files come from: a local directory or a hub repository.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stereo_core::hub::{is_repo_id, HubError, HubOptions, HubRepo};

use crate::error::{GemmaError, Result};
use crate::weights::{INDEX_FILE, SINGLE_FILE};

/// A model given as a local directory (hub layout: `config.json`, safetensors, `tokenizer.json`) or as
/// a hub repository id such as `google/gemma-2-2b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory on disk.
    Local(PathBuf),
    /// A hub repository at a revision (`None` = `main`).
    Hub {
        /// Repository id, `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Interprets `s`: an existing path is local; otherwise `org/name` is a hub id.
    pub fn parse(s: &str) -> Result<Self> {
        let path = Path::new(s);
        if path.exists() {
            return Ok(ModelSource::Local(path.to_path_buf()));
        }
        if is_repo_id(s) {
            return Ok(ModelSource::Hub {
                repo: s.to_string(),
                revision: None,
            });
        }
        Err(GemmaError::Hub(HubError::BadId { id: s.into() }))
    }

    /// The same source at a hub revision (ignored for local directories).
    pub fn with_revision(self, revision: Option<String>) -> Self {
        match self {
            ModelSource::Hub { repo, .. } => ModelSource::Hub { repo, revision },
            local => local,
        }
    }

    /// Reads the model's `config.json` only (for a hub repository, just that file is taken from the cache
    /// or downloaded): enough to check a run before any weight is read.
    ///
    /// # Errors
    /// [`GemmaError::Hub`] when the hub file cannot be had; the errors of [`Gemma2Config::from_file`](crate::Gemma2Config::from_file).
    pub fn read_config(&self, hub: &HubOptions) -> Result<crate::Gemma2Config> {
        let path = match self {
            ModelSource::Local(dir) => dir.join("config.json"),
            ModelSource::Hub { repo, revision } => {
                HubRepo::model(repo, revision.as_deref(), hub.clone())?.get("config.json")?
            }
        };
        crate::Gemma2Config::from_file(&path)
    }

    /// Makes every file the model needs available locally and returns the directory holding them.
    ///
    /// For a hub repository, `config.json`, `tokenizer.json` (if present) and the safetensors files
    /// (through `model.safetensors.index.json` when sharded) are taken from the cache or downloaded.
    pub fn resolve(&self, hub: &HubOptions) -> Result<ResolvedModel> {
        match self {
            ModelSource::Local(dir) => {
                if !dir.is_dir() {
                    return Err(GemmaError::io(
                        dir,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
                    ));
                }
                Ok(ResolvedModel {
                    dir: dir.clone(),
                    revision: None,
                })
            }
            ModelSource::Hub { repo, revision } => {
                let repo = HubRepo::model(repo, revision.as_deref(), hub.clone())?;
                let dir = repo.snapshot_dir("config.json")?;
                match repo.get(INDEX_FILE) {
                    Ok(index) => {
                        for shard in shard_files(&index)? {
                            repo.get(&shard)?;
                        }
                    }
                    Err(HubError::NotCached { .. }) | Err(HubError::NotFound { .. }) => {
                        repo.get(SINGLE_FILE)?;
                    }
                    Err(e) => return Err(e.into()),
                }
                // The tokenizer is optional for activation-only uses of random or converted checkpoints.
                let _ = repo.get("tokenizer.json");
                // Stop tokens and sampling defaults for generation; optional as well.
                let _ = repo.get("generation_config.json");
                let commit = dir.file_name().map(|c| c.to_string_lossy().into_owned());
                Ok(ResolvedModel {
                    dir,
                    revision: commit,
                })
            }
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local(p) => write!(f, "{}", p.display()),
            ModelSource::Hub {
                repo,
                revision: None,
            } => write!(f, "{repo}"),
            ModelSource::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "{repo}@{r}"),
        }
    }
}

/// A model directory with every needed file present.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The directory (a hub snapshot directory for hub sources).
    pub dir: PathBuf,
    /// The commit of a hub snapshot, if known.
    pub revision: Option<String>,
}

impl ResolvedModel {
    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

fn shard_files(index: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| GemmaError::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| GemmaError::json(index, &e))?;
    let mut files: Vec<String> = parsed.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    Ok(files)
}
