//! Test harness for the services: a real tansu broker on a free loopback port, the `quakelens`
//! binary as separate processes, and SQL over the lake they write.
#![allow(dead_code)]

use std::net::TcpListener;

use arrow::array::Array;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn real(name: &str) -> PathBuf {
    root()
        .join("crates/quakelens-signal/tests/data/real")
        .join(name)
}

/// A tansu binary from `.ci/setup-broker`, or `None` (the test then says why it skips, and fails
/// where brokers are required: QUAKELENS_REQUIRE_BROKER=1 in CI).
pub fn tansu(kind: &str) -> Option<PathBuf> {
    let path = std::env::var_os("QUAKELENS_TANSU_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/tansu"))
        .join(format!("tansu-{kind}"));
    if path.is_file() {
        return Some(path);
    }
    quakelens_signal::reference::missing(
        "BROKER",
        &format!("no broker at {} (run .ci/setup-broker)", path.display()),
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) when dropped unless stopped before.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// SIGTERM, then wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(child) = &self.child {
            unsafe_kill(child.id(), "TERM");
        }
        self.wait(Duration::from_secs(30))
    }

    /// SIGINT and wait (at most 20 s, then SIGKILL).
    pub fn interrupt(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: no chance to commit or flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not finish in {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A tansu broker. `sqlite` keeps its data in a file, so it survives a restart.
pub struct Broker {
    pub port: u16,
    binary: PathBuf,
    storage: String,
    proc: Option<Proc>,
    dir: PathBuf,
    /// Logs of this broker's runs, oldest first (a restart starts a new one).
    logs: Vec<PathBuf>,
}

impl Broker {
    pub fn start(dir: &Path, kind: &str) -> Option<Self> {
        let binary = tansu(kind)?;
        // tansu resolves the sqlite path against its working directory (set to `dir`).
        let storage = if kind == "sqlite" {
            "sqlite://tansu.db".to_string()
        } else {
            "memory://tansu/".to_string()
        };
        let mut b = Self {
            port: free_port(),
            binary,
            storage,
            proc: None,
            dir: dir.to_path_buf(),
            logs: Vec::new(),
        };
        // tansu cannot bind port 0 and report it: a port found free may be taken before tansu
        // binds it, and tansu then exits. Then try another.
        for _ in 0..5 {
            if b.launch() {
                return Some(b);
            }
            b.port = free_port();
        }
        panic!(
            "tansu did not start on any of 5 ports:\n{}",
            b.log_tails(20)
        );
    }

    /// Starts tansu on `self.port`; `false` if it exited instead (the port was taken).
    fn launch(&mut self) -> bool {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = self.dir.join(format!("broker-{}.log", self.logs.len()));
        // tansu logs to stdout and panics to stderr: both go to one file.
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("tansu starts");
        self.logs.push(log.clone());
        let mut proc = Proc {
            name: "broker".into(),
            child: Some(child),
            log,
        };
        // Listening means the port is tansu's only while tansu is alive.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !proc.running() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen in 20 s:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc = Some(proc);
        true
    }

    /// For a failing test's message: each run's panics (with the line after, which says why)
    /// and the last `lines` lines of its log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.logs
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let panics: Vec<&str> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.contains("panicked at"))
                    .flat_map(|(i, _)| all[i..(i + 2).min(all.len())].iter().copied())
                    .collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!(
                    "--- {} ---\npanics:\n{}\nlast lines:\n{tail}",
                    path.display(),
                    panics.join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGINT, as a rolling restart does; tansu's sqlite engine keeps its
    /// data then) and starts it again on the same port and storage after `down_for`.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut p) = self.proc.take() {
            p.interrupt();
        }
        std::thread::sleep(down_for);
        // The clients know this port: if something took it meanwhile, wait for it to go.
        for _ in 0..10 {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "tansu could not take port {} back:\n{}",
            self.port,
            self.log_tails(20)
        );
    }
}

/// Polls `f` until true, panicking with `what` and the log tails of `procs` (the services
/// that should have made it true) after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, procs: &[&Proc], mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        if started.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                log_tails(procs, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // How close to its limit each wait came, for a test that times out elsewhere.
    eprintln!("{what}: after {:.1?} of {timeout:?}", started.elapsed());
}

/// The last `lines` lines of each process's log, under its name.
pub fn log_tails(procs: &[&Proc], lines: usize) -> String {
    let tails: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text(), lines)))
        .collect();
    tails.join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How many partitions of `topic` a service's consumer holds now, from its last logged
/// rebalance (0 after a revoke).
pub fn held_partitions(p: &Proc, topic: &str) -> usize {
    let log = strip_ansi(&p.log_text());
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"));
    match last {
        Some(l) if l.contains("partitions assigned") => l.matches(&format!("{topic}[")).count(),
        _ => 0,
    }
}

/// `text` without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Group settings of the tests: a killed member is dropped after a 6 s session (tansu expires
/// members by their last heartbeat), so rebalances take seconds instead of minutes. The poll
/// interval stays long: a live member whose step outlasts it under CI load (a debug-built sink's
/// commit to S3, say) would leave its group, hand its partitions over and replay them, and a
/// short one detects nothing a kill does not already show.
pub const FAST_GROUPS: [&str; 6] = [
    "--kafka-property",
    "session.timeout.ms=6000",
    "--kafka-property",
    "heartbeat.interval.ms=1000",
    "--kafka-property",
    "max.poll.interval.ms=120000",
];

/// Runs `quakelens` in the background with its stderr in `dir/<name>.log`.
pub fn spawn(dir: &Path, name: &str, brokers: &str, args: &[&str]) -> Proc {
    spawn_with_env(dir, name, brokers, args, &[])
}

/// As [`spawn`], with extra environment variables.
pub fn spawn_with_env(
    dir: &Path,
    name: &str,
    brokers: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(args)
        .envs(env.iter().copied())
        .env("KAFKA_BROKERS", brokers)
        .env("QUAKELENS_HEALTH", "127.0.0.1:0")
        .env("QUAKELENS_THREADS", "1")
        .env("QUAKELENS_LOG", "info,buoyant_kernel=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("quakelens starts");
    Proc {
        name: name.into(),
        child: Some(child),
        log,
    }
}

/// Runs `cmd` to completion and returns its stdout; panics with both outputs, under `what`,
/// unless it succeeds.
pub fn stdout_of(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    stdout_if_ok(out, what)
}

/// The stdout of a finished command; panics with both outputs, under `what`, unless it succeeded.
pub fn stdout_if_ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs `quakelens` to completion; panics with its output on failure.
pub fn quakelens(brokers: &str, args: &[&str]) -> String {
    stdout_of(
        Command::new(env!("CARGO_BIN_EXE_quakelens"))
            .args(args)
            .env("KAFKA_BROKERS", brokers),
        &format!("quakelens {args:?}"),
    )
}

/// A lake given as a directory, an `s3://` URL, or a location (with its store options).
pub trait LakeRef {
    fn location(&self) -> quakelens_lake::LakeLocation;
}

impl LakeRef for Path {
    fn location(&self) -> quakelens_lake::LakeLocation {
        quakelens_lake::LakeLocation::parse(&self.display().to_string()).expect("a lake location")
    }
}

impl LakeRef for PathBuf {
    fn location(&self) -> quakelens_lake::LakeLocation {
        self.as_path().location()
    }
}

impl LakeRef for quakelens_lake::LakeLocation {
    fn location(&self) -> quakelens_lake::LakeLocation {
        self.clone()
    }
}

/// An `s3s-fs` binary from `.ci/setup-s3`, or `None` (skip, unless QUAKELENS_REQUIRE_S3=1).
pub fn s3s() -> Option<PathBuf> {
    let path = std::env::var_os("QUAKELENS_S3S")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/s3s/s3s-fs"));
    if path.is_file() {
        return Some(path);
    }
    quakelens_signal::reference::missing(
        "S3",
        &format!("no S3 server at {} (run .ci/setup-s3)", path.display()),
    );
    None
}

/// A real S3-compatible server (s3s-fs) on a loopback port, keeping objects as files under
/// `dir` (so a restart finds them), with one bucket and credentials.
pub struct S3Server {
    binary: PathBuf,
    root: PathBuf,
    dir: PathBuf,
    pub port: u16,
    proc: Option<Proc>,
    runs: usize,
}

pub const S3_BUCKET: &str = "quakelens";
pub const S3_KEY: &str = "test-access-key";
pub const S3_SECRET: &str = "test-secret-key";

impl S3Server {
    pub fn start(dir: &Path) -> Option<Self> {
        let binary = s3s()?;
        let root = dir.join("s3-data");
        std::fs::create_dir_all(root.join(S3_BUCKET)).expect("bucket directory");
        let mut s = Self {
            binary,
            root,
            dir: dir.to_path_buf(),
            port: 0,
            proc: None,
            runs: 0,
        };
        s.launch();
        Some(s)
    }

    /// Starts the server: on port 0 the first time (it reports the port it bound, so no other
    /// process can take it in between), on the same port after a restart.
    fn launch(&mut self) {
        let log = self.dir.join(format!("s3-{}.log", self.runs));
        self.runs += 1;
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(&self.root)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("s3s-fs starts");
        let proc = Proc {
            name: "s3".into(),
            child: Some(child),
            log,
        };
        wait_for(
            Duration::from_secs(30),
            "the S3 server listening",
            &[&proc],
            || proc.log_text().contains("server is running at http://"),
        );
        let port = proc
            .log_text()
            .split("server is running at http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .expect("the bound port in the log");
        self.port = port;
        self.proc = Some(proc);
    }

    /// SIGKILL (requests in flight fail), `down_for`, then the same port and data again.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        std::thread::sleep(down_for);
        self.launch();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS environment a process needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// `s3://quakelens/<prefix>` with this server's options, for queries from the test itself.
    pub fn location(&self, prefix: &str) -> quakelens_lake::LakeLocation {
        quakelens_lake::LakeLocation::parse(&format!("s3://{S3_BUCKET}/{prefix}"))
            .expect("an s3 location")
            .with_options(
                self.env()
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v)),
            )
    }
}

/// One SQL answer as text rows (values joined by `|`).
pub fn sql_rows(lake: &(impl LakeRef + ?Sized), query: &str) -> Vec<String> {
    try_sql_rows(lake, query).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Like [`sql_rows`], `Err` when the lake or table is not there (yet).
pub fn try_sql_rows(lake: &(impl LakeRef + ?Sized), query: &str) -> Result<Vec<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let at = lake.location();
        let lake = quakelens_lake::Lake::open(&at)
            .await
            .map_err(|e| e.to_string())?;
        let batches = lake.sql(query).await.map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for b in batches {
            let cols: Vec<_> = (0..b.num_columns())
                .map(|c| {
                    arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8)
                        .expect("castable to text")
                })
                .collect();
            for r in 0..b.num_rows() {
                let vals: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        let s = c
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .expect("utf8");
                        if s.is_null(r) {
                            "NULL".to_string()
                        } else {
                            s.value(r).to_string()
                        }
                    })
                    .collect();
                rows.push(vals.join("|"));
            }
        }
        Ok(rows)
    })
}

/// Rows in `table`; 0 while nothing was written.
pub fn count(lake: &(impl LakeRef + ?Sized), table: &str) -> usize {
    try_sql_rows(lake, &format!("SELECT count(*) FROM {table}"))
        .ok()
        .and_then(|r| r.first().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `kcat`, run with the librdkafka our build compiled (2.12): Debian's kcat links librdkafka
/// 2.0.2, whose ApiVersions exchange with tansu 0.6 fails ("Read underflow").
pub fn kcat() -> Option<Command> {
    Command::new("kcat").arg("-V").output().ok()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let lib = ["debug", "release"]
        .iter()
        .filter_map(|profile| std::fs::read_dir(target.join(profile).join("build")).ok())
        .flatten()
        .flatten()
        .map(|e| e.path().join("out/src"))
        .find(|p| p.join("librdkafka.so.1").is_file())?;
    let mut c = Command::new("kcat");
    c.env("LD_LIBRARY_PATH", lib);
    Some(c)
}

/// `promtool` (Debian package `prometheus`); `None` skips, unless `QUAKELENS_REQUIRE_OPS_TOOLS`
/// says the run must have it (CI).
pub fn promtool() -> Option<PathBuf> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("promtool"));
    if found.is_none() {
        quakelens_signal::reference::missing(
            "OPS_TOOLS",
            "promtool is required (apt-get install prometheus; .ci/setup does)",
        );
    }
    found
}

/// Runs `promtool check metrics` on a scrape; panics with promtool's complaints.
pub fn assert_promtool_accepts(scrape: &str, what: &str) {
    use std::io::Write;
    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics on {what}:\n{complaints}"
    );
}

/// One HTTP/1.1 exchange; returns (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head, out[split + 4..].to_vec())
}

/// The address a service printed for `marker` (e.g. "health on http://").
pub fn logged_addr(p: &Proc, marker: &str) -> String {
    let log = p.log_text();
    log.split(marker)
        .nth(1)
        .and_then(|r| r.split(['/', ',', '\n']).next())
        .unwrap_or_else(|| panic!("{} did not log {marker:?}:\n{log}", p.name))
        .trim()
        .to_string()
}

/// `py -c script args…`: its standard output, or a panic with its standard error.
pub fn python_c<A: AsRef<std::ffi::OsStr>>(
    py: impl AsRef<std::ffi::OsStr>,
    script: &str,
    args: impl IntoIterator<Item = A>,
) -> String {
    // Every script ends with os._exit once its answer is flushed: pyarrow's, DuckDB's and
    // deltalake's native thread pools have been seen to abort the interpreter's teardown
    // ("terminate called without an active exception") after the work was done. A script
    // that raises still exits non-zero before reaching it.
    let script =
        format!("{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_os._exit(0)\n");
    stdout_of(
        Command::new(py).args(["-c", &script]).args(args),
        "python -c",
    )
}
