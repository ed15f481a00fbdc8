//! Where a store lives: a local directory or a prefix in object storage (`file://`, `s3://`,
//! `gs://`, `az://`), behind one blocking interface over the `object_store` crate.
//!
//! Credentials come from each cloud's standard variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for S3-compatible
//! servers such as MinIO, Ceph or R2; `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`;
//! `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY`). Network errors are retried with
//! exponential backoff by the client ([`StoreLocation::RETRIES`] tries, or
//! `STEREO_OBJECT_STORE_RETRIES`, for at most [`StoreLocation::RETRY_TIMEOUT`]) and then reported as
//! [`CacheError::Storage`] naming the operation and the object.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};
use url::Url;

use crate::error::{CacheError, Result};

/// A store's place: a local directory, or a bucket and prefix in object storage.
#[derive(Clone)]
pub struct StoreLocation {
    display: String,
    local_dir: Option<PathBuf>,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLocation")
            .field("location", &self.display)
            .finish()
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// What putting an object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was created.
    Created,
    /// An object was already at the key (its bytes are not checked here).
    AlreadyExists,
}

/// An upload running in the background (see [`StoreLocation::put_if_absent_background`]).
#[derive(Debug)]
pub struct PendingPut {
    key: String,
    handle: tokio::task::JoinHandle<std::result::Result<PutOutcome, object_store::Error>>,
    location: StoreLocation,
}

impl PendingPut {
    /// Waits for the upload to finish.
    pub fn wait(self) -> Result<PutOutcome> {
        let PendingPut {
            key,
            handle,
            location,
        } = self;
        let joined = location
            .runtime
            .block_on(handle)
            .map_err(|e| location.error("put", &key, format!("the upload task failed: {e}")))?;
        joined.map_err(|e| location.error("put", &key, e.to_string()))
    }
}

impl StoreLocation {
    /// Retries of a failed request before it is reported.
    pub const RETRIES: usize = 8;
    /// The variable that overrides [`Self::RETRIES`] (a number).
    pub const RETRIES_VARIABLE: &'static str = "STEREO_OBJECT_STORE_RETRIES";
    /// The longest a request is retried for.
    pub const RETRY_TIMEOUT: Duration = Duration::from_secs(120);

    /// Parses a location: a local path (created if missing), `file:///abs/path`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix` (also `abfs[s]://` and `https://` Azure
    /// and S3 URLs the `object_store` crate recognises).
    pub fn parse(location: &str) -> Result<Self> {
        let bad = |reason: String| CacheError::InvalidInput {
            reason: format!("store location `{location}`: {reason}"),
        };
        if !location.contains("://") {
            return Self::local(Path::new(location));
        }
        let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
        if url.scheme() == "file" {
            let path = url
                .to_file_path()
                .map_err(|()| bad("a file:// URL needs an absolute path".into()))?;
            return Self::local(&path);
        }
        let (scheme, prefix) =
            object_store::ObjectStoreScheme::parse(&url).map_err(|e| bad(e.to_string()))?;
        let retries = match std::env::var(Self::RETRIES_VARIABLE) {
            Ok(value) => value.trim().parse().map_err(|_| {
                bad(format!(
                    "{}={value:?} is not a number of retries",
                    Self::RETRIES_VARIABLE
                ))
            })?,
            Err(_) => Self::RETRIES,
        };
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: retries,
            retry_timeout: Self::RETRY_TIMEOUT,
        };
        let built: std::result::Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
            object_store::ObjectStoreScheme::AmazonS3 => AmazonS3Builder::from_env()
                .with_url(location)
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            object_store::ObjectStoreScheme::GoogleCloudStorage => {
                GoogleCloudStorageBuilder::from_env()
                    .with_url(location)
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
            object_store::ObjectStoreScheme::MicrosoftAzure => MicrosoftAzureBuilder::from_env()
                .with_url(location)
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            other => return Err(bad(format!("{other:?} is not a supported store scheme"))),
        };
        let store = built.map_err(|e| bad(e.to_string()))?;
        Ok(StoreLocation {
            display: location.trim_end_matches('/').to_string(),
            local_dir: None,
            store,
            prefix,
            runtime: runtime()?,
        })
    }

    /// A local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| CacheError::Storage {
            location: dir.display().to_string(),
            operation: "open".into(),
            key: String::new(),
            message: e.to_string(),
        })?;
        Ok(StoreLocation {
            display: dir.display().to_string(),
            local_dir: Some(dir.to_path_buf()),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            runtime: runtime()?,
        })
    }

    /// The local directory, when the store is on this machine's file system.
    pub fn local_dir(&self) -> Option<&Path> {
        self.local_dir.as_deref()
    }

    /// `location/key`, for messages.
    pub fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.display)
    }

    fn path(&self, key: &str) -> ObjectPath {
        key.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.child(part))
    }

    fn error(&self, operation: &str, key: &str, message: String) -> CacheError {
        CacheError::Storage {
            location: self.display.clone(),
            operation: operation.into(),
            key: key.into(),
            message,
        }
    }

    /// The whole object at `key`, or `None` if there is none.
    pub fn get_optional(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key);
        let got = self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| self.error("get", key, e.to_string()))
    }

    /// The whole object at `key` ([`CacheError::Storage`] if it is missing).
    pub fn get(&self, key: &str) -> Result<Bytes> {
        self.get_optional(key)?
            .ok_or_else(|| self.error("get", key, "no such object".into()))
    }

    /// Bytes `range` of the object at `key`.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        let got = self
            .runtime
            .block_on(self.store.get_range(&path, range.clone()));
        let bytes = got.map_err(|e| self.error("get_range", key, e.to_string()))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(self.error(
                "get_range",
                key,
                format!("asked for bytes {range:?}, got {}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Byte `ranges` of the object at `key`, in one call (the store coalesces nearby ranges and
    /// runs the requests concurrently).
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.path(key);
        let got = self.runtime.block_on(self.store.get_ranges(&path, ranges));
        let parts = got.map_err(|e| self.error("get_range", key, e.to_string()))?;
        for (part, range) in parts.iter().zip(ranges) {
            if part.len() as u64 != range.end - range.start {
                return Err(self.error(
                    "get_range",
                    key,
                    format!("asked for bytes {range:?}, got {}", part.len()),
                ));
            }
        }
        Ok(parts)
    }

    /// The size of the object at `key`, or `None` if there is none.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        let head = self.runtime.block_on(self.store.head(&path));
        match head {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e.to_string())),
        }
    }

    /// Writes `bytes` at `key`, replacing what is there (atomically: readers see the old or the
    /// new object, never a mix).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes);
        let put = self.runtime.block_on(self.store.put(&path, payload));
        put.map(|_| ())
            .map_err(|e| self.error("put", key, e.to_string()))
    }

    /// Starts writing `bytes` at `key` unless an object is already there (a conditional put), in
    /// the background; [`PendingPut::wait`] says which happened.
    pub fn put_if_absent_background(&self, key: &str, bytes: Bytes) -> PendingPut {
        let path = self.path(key);
        let store = Arc::clone(&self.store);
        let handle = self.runtime.spawn(async move {
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match store
                .put_opts(&path, PutPayload::from(bytes), options)
                .await
            {
                Ok(_) => Ok(PutOutcome::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
                Err(e) => Err(e),
            }
        });
        PendingPut {
            key: key.into(),
            handle,
            location: self.clone(),
        }
    }

    /// Writes `bytes` at `key` unless an object is already there.
    pub fn put_if_absent(&self, key: &str, bytes: Bytes) -> Result<PutOutcome> {
        self.put_if_absent_background(key, bytes).wait()
    }

    /// The keys under `prefix` (relative to the store, `/`-separated), sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix);
        let listed = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect::<Vec<_>>());
        let objects = listed.map_err(|e| self.error("list", prefix, e.to_string()))?;
        let strip = self.prefix.parts().count();
        let mut keys: Vec<String> = objects
            .into_iter()
            .map(|meta| {
                meta.location
                    .parts()
                    .skip(strip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes the object at `key` (nothing if there is none).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e.to_string())),
        }
    }
}

/// The runtime that drives the object-store client: two worker threads, so an upload proceeds
/// while the caller computes the next shard.
fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stereo-object-store")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| CacheError::InvalidInput {
            reason: format!("cannot start the object-store runtime: {e}"),
        })
}
