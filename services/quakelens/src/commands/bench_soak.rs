//! `quakelens bench soak`: every service on a real broker for many simulated days of many
//! stations at full speed, with each service's memory printed day by day. A service that
//! runs for a year must hold the same memory on day 365 as on day 1: the table shows whether
//! each one's resident and anonymous memory level off or keep growing with uptime.
//!
//! Each simulated day, every station records `--events-per-day` events in the first hours of
//! its day (150 s of data around each, then silence until the next day), written as miniSEED
//! and replayed by an `ingest` process. `windower`, `scorer` (the CNN), `forest` (magnitudes
//! and TreeSHAP tasks), `explainer` and `lake` (with periodic compaction) run for the whole
//! soak. A day is done when the lake has written the day's windows, magnitudes and
//! explanations; then every service's memory is read from `/proc`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use quakelens_synth::{generate, write_dataset_records, Encoding, SynthConfig};

use super::bench_services::{counter, spawn, start_broker, tansu_binary, Service};

#[derive(Args, Debug)]
pub struct SoakBenchArgs {
    /// Stations, each recording every event.
    #[arg(long, default_value_t = 20)]
    stations: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: usize,
    /// Events per station and day.
    #[arg(long, default_value_t = 24)]
    events_per_day: usize,
    /// Print a row after the first day and then every this many days.
    #[arg(long, default_value_t = 5)]
    report_every: usize,
    /// tansu binary (default: .cache/tansu/tansu-memory, from .ci/setup-broker).
    #[arg(long, env = "QUAKELENS_TANSU")]
    tansu: Option<PathBuf>,
    /// Working directory (default: a temporary one).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Longest wait for one day to reach the lake, in seconds.
    #[arg(long, default_value_t = 600)]
    day_timeout_s: u64,
    /// The lake service's compaction interval in minutes (0: none). Two minutes put a soak of
    /// minutes through as many compactions as a service goes through in months.
    #[arg(long, default_value_t = 2.0)]
    optimize_minutes: f64,
}

/// Data per event: the synthetic generator's slot (the trigger's context, the event, its coda).
const SLOT_S: f64 = 150.0;
const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// 2024-03-01T00:00:00Z: the first simulated day.
const FIRST_DAY_NS: i64 = 1_709_251_200_000_000_000;

/// The CNN and forest the scorer, forest and explainer services load: trained on a small
/// synthetic lake of their own, as a user's models would be.
fn train_models(exe: &Path, work: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let lake = work.join("training-lake");
    let (cnn, forest) = (work.join("cnn.safetensors"), work.join("forest.arrow"));
    let l = lake.to_str().context("work path")?;
    let steps: [&[&str]; 3] = [
        &["run", "--synthetic", "200", "--lake", l, "--no-models"],
        &[
            "train",
            "cnn",
            "--lake",
            l,
            "--out",
            cnn.to_str().context("work path")?,
            "--epochs",
            "1",
            "--quiet",
        ],
        &[
            "train",
            "forest",
            "--lake",
            l,
            "--out",
            forest.to_str().context("work path")?,
            "--trees",
            "30",
            "--quiet",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new(exe).args(args).output()?;
        if !out.status.success() {
            bail!(
                "quakelens {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok((cnn, forest))
}

/// One simulated day's miniSEED in `dir` (replacing the day before's).
fn write_day(dir: &Path, args: &SoakBenchArgs, day: usize) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let cfg = SynthConfig {
        seed: 1000 + day as u64,
        events: args.events_per_day * args.stations,
        stations: args.stations,
        slot_s: SLOT_S,
        start_ns: FIRST_DAY_NS + day as i64 * DAY_NS,
        ..SynthConfig::default()
    };
    write_dataset_records(dir, &generate(&cfg), 512, Encoding::Int32)?;
    Ok(())
}

/// Rows the lake writes per window: `windows`, `features`, `scores`, `magnitudes`, `forest_shap`.
const ROWS_PER_WINDOW: u64 = 5;

/// Waits until the lake has written `goal` rows, or has written nothing for `quiet` once
/// `ingest` is done (a day that made fewer windows than events), or `timeout`. Returns the
/// rows written.
fn drain(
    lake: &Service,
    ingest: &mut Service,
    goal: u64,
    quiet: Duration,
    timeout: Duration,
) -> u64 {
    let deadline = Instant::now() + timeout;
    let (mut last, mut moved) = (counter(lake, "records_out"), Instant::now());
    while Instant::now() < deadline {
        let n = counter(lake, "records_out");
        if n >= goal {
            return n;
        }
        if n != last {
            (last, moved) = (n, Instant::now());
        } else if !ingest.is_running() && moved.elapsed() > quiet {
            return n;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    last
}

pub fn run(args: SoakBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.days >= 1 && args.stations >= 1,
        "--days and --stations ≥ 1"
    );
    anyhow::ensure!(
        args.events_per_day as f64 * SLOT_S < 86_400.0,
        "--events-per-day: at most {} slots of {SLOT_S} s fit in a day",
        (86_400.0 / SLOT_S) as usize - 1
    );
    let tansu = tansu_binary(&args.tansu)?;
    let tmp = tempfile::tempdir()?;
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let (cnn, forest) = train_models(&exe, &work)?;
    eprintln!("soak: models trained in {:.0} s", t.elapsed().as_secs_f64());

    let (_broker, brokers) = start_broker(&work, &tansu)?;
    let lake_dir = work.join("lake");
    let (cnn, forest, lake) = (
        cnn.to_str().context("work path")?.to_string(),
        forest.to_str().context("work path")?.to_string(),
        lake_dir.to_str().context("work path")?.to_string(),
    );
    fn group(mut a: Vec<&str>) -> Vec<&str> {
        a.extend([
            "--kafka-property",
            "session.timeout.ms=6000",
            "--kafka-property",
            "heartbeat.interval.ms=1000",
        ]);
        a
    }
    let services: Vec<(&str, Service)> = vec![
        (
            "windower",
            // A day's last windows are cut once its stations have been quiet this long.
            spawn(
                &work,
                "windower",
                &brokers,
                &group(vec!["windower", "--idle-flush", "2"]),
            )?,
        ),
        (
            "scorer",
            spawn(
                &work,
                "scorer",
                &brokers,
                &group(vec!["scorer", "--model", &cnn]),
            )?,
        ),
        (
            "forest",
            spawn(
                &work,
                "forest",
                &brokers,
                &group(vec!["forest", "--model", &forest, "--explain"]),
            )?,
        ),
        (
            "explainer",
            spawn(
                &work,
                "explainer",
                &brokers,
                &group(vec!["explainer", "--model", &forest]),
            )?,
        ),
        (
            "lake",
            spawn(
                &work,
                "lake",
                &brokers,
                // A short dedup horizon, so that a soak of minutes goes through it as many
                // times as a service does in months.
                &group(vec![
                    "lake",
                    "--lake",
                    &lake,
                    "--dedup-hours",
                    "0.05",
                    "--optimize-minutes",
                    &args.optimize_minutes.to_string(),
                ]),
            )?,
        ),
    ];
    let by_name: Vec<(&str, &Service)> = services.iter().map(|(n, s)| (*n, s)).collect();
    let index = |name: &str| {
        by_name
            .iter()
            .position(|(n, _)| *n == name)
            .expect("service")
    };
    // Every service in its group before data flows.
    std::thread::sleep(Duration::from_secs(8));

    println!(
        "\n## Soak: {} stations × {} days, {} events per station and day, all services on tansu, lake compaction {}\n",
        args.stations,
        args.days,
        args.events_per_day,
        if args.optimize_minutes > 0.0 {
            format!("every {} min", args.optimize_minutes)
        } else {
            "off".into()
        }
    );
    let names: Vec<&str> = by_name.iter().map(|(n, _)| *n).collect();
    println!(
        "| day | wall (s) | events | rows written | {} |",
        names
            .iter()
            .map(|n| format!("{n} RSS / anon (MiB)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---:|---:|---:|---:|{}", "---:|".repeat(names.len()));
    let started = Instant::now();
    let data = work.join("day");
    let mut events = 0u64;
    let lake_service = by_name[index("lake")].1;
    for day in 0..args.days {
        write_day(&data, &args, day)?;
        let mut ingest = spawn(
            &work,
            "ingest",
            &brokers,
            &["ingest", "--input", data.to_str().context("work path")?],
        )?;
        events += (args.stations * args.events_per_day) as u64;
        // Every event of the day a window in the lake, with its features, score, magnitude
        // and explanation.
        let rows = drain(
            lake_service,
            &mut ingest,
            ROWS_PER_WINDOW * events,
            Duration::from_secs(20),
            Duration::from_secs(args.day_timeout_s),
        );
        ingest.wait_exit(Duration::from_secs(60));
        if rows <= ROWS_PER_WINDOW * (events - (args.stations * args.events_per_day) as u64) {
            bail!(
                "day {}: nothing of the day reached the lake within {} s; logs in {}",
                day + 1,
                args.day_timeout_s,
                work.display()
            );
        }
        let d = day + 1;
        if d == 1 || d % args.report_every == 0 || d == args.days {
            let memory: Vec<String> = by_name
                .iter()
                .map(|(_, s)| {
                    let (rss, anon) = s.current_memory();
                    format!("{rss:.0} / {anon:.0}")
                })
                .collect();
            println!(
                "| {d} | {:.0} | {events} | {rows} | {} |",
                started.elapsed().as_secs_f64(),
                memory.join(" | ")
            );
        }
    }
    let mut services = services;
    let restarts: Vec<&str> = services
        .iter_mut()
        .filter_map(|(n, s)| (!s.is_running()).then_some(*n))
        .collect();
    println!(
        "\nRSS: resident set (includes LibTorch's ~400 MiB mapped by the single binary); anon: \
         its anonymous part, the service's own heap. Read after each day's rows reached the \
         lake; rows written: the lake's windows, features, scores, magnitudes and forest_shap \
         rows ({ROWS_PER_WINDOW} per window). Services that exited during the soak: {}.",
        if restarts.is_empty() {
            "none".to_string()
        } else {
            restarts.join(", ")
        }
    );
    for (_, s) in services {
        s.stop();
    }
    Ok(())
}
