//! Parity with the reference tools themselves: scipy's spectrogram, welch and resample_poly,
//! numpy's statistics, ObsPy's STA/LTA trigger. Each test runs the reference on the same input
//! through `reference/reference.py` and compares.

mod common;

use std::path::Path;

use common::{max_rel_err, Rng};
use quakelens_signal::assembly::assemble;
use quakelens_signal::features::FeatureExtractor;
use quakelens_signal::miniseed::read_file;
use quakelens_signal::reference::{read_f64, run, write_f64};
use quakelens_signal::resample::resample_poly;
use quakelens_signal::spectrogram::{
    ChannelStats, ImageScaling, SpectrogramParams, SpectrogramPlan, SpectrogramScratch,
    SpectrogramTransform, TransformScratch,
};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::trigger::{recursive_sta_lta, trigger_onset};

const N: usize = 2500;

/// The real RJOB event (first 25 s, channels N, E, Z) plus random windows: (w, 3, N) flattened.
fn test_windows(random: usize) -> Vec<[Vec<f64>; 3]> {
    let decoded = read_file(&common::real_data().join("BW.RJOB.2009-08-24.steim2.mseed")).unwrap();
    let asm = assemble(&decoded.traces, ChannelOrder::default());
    let rjob = &asm.streams[0];
    let mut out = vec![[
        rjob.channels[0][..N].to_vec(),
        rjob.channels[1][..N].to_vec(),
        rjob.channels[2][..N].to_vec(),
    ]];
    let mut rng = Rng::new(7);
    for w in 0..random {
        // Noise with a DC offset and a scale that varies per window, like raw counts.
        let offset = 1000.0 * rng.uniform();
        let scale = 10f64.powi(w as i32 % 5);
        out.push(std::array::from_fn(|_| {
            (0..N).map(|_| offset + scale * rng.uniform()).collect()
        }));
    }
    out
}

fn flatten(windows: &[[Vec<f64>; 3]]) -> Vec<f64> {
    windows
        .iter()
        .flat_map(|w| w.iter().flatten().cloned())
        .collect()
}

fn reference(python: &Path, dir: &Path, cmd: &str, input: &[f64], args: &[String]) -> Vec<f64> {
    let (src, dst) = (
        dir.join(format!("{cmd}.in")),
        dir.join(format!("{cmd}.out")),
    );
    write_f64(&src, input).unwrap();
    let mut all = vec![src.display().to_string(), dst.display().to_string()];
    all.extend_from_slice(args);
    run(python, dir, cmd, &all).unwrap();
    read_f64(&dst).unwrap()
}

#[test]
fn spectrogram_equals_scipy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(8);
    let want = reference(
        &py,
        dir.path(),
        "spectrogram",
        &flatten(&windows),
        &[windows.len().to_string(), N.to_string()],
    );
    let plan = SpectrogramPlan::new(SpectrogramParams::default());
    let mut scratch = SpectrogramScratch::default();
    let mut ours = Vec::new();
    let mut psd = Vec::new();
    for w in &windows {
        for ch in w {
            plan.psd(ch, &mut psd, &mut scratch);
            ours.extend_from_slice(&psd);
        }
    }
    assert_eq!(ours.len(), windows.len() * 3 * 33 * 153);
    let rjob = max_rel_err(&ours[..3 * 33 * 153], &want[..3 * 33 * 153], 0.0);
    let all = max_rel_err(&ours, &want, 0.0);
    eprintln!("spectrogram max relative error: RJOB {rjob:.2e}, all {all:.2e}");
    assert!(rjob <= 1e-6 && all <= 1e-6, "RJOB {rjob:e}, all {all:e}");
}

#[test]
fn log_and_image_pipeline_equal_numpy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(4);
    let input = flatten(&windows);
    let args = |q: &str| vec![windows.len().to_string(), N.to_string(), q.to_string()];
    let transform = |scaling: ImageScaling| {
        let t = SpectrogramTransform::new(SpectrogramParams::default(), scaling);
        let mut out = Vec::new();
        let mut scratch = TransformScratch::default();
        for w in &windows {
            t.transform([&w[0], &w[1], &w[2]], &mut out, &mut scratch);
        }
        out.iter().map(|&v| v as f64).collect::<Vec<f64>>()
    };
    // log1p: f32 storage is the only loss.
    let want = reference(&py, dir.path(), "log1p", &input, &args("0")[..2]);
    let err = max_rel_err(&transform(ImageScaling::Log1p), &want, 0.0);
    eprintln!("log1p spectrogram max relative error (f32 output): {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");
    // Image pipeline without and with 8-bit quantisation.
    for (q, quantize) in [("0", false), ("1", true)] {
        let want = reference(&py, dir.path(), "image", &input, &args(q));
        let ours = transform(ImageScaling::Image {
            quantize,
            stats: ChannelStats::default(),
        });
        let max_abs = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("image pipeline (quantize={quantize}) max abs error: {max_abs:.2e}");
        assert!(max_abs <= 1e-5, "quantize={quantize}: {max_abs:e}");
    }
}

#[test]
fn features_equal_numpy_and_scipy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(8);
    let want = reference(
        &py,
        dir.path(),
        "features",
        &flatten(&windows),
        &[windows.len().to_string(), N.to_string()],
    );
    let mut fx = FeatureExtractor::new(100.0);
    let ours: Vec<f64> = windows
        .iter()
        .flat_map(|w| fx.window_features([&w[0], &w[1], &w[2]]))
        .collect();
    let names = quakelens_signal::features::column_names();
    let mut worst = (0.0, String::new());
    for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
        let e = max_rel_err(&[*a], &[*b], 0.0);
        if e > worst.0 {
            worst = (
                e,
                format!("window {} {}: {a} vs {b}", i / 69, names[i % 69]),
            );
        }
    }
    eprintln!("features max relative error {:.2e} ({})", worst.0, worst.1);
    assert!(worst.0 <= 1e-9, "{}", worst.1);
}

#[test]
fn resampling_equals_scipy_resample_poly() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let x: Vec<f64> = (0..3001)
        .map(|i| (i as f64 * 0.05).sin() * 100.0 + rng.uniform())
        .collect();
    for (up, down) in [(4, 5), (1, 2), (5, 2), (2, 3)] {
        let want = reference(
            &py,
            dir.path(),
            "resample",
            &x,
            &[x.len().to_string(), up.to_string(), down.to_string()],
        );
        let ours = resample_poly(&x, up, down);
        assert_eq!(ours.len(), want.len(), "{up}/{down}");
        let err = max_rel_err(&ours, &want, 1.0);
        eprintln!("resample_poly {up}/{down}: max error {err:.2e} of the peak");
        assert!(err <= 1e-12, "{up}/{down}: {err:e}");
    }
}

#[test]
fn sta_lta_and_onsets_equal_obspy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let decoded = read_file(&common::real_data().join("BW.RJOB.2009-08-24.steim1.mseed")).unwrap();
    let mut rng = Rng::new(11);
    let mut inputs: Vec<Vec<f64>> = decoded.traces.iter().map(|t| t.samples.clone()).collect();
    let mut synthetic: Vec<f64> = (0..6000).map(|_| rng.uniform()).collect();
    for (i, v) in synthetic.iter_mut().enumerate().skip(3000).take(700) {
        *v *= 30.0 * (-((i - 3000) as f64) / 200.0).exp() + 1.0;
    }
    inputs.push(synthetic);
    for (k, x) in inputs.iter().enumerate() {
        for (nsta, nlta, on, off) in [(50, 500, 3.0, 1.0), (100, 1000, 1.5, 0.5)] {
            let args = [x.len(), nsta, nlta]
                .map(|v| v.to_string())
                .into_iter()
                .chain([on.to_string(), off.to_string()])
                .collect::<Vec<_>>();
            let want = reference(&py, dir.path(), "stalta", x, &args);
            let picks = want[0] as usize;
            let want_picks: Vec<(usize, usize)> = (0..picks)
                .map(|p| (want[1 + 2 * p] as usize, want[2 + 2 * p] as usize))
                .collect();
            let want_cf = &want[1 + 2 * picks..];
            let cf = recursive_sta_lta(x, nsta, nlta);
            let err = max_rel_err(&cf, want_cf, 1e-12);
            assert!(err <= 1e-9, "input {k}: charfct error {err:e}");
            assert_eq!(
                trigger_onset(&cf, on, off, None, false),
                want_picks,
                "input {k} {nsta}/{nlta}"
            );
        }
    }
}
