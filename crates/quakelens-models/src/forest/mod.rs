//! Random-forest magnitude regression: training ([`train_forest`]), prediction, and the
//! forest file ([`Forest::save`] / [`Forest::load`]) that scikit-learn forests are imported into.

mod file;
mod train;
mod tree;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::hash::ModelHash;

pub use file::{ForestFileError, FOREST_FORMAT, FOREST_FORMAT_VERSION};
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

    pub fn max_depth(&self) -> usize {
        self.trees.iter().map(Tree::depth).max().unwrap_or(0)
    }

    pub fn nodes(&self) -> usize {
        self.trees.iter().map(Tree::len).sum()
    }
}
