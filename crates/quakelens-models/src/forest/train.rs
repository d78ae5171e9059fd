//! CART regression trees grown into a bootstrap forest, with scikit-learn's defaults and split
//! rules: MSE criterion, thresholds halfway between neighbouring distinct f32 values, bootstrap
//! counts as sample weights, unlimited depth, `min_samples_leaf` counting distinct rows.
//!
//! Why it is fast: every feature's rows are sorted once per forest; each tree keeps, per feature,
//! its rows in sorted order and partitions those lists stably at every split, so a node's split
//! search is a linear scan instead of a sort (scikit-learn sorts at every node).

use rayon::prelude::*;

use quakelens_synth::Rng;

use super::tree::{Tree, LEAF};

/// Values closer than this are treated as equal when looking for split points (scikit-learn's
/// `FEATURE_THRESHOLD`).
const FEATURE_THRESHOLD: f64 = 1e-7;

/// How the forest grows. Defaults equal `sklearn.ensemble.RandomForestRegressor()`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForestParams {
    pub n_trees: usize,
    /// `None`: grow until leaves are pure or too small.
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    /// Features tried per split; `None` = all (scikit-learn's regressor default, 1.0).
    pub max_features: Option<usize>,
    pub bootstrap: bool,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_trees: 100,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: None,
            bootstrap: true,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("no training rows")]
    Empty,
    #[error("training matrix has {values} values, not {rows} rows × {features} features")]
    Shape {
        values: usize,
        rows: usize,
        features: usize,
    },
    #[error(
        "row {row}, feature {feature}: {value} is not a finite number (drop or impute it first)"
    )]
    NotFinite {
        row: usize,
        feature: usize,
        value: f32,
    },
    #[error("row {row}: target {value} is not a finite number")]
    TargetNotFinite { row: usize, value: f64 },
    #[error("{0}")]
    Params(String),
}

/// Training rows, feature-major: `columns[f][row]`.
pub struct Columns {
    columns: Vec<Vec<f32>>,
    rows: usize,
}

impl Columns {
    /// From a row-major matrix `x[row * n_features + f]`, refusing NaN and infinities.
    pub fn from_rows(x: &[f32], n_features: usize) -> Result<Self, TrainError> {
        let rows = x.len().checked_div(n_features).unwrap_or(0);
        if n_features == 0 || rows * n_features != x.len() {
            return Err(TrainError::Shape {
                values: x.len(),
                rows,
                features: n_features,
            });
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::NotFinite {
                row: i / n_features,
                feature: i % n_features,
                value: x[i],
            });
        }
        let columns = (0..n_features)
            .map(|f| (0..rows).map(|r| x[r * n_features + f]).collect())
            .collect();
        Ok(Self { columns, rows })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn features(&self) -> usize {
        self.columns.len()
    }
}

/// Grows `params.n_trees` trees in parallel (rayon). Deterministic for a given seed, whatever
/// the thread count.
pub fn train_forest(
    x: &Columns,
    y: &[f64],
    params: &ForestParams,
    on_tree: impl Fn() + Sync,
) -> Result<Vec<Tree>, TrainError> {
    if x.rows == 0 {
        return Err(TrainError::Empty);
    }
    if y.len() != x.rows {
        return Err(TrainError::Shape {
            values: y.len(),
            rows: x.rows,
            features: 1,
        });
    }
    if let Some(row) = y.iter().position(|v| !v.is_finite()) {
        return Err(TrainError::TargetNotFinite { row, value: y[row] });
    }
    if params.n_trees == 0 || params.min_samples_leaf == 0 || params.min_samples_split < 2 {
        return Err(TrainError::Params(format!(
            "need n_trees ≥ 1, min_samples_leaf ≥ 1, min_samples_split ≥ 2 (got {params:?})"
        )));
    }
    // Rows of each feature in ascending value order (ties by row), shared by all trees.
    let sorted: Vec<Vec<u32>> = x
        .columns
        .par_iter()
        .map(|col| {
            let mut order: Vec<u32> = (0..x.rows as u32).collect();
            order.sort_by(|&a, &b| col[a as usize].total_cmp(&col[b as usize]));
            order
        })
        .collect();
    let trees = (0..params.n_trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = Rng::new(params.seed ^ (t as u64).wrapping_mul(0xA24B_AED4_963E_E407));
            let weights = sample_weights(x.rows, params.bootstrap, &mut rng);
            let tree = TreeBuilder::new(x, y, &sorted, weights, params, rng).build();
            on_tree();
            tree
        })
        .collect();
    Ok(trees)
}

/// Bootstrap counts (draws with replacement), or all ones.
fn sample_weights(rows: usize, bootstrap: bool, rng: &mut Rng) -> Vec<f64> {
    if !bootstrap {
        return vec![1.0; rows];
    }
    let mut w = vec![0.0; rows];
    for _ in 0..rows {
        w[(rng.next_u64() % rows as u64) as usize] += 1.0;
    }
    w
}

struct Split {
    feature: usize,
    /// Rows at positions `..=pos` of the node's sorted range go left.
    pos: usize,
    threshold: f64,
    proxy: f64,
}

struct Pending {
    start: usize,
    end: usize,
    depth: usize,
    /// Parent node and whether this is its left child.
    parent: Option<(usize, bool)>,
}

struct TreeBuilder<'a> {
    x: &'a Columns,
    y: &'a [f64],
    w: Vec<f64>,
    /// Per feature: the tree's rows (weight > 0) in ascending value order, partitioned so every
    /// node owns the same `start..end` range in all of them.
    order: Vec<Vec<u32>>,
    goes_left: Vec<bool>,
    scratch: Vec<u32>,
    candidates: Vec<usize>,
    params: &'a ForestParams,
    rng: Rng,
    tree: Tree,
}

impl<'a> TreeBuilder<'a> {
    fn new(
        x: &'a Columns,
        y: &'a [f64],
        sorted: &[Vec<u32>],
        w: Vec<f64>,
        params: &'a ForestParams,
        rng: Rng,
    ) -> Self {
        let order: Vec<Vec<u32>> = sorted
            .iter()
            .map(|o| o.iter().copied().filter(|&r| w[r as usize] > 0.0).collect())
            .collect();
        Self {
            x,
            y,
            goes_left: vec![false; w.len()],
            w,
            scratch: Vec::with_capacity(order[0].len()),
            order,
            candidates: (0..x.features()).collect(),
            params,
            rng,
            tree: Tree::default(),
        }
    }

    fn build(mut self) -> Tree {
        let mut stack = vec![Pending {
            start: 0,
            end: self.order[0].len(),
            depth: 0,
            parent: None,
        }];
        while let Some(p) = stack.pop() {
            let node = self.tree.len();
            if let Some((parent, is_left)) = p.parent {
                if is_left {
                    self.tree.left[parent] = node as i32;
                } else {
                    self.tree.right[parent] = node as i32;
                }
            }
            let (weight, sum, sum_sq) = self.node_sums(p.start, p.end);
            let mean = sum / weight;
            let impurity = sum_sq / weight - mean * mean;
            self.tree.left.push(LEAF);
            self.tree.right.push(LEAF);
            self.tree.feature.push(LEAF);
            self.tree.threshold.push(f64::NAN);
            self.tree.value.push(mean);
            self.tree.cover.push(weight);

            let rows = p.end - p.start;
            let params = self.params;
            let leaf = rows < params.min_samples_split
                || rows < 2 * params.min_samples_leaf
                || params.max_depth.is_some_and(|d| p.depth >= d)
                || impurity <= f64::EPSILON;
            let split = if leaf {
                None
            } else {
                self.best_split(p.start, p.end, weight, sum)
            };
            let Some(split) = split else {
                self.tree.threshold[node] = -2.0;
                continue;
            };
            self.tree.feature[node] = split.feature as i32;
            self.tree.threshold[node] = split.threshold;
            let mid = p.start + split.pos + 1;
            self.partition(split.feature, p.start, mid, p.end);
            // Right pushed first so the left subtree is numbered first (pre-order, as sklearn).
            for (start, end, is_left) in [(mid, p.end, false), (p.start, mid, true)] {
                stack.push(Pending {
                    start,
                    end,
                    depth: p.depth + 1,
                    parent: Some((node, is_left)),
                });
            }
        }
        self.tree
    }

    fn node_sums(&self, start: usize, end: usize) -> (f64, f64, f64) {
        let (mut w, mut s, mut q) = (0.0, 0.0, 0.0);
        for &r in &self.order[0][start..end] {
            let (wi, yi) = (self.w[r as usize], self.y[r as usize]);
            w += wi;
            s += wi * yi;
            q += wi * yi * yi;
        }
        (w, s, q)
    }

    /// The split maximising `S_l²/W_l + S_r²/W_r` (equivalent to the largest MSE decrease).
    fn best_split(&mut self, start: usize, end: usize, weight: f64, sum: f64) -> Option<Split> {
        let n_features = self.x.features();
        let tried = self
            .params
            .max_features
            .unwrap_or(n_features)
            .clamp(1, n_features);
        if tried < n_features {
            // Partial Fisher–Yates: the first `tried` candidates are a uniform sample.
            for i in 0..tried {
                let j = i + (self.rng.next_u64() % (n_features - i) as u64) as usize;
                self.candidates.swap(i, j);
            }
        }
        let min_leaf = self.params.min_samples_leaf;
        let rows = end - start;
        let mut best: Option<Split> = None;
        for &f in &self.candidates[..tried] {
            let col = &self.x.columns[f];
            let ids = &self.order[f][start..end];
            let first = col[ids[0] as usize] as f64;
            let last = col[ids[rows - 1] as usize] as f64;
            if last <= first + FEATURE_THRESHOLD {
                continue;
            }
            let (mut wl, mut sl) = (0.0, 0.0);
            for pos in 0..rows - 1 {
                let r = ids[pos] as usize;
                wl += self.w[r];
                sl += self.w[r] * self.y[r];
                let here = col[r] as f64;
                let next = col[ids[pos + 1] as usize] as f64;
                if next <= here + FEATURE_THRESHOLD {
                    continue;
                }
                let left_rows = pos + 1;
                if left_rows < min_leaf || rows - left_rows < min_leaf {
                    continue;
                }
                let (wr, sr) = (weight - wl, sum - sl);
                let proxy = sl * sl / wl + sr * sr / wr;
                if best.as_ref().is_none_or(|b| proxy > b.proxy) {
                    let mut threshold = here / 2.0 + next / 2.0;
                    if threshold == next || !threshold.is_finite() {
                        threshold = here;
                    }
                    best = Some(Split {
                        feature: f,
                        pos,
                        threshold,
                        proxy,
                    });
                }
            }
        }
        best
    }

    /// Stable-partitions every feature's `start..end` so the rows going left come first.
    fn partition(&mut self, feature: usize, start: usize, mid: usize, end: usize) {
        for &r in &self.order[feature][start..end] {
            self.goes_left[r as usize] = false;
        }
        for &r in &self.order[feature][start..mid] {
            self.goes_left[r as usize] = true;
        }
        for f in 0..self.order.len() {
            if f == feature {
                continue;
            }
            let ids = &mut self.order[f][start..end];
            self.scratch.clear();
            let mut k = 0;
            for i in 0..ids.len() {
                let r = ids[i];
                if self.goes_left[r as usize] {
                    ids[k] = r;
                    k += 1;
                } else {
                    self.scratch.push(r);
                }
            }
            ids[k..].copy_from_slice(&self.scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(rows: &[[f32; 2]]) -> Columns {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Columns::from_rows(&flat, 2).unwrap()
    }

    #[test]
    fn single_tree_without_bootstrap_fits_a_step_exactly() {
        let x = columns(&[[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]);
        let y = [1.0, 1.0, 3.0, 3.0];
        let params = ForestParams {
            n_trees: 1,
            bootstrap: false,
            ..ForestParams::default()
        };
        let trees = train_forest(&x, &y, &params, || {}).unwrap();
        let t = &trees[0];
        assert_eq!(t.len(), 3);
        assert_eq!(t.feature[0], 0);
        assert_eq!(t.threshold[0], 1.5);
        assert_eq!((t.value[0], t.cover[0]), (2.0, 4.0));
        assert_eq!(t.predict(&[1.5, 0.0]), 1.0);
        assert_eq!(t.predict(&[1.6, 0.0]), 3.0);
        t.validate(2).unwrap();
    }

    #[test]
    fn bootstrap_covers_sum_to_row_count_and_children_partition_parents() {
        let rows: Vec<[f32; 2]> = (0..200)
            .map(|i| [(i as f32 * 0.37).sin(), (i % 7) as f32])
            .collect();
        let y: Vec<f64> = rows
            .iter()
            .map(|r| r[0] as f64 * 3.0 + r[1] as f64)
            .collect();
        let x = columns(&rows);
        let trees = train_forest(
            &x,
            &y,
            &ForestParams {
                n_trees: 4,
                ..Default::default()
            },
            || {},
        )
        .unwrap();
        for t in &trees {
            t.validate(2).unwrap();
            assert_eq!(t.cover[0], 200.0);
            for n in 0..t.len() {
                if !t.is_leaf(n) {
                    let (l, r) = (t.left[n] as usize, t.right[n] as usize);
                    assert_eq!(t.cover[l] + t.cover[r], t.cover[n]);
                    let mean = (t.value[l] * t.cover[l] + t.value[r] * t.cover[r]) / t.cover[n];
                    assert!((mean - t.value[n]).abs() < 1e-9);
                }
            }
        }
        // Unlimited depth and pure leaves: each tree reproduces its in-bag rows exactly.
        let again = train_forest(
            &x,
            &y,
            &ForestParams {
                n_trees: 4,
                ..Default::default()
            },
            || {},
        )
        .unwrap();
        assert_eq!(trees, again, "same seed, same forest");
    }

    #[test]
    fn bad_input_is_refused_with_its_position() {
        assert!(matches!(
            Columns::from_rows(&[1.0, 2.0, 3.0, f32::NAN], 2),
            Err(TrainError::NotFinite {
                row: 1,
                feature: 1,
                ..
            })
        ));
        assert!(matches!(
            Columns::from_rows(&[1.0, 2.0, 3.0], 2),
            Err(TrainError::Shape { .. })
        ));
        let x = columns(&[[0.0, 1.0]]);
        assert!(matches!(
            train_forest(&x, &[f64::INFINITY], &ForestParams::default(), || {}),
            Err(TrainError::TargetNotFinite { row: 0, .. })
        ));
    }
}
