//! The `quakelens` binary as a user runs it: `run` then `sql`, and errors that say what and where.

use std::path::Path;
use std::process::{Command, Output};

fn quakelens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quakelens"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn real(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/quakelens-signal/tests/data/real")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn run_then_sql_counts_the_windows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let syn = dir.path().join("syn").display().to_string();
    let out = quakelens(&[
        "run",
        "--synthetic",
        "8",
        "--stations",
        "2",
        "--lake",
        &lake,
        "--synthetic-dir",
        &syn,
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("8 cut") && text.contains("8 labelled"),
        "{text}"
    );
    let out = quakelens(&["sql", "SELECT count(*) AS n FROM windows", "--lake", &lake]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("| 8 |"), "{}", stdout(&out));
    let out = quakelens(&[
        "sql",
        "SELECT count(*) AS n FROM features WHERE f1_c2_maximum_amplitude > 0",
        "--lake",
        &lake,
    ]);
    assert!(stdout(&out).contains("| 8 |"), "{}", stdout(&out));
}

#[test]
fn real_file_in_the_image_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let report = dir.path().join("report.json");
    let out = quakelens(&[
        "run",
        "--input",
        &real("BW.RJOB.2009-08-24.steim1.mseed"),
        "--image",
        "--lake",
        &lake,
        "--quiet",
        "--report",
        &report.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(report["windows"], 1);
    // Normalised image values: (0 − 0.2181)/0.2255 is the smallest possible on channel 0.
    let out = quakelens(&[
        "sql",
        "SELECT round(array_min(spectrogram), 3) AS lo FROM windows",
        "--lake",
        &lake,
    ]);
    assert!(stdout(&out).contains("-0.98"), "{}", stdout(&out));
}

#[test]
fn errors_name_the_problem() {
    let out = quakelens(&["inspect", &real("bad/random-bytes.mseed")]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("random-bytes.mseed") && stdout(&out).contains("byte 0"),
        "{}",
        stdout(&out)
    );
    let out = quakelens(&["inspect", &real("bad/truncated-record.mseed")]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("warning") && stdout(&out).contains("@ byte 512"),
        "{}",
        stdout(&out)
    );
    let out = quakelens(&["sql", "SELECT 1", "--lake", "/nonexistent/lake"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lake at /nonexistent/lake"));
    let out = quakelens(&["run", "--channel-order", "NNZ", "--synthetic", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("channel order 'NNZ'"));
}
