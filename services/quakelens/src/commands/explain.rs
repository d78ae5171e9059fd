//! `quakelens explain`: SHAP of the CNN for windows already in the lake. A spectrogram CNN's
//! image SHAP goes to `cnn_shap` (one row per spectrogram cell); a waveform CNN's time and
//! frequency explanations to `waveform_shap` (one row per cell). The forest's TreeSHAP values
//! come with `quakelens score`. Windows the model already has explanations for are skipped.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use quakelens_explain::image::{Masker, Part, Quantization, Shape};
use quakelens_lake::{Lake, LakeFormat, LakeLocation, LakeWriter, Table, WindowKey};
use quakelens_models::cnn::{default_device, CnnModel};
use quakelens_models::conv1d::{is_conv1d_file, WaveformModel};
use quakelens_models::dataset::{load_examples, Example, Selection};
use quakelens_pipeline::score::{cnn_explanation, cnn_explanation_part, ExplainTarget};
use quakelens_pipeline::stages::cnn_parts::add_parts;
use quakelens_pipeline::stages::explainer::MAX_PARTS;
use quakelens_pipeline::transform::spectrogram_axes;
use quakelens_pipeline::waveform_shap::{waveform_explanations, WaveformExplainConfig};
use quakelens_signal::bands::Bands;

use super::{literal, parse_lake, runtime, set_threads, DEFAULT_LAKE};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MaskerChoice {
    /// Gaussian blur of the spectrogram (σ = --blur pixels).
    Blur,
    /// Each channel's mean.
    Mean,
    /// Zero (the mean of standardised inputs).
    Zero,
    /// The study's: shap's `Image("inpaint_telea")` on 8-bit images quantised by one min–max
    /// over each batch of --batch windows; stored as method `partition-inpaint`.
    Inpaint,
}

impl MaskerChoice {
    /// The `cnn_shap.method` its explanations are stored under.
    fn method(self) -> &'static str {
        match self {
            MaskerChoice::Inpaint => "partition-inpaint",
            _ => "partition",
        }
    }

    /// The masker when it sees one window at a time (blur σ `blur`); `None` for inpainting,
    /// whose 8-bit range is a batch's.
    fn per_window(self, blur: f32) -> Option<Masker> {
        match self {
            MaskerChoice::Blur => Some(Masker::Blur { sigma: blur }),
            MaskerChoice::Mean => Some(Masker::ChannelMean),
            MaskerChoice::Zero => Some(Masker::Constant(0.0)),
            MaskerChoice::Inpaint => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// The CNN to explain (.safetensors or TorchScript .pt): a spectrogram CNN, or the paper's
    /// waveform CNN (a CONV1D file, on a lake made with --waveforms).
    #[arg(
        long,
        env = "QUAKELENS_CNN",
        default_value = "quakelens-data/models/cnn.safetensors"
    )]
    cnn: PathBuf,
    /// Model evaluations per window (shap's max_evals).
    #[arg(long, default_value_t = 1000)]
    max_evals: usize,
    /// What a removed cell becomes: default blur for a spectrogram CNN, zero (silence) for a
    /// waveform CNN, where a blurred segment would keep its low frequencies.
    #[arg(long, value_enum)]
    masker: Option<MaskerChoice>,
    /// σ in pixels for the blur masker (in samples for a waveform CNN).
    #[arg(long, default_value_t = 2.0)]
    blur: f32,
    /// The output explained: `margin` (aftershock minus foreshock logit) or `top-class` (the
    /// predicted class's logit, as the study's `outputs=shap.Explanation.argsort.flip[:1]`).
    #[arg(long, default_value = "margin")]
    target: String,
    /// Windows quantised together by the inpaint masker (the study explained batches of 50).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Explain each window in this many parts (as explainer workers do for budgets above
    /// --evals-per-task) and add them up: the same values the services land.
    #[arg(long, default_value_t = 1)]
    parts: usize,
    /// Explain at most this many windows (in window-id order).
    #[arg(long)]
    limit: Option<usize>,
    /// Only windows matching this SQL condition on `w` (windows).
    #[arg(long)]
    filter: Option<String>,
    #[arg(long)]
    threads: Option<usize>,
    /// Waveform CNN: the time segment each channel is cut into, in seconds (the players of the
    /// time explanation).
    #[arg(long, default_value_t = 1.0)]
    segment_s: f64,
    /// Waveform CNN: the cut frequencies (Hz) of the bands the frequency explanation removes by
    /// band-stop masking: `1,2,5,10,20` gives 0–1, 1–2, 2–5, 5–10, 10–20 and 20–50 Hz;
    /// `none` for no frequency explanation.
    #[arg(long, default_value = "1,2,5,10,20")]
    bands: String,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    set_threads(args.threads)?;
    anyhow::ensure!(args.max_evals >= 2, "--max-evals must be at least 2");
    anyhow::ensure!(
        (1..=MAX_PARTS).contains(&args.parts),
        "--parts must be between 1 and {MAX_PARTS}"
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let target: ExplainTarget = args.target.parse().map_err(anyhow::Error::msg)?;
    if is_conv1d_file(&args.cnn)? {
        return explain_waveforms(&args, target);
    }
    let masker_choice = args.masker.unwrap_or(MaskerChoice::Blur);
    let method = masker_choice.method();
    let model = CnnModel::load(&args.cnn, default_device()?)
        .with_context(|| format!("loading {}", args.cnn.display()))?;
    let rt = runtime()?;
    let same_target = match target {
        ExplainTarget::Margin => "target = 'margin'",
        ExplainTarget::TopClass => "target LIKE 'logit:%'",
    };
    let done = format!(
        "SELECT DISTINCT window_id FROM cnn_shap WHERE model_hash = {} AND method = {} AND {same_target}",
        literal(&model.hash.0),
        literal(method)
    );
    let sel = Selection {
        spectrograms: true,
        ..Selection::default()
    };
    let (format, examples) = rt.block_on(unexplained(&args, Table::CnnShap, &done, sel))?;
    let [channels, height, width] = format.shape;
    let shape = Shape {
        channels,
        height,
        width,
    };
    if model.input_shape() != [channels as i64, height as i64, width as i64] {
        bail!(
            "the CNN takes {:?}, the lake holds spectrograms of {:?}",
            model.input_shape(),
            format.shape
        );
    }
    model.check_input(&format.input)?;
    let axes = spectrogram_axes(format.shape).map_err(anyhow::Error::msg)?;
    let mut writer = rt.block_on(LakeWriter::open(&args.lake, format))?;
    let started = Instant::now();
    let mut worst = 0.0f64;
    let mut rows = Vec::new();
    let mut windows_written = 0;
    for batch in examples.chunks(args.batch) {
        let (masker, batch_id) = match masker_choice.per_window(args.blur) {
            Some(m) => (m, None),
            None => {
                let q = Quantization::of_batch(batch.iter().map(|e| &e.spectrogram[..]))
                    .with_context(|| {
                        format!(
                            "windows {} to {}: every spectrogram value is the same (or none is finite); there is no 8-bit range to inpaint on",
                            batch[0].window_id,
                            batch[batch.len() - 1].window_id
                        )
                    })?;
                let id = format!("{}+{}", batch[0].window_id, batch.len());
                (Masker::Inpaint(q), Some(id))
            }
        };
        for e in batch {
            let key = WindowKey::of(e);
            let mut r = if args.parts == 1 {
                cnn_explanation(&model, &key, &e.spectrogram, args.max_evals, masker, target)
            } else {
                (0..args.parts)
                    .map(|index| {
                        let part = Part {
                            index,
                            count: args.parts,
                        };
                        cnn_explanation_part(
                            &model,
                            &key,
                            &e.spectrogram,
                            args.max_evals,
                            masker,
                            target,
                            part,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(add_parts)
            }
            .map_err(anyhow::Error::msg)?;
            r.method = method.into();
            r.batch = batch_id.clone();
            let sum: f64 = r.values.iter().map(|&v| v as f64).sum();
            // The values are stored as f32: the sum is checked at that precision.
            worst = worst.max((sum - (r.output - r.base_value)).abs());
            rows.push(r);
            if rows.len() == 16 {
                windows_written += rt.block_on(writer.write_cnn_shap(&rows, &axes, &[]))?.rows;
                rows.clear();
            }
        }
    }
    windows_written += rt.block_on(writer.write_cnn_shap(&rows, &axes, &[]))?.rows;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "cnn_shap  {windows_written} windows explained ({method}, {} evaluations, {:?} masker, {} output) in {seconds:.1} s ({:.3} s/window), {} rows each; largest additivity error {worst:.1e}",
        args.max_evals,
        masker_choice,
        target.name(),
        seconds / examples.len().max(1) as f64,
        shape.len()
    );
    Ok(())
}

/// The paper's waveform CNN: time and band explanations of windows with samples, landing in
/// `waveform_shap`.
fn explain_waveforms(args: &ExplainArgs, target: ExplainTarget) -> anyhow::Result<()> {
    let rate = quakelens_signal::TARGET_RATE_HZ;
    let masker_choice = args.masker.unwrap_or(MaskerChoice::Zero);
    let Some(masker) = masker_choice.per_window(args.blur) else {
        bail!(
            "--masker inpaint is for spectrogram images: use zero, mean or blur for a waveform CNN"
        )
    };
    let bands = match args.bands.trim() {
        "none" => None,
        text => {
            let cuts = text
                .split(',')
                .map(|c| {
                    c.trim()
                        .parse::<f64>()
                        .with_context(|| format!("--bands {text:?}: {c:?} is not a frequency"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(Bands::new(cuts, rate).map_err(|e| anyhow::anyhow!("--bands: {e}"))?)
        }
    };
    let cfg = WaveformExplainConfig {
        segment_s: args.segment_s,
        max_evals: args.max_evals,
        masker,
        bands,
        target,
        batch: 32,
    };
    let model = WaveformModel::load(&args.cnn, default_device()?)
        .with_context(|| format!("loading {}", args.cnn.display()))?;
    let rt = runtime()?;
    let done = format!(
        "SELECT DISTINCT window_id FROM waveform_shap WHERE model_hash = {} AND method = 'partition'",
        literal(&model.hash.0)
    );
    let sel = Selection {
        waveforms: true,
        ..Selection::default()
    };
    let (format, examples) = rt.block_on(unexplained(args, Table::WaveformShap, &done, sel))?;
    let mut writer = rt.block_on(LakeWriter::open(&args.lake, format))?;
    let started = Instant::now();
    let (mut worst, mut written, mut rows) = (0.0f64, 0, Vec::new());
    for e in &examples {
        let records = waveform_explanations(&model, &WindowKey::of(e), &e.waveform, rate, &cfg)
            .map_err(anyhow::Error::msg)?;
        for r in records {
            let sum: f64 = r.cells.iter().map(|c| c.value as f64).sum();
            worst = worst.max((sum - (r.output - r.base_value)).abs());
            rows.push(r);
        }
        if rows.len() >= 16 {
            written += rt.block_on(writer.write_waveform_shap(&rows, &[]))?.rows;
            rows.clear();
        }
    }
    written += rt.block_on(writer.write_waveform_shap(&rows, &[]))?.rows;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "waveform_shap  {} windows explained ({written} explanations: {} s segments, {} evaluations, {:?} masker; bands {}; {} output) in {seconds:.1} s ({:.3} s/window); largest additivity error {worst:.1e}",
        examples.len(),
        args.segment_s,
        args.max_evals,
        masker_choice,
        args.bands,
        target.name(),
        seconds / examples.len().max(1) as f64,
    );
    Ok(())
}

/// The lake's format and its windows (read as `sel` says) that match --filter and are not among
/// `done` (the ids a query on `table` gives), once `table` exists: in window-id order, at most
/// --limit of them.
async fn unexplained(
    args: &ExplainArgs,
    table: Table,
    done: &str,
    sel: Selection,
) -> anyhow::Result<(LakeFormat, Vec<Example>)> {
    let lake = Lake::open(&args.lake).await?;
    let format = *lake
        .format()
        .ok_or_else(|| anyhow::anyhow!("the lake at {} holds no windows", args.lake))?;
    let mut conditions: Vec<String> = args.filter.iter().map(|f| format!("({f})")).collect();
    if lake.has(table) {
        conditions.push(format!("w.window_id NOT IN ({done})"));
    }
    let sel = Selection {
        filter: (!conditions.is_empty()).then(|| conditions.join(" AND ")),
        ..sel
    };
    let mut examples = load_examples(&lake, &sel)
        .await
        .with_context(|| format!("explaining {}", args.cnn.display()))?;
    examples.sort_by(|a, b| a.window_id.cmp(&b.window_id));
    examples.truncate(args.limit.unwrap_or(usize::MAX));
    Ok((format, examples))
}
