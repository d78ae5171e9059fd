//! The Kafka services: `ingest`, `windower`, `scorer`, `forest`, `lake`, `query`, plus `topics`.
//! Each is one process: flags or environment for settings (12-factor), a health endpoint,
//! SIGTERM finishes the batch in flight, commits and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use quakelens_pipeline::score::{ModelPaths, Scorer};
use quakelens_pipeline::stages::ingest::{replay, IngestConfig, Pace};
use quakelens_pipeline::stages::lake_sink::{LakeSinkStage, LatencySummary};
use quakelens_pipeline::stages::scorer::ScorerStage;
use quakelens_pipeline::stages::seedlink::{relay, SeedLinkConfig, Subscription};
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_pipeline::stages::{self, StageCounters};
use quakelens_transport::kafka::{create_topics, KafkaConfig, KafkaTransport};
use quakelens_transport::topics;

use super::window_options::WindowOptions;
use super::{runtime, set_threads, DEFAULT_LAKE};
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
    /// Extra librdkafka property, `key=value` (repeatable).
    #[arg(long = "kafka-property", value_parser = parse_property)]
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
    /// Seconds of silence after which a station's buffer is cut to its end.
    #[arg(long, default_value_t = 30.0)]
    idle_flush: f64,
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
}

#[derive(Args, Debug)]
pub struct LakeArgs {
    #[command(flatten)]
    service: ServiceOptions,
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE)]
    lake: PathBuf,
    /// Window length (s) of the incoming windows; fixes the spectrogram shape of a new lake.
    #[arg(long, default_value_t = 25.0)]
    window_length: f64,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE)]
    lake: PathBuf,
    /// Address to serve `GET /sql?q=…` and `/healthz` on.
    #[arg(long, env = "QUAKELENS_LISTEN", default_value = "0.0.0.0:8081")]
    listen: String,
}

/// SIGTERM or Ctrl-C flips the stop flag; stages finish their batch and commit.
fn stop_on_signal() -> watch::Receiver<bool> {
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

/// Serves `/healthz` with the stage counters; prints the bound address (port 0 in tests).
async fn health(
    service: &'static str,
    addr: &str,
    counters: Arc<StageCounters>,
    extra: Option<Extra>,
) -> anyhow::Result<()> {
    let bound = serve(addr, move |req: Request| {
        let counters = Arc::clone(&counters);
        let extra = extra.clone();
        async move {
            match req.path.as_str() {
                "/healthz" | "/readyz" => Response::json(&serde_json::json!({
                    "service": service,
                    "status": "ok",
                    "counters": counters.snapshot(),
                    "detail": extra.map(|f| f()),
                })),
                _ => Response::text(404, "not found\n"),
            }
        }
    })
    .await?;
    eprintln!("{service}: health on http://{bound}/healthz");
    Ok(())
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
        let counters = Arc::new(StageCounters::default());
        health("ingest", &args.service.health, Arc::clone(&counters), None).await?;
        let t = KafkaTransport::connect(&args.service.kafka("ingest"), &[])?;
        relay(t.as_ref(), &cfg, stop, &counters).await?;
        t.flush(Duration::from_secs(30))?;
        Ok(())
    })
}

pub fn windower(args: WindowerArgs) -> anyhow::Result<()> {
    set_threads(args.service.threads)?;
    let mut cfg = WindowerConfig::new(args.window.config(PathBuf::new())?);
    cfg.windows_per_message = args.windows_per_message;
    cfg.idle_flush = Duration::from_secs_f64(args.idle_flush.max(0.0));
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let counters = Arc::new(StageCounters::default());
        health(
            "windower",
            &args.service.health,
            Arc::clone(&counters),
            None,
        )
        .await?;
        let t = KafkaTransport::connect(&args.service.kafka("windower"), &[topics::WAVEFORMS_RAW])?;
        let mut stage = WindowerStage::new(cfg)?;
        stage.run(t.as_ref(), stop, &counters).await?;
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
        let counters = Arc::new(StageCounters::default());
        health(name, &args.service.health, Arc::clone(&counters), None).await?;
        let t = KafkaTransport::connect(&args.service.kafka(name), &[topics::WINDOWS])?;
        stages::run(
            &mut ScorerStage::new(scorer, name),
            t.as_ref(),
            stop,
            &counters,
        )
        .await?;
        Ok(())
    })
}

pub fn lake(args: LakeArgs) -> anyhow::Result<()> {
    let mut cfg = quakelens_pipeline::PipelineConfig::new(args.lake.clone());
    cfg.mode = quakelens_signal::window::WindowMode::Sliding {
        length_s: args.window_length,
        step_s: args.window_length,
    };
    let shape = cfg.spectrogram_shape();
    runtime()?.block_on(async {
        let stop = stop_on_signal();
        let counters = Arc::new(StageCounters::default());
        let mut stage = LakeSinkStage::open(&args.lake, shape).await?;
        let latencies = Arc::clone(&stage.latencies);
        let extra: Extra = Arc::new(move || {
            let l = latencies.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::json!({ "window_end_to_lake_seconds": LatencySummary::of(&l) })
        });
        health(
            "lake",
            &args.service.health,
            Arc::clone(&counters),
            Some(extra),
        )
        .await?;
        let t = KafkaTransport::connect(
            &args.service.kafka("lake"),
            &[topics::WINDOWS, topics::SCORES, topics::MAGNITUDES],
        )?;
        stages::run(&mut stage, t.as_ref(), stop, &counters).await?;
        Ok(())
    })
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let mut stop = stop_on_signal();
        let lake = args.lake.clone();
        let bound = serve(&args.listen, move |req: Request| {
            let lake = lake.clone();
            async move {
                match (req.path.as_str(), req.param("q")) {
                    ("/healthz", _) => Response::text(200, "ok\n"),
                    ("/sql", Some(q)) => match quakelens_lake::Lake::open(&lake).await {
                        Ok(l) => match l.sql_table(q).await {
                            Ok(table) => Response::text(200, table + "\n"),
                            Err(e) => Response::text(400, format!("{e}\n")),
                        },
                        Err(e) => Response::text(503, format!("{e}\n")),
                    },
                    ("/sql", None) => Response::text(400, "give the query as ?q=...\n"),
                    _ => Response::text(404, "not found\n"),
                }
            }
        })
        .await?;
        eprintln!("query: SQL on http://{bound}/sql?q=...");
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    })
}
