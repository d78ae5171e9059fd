//! The Kafka services as separate processes on a real broker (tansu), compared row for row with
//! the embedded run on the same input. Each test starts its own broker on a free port.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

/// The tests share two cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Synthetic continuous data: `hours` of `stations` stations with an event every two minutes.
fn synthetic(dir: &Path, stations: usize, hours: usize) -> PathBuf {
    let out = dir.join("syn");
    let events = (stations * hours * 30).to_string();
    quakelens(
        "",
        &[
            "synth",
            "--out",
            out.to_str().unwrap(),
            "--events",
            &events,
            "--stations",
            &stations.to_string(),
        ],
    );
    out
}

/// What the comparison looks at: identity, timing, trigger, gaps, labels, a spread of
/// spectrogram values, and every feature.
const WINDOW_ROWS: &str = "SELECT w.window_id, w.station, w.band, CAST(w.start_time AS BIGINT), \
     CAST(w.onset_time AS BIGINT), w.trigger_ratio, w.gap_runs, w.filled_samples, w.event_id, \
     w.label, w.magnitude, w.spectrogram[1], w.spectrogram[7777], w.spectrogram[15147] \
     FROM windows w ORDER BY w.window_id";
const FEATURE_ROWS: &str = "SELECT * EXCEPT (day, stream) FROM features ORDER BY window_id";

/// The embedded run on `inputs`: its lake.
fn embedded(dir: &Path, inputs: &[&Path], catalog: Option<&Path>, extra: &[&str]) -> PathBuf {
    let lake = dir.join("embedded-lake");
    let mut args = vec![
        "run",
        "--lake",
        lake.to_str().unwrap(),
        "--quiet",
        "--no-models",
    ];
    args.push("--input");
    for i in inputs {
        args.push(i.to_str().unwrap());
    }
    if let Some(c) = catalog {
        args.extend(["--catalog", c.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    quakelens("", &args);
    lake
}

struct Services {
    lake: PathBuf,
    brokers: String,
    dir: PathBuf,
}

impl Services {
    fn new(dir: &Path, broker: &Broker) -> Self {
        quakelens(&broker.brokers(), &["topics", "create"]);
        Self {
            lake: dir.join("service-lake"),
            brokers: broker.brokers(),
            dir: dir.to_path_buf(),
        }
    }

    fn lake_sink(&self, name: &str) -> Proc {
        let mut args = vec!["lake", "--lake", self.lake.to_str().unwrap()];
        args.extend(FAST_GROUPS);
        spawn(&self.dir, name, &self.brokers, &args)
    }

    fn windower(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["windower"];
        args.extend(FAST_GROUPS);
        args.extend_from_slice(extra);
        spawn(&self.dir, name, &self.brokers, &args)
    }

    fn ingest(&self, inputs: &[&Path], extra: &[&str]) -> Proc {
        let mut args = vec!["ingest", "--input"];
        for i in inputs {
            args.push(i.to_str().unwrap());
        }
        args.extend_from_slice(extra);
        spawn(&self.dir, "ingest", &self.brokers, &args)
    }

    /// Waits until the lake holds `expected` windows and stays there.
    fn settle(&self, expected: usize, timeout: Duration, procs: &[&Proc]) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let n = count(&self.lake, "windows");
            if n == expected {
                std::thread::sleep(Duration::from_secs(3));
                if count(&self.lake, "windows") == expected {
                    return;
                }
            }
            assert!(
                n <= expected,
                "more windows than expected: {n} > {expected}"
            );
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = procs
                    .iter()
                    .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text(), 40)))
                    .collect();
                panic!(
                    "lake has {n} of {expected} windows after {timeout:?}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Row-for-row equality of the two lakes (windows and features), with a readable difference.
fn assert_same_rows(embedded: &Path, services: &Path) {
    for q in [WINDOW_ROWS, FEATURE_ROWS] {
        let a = sql_rows(embedded, q);
        let b = sql_rows(services, q);
        if a != b {
            let sa: BTreeSet<_> = a.iter().collect();
            let sb: BTreeSet<_> = b.iter().collect();
            let missing: Vec<_> = sa.difference(&sb).take(3).collect();
            let extra: Vec<_> = sb.difference(&sa).take(3).collect();
            panic!(
                "{} embedded rows vs {} from the services\nmissing: {missing:#?}\nextra: {extra:#?}",
                a.len(),
                b.len()
            );
        }
    }
}

fn no_duplicates(lake: &Path) {
    let rows = sql_rows(
        lake,
        "SELECT count(*) - count(DISTINCT window_id) FROM windows",
    );
    assert_eq!(rows, vec!["0".to_string()], "duplicated window rows");
}

#[test]
fn services_match_the_embedded_run_row_for_row() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    // A synthetic day of three stations, plus the real RJOB recording.
    let syn = synthetic(dir.path(), 3, 24);
    let rjob = real("BW.RJOB.2009-08-24.steim2.mseed");
    let catalog = syn.join("catalog.csv");
    let expected_lake = embedded(dir.path(), &[&syn, &rjob], Some(&catalog), &[]);
    let expected = count(&expected_lake, "windows");
    assert!(
        expected > 2000,
        "a day of 3 stations gives {expected} windows"
    );

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    let windower = s.windower("windower", &["--catalog", catalog.to_str().unwrap()]);
    let mut ingest = s.ingest(&[&syn, &rjob], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(expected, Duration::from_secs(600), &[&lake, &windower]);
    assert_same_rows(&expected_lake, &s.lake);
    let labelled = sql_rows(
        &s.lake,
        "SELECT count(*) FROM windows WHERE label IS NOT NULL",
    );
    assert_eq!(
        labelled,
        sql_rows(
            &expected_lake,
            "SELECT count(*) FROM windows WHERE label IS NOT NULL"
        )
    );
    assert_eq!(
        sql_rows(
            &s.lake,
            "SELECT count(*) FROM windows WHERE station = 'RJOB'"
        ),
        vec!["1".to_string()]
    );
    // The query service answers SQL over the same lake.
    let query = spawn(
        dir.path(),
        "query",
        &s.brokers,
        &[
            "query",
            "--lake",
            s.lake.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    wait_for(Duration::from_secs(30), "query listening", || {
        query.log_text().contains("SQL on http://")
    });
    let addr = query
        .log_text()
        .split("SQL on http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let answer = http_get(&addr, "/sql?q=SELECT%20count(*)%20AS%20n%20FROM%20windows");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("| {expected} ")), "{answer}");
    let bad = http_get(&addr, "/sql?q=SELECT%20nope%20FROM%20windows");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    // SIGTERM: both stop cleanly (batch finished, offsets committed).
    for mut p in [lake, windower] {
        let status = p.terminate();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            p.name,
            p.log_text()
        );
    }
}

#[test]
fn killed_windower_and_lake_sink_lose_and_duplicate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 4, 12);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let s = Services::new(dir.path(), &broker);
    let mut lake = s.lake_sink("lake-1");
    let mut windower = s.windower("windower-1", &[]);
    // Paced so the kills land mid-replay: 12 hours in about 40 s.
    let mut ingest = s.ingest(&[&syn], &["--realtime", "1000"]);
    wait_for(Duration::from_secs(240), "first windows", || {
        count(&s.lake, "windows") > expected / 8
    });
    windower.kill9();
    let windower = s.windower("windower-2", &[]);
    wait_for(Duration::from_secs(240), "half the windows", || {
        count(&s.lake, "windows") > expected / 2
    });
    lake.kill9();
    let lake = s.lake_sink("lake-2");
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(expected, Duration::from_secs(600), &[&lake, &windower]);
    no_duplicates(&s.lake);
    assert_same_rows(&expected_lake, &s.lake);
}

#[test]
fn broker_restart_mid_replay_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(dir.path(), "sqlite") else {
        return;
    };
    let syn = synthetic(dir.path(), 3, 8);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    let windower = s.windower("windower", &[]);
    let mut ingest = s.ingest(&[&syn], &["--realtime", "1000"]);
    wait_for(Duration::from_secs(240), "first windows", || {
        count(&s.lake, "windows") > expected / 6
    });
    broker.restart(Duration::from_secs(3));
    assert!(
        ingest.wait(Duration::from_secs(400)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(expected, Duration::from_secs(600), &[&lake, &windower]);
    no_duplicates(&s.lake);
    assert_same_rows(&expected_lake, &s.lake);
}

#[test]
fn two_windowers_split_the_partitions_and_produce_the_same_rows() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 6, 4);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    let a = s.windower("windower-a", &[]);
    let b = s.windower("windower-b", &[]);
    // Both in the group before data flows.
    wait_for(Duration::from_secs(60), "both windowers assigned", || {
        a.log_text().contains("partitions assigned")
            && b.log_text().contains("partitions assigned")
            && assigned(&a) + assigned(&b) == 6
    });
    let mut ingest = s.ingest(&[&syn], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(expected, Duration::from_secs(600), &[&lake, &a, &b]);
    no_duplicates(&s.lake);
    assert_same_rows(&expected_lake, &s.lake);
    let (ra, rb) = (records_in(&a), records_in(&b));
    assert!(
        ra > 0 && rb > 0,
        "both windowers worked: {ra} and {rb} records"
    );
}

/// Partitions in a windower's last assignment (from its log).
fn assigned(p: &Proc) -> usize {
    p.log_text()
        .lines()
        .rfind(|l| l.contains("partitions assigned"))
        .map(|l| l.matches("waveforms.raw[").count())
        .unwrap_or(0)
}

/// Records a service read, from its health endpoint.
fn records_in(p: &Proc) -> u64 {
    let log = p.log_text();
    let url = log
        .lines()
        .find_map(|l| l.split("health on ").nth(1))
        .expect("health address logged")
        .trim()
        .to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/healthz")
        .to_string();
    let body = http_get(&addr, "/healthz");
    let v: serde_json::Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or(""))
        .unwrap_or_else(|e| panic!("health JSON from {addr}: {e}: {body}"));
    v["counters"]["records_in"].as_u64().expect("records_in")
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn kcat_feeds_the_windower_and_poison_goes_to_dead_letter() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if kcat().is_none() {
        assert!(
            std::env::var("QUAKELENS_REQUIRE_BROKER").as_deref() != Ok("1"),
            "kcat or the built librdkafka.so.1 is missing (.ci/setup installs kcat)"
        );
        eprintln!("SKIPPED: no kcat");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let rjob = real("BW.RJOB.2009-08-24.steim2.mseed");
    let expected_lake = embedded(
        dir.path(),
        &[&rjob],
        None,
        &["--mode", "sliding", "--step", "5"],
    );
    let expected = count(&expected_lake, "windows");
    assert!(expected >= 1);

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    let windower = s.windower(
        "windower",
        &["--mode", "sliding", "--step", "5", "--idle-flush", "3"],
    );
    let produce = |args: &[&str], file: &Path| {
        let out = kcat()
            .expect("kcat")
            .args(["-P", "-b", &s.brokers, "-t", "waveforms.raw", "-p", "0"])
            .args(args)
            .arg(file)
            .output()
            .expect("kcat runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Poison first: random bytes, a truncated record, an empty message; then the real file,
    // whole (one message holding every record, as `kcat -P file` sends it).
    let junk = dir.path().join("junk.bin");
    std::fs::write(
        &junk,
        (0..3000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    produce(&["-k", "XX.JUNK..HHZ"], &junk);
    produce(&["-k", "BW.RJOB..EHZ"], &real("bad/truncated-record.mseed"));
    produce(&["-k", "BW.RJOB..EHZ"], &rjob);
    s.settle(expected, Duration::from_secs(120), &[&lake, &windower]);
    assert_same_rows(&expected_lake, &s.lake);

    let out = kcat()
        .expect("kcat")
        .args([
            "-C",
            "-b",
            &s.brokers,
            "-t",
            "dead-letter",
            "-e",
            "-q",
            "-f",
            "%k|%h\n",
        ])
        .output()
        .expect("kcat consumes");
    let dead = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = dead.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "dead letters: {dead}");
    assert!(
        lines[0].starts_with("XX.JUNK..HHZ|") && lines[0].contains("quakelens.error="),
        "{dead}"
    );
    assert!(
        lines[0].contains("waveforms.raw[0]@0"),
        "origin header: {dead}"
    );
    assert!(lines[1].contains("truncated"), "{dead}");
}

#[test]
fn scorer_and_forest_services_score_like_the_embedded_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 2, 2);
    let catalog = syn.join("catalog.csv");
    let lake = embedded(dir.path(), &[&syn], Some(&catalog), &[]);
    let (cnn, forest) = (
        dir.path().join("cnn.safetensors"),
        dir.path().join("forest.arrow"),
    );
    let l = lake.to_str().unwrap();
    quakelens(
        "",
        &[
            "train",
            "cnn",
            "--lake",
            l,
            "--out",
            cnn.to_str().unwrap(),
            "--epochs",
            "1",
            "--quiet",
        ],
    );
    quakelens(
        "",
        &[
            "train",
            "forest",
            "--lake",
            l,
            "--out",
            forest.to_str().unwrap(),
            "--trees",
            "20",
            "--quiet",
        ],
    );
    quakelens(
        "",
        &[
            "score",
            "--lake",
            l,
            "--cnn",
            cnn.to_str().unwrap(),
            "--forest",
            forest.to_str().unwrap(),
        ],
    );
    let windows = count(&lake, "windows");

    let s = Services::new(dir.path(), &broker);
    let sink = s.lake_sink("lake");
    let windower = s.windower("windower", &["--catalog", catalog.to_str().unwrap()]);
    let mut scorer_args = vec!["scorer", "--model", cnn.to_str().unwrap()];
    scorer_args.extend(FAST_GROUPS);
    let scorer = spawn(dir.path(), "scorer", &s.brokers, &scorer_args);
    let mut forest_args = vec!["forest", "--model", forest.to_str().unwrap()];
    forest_args.extend(FAST_GROUPS);
    let forest_svc = spawn(dir.path(), "forest", &s.brokers, &forest_args);
    let mut ingest = s.ingest(&[&syn], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(windows, Duration::from_secs(300), &[&sink, &windower]);
    wait_for(
        Duration::from_secs(300),
        "every window scored and sized",
        || count(&s.lake, "scores") == windows && count(&s.lake, "magnitudes") == windows,
    );
    let q = "SELECT s.window_id, s.model_hash, round(s.p_aftershock, 5), s.predicted_class, \
             m.model_hash, m.magnitude_pred FROM scores s JOIN magnitudes m USING (window_id) \
             ORDER BY s.window_id";
    assert_eq!(sql_rows(&s.lake, q), sql_rows(&lake, q));
    for p in [&scorer, &forest_svc] {
        assert!(p.log_text().contains("health on"), "{}", p.log_text());
    }
}

#[test]
fn seedlink_feed_reaches_the_lake() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let rjob = real("BW.RJOB.2009-08-24.steim2.mseed");
    let sliding = ["--mode", "sliding", "--step", "5"];
    let expected_lake = embedded(dir.path(), &[&rjob], None, &sliding);
    let expected = count(&expected_lake, "windows");
    assert!(expected >= 1);

    // A SeedLink server (seedlink-rs-server) holding the RJOB records, as a network's
    // ringserver would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let server = seedlink_rs_server::SeedLinkServer::bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let bytes = std::fs::read(&rjob).unwrap();
        for record in bytes.chunks(512) {
            server.store().push("BW", "RJOB", record).unwrap();
        }
        tokio::spawn(server.run());
        addr
    });

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    let mut w_args = vec!["--idle-flush", "3"];
    w_args.extend(sliding);
    let windower = s.windower("windower", &w_args);
    let server = addr.to_string();
    let mut ingest = spawn(
        dir.path(),
        "ingest-seedlink",
        &s.brokers,
        &["ingest", "--seedlink", &server, "--stream", "BW_RJOB:EH?"],
    );
    s.settle(
        expected,
        Duration::from_secs(120),
        &[&lake, &windower, &ingest],
    );
    assert_same_rows(&expected_lake, &s.lake);
    let status = ingest.terminate();
    assert!(status.success(), "{}", ingest.log_text());
    drop(rt);
}
