//! `quakelens bench lake`: the lake over time. A simulated day (or more) of windows from many
//! stations streams through the lake sink stage (the code the `lake` service runs) on the
//! in-memory transport, one commit per poll batch as in production; then files per table and
//! the README's SQL queries before and after `optimize`; then sink start-up against lakes with
//! 10⁴, 10⁵ and 10⁶ windows of history, beside the start-up of the earlier plain-Parquet sink
//! (which loaded every key of the lake: its query, timed on the same tables).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use quakelens_lake::{
    file_counts, optimize, Lake, LakeFormat, LakeLocation, LakeWriter, Table, WindowRecord,
};
use quakelens_pipeline::messages::encode_windows;
use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::lake_sink::{LakeSinkConfig, LakeSinkStage};
use quakelens_pipeline::stages::Stage;
use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, WINDOWS};
use quakelens_transport::{Outgoing, Transport};

use super::runtime;

#[derive(Args, Debug)]
pub struct LakeBenchArgs {
    /// Stations streaming.
    #[arg(long, default_value_t = 60)]
    stations: usize,
    /// Hours of simulated time.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Seconds between events at each station.
    #[arg(long, default_value_t = 600.0)]
    event_every_s: f64,
    /// Windows per sink poll batch (one Delta commit per table each).
    #[arg(long, default_value_t = 25)]
    batch: usize,
    /// History sizes for the start-up comparison (windows already in the lake).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    history: Vec<usize>,
    /// Windows written within the dedup horizon before each start-up (what a sink that has been
    /// running warms its keys from, whatever the history).
    #[arg(long, default_value_t = 5000)]
    recent: usize,
    /// Working directory (default: a temporary one; several GB for the defaults).
    #[arg(long)]
    work: Option<PathBuf>,
}

const DAY_NS: i64 = 86_400_000_000_000;
const T0_NS: i64 = 1_717_200_000_000_000_000; // 2024-06-01

/// A window of station `s` at `start_ns`, with `values` spectrogram values and the study's 69
/// features (deterministic noise: the content does not matter, only its size and layout).
fn window(s: usize, k: usize, start_ns: i64, values: usize) -> WindowRecord {
    let seed = (s as u64) << 32 | k as u64;
    let noise = |i: usize| {
        let x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add((i as u64).wrapping_mul(1442695040888963407));
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    WindowRecord {
        window_id: format!("{:016x}", seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        network: "XB".into(),
        station: format!("S{s:04}"),
        location: "00".into(),
        band: "HH".into(),
        start_ns,
        end_ns: start_ns + 25_000_000_000,
        onset_ns: Some(start_ns + 5_000_000_000),
        mode: "event".into(),
        trigger_ratio: Some(3.0 + noise(0) as f64),
        sample_rate: 100.0,
        source_rate: 100.0,
        resampled: false,
        gap_runs: 0,
        filled_samples: 0,
        flat_channels: 0,
        channel_order: "NEZ".into(),
        event_id: Some(format!("ev{s}-{k}")),
        label: Some((k % 2) as i32),
        magnitude: Some(1.5 + 2.5 * noise(1) as f64),
        ttf_s: None,
        source: Default::default(),
        catalog: Vec::new(),
        spectrogram: (0..values).map(noise).collect(),
        features: (0..69).map(|i| noise(i + 7) as f64).collect(),
        waveform: Vec::new(),
    }
}

fn format(shape: [usize; 3]) -> LakeFormat {
    LakeFormat {
        shape,
        input: SpectrogramInput::default(),
        features: FeatureSet::Study,
        waveform: None,
    }
}

/// The README's SQL examples (the first three).
const QUERIES: [(&str, &str); 3] = [
    (
        "windows per stream",
        "SELECT stream, count(*) AS windows, avg(trigger_ratio) AS ratio FROM windows GROUP BY stream ORDER BY stream",
    ),
    (
        "RMS by class and magnitude (join)",
        "SELECT w.label, round(w.magnitude) AS m, count(*) AS n, avg(f.f8_c2_root_mean_square) AS rms_z FROM windows w JOIN features f USING (window_id) GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "one spectrogram value",
        "SELECT window_id, spectrogram[1] FROM windows LIMIT 3",
    ),
];

async fn time_queries(at: &LakeLocation) -> anyhow::Result<Vec<f64>> {
    let lake = Lake::open(at).await?;
    let mut out = Vec::new();
    for (_, q) in QUERIES {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            lake.sql(q).await?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        out.push(best);
    }
    Ok(out)
}

async fn files(at: &LakeLocation) -> anyhow::Result<Vec<(Table, usize)>> {
    Ok(file_counts(at)
        .await?
        .into_iter()
        .filter(|(t, _)| matches!(t, Table::Windows | Table::Features))
        .collect())
}

/// Streams the simulated time through the sink; returns (windows, commits, seconds).
async fn stream(args: &LakeBenchArgs, at: &LakeLocation) -> anyhow::Result<(usize, usize, f64)> {
    let fmt = format([3, 33, 153]);
    let broker = MemoryBroker::new();
    for (t, p) in topics::ALL {
        broker.create_topic(t, p);
    }
    let producer = broker.transport(&[]);
    let span_ns = (args.hours * 3600e9) as i64;
    let every_ns = (args.event_every_s * 1e9) as i64;
    let per_station = (span_ns / every_ns.max(1)) as usize;
    // Time order across stations, as live data arrives; stations offset within the interval.
    let mut sent = 0;
    for k in 0..per_station {
        let mut messages = Vec::new();
        for s in 0..args.stations {
            let start = T0_NS + k as i64 * every_ns + (s as i64 * every_ns) / args.stations as i64;
            let w = window(s, k, start, fmt.shape.iter().product());
            messages.push(Outgoing::new(
                WINDOWS,
                format!("XB.S{s:04}.00.HH").as_str(),
                encode_windows(std::slice::from_ref(&w), &fmt),
            ));
        }
        sent += messages.len();
        producer.send(messages).await?;
    }
    let mut sink = LakeSinkStage::open(at, fmt, LakeSinkConfig::new("bench")).await?;
    let t = broker.transport(&[WINDOWS]);
    let metrics = Metrics::new();
    let counters = metrics.stage("lake");
    let started = Instant::now();
    let mut commits = 0;
    loop {
        let batch = t.recv(args.batch, Duration::ZERO).await?;
        if batch.is_empty() {
            break;
        }
        sink.step(&t, batch, &counters).await?;
        commits += 1;
    }
    Ok((sent, commits, started.elapsed().as_secs_f64()))
}

/// A lake of `history` old windows (small spectrograms: start-up reads the log and keys, not
/// the values), compacted, plus `recent` windows written after the dedup horizon began.
/// Returns when the recent slice began.
async fn history_lake(at: &LakeLocation, history: usize, recent: usize) -> anyhow::Result<Instant> {
    let fmt = format([3, 2, 2]);
    let mut writer = LakeWriter::open(at, fmt).await?;
    let stations = 100;
    let chunk = 20_000;
    let mut written = 0;
    while written < history {
        let n = chunk.min(history - written);
        let rows: Vec<WindowRecord> = (written..written + n)
            .map(|i| {
                let (s, k) = (i % stations, i / stations);
                window(s, k, T0_NS - DAY_NS * 365 + i as i64 * 60_000_000_000, 12)
            })
            .collect();
        writer.write_windows_and_features(&rows, &[]).await?;
        written += n;
    }
    // As the sink's periodic compaction leaves an old lake: its history in few files.
    optimize(at, &[], 128 << 20).await?;
    // History ends well before the horizon begins.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let began = Instant::now();
    let rows: Vec<WindowRecord> = (0..recent)
        .map(|i| {
            window(
                1000 + i % stations,
                i / stations,
                T0_NS + i as i64 * 1_000_000_000,
                12,
            )
        })
        .collect();
    writer.write_windows_and_features(&rows, &[]).await?;
    Ok(began)
}

/// The earlier sink's start-up: every key of every table it wrote, into memory.
async fn load_every_key(at: &LakeLocation) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let lake = Lake::open(at).await?;
    let mut keys = std::collections::HashSet::new();
    for table in ["windows", "features"] {
        for b in lake
            .sql(&format!("SELECT DISTINCT window_id FROM {table}"))
            .await?
        {
            let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let ids = ids
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .context("window ids")?;
            for i in 0..arrow::array::Array::len(ids) {
                keys.insert(format!("{table}|{}", ids.value(i)));
            }
        }
    }
    Ok((keys.len(), started.elapsed().as_secs_f64()))
}

pub fn run(args: LakeBenchArgs) -> anyhow::Result<()> {
    let tmp;
    let work = match &args.work {
        Some(w) => w.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work)?;
    runtime()?.block_on(async {
        let at = LakeLocation::local(&work.join("stream"))?;
        let (windows, commits, seconds) = stream(&args, &at).await?;
        println!(
            "lake benchmark: {} stations × {} h (an event every {} s per station): {windows} windows streamed through the lake sink in {commits} poll batches of {} in {seconds:.1} s ({:.0} windows/s)",
            args.stations,
            args.hours,
            args.event_every_s,
            args.batch,
            windows as f64 / seconds
        );
        let before_files = files(&at).await?;
        let before_sql = time_queries(&at).await?;
        let t = Instant::now();
        optimize(&at, &[], 128 << 20).await?;
        let optimize_s = t.elapsed().as_secs_f64();
        let after_files = files(&at).await?;
        let after_sql = time_queries(&at).await?;
        println!();
        println!("| | before optimize | after optimize ({optimize_s:.1} s) | ratio |");
        println!("|---|---:|---:|---:|");
        for ((table, b), (_, a)) in before_files.iter().zip(&after_files) {
            println!(
                "| files in `{}` | {b} | {a} | {:.1}× fewer |",
                table.name(),
                *b as f64 / (*a).max(1) as f64
            );
        }
        for (((name, _), b), a) in QUERIES.iter().zip(&before_sql).zip(&after_sql) {
            println!("| SQL: {name} (s, best of 3) | {b:.3} | {a:.3} | {:.1}× |", b / a);
        }

        println!();
        println!(
            "| windows in the lake | files (compacted) | sink start-up (Delta: log + keys of the last {} windows) | keys loaded | earlier sink (every key of the lake) | keys loaded | ratio |",
            args.recent
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for &history in &args.history {
            let at = LakeLocation::local(&work.join(format!("history-{history}")))?;
            let began = history_lake(&at, history, args.recent).await?;
            let live: usize = files(&at).await?.iter().map(|(_, n)| n).sum();
            let mut cfg = LakeSinkConfig::new("bench");
            // The horizon reaches back to the recent slice, not to the history before it.
            cfg.dedup_horizon = began.elapsed() + Duration::from_millis(500);
            let t = Instant::now();
            let sink = LakeSinkStage::open(&at, format([3, 2, 2]), cfg).await?;
            let ours = t.elapsed().as_secs_f64();
            let warmed = sink.recent_keys();
            let (keys, old) = load_every_key(&at).await?;
            println!(
                "| {} | {live} | {ours:.3} s | {warmed} | {old:.3} s | {keys} | {:.1}× |",
                history + args.recent,
                old / ours
            );
        }
        anyhow::Ok(())
    })
}
