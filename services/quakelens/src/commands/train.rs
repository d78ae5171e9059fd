//! `quakelens train cnn|forest`: models from the lake's labelled windows, split by event.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use quakelens_lake::Lake;
use quakelens_models::cnn::{self, CnnTrainConfig};
use quakelens_models::dataset::{self, load_examples, Selection, Split, SplitPlan};
use quakelens_models::forest::{train_forest, Columns, Forest, ForestParams, ForestSpec};
use quakelens_models::metrics::{ClassificationMetrics, RegressionMetrics};

use super::{runtime, set_threads, DEFAULT_LAKE, DEFAULT_MODELS};

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// The foreshock/aftershock CNN on the lake's labelled spectrograms.
    Cnn(CnnArgs),
    /// The random-forest magnitude regressor on waveform features (and catalogue columns).
    Forest(ForestArgs),
}

/// Options every training run shares.
#[derive(Args, Debug)]
pub struct Common {
    /// Lake with labelled windows (`quakelens run` with a catalogue or synthetic data).
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE)]
    lake: PathBuf,
    /// Seed for the split, initialisation and batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Share of events held out for validation.
    #[arg(long, default_value_t = 0.15)]
    valid: f64,
    /// Share of events held out for the final test.
    #[arg(long, default_value_t = 0.15)]
    test: f64,
    /// Only windows matching this SQL condition on `w` (windows), e.g. "w.station = 'SYN01'".
    #[arg(long)]
    filter: Option<String>,
    /// Where the metrics JSON goes (default: beside the model, `<model>.report.json`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Worker threads (rayon and LibTorch; default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    fn split(&self) -> anyhow::Result<SplitPlan> {
        if !(self.valid >= 0.0 && self.test > 0.0 && self.valid + self.test < 1.0) {
            bail!("--valid and --test must be shares with test > 0 and valid + test < 1");
        }
        Ok(SplitPlan {
            seed: self.seed,
            valid: self.valid,
            test: self.test,
        })
    }

    fn report_path(&self, model: &Path) -> PathBuf {
        self.report.clone().unwrap_or_else(|| {
            let mut p = model.as_os_str().to_owned();
            p.push(".report.json");
            PathBuf::from(p)
        })
    }
}

#[derive(Args, Debug)]
pub struct CnnArgs {
    #[command(flatten)]
    common: Common,
    /// Model file to write (safetensors).
    #[arg(long, default_value_os_t = Path::new(DEFAULT_MODELS).join("cnn.safetensors"))]
    out: PathBuf,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
}

#[derive(Args, Debug)]
pub struct ForestArgs {
    #[command(flatten)]
    common: Common,
    /// Model file to write (Arrow IPC forest file).
    #[arg(long, default_value_os_t = Path::new(DEFAULT_MODELS).join("forest.arrow"))]
    out: PathBuf,
    /// `waveform` (the 69 features), `catalog` (69 + catalogue columns such as p_travel_sec),
    /// or a comma-separated list of column names.
    #[arg(long, default_value = "waveform")]
    inputs: String,
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Unlimited when not given (scikit-learn's default).
    #[arg(long)]
    max_depth: Option<usize>,
    #[arg(long, default_value_t = 1)]
    min_samples_leaf: usize,
    /// Features tried per split (default: all, scikit-learn's regressor default).
    #[arg(long)]
    max_features: Option<usize>,
}

pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Cnn(a) => train_cnn(a),
        TrainCommand::Forest(a) => train_forest_cmd(a),
    }
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn print_classification(name: &str, m: &ClassificationMetrics) {
    println!(
        "{name:<6} n={:<5} accuracy {:.4}  precision {:.4}  recall {:.4}  F1 {:.4}",
        m.n, m.accuracy, m.precision, m.recall, m.f1
    );
    println!(
        "       confusion (rows true, cols predicted; foreshock, aftershock): [[{}, {}], [{}, {}]]",
        m.confusion[0][0], m.confusion[0][1], m.confusion[1][0], m.confusion[1][1]
    );
}

fn train_cnn(a: CnnArgs) -> anyhow::Result<()> {
    set_threads(a.common.threads)?;
    let split = a.common.split()?;
    let sel = Selection {
        spectrograms: true,
        inputs: vec![],
        only_labelled: true,
        filter: a.common.filter.clone(),
    };
    let examples = runtime()?.block_on(async {
        let lake = Lake::open(&a.common.lake).await?;
        anyhow::Ok(load_examples(&lake, &sel).await?)
    })?;
    if examples.is_empty() {
        bail!(
            "no labelled windows in {}: run `quakelens run` on synthetic data or with --catalog first",
            a.common.lake.display()
        );
    }
    let cfg = CnnTrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        learning_rate: a.lr,
        seed: a.common.seed,
        split,
        progress: !a.common.quiet,
        ..CnnTrainConfig::default()
    };
    let device = cnn::default_device()?;
    println!(
        "training CNN2D on {} labelled windows, device {device:?}",
        examples.len()
    );
    let (vs, net, report) = cnn::train_cnn(&examples, &cfg, device)?;
    for e in &report.epochs {
        println!(
            "epoch {:>3}  train loss {:.4}  valid accuracy {:.4}",
            e.epoch, e.train_loss, e.valid_accuracy
        );
    }
    println!(
        "split by event: train {} windows / {} events, valid {} / {}, test {} / {}",
        report.windows[0],
        report.events[0],
        report.windows[1],
        report.events[1],
        report.windows[2],
        report.events[2]
    );
    println!("best epoch {} (by validation accuracy)", report.best_epoch);
    print_classification("valid", &report.valid);
    print_classification("test", &report.test);
    create_parent(&a.out)?;
    let json = serde_json::to_value(&report)?;
    let hash = cnn::save_cnn(&vs, net.input, Some(&json), &a.out)?;
    let report_path = a.common.report_path(&a.out);
    let mut saved = json;
    saved["model"] = serde_json::json!({"path": a.out, "hash": hash.0});
    std::fs::write(&report_path, serde_json::to_string_pretty(&saved)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("model  {} ({})", a.out.display(), hash);
    println!("report {}", report_path.display());
    Ok(())
}

fn forest_inputs(spec: &str) -> Vec<String> {
    match spec {
        "waveform" => dataset::waveform_inputs(),
        "catalog" => dataset::waveform_and_catalog_inputs(),
        list => list.split(',').map(|s| s.trim().to_string()).collect(),
    }
}

fn train_forest_cmd(a: ForestArgs) -> anyhow::Result<()> {
    set_threads(a.common.threads)?;
    let split = a.common.split()?;
    let inputs = forest_inputs(&a.inputs);
    let sel = Selection {
        spectrograms: false,
        inputs: inputs.clone(),
        only_labelled: false,
        filter: Some(match &a.common.filter {
            Some(f) => format!("w.magnitude IS NOT NULL AND ({f})"),
            None => "w.magnitude IS NOT NULL".into(),
        }),
    };
    let examples = runtime()?.block_on(async {
        let lake = Lake::open(&a.common.lake).await?;
        anyhow::Ok(load_examples(&lake, &sel).await?)
    })?;
    let mut skipped = 0usize;
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    for e in &examples {
        let (Some(m), true) = (e.magnitude, e.inputs.iter().all(|v| v.is_finite())) else {
            skipped += 1;
            continue;
        };
        let row = e.inputs.iter().map(|&v| v as f32);
        // Validation events are not needed for early stopping here: they train too.
        if split.assign(&e.group) == Split::Test {
            test_x.extend(row);
            test_y.push(m);
        } else {
            train_x.extend(row);
            train_y.push(m);
        }
    }
    if train_y.is_empty() || test_y.is_empty() {
        bail!(
            "need windows with magnitudes and all {} inputs on both sides of the split (train {}, test {}, skipped {skipped})",
            inputs.len(),
            train_y.len(),
            test_y.len()
        );
    }
    let params = ForestParams {
        n_trees: a.trees,
        max_depth: a.max_depth,
        min_samples_leaf: a.min_samples_leaf,
        max_features: a.max_features,
        seed: a.common.seed,
        ..ForestParams::default()
    };
    println!(
        "training forest ({} trees) on {} windows × {} inputs; {} held out, {skipped} skipped (missing inputs)",
        params.n_trees,
        train_y.len(),
        inputs.len(),
        test_y.len()
    );
    let pb = if a.common.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(params.n_trees as u64).with_style(
            ProgressStyle::with_template("trees [{bar:30}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    };
    let started = std::time::Instant::now();
    let columns = Columns::from_rows(&train_x, inputs.len())?;
    let trees = train_forest(&columns, &train_y, &params, || pb.inc(1))?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut forest = Forest {
        spec: ForestSpec {
            features: inputs,
            target: "magnitude".into(),
            origin: format!("quakelens {}", env!("CARGO_PKG_VERSION")),
        },
        trees,
        hash: None,
    };
    let train_m = RegressionMetrics::from_predictions(&train_y, &forest.predict(&train_x));
    let test_m = RegressionMetrics::from_predictions(&test_y, &forest.predict(&test_x));
    println!(
        "trained in {seconds:.2} s: {} nodes, max depth {}",
        forest.nodes(),
        forest.max_depth()
    );
    for (name, m) in [("train", &train_m), ("test", &test_m)] {
        println!(
            "{name:<6} n={:<5} R² {:.4}  MAE {:.4}  RMSE {:.4}",
            m.n, m.r2, m.mae, m.rmse
        );
    }
    create_parent(&a.out)?;
    let hash = forest.save(&a.out)?;
    let report = serde_json::json!({
        "params": params,
        "split": split,
        "inputs": forest.spec.features,
        "skipped_rows": skipped,
        "seconds": seconds,
        "nodes": forest.nodes(),
        "max_depth": forest.max_depth(),
        "train": train_m,
        "test": test_m,
        "model": {"path": a.out, "hash": hash.0},
    });
    let report_path = a.common.report_path(&a.out);
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("model  {} ({})", a.out.display(), hash);
    println!("report {}", report_path.display());
    Ok(())
}
