//! `shap.tasks` → `shap.results`: the explainer workers. The forest and scorer services cut
//! task messages of a few windows each, keyed by window so they spread over every partition;
//! the members of the `explainer` group share the partitions, and a worker that dies leaves its
//! stored-but-uncommitted tasks to be redone by the others (the lake sink drops duplicates).
//! Forest tasks get exact TreeSHAP; CNN tasks get the partition explainer, and each explained
//! window updates its station's share of |SHAP| mass per frequency band (the drift metric).
//! A CNN window whose budget is above `evals_per_task` is not explained where it lands: it goes
//! back to `shap.tasks` as that many parts (sent to the partitions in turn, so they spread over the
//! workers), and the lake sink adds the parts' values up once all are in.

use std::time::Instant;

use rayon::prelude::*;

use quakelens_explain::image::{Masker, Part, Shape};
use quakelens_explain::ForestShap;
use quakelens_lake::{CnnShapRecord, ForestShapRecord, Keyed};
use quakelens_models::cnn::CnnModel;
use quakelens_models::forest::Forest;
use quakelens_transport::topics::{header, SHAP_RESULTS, SHAP_TASKS};
use quakelens_transport::{Incoming, Outgoing, Transport};

use super::{after_batch, dead_letter, now_ns, RoundRobin, Stage, StageError, StageMetrics};
use crate::messages::{
    decode_cnn_shap_tasks, decode_forest_shap_tasks, encode_cnn_shap, encode_cnn_shap_tasks,
    encode_forest_shap, is_cnn_task, CnnShapTask, ForestShapTask,
};
use crate::score::cnn_explanation_part;

const STAGE: &str = "explainer";

/// Most parts one window is split into.
pub const MAX_PARTS: usize = 64;

/// Frequency bands of the drift metric (Hz, upper bound exclusive; the last takes the rest).
pub const BANDS: [(&str, f64); 3] = [("0-5Hz", 5.0), ("5-15Hz", 15.0), ("15-50Hz", f64::INFINITY)];

/// How CNN tasks are explained.
pub struct CnnExplainer {
    pub model: CnnModel,
    pub max_evals: usize,
    /// Largest budget one task explains; a window needing more is split into parts (0: never).
    pub evals_per_task: usize,
    pub masker: Masker,
    /// Frequency (Hz) of each spectrogram row.
    pub freqs_hz: Vec<f64>,
}

impl CnnExplainer {
    fn shape(&self) -> Shape {
        let [c, h, w] = self.model.input_shape();
        Shape {
            channels: c as usize,
            height: h as usize,
            width: w as usize,
        }
    }

    /// How many parts a window's budget is explained in.
    pub fn parts(&self) -> usize {
        if self.evals_per_task == 0 {
            1
        } else {
            self.max_evals
                .div_ceil(self.evals_per_task)
                .clamp(1, MAX_PARTS)
        }
    }

    /// A task for another CNN is refused before any work (splitting included).
    fn check_model(&self, task: &CnnShapTask) -> Result<(), String> {
        if task.model_hash != self.model.hash.0 {
            return Err(format!(
                "task for window {} names CNN {}, this worker explains {}",
                task.key.window_id, task.model_hash, self.model.hash.0
            ));
        }
        Ok(())
    }

    fn explain(&self, task: &CnnShapTask) -> Result<CnnShapRecord, String> {
        let target: crate::score::ExplainTarget = task.target.parse()?;
        cnn_explanation_part(
            &self.model,
            &task.key,
            &task.spectrogram,
            self.max_evals,
            self.masker,
            target,
            task.part,
        )
    }
}

/// Sets the band-mass metric of `r`'s station from its values.
pub fn record_band_shares(
    metrics: &StageMetrics,
    r: &CnnShapRecord,
    freqs_hz: &[f64],
    width: usize,
) {
    let station = r.key.key().stream();
    for ((band, _), share) in BANDS.iter().zip(band_shares(&r.values, freqs_hz, width)) {
        metrics.band_mass(&station, band, share);
    }
}

/// Share of |SHAP| mass per [`BANDS`] band of one window's values (`C × F × T`, `freqs_hz` per
/// row F): set by the worker that explains a whole window, or by the lake sink that adds up a
/// split window's parts.
pub fn band_shares(values: &[f32], freqs_hz: &[f64], width: usize) -> [f64; BANDS.len()] {
    let mut mass = [0.0; BANDS.len()];
    for (i, v) in values.iter().enumerate() {
        let f = freqs_hz[(i / width) % freqs_hz.len()];
        let b = BANDS
            .iter()
            .position(|&(_, top)| f < top)
            .unwrap_or(BANDS.len() - 1);
        mass[b] += v.abs() as f64;
    }
    let total: f64 = mass.iter().sum();
    if total > 0.0 {
        for m in &mut mass {
            *m /= total;
        }
    }
    mass
}

/// What one task message gave: messages to send, the ends of the windows explained, and how
/// many windows that is.
type Handled = (Vec<Outgoing>, Vec<i64>, usize);

/// Explains forest and/or CNN tasks with the models they were scored with.
pub struct ExplainerStage {
    /// TreeSHAP for the forest (set up once) and the forest's model hash.
    forest: Option<(ForestShap<'static>, String)>,
    cnn: Option<CnnExplainer>,
    batch: usize,
    spread: RoundRobin,
}

impl ExplainerStage {
    pub fn new(forest: Option<Forest>, cnn: Option<CnnExplainer>) -> Result<Self, StageError> {
        if forest.is_none() && cnn.is_none() {
            return Err(StageError::Input(
                "an explainer needs a forest and/or a CNN to explain".into(),
            ));
        }
        if let Some(c) = &cnn {
            if c.freqs_hz.len() != c.shape().height {
                return Err(StageError::Input(format!(
                    "{} frequencies for a CNN input of {} rows",
                    c.freqs_hz.len(),
                    c.shape().height
                )));
            }
        }
        let forest = match forest {
            Some(f) => {
                let hash = f.hash.as_ref().map(|h| h.0.clone()).unwrap_or_default();
                // Refuses a forest TreeSHAP cannot explain now, not at the first task.
                let shap = ForestShap::owned(f).map_err(|e| StageError::Input(e.to_string()))?;
                Some((shap, hash))
            }
            None => None,
        };
        Ok(Self {
            forest,
            cnn,
            batch: 32,
            spread: RoundRobin::default(),
        })
    }

    fn explain_forest(&self, tasks: &[ForestShapTask]) -> Result<Outgoing, String> {
        let Some((shap, hash)) = &self.forest else {
            return Err("forest task, but this worker has no forest (--model)".into());
        };
        if let Some(t) = tasks.iter().find(|t| &t.model_hash != hash) {
            return Err(format!(
                "task for window {} names forest {}, this worker explains {hash}",
                t.key.window_id, t.model_hash
            ));
        }
        let rows = tasks
            .par_iter()
            .map(|t| {
                let x: Vec<f32> = t.inputs.iter().map(|&v| v as f32).collect();
                let values = shap
                    .explain_row(&x)
                    .map_err(|e| format!("window {}: {e}", t.key.window_id))?;
                Ok(ForestShapRecord {
                    key: t.key.clone(),
                    model_hash: t.model_hash.clone(),
                    base_value: shap.base_value(),
                    values,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Outgoing::new(
            SHAP_RESULTS,
            rows[0].key.window_id.clone(),
            encode_forest_shap(&rows, &shap.forest().spec.features),
        ))
    }

    /// Results for the tasks this worker explains here, and part tasks for the whole windows
    /// whose budget is split.
    fn explain_cnn(
        &self,
        tasks: &[CnnShapTask],
        metrics: &StageMetrics,
    ) -> Result<Vec<Outgoing>, String> {
        let Some(cnn) = &self.cnn else {
            return Err("CNN task, but this worker has no CNN (--cnn)".into());
        };
        let count = cnn.parts();
        let mut out = Vec::new();
        let mut rows = Vec::new();
        for t in tasks {
            cnn.check_model(t)?;
            if t.part == Part::WHOLE && count > 1 {
                for index in 0..count {
                    let part = CnnShapTask {
                        part: Part { index, count },
                        ..t.clone()
                    };
                    out.push(
                        Outgoing::new(
                            SHAP_TASKS,
                            format!("{}/{index}", t.key.window_id),
                            encode_cnn_shap_tasks(&[part]),
                        )
                        .header(header::WINDOW_END_NS, t.end_ns.to_string()),
                    );
                }
                continue;
            }
            let r = cnn.explain(t)?;
            if t.part == Part::WHOLE {
                record_band_shares(metrics, &r, &cnn.freqs_hz, cnn.shape().width);
            }
            rows.push((r, t.part));
        }
        if !rows.is_empty() {
            out.push(Outgoing::new(
                SHAP_RESULTS,
                rows[0].0.key.window_id.clone(),
                encode_cnn_shap(&rows),
            ));
        }
        Ok(out)
    }

    /// The results message for one task message, its windows' ends, and how many windows.
    fn handle(&self, payload: &[u8], metrics: &StageMetrics) -> Result<Option<Handled>, String> {
        if is_cnn_task(payload) {
            let tasks =
                decode_cnn_shap_tasks(payload).map_err(|e| format!("CNN task message: {e}"))?;
            if tasks.is_empty() {
                return Ok(None);
            }
            let out = tokio::task::block_in_place(|| self.explain_cnn(&tasks, metrics))?;
            // Windows sent on as parts are not explained yet.
            let explained: Vec<i64> = match out.iter().any(|o| o.topic == SHAP_RESULTS) {
                true => tasks.iter().map(|t| t.end_ns).collect(),
                false => Vec::new(),
            };
            let n = explained.len();
            Ok(Some((out, explained, n)))
        } else {
            let tasks =
                decode_forest_shap_tasks(payload).map_err(|e| format!("shap task message: {e}"))?;
            if tasks.is_empty() {
                return Ok(None);
            }
            let out = tokio::task::block_in_place(|| self.explain_forest(&tasks))?;
            Ok(Some((
                vec![out],
                tasks.iter().map(|t| t.end_ns).collect(),
                tasks.len(),
            )))
        }
    }
}

impl Stage for ExplainerStage {
    fn batch_size(&self) -> usize {
        self.batch
    }

    async fn step<T: Transport>(
        &mut self,
        t: &T,
        batch: Vec<Incoming>,
        metrics: &StageMetrics,
    ) -> Result<(), StageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut dead = 0;
        let mut ends = Vec::new();
        for m in &batch {
            let problem = if m.topic != SHAP_TASKS {
                Some(format!("unexpected topic {}", m.topic))
            } else if let Some(payload) = m.payload.as_deref() {
                let started = Instant::now();
                match self.handle(payload, metrics) {
                    Ok(Some((messages, task_ends, windows))) => {
                        metrics.shap_task(started.elapsed().as_secs_f64());
                        metrics.records_out.inc_by(windows as u64);
                        let end = task_ends.iter().copied().max().unwrap_or(0);
                        ends.extend(task_ends);
                        out.extend(messages.into_iter().map(|m| match m.topic == SHAP_RESULTS {
                            true => m.header(header::WINDOW_END_NS, end.to_string()),
                            false => m,
                        }));
                        None
                    }
                    Ok(None) => None,
                    Err(why) => Some(why),
                }
            } else {
                Some("empty message (no payload)".into())
            };
            if let Some(why) = problem {
                out.push(dead_letter(STAGE, m, &why));
                dead += 1;
            }
        }
        metrics.dead_lettered(dead);
        // Parts of split windows spread over every partition, so every worker gets its share.
        self.spread.assign(t, SHAP_TASKS, &mut out)?;
        t.send(out).await?;
        t.store(&after_batch(&batch))?;
        let now = now_ns();
        for e in ends {
            metrics.window_latency((now - e) as f64 / 1e9);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use quakelens_lake::WindowKey;
    use quakelens_models::forest::{train_forest, Columns, ForestParams, ForestSpec};
    use quakelens_models::ModelHash;
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics::{self, DEAD_LETTER};

    use super::*;
    use crate::messages::fixtures::window;
    use crate::messages::{decode_forest_shap, encode_forest_shap_tasks};

    /// A small forest of y = a + 2b over three inputs.
    fn forest() -> Forest {
        let rows: Vec<[f32; 3]> = (0..60)
            .map(|i| [(i % 7) as f32, (i % 5) as f32, (i % 3) as f32])
            .collect();
        let y: Vec<f64> = rows.iter().map(|r| (r[0] + 2.0 * r[1]) as f64).collect();
        let x = Columns::from_rows(&rows.concat(), 3).unwrap();
        let params = ForestParams {
            n_trees: 5,
            ..ForestParams::default()
        };
        Forest {
            spec: ForestSpec {
                features: vec!["a".into(), "b".into(), "c".into()],
                target: "magnitude".into(),
                origin: "test".into(),
                feature_set: None,
                fill: None,
            },
            trees: train_forest(&x, &y, &params, || {}).unwrap(),
            hash: Some(ModelHash("f0".into())),
        }
    }

    fn task(i: usize, model: &str) -> ForestShapTask {
        ForestShapTask {
            key: WindowKey::of(&window(i)),
            model_hash: model.into(),
            end_ns: 2_000,
            inputs: vec![i as f64 % 7.0, 1.0, 2.0],
        }
    }

    fn message(offset: i64, payload: Option<Vec<u8>>) -> Incoming {
        Incoming {
            topic: SHAP_TASKS.into(),
            partition: 2,
            offset,
            key: Some(b"w".to_vec()),
            payload,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_it_cannot_explain_are_dead_letters_and_the_rest_are_explained() {
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[SHAP_TASKS]);
        let metrics = StageMetrics::detached(STAGE);
        let model = forest();
        let mut stage = ExplainerStage::new(Some(forest()), None).unwrap();
        let cnn_task = CnnShapTask {
            key: WindowKey::of(&window(9)),
            model_hash: "c0".into(),
            target: "margin".into(),
            end_ns: 2_000,
            spectrogram: vec![0.0; 12],
            part: Part::WHOLE,
        };
        let batch = vec![
            message(
                0,
                Some(encode_forest_shap_tasks(&[task(1, "f0"), task(2, "f0")])),
            ),
            message(1, Some(b"not a task message".to_vec())),
            message(2, Some(encode_forest_shap_tasks(&[task(3, "another")]))),
            message(3, Some(encode_cnn_shap_tasks(&[cnn_task]))),
            message(4, None),
            message(5, Some(encode_forest_shap_tasks(&[task(4, "f0")]))),
        ];
        stage.step(&t, batch, &metrics).await.unwrap();

        let dead = broker.messages(DEAD_LETTER);
        let why: Vec<String> = dead
            .iter()
            .map(|m| String::from_utf8_lossy(m.header(header::ERROR).unwrap()).into_owned())
            .collect();
        assert_eq!(dead.len(), 4, "{why:#?}");
        assert!(why[0].contains("shap task message"), "{}", why[0]);
        assert!(why[1].contains("names forest another"), "{}", why[1]);
        assert!(why[2].contains("no CNN"), "{}", why[2]);
        assert!(why[3].contains("no payload"), "{}", why[3]);
        // Every good task explained exactly: the values add up to the prediction minus the base.
        let shap = ForestShap::owned(model).unwrap();
        let mut explained = Vec::new();
        for m in broker.messages(SHAP_RESULTS) {
            let (rows, names) = decode_forest_shap(m.payload.as_deref().unwrap()).unwrap();
            assert_eq!(names, ["a", "b", "c"]);
            explained.extend(rows);
        }
        let ids: Vec<&str> = explained.iter().map(|r| r.key.window_id.as_str()).collect();
        let want: Vec<String> = [1, 2, 4].iter().map(|&i| window(i).window_id).collect();
        assert_eq!(ids, want);
        for (r, i) in explained.iter().zip([1, 2, 4]) {
            let x: Vec<f32> = task(i, "f0").inputs.iter().map(|&v| v as f32).collect();
            let total: f64 = r.values.iter().sum();
            let predicted = shap.forest().predict_row(&x);
            assert!((total + r.base_value - predicted).abs() < 1e-9);
        }
        assert_eq!(
            t.stored().get(&(SHAP_TASKS.to_string(), 2)),
            Some(&6),
            "{:?}",
            t.stored()
        );
    }
}
