//! The SQL guard rails the query service relies on: read-only, lake-only, time, memory and
//! row limits, each a clear error.

use std::time::Duration;

use quakelens_lake::{
    Lake, LakeFormat, LakeLocation, LakeWriter, QueryError, QueryLimits, WindowRecord,
};

const FORMAT: LakeFormat = LakeFormat {
    shape: [3, 4, 5],
    input: quakelens_signal::spectrogram::SpectrogramInput {
        power: quakelens_signal::spectrogram::Power::Log,
        scaling: quakelens_signal::spectrogram::ImageScaling::Raw,
    },
    features: quakelens_signal::features::FeatureSet::Study,
    waveform: None,
};

fn records(n: usize) -> Vec<WindowRecord> {
    (0..n)
        .map(|i| WindowRecord {
            window_id: format!("{i:016x}"),
            network: "XX".into(),
            station: "A".into(),
            location: "00".into(),
            band: "HH".into(),
            start_ns: 1_700_000_000_000_000_000 + i as i64 * 30_000_000_000,
            end_ns: 1_700_000_000_000_000_000 + i as i64 * 30_000_000_000 + 25_000_000_000,
            onset_ns: None,
            mode: "sliding".into(),
            trigger_ratio: None,
            sample_rate: 100.0,
            source_rate: 100.0,
            resampled: false,
            gap_runs: 0,
            filled_samples: 0,
            flat_channels: 0,
            channel_order: "NEZ".into(),
            event_id: None,
            label: None,
            magnitude: None,
            ttf_s: None,
            source: Default::default(),
            catalog: Vec::new(),
            spectrogram: vec![i as f32; 60],
            features: vec![i as f64; 69],
            waveform: Vec::new(),
        })
        .collect()
}

async fn lake(limits: QueryLimits) -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let at = LakeLocation::local(dir.path()).unwrap();
    LakeWriter::open(&at, FORMAT)
        .await
        .unwrap()
        .write_windows_and_features(&records(10), &[])
        .await
        .unwrap();
    let lake = Lake::open_with(&at, limits, None).await.unwrap();
    (dir, lake)
}

#[tokio::test]
async fn only_single_queries_run() {
    let (dir, lake) = lake(QueryLimits::default()).await;
    let outside = dir.path().join("stolen");
    for (sql, names) in [
        ("INSERT INTO windows (window_id) VALUES ('x')", "INSERT"),
        ("DELETE FROM windows", "DELETE"),
        ("DROP TABLE windows", "DROP TABLE"),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        (
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        (
            &format!("COPY windows TO '{}' STORED AS CSV", outside.display()),
            "COPY",
        ),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("SELECT 1; SELECT 2", "2 statements"),
    ] {
        let err = lake.query(sql).await.unwrap_err();
        assert!(matches!(err, QueryError::Refused(_)), "{sql}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("read-only") && text.contains(names),
            "{sql}: {text}"
        );
    }
    assert!(!outside.exists(), "COPY wrote outside the lake");
    // Queries (and EXPLAIN of one) run.
    assert_eq!(
        lake.query("SELECT * FROM windows").await.unwrap().rows(),
        10
    );
    lake.query("EXPLAIN SELECT count(*) FROM windows")
        .await
        .unwrap();
    let err = lake
        .query("EXPLAIN COPY windows TO '/tmp/x'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("EXPLAIN of COPY"), "{err}");
}

#[tokio::test]
async fn no_path_outside_the_lake_is_reachable() {
    let (_dir, lake) = lake(QueryLimits::default()).await;
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let err = lake.query(sql).await.unwrap_err().to_string();
        assert!(
            err.contains("not found") || err.contains("not exist"),
            "{sql}: {err}"
        );
        assert!(!err.contains("root:"), "{sql} leaked the file: {err}");
    }
}

#[tokio::test]
async fn row_limit_cuts_and_says_so() {
    let (_dir, lake) = lake(QueryLimits {
        max_rows: Some(3),
        ..Default::default()
    })
    .await;
    let answer = lake.query("SELECT window_id FROM windows").await.unwrap();
    assert_eq!((answer.rows(), answer.truncated), (3, true));
    let answer = lake.query("SELECT count(*) FROM windows").await.unwrap();
    assert_eq!((answer.rows(), answer.truncated), (1, false));
}

#[tokio::test]
async fn slow_query_is_stopped_at_the_time_limit() {
    let (_dir, lake) = lake(QueryLimits {
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    // Without the limit this runs for hours: the outer deadline only turns a broken limit into
    // a failure instead of a hang.
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        lake.query("SELECT count(*) FROM range(100000000000) a"),
    )
    .await
    .expect("the time limit did not stop the query")
    .unwrap_err();
    assert!(matches!(err, QueryError::Timeout(_)), "{err}");
    assert!(err.to_string().contains("time limit"), "{err}");
    // The session still answers afterwards.
    assert_eq!(lake.query("SELECT 1").await.unwrap().rows(), 1);
}

#[tokio::test]
async fn memory_hungry_query_fails_at_the_limit() {
    let (_dir, lake) = lake(QueryLimits {
        memory_bytes: Some(8 << 20),
        ..Default::default()
    })
    .await;
    let err = lake
        .query("SELECT count(*) FROM (SELECT (value * 7919) % 20000003 AS k, count(*) FROM range(20000000) GROUP BY k)")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Memory { .. }), "{err}");
    assert!(err.to_string().contains("8 MiB"), "{err}");
    // Small queries still run under the same limit.
    assert_eq!(
        lake.query("SELECT count(*) FROM windows")
            .await
            .unwrap()
            .rows(),
        1
    );
}
