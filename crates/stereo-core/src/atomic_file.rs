//! Atomic file replacement: write `NAME.tmp`, flush it to disk, rename it over `NAME`, flush the
//! directory. A reader sees the old file or the new one, never a half-written one. Shared by the
//! activation store (shards, manifest) and the crosscoder trainer (checkpoints).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O failure on a named file or directory.
#[derive(Debug, thiserror::Error)]
#[error("I/O error on `{path}`: {source}")]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// This module's result type.
pub type Result<T> = std::result::Result<T, FileError>;

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Suffix of files being written.
pub const TMP_SUFFIX: &str = ".tmp";

/// `path` with [`TMP_SUFFIX`] appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` by `bytes` atomically.
///
/// # Errors
/// [`FileError`] naming the temporary file, the target or its directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(FileError {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory; give a file name inside it",
            ),
        });
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(at(&tmp))?;
        file.write_all(bytes).map_err(at(&tmp))?;
        file.sync_all().map_err(at(&tmp))?;
        drop(file);
        commit(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes the finished file `tmp` to disk.
///
/// # Errors
/// [`FileError`] naming `tmp`.
pub fn sync_file(tmp: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp)
        .map_err(at(tmp))?;
    file.sync_all().map_err(at(tmp))
}

/// Renames the (already synced) `tmp` over `path` and flushes the directory entry.
///
/// # Errors
/// [`FileError`] naming `path` or its directory.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(at(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Flushes a directory's entries (renames, deletions) to disk. A no-op where directories cannot be
/// opened (Windows).
///
/// # Errors
/// [`FileError`] naming the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(at(dir))?;
        handle.sync_all().map_err(at(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_as_the_target_is_an_error_naming_it_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let err = write_atomic(&target, b"x").unwrap_err();
        assert_eq!(err.path, target);
        let message = err.to_string();
        assert!(
            message.contains("out") && message.contains("is a directory"),
            "{message}"
        );
        assert!(!tmp_path(&target).exists());
        write_atomic(&target.join("file.json"), b"{}").unwrap();
        assert_eq!(std::fs::read(target.join("file.json")).unwrap(), b"{}");
    }
}
