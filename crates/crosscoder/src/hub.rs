//! Hugging Face hub resolution: a repository id (optionally with a subfolder, `org/name/sub/folder`) to a
//! local directory holding one of the known layouts, through the standard hub cache.
//!
//! - The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (hf-hub's
//!   `Cache::from_env`), or an explicit [`HubOptions::cache_dir`] (the `hub` directory itself).
//! - Offline mode (`HF_HUB_OFFLINE=1`, or [`HubOptions::offline`]) only reads the cache:
//!   `models--org--name/refs/<revision>` names the snapshot, `snapshots/<commit>/...` holds the files.
//! - Online, the repository listing picks the layout, then the files are downloaded into the cache
//!   (`HF_TOKEN` or the cached token file authenticates gated repositories; `HF_ENDPOINT` selects a mirror).
//! - The cache and the network are reached through `stereo_core::hub`, the client the models use;
//!   this module adds the subfolder syntax and the choice among the crosscoder layouts.

use std::path::{Path, PathBuf};

use stereo_core::hub::{is_repo_id, offline_from_env, HubOptions, HubRepo};

use crate::error::{CrosscoderError, Result};
use crate::formats::DIR_LAYOUTS;

/// What a [`crate::CrosscoderLoader`] changes of the environment's hub settings
/// ([`HubOptions::from_env`], read when the crosscoder is resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HubOverrides {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Only read the local cache. `None` follows `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`).
    pub offline: Option<bool>,
    /// The hub cache directory (the one holding `models--org--name`); `None` uses the environment.
    pub cache_dir: Option<PathBuf>,
    /// Access token; `None` uses `HF_TOKEN`, then the token file of the cache.
    pub token: Option<String>,
    /// Hub endpoint; `None` uses `HF_ENDPOINT`.
    pub endpoint: Option<String>,
}

impl HubOverrides {
    /// Overrides that pin every setting of `options`.
    pub fn pinning(options: HubOptions, revision: Option<String>) -> Self {
        HubOverrides {
            revision,
            offline: Some(options.offline),
            cache_dir: Some(options.cache_dir),
            token: options.token,
            endpoint: options.endpoint,
        }
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// The hub client's options: the environment's, with these overrides.
    fn options(&self) -> HubOptions {
        let mut options = HubOptions::from_env();
        options.offline = self.offline.unwrap_or_else(offline_from_env);
        options.progress = false;
        if let Some(dir) = &self.cache_dir {
            options.cache_dir = dir.clone();
        }
        if let Some(token) = &self.token {
            options.token = Some(token.clone());
        }
        if let Some(endpoint) = &self.endpoint {
            options.endpoint = Some(endpoint.clone());
        }
        options
    }
}

/// Whether `s` looks like a hub id (`org/name`, optionally followed by `/subfolder...`) rather than a path.
pub fn is_hub_id(s: &str) -> bool {
    let (repo, _) = split_hub_id(s);
    let subfolders_ok = s.split('/').skip(2).all(|p| !p.is_empty() && p != "..");
    is_repo_id(&repo) && subfolders_ok
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
pub(crate) fn resolve(id: &str, options: &HubOverrides) -> Result<PathBuf> {
    let (repo_id, subfolder) = split_hub_id(id);
    let hub_err = |reason: String| CrosscoderError::Hub {
        repo: id.to_string(),
        reason,
    };
    let repo = HubRepo::model(&repo_id, Some(options.revision()), options.options())
        .map_err(|e| hub_err(e.to_string()))?;
    let listing = repo.list_files().map_err(|e| hub_err(e.to_string()))?;
    let (folder, files) =
        choose_layout(&listing, subfolder.as_deref()).map_err(|e| hub_err(e.to_string()))?;
    let mut dir = None;
    for file in &files {
        let remote = if folder.is_empty() {
            file.clone()
        } else {
            format!("{folder}/{file}")
        };
        tracing::info!(repo = %repo_id, file = %remote, "crosscoder file from the hub");
        let local = repo.get(&remote).map_err(|e| hub_err(e.to_string()))?;
        dir = local.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| hub_err("no file to download".into()))
}

/// Why no single crosscoder layout was found in a repository listing.
#[derive(Debug, thiserror::Error)]
enum LayoutError {
    #[error("folder `{folder}` holds none of the known layouts ({expected})")]
    NoneInFolder { folder: String, expected: String },
    #[error("no known layout in the repository ({expected})")]
    NoneFound { expected: String },
    #[error("several crosscoders in the repository; name one as `org/name/<folder>`: {folders}")]
    Several { folders: String },
}

/// Picks the folder and files of a known layout from a repository listing. With a subfolder, only that
/// folder is considered; without one, the root first, then any single folder holding a layout (the
/// ckkissane repository keeps its weights in `blocks.14.hook_resid_pre/`).
fn choose_layout(
    listing: &[String],
    subfolder: Option<&str>,
) -> std::result::Result<(String, Vec<String>), LayoutError> {
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
    let expected = || {
        DIR_LAYOUTS
            .iter()
            .map(|(f, files)| format!("{f}: {}", files.join(" + ")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(sub) = subfolder {
        return layout_in(sub)
            .map(|files| (sub.to_string(), files))
            .ok_or_else(|| LayoutError::NoneInFolder {
                folder: sub.to_string(),
                expected: expected(),
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
        0 => Err(LayoutError::NoneFound {
            expected: expected(),
        }),
        _ => Err(LayoutError::Several {
            folders: found
                .iter()
                .map(|(d, _)| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
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
        assert!(choose_layout(&two, None)
            .unwrap_err()
            .to_string()
            .contains("a, b"));
        assert_eq!(choose_layout(&two, Some("b")).unwrap().0, "b");
        assert!(choose_layout(&l(&["x.bin"]), None).is_err());
    }
}
