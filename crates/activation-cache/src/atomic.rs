//! Atomic file replacement: write `NAME.tmp`, flush it to disk, rename it over `NAME`, flush the
//! directory. A reader sees the old file or the new one, never a half-written one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CacheError, Result};

/// Suffix of files being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// `path` with [`TMP_SUFFIX`] appended.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` by `bytes` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(|e| CacheError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| CacheError::io(&tmp, e))?;
    file.sync_all().map_err(|e| CacheError::io(&tmp, e))?;
    drop(file);
    commit(&tmp, path)
}

/// Flushes the finished file `tmp` to disk.
pub(crate) fn sync_file(tmp: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp)
        .map_err(|e| CacheError::io(tmp, e))?;
    file.sync_all().map_err(|e| CacheError::io(tmp, e))
}

/// Renames the (already synced) `tmp` over `path` and flushes the directory entry.
pub(crate) fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| CacheError::io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Flushes a directory's entries (renames, deletions) to disk. A no-op where directories cannot be
/// opened (Windows).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(|e| CacheError::io(dir, e))?;
        handle.sync_all().map_err(|e| CacheError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
