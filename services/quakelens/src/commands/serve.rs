//! The Kafka services: `ingest`, `windower`, `scorer`, `forest`, `explainer`, `lake`, plus
//! `topics`.
//! Each is one process: flags or environment for settings (12-factor), a health endpoint,
//! SIGTERM finishes the batch in flight, commits and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use quakelens_lake::LakeLocation;
use quakelens_pipeline::metrics::{Metrics, StageMetrics};
use quakelens_pipeline::score::{ModelPaths, Scorer};
use quakelens_pipeline::stages;
use quakelens_pipeline::stages::explainer::{CnnExplainer, ExplainerStage};
use quakelens_pipeline::stages::ingest::{replay, IngestConfig, Pace};
use quakelens_pipeline::stages::lake_sink::{Compaction, LakeSinkConfig, LakeSinkStage};
use quakelens_pipeline::stages::scorer::ScorerStage;
use quakelens_pipeline::stages::seedlink::{relay, SeedLinkConfig, Subscription};
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_transport::kafka::{create_topics, KafkaConfig, KafkaTransport};
use quakelens_transport::topics;

use super::window_options::WindowOptions;
use super::{parse_lake, runtime, set_threads, DEFAULT_LAKE};
use crate::http::{serve, Request, Response};

/// Connection and process options every service shares.
#[derive(Args, Clone, Debug)]
pub struct ServiceOptions {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Consumer group (default: the service name; members of one group share partitions).
    #[arg(long, env = "QUAKELENS_GROUP")]
    pub group: Option<String>,
    /// Extra librdkafka property, `key=value` (repeatable; in the environment, comma-separated).
    #[arg(
        long = "kafka-property",
        env = "QUAKELENS_KAFKA_PROPERTIES",
        value_delimiter = ',',
        value_parser = parse_property
    )]
    pub properties: Vec<(String, String)>,
    /// Health endpoint address (`/healthz`); port 0 picks a free one (printed at start).
    #[arg(long, env = "QUAKELENS_HEALTH", default_value = "0.0.0.0:8080")]
    pub health: String,
    /// Worker threads (default: all cores).
    #[arg(long, env = "QUAKELENS_THREADS")]
    pub threads: Option<usize>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

impl ServiceOptions {
    fn kafka(&self, service: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            group: self.group.clone().unwrap_or_else(|| service.to_string()),
            properties: self.properties.clone(),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create every topic (existing ones are left alone).
    Create(TopicsArgs),
}

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Partitions for the data topics (default: each topic's own default).
    #[arg(long)]
    partitions: Option<i32>,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    #[command(flatten)]
    service: ServiceOptions,
    /// miniSEED files or directories (searched recursively).
    #[arg(long, num_args = 1.., required_unless_present = "seedlink")]
    input: Vec<PathBuf>,
    /// A SeedLink server (`host:port`) to relay live instead of files; runs until SIGTERM.
    #[arg(long, conflicts_with = "input", requires = "stream")]
    seedlink: Option<String>,
    /// SeedLink subscription `NET_STA` or `NET_STA:SELECTORS` (e.g. `BW_RJOB:EH?`); repeatable.
    #[arg(long)]
    stream: Vec<String>,
    /// Pace records to their timestamps (1 = real time, 10 = ten times faster); default: max speed.
    #[arg(long)]
    realtime: Option<f64>,
    /// Send each record when the wall clock reaches its last sample (data stamped now).
    #[arg(long, conflicts_with = "realtime")]
    live: bool,
    /// Do not send end-of-stream markers after the last record of each station.
    #[arg(long)]
    no_end_markers: bool,
}

#[derive(Args, Debug)]
pub struct WindowerArgs {
    #[command(flatten)]
    service: ServiceOptions,
    #[command(flatten)]
    window: WindowOptions,
    /// Windows per `windows` message.
    #[arg(long, default_value_t = 8)]
    windows_per_message: usize,
    /// Seconds of silence after which a station's buffer is cut as far as its windows are whole
    /// (a dead component no longer holds the others back; a window still missing its tail waits).
    #[arg(long, default_value_t = 30.0)]
    idle_flush: f64,
    /// Seconds of data time a silent station may fall behind the newest station before it is
    /// ended like an end-of-stream marker ends it and its buffers are freed.
    #[arg(long, default_value_t = 3600.0)]
    evict_after: f64,
}

#[derive(Args, Debug)]
pub struct ModelServiceArgs {
    #[command(flatten)]
    service: ServiceOptions,
    /// The model file (CNN: .safetensors or TorchScript .pt; forest: .arrow).
    #[arg(long, env = "QUAKELENS_MODEL")]
    model: PathBuf,
    /// Windows per CNN forward pass.
    #[arg(long, default_value_t = 64)]
    score_batch: usize,
    /// Send what is scored to `shap.tasks` for the `explainer` workers (forest inputs, or
    /// spectrograms for the CNN).
    #[arg(long, env = "QUAKELENS_EXPLAIN")]
    explain: bool,
}

#[derive(Args, Debug)]
pub struct ExplainerArgs {
    #[command(flatten)]
    service: ServiceOptions,
    /// The forest file forest tasks were scored with (`.arrow`); tasks for another model are
    /// dead letters.
    #[arg(long, env = "QUAKELENS_MODEL", required_unless_present = "cnn")]
    model: Option<PathBuf>,
    /// The CNN file CNN tasks were scored with (`.safetensors` or TorchScript `.pt`).
    #[arg(long, env = "QUAKELENS_CNN")]
    cnn: Option<PathBuf>,
    /// Model evaluations per CNN window (the partition explainer's budget).
    #[arg(long, env = "QUAKELENS_MAX_EVALS", default_value_t = 1000)]
    max_evals: usize,
    /// Largest budget one CNN task explains: a window needing more goes back to shap.tasks as
    /// ⌈max-evals / this⌉ parts for the workers to share (0: never split).
    #[arg(long, env = "QUAKELENS_EVALS_PER_TASK", default_value_t = 2000)]
    evals_per_task: usize,
    /// σ in pixels of the blur masker for CNN windows.
    #[arg(long, default_value_t = 2.0)]
    blur: f32,
    /// Shape of the CNN's spectrograms for the band metric (channels, freqs, frames).
    #[arg(long, default_value = "3,33,153", value_delimiter = ',')]
    spectrogram_shape: Vec<usize>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LakeArgs {
    /// Lake maintenance instead of the sink service.
    #[command(subcommand)]
    admin: Option<super::lake::LakeCommand>,
    #[command(flatten)]
    service: ServiceOptions,
    /// Where the tables are written: a directory or s3://bucket/prefix.
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// The windower's window options: they fix what a new lake stores (spectrogram shape and
    /// input, feature set); windows of anything else are dead letters.
    #[command(flatten)]
    window: WindowOptions,
    /// Hours of arrival time within which rows an upstream stage sends again (after its
    /// restart) are recognised and dropped.
    #[arg(long, env = "QUAKELENS_DEDUP_HOURS", default_value_t = 6.0)]
    dedup_hours: f64,
    /// Compact the tables in the background every this many minutes (0: never; run
    /// `quakelens lake optimize` from a CronJob instead).
    #[arg(long, env = "QUAKELENS_OPTIMIZE_MINUTES", default_value_t = 0.0)]
    optimize_minutes: f64,
    /// The file size compaction aims at.
    #[arg(long, default_value_t = 128)]
    optimize_target_mib: u64,
    /// Messages per poll batch: each batch is one Delta commit per table.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

/// SIGTERM or Ctrl-C flips the stop flag; stages finish their batch and commit.
pub(super) fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping: finishing the batch in flight");
        let _ = tx.send(true);
    });
    rx
}

/// Stage-specific facts for the health answer.
type Extra = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What a service's `/healthz` and `/metrics` report.
struct Probe {
    service: &'static str,
    metrics: Arc<StageMetrics>,
    /// The consumer whose lag `/metrics` exports (pure producers have none).
    transport: Option<Arc<KafkaTransport>>,
    extra: Option<Extra>,
}

impl Probe {
    fn new(service: &'static str) -> Self {
        Self {
            service,
            metrics: Arc::new(Metrics::new().stage(service)),
            transport: None,
            extra: None,
        }
    }

    fn respond(&self, req: &Request) -> Response {
        match req.path.as_str() {
            "/healthz" | "/readyz" => Response::json(&serde_json::json!({
                "service": self.service,
                "status": "ok",
                "counters": self.metrics.snapshot(),
                "detail": self.extra.as_ref().map(|f| f()),
            })),
            "/metrics" => {
                if let Some(t) = &self.transport {
                    self.metrics.metrics().set_consumer_lag(&t.consumer_lag());
                }
                Response::prometheus(self.metrics.metrics().encode())
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    /// Serves `/healthz` and `/metrics` on `addr`; prints the bound address (port 0 in tests).
    async fn serve(self, addr: &str) -> anyhow::Result<()> {
        let service = self.service;
        let probe = Arc::new(self);
        let bound = serve(addr, move |req: Request| {
            let probe = Arc::clone(&probe);
            async move { probe.respond(&req) }
        })
        .await?;
        eprintln!("{service}: health on http://{bound}/healthz, metrics on http://{bound}/metrics");
        Ok(())
    }
}

pub fn topics(cmd: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Create(args) = cmd;
    runtime()?.block_on(async {
        let list: Vec<(&str, i32)> = topics::ALL
            .iter()
            .map(|&(t, p)| {
                (
                    t,
                    args.partitions
                        .filter(|_| t != topics::DEAD_LETTER)
                        .unwrap_or(p),
                )
            })
            .collect();
        create_topics(&args.brokers, &list).await?;
        for (t, p) in &list {
            println!("{t}\t{p} partitions");
        }
        Ok(())
    })
}

pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if let Some(server) = &args.seedlink {
        return seedlink(&args, server);
    }
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let t = KafkaTransport::connect(&args.service.kafka("ingest"), &[])?;
        let cfg = IngestConfig {
            inputs: args.input.clone(),
            pace: match (args.live, args.realtime) {
                (true, _) => Pace::Wall,
                (false, Some(speed)) => Pace::RealTime(speed),
                (false, None) => Pace::Max,
            },
            end_markers: !args.no_end_markers,
            batch: 500,
        };
        let report = replay(t.as_ref(), &cfg, stop).await?;
        t.flush(Duration::from_secs(30))?;
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}

/// Live SeedLink relay: a long-running service with a health endpoint.
fn seedlink(args: &IngestArgs, server: &str) -> anyhow::Result<()> {
    let subscriptions = args
        .stream
        .iter()
        .map(|s| s.parse::<Subscription>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cfg = SeedLinkConfig {
        server: server.to_string(),
        subscriptions,
        flush: Duration::from_millis(100),
        batch: 500,
    };
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let probe = Probe::new("ingest");
        let metrics = Arc::clone(&probe.metrics);
        probe.serve(&args.service.health).await?;
        let t = KafkaTransport::connect(&args.service.kafka("ingest"), &[])?;
        relay(t.as_ref(), &cfg, stop, &metrics).await?;
        t.flush(Duration::from_secs(30))?;
        Ok(())
    })
}

pub fn windower(args: WindowerArgs) -> anyhow::Result<()> {
    set_threads(args.service.threads)?;
    let mut cfg = WindowerConfig::new(args.window.config(None)?);
    cfg.windows_per_message = args.windows_per_message;
    cfg.idle_flush = Duration::from_secs_f64(args.idle_flush.max(0.0));
    cfg.evict_after = Duration::from_secs_f64(args.evict_after.max(0.0));
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let t = KafkaTransport::connect(&args.service.kafka("windower"), &[topics::WAVEFORMS_RAW])?;
        let mut probe = Probe::new("windower");
        probe.transport = Some(Arc::clone(&t));
        let metrics = Arc::clone(&probe.metrics);
        probe.serve(&args.service.health).await?;
        let mut stage = WindowerStage::new(cfg)?;
        stage.run(t.as_ref(), stop, &metrics).await?;
        Ok(())
    })
}

/// `scorer` (CNN → scores) or `forest` (forest → magnitudes).
pub fn model_service(args: ModelServiceArgs, forest: bool) -> anyhow::Result<()> {
    set_threads(args.service.threads)?;
    let name = if forest { "forest" } else { "scorer" };
    let paths = if forest {
        ModelPaths {
            cnn: None,
            forest: Some(args.model.clone()),
        }
    } else {
        ModelPaths {
            cnn: Some(args.model.clone()),
            forest: None,
        }
    };
    let scorer = Scorer::load(&paths, args.score_batch)
        .with_context(|| format!("loading {}", args.model.display()))?;
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let t = KafkaTransport::connect(&args.service.kafka(name), &[topics::WINDOWS])?;
        let mut probe = Probe::new(name);
        probe.transport = Some(Arc::clone(&t));
        let metrics = Arc::clone(&probe.metrics);
        probe.serve(&args.service.health).await?;
        let mut stage = ScorerStage::new(scorer, name);
        stage.explain = args.explain;
        stages::run(&mut stage, t.as_ref(), stop, &metrics).await?;
        Ok(())
    })
}

/// `explainer`: TreeSHAP workers on `shap.tasks`; start several in one group to share the work.
pub fn explainer(args: ExplainerArgs) -> anyhow::Result<()> {
    set_threads(args.service.threads)?;
    let forest = match &args.model {
        Some(p) => Some(
            quakelens_models::forest::Forest::load(p)
                .with_context(|| format!("loading {}", p.display()))?,
        ),
        None => None,
    };
    let cnn = match &args.cnn {
        Some(p) => {
            let model =
                quakelens_models::cnn::CnnModel::load(p, quakelens_models::cnn::default_device()?)
                    .with_context(|| format!("loading {}", p.display()))?;
            let shape: [usize; 3] = args
                .spectrogram_shape
                .clone()
                .try_into()
                .map_err(|_| anyhow::anyhow!("--spectrogram-shape takes three numbers"))?;
            let axes = quakelens_pipeline::transform::spectrogram_axes(shape)
                .map_err(anyhow::Error::msg)?;
            anyhow::ensure!(args.max_evals >= 2, "--max-evals must be at least 2");
            Some(CnnExplainer {
                model,
                max_evals: args.max_evals,
                evals_per_task: args.evals_per_task,
                masker: quakelens_explain::image::Masker::Blur { sigma: args.blur },
                freqs_hz: axes.freqs_hz,
            })
        }
        None => None,
    };
    let mut stage = ExplainerStage::new(forest, cnn)?;
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let t = KafkaTransport::connect(&args.service.kafka("explainer"), &[topics::SHAP_TASKS])?;
        let mut probe = Probe::new("explainer");
        probe.transport = Some(Arc::clone(&t));
        let metrics = Arc::clone(&probe.metrics);
        probe.serve(&args.service.health).await?;
        stages::run(&mut stage, t.as_ref(), stop, &metrics).await?;
        Ok(())
    })
}

pub fn lake(args: LakeArgs) -> anyhow::Result<()> {
    if let Some(cmd) = args.admin {
        return super::lake::run(cmd);
    }
    let format = args.window.config(None)?.format();
    anyhow::ensure!(
        args.dedup_hours.is_finite() && args.dedup_hours >= 0.0,
        "--dedup-hours must be a non-negative number of hours"
    );
    let mut cfg = LakeSinkConfig::new(args.service.group.as_deref().unwrap_or("lake"));
    cfg.dedup_horizon = Duration::from_secs_f64(args.dedup_hours * 3600.0);
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    cfg.batch = args.batch;
    anyhow::ensure!(
        args.optimize_minutes.is_finite() && args.optimize_minutes >= 0.0,
        "--optimize-minutes must be a non-negative number of minutes"
    );
    anyhow::ensure!(
        args.optimize_target_mib >= 1,
        "--optimize-target-mib must be at least 1"
    );
    if args.optimize_minutes > 0.0 {
        cfg.compaction = Some(Compaction {
            every: Duration::from_secs_f64(args.optimize_minutes * 60.0),
            target_bytes: args.optimize_target_mib << 20,
        });
    }
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let mut stage = LakeSinkStage::open(&args.lake, format, cfg).await?;
        let latencies = stage.latencies.clone();
        let t = KafkaTransport::connect(
            &args.service.kafka("lake"),
            &[
                topics::WINDOWS,
                topics::SCORES,
                topics::MAGNITUDES,
                topics::SHAP_RESULTS,
            ],
        )?;
        let mut probe = Probe::new("lake");
        probe.transport = Some(Arc::clone(&t));
        probe.extra = Some(Arc::new(
            move || serde_json::json!({ "window_end_to_lake_seconds": latencies.summary() }),
        ));
        let metrics = Arc::clone(&probe.metrics);
        probe.serve(&args.service.health).await?;
        let ran = stages::run(&mut stage, t.as_ref(), stop, &metrics).await;
        stage.finish_compaction().await;
        ran?;
        Ok(())
    })
}
