//! The embedded pipeline end to end: real and synthetic miniSEED in, Delta tables out, SQL back.

use std::path::{Path, PathBuf};

use quakelens_lake::{Lake, LakeLocation};
use quakelens_pipeline::{run, Input, PipelineConfig};
use quakelens_signal::window::WindowMode;
use quakelens_synth::SynthConfig;

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quakelens-signal/tests/data/real")
        .join(name)
}

fn at(lake: &Path) -> LakeLocation {
    LakeLocation::local(lake).unwrap()
}

fn config(lake: &Path) -> PipelineConfig {
    PipelineConfig::new(Some(at(lake)))
}

/// The answer's batches (the embedded run owns its runtime, so tests query from plain threads).
fn query(lake: &Path, sql: &str) -> Vec<arrow::array::RecordBatch> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lake = Lake::open(&at(lake)).await.unwrap();
        lake.sql(sql).await.unwrap()
    })
}

fn count(lake: &Path, sql: &str) -> i64 {
    let batches = query(lake, sql);
    let col = batches[0].column(0);
    col.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .map(|a| a.value(0))
        .unwrap_or_else(|| panic!("not an integer: {col:?}"))
}

#[test]
fn synthetic_events_each_give_one_labelled_window() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("lake"));
    let synth = SynthConfig {
        events: 24,
        stations: 3,
        ..SynthConfig::default()
    };
    let input = Input::Synthetic {
        config: synth.clone(),
        dir: dir.path().join("synthetic"),
    };
    let report = run(input.clone(), &cfg).unwrap();
    assert_eq!(report.files, 9);
    assert_eq!(report.windows, 24, "{report:#?}");
    assert_eq!(report.labelled, 24);
    assert_eq!(report.rows_written, 24);
    assert!(report.dropped_windows.is_empty() && report.unassembled.is_empty());
    let lake = dir.path().join("lake");
    assert_eq!(count(&lake, "SELECT count(*) FROM windows"), 24);
    assert_eq!(count(&lake, "SELECT count(*) FROM features"), 24);
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT stream) FROM windows"),
        3
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM windows WHERE label IS NULL"),
        0
    );
    // Every window's trigger onset is within 0.3 s of its event's catalogued P at that
    // station (the windows are cut 5 s before the onset).
    let catalog = quakelens_synth::read_catalog(&dir.path().join("synthetic/catalog.csv")).unwrap();
    assert_eq!(catalog.len(), 24);
    let rows = query(
        &lake,
        "SELECT event_id, network || '.' || station || '.' || location || '.' || band AS stream, \
         CAST(onset_time AS BIGINT) AS onset_us FROM windows",
    );
    let text = |c: &arrow::array::ArrayRef| {
        arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap()
    };
    let mut checked = 0;
    for b in &rows {
        let (ids, streams) = (text(b.column(0)), text(b.column(1)));
        let ids = ids
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let streams = streams
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let onsets = b
            .column(2)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            let event = catalog
                .iter()
                .find(|e| e.event_id == ids.value(i) && e.station == streams.value(i))
                .unwrap_or_else(|| {
                    panic!("{} at {} is not catalogued", ids.value(i), streams.value(i))
                });
            let off_s = (onsets.value(i) * 1000 - event.p_ns) as f64 / 1e9;
            assert!(
                off_s.abs() <= 0.3,
                "{}: onset {off_s:+.3} s from P",
                ids.value(i)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM windows WHERE onset_time - start_time = INTERVAL '5 seconds'"
        ),
        24
    );
    // Rerunning the same data writes nothing: the sink finds every row's key in its partition.
    let again = run(input, &cfg).unwrap();
    assert_eq!(
        (again.rows_written, again.already_in_lake),
        (0, 48),
        "24 windows in 2 tables"
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM windows"), 24);
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT window_id) FROM windows"),
        24
    );
}

#[test]
fn real_rjob_event_becomes_one_window() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("lake"));
    let report = run(
        Input::Paths(vec![real("BW.RJOB.2009-08-24.steim2.mseed")]),
        &cfg,
    )
    .unwrap();
    assert_eq!(
        (report.records > 0, report.streams, report.windows),
        (true, 1, 1),
        "{report:#?}"
    );
    let lake = dir.path().join("lake");
    assert_eq!(count(&lake, "SELECT count(*) FROM windows WHERE station = 'RJOB' AND band = 'EH' AND channel_order = 'NEZ'"), 1);
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM windows WHERE start_time = TIMESTAMP '2009-08-24T00:20:03Z'"
        ),
        1
    );
}

#[test]
fn bad_files_are_reported_and_good_ones_still_flow() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    for f in [
        "BW.RJOB.2009-08-24.float32.mseed",
        "bad/random-bytes.mseed",
        "bad/truncated-record.mseed",
        "1T.MONN.00.EDH.125Hz.mseed",
    ] {
        let name = Path::new(f).file_name().unwrap();
        std::fs::copy(real(f), input.join(name)).unwrap();
    }
    let cfg = config(&dir.path().join("lake"));
    let report = run(Input::Paths(vec![input]), &cfg).unwrap();
    assert_eq!(report.files, 4);
    assert_eq!(report.failed_files.len(), 1, "{:?}", report.failed_files);
    assert!(report.failed_files[0].contains("random-bytes.mseed"));
    assert!(
        report
            .decode_warnings
            .iter()
            .any(|w| w.contains("truncated-record.mseed @ byte 512")),
        "{:?}",
        report.decode_warnings
    );
    // The lone 125 Hz channel is resampled-eligible but has no partners: reported, no window.
    assert!(
        report
            .unassembled
            .iter()
            .any(|u| u.contains("1T.MONN.00.ED")),
        "{:?}",
        report.unassembled
    );
    assert_eq!(report.windows, 1);
}

#[test]
fn sliding_windows_cover_the_stream_on_a_fixed_grid() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("lake"));
    cfg.mode = WindowMode::Sliding {
        length_s: 25.0,
        step_s: 10.0,
    };
    let synth = SynthConfig {
        events: 2,
        stations: 1,
        ..SynthConfig::default()
    };
    let report = run(
        Input::Synthetic {
            config: synth,
            dir: dir.path().join("syn"),
        },
        &cfg,
    )
    .unwrap();
    // 240 s of data starting on a 10 s boundary: starts at 0, 10, …, 210 s.
    assert_eq!(report.windows, 22, "{report:#?}");
    // A catalogued P labels every window it falls in.
    let catalog = quakelens_synth::read_catalog(&dir.path().join("syn/catalog.csv")).unwrap();
    let start = SynthConfig::default().start_ns;
    let expected: usize = catalog
        .iter()
        .map(|e| {
            (0..22i64)
                .filter(|k| (0..25_000_000_000).contains(&(e.p_ns - start - k * 10_000_000_000)))
                .count()
        })
        .sum();
    assert!(expected >= 4);
    assert_eq!(report.labelled, expected);
    assert_eq!(
        count(
            &dir.path().join("lake"),
            "SELECT count(*) FROM windows WHERE mode = 'sliding'"
        ),
        22
    );
}

#[test]
fn no_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir.path().join("lake"));
    let err = run(Input::Paths(vec![real("bad/random-bytes.mseed")]), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no decodable waveform data") && err.contains("random-bytes.mseed"),
        "{err}"
    );
    let err = run(Input::Paths(vec![dir.path().to_path_buf()]), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no miniSEED files under"), "{err}");
}
