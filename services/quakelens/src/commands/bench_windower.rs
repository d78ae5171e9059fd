//! `quakelens bench windower`: the windower stage alone, as the `windower` service runs it
//! (decode, assemble, trigger, cut, spectrograms and features, encode), fed synthetic 0.5 s
//! records of many stations through the in-memory transport as fast as it takes them. Prints
//! how many stations it would keep up with in real time, per trigger filter.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::ingest::{replay, IngestConfig, Pace};
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_pipeline::stages::Stage;
use quakelens_pipeline::PipelineConfig;
use quakelens_signal::filter::TriggerFilter;
use quakelens_signal::window::WindowMode;
use quakelens_synth::{generate, write_dataset_records, Encoding, SynthConfig};
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, WAVEFORMS_RAW};
use quakelens_transport::Transport;

#[derive(Args, Debug)]
pub struct WindowerBenchArgs {
    /// Stations.
    #[arg(long, default_value_t = 2000)]
    stations: usize,
    /// Minutes of data per station.
    #[arg(long, default_value_t = 4.0)]
    minutes: f64,
    /// Windowing chunk (s).
    #[arg(long, default_value_t = 0.5)]
    chunk: f64,
}

/// What one pass measured.
struct Pass {
    filter: TriggerFilter,
    windows: u64,
    wall_s: f64,
}

fn pass(
    rt: &tokio::runtime::Runtime,
    data: &std::path::Path,
    chunk: f64,
    filter: TriggerFilter,
) -> anyhow::Result<Pass> {
    rt.block_on(async {
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        replay(
            &broker.transport(&[]),
            &IngestConfig {
                inputs: vec![data.to_path_buf()],
                pace: Pace::Max,
                end_markers: true,
                batch: 1000,
            },
            stop,
        )
        .await
        .context("loading the records")?;
        let mut pipeline = PipelineConfig::new(None);
        pipeline.chunk_s = chunk;
        if let WindowMode::Event { trigger, .. } = &mut pipeline.mode {
            trigger.filter = filter;
        }
        let t = broker.transport(&[WAVEFORMS_RAW]);
        let mut stage = WindowerStage::new(WindowerConfig::new(pipeline))?;
        let metrics = Metrics::new();
        let counters = metrics.stage("windower");
        let started = Instant::now();
        loop {
            let batch = t.recv(2000, Duration::ZERO).await?;
            if batch.is_empty() {
                break;
            }
            stage.step(&t, batch, &counters).await?;
        }
        Ok(Pass {
            filter,
            windows: counters.snapshot().records_out,
            wall_s: started.elapsed().as_secs_f64(),
        })
    })
}

pub fn run(args: WindowerBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let slot_s = 120.0;
    let per_station = ((args.minutes * 60.0 / slot_s).ceil() as usize).max(1);
    let cfg = SynthConfig {
        events: per_station * args.stations,
        stations: args.stations,
        slot_s,
        ..SynthConfig::default()
    };
    let data = tmp.path().join("data");
    write_dataset_records(&data, &generate(&cfg), 256, Encoding::Int32)?;
    let data_s = per_station as f64 * slot_s;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let passes = [TriggerFilter::default(), TriggerFilter::None]
        .into_iter()
        .map(|f| pass(&rt, &data, args.chunk, f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("\n## Windower stage benchmark: synthetic 0.5 s records, in-memory transport\n");
    println!(
        "| trigger filter | stations | data (s) | windows | wall (s) | stations in real time |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for p in &passes {
        let rate = args.stations as f64 * data_s / p.wall_s.max(1e-9);
        println!(
            "| {} | {} | {data_s:.0} | {} | {:.1} | {rate:.0} |",
            p.filter, args.stations, p.windows, p.wall_s
        );
    }
    println!(
        "\nEverything the `windower` service does per record except the broker: miniSEED decode, \
         assembly, trigger, window cutting, spectrograms and features of every window, message \
         encoding. stations in real time = stations × data seconds / wall seconds."
    );
    Ok(())
}
