//! TreeSHAP against shap.TreeExplainer itself (shap and scikit-learn from PyPI) on imported
//! scikit-learn forests, shallow and of unlimited depth.

use quakelens_explain::{reference, ForestShap, Method};
use quakelens_models::forest::Forest;
use quakelens_signal::reference::{python_for_tests, read_f64};

const FEATURES: usize = 8;

/// A forest fitted and exported by scikit-learn, test rows, and shap's answer for them.
struct Case {
    forest: Forest,
    x: Vec<f32>,
    /// shap's values (`command` tree-shap) or interaction values (tree-interactions), flat.
    want: Vec<f64>,
    want_base: f64,
}

impl Case {
    fn fit(command: &str, max_depth: usize, trees: usize, seed: u64) -> Option<Case> {
        let py = python_for_tests()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = |n: &str| d.join(n).display().to_string();
        reference::run(
            &py,
            d,
            command,
            &[
                p("forest.arrow"),
                p("x.f64"),
                p("want.f64"),
                p("base.f64"),
                "800".into(),
                FEATURES.to_string(),
                trees.to_string(),
                seed.to_string(),
                max_depth.to_string(),
            ],
        )
        .unwrap();
        Some(Case {
            forest: Forest::load(&d.join("forest.arrow")).unwrap(),
            x: read_f64(&d.join("x.f64"))
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect(),
            want: read_f64(&d.join("want.f64")).unwrap(),
            want_base: read_f64(&d.join("base.f64")).unwrap()[0],
        })
    }
}

/// The largest |ours − shap| over entries taken in the same order (NaN on one side, or a
/// different count, fails: the shared comparison).
fn max_abs_diff<'a>(ours: impl Iterator<Item = &'a f64>, shap: &[f64]) -> f64 {
    let ours: Vec<f64> = ours.copied().collect();
    quakelens_signal::reference::compare::max_abs_diff(&ours, shap)
}

fn parity(max_depth: usize, trees: usize, seed: u64) {
    let Some(Case {
        forest,
        x,
        want,
        want_base,
    }) = Case::fit("tree-shap", max_depth, trees, seed)
    else {
        return;
    };
    let shap = ForestShap::new(&forest).unwrap();
    // Both algorithms against shap itself. The README reports 1e-14-level agreement (float
    // sums in another order); 1e-12 leaves a margin of two orders for other forests and rows,
    // while a real mistake (a wrong weight, a missed split) is many orders larger.
    for method in [Method::Polynomial, Method::Paths] {
        let got = shap.explain_with(&x, method).unwrap();
        assert_eq!(got.len() * FEATURES, want.len());
        let err = max_abs_diff(got.iter().flatten(), &want);
        eprintln!(
            "TreeSHAP ({method:?}) vs shap, depth {} ({} trees, {} rows): max |diff| {err:.2e}",
            forest.max_depth(),
            trees,
            got.len()
        );
        assert!(err <= 1e-12, "{method:?}: max |ours - shap| = {err}");
    }
    let got = shap.explain(&x).unwrap();
    let base_err = (shap.base_value() - want_base).abs();
    assert!(base_err <= 1e-9, "base value differs by {base_err}");
    // Additivity against the forest's own prediction.
    let pred = forest.predict(&x);
    for (row, (phi, f)) in got.iter().zip(&pred).enumerate() {
        let sum: f64 = phi.iter().sum::<f64>() + shap.base_value();
        assert!((sum - f).abs() <= 1e-9, "row {row}: {sum} vs {f}");
    }
}

#[test]
fn equals_shap_on_shallow_forests() {
    parity(6, 30, 7);
}

#[test]
fn equals_shap_on_forests_of_unlimited_depth() {
    parity(0, 20, 11);
}

/// Interaction values against `shap_interaction_values`, and their sums against our SHAP values.
fn interaction_parity(max_depth: usize, trees: usize, seed: u64) {
    let Some(case) = Case::fit("tree-interactions", max_depth, trees, seed) else {
        return;
    };
    let shap = ForestShap::new(&case.forest).unwrap();
    let start = std::time::Instant::now();
    let got = shap.interactions(&case.x).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let m = FEATURES;
    assert_eq!(got.len() * m * m, case.want.len());
    let err = max_abs_diff(got.iter().flatten(), &case.want);
    eprintln!(
        "interactions vs shap, depth {} ({trees} trees, {} rows, {secs:.2} s): max |diff| {err:.2e}",
        case.forest.max_depth(),
        got.len()
    );
    // README: 1e-14-level; 1e-12 keeps a margin (see `parity`).
    assert!(err <= 1e-12, "max |ours - shap| = {err}");
    assert!((shap.base_value() - case.want_base).abs() <= 1e-9);
    let phi = shap.explain(&case.x).unwrap();
    for (row, (matrix, phi)) in got.iter().zip(&phi).enumerate() {
        for (i, p) in phi.iter().enumerate() {
            let sum: f64 = matrix[i * m..(i + 1) * m].iter().sum();
            assert!(
                (sum - p).abs() <= 1e-9,
                "row {row}, feature {i}: {sum} vs {p}"
            );
        }
    }
}

#[test]
fn interactions_equal_shap_on_shallow_forests() {
    interaction_parity(6, 20, 5);
}

#[test]
fn interactions_equal_shap_on_forests_of_unlimited_depth() {
    interaction_parity(0, 10, 13);
}
