//! Where a lake lives: a local directory (the default, nothing to set up) or an object-store
//! prefix `s3://bucket/prefix`. Each table is a Delta table under the location.
//!
//! S3 goes through object_store's own client, configured from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, web
//! identity on EKS, …) and `AWS_ENDPOINT_URL` for S3-compatible stores (`AWS_ALLOW_HTTP=true`
//! for a plain-HTTP endpoint). Delta commits need an atomic put-if-absent: S3 and compatible
//! stores that honour `If-None-Match: *` give it (the default, `AWS_CONDITIONAL_PUT=etag`).
//! A store without it can still be written by one writer at a time with
//! `AWS_S3_ALLOW_UNSAFE_RENAME=true` (check-then-put; two writers may then lose a commit).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use deltalake::logstore::{
    default_logstore, logstore_factories, object_store_factories, LogStore, LogStoreFactory,
    ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::{DeltaResult, DeltaTableError};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use url::Url;

use crate::error::LakeError;
use crate::schema::Table;

/// A lake's root: a local directory or an `s3://` prefix, with store options that add to (and
/// win over) the environment's (e.g. `aws_endpoint`, `aws_access_key_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeLocation {
    url: Url,
    options: std::collections::BTreeMap<String, String>,
}

impl LakeLocation {
    /// Parses `--lake`: `s3://bucket/prefix` (also `s3a://`, `file://`, `memory://`), or a local
    /// path (created by the first write, so a first run needs no set-up).
    pub fn parse(text: &str) -> Result<Self, LakeError> {
        let bad = |reason: String| LakeError::Location {
            location: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(bad("empty".into()));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            let mut url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
            match scheme {
                "s3" | "s3a" => {
                    if url.host_str().is_none_or(str::is_empty) {
                        return Err(bad("no bucket (s3://bucket/prefix)".into()));
                    }
                    register_s3();
                }
                "file" | "memory" => {}
                other => {
                    return Err(bad(format!(
                        "unsupported scheme {other}:// (use a directory or s3://bucket/prefix)"
                    )))
                }
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            return Ok(Self {
                url,
                options: Default::default(),
            });
        }
        Self::local(Path::new(text)).map_err(|e| bad(e.to_string()))
    }

    /// A local directory (need not exist yet).
    pub fn local(dir: &Path) -> std::io::Result<Self> {
        let abs = match dir.canonicalize() {
            Ok(p) => p,
            Err(_) => std::path::absolute(dir)?,
        };
        let url = Url::from_directory_path(&abs).map_err(|_| {
            std::io::Error::other(format!("{} is not an absolute path", abs.display()))
        })?;
        Ok(Self {
            url,
            options: Default::default(),
        })
    }

    /// The same location with store options (object_store's keys, e.g. `aws_endpoint`).
    pub fn with_options(mut self, options: impl IntoIterator<Item = (String, String)>) -> Self {
        self.options.extend(options);
        self
    }

    /// The local directory, for lakes on the local disk.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The Delta table of `table` under this location.
    pub fn table_url(&self, table: Table) -> Url {
        self.url
            .join(&format!("{}/", table.name()))
            .expect("a table name is a valid relative URL")
    }

    /// Options for delta-rs (the rest comes from the environment).
    pub(crate) fn storage_options(&self) -> HashMap<String, String> {
        self.options.clone().into_iter().collect()
    }
}

impl fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local_dir() {
            Some(dir) => write!(f, "{}", dir.display()),
            None => write!(f, "{}", self.url.as_str().trim_end_matches('/')),
        }
    }
}

impl std::str::FromStr for LakeLocation {
    type Err = LakeError;
    fn from_str(s: &str) -> Result<Self, LakeError> {
        Self::parse(s)
    }
}

/// Registers the S3 object store and log store with delta-rs (once per process).
fn register_s3() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stores: Arc<dyn ObjectStoreFactory> = Arc::new(S3Stores);
        let logs: Arc<dyn LogStoreFactory> = Arc::new(S3Logs);
        for scheme in ["s3://", "s3a://"] {
            let url = Url::parse(scheme).expect("a scheme URL");
            object_store_factories().insert(url.clone(), Arc::clone(&stores));
            logstore_factories().insert(url, Arc::clone(&logs));
        }
    });
}

/// Whether the operator chose the single-writer mode for stores without conditional puts.
fn unsafe_single_writer() -> bool {
    std::env::var("AWS_S3_ALLOW_UNSAFE_RENAME")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

struct S3Stores;

impl ObjectStoreFactory for S3Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, StorePath)> {
        let bucket = url.host_str().unwrap_or_default();
        // The AWS_* variables object_store knows, as `from_env` reads them, except that an
        // empty one counts as unset (compose files and Secrets often carry `AWS_ENDPOINT_URL=`).
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (k, v) in std::env::vars() {
            if !k.starts_with("AWS_") || v.is_empty() {
                continue;
            }
            if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, v);
            }
        }
        if std::env::var_os("AWS_CONDITIONAL_PUT").is_none() {
            builder = builder.with_config(AmazonS3ConfigKey::ConditionalPut, "etag");
        }
        // How long one request is retried while the store is unreachable or answers 5xx
        // (a sink retries whole commits on top of this).
        let retry_s = std::env::var("QUAKELENS_S3_RETRY_SECONDS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(60.0);
        builder = builder.with_retry(object_store::RetryConfig {
            backoff: Default::default(),
            max_retries: 100,
            retry_timeout: std::time::Duration::from_secs_f64(retry_s),
        });
        for (k, v) in &config.raw {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, v);
            }
        }
        let store: ObjectStoreRef = Arc::new(
            builder
                .build()
                .map_err(|e| DeltaTableError::Generic(format!("S3 store for {url}: {e}")))?,
        );
        let store = if unsafe_single_writer() {
            Arc::new(crate::single_writer::CheckThenPut::new(store)) as ObjectStoreRef
        } else {
            store
        };
        let prefix =
            StorePath::parse(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok((store, prefix))
    }
}

struct S3Logs;

impl LogStoreFactory for S3Logs {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_name_their_tables() {
        let s3 = LakeLocation::parse("s3://bucket/some/prefix").unwrap();
        assert_eq!(s3.to_string(), "s3://bucket/some/prefix");
        assert_eq!(
            s3.table_url(Table::Windows).as_str(),
            "s3://bucket/some/prefix/windows/"
        );
        assert!(s3.local_dir().is_none());
        let dir = tempfile::tempdir().unwrap();
        let local = LakeLocation::parse(&dir.path().join("lake").display().to_string()).unwrap();
        assert!(local.local_dir().unwrap().ends_with("lake"));
        assert!(local
            .table_url(Table::CnnShap)
            .as_str()
            .ends_with("/lake/cnn_shap/"));
        for bad in ["", "s3:///prefix", "ftp://host/x"] {
            assert!(LakeLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
