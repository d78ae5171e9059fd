//! `quakelens experiment lowpass`: the paper's key experiment. The waveforms are low-pass
//! filtered at each cutoff (zero-phase Butterworth, scipy's `sosfiltfilt`), and the 1-D CNN is
//! trained on them, or a given model is evaluated on them. The command prints the held-out mean
//! per-class recall per cutoff and draws the curve.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use quakelens_models::cnn::default_device;
use quakelens_models::conv1d::{train_conv1d, WaveformModel, WAVEFORM_SHAPE};
use quakelens_models::dataset::{Example, Split};
use quakelens_models::metrics::MulticlassMetrics;
use quakelens_signal::lowpass::Lowpass;
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
    /// Evaluate this CONV1D model instead of training one per cutoff. It is scored on the
    /// test side of the same split.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the curve (PNG) goes; the table goes beside it as JSON.
    #[arg(long, default_value = "quakelens-data/lowpass.png")]
    out: PathBuf,
}

pub fn run(cmd: ExperimentCommand) -> anyhow::Result<()> {
    match cmd {
        ExperimentCommand::Lowpass(a) => lowpass(a),
    }
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
    let model = a
        .model
        .as_deref()
        .map(|p| WaveformModel::load(p, device))
        .transpose()?;
    if let Some(m) = &model {
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
    // Held-out metrics of one version of the waveforms.
    let score = |examples: &[Example]| -> anyhow::Result<MulticlassMetrics> {
        let windows = data.classed(examples);
        match &model {
            Some(m) => {
                let test: Vec<_> = windows.iter().filter(|w| w.split == Split::Test).collect();
                let inputs: Vec<&[f32]> =
                    test.iter().map(|w| w.example.waveform.as_slice()).collect();
                let predicted: Vec<usize> = m
                    .classify(&inputs, 64)?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect();
                let truth: Vec<usize> = test.iter().map(|w| w.class).collect();
                Ok(MulticlassMetrics::from_labels(names, &truth, &predicted))
            }
            None => Ok(train_conv1d(&windows, names, &cfg, device)?.2.test),
        }
    };
    let how = if model.is_some() {
        "evaluated"
    } else {
        "trained"
    };
    println!(
        "low-pass experiment: {} classes, {how} on {} windows, Butterworth order {} zero-phase",
        names.len(),
        data.examples.len(),
        a.order
    );
    let unfiltered = score(&data.examples)?;
    print_metrics("none", &unfiltered);
    let mut rows = Vec::new();
    for f in &filters {
        let m = score(&filtered(&data.examples, f)?)?;
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
