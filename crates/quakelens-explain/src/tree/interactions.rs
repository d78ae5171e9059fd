//! SHAP interaction values (Lundberg et al. 2020, section 2.3) with shap's conventions: for
//! i ≠ j, Φ_ij is half the change in feature j's SHAP value between feature i fixed to the
//! explained row and feature i left out (path-dependent, so "left out" follows both children
//! by cover), and the diagonal holds what remains of φ_i, so each row of the matrix sums to
//! that feature's SHAP value and the whole matrix plus the base value to the prediction.
//!
//! Both conditioned values come from Algorithm 2 walking the tree with feature i kept off the
//! path and its splits folded into a per-path weight. A feature a tree never splits on changes
//! nothing in it, so each tree is walked twice per feature it uses, not per feature of the forest.

use rayon::prelude::*;

use quakelens_models::forest::Tree;

use super::{path_capacity, ForestShap, Method, PathElement, TreeShapError, Walk};

/// How the walk treats the feature being conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Condition {
    /// Its splits follow the explained row.
    Present(i32),
    /// Its splits average both children by cover.
    Absent(i32),
}

impl Condition {
    pub(super) fn feature(self) -> i32 {
        match self {
            Condition::Present(f) | Condition::Absent(f) => f,
        }
    }
}

impl ForestShap<'_> {
    /// Interaction values of one row: an `n_features × n_features` matrix, row-major.
    pub fn interactions_row(&self, x: &[f32]) -> Result<Vec<f64>, TreeShapError> {
        self.check(0, x)?;
        Ok(self.interactions_checked(x))
    }

    /// Interaction values of a row-major matrix (`n_features` per row), rows in parallel; one
    /// matrix per row as in [`ForestShap::interactions_row`]. Every row is checked first, so an
    /// error names the row.
    pub fn interactions(&self, x: &[f32]) -> Result<Vec<Vec<f64>>, TreeShapError> {
        let width = self.check_rows(x)?;
        Ok(x.par_chunks(width)
            .map(|row| self.interactions_checked(row))
            .collect())
    }

    fn interactions_checked(&self, x: &[f32]) -> Vec<f64> {
        let m = x.len();
        let phi = self
            .explain_row_with(x, Method::Polynomial)
            .expect("row checked by the caller");
        let scale = 1.0 / self.forest.trees.len() as f64;
        let mut out = vec![0.0; m * m];
        let mut paths = vec![PathElement::default(); path_capacity(self.depth)];
        let (mut on, mut off) = (vec![0.0; m], vec![0.0; m]);
        for tree in &self.forest.trees {
            for i in split_features(tree, m) {
                on.fill(0.0);
                off.fill(0.0);
                for (condition, phi) in [
                    (Condition::Present(i as i32), &mut on),
                    (Condition::Absent(i as i32), &mut off),
                ] {
                    Walk {
                        tree,
                        x,
                        scale,
                        condition: Some(condition),
                        phi,
                    }
                    .run(&mut paths);
                }
                let row = &mut out[i * m..(i + 1) * m];
                for j in (0..m).filter(|&j| j != i) {
                    row[j] += (on[j] - off[j]) / 2.0;
                }
            }
        }
        for i in 0..m {
            let off_diagonal: f64 = (0..m).filter(|&j| j != i).map(|j| out[i * m + j]).sum();
            out[i * m + i] = phi[i] - off_diagonal;
        }
        out
    }
}

/// The distinct features `tree` splits on, in order.
fn split_features(tree: &Tree, m: usize) -> impl Iterator<Item = usize> {
    let mut used = vec![false; m];
    for n in (0..tree.len()).filter(|&n| !tree.is_leaf(n)) {
        used[tree.feature[n] as usize] = true;
    }
    used.into_iter()
        .enumerate()
        .filter_map(|(f, u)| u.then_some(f))
}
