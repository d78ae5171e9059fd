//! Real Delta tables written by the lake writer: read back by DataFusion, by the Python
//! `deltalake` package (and pyarrow and DuckDB through it), compacted and vacuumed, and old
//! plain-Parquet lakes refused and converted.

use std::process::Command;

use quakelens_lake::{
    AsOf, Lake, LakeError, LakeFormat, LakeLocation, LakeWriter, Table, Txn, WaveformCell,
    WaveformShapRecord, WindowKey, WindowRecord,
};
use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;

const FORMAT: LakeFormat = LakeFormat {
    shape: [3, 4, 5],
    input: SpectrogramInput {
        power: quakelens_signal::spectrogram::Power::Log,
        scaling: quakelens_signal::spectrogram::ImageScaling::Raw,
    },
    features: FeatureSet::Study,
    waveform: None,
};

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
        flat_channels: i.is_multiple_of(3) as i32,
        channel_order: "NEZ".into(),
        event_id: Some(format!("ev{i}")),
        label: Some((i % 2) as i32),
        magnitude: Some(1.0 + i as f64 / 10.0),
        ttf_s: Some(-60.0 * i as f64),
        source: Default::default(),
        catalog: vec![
            ("source_id".into(), format!("ev{i}")),
            ("trace_name".into(), format!("t{i}")),
        ],
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
        waveform: Vec::new(),
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

fn location(dir: &std::path::Path) -> LakeLocation {
    LakeLocation::local(&dir.join("lake")).unwrap()
}

#[tokio::test]
async fn windows_land_in_partitioned_delta_tables_that_datafusion_queries() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let mut writer = LakeWriter::open(&at, FORMAT).await.unwrap();
    let c = writer
        .write_windows_and_features(&records(), &[])
        .await
        .unwrap();
    assert_eq!(c.rows, 8);
    assert_eq!(c.files, 8, "4 partitions × 2 tables");
    let root = at.local_dir().unwrap();
    assert!(root.join("windows/_delta_log").is_dir());
    assert!(root
        .join("windows/day=2023-11-14/stream=XX.A.00.HH")
        .is_dir());

    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(lake.format(), Some(&FORMAT));
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
    assert_eq!(
        scalar(
            &lake,
            "SELECT spectrogram[2] FROM windows WHERE window_id = '0000000000000003'"
        )
        .await,
        "301.0"
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT catalog['trace_name'] FROM windows WHERE window_id = '0000000000000005'"
        )
        .await,
        "t5"
    );
    assert_eq!(
        scalar(&lake, "SELECT sum(flat_channels) FROM windows").await,
        "3"
    );
    // µs timestamps in UTC.
    assert_eq!(
        scalar(
            &lake,
            "SELECT CAST(min(start_time) AS VARCHAR) FROM windows"
        )
        .await,
        "2023-11-14T22:13:20Z"
    );
}

#[tokio::test]
async fn commits_carry_positions_that_a_new_writer_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let mut writer = LakeWriter::open(&at, FORMAT).await.unwrap();
    let txn = |v| {
        vec![
            Txn {
                app_id: "lake/windows/0".into(),
                version: v,
            },
            Txn {
                app_id: "lake/windows/1".into(),
                version: 2 * v,
            },
        ]
    };
    let all = records();
    writer.write_windows(&all[..4], &txn(10)).await.unwrap();
    writer.write_windows(&all[4..], &txn(25)).await.unwrap();
    drop(writer);
    let mut again = LakeWriter::open(&at, FORMAT).await.unwrap();
    for (app, want) in [
        ("lake/windows/0", Some(25)),
        ("lake/windows/1", Some(50)),
        ("lake/windows/2", None),
    ] {
        assert_eq!(
            again.txn_version(Table::Windows, app).await.unwrap(),
            want,
            "{app}"
        );
    }
    // Features were not committed by those calls: their positions are their own.
    assert_eq!(
        again
            .txn_version(Table::Features, "lake/windows/0")
            .await
            .unwrap(),
        None
    );
    // Time travel: the first version held 4 windows.
    let old = Lake::open_with(&at, Default::default(), Some(AsOf::Version(1)))
        .await
        .unwrap();
    assert_eq!(scalar(&old, "SELECT count(*) FROM windows").await, "4");
}

/// The position `v` of source partition `p` of topic windows, as a sink records it.
fn txn(p: usize, v: i64) -> Vec<Txn> {
    vec![Txn {
        app_id: format!("lake/windows/{p}"),
        version: v,
    }]
}

/// `write` retried the way a sink retries: transient errors again (a few times), others out.
async fn with_retries(
    writer: &mut LakeWriter,
    rows: &[WindowRecord],
    txns: &[Txn],
) -> Result<(), LakeError> {
    let mut attempt = 0;
    loop {
        match writer.write_windows(rows, txns).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt < 5 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The Delta log's `metaData` actions of a local table.
fn metadata_commits(table: &std::path::Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .filter(|text| text.lines().any(|l| l.starts_with("{\"metaData\"")))
        .count()
}

/// Two sinks start at once on a new lake: both try to create each table. The loser uses the
/// winner's table (it does not commit its creation again, which would be a metadata change
/// that fails everyone's next append), and their appends, racing, all land once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_to_create_and_append_each_land_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let all = records();
    for round in 0..6 {
        let at = LakeLocation::local(&dir.path().join(format!("lake{round}"))).unwrap();
        let (mut a, mut b) = (
            LakeWriter::open(&at, FORMAT).await.unwrap(),
            LakeWriter::open(&at, FORMAT).await.unwrap(),
        );
        for step in 0..2 {
            let (rows_a, rows_b) = (
                &all[step * 4..step * 4 + 2],
                &all[step * 4 + 2..step * 4 + 4],
            );
            let (ta, tb) = (txn(0, step as i64 + 1), txn(1, step as i64 + 1));
            let (ra, rb) = tokio::join!(
                with_retries(&mut a, rows_a, &ta),
                with_retries(&mut b, rows_b, &tb)
            );
            ra.unwrap_or_else(|e| panic!("round {round}, step {step}, writer a: {e}"));
            rb.unwrap_or_else(|e| panic!("round {round}, step {step}, writer b: {e}"));
        }
        assert_eq!(
            metadata_commits(&dir.path().join(format!("lake{round}/windows"))),
            1,
            "round {round}: one creation in the log"
        );
        let lake = Lake::open(&at).await.unwrap();
        assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
        assert_eq!(
            scalar(&lake, "SELECT count(DISTINCT window_id) FROM windows").await,
            "8"
        );
    }
}

/// Another writer changes the table's metadata (a property set from Spark, or a creation that
/// lost a race) between two of this writer's appends: the append that conflicts reloads the
/// table, and its retry lands. Retrying from the old snapshot would conflict forever.
#[tokio::test]
async fn an_append_after_another_writers_metadata_change_lands_on_retry() {
    use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
    use deltalake::kernel::Action;
    use deltalake::protocol::DeltaOperation;

    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let all = records();
    let mut writer = LakeWriter::open(&at, FORMAT).await.unwrap();
    writer.write_windows(&all[..4], &txn(0, 4)).await.unwrap();
    let table = deltalake::DeltaTableBuilder::from_url(at.table_url(Table::Windows))
        .unwrap()
        .load()
        .await
        .unwrap();
    let snapshot = table.snapshot().unwrap();
    let metadata = snapshot.metadata().clone();
    CommitBuilder::from(CommitProperties::default())
        .with_actions(vec![Action::Metadata(metadata)])
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::SetTableProperties {
                properties: Default::default(),
            },
        )
        .await
        .unwrap();
    with_retries(&mut writer, &all[4..], &txn(0, 8))
        .await
        .unwrap_or_else(|e| panic!("the append after a metadata change: {e}"));
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
}

/// A writer whose source another writer committed positions for (it lost the partition) gets
/// an error that is not worth retrying: writing anyway would land the batch twice. Its next
/// commit for a source it still owns succeeds (it reloaded the table).
#[tokio::test]
async fn a_commit_for_a_source_another_writer_took_over_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let all = records();
    let mut a = LakeWriter::open(&at, FORMAT).await.unwrap();
    a.write_windows(&all[..2], &txn(0, 2)).await.unwrap();
    let mut b = LakeWriter::open(&at, FORMAT).await.unwrap();
    b.write_windows(&all[2..4], &txn(0, 4)).await.unwrap();
    let e = a.write_windows(&all[2..4], &txn(0, 4)).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("windows"), "{e}");
    a.write_windows(&all[4..6], &txn(1, 6)).await.unwrap();
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "6");
}

/// A sink commits once per batch for months: the log is checkpointed every 10 commits so a
/// restart replays a checkpoint and a short tail, and what a restart reads back (positions,
/// recent keys) is the same through a checkpoint as through the JSON commits.
#[tokio::test]
async fn the_log_is_checkpointed_and_read_back_through_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let mut writer = LakeWriter::open(&at, FORMAT).await.unwrap();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let mut all = Vec::new();
    for i in 0..23 {
        let one = record(
            i,
            "A",
            1_700_000_000_000_000_000 + i as i64 * 60_000_000_000,
        );
        let txn = Txn {
            app_id: "lake/windows/0".into(),
            version: 100 + i as i64,
        };
        writer
            .write_windows(std::slice::from_ref(&one), &[txn])
            .await
            .unwrap();
        all.push(one.window_id);
    }
    drop(writer);
    let log = dir.path().join("lake/windows/_delta_log");
    // Version 0 created the table, 1..=23 are the commits: the newest checkpoint is at most
    // 10 commits behind.
    let checkpoints = checkpoint_versions(&log);
    assert!(
        checkpoints.len() >= 2 && checkpoints.last().is_some_and(|&v| v + 10 > 23),
        "checkpoints in {}: {checkpoints:?}",
        log.display()
    );
    let mut again = LakeWriter::open(&at, FORMAT).await.unwrap();
    assert_eq!(
        again
            .txn_version(Table::Windows, "lake/windows/0")
            .await
            .unwrap(),
        Some(122)
    );
    let mut keys: Vec<String> = again
        .recent_keys(Table::Windows, before)
        .await
        .unwrap()
        .into_iter()
        .map(|(w, _)| w)
        .collect();
    keys.sort();
    all.sort();
    assert_eq!(keys, all);
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    assert!(again
        .recent_keys(Table::Windows, future)
        .await
        .unwrap()
        .is_empty());
}

fn checkpoint_versions(log: &std::path::Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(log)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".checkpoint."))
        .filter_map(|n| n.split('.').next()?.parse().ok())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_batch_writer_checkpoints_when_it_opens_a_log_grown_past_the_interval_not_while_it_writes(
) {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let log = dir.path().join("lake/windows/_delta_log");
    let run = |from: usize| {
        let at = at.clone();
        async move {
            let mut w = LakeWriter::open(&at, FORMAT).await.unwrap();
            w.checkpoint_at_open().await.unwrap();
            for i in from..from + 12 {
                let one = record(
                    i,
                    "A",
                    1_700_000_000_000_000_000 + i as i64 * 60_000_000_000,
                );
                w.write_windows(std::slice::from_ref(&one), &[])
                    .await
                    .unwrap();
            }
        }
    };
    // The first run commits versions 1..=12 and checkpoints none of them.
    run(0).await;
    assert_eq!(checkpoint_versions(&log), Vec::<u64>::new());
    // The next run finds the log 12 versions past none: a checkpoint of version 12 first.
    run(12).await;
    assert_eq!(checkpoint_versions(&log), vec![12]);
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "24");
}

#[tokio::test]
async fn a_lake_of_other_windows_or_rows_of_the_wrong_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    LakeWriter::open(&at, FORMAT).await.unwrap();
    let mut other = FORMAT;
    other.shape = [3, 33, 153];
    let err = LakeWriter::open(&at, other).await.err().unwrap();
    assert!(matches!(err, LakeError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("3,4,5"), "{err}");
    let mut physical = FORMAT;
    physical.features = FeatureSet::Physical;
    let mut w = LakeWriter::open(&at, FORMAT).await.unwrap();
    w.write_features(&records()[..1], &[]).await.unwrap();
    let err = LakeWriter::open(&at, physical)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("feature set study") && err.contains("physical"),
        "{err}"
    );
    let mut bad = record(1, "A", 0);
    bad.spectrogram.pop();
    let err = w.write_windows(&[bad], &[]).await.unwrap_err().to_string();
    assert!(err.contains("59 spectrogram values"), "{err}");
    // Nothing of the refused batch was committed.
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM features").await, "1");
    assert!(!lake.has(Table::Scores));
}

#[tokio::test]
async fn a_lake_for_waveform_models_stores_the_samples_and_refuses_windows_without() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let waveforms = LakeFormat {
        waveform: Some([3, 4]),
        ..FORMAT
    };
    let mut rows = records();
    for (i, r) in rows.iter_mut().enumerate() {
        r.waveform = (0..12).map(|k| (i * 12 + k) as f32 - 0.5).collect();
    }
    let mut w = LakeWriter::open(&at, waveforms).await.unwrap();
    w.write_windows_and_features(&rows, &[]).await.unwrap();
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(lake.format(), Some(&waveforms));
    let sum: f64 = (0..8 * 12).map(|v| v as f64 - 0.5).sum();
    assert_eq!(
        scalar(
            &lake,
            "SELECT sum(v) FROM (SELECT unnest(waveform) AS v FROM windows)"
        )
        .await,
        format!("{sum:.1}")
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT waveform[12] FROM windows WHERE window_id = '0000000000000003'"
        )
        .await,
        "46.5"
    );
    // A row without its samples is refused, naming it, and nothing of the batch lands.
    let mut bare = rows[0].clone();
    bare.window_id = "bare".into();
    bare.waveform.clear();
    let err = w
        .write_windows(&[rows[1].clone(), bare], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("window bare has 0 waveform samples") && err.contains("--waveforms"),
        "{err}"
    );
    // A writer of spectrograms only may not add windows without samples, nor the other way.
    let err = LakeWriter::open(&at, FORMAT)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("holds waveforms of shape 3,4, this writer makes none"),
        "{err}"
    );
    let plain = location(&dir.path().join("plain"));
    LakeWriter::open(&plain, FORMAT).await.unwrap();
    let err = LakeWriter::open(&plain, waveforms)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("holds waveforms of shape none, this writer makes 3,4"),
        "{err}"
    );
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
}

#[tokio::test]
async fn missing_lake_and_bad_sql_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let err = Lake::open(&at).await.err().unwrap().to_string();
    assert!(err.contains("no lake at") && err.contains("lake"), "{err}");
    LakeWriter::open(&at, FORMAT)
        .await
        .unwrap()
        .write_windows_and_features(&records(), &[])
        .await
        .unwrap();
    let lake = Lake::open(&at).await.unwrap();
    let err = lake
        .sql("SELECT nope FROM windows")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test]
async fn optimize_compacts_small_files_and_vacuum_deletes_the_replaced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let mut w = LakeWriter::open(&at, FORMAT).await.unwrap();
    // Eight commits of one window each: 8 small files in 4 partitions.
    for r in records() {
        w.write_windows(std::slice::from_ref(&r), &[])
            .await
            .unwrap();
    }
    let before = quakelens_lake::file_counts(&at).await.unwrap();
    assert_eq!(before, vec![(Table::Windows, 8)]);
    let report = quakelens_lake::optimize(&at, &[], 128 << 20).await.unwrap();
    assert_eq!(report.len(), 1);
    assert_eq!((report[0].files_before, report[0].files_after), (8, 4));
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(DISTINCT window_id) || '/' || count(*) FROM windows"
        )
        .await,
        "8/8"
    );
    let on_disk = |root: &std::path::Path| {
        walk(&root.join("windows"))
            .iter()
            .filter(|p| {
                p.extension().is_some_and(|x| x == "parquet")
                    && !p.to_string_lossy().contains("_delta_log")
            })
            .count()
    };
    let root = at.local_dir().unwrap();
    assert_eq!(
        on_disk(&root),
        12,
        "the 8 replaced files stay for older snapshots"
    );
    let dry = quakelens_lake::vacuum(&at, &[], std::time::Duration::ZERO, true)
        .await
        .unwrap();
    assert_eq!(dry[0].files_deleted, 8);
    assert_eq!(on_disk(&root), 12);
    quakelens_lake::vacuum(&at, &[], std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(on_disk(&root), 4);
    let lake = Lake::open(&at).await.unwrap();
    assert_eq!(scalar(&lake, "SELECT count(*) FROM windows").await, "8");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The Python `deltalake` package reads every table; pyarrow and DuckDB query its dataset; all
/// agree with DataFusion row for row.
#[tokio::test]
async fn python_deltalake_pyarrow_and_duckdb_read_the_same_rows() {
    let Some(python) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let mut w = LakeWriter::open(&at, FORMAT).await.unwrap();
    w.write_windows_and_features(&records()[..5], &[])
        .await
        .unwrap();
    w.write_windows_and_features(&records()[5..], &[])
        .await
        .unwrap();
    let lake = Lake::open(&at).await.unwrap();
    let ours = lake
        .sql_table("SELECT window_id, station, day, label, spectrogram[60] AS last FROM windows ORDER BY window_id")
        .await
        .unwrap();
    // The script ends with os._exit after its answers are flushed: DuckDB's and pyarrow's
    // thread pools have been seen to abort the interpreter's teardown ("terminate called
    // without an active exception") after everything was printed.
    let script = r#"
import os, sys, duckdb
from deltalake import DeltaTable
root = sys.argv[1]
w = DeltaTable(root + "/windows")
f = DeltaTable(root + "/features")
assert w.metadata().configuration["quakelens.spectrogram_shape"] == "3,4,5"
assert sorted(w.metadata().partition_columns) == ["day", "stream"]
t = w.to_pyarrow_table().sort_by("window_id")
rows = [(r["window_id"], r["station"], r["day"], r["label"], r["spectrogram"][59]) for r in t.to_pylist()]
for r in rows:
    print("%s|%s|%s|%s|%.1f" % r)
con = duckdb.connect()
con.register("features", f.to_pyarrow_dataset())
n, s = con.execute("SELECT count(*), sum(f1_c0_maximum_amplitude) FROM features").fetchone()
print("features", n, int(s), w.version(), flush=True)
con.close()
os._exit(0)
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(at.local_dir().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = theirs.lines().collect();
    assert_eq!(lines.pop(), Some("features 8 28000 2"));
    let ours: Vec<String> = ours
        .lines()
        .skip(3)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    assert_eq!(ours.len(), 8);
    assert_eq!(lines, ours.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A waveform model's explanations: cells of a time explanation (per channel) and of a band
/// explanation (all channels, null channel) land in `waveform_shap`, read back the same by
/// DataFusion and by the Python `deltalake` reader; a record without cells is refused.
#[tokio::test]
async fn waveform_explanations_are_read_back_by_datafusion_and_python_deltalake() {
    let dir = tempfile::tempdir().unwrap();
    let at = location(dir.path());
    let all = records();
    let cell = |channel: Option<i32>, start_s: f32, low_hz: f32, value: f32| WaveformCell {
        channel,
        start_s,
        end_s: start_s + 12.5,
        low_hz,
        high_hz: low_hz + 25.0,
        value,
    };
    let record = |w: &WindowRecord, method: &str, cells: Vec<WaveformCell>| WaveformShapRecord {
        key: WindowKey::of(w),
        model_hash: "sha256:m".into(),
        method: method.into(),
        target: "logit:post".into(),
        budget: 66,
        output: 1.5,
        base_value: 0.25,
        cells,
    };
    let rows: Vec<WaveformShapRecord> = all[..2]
        .iter()
        .flat_map(|w| {
            [
                record(
                    w,
                    "partition",
                    (0..3)
                        .flat_map(|c| {
                            [cell(Some(c), 0.0, 0.0, 0.25), cell(Some(c), 12.5, 0.0, 0.0)]
                        })
                        .collect(),
                ),
                record(
                    w,
                    "bandstop",
                    vec![cell(None, 0.0, 0.0, 1.0), cell(None, 0.0, 25.0, 0.25)],
                ),
            ]
        })
        .collect();
    let mut writer = LakeWriter::open(&at, FORMAT).await.unwrap();
    assert_eq!(
        writer.write_waveform_shap(&rows, &[]).await.unwrap().rows,
        4
    );
    let mut empty = rows[0].clone();
    empty.cells.clear();
    let e = writer.write_waveform_shap(&[empty], &[]).await.unwrap_err();
    assert!(e.to_string().contains("without cells"), "{e}");

    let lake = Lake::open(&at).await.unwrap();
    let sql = "SELECT count(*) AS n, count(channel) AS with_channel, sum(value) AS total \
               FROM waveform_shap";
    let ours = scalar(&lake, sql).await;
    let ours: Vec<&str> = ours.split('|').map(str::trim).collect();
    assert_eq!(ours, ["16", "12", "4.0"]);
    // Per window and method, SQL sums the cells written: 0.75 (time), 1.25 (bands).
    assert_eq!(
        scalar(
            &lake,
            "SELECT count(*) FROM (SELECT window_id, method, sum(value) AS s FROM waveform_shap \
             GROUP BY 1, 2) WHERE (method = 'bandstop' AND s = 1.25) OR (method = 'partition' AND s = 0.75)"
        )
        .await,
        "4"
    );
    let Some(python) = quakelens_signal::reference::python_for_tests() else {
        return;
    };
    // os._exit after the flushed answer: pyarrow's thread pool has been seen to abort the
    // interpreter's teardown ("terminate called without an active exception").
    let script = r#"
import os, sys, pyarrow
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1] + "/waveform_shap").to_pyarrow_table().to_pylist()
print(len(t), sum(r["channel"] is not None for r in t), sum(r["value"] for r in t), flush=True)
os._exit(0)
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(at.local_dir().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "16 12 4.0");
}
