//! The Kafka services as separate processes on a real broker (tansu), compared row for row with
//! the embedded run on the same input. Each test starts its own broker on a free port.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use quakelens_explain::image::Part;
use quakelens_lake::{CnnShapRecord, LakeFormat, WindowKey};
use quakelens_pipeline::messages::{decode_windows, encode_cnn_shap, encode_windows};
use quakelens_signal::features::FeatureSet;
use quakelens_signal::miniseed::{decode_record, split_records, Frame};
use quakelens_transport::kafka::{KafkaConfig, KafkaTransport};
use quakelens_transport::topics::{
    header, DEAD_LETTER, MAGNITUDES, SCORES, SHAP_RESULTS, SHAP_TASKS, WINDOWS,
};
use quakelens_transport::{Incoming, Outgoing, Transport};

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
/// Every column of every window (the spectrogram by a digest of all its values; the catalogue
/// map, empty here, has no text form).
const WINDOW_ROWS: &str = "SELECT * EXCEPT (spectrogram, catalog), \
     md5(array_to_string(spectrogram, ',')) AS spectrogram_md5 FROM windows ORDER BY window_id";
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
    lake: quakelens_lake::LakeLocation,
    brokers: String,
    dir: PathBuf,
    /// `--kafka-property` arguments every service started here gets.
    kafka: Vec<&'static str>,
    /// Environment every service started here gets (the S3 server's credentials).
    env: Vec<(String, String)>,
}

/// Where the services' lake lives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Disk,
    S3,
}

impl Services {
    fn new(dir: &Path, broker: &Broker) -> Self {
        quakelens(&broker.brokers(), &["topics", "create"]);
        Self {
            lake: dir.join("service-lake").location(),
            brokers: broker.brokers(),
            dir: dir.to_path_buf(),
            kafka: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The same services writing their lake to a prefix of a real S3-compatible server.
    fn on_s3(mut self, s3: &S3Server) -> Self {
        self.lake = s3.location("service-lake");
        self.env = s3.env();
        self
    }

    fn lake_arg(&self) -> String {
        self.lake.to_string()
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        spawn_with_env(&self.dir, name, &self.brokers, args, &env)
    }

    /// Producers that are not idempotent and keep one request in flight (so order still holds).
    /// tansu 0.6.0 cannot take librdkafka's local epoch bump, which follows produce requests
    /// lost with a stopping broker: its sqlite engine panics on the unknown epoch and answers
    /// every later request with an error. Kafka itself accepts the bump; the services default
    /// to idempotence.
    fn without_idempotence(mut self) -> Self {
        self.kafka.extend([
            "--kafka-property",
            "enable.idempotence=false",
            "--kafka-property",
            "max.in.flight.requests.per.connection=1",
        ]);
        self
    }

    fn lake_sink(&self, name: &str) -> Proc {
        self.lake_sink_with(name, &[])
    }

    fn lake_sink_with(&self, name: &str, extra: &[&str]) -> Proc {
        let lake = self.lake_arg();
        let mut args = vec!["lake", "--lake", &lake];
        args.extend(FAST_GROUPS);
        args.extend(&self.kafka);
        args.extend_from_slice(extra);
        self.spawn(name, &args)
    }

    fn windower(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["windower"];
        args.extend(FAST_GROUPS);
        args.extend(&self.kafka);
        args.extend_from_slice(extra);
        self.spawn(name, &args)
    }

    fn ingest(&self, inputs: &[&Path], extra: &[&str]) -> Proc {
        let mut args = vec!["ingest", "--input"];
        for i in inputs {
            args.push(i.to_str().unwrap());
        }
        args.extend(&self.kafka);
        args.extend_from_slice(extra);
        self.spawn("ingest", &args)
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
                panic!(
                    "lake has {n} of {expected} windows after {timeout:?}\n{}",
                    log_tails(procs, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The services of a test, their lake on disk or on a fresh S3 server (kept alive with them);
/// `None` when the S3 server is not installed (the test says why it skips).
fn services_on(dir: &Path, broker: &Broker, on: On) -> Option<(Services, Option<S3Server>)> {
    let s = Services::new(dir, broker);
    match on {
        On::Disk => Some((s, None)),
        On::S3 => {
            let s3 = S3Server::start(dir)?;
            Some((s.on_s3(&s3), Some(s3)))
        }
    }
}

/// Row-for-row equality of the two lakes (windows and features), with a readable difference.
fn assert_same_rows(embedded: &Path, services: &(impl LakeRef + ?Sized)) {
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

fn no_duplicates(lake: &(impl LakeRef + ?Sized)) {
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
    query_service_is_hardened(dir.path(), &s, expected);
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
    kills_lose_and_duplicate_nothing(On::Disk);
}

#[test]
fn killed_windower_and_lake_sink_lose_and_duplicate_nothing_on_s3() {
    kills_lose_and_duplicate_nothing(On::S3);
}

fn kills_lose_and_duplicate_nothing(on: On) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 4, 12);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let Some((s, _s3)) = services_on(dir.path(), &broker, on) else {
        return;
    };
    let mut lake = s.lake_sink("lake-1");
    let mut windower = s.windower("windower-1", &[]);
    // Paced so the kills land mid-replay: 12 hours in about 90 s (the restarted windower must
    // catch up to half the windows while ingest still sends).
    let mut ingest = s.ingest(&[&syn], &["--realtime", "500"]);
    wait_for(
        Duration::from_secs(240),
        "first windows",
        &[&windower, &lake],
        || count(&s.lake, "windows") > expected / 8,
    );
    // Each kill lands mid-replay: ingest still sending, the lake still short.
    let mid_replay = |ingest: &mut Proc, what: &str| {
        let landed = count(&s.lake, "windows");
        assert!(ingest.running(), "{what}: ingest had finished");
        assert!(
            landed < expected,
            "{what}: {landed} of {expected} already in"
        );
    };
    mid_replay(&mut ingest, "windower kill");
    windower.kill9();
    let windower = s.windower("windower-2", &[]);
    wait_for(
        Duration::from_secs(240),
        "half the windows",
        &[&windower, &lake, &ingest],
        || count(&s.lake, "windows") > expected / 2,
    );
    mid_replay(&mut ingest, "sink kill");
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
    broker_restart_loses_nothing(On::Disk);
}

#[test]
fn broker_restart_mid_replay_loses_nothing_on_s3() {
    broker_restart_loses_nothing(On::S3);
}

fn broker_restart_loses_nothing(on: On) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(dir.path(), "sqlite") else {
        return;
    };
    let syn = synthetic(dir.path(), 3, 8);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let Some((s, _s3)) = services_on(dir.path(), &broker, on) else {
        return;
    };
    let s = s.without_idempotence();
    let lake = s.lake_sink("lake");
    let windower = s.windower("windower", &[]);
    let mut ingest = s.ingest(&[&syn], &["--realtime", "1000"]);
    wait_for(
        Duration::from_secs(240),
        "first windows",
        &[&windower, &lake],
        || count(&s.lake, "windows") > expected / 6,
    );
    // The broker stops mid-replay: ingest still sending, the lake still short.
    let landed = count(&s.lake, "windows");
    assert!(
        ingest.running(),
        "ingest had finished before the broker stopped"
    );
    assert!(landed < expected, "{landed} of {expected} already in");
    broker.restart(Duration::from_secs(3));
    assert!(
        ingest.wait(Duration::from_secs(400)).success(),
        "{}\n{}",
        ingest.log_text(),
        broker.log_tails(40)
    );
    s.settle(expected, Duration::from_secs(600), &[&lake, &windower]);
    no_duplicates(&s.lake);
    assert_same_rows(&expected_lake, &s.lake);
}

#[test]
fn two_windowers_split_the_partitions_and_produce_the_same_rows() {
    two_windowers_give_the_same_rows(On::Disk);
}

#[test]
fn two_windowers_split_the_partitions_and_produce_the_same_rows_on_s3() {
    two_windowers_give_the_same_rows(On::S3);
}

fn two_windowers_give_the_same_rows(on: On) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 6, 4);
    let expected_lake = embedded(dir.path(), &[&syn], None, &[]);
    let expected = count(&expected_lake, "windows");

    let Some((s, _s3)) = services_on(dir.path(), &broker, on) else {
        return;
    };
    let lake = s.lake_sink("lake");
    let a = s.windower("windower-a", &[]);
    let b = s.windower("windower-b", &[]);
    // Both in the group before data flows.
    wait_for(
        Duration::from_secs(60),
        "both windowers assigned",
        &[&a, &b],
        || {
            let (ha, hb) = (
                held_partitions(&a, "waveforms.raw"),
                held_partitions(&b, "waveforms.raw"),
            );
            ha > 0 && hb > 0 && ha + hb == 6
        },
    );
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

/// Records a service read, from its health endpoint.
fn records_in(p: &Proc) -> u64 {
    let addr = logged_addr(p, "health on http://");
    let (_, _, body) = http(&addr, "GET", "/healthz", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("health JSON from {addr}: {e}: {body:?}"));
    v["counters"]["records_in"].as_u64().expect("records_in")
}

/// The query service with a token and tight limits: each answer format, each refusal, a slow
/// query, and its own metrics.
fn query_service_is_hardened(dir: &Path, s: &Services, windows: usize) {
    let token = "t0ken-for-tests";
    let query = spawn_with_env(
        dir,
        "query",
        &s.brokers,
        &[
            "query",
            "--lake",
            &s.lake_arg(),
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            "1",
            "--max-rows",
            "5",
            "--memory-mib",
            "16",
        ],
        &[("QUAKELENS_QUERY_TOKEN", token)],
    );
    wait_for(
        Duration::from_secs(30),
        "query listening",
        &[&query],
        || query.log_text().contains("SQL on http://"),
    );
    let addr = logged_addr(&query, "SQL on http://");
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let get = |q: &str, headers: &[(&str, &str)]| {
        let path = format!(
            "/sql?q={}",
            q.replace('%', "%25").replace(' ', "+").replace('*', "%2A")
        );
        http(&addr, "GET", &path, headers, b"")
    };

    // Without the token, or with a wrong one: 401, no data.
    let (status, head, _) = get("SELECT count(*) FROM windows", &[]);
    assert_eq!(status, 401, "{head}");
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    let (status, ..) = get(
        "SELECT count(*) FROM windows",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(status, 401);

    // Text table (default), JSON, CSV and Arrow IPC answers.
    let (status, _, body) = get("SELECT count(*) AS n FROM windows", &auth);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains(&format!("| {windows} ")));
    let (_, head, body) = get(
        "SELECT count(*) AS n FROM windows",
        &[auth[0], ("Accept", "application/json")],
    );
    assert!(head.contains("application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json[0]["n"].as_u64(), Some(windows as u64), "{json}");
    let (_, _, body) = get(
        "SELECT station, count(*) AS n FROM windows GROUP BY station ORDER BY station&format=csv",
        &auth,
    );
    let csv = String::from_utf8(body).unwrap();
    assert!(csv.starts_with("station,n\n"), "{csv}");
    assert!(csv.contains("\nRJOB,1\n"), "{csv}");
    // The query as a POST body, answered as an Arrow IPC stream.
    let (status, head, body) = http(
        &addr,
        "POST",
        "/sql?format=arrow",
        &auth,
        b"SELECT window_id, start_time FROM windows ORDER BY window_id",
    );
    assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .expect("an Arrow IPC stream");
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    // The row limit cut it, and the answer says so.
    assert_eq!(rows, 5);
    assert!(head.contains("X-Quakelens-Truncated: true"), "{head}");
    // Spectrograms are lists: CSV cannot hold them, which is a clear 406, not a crash.
    let (status, _, body) = get("SELECT spectrogram FROM windows LIMIT 1&format=csv", &auth);
    assert_eq!(status, 406, "{}", String::from_utf8_lossy(&body));

    // Read-only: every way to write or to reach a path is refused by name.
    for (sql, status, says) in [
        ("DROP TABLE windows", 403, "DROP TABLE"),
        (
            "INSERT INTO windows (window_id) VALUES ('x')",
            403,
            "INSERT",
        ),
        ("COPY windows TO '/tmp/quakelens-stolen.csv'", 403, "COPY"),
        (
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            403,
            "CREATE EXTERNAL TABLE",
        ),
        ("SELECT * FROM '/etc/passwd'", 400, "not found"),
    ] {
        let (got, _, body) = get(sql, &auth);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "{sql}: {text}");
        assert!(text.contains(says), "{sql}: {text}");
    }
    // A slow query stops at the 1 s limit; the service keeps answering.
    let started = std::time::Instant::now();
    let (status, _, body) = get("SELECT count(*) FROM range(100000000000)", &auth);
    assert_eq!(status, 504, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(10));
    // So does one past the 16 MiB memory limit.
    let (status, _, body) = get(
        "SELECT count(*) FROM (SELECT (value * 7919) % 20000003 AS k, count(*) FROM range(20000000) GROUP BY k)",
        &auth,
    );
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let (status, ..) = get("SELECT 1", &auth);
    assert_eq!(status, 200);

    // Its metrics count each outcome and pass promtool.
    let (status, _, scrape) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let scrape = String::from_utf8(scrape).unwrap();
    for outcome in [
        "ok",
        "unauthorized",
        "refused",
        "timeout",
        "memory",
        "error",
    ] {
        assert!(
            scrape.contains(&format!("quakelens_queries_total{{outcome=\"{outcome}\"}}")),
            "{outcome} missing:\n{scrape}"
        );
    }
    assert_promtool_accepts(&scrape, "the query service");
}

#[test]
fn kcat_feeds_the_windower_and_poison_goes_to_dead_letter() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if kcat().is_none() {
        quakelens_signal::reference::missing(
            "BROKER",
            "kcat or the built librdkafka.so.1 is missing (.ci/setup installs kcat)",
        );
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
    // Poison first: random bytes and a truncated record; then the real file, whole (one
    // message holding every record, as `kcat -P file` sends it).
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, junk_bytes()).unwrap();
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
    // The second one's origin: a partition of waveforms.raw and an offset before the real
    // file's (it was sent first under the same key; only the junk may precede it there).
    let origin = lines[1]
        .split(',')
        .find_map(|h| h.strip_prefix("quakelens.origin="))
        .unwrap_or_else(|| panic!("no origin header: {dead}"));
    let offset: Option<i64> = origin
        .strip_prefix("waveforms.raw[")
        .and_then(|r| r.split_once("]@"))
        .and_then(|(_, o)| o.parse().ok());
    assert!(offset.is_some_and(|o| o <= 1), "origin header: {dead}");
    assert!(lines[1].contains("quakelens.stage=windower"), "{dead}");
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
    let mut sink = s.lake_sink("lake");
    let mut windower = s.windower("windower", &["--catalog", catalog.to_str().unwrap()]);
    let mut scorer_args = vec!["scorer", "--model", cnn.to_str().unwrap(), "--explain"];
    scorer_args.extend(FAST_GROUPS);
    let mut explainer_args = vec![
        "explainer",
        "--cnn",
        cnn.to_str().unwrap(),
        "--max-evals",
        "40",
    ];
    explainer_args.extend(FAST_GROUPS);
    let mut explainer = spawn(dir.path(), "explainer", &s.brokers, &explainer_args);
    let mut scorer = spawn(dir.path(), "scorer", &s.brokers, &scorer_args);
    let mut forest_args = vec!["forest", "--model", forest.to_str().unwrap()];
    forest_args.extend(FAST_GROUPS);
    let mut forest_svc = spawn(dir.path(), "forest", &s.brokers, &forest_args);
    // Poison on every topic a stage reads, ahead of the good messages.
    let client = Client::new(&s.brokers);
    client.send(junk_on(&[
        WINDOWS,
        SCORES,
        MAGNITUDES,
        SHAP_TASKS,
        SHAP_RESULTS,
    ]));
    let mut ingest = s.ingest(&[&syn], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(windows, Duration::from_secs(300), &[&sink, &windower]);
    // Well-formed messages no stage can use: windows of another shape and feature set (as a
    // rolling deploy produces), and a CNN explanation with too few values.
    let good = client
        .read_all(WINDOWS)
        .into_iter()
        .find(|m| {
            m.payload
                .as_deref()
                .is_some_and(|p| decode_windows(p).is_ok())
        })
        .expect("a windows message");
    client.send(vec![
        Poison::OtherFormat.made_from(&good),
        Poison::ShortExplanation.made_from(&good),
    ]);
    wait_for(
        Duration::from_secs(300),
        "every window scored and sized",
        &[&scorer, &forest_svc, &sink],
        || count(&s.lake, "scores") == windows && count(&s.lake, "magnitudes") == windows,
    );
    let q = "SELECT s.window_id, s.model_hash, round(s.p_aftershock, 5), s.predicted_class, \
             m.model_hash, m.magnitude_pred FROM scores s JOIN magnitudes m USING (window_id) \
             ORDER BY s.window_id";
    assert_eq!(sql_rows(&s.lake, q), sql_rows(&lake, q));

    // The scorer's explanation tasks: every window explained once by the explainer worker,
    // adding up to the CNN's logit margin (as scored) minus the blurred window's.
    let cells = 3 * 33 * 153;
    wait_for(
        Duration::from_secs(300),
        "every window's CNN explained",
        &[&scorer, &explainer, &sink],
        || count(&s.lake, "cnn_shap") >= windows * cells,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&s.lake, "cnn_shap"), windows * cells);
    // Each poison message once per stage that reads it: (stage, "origin reason") of each letter.
    let letters = || -> Vec<(String, String)> {
        client
            .read_all(DEAD_LETTER)
            .iter()
            .map(|m| {
                let h = |k| String::from_utf8_lossy(m.header(k).unwrap_or(b"?")).into_owned();
                (
                    h(header::STAGE),
                    format!("{} {}", h(header::ORIGIN), h(header::ERROR)),
                )
            })
            .collect()
    };
    let by_stage = |letters: &[(String, String)]| {
        let mut by = std::collections::BTreeMap::new();
        for (stage, _) in letters {
            *by.entry(stage.as_str().to_owned()).or_insert(0) += 1;
        }
        by
    };
    let poisoned: std::collections::BTreeMap<String, usize> =
        [("explainer", 1), ("forest", 2), ("lake", 6), ("scorer", 2)]
            .map(|(s, n)| (s.to_string(), n))
            .into();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut dead = letters();
    while by_stage(&dead) != poisoned && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        dead = letters();
    }
    assert_eq!(by_stage(&dead), poisoned, "{dead:#?}");
    services_export_their_metrics(
        &[&windower, &scorer, &forest_svc, &sink],
        windows,
        [0, poisoned["scorer"], poisoned["forest"], poisoned["lake"]],
    );
    let consistent = "SELECT count(*) FROM (SELECT c.window_id, sum(c.value) AS total, \
         max(c.output) AS output, max(c.base_value) AS base, \
         max(s.logit_aftershock - s.logit_foreshock) AS margin \
         FROM cnn_shap c JOIN scores s USING (window_id, model_hash) GROUP BY c.window_id) \
         WHERE abs(total - (output - base)) <= 1e-3 * greatest(abs(output - base), 1.0) \
         AND abs(output - margin) <= 1e-3 * greatest(abs(margin), 1.0)";
    assert_eq!(sql_rows(&s.lake, consistent), vec![windows.to_string()]);
    let text = scrape(&explainer);
    let mass = total(&text, "quakelens_shap_band_mass_ratio{");
    let stations = text
        .lines()
        .filter(|l| {
            l.starts_with("quakelens_shap_band_mass_ratio{") && l.contains("band=\"0-5Hz\"")
        })
        .count();
    assert!(stations >= 2, "{text}");
    assert!(
        (mass - stations as f64).abs() < 1e-6,
        "shares per station add up to 1: {mass}"
    );
    assert_promtool_accepts(&text, "explainer (CNN)");
    // Poison stopped nothing.
    for p in [
        &mut windower,
        &mut scorer,
        &mut forest_svc,
        &mut sink,
        &mut explainer,
    ] {
        assert!(p.running(), "{} exited:\n{}", p.name, p.log_text());
    }
}

/// The test's own client of the broker: reads whole topics, publishes crafted messages.
struct Client {
    rt: tokio::runtime::Runtime,
    kafka: std::sync::Arc<KafkaTransport>,
}

impl Client {
    fn new(brokers: &str) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cfg = KafkaConfig {
            brokers: brokers.to_string(),
            group: "test-client".into(),
            properties: Vec::new(),
        };
        let kafka = rt
            .block_on(async { KafkaTransport::connect(&cfg, &[]) })
            .unwrap();
        Self { rt, kafka }
    }

    fn send(&self, messages: Vec<Outgoing>) {
        self.rt
            .block_on(Transport::send(self.kafka.as_ref(), messages))
            .unwrap();
    }

    fn read_all(&self, topic: &str) -> Vec<Incoming> {
        self.rt
            .block_on(Transport::read_all(self.kafka.as_ref(), topic))
            .unwrap()
    }
}

/// 3,000 bytes that are no record and no message.
fn junk_bytes() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect()
}

/// [`junk_bytes`] once on each of `topics`.
fn junk_on(topics: &[&str]) -> Vec<Outgoing> {
    topics
        .iter()
        .map(|t| Outgoing::new(t, "XX.JUNK..HH", junk_bytes()))
        .collect()
}

/// Well-formed messages the stages must dead-letter.
enum Poison {
    /// A windows message whose spectrograms and features are not the lake's or the models'.
    OtherFormat,
    /// A CNN explanation of a real window with fewer values than its spectrogram has cells.
    ShortExplanation,
}

impl Poison {
    /// The poison built from a good windows message.
    fn made_from(&self, good: &Incoming) -> Outgoing {
        let (format, mut rows) = decode_windows(good.payload.as_deref().unwrap()).unwrap();
        let key = good.key_str().unwrap();
        match self {
            Poison::OtherFormat => {
                let other = LakeFormat {
                    shape: [format.shape[0], format.shape[1], format.shape[2] - 1],
                    features: match format.features {
                        FeatureSet::Study => FeatureSet::Physical,
                        FeatureSet::Physical => FeatureSet::Study,
                    },
                    ..format
                };
                for r in &mut rows {
                    r.window_id.push_str("-other-format");
                    r.spectrogram.truncate(other.spectrogram_len());
                }
                Outgoing::new(WINDOWS, key, encode_windows(&rows, &other))
            }
            Poison::ShortExplanation => {
                let r = &rows[0];
                let record = CnnShapRecord {
                    key: WindowKey::of(r),
                    model_hash: "0".repeat(16),
                    method: "partition".into(),
                    target: "margin".into(),
                    budget: 40,
                    seed: 0,
                    output: 1.0,
                    base_value: 0.0,
                    values: vec![0.5; 10],
                    batch: None,
                };
                Outgoing::new(SHAP_RESULTS, key, encode_cnn_shap(&[(record, Part::WHOLE)]))
            }
        }
    }
}

/// The Prometheus scrape of a running service.
fn scrape(p: &Proc) -> String {
    let addr = logged_addr(p, "metrics on http://");
    let (status, head, body) = http(&addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    String::from_utf8(body).unwrap()
}

/// Sum of the samples whose line starts with `prefix` (name plus, optionally, labels).
fn total(scrape: &str, prefix: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Windower, scorer, forest and lake after scoring `windows` windows and dead-lettering `dead`
/// messages: the families an operator alerts on are there with consistent values, and promtool
/// accepts every scrape.
fn services_export_their_metrics(procs: &[&Proc; 4], windows: usize, dead: [usize; 4]) {
    let [windower, scorer, forest, lake] = procs;
    let n = windows as f64;
    // Consumer lag comes from librdkafka statistics, every 5 s.
    wait_for(
        Duration::from_secs(30),
        "consumer lag in the scrape",
        procs,
        || {
            procs
                .iter()
                .all(|p| scrape(p).contains("quakelens_consumer_lag_messages{"))
        },
    );
    let w = scrape(windower);
    assert_eq!(total(&w, "quakelens_windows_total{"), n);
    assert!(total(&w, "quakelens_records_in_total{stage=\"windower\"}") > 0.0);
    assert!(
        total(
            &w,
            "quakelens_batch_duration_seconds_count{stage=\"windower\"}"
        ) > 0.0
    );
    assert!(w.contains("quakelens_station_last_sample_timestamp_seconds{station="));
    assert!(w.contains("quakelens_consumer_lag_messages{partition=\"0\",topic=\"waveforms.raw\"}"));
    let s = scrape(scorer);
    assert_eq!(total(&s, "quakelens_predictions_total{"), n);
    assert_eq!(total(&s, "quakelens_aftershock_probability_count"), n);
    assert_eq!(
        total(
            &s,
            "quakelens_window_latency_seconds_count{stage=\"scorer\"}"
        ),
        n
    );
    assert!(total(&s, "quakelens_model_inference_seconds_count{model=\"cnn\"}") > 0.0);
    let f = scrape(forest);
    assert!(
        total(
            &f,
            "quakelens_model_inference_seconds_count{model=\"forest\"}"
        ) > 0.0
    );
    assert!(
        !f.contains("quakelens_predictions_total"),
        "the forest predicts no classes"
    );
    let l = scrape(lake);
    // The lake times each windows message by its newest window.
    assert!(total(&l, "quakelens_window_latency_seconds_count{stage=\"lake\"}") > 0.0);
    assert!(total(&l, "quakelens_records_out_total{stage=\"lake\"}") >= 3.0 * n);
    for ((p, text), dead) in [(windower, &w), (scorer, &s), (forest, &f), (lake, &l)]
        .into_iter()
        .zip(dead)
    {
        assert!(text.contains("process_resident_memory_bytes"), "{}", p.name);
        assert_eq!(
            total(text, "quakelens_dead_letters_total"),
            dead as f64,
            "{}",
            p.name
        );
        assert_promtool_accepts(text, &p.name);
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

    // A SeedLink server (seedlink-rs-server) with its ring journaled to disk, as a network's
    // ringserver keeps it: the first half of the RJOB records (time order, too short for a
    // window), then the server is stopped with its client connected, restarted on the same
    // address from its journal, and the second half arrives live.
    let bytes = std::fs::read(&rjob).unwrap();
    let mut records: Vec<(i64, Vec<u8>)> = split_records(&bytes)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Record { offset, len } => Some(bytes[offset..offset + len].to_vec()),
            Frame::Bad { .. } => None,
        })
        .map(|b| (decode_record(&b).expect("RJOB decodes").start_ns, b))
        .collect();
    records.sort_by_key(|r| r.0);
    let records: Vec<Vec<u8>> = records.into_iter().map(|r| r.1).collect();
    let first_ring = records.len() / 2;
    assert!(
        first_ring < records.len(),
        "{first_ring} of {}",
        records.len()
    );
    let ring = dir.path().join("seedlink-ring");
    let serve = |addr: &str, records: &[Vec<u8>]| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (bound, stop) = rt.block_on(async {
            let config = seedlink_rs_server::ServerConfig {
                persist_dir: Some(ring.clone()),
                ..Default::default()
            };
            let server = seedlink_rs_server::SeedLinkServer::bind_with_config(addr, config)
                .await
                .unwrap();
            let bound = server.local_addr().unwrap();
            for record in records {
                server.store().push("BW", "RJOB", record).unwrap();
            }
            let stop = server.shutdown_handle();
            tokio::spawn(server.run());
            (bound, stop)
        });
        (rt, bound, stop)
    };
    let (rt, addr, stop) = serve("127.0.0.1:0", &records[..first_ring]);

    let s = Services::new(dir.path(), &broker);
    let lake = s.lake_sink("lake");
    // Longer than the outage below: the pause is not the end of the station's data.
    let mut w_args = vec!["--idle-flush", "12"];
    w_args.extend(sliding);
    let windower = s.windower("windower", &w_args);
    let server = addr.to_string();
    let mut ingest = spawn(
        dir.path(),
        "ingest-seedlink",
        &s.brokers,
        &["ingest", "--seedlink", &server, "--stream", "BW_RJOB:EH?"],
    );
    wait_for(
        Duration::from_secs(120),
        "the first ring at the windower",
        &[&windower],
        || {
            windower.log_text().contains("health on http://")
                && records_in(&windower) == first_ring as u64
        },
    );
    let landed = count(&s.lake, "windows");
    assert!(
        landed < expected,
        "{landed} of {expected} from the first {first_ring} records"
    );
    assert!(ingest.running(), "{}", ingest.log_text());
    // The server goes away (every connection with it) and comes back from its journal.
    stop.shutdown();
    rt.shutdown_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let (rt, _, _) = serve(&server, &records[first_ring..]);
    s.settle(
        expected,
        Duration::from_secs(180),
        &[&lake, &windower, &ingest],
    );
    assert_same_rows(&expected_lake, &s.lake);
    // Every record once on waveforms.raw: the client resumed after the last sequence number it
    // had, not from the start of the recovered ring (the sink would hide repeated windows; this
    // would not), and missed none of the live ones.
    assert_eq!(records_in(&windower), records.len() as u64);
    let status = ingest.terminate();
    assert!(status.success(), "{}", ingest.log_text());
    drop(rt);
}

/// The forest service cuts explanation tasks; explainer workers in one group share them; one
/// killed mid-work has its tasks redone. The lake ends with exactly the explanations `quakelens
/// score` computes in one process, each once.
#[test]
fn explainer_workers_share_the_tasks_and_lose_none() {
    explainers_share_the_tasks(On::Disk);
}

#[test]
fn explainer_workers_share_the_tasks_and_lose_none_on_s3() {
    explainers_share_the_tasks(On::S3);
}

fn explainers_share_the_tasks(on: On) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 3, 3);
    let catalog = syn.join("catalog.csv");
    let lake = embedded(dir.path(), &[&syn], Some(&catalog), &[]);
    let forest = dir.path().join("forest.arrow");
    let l = lake.to_str().unwrap();
    let f = forest.to_str().unwrap();
    quakelens(
        "",
        &[
            "train", "forest", "--lake", l, "--out", f, "--trees", "60", "--quiet",
        ],
    );
    quakelens("", &["score", "--lake", l, "--forest", f]);
    let windows = count(&lake, "windows");
    assert!(windows > 200, "{windows} windows");

    let Some((s, _s3)) = services_on(dir.path(), &broker, on) else {
        return;
    };
    let sink = s.lake_sink("lake");
    let windower = s.windower("windower", &["--catalog", catalog.to_str().unwrap()]);
    let mut forest_args = vec!["forest", "--model", f, "--explain"];
    forest_args.extend(FAST_GROUPS);
    let forest_svc = s.spawn("forest", &forest_args);
    let mut explainer_args = vec!["explainer", "--model", f];
    explainer_args.extend(FAST_GROUPS);
    let mut first = s.spawn("explainer-1", &explainer_args);
    let mut ingest = s.ingest(&[&syn], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    // Kill the first worker once it has taken tasks, then run two.
    wait_for(
        Duration::from_secs(300),
        "the first explainer at work",
        &[&forest_svc, &first],
        || records_in(&first) > 0,
    );
    first.kill9();
    let second = s.spawn("explainer-2", &explainer_args);
    let first = s.spawn("explainer-1b", &explainer_args);
    let rows = 69 * windows;
    wait_for(
        Duration::from_secs(600),
        "every magnitude explained",
        &[&forest_svc, &first, &second, &sink],
        || count(&s.lake, "forest_shap") >= rows,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&s.lake, "forest_shap"),
        rows,
        "duplicated explanation rows"
    );
    let q = "SELECT window_id, model_hash, feature, value, base_value FROM forest_shap \
             ORDER BY window_id, feature";
    assert_eq!(sql_rows(&s.lake, q), sql_rows(&lake, q));
    // Both workers of the second round did work: the new one and the restarted one shared the
    // rest (tasks spread over the partitions).
    assert!(records_in(&second) > 0, "{}", second.log_text());
    assert!(records_in(&first) > 0, "{}", first.log_text());
    let text = scrape(&second);
    assert!(
        total(&text, "quakelens_shap_task_duration_seconds_count") > 0.0,
        "{text}"
    );
    assert!(
        total(
            &text,
            "quakelens_window_latency_seconds_count{stage=\"explainer\"}"
        ) > 0.0
    );
    assert_promtool_accepts(&text, "explainer");
    for p in [&sink, &windower, &forest_svc] {
        assert!(p.log_text().contains("health on"), "{}", p.name);
    }
}

/// 9. A CNN budget above one task's share: the explainers split each window into parts on
///    shap.tasks, two workers share them, and the lake sink adds them up: every window once,
///    with the values `quakelens explain --parts` computes in one process.
#[test]
fn split_cnn_windows_are_shared_by_two_workers() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let syn = synthetic(dir.path(), 2, 1);
    let catalog = syn.join("catalog.csv");
    let lake = embedded(dir.path(), &[&syn], Some(&catalog), &[]);
    let cnn = dir.path().join("cnn.safetensors");
    let (l, c) = (lake.to_str().unwrap(), cnn.to_str().unwrap());
    quakelens(
        "",
        &[
            "train", "cnn", "--lake", l, "--out", c, "--epochs", "1", "--quiet",
        ],
    );
    quakelens("", &["score", "--lake", l, "--cnn", c]);
    quakelens(
        "",
        &[
            "explain",
            "--lake",
            l,
            "--cnn",
            c,
            "--max-evals",
            "90",
            "--parts",
            "3",
        ],
    );
    let windows = count(&lake, "windows");

    let s = Services::new(dir.path(), &broker);
    let sink = s.lake_sink("lake");
    let windower = s.windower("windower", &["--catalog", catalog.to_str().unwrap()]);
    let mut scorer_args = vec!["scorer", "--model", c, "--explain"];
    scorer_args.extend(FAST_GROUPS);
    let scorer = spawn(dir.path(), "scorer", &s.brokers, &scorer_args);
    let mut explainer_args = vec![
        "explainer",
        "--cnn",
        c,
        "--max-evals",
        "90",
        "--evals-per-task",
        "30",
    ];
    explainer_args.extend(FAST_GROUPS);
    let one = spawn(dir.path(), "explainer-1", &s.brokers, &explainer_args);
    let two = spawn(dir.path(), "explainer-2", &s.brokers, &explainer_args);
    let mut ingest = s.ingest(&[&syn], &[]);
    assert!(
        ingest.wait(Duration::from_secs(300)).success(),
        "{}",
        ingest.log_text()
    );
    s.settle(windows, Duration::from_secs(300), &[&sink, &windower]);
    let cells = 3 * 33 * 153;
    wait_for(
        Duration::from_secs(300),
        "every split window merged",
        &[&scorer, &one, &two, &sink],
        || count(&s.lake, "cnn_shap") >= windows * cells,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&s.lake, "cnn_shap"),
        windows * cells,
        "a window twice"
    );
    // Both workers explained parts.
    for w in [&one, &two] {
        assert!(records_in(w) > 0, "{}", w.log_text());
    }
    // The same values as the parts added up in one process (LibTorch may round differently
    // with other thread counts: compared to 1e-5 of each window's largest value).
    let q = "SELECT window_id, channel, freq_hz, time_s, value, \
             max(abs(value)) OVER (PARTITION BY window_id) AS scale \
             FROM cnn_shap ORDER BY window_id, channel, freq_hz, time_s";
    let (got, want) = (sql_rows(&s.lake, q), sql_rows(&lake, q));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let (gf, wf): (Vec<&str>, Vec<&str>) = (g.split('|').collect(), w.split('|').collect());
        assert_eq!(gf[..4], wf[..4], "{g} vs {w}");
        let (a, b, scale) = (
            gf[4].parse::<f64>().unwrap(),
            wf[4].parse::<f64>().unwrap(),
            wf[5].parse::<f64>().unwrap(),
        );
        assert!((a - b).abs() <= 1e-5 * scale, "{g} vs {w}");
    }
    // No worker saw a window whole: the sink sets the band shares (the drift signal).
    let text = scrape(&sink);
    let stations = text
        .lines()
        .filter(|l| {
            l.starts_with("quakelens_shap_band_mass_ratio{") && l.contains("band=\"0-5Hz\"")
        })
        .count();
    assert_eq!(stations, 2, "{text}");
    let mass = total(&text, "quakelens_shap_band_mass_ratio{");
    assert!(
        (mass - 2.0).abs() < 1e-6,
        "shares per station add up to 1: {mass}"
    );
    assert_promtool_accepts(&text, "lake sink");
    let _ = scorer;
}

/// A state topic read whole (`windower.progress` at start-up, `dead-letter` here) holds every
/// record of a batch sent at once: tansu's ListOffsets(latest) counts only a batch's first one.
#[test]
fn reading_a_topic_whole_sees_every_record_of_a_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), "memory") else {
        return;
    };
    let _s = Services::new(dir.path(), &broker);
    let client = Client::new(&broker.brokers());
    let mut sent = 0;
    for n in [1usize, 3, 2, 1] {
        client.send(
            (0..n)
                .map(|i| Outgoing::new(DEAD_LETTER, format!("k{i}"), vec![i as u8; 10]))
                .collect(),
        );
        sent += n;
        let offsets: Vec<i64> = client
            .read_all(DEAD_LETTER)
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(offsets, (0..sent as i64).collect::<Vec<_>>());
    }
}
