//! `shap.tasks` → `shap.results`: the explainer workers. The forest service cuts one task
//! message per few windows, keyed by window so they spread over every partition; the members
//! of the `explainer` group share the partitions, and a worker that dies leaves its stored-but-
//! uncommitted tasks to be redone by the others (the lake sink drops the duplicates).

use std::time::Instant;

use rayon::prelude::*;

use quakelens_explain::ForestShap;
use quakelens_lake::ForestShapRecord;
use quakelens_models::forest::Forest;
use quakelens_transport::topics::{header, SHAP_RESULTS, SHAP_TASKS};
use quakelens_transport::{Incoming, Outgoing, Transport};

use super::{after_batch, dead_letter, now_ns, Stage, StageError, StageMetrics};
use crate::messages::{decode_forest_shap_tasks, encode_forest_shap, ForestShapTask};

const STAGE: &str = "explainer";

/// Explains forest tasks with the forest they were scored with.
pub struct ExplainerStage {
    forest: Forest,
    hash: String,
    batch: usize,
}

impl ExplainerStage {
    pub fn new(forest: Forest) -> Result<Self, StageError> {
        // Refuse a forest TreeSHAP cannot explain now, not at the first task.
        ForestShap::new(&forest).map_err(|e| StageError::Input(e.to_string()))?;
        let hash = forest
            .hash
            .as_ref()
            .map(|h| h.0.clone())
            .unwrap_or_default();
        Ok(Self {
            forest,
            hash,
            batch: 32,
        })
    }

    /// The explanations of one message's tasks, or why they cannot be made.
    fn explain(
        &self,
        shap: &ForestShap<'_>,
        tasks: &[ForestShapTask],
    ) -> Result<Vec<ForestShapRecord>, String> {
        if let Some(t) = tasks.iter().find(|t| t.model_hash != self.hash) {
            return Err(format!(
                "task for window {} names forest {}, this worker explains {}",
                t.key.window_id, t.model_hash, self.hash
            ));
        }
        tasks
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
            .collect()
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
        let shap = ForestShap::new(&self.forest).map_err(|e| StageError::Input(e.to_string()))?;
        let mut out = Vec::new();
        let mut dead = 0;
        let mut ends = Vec::new();
        for m in &batch {
            if m.topic != SHAP_TASKS {
                out.push(dead_letter(
                    STAGE,
                    m,
                    &format!("unexpected topic {}", m.topic),
                ));
                dead += 1;
                continue;
            }
            let tasks = match m.payload.as_deref().map(decode_forest_shap_tasks) {
                Some(Ok(tasks)) if !tasks.is_empty() => tasks,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    out.push(dead_letter(STAGE, m, &format!("shap task message: {e}")));
                    dead += 1;
                    continue;
                }
                None => {
                    out.push(dead_letter(STAGE, m, "empty message (no payload)"));
                    dead += 1;
                    continue;
                }
            };
            let started = Instant::now();
            match tokio::task::block_in_place(|| self.explain(&shap, &tasks)) {
                Ok(rows) => {
                    metrics.shap_task(started.elapsed().as_secs_f64());
                    metrics.records_out.inc_by(rows.len() as u64);
                    let end = tasks.iter().map(|t| t.end_ns).max().unwrap_or(0);
                    ends.extend(tasks.iter().map(|t| t.end_ns));
                    let key = rows[0].key.window_id.clone();
                    out.push(
                        Outgoing::new(
                            SHAP_RESULTS,
                            key,
                            encode_forest_shap(&rows, &self.forest.spec.features),
                        )
                        .header(header::WINDOW_END_NS, end.to_string()),
                    );
                }
                Err(why) => {
                    out.push(dead_letter(STAGE, m, &why));
                    dead += 1;
                }
            }
        }
        metrics.dead_lettered(dead);
        t.send(out).await?;
        t.store(&after_batch(&batch))?;
        let now = now_ns();
        for e in ends {
            metrics.window_latency((now - e) as f64 / 1e9);
        }
        Ok(())
    }
}
