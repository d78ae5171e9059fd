//! The model output tables: `scores` (CNN class probabilities) and `magnitudes` (forest).
//! Each row names the model file (content hash) that produced it; rerunning the same model
//! replaces its rows, another model adds rows beside them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::layout::LakeError;
use crate::record::{KeyRef, Keyed, WindowKey};
use crate::schema::{id_fields, table_metadata, ts};
use crate::writer::{batch, id_columns, timestamps, LakeWriter, WriteSummary};

/// One CNN score.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRecord {
    pub key: WindowKey,
    /// `quakelens-cnn` or `torchscript`.
    pub model_kind: String,
    pub model_hash: String,
    pub logit_foreshock: f32,
    pub logit_aftershock: f32,
    pub p_aftershock: f32,
    pub scored_ns: i64,
}

/// One forest magnitude estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct MagnitudeRecord {
    pub key: WindowKey,
    pub model_hash: String,
    pub magnitude: f64,
    pub scored_ns: i64,
}

impl Keyed for ScoreRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

impl Keyed for MagnitudeRecord {
    fn key(&self) -> KeyRef<'_> {
        self.key.key()
    }
}

/// `scores`: identity, model, logits, P(aftershock) and the predicted class.
pub fn scores_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_kind", DataType::Utf8, false),
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("logit_foreshock", DataType::Float32, false),
        Field::new("logit_aftershock", DataType::Float32, false),
        Field::new("p_aftershock", DataType::Float32, false),
        Field::new("predicted_class", DataType::Utf8, false),
        ts("scored_at", false),
    ]);
    Arc::new(Schema::new_with_metadata(fields, table_metadata()))
}

/// `magnitudes`: identity, model and the predicted magnitude.
pub fn magnitudes_schema() -> SchemaRef {
    let mut fields = id_fields();
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("magnitude_pred", DataType::Float64, false),
        ts("scored_at", false),
    ]);
    Arc::new(Schema::new_with_metadata(fields, table_metadata()))
}

fn utf8<T>(rows: &[&T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

fn scores_batch(rows: &[&ScoreRecord]) -> Result<RecordBatch, LakeError> {
    let mut columns = id_columns(rows);
    let f32s = |f: fn(&ScoreRecord) -> f32| -> ArrayRef {
        Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| f(r))))
    };
    columns.extend([
        utf8(rows, |r| &r.model_kind),
        utf8(rows, |r| &r.model_hash),
        f32s(|r| r.logit_foreshock),
        f32s(|r| r.logit_aftershock),
        f32s(|r| r.p_aftershock),
        utf8(rows, |r| {
            if r.p_aftershock > 0.5 {
                "aftershock"
            } else {
                "foreshock"
            }
        }),
        timestamps(rows.iter().map(|r| Some(r.scored_ns))),
    ]);
    batch("scores", scores_schema(), columns)
}

fn magnitudes_batch(rows: &[&MagnitudeRecord]) -> Result<RecordBatch, LakeError> {
    let mut columns = id_columns(rows);
    columns.extend([
        utf8(rows, |r| &r.model_hash),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.magnitude),
        )) as ArrayRef,
        timestamps(rows.iter().map(|r| Some(r.scored_ns))),
    ]);
    batch("magnitudes", magnitudes_schema(), columns)
}

impl LakeWriter {
    /// Writes CNN scores; one file per day, stream and model.
    pub fn write_scores(&self, rows: &[ScoreRecord]) -> Result<WriteSummary, LakeError> {
        self.write_per_model(
            rows,
            |r| &r.model_hash,
            |g| Ok(vec![("scores", scores_batch(g)?)]),
        )
    }

    /// Writes forest magnitudes; one file per day, stream and model.
    pub fn write_magnitudes(&self, rows: &[MagnitudeRecord]) -> Result<WriteSummary, LakeError> {
        self.write_per_model(
            rows,
            |r| &r.model_hash,
            |g| Ok(vec![("magnitudes", magnitudes_batch(g)?)]),
        )
    }

    /// Groups rows by model hash first, so each model's rows get their own files (and the same
    /// model rerun replaces exactly its own).
    pub(crate) fn write_per_model<'r, T: Keyed>(
        &self,
        rows: &'r [T],
        model: impl Fn(&T) -> &str,
        batches: impl Fn(&[&'r T]) -> Result<Vec<(&'static str, RecordBatch)>, LakeError>,
    ) -> Result<WriteSummary, LakeError> {
        let mut by_model: BTreeMap<&str, Vec<&'r T>> = BTreeMap::new();
        for r in rows {
            by_model.entry(model(r)).or_default().push(r);
        }
        let mut summary = WriteSummary::default();
        for (hash, group) in by_model {
            self.write_grouped(group, hash, &mut summary, &batches)?;
        }
        Ok(summary)
    }
}
