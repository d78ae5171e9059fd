//! `quakelens experiment lowpass`: the paper's key experiment. The waveforms are low-pass
//! filtered at each cutoff (zero-phase Butterworth, scipy's `sosfiltfilt`), and the 1-D CNN is
//! trained on them, or a given model is evaluated on them; with `--arch cnn2d` the study's 2-D
//! CNN is, on spectrograms recomputed from the filtered waveforms. The command prints the
//! held-out mean per-class recall per cutoff and draws the curve.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use quakelens_lake::LakeFormat;
use quakelens_models::cnn::{default_device, train_cnn_on, CnnModel, CnnTrainConfig};
use quakelens_models::conv1d::{train_conv1d, ClassedWindow, WaveformModel, WAVEFORM_SHAPE};
use quakelens_models::dataset::{Example, Split};
use quakelens_models::metrics::MulticlassMetrics;
use quakelens_signal::lowpass::Lowpass;
use quakelens_signal::spectrogram::{SpectrogramParams, SpectrogramTransform, TransformScratch};
use quakelens_signal::TARGET_RATE_HZ;

use super::set_threads;
use super::train::{create_parent, Common};
use super::train_conv1d::{print_metrics, PaperData, TrainingArgs, TtfArgs};

#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Accuracy against low-pass cutoff (Laurenti et al. 2024): trains the 1-D CNN on filtered
    /// waveforms at each cutoff, or evaluates --model on them.
    Lowpass(LowpassArgs),
}

#[derive(Args, Debug)]
pub struct LowpassArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    ttf: TtfArgs,
    #[command(flatten)]
    training: TrainingArgs,
    /// Cutoffs (Hz), comma-separated.
    #[arg(long, default_value = "1,2,5,10,20,30", value_delimiter = ',')]
    cutoffs: Vec<f64>,
    /// Butterworth order. The filter runs forward and backward, so the response is its
    /// square: -6 dB at the cutoff.
    #[arg(long, default_value_t = 4)]
    order: usize,
    /// The model: the paper's 1-D CNN on the samples, or the study's 2-D CNN on spectrograms
    /// recomputed from the filtered samples (2 classes).
    #[arg(long, value_enum, default_value_t = Arch::Conv1d)]
    arch: Arch,
    /// Evaluate this model (CONV1D, or CNN2D with --arch cnn2d) instead of training one per
    /// cutoff. It is scored on the test side of the same split.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the curve (PNG) goes; the table goes beside it as JSON.
    #[arg(long, default_value = "quakelens-data/lowpass.png")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Arch {
    Conv1d,
    Cnn2d,
}

/// The model evaluated at every cutoff.
enum Given {
    Conv1d(WaveformModel),
    Cnn2d(CnnModel),
}

pub fn run(cmd: ExperimentCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Lowpass(a) => lowpass(a),
    }
}

/// `examples` with their spectrograms recomputed from their samples as the lake computes them
/// (the study's `scipy.signal.spectrogram` settings and the lake's image input).
fn with_spectrograms(examples: Vec<Example>, format: &LakeFormat) -> anyhow::Result<Vec<Example>> {
    let t = SpectrogramTransform::new(SpectrogramParams::default(), format.input);
    let n = WAVEFORM_SHAPE[1] as usize;
    if t.output_len(n) != format.shape.iter().product::<usize>() {
        bail!(
            "the lake's spectrograms are {:?}, not what the study's settings make from {n} samples",
            format.shape
        );
    }
    let mut scratch = TransformScratch::default();
    examples
        .into_iter()
        .map(|mut e| {
            let c: Vec<Vec<f64>> = e
                .waveform
                .chunks(n)
                .map(|c| c.iter().map(|&v| f64::from(v)).collect())
                .collect();
            if c.len() != 3 {
                bail!(
                    "window {}: {} waveform values",
                    e.window_id,
                    e.waveform.len()
                );
            }
            e.spectrogram.clear();
            t.transform([&c[0], &c[1], &c[2]], &mut e.spectrogram, &mut scratch);
            Ok(e)
        })
        .collect()
}

/// The 2-D CNN trained on `windows`' sides with `train cnn`'s recipe (Adam, the best
/// validation accuracy kept); its test metrics in the classes' terms.
fn train_cnn2d(
    windows: &[ClassedWindow<'_>],
    names: &[String],
    format: &LakeFormat,
    cfg: &CnnTrainConfig,
    device: tch::Device,
) -> anyhow::Result<MulticlassMetrics> {
    let labelled: Vec<(Example, Split)> = windows
        .iter()
        .map(|w| {
            let mut e = w.example.clone();
            e.label = Some(w.class as i32);
            (e, w.split)
        })
        .collect();
    let mut parts: [Vec<&Example>; 3] = Default::default();
    for (e, side) in &labelled {
        parts[*side as usize].push(e);
    }
    let cfg = CnnTrainConfig {
        input: format.shape.map(|v| v as i64),
        ..cfg.clone()
    };
    let (_, _, report) = train_cnn_on(parts, &cfg, device)?;
    // The test confusion matrix, back to the labels it counts.
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    for (t, row) in report.test.confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            truth.extend(std::iter::repeat_n(t, count));
            predicted.extend(std::iter::repeat_n(p, count));
        }
    }
    Ok(MulticlassMetrics::from_labels(names, &truth, &predicted))
}

/// Every window's samples through `filter`, channel by channel.
fn filtered(examples: &[Example], filter: &Lowpass) -> anyhow::Result<Vec<Example>> {
    let n = WAVEFORM_SHAPE[1] as usize;
    examples
        .iter()
        .map(|e| {
            let mut out = e.clone();
            out.waveform.clear();
            for channel in e.waveform.chunks(n) {
                let x: Vec<f64> = channel.iter().map(|&v| f64::from(v)).collect();
                let y = filter
                    .filtfilt(&x)
                    .with_context(|| format!("window {}", e.window_id))?;
                out.waveform.extend(y.into_iter().map(|v| v as f32));
            }
            Ok(out)
        })
        .collect()
}

fn lowpass(a: LowpassArgs) -> anyhow::Result<()> {
    set_threads(a.common.threads)?;
    if a.cutoffs.is_empty() {
        bail!("--cutoffs: give at least one cutoff");
    }
    let filters: Vec<Lowpass> = a
        .cutoffs
        .iter()
        .map(|&c| Lowpass::new(c, a.order, TARGET_RATE_HZ))
        .collect::<Result<_, _>>()?;
    let data = PaperData::load(&a.common, &a.ttf)?;
    let names = &data.labels.names;
    let device = default_device()?;
    if a.arch == Arch::Cnn2d && names.len() != 2 {
        bail!(
            "--arch cnn2d: the study's 2-D CNN separates 2 classes, not {}: use --classes 2",
            names.len()
        );
    }
    let model = match (&a.model, a.arch) {
        (None, _) => None,
        (Some(p), Arch::Conv1d) => Some(Given::Conv1d(WaveformModel::load(p, device)?)),
        (Some(p), Arch::Cnn2d) => {
            let m = CnnModel::load(p, device)?;
            m.check_input(&data.format.input)?;
            if m.input_shape() != data.format.shape.map(|v| v as i64) {
                bail!(
                    "the CNN takes {:?}, the lake's spectrograms are {:?}",
                    m.input_shape(),
                    data.format.shape
                );
            }
            Some(Given::Cnn2d(m))
        }
    };
    if let Some(Given::Conv1d(m)) = &model {
        if &m.classes != names {
            bail!(
                "the model's classes ({}) are not these options' ({}): pass the --classes, \
                 --mainshock and --middle it was trained with",
                m.classes.join(", "),
                names.join(", ")
            );
        }
    }
    let cfg = a.training.config(a.common.seed, !a.common.quiet);
    let cnn_cfg = CnnTrainConfig {
        epochs: cfg.epochs,
        batch: cfg.batch,
        learning_rate: cfg.learning_rate,
        seed: cfg.seed,
        progress: cfg.progress,
        ..CnnTrainConfig::default()
    };
    // Held-out metrics of one version of the waveforms.
    let score = |examples: Vec<Example>| -> anyhow::Result<MulticlassMetrics> {
        let examples = match a.arch {
            Arch::Conv1d => examples,
            Arch::Cnn2d => with_spectrograms(examples, &data.format)?,
        };
        let windows = data.classed(&examples);
        let test: Vec<_> = windows.iter().filter(|w| w.split == Split::Test).collect();
        let truth: Vec<usize> = test.iter().map(|w| w.class).collect();
        let predicted: Vec<usize> = match &model {
            Some(Given::Conv1d(m)) => {
                let inputs: Vec<&[f32]> =
                    test.iter().map(|w| w.example.waveform.as_slice()).collect();
                m.classify(&inputs, 64)?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect()
            }
            Some(Given::Cnn2d(m)) => {
                let mut predicted = Vec::with_capacity(test.len());
                for chunk in test.chunks(64) {
                    let inputs: Vec<f32> = chunk
                        .iter()
                        .flat_map(|w| w.example.spectrogram.iter().copied())
                        .collect();
                    predicted.extend(
                        m.logits(&inputs, chunk.len())?
                            .iter()
                            .map(|l| quakelens_lake::predicted_index(l)),
                    );
                }
                predicted
            }
            None if a.arch == Arch::Conv1d => {
                return Ok(train_conv1d(&windows, names, &cfg, device)?.2.test)
            }
            None => return train_cnn2d(&windows, names, &data.format, &cnn_cfg, device),
        };
        Ok(MulticlassMetrics::from_labels(names, &truth, &predicted))
    };
    let how = if model.is_some() {
        "evaluated"
    } else {
        "trained"
    };
    println!(
        "low-pass experiment: {:?}, {} classes, {how} on {} windows, Butterworth order {} zero-phase",
        a.arch,
        names.len(),
        data.examples.len(),
        a.order
    );
    let unfiltered = score(data.examples.clone())?;
    print_metrics("none", &unfiltered);
    let mut rows = Vec::new();
    for f in &filters {
        let m = score(filtered(&data.examples, f)?)?;
        print_metrics(&format!("{} Hz", f.cutoff_hz), &m);
        rows.push((f.cutoff_hz, m));
    }
    println!("\n| cutoff (Hz) | mean per-class recall | accuracy | windows |");
    println!("|---|---|---|---|");
    println!(
        "| none | {:.4} | {:.4} | {} |",
        unfiltered.mean_recall, unfiltered.accuracy, unfiltered.n
    );
    for (c, m) in &rows {
        println!(
            "| {c} | {:.4} | {:.4} | {} |",
            m.mean_recall, m.accuracy, m.n
        );
    }
    create_parent(&a.out)?;
    let points: Vec<(f64, f64)> = rows.iter().map(|(c, m)| (*c, m.mean_recall)).collect();
    quakelens_plot::figures::cutoff_curve(
        &points,
        Some(unfiltered.mean_recall),
        1.0 / names.len() as f64,
        &format!("{} classes: recall vs low-pass", names.len()),
        "mean per-class recall",
    )?
    .save(&a.out)?;
    let json = serde_json::json!({
        "arch": format!("{:?}", a.arch).to_lowercase(),
        "classes": names,
        "order": a.order,
        "mode": how,
        "model": a.model,
        "unfiltered": unfiltered,
        "cutoffs": rows.iter().map(|(c, m)| serde_json::json!({"cutoff_hz": c, "metrics": m})).collect::<Vec<_>>(),
    });
    let table = a.out.with_extension("json");
    std::fs::write(&table, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", table.display()))?;
    println!("\ncurve {}\ntable {}", a.out.display(), table.display());
    Ok(())
}
