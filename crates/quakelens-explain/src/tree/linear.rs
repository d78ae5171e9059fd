//! TreeSHAP in O(nodes · depth) per tree and row, exact up to rounding (the idea of Linear
//! TreeSHAP, Yu et al. 2022, here with Gauss–Legendre quadrature).
//!
//! For one leaf, path-dependent TreeSHAP is a product game over the distinct features on its
//! path: feature j contributes the factor `f_j(t) = z_j + (o_j − z_j)·t` (z: share of training
//! rows following the path through j's splits, o: 1 if the row does, else 0). The Shapley
//! weights are Beta integrals, so feature i gets
//! `value · (o_i − z_i) · ∫₀¹ Π_j f_j(t) / f_i(t) dt`.
//! The integrand is a polynomial of degree < depth, so K ≥ depth/2 + 1 Gauss–Legendre nodes
//! integrate it exactly. Sums over leaves commute with the quadrature: one bottom-up pass keeps,
//! per node, the K values of Σ_leaves value·Π f_j, and each split adds its feature's share at
//! once. A feature split again deeper changes its factor; the deeper split adds its term with
//! the merged factor and takes back the shallower one's, so every leaf ends with its final
//! factor.

use quakelens_models::forest::Tree;

/// Gauss–Legendre nodes and weights on [0, 1].
#[derive(Clone, Debug)]
pub struct Quadrature {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
    /// 1 − t and w / (1 − t) per node, precomputed for the divisions they save.
    one_minus: Vec<f64>,
    weights_over_one_minus: Vec<f64>,
}

impl Quadrature {
    /// `k` points: exact for polynomials of degree ≤ 2k − 1.
    pub fn new(k: usize) -> Self {
        let k = k.max(1);
        let mut nodes = vec![0.0; k];
        let mut weights = vec![0.0; k];
        for i in 0..k.div_ceil(2) {
            // Newton's method on the Legendre polynomial P_k from the usual first guess.
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (k as f64 + 0.5)).cos();
            let mut dp = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for n in 2..=k {
                    let p2 = ((2 * n - 1) as f64 * x * p1 - (n - 1) as f64 * p0) / n as f64;
                    p0 = p1;
                    p1 = p2;
                }
                dp = if k == 1 {
                    1.0
                } else {
                    k as f64 * (x * p1 - p0) / (x * x - 1.0)
                };
                let dx = p1 / dp;
                x -= dx;
                if dx.abs() < 1e-16 {
                    break;
                }
            }
            let w = 2.0 / ((1.0 - x * x) * dp * dp);
            // From [-1, 1] to [0, 1].
            nodes[i] = (1.0 - x) / 2.0;
            nodes[k - 1 - i] = (1.0 + x) / 2.0;
            weights[i] = w / 2.0;
            weights[k - 1 - i] = w / 2.0;
        }
        Self {
            one_minus: nodes.iter().map(|t| 1.0 - t).collect(),
            weights_over_one_minus: nodes
                .iter()
                .zip(&weights)
                .map(|(t, w)| w / (1.0 - t))
                .collect(),
            nodes,
            weights,
        }
    }

    /// Enough points for paths of up to `features` distinct features: the integrand then has
    /// degree < `features`, and ⌈features/2⌉ points integrate degree 2·⌈features/2⌉ − 1 exactly.
    pub fn for_path_features(features: usize) -> Self {
        Self::new(features.div_ceil(2))
    }
}

/// The most distinct features on any root-to-leaf path of `tree` (what its quadrature needs).
pub fn path_features(tree: &Tree) -> usize {
    fn walk(tree: &Tree, node: usize, seen: &mut Vec<u32>, distinct: usize) -> usize {
        if tree.is_leaf(node) {
            return distinct;
        }
        let f = tree.feature[node] as usize;
        if seen.len() <= f {
            seen.resize(f + 1, 0);
        }
        let distinct = distinct + usize::from(seen[f] == 0);
        seen[f] += 1;
        let deepest = walk(tree, tree.left[node] as usize, seen, distinct).max(walk(
            tree,
            tree.right[node] as usize,
            seen,
            distinct,
        ));
        seen[f] -= 1;
        deepest
    }
    walk(tree, 0, &mut Vec::new(), 0)
}

/// Per-row scratch: the merged factor of every feature on the current path, and per level the
/// K values of the path product and of the subtree's summary.
pub struct Scratch {
    k: usize,
    zero: Vec<f64>,
    one: Vec<f64>,
    on_path: Vec<bool>,
    product: Vec<f64>,
    summary: Vec<f64>,
}

impl Scratch {
    /// Room for trees up to `depth` deep and quadratures of up to `k` points.
    pub fn new(n_features: usize, depth: usize, k: usize) -> Self {
        Self {
            k,
            zero: vec![1.0; n_features],
            one: vec![1.0; n_features],
            on_path: vec![false; n_features],
            product: vec![0.0; (depth + 2) * k],
            summary: vec![0.0; (depth + 2) * k],
        }
    }
}

/// Adds `tree`'s SHAP values for `x` (leaf values × `scale`) to `phi`.
pub fn tree_shap(
    tree: &Tree,
    x: &[f32],
    scale: f64,
    q: &Quadrature,
    s: &mut Scratch,
    phi: &mut [f64],
) {
    let k = q.nodes.len();
    debug_assert!(
        s.product.len() >= k,
        "scratch sized for fewer quadrature points"
    );
    s.k = k;
    s.product[..k].fill(1.0);
    let mut visit = Visit {
        tree,
        x,
        scale,
        q,
        phi,
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `node_avx2` is compiled for (checked just above).
        unsafe { visit.node_avx2(s, 0, 0) };
        return;
    }
    visit.node(s, 0, 0);
}

struct Visit<'a> {
    tree: &'a Tree,
    x: &'a [f32],
    scale: f64,
    q: &'a Quadrature,
    phi: &'a mut [f64],
}

impl Visit<'_> {
    fn node(&mut self, s: &mut Scratch, node: usize, level: usize) {
        self.step(s, node, level, Self::node);
    }

    /// The same pass compiled for AVX2 + FMA: the per-node loops over quadrature points are
    /// where the time goes, and they vectorise four doubles wide.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn node_avx2(&mut self, s: &mut Scratch, node: usize, level: usize) {
        // SAFETY: only reached through `tree_shap`'s feature check.
        self.step(s, node, level, |v, s, n, l| unsafe { v.node_avx2(s, n, l) });
    }

    /// Fills `summary` at `level` with Σ over the leaves under `node` of value · path product,
    /// adding each split's share to `phi` on the way back up; children go through `recurse`.
    #[inline(always)]
    fn step(
        &mut self,
        s: &mut Scratch,
        node: usize,
        level: usize,
        recurse: impl Fn(&mut Self, &mut Scratch, usize, usize),
    ) {
        let (tree, k) = (self.tree, s.k);
        let here = level * k;
        if tree.is_leaf(node) {
            let v = tree.value[node] * self.scale;
            for j in 0..k {
                s.summary[here + j] = v * s.product[here + j];
            }
            return;
        }
        let f = tree.feature[node] as usize;
        let goes_left = self.x[f] as f64 <= tree.threshold[node];
        let cover = tree.cover[node];
        let (had, z_prev, o_prev) = (s.on_path[f], s.zero[f], s.one[f]);
        let next = here + k;
        let mut first = true;
        for (child, hot) in [
            (tree.left[node] as usize, goes_left),
            (tree.right[node] as usize, !goes_left),
        ] {
            let z_edge = tree.cover[child] / cover;
            let o_edge = if hot { 1.0 } else { 0.0 };
            let (z, o) = if had {
                (z_prev * z_edge, o_prev * o_edge)
            } else {
                (z_edge, o_edge)
            };
            // The child's path product: this feature's factor replaced by the merged one.
            // Divisions dominate this loop, so the common cases avoid them: a first split with
            // o = 0 has the factor z·(1 − t), and a row already off the path (o_prev = 0) only
            // rescales z.
            let (nodes, one_minus) = (&self.q.nodes, &self.q.one_minus);
            let (from, to) = s.product.split_at_mut(next);
            let (from, to) = (&from[here..here + k], &mut to[..k]);
            match (had, o_prev == 0.0) {
                (false, _) if o == 1.0 => {
                    for j in 0..k {
                        to[j] = from[j] * (z + (1.0 - z) * nodes[j]);
                    }
                }
                (false, _) => {
                    for j in 0..k {
                        to[j] = from[j] * z * one_minus[j];
                    }
                }
                (true, true) => {
                    for j in 0..k {
                        to[j] = from[j] * z_edge;
                    }
                }
                (true, false) => {
                    for j in 0..k {
                        let t = nodes[j];
                        to[j] = from[j] / (z_prev + (o_prev - z_prev) * t) * (z + (o - z) * t);
                    }
                }
            }
            s.on_path[f] = true;
            s.zero[f] = z;
            s.one[f] = o;
            recurse(self, s, child, level + 1);
            s.on_path[f] = had;
            s.zero[f] = z_prev;
            s.one[f] = o_prev;
            // This split's share for its feature, minus the superseded shallower split's.
            let summary = &s.summary[next..next + k];
            let weights = &self.q.weights;
            let share = match (had, o_prev == 0.0) {
                // o = 0: (o − z)/(z(1 − t)) = −1/(1 − t).
                (false, _) if o == 0.0 => -(0..k)
                    .map(|j| self.q.weights_over_one_minus[j] * summary[j])
                    .sum::<f64>(),
                (false, _) => (0..k)
                    .map(|j| weights[j] * summary[j] * (1.0 - z) / (z + (1.0 - z) * nodes[j]))
                    .sum(),
                // Both factors are z·(1 − t): their shares cancel.
                (true, true) => 0.0,
                (true, false) => (0..k)
                    .map(|j| {
                        let t = nodes[j];
                        let w = (o - z) / (z + (o - z) * t)
                            - (o_prev - z_prev) / (z_prev + (o_prev - z_prev) * t);
                        weights[j] * summary[j] * w
                    })
                    .sum(),
            };
            self.phi[f] += share;
            if first {
                s.summary.copy_within(next..next + k, here);
                first = false;
            } else {
                for j in 0..k {
                    s.summary[here + j] += s.summary[next + j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadrature_integrates_polynomials_exactly() {
        for k in [1, 2, 5, 13, 30] {
            let q = Quadrature::new(k);
            assert!((q.weights.iter().sum::<f64>() - 1.0).abs() < 1e-14);
            for degree in 0..2 * k {
                let got: f64 = q
                    .nodes
                    .iter()
                    .zip(&q.weights)
                    .map(|(t, w)| w * t.powi(degree as i32))
                    .sum();
                let want = 1.0 / (degree + 1) as f64;
                assert!(
                    (got - want).abs() < 1e-13,
                    "k {k} degree {degree}: {got} vs {want}"
                );
            }
        }
    }
}
