//! The paper's 1-D CNN explained: on the real network (random weights, libtorch), the partition
//! explainer's time values are the Owen values of the hierarchy by their definition, exact
//! Shapley values of a small game agree with them, and every explanation adds up.

use quakelens_explain::image::{correlation, Masker};
use quakelens_explain::waveform::{
    exact_owen_segments, exact_segments, explain_bands, explain_segments, Segments,
};
use quakelens_models::cnn::MARGIN;
use quakelens_models::conv1d::{Conv1dNet, WaveformModel, WAVEFORM_SHAPE};
use quakelens_models::ModelHash;
use quakelens_signal::bands::Bands;

const CHANNELS: usize = WAVEFORM_SHAPE[0] as usize;
const SAMPLES: usize = WAVEFORM_SHAPE[1] as usize;

fn random_model() -> WaveformModel {
    tch::manual_seed(11);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = Conv1dNet::new(&vs.root(), 2);
    WaveformModel::from_native(
        &net,
        vec!["pre".into(), "post".into()],
        ModelHash::of(b"random conv1d"),
        tch::Device::Cpu,
    )
}

/// Noise with a decaying 8 Hz burst from 5 s on, larger on the last channel.
fn event() -> Vec<f32> {
    let mut s = 7u64;
    (0..CHANNELS * SAMPLES)
        .map(|i| {
            let (c, t) = (i / SAMPLES, (i % SAMPLES) as f32 / 100.0);
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            let burst = if t >= 5.0 {
                (1.0 + c as f32)
                    * (-(t - 5.0) / 2.0).exp()
                    * (std::f32::consts::TAU * 8.0 * t).sin()
            } else {
                0.0
            };
            noise + burst
        })
        .collect()
}

#[test]
fn the_real_networks_time_and_band_explanations_are_exact_and_add_up() {
    let model = random_model();
    let x = event();
    let mut margin = |xs: &[f32], n: usize| -> Result<Vec<f64>, String> {
        let logits = model.logits(xs, n).map_err(|e| e.to_string())?;
        Ok(logits
            .chunks_exact(2)
            .map(|l| l[0] as f64 * MARGIN[0] + l[1] as f64 * MARGIN[1])
            .collect())
    };
    let scale = |v: &[f64]| v.iter().fold(1e-12f64, |m, a| m.max(a.abs()));

    // 3 channels × 4 segments: the budgeted explainer fully expanded is the definition.
    let quarters = Segments::new(CHANNELS, SAMPLES, SAMPLES / 4).unwrap();
    for masker in [Masker::Constant(0.0), Masker::Blur { sigma: 4.0 }] {
        let a = explain_segments(&mut margin, &x, quarters, masker, 10_000, 32).unwrap();
        let owen = exact_owen_segments(&mut margin, &x, quarters, masker).unwrap();
        let s = scale(&owen);
        for (i, (got, want)) in a.values.iter().zip(&owen).enumerate() {
            assert!(
                (got - want).abs() <= 1e-4 * s,
                "{masker:?} player {i}: {got} vs {want}"
            );
        }
        let total = a.f_image - a.f_background;
        assert!(
            a.additivity_error() <= 1e-6 * total.abs().max(1.0),
            "{masker:?}"
        );
        // A small budget still adds up exactly.
        let small = explain_segments(&mut margin, &x, quarters, masker, 12, 8).unwrap();
        assert!(small.additivity_error() <= 1e-6 * total.abs().max(1.0));
        assert!(small.evaluations <= 12, "{}", small.evaluations);
    }

    // 3 channels × 2 halves, every coalition: the Shapley values agree with the Owen values.
    let halves = Segments::new(CHANNELS, SAMPLES, SAMPLES / 2).unwrap();
    let masker = Masker::Constant(0.0);
    let exact = exact_segments(&mut margin, &x, halves, masker, 64).unwrap();
    let a = explain_segments(&mut margin, &x, halves, masker, 10_000, 32).unwrap();
    let sum: f64 = exact.iter().sum();
    assert!((sum - (a.f_image - a.f_background)).abs() <= 1e-5 * scale(&exact).max(1.0));
    let r = correlation(&a.values, &exact);
    assert!(
        r > 0.9,
        "Owen vs Shapley correlation {r}: {:?} vs {exact:?}",
        a.values
    );

    // Bands: exact Shapley values of band-stop masking add up to f(x) − f(silence).
    let bands = Bands::new(vec![1.0, 2.0, 5.0, 10.0, 20.0], 100.0).unwrap();
    let b = explain_bands(&mut margin, &x, CHANNELS, 100.0, &bands, 32).unwrap();
    let silent = margin(&vec![0.0; CHANNELS * SAMPLES], 1).unwrap()[0];
    assert!(
        (b.f_background - silent).abs() < 1e-6,
        "{} vs {silent}",
        b.f_background
    );
    assert!(
        b.additivity_error() <= 1e-5 * scale(&b.values).max(1.0),
        "{b:?}"
    );
    assert_eq!(b.values.len(), 6);
    assert_eq!(b.evaluations, 66);
}
