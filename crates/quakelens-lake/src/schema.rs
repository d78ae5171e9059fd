//! One Arrow schema per table. Partition columns (`day`, `stream`) live in the paths only.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::record::SourceAttributes;

/// Bumped whenever a table's columns change; stored in `lake.json` and the schema metadata.
pub const SCHEMA_VERSION: u32 = 2;

pub(crate) fn ts(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        nullable,
    )
}

pub(crate) fn id_fields() -> Vec<Field> {
    vec![
        Field::new("window_id", DataType::Utf8, false),
        Field::new("network", DataType::Utf8, false),
        Field::new("station", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("band", DataType::Utf8, false),
        ts("start_time", false),
    ]
}

fn metadata(shape: [usize; 3]) -> HashMap<String, String> {
    HashMap::from([
        (
            "quakelens.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        ),
        (
            "quakelens.spectrogram_shape".to_string(),
            format!("{},{},{}", shape[0], shape[1], shape[2]),
        ),
    ])
}

/// Metadata of tables without a spectrogram.
pub(crate) fn table_metadata() -> HashMap<String, String> {
    HashMap::from([(
        "quakelens.schema_version".to_string(),
        SCHEMA_VERSION.to_string(),
    )])
}

/// `windows`: identity, timing, trigger and gap facts, labels, and the spectrogram as
/// `FixedSizeList<f32>` of `shape` = [channels, freqs, frames] (C × H × W).
pub fn windows_schema(shape: [usize; 3]) -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        ts("end_time", false),
        ts("onset_time", true),
        Field::new("mode", DataType::Utf8, false),
        Field::new("trigger_ratio", DataType::Float64, true),
        Field::new("sample_rate", DataType::Float64, false),
        Field::new("source_rate", DataType::Float64, false),
        Field::new("resampled", DataType::Boolean, false),
        Field::new("gap_runs", DataType::Int32, false),
        Field::new("filled_samples", DataType::Int32, false),
        Field::new("channel_order", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("label", DataType::Int32, true),
        Field::new("magnitude", DataType::Float64, true),
    ]);
    fields.extend(
        SourceAttributes::COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Float64, true)),
    );
    fields.extend([Field::new(
        "spectrogram",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            (shape[0] * shape[1] * shape[2]) as i32,
        ),
        false,
    )]);
    Arc::new(Schema::new_with_metadata(fields, metadata(shape)))
}

/// `features`: identity plus the 69 waveform features.
pub fn features_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend(
        quakelens_signal::features::column_names()
            .into_iter()
            .map(|name| Field::new(name, DataType::Float64, true)),
    );
    Arc::new(Schema::new_with_metadata(fields, table_metadata()))
}
