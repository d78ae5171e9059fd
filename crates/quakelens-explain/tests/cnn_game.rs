//! The CNN's locally recomputing game gives the partition and exact explainers the values that
//! composing every masked image gives.

use quakelens_explain::image::{
    exact_shapley, exact_shapley_game, partition, partition_game, with_cnn_game, Hierarchy, Masker,
    Shape,
};
use quakelens_models::cnn::{save_cnn, Cnn2d, CnnModel, INPUT_SHAPE, MARGIN};

const SHAPE: Shape = Shape {
    channels: 3,
    height: 33,
    width: 153,
};

fn random_cnn(dir: &std::path::Path) -> CnnModel {
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
    let path = dir.join("cnn.safetensors");
    save_cnn(&vs, INPUT_SHAPE, &Default::default(), None, &path).unwrap();
    CnnModel::load(&path, tch::Device::Cpu).unwrap()
}

fn image(seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..SHAPE.len())
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// The largest |a − b| relative to the largest |b|; a NaN on one side or a length mismatch
/// fails (the shared NaN-propagating comparison).
fn largest_gap(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    quakelens_signal::reference::compare::max_abs_diff(a, b) / scale
}

#[test]
fn fast_and_composed_games_give_the_same_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_cnn(dir.path());
    let x = image(3);
    let mut margin = |images: &[f32], n: usize| -> Result<Vec<f64>, String> {
        model.margins(images, n).map_err(|e| e.to_string())
    };
    for masker in [Masker::Blur { sigma: 2.0 }, Masker::ChannelMean] {
        let slow = partition(&mut margin, &x, SHAPE, masker, 400, 50).unwrap();
        let fast = with_cnn_game(&model, &x, SHAPE, masker, &MARGIN, |g| {
            partition_game(g, SHAPE, 400, 50)
        })
        .unwrap();
        assert_eq!(fast.evaluations, slow.evaluations);
        assert!((fast.f_image - slow.f_image).abs() < 1e-4);
        assert!((fast.f_background - slow.f_background).abs() < 1e-4);
        let gap = largest_gap(&fast.values, &slow.values);
        assert!(
            gap < 1e-3,
            "{masker:?}: values differ by {gap} of the largest"
        );
        assert!(fast.additivity_error() < 1e-6 * (fast.f_image - fast.f_background).abs().max(1.0));
    }
    let groups = Hierarchy::new(SHAPE).level(3);
    let masker = Masker::Blur { sigma: 2.0 };
    let slow = exact_shapley(&mut margin, &x, SHAPE, masker, &groups, 64).unwrap();
    let fast = with_cnn_game(&model, &x, SHAPE, masker, &MARGIN, |g| {
        exact_shapley_game(g, SHAPE, &groups, 64)
    })
    .unwrap();
    let gap = largest_gap(&fast, &slow);
    assert!(gap < 1e-3, "exact values differ by {gap} of the largest");
}
