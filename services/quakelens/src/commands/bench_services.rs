//! `quakelens bench services`: synthetic continuous 100 Hz 3-component data for many stations,
//! fed live (each record sent when its last sample is due) through a real broker into the
//! `windower` and `lake` services as separate processes. Reports window-end → row-in-lake
//! latency, peak memory of each service, and (replaying the same data at full speed into a
//! fresh broker) how many stations the pipeline could keep up with in real time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use quakelens_synth::{generate, write_dataset_records, Encoding, SynthConfig};

#[derive(Args, Debug)]
pub struct ServicesBenchArgs {
    /// Stations fed in real time.
    #[arg(long, default_value_t = 1000)]
    stations: usize,
    /// Minutes of data per station.
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Windowing chunk (s) of the windower.
    #[arg(long, default_value_t = 0.5)]
    chunk: f64,
    /// Partitions of the data topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// tansu binary (default: .cache/tansu/tansu-memory, from .ci/setup-broker).
    #[arg(long, env = "QUAKELENS_TANSU")]
    tansu: Option<PathBuf>,
    /// Working directory (default: a temporary one).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Skip the full-speed replay.
    #[arg(long)]
    no_max_speed: bool,
}

/// A child process killed on drop.
pub(super) struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    /// A `/proc/<pid>/status` field in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// Peak resident set, and the anonymous (heap) part of the current one: every process of
    /// the single `quakelens` binary maps LibTorch, whose pages count in the first.
    fn memory(&self) -> (f64, f64) {
        (self.status_mib("VmHWM:"), self.status_mib("RssAnon:"))
    }

    /// The resident set now, and its anonymous part.
    pub(super) fn current_memory(&self) -> (f64, f64) {
        (self.status_mib("VmRSS:"), self.status_mib("RssAnon:"))
    }

    /// Whether the process has not exited.
    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub(super) fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.is_running() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn health(&self) -> Option<serde_json::Value> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        // "… health on http://ADDR/healthz, metrics on http://ADDR/metrics"
        let addr = log
            .lines()
            .find_map(|l| l.split("health on http://").nth(1))?
            .split('/')
            .next()?
            .trim()
            .to_string();
        let body = http_get(&addr, "/healthz").ok()?;
        serde_json::from_str(body.split("\r\n\r\n").nth(1)?).ok()
    }

    /// The service's log so far.
    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(super) fn spawn(
    work: &Path,
    name: &str,
    brokers: &str,
    args: &[&str],
) -> anyhow::Result<Service> {
    let log = work.join(format!("{name}.log"));
    let child = Command::new(std::env::current_exe()?)
        .args(args)
        .env("KAFKA_BROKERS", brokers)
        .env("QUAKELENS_HEALTH", "127.0.0.1:0")
        .env("QUAKELENS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Service { child, log })
}

/// The tansu broker a benchmark starts: `given`, else the one `.ci/setup-broker` installs.
pub(super) fn tansu_binary(given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let tansu = given
        .clone()
        .unwrap_or_else(|| PathBuf::from(".cache/tansu/tansu-memory"));
    if !tansu.is_file() {
        bail!(
            "no tansu binary at {} (run .ci/setup-broker, or pass --tansu)",
            tansu.display()
        );
    }
    Ok(tansu)
}

pub(super) fn start_broker(work: &Path, tansu: &Path) -> anyhow::Result<(Service, String)> {
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log = work.join(format!("broker-{port}.log"));
    let child = Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", tansu.display()))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("broker did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let brokers = format!("127.0.0.1:{port}");
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["topics", "create", "--partitions"])
        .arg(std::env::var("QUAKELENS_BENCH_PARTITIONS").unwrap_or_else(|_| "6".into()))
        .env("KAFKA_BROKERS", &brokers)
        .output()?;
    if !out.status.success() {
        bail!("creating topics: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((Service { child, log }, brokers))
}

/// What one pass measured.
struct Pass {
    windows: u64,
    wall_s: f64,
    latency: serde_json::Value,
    rss: Vec<(&'static str, (f64, f64))>,
}

pub(super) fn counter(s: &Service, name: &str) -> u64 {
    s.health()
        .and_then(|h| h["counters"][name].as_u64())
        .unwrap_or(0)
}

/// One replay through a fresh broker; with `expect`, waits for that many windows in the lake.
fn pass(
    work: &Path,
    tansu: &Path,
    data: &Path,
    chunk: f64,
    live: bool,
    expect: Option<u64>,
) -> anyhow::Result<Pass> {
    let (broker, brokers) = start_broker(work, tansu)?;
    let lake_dir = work.join(if live { "lake-live" } else { "lake-max" });
    let chunk_s = chunk.to_string();
    let fast = [
        "--kafka-property",
        "session.timeout.ms=6000",
        "--kafka-property",
        "heartbeat.interval.ms=1000",
    ];
    let mut w_args = vec!["windower", "--chunk", &chunk_s];
    w_args.extend(fast);
    let windower = spawn(work, "windower", &brokers, &w_args)?;
    let mut l_args = vec!["lake", "--lake", lake_dir.to_str().unwrap_or_default()];
    l_args.extend(fast);
    let lake = spawn(work, "lake", &brokers, &l_args)?;
    // Both in their groups before data flows.
    std::thread::sleep(Duration::from_secs(8));
    let mut i_args = vec!["ingest", "--input", data.to_str().unwrap_or_default()];
    if live {
        i_args.push("--live");
    }
    let started = Instant::now();
    let mut ingest = spawn(work, "ingest", &brokers, &i_args)?;
    let mut ingest_mem = (0.0f64, 0.0f64);
    while ingest.child.try_wait()?.is_none() {
        let (peak, anon) = ingest.memory();
        ingest_mem = (ingest_mem.0.max(peak), ingest_mem.1.max(anon));
        std::thread::sleep(Duration::from_millis(500));
    }
    // Drained when the lake holds the expected windows, or its count stopped moving.
    let mut last = (counter(&lake, "records_out"), Instant::now());
    let mut done_at = Instant::now();
    let quiet = Duration::from_secs(if expect.is_some() { 120 } else { 8 });
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let n = counter(&lake, "records_out");
        if n != last.0 {
            last = (n, Instant::now());
            done_at = Instant::now();
        }
        if expect.is_some_and(|e| n >= e) || last.1.elapsed() > quiet {
            break;
        }
    }
    let wall_s = (done_at - started).as_secs_f64();
    let latency = lake
        .health()
        .map(|h| h["detail"]["window_end_to_lake_seconds"].clone())
        .unwrap_or_default();
    let rss = vec![
        ("windower", windower.memory()),
        ("lake", lake.memory()),
        ("ingest", ingest_mem),
    ];
    let windows = last.0;
    windower.stop();
    lake.stop();
    drop(broker);
    drop(ingest);
    Ok(Pass {
        windows,
        wall_s,
        latency,
        rss,
    })
}

pub fn run(args: ServicesBenchArgs) -> anyhow::Result<()> {
    let tansu = tansu_binary(&args.tansu)?;
    let tmp = tempfile::tempdir()?;
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    std::env::set_var("QUAKELENS_BENCH_PARTITIONS", args.partitions.to_string());

    // Data that starts "now" (after generation): a live feed of every station.
    let slot_s = 120.0;
    let events = ((args.minutes * 60.0 / slot_s).ceil() as usize).max(1) * args.stations;
    let lead_s = 30 + args.stations as i64 / 20;
    let start_ns = (chrono::Utc::now().timestamp() + lead_s) * 1_000_000_000;
    let t = Instant::now();
    let cfg = SynthConfig {
        events,
        stations: args.stations,
        slot_s,
        start_ns,
        ..SynthConfig::default()
    };
    let data_dir = work.join("data");
    write_dataset_records(&data_dir, &generate(&cfg), 256, Encoding::Int32)?;
    let generated_s = t.elapsed().as_secs_f64();
    let data_s = (events / args.stations) as f64 * slot_s;
    eprintln!(
        "bench: {} stations × {data_s:.0} s generated in {generated_s:.1} s (256-byte int32 records, 0.5 s each)",
        args.stations
    );
    if generated_s > lead_s as f64 {
        eprintln!("bench: generation overran the lead time; the first records go at once");
    }

    let live = pass(&work, &tansu, &data_dir, args.chunk, true, None)?;
    let max = if args.no_max_speed {
        None
    } else {
        Some(pass(
            &work,
            &tansu,
            &data_dir,
            args.chunk,
            false,
            Some(live.windows),
        )?)
    };

    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("\n## Services benchmark: synthetic 100 Hz 3-component feeds through tansu\n");
    println!(
        "| pass | stations | data (s) | windows | window end → lake p50 (s) | p99 (s) | max (s) | wall (s) | stations in real time | windower peak RSS / heap (MiB) | lake peak RSS / heap (MiB) | ingest peak RSS / heap (MiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in [("live", Some(&live)), ("full speed", max.as_ref())] {
        let Some(p) = p else { continue };
        let capacity = args.stations as f64 * data_s / p.wall_s.max(1e-9);
        let rss: Vec<String> = p
            .rss
            .iter()
            .map(|(_, (peak, anon))| format!("{peak:.0} / {anon:.0}"))
            .collect();
        let (p50, p99, mx) = if name == "live" {
            (
                format!("{:.2}", f(&p.latency, "p50")),
                format!("{:.2}", f(&p.latency, "p99")),
                format!("{:.2}", f(&p.latency, "max")),
            )
        } else {
            ("–".into(), "–".into(), "–".into())
        };
        let stations_rt = if name == "live" {
            let keeps_up = f(&p.latency, "p99") <= 2.0;
            format!(
                "{} ({})",
                args.stations,
                if keeps_up { "kept up" } else { "p99 over 2 s" }
            )
        } else {
            format!("{capacity:.0}")
        };
        println!(
            "| {name} | {} | {data_s:.0} | {} | {p50} | {p99} | {mx} | {:.1} | {stations_rt} | {} |",
            args.stations,
            p.windows,
            p.wall_s,
            rss.join(" | ")
        );
    }
    println!(
        "\nlive: each record is sent when its last sample is due; latency runs from a window's last \
         sample to its row being in Parquet. full speed: the same data replayed as fast as the \
         broker takes it; stations in real time = stations × data seconds / wall seconds. Peak RSS \
         includes LibTorch, which the single binary maps in every process (~400 MiB); heap is \
         the anonymous resident memory at the end of the pass."
    );
    Ok(())
}
