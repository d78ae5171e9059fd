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
    tree_table(&args)
}

/// Both SHAP benchmarks in one run: the TreeSHAP table, then the image SHAP table.
#[derive(Args, Debug)]
pub struct ShapBenchArgs {
    /// Trees of the scikit-learn forest (unlimited depth, 20,000 rows × 69 features).
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Rows TreeSHAP explains on both sides.
    #[arg(long, default_value_t = 40)]
    explain_rows: usize,
    /// Images the image explainers explain on both sides.
    #[arg(long, default_value_t = 3)]
    images: usize,
    /// Model evaluations per image (shap's max_evals).
    #[arg(long, default_value_t = 1000)]
    max_evals: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    python: Option<PathBuf>,
}

pub fn run_shap(args: ShapBenchArgs) -> anyhow::Result<()> {
    super::set_threads(Some(args.threads))?;
    tree_table(&ExplainBenchArgs {
        rows: 20000,
        features: 69,
        trees: args.trees,
        explain_rows: args.explain_rows,
        threads: args.threads,
        repeat: 3,
        python: args.python.clone(),
    })?;
    println!();
    image_table(&ImageBenchArgs {
        cnn: None,
        images: args.images,
        max_evals: args.max_evals,
        exact_images: 1,
        blur: 2.0,
        threads: args.threads,
        python: args.python,
    })
}

fn tree_table(args: &ExplainBenchArgs) -> anyhow::Result<()> {
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

#[derive(Args, Debug)]
pub struct ImageBenchArgs {
    /// The CNN (default: a randomly initialised CNN2D).
    #[arg(long)]
    cnn: Option<PathBuf>,
    /// Images explained by both sides (random normal 3 × 33 × 153 inputs).
    #[arg(long, default_value_t = 4)]
    images: usize,
    /// Model evaluations per image (shap's max_evals).
    #[arg(long, default_value_t = 1000)]
    max_evals: usize,
    /// Of those images, how many also get exact Shapley values of 16 super-patches
    /// (65,536 evaluations each) for the correlation.
    #[arg(long, default_value_t = 1)]
    exact_images: usize,
    /// Gaussian blur σ (pixels) of our masker.
    #[arg(long, default_value_t = 2.0)]
    blur: f32,
    /// Threads for LibTorch on both sides.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    python: Option<PathBuf>,
}

/// `quakelens bench image`: the partition explainer on the CNN against shap's Partition
/// explainer with the inpaint_telea masker on the same model file and images, plus fidelity.
pub fn run_image(args: ImageBenchArgs) -> anyhow::Result<()> {
    super::set_threads(Some(args.threads))?;
    image_table(&args)
}

fn image_table(args: &ImageBenchArgs) -> anyhow::Result<()> {
    use quakelens_explain::image::{
        correlation, exact_shapley_game, expected_gradients, partition, partition_game,
        region_sums, with_cnn_game, Hierarchy, Masker, Shape,
    };
    use quakelens_models::cnn::{CnnModel, MARGIN};

    let python = super::reference_python(&args.python)?;
    anyhow::ensure!(args.images > 0, "--images must be at least 1");
    let dir = tempfile::tempdir()?;
    let d = |n: &str| dir.path().join(n);
    let model_path = super::bench_cnn(&args.cnn, dir.path())?;
    let model = CnnModel::load(&model_path, tch::Device::Cpu)?;
    let shape = Shape {
        channels: 3,
        height: 33,
        width: 153,
    };
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..args.images * shape.len())
        .map(|_| rng.normal() as f32)
        .collect();
    let mut margin = |images: &[f32], n: usize| -> Result<Vec<f64>, String> {
        model
            .margins(images, n)
            .map_err(|e| format!("CNN on masked images: {e}"))
    };
    let masker = Masker::Blur { sigma: args.blur };
    // The same explainer twice: the CNN recomputing only what each coalition changes, and full
    // forward passes on composed images (what any model gets). Every timed method (and shap)
    // explains one image untimed first, so the table compares steady-state costs per image.
    let first = &x[..shape.len()];
    with_cnn_game(&model, first, shape, masker, &MARGIN, |game| {
        partition_game(game, shape, args.max_evals, 100)
    })
    .map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut results = Vec::new();
    for img in x.chunks(shape.len()) {
        results.push(
            with_cnn_game(&model, img, shape, masker, &MARGIN, |game| {
                partition_game(game, shape, args.max_evals, 100)
            })
            .map_err(anyhow::Error::msg)?,
        );
    }
    let ours = t.elapsed().as_secs_f64() / args.images as f64;
    partition(&mut margin, first, shape, masker, args.max_evals, 100)
        .map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut composed = Vec::new();
    for img in x.chunks(shape.len()) {
        composed.push(
            partition(&mut margin, img, shape, masker, args.max_evals, 100)
                .map_err(anyhow::Error::msg)?,
        );
    }
    let ours_composed = t.elapsed().as_secs_f64() / args.images as f64;
    let additivity = results
        .iter()
        .chain(&composed)
        .map(|a| a.additivity_error() / (a.f_image - a.f_background).abs().max(1e-12))
        .fold(0.0, f64::max);
    let same = results
        .iter()
        .zip(&composed)
        .map(|(a, b)| {
            let scale = b.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            a.values
                .iter()
                .zip(&b.values)
                .map(|(u, v)| (u - v).abs() / scale.max(1e-12))
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    // GradientSHAP with the blurred image as the baseline, the same number of model calls.
    let mut gradients = |images: &[f32], n: usize| {
        model
            .margin_gradients(images, n)
            .map_err(|e| format!("CNN gradients: {e}"))
    };
    let base = masker.background(first, shape);
    expected_gradients(&mut gradients, first, &base, args.max_evals, 50, 1)
        .map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut expected = Vec::new();
    for img in x.chunks(shape.len()) {
        let base = masker.background(img, shape);
        expected.push(
            expected_gradients(&mut gradients, img, &base, args.max_evals, 50, 1)
                .map_err(anyhow::Error::msg)?,
        );
    }
    let ours_gradient = t.elapsed().as_secs_f64() / args.images as f64;
    let gradient_additivity = expected
        .iter()
        .map(|a| a.additivity_error() / (a.f_image - a.f_background).abs().max(1e-12))
        .fold(0.0, f64::max);
    let groups = Hierarchy::new(shape).level(4);
    let per_group = |values: &[f64]| region_sums(values, shape, &groups);
    let mut correlations = Vec::new();
    let mut gradient_correlations = Vec::new();
    for ((img, a), g) in x
        .chunks(shape.len())
        .zip(&results)
        .zip(&expected)
        .take(args.exact_images)
    {
        let exact = with_cnn_game(&model, img, shape, masker, &MARGIN, |game| {
            exact_shapley_game(game, shape, &groups, 512)
        })
        .map_err(anyhow::Error::msg)?;
        correlations.push(correlation(&exact, &per_group(&a.values)));
        gradient_correlations.push(correlation(&exact, &per_group(&g.values)));
    }
    let listed = |c: &[f64]| {
        c.iter()
            .map(|c| format!("{c:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    write_f64(
        &d("x.f64"),
        &x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    )?;
    eprintln!(
        "bench image: shap's Partition explainer on {} images…",
        args.images
    );
    let out = reference::run(
        &python,
        dir.path(),
        "bench-image",
        &[
            model_path.display().to_string(),
            d("x.f64").display().to_string(),
            args.images.to_string(),
            args.max_evals.to_string(),
            args.threads.to_string(),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    let r: serde_json::Value = serde_json::from_str(out.trim())?;
    let theirs = r["seconds_per_image"].as_f64().context("shap timing")?;
    println!(
        "image SHAP benchmark: CNN2D, {} random 3×33×153 images (after one untimed image on each side), max_evals {}, {} threads, shap {}",
        args.images,
        args.max_evals,
        args.threads,
        r["shap"].as_str().unwrap_or("?")
    );
    println!();
    println!("| explainer | s/image | ratio vs shap Partition | additivity error / \\|f(x) − f(base)\\| | correlation with exact 16-patch Shapley |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| quakelens partition (blur σ={} masker), local recompute | {ours:.3} | {:.1}× | {additivity:.1e} | {} |",
        args.blur,
        theirs / ours,
        listed(&correlations)
    );
    println!(
        "| quakelens partition, full forward per coalition | {ours_composed:.3} | {:.1}× | {additivity:.1e} | (values within {same:.1e} of the row above, relative to the largest) |",
        theirs / ours_composed,
    );
    println!(
        "| quakelens GradientSHAP ({} samples, blurred baseline) | {ours_gradient:.3} | {:.1}× | {gradient_additivity:.1e} (estimate) | {} |",
        args.max_evals,
        theirs / ours_gradient,
        listed(&gradient_correlations)
    );
    println!(
        "| shap Partition (inpaint_telea masker) | {theirs:.3} | 1.0× | {:.1e} (absolute) | – |",
        r["additivity"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(())
}
