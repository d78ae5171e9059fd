//! `quakelens bench explain`: exact TreeSHAP against shap.TreeExplainer on the same
//! scikit-learn forest (grown by sklearn with unlimited depth, imported) and the same rows, with
//! the largest difference between the two beside the speed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use quakelens_explain::{reference, ForestShap, Method};
use quakelens_models::forest::Forest;
use quakelens_signal::reference::{read_f64, write_f64};
use quakelens_synth::Rng;

#[derive(Args, Debug)]
pub struct ExplainBenchArgs {
    /// Rows and features the forest is grown on (by scikit-learn, unlimited depth).
    #[arg(long, default_value_t = 20000)]
    rows: usize,
    #[arg(long, default_value_t = 69)]
    features: usize,
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Rows explained by both sides.
    #[arg(long, default_value_t = 40)]
    explain_rows: usize,
    /// Threads for our TreeSHAP (shap's TreeExplainer runs on one).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Best of this many repetitions on our side.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Python with scikit-learn and shap (default: $QUAKELENS_PYTHON or .cache/pyref).
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run(args: ExplainBenchArgs) -> anyhow::Result<()> {
    super::set_threads(Some(args.threads))?;
    let python = super::reference_python(&args.python)?;
    anyhow::ensure!(args.features >= 4, "--features must be at least 4");
    anyhow::ensure!(
        args.explain_rows > 0 && args.explain_rows <= args.rows,
        "--explain-rows must be between 1 and --rows"
    );
    let dir = tempfile::tempdir()?;
    let d = |n: &str| dir.path().join(n);
    let s = |v: usize| v.to_string();

    let (rows, nf) = (args.rows, args.features);
    let mut rng = Rng::new(5);
    let mut xs = Vec::with_capacity(rows * nf);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let row: Vec<f64> = (0..nf).map(|_| rng.normal()).collect();
        y.push(2.0 * row[0] + (3.0 * row[1]).sin() + row[2] * row[3] + 0.3 * rng.normal());
        xs.extend(row);
    }
    write_f64(&d("x.f64"), &xs)?;
    write_f64(&d("y.f64"), &y)?;
    eprintln!(
        "bench explain: scikit-learn grows the forest and shap explains {} rows…",
        args.explain_rows
    );
    let out = reference::run(
        &python,
        dir.path(),
        "bench-tree",
        &[
            d("x.f64").display().to_string(),
            d("y.f64").display().to_string(),
            s(rows),
            s(nf),
            s(args.trees),
            s(args.explain_rows),
            d("forest.arrow").display().to_string(),
            d("xe.f64").display().to_string(),
            d("shap.f64").display().to_string(),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let reference: serde_json::Value = serde_json::from_str(out.trim())?;
    let ref_seconds = reference["seconds"].as_f64().context("shap timing")?;

    let forest = Forest::load(&d("forest.arrow"))?;
    let x: Vec<f32> = read_f64(&d("xe.f64"))?.iter().map(|&v| v as f32).collect();
    let want = read_f64(&d("shap.f64"))?;
    let shap = ForestShap::new(&forest)?;
    let n = args.explain_rows as f64;
    let theirs = n / ref_seconds;
    println!(
        "explain benchmark: {} threads for quakelens, shap {} (TreeExplainer, one thread)",
        args.threads,
        reference["shap"].as_str().unwrap_or("?")
    );
    println!();
    println!("| TreeSHAP, {} trees (depth {}, {} nodes), {nf} features, {} rows | rows/s | shap.TreeExplainer rows/s | ratio | max \\|diff\\| vs shap |", forest.trees.len(), forest.max_depth(), forest.nodes(), args.explain_rows);
    println!("|---|---:|---:|---:|---:|");
    for (method, name) in [
        (Method::Polynomial, "quakelens, polynomial (O(nodes·depth))"),
        (Method::Paths, "quakelens, Algorithm 2 (shap's)"),
    ] {
        let mut best = f64::INFINITY;
        let mut values = Vec::new();
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            values = shap.explain_with(&x, method)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let diff = values
            .iter()
            .flatten()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let ours = n / best;
        println!(
            "| {name} | {ours:.1} | {theirs:.1} | {:.2}× | {diff:.1e} |",
            ours / theirs
        );
    }
    Ok(())
}
