//! Random-forest magnitude regression: training ([`train_forest`]), prediction, and the
//! forest file ([`Forest::save`] / [`Forest::load`]) that scikit-learn forests are imported into.

mod file;
mod inputs;
mod train;
mod tree;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use quakelens_signal::features::FeatureSet;

use crate::hash::ModelHash;

pub use file::{ForestFileError, FOREST_FORMAT, FOREST_FORMAT_VERSION};
pub use inputs::{study_inputs, InputMap, InputSource, STUDY_EXCLUDED};
pub use train::{train_forest, Columns, ForestParams, TrainError};
pub use tree::{Tree, LEAF};

/// What a forest expects and predicts; stored in its file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestSpec {
    /// Input columns, in the order rows must give them.
    pub features: Vec<String>,
    /// What it predicts, e.g. `magnitude`.
    pub target: String,
    /// Who grew it: `quakelens <version>` or `scikit-learn <version>`.
    pub origin: String,
    /// The waveform feature set its waveform inputs come from (`None`: it takes none, or the
    /// file predates feature sets and the set follows from the names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_set: Option<FeatureSet>,
    /// Per input, the value a missing input is replaced with (the study filled missing values
    /// with each column's mean over its data); `None`: a window missing an input is not scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Vec<f64>>,
}

impl ForestSpec {
    /// The feature set of the waveform inputs: the stored one, else (files from before feature
    /// sets, all grown on the physical definitions) the set that names every waveform input,
    /// the physical one first. `None` when the forest takes no waveform feature.
    pub fn waveform_set(&self) -> Option<FeatureSet> {
        if self.feature_set.is_some() {
            return self.feature_set;
        }
        let waveform: Vec<&String> = self
            .features
            .iter()
            .filter(|n| FeatureSet::owning(n).is_some())
            .collect();
        if waveform.is_empty() {
            return None;
        }
        [FeatureSet::Physical, FeatureSet::Study]
            .into_iter()
            .find(|set| {
                let names = set.column_names();
                waveform.iter().all(|n| names.contains(n))
            })
    }

    /// Checks that the spec is consistent (fill values, one per input, finite).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(fill) = &self.fill {
            if fill.len() != self.features.len() {
                return Err(format!(
                    "{} fill values for {} inputs",
                    fill.len(),
                    self.features.len()
                ));
            }
            if let Some(i) = fill.iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "the fill value of {} is not finite",
                    self.features[i]
                ));
            }
        }
        Ok(())
    }
}

/// A trained (or imported) forest: the mean of its trees' predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct Forest {
    pub spec: ForestSpec,
    pub trees: Vec<Tree>,
    /// Hash of the file it was loaded from or saved to.
    pub hash: Option<ModelHash>,
}

impl Forest {
    pub fn n_features(&self) -> usize {
        self.spec.features.len()
    }

    /// Mean over trees, accumulated in tree order like scikit-learn.
    pub fn predict_row(&self, x: &[f32]) -> f64 {
        let mut sum = 0.0;
        for t in &self.trees {
            sum += t.predict(x);
        }
        sum / self.trees.len() as f64
    }

    /// Predictions for a row-major matrix (`n_features` values per row), rows in parallel.
    pub fn predict(&self, x: &[f32]) -> Vec<f64> {
        x.par_chunks(self.n_features().max(1))
            .map(|row| self.predict_row(row))
            .collect()
    }

    /// One row of inputs as the forest reads them (f32), missing values (NaN) replaced by the
    /// forest's fill values; without fill values, the name of the first missing input.
    pub fn complete_inputs(&self, row: &[f64]) -> Result<Vec<f32>, String> {
        row.iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.is_finite() {
                    Ok(v as f32)
                } else {
                    match &self.spec.fill {
                        Some(fill) => Ok(fill[i] as f32),
                        None => Err(format!(
                            "forest input {} is missing",
                            self.spec.features.get(i).map_or("?", String::as_str)
                        )),
                    }
                }
            })
            .collect()
    }

    pub fn max_depth(&self) -> usize {
        self.trees.iter().map(Tree::depth).max().unwrap_or(0)
    }

    pub fn nodes(&self) -> usize {
        self.trees.iter().map(Tree::len).sum()
    }
}
