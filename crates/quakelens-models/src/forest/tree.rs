//! One regression tree as flat node arrays (the layout scikit-learn's `tree_` uses, so imports
//! are a copy and TreeSHAP can walk covers directly).

/// `left[n] == LEAF` marks a leaf.
pub const LEAF: i32 = -1;

/// Node `n` splits on `feature[n]`: rows with `x[feature] <= threshold` (compared as f32 input
/// widened to f64, like scikit-learn) go to `left[n]`, the others to `right[n]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub left: Vec<i32>,
    pub right: Vec<i32>,
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    /// Mean target of the training rows reaching the node (weighted by bootstrap counts).
    pub value: Vec<f64>,
    /// Weighted number of training rows reaching the node (TreeSHAP's "cover").
    pub cover: Vec<f64>,
}

impl Tree {
    pub fn len(&self) -> usize {
        self.left.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    pub fn is_leaf(&self, node: usize) -> bool {
        self.left[node] == LEAF
    }

    /// Index of the leaf that `x` reaches.
    pub fn leaf_of(&self, x: &[f32]) -> usize {
        let mut n = 0usize;
        while self.left[n] != LEAF {
            let v = x[self.feature[n] as usize] as f64;
            n = if v <= self.threshold[n] {
                self.left[n] as usize
            } else {
                self.right[n] as usize
            };
        }
        n
    }

    pub fn predict(&self, x: &[f32]) -> f64 {
        self.value[self.leaf_of(x)]
    }

    /// Longest root-to-leaf path (edges).
    pub fn depth(&self) -> usize {
        let mut best = 0;
        let mut stack = vec![(0usize, 0usize)];
        while let Some((n, d)) = stack.pop() {
            if self.is_leaf(n) {
                best = best.max(d);
            } else {
                stack.push((self.left[n] as usize, d + 1));
                stack.push((self.right[n] as usize, d + 1));
            }
        }
        best
    }

    /// Structural checks for trees read from files: children in range and after their parent
    /// (so walks terminate), features below `n_features`, finite values and covers.
    pub fn validate(&self, n_features: usize) -> Result<(), String> {
        let n = self.len();
        if n == 0 {
            return Err("tree has no nodes".into());
        }
        for (name, len) in [
            ("right", self.right.len()),
            ("feature", self.feature.len()),
            ("threshold", self.threshold.len()),
            ("value", self.value.len()),
            ("cover", self.cover.len()),
        ] {
            if len != n {
                return Err(format!("{name} has {len} entries, left has {n}"));
            }
        }
        for i in 0..n {
            if !self.value[i].is_finite() || self.cover[i].is_nan() || self.cover[i] <= 0.0 {
                return Err(format!(
                    "node {i}: value {} / cover {} must be finite and cover > 0",
                    self.value[i], self.cover[i]
                ));
            }
            if self.left[i] == LEAF {
                continue;
            }
            let (l, r) = (self.left[i], self.right[i]);
            if l <= i as i32 || r <= i as i32 || l as usize >= n || r as usize >= n {
                return Err(format!("node {i}: children {l}/{r} out of order or range"));
            }
            let f = self.feature[i];
            if f < 0 || f as usize >= n_features {
                return Err(format!(
                    "node {i}: feature {f} outside the {n_features} inputs"
                ));
            }
            if self.threshold[i].is_nan() {
                return Err(format!("node {i}: NaN threshold"));
            }
        }
        Ok(())
    }
}
