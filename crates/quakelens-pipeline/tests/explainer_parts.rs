//! A CNN window whose budget is above one task's share is split into parts on `shap.tasks`,
//! explained part by part, and added up by the lake sink: the same values as the parts computed
//! in one process, each window once, and no commit past a part the sink still holds.

use std::time::Duration;

use arrow::array::{Array, Float32Array, Float64Array, StringArray};

use quakelens_explain::image::{Masker, Part};
use quakelens_lake::{Lake, LakeFormat, LakeLocation, WindowKey};
use quakelens_models::cnn::{save_cnn, Cnn2d, CnnModel, INPUT_SHAPE};
use quakelens_pipeline::messages::{decode_cnn_shap_tasks, encode_cnn_shap_tasks, CnnShapTask};
use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::score::{cnn_explanation_part, ExplainTarget};
use quakelens_pipeline::stages::explainer::{CnnExplainer, ExplainerStage};
use quakelens_pipeline::stages::lake_sink::{LakeSinkConfig, LakeSinkStage};
use quakelens_pipeline::stages::Stage;
use quakelens_pipeline::transform::spectrogram_axes;
use quakelens_transport::memory::MemoryBroker;
use quakelens_transport::topics::{self, SHAP_RESULTS, SHAP_TASKS};
use quakelens_transport::{Outgoing, Transport};

const SHAPE: [usize; 3] = [3, 33, 153];

fn format() -> LakeFormat {
    LakeFormat {
        shape: SHAPE,
        input: Default::default(),
        features: Default::default(),
        waveform: None,
    }
}

fn at(dir: &std::path::Path) -> LakeLocation {
    LakeLocation::local(dir).unwrap()
}
const BLUR: Masker = Masker::Blur { sigma: 2.0 };

fn cnn_file(dir: &std::path::Path) -> std::path::PathBuf {
    tch::manual_seed(8);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Cnn2d::new(&vs.root(), INPUT_SHAPE);
    let path = dir.join("cnn.safetensors");
    save_cnn(&vs, INPUT_SHAPE, &Default::default(), None, &path).unwrap();
    path
}

fn task(i: usize, hash: &str) -> CnnShapTask {
    let mut s = i as u64 + 1;
    CnnShapTask {
        key: WindowKey {
            window_id: format!("w{i}"),
            network: "XX".into(),
            station: "S1".into(),
            location: String::new(),
            band: "HH".into(),
            start_ns: i as i64,
        },
        model_hash: hash.into(),
        target: "margin".into(),
        end_ns: 1,
        spectrogram: (0..SHAPE.iter().product::<usize>())
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect(),
        part: Part::WHOLE,
    }
}

/// (window_id, Σ value, output − base, values in cell order) per window in the lake.
async fn lake_windows(root: &std::path::Path) -> Vec<(String, Vec<f32>, f64)> {
    let lake = Lake::open(&at(root)).await.unwrap();
    let batches = lake
        .sql(
            "SELECT window_id, value, output - base_value AS gap FROM cnn_shap \
             ORDER BY window_id, channel, freq_hz, time_s",
        )
        .await
        .unwrap();
    let mut out: Vec<(String, Vec<f32>, f64)> = Vec::new();
    for b in &batches {
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<Float32Array>().unwrap();
        let gap = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        for i in 0..b.num_rows() {
            if out.last().is_none_or(|(w, _, _)| w != ids.value(i)) {
                out.push((ids.value(i).to_string(), Vec::new(), gap.value(i)));
            }
            out.last_mut().unwrap().1.push(v.value(i));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_windows_are_explained_in_parts_and_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = cnn_file(dir.path());
    let cnn = || CnnModel::load(&file, tch::Device::Cpu).unwrap();
    let model = cnn();
    let hash = model.hash.0.clone();
    let broker = MemoryBroker::new();
    for (t, p) in topics::ALL {
        broker.create_topic(t, p);
    }
    let tasks: Vec<CnnShapTask> = (0..4).map(|i| task(i, &hash)).collect();
    broker
        .transport(&[])
        .send(
            tasks
                .iter()
                .map(|t| {
                    Outgoing::new(
                        SHAP_TASKS,
                        t.key.window_id.clone(),
                        encode_cnn_shap_tasks(std::slice::from_ref(t)),
                    )
                })
                .collect(),
        )
        .await
        .unwrap();

    let axes = spectrogram_axes(SHAPE).unwrap();
    let explainer = CnnExplainer {
        model: cnn(),
        max_evals: 600,
        evals_per_task: 200,
        masker: BLUR,
        freqs_hz: axes.freqs_hz.clone(),
    };
    assert_eq!(explainer.parts(), 3);
    let mut stage = ExplainerStage::new(None, Some(explainer)).unwrap();
    let metrics = Metrics::new();
    let counters = metrics.stage("explainer");
    let worker = broker.transport(&[SHAP_TASKS]);
    // First pass: each whole window goes back as 3 parts, nothing is explained yet.
    let batch = worker.recv(100, Duration::ZERO).await.unwrap();
    stage.step(&worker, batch, &counters).await.unwrap();
    assert!(broker.messages(SHAP_RESULTS).is_empty());
    let parts: Vec<CnnShapTask> = broker
        .messages(SHAP_TASKS)
        .iter()
        .flat_map(|m| decode_cnn_shap_tasks(m.payload.as_deref().unwrap()).unwrap())
        .filter(|t| t.part != Part::WHOLE)
        .collect();
    assert_eq!(parts.len(), 12);
    // The parts go to the partitions in turn: 12 parts, 2 on each of the 6.
    let mut per_partition = std::collections::BTreeMap::new();
    for m in broker.messages(SHAP_TASKS) {
        let tasks = decode_cnn_shap_tasks(m.payload.as_deref().unwrap()).unwrap();
        if tasks[0].part != Part::WHOLE {
            *per_partition.entry(m.partition).or_insert(0) += 1;
        }
    }
    assert_eq!(per_partition.len(), 6, "{per_partition:?}");
    assert!(per_partition.values().all(|&n| n == 2), "{per_partition:?}");
    // Second pass: the parts.
    let batch = worker.recv(100, Duration::ZERO).await.unwrap();
    stage.step(&worker, batch, &counters).await.unwrap();
    let dead = broker.messages(topics::DEAD_LETTER);
    assert!(
        dead.is_empty(),
        "{:?}",
        dead.iter()
            .map(|m| String::from_utf8_lossy(m.header(topics::header::ERROR).unwrap()).into_owned())
            .collect::<Vec<_>>()
    );
    let results = broker.messages(SHAP_RESULTS);
    assert_eq!(results.len(), 12);

    // A sink that sees only some parts writes nothing and commits nothing past them.
    let lake = dir.path().join("lake");
    let sink_metrics = metrics.stage("lake");
    let first_t = broker.transport(&[SHAP_RESULTS]);
    let mut first = LakeSinkStage::open(&at(&lake), format(), LakeSinkConfig::new("lake"))
        .await
        .unwrap();
    let all = first_t.recv(100, Duration::ZERO).await.unwrap();
    let held_window = "w2";
    let (some, _rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| {
        let rows =
            quakelens_pipeline::messages::decode_cnn_shap(m.payload.as_deref().unwrap()).unwrap();
        rows[0].0.key.window_id != held_window || rows[0].1.index == 0
    });
    first
        .step(&first_t, some.clone(), &sink_metrics)
        .await
        .unwrap();
    assert_eq!(first.parts.len(), 1, "w2 waits for its other parts");
    let held = some
        .iter()
        .find(|m| {
            quakelens_pipeline::messages::decode_cnn_shap(m.payload.as_deref().unwrap()).unwrap()[0]
                .0
                .key
                .window_id
                == held_window
        })
        .unwrap();
    let stored = first_t.stored();
    assert_eq!(
        stored[&(SHAP_RESULTS.to_string(), held.partition)],
        held.offset,
        "committed past a held part"
    );
    let landed = lake_windows(&lake).await;
    assert_eq!(
        landed.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        vec!["w0", "w1", "w3"]
    );

    // The sink dies; the next one replays everything: w2 completes, nothing lands twice.
    drop(first);
    let again_t = broker.transport(&[SHAP_RESULTS]);
    let mut again = LakeSinkStage::open(&at(&lake), format(), LakeSinkConfig::new("lake"))
        .await
        .unwrap();
    let batch = again_t.recv(100, Duration::ZERO).await.unwrap();
    again.step(&again_t, batch, &sink_metrics).await.unwrap();
    assert!(again.parts.is_empty());
    let landed = lake_windows(&lake).await;
    assert_eq!(landed.len(), 4);

    // The lake holds the sum of the parts computed in one process, adding up per window.
    for (t, (id, values, gap)) in tasks.iter().zip(&landed) {
        assert_eq!(&t.key.window_id, id);
        let mut want = vec![0f64; values.len()];
        for index in 0..3 {
            let p = cnn_explanation_part(
                &model,
                &t.key,
                &t.spectrogram,
                600,
                BLUR,
                ExplainTarget::Margin,
                Part { index, count: 3 },
            )
            .unwrap();
            for (w, v) in want.iter_mut().zip(&p.values) {
                *w += *v as f64;
            }
        }
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let ours: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let worst = quakelens_signal::reference::compare::max_abs_diff(&ours, &want);
        assert!(worst <= 1e-4 * scale, "{id}: {worst} vs scale {scale}");
        let total: f64 = values.iter().map(|v| *v as f64).sum();
        assert!(
            (total - gap).abs() <= 1e-3 * gap.abs().max(1.0),
            "{id}: {total} vs {gap}"
        );
    }
}
