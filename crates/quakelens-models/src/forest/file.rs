//! The forest file: one Arrow IPC file, one row per node, trees one after another.
//!
//! Columns `tree` (u32), `left`, `right` (i32 node index within the tree, -1 at leaves),
//! `feature` (i32, -1 at leaves), `threshold` (f64; go left when `f32(x) <= threshold`),
//! `value` (f64 mean target), `cover` (f64 weighted training rows). Schema metadata:
//! `quakelens.format` = `quakelens-forest`, `quakelens.format_version`, and
//! `quakelens.spec` = JSON `{features, target, origin, feature_set?, fill?}`. pyarrow reads and writes it, which is how
//! `python/export_sklearn_forest.py` imports scikit-learn forests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int32Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;

use super::{Forest, ForestSpec, Tree};
use crate::hash::ModelHash;

pub const FOREST_FORMAT: &str = "quakelens-forest";
pub const FOREST_FORMAT_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ForestFileError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: not a readable Arrow IPC file: {reason}")]
    Arrow { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn schema(spec_json: String) -> Arc<Schema> {
    let fields = vec![
        Field::new("tree", DataType::UInt32, false),
        Field::new("left", DataType::Int32, false),
        Field::new("right", DataType::Int32, false),
        Field::new("feature", DataType::Int32, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("cover", DataType::Float64, false),
    ];
    Arc::new(Schema::new_with_metadata(
        fields,
        HashMap::from([
            ("quakelens.format".into(), FOREST_FORMAT.into()),
            (
                "quakelens.format_version".into(),
                FOREST_FORMAT_VERSION.into(),
            ),
            ("quakelens.spec".into(), spec_json),
        ]),
    ))
}

impl Forest {
    /// Writes the forest file atomically and records its hash.
    pub fn save(&mut self, path: &Path) -> Result<ModelHash, ForestFileError> {
        let arrow_err = |e: arrow::error::ArrowError| ForestFileError::Arrow {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let spec = serde_json::to_string(&self.spec).expect("spec serialises");
        let schema = schema(spec);
        let ints = |f: fn(&Tree) -> &Vec<i32>| -> ArrayRef {
            Arc::new(Int32Array::from_iter_values(
                self.trees.iter().flat_map(|t| f(t).iter().copied()),
            ))
        };
        let floats = |f: fn(&Tree) -> &Vec<f64>| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(
                self.trees.iter().flat_map(|t| f(t).iter().copied()),
            ))
        };
        let tree_ids = self
            .trees
            .iter()
            .enumerate()
            .flat_map(|(i, t)| std::iter::repeat_n(i as u32, t.len()));
        let columns = vec![
            Arc::new(UInt32Array::from_iter_values(tree_ids)) as ArrayRef,
            ints(|t| &t.left),
            ints(|t| &t.right),
            ints(|t| &t.feature),
            floats(|t| &t.threshold),
            floats(|t| &t.value),
            floats(|t| &t.cover),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)?;
        let mut bytes = Vec::new();
        {
            let mut w = FileWriter::try_new(&mut bytes, &schema).map_err(arrow_err)?;
            w.write(&batch).map_err(arrow_err)?;
            w.finish().map_err(arrow_err)?;
        }
        quakelens_lake::write_atomically(path, &bytes).map_err(|error| ForestFileError::Io {
            path: path.display().to_string(),
            error,
        })?;
        let hash = ModelHash::of(&bytes);
        self.hash = Some(hash.clone());
        Ok(hash)
    }

    /// Reads and validates a forest file (ours or one exported from scikit-learn).
    pub fn load(path: &Path) -> Result<Self, ForestFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| ForestFileError::Io {
            path: shown.clone(),
            error,
        })?;
        let invalid = |reason: String| ForestFileError::Invalid {
            path: shown.clone(),
            reason,
        };
        let reader = FileReader::try_new(std::io::Cursor::new(&bytes), None).map_err(|e| {
            ForestFileError::Arrow {
                path: shown.clone(),
                reason: e.to_string(),
            }
        })?;
        let meta = reader.schema().metadata().clone();
        if meta.get("quakelens.format").map(String::as_str) != Some(FOREST_FORMAT) {
            return Err(invalid(format!(
                "not a {FOREST_FORMAT} file (metadata quakelens.format = {:?})",
                meta.get("quakelens.format")
            )));
        }
        let version = meta
            .get("quakelens.format_version")
            .cloned()
            .unwrap_or_default();
        if version != FOREST_FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {version:?}, this build reads {FOREST_FORMAT_VERSION}"
            )));
        }
        let spec: ForestSpec =
            serde_json::from_str(meta.get("quakelens.spec").map(String::as_str).unwrap_or(""))
                .map_err(|e| invalid(format!("quakelens.spec metadata: {e}")))?;
        spec.validate()
            .map_err(|e| invalid(format!("quakelens.spec metadata: {e}")))?;
        let mut trees: Vec<Tree> = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| invalid(e.to_string()))?;
            append_nodes(&batch, &mut trees).map_err(invalid)?;
        }
        if trees.is_empty() {
            return Err(invalid("the forest has no trees".into()));
        }
        for (i, t) in trees.iter().enumerate() {
            t.validate(spec.features.len())
                .map_err(|e| invalid(format!("tree {i}: {e}")))?;
        }
        Ok(Forest {
            spec,
            trees,
            hash: Some(ModelHash::of(&bytes)),
        })
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("column {name} is missing or has the wrong type"))
}

fn append_nodes(batch: &RecordBatch, trees: &mut Vec<Tree>) -> Result<(), String> {
    let tree = column::<UInt32Array>(batch, "tree")?;
    let left = column::<Int32Array>(batch, "left")?;
    let right = column::<Int32Array>(batch, "right")?;
    let feature = column::<Int32Array>(batch, "feature")?;
    let threshold = column::<Float64Array>(batch, "threshold")?;
    let value = column::<Float64Array>(batch, "value")?;
    let cover = column::<Float64Array>(batch, "cover")?;
    for i in 0..batch.num_rows() {
        let t = tree.value(i) as usize;
        if t == trees.len() {
            trees.push(Tree::default());
        } else if t + 1 != trees.len() {
            return Err(format!(
                "row {i}: tree {t} out of order (trees must be stored 0, 1, 2, … contiguously)"
            ));
        }
        let node = trees.last_mut().expect("pushed above");
        node.left.push(left.value(i));
        node.right.push(right.value(i));
        node.feature.push(feature.value(i));
        node.threshold.push(threshold.value(i));
        node.value.push(value.value(i));
        node.cover.push(cover.value(i));
    }
    Ok(())
}
