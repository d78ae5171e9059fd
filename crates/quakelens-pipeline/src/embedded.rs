//! The embedded runner: every stage in one process, no broker. miniSEED files (or the
//! synthetic generator) go through the services' own stages ([`crate::run`]); the study's
//! D-set, whose traces are windows already, is transformed, labelled and scored here.
//!
//! Reruns are idempotent through the lake: the stages' sink drops rows whose keys the lake
//! holds; D-set chunks are committed with the position `run/<digest of their window ids>` (per
//! model for model outputs). Running the same input again writes nothing twice, and new models
//! add their rows beside the old ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use quakelens_lake::{LakeError, LakeLocation, LakeWriter, Table, Txn, WindowRecord};
use quakelens_signal::stream::ChannelOrder;
use quakelens_signal::window::fnv1a;
use quakelens_synth::{read_catalog, write_dataset, CatalogError, SynthConfig, WriteError};

use crate::config::PipelineConfig;
use crate::dset::{read_dset, DsetError};
use crate::ingest::{collect_inputs, IngestError};
use crate::score::{ScoreError, Scorer};
use crate::transform::WindowTransformer;

/// Where the data comes from.
#[derive(Clone, Debug)]
pub enum Input {
    /// miniSEED files and/or directories.
    Paths(Vec<PathBuf>),
    /// Generate a labelled synthetic dataset into `dir`, then process it like real data.
    Synthetic { config: SynthConfig, dir: PathBuf },
    /// The study's D-set directory (HDF5 traces + attribute CSVs, searched recursively);
    /// `rows` names the component of each dataset's rows (recorded, rows are not reordered).
    Dset { dir: PathBuf, rows: ChannelOrder },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("writing synthetic data")]
    Synthetic(#[from] WriteError),
    #[error("catalogue")]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("scoring")]
    Score(#[from] ScoreError),
    #[error("D-set input")]
    Dset(#[from] DsetError),
    #[error("no --lake given")]
    NoLake,
    #[error("starting the lake's I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no decodable waveform data in the input:\n  {0}")]
    NoData(String),
    #[error("explaining: {0}")]
    Explain(String),
    #[error("stage {0}")]
    Stage(String),
}

/// Accounting of a run: every input record ends up in a window, or in one of these lists.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub files: usize,
    pub records: usize,
    /// Files with no usable record, and bytes that were not a record (each list the first
    /// thousand; `dead_letters` counts every unusable message of every stage).
    pub failed_files: Vec<String>,
    pub decode_warnings: Vec<String>,
    pub dead_letters: usize,
    /// Messages a later stage refused (wrong format or model), with the reason.
    pub rejected: Vec<String>,
    /// Most input files indexed at once and the records they held (the read-ahead).
    pub read_ahead_files: usize,
    pub read_ahead_records: usize,
    pub streams: usize,
    pub unassembled: Vec<String>,
    pub resampled_segments: u64,
    pub snapped_segments: u64,
    pub overlap_samples: u64,
    pub windows: usize,
    pub windows_with_filled_gaps: usize,
    /// Windows with a constant (dead) channel: its image is all zero (see `flat_channels`).
    pub windows_with_flat_channels: usize,
    /// Rows not written because the lake held them already (an earlier run of the same input).
    pub already_in_lake: usize,
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
    pub lake: String,
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

/// The position name of a chunk of windows: a digest of the lake format and the windows' ids,
/// so the same windows (whatever run cut them) are recognised in the lake's log.
fn chunk_digest(cfg: &PipelineConfig, windows: &[quakelens_signal::window::Window]) -> String {
    let format = cfg.format();
    let text = windows.iter().fold(
        format!("{}|{}|{:?}", format.input, format.features, format.shape),
        |mut t, w| {
            t.push('|');
            t.push_str(&w.id);
            t
        },
    );
    format!("{:016x}", fnv1a(text.bytes()))
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
    let lake = cfg.lake.as_ref().ok_or(RunError::NoLake)?;
    // Refuses a directory without miniSEED before anything is opened.
    collect_inputs(&paths)?;
    let mut cfg = cfg.clone();
    // An explicit catalogue wins over the one written beside synthetic data.
    cfg.catalog = cfg.catalog.or(generated_catalog);
    if let Some(path) = &cfg.catalog {
        read_catalog(path)?;
    }
    let mut report = RunReport {
        lake: lake.to_string(),
        ..RunReport::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(crate::run::run_stages(paths, lake, &cfg, &mut report))?;
    if report.records == 0 {
        return Err(RunError::NoData(report.failed_files.join("\n  ")));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The end of every run: lake tables, plus scores when models are loaded.
struct Sink {
    writer: LakeWriter,
    runtime: tokio::runtime::Runtime,
    scorer: Scorer,
    format: quakelens_lake::LakeFormat,
    /// `run/<chunk digest>`: the position of the chunk being written.
    app: String,
    /// CNN explanation budget (0: off) and where its values sit.
    explain_evals: usize,
    axes: Option<quakelens_lake::SpectrogramAxes>,
    /// Which tables hold the current chunk (read from the log, then kept).
    held: std::collections::HashMap<Table, bool>,
}

impl Sink {
    fn open(
        lake: &LakeLocation,
        cfg: &PipelineConfig,
        report: &mut RunReport,
    ) -> Result<Self, RunError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?;
        let format = cfg.format();
        let writer = runtime.block_on(LakeWriter::open(lake, format))?;
        let mut scorer = Scorer::load(&cfg.models, cfg.score_batch)?;
        scorer.check(&format)?;
        scorer.explain = true;
        report.cnn_model = scorer.classifier_hash().map(String::from);
        report.forest_model = scorer.forest.as_ref().map(|f| f.hash());
        let axes = if cfg.explain_evals > 0 && scorer.cnn.is_some() {
            Some(
                crate::transform::spectrogram_axes(format.shape)
                    .map_err(|e| RunError::Explain(format!("--explain-cnn: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            writer,
            runtime,
            scorer,
            format,
            app: String::new(),
            explain_evals: cfg.explain_evals,
            axes,
            held: Default::default(),
        })
    }

    /// The chunk the next calls are about.
    fn start_chunk(&mut self, digest: String) {
        self.app = format!("run/{digest}");
        self.held.clear();
    }

    /// The position name of `table`'s rows: per model for model outputs.
    fn app_id(&self, table: Table) -> String {
        let model = match table {
            Table::Scores | Table::CnnShap | Table::WaveformShap => {
                self.scorer.classifier_hash().map(String::from)
            }
            Table::Magnitudes | Table::ForestShap => self.scorer.forest.as_ref().map(|f| f.hash()),
            Table::Windows | Table::Features => None,
        };
        match model {
            Some(m) => format!("{}/{m}", self.app),
            None => self.app.clone(),
        }
    }

    /// The tables this run writes.
    fn tables(&self) -> Vec<Table> {
        let mut t = vec![Table::Windows, Table::Features];
        if self.scorer.classifier_hash().is_some() {
            t.push(Table::Scores);
            if self.axes.is_some() && self.scorer.cnn.is_some() {
                t.push(Table::CnnShap);
            }
        }
        if self.scorer.forest.is_some() {
            t.extend([Table::Magnitudes, Table::ForestShap]);
        }
        t
    }

    /// Whether every table already holds the current chunk.
    fn done(&mut self) -> Result<bool, RunError> {
        for table in self.tables() {
            if !self.table_done(table)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn table_done(&mut self, table: Table) -> Result<bool, RunError> {
        if let Some(&held) = self.held.get(&table) {
            return Ok(held);
        }
        let app = self.app_id(table);
        let held = self
            .runtime
            .block_on(self.writer.txn_version(table, &app))?
            .is_some();
        self.held.insert(table, held);
        Ok(held)
    }

    /// The position the current chunk records in `table` (and, once committed, holds).
    fn txn(&mut self, table: Table) -> Vec<Txn> {
        self.held.insert(table, true);
        vec![Txn {
            app_id: self.app_id(table),
            version: 1,
        }]
    }

    /// Writes the current chunk into every table that lacks it.
    fn write(&mut self, records: &[WindowRecord], report: &mut RunReport) -> Result<(), RunError> {
        report.windows_with_flat_channels += records.iter().filter(|r| r.flat_channels > 0).count();
        for table in [Table::Windows, Table::Features] {
            if self.table_done(table)? {
                continue;
            }
            let txn = self.txn(table);
            let c = match table {
                Table::Windows => self
                    .runtime
                    .block_on(self.writer.write_windows(records, &txn))?,
                _ => self
                    .runtime
                    .block_on(self.writer.write_features(records, &txn))?,
            };
            if table == Table::Windows {
                report.rows_written += c.rows;
            }
            report.lake_files += c.files;
        }
        if self.scorer.is_empty() {
            return Ok(());
        }
        let scored = self.scorer.score(records, &self.format)?;
        report.scored += scored.scores.len();
        report.magnitudes += scored.magnitudes.len();
        report.unscored.extend(scored.unscored);
        if self.scorer.classifier_hash().is_some() && !self.table_done(Table::Scores)? {
            let txn = self.txn(Table::Scores);
            report.lake_files += self
                .runtime
                .block_on(self.writer.write_scores(&scored.scores, &txn))?
                .files;
        }
        if self.axes.is_some() && self.scorer.cnn.is_some() && !self.table_done(Table::CnnShap)? {
            let rows = self.cnn_explanations(records)?;
            report.cnn_explained += rows.len();
            let axes = self.axes.clone().expect("checked above");
            let txn = self.txn(Table::CnnShap);
            report.lake_files += self
                .runtime
                .block_on(self.writer.write_cnn_shap(&rows, &axes, &txn))?
                .files;
        }
        if let Some(names) = self
            .scorer
            .forest
            .as_ref()
            .map(|f| f.forest.spec.features.clone())
        {
            report.explained += scored.forest_shap.len();
            if !self.table_done(Table::Magnitudes)? {
                let txn = self.txn(Table::Magnitudes);
                report.lake_files += self
                    .runtime
                    .block_on(self.writer.write_magnitudes(&scored.magnitudes, &txn))?
                    .files;
            }
            if !self.table_done(Table::ForestShap)? {
                let txn = self.txn(Table::ForestShap);
                let groups = [(names, scored.forest_shap)];
                report.lake_files += self
                    .runtime
                    .block_on(self.writer.write_forest_shap(&groups, &txn))?
                    .files;
            }
        }
        Ok(())
    }

    /// Image SHAP of every record's spectrogram (the margin, blur masker).
    fn cnn_explanations(
        &self,
        records: &[WindowRecord],
    ) -> Result<Vec<quakelens_lake::CnnShapRecord>, RunError> {
        let Some(model) = &self.scorer.cnn else {
            return Ok(Vec::new());
        };
        let masker = quakelens_explain::image::Masker::Blur { sigma: 2.0 };
        records
            .iter()
            .map(|r| {
                crate::score::cnn_explanation(
                    model,
                    &quakelens_lake::WindowKey::of(r),
                    &r.spectrogram,
                    self.explain_evals,
                    masker,
                    crate::score::ExplainTarget::Margin,
                )
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(RunError::Explain)
    }
}

/// D-set traces are already P-aligned 25 s windows: transform, label from the file names and
/// attribute CSVs, score, write.
fn run_dset(
    dir: &Path,
    rows: ChannelOrder,
    cfg: &PipelineConfig,
    started: Instant,
) -> Result<RunReport, RunError> {
    let lake = cfg.lake.as_ref().ok_or(RunError::NoLake)?;
    let batch = read_dset(dir, rows)?;
    let mut report = RunReport {
        files: batch.files,
        windows: batch.windows.len(),
        skipped_traces: batch.skipped.clone(),
        lake: lake.to_string(),
        ..RunReport::default()
    };
    for s in &report.skipped_traces {
        tracing::warn!("skipped trace: {s}");
    }
    let mut sink = Sink::open(lake, cfg, &mut report)?;
    let transformer = WindowTransformer::for_config(cfg);
    let pb = bar(cfg.progress, batch.windows.len(), "traces");
    let size = cfg.batch_windows.max(1);
    for (i, chunk) in batch.windows.chunks(size).enumerate() {
        sink.start_chunk(chunk_digest(cfg, chunk));
        if sink.done()? {
            report.already_in_lake += chunk.len();
            pb.inc(chunk.len() as u64);
            continue;
        }
        let mut records = transformer.transform(chunk, || pb.inc(1));
        batch.label(&mut records, i * size, cfg.mainshock_ns);
        report.labelled += records.len();
        sink.write(&records, &mut report)?;
    }
    pb.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
