//! Training the paper's 1-D CNN as the paper did: Adam (learning rate 1e-3, weight decay 1e-3,
//! PyTorch's L2 form), batch 32, cross-entropy, and the weights of the epoch with the lowest
//! validation loss kept.

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Tensor};

use quakelens_synth::Rng;

use super::arch::{Conv1dNet, WAVEFORM_SHAPE};
use super::model::WAVEFORM_LEN;
use super::CnnError;
use crate::cnn::train::{distinct, epoch_bar, shuffled, torch_err};
use crate::dataset::{Example, Split};
use crate::metrics::MulticlassMetrics;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conv1dTrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Seeds weight init (libtorch), dropout and batch order.
    pub seed: u64,
    #[serde(skip)]
    pub progress: bool,
}

impl Default for Conv1dTrainConfig {
    /// The paper's settings.
    fn default() -> Self {
        Self {
            epochs: 50,
            batch: 32,
            learning_rate: 1e-3,
            weight_decay: 1e-3,
            seed: 7,
            progress: false,
        }
    }
}

/// A window with its class and its side of the split.
#[derive(Clone, Copy, Debug)]
pub struct ClassedWindow<'a> {
    pub example: &'a Example,
    pub class: usize,
    pub split: Split,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conv1dEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    pub valid_mean_recall: f64,
}

/// What `train conv1d` prints and saves as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conv1dTrainReport {
    pub config: Conv1dTrainConfig,
    pub device: String,
    pub classes: Vec<String>,
    /// Windows and events in training, validation and test.
    pub windows: [usize; 3],
    pub events: [usize; 3],
    pub epochs: Vec<Conv1dEpoch>,
    pub best_epoch: usize,
    pub valid: MulticlassMetrics,
    pub test: MulticlassMetrics,
    pub seconds: f64,
}

/// Stacks windows into `[N, 3, 2500]` samples and `[N]` classes; a window of another length or
/// with a non-finite sample is an error naming it.
fn stack(windows: &[&ClassedWindow]) -> Result<(Tensor, Tensor), CnnError> {
    let mut flat = Vec::with_capacity(windows.len() * WAVEFORM_LEN);
    let mut classes = Vec::with_capacity(windows.len());
    for w in windows {
        let e = w.example;
        if e.waveform.len() != WAVEFORM_LEN {
            return Err(CnnError::Input(format!(
                "window {} has {} waveform samples, the 1-D CNN takes {WAVEFORM_SHAPE:?}",
                e.window_id,
                e.waveform.len()
            )));
        }
        if let Some(i) = e.waveform.iter().position(|v| !v.is_finite()) {
            return Err(CnnError::Input(format!(
                "window {}: sample {} of channel {} is {}",
                e.window_id,
                i % WAVEFORM_SHAPE[1] as usize,
                i / WAVEFORM_SHAPE[1] as usize,
                e.waveform[i]
            )));
        }
        flat.extend_from_slice(&e.waveform);
        classes.push(w.class as i64);
    }
    let [c, n] = WAVEFORM_SHAPE;
    Ok((
        Tensor::from_slice(&flat).view([windows.len() as i64, c, n]),
        Tensor::from_slice(&classes),
    ))
}

/// Mean cross-entropy and the predicted classes, in eval mode.
fn evaluate(net: &Conv1dNet, xs: &Tensor, ys: &Tensor, device: Device) -> (f64, Vec<usize>) {
    let _g = tch::no_grad_guard();
    let mut loss = 0.0;
    let mut predicted = Vec::new();
    for (x, y) in xs.split(64, 0).iter().zip(ys.split(64, 0)) {
        let logits = net.forward_t(&x.to_device(device), false);
        let n = x.size()[0] as f64;
        let l = logits.cross_entropy_for_logits(&y.to_device(device));
        loss += f64::try_from(&l).unwrap_or(f64::NAN) * n;
        let p = logits.argmax(1, false).to_device(Device::Cpu);
        predicted.extend(
            Vec::<i64>::try_from(&p)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c as usize),
        );
    }
    (loss / xs.size()[0].max(1) as f64, predicted)
}

fn classes_of(t: &Tensor) -> Vec<usize> {
    Vec::<i64>::try_from(t)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as usize)
        .collect()
}

/// Trains on `windows` (classes `0..classes.len()`); returns the variables of the epoch with the
/// lowest validation loss and the report.
pub fn train_conv1d(
    windows: &[ClassedWindow],
    classes: &[String],
    cfg: &Conv1dTrainConfig,
    device: Device,
) -> Result<(nn::VarStore, Conv1dNet, Conv1dTrainReport), CnnError> {
    let started = std::time::Instant::now();
    if let Some(w) = windows.iter().find(|w| w.class >= classes.len()) {
        return Err(CnnError::Input(format!(
            "window {} has class {}, the model has {} classes",
            w.example.window_id,
            w.class,
            classes.len()
        )));
    }
    let mut parts: [Vec<&ClassedWindow>; 3] = Default::default();
    for w in windows {
        parts[w.split as usize].push(w);
    }
    let events = parts
        .each_ref()
        .map(|p| distinct(p.iter().map(|w| w.example.group.as_str())));
    let counts = parts.each_ref().map(Vec::len);
    if counts.contains(&0) {
        return Err(CnnError::Input(format!(
            "need windows in train, valid and test; the split gave {counts:?} windows from \
             {events:?} events (more events, or another split)"
        )));
    }
    let (train_x, train_y) = stack(&parts[Split::Train as usize])?;
    let (valid_x, valid_y) = stack(&parts[Split::Valid as usize])?;
    let (test_x, test_y) = stack(&parts[Split::Test as usize])?;

    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Conv1dNet::new(&vs.root(), classes.len() as i64);
    let mut opt = nn::Adam {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(&vs, cfg.learning_rate)
    .map_err(torch_err("building Adam"))?;
    let mut best = nn::VarStore::new(Device::Cpu);
    let _best_net = Conv1dNet::new(&best.root(), classes.len() as i64);
    let mut best_loss = f64::INFINITY;
    let mut best_epoch = 0;
    let mut epochs = Vec::new();
    let mut rng = Rng::new(cfg.seed);
    let n = counts[0];
    let batch = cfg.batch.max(1);
    let valid_truth = classes_of(&valid_y);
    for epoch in 1..=cfg.epochs.max(1) {
        let pb = epoch_bar(cfg.progress, epoch, cfg.epochs, n.div_ceil(batch));
        let order = shuffled(n, &mut rng);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(batch) {
            // Batch norm needs two windows to estimate a variance in training mode.
            if chunk.len() < 2 {
                continue;
            }
            let idx = Tensor::from_slice(chunk);
            let xs = train_x.index_select(0, &idx).to_device(device);
            let ys = train_y.index_select(0, &idx).to_device(device);
            let loss = net.forward_t(&xs, true).cross_entropy_for_logits(&ys);
            opt.backward_step(&loss);
            loss_sum += f64::try_from(&loss).unwrap_or(f64::NAN) * chunk.len() as f64;
            pb.inc(1);
        }
        pb.finish_and_clear();
        let (valid_loss, predicted) = evaluate(&net, &valid_x, &valid_y, device);
        let valid = MulticlassMetrics::from_labels(classes, &valid_truth, &predicted);
        let report = Conv1dEpoch {
            epoch,
            train_loss: loss_sum / n as f64,
            valid_loss,
            valid_mean_recall: valid.mean_recall,
        };
        tracing::info!(
            epoch,
            loss = report.train_loss,
            valid_loss,
            valid_mean_recall = valid.mean_recall,
            "epoch done"
        );
        // `<` is false for NaN: a diverged epoch is never kept.
        if valid_loss < best_loss || best_epoch == 0 {
            best_loss = valid_loss;
            best_epoch = epoch;
            best.copy(&vs)
                .map_err(torch_err("keeping the best epoch"))?;
        }
        epochs.push(report);
    }
    let mut vs = vs;
    vs.copy(&best)
        .map_err(torch_err("restoring the best epoch"))?;
    let (_, predicted) = evaluate(&net, &valid_x, &valid_y, device);
    let valid = MulticlassMetrics::from_labels(classes, &valid_truth, &predicted);
    let (_, predicted) = evaluate(&net, &test_x, &test_y, device);
    let test = MulticlassMetrics::from_labels(classes, &classes_of(&test_y), &predicted);
    let report = Conv1dTrainReport {
        config: cfg.clone(),
        device: format!("{device:?}"),
        classes: classes.to_vec(),
        windows: counts,
        events,
        epochs,
        best_epoch,
        valid,
        test,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((vs, net, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(i: usize, waveform: Vec<f32>) -> Example {
        Example {
            window_id: format!("w{i}"),
            group: format!("ev{i}"),
            waveform,
            ..Example::default()
        }
    }

    #[test]
    fn bad_windows_are_refused_naming_them() {
        let classes = vec!["pre".to_string(), "post".to_string()];
        let good = example(0, vec![0.5; WAVEFORM_LEN]);
        let short = example(1, vec![0.5; 2500]);
        let mut nan = vec![0.5; WAVEFORM_LEN];
        nan[2500 + 7] = f32::NAN;
        let nan = example(2, nan);
        fn at(example: &Example, class: usize, split: Split) -> ClassedWindow<'_> {
            ClassedWindow {
                example,
                class,
                split,
            }
        }
        let (good, short, nan) = (&good, &short, &nan);
        let cfg = Conv1dTrainConfig {
            epochs: 1,
            ..Default::default()
        };
        let run = |ws: &[ClassedWindow]| {
            train_conv1d(ws, &classes, &cfg, Device::Cpu)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let err = run(&[
            at(good, 0, Split::Train),
            at(short, 1, Split::Valid),
            at(good, 1, Split::Test),
        ]);
        assert!(err.contains("window w1 has 2500 waveform samples"), "{err}");
        let err = run(&[
            at(good, 0, Split::Train),
            at(nan, 1, Split::Valid),
            at(good, 1, Split::Test),
        ]);
        assert!(
            err.contains("window w2: sample 7 of channel 1 is NaN"),
            "{err}"
        );
        let err = run(&[at(good, 2, Split::Train)]);
        assert!(err.contains("class 2, the model has 2 classes"), "{err}");
        let err = run(&[at(good, 0, Split::Train), at(good, 1, Split::Test)]);
        assert!(err.contains("[1, 0, 1] windows"), "{err}");
    }
}
