//! Resolving files of Hugging Face hub repositories through the standard cache.
//!
//! Honours the same environment as the Python stack:
//! - `HF_HOME` (cache in `$HF_HOME/hub`) or `HF_HUB_CACHE` (the cache directory itself);
//! - `HF_TOKEN` (else the token file `$HF_HOME/token` written by `huggingface-cli login`);
//! - `HF_HUB_OFFLINE=1`: read the cache only, never touch the network;
//! - `HF_ENDPOINT`: another hub endpoint (mirrors).
//!
//! The cache layout is the hub's: `models--{org}--{name}/refs/{revision}` holds a commit hash and
//! `snapshots/{commit}/{file}` the files.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// Errors of hub resolution.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A gated repository was requested without a token (or the token has no access).
    #[error("`{repo}` is gated on the Hugging Face hub: accept its licence on huggingface.co and set HF_TOKEN (or run `huggingface-cli login`)")]
    Gated {
        /// The repository id.
        repo: String,
    },
    /// Offline mode and the file is not in the local cache.
    #[error("`{file}` of `{repo}` (revision {revision}) is not in the local cache {cache} and offline mode is on: download it once online, or pass a local directory")]
    NotCached {
        /// The repository id.
        repo: String,
        /// The file.
        file: String,
        /// The revision asked for.
        revision: String,
        /// The cache directory searched.
        cache: PathBuf,
    },
    /// The repository or file does not exist on the hub.
    #[error("`{file}` of `{repo}` was not found on the hub (check the repository id, revision and file name)")]
    NotFound {
        /// The repository id.
        repo: String,
        /// The file.
        file: String,
    },
    /// Any other download failure.
    #[error("cannot download `{file}` of `{repo}`: {reason}")]
    Download {
        /// The repository id.
        repo: String,
        /// The file.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// The repository id is malformed.
    #[error(
        "`{id}` is neither an existing local path nor a hub repository id of the form `org/name`"
    )]
    BadId {
        /// What was given.
        id: String,
    },
}

/// How to reach the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The cache directory (the `hub` folder).
    pub cache_dir: PathBuf,
    /// Access token for gated repositories.
    pub token: Option<String>,
    /// Read the cache only.
    pub offline: bool,
    /// Hub endpoint.
    pub endpoint: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubOptions {
    /// Options from the environment (`HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_HUB_OFFLINE`,
    /// `HF_ENDPOINT`), like `huggingface_hub`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache = match var("HF_HUB_CACHE") {
            Some(dir) => Cache::new(PathBuf::from(dir)),
            None => Cache::from_env(),
        };
        let token = var("HF_TOKEN").or_else(|| cache.token());
        HubOptions {
            cache_dir: cache.path().clone(),
            token,
            offline: offline_from_env(),
            endpoint: var("HF_ENDPOINT"),
            progress: true,
        }
    }

    /// Options that read only the given cache directory.
    pub fn offline_cache(cache_dir: impl Into<PathBuf>) -> Self {
        HubOptions {
            cache_dir: cache_dir.into(),
            token: None,
            offline: true,
            endpoint: None,
            progress: false,
        }
    }
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes` or `on`, any case).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Whether `id` looks like a hub repository id (`org/name`, no path separators beyond one `/`).
pub fn is_repo_id(id: &str) -> bool {
    let mut parts = id.split('/');
    let ok = |s: Option<&str>| {
        s.is_some_and(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.starts_with('.')
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// One repository at one revision.
#[derive(Debug, Clone)]
pub struct HubRepo {
    id: String,
    revision: String,
    options: HubOptions,
}

impl HubRepo {
    /// A model repository; `revision` defaults to `main`.
    pub fn model(id: &str, revision: Option<&str>, options: HubOptions) -> Result<Self, HubError> {
        if !is_repo_id(id) {
            return Err(HubError::BadId { id: id.into() });
        }
        Ok(HubRepo {
            id: id.into(),
            revision: revision.unwrap_or("main").into(),
            options,
        })
    }

    /// The repository id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The revision (branch, tag or commit).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.id.clone(), RepoType::Model, self.revision.clone())
    }

    /// Whether `file` exists (in the cache when offline; else on the hub, after the cache).
    pub fn has(&self, file: &str) -> bool {
        self.get(file).is_ok()
    }

    /// The local path of `file`: from the cache if present, else downloaded (unless offline).
    pub fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        if let Some(path) = self
            .cached_snapshot()
            .map(|dir| dir.join(file))
            .filter(|path| path.is_file())
        {
            return Ok(path);
        }
        if self.options.offline {
            return Err(self.not_cached(file));
        }
        self.api(file)?
            .repo(self.repo())
            .get(file)
            .map_err(|e| self.classify(file, e))
    }

    /// Every file of the repository at this revision, as `/`-separated paths: the cached snapshot's
    /// files when offline, else the hub's listing.
    pub fn list_files(&self) -> Result<Vec<String>, HubError> {
        const LISTING: &str = "(the repository listing)";
        if self.options.offline {
            let snapshot = self
                .cached_snapshot()
                .ok_or_else(|| self.not_cached(&format!("refs/{}", self.revision)))?;
            return Ok(files_under(&snapshot));
        }
        let info = self
            .api(LISTING)?
            .repo(self.repo())
            .info()
            .map_err(|e| self.classify(LISTING, e))?;
        let mut files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        files.sort();
        Ok(files)
    }

    /// `snapshots/<commit>` of this revision in the cache: `refs/<revision>` names the commit, or
    /// the revision is a full commit hash itself.
    fn cached_snapshot(&self) -> Option<PathBuf> {
        let repo_dir = self.options.cache_dir.join(self.repo().folder_name());
        let is_commit =
            self.revision.len() == 40 && self.revision.chars().all(|c| c.is_ascii_hexdigit());
        let commit = if is_commit {
            self.revision.clone()
        } else {
            std::fs::read_to_string(repo_dir.join("refs").join(&self.revision))
                .ok()?
                .trim()
                .to_string()
        };
        Some(repo_dir.join("snapshots").join(commit)).filter(|dir| dir.is_dir())
    }

    fn api(&self, file: &str) -> Result<hf_hub::api::sync::Api, HubError> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.options.cache_dir.clone()))
            .with_token(self.options.token.clone())
            .with_progress(self.options.progress);
        if let Some(endpoint) = &self.options.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        builder
            .build()
            .map_err(|e| self.download_error(file, e.to_string()))
    }

    fn not_cached(&self, file: &str) -> HubError {
        HubError::NotCached {
            repo: self.id.clone(),
            file: file.into(),
            revision: self.revision.clone(),
            cache: self.options.cache_dir.clone(),
        }
    }

    /// The directory that holds the snapshot's files (the parent of a resolved file).
    pub fn snapshot_dir(&self, any_file: &str) -> Result<PathBuf, HubError> {
        let path = self.get(any_file)?;
        Ok(path.parent().map(Path::to_path_buf).unwrap_or(path))
    }

    fn classify(&self, file: &str, err: hf_hub::api::sync::ApiError) -> HubError {
        let text = err.to_string();
        let status = status_of(&err);
        match status {
            Some(401) | Some(403) => HubError::Gated {
                repo: self.id.clone(),
            },
            Some(404) => HubError::NotFound {
                repo: self.id.clone(),
                file: file.into(),
            },
            _ => self.download_error(file, text),
        }
    }

    fn download_error(&self, file: &str, reason: String) -> HubError {
        HubError::Download {
            repo: self.id.clone(),
            file: file.into(),
            reason,
        }
    }
}

/// Every file under `dir`, as sorted `/`-separated paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let parts: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

fn status_of(err: &hf_hub::api::sync::ApiError) -> Option<u16> {
    match err {
        hf_hub::api::sync::ApiError::RequestError(e) => match e.as_ref() {
            ureq::Error::Status(code, _) => Some(*code),
            _ => None,
        },
        hf_hub::api::sync::ApiError::TooManyRetries(inner) => status_of(inner),
        _ => None,
    }
}

/// Writes `files` into a hub-style cache under `cache_dir` for `repo` at commit `commit`, pointed to
/// by `refs/main`. Used by tests and by tools that pre-seed a cache for offline machines.
pub fn seed_cache(
    cache_dir: &Path,
    repo: &str,
    commit: &str,
    files: &[(&str, &Path)],
) -> std::io::Result<PathBuf> {
    let folder = cache_dir.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot)?;
    std::fs::create_dir_all(folder.join("refs"))?;
    std::fs::write(folder.join("refs").join("main"), commit)?;
    for (name, src) in files {
        std::fs::copy(src, snapshot.join(name))?;
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("google/gemma-2-2b"));
        assert!(is_repo_id(
            "science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04"
        ));
        for bad in ["gemma", "/abs/path", "a/b/c", "./x", "a/", "../x/y"] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn offline_reads_the_cache_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("config.json");
        std::fs::write(&src, "{}").unwrap();
        let cache = dir.path().join("hub");
        seed_cache(&cache, "org/model", "abc123", &[("config.json", &src)]).unwrap();
        let repo = HubRepo::model("org/model", None, HubOptions::offline_cache(&cache)).unwrap();
        let got = repo.get("config.json").unwrap();
        assert!(
            got.ends_with("models--org--model/snapshots/abc123/config.json"),
            "{got:?}"
        );
        let err = repo.get("model.safetensors").unwrap_err();
        assert!(matches!(err, HubError::NotCached { .. }));
        assert!(err.to_string().contains("model.safetensors"), "{err}");
        let other = HubRepo::model("org/other", None, HubOptions::offline_cache(&cache)).unwrap();
        assert!(matches!(
            other.get("config.json"),
            Err(HubError::NotCached { .. })
        ));
        assert!(matches!(
            other.list_files(),
            Err(HubError::NotCached { .. })
        ));
    }

    #[test]
    fn offline_listing_and_commit_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("x");
        std::fs::write(&src, "x").unwrap();
        let cache = dir.path().join("hub");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = seed_cache(&cache, "org/model", commit, &[("config.json", &src)]).unwrap();
        std::fs::create_dir_all(snapshot.join("sub/deeper")).unwrap();
        std::fs::copy(&src, snapshot.join("sub/deeper/cfg.json")).unwrap();
        let options = HubOptions::offline_cache(&cache);
        let main = HubRepo::model("org/model", None, options.clone()).unwrap();
        assert_eq!(
            main.list_files().unwrap(),
            vec!["config.json".to_string(), "sub/deeper/cfg.json".to_string()]
        );
        // A full commit hash needs no ref.
        let pinned = HubRepo::model("org/model", Some(commit), options.clone()).unwrap();
        assert!(pinned.get("sub/deeper/cfg.json").unwrap().is_file());
        let unknown = HubRepo::model("org/model", Some("v2"), options).unwrap();
        let err = unknown.list_files().unwrap_err();
        assert!(err.to_string().contains("refs/v2"), "{err}");
    }
}
