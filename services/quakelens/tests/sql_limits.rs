//! SQL answers bounded end to end, with real processes: list columns in every format end
//! within the time and byte limits while the service stays responsive; a query past its time,
//! a client that leaves and SIGTERM all free the CPU; the CLI writes every format that pyarrow
//! and Python's csv and json modules read back.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http, logged_addr, python_c, spawn, wait_for, Proc};

/// A query that keeps both cores busy for far longer than any limit here.
const HEAVY: &str = "SELECT count(*) FROM range(100000000000) WHERE value % 7 = 3";

fn quakelens(args: &[&str]) -> String {
    common::quakelens("", args)
}

fn lake(dir: &Path, events: usize) -> PathBuf {
    let lake = dir.join("lake");
    quakelens(&[
        "run",
        "--synthetic",
        &events.to_string(),
        "--synthetic-dir",
        dir.join("syn").to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
        "--quiet",
        "--no-models",
    ]);
    lake
}

fn service(dir: &Path, name: &str, lake: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "query",
        "--lake",
        lake.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let p = spawn(dir, name, "", &args);
    wait_for(Duration::from_secs(60), "query listening", &[&p], || {
        p.log_text().contains("SQL on http://")
    });
    let addr = logged_addr(&p, "SQL on http://");
    (p, addr)
}

fn get(addr: &str, q: &str, format: &str) -> (u16, String, Vec<u8>) {
    let path = format!(
        "/sql?format={format}&q={}",
        q.replace('%', "%25")
            .replace(' ', "+")
            .replace('*', "%2A")
            .replace('=', "%3D")
    );
    http(addr, "GET", &path, &[], b"")
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used over the next `span`.
fn cpu_over(pid: u32, span: Duration) -> f64 {
    let before = cpu_seconds(pid);
    std::thread::sleep(span);
    cpu_seconds(pid) - before
}

/// Polls /healthz and a one-row query until stopped; returns the slowest answer.
fn keep_asking(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            for (path, want) in [
                ("/healthz".to_string(), "ok"),
                (
                    "/sql?q=SELECT+count%28%2A%29+AS+n+FROM+windows&format=json".to_string(),
                    "\"n\"",
                ),
            ] {
                let t = Instant::now();
                let (status, _, body) = http(&addr, "GET", &path, &[], b"");
                slowest = slowest.max(t.elapsed());
                assert_eq!(status, 200, "{path}");
                assert!(String::from_utf8_lossy(&body).contains(want), "{path}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        slowest
    })
}

#[test]
fn list_columns_in_every_format_end_within_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path(), 120);
    let (_query, addr) = service(
        dir.path(),
        "query",
        &lake,
        &["--timeout", "10", "--max-bytes-mib", "2"],
    );
    for format in ["table", "json", "arrow", "parquet", "csv"] {
        let stop = Arc::new(AtomicBool::new(false));
        let asker = keep_asking(addr.clone(), Arc::clone(&stop));
        let started = Instant::now();
        let (status, head, body) = get(&addr, "SELECT window_id, spectrogram FROM windows", format);
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let slowest = asker.join().unwrap();
        assert!(took < Duration::from_secs(12), "{format}: {took:?}");
        assert!(
            slowest < Duration::from_secs(3),
            "{format}: /healthz or a small query took {slowest:?} meanwhile"
        );
        if format == "csv" {
            // CSV cannot hold lists: a clear refusal, not a hang.
            assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));
            continue;
        }
        assert_eq!(status, 200, "{format}: {head}");
        let rows: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("X-Quakelens-Rows: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if format == "table" {
            // Lists abbreviated: every window fits on a readable page.
            assert_eq!(rows, 120, "{head}");
            assert!(!head.contains("X-Quakelens-Truncated"), "{head}");
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains("… (15147 values)]"), "{text:.400}");
            assert!(text.lines().all(|l| l.chars().count() < 200));
            continue;
        }
        // 120 spectrograms of 15,147 values are more than 2 MiB in the other formats.
        assert!(
            head.contains("X-Quakelens-Truncated: true"),
            "{format}: {head}"
        );
        assert!(rows > 0 && rows < 120, "{format}: {rows} rows");
        if format != "parquet" {
            assert!(body.len() <= 2 << 20, "{format}: {} bytes", body.len());
        }
    }
}

#[test]
fn timeouts_disconnects_and_sigterm_free_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path(), 5);

    // Past the time limit: 504 in time, and the CPU is free afterwards.
    let (query, addr) = service(dir.path(), "query-2s", &lake, &["--timeout", "2"]);
    let pid = query.pid().unwrap();
    let started = Instant::now();
    let (status, _, body) = get(&addr, HEAVY, "json");
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(5));
    let idle = cpu_over(pid, Duration::from_millis(1500));
    assert!(idle < 0.3, "{idle:.2} CPU s in 1.5 s after the timeout");

    // A client that leaves: the query it started stops.
    let (mut long, addr) = service(
        dir.path(),
        "query-long",
        &lake,
        &["--timeout", "600", "--shutdown-grace", "2"],
    );
    let pid = long.pid().unwrap();
    let ask = |addr: &str| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let q = HEAVY
            .replace(' ', "+")
            .replace('%', "%25")
            .replace('*', "%2A")
            .replace('=', "%3D");
        write!(s, "GET /sql?q={q} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s
    };
    let client = ask(&addr);
    let busy = cpu_over(pid, Duration::from_millis(1500));
    assert!(
        busy > 0.8,
        "the heavy query runs ({busy:.2} CPU s in 1.5 s)"
    );
    drop(client);
    std::thread::sleep(Duration::from_millis(500));
    let idle = cpu_over(pid, Duration::from_millis(1500));
    assert!(idle < 0.3, "{idle:.2} CPU s in 1.5 s after the client left");

    // SIGTERM while a query runs: the grace period (2 s), then it is cancelled and the
    // service exits.
    let _client = ask(&addr);
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let status = long.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "exited after {:?}",
        started.elapsed()
    );
    assert!(status.success(), "{}", long.log_text());
    assert!(
        long.log_text().contains("cancelling queries still running"),
        "{}",
        long.log_text()
    );
}

#[test]
fn the_cli_writes_every_format_that_other_tools_read() {
    let Some(py) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path(), 6);
    let l = lake.to_str().unwrap();
    let q = "SELECT window_id, station, magnitude, spectrogram FROM windows ORDER BY window_id";
    let scalar_q = "SELECT window_id, station, magnitude FROM windows ORDER BY window_id";
    let table = quakelens(&["sql", "--lake", l, scalar_q]);
    let ids: Vec<String> = table
        .lines()
        .skip(3)
        .filter_map(|line| line.split('|').nth(1).map(|c| c.trim().to_string()))
        .filter(|c| c.len() == 16)
        .collect();
    assert_eq!(ids.len(), 6, "{table}");
    let mut files = Vec::new();
    for (format, query) in [("csv", scalar_q), ("json", q), ("arrow", q), ("parquet", q)] {
        let path = dir.path().join(format!("answer.{format}"));
        quakelens(&[
            "sql",
            "--lake",
            l,
            "--format",
            format,
            "--output",
            path.to_str().unwrap(),
            query,
        ]);
        files.push(path.display().to_string());
    }
    let script = r#"
import csv, json, sys
import pyarrow.ipc, pyarrow.parquet
c, j, a, p = sys.argv[1:5]
out = []
rows = list(csv.DictReader(open(c)))
out.append(",".join(r["window_id"] for r in rows))
rows = json.load(open(j))
out.append(",".join(r["window_id"] for r in rows) + " %d" % len(rows[0]["spectrogram"]))
t = pyarrow.ipc.open_stream(open(a, "rb")).read_all()
out.append(",".join(t.column("window_id").to_pylist()) + " %d" % len(t.column("spectrogram")[0]))
t = pyarrow.parquet.read_table(p)
out.append(",".join(t.column("window_id").to_pylist()) + " %d" % len(t.column("spectrogram")[0]))
print("\n".join(out))
"#;
    let text = python_c(&py, script, &files);
    let joined = ids.join(",");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], joined, "csv");
    for (line, format) in lines[1..].iter().zip(["json", "arrow", "parquet"]) {
        assert_eq!(*line, format!("{joined} 15147"), "{format}");
    }

    // The lake as it was: the first run's windows, after a second run added more.
    let before = quakelens(&[
        "sql",
        "--lake",
        l,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM windows",
    ]);
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(1100));
    quakelens(&[
        "run",
        "--synthetic",
        "9",
        "--synthetic-dir",
        dir.path().join("more").to_str().unwrap(),
        "--lake",
        l,
        "--quiet",
        "--no-models",
    ]);
    let now = quakelens(&[
        "sql",
        "--lake",
        l,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM windows",
    ]);
    let then = quakelens(&[
        "sql",
        "--lake",
        l,
        "--format",
        "csv",
        "--as-of",
        &between,
        "SELECT count(*) AS n FROM windows",
    ]);
    assert_eq!(then, before);
    assert_ne!(now, before, "the second run added windows");
}
