//! Parity with the reference tools themselves: scipy's spectrogram, welch and resample_poly,
//! numpy's statistics, ObsPy's STA/LTA trigger and bandpass. Each test runs the reference on the same input
//! through `reference/reference.py` and compares.

mod common;

use std::path::Path;

use common::{max_abs_diff, max_rel_err, Rng};
use quakelens_signal::assembly::assemble;
use quakelens_signal::features::{FeatureExtractor, FeatureSet};
use quakelens_signal::filter::Bandpass;
use quakelens_signal::lowpass::Lowpass;
use quakelens_signal::miniseed::read_file;
use quakelens_signal::reference::{read_f64, run, write_f64};
use quakelens_signal::resample::resample_poly;
use quakelens_signal::spectrogram::{
    image_byte, ChannelStats, ImageScaling, Power, SpectrogramInput, SpectrogramParams,
    SpectrogramPlan, SpectrogramScratch, SpectrogramTransform, TransformScratch,
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
    // Integer counts around zero, with exact zeros and negative zeros (signbit counts them
    // apart), and repeated values (plateaus for find_peaks, ties for the percentiles).
    out.push(std::array::from_fn(|c| {
        (0..N)
            .map(|i| match (i + c) % 7 {
                0 => 0.0,
                3 => -0.0,
                _ => (rng.uniform() * 4.0).round(),
            })
            .collect()
    }));
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

fn transform(windows: &[[Vec<f64>; 3]], input: SpectrogramInput) -> Vec<f32> {
    let t = SpectrogramTransform::new(SpectrogramParams::default(), input);
    let mut out = Vec::new();
    let mut scratch = TransformScratch::default();
    for w in windows {
        t.transform([&w[0], &w[1], &w[2]], &mut out, &mut scratch);
    }
    out
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn log_and_linear_spectrograms_equal_numpy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(4);
    let input = flatten(&windows);
    let args = [windows.len().to_string(), N.to_string()];
    // log1p: f32 storage is the only loss.
    let want = reference(&py, dir.path(), "log1p", &input, &args);
    let err = max_rel_err(
        &widen(&transform(&windows, SpectrogramInput::default())),
        &want,
        0.0,
    );
    eprintln!("log1p spectrogram max relative error (f32 output): {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");
    let want = reference(&py, dir.path(), "spectrogram", &input, &args);
    let linear = SpectrogramInput {
        power: Power::Linear,
        scaling: ImageScaling::Raw,
    };
    let err = max_rel_err(&widen(&transform(&windows, linear)), &want, 0.0);
    eprintln!("linear spectrogram max relative error (f32 output): {err:.2e}");
    assert!(err <= 1e-6, "{err:e}");
}

/// The study's images through matplotlib's PNG and PIL: the same bytes, and the normalised
/// values torchvision makes of them, for the log and the linear spectrogram.
#[test]
fn study_images_equal_matplotlib_pngs_read_by_pil() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(6);
    let input = flatten(&windows);
    let stats = ChannelStats::default();
    let per = 33 * 153;
    for power in [Power::Log, Power::Linear] {
        let name = power.name();
        let want = reference(
            &py,
            dir.path(),
            "study-image",
            &input,
            &[windows.len().to_string(), N.to_string(), name.to_string()],
        );
        let bytes = read_f64(&dir.path().join("study-image.out.bytes")).unwrap();
        let ours = transform(&windows, SpectrogramInput::study_image(power));
        let ours_bytes: Vec<f64> = ours
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = (i / per) % 3;
                image_byte(v, stats.mean[c], stats.std[c]) as f64
            })
            .collect();
        let differing = ours_bytes
            .iter()
            .zip(&bytes)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(ours_bytes.len(), bytes.len());
        eprintln!(
            "{name} images: {differing} of {} bytes differ from the PNGs",
            bytes.len()
        );
        assert_eq!(
            differing, 0,
            "{name}: 8-bit values differ from matplotlib's PNG"
        );
        let err = max_abs_diff(&widen(&ours), &want);
        eprintln!("{name} images: normalised values max abs error {err:.2e}");
        assert!(err <= 1e-6, "{name}: {err:e}");
    }
    // Without the PNG: min–max and normalisation in f64, as numpy.
    let want = reference(
        &py,
        dir.path(),
        "image",
        &input,
        &[windows.len().to_string(), N.to_string(), "0".to_string()],
    );
    let ours = transform(
        &windows,
        SpectrogramInput {
            power: Power::Log,
            scaling: ImageScaling::Image {
                quantize: false,
                stats,
            },
        },
    );
    let err = max_abs_diff(&widen(&ours), &want);
    eprintln!("min-max image (no quantisation) max abs error: {err:.2e}");
    assert!(err <= 1e-5, "{err:e}");
}

#[test]
fn features_equal_numpy_and_scipy() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let windows = test_windows(8);
    for (set, cmd, bound) in [
        (FeatureSet::Study, "study-features", 1e-12),
        (FeatureSet::Physical, "features", 1e-9),
    ] {
        let want = reference(
            &py,
            dir.path(),
            cmd,
            &flatten(&windows),
            &[windows.len().to_string(), N.to_string()],
        );
        let mut fx = FeatureExtractor::new(set, 100.0);
        let ours: Vec<f64> = windows
            .iter()
            .flat_map(|w| fx.window_features([&w[0], &w[1], &w[2]]))
            .collect();
        assert_eq!(ours.len(), want.len(), "{set}");
        let names = set.column_names();
        let mut worst = (0.0, String::new());
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            let e = max_rel_err(&[*a], &[*b], 0.0);
            if e > worst.0 || (e.is_nan() && !worst.0.is_nan()) {
                worst = (
                    e,
                    format!("window {} {}: {a} vs {b}", i / 69, names[i % 69]),
                );
            }
        }
        eprintln!(
            "{set} features max relative error {:.2e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 <= bound, "{set}: {}", worst.1);
    }
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

#[test]
fn bandpass_equals_obspy_trace_filter() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let decoded = read_file(&common::real_data().join("BW.RJOB.2009-08-24.steim1.mseed")).unwrap();
    let mut inputs: Vec<Vec<f64>> = decoded.traces.iter().map(|t| t.samples.clone()).collect();
    // Raw counts with a large offset (a step from rest at the first sample) and a chirp.
    let mut rng = Rng::new(5);
    inputs.push(
        (0..6000)
            .map(|_| 20_000.0 + 100.0 * rng.uniform())
            .collect(),
    );
    inputs.push(
        (0..4000)
            .map(|i| {
                let t = i as f64 / 100.0;
                (2.0 * std::f64::consts::PI * (0.05 + 0.6 * t) * t).sin()
            })
            .collect(),
    );
    let bands = [
        (1.0, 10.0, 4),
        (2.0, 8.0, 1),
        (0.5, 20.0, 3),
        (5.0, 45.0, 6),
        (0.1, 2.0, 2),
    ];
    for (k, x) in inputs.iter().enumerate() {
        for (fmin, fmax, corners) in bands {
            let args = [
                x.len().to_string(),
                fmin.to_string(),
                fmax.to_string(),
                corners.to_string(),
            ];
            let want = reference(&py, dir.path(), "bandpass", x, &args);
            let mut ours = x.clone();
            Bandpass::new(fmin, fmax, corners)
                .unwrap()
                .filter()
                .process(&mut ours);
            let err = max_rel_err(&ours, &want, 1.0);
            eprintln!(
                "bandpass {fmin}-{fmax} Hz x{corners}, input {k}: max error {err:.2e} of the peak"
            );
            assert!(
                err <= 1e-11,
                "input {k}, {fmin}-{fmax} Hz x{corners}: {err:e}"
            );
        }
    }
}

#[test]
fn lowpass_equals_scipy_sosfiltfilt() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let decoded = read_file(&common::real_data().join("BW.RJOB.2009-08-24.steim1.mseed")).unwrap();
    let mut inputs: Vec<Vec<f64>> = decoded
        .traces
        .iter()
        .map(|t| t.samples[..t.samples.len().min(2500)].to_vec())
        .collect();
    // A window with a large offset and a trend, and white noise.
    let mut rng = Rng::new(9);
    inputs.push(
        (0..2500)
            .map(|i| 20_000.0 + 0.5 * i as f64 + 100.0 * rng.uniform())
            .collect(),
    );
    for (k, x) in inputs.iter().enumerate() {
        for (cutoff, order) in [
            (1.0, 4),
            (2.0, 4),
            (5.0, 5),
            (10.0, 4),
            (20.0, 2),
            (30.0, 8),
        ] {
            let args = [x.len().to_string(), cutoff.to_string(), order.to_string()];
            let want = reference(&py, dir.path(), "lowpass", x, &args);
            let ours = Lowpass::new(cutoff, order, 100.0)
                .unwrap()
                .filtfilt(x)
                .unwrap();
            let err = max_rel_err(&ours, &want, 1.0);
            eprintln!("lowpass {cutoff} Hz x{order}, input {k}: max error {err:.2e} of the peak");
            assert!(err <= 1e-10, "input {k}, {cutoff} Hz x{order}: {err:e}");
        }
    }
}
