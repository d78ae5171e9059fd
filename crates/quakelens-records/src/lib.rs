//! quakelens's records, declared once: what each lake table stores about a window, a score or
//! an explanation (`record`), the tables' schemas and properties (`schema`), and the Arrow IPC
//! messages the services exchange (`messages`). Nothing here touches storage, a broker or a
//! model, so the message decoders, which take bytes from the network, build and fuzz alone.

pub mod messages;
mod part;
pub mod record;
pub mod schema;

pub use part::Part;
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
