//! The lake's Delta tables: opened or created with their schema and properties, appended to in
//! one commit per call that carries the writer's source positions (Delta `txn` actions), and
//! asked for the positions already committed.

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::logstore::ObjectStoreRef;
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::SaveMode;
use deltalake::writer::DeltaWriter;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::LakeError;
use crate::location::LakeLocation;
use crate::log_table::{CommitFailure, LogTable};
use crate::schema::{property, LakeFormat, Table, PARTITIONS, SCHEMA_VERSION};

/// A position of the source a commit covers: `app_id` is the source (a topic partition read
/// by one consumer group, an embedded run's input), `version` the next position to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
}

/// What one commit wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Committed {
    pub rows: usize,
    pub files: usize,
    /// The table version the commit made (`None` when there was nothing to commit).
    pub version: Option<i64>,
}

/// Opens the Delta table of `table`, `None` when nothing was created there yet.
pub async fn open_table(
    location: &LakeLocation,
    table: Table,
) -> Result<Option<DeltaTable>, LakeError> {
    if let Some(dir) = location.local_dir() {
        if !dir.join(table.name()).join("_delta_log").is_dir() {
            return Ok(None);
        }
    }
    let url = location.table_url(table);
    let builder = DeltaTableBuilder::from_url(url)
        .map_err(|e| LakeError::store(location, table.name(), e))?
        .with_storage_options(location.storage_options());
    match builder.load().await {
        Ok(t) => Ok(Some(t)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(LakeError::store(location, table.name(), e)),
    }
}

/// The properties of a table as stored.
pub(crate) fn properties(t: &DeltaTable) -> HashMap<String, String> {
    t.snapshot()
        .map(|s| s.metadata().configuration().clone())
        .unwrap_or_default()
}

/// Refuses a table of another schema version, or one made for other windows.
pub(crate) fn check_compatible(
    location: &LakeLocation,
    table: Table,
    stored: &HashMap<String, String>,
    format: Option<&LakeFormat>,
) -> Result<(), LakeError> {
    let incompatible = |reason: String| LakeError::Incompatible {
        location: location.to_string(),
        table: table.name().into(),
        reason,
    };
    let found = stored
        .get(property::SCHEMA_VERSION)
        .map(String::as_str)
        .unwrap_or("none");
    if found != SCHEMA_VERSION.to_string() {
        return Err(incompatible(format!(
            "written with schema version {found}, this build reads and writes version {SCHEMA_VERSION}"
        )));
    }
    let Some(format) = format else {
        return Ok(());
    };
    // Every difference at once, in a stable order, so one error says all that is wrong.
    let wanted = table.properties(format);
    let mut keys: Vec<&String> = wanted.keys().collect();
    // Optional properties count when either side has them: a lake with waveforms must not
    // gain windows without, nor the other way round.
    if table == Table::Windows && !wanted.contains_key(property::WAVEFORM_SHAPE) {
        keys.extend(
            stored
                .get_key_value(property::WAVEFORM_SHAPE)
                .map(|(k, _)| k),
        );
    }
    keys.sort();
    let differences: Vec<String> = keys
        .into_iter()
        .filter_map(|key| {
            let have = stored.get(key).map(String::as_str).unwrap_or("none");
            let want = wanted.get(key).map(String::as_str).unwrap_or("none");
            (have != want).then(|| {
                let what = match key.as_str() {
                    property::SPECTROGRAM_SHAPE => "spectrograms of shape",
                    property::SPECTROGRAM => "spectrograms",
                    property::FEATURE_SET => "the feature set",
                    property::WAVEFORM_SHAPE => "waveforms of shape",
                    _ => "the property",
                };
                format!("holds {what} {have}, this writer makes {want}")
            })
        })
        .collect();
    if !differences.is_empty() {
        return Err(incompatible(format!(
            "{}; use another --lake (or the lake's settings, e.g. --waveforms)",
            differences.join("; ")
        )));
    }
    Ok(())
}

/// Refuses a table this writer must not append to: another schema version, other windows, or
/// a protocol asking writers for more than blind appends do.
fn check_writable(
    location: &LakeLocation,
    format: &LakeFormat,
    table: Table,
    t: &LogTable,
) -> Result<(), LakeError> {
    check_compatible(location, table, &t.properties(), Some(format))?;
    match t.unsupported_protocol() {
        Some(reason) => Err(LakeError::Incompatible {
            location: location.to_string(),
            table: table.name().into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The tables a writer holds open, created on first use. A writer holds each table's log
/// position and properties only, so its memory does not grow with the tables' files.
pub(crate) struct Tables {
    pub(crate) location: LakeLocation,
    format: LakeFormat,
    open: BTreeMap<Table, LogTable>,
    /// Tables loaded with their file lists, for [`Tables::partition_keys`] only (the embedded
    /// run, which checks whole partitions for rows written by an earlier run).
    listed: BTreeMap<Table, DeltaTable>,
    /// Checkpoints as commits reach the interval (a service), or only when asked (a batch job,
    /// at its start: see [`crate::LakeWriter::checkpoint_at_open`]).
    pub(crate) checkpoints_as_committed: bool,
}

impl Tables {
    pub(crate) fn new(location: LakeLocation, format: LakeFormat) -> Self {
        Self {
            location,
            format,
            open: BTreeMap::new(),
            listed: BTreeMap::new(),
            checkpoints_as_committed: true,
        }
    }

    pub(crate) fn format(&self) -> &LakeFormat {
        &self.format
    }

    fn err(&self, table: Table) -> impl Fn(DeltaTableError) -> LakeError + '_ {
        move |e| LakeError::store(&self.location, table.name(), e)
    }

    /// The table if it exists, checked against this writer's format and kept open: reading
    /// a table's log position costs a listing, so each table is opened once per writer.
    pub(crate) async fn existing(
        &mut self,
        table: Table,
    ) -> Result<Option<&mut LogTable>, LakeError> {
        if !self.open.contains_key(&table) {
            if let Some(dir) = self.location.local_dir() {
                if !dir.join(table.name()).join("_delta_log").is_dir() {
                    return Ok(None);
                }
            }
            let opened = LogTable::open(
                &self.location.table_url(table),
                self.location.storage_options(),
            )
            .await
            .map_err(self.err(table))?;
            let Some(t) = opened else {
                return Ok(None);
            };
            check_writable(&self.location, &self.format, table, &t)?;
            self.open.insert(table, t);
        }
        Ok(self.open.get_mut(&table))
    }

    /// The open table, created (with its schema and properties) when it does not exist yet.
    pub(crate) async fn table(&mut self, table: Table) -> Result<&mut LogTable, LakeError> {
        if self.existing(table).await?.is_none() {
            self.create(table).await?;
            if self.existing(table).await?.is_none() {
                return Err(self.err(table)(DeltaTableError::Generic(
                    "the table was created but cannot be opened".into(),
                )));
            }
        }
        Ok(self.open.get_mut(&table).expect("opened or created above"))
    }

    async fn create(&self, table: Table) -> Result<(), LakeError> {
        let schema = table.schema(&self.format);
        let columns =
            StructType::try_from_arrow(schema.as_ref()).map_err(|e| self.err(table)(e.into()))?;
        let mut config: HashMap<String, Option<String>> = table
            .properties(&self.format)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        // Checkpoints every 10 commits keep a restart's log replay short.
        config.insert("delta.checkpointInterval".into(), Some("10".into()));
        let created = CreateBuilder::new()
            .with_location(self.location.table_url(table).as_str())
            .with_storage_options(self.location.storage_options())
            .with_table_name(table.name())
            .with_columns(columns.fields().cloned())
            .with_partition_columns(PARTITIONS)
            .with_configuration(config)
            .with_save_mode(SaveMode::ErrorIfExists)
            // Our own `quakelens.*` properties are not Delta keys.
            .with_raise_if_key_not_exists(false)
            // A writer that loses the race to create must not commit its creation again as
            // version 1: that metadata change would conflict with every other writer's append.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another writer may have created it first: use theirs.
            Err(e) => match open_table(&self.location, table).await? {
                Some(_) => Ok(()),
                None => Err(self.err(table)(e)),
            },
        }
    }

    /// Appends `batch` in one commit that also records `txns`; nothing when the batch is empty
    /// and there are no positions to record.
    pub(crate) async fn append(
        &mut self,
        table: Table,
        batch: Option<RecordBatch>,
        txns: &[Txn],
    ) -> Result<Committed, LakeError> {
        let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
        if rows == 0 && txns.is_empty() {
            return Ok(Committed::default());
        }
        let (location, format) = (self.location.clone(), self.format);
        let err = |e: DeltaTableError| LakeError::store(&location, table.name(), e);
        let t = self.table(table).await?;
        let mut adds = Vec::new();
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
            // A writer keeps a buffer of several MiB per partition it has open until it is
            // flushed, and a batch of a large network touches one partition per station: the
            // partitions are written a few at a time, all into the one commit below (each
            // group's rows copied out only while it is written).
            let parts: Vec<Option<arrow::array::UInt32Array>> =
                match partition_groups(&batch, OPEN_PARTITIONS).map_err(|e| err(e.into()))? {
                    Some(groups) => groups.into_iter().map(Some).collect(),
                    None => vec![None],
                };
            for rows in parts {
                let part = match rows {
                    Some(rows) => arrow::compute::take_record_batch(&batch, &rows)
                        .map_err(|e| err(e.into()))?,
                    None => batch.clone(),
                };
                let mut writer = t
                    .file_writer(part.schema())
                    .map_err(err)?
                    .with_writer_properties(writer_properties(&part.schema()));
                writer.write(part).await.map_err(err)?;
                adds.extend(writer.flush().await.map_err(err)?);
            }
        }
        let files = adds.len();
        let checkpoints = self.checkpoints_as_committed;
        let t = self.open.get_mut(&table).expect("opened above");
        let txns: Vec<Transaction> = txns
            .iter()
            .map(|x| Transaction::new(&x.app_id, x.version))
            .collect();
        // Another writer's metadata change is checked against this writer's format, then the
        // same files are committed at the next version.
        for _ in 0..METADATA_RECHECKS {
            match t.commit(adds.clone(), &txns, checkpoints).await {
                Ok(version) => {
                    return Ok(Committed {
                        rows,
                        files,
                        version: Some(version as i64),
                    })
                }
                Err(CommitFailure::MetadataChanged) => {
                    check_writable(&location, &format, table, t)?;
                }
                Err(CommitFailure::Delta(e)) => return Err(err(e)),
            }
        }
        Err(err(DeltaTableError::Generic(format!(
            "the table's metadata changed {METADATA_RECHECKS} times during one commit"
        ))))
    }

    /// The version last committed for `app_id` in `table` (`None`: never).
    pub(crate) async fn txn_version(
        &mut self,
        table: Table,
        app_id: &str,
    ) -> Result<Option<i64>, LakeError> {
        let location = self.location.clone();
        let t = self.table(table).await?;
        t.txn_version(app_id)
            .await
            .map_err(|e| LakeError::store(&location, table.name(), e))
    }

    /// The keys (`window_id`, and `model_hash` for model outputs, else empty) of the rows
    /// `table` gained in commits written since `since`: what a sink starting now checks
    /// upstream duplicates against. Only those commits and their files are read, so the cost
    /// follows the recent write rate, not the table's history.
    pub(crate) async fn recent_keys(
        &mut self,
        table: Table,
        since: std::time::SystemTime,
    ) -> Result<Vec<(String, String)>, LakeError> {
        let location = self.location.clone();
        let err = |e: DeltaTableError| LakeError::store(&location, table.name(), e);
        let Some(t) = self.existing(table).await? else {
            return Ok(Vec::new());
        };
        let paths = t.files_added_since(since).await.map_err(err)?;
        keys_of_files(&t.log_store().object_store(None), paths, table)
            .await
            .map_err(err)
    }

    /// The keys of the rows in one `day` × `stream` partition (its files only are read).
    pub(crate) async fn partition_keys(
        &mut self,
        table: Table,
        day: &str,
        stream: &str,
    ) -> Result<Vec<(String, String)>, LakeError> {
        let location = self.location.clone();
        let err = |e: DeltaTableError| LakeError::store(&location, table.name(), e);
        if !self.listed.contains_key(&table) {
            let Some(t) = open_table(&self.location, table).await? else {
                return Ok(Vec::new());
            };
            self.listed.insert(table, t);
        }
        let t = self.listed.get_mut(&table).expect("loaded above");
        // This writer's own commits since the table was loaded.
        t.update_incremental(None).await.map_err(err)?;
        let paths: Vec<String> = t
            .snapshot()
            .map_err(err)?
            .log_data()
            .iter()
            .filter(|f| {
                let values = f.partition_values_map();
                values.get("day").and_then(|v| v.as_deref()) == Some(day)
                    && values.get("stream").and_then(|v| v.as_deref()) == Some(stream)
            })
            .map(|f| f.path().into_owned())
            .collect();
        keys_of_files(&t.log_store().object_store(None), paths, table)
            .await
            .map_err(err)
    }
}

/// Times one commit is checked again after other writers changed the table's metadata.
const METADATA_RECHECKS: usize = 10;

/// `(window_id, model_hash)` of the rows in `paths` (relative to the table, as the log
/// writes them). A file removed meanwhile (vacuumed after a compaction) is skipped: its rows
/// are in the file that replaced it. Only the key columns' chunks are fetched.
// `ParquetObjectReader` is deprecated in parquet 59 in favour of a hand-written reader; it
// still does what is needed here (ranged reads of one store), as delta-rs uses it.
#[allow(deprecated)]
async fn keys_of_files(
    store: &ObjectStoreRef,
    paths: Vec<String>,
    table: Table,
) -> Result<Vec<(String, String)>, DeltaTableError> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
    use parquet::arrow::ProjectionMask;

    let mut out = Vec::new();
    for path in paths {
        let path = object_store::path::Path::from_url_path(&path)
            .map_err(|e| DeltaTableError::Generic(format!("file path {path:?} in the log: {e}")))?;
        let meta = match store.head(&path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let reader = ParquetObjectReader::new(store.clone(), path).with_file_size(meta.size);
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
        let mut columns = vec!["window_id"];
        if table.schema_has_model() {
            columns.push("model_hash");
        }
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        let batches: Vec<RecordBatch> =
            builder.with_projection(mask).build()?.try_collect().await?;
        for b in batches {
            let text = |name: &str| -> Result<Option<arrow::array::ArrayRef>, DeltaTableError> {
                b.column_by_name(name)
                    .map(|c| arrow::compute::cast(c, &DataType::Utf8))
                    .transpose()
                    .map_err(DeltaTableError::from)
            };
            let Some(w) = text("window_id")? else {
                continue;
            };
            let m = text("model_hash")?;
            let w = w.as_string::<i32>();
            let m = m.as_ref().map(|m| m.as_string::<i32>());
            out.extend((0..b.num_rows()).map(|i| {
                (
                    w.value(i).to_string(),
                    m.map_or_else(String::new, |m| m.value(i).to_string()),
                )
            }));
        }
    }
    Ok(out)
}

/// Partitions a writer holds open at once (each costs a few MiB of buffers until flushed).
const OPEN_PARTITIONS: usize = 16;

/// The rows of `batch` by partition (`day`, `stream`), in groups of at most `most`
/// partitions, as row indices sorted by partition; `None` when the whole batch is one group.
fn partition_groups(
    batch: &RecordBatch,
    most: usize,
) -> Result<Option<Vec<arrow::array::UInt32Array>>, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, UInt32Array};
    use arrow::compute::{lexsort_to_indices, SortColumn};

    let column = |name: &str| {
        batch.column_by_name(name).cloned().ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("no partition column {name}"))
        })
    };
    let keys: Vec<_> = PARTITIONS
        .map(column)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let text: Vec<_> = keys
        .iter()
        .map(|k| arrow::compute::cast(k, &arrow::datatypes::DataType::Utf8))
        .collect::<Result<_, _>>()?;
    let text: Vec<_> = text.iter().map(|k| k.as_string::<i32>()).collect();
    let key_of = |row: u32| -> Vec<Option<&str>> {
        text.iter()
            .map(|k| (!k.is_null(row as usize)).then(|| k.value(row as usize)))
            .collect()
    };
    let distinct: std::collections::HashSet<Vec<Option<&str>>> =
        (0..batch.num_rows() as u32).map(key_of).collect();
    if distinct.len() <= most {
        return Ok(None);
    }
    let order = lexsort_to_indices(
        &keys
            .iter()
            .map(|values| SortColumn {
                values: values.clone(),
                options: None,
            })
            .collect::<Vec<_>>(),
        None,
    )?;
    let mut groups = Vec::new();
    let (mut current, mut seen, mut last) = (Vec::new(), 0usize, None);
    for &row in order.values() {
        let key = key_of(row);
        if last.as_ref() != Some(&key) {
            if seen == most {
                groups.push(UInt32Array::from(std::mem::take(&mut current)));
                seen = 0;
            }
            seen += 1;
            last = Some(key);
        }
        current.push(row);
    }
    if !current.is_empty() {
        groups.push(UInt32Array::from(current));
    }
    Ok(Some(groups))
}

/// Files are zstd-compressed like the plain-Parquet lake was. Only text columns (ids, names,
/// catalogue values) are dictionary-encoded: measured values rarely repeat, so a dictionary
/// of a spectrogram's 15,147 floats or of the features is built only to be thrown away.
pub(crate) fn writer_properties(schema: &arrow::datatypes::Schema) -> WriterProperties {
    use arrow::datatypes::DataType;
    use parquet::schema::types::ColumnPath;

    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("zstd level 3 exists"),
        ))
        .set_created_by(format!("quakelens {}", env!("CARGO_PKG_VERSION")))
        .set_dictionary_enabled(false);
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
        }
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn partition_groups_hold_every_row_once_and_at_most_so_many_partitions() {
        // 7 streams over 2 days, rows interleaved as a network's batch arrives.
        let rows: Vec<(String, String, i64)> = (0..40)
            .map(|i| {
                (
                    format!("2024-03-0{}", 1 + i % 2),
                    format!("XB.S{}", i % 7),
                    i,
                )
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
            Field::new("stream", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
            ],
        )
        .unwrap();
        assert!(
            partition_groups(&batch, 14).unwrap().is_none(),
            "14 partitions fit one group"
        );
        let groups: Vec<RecordBatch> = partition_groups(&batch, 3)
            .unwrap()
            .unwrap()
            .iter()
            .map(|rows| arrow::compute::take_record_batch(&batch, rows).unwrap())
            .collect();
        let mut seen = Vec::new();
        let mut partitions = std::collections::BTreeSet::new();
        for g in &groups {
            let day = g.column(1).as_string::<i32>();
            let stream = g.column(2).as_string::<i32>();
            let here: std::collections::BTreeSet<(String, String)> = (0..g.num_rows())
                .map(|i| (day.value(i).to_string(), stream.value(i).to_string()))
                .collect();
            assert!(here.len() <= 3, "{} partitions in one group", here.len());
            for p in here {
                assert!(partitions.insert(p), "a partition split over two groups");
            }
            seen.extend(
                g.column(0)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        seen.sort();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert_eq!(partitions.len(), 14);
        assert_eq!(groups.len(), 5);
    }
}
