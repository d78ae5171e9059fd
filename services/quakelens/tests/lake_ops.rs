//! The lake's Delta operations with real processes: a sink killed between its Delta commit and
//! its Kafka commit, the S3 server killed and restarted mid-stream, two sinks committing to the
//! same tables, compaction under a query loop and kill -9, old lakes refused and converted, and
//! stores that cannot be used failing with what is wrong.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// The tests share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn synthetic(dir: &Path, stations: usize, hours: usize) -> std::path::PathBuf {
    let out = dir.join("syn");
    quakelens(
        "",
        &[
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--events",
            &(stations * hours * 30).to_string(),
            "--stations",
            &stations.to_string(),
        ],
    );
    out
}

fn embedded(dir: &Path, input: &Path) -> std::path::PathBuf {
    let lake = dir.join("embedded-lake");
    quakelens(
        "",
        &[
            "run",
            "--lake",
            lake.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--quiet",
            "--no-models",
        ],
    );
    lake
}

const WINDOW_ROWS: &str = "SELECT window_id, station, CAST(start_time AS BIGINT), label, \
     spectrogram[1], spectrogram[15147] FROM windows ORDER BY window_id";

fn assert_exactly(lake: &(impl LakeRef + ?Sized), expected_lake: &Path) {
    assert_eq!(
        sql_rows(
            lake,
            "SELECT count(*) - count(DISTINCT window_id) FROM windows"
        ),
        vec!["0"],
        "duplicated windows"
    );
    assert_eq!(
        sql_rows(
            lake,
            "SELECT count(*) - count(DISTINCT window_id) FROM features"
        ),
        vec!["0"],
        "duplicated features"
    );
    assert_eq!(
        sql_rows(lake, WINDOW_ROWS),
        sql_rows(expected_lake, WINDOW_ROWS)
    );
    assert_eq!(count(lake, "features"), count(expected_lake, "features"));
}

/// A broker with the topics created, and the embedded run's lake over the same synthetic data
/// (`stations` × `hours`) that the test streams; `None` when the broker is not installed.
struct Case {
    broker: Broker,
    syn: std::path::PathBuf,
    expected_lake: std::path::PathBuf,
    expected: usize,
}

fn case(dir: &Path, stations: usize, hours: usize) -> Option<Case> {
    let broker = Broker::start(dir, "memory")?;
    let syn = synthetic(dir, stations, hours);
    let expected_lake = embedded(dir, &syn);
    let expected = count(&expected_lake, "windows");
    quakelens(&broker.brokers(), &["topics", "create"]);
    Some(Case {
        broker,
        syn,
        expected_lake,
        expected,
    })
}

struct Fleet<'a> {
    dir: &'a Path,
    brokers: String,
    env: Vec<(String, String)>,
    lake: String,
}

impl Fleet<'_> {
    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Right after the subcommand, so a test's own `--kafka-property` later wins.
        let mut all: Vec<&str> = args.to_vec();
        if !matches!(args.first(), Some(&"ingest")) {
            all.splice(1..1, FAST_GROUPS);
        }
        spawn_with_env(self.dir, name, &self.brokers, &all, &env)
    }

    fn sink(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["lake", "--lake", &self.lake];
        args.extend_from_slice(extra);
        self.spawn(name, &args)
    }
}

/// The sink dies right after a batch's Delta commits, before its Kafka positions are stored
/// (a failpoint, so the moment is exact). With no dedup horizon only the log can say the batch
/// is in: the restarted sink replays it and writes nothing twice. On the S3 server.
#[test]
fn sink_killed_between_the_delta_and_the_kafka_commit_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(Case {
        broker,
        syn,
        expected_lake,
        expected,
    }) = case(dir.path(), 3, 4)
    else {
        return;
    };
    let Some(s3) = S3Server::start(dir.path()) else {
        return;
    };
    let lake = s3.location("killed");
    let fleet = Fleet {
        dir: dir.path(),
        brokers: broker.brokers(),
        env: s3.env(),
        lake: lake.to_string(),
    };
    // The windower is never killed here and keeps its partitions (a windower that lost them
    // would cut those windows again, at new offsets).
    let _windower = fleet.spawn("windower", &["windower"]);
    let mut first = {
        let env: Vec<(&str, &str)> = fleet
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([("QUAKELENS_FAILPOINT", "lake.after-commit:3")])
            .collect();
        let args = [
            &["lake", "--lake", fleet.lake.as_str(), "--dedup-hours", "0"][..],
            &FAST_GROUPS[..],
        ]
        .concat();
        spawn_with_env(dir.path(), "lake-1", &fleet.brokers, &args, &env)
    };
    // Windows arrive as the data streams in, so the sink's third commit comes early.
    let mut ingest = fleet.spawn(
        "ingest",
        &[
            "ingest",
            "--input",
            syn.to_str().unwrap(),
            "--realtime",
            "1000",
        ],
    );
    let status = first.wait(Duration::from_secs(300));
    assert!(!status.success(), "the failpoint aborts the sink");
    assert!(first
        .log_text()
        .contains("failpoint lake.after-commit: aborting on pass 3"));
    let landed = count(&lake, "windows");
    assert!(
        landed > 0 && landed < expected,
        "{landed} of {expected} before the restart"
    );
    assert!(
        ingest.wait(Duration::from_secs(400)).success(),
        "{}",
        ingest.log_text()
    );
    let second = fleet.sink("lake-2", &["--dedup-hours", "0"]);
    wait_for(Duration::from_secs(300), "every window", &[&second], || {
        count(&lake, "windows") >= expected
    });
    // What the sink must do is write every message of the topic once; a sink that was never
    // killed, in a group of its own, shows what that is. The killed-and-restarted lake has to
    // reach the same rows per window (a replay written twice never does). Caveat: a sink drops
    // copies of a window within one batch, and the reference catches up in one batch, so this
    // holds only while the topic has no copies: hence the patient windower above.
    let reference = s3.location("reference");
    let never_killed = Fleet {
        lake: reference.to_string(),
        ..fleet
    };
    let _third = never_killed.sink(
        "lake-reference",
        &["--dedup-hours", "0", "--group", "reference"],
    );
    let per_window =
        "SELECT window_id, count(*) FROM windows GROUP BY window_id ORDER BY window_id";
    let mut last = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        last = (
            sql_rows(&lake, per_window),
            sql_rows(&reference, per_window),
        );
        if last.0 == last.1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        last.0, last.1,
        "rows per window: restarted sink vs one never killed"
    );
    let distinct = "SELECT DISTINCT window_id, station, CAST(start_time AS BIGINT), label, \
         spectrogram[1], spectrogram[15147] FROM windows ORDER BY window_id";
    assert_eq!(
        sql_rows(&lake, distinct),
        sql_rows(&expected_lake, distinct)
    );
    assert_eq!(
        sql_rows(&lake, "SELECT count(DISTINCT window_id) FROM features"),
        sql_rows(
            &expected_lake,
            "SELECT count(DISTINCT window_id) FROM features"
        )
    );
    assert_eq!(
        sql_rows(&lake, "SELECT count(*) FROM features"),
        sql_rows(&reference, "SELECT count(*) FROM features"),
        "features rows: restarted sink vs one never killed"
    );
    assert!(
        second.log_text().contains("health on"),
        "{}",
        second.log_text()
    );
}

/// Records a service has sent, from its /healthz (0 until it serves one).
fn records_out(p: &Proc) -> u64 {
    if !p.log_text().contains("health on http://") {
        return 0;
    }
    let addr = logged_addr(p, "health on http://");
    let (_, _, body) = http(&addr, "GET", "/healthz", &[], b"");
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["counters"]["records_out"].as_u64())
        .unwrap_or(0)
}

/// The S3 server is killed and restarted while windows stream in: the sink retries its
/// commits, and the lake ends with every window once.
#[test]
fn s3_server_restart_mid_stream_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(Case {
        broker,
        syn,
        expected_lake,
        expected,
    }) = case(dir.path(), 3, 6)
    else {
        return;
    };
    let Some(mut s3) = S3Server::start(dir.path()) else {
        return;
    };
    let lake = s3.location("restart");
    let fleet = Fleet {
        dir: dir.path(),
        brokers: broker.brokers(),
        env: s3.env(),
        lake: lake.to_string(),
    };
    let sink = fleet.sink("lake", &[]);
    let windower = fleet.spawn("windower", &["windower"]);
    let mut ingest = fleet.spawn(
        "ingest",
        &[
            "ingest",
            "--input",
            syn.to_str().unwrap(),
            "--realtime",
            "1000",
        ],
    );
    wait_for(
        Duration::from_secs(240),
        "first windows",
        &[&sink, &windower],
        || count(&lake, "windows") > expected / 5,
    );
    s3.restart(Duration::from_secs(4));
    let landed = count(&lake, "windows");
    assert!(
        landed < expected,
        "the restart landed mid-stream ({landed} of {expected})"
    );
    assert!(
        ingest.wait(Duration::from_secs(400)).success(),
        "{}",
        ingest.log_text()
    );
    wait_for(
        Duration::from_secs(400),
        "every window",
        &[&sink, &windower],
        || count(&lake, "windows") >= expected,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_exactly(&lake, &expected_lake);
    // Short outages are retried inside each request (object_store backs off), longer ones
    // by the sink around whole commits: either way it shows in the log.
    let log = sink.log_text();
    assert!(
        log.contains("backing off") || log.contains("lake unavailable, retrying"),
        "the sink saw the store go away:\n{log}"
    );
    let _ = windower;
}

/// Two sinks in one group own different partitions and commit to the same tables at the same
/// time: Delta's optimistic concurrency retries the losers, every row lands once.
#[test]
fn two_sinks_commit_concurrently_to_the_same_tables() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(Case {
        broker,
        syn,
        expected_lake,
        expected,
    }) = case(dir.path(), 6, 4)
    else {
        return;
    };
    let lake = dir.path().join("shared-lake");
    let fleet = Fleet {
        dir: dir.path(),
        brokers: broker.brokers(),
        env: Vec::new(),
        lake: lake.display().to_string(),
    };
    let a = fleet.sink("lake-a", &[]);
    let b = fleet.sink("lake-b", &[]);
    wait_for(
        Duration::from_secs(90),
        "both sinks holding partitions",
        &[&a, &b],
        || held_partitions(&a, "windows") > 0 && held_partitions(&b, "windows") > 0,
    );
    let windower = fleet.spawn("windower", &["windower"]);
    let mut ingest = fleet.spawn("ingest", &["ingest", "--input", syn.to_str().unwrap()]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    wait_for(
        Duration::from_secs(400),
        "every window",
        &[&a, &b, &windower],
        || count(&lake, "windows") >= expected,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_exactly(&lake, &expected_lake);
    let (ra, rb) = (records_out(&a), records_out(&b));
    assert!(
        ra > 0 && rb > 0,
        "both sinks wrote: {ra} and {rb} rows\n--- lake-a\n{}\n--- lake-b\n{}",
        a.log_text(),
        b.log_text()
    );
    let _ = windower;
}

/// Hundreds of small files; `lake optimize` killed with -9 at several moments, then run to
/// the end, then vacuum: a query loop beside it sees every row exactly once throughout, and the
/// Python `deltalake` reader agrees at the end.
#[test]
fn compaction_under_queries_and_kills_keeps_every_row_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // Windows of many runs (one per station and step), one small commit each.
    let syn = synthetic(dir.path(), 4, 2);
    let mut stations: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in std::fs::read_dir(&syn).unwrap().flatten().map(|e| e.path()) {
        if f.extension().is_some_and(|x| x == "mseed") {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            // XX.SYN00.00.HHE.mseed → XX.SYN00.00.HH
            let channel = name.trim_end_matches(".mseed");
            let station = channel[..channel.len() - 1].to_string();
            stations
                .entry(station)
                .or_default()
                .push(f.display().to_string());
        }
    }
    assert_eq!(stations.len(), 4, "{stations:?}");
    for (i, files) in stations.values().cycle().take(12).enumerate() {
        let mut args = vec!["run", "--lake", lake.to_str().unwrap(), "--mode", "sliding"];
        let step = format!("{}", 10 + i);
        args.extend(["--step", &step, "--quiet", "--no-models"]);
        for f in files {
            args.extend(["--input", f.as_str()]);
        }
        quakelens("", &args);
    }
    let total = count(&lake, "windows");
    let before = files(&lake);
    assert!(before >= 12, "{before} files before compaction");
    // Runs of different steps may cut the same window (same station, start and length): the
    // answer before compaction is the one every later query must give.
    let counts = "SELECT count(*), count(DISTINCT window_id) FROM windows";
    let want = sql_rows(&lake, counts)[0].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, at) = (stop.clone(), lake.clone());
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            seen.push(sql_rows(&at, counts)[0].clone());
        }
        seen
    });
    for delay_ms in [150u64, 400, 900] {
        let mut p = spawn(
            dir.path(),
            &format!("optimize-{delay_ms}"),
            "",
            &[
                "lake",
                "optimize",
                "--lake",
                lake.to_str().unwrap(),
                "--target-mib",
                "1",
            ],
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        p.kill9();
        assert_eq!(
            count(&lake, "windows"),
            total,
            "after a kill at {delay_ms} ms"
        );
    }
    let out = quakelens("", &["lake", "optimize", "--lake", lake.to_str().unwrap()]);
    assert!(out.contains("windows"), "{out}");
    let after = files(&lake);
    assert!(after < before, "{before} files → {after}");
    quakelens(
        "",
        &[
            "lake",
            "vacuum",
            "--lake",
            lake.to_str().unwrap(),
            "--retain",
            "0s",
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(
        seen.len() > 3,
        "the query loop ran ({} answers)",
        seen.len()
    );
    assert!(
        seen.iter().all(|s| *s == want),
        "a query saw {:?}, not {want}",
        seen.iter().find(|s| **s != want)
    );
    assert_eq!(count(&lake, "windows"), total);
    if let Some(py) = quakelens_signal::reference::python_for_tests() {
        let out = python_c(
            py,
            "import sys; from deltalake import DeltaTable; t = DeltaTable(sys.argv[1]).to_pyarrow_table(); print(f\"{t.num_rows}|{len(set(t['window_id'].to_pylist()))}\")",
            [lake.join("windows")],
        );
        assert_eq!(out.trim(), want);
    }
}

/// Live files of the windows table.
fn files(lake: &Path) -> usize {
    let out = quakelens("", &["lake", "files", "--lake", lake.to_str().unwrap()]);
    out.lines()
        .find(|l| l.starts_with("windows"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

/// A lake in the old plain-Parquet layout (schema version 2, written here by pyarrow as the old
/// writer laid it out) is refused by name of the command, converted with its rows counted, and
/// then answers the same rows.
#[test]
fn old_lakes_are_refused_then_converted_with_every_row() {
    let Some(py) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("old");
    let script = r#"
import json, os, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
root = sys.argv[1]
os.makedirs(root)
json.dump({"schema_version": 2, "spectrogram_shape": [3, 4, 5]}, open(os.path.join(root, "lake.json"), "w"))
ts = pa.timestamp("ns", tz="UTC")
ids = [("%016x" % i, "A" if i % 2 else "B", 1_700_000_000_000_000_000 + i * 60_000_000_000) for i in range(6)]
def part(table, rows, stream, cols):
    d = os.path.join(root, table, "day=2023-11-14", "stream=XX.%s.00.HH" % stream)
    os.makedirs(d, exist_ok=True)
    pq.write_table(pa.table(cols), os.path.join(d, "part-%s.parquet" % stream))
for station in "AB":
    rows = [r for r in ids if r[1] == station]
    base = {"window_id": pa.array([r[0] for r in rows]), "network": pa.array(["XX"] * len(rows)),
            "station": pa.array([station] * len(rows)), "location": pa.array(["00"] * len(rows)),
            "band": pa.array(["HH"] * len(rows)), "start_time": pa.array([r[2] for r in rows], ts)}
    n = len(rows)
    spec = [[float(j) if k == 0 else 1.0 for j in range(60)] for k in range(n)]
    w = dict(base, end_time=pa.array([r[2] + 25_000_000_000 for r in rows], ts), onset_time=pa.array([None] * n, ts),
             mode=pa.array(["sliding"] * n), trigger_ratio=pa.array([None] * n, pa.float64()),
             sample_rate=pa.array([100.0] * n), source_rate=pa.array([100.0] * n), resampled=pa.array([False] * n),
             gap_runs=pa.array([0] * n, pa.int32()), filled_samples=pa.array([0] * n, pa.int32()),
             channel_order=pa.array(["NEZ"] * n), event_id=pa.array([None] * n, pa.string()),
             label=pa.array([1] * n, pa.int32()), magnitude=pa.array([2.5] * n))
    for c in ["p_travel_sec", "s_travel_sec", "source_depth_km", "source_latitude", "source_longitude", "receiver_latitude", "receiver_longitude"]:
        w[c] = pa.array([None] * n, pa.float64())
    w["spectrogram"] = pa.array(spec, pa.list_(pa.field("item", pa.float32(), nullable=False), 60))
    part("windows", rows, station, w)
    names = ["maximum_amplitude", "minimum_amplitude", "mean_amplitude", "standard_deviation", "median_amplitude", "amplitude_range", "energy", "root_mean_square", "mean_absolute_amplitude", "welch_peak_power", "dominant_frequency", "welch_mean_power", "spectral_entropy", "spectral_flatness", "zero_crossings", "number_of_peaks", "kurtosis", "skewness", "variance", "interquartile_range", "rise_time", "fall_time", "peak_to_peak_amplitude"]
    f = dict(base)
    for c in range(3):
        for k, name in enumerate(names):
            f["f%d_c%d_%s" % (k + 1, c, name)] = pa.array([float(k + c)] * n)
    part("features", rows, station, f)
    s = dict(base, model_kind=pa.array(["quakelens-cnn"] * n), model_hash=pa.array(["sha256:m"] * n),
             logit_foreshock=pa.array([0.0] * n, pa.float32()), logit_aftershock=pa.array([1.0] * n, pa.float32()),
             p_aftershock=pa.array([0.75] * n, pa.float32()), predicted_class=pa.array(["aftershock"] * n),
             scored_at=pa.array([r[2] for r in rows], ts))
    part("scores", rows, station, s)
"#;
    python_c(&py, script, [&lake]);
    let refused = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args([
            "sql",
            "--lake",
            lake.to_str().unwrap(),
            "SELECT count(*) FROM windows",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && err.contains("old plain-Parquet layout")
            && err.contains("quakelens lake convert"),
        "{err}"
    );
    let out = quakelens("", &["lake", "convert", "--lake", lake.to_str().unwrap()]);
    for (table, rows) in [("windows", 6), ("features", 6), ("scores", 6)] {
        assert!(
            out.contains(&format!(
                "{table:<12} {rows} rows in 2 Parquet files → {rows} rows"
            )),
            "{out}"
        );
    }
    assert!(!lake.join("lake.json").exists() && !lake.join(".old").exists());
    assert_eq!(count(&lake, "windows"), 6);
    assert_eq!(
        sql_rows(&lake, "SELECT sum(f23_c2_peak_to_peak_amplitude), sum(flat_channels), max(spectrogram[2]) FROM windows JOIN features USING (window_id)"),
        vec!["144.0|12|1.0"],
        "features kept, flat channels counted (4 windows with 3 constant channels), spectrograms kept"
    );
    assert_eq!(
        sql_rows(
            &lake,
            "SELECT predicted_class, predicted_index, probabilities[1] FROM scores LIMIT 1"
        ),
        vec!["aftershock|1|0.25"]
    );
    // The converted features follow the old (physical) definitions, and say so.
    let log = std::fs::read_to_string(lake.join("features/_delta_log/00000000000000000000.json"))
        .unwrap();
    assert!(
        log.contains(r#""quakelens.feature_set":"physical""#),
        "{log}"
    );
    // A writer of other windows is refused, with what differs.
    let err = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args([
            "run",
            "--lake",
            lake.to_str().unwrap(),
            "--synthetic",
            "2",
            "--synthetic-dir",
            dir.path().join("s").to_str().unwrap(),
            "--quiet",
            "--no-models",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && text.contains("table windows")
            && text.contains("spectrograms of shape 3,4,5, this writer makes 3,33,153"),
        "{text}"
    );
}

/// A table of another schema version, an unreachable store, a missing bucket and refused
/// credentials: each a clear error naming the table and the cause, with nothing committed.
#[test]
fn unusable_lakes_fail_with_what_is_wrong() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let run_on = |lake: &str, env: &[(String, String)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_quakelens"))
            .args(["run", "--lake", lake, "--synthetic", "3", "--synthetic-dir"])
            .arg(dir.path().join("syn"))
            .args(["--quiet", "--no-models"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("QUAKELENS_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Another schema version (a table written by a past quakelens): a real lake whose
    // windows table's metadata says version 2.
    let old = dir.path().join("v2");
    let (ok, err) = run_on(old.to_str().unwrap(), &[]);
    assert!(ok, "{err}");
    let first = old.join("windows/_delta_log/00000000000000000000.json");
    let log = std::fs::read_to_string(&first).unwrap();
    let current = format!(
        r#""quakelens.schema_version":"{}""#,
        quakelens_lake::SCHEMA_VERSION
    );
    assert!(log.contains(&current), "{log}");
    std::fs::write(
        &first,
        log.replace(&current, r#""quakelens.schema_version":"2""#),
    )
    .unwrap();
    let (ok, err) = run_on(old.to_str().unwrap(), &[]);
    assert!(
        !ok && err.contains("table windows") && err.contains("schema version 2"),
        "{err}"
    );
    let Some(s3) = S3Server::start(dir.path()) else {
        return;
    };
    let mut env = s3.env();
    let (ok, err) = run_on("s3://no-such-bucket/lake", &env);
    assert!(
        !ok && err.contains("table windows") && err.contains("bucket"),
        "{err}"
    );
    env.retain(|(k, _)| k != "AWS_SECRET_ACCESS_KEY");
    env.push(("AWS_SECRET_ACCESS_KEY".into(), "wrong".into()));
    let (ok, err) = run_on(&format!("s3://{S3_BUCKET}/lake"), &env);
    assert!(
        !ok && err.contains("table windows") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    let unreachable: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_ENDPOINT_URL" {
                (k, "http://127.0.0.1:9".into())
            } else {
                (k, v)
            }
        })
        .chain([("QUAKELENS_S3_RETRY_SECONDS".into(), "2".into())])
        .collect();
    let started = Instant::now();
    let (ok, err) = run_on(&format!("s3://{S3_BUCKET}/lake"), &unreachable);
    assert!(
        !ok && err.contains("table windows") && err.contains("reachable"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    // Nothing of any refused run was committed.
    let bucket = dir.path().join("s3-data").join(S3_BUCKET);
    assert_eq!(
        std::fs::read_dir(&bucket).unwrap().count(),
        0,
        "objects in the bucket"
    );
}
