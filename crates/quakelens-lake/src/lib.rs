//! The quakelens lake: one Delta Lake table per record kind, on a local directory or any S3
//! prefix, written in commits that carry the source positions they cover (exactly-once through
//! the transaction log), compacted and vacuumed, answered with SQL by DataFusion.
//!
//! Layout: `<lake>/<table>/` is a Delta table partitioned by `day` (UTC day of the window start)
//! and `stream` (`NET.STA.LOC.BAND`). What the lake's windows are (spectrogram shape and input,
//! feature set, schema version) is in the tables' properties. Spark, Trino, DuckDB and the Python
//! `deltalake` package read the same tables.

pub mod answer;
mod batches;
mod convert;
mod error;
mod location;
mod log_table;
mod maintenance;
mod query;
mod single_writer;
mod tables;
mod writer;

// The records and schemas are declared in `quakelens-records`; the lake stores them.
use quakelens_records::{record, schema};

pub use answer::{encode, AnswerFormat, EncodeError, EncodeLimits, Encoded};
pub use batches::SpectrogramAxes;
pub use convert::{convert_old_lake, Converted};
pub use error::LakeError;
pub use location::LakeLocation;
pub use maintenance::{file_counts, optimize, vacuum, Optimized, Vacuumed};
pub use query::{Answer, AsOf, Lake, QueryError, QueryLimits};
pub use record::{
    catalog_number, catalog_value, is_missing, predicted_index, softmax, CatalogRow, CnnShapRecord,
    ForestShapRecord, KeyRef, Keyed, MagnitudeRecord, ScoreRecord, SourceAttributes, WaveformCell,
    WaveformShapRecord, WindowKey, WindowRecord,
};
pub use schema::{
    cnn_shap_schema, features_schema, forest_shap_schema, magnitudes_schema, parse_shape,
    parse_waveform_shape, property, scores_schema, waveform_shap_schema, windows_schema,
    LakeFormat, Table, PARTITIONS, SCHEMA_VERSION,
};
pub use tables::{Committed, Txn};
pub use writer::LakeWriter;

/// Writes a small file (a model, a report) atomically: a temporary sibling, synced, renamed
/// over `path`, so readers never see half a file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
