//! TreeSHAP against shap.TreeExplainer itself (shap and scikit-learn from PyPI) on imported
//! scikit-learn forests, shallow and of unlimited depth.

use quakelens_explain::{reference, ForestShap};
use quakelens_models::forest::Forest;
use quakelens_signal::reference::{python_for_tests, read_f64};

fn parity(max_depth: usize, trees: usize, seed: u64) {
    let Some(py) = python_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    let features = 8;
    reference::run(
        &py,
        d,
        "tree-shap",
        &[
            p("forest.arrow"),
            p("x.f64"),
            p("shap.f64"),
            p("base.f64"),
            "800".into(),
            features.to_string(),
            trees.to_string(),
            seed.to_string(),
            max_depth.to_string(),
        ],
    )
    .unwrap();
    let forest = Forest::load(&d.join("forest.arrow")).unwrap();
    let x: Vec<f32> = read_f64(&d.join("x.f64"))
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let want = read_f64(&d.join("shap.f64")).unwrap();
    let want_base = read_f64(&d.join("base.f64")).unwrap()[0];
    let shap = ForestShap::new(&forest).unwrap();
    let got = shap.explain(&x).unwrap();
    assert_eq!(got.len() * features, want.len());
    let err = got
        .iter()
        .flatten()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let base_err = (shap.base_value() - want_base).abs();
    eprintln!(
        "TreeSHAP vs shap, depth {} ({} trees, {} rows): max |diff| {err:.2e}, base {base_err:.2e}",
        forest.max_depth(),
        trees,
        got.len()
    );
    assert!(err <= 1e-6, "max |ours - shap| = {err}");
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
