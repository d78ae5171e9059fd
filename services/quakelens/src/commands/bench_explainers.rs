//! `quakelens bench explainers`: the same backlog of CNN explanation tasks on `shap.tasks`,
//! worked off by 1, then 2, … `explainer` processes (one thread each) in one consumer group,
//! each count on a fresh broker. Prints windows/s and the speed-up over one worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use quakelens_lake::WindowKey;
use quakelens_models::cnn::INPUT_SHAPE;
use quakelens_pipeline::messages::{encode_cnn_shap_tasks, CnnShapTask};
use quakelens_synth::Rng;
use quakelens_transport::kafka::{KafkaConfig, KafkaTransport};
use quakelens_transport::topics::SHAP_TASKS;
use quakelens_transport::{Outgoing, Transport};

use super::bench_services::{counter, spawn, start_broker, tansu_binary};

#[derive(Args, Debug)]
pub struct ExplainersBenchArgs {
    /// CNN windows in the backlog (random spectrograms, one task message each): enough that
    /// process start and the group join do not dominate.
    #[arg(long, default_value_t = 96)]
    windows: usize,
    /// Model evaluations per window.
    #[arg(long, default_value_t = 1000)]
    max_evals: usize,
    /// Worker counts to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// tansu binary (default: .cache/tansu/tansu-memory, from .ci/setup-broker).
    #[arg(long, env = "QUAKELENS_TANSU")]
    tansu: Option<PathBuf>,
}

pub fn run(args: ExplainersBenchArgs) -> anyhow::Result<()> {
    let tansu = tansu_binary(&args.tansu)?;
    anyhow::ensure!(args.windows > 0, "--windows must be at least 1");
    let work = tempfile::tempdir()?;
    let cnn = super::bench_cnn(&None, work.path())?;
    let hash = quakelens_models::hash::ModelHash::of(&std::fs::read(&cnn)?);
    let len = INPUT_SHAPE.iter().product::<i64>() as usize;
    let mut rng = Rng::new(4);
    let tasks: Vec<Vec<u8>> = (0..args.windows)
        .map(|i| {
            encode_cnn_shap_tasks(&[CnnShapTask {
                key: WindowKey {
                    window_id: format!("bench{i:05}"),
                    network: "XX".into(),
                    station: format!("S{:02}", i % 12),
                    location: String::new(),
                    band: "HH".into(),
                    start_ns: i as i64,
                },
                model_hash: hash.0.clone(),
                target: "margin".into(),
                end_ns: 0,
                spectrogram: (0..len).map(|_| rng.normal() as f32).collect(),
                part: quakelens_explain::image::Part::WHOLE,
            }])
        })
        .collect();
    let runtime = super::runtime()?;
    let mut rows = Vec::new();
    for &n in &args.workers {
        let (_broker, brokers) = start_broker(work.path(), &tansu)?;
        let evals = args.max_evals.to_string();
        let cnn_arg = cnn.display().to_string();
        let workers = (0..n)
            .map(|w| {
                spawn(
                    work.path(),
                    &format!("explainer-{n}-{w}"),
                    &brokers,
                    &[
                        "explainer",
                        "--cnn",
                        &cnn_arg,
                        "--max-evals",
                        &evals,
                        "--threads",
                        "1",
                    ],
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Every worker in the group and assigned before the clock starts.
        let deadline = Instant::now() + Duration::from_secs(120);
        while workers
            .iter()
            .any(|w| !w.log_text().contains("partitions assigned"))
        {
            if Instant::now() > deadline {
                bail!("explainers did not join the group within 120 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        runtime.block_on(async {
            let t = KafkaTransport::connect(
                &KafkaConfig {
                    brokers: brokers.clone(),
                    group: "bench".into(),
                    properties: Vec::new(),
                },
                &[],
            )?;
            // In turn over the partitions, as the scorer sends them.
            let partitions = t.partitions(SHAP_TASKS)?;
            let batch = tasks
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Outgoing::new(SHAP_TASKS, format!("bench{i:05}"), p.clone())
                        .to_partition(i as i32 % partitions)
                })
                .collect();
            t.send(batch).await?;
            anyhow::Ok(())
        })?;
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let done: u64 = workers.iter().map(|w| counter(w, "records_out")).sum();
            if done >= args.windows as u64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("{done} of {} windows explained after 30 min", args.windows);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let wall = started.elapsed().as_secs_f64();
        let shares: Vec<u64> = workers.iter().map(|w| counter(w, "records_out")).collect();
        rows.push((n, wall, shares));
        for w in workers {
            w.stop();
        }
    }
    let base = rows
        .first()
        .map(|(_, wall, _)| args.windows as f64 / wall)
        .context("no worker counts given")?;
    println!(
        "\nexplainer workers: {} CNN windows × {} evaluations on shap.tasks (6 partitions), one thread per worker\n",
        args.windows, args.max_evals
    );
    println!("| workers | wall (s) | windows/s | speed-up | windows per worker |");
    println!("|---:|---:|---:|---:|---|");
    for (n, wall, shares) in rows {
        let rate = args.windows as f64 / wall;
        println!(
            "| {n} | {wall:.1} | {rate:.2} | {:.2}× | {shares:?} |",
            rate / base
        );
    }
    Ok(())
}
