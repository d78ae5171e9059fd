//! Atomic, partitioned Parquet writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int32Array,
    RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Field, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use quakelens_signal::window::fnv1a;

use crate::layout::{io_err, LakeError, LakeManifest};
use crate::record::{Keyed, SourceAttributes, WindowRecord};
use crate::schema::{features_schema, windows_schema};

/// What a write produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSummary {
    pub rows: usize,
    pub files: Vec<PathBuf>,
}

/// Writes window records into the lake's `windows` and `features` tables.
pub struct LakeWriter {
    root: PathBuf,
    shape: [usize; 3],
}

impl LakeWriter {
    /// Opens (creating if needed) the lake at `root` for spectrograms of `shape`.
    pub fn open(root: &Path, shape: [usize; 3]) -> Result<Self, LakeError> {
        LakeManifest::new(shape).ensure(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            shape,
        })
    }

    /// Writes `records`, one file per table, day and stream. Idempotent: the same windows give
    /// the same file names, so a rerun replaces instead of duplicating.
    pub fn write(&self, records: &[WindowRecord]) -> Result<WriteSummary, LakeError> {
        self.write_tables(records, true, true)
    }

    /// As [`LakeWriter::write`], into `windows` and/or `features` only: a writer that died
    /// between the two tables' files is repaired by writing just the table that lacks them.
    pub fn write_tables(
        &self,
        records: &[WindowRecord],
        windows: bool,
        features: bool,
    ) -> Result<WriteSummary, LakeError> {
        let expected = self.shape.iter().product::<usize>();
        if let Some(bad) = records.iter().find(|r| r.spectrogram.len() != expected) {
            return Err(LakeError::Batch {
                table: "windows".into(),
                reason: format!(
                    "window {} has {} spectrogram values, the lake stores {:?} = {expected}",
                    bad.window_id,
                    bad.spectrogram.len(),
                    self.shape
                ),
            });
        }
        let mut summary = WriteSummary::default();
        if records.is_empty() || !(windows || features) {
            return Ok(summary);
        }
        self.write_grouped(records, "", &mut summary, |group| {
            let mut out = Vec::new();
            if windows {
                out.push(("windows", windows_batch(group, self.shape)?));
            }
            if features {
                out.push(("features", features_batch(group)?));
            }
            Ok(out)
        })?;
        Ok(summary)
    }

    /// Groups rows by day and stream and writes each group's batches (one per table) to
    /// `<table>/day=…/stream=…/part-<hash of salt + window ids>.parquet`.
    pub(crate) fn write_grouped<'r, T: Keyed + 'r>(
        &self,
        rows: impl IntoIterator<Item = &'r T>,
        salt: &str,
        summary: &mut WriteSummary,
        batches: impl Fn(&[&'r T]) -> Result<Vec<(&'static str, RecordBatch)>, LakeError>,
    ) -> Result<(), LakeError> {
        let mut groups: BTreeMap<(String, String), Vec<&T>> = BTreeMap::new();
        for r in rows {
            let k = r.key();
            groups.entry((k.day(), k.stream())).or_default().push(r);
        }
        for ((day, stream), mut group) in groups {
            group.sort_by(|a, b| {
                (a.key().start_ns, a.key().window_id).cmp(&(b.key().start_ns, b.key().window_id))
            });
            group.dedup_by(|a, b| a.key().window_id == b.key().window_id);
            let name = format!("part-{}.parquet", group_hash(salt, &group));
            for (table, batch) in batches(&group)? {
                let dir = self
                    .root
                    .join(table)
                    .join(format!("day={day}"))
                    .join(format!("stream={stream}"));
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let path = dir.join(&name);
                write_parquet(&path, &batch)?;
                summary.files.push(path);
            }
            summary.rows += group.len();
        }
        Ok(())
    }
}

/// FNV-1a over `salt` and the sorted window ids: the file name for exactly this set of windows
/// (and, for scores, this model).
fn group_hash<T: Keyed>(salt: &str, group: &[&T]) -> String {
    let bytes = salt.bytes().chain(
        group
            .iter()
            .flat_map(|r| r.key().window_id.bytes().chain([b'\n'])),
    );
    format!("{:016x}", fnv1a(bytes))
}

fn strings<'a, T>(rows: &'a [&T], f: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

pub(crate) fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(values).with_timezone("UTC"))
}

pub(crate) fn id_columns<T: Keyed>(rows: &[&T]) -> Vec<ArrayRef> {
    vec![
        strings(rows, |r| r.key().window_id),
        strings(rows, |r| r.key().network),
        strings(rows, |r| r.key().station),
        strings(rows, |r| r.key().location),
        strings(rows, |r| r.key().band),
        timestamps(rows.iter().map(|r| Some(r.key().start_ns))),
    ]
}

pub(crate) fn batch(
    table: &str,
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<RecordBatch, LakeError> {
    RecordBatch::try_new(schema, columns).map_err(|e| LakeError::Batch {
        table: table.into(),
        reason: e.to_string(),
    })
}

fn windows_batch(rows: &[&WindowRecord], shape: [usize; 3]) -> Result<RecordBatch, LakeError> {
    let schema = windows_schema(shape);
    let size = shape.iter().product::<usize>() as i32;
    let values =
        Float32Array::from_iter_values(rows.iter().flat_map(|r| r.spectrogram.iter().copied()));
    let spectrogram = FixedSizeListArray::try_new(
        Arc::new(Field::new(
            "item",
            arrow::datatypes::DataType::Float32,
            false,
        )),
        size,
        Arc::new(values),
        None,
    )
    .map_err(|e| LakeError::Batch {
        table: "windows".into(),
        reason: e.to_string(),
    })?;
    let mut columns = id_columns(rows);
    columns.extend([
        timestamps(rows.iter().map(|r| Some(r.end_ns))),
        timestamps(rows.iter().map(|r| r.onset_ns)),
        strings(rows, |r| &r.mode),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.trigger_ratio),
        )) as ArrayRef,
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.sample_rate),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.source_rate),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.resampled)),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.gap_runs),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.filled_samples),
        )),
        strings(rows, |r| &r.channel_order),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.event_id.as_deref()),
        )),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.label))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.magnitude))),
    ]);
    for k in 0..SourceAttributes::COLUMNS.len() {
        columns.push(Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.source.values()[k]),
        )));
    }
    columns.push(Arc::new(spectrogram));
    batch("windows", schema, columns)
}

fn features_batch(rows: &[&WindowRecord]) -> Result<RecordBatch, LakeError> {
    let schema = features_schema();
    let n_features = quakelens_signal::features::FEATURES_PER_WINDOW;
    if let Some(bad) = rows.iter().find(|r| r.features.len() != n_features) {
        return Err(LakeError::Batch {
            table: "features".into(),
            reason: format!(
                "window {} has {} features, expected {n_features}",
                bad.window_id,
                bad.features.len()
            ),
        });
    }
    let mut columns = id_columns(rows);
    for k in 0..n_features {
        // NaN (e.g. kurtosis of a flat channel) is stored as null: "undefined", not a number.
        columns.push(Arc::new(Float64Array::from_iter(
            rows.iter()
                .map(|r| Some(r.features[k]).filter(|v| !v.is_nan())),
        )));
    }
    batch("features", schema, columns)
}

/// Writes a Parquet file atomically (see [`write_atomically_with`]).
fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), LakeError> {
    let parquet_err = |e: parquet::errors::ParquetError| LakeError::Parquet {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(parquet_err)?,
        ))
        .set_created_by(format!("quakelens {}", env!("CARGO_PKG_VERSION")))
        .build();
    write_atomically_with(path, |file| {
        let mut writer =
            ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(parquet_err)?;
        writer.write(batch).map_err(parquet_err)?;
        writer.into_inner().map_err(parquet_err)
    })
}

/// Writes a small file (the manifest, a model) atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    write_atomically_with(path, |mut file| {
        file.write_all(bytes).map_err(io_err(path))?;
        Ok(file)
    })
}

/// Lets `fill` write a temporary sibling, syncs it and renames it over `path`, so readers
/// never see half a file.
fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(File) -> Result<File, LakeError>,
) -> Result<(), LakeError> {
    let tmp = tmp_path(path);
    let file = fill(File::create(&tmp).map_err(io_err(&tmp))?)?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// `.name.tmp` beside the target: not matched by `*.parquet` listings.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
