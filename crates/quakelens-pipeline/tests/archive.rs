//! The embedded run over an archive larger than it may hold: the stages read the files in time
//! order with bounded read-ahead and bounded queues, so the heap stays far below the decoded
//! archive, and the rows are the windows that cutting the whole archive at once gives.

mod support;

#[global_allocator]
static ALLOCATOR: support::heap::Counting = support::heap::Counting;

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::Array;
use quakelens_lake::{Lake, LakeLocation};
use quakelens_pipeline::windowing::window_traces;
use quakelens_pipeline::{run, Input, PipelineConfig};
use quakelens_signal::miniseed::read_file;
use quakelens_synth::{generate, pack_channel, write_catalog, Encoding, SynthConfig};

/// Minutes of data per file: a station-day archive cut small.
const FILE_MINUTES: usize = 10;

/// Writes each channel of `data` as files of [`FILE_MINUTES`] each (Steim2, 4096-byte records,
/// as archives hold them), and the catalogue. Returns the number of files.
fn write_archive(dir: &Path, cfg: &SynthConfig) -> usize {
    let data = generate(cfg);
    std::fs::create_dir_all(dir).unwrap();
    let piece = FILE_MINUTES * 60 * 100;
    let mut files = 0;
    for rec in &data.stations {
        let k = &rec.key;
        for (comp, samples) in ['N', 'E', 'Z'].iter().zip(&rec.channels) {
            let cha: Vec<String> = format!("{}{comp}", k.band)
                .chars()
                .map(String::from)
                .collect();
            let sid = format!(
                "FDSN:{}_{}_{}_{}",
                k.network,
                k.station,
                k.location,
                cha.join("_")
            );
            for (i, chunk) in samples.chunks(piece).enumerate() {
                let start = rec.start_ns + (i * piece) as i64 * 10_000_000;
                let bytes = pack_channel(&sid, start, chunk, 4096, Encoding::Steim2).unwrap();
                let name = format!("{}.{}.{comp}.{i:03}.mseed", k.network, k.station);
                std::fs::write(dir.join(name), bytes).unwrap();
                files += 1;
            }
        }
    }
    write_catalog(&dir.join("catalog.csv"), &data.catalog).unwrap();
    files
}

fn window_ids(lake: &Path) -> BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let lake = Lake::open(&LakeLocation::local(lake).unwrap())
            .await
            .unwrap();
        let mut ids = BTreeSet::new();
        for b in lake.sql("SELECT window_id FROM windows").await.unwrap() {
            let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let s = c
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            ids.extend((0..s.len()).map(|i| s.value(i).to_string()));
        }
        ids
    })
}

/// One archive run: the heap it took and what the batch reference says.
struct Measured {
    hours: usize,
    decoded_mib: f64,
    peak_mib: f64,
}

/// Writes `hours` of four stations as 10-minute files, runs the embedded run over them with
/// 1 MiB queues, and checks its rows against decoding every file and cutting the whole archive
/// at once.
fn run_archive(hours: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    // An event every 10 minutes at each of four stations.
    let synth = SynthConfig {
        events: 4 * 6 * hours,
        stations: 4,
        slot_s: 600.0,
        ..SynthConfig::default()
    };
    let files = write_archive(&archive, &synth);
    assert_eq!(files, 4 * 3 * 6 * hours);

    let mut cfg = PipelineConfig::new(Some(LakeLocation::local(&dir.path().join("lake")).unwrap()));
    cfg.queue_bytes = 1 << 20;
    cfg.catalog = Some(archive.join("catalog.csv"));
    let (expected, decoded_mib) = {
        let mut paths: Vec<_> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "mseed"))
            .collect();
        // In time order per channel: `window_traces` takes a channel's pieces in order.
        paths.sort();
        let mut traces = Vec::new();
        for path in &paths {
            traces.extend(read_file(path).unwrap().traces);
        }
        let samples: usize = traces.iter().map(|t| t.samples.len()).sum();
        let windowed = window_traces(traces, &cfg);
        let ids: BTreeSet<String> = windowed.windows.iter().map(|w| w.id.clone()).collect();
        (ids, samples as f64 * 8.0 / (1 << 20) as f64)
    };
    assert!(
        expected.len() >= 4 * 5 * hours,
        "{} windows",
        expected.len()
    );

    let before = support::heap::live_mib();
    support::heap::reset_peak();
    let report = run(Input::Paths(vec![archive]), &cfg).unwrap();
    let peak_mib = support::heap::peak_mib() - before;
    eprintln!(
        "{hours} h archive, {decoded_mib:.0} MiB decoded: peak heap {peak_mib:.1} MiB, read-ahead {} files / {} records",
        report.read_ahead_files, report.read_ahead_records
    );
    assert_eq!(report.files, files);
    // At most the files of two adjacent 10-minute periods are indexed at once.
    assert!(report.read_ahead_files <= 2 * 12, "{report:#?}");
    assert_eq!(report.windows, expected.len(), "{report:#?}");
    assert_eq!(report.labelled, expected.len());
    assert_eq!(window_ids(&dir.path().join("lake")), expected);
    Measured {
        hours,
        decoded_mib,
        peak_mib,
    }
}

#[test]
fn an_archive_larger_than_the_read_ahead_runs_in_bounded_heap_with_the_batch_rows() {
    let short = run_archive(2);
    let long = run_archive(6);
    // Three times the archive, the same heap: it follows stations × context, not the input.
    assert!(
        long.peak_mib < short.peak_mib * 1.25 + 4.0,
        "peak heap {:.1} MiB for {} h, {:.1} MiB for {} h",
        long.peak_mib,
        long.hours,
        short.peak_mib,
        short.hours
    );
    assert!(
        long.peak_mib < long.decoded_mib / 3.0,
        "peak heap {:.1} MiB for an archive of {:.0} MiB decoded",
        long.peak_mib,
        long.decoded_mib
    );
}
