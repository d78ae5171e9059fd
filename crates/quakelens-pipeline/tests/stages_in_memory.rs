//! The streaming stages (the code the Kafka services run) on the in-memory transport, in one
//! process: the same rows as the embedded run, poison in `dead-letter`, nothing twice.

use arrow::array::Array;
use std::time::Duration;

use quakelens_lake::{Lake, LakeWriter, WindowRecord};
use quakelens_pipeline::messages::decode_windows;
use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::ingest::{replay, IngestConfig, Pace};
use quakelens_pipeline::stages::lake_sink::LakeSinkStage;
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_pipeline::stages::Stage;
use quakelens_pipeline::{run, Input, PipelineConfig};
use quakelens_synth::{generate, write_dataset, SynthConfig};
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, header, DEAD_LETTER, WAVEFORMS_RAW};
use quakelens_transport::{Outgoing, Transport};

async fn window_ids(lake: &std::path::Path) -> Vec<String> {
    let lake = Lake::open(lake).await.unwrap();
    let mut ids = Vec::new();
    for b in lake
        .sql("SELECT window_id FROM windows ORDER BY window_id")
        .await
        .unwrap()
    {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let s = c
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        ids.extend((0..s.len()).map(|i| s.value(i).to_string()));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_on_the_memory_transport_give_the_embedded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("syn");
    let synth = SynthConfig {
        events: 30,
        stations: 3,
        ..SynthConfig::default()
    };
    write_dataset(&data, &generate(&synth)).unwrap();
    let embedded = PipelineConfig::new(dir.path().join("embedded"));
    let report = run(Input::Paths(vec![data.clone()]), &embedded).unwrap();
    assert_eq!(report.windows, 30);

    let broker = MemoryBroker::new();
    for (t, p) in topics::ALL {
        broker.create_topic(t, p);
    }
    let producer = broker.transport(&[]);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let sent = replay(
        &producer,
        &IngestConfig {
            inputs: vec![data],
            pace: Pace::Max,
            end_markers: true,
            batch: 100,
        },
        stop,
    )
    .await
    .unwrap();
    assert_eq!(sent.stations, 3);
    // Poison among the records.
    producer
        .send(vec![Outgoing::new(
            WAVEFORMS_RAW,
            "XX.BAD..HHZ",
            b"not miniseed".to_vec(),
        )])
        .await
        .unwrap();

    let metrics = Metrics::new();
    let counters = metrics.stage("windower");
    let windower_t = broker.transport(&[WAVEFORMS_RAW]);
    let mut windower = WindowerStage::new(WindowerConfig::new(PipelineConfig::new(
        dir.path().join("unused"),
    )))
    .unwrap();
    loop {
        let batch = windower_t.recv(500, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        windower.step(&windower_t, batch, &counters).await.unwrap();
    }
    let services = dir.path().join("services");
    let sink_t = broker.transport(&[topics::WINDOWS]);
    let shape = embedded.spectrogram_shape();
    let mut sink = LakeSinkStage::open(&services, shape).await.unwrap();
    let batch = sink_t.recv(10_000, Duration::ZERO).await.unwrap();
    let sink_counters = metrics.stage("lake");
    sink.step(&sink_t, batch, &sink_counters).await.unwrap();
    // Every window counted once per station in the metrics, the poison as a dead letter.
    let w = counters.snapshot();
    assert_eq!(
        (w.records_out, w.dead_letters, w.records_failed),
        (30, 1, 1)
    );
    assert_eq!(sink_counters.snapshot().records_out, 30);
    let scrape = metrics.encode();
    let per_station: u64 = scrape
        .lines()
        .filter(|l| l.starts_with("quakelens_windows_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_station, 30, "{scrape}");
    assert_eq!(
        scrape
            .lines()
            .filter(|l| l.starts_with("quakelens_station_last_sample_timestamp_seconds{"))
            .count(),
        3
    );
    assert_eq!(
        window_ids(&services).await,
        window_ids(&dir.path().join("embedded")).await
    );

    // A second sink over the same lake replays everything and adds nothing.
    let again_t = broker.transport(&[topics::WINDOWS]);
    let mut again = LakeSinkStage::open(&services, shape).await.unwrap();
    let batch = again_t.recv(10_000, Duration::ZERO).await.unwrap();
    again.step(&again_t, batch, &sink_counters).await.unwrap();
    assert_eq!(again.duplicates_skipped, 30);
    assert_eq!(window_ids(&services).await.len(), 30);

    // A sink killed between a batch's two files: some windows are in `windows` only, others in
    // `features` only. The next sink completes each table and duplicates nothing.
    let partial = dir.path().join("partial");
    let mut records: Vec<WindowRecord> = broker
        .messages(topics::WINDOWS)
        .iter()
        .flat_map(|m| decode_windows(m.payload.as_deref().unwrap()).unwrap())
        .collect();
    records.sort_by(|a, b| a.window_id.cmp(&b.window_id));
    let writer = LakeWriter::open(&partial, shape).unwrap();
    writer.write_tables(&records[..5], true, false).unwrap();
    writer.write_tables(&records[5..8], false, true).unwrap();
    let repair_t = broker.transport(&[topics::WINDOWS]);
    let mut repair = LakeSinkStage::open(&partial, shape).await.unwrap();
    let batch = repair_t.recv(10_000, Duration::ZERO).await.unwrap();
    repair.step(&repair_t, batch, &sink_counters).await.unwrap();
    let lake = Lake::open(&partial).await.unwrap();
    for table in ["windows", "features"] {
        let batches = lake
            .sql(&format!(
                "SELECT count(*), count(DISTINCT window_id) FROM {table}"
            ))
            .await
            .unwrap();
        let n = |i: usize| {
            batches[0]
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0)
        };
        assert_eq!((n(0), n(1)), (30, 30), "{table}");
    }

    let dead = broker.messages(DEAD_LETTER);
    assert_eq!(dead.len(), 1);
    let why = String::from_utf8_lossy(dead[0].header(header::ERROR).unwrap()).into_owned();
    assert!(
        why.contains("not a miniSEED record") || why.contains("unusable"),
        "{why}"
    );
    assert_eq!(
        String::from_utf8_lossy(dead[0].header(header::ORIGIN).unwrap()),
        format!(
            "{WAVEFORMS_RAW}[{}]@{}",
            dead_partition(&broker),
            dead_offset(&broker)
        )
    );
}

fn dead_partition(broker: &MemoryBroker) -> i32 {
    broker
        .messages(WAVEFORMS_RAW)
        .iter()
        .find(|m| m.payload.as_deref() == Some(b"not miniseed".as_slice()))
        .unwrap()
        .partition
}

fn dead_offset(broker: &MemoryBroker) -> i64 {
    broker
        .messages(WAVEFORMS_RAW)
        .iter()
        .find(|m| m.payload.as_deref() == Some(b"not miniseed".as_slice()))
        .unwrap()
        .offset
}
