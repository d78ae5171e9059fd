//! `quakelens bench`: our kernels and the reference tools on the same windows, in one run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rayon::prelude::*;

use quakelens_pipeline::windowing::window_traces;
use quakelens_pipeline::PipelineConfig;
use quakelens_signal::features::{FeatureExtractor, FeatureSet};
use quakelens_signal::miniseed::Trace;
use quakelens_signal::reference;
use quakelens_signal::spectrogram::{
    SpectrogramInput, SpectrogramParams, SpectrogramTransform, TransformScratch,
};
use quakelens_signal::stream::ChannelId;
use quakelens_signal::window::{Window, WindowMode};
use quakelens_signal::TARGET_RATE_HZ;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Spectrograms (scipy) and the 69 features (numpy/scipy): windows/s and ratio.
    Signal(SignalBenchArgs),
    /// CNN inference (vs PyTorch eager) and forest training (vs scikit-learn).
    Models(super::bench_models::ModelsBenchArgs),
    /// TreeSHAP (vs shap.TreeExplainer on the same forest and rows).
    Explain(super::bench_explain::ExplainBenchArgs),
    /// CNN explanation tasks worked off by 1, 2, … explainer processes.
    Explainers(super::bench_explainers::ExplainersBenchArgs),
    /// Image SHAP on the CNN (vs shap's Partition explainer), with fidelity figures.
    Image(super::bench_explain::ImageBenchArgs),
    /// Both SHAP tables in one run: TreeSHAP rows/s and image SHAP s/image, each with its
    /// ratio to shap and its fidelity figures.
    Shap(super::bench_explain::ShapBenchArgs),
    /// Live feeds through the broker and the windower/lake services: latency, memory, capacity.
    Services(super::bench_services::ServicesBenchArgs),
    /// The windower stage alone at full speed on the in-memory transport: its capacity.
    Windower(super::bench_windower::WindowerBenchArgs),
    /// The lake over a simulated day: files and SQL before/after optimize, sink start-up
    /// against growing history (vs loading every key, as the plain-Parquet sink did).
    Lake(super::bench_lake::LakeBenchArgs),
    /// Every service for many simulated days at full speed: memory per service, day by day.
    Soak(super::bench_soak::SoakBenchArgs),
}

#[derive(Args, Debug)]
pub struct SignalBenchArgs {
    /// Synthetic events the benchmark windows are cut from (sliding, 25 s every 5 s).
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Windows the reference spectrogram is timed on.
    #[arg(long, default_value_t = 1000)]
    reference_spectrogram_windows: usize,
    /// Windows the reference features are timed on (they are slow).
    #[arg(long, default_value_t = 200)]
    reference_feature_windows: usize,
    /// Best of this many repetitions, for both sides.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Python with numpy and scipy (default: $QUAKELENS_PYTHON or .cache/pyref).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Signal(args) => signal(args),
        BenchCommand::Models(args) => super::bench_models::run(args),
        BenchCommand::Services(args) => super::bench_services::run(args),
        BenchCommand::Windower(args) => super::bench_windower::run(args),
        BenchCommand::Explain(args) => super::bench_explain::run(args),
        BenchCommand::Image(args) => super::bench_explain::run_image(args),
        BenchCommand::Shap(args) => super::bench_explain::run_shap(args),
        BenchCommand::Explainers(args) => super::bench_explainers::run(args),
        BenchCommand::Lake(args) => super::bench_lake::run(args),
        BenchCommand::Soak(args) => super::bench_soak::run(args),
    }
}

fn bench_windows(events: usize) -> Vec<Window> {
    let data = quakelens_synth::generate(&quakelens_synth::SynthConfig {
        events,
        ..Default::default()
    });
    let traces: Vec<Trace> = data
        .stations
        .iter()
        .flat_map(|s| {
            ['N', 'E', 'Z']
                .into_iter()
                .zip(&s.channels)
                .map(|(c, samples)| Trace {
                    id: ChannelId::new(
                        &s.key.network,
                        &s.key.station,
                        &s.key.location,
                        &format!("{}{c}", s.key.band),
                    ),
                    start_ns: s.start_ns,
                    sample_rate: TARGET_RATE_HZ,
                    samples: samples.iter().map(|&v| v as f64).collect(),
                })
        })
        .collect();
    let mut cfg = PipelineConfig::new(None);
    cfg.mode = WindowMode::Sliding {
        length_s: 25.0,
        step_s: 5.0,
    };
    window_traces(traces, &cfg).windows
}

/// Best wall time of `repeat` runs of `f`.
fn best_of(repeat: usize, mut f: impl FnMut()) -> f64 {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn signal(args: SignalBenchArgs) -> anyhow::Result<()> {
    let python = super::reference_python(&args.python)?;
    let windows = bench_windows(args.events);
    if windows.is_empty() {
        bail!("no benchmark windows were cut");
    }
    let n = windows.len();
    let spectrogram =
        SpectrogramTransform::new(SpectrogramParams::default(), SpectrogramInput::default());
    // Like the reference (which drops each result), outputs go to a reused per-thread buffer.
    let ours_spec = best_of(args.repeat, || {
        windows.par_iter().for_each_init(
            || (TransformScratch::default(), Vec::new()),
            |(scratch, out), w| {
                out.clear();
                spectrogram.transform([&w.data[0], &w.data[1], &w.data[2]], out, scratch);
                std::hint::black_box(&out);
            },
        );
    });
    let ours_feat = best_of(args.repeat, || {
        windows.par_iter().for_each_init(
            || FeatureExtractor::new(FeatureSet::Study, TARGET_RATE_HZ),
            |fx, w| {
                std::hint::black_box(fx.window_features([&w.data[0], &w.data[1], &w.data[2]]));
            },
        );
    });

    let dir = tempfile::tempdir()?;
    let count = args
        .reference_spectrogram_windows
        .max(args.reference_feature_windows)
        .min(n);
    let flat: Vec<f64> = windows[..count]
        .iter()
        .flat_map(|w| w.data.iter().flatten().copied())
        .collect();
    let (src, dst) = (
        dir.path().join("windows.f64"),
        dir.path().join("bench.json"),
    );
    reference::write_f64(&src, &flat)?;
    let samples = windows[0].samples();
    let reference_args: Vec<String> = [
        src.display().to_string(),
        dst.display().to_string(),
        count.to_string(),
        samples.to_string(),
        args.repeat.to_string(),
        args.reference_spectrogram_windows.min(count).to_string(),
        args.reference_feature_windows.min(count).to_string(),
    ]
    .into();
    reference::run(&python, dir.path(), "bench", &reference_args).map_err(anyhow::Error::msg)?;
    let timings: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&dst)?)?;
    let ref_spec = timings["spectrogram_windows_per_s"]
        .as_f64()
        .context("reference spectrogram timing")?;
    let ref_feat = timings["features_windows_per_s"]
        .as_f64()
        .context("reference feature timing")?;

    let (spec_rate, feat_rate) = (n as f64 / ours_spec, n as f64 / ours_feat);
    println!(
        "signal benchmark: {n} windows of 3 × {samples} samples, {} threads, best of {}",
        rayon::current_num_threads(),
        args.repeat
    );
    println!();
    println!("| stage | quakelens (windows/s) | reference (windows/s) | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| log-spectrogram 3×33×153 (scipy.signal.spectrogram + np.log1p) | {spec_rate:.0} | {ref_spec:.0} | {:.1}× |",
        spec_rate / ref_spec
    );
    println!(
        "| 69 waveform features (numpy/scipy) | {feat_rate:.0} | {ref_feat:.1} | {:.1}× |",
        feat_rate / ref_feat
    );
    Ok(())
}
