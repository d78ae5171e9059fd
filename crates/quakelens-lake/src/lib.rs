//! The quakelens lake: Parquet tables partitioned by day and station stream, written atomically,
//! answered with SQL by DataFusion.
//!
//! Layout: `<root>/<table>/day=YYYY-MM-DD/stream=NET.STA.LOC.BAND/part-<hash>.parquet`, plus
//! `<root>/lake.json` (schema version and spectrogram shape). File names derive from the window
//! ids they hold, so writing the same windows again replaces a file instead of duplicating rows.
//! DuckDB and pyarrow read the same files (`hive_partitioning`).

mod explanations;
mod layout;
mod query;
mod record;
mod schema;
mod scores;
mod writer;

pub use explanations::{
    cnn_shap_schema, forest_shap_schema, CnnShapRecord, ForestShapRecord, SpectrogramAxes,
};
pub use layout::{LakeError, LakeManifest, TABLES};
pub use query::{Answer, Lake, QueryError, QueryLimits};
pub use record::{KeyRef, Keyed, SourceAttributes, WindowKey, WindowRecord};
pub use schema::{features_schema, windows_schema, SCHEMA_VERSION};
pub use scores::{magnitudes_schema, scores_schema, MagnitudeRecord, ScoreRecord};
pub use writer::{write_atomically, LakeWriter, WriteSummary};
