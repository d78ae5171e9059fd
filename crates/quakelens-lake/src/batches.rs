//! Records → the tables' Arrow batches (in [`crate::schema`]'s types, partition columns
//! included): the one place a record's fields become columns.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float32Builder, Float64Array, Int32Array, Int64Array,
    ListBuilder, MapBuilder, MapFieldNames, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, SchemaRef};

use crate::error::LakeError;
use crate::record::{
    CnnShapRecord, ForestShapRecord, Keyed, MagnitudeRecord, ScoreRecord, SourceAttributes,
    WaveformShapRecord, WindowRecord,
};
use crate::schema::{
    cnn_shap_schema, features_schema, forest_shap_schema, magnitudes_schema, scores_schema,
    waveform_shap_schema, windows_schema, LakeFormat, Table,
};

/// The spectrogram axes CNN explanation values sit on.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectrogramAxes {
    pub channels: usize,
    pub freqs_hz: Vec<f64>,
    pub times_s: Vec<f64>,
}

impl SpectrogramAxes {
    pub fn cells(&self) -> usize {
        self.channels * self.freqs_hz.len() * self.times_s.len()
    }
}

fn invalid(table: Table, reason: String) -> LakeError {
    LakeError::Batch {
        table: table.name().into(),
        reason,
    }
}

fn strings<'a, T: 'a>(rows: &'a [&T], f: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

/// ns since the epoch → Delta's µs timestamps (floor).
pub(crate) fn micros(ns: i64) -> i64 {
    ns.div_euclid(1000)
}

pub(crate) fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter(values.map(|v| v.map(micros))).with_timezone("UTC"),
    )
}

fn f32_lists<'a>(lists: impl Iterator<Item = &'a [f32]>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Float32,
        true,
    )));
    for l in lists {
        b.values().append_slice(l);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The leading identity columns of every table.
fn id_columns<T: Keyed>(rows: &[&T]) -> Vec<ArrayRef> {
    vec![
        strings(rows, |r| r.key().window_id),
        strings(rows, |r| r.key().network),
        strings(rows, |r| r.key().station),
        strings(rows, |r| r.key().location),
        strings(rows, |r| r.key().band),
        timestamps(rows.iter().map(|r| Some(r.key().start_ns))),
    ]
}

/// The trailing partition columns.
fn partition_columns<T: Keyed>(rows: &[&T]) -> [ArrayRef; 2] {
    [
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.key().day()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.key().stream()),
        )),
    ]
}

fn assemble<T: Keyed>(
    table: Table,
    schema: SchemaRef,
    rows: &[&T],
    body: Vec<ArrayRef>,
) -> Result<RecordBatch, LakeError> {
    let mut columns = id_columns(rows);
    columns.extend(body);
    columns.extend(partition_columns(rows));
    RecordBatch::try_new(schema, columns).map_err(|e| invalid(table, e.to_string()))
}

fn catalog_column(rows: &[&WindowRecord]) -> Result<ArrayRef, LakeError> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for r in rows {
        if r.catalog.is_empty() {
            b.append(false)
        } else {
            for (k, v) in &r.catalog {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            b.append(true)
        }
        .map_err(|e| invalid(Table::Windows, e.to_string()))?;
    }
    Ok(Arc::new(b.finish()))
}

/// `windows` rows; every spectrogram must have the lake's shape.
pub fn windows_batch(
    rows: &[&WindowRecord],
    format: &LakeFormat,
) -> Result<RecordBatch, LakeError> {
    let expected = format.spectrogram_len();
    if let Some(bad) = rows.iter().find(|r| r.spectrogram.len() != expected) {
        return Err(invalid(
            Table::Windows,
            format!(
                "window {} has {} spectrogram values, the lake stores {:?} = {expected}",
                bad.window_id,
                bad.spectrogram.len(),
                format.shape
            ),
        ));
    }
    let ints = |f: fn(&WindowRecord) -> i32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| f(r))))
    };
    let floats = |f: fn(&WindowRecord) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| f(r))))
    };
    let mut body: Vec<ArrayRef> = vec![
        timestamps(rows.iter().map(|r| Some(r.end_ns))),
        timestamps(rows.iter().map(|r| r.onset_ns)),
        strings(rows, |r| &r.mode),
        floats(|r| r.trigger_ratio),
        floats(|r| Some(r.sample_rate)),
        floats(|r| Some(r.source_rate)),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.resampled)),
        )),
        ints(|r| r.gap_runs),
        ints(|r| r.filled_samples),
        ints(|r| r.flat_channels),
        strings(rows, |r| &r.channel_order),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.event_id.as_deref()),
        )),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.label))),
        floats(|r| r.magnitude),
        floats(|r| r.ttf_s),
    ];
    for k in 0..SourceAttributes::COLUMNS.len() {
        body.push(Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.source.values()[k]),
        )));
    }
    body.push(catalog_column(rows)?);
    body.push(f32_lists(rows.iter().map(|r| r.spectrogram.as_slice())));
    if let Some(shape) = format.waveform {
        let expected = format.waveform_len();
        if let Some(bad) = rows.iter().find(|r| r.waveform.len() != expected) {
            return Err(invalid(
                Table::Windows,
                format!(
                    "window {} has {} waveform samples, the lake stores {shape:?} = {expected} \
                     (a lake made for waveform models needs the windower's --waveforms)",
                    bad.window_id,
                    bad.waveform.len(),
                ),
            ));
        }
        body.push(f32_lists(rows.iter().map(|r| r.waveform.as_slice())));
    }
    assemble(
        Table::Windows,
        windows_schema(format.waveform.is_some()),
        rows,
        body,
    )
}

/// `features` rows of the lake's feature set; NaN (e.g. kurtosis of a flat channel) is stored
/// as null: "undefined", not a number.
pub fn features_batch(
    rows: &[&WindowRecord],
    format: &LakeFormat,
) -> Result<RecordBatch, LakeError> {
    let n_features = quakelens_signal::features::FEATURES_PER_WINDOW;
    if let Some(bad) = rows.iter().find(|r| r.features.len() != n_features) {
        return Err(invalid(
            Table::Features,
            format!(
                "window {} has {} features, expected {n_features}",
                bad.window_id,
                bad.features.len()
            ),
        ));
    }
    let body = (0..n_features)
        .map(|k| {
            Arc::new(Float64Array::from_iter(
                rows.iter()
                    .map(|r| Some(r.features[k]).filter(|v| !v.is_nan())),
            )) as ArrayRef
        })
        .collect();
    assemble(
        Table::Features,
        features_schema(format.features),
        rows,
        body,
    )
}

pub fn scores_batch(rows: &[&ScoreRecord]) -> Result<RecordBatch, LakeError> {
    if let Some(bad) = rows.iter().find(|r| {
        r.logits.is_empty()
            || r.logits.len() != r.probabilities.len()
            || r.logits.len() != r.classes.len()
    }) {
        return Err(invalid(
            Table::Scores,
            format!(
                "window {}: {} logits, {} probabilities, {} classes",
                bad.key.window_id,
                bad.logits.len(),
                bad.probabilities.len(),
                bad.classes.len()
            ),
        ));
    }
    let two = |i: usize, p: bool| -> ArrayRef {
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| {
            (r.logits.len() == 2).then(|| if p { r.probabilities[i] } else { r.logits[i] })
        })))
    };
    let body: Vec<ArrayRef> = vec![
        strings(rows, |r| &r.model_kind),
        strings(rows, |r| &r.model_hash),
        two(0, false),
        two(1, false),
        two(1, true),
        f32_lists(rows.iter().map(|r| r.logits.as_slice())),
        f32_lists(rows.iter().map(|r| r.probabilities.as_slice())),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.predicted_index() as i32),
        )),
        strings(rows, |r| r.predicted_class()),
        timestamps(rows.iter().map(|r| Some(r.scored_ns))),
    ];
    assemble(Table::Scores, scores_schema(), rows, body)
}

pub fn magnitudes_batch(rows: &[&MagnitudeRecord]) -> Result<RecordBatch, LakeError> {
    let body: Vec<ArrayRef> = vec![
        strings(rows, |r| &r.model_hash),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.magnitude),
        )),
        timestamps(rows.iter().map(|r| Some(r.scored_ns))),
    ];
    assemble(Table::Magnitudes, magnitudes_schema(), rows, body)
}

/// `forest_shap` rows, one per window and feature; `features` names the values.
pub fn forest_shap_batch(
    rows: &[&ForestShapRecord],
    features: &[String],
) -> Result<RecordBatch, LakeError> {
    if let Some(r) = rows.iter().find(|r| r.values.len() != features.len()) {
        return Err(invalid(
            Table::ForestShap,
            format!(
                "window {}: {} SHAP values for {} features",
                r.key.window_id,
                r.values.len(),
                features.len()
            ),
        ));
    }
    let n = features.len();
    let long: Vec<&ForestShapRecord> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, n))
        .collect();
    let body: Vec<ArrayRef> = vec![
        strings(&long, |r| &r.model_hash),
        Arc::new(StringArray::from(
            rows.iter()
                .flat_map(|_| features.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().flat_map(|r| r.values.iter().copied()),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.base_value),
        )),
    ];
    assemble(Table::ForestShap, forest_shap_schema(), &long, body)
}

/// `cnn_shap` rows, one per window and spectrogram cell.
pub fn cnn_shap_batch(
    rows: &[&CnnShapRecord],
    axes: &SpectrogramAxes,
) -> Result<RecordBatch, LakeError> {
    let cells = axes.cells();
    if let Some(r) = rows.iter().find(|r| r.values.len() != cells) {
        return Err(invalid(
            Table::CnnShap,
            format!(
                "window {}: {} SHAP values for {cells} spectrogram cells",
                r.key.window_id,
                r.values.len()
            ),
        ));
    }
    let long: Vec<&CnnShapRecord> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, cells))
        .collect();
    let (nf, nt) = (axes.freqs_hz.len(), axes.times_s.len());
    let body: Vec<ArrayRef> = vec![
        strings(&long, |r| &r.model_hash),
        strings(&long, |r| &r.method),
        strings(&long, |r| &r.target),
        Arc::new(Int32Array::from_iter_values(long.iter().map(|r| r.budget))),
        Arc::new(Int64Array::from_iter_values(long.iter().map(|r| r.seed))),
        Arc::new(Int32Array::from_iter_values(
            (0..long.len()).map(|i| ((i % cells) / (nf * nt)) as i32),
        )),
        Arc::new(Float32Array::from_iter_values(
            (0..long.len()).map(|i| axes.freqs_hz[(i % cells) / nt % nf] as f32),
        )),
        Arc::new(Float32Array::from_iter_values(
            (0..long.len()).map(|i| axes.times_s[i % nt] as f32),
        )),
        Arc::new(Float32Array::from_iter_values(
            rows.iter().flat_map(|r| r.values.iter().copied()),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.output),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.base_value),
        )),
        Arc::new(StringArray::from_iter(
            long.iter().map(|r| r.batch.as_deref()),
        )),
    ];
    assemble(Table::CnnShap, cnn_shap_schema(), &long, body)
}

/// `waveform_shap` rows, one per window and cell.
pub fn waveform_shap_batch(rows: &[&WaveformShapRecord]) -> Result<RecordBatch, LakeError> {
    if let Some(r) = rows.iter().find(|r| r.cells.is_empty()) {
        return Err(invalid(
            Table::WaveformShap,
            format!("window {}: an explanation without cells", r.key.window_id),
        ));
    }
    let long: Vec<&WaveformShapRecord> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, r.cells.len()))
        .collect();
    let cells: Vec<_> = rows.iter().flat_map(|r| r.cells.iter()).collect();
    let floats = |f: fn(&crate::record::WaveformCell) -> f32| -> ArrayRef {
        Arc::new(Float32Array::from_iter_values(cells.iter().map(|c| f(c))))
    };
    let body: Vec<ArrayRef> = vec![
        strings(&long, |r| &r.model_hash),
        strings(&long, |r| &r.method),
        strings(&long, |r| &r.target),
        Arc::new(Int32Array::from_iter_values(long.iter().map(|r| r.budget))),
        Arc::new(Int32Array::from_iter(cells.iter().map(|c| c.channel))),
        floats(|c| c.start_s),
        floats(|c| c.end_s),
        floats(|c| c.low_hz),
        floats(|c| c.high_hz),
        floats(|c| c.value),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.output),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.base_value),
        )),
    ];
    assemble(Table::WaveformShap, waveform_shap_schema(), &long, body)
}
