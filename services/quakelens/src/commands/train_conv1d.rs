//! `quakelens train conv1d`: the paper's 1-D CNN on a waveform lake, with its time-to-failure
//! classes, its time-ordered split and its metric (mean per-class recall).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use quakelens_lake::{Lake, LakeFormat};
use quakelens_models::cnn::default_device;
use quakelens_models::conv1d::{
    save_conv1d, train_conv1d, ClassedWindow, Conv1dTrainConfig, WaveformModel,
};
use quakelens_models::dataset::{load_examples, Example, Selection, Split, SplitPlan};
use quakelens_models::metrics::MulticlassMetrics;
use quakelens_models::ttf::{
    event_times, stored_two_classes, ClassCount, EventSplit, TtfLabels, TtfScheme, NORCIA_MAINSHOCK,
};
use quakelens_signal::time::parse_utc;

use super::train::{create_parent, print_split, save_report, Common};
use super::{runtime, set_threads, DEFAULT_MODELS};

#[derive(Args, Debug)]
pub struct Conv1dArgs {
    #[command(flatten)]
    common: Common,
    /// Model file to write.
    #[arg(long, default_value_os_t = Path::new(DEFAULT_MODELS).join("conv1d.safetensors"))]
    out: PathBuf,
    #[command(flatten)]
    ttf: TtfArgs,
    #[command(flatten)]
    training: TrainingArgs,
}

/// The paper's time-to-failure classes.
#[derive(Args, Debug)]
pub struct TtfArgs {
    /// 2 (pre/post the mainshock), 4 (each side in two time-ordered halves) or 9 (quarters, and
    /// the --middle sequence as a class between them).
    #[arg(long, default_value = "2")]
    classes: ClassCount,
    /// The mainshock's origin time (UTC). Default: Norcia, 2016-10-30T07:40:17Z. With 2 classes
    /// and no --mainshock, the lake's own foreshock/aftershock labels are the classes (for
    /// catalogues that carry labels but no origin times).
    #[arg(long)]
    mainshock: Option<String>,
    /// The intermediate sequence for 9 classes, `START..END` (UTC, e.g. Visso's).
    #[arg(long)]
    middle: Option<String>,
}

/// The paper's training settings.
#[derive(Args, Debug)]
pub struct TrainingArgs {
    #[arg(long, default_value_t = 50)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Adam weight decay (PyTorch's, an L2 term in the gradient).
    #[arg(long, default_value_t = 1e-3)]
    weight_decay: f64,
}

fn time_arg(flag: &str, text: &str) -> anyhow::Result<i64> {
    parse_utc(text)
        .with_context(|| format!("{flag} {text:?} is not a UTC time (e.g. 2016-10-30T07:40:17Z)"))
}

fn middle_arg(text: &str) -> anyhow::Result<(i64, i64)> {
    let (start, end) = text
        .split_once("..")
        .with_context(|| format!("--middle {text:?}: expected START..END"))?;
    Ok((time_arg("--middle", start)?, time_arg("--middle", end)?))
}

impl TrainingArgs {
    pub(super) fn config(&self, seed: u64, progress: bool) -> Conv1dTrainConfig {
        Conv1dTrainConfig {
            epochs: self.epochs,
            batch: self.batch,
            learning_rate: self.lr,
            weight_decay: self.weight_decay,
            seed,
            progress,
        }
    }
}

impl TtfArgs {
    /// The classes of the lake's events, by these options.
    fn labels(&self, examples: &[Example], seed: u64) -> anyhow::Result<TtfLabels> {
        let events = event_times(examples)?;
        let middle = self.middle.as_deref().map(middle_arg).transpose()?;
        if self.classes == ClassCount::Two && self.mainshock.is_none() && middle.is_none() {
            let stored: HashMap<String, i32> = examples
                .iter()
                .filter_map(|e| Some((e.group.clone(), e.label?)))
                .collect();
            return Ok(stored_two_classes(&events, &stored, seed)?);
        }
        let mainshock = self.mainshock.as_deref().unwrap_or(NORCIA_MAINSHOCK);
        let scheme = TtfScheme {
            classes: self.classes,
            mainshock_ns: time_arg("--mainshock", mainshock)?,
            middle,
            seed,
        };
        Ok(scheme.assign(&events)?)
    }
}

/// A waveform lake's windows with the paper's classes and split.
pub(super) struct PaperData {
    /// What the lake's windows are (the 2-D CNN's spectrograms are recomputed with it).
    pub format: LakeFormat,
    pub examples: Vec<Example>,
    pub labels: TtfLabels,
    pub sides: HashMap<String, Split>,
    pub mode: EventSplit,
    pub plan: SplitPlan,
}

impl PaperData {
    pub fn load(common: &Common, ttf: &TtfArgs) -> anyhow::Result<Self> {
        let plan = common.split_with((0.1, 0.2))?;
        let mode = match common.split.as_deref() {
            None | Some("time") => EventSplit::TimeOrdered,
            Some("event") => EventSplit::Random,
            Some(other) => bail!(
                "--split {other}: conv1d splits by event (`time`, the paper's, or `event`), \
                 never windows of one event across sides"
            ),
        };
        let sel = Selection {
            waveforms: true,
            catalog: true,
            filter: common.filter.clone(),
            ..Selection::default()
        };
        let (format, examples) = runtime()?.block_on(async {
            let lake = Lake::open(&common.lake).await?;
            let format = *lake
                .format()
                .ok_or_else(|| anyhow::anyhow!("the lake at {} holds no windows", common.lake))?;
            anyhow::Ok((format, load_examples(&lake, &sel).await?))
        })?;
        if examples.is_empty() {
            bail!(
                "no windows in {}: run `quakelens run --waveforms` into it first",
                common.lake
            );
        }
        let labels = ttf.labels(&examples, common.seed)?;
        let sides = labels.split(mode, &plan);
        Ok(Self {
            format,
            examples,
            labels,
            sides,
            mode,
            plan,
        })
    }

    /// `examples` (these or a filtered copy, same order) with their classes and sides; events
    /// without a class (left out by balancing, the mainshock) are left out.
    pub fn classed<'a>(&self, examples: &'a [Example]) -> Vec<ClassedWindow<'a>> {
        let class_of = self.labels.class_of();
        examples
            .iter()
            .filter_map(|e| {
                Some(ClassedWindow {
                    example: e,
                    class: *class_of.get(e.group.as_str())?,
                    split: *self.sides.get(&e.group)?,
                })
            })
            .collect()
    }
}

pub(super) fn print_metrics(name: &str, m: &MulticlassMetrics) {
    println!(
        "{name:<6} n={:<5} mean per-class recall {:.4}  accuracy {:.4}",
        m.n, m.mean_recall, m.accuracy
    );
    println!("       confusion normalised per true class (rows true, cols predicted):");
    for (class, row) in m.classes.iter().zip(&m.normalized) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
        println!("       {class:<11} [{}]", cells.join(", "));
    }
}

pub fn run(a: Conv1dArgs) -> anyhow::Result<()> {
    set_threads(a.common.threads)?;
    let data = PaperData::load(&a.common, &a.ttf)?;
    let (labels, mode, plan) = (&data.labels, data.mode, data.plan);
    let windows = data.classed(&data.examples);
    let cfg = a.training.config(a.common.seed, !a.common.quiet);
    let device = default_device()?;
    println!(
        "training CONV1D on {} windows of {} events in {} classes ({}), {} events left out by \
         balancing, {} at the mainshock; device {device:?}",
        windows.len(),
        labels.events.len(),
        labels.names.len(),
        labels
            .names
            .iter()
            .zip(&labels.counts)
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        labels.left_out_by_balance,
        labels.at_mainshock,
    );
    let (vs, _net, report) = train_conv1d(&windows, &labels.names, &cfg, device)?;
    for e in &report.epochs {
        println!(
            "epoch {:>3}  train loss {:.4}  valid loss {:.4}  valid mean recall {:.4}",
            e.epoch, e.train_loss, e.valid_loss, e.valid_mean_recall
        );
    }
    print_split(&format!("{mode:?}"), report.windows, report.events);
    println!("best epoch {} (lowest validation loss)", report.best_epoch);
    print_metrics("valid", &report.valid);
    print_metrics("test", &report.test);
    create_parent(&a.out)?;
    let mut json = serde_json::to_value(&report)?;
    json["labels"] = serde_json::json!({
        "classes": labels.names,
        "events_per_class": labels.counts,
        "left_out_by_balance": labels.left_out_by_balance,
        "at_mainshock": labels.at_mainshock,
        "mainshock": a.ttf.mainshock,
        "middle": a.ttf.middle,
        "split": format!("{mode:?}"),
        "valid": plan.valid,
        "test": plan.test,
    });
    let hash = save_conv1d(&vs, &labels.names, Some(&json), &a.out)?;
    WaveformModel::load(&a.out, tch::Device::Cpu)
        .with_context(|| format!("reading back {}", a.out.display()))?;
    save_report(&a.common, &a.out, json, &hash)
}
