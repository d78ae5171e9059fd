//! Exact path-dependent TreeSHAP (Lundberg et al. 2020, Algorithm 2) with the conventions of
//! shap's `TreeExplainer` on scikit-learn forests: the cover of a node is its weighted training
//! sample count, each tree's leaf values count 1/T, inputs are float32 compared as f64 with
//! `x <= threshold` going left, and the base value is the mean over trees of the cover-weighted
//! root value. The values of a row plus the base value sum to the forest's prediction.
//!
//! Two exact methods give the same values up to rounding:
//! - [`Method::Polynomial`] (the default): one bottom-up pass per tree with Gauss–Legendre
//!   quadrature of the Shapley weights, O(nodes · depth) per tree ([`linear`]);
//! - [`Method::Paths`]: Algorithm 2 as shap runs it. It keeps, for the path from the root, each
//!   distinct feature with the fraction of training rows that followed the path (`zero`),
//!   whether the explained row did (`one`), and the Shapley weights of every subset size.
//!   Extending the path and unwinding a feature are O(depth), so a tree costs
//!   O(leaves · depth²).
//!
//! [`ForestShap::interactions`] gives SHAP interaction values ([`interactions`]).

use std::borrow::Cow;

use quakelens_models::forest::{Forest, Tree};
use rayon::prelude::*;

mod interactions;
pub mod linear;

use interactions::Condition;
use linear::{Quadrature, Scratch};

/// Which exact algorithm computes the values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    #[default]
    Polynomial,
    Paths,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TreeShapError {
    #[error("row {row} has {got} values; the forest takes {want} features")]
    Width { row: usize, got: usize, want: usize },
    #[error(
        "row {row}, feature {feature} ({name}) is not finite ({value}): TreeSHAP needs every input"
    )]
    NotFinite {
        row: usize,
        feature: usize,
        name: String,
        value: f32,
    },
    #[error("the forest has no trees")]
    Empty,
    #[error("tree {tree} node {node} has cover {cover}: covers must be positive")]
    Cover {
        tree: usize,
        node: usize,
        cover: f64,
    },
}

/// SHAP values for rows of one forest, borrowed (one batch) or owned (a long-lived worker, so
/// the validation and set-up run once, not per task).
pub struct ForestShap<'f> {
    forest: Cow<'f, Forest>,
    /// Σ over trees of the cover-weighted root value, / T.
    base: f64,
    /// The deepest tree's depth; sizes the path buffers.
    depth: usize,
    /// Per tree, Gauss–Legendre points for its longest path's distinct features.
    quadratures: Vec<Quadrature>,
}

/// One element of the path: a feature, the share of training rows that followed the path
/// through its splits (`zero`), whether the explained row did (`one`: 1 or 0), and the weight
/// of the subsets of that size.
#[derive(Clone, Copy, Debug, Default)]
struct PathElement {
    feature: i32,
    zero: f64,
    one: f64,
    weight: f64,
}

impl ForestShap<'static> {
    /// As [`ForestShap::new`], keeping the forest.
    pub fn owned(forest: Forest) -> Result<Self, TreeShapError> {
        Self::from_cow(Cow::Owned(forest))
    }
}

impl<'f> ForestShap<'f> {
    pub fn new(forest: &'f Forest) -> Result<Self, TreeShapError> {
        Self::from_cow(Cow::Borrowed(forest))
    }

    /// The forest explained.
    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    fn from_cow(forest: Cow<'f, Forest>) -> Result<Self, TreeShapError> {
        if forest.trees.is_empty() {
            return Err(TreeShapError::Empty);
        }
        for (t, tree) in forest.trees.iter().enumerate() {
            if let Some(node) =
                (0..tree.len()).find(|&n| tree.cover[n] <= 0.0 || tree.cover[n].is_nan())
            {
                return Err(TreeShapError::Cover {
                    tree: t,
                    node,
                    cover: tree.cover[node],
                });
            }
        }
        let scale = 1.0 / forest.trees.len() as f64;
        let base = forest.trees.iter().map(|t| expected_value(t) * scale).sum();
        let depth = forest.max_depth();
        let quadratures = forest
            .trees
            .iter()
            .map(|t| Quadrature::for_path_features(linear::path_features(t)))
            .collect();
        Ok(Self {
            forest,
            base,
            depth,
            quadratures,
        })
    }

    /// The value every explanation starts from: the forest's mean prediction over its training
    /// rows (shap's `expected_value`).
    pub fn base_value(&self) -> f64 {
        self.base
    }

    fn check(&self, row: usize, x: &[f32]) -> Result<(), TreeShapError> {
        let want = self.forest.n_features();
        if x.len() != want {
            return Err(TreeShapError::Width {
                row,
                got: x.len(),
                want,
            });
        }
        if let Some(f) = x.iter().position(|v| !v.is_finite()) {
            return Err(TreeShapError::NotFinite {
                row,
                feature: f,
                name: self.forest.spec.features[f].clone(),
                value: x[f],
            });
        }
        Ok(())
    }

    /// Checks every row of a row-major matrix; returns the row width.
    fn check_rows(&self, x: &[f32]) -> Result<usize, TreeShapError> {
        let width = self.forest.n_features().max(1);
        if !x.len().is_multiple_of(width) {
            return Err(TreeShapError::Width {
                row: x.len() / width,
                got: x.len() % width,
                want: width,
            });
        }
        for (r, row) in x.chunks(width).enumerate() {
            self.check(r, row)?;
        }
        Ok(width)
    }

    /// SHAP values of one row: one per feature.
    pub fn explain_row(&self, x: &[f32]) -> Result<Vec<f64>, TreeShapError> {
        self.explain_row_with(x, Method::default())
    }

    /// As [`ForestShap::explain_row`], with the algorithm chosen.
    pub fn explain_row_with(&self, x: &[f32], method: Method) -> Result<Vec<f64>, TreeShapError> {
        self.check(0, x)?;
        let mut phi = vec![0.0; x.len()];
        let scale = 1.0 / self.forest.trees.len() as f64;
        match method {
            Method::Polynomial => {
                let k = self
                    .quadratures
                    .iter()
                    .map(|q| q.nodes.len())
                    .max()
                    .unwrap_or(1);
                let mut scratch = Scratch::new(x.len(), self.depth, k);
                for (tree, q) in self.forest.trees.iter().zip(&self.quadratures) {
                    linear::tree_shap(tree, x, scale, q, &mut scratch, &mut phi);
                }
            }
            Method::Paths => {
                let mut paths = vec![PathElement::default(); path_capacity(self.depth)];
                for tree in &self.forest.trees {
                    Walk {
                        tree,
                        x,
                        scale,
                        condition: None,
                        phi: &mut phi,
                    }
                    .run(&mut paths);
                }
            }
        }
        Ok(phi)
    }

    /// SHAP values of a row-major matrix (`n_features` per row), rows in parallel; one `Vec`
    /// per row. Every row is checked first, so an error names the row.
    pub fn explain(&self, x: &[f32]) -> Result<Vec<Vec<f64>>, TreeShapError> {
        self.explain_with(x, Method::default())
    }

    /// As [`ForestShap::explain`], with the algorithm chosen.
    pub fn explain_with(&self, x: &[f32], method: Method) -> Result<Vec<Vec<f64>>, TreeShapError> {
        let width = self.check_rows(x)?;
        Ok(x.par_chunks(width)
            .map(|row| {
                self.explain_row_with(row, method)
                    .expect("row checked above")
            })
            .collect())
    }
}

/// Cover-weighted mean of the leaf values (equals the root's value for trees grown by
/// scikit-learn or quakelens, computed anyway so imported trees need not agree).
fn expected_value(tree: &Tree) -> f64 {
    let mut sum = 0.0;
    for n in 0..tree.len() {
        if tree.is_leaf(n) {
            sum += tree.value[n] * tree.cover[n];
        }
    }
    sum / tree.cover[0]
}

/// Room for every level's copy of the path: the level at path depth d starts d + 1 after its
/// parent and holds d + 1 elements; a tree of depth D reaches path depth D.
fn path_capacity(depth: usize) -> usize {
    (depth + 2) * (depth + 3) / 2 + depth + 2
}

/// Algorithm 2 over one tree, adding each feature's share of every leaf to `phi`. With a
/// `condition` (interaction values), that feature never enters the path: its splits scale the
/// leaves below by `weight` instead (the row's branch only, or both by cover).
struct Walk<'a> {
    tree: &'a Tree,
    x: &'a [f32],
    scale: f64,
    condition: Option<Condition>,
    phi: &'a mut [f64],
}

impl Walk<'_> {
    /// Walks the whole tree.
    fn run(mut self, paths: &mut [PathElement]) {
        self.recurse(paths, 0, 0, 1.0, 1.0, -1, 0, 1.0);
    }

    /// Visits `node`, reached by a split on `feature` with fractions `zero`/`one`. The parent's
    /// path is `paths[parent..parent + len]`; this level's copy, extended by that split, goes
    /// right after it, so every level keeps its own path in one buffer.
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
        if self.condition.map(Condition::feature) != Some(feature) {
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
            Some(Condition::Present(f)) if f == split => (weight, 0.0),
            Some(Condition::Absent(f)) if f == split => (weight * hot_share, weight * cold_share),
            _ => (weight, weight),
        };
        let (mut in_zero, mut in_one) = (1.0, 1.0);
        // A feature split on before: undo its element and redo it with this split folded in.
        if let Some(k) = path[..len].iter().position(|e| e.feature == split) {
            in_zero = path[k].zero;
            in_one = path[k].one;
            unwind(path, last, k);
            len -= 1;
        }
        let children = [
            (hot, hot_share * in_zero, in_one, hot_weight),
            (cold, cold_share * in_zero, 0.0, cold_weight),
        ];
        for (child, zero, one, weight) in children {
            self.recurse(paths, start, len, zero, one, split, child, weight);
        }
    }
}

/// Adds an element for a split on `feature` to a path of `depth` elements (`path` has room for
/// one more) and updates the subset weights.
fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i32) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d1 = (depth + 1) as f64;
    for i in (0..depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / d1;
        path[i].weight = zero * path[i].weight * (depth - i) as f64 / d1;
    }
}

/// Removes element `at` from a path of `depth + 1` elements, undoing its effect on the weights.
fn unwind(path: &mut [PathElement], depth: usize, at: usize) {
    let (one, zero) = (path[at].one, path[at].zero);
    let d1 = (depth + 1) as f64;
    let mut next = path[depth].weight;
    for i in (0..depth).rev() {
        if one != 0.0 {
            let t = path[i].weight;
            path[i].weight = next * d1 / ((i + 1) as f64 * one);
            next = t - path[i].weight * zero * (depth - i) as f64 / d1;
        } else {
            path[i].weight = path[i].weight * d1 / (zero * (depth - i) as f64);
        }
    }
    for i in at..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// The total weight the path would have with element `at` removed (without removing it).
fn unwound_sum(path: &[PathElement], depth: usize, at: usize) -> f64 {
    let (one, zero) = (path[at].one, path[at].zero);
    let mut total = 0.0;
    if one != 0.0 {
        let mut next = path[depth].weight;
        for i in (0..depth).rev() {
            let t = next / ((i + 1) as f64 * one);
            total += t;
            next = path[i].weight - t * zero * (depth - i) as f64;
        }
    } else {
        for i in (0..depth).rev() {
            total += path[i].weight / (zero * (depth - i) as f64);
        }
    }
    total * (depth + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use quakelens_models::forest::{ForestSpec, LEAF};

    /// A small deterministic generator (no dependency needed for test data).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A random tree over `m` features, `depth` levels, features repeating along paths (so
    /// unwinding is exercised), children's covers summing to the parent's.
    fn random_tree(rng: &mut Lcg, m: usize, depth: usize) -> Tree {
        let mut t = Tree::default();
        fn grow(t: &mut Tree, rng: &mut Lcg, m: usize, depth: usize, cover: f64) -> usize {
            let n = t.left.len();
            t.left.push(LEAF);
            t.right.push(LEAF);
            t.feature.push(-1);
            t.threshold.push(0.0);
            t.value.push(0.0);
            t.cover.push(cover);
            if depth == 0 || rng.next() < 0.15 {
                t.value[n] = rng.next() * 10.0 - 5.0;
                return n;
            }
            let share = 0.1 + 0.8 * rng.next();
            let f = (rng.next() * m as f64) as usize % m;
            t.feature[n] = f as i32;
            t.threshold[n] = rng.next() * 2.0 - 1.0;
            let l = grow(t, rng, m, depth - 1, cover * share);
            let r = grow(t, rng, m, depth - 1, cover * (1.0 - share));
            t.left[n] = l as i32;
            t.right[n] = r as i32;
            t.value[n] = (t.value[l] * t.cover[l] + t.value[r] * t.cover[r]) / cover;
            n
        }
        grow(&mut t, rng, m, depth, 100.0);
        t
    }

    fn forest(trees: Vec<Tree>, m: usize) -> Forest {
        Forest {
            spec: ForestSpec {
                features: (0..m).map(|i| format!("f{i}")).collect(),
                target: "y".into(),
                origin: "test".into(),
                feature_set: None,
                fill: None,
            },
            trees,
            hash: None,
        }
    }

    /// E[f(x) | x_S] as path-dependent TreeSHAP defines it: splits on features in S follow x,
    /// the others average both children by cover.
    fn conditional(t: &Tree, x: &[f32], s: u32, n: usize) -> f64 {
        if t.is_leaf(n) {
            return t.value[n];
        }
        let (l, r) = (t.left[n] as usize, t.right[n] as usize);
        let f = t.feature[n] as usize;
        if s & (1 << f) != 0 {
            let next = if x[f] as f64 <= t.threshold[n] { l } else { r };
            conditional(t, x, s, next)
        } else {
            (conditional(t, x, s, l) * t.cover[l] + conditional(t, x, s, r) * t.cover[r])
                / t.cover[n]
        }
    }

    /// The forest's value for coalition `s` (a bit per feature).
    fn coalition_value(f: &Forest, x: &[f32], s: u32) -> f64 {
        f.trees.iter().map(|t| conditional(t, x, s, 0)).sum::<f64>() / f.trees.len() as f64
    }

    fn factorial(k: usize) -> f64 {
        (1..=k).map(|i| i as f64).product()
    }

    /// Shapley values by enumerating every coalition.
    fn brute_force(f: &Forest, x: &[f32]) -> Vec<f64> {
        let m = f.n_features();
        let v = |s: u32| coalition_value(f, x, s);
        (0..m)
            .map(|i| {
                (0..1u32 << m)
                    .filter(|s| s & (1 << i) == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        factorial(k) * factorial(m - k - 1) / factorial(m) * (v(s | 1 << i) - v(s))
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn equals_brute_force_shapley_values_with_repeated_features() {
        let mut rng = Lcg(42);
        let m = 5;
        let trees: Vec<Tree> = (0..6).map(|_| random_tree(&mut rng, m, 7)).collect();
        let f = forest(trees, m);
        let shap = ForestShap::new(&f).unwrap();
        for _ in 0..20 {
            let x: Vec<f32> = (0..m).map(|_| (rng.next() * 2.4 - 1.2) as f32).collect();
            let want = brute_force(&f, &x);
            for method in [Method::Polynomial, Method::Paths] {
                let got = shap.explain_row_with(&x, method).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-10, "{method:?}: {got:?} vs {want:?}");
                }
            }
            let got = shap.explain_row(&x).unwrap();
            let total: f64 = got.iter().sum::<f64>() + shap.base_value();
            assert!((total - f.predict_row(&x)).abs() < 1e-10);
        }
        assert!((shap.base_value() - brute_force_base(&f)).abs() < 1e-12);
    }

    /// Shapley interaction values by enumerating every coalition: for i ≠ j the weighted sum of
    /// v(S ∪ {i, j}) − v(S ∪ {i}) − v(S ∪ {j}) + v(S) over S without i and j, with weight
    /// |S|! (M − |S| − 2)! / (2 (M − 1)!); the diagonal is what is left of φ_i.
    fn brute_force_interactions(f: &Forest, x: &[f32]) -> Vec<f64> {
        let m = f.n_features();
        let v = |s: u32| coalition_value(f, x, s);
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for j in (0..m).filter(|&j| j != i) {
                let pair = (1u32 << i) | (1 << j);
                out[i * m + j] = (0..1u32 << m)
                    .filter(|s| s & pair == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        let w = factorial(k) * factorial(m - k - 2) / (2.0 * factorial(m - 1));
                        w * (v(s | pair) - v(s | 1 << i) - v(s | 1 << j) + v(s))
                    })
                    .sum();
            }
        }
        let phi = brute_force(f, x);
        for i in 0..m {
            let rest: f64 = (0..m).filter(|&j| j != i).map(|j| out[i * m + j]).sum();
            out[i * m + i] = phi[i] - rest;
        }
        out
    }

    #[test]
    fn interactions_equal_brute_force_and_add_up() {
        let mut rng = Lcg(7);
        let m = 5;
        let trees: Vec<Tree> = (0..5).map(|_| random_tree(&mut rng, m, 6)).collect();
        let f = forest(trees, m);
        let shap = ForestShap::new(&f).unwrap();
        let rows: Vec<f32> = (0..12 * m)
            .map(|_| (rng.next() * 2.4 - 1.2) as f32)
            .collect();
        let all = shap.interactions(&rows).unwrap();
        for (x, got) in rows.chunks(m).zip(&all) {
            let want = brute_force_interactions(&f, x);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-10, "{got:?} vs {want:?}");
            }
            assert_eq!(got, &shap.interactions_row(x).unwrap());
            for i in 0..m {
                for j in 0..m {
                    assert!((got[i * m + j] - got[j * m + i]).abs() < 1e-10, "symmetric");
                }
            }
            let phi = shap.explain_row(x).unwrap();
            for (i, p) in phi.iter().enumerate() {
                let row: f64 = got[i * m..(i + 1) * m].iter().sum();
                assert!((row - p).abs() < 1e-10, "row {i} sums to phi");
            }
            let total: f64 = got.iter().sum::<f64>() + shap.base_value();
            assert!((total - f.predict_row(x)).abs() < 1e-10);
        }
        let err = shap.interactions(&[0.0; 7]).unwrap_err();
        assert!(matches!(err, TreeShapError::Width { .. }), "{err}");
    }

    fn brute_force_base(f: &Forest) -> f64 {
        f.trees
            .iter()
            .map(|t| conditional(t, &[0.0; 5], 0, 0))
            .sum::<f64>()
            / f.trees.len() as f64
    }

    #[test]
    fn bad_rows_and_forests_are_clear_errors() {
        let mut rng = Lcg(1);
        let f = forest(vec![random_tree(&mut rng, 3, 3)], 3);
        let shap = ForestShap::new(&f).unwrap();
        let err = shap
            .explain(&[0.0, 1.0, 2.0, 0.5, f32::NAN, 1.0])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 1, feature 1 (f1) is not finite (NaN): TreeSHAP needs every input"
        );
        assert!(matches!(
            shap.explain(&[0.0; 4]),
            Err(TreeShapError::Width { .. })
        ));
        assert_eq!(
            ForestShap::new(&forest(vec![], 3)).err(),
            Some(TreeShapError::Empty)
        );
        let mut bad = random_tree(&mut rng, 3, 2);
        bad.cover[0] = 0.0;
        assert!(matches!(
            ForestShap::new(&forest(vec![bad], 3)),
            Err(TreeShapError::Cover {
                tree: 0,
                node: 0,
                ..
            })
        ));
    }
}
