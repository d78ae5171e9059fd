//! The explanation tables. `forest_shap` holds one row per window, model and feature: the
//! feature's SHAP value and the base value, so "top features per station" is a GROUP BY.
//! `cnn_shap` holds one row per window, method and spectrogram cell (channel, frequency,
//! time), so "mean |SHAP| per frequency band" is one too.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::layout::LakeError;
use crate::record::{KeyRef, Keyed, WindowKey};
use crate::schema::{id_fields, table_metadata};
use crate::writer::{batch, id_columns, LakeWriter, WriteSummary};

/// TreeSHAP values of one window's forest inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ForestShapRecord {
    pub key: WindowKey,
    pub model_hash: String,
    /// The forest's expected value; `base_value + Σ values` is the predicted magnitude.
    pub base_value: f64,
    /// One value per forest input, in the forest's feature order.
    pub values: Vec<f64>,
}

impl Keyed for ForestShapRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

/// `forest_shap`: identity, model, feature, value, base value.
pub fn forest_shap_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
    ]);
    Arc::new(Schema::new_with_metadata(fields, table_metadata()))
}

fn forest_shap_batch(
    rows: &[&ForestShapRecord],
    features: &[String],
) -> Result<RecordBatch, LakeError> {
    for r in rows {
        if r.values.len() != features.len() {
            return Err(LakeError::Batch {
                table: "forest_shap".into(),
                reason: format!(
                    "window {}: {} SHAP values for {} features",
                    r.key.window_id,
                    r.values.len(),
                    features.len()
                ),
            });
        }
    }
    let n = features.len();
    let long: Vec<&ForestShapRecord> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, n))
        .collect();
    let mut columns = id_columns(&long);
    columns.extend([
        Arc::new(StringArray::from_iter_values(
            long.iter().map(|r| r.model_hash.as_str()),
        )) as ArrayRef,
        Arc::new(StringArray::from(
            rows.iter()
                .flat_map(|_| features.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter()
                .flat_map(|r| r.values.iter().copied())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.base_value),
        )),
    ]);
    batch("forest_shap", forest_shap_schema(), columns)
}

impl LakeWriter {
    /// Writes forest explanations; `features` names the values (the forest's inputs, in order).
    /// One file per day, stream and model, like the magnitudes they explain.
    pub fn write_forest_shap(
        &self,
        rows: &[ForestShapRecord],
        features: &[String],
    ) -> Result<WriteSummary, LakeError> {
        self.write_per_model(
            rows,
            |r| &r.model_hash,
            |g| Ok(vec![("forest_shap", forest_shap_batch(g, features)?)]),
        )
    }
}

/// Image SHAP values of one window's spectrogram for the CNN's aftershock-minus-foreshock
/// logit.
#[derive(Clone, Debug, PartialEq)]
pub struct CnnShapRecord {
    pub key: WindowKey,
    pub model_hash: String,
    /// `partition`, `gradient` or `exact16`.
    pub method: String,
    /// Model evaluations (partition) or samples (gradient).
    pub budget: i32,
    pub seed: i64,
    /// The explained output at the window and at the fully masked window:
    /// Σ values = output − base_value for the partition method.
    pub output: f64,
    pub base_value: f64,
    /// `[channel][freq][frame]`, like the spectrogram.
    pub values: Vec<f32>,
}

impl Keyed for CnnShapRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

/// `cnn_shap`: one row per window, method and spectrogram cell.
pub fn cnn_shap_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("budget", DataType::Int32, false),
        Field::new("seed", DataType::Int64, false),
        Field::new("channel", DataType::Int32, false),
        Field::new("freq_hz", DataType::Float32, false),
        Field::new("time_s", DataType::Float32, false),
        Field::new("value", DataType::Float32, false),
        Field::new("output", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
    ]);
    Arc::new(Schema::new_with_metadata(fields, table_metadata()))
}

/// The spectrogram axes the CNN's values sit on.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectrogramAxes {
    pub channels: usize,
    pub freqs_hz: Vec<f64>,
    pub times_s: Vec<f64>,
}

impl SpectrogramAxes {
    fn cells(&self) -> usize {
        self.channels * self.freqs_hz.len() * self.times_s.len()
    }
}

fn cnn_shap_batch(
    rows: &[&CnnShapRecord],
    axes: &SpectrogramAxes,
) -> Result<RecordBatch, LakeError> {
    let cells = axes.cells();
    if let Some(r) = rows.iter().find(|r| r.values.len() != cells) {
        return Err(LakeError::Batch {
            table: "cnn_shap".into(),
            reason: format!(
                "window {}: {} SHAP values for {cells} spectrogram cells",
                r.key.window_id,
                r.values.len()
            ),
        });
    }
    let long: Vec<&CnnShapRecord> = rows
        .iter()
        .flat_map(|r| std::iter::repeat_n(*r, cells))
        .collect();
    let (nf, nt) = (axes.freqs_hz.len(), axes.times_s.len());
    let text = |f: fn(&CnnShapRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(long.iter().map(|r| f(r))))
    };
    let mut columns = id_columns(&long);
    columns.extend([
        text(|r| &r.model_hash),
        text(|r| &r.method),
        Arc::new(Int32Array::from_iter_values(long.iter().map(|r| r.budget))) as ArrayRef,
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
        Arc::new(Float32Array::from(
            rows.iter()
                .flat_map(|r| r.values.iter().copied())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.output),
        )),
        Arc::new(Float64Array::from_iter_values(
            long.iter().map(|r| r.base_value),
        )),
    ]);
    batch("cnn_shap", cnn_shap_schema(), columns)
}

impl LakeWriter {
    /// Writes CNN explanations, one row per spectrogram cell; one file per day, stream and model.
    pub fn write_cnn_shap(
        &self,
        rows: &[CnnShapRecord],
        axes: &SpectrogramAxes,
    ) -> Result<WriteSummary, LakeError> {
        self.write_per_model(
            rows,
            |r| &r.model_hash,
            |g| Ok(vec![("cnn_shap", cnn_shap_batch(g, axes)?)]),
        )
    }
}
