//! A Delta table as a long-running writer holds it: the log's newest version, protocol and
//! properties (the Delta kernel's lazy snapshot), never the table's file list.
//!
//! delta-rs materialises every live file of a table to commit to it, so a sink's memory and
//! start-up grew with the lake's history (a file per station and day). The writer path here
//! writes its Parquet files with delta-rs and commits them itself, as the Delta protocol
//! defines a commit: the next version's log entry written only if absent. A blind append
//! conflicts with nothing another writer may commit but a change of the table's metadata or
//! protocol, or positions (`txn`) of a source this writer also records; both are read from
//! the winning commits' own log entries, and anything else is retried at the next version.
//! Checkpoints (every `delta.checkpointInterval` versions) are the kernel's, written from the
//! log as it streams past; expired log entries are cleaned up as delta-rs does.

use std::collections::{HashMap, HashSet};

use buoyant_kernel::snapshot::{Snapshot, SnapshotRef};
use deltalake::kernel::transaction::{CommitData, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::logstore::{get_actions, CommitOrBytes, LogStoreRef};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTableBuilder, DeltaTableError};
use url::Url;

/// Commits tried at successive versions before giving up (each lost to another writer).
const MAX_ATTEMPTS: usize = 50;
/// Checkpoint interval when the table does not set `delta.checkpointInterval`.
const CHECKPOINT_EVERY: u64 = 10;
/// Writer protocol versions whose appends need nothing beyond what this writer does:
/// 1 (none) and 2 (column invariants and append-only, which blind appends keep).
const WRITER_VERSIONS: [i32; 2] = [1, 2];

/// How a commit ended when it did not land.
#[derive(Debug)]
pub(crate) enum CommitFailure {
    /// Another writer changed the table's metadata or protocol: check it again, then commit.
    MetadataChanged,
    /// The store or the log refused or failed.
    Delta(DeltaTableError),
}

impl From<DeltaTableError> for CommitFailure {
    fn from(e: DeltaTableError) -> Self {
        CommitFailure::Delta(e)
    }
}

pub(crate) struct LogTable {
    url: Url,
    storage: HashMap<String, String>,
    log_store: LogStoreRef,
    snapshot: SnapshotRef,
}

fn generic(e: impl std::fmt::Display) -> DeltaTableError {
    DeltaTableError::Generic(e.to_string())
}

/// The kernel's newest snapshot (from `from`, reading only the log past it).
async fn newest(
    log_store: &LogStoreRef,
    url: &Url,
    from: Option<SnapshotRef>,
) -> Result<SnapshotRef, DeltaTableError> {
    let engine = log_store.engine(None);
    let url = url.clone();
    tokio::task::spawn_blocking(move || {
        let builder = match from {
            Some(s) => Snapshot::builder_from(s),
            None => Snapshot::builder_for(url.as_str()),
        };
        builder.build(engine.as_ref())
    })
    .await
    .map_err(generic)?
    .map_err(DeltaTableError::from)
}

impl LogTable {
    /// The table at `url`, `None` when none was created there.
    pub(crate) async fn open(
        url: &Url,
        storage: HashMap<String, String>,
    ) -> Result<Option<Self>, DeltaTableError> {
        let log_store = DeltaTableBuilder::from_url(url.clone())?
            .with_storage_options(storage.clone())
            .build_storage()?;
        if !log_store.is_delta_table_location().await? {
            return Ok(None);
        }
        let snapshot = newest(&log_store, url, None).await?;
        Ok(Some(Self {
            url: url.clone(),
            storage,
            log_store,
            snapshot,
        }))
    }

    /// The table's properties (`delta.*` and `quakelens.*`).
    pub(crate) fn properties(&self) -> HashMap<String, String> {
        self.snapshot.metadata_configuration().clone()
    }

    pub(crate) fn partition_columns(&self) -> Vec<String> {
        self.snapshot
            .table_configuration()
            .metadata()
            .partition_columns()
            .to_vec()
    }

    /// Why this writer must not append to the table, if it must not: a protocol that asks
    /// writers for more than blind appends do (deletion vectors, column mapping, row tracking…).
    pub(crate) fn unsupported_protocol(&self) -> Option<String> {
        let protocol = self.snapshot.table_configuration().protocol();
        let version = protocol.min_writer_version();
        (!WRITER_VERSIONS.contains(&version)).then(|| {
            let features = protocol
                .writer_features()
                .map(|f| {
                    f.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!(
                "its protocol asks writers for version {version} ({}); this writer appends to versions 1 and 2",
                if features.is_empty() { "no features listed".into() } else { features }
            )
        })
    }

    /// The newest version of the log, read past what this writer saw.
    pub(crate) async fn refresh(&mut self) -> Result<(), DeltaTableError> {
        self.snapshot = newest(&self.log_store, &self.url, Some(self.snapshot.clone())).await?;
        Ok(())
    }

    /// The last position committed for `app_id` (`None`: never).
    pub(crate) async fn txn_version(&self, app_id: &str) -> Result<Option<i64>, DeltaTableError> {
        let snapshot = self.snapshot.clone();
        let engine = self.log_store.engine(None);
        let app_id = app_id.to_string();
        tokio::task::spawn_blocking(move || snapshot.get_app_id_version(&app_id, engine.as_ref()))
            .await
            .map_err(generic)?
            .map_err(DeltaTableError::from)
    }

    /// A Parquet writer for this table's partitions.
    pub(crate) fn file_writer(
        &self,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<deltalake::writer::RecordBatchWriter, DeltaTableError> {
        deltalake::writer::RecordBatchWriter::try_new(
            self.url.as_str(),
            schema,
            Some(self.partition_columns()),
            Some(self.storage.clone()),
        )
    }

    /// Commits `adds` and `txns` as one blind append at the next free version, with a
    /// checkpoint after it when one is due and `checkpoints` is set.
    pub(crate) async fn commit(
        &mut self,
        adds: Vec<Add>,
        txns: &[Transaction],
        checkpoints: bool,
    ) -> Result<u64, CommitFailure> {
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(self.partition_columns()),
            predicate: None,
        };
        let actions = adds.into_iter().map(Action::Add).collect();
        let entry = CommitData::new(actions, operation, HashMap::new(), txns.to_vec())
            .get_bytes()
            .map_err(|e| DeltaTableError::Transaction { source: e })?;
        let sources: HashSet<&str> = txns.iter().map(|t| t.app_id.as_str()).collect();
        for _ in 0..MAX_ATTEMPTS {
            let version = self.snapshot.version() + 1;
            let written = self
                .log_store
                .write_commit_entry(
                    version,
                    CommitOrBytes::LogBytes(entry.clone()),
                    uuid::Uuid::new_v4(),
                )
                .await;
            match written {
                Ok(()) => {
                    self.refresh().await?;
                    // A checkpoint of exactly the version committed (another writer's newer
                    // one gets its own).
                    if checkpoints
                        && self.checkpoint_due(version)
                        && self.snapshot.version() == version
                    {
                        self.checkpoint().await;
                    }
                    return Ok(version);
                }
                Err(TransactionError::VersionAlreadyExists(_)) => {
                    let seen = self.snapshot.version();
                    self.refresh().await?;
                    self.check_winners(seen, &sources).await?;
                }
                Err(e) => return Err(DeltaTableError::Transaction { source: e }.into()),
            }
        }
        Err(DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(MAX_ATTEMPTS as i32),
        }
        .into())
    }

    /// Reads the commits another writer made after `seen`: a metadata or protocol change, or
    /// positions of one of `sources`, end this commit; anything else it is retried after.
    async fn check_winners(&self, seen: u64, sources: &HashSet<&str>) -> Result<(), CommitFailure> {
        use deltalake::kernel::transaction::CommitConflictError;
        for v in seen + 1..=self.snapshot.version() {
            let Some(bytes) = self.log_store.read_commit_entry(v).await? else {
                continue;
            };
            for action in get_actions(v, &bytes)? {
                match action {
                    Action::Metadata(_) | Action::Protocol(_) => {
                        return Err(CommitFailure::MetadataChanged)
                    }
                    Action::Txn(t) if sources.contains(t.app_id.as_str()) => {
                        return Err(DeltaTableError::Transaction {
                            source: TransactionError::CommitConflict(
                                CommitConflictError::ConcurrentTransaction,
                            ),
                        }
                        .into())
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// `delta.checkpointInterval`.
    fn checkpoint_every(&self) -> u64 {
        self.snapshot
            .table_properties()
            .checkpoint_interval
            .map_or(CHECKPOINT_EVERY, |n| n.get())
    }

    /// Whether `version` is one that gets a checkpoint.
    fn checkpoint_due(&self, version: u64) -> bool {
        version > 0 && version.is_multiple_of(self.checkpoint_every())
    }

    /// Whether the log reaches an interval or more past its last checkpoint.
    pub(crate) fn checkpoint_behind(&self) -> bool {
        let last = self.snapshot.log_segment().checkpoint_version.unwrap_or(0);
        self.snapshot.version() >= last + self.checkpoint_every()
    }

    /// A checkpoint of the newest version this writer saw, then the log entries past their
    /// retention removed. Neither loses data when it fails (readers replay more of the log),
    /// so failures are logged, not returned.
    pub(crate) async fn checkpoint(&mut self) {
        let (snapshot, version) = (self.snapshot.clone(), self.snapshot.version());
        if version == 0 {
            return;
        }
        let engine = self.log_store.engine(None);
        let written =
            tokio::task::spawn_blocking(move || snapshot.checkpoint(engine.as_ref(), None)).await;
        match written {
            // The kernel's snapshot rooted at the new checkpoint.
            Ok(Ok((_, rooted))) => self.snapshot = rooted,
            Ok(Err(e)) => tracing::warn!(table = %self.url, version, "checkpoint not written: {e}"),
            Err(e) => tracing::warn!(table = %self.url, version, "checkpoint not written: {e}"),
        }
        let retention = self
            .snapshot
            .table_properties()
            .log_retention_duration
            .unwrap_or(std::time::Duration::from_secs(30 * 86_400));
        let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
        if let Err(e) = deltalake::checkpoints::cleanup_expired_logs_for(
            version,
            self.log_store.as_ref(),
            cutoff,
            None,
        )
        .await
        {
            tracing::warn!(table = %self.url, version, "expired log entries not removed: {e}");
        }
    }

    pub(crate) fn log_store(&self) -> &LogStoreRef {
        &self.log_store
    }

    /// The files (paths relative to the table) added by the commits written at or after
    /// `since`, read from those commits' own log entries: as many as the table's writers
    /// committed since then, whatever the table's history. A file compacted away since is
    /// listed too (its rows are in the compacted file as well).
    pub(crate) async fn files_added_since(
        &self,
        since: std::time::SystemTime,
    ) -> Result<Vec<String>, DeltaTableError> {
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStoreExt;

        let since = chrono::DateTime::<chrono::Utc>::from(since);
        let store = self.log_store.object_store(None);
        let entry = |v: u64| object_store::path::Path::from(format!("_delta_log/{v:020}.json"));
        // The first version written at or after `since`: commits are written in version
        // order, and entries removed by log cleanup are older than any kept.
        let (mut lo, mut hi) = (0u64, self.snapshot.version() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match store.head(&entry(mid)).await {
                Ok(meta) if meta.last_modified >= since => hi = mid,
                Ok(_) | Err(object_store::Error::NotFound { .. }) => lo = mid + 1,
                Err(e) => return Err(e.into()),
            }
        }
        let log_store = self.log_store.clone();
        let entries: Vec<Option<(u64, bytes::Bytes)>> =
            futures::stream::iter(lo..=self.snapshot.version())
                .map(|v| {
                    let log_store = log_store.clone();
                    async move {
                        let bytes = log_store.read_commit_entry(v).await?;
                        Ok::<_, DeltaTableError>(bytes.map(|b| (v, b)))
                    }
                })
                .buffered(16)
                .try_collect()
                .await?;
        let mut paths = Vec::new();
        for (v, bytes) in entries.into_iter().flatten() {
            paths.extend(get_actions(v, &bytes)?.into_iter().filter_map(|a| match a {
                Action::Add(add) => Some(add.path),
                _ => None,
            }));
        }
        Ok(paths)
    }
}
