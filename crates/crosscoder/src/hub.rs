//! Hugging Face hub resolution: a repository id (optionally with a subfolder, `org/name/sub/folder`) to a
//! local directory holding one of the known layouts, through the standard hub cache.
//!
//! - The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (hf-hub's
//!   `Cache::from_env`), or an explicit [`HubOptions::cache_dir`] (the `hub` directory itself).
//! - Offline mode (`HF_HUB_OFFLINE=1`, or [`HubOptions::offline`]) only reads the cache:
//!   `models--org--name/refs/<revision>` names the snapshot, `snapshots/<commit>/...` holds the files.
//! - Online, the repository listing picks the layout, then the files are downloaded into the cache
//!   (`HF_TOKEN` or the cached token file authenticates gated repositories; `HF_ENDPOINT` selects a mirror).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{CrosscoderError, Result};
use crate::formats::DIR_LAYOUTS;

/// How to reach the hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Only read the local cache. `None` follows `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`).
    pub offline: Option<bool>,
    /// The hub cache directory (the one holding `models--org--name`); `None` uses the environment.
    pub cache_dir: Option<PathBuf>,
    /// Access token; `None` uses `HF_TOKEN`, then the token file of the cache.
    pub token: Option<String>,
}

impl HubOptions {
    /// Whether only the cache is read.
    pub fn is_offline(&self) -> bool {
        self.offline.unwrap_or_else(|| {
            std::env::var("HF_HUB_OFFLINE")
                .map(|v| {
                    matches!(
                        v.trim().to_ascii_lowercase().as_str(),
                        "1" | "true" | "yes" | "on"
                    )
                })
                .unwrap_or(false)
        })
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    fn cache(&self) -> Cache {
        match (&self.cache_dir, std::env::var_os("HF_HUB_CACHE")) {
            (Some(dir), _) => Cache::new(dir.clone()),
            (None, Some(dir)) => Cache::new(PathBuf::from(dir)),
            (None, None) => Cache::from_env(),
        }
    }
}

/// Whether `s` looks like a hub id (`org/name`, optionally followed by `/subfolder...`) rather than a path.
pub fn is_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    let name_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    parts.len() >= 2
        && !s.starts_with('/')
        && name_ok(parts[0])
        && name_ok(parts[1])
        && parts[2..].iter().all(|p| !p.is_empty() && *p != "..")
}

/// Splits `org/name/sub/folder` into the repository id and the optional subfolder.
pub fn split_hub_id(s: &str) -> (String, Option<String>) {
    let mut parts = s.splitn(3, '/');
    let org = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    (
        format!("{org}/{name}"),
        parts
            .next()
            .map(|p| p.trim_end_matches('/').to_string())
            .filter(|p| !p.is_empty()),
    )
}

/// Resolves a hub id to a local directory holding a known layout, downloading it unless offline.
pub(crate) fn resolve(id: &str, options: &HubOptions) -> Result<PathBuf> {
    let (repo_id, subfolder) = split_hub_id(id);
    let hub_err = |reason: String| CrosscoderError::Hub {
        repo: id.to_string(),
        reason,
    };
    if options.is_offline() {
        let snapshot =
            offline_snapshot(&options.cache(), &repo_id, options.revision()).map_err(&hub_err)?;
        let listing = list_files(&snapshot);
        let (folder, files) = choose_layout(&listing, subfolder.as_deref()).map_err(&hub_err)?;
        tracing::info!(repo = %repo_id, snapshot = %snapshot.display(), ?files, "crosscoder resolved from the hub cache (offline)");
        return Ok(join_folder(&snapshot, &folder));
    }
    let token = options
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()));
    let mut builder = ApiBuilder::from_cache(options.cache()).with_progress(false);
    if token.is_some() {
        builder = builder.with_token(token);
    }
    if let Some(endpoint) = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
    {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder
        .build()
        .map_err(|e| hub_err(format!("cannot build the hub client: {e}")))?;
    let repo = api.repo(Repo::with_revision(
        repo_id.clone(),
        RepoType::Model,
        options.revision().to_string(),
    ));
    let info = repo.info().map_err(|e| hub_err(format!("cannot list the repository (set HF_TOKEN for gated repos, or HF_HUB_OFFLINE=1 to use the cache): {e}")))?;
    let listing: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let (folder, files) = choose_layout(&listing, subfolder.as_deref()).map_err(&hub_err)?;
    let mut dir = None;
    for file in &files {
        let remote = if folder.is_empty() {
            file.clone()
        } else {
            format!("{folder}/{file}")
        };
        tracing::info!(repo = %repo_id, file = %remote, "fetching from the hub");
        let local = repo
            .get(&remote)
            .map_err(|e| hub_err(format!("cannot download `{remote}`: {e}")))?;
        dir = local.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| hub_err("no file to download".into()))
}

fn join_folder(base: &Path, folder: &str) -> PathBuf {
    if folder.is_empty() {
        base.to_path_buf()
    } else {
        base.join(folder)
    }
}

/// The snapshot directory of `repo_id` at `revision` in the cache.
fn offline_snapshot(
    cache: &Cache,
    repo_id: &str,
    revision: &str,
) -> std::result::Result<PathBuf, String> {
    let repo_dir = cache
        .path()
        .join(Repo::new(repo_id.to_string(), RepoType::Model).folder_name());
    if !repo_dir.is_dir() {
        return Err(format!(
            "offline mode and not in the hub cache (looked for {})",
            repo_dir.display()
        ));
    }
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        std::fs::read_to_string(&ref_path)
            .map_err(|e| {
                format!(
                    "offline mode and revision `{revision}` is not in the cache ({}: {e})",
                    ref_path.display()
                )
            })?
            .trim()
            .to_string()
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(format!(
            "offline mode and snapshot {} is missing",
            snapshot.display()
        ))
    }
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    out.sort();
    out
}

/// Picks the folder and files of a known layout from a repository listing. With a subfolder, only that
/// folder is considered; without one, the root first, then any single folder holding a layout (the
/// ckkissane repository keeps its weights in `blocks.14.hook_resid_pre/`).
fn choose_layout(
    listing: &[String],
    subfolder: Option<&str>,
) -> std::result::Result<(String, Vec<String>), String> {
    let layout_in = |folder: &str| {
        DIR_LAYOUTS.iter().find_map(|(_, files)| {
            let all = files.iter().all(|f| {
                let full = if folder.is_empty() {
                    f.to_string()
                } else {
                    format!("{folder}/{f}")
                };
                listing.contains(&full)
            });
            all.then(|| files.iter().map(|f| f.to_string()).collect::<Vec<_>>())
        })
    };
    let expected: Vec<String> = DIR_LAYOUTS
        .iter()
        .map(|(f, files)| format!("{f}: {}", files.join(" + ")))
        .collect();
    if let Some(sub) = subfolder {
        return layout_in(sub)
            .map(|files| (sub.to_string(), files))
            .ok_or_else(|| {
                format!(
                    "folder `{sub}` holds none of the known layouts ({})",
                    expected.join("; ")
                )
            });
    }
    if let Some(files) = layout_in("") {
        return Ok((String::new(), files));
    }
    let mut folders: Vec<String> = listing
        .iter()
        .filter_map(|f| f.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    folders.sort();
    folders.dedup();
    let found: Vec<(String, Vec<String>)> = folders
        .into_iter()
        .filter_map(|d| layout_in(&d).map(|files| (d, files)))
        .collect();
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(format!(
            "no known layout in the repository ({})",
            expected.join("; ")
        )),
        _ => Err(format!(
            "several crosscoders in the repository; name one as `org/name/<folder>`: {}",
            found
                .iter()
                .map(|(d, _)| d.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths() {
        assert!(is_hub_id(
            "science-of-finetuning/gemma-2-2b-crosscoder-l13-mu4.1e-02-lr1e-04"
        ));
        assert!(is_hub_id(
            "ckkissane/crosscoder-gemma-2-2b-model-diff/blocks.14.hook_resid_pre"
        ));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("model_final.pt"));
        assert!(!is_hub_id("../x/y"));
        assert_eq!(
            split_hub_id("a/b/c/d"),
            ("a/b".to_string(), Some("c/d".to_string()))
        );
        assert_eq!(split_hub_id("a/b"), ("a/b".to_string(), None));
    }

    #[test]
    fn layout_choice() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dl = l(&["README.md", "config.json", "model.safetensors"]);
        assert_eq!(choose_layout(&dl, None).unwrap().0, "");
        let ck = l(&[
            "README.md",
            "blocks.14.hook_resid_pre/cfg.json",
            "blocks.14.hook_resid_pre/cc_weights.pt",
        ]);
        assert_eq!(
            choose_layout(&ck, None).unwrap(),
            (
                "blocks.14.hook_resid_pre".to_string(),
                l(&["cfg.json", "cc_weights.pt"])
            )
        );
        let two = l(&[
            "a/cfg.json",
            "a/cc_weights.pt",
            "b/cfg.json",
            "b/cc_weights.pt",
        ]);
        assert!(choose_layout(&two, None).unwrap_err().contains("a, b"));
        assert_eq!(choose_layout(&two, Some("b")).unwrap().0, "b");
        assert!(choose_layout(&l(&["x.bin"]), None).is_err());
    }
}
