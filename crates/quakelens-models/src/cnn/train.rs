//! `quakelens train cnn`: Adam on cross-entropy, split by event, best-validation weights kept.

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use quakelens_synth::Rng;

use super::arch::{Cnn2d, FoldedCnn2d};
use super::CnnError;
use crate::dataset::{Example, Split, SplitPlan};
use crate::metrics::ClassificationMetrics;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CnnTrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Seeds weight init (libtorch) and batch order.
    pub seed: u64,
    pub split: SplitPlan,
    pub input: [i64; 3],
    #[serde(skip)]
    pub progress: bool,
}

impl Default for CnnTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch: 32,
            learning_rate: 1e-3,
            seed: 7,
            split: SplitPlan::default(),
            input: super::INPUT_SHAPE,
            progress: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_accuracy: f64,
}

/// Everything `train cnn` prints and saves as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CnnTrainReport {
    pub config: CnnTrainConfig,
    pub device: String,
    pub windows: [usize; 3],
    pub events: [usize; 3],
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub valid: ClassificationMetrics,
    pub test: ClassificationMetrics,
    pub seconds: f64,
}

pub(crate) fn torch_err(context: &str) -> impl Fn(tch::TchError) -> CnnError + '_ {
    move |e| CnnError::Torch {
        context: context.into(),
        error: e.to_string(),
    }
}

/// How many different events (groups) there are among `groups`.
pub(crate) fn distinct<'a>(groups: impl Iterator<Item = &'a str>) -> usize {
    let mut g: Vec<&str> = groups.collect();
    g.sort_unstable();
    g.dedup();
    g.len()
}

/// A progress bar over one epoch's batches (hidden unless `show`).
pub(crate) fn epoch_bar(show: bool, epoch: usize, epochs: usize, batches: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(batches as u64);
    pb.set_style(
        ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} batches ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(format!("{epoch}/{epochs}"));
    pb
}

/// `0..n` in a Fisher–Yates order drawn from our RNG: the same seed gives the same batches on
/// any machine.
pub(crate) fn shuffled(n: usize, rng: &mut Rng) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

/// Stacks labelled examples into `[N, C, H, W]` and `[N]` tensors.
fn stack(examples: &[&Example], input: [i64; 3]) -> Result<(Tensor, Tensor), CnnError> {
    let len = input.iter().product::<i64>() as usize;
    let mut flat = Vec::with_capacity(examples.len() * len);
    let mut labels = Vec::with_capacity(examples.len());
    for e in examples {
        if e.spectrogram.len() != len {
            return Err(CnnError::Input(format!(
                "window {} has {} spectrogram values, the CNN takes {input:?}",
                e.window_id,
                e.spectrogram.len()
            )));
        }
        flat.extend_from_slice(&e.spectrogram);
        labels.push(e.label.unwrap_or(0) as i64);
    }
    let [c, h, w] = input;
    Ok((
        Tensor::from_slice(&flat).view([examples.len() as i64, c, h, w]),
        Tensor::from_slice(&labels),
    ))
}

/// Per-channel mean and standard deviation over the training windows.
fn channel_stats(xs: &Tensor) -> (Tensor, Tensor) {
    let mean = xs.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double);
    let std = xs
        .to_kind(Kind::Double)
        .std_dim([0i64, 2, 3].as_slice(), false, false)
        .clamp_min(1e-6);
    (mean.to_kind(Kind::Float), std.to_kind(Kind::Float))
}

fn predict(net: &Cnn2d, xs: &Tensor, device: Device) -> Vec<i32> {
    let folded = FoldedCnn2d::new(net);
    let _g = tch::no_grad_guard();
    let mut out = Vec::new();
    for chunk in xs.split(256, 0) {
        let pred = folded.forward(&chunk.to_device(device)).argmax(1, false);
        out.extend(Vec::<i64>::try_from(pred.to_device(Device::Cpu)).unwrap_or_default());
    }
    out.into_iter().map(|p| p as i32).collect()
}

fn labels_of(t: &Tensor) -> Vec<i32> {
    Vec::<i64>::try_from(t)
        .unwrap_or_default()
        .into_iter()
        .map(|l| l as i32)
        .collect()
}

/// Trains on the labelled `examples`, split by `cfg.split`; returns the variables of the
/// best-validation epoch.
pub fn train_cnn(
    examples: &[Example],
    cfg: &CnnTrainConfig,
    device: Device,
) -> Result<(nn::VarStore, Cnn2d, CnnTrainReport), CnnError> {
    let mut parts: [Vec<&Example>; 3] = Default::default();
    for e in examples.iter().filter(|e| e.label.is_some()) {
        parts[cfg.split.assign(&e.group) as usize].push(e);
    }
    train_cnn_on(parts, cfg, device)
}

/// [`train_cnn`] on sides chosen by the caller (train, valid, test; every example labelled),
/// e.g. the paper's time-ordered split; `cfg.split` is not used.
pub fn train_cnn_on(
    parts: [Vec<&Example>; 3],
    cfg: &CnnTrainConfig,
    device: Device,
) -> Result<(nn::VarStore, Cnn2d, CnnTrainReport), CnnError> {
    let started = std::time::Instant::now();
    if let Some(e) = parts.iter().flatten().find(|e| e.label.is_none()) {
        return Err(CnnError::Input(format!(
            "window {} has no label",
            e.window_id
        )));
    }
    let events = parts
        .each_ref()
        .map(|p| distinct(p.iter().map(|e| e.group.as_str())));
    let windows = parts.each_ref().map(Vec::len);
    if windows.contains(&0) {
        return Err(CnnError::Input(format!(
            "need labelled windows in train, valid and test; the split by event gave {windows:?} \
             windows from {events:?} events (label more data or change the split)"
        )));
    }
    let (train_x, train_y) = stack(&parts[Split::Train as usize], cfg.input)?;
    let (valid_x, valid_y) = stack(&parts[Split::Valid as usize], cfg.input)?;
    let (test_x, test_y) = stack(&parts[Split::Test as usize], cfg.input)?;

    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Cnn2d::new(&vs.root(), cfg.input);
    {
        let (mean, std) = channel_stats(&train_x);
        let _g = tch::no_grad_guard();
        net.norm_mean.shallow_clone().copy_(&mean);
        net.norm_std.shallow_clone().copy_(&std);
    }
    let mut opt = nn::Adam::default()
        .build(&vs, cfg.learning_rate)
        .map_err(torch_err("building Adam"))?;
    let mut best = nn::VarStore::new(Device::Cpu);
    let _best_net = Cnn2d::new(&best.root(), cfg.input);
    let mut best_acc = -1.0;
    let mut best_epoch = 0;
    let mut epochs = Vec::new();
    let mut rng = Rng::new(cfg.seed);
    let n = windows[0];
    let batch = cfg.batch.max(1);
    let valid_truth = labels_of(&valid_y);
    for epoch in 1..=cfg.epochs.max(1) {
        let pb = epoch_bar(cfg.progress, epoch, cfg.epochs, n.div_ceil(batch));
        let order = shuffled(n, &mut rng);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(batch) {
            let idx = Tensor::from_slice(chunk);
            let xs = train_x.index_select(0, &idx).to_device(device);
            let ys = train_y.index_select(0, &idx).to_device(device);
            let loss = net.forward_t(&xs, true).cross_entropy_for_logits(&ys);
            opt.backward_step(&loss);
            loss_sum += f64::try_from(&loss).unwrap_or(f64::NAN) * chunk.len() as f64;
            pb.inc(1);
        }
        pb.finish_and_clear();
        let valid =
            ClassificationMetrics::from_labels(&valid_truth, &predict(&net, &valid_x, device));
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / n as f64,
            valid_accuracy: valid.accuracy,
        };
        tracing::info!(
            epoch,
            loss = report.train_loss,
            valid_accuracy = report.valid_accuracy,
            "epoch done"
        );
        if valid.accuracy > best_acc {
            best_acc = valid.accuracy;
            best_epoch = epoch;
            best.copy(&vs)
                .map_err(torch_err("keeping the best epoch"))?;
        }
        epochs.push(report);
    }
    let mut vs = vs;
    vs.copy(&best)
        .map_err(torch_err("restoring the best epoch"))?;
    let valid = ClassificationMetrics::from_labels(&valid_truth, &predict(&net, &valid_x, device));
    let test =
        ClassificationMetrics::from_labels(&labels_of(&test_y), &predict(&net, &test_x, device));
    let report = CnnTrainReport {
        config: cfg.clone(),
        device: format!("{device:?}"),
        windows,
        events,
        epochs,
        best_epoch,
        valid,
        test,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((vs, net, report))
}
