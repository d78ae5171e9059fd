//! Parity with the reference tools themselves (PyTorch and scikit-learn from PyPI): imported
//! models must compute what they computed.

use std::path::Path;

use quakelens_models::cnn::{save_cnn, Cnn2d, CnnModel, INPUT_SHAPE};
use quakelens_models::forest::Forest;
use quakelens_models::reference;
use quakelens_signal::reference::{python_for_tests, read_f64, write_f64};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// NaN on one side only, or different lengths, never pass (the shared comparison).
use quakelens_signal::reference::compare::max_abs_diff;

#[test]
fn sklearn_forest_imports_predict_like_sklearn() {
    let Some(py) = python_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    reference::run(
        &py,
        d,
        "sklearn-forest",
        &[
            p("forest.arrow"),
            p("x.f64"),
            p("pred.f64"),
            s(600),
            s(6),
            s(25),
            s(3),
        ],
    )
    .unwrap();
    let forest = Forest::load(&d.join("forest.arrow")).unwrap();
    assert_eq!(forest.trees.len(), 25);
    assert_eq!(forest.spec.features.len(), 6);
    assert!(forest.spec.origin.starts_with("scikit-learn"));
    assert!(forest.max_depth() > 8, "unlimited depth expected");
    let x: Vec<f32> = read_f64(&d.join("x.f64"))
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let want = read_f64(&d.join("pred.f64")).unwrap();
    let got = forest.predict(&x);
    let err = max_abs_diff(&got, &want);
    eprintln!("sklearn forest: {} rows, max |diff| {err:.3e}", want.len());
    assert!(err <= 1e-6, "max |ours - sklearn| = {err}");
}

#[test]
fn torchscript_module_scores_like_pytorch() {
    let Some(py) = python_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    let n = 8;
    reference::run(
        &py,
        d,
        "torchscript",
        &[p("cnn.pt"), p("x.f64"), p("logits.f64"), s(n), s(11)],
    )
    .unwrap();
    let model = CnnModel::load(&d.join("cnn.pt"), Device::Cpu).unwrap();
    assert_eq!(model.kind.name(), "torchscript");
    let x: Vec<f32> = read_f64(&d.join("x.f64"))
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    let want = read_f64(&d.join("logits.f64")).unwrap();
    let got: Vec<f64> = model
        .logits(&x, n)
        .unwrap()
        .into_iter()
        .flat_map(|l| l.map(f64::from))
        .collect();
    let err = max_abs_diff(&got, &want);
    eprintln!("TorchScript: max |diff| {err:.3e}");
    assert!(err <= 1e-5, "max |ours - PyTorch| = {err}");
    // The same scores through the batching API, in uneven batches.
    let windows: Vec<&[f32]> = x.chunks(x.len() / n).collect();
    let scores = model.score(&windows, 3).unwrap();
    for (i, sc) in scores.iter().enumerate() {
        let (a, b) = (want[2 * i], want[2 * i + 1]);
        let p = 1.0 / (1.0 + (a - b).exp());
        assert!((sc.p_aftershock as f64 - p).abs() < 1e-5);
    }
}

#[test]
fn native_cnn_file_is_read_by_pytorch_with_the_same_outputs() {
    let Some(py) = python_for_tests() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
    // Non-trivial batch-norm statistics and input normalisation, as after training.
    let warm = Tensor::randn([16, 3, 33, 153], (Kind::Float, Device::Cpu)) * 3.0 + 2.0;
    for _ in 0..4 {
        let _ = net.forward_t(&warm, true);
    }
    tch::no_grad(|| {
        net.norm_mean
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[1.0f32, -0.5, 2.0]));
        net.norm_std
            .shallow_clone()
            .copy_(&Tensor::from_slice(&[2.0f32, 0.5, 1.5]));
    });
    let path = d.join("cnn.safetensors");
    let hash = save_cnn(&vs, INPUT_SHAPE, &Default::default(), None, &path).unwrap();
    let model = CnnModel::load(&path, Device::Cpu).unwrap();
    assert_eq!(model.hash, hash, "hash is of the file's bytes");
    let n = 6;
    let x: Vec<f64> = (0..n * 3 * 33 * 153)
        .map(|i| ((i * 7919 % 1000) as f64 / 250.0) - 1.0)
        .collect();
    write_f64(&d.join("x.f64"), &x).unwrap();
    reference::run(
        &py,
        d,
        "native-logits",
        &[p("cnn.safetensors"), p("x.f64"), s(n), p("out.f64")],
    )
    .unwrap();
    let want = read_f64(&d.join("out.f64")).unwrap();
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let got: Vec<f64> = model
        .logits(&x32, n)
        .unwrap()
        .into_iter()
        .flat_map(|l| l.map(f64::from))
        .collect();
    let err = max_abs_diff(&got, &want);
    eprintln!("native CNN vs PyTorch: max |diff| {err:.3e}");
    assert!(err <= 1e-5, "max |ours - PyTorch| = {err}");
}

#[test]
fn corrupt_model_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\0\0\0\0\0\0\0{not json}     ").unwrap();
    let err = CnnModel::load(&bad, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    let err = Forest::load(&bad).err().unwrap().to_string();
    assert!(
        err.contains("bad.safetensors") && err.contains("Arrow"),
        "{err}"
    );
    let missing = Path::new("/nonexistent/forest.arrow");
    assert!(Forest::load(missing).is_err());
}
