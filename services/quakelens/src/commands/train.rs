//! `quakelens train cnn|forest`: models from the lake's labelled windows, split by event.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use quakelens_lake::{Lake, LakeLocation, SourceAttributes};
use quakelens_models::cnn::{self, CnnTrainConfig};
use quakelens_models::dataset::{load_examples, Selection, Split, SplitPlan};
use quakelens_models::forest::{
    study_inputs, train_forest, Columns, Forest, ForestParams, ForestSpec, InputMap, InputSource,
};
use quakelens_models::metrics::{ClassificationMetrics, RegressionMetrics};
use quakelens_signal::features::FeatureSet;

use super::{parse_lake, runtime, set_threads, DEFAULT_LAKE, DEFAULT_MODELS};

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// The foreshock/aftershock CNN on the lake's labelled spectrograms.
    Cnn(CnnArgs),
    /// The random-forest magnitude regressor on waveform features (and catalogue columns).
    Forest(ForestArgs),
    /// The paper's 1-D CNN on the raw waveforms (a lake made with `run --waveforms`), in 2, 4
    /// or 9 time-to-failure classes.
    Conv1d(super::train_conv1d::Conv1dArgs),
}

/// Options every training run shares.
#[derive(Args, Debug)]
pub struct Common {
    /// Lake with labelled windows (`quakelens run` with a catalogue or synthetic data).
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    pub(super) lake: LakeLocation,
    /// Seed for the split, initialisation and batch order.
    #[arg(long, default_value_t = 7)]
    pub(super) seed: u64,
    /// Share of events held out for validation (default 0.15; conv1d: the paper's 0.1).
    #[arg(long)]
    pub(super) valid: Option<f64>,
    /// Share of events held out for the final test (default 0.15; conv1d: the paper's 0.2).
    #[arg(long)]
    pub(super) test: Option<f64>,
    /// `event`: every window of an event on one side (the default: no event is both trained
    /// and tested on); `random`: windows at random, as the study's `train_test_split`;
    /// `time` (conv1d, its default): the paper's time-ordered split of each class's events.
    #[arg(long, value_parser = ["event", "random", "time"])]
    pub(super) split: Option<String>,
    /// Only windows matching this SQL condition on `w` (windows), e.g. "w.station = 'SYN01'".
    #[arg(long)]
    pub(super) filter: Option<String>,
    /// Where the metrics JSON goes (default: beside the model, `<model>.report.json`).
    #[arg(long)]
    pub(super) report: Option<PathBuf>,
    /// Worker threads (rayon and LibTorch; default: all cores).
    #[arg(long)]
    pub(super) threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub(super) quiet: bool,
}

impl Common {
    /// The shares held out, `default` (valid, test) unless given.
    pub(super) fn split_with(&self, default: (f64, f64)) -> anyhow::Result<SplitPlan> {
        let valid = self.valid.unwrap_or(default.0);
        let test = self.test.unwrap_or(default.1);
        if !(valid >= 0.0 && test > 0.0 && valid + test < 1.0) {
            bail!("--valid and --test must be shares with test > 0 and valid + test < 1");
        }
        Ok(SplitPlan {
            seed: self.seed,
            valid,
            test,
        })
    }

    fn split(&self) -> anyhow::Result<SplitPlan> {
        if self.split.as_deref() == Some("time") {
            bail!("--split time is the paper's split for `train conv1d`; use event or random");
        }
        self.split_with((0.15, 0.15))
    }

    fn random_windows(&self) -> bool {
        self.split.as_deref() == Some("random")
    }

    /// The unit a window's side of the split follows: its event, or the window itself.
    fn unit<'a>(&self, e: &'a quakelens_models::dataset::Example) -> &'a str {
        if self.random_windows() {
            &e.window_id
        } else {
            &e.group
        }
    }

    pub(super) fn report_path(&self, model: &Path) -> PathBuf {
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
    /// `waveform` (the 69 features of the lake's set), `catalog` (69 + the typed catalogue
    /// columns such as p_travel_sec), `study` (the study's: every numeric catalogue column but
    /// identifiers, receiver position and the target, plus the 69 features, missing values
    /// filled with each column's mean), or a comma-separated list of column names.
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
        TrainCommand::Conv1d(a) => super::train_conv1d::run(a),
    }
}

pub(super) fn create_parent(path: &Path) -> anyhow::Result<()> {
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
        only_labelled: true,
        filter: a.common.filter.clone(),
        ..Selection::default()
    };
    let (format, mut examples) = runtime()?.block_on(async {
        let lake = Lake::open(&a.common.lake).await?;
        let format = *lake
            .format()
            .ok_or_else(|| anyhow::anyhow!("the lake at {} holds no windows", a.common.lake))?;
        anyhow::Ok((format, load_examples(&lake, &sel).await?))
    })?;
    if examples.is_empty() {
        bail!(
            "no labelled windows in {}: run `quakelens run` on synthetic data or with --catalog first",
            a.common.lake
        );
    }
    if a.common.random_windows() {
        for e in &mut examples {
            e.group = e.window_id.clone();
        }
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
    print_split("by event", report.windows, report.events);
    println!("best epoch {} (by validation accuracy)", report.best_epoch);
    print_classification("valid", &report.valid);
    print_classification("test", &report.test);
    create_parent(&a.out)?;
    let json = serde_json::to_value(&report)?;
    let hash = cnn::save_cnn(&vs, net.input, &format.input, Some(&json), &a.out)?;
    save_report(&a.common, &a.out, json, &hash)
}

/// Windows and events on each side of the split.
pub(super) fn print_split(how: &str, windows: [usize; 3], events: [usize; 3]) {
    println!(
        "split {how}: train {} windows / {} events, valid {} / {}, test {} / {}",
        windows[0], events[0], windows[1], events[1], windows[2], events[2]
    );
}

/// Writes the training report beside the model (with the model's path and hash) and says where.
pub(super) fn save_report(
    common: &Common,
    model: &Path,
    mut json: serde_json::Value,
    hash: &quakelens_models::hash::ModelHash,
) -> anyhow::Result<()> {
    let report_path = common.report_path(model);
    json["model"] = serde_json::json!({"path": model, "hash": hash.0});
    std::fs::write(&report_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!("model  {} ({hash})", model.display());
    println!("report {}", report_path.display());
    Ok(())
}

/// The forest's inputs for `spec` (see `--inputs`), and whether missing values are filled.
fn forest_inputs(
    spec: &str,
    set: FeatureSet,
    examples: &[quakelens_models::dataset::Example],
) -> (Vec<String>, bool) {
    match spec {
        "waveform" => (set.column_names(), false),
        "catalog" => {
            let mut v = set.column_names();
            v.extend(SourceAttributes::COLUMNS.iter().map(|c| c.to_string()));
            (v, false)
        }
        "study" => (study_inputs(examples.iter().map(|e| &e.catalog)), true),
        list => (
            list.split(',').map(|s| s.trim().to_string()).collect(),
            false,
        ),
    }
}

fn train_forest_cmd(a: ForestArgs) -> anyhow::Result<()> {
    set_threads(a.common.threads)?;
    let split = a.common.split()?;
    let filter = Some(match &a.common.filter {
        Some(f) => format!("w.magnitude IS NOT NULL AND ({f})"),
        None => "w.magnitude IS NOT NULL".into(),
    });
    let (set, inputs, fill_missing, examples) = runtime()?.block_on(async {
        let lake = Lake::open(&a.common.lake).await?;
        let set = quakelens_models::dataset::lake_feature_set(&lake)?;
        // The study's inputs depend on the catalogue columns the windows have.
        let probe = if a.inputs == "study" {
            load_examples(
                &lake,
                &Selection {
                    catalog: true,
                    filter: filter.clone(),
                    ..Selection::default()
                },
            )
            .await?
        } else {
            Vec::new()
        };
        let (inputs, fill) = forest_inputs(&a.inputs, set, &probe);
        let sel = Selection {
            inputs: inputs.clone(),
            catalog: true,
            filter: filter.clone(),
            ..Selection::default()
        };
        anyhow::Ok((set, inputs, fill, load_examples(&lake, &sel).await?))
    })?;
    let map = InputMap::new(&inputs, set);
    let absent = map.absent_catalog_inputs(examples.iter().map(|e| &e.catalog));
    if !absent.is_empty() {
        bail!(
            "the lake's windows have no column {} (not a waveform feature of the {set} set, a catalogue attribute or a catalogue column)",
            absent.join(", ")
        );
    }
    // The study fills each missing value with its column's mean over the data.
    let fill: Option<Vec<f64>> = fill_missing.then(|| {
        (0..inputs.len())
            .map(|i| {
                let v: Vec<f64> = examples
                    .iter()
                    .map(|e| e.inputs[i])
                    .filter(|v| v.is_finite())
                    .collect();
                if v.is_empty() {
                    0.0
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            })
            .collect()
    });
    let mut skipped = 0usize;
    let (mut train_x, mut train_y, mut test_x, mut test_y) = (vec![], vec![], vec![], vec![]);
    for e in &examples {
        let row: Option<Vec<f32>> = e
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.is_finite() {
                    Some(v as f32)
                } else {
                    fill.as_ref().map(|f| f[i] as f32)
                }
            })
            .collect();
        let (Some(m), Some(row)) = (e.magnitude, row) else {
            skipped += 1;
            continue;
        };
        // Validation events are not needed for early stopping here: they train too.
        if split.assign(a.common.unit(e)) == Split::Test {
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
    let uses_features = map
        .sources
        .iter()
        .any(|s| matches!(s, InputSource::Feature(_)));
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
            feature_set: uses_features.then_some(set),
            fill,
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
        "split_by": a.common.split.as_deref().unwrap_or("event"),
        "feature_set": forest.spec.feature_set,
        "filled_missing_values": forest.spec.fill.is_some(),
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
