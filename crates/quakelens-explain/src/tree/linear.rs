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
        Self { nodes, weights }
    }

    /// Enough points for paths of up to `depth` distinct features.
    pub fn for_depth(depth: usize) -> Self {
        Self::new(depth / 2 + 1)
    }
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
    pub fn new(n_features: usize, depth: usize, q: &Quadrature) -> Self {
        let k = q.nodes.len();
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
    let k = s.k;
    s.product[..k].fill(1.0);
    Visit {
        tree,
        x,
        scale,
        q,
        phi,
    }
    .node(s, 0, 0);
}

struct Visit<'a> {
    tree: &'a Tree,
    x: &'a [f32],
    scale: f64,
    q: &'a Quadrature,
    phi: &'a mut [f64],
}

impl Visit<'_> {
    /// Fills `summary` at `level` with Σ over the leaves under `node` of value · path product,
    /// adding each split's share to `phi` on the way back up.
    fn node(&mut self, s: &mut Scratch, node: usize, level: usize) {
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
            for j in 0..k {
                let t = self.q.nodes[j];
                let f_new = z + (o - z) * t;
                let f_old = if had {
                    z_prev + (o_prev - z_prev) * t
                } else {
                    1.0
                };
                s.product[next + j] = s.product[here + j] / f_old * f_new;
            }
            s.on_path[f] = true;
            s.zero[f] = z;
            s.one[f] = o;
            self.node(s, child, level + 1);
            s.on_path[f] = had;
            s.zero[f] = z_prev;
            s.one[f] = o_prev;
            // This split's share for its feature, minus the superseded shallower split's.
            let mut share = 0.0;
            for j in 0..k {
                let t = self.q.nodes[j];
                let mut w = (o - z) / (z + (o - z) * t);
                if had {
                    w -= (o_prev - z_prev) / (z_prev + (o_prev - z_prev) * t);
                }
                share += self.q.weights[j] * s.summary[next + j] * w;
            }
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
