//! The streaming stages (the code the Kafka services run) on the in-memory transport, in one
//! process: the same rows as the embedded run, poison in `dead-letter`, nothing twice.

use arrow::array::Array;
use std::time::Duration;

use quakelens_lake::{Lake, LakeLocation, LakeWriter, Txn, WindowRecord};
use quakelens_pipeline::messages::{decode_windows, encode_windows};
use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::ingest::{replay, IngestConfig, Pace};
use quakelens_pipeline::stages::lake_sink::{Compaction, LakeSinkConfig, LakeSinkStage};
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_pipeline::stages::Stage;
use quakelens_pipeline::{run, Input, PipelineConfig};
use quakelens_synth::{generate, write_dataset, SynthConfig};
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, header, DEAD_LETTER, WAVEFORMS_RAW};
use quakelens_transport::{Outgoing, Transport};

fn at(dir: &std::path::Path) -> LakeLocation {
    LakeLocation::local(dir).unwrap()
}

async fn window_ids(lake: &std::path::Path) -> Vec<String> {
    let lake = Lake::open(&at(lake)).await.unwrap();
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
    let embedded = PipelineConfig::new(Some(at(&dir.path().join("embedded"))));
    let (input, cfg) = (Input::Paths(vec![data.clone()]), embedded.clone());
    // The embedded run owns its runtime: it runs beside this one.
    let report = tokio::task::spawn_blocking(move || run(input, &cfg))
        .await
        .unwrap()
        .unwrap();
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
    let mut windower = WindowerStage::new(WindowerConfig::new(PipelineConfig::new(None))).unwrap();
    loop {
        let batch = windower_t.recv(500, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        windower.step(&windower_t, batch, &counters).await.unwrap();
    }
    let services = dir.path().join("services");
    let sink_t = broker.transport(&[topics::WINDOWS]);
    let format = embedded.format();
    let mut sink = LakeSinkStage::open(&at(&services), format, LakeSinkConfig::new("lake"))
        .await
        .unwrap();
    let batch = sink_t.recv(10_000, Duration::ZERO).await.unwrap();
    let messages = batch.len();
    let sink_counters = metrics.stage("lake");
    sink.step(&sink_t, batch, &sink_counters).await.unwrap();
    // Every window counted once per station in the metrics, the poison as a dead letter.
    let w = counters.snapshot();
    assert_eq!(
        (w.records_out, w.dead_letters, w.records_failed),
        (30, 1, 1)
    );
    assert_eq!(
        sink_counters.snapshot().records_out,
        60,
        "30 windows × 2 tables"
    );
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
    // Every column of every row, spectrograms by a digest of all their values.
    for q in [
        "SELECT * EXCEPT (spectrogram, catalog), md5(array_to_string(spectrogram, ',')) AS s \
         FROM windows ORDER BY window_id",
        "SELECT * FROM features ORDER BY window_id",
    ] {
        let of = |p: std::path::PathBuf| async move {
            Lake::open(&at(&p))
                .await
                .unwrap()
                .sql_table(q)
                .await
                .unwrap()
        };
        let (ours, embedded) = (
            of(services.clone()).await,
            of(dir.path().join("embedded")).await,
        );
        assert!(ours.lines().count() > 30, "{ours:.300}");
        assert_eq!(ours, embedded, "{q}");
    }

    // The same sink group replays everything (its Kafka commit was lost): the Delta log says
    // every message is in both tables already, so nothing is decoded or written.
    let again_t = broker.transport(&[topics::WINDOWS]);
    let mut again = LakeSinkStage::open(&at(&services), format, LakeSinkConfig::new("lake"))
        .await
        .unwrap();
    let batch = again_t.recv(10_000, Duration::ZERO).await.unwrap();
    again.step(&again_t, batch, &sink_counters).await.unwrap();
    assert_eq!(again.duplicates_skipped, messages as u64);
    assert_eq!(window_ids(&services).await.len(), 30);

    // Another group sees the same windows as new messages (an upstream stage that restarted
    // sends them again): the keys written within the horizon drop every row.
    let other_t = broker.transport(&[topics::WINDOWS]);
    let mut other = LakeSinkStage::open(&at(&services), format, LakeSinkConfig::new("lake-b"))
        .await
        .unwrap();
    assert_eq!(
        other.recent_keys(),
        60,
        "warmed from the files the tables added"
    );
    let batch = other_t.recv(10_000, Duration::ZERO).await.unwrap();
    other.step(&other_t, batch, &sink_counters).await.unwrap();
    assert_eq!(other.duplicates_skipped, 60);
    assert_eq!(window_ids(&services).await.len(), 30);

    // A sink compacting in the background as it goes: many small commits, some compactions
    // among them, every window once, fewer live files than commits.
    let compacted = dir.path().join("compacted");
    let mut cfg = LakeSinkConfig::new("lake-c");
    cfg.dedup_horizon = Duration::ZERO;
    cfg.compaction = Some(Compaction {
        every: Duration::ZERO,
        target_bytes: 64 << 20,
    });
    let mut compacting = LakeSinkStage::open(&at(&compacted), format, cfg)
        .await
        .unwrap();
    // One window per message (the windower sends a station's chunk at once).
    let single = MemoryBroker::new();
    for (t, p) in topics::ALL {
        single.create_topic(t, p);
    }
    let mut singles = Vec::new();
    for m in broker.messages(topics::WINDOWS) {
        for r in decode_windows(m.payload.as_deref().unwrap()).unwrap().1 {
            let key = format!("{}.{}", r.network, r.station);
            singles.push(Outgoing::new(
                topics::WINDOWS,
                key.as_str(),
                encode_windows(std::slice::from_ref(&r), &format),
            ));
        }
    }
    single.transport(&[]).send(singles).await.unwrap();
    let small_t = single.transport(&[topics::WINDOWS]);
    let mut commits = 0;
    loop {
        let batch = small_t.recv(2, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        compacting
            .step(&small_t, batch, &sink_counters)
            .await
            .unwrap();
        commits += 1;
        // Let the background compaction get a turn between commits now and then.
        if commits % 4 == 0 {
            compacting.finish_compaction().await;
        }
    }
    compacting.finish_compaction().await;
    assert_eq!(window_ids(&compacted).await.len(), 30);
    let log: String = std::fs::read_dir(compacted.join("windows/_delta_log"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        log.contains("\"operation\":\"OPTIMIZE\""),
        "no compaction committed"
    );
    let live = quakelens_lake::file_counts(&at(&compacted))
        .await
        .unwrap()
        .into_iter()
        .find(|(t, _)| *t == quakelens_lake::Table::Windows)
        .unwrap()
        .1;
    assert!(
        commits >= 8 && live < commits,
        "{live} live files after {commits} commits"
    );

    // A sink killed between a batch's two commits: the windows commit (with its positions) is
    // in the log, the features commit is not. The next sink writes the features alone.
    let partial = dir.path().join("partial");
    let mut records: Vec<WindowRecord> = Vec::new();
    let mut after = std::collections::BTreeMap::new();
    for m in broker.messages(topics::WINDOWS) {
        records.extend(decode_windows(m.payload.as_deref().unwrap()).unwrap().1);
        let e = after.entry(m.partition).or_insert(0);
        *e = (*e).max(m.offset + 1);
    }
    let txns: Vec<Txn> = after
        .iter()
        .map(|(p, v)| Txn {
            app_id: format!("lake/{}/{p}", topics::WINDOWS),
            version: *v,
        })
        .collect();
    let mut writer = LakeWriter::open(&at(&partial), format).await.unwrap();
    writer.write_windows(&records, &txns).await.unwrap();
    let repair_t = broker.transport(&[topics::WINDOWS]);
    // No upstream dedup horizon here: only the log can tell the windows are in.
    let mut cfg = LakeSinkConfig::new("lake");
    cfg.dedup_horizon = Duration::ZERO;
    let mut repair = LakeSinkStage::open(&at(&partial), format, cfg)
        .await
        .unwrap();
    let batch = repair_t.recv(10_000, Duration::ZERO).await.unwrap();
    repair.step(&repair_t, batch, &sink_counters).await.unwrap();
    let lake = Lake::open(&at(&partial)).await.unwrap();
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

/// Bytes of a file that are not a record go to `dead-letter` unchanged, with the file and the
/// byte offset; the records around them are sent as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_sends_non_record_bytes_to_dead_letter_with_file_and_offset() {
    use quakelens_signal::miniseed::{split_records, Frame};
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quakelens-signal/tests/data/real/BW.RJOB.2009-08-24.steim2.mseed");
    let bytes = std::fs::read(&real).unwrap();
    let records: Vec<(usize, usize)> = split_records(&bytes)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Record { offset, len } => Some((offset, len)),
            Frame::Bad { .. } => None,
        })
        .collect();
    assert!(records.len() > 3);
    // Junk after the second record.
    let (o, l) = records[1];
    let cut = o + l;
    let junk: Vec<u8> = (0..300u32).map(|i| (i * 37 % 200) as u8 + 1).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("with-junk.mseed");
    std::fs::write(&file, [&bytes[..cut], &junk[..], &bytes[cut..]].concat()).unwrap();

    let broker = MemoryBroker::new();
    for (t, p) in topics::ALL {
        broker.create_topic(t, p);
    }
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let sent = replay(
        &broker.transport(&[]),
        &IngestConfig {
            inputs: vec![file.clone()],
            pace: Pace::Max,
            end_markers: false,
            batch: 100,
        },
        stop,
    )
    .await
    .unwrap();
    assert_eq!(sent.dead_letters, 1);
    assert_eq!(broker.messages(WAVEFORMS_RAW).len(), records.len());
    let dead = broker.messages(DEAD_LETTER);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].payload.as_deref(),
        Some(&junk[..]),
        "the bytes, unchanged"
    );
    assert_eq!(
        String::from_utf8_lossy(dead[0].header(header::ORIGIN).unwrap()),
        format!("{}@{cut}", file.display())
    );
    assert_eq!(dead[0].header(header::STAGE), Some(&b"ingest"[..]));
}
