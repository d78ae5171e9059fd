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

use super::{
    extend, path_capacity, unwind, unwound_sum, ForestShap, Method, PathElement, TreeShapError,
};

/// How the walk treats the feature being conditioned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    /// Its splits follow the explained row.
    Present(i32),
    /// Its splits average both children by cover.
    Absent(i32),
}

impl Condition {
    fn feature(self) -> i32 {
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
                    ConditionedWalk {
                        tree,
                        x,
                        scale,
                        condition,
                        phi,
                    }
                    .recurse(&mut paths, 0, 0, 1.0, 1.0, -1, 0, 1.0);
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

/// Algorithm 2 with one feature conditioned on: it never enters the path, and the share of
/// training rows (absent) or the explained row's branch (present) at its splits scales every
/// leaf below by `weight`.
struct ConditionedWalk<'a> {
    tree: &'a Tree,
    x: &'a [f32],
    scale: f64,
    condition: Condition,
    phi: &'a mut [f64],
}

impl ConditionedWalk<'_> {
    /// As `Walk::recurse` (the parent's path is `paths[parent..parent + len]`, this level's
    /// copy goes right after it), with `weight` the conditioned feature's share of this node.
    #[allow(clippy::too_many_arguments)]
    fn recurse(
        &mut self,
        paths: &mut [PathElement],
        parent: usize,
        len: usize,
        zero: f64,
        one: f64,
        feature: i32,
        node: usize,
        weight: f64,
    ) {
        if weight == 0.0 {
            return;
        }
        let start = parent + len + 1;
        paths.copy_within(parent..parent + len, start);
        let path = &mut paths[start..start + len + 1];
        let mut len = len;
        if feature != self.condition.feature() {
            extend(path, len, zero, one, feature);
            len += 1;
        }
        // The root's element (feature -1) is always there, so the path is never empty.
        let last = len - 1;
        let tree = self.tree;
        if tree.is_leaf(node) {
            let value = tree.value[node] * self.scale * weight;
            for i in 1..=last {
                let w = unwound_sum(path, last, i);
                let e = path[i];
                self.phi[e.feature as usize] += w * (e.one - e.zero) * value;
            }
            return;
        }
        let split = tree.feature[node];
        let (left, right) = (tree.left[node] as usize, tree.right[node] as usize);
        let (hot, cold) = if self.x[split as usize] as f64 <= tree.threshold[node] {
            (left, right)
        } else {
            (right, left)
        };
        let cover = tree.cover[node];
        let (hot_share, cold_share) = (tree.cover[hot] / cover, tree.cover[cold] / cover);
        let (hot_weight, cold_weight) = match self.condition {
            Condition::Present(f) if f == split => (weight, 0.0),
            Condition::Absent(f) if f == split => (weight * hot_share, weight * cold_share),
            _ => (weight, weight),
        };
        let (mut in_zero, mut in_one) = (1.0, 1.0);
        if let Some(k) = path[..len].iter().position(|e| e.feature == split) {
            in_zero = path[k].zero;
            in_one = path[k].one;
            unwind(path, last, k);
            len -= 1;
        }
        self.recurse(
            paths,
            start,
            len,
            hot_share * in_zero,
            in_one,
            split,
            hot,
            hot_weight,
        );
        self.recurse(
            paths,
            start,
            len,
            cold_share * in_zero,
            0.0,
            split,
            cold,
            cold_weight,
        );
    }
}
