//! The CNN's input gradients (for GradientSHAP) against finite differences of its own output.

use quakelens_models::cnn::{save_cnn, Cnn2d, CnnModel, INPUT_SHAPE};

#[test]
fn margin_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cnn.safetensors");
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
    save_cnn(&vs, INPUT_SHAPE, &Default::default(), None, &path).unwrap();
    let model = CnnModel::load(&path, tch::Device::Cpu).unwrap();
    let len = INPUT_SHAPE.iter().product::<i64>() as usize;
    let x: Vec<f32> = (0..2 * len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let (margins, grads) = model.margin_gradients(&x, 2).unwrap();
    assert_eq!((margins.len(), grads.len()), (2, 2 * len));
    let logits = model.logits(&x, 2).unwrap();
    for (m, l) in margins.iter().zip(&logits) {
        assert!((m - (l[1] - l[0]) as f64).abs() < 1e-4, "{m} vs {l:?}");
    }
    // Central differences on a few inputs of the second window (f32 model: loose tolerance).
    let margin = |v: &[f32]| {
        let l = model.logits(v, 2).unwrap();
        (l[1][1] - l[1][0]) as f64
    };
    let mut checked = 0;
    for i in [len + 5, len + 4000, len + 9000, 2 * len - 3] {
        let eps = 1e-2f32;
        let mut up = x.clone();
        up[i] += eps;
        let mut down = x.clone();
        down[i] -= eps;
        let numeric = (margin(&up) - margin(&down)) / (2.0 * eps as f64);
        let analytic = grads[i] as f64;
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1e-2),
            "input {i}: numeric {numeric} vs autograd {analytic}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    assert!(model.margin_gradients(&x[..len], 2).is_err());
}
