//! `windows` → `scores` (the CNN, service `scorer`) and/or `magnitudes` (the forest, service
//! `forest`): the same [`Scorer`] the embedded run uses, fed by the transport.

use std::collections::HashSet;

use quakelens_explain::image::Part;
use quakelens_lake::{Keyed, LakeFormat, WindowKey, WindowRecord};
use quakelens_transport::topics::{header, MAGNITUDES, SCORES, SHAP_TASKS, WINDOWS};
use quakelens_transport::{Incoming, Outgoing, Transport};

use super::{after_batch, dead_letter, RoundRobin, Stage, StageError, StageMetrics};
use crate::messages::{
    decode_windows, encode_cnn_shap_tasks, encode_forest_shap_tasks, encode_magnitudes,
    encode_scores, CnnShapTask, ForestShapTask,
};
use crate::score::{Scored, Scorer};

/// Scores every window message; a message that cannot be decoded or scored is a dead letter.
pub struct ScorerStage {
    scorer: Scorer,
    name: &'static str,
    batch: usize,
    /// Windows the forest could not score (missing inputs); each reason goes to the log, the
    /// first [`super::LISTED`] are kept for a run's report.
    pub unscored: u64,
    pub unscored_listed: Vec<String>,
    /// Scores and magnitudes sent.
    pub scores_out: u64,
    pub magnitudes_out: u64,
    /// Send what was scored to `shap.tasks` for the explainer workers (forest inputs, or
    /// spectrograms for the CNN).
    pub explain: bool,
    /// With `explain`: whether CNN scores get tasks too (forest magnitudes always do).
    pub explain_cnn: bool,
    /// The CNN output the explainers explain (`margin` or `top-class`).
    pub explain_target: String,
    spread: RoundRobin,
}

/// Windows per `shap.tasks` message: small, so tasks spread over partitions and workers.
const WINDOWS_PER_TASK: usize = 8;

impl ScorerStage {
    /// `name` is the service (`scorer` or `forest`), used in dead letters and logs.
    pub fn new(scorer: Scorer, name: &'static str) -> Self {
        Self {
            scorer,
            name,
            batch: 64,
            unscored: 0,
            unscored_listed: Vec::new(),
            scores_out: 0,
            magnitudes_out: 0,
            explain: false,
            explain_cnn: true,
            explain_target: "margin".into(),
            spread: RoundRobin::default(),
        }
    }

    /// Explanation tasks for the windows scored in this batch (`done`): forest inputs for
    /// the forest, spectrograms for the CNN.
    fn tasks(&self, records: &[(LakeFormat, WindowRecord)], done: &HashSet<&str>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let scored: Vec<&WindowRecord> = records
            .iter()
            .map(|(_, r)| r)
            .filter(|r| done.contains(r.window_id.as_str()))
            .collect();
        if let Some(f) = &self.scorer.forest {
            let hash = f.hash();
            let tasks: Vec<ForestShapTask> = records
                .iter()
                .filter(|(_, r)| done.contains(r.window_id.as_str()))
                .filter_map(|(format, r)| {
                    let (row, problem) = f.rows(std::slice::from_ref(r), format.features).pop()?;
                    let inputs = f.forest.complete_inputs(&row).ok()?;
                    problem.is_none().then(|| ForestShapTask {
                        key: WindowKey::of(r),
                        model_hash: hash.clone(),
                        end_ns: r.end_ns,
                        inputs: inputs.into_iter().map(f64::from).collect(),
                    })
                })
                .collect();
            out.extend(tasks.chunks(WINDOWS_PER_TASK).map(|chunk| {
                task_message(
                    &chunk[0].key.window_id,
                    chunk.iter().map(|t| t.end_ns),
                    encode_forest_shap_tasks(chunk),
                )
            }));
        }
        if let Some(model) = self.scorer.cnn.as_ref().filter(|_| self.explain_cnn) {
            let tasks: Vec<CnnShapTask> = scored
                .iter()
                .map(|r| CnnShapTask {
                    key: WindowKey::of(*r),
                    model_hash: model.hash.0.clone(),
                    target: self.explain_target.clone(),
                    end_ns: r.end_ns,
                    spectrogram: r.spectrogram.clone(),
                    part: Part::WHOLE,
                })
                .collect();
            // One window per message: a CNN task is ~1,000 model evaluations.
            out.extend(tasks.chunks(1).map(|chunk| {
                task_message(
                    &chunk[0].key.window_id,
                    chunk.iter().map(|t| t.end_ns),
                    encode_cnn_shap_tasks(chunk),
                )
            }));
        }
        out
    }
}

/// A `shap.tasks` message keyed by its first window, with the newest window end (its
/// partition is assigned in turn, see [`RoundRobin`]).
fn task_message(key: &str, ends: impl Iterator<Item = i64>, payload: Vec<u8>) -> Outgoing {
    let end = ends.max().unwrap_or(0);
    Outgoing::new(SHAP_TASKS, key, payload).header(header::WINDOW_END_NS, end.to_string())
}

impl Stage for ScorerStage {
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
        let mut decoded: Vec<(&Incoming, LakeFormat, Vec<WindowRecord>)> = Vec::new();
        for m in &batch {
            if m.topic != WINDOWS {
                out.push(dead_letter(
                    self.name,
                    m,
                    &format!("unexpected topic {}", m.topic),
                ));
                continue;
            }
            match m.payload.as_deref().map(decode_windows) {
                Some(Ok((format, rows))) => match self.scorer.check(&format) {
                    Ok(()) => decoded.push((m, format, rows)),
                    Err(e) => out.push(dead_letter(self.name, m, &e.to_string())),
                },
                Some(Err(e)) => {
                    out.push(dead_letter(self.name, m, &format!("windows message: {e}")))
                }
                None => out.push(dead_letter(self.name, m, "empty message (no payload)")),
            }
        }
        let all: Vec<(LakeFormat, WindowRecord)> = decoded
            .iter()
            .flat_map(|(_, f, r)| r.iter().map(|w| (*f, w.clone())))
            .collect();
        let model = if self.name == "forest" {
            "forest"
        } else {
            "cnn"
        };
        let started = std::time::Instant::now();
        // Messages of one format score together; one bad message must not cost the others,
        // so a failed group is scored message by message.
        let mut scored: Vec<(Option<Outgoing>, Scored)> = Vec::new();
        let mut formats: Vec<LakeFormat> = Vec::new();
        for (_, f, _) in &decoded {
            if !formats.contains(f) {
                formats.push(*f);
            }
        }
        for format in formats {
            let group: Vec<&(&Incoming, LakeFormat, Vec<WindowRecord>)> =
                decoded.iter().filter(|(_, f, _)| *f == format).collect();
            let rows: Vec<WindowRecord> = group
                .iter()
                .flat_map(|(_, _, r)| r.iter().cloned())
                .collect();
            match tokio::task::block_in_place(|| self.scorer.score(&rows, &format)) {
                Ok(s) => scored.push((None, s)),
                Err(_) => {
                    for (m, _, rows) in group {
                        match tokio::task::block_in_place(|| self.scorer.score(rows, &format)) {
                            Ok(s) => scored.push((None, s)),
                            Err(e) => scored.push((
                                Some(dead_letter(self.name, m, &format!("scoring: {e}"))),
                                Scored::default(),
                            )),
                        }
                    }
                }
            }
        }
        metrics.inference(model, started.elapsed().as_secs_f64());
        let end = batch
            .iter()
            .filter_map(|m| m.header(header::WINDOW_END_NS))
            .filter_map(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .max()
            .unwrap_or(0)
            .to_string();
        let mut done = HashSet::new();
        for (dead, s) in &scored {
            out.extend(dead.iter().cloned());
            metrics
                .records_out
                .inc_by((s.scores.len() + s.magnitudes.len()) as u64);
            metrics.records_failed.inc_by(s.unscored.len() as u64);
            for u in &s.unscored {
                tracing::warn!("not scored: {u}");
                super::list_first(&mut self.unscored_listed, u.clone());
            }
            self.scores_out += s.scores.len() as u64;
            self.magnitudes_out += s.magnitudes.len() as u64;
            for r in &s.scores {
                if let Some(p) = r.p_aftershock() {
                    metrics.prediction(&r.key.key().stream(), p);
                }
            }
            done.extend(s.scores.iter().map(|r| r.key.window_id.as_str()));
            done.extend(s.magnitudes.iter().map(|r| r.key.window_id.as_str()));
            self.unscored += s.unscored.len() as u64;
            for chunk in s.scores.chunks(256) {
                let key = chunk[0].key.station.clone();
                out.push(
                    Outgoing::new(SCORES, key, encode_scores(chunk))
                        .header(header::WINDOW_END_NS, end.clone()),
                );
            }
            for chunk in s.magnitudes.chunks(256) {
                let key = chunk[0].key.station.clone();
                out.push(
                    Outgoing::new(MAGNITUDES, key, encode_magnitudes(chunk))
                        .header(header::WINDOW_END_NS, end.clone()),
                );
            }
        }
        if self.explain {
            let mut tasks = self.tasks(&all, &done);
            self.spread.assign(t, SHAP_TASKS, &mut tasks)?;
            out.extend(tasks);
        }
        let dead = out
            .iter()
            .filter(|o| o.topic == quakelens_transport::topics::DEAD_LETTER)
            .count();
        metrics.dead_lettered(dead);
        t.send(out).await?;
        t.store(&after_batch(&batch))?;
        let now = super::now_ns();
        for (_, w) in all
            .iter()
            .filter(|(_, w)| done.contains(w.window_id.as_str()))
        {
            metrics.window_latency((now - w.end_ns) as f64 / 1e9);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quakelens_models::conv1d::{save_conv1d, Conv1dNet};
    use quakelens_models::ttf::ClassCount;
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics::{self, DEAD_LETTER};

    use super::*;
    use crate::messages::fixtures::{format, window};
    use crate::messages::{decode_scores, encode_windows};
    use crate::metrics::Metrics;
    use crate::score::ModelPaths;

    /// The scorer service with the paper's 1-D CNN: windows with samples are scored; a message
    /// of windows without them, junk and an empty message go to the dead letters saying what is
    /// wrong, and the batch's positions are stored past all of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conv1d_scorer_scores_waveform_windows_and_dead_letters_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv1d.safetensors");
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _net = Conv1dNet::new(&vs.root(), 4);
        save_conv1d(&vs, &ClassCount::Four.names(), None, &path).unwrap();
        let paths = ModelPaths {
            cnn: Some(path),
            forest: None,
        };
        let scorer = Scorer::load(&paths, 8).unwrap();
        assert!(scorer.conv1d.is_some() && scorer.cnn.is_none());
        let with = LakeFormat {
            waveform: Some([3, 2500]),
            ..format()
        };
        let mut rows: Vec<WindowRecord> = (0..3).map(window).collect();
        for (i, r) in rows.iter_mut().enumerate() {
            r.waveform = (0..7500).map(|k| ((k * 7 + i) % 13) as f32 - 6.0).collect();
        }
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        broker
            .transport(&[])
            .send(vec![
                Outgoing::new(WINDOWS, "a", encode_windows(&rows, &with)),
                Outgoing::new(WINDOWS, "b", encode_windows(&rows[..1], &format())),
                Outgoing::new(WINDOWS, "c", b"not arrow".to_vec()),
                Outgoing::new(WINDOWS, "d", Vec::new()),
            ])
            .await
            .unwrap();
        let t = broker.transport(&[WINDOWS]);
        let mut stage = ScorerStage::new(scorer, "scorer");
        let metrics = Metrics::new();
        let batch = t.recv(100, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 4);
        let ends = after_batch(&batch);
        stage
            .step(&t, batch, &metrics.stage("scorer"))
            .await
            .unwrap();
        let scores: Vec<_> = broker
            .messages(SCORES)
            .iter()
            .flat_map(|m| decode_scores(m.payload.as_deref().unwrap()).unwrap())
            .collect();
        assert_eq!(scores.len(), 3);
        assert!(scores
            .iter()
            .all(|s| s.model_kind == "quakelens-conv1d" && s.probabilities.len() == 4));
        let dead = broker.messages(DEAD_LETTER);
        let why =
            |i: usize| String::from_utf8_lossy(dead[i].header(header::ERROR).unwrap()).into_owned();
        assert_eq!(dead.len(), 3);
        let reasons: Vec<String> = (0..3).map(why).collect();
        assert!(
            reasons
                .iter()
                .any(|w| w.contains("these windows carry none") && w.contains("--waveforms")),
            "{reasons:?}"
        );
        let undecodable = reasons.iter().filter(|w| w.starts_with("windows message:"));
        assert_eq!(undecodable.count(), 2, "{reasons:?}");
        for p in &ends {
            assert_eq!(
                t.stored().get(&(p.topic.clone(), p.partition)),
                Some(&p.offset)
            );
        }
        assert_eq!(stage.unscored, 0);
    }
}
