//! A lake sink that runs for weeks holds the same heap in its last week as in its first: what
//! it keeps is each table's log position and the keys of the dedup horizon, never the tables'
//! file lists (which grow by a file per station and day). The `LakeSinkStage` runs as the
//! `lake` service runs it, on the memory transport, over simulated days of windows; every
//! allocation is counted.

use std::time::Duration;

use quakelens_lake::{LakeFormat, LakeLocation, WindowRecord};
use quakelens_pipeline::messages::encode_windows;
use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::lake_sink::{LakeSinkConfig, LakeSinkStage};
use quakelens_pipeline::stages::Stage;
use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, WINDOWS};
use quakelens_transport::{Outgoing, Transport};

mod support;

#[global_allocator]
static ALLOCATOR: support::heap::Counting = support::heap::Counting;

const DAY_NS: i64 = 86_400_000_000_000;
const T0_NS: i64 = 1_717_200_000_000_000_000;
const STATIONS: usize = 12;
const PER_DAY: usize = 6;

fn format() -> LakeFormat {
    LakeFormat {
        shape: [3, 4, 5],
        input: SpectrogramInput::default(),
        features: FeatureSet::Study,
        waveform: None,
    }
}

fn window(station: usize, day: usize, k: usize) -> WindowRecord {
    let start_ns = T0_NS + day as i64 * DAY_NS + k as i64 * 3_600_000_000_000;
    WindowRecord {
        window_id: format!("{station:04}-{day:04}-{k:02}"),
        network: "XB".into(),
        station: format!("S{station:03}"),
        location: "00".into(),
        band: "HH".into(),
        start_ns,
        end_ns: start_ns + 25_000_000_000,
        onset_ns: Some(start_ns + 5_000_000_000),
        mode: "event".into(),
        trigger_ratio: Some(4.0),
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
        spectrogram: (0..60).map(|i| (i + k) as f32).collect(),
        features: (0..69).map(|i| i as f64).collect(),
        waveform: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_holds_the_same_heap_after_weeks_of_days_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let at = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    // The embedded run's broker: a message is dropped once read, so what stays is the sink's.
    let broker = MemoryBroker::bounded(1 << 20);
    for (t, p) in topics::ALL {
        broker.create_topic(t, p);
    }
    let producer = broker.transport(&[]);
    let reader = broker.transport(&[WINDOWS]);
    let mut cfg = LakeSinkConfig::new("heap");
    // A horizon of seconds: the keys it holds come and go within the test.
    cfg.dedup_horizon = Duration::from_secs(2);
    let mut sink = LakeSinkStage::open(&at, format(), cfg).await.unwrap();
    let metrics = Metrics::new();
    let counters = metrics.stage("lake");
    let days = 42;
    let mut heap_by_week = Vec::new();
    for day in 0..days {
        for k in 0..PER_DAY {
            let messages: Vec<Outgoing> = (0..STATIONS)
                .map(|s| {
                    let w = window(s, day, k);
                    Outgoing::new(
                        WINDOWS,
                        format!("XB.S{s:03}").as_str(),
                        encode_windows(std::slice::from_ref(&w), &format()),
                    )
                })
                .collect();
            producer.send(messages).await.unwrap();
            loop {
                let batch = reader.recv(500, Duration::ZERO).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                sink.step(&reader, batch, &counters).await.unwrap();
            }
        }
        if day % 7 == 6 {
            heap_by_week.push(support::heap::live_mib());
        }
    }
    let written = sink.rows_written.values().sum::<u64>();
    assert_eq!(written, 2 * (days * PER_DAY * STATIONS) as u64);
    eprintln!(
        "live heap after each week (MiB): {heap_by_week:.2?}; {} files added",
        sink.files_added
    );
    // Six weeks add a file per station, day and table: 1,000 more files, the same heap.
    let (first, last) = (heap_by_week[0], heap_by_week[heap_by_week.len() - 1]);
    assert!(
        last < first * 1.1 + 1.0,
        "live heap grew from {first:.2} MiB (week 1) to {last:.2} MiB (week 6): {heap_by_week:.2?}"
    );
}
