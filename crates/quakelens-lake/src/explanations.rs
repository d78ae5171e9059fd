//! The explanation tables. `forest_shap` holds one row per window, model and feature: the
//! feature's SHAP value and the base value, so "top features per station" is a GROUP BY.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
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
