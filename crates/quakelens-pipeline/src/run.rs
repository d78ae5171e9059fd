//! The embedded run as the services run it: ingest → windower → scorer → explainer → lake
//! sink, the same stage code, joined by the bounded in-memory transport instead of Kafka.
//!
//! Each topic holds at most `queue_bytes` that its readers have not taken, so a fast stage
//! waits for a slow one (back-pressure), and ingest reads the files in time order with
//! bounded read-ahead: memory follows stations × context, not the archive. The run ends stage
//! by stage, upstream first: a stage is stopped once everything before it has stopped and it
//! has taken every message, so its last batch is finished and nothing is left in a queue.
//!
//! Reruns are idempotent through the lake: the sink loads the keys of each day × stream
//! partition it writes into (`LakeSinkConfig::partition_keys`) and writes only rows not there
//! yet, so the same input writes nothing twice and a new model adds its rows beside the old.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use quakelens_lake::{LakeLocation, Table};
use quakelens_transport::memory::{MemoryBroker, MemoryTransport};
use quakelens_transport::topics::{self, header};
use quakelens_transport::Transport;

use crate::config::PipelineConfig;
use crate::embedded::{RunError, RunReport};
use crate::metrics::{Metrics, StageMetrics};
use crate::score::Scorer;
use crate::stages::explainer::{CnnExplainer, ExplainerStage};
use crate::stages::ingest::{replay, IngestConfig, Pace};
use crate::stages::lake_sink::{LakeSinkConfig, LakeSinkStage};
use crate::stages::scorer::ScorerStage;
use crate::stages::windower::{WindowerConfig, WindowerStage};
use crate::stages::{self, list_first, StageError};

/// Records per ingest send.
const INGEST_BATCH: usize = 500;

/// A stage running in its own task, with the transport it reads from.
struct Running<S> {
    name: &'static str,
    stop: watch::Sender<bool>,
    /// The stage's reader, while its task holds it (an ended stage frees its queue, so an
    /// upstream stage waiting for room goes on and the run can report the failure).
    input: std::sync::Weak<MemoryTransport>,
    task: JoinHandle<Result<S, StageError>>,
}

impl<S: Send + 'static> Running<S> {
    /// Waits until every stage before it has ended (the caller's order) and it has taken
    /// every message, then stops it after the batch in hand and gives the stage back.
    async fn finish(self) -> Result<S, RunError> {
        while self.input.upgrade().is_some_and(|t| t.unread() > 0) && !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(Ok(stage)) => Ok(stage),
            Ok(Err(e)) => Err(RunError::Stage(format!("{}: {e}", self.name))),
            Err(e) => Err(RunError::Stage(format!(
                "{}: the stage panicked: {e}",
                self.name
            ))),
        }
    }
}

/// Starts `stage` on a reader of `topics`, driven by [`stages::run`] (or `drive`).
fn start<S, F, Fut>(
    broker: &Arc<MemoryBroker>,
    name: &'static str,
    topics: &[&str],
    metrics: StageMetrics,
    stage: S,
    drive: F,
) -> Running<S>
where
    S: Send + 'static,
    F: FnOnce(S, Arc<MemoryTransport>, stages::Stop, StageMetrics) -> Fut,
    Fut: std::future::Future<Output = Result<S, StageError>> + Send + 'static,
{
    let (stop_tx, stop) = watch::channel(false);
    let input = Arc::new(broker.transport(topics));
    let weak = Arc::downgrade(&input);
    let task = tokio::spawn(drive(stage, input, stop, metrics));
    Running {
        name,
        stop: stop_tx,
        input: weak,
        task,
    }
}

/// What the dead-letter reader collected: every dead letter counted, the first few listed.
#[derive(Default)]
struct DeadLetters {
    count: usize,
    /// `stage: origin: reason`, the first [`stages::LISTED`].
    listed: Vec<(String, String)>,
}

async fn read_dead_letters(
    t: Arc<MemoryTransport>,
    stop: stages::Stop,
) -> Result<DeadLetters, StageError> {
    let mut out = DeadLetters::default();
    loop {
        let batch = t.recv(1000, stages::POLL).await?;
        if batch.is_empty() && stages::stopped(&stop) {
            return Ok(out);
        }
        for m in batch {
            out.count += 1;
            let text =
                |h: &str| String::from_utf8_lossy(m.header(h).unwrap_or_default()).into_owned();
            let stage = text(header::STAGE);
            let what = format!(
                "{}: {}",
                m.key_str().unwrap_or(&text(header::ORIGIN)),
                text(header::ERROR)
            );
            if out.listed.len() < stages::LISTED {
                out.listed.push((stage, what));
            }
        }
    }
}

/// The models a run scores and explains with, loaded once per stage that needs them.
struct Models {
    scorer: Option<Scorer>,
    explainer: Option<ExplainerStage>,
}

fn load_models(cfg: &PipelineConfig, report: &mut RunReport) -> Result<Models, RunError> {
    let scorer = Scorer::load(&cfg.models, cfg.score_batch)?;
    scorer.check(&cfg.format())?;
    report.cnn_model = scorer.classifier_hash().map(String::from);
    report.forest_model = scorer.forest.as_ref().map(|f| f.hash());
    if scorer.is_empty() {
        return Ok(Models {
            scorer: None,
            explainer: None,
        });
    }
    let cnn = match (
        &cfg.models.cnn,
        cfg.explain_evals > 0 && scorer.cnn.is_some(),
    ) {
        (Some(path), true) => {
            let axes = crate::transform::spectrogram_axes(cfg.spectrogram_shape())
                .map_err(|e| RunError::Explain(format!("--explain-cnn: {e}")))?;
            let model = quakelens_models::cnn::CnnModel::load(
                path,
                quakelens_models::cnn::default_device().map_err(crate::score::ScoreError::from)?,
            )
            .map_err(|e| RunError::Explain(format!("{}: {e}", path.display())))?;
            Some(CnnExplainer {
                model,
                max_evals: cfg.explain_evals,
                evals_per_task: 0,
                masker: quakelens_explain::image::Masker::Blur { sigma: 2.0 },
                freqs_hz: axes.freqs_hz,
            })
        }
        _ => None,
    };
    let forest = match &cfg.models.forest {
        Some(path) => Some(
            quakelens_models::forest::Forest::load(path)
                .map_err(|e| RunError::Explain(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let explainer = if forest.is_some() || cnn.is_some() {
        Some(ExplainerStage::new(forest, cnn).map_err(|e| RunError::Explain(e.to_string()))?)
    } else {
        None
    };
    Ok(Models {
        scorer: Some(scorer),
        explainer,
    })
}

/// Runs the stages over miniSEED `paths` into `lake`, filling `report`. `cfg.catalog` labels.
pub(crate) async fn run_stages(
    paths: Vec<PathBuf>,
    lake: &LakeLocation,
    cfg: &PipelineConfig,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let Models { scorer, explainer } = load_models(cfg, report)?;
    let broker = MemoryBroker::bounded(cfg.queue_bytes);
    for (t, p) in topics::ALL {
        if t == topics::WINDOWER_PROGRESS {
            broker.create_compacted_topic(t, p);
        } else {
            broker.create_topic(t, p);
        }
    }
    let metrics = Metrics::new();

    // Downstream first, so every reader is there before anything is sent.
    let (dead_stop_tx, dead_stop) = watch::channel(false);
    let dead_reader = Arc::new(broker.transport(&[topics::DEAD_LETTER]));
    let dead_task = tokio::spawn(read_dead_letters(Arc::clone(&dead_reader), dead_stop));

    let mut sink_cfg = LakeSinkConfig::new(&format!("run/{}", run_id()));
    sink_cfg.dedup_horizon = Duration::ZERO;
    sink_cfg.partition_keys = true;
    sink_cfg.checkpoint_at_open = true;
    let sink = LakeSinkStage::open(lake, cfg.format(), sink_cfg)
        .await
        .map_err(|e| RunError::Stage(format!("lake: {e}")))?;
    let sink = start(
        &broker,
        "lake",
        &[
            topics::WINDOWS,
            topics::SCORES,
            topics::MAGNITUDES,
            topics::SHAP_RESULTS,
        ],
        metrics.stage("lake"),
        sink,
        |mut s, t, stop, m| async move {
            let ran = stages::run(&mut s, t.as_ref(), stop, &m).await;
            s.finish_compaction().await;
            ran.map(|()| s)
        },
    );
    let explainer = explainer.map(|e| {
        start(
            &broker,
            "explainer",
            &[topics::SHAP_TASKS],
            metrics.stage("explainer"),
            e,
            drive,
        )
    });
    let scorer = scorer.map(|mut s| {
        s.explain = false;
        let mut stage = ScorerStage::new(s, "scorer");
        stage.explain = true;
        stage.explain_cnn = cfg.explain_evals > 0;
        start(
            &broker,
            "scorer",
            &[topics::WINDOWS],
            metrics.stage("scorer"),
            stage,
            drive,
        )
    });
    let windower = WindowerStage::new(WindowerConfig::new(cfg.clone()))
        .map_err(|e| RunError::Stage(format!("windower: {e}")))?;
    let windower = start(
        &broker,
        "windower",
        &[topics::WAVEFORMS_RAW],
        metrics.stage("windower"),
        windower,
        |mut s, t, stop, m| async move { s.run(t.as_ref(), stop, &m).await.map(|()| s) },
    );

    let ingest_t = broker.transport(&[]);
    let (_never, no_stop) = watch::channel(false);
    let ingest = IngestConfig {
        inputs: paths,
        pace: Pace::Max,
        end_markers: true,
        batch: INGEST_BATCH,
    };
    let ingested = replay(&ingest_t, &ingest, no_stop).await;
    let ingested = match ingested {
        Ok(i) => i,
        Err(e) => {
            // Let the stages go before reporting: nothing more will come.
            for stop in [&windower.stop, &sink.stop] {
                let _ = stop.send(true);
            }
            return Err(RunError::Stage(format!("ingest: {e}")));
        }
    };
    report.files = ingested.files;
    report.records = ingested.records;
    report.failed_files = ingested.failed_files;
    report.decode_warnings = ingested.warnings;
    report.read_ahead_files = ingested.most_open_files;
    report.read_ahead_records = ingested.most_indexed_records;

    let windower = windower.finish().await?;
    let t = &windower.totals;
    report.streams = t.stations as usize;
    report.windows = t.windows as usize;
    report.windows_with_filled_gaps = t.with_filled_gaps as usize;
    report.windows_with_flat_channels = t.with_flat_channels as usize;
    report.labelled = t.labelled as usize;
    report.merged_onsets = t.merged_onsets as usize;
    report.dropped_windows = t.dropped_listed.clone();
    report.unassembled = t.unassembled_listed.clone();
    report.resampled_segments = t.assembly.resampled_segments;
    report.snapped_segments = t.assembly.snapped_segments;
    report.overlap_samples = t.assembly.overlap_samples;
    if let Some(scorer) = scorer {
        let s = scorer.finish().await?;
        report.scored = s.scores_out as usize;
        report.magnitudes = s.magnitudes_out as usize;
        report.unscored = s.unscored_listed;
    }
    if let Some(explainer) = explainer {
        explainer.finish().await?;
    }
    let sink = sink.finish().await?;
    let written = |t: Table| sink.rows_written.get(&t).copied().unwrap_or(0) as usize;
    report.rows_written = written(Table::Windows);
    report.explained = written(Table::ForestShap);
    report.cnn_explained = written(Table::CnnShap);
    report.lake_files = sink.files_added as usize;
    report.already_in_lake = sink.duplicates_skipped as usize;

    // Everything upstream has ended: what is in dead-letter now is all there is.
    while dead_reader.unread() > 0 && !dead_task.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = dead_stop_tx.send(true);
    let dead = dead_task
        .await
        .map_err(|e| RunError::Stage(format!("dead-letter reader: {e}")))?
        .map_err(|e| RunError::Stage(format!("dead-letter reader: {e}")))?;
    report.dead_letters = dead.count;
    for (stage, what) in dead.listed {
        // Ingest's are the decode warnings already listed; the windower's are channels it
        // could not use.
        match stage.as_str() {
            "ingest" => {}
            "windower" => list_first(&mut report.unassembled, what),
            _ => list_first(&mut report.rejected, format!("{stage}: {what}")),
        }
    }
    Ok(())
}

async fn drive<S: stages::Stage + Send + 'static>(
    mut s: S,
    t: Arc<MemoryTransport>,
    stop: stages::Stop,
    m: StageMetrics,
) -> Result<S, StageError> {
    stages::run(&mut s, t.as_ref(), stop, &m).await.map(|()| s)
}

/// A name for this run's positions in the lake's log, new for each run: reruns are
/// recognised by the rows' keys, not by offsets of an in-memory queue that starts at 0.
fn run_id() -> String {
    format!("{:x}-{:x}", stages::now_ns(), std::process::id())
}
