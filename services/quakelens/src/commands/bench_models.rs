//! `quakelens bench models`: CNN2D and the paper's 1-D CNN inference vs PyTorch eager on the
//! same weights, batch and threads; forest training vs scikit-learn on the same rows. One run,
//! one table.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use quakelens_models::cnn::{CnnModel, INPUT_SHAPE};
use quakelens_models::conv1d::{save_conv1d, Conv1dNet, WaveformModel, WAVEFORM_LEN};
use quakelens_models::forest::{train_forest, Columns, ForestParams};
use quakelens_models::reference;
use quakelens_models::ttf::ClassCount;
use quakelens_signal::reference::write_f64;
use quakelens_synth::Rng;

#[derive(Args, Debug)]
pub struct ModelsBenchArgs {
    /// Windows per CNN timing round.
    #[arg(long, default_value_t = 512)]
    windows: usize,
    /// CNN batch size (both sides).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Threads for LibTorch/PyTorch and for forest training (rayon / sklearn n_jobs).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// CNN to time (default: a randomly initialised CNN2D).
    #[arg(long)]
    cnn: Option<PathBuf>,
    /// Waveform windows per 1-D CNN timing round (each is ~1 GFLOP).
    #[arg(long, default_value_t = 128)]
    conv1d_windows: usize,
    /// 1-D CNN to time (default: a randomly initialised 4-class CONV1D).
    #[arg(long)]
    conv1d: Option<PathBuf>,
    /// Forest training rows, features and trees.
    #[arg(long, default_value_t = 20000)]
    rows: usize,
    #[arg(long, default_value_t = 75)]
    features: usize,
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Python with PyTorch and scikit-learn (default: $QUAKELENS_PYTHON or .cache/pyref).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(args: ModelsBenchArgs) -> anyhow::Result<()> {
    super::set_threads(Some(args.threads))?;
    let python = super::reference_python(&args.python)?;
    let dir = tempfile::tempdir()?;
    let d = |n: &str| dir.path().join(n);

    // CNN: the same weights file on both sides.
    let model_path = super::bench_cnn(&args.cnn, dir.path())?;
    let model = CnnModel::load(&model_path, tch::Device::Cpu)?;
    let len = INPUT_SHAPE.iter().product::<i64>() as usize;
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..args.windows * len)
        .map(|_| rng.normal() as f32)
        .collect();
    let windows: Vec<&[f32]> = x.chunks(len).collect();
    model.score(&windows[..args.batch.min(windows.len())], args.batch)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(model.score(&windows, args.batch)?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let ours_cnn = args.windows as f64 / best;
    let s = |v: usize| v.to_string();
    let out = reference::run(
        &python,
        dir.path(),
        "bench-cnn",
        &[
            model_path.display().to_string(),
            s(args.windows),
            s(args.batch),
            s(args.threads),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let torch: serde_json::Value = serde_json::from_str(out.trim())?;
    let ref_cnn = torch["windows_per_s"].as_f64().context("PyTorch timing")?;
    let conv1d = time_conv1d(&args, &python, dir.path())?;

    // Forest: the same rows (a noisy non-linear target with ties) on both sides.
    let (rows, nf) = (args.rows, args.features);
    let mut xs = Vec::with_capacity(rows * nf);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f64> = (0..nf).map(|_| rng.normal()).collect();
        y.push(
            2.0 * (row[0] * 10.0).round() / 10.0
                + (3.0 * row[1]).sin()
                + row[2] * row[3]
                + 0.3 * rng.normal(),
        );
        xs.extend(row);
    }
    write_f64(&d("x.f64"), &xs)?;
    write_f64(&d("y.f64"), &y)?;
    let x32: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let params = ForestParams {
        n_trees: args.trees,
        ..ForestParams::default()
    };
    let t = Instant::now();
    let columns = Columns::from_rows(&x32, nf)?;
    let trees = train_forest(&columns, &y, &params, || {})?;
    let ours_forest = t.elapsed().as_secs_f64();
    let depth = trees.iter().map(|t| t.depth()).max().unwrap_or(0);
    let out = reference::run(
        &python,
        dir.path(),
        "bench-forest",
        &[
            d("x.f64").display().to_string(),
            d("y.f64").display().to_string(),
            s(rows),
            s(nf),
            s(args.trees),
            s(args.threads),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let sk: serde_json::Value = serde_json::from_str(out.trim())?;
    let ref_forest = sk["seconds"].as_f64().context("sklearn timing")?;

    println!(
        "models benchmark: {} threads; PyTorch {}, scikit-learn {}",
        args.threads,
        torch["torch"].as_str().unwrap_or("?"),
        sk["sklearn"].as_str().unwrap_or("?")
    );
    println!();
    println!("| task | quakelens | reference | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| CNN2D inference, batch {}, {} windows (windows/s; PyTorch eager, inference_mode) | {ours_cnn:.0} | {ref_cnn:.0} | {:.2}× |",
        args.batch,
        args.windows,
        ours_cnn / ref_cnn
    );
    println!(
        "| CONV1D (the paper's) inference, batch {}, {} windows of 3×2500 (windows/s; PyTorch eager, inference_mode) | {:.1} | {:.1} | {:.2}× |",
        args.batch,
        args.conv1d_windows,
        conv1d.ours,
        conv1d.eager,
        conv1d.ours / conv1d.eager
    );
    println!(
        "| CONV1D, the same, PyTorch eager with glibc keeping freed blocks as quakelens does (mallopt {} MiB) | {:.1} | {:.1} | {:.2}× |",
        crate::KEEP >> 20,
        conv1d.ours,
        conv1d.eager_keeping,
        conv1d.ours / conv1d.eager_keeping
    );
    println!(
        "| forest fit, {} trees on {rows}×{nf}, unlimited depth (s; sklearn n_jobs={}) | {ours_forest:.2} (depth {depth}) | {ref_forest:.2} (depth {}) | {:.2}× the time |",
        args.trees,
        args.threads,
        sk["max_depth"],
        ours_forest / ref_forest
    );
    Ok(())
}

/// Windows/s of the 1-D CNN, best of three rounds each.
struct Conv1dTimes {
    ours: f64,
    /// PyTorch eager as it runs by default.
    eager: f64,
    /// PyTorch eager with the allocator setting of the quakelens binary.
    eager_keeping: f64,
}

fn time_conv1d(
    args: &ModelsBenchArgs,
    python: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<Conv1dTimes> {
    let path = match &args.conv1d {
        Some(p) => p.clone(),
        None => {
            tch::manual_seed(2);
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let _net = Conv1dNet::new(&vs.root(), 4);
            let path = dir.join("conv1d.safetensors");
            save_conv1d(&vs, &ClassCount::Four.names(), None, &path)?;
            path
        }
    };
    let model = WaveformModel::load(&path, tch::Device::Cpu)?;
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..args.conv1d_windows * WAVEFORM_LEN)
        .map(|_| (rng.normal() * 1000.0) as f32)
        .collect();
    let windows: Vec<&[f32]> = x.chunks(WAVEFORM_LEN).collect();
    model.classify(&windows[..args.batch.min(windows.len())], args.batch)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(model.classify(&windows, args.batch)?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let s = |v: usize| v.to_string();
    let eager = |keep_freed: usize| -> anyhow::Result<f64> {
        let out = reference::run(
            python,
            dir,
            "bench-conv1d",
            &[
                path.display().to_string(),
                s(args.conv1d_windows),
                s(args.batch),
                s(args.threads),
                s(keep_freed),
            ],
        )
        .map_err(anyhow::Error::msg)?;
        let torch: serde_json::Value = serde_json::from_str(out.trim())?;
        torch["windows_per_s"].as_f64().context("PyTorch timing")
    };
    Ok(Conv1dTimes {
        ours: args.conv1d_windows as f64 / best,
        eager: eager(0)?,
        eager_keeping: eager(crate::KEEP as usize)?,
    })
}
