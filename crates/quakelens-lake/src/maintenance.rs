//! Keeping a lake fast for years: `optimize` bin-packs each partition's small files into files
//! of a target size (one commit per table that removes the small files and adds the big ones,
//! so readers see every row exactly once before, during and after), `vacuum` deletes the files
//! no snapshot within the retention period needs (compacted-away files and the leftovers of
//! killed writers).
//!
//! Z-ordering is not used: the tables are partitioned by day and stream, so a partition holds
//! one station's windows of one day, already in time order; Z-order by station and time would
//! rewrite the same files to the same order.

use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;

use crate::error::LakeError;
use crate::location::LakeLocation;
use crate::schema::Table;
use crate::tables::{open_table, writer_properties};

/// What one table's compaction did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Optimized {
    pub table: String,
    pub files_before: usize,
    pub files_after: usize,
    pub files_removed: u64,
    pub files_added: u64,
    /// The table version of the compaction commit (`None`: nothing to compact).
    pub version: Option<i64>,
}

/// What one table's vacuum did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Vacuumed {
    pub table: String,
    pub files_deleted: usize,
    pub dry_run: bool,
}

/// The number of live files per table (what a reader lists).
pub async fn file_counts(location: &LakeLocation) -> Result<Vec<(Table, usize)>, LakeError> {
    let mut out = Vec::new();
    for table in Table::ALL {
        if let Some(t) = open_table(location, table).await? {
            out.push((table, live_files(location, table, &t)?));
        }
    }
    Ok(out)
}

fn live_files(
    location: &LakeLocation,
    table: Table,
    t: &deltalake::DeltaTable,
) -> Result<usize, LakeError> {
    Ok(t.snapshot()
        .map_err(|e| LakeError::store(location, table.name(), e))?
        .log_data()
        .num_files())
}

/// Compacts `tables` (all when empty) to files of about `target_bytes`.
pub async fn optimize(
    location: &LakeLocation,
    tables: &[Table],
    target_bytes: u64,
) -> Result<Vec<Optimized>, LakeError> {
    crate::convert::refuse_old_layout(location)?;
    let mut out = Vec::new();
    for table in selected(tables) {
        let Some(t) = open_table(location, table).await? else {
            continue;
        };
        let err = |e| LakeError::store(location, table.name(), e);
        let files_before = live_files(location, table, &t)?;
        let target = std::num::NonZeroU64::new(target_bytes.max(1)).expect("at least 1");
        let schema = t.snapshot().map_err(err)?.snapshot().arrow_schema();
        let (t, metrics) = t
            .optimize()
            .with_type(OptimizeType::Compact)
            .with_target_size(target)
            .with_writer_properties(writer_properties(&schema))
            .await
            .map_err(err)?;
        let files_after = live_files(location, table, &t)?;
        out.push(Optimized {
            table: table.name().into(),
            files_before,
            files_after,
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            version: (metrics.num_files_removed > 0)
                .then(|| t.version().map(|v| v as i64))
                .flatten(),
        });
    }
    Ok(out)
}

/// Deletes the files of `tables` (all when empty) that no snapshot younger than `retain`
/// references, including files killed writers left without a commit.
pub async fn vacuum(
    location: &LakeLocation,
    tables: &[Table],
    retain: Duration,
    dry_run: bool,
) -> Result<Vec<Vacuumed>, LakeError> {
    crate::convert::refuse_old_layout(location)?;
    let mut out = Vec::new();
    let retention = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
    for table in selected(tables) {
        let Some(t) = open_table(location, table).await? else {
            continue;
        };
        let (_, metrics) = t
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| LakeError::store(location, table.name(), e))?;
        out.push(Vacuumed {
            table: table.name().into(),
            files_deleted: metrics.files_deleted.len(),
            dry_run,
        });
    }
    Ok(out)
}

fn selected(tables: &[Table]) -> Vec<Table> {
    if tables.is_empty() {
        Table::ALL.to_vec()
    } else {
        tables.to_vec()
    }
}
