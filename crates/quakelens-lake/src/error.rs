//! The lake's errors, each naming the table (or location) and whether trying again can help.

use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::DeltaTableError;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake location {location:?}: {reason}")]
    Location { location: String, reason: String },
    /// The store answered, but not as a lake can be used (missing bucket, refused
    /// credentials, …): retrying will not help.
    #[error("lake {location}, table {table}: {reason}")]
    Store {
        location: String,
        table: String,
        reason: String,
        transient: bool,
    },
    /// A table written with another schema version or for other windows.
    #[error("lake {location}, table {table}: {reason}")]
    Incompatible {
        location: String,
        table: String,
        reason: String,
    },
    #[error("lake {location} is in the old plain-Parquet layout (lake.json, no Delta log); convert it once with `quakelens lake convert --lake {location}`")]
    OldLayout { location: String },
    #[error("no lake at {location}: no table has been written there yet (run `quakelens run` first or pass --lake)")]
    NoLake { location: String },
    #[error("building the {table} batch: {reason}")]
    Batch { table: String, reason: String },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl LakeError {
    /// Whether the same call may succeed later (the store was unreachable, a commit raced):
    /// a service retries these with backoff and stops on the others.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LakeError::Store {
                transient: true,
                ..
            }
        )
    }

    pub(crate) fn store(location: &impl ToString, table: &str, e: DeltaTableError) -> Self {
        let transient = transient(&e);
        LakeError::Store {
            location: location.to_string(),
            table: table.to_string(),
            reason: describe(&e),
            transient,
        }
    }
}

/// Network trouble, server errors and lost commit races are worth retrying; refusals are not.
/// A store error can arrive wrapped (a Parquet upload failing inside delta-rs' writer is a
/// Parquet error around the object store's; the Delta kernel reports its reads as text), so the
/// cause chain is searched, then the text.
fn transient(e: &DeltaTableError) -> bool {
    match e {
        // Another writer committed positions of the same source: this one no longer owns it,
        // and writing the batch anyway would land its rows twice.
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        } => false,
        DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Io { .. } => true,
        _ => match store_cause(e) {
            Some(store) => store_transient(store),
            None => {
                let text = e.to_string();
                !denied(&text) && unreachable(&text)
            }
        },
    }
}

/// The object store error somewhere in `e`'s causes, if any.
fn store_cause(e: &DeltaTableError) -> Option<&object_store::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(store) = c.downcast_ref::<object_store::Error>() {
            return Some(store);
        }
        if let Some(parquet::errors::ParquetError::External(inner)) =
            c.downcast_ref::<parquet::errors::ParquetError>()
        {
            cause = Some(inner.as_ref());
            continue;
        }
        cause = c.source();
    }
    None
}

fn store_transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// The store refused the credentials (as object_store and S3 word it).
fn denied(text: &str) -> bool {
    [
        "lacked the necessary privileges",
        "not authenticated",
        "403 Forbidden",
        "401 Unauthorized",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// The store did not answer.
fn unreachable(text: &str) -> bool {
    [
        "error sending request",
        "Connection refused",
        "connection refused",
        "timed out",
        "dns error",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// A one-line cause, with a hint where the cause is a common set-up mistake.
fn describe(e: &DeltaTableError) -> String {
    let text = e.to_string();
    let cause = store_cause(e);
    let hint = if matches!(
        cause,
        Some(
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        )
    ) || denied(&text)
    {
        " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy)"
    } else if text.contains("NoSuchBucket") {
        " (no such bucket: create it first)"
    } else if unreachable(&text) || matches!(cause, Some(object_store::Error::Generic { .. })) {
        " (is the store reachable? AWS_ENDPOINT_URL, AWS_ALLOW_HTTP for plain HTTP)"
    } else {
        ""
    };
    format!("{text}{hint}")
}
