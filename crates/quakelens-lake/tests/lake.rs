//! Real Parquet written by the lake writer, read back by DataFusion, DuckDB and pyarrow.

use std::path::Path;
use std::process::Command;

use quakelens_lake::{Lake, LakeError, LakeWriter, WindowRecord};

const SHAPE: [usize; 3] = [3, 4, 5];

fn record(i: usize, station: &str, start_ns: i64) -> WindowRecord {
    WindowRecord {
        window_id: format!("{i:016x}"),
        network: "XX".into(),
        station: station.into(),
        location: "00".into(),
        band: "HH".into(),
        start_ns,
        end_ns: start_ns + 25_000_000_000,
        onset_ns: Some(start_ns + 5_000_000_000),
        mode: "event".into(),
        trigger_ratio: Some(4.5),
        sample_rate: 100.0,
        source_rate: 100.0,
        resampled: false,
        gap_runs: (i % 2) as i32,
        filled_samples: (i % 2) as i32 * 7,
        channel_order: "NEZ".into(),
        event_id: Some(format!("ev{i}")),
        label: Some((i % 2) as i32),
        magnitude: Some(1.0 + i as f64 / 10.0),
        source: Default::default(),
        spectrogram: (0..60).map(|k| (i * 100 + k) as f32).collect(),
        features: (0..69)
            .map(|k| {
                if k == 16 {
                    f64::NAN
                } else {
                    (i * 1000 + k) as f64
                }
            })
            .collect(),
    }
}

/// Two days, two stations: 4 partitions per table.
fn records() -> Vec<WindowRecord> {
    let day = 86_400_000_000_000i64;
    (0..8)
        .map(|i| {
            record(
                i,
                if i % 2 == 0 { "A" } else { "B" },
                1_700_000_000_000_000_000 + (i as i64 / 4) * day + i as i64 * 60_000_000_000,
            )
        })
        .collect()
}

async fn scalar(lake: &Lake, sql: &str) -> String {
    let table = lake.sql_table(sql).await.unwrap();
    table
        .lines()
        .nth(3)
        .unwrap()
        .trim_matches(|c| c == '|' || c == ' ')
        .to_string()
}

#[tokio::test]
async fn writes_partitioned_files_that_datafusion_queries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let writer = LakeWriter::open(&root, SHAPE).unwrap();
    let summary = writer.write(&records()).unwrap();
    assert_eq!(summary.rows, 8);
    assert_eq!(summary.files.len(), 8, "4 partitions × 2 tables");
    assert!(summary.files[0]
        .to_string_lossy()
        .contains("day=2023-11-14/stream=XX.A.00.HH"));

    let lake = Lake::open(&root).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
    assert_eq!(
        scalar(&lake, "SELECT count(DISTINCT day) FROM features").await,
        "2"
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(*) FROM windows WHERE stream = 'XX.B.00.HH'"
        )
        .await,
        "4"
    );
    assert_eq!(
        scalar(&lake, "SELECT sum(f1_c0_maximum_amplitude) FROM features").await,
        "28000.0"
    );
    // NaN features are stored as null.
    assert_eq!(
        scalar(&lake, "SELECT count(f17_c0_kurtosis) FROM features").await,
        "0"
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(*) FROM windows w JOIN features f USING (window_id) WHERE w.label = 1"
        )
        .await,
        "4"
    );
    // The spectrogram round-trips as a fixed-size list.
    assert_eq!(
        scalar(
            &lake,
            "SELECT spectrogram[2] FROM windows WHERE window_id = '0000000000000003'"
        )
        .await,
        "301.0"
    );

    // Writing the same windows again replaces files: still 8 rows.
    writer.write(&records()).unwrap();
    let lake = Lake::open(&root).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
    assert_no_temp_files(&root);
}

fn assert_no_temp_files(root: &Path) {
    for entry in walk(root) {
        assert!(
            !entry.to_string_lossy().ends_with(".tmp"),
            "left over: {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn refuses_a_lake_of_another_shape() {
    let dir = tempfile::tempdir().unwrap();
    LakeWriter::open(dir.path(), SHAPE).unwrap();
    let err = LakeWriter::open(dir.path(), [3, 33, 153]).err().unwrap();
    assert!(matches!(err, LakeError::Incompatible { .. }), "{err}");
    let writer = LakeWriter::open(dir.path(), SHAPE).unwrap();
    let mut bad = record(1, "A", 0);
    bad.spectrogram.pop();
    let err = writer.write(&[bad]).unwrap_err().to_string();
    assert!(err.contains("59 spectrogram values"), "{err}");
}

#[tokio::test]
async fn missing_lake_and_bad_sql_are_clear_errors() {
    let err = Lake::open(Path::new("/nonexistent/lake"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no lake at /nonexistent/lake"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    LakeWriter::open(dir.path(), SHAPE)
        .unwrap()
        .write(&records())
        .unwrap();
    let lake = Lake::open(dir.path()).await.unwrap();
    let err = lake
        .sql("SELECT nope FROM windows")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

/// DuckDB and pyarrow read the same files with hive partitioning.
#[test]
fn duckdb_and_pyarrow_read_the_lake() {
    let Some(python) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    LakeWriter::open(dir.path(), SHAPE)
        .unwrap()
        .write(&records())
        .unwrap();
    let script = r#"
import sys, duckdb, pyarrow.dataset as ds
root = sys.argv[1]
t = ds.dataset(root + "/features", format="parquet", partitioning="hive").to_table()
w = ds.dataset(root + "/windows", format="parquet", partitioning="hive").to_table()
assert w.schema.field("spectrogram").type.list_size == 60, w.schema
con = duckdb.connect()
n, s = con.execute(f"SELECT count(*), sum(f1_c0_maximum_amplitude) FROM read_parquet('{root}/features/**/*.parquet', hive_partitioning=true)").fetchone()
days = con.execute(f"SELECT count(DISTINCT day) FROM read_parquet('{root}/windows/**/*.parquet', hive_partitioning=true)").fetchone()[0]
print(t.num_rows, w.num_rows, n, int(s), days)
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8 8 8 28000 2");
}
