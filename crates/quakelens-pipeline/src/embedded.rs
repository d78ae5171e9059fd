//! The embedded runner: every stage in one process, no broker. Input files (or the synthetic
//! generator) → windows → spectrograms + features → labels → lake.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use quakelens_lake::{LakeError, LakeWriter, WindowRecord};
use quakelens_signal::stream::ChannelOrder;
use quakelens_synth::{read_catalog, write_dataset, CatalogError, SynthConfig, WriteError};

use crate::config::PipelineConfig;
use crate::dset::{read_dset, DsetError};
use crate::ingest::{collect_inputs, decode_files, IngestError};
use crate::labels::Labeller;
use crate::score::{ScoreError, Scorer};
use crate::transform::WindowTransformer;
use crate::windowing::window_traces;

/// Where the data comes from.
#[derive(Clone, Debug)]
pub enum Input {
    /// miniSEED files and/or directories.
    Paths(Vec<PathBuf>),
    /// Generate a labelled synthetic dataset into `dir`, then process it like real data.
    Synthetic { config: SynthConfig, dir: PathBuf },
    /// A Laurenti D-set directory (HDF5 traces + attribute CSVs); `rows` is the component order
    /// of each dataset's rows.
    Dset { dir: PathBuf, rows: ChannelOrder },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("writing synthetic data: {0}")]
    Synthetic(#[from] WriteError),
    #[error("catalogue: {0}")]
    Catalog(#[from] CatalogError),
    #[error("lake: {0}")]
    Lake(#[from] LakeError),
    #[error("scoring: {0}")]
    Score(#[from] ScoreError),
    #[error("D-set: {0}")]
    Dset(#[from] DsetError),
    #[error("no decodable waveform data in the input:\n  {0}")]
    NoData(String),
    #[error("explaining the CNN: {0}")]
    Explain(String),
}

/// Accounting of a run: every input record ends up in a window, or in one of these lists.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub files: usize,
    pub records: usize,
    pub failed_files: Vec<String>,
    pub decode_warnings: Vec<String>,
    pub traces: usize,
    pub streams: usize,
    pub unassembled: Vec<String>,
    pub resampled_segments: u64,
    pub snapped_segments: u64,
    pub overlap_samples: u64,
    pub windows: usize,
    pub windows_with_filled_gaps: usize,
    pub dropped_windows: Vec<String>,
    /// D-set traces not used, with the reason (fewer than 3 rows, wrong length, NaN).
    pub skipped_traces: Vec<String>,
    pub merged_onsets: usize,
    pub labelled: usize,
    /// CNN scores and forest magnitudes written (0 without models).
    pub scored: usize,
    pub magnitudes: usize,
    /// Windows whose magnitude was explained (TreeSHAP rows in `forest_shap`).
    pub explained: usize,
    /// Windows whose CNN score was explained (image SHAP rows in `cnn_shap`).
    pub cnn_explained: usize,
    /// Windows the forest could not score, with the reason.
    pub unscored: Vec<String>,
    /// Content hashes of the models used.
    pub cnn_model: Option<String>,
    pub forest_model: Option<String>,
    pub rows_written: usize,
    pub lake_files: usize,
    pub lake: PathBuf,
    pub seconds: f64,
}

fn bar(enabled: bool, len: usize, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// Runs the whole pipeline on `input` with `cfg`, writing into `cfg.lake`.
pub fn run(input: Input, cfg: &PipelineConfig) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let (paths, generated_catalog) = match input {
        Input::Dset { dir, rows } => return run_dset(&dir, rows, cfg, started),
        Input::Paths(paths) => (paths, None),
        Input::Synthetic { config, dir } => {
            let data = quakelens_synth::generate(&config);
            let written = write_dataset(&dir, &data)?;
            tracing::info!(events = config.events, dir = %dir.display(), "generated synthetic dataset");
            (vec![dir], Some(written.catalog))
        }
    };
    // An explicit catalogue wins over the one written beside synthetic data.
    let catalog_path = cfg.catalog.clone().or(generated_catalog);
    let files = collect_inputs(&paths)?;
    let mut report = RunReport {
        files: files.len(),
        lake: cfg.lake.clone(),
        ..RunReport::default()
    };

    let pb = bar(cfg.progress, files.len(), "decoding");
    let ingested = decode_files(&files, || pb.inc(1));
    pb.finish_and_clear();
    report.records = ingested.records;
    report.traces = ingested.traces.len();
    report.failed_files = ingested.failed_files;
    report.decode_warnings = ingested.warnings.iter().map(|w| w.to_string()).collect();
    for w in &report.decode_warnings {
        tracing::warn!("{w}");
    }
    for f in &report.failed_files {
        tracing::warn!("{f}");
    }
    if ingested.traces.is_empty() {
        return Err(RunError::NoData(report.failed_files.join("\n  ")));
    }

    let windowed = window_traces(ingested.traces, cfg);
    report.streams = windowed.streams;
    report.unassembled = windowed.unassembled;
    report.resampled_segments = windowed.stats.resampled_segments;
    report.snapped_segments = windowed.stats.snapped_segments;
    report.overlap_samples = windowed.stats.overlap_samples;
    report.dropped_windows = windowed.dropped.iter().map(|d| d.to_string()).collect();
    report.merged_onsets = windowed.merged_onsets;
    report.windows = windowed.windows.len();
    report.windows_with_filled_gaps = windowed.windows.iter().filter(|w| w.gap_runs > 0).count();
    for u in &report.unassembled {
        tracing::warn!("{u}");
    }
    for d in &report.dropped_windows {
        tracing::warn!("dropped window: {d}");
    }

    let labeller = match &catalog_path {
        Some(path) => Some(Labeller::new(read_catalog(path)?, cfg.label_tolerance_s)),
        None => None,
    };
    let sink = Sink::open(cfg, &mut report)?;
    let transformer = WindowTransformer::new(cfg.spectrogram, cfg.scaling.clone());
    let pb = bar(cfg.progress, windowed.windows.len(), "windows");
    for chunk in windowed.windows.chunks(cfg.batch_windows.max(1)) {
        let mut records = transformer.transform(chunk, || pb.inc(1));
        if let Some(l) = &labeller {
            report.labelled += l.label(&mut records);
        }
        sink.write(&records, &mut report)?;
    }
    pb.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The end of every run: lake tables, plus scores when models are loaded.
struct Sink {
    writer: LakeWriter,
    scorer: Scorer,
    /// CNN explanation budget (0: off) and where its values sit.
    explain_evals: usize,
    axes: Option<quakelens_lake::SpectrogramAxes>,
}

impl Sink {
    fn open(cfg: &PipelineConfig, report: &mut RunReport) -> Result<Self, RunError> {
        let writer = LakeWriter::open(&cfg.lake, cfg.spectrogram_shape())?;
        let mut scorer = Scorer::load(&cfg.models, cfg.score_batch)?;
        scorer.explain = true;
        report.cnn_model = scorer.cnn.as_ref().map(|m| m.hash.0.clone());
        report.forest_model = scorer
            .forest
            .as_ref()
            .and_then(|(f, _)| f.hash.as_ref().map(|h| h.0.clone()));
        let axes = if cfg.explain_evals > 0 && scorer.cnn.is_some() {
            Some(
                crate::transform::spectrogram_axes(cfg.spectrogram_shape())
                    .map_err(|e| RunError::Explain(format!("--explain-cnn: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            writer,
            scorer,
            explain_evals: cfg.explain_evals,
            axes,
        })
    }

    fn write(&self, records: &[WindowRecord], report: &mut RunReport) -> Result<(), RunError> {
        let written = self.writer.write(records)?;
        report.rows_written += written.rows;
        report.lake_files += written.files.len();
        if !self.scorer.is_empty() {
            let scored = self.scorer.score(records)?;
            report.scored += scored.scores.len();
            report.magnitudes += scored.magnitudes.len();
            report.lake_files += self.writer.write_scores(&scored.scores)?.files.len();
            report.lake_files += self
                .writer
                .write_magnitudes(&scored.magnitudes)?
                .files
                .len();
            report.unscored.extend(scored.unscored);
            if let (Some(model), Some(axes)) = (&self.scorer.cnn, &self.axes) {
                let masker = quakelens_explain::image::Masker::Blur { sigma: 2.0 };
                let rows = records
                    .iter()
                    .map(|r| {
                        crate::score::cnn_explanation(
                            model,
                            &quakelens_lake::WindowKey::of(r),
                            &r.spectrogram,
                            self.explain_evals,
                            masker,
                        )
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(RunError::Explain)?;
                report.cnn_explained += rows.len();
                report.lake_files += self.writer.write_cnn_shap(&rows, axes)?.files.len();
            }
            if let Some((forest, _)) = &self.scorer.forest {
                report.explained += scored.forest_shap.len();
                report.lake_files += self
                    .writer
                    .write_forest_shap(&scored.forest_shap, &forest.spec.features)?
                    .files
                    .len();
            }
        }
        Ok(())
    }
}

/// D-set traces are already P-aligned 25 s windows: transform, label from the file names and
/// attribute CSVs, score, write.
fn run_dset(
    dir: &std::path::Path,
    rows: ChannelOrder,
    cfg: &PipelineConfig,
    started: Instant,
) -> Result<RunReport, RunError> {
    let batch = read_dset(dir, rows, cfg.order)?;
    let mut report = RunReport {
        files: batch.files,
        traces: batch.windows.len() + batch.skipped.len(),
        windows: batch.windows.len(),
        skipped_traces: batch.skipped.clone(),
        lake: cfg.lake.clone(),
        ..RunReport::default()
    };
    for s in &report.skipped_traces {
        tracing::warn!("skipped trace: {s}");
    }
    let sink = Sink::open(cfg, &mut report)?;
    let transformer = WindowTransformer::new(cfg.spectrogram, cfg.scaling.clone());
    let pb = bar(cfg.progress, batch.windows.len(), "traces");
    let size = cfg.batch_windows.max(1);
    for (i, chunk) in batch.windows.chunks(size).enumerate() {
        let mut records = transformer.transform(chunk, || pb.inc(1));
        batch.label(&mut records, i * size);
        report.labelled += records.len();
        sink.write(&records, &mut report)?;
    }
    pb.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
