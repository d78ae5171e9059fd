//! `windows`, `scores`, `magnitudes`, `shap.results` → Parquet. At-least-once delivery becomes exactly-once rows:
//! the sink remembers which (table, window_id[, model]) it holds, loading them from the lake at
//! start, and skips what it already wrote, so a replay after a crash adds nothing twice.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, StringArray, StringViewArray};

use quakelens_lake::{
    CnnShapRecord, ForestShapRecord, Lake, LakeWriter, MagnitudeRecord, ScoreRecord,
    SpectrogramAxes, WindowRecord,
};
use quakelens_transport::topics::{header, MAGNITUDES, SCORES, SHAP_RESULTS, WINDOWS};
use quakelens_transport::{Incoming, Transport};

use super::{after_batch, dead_letter, now_ns, Stage, StageError, StageMetrics};
use crate::messages::{
    decode_cnn_shap, decode_forest_shap, decode_magnitudes, decode_scores, decode_windows,
    is_cnn_result,
};

const STAGE: &str = "lake";

/// Latencies kept for percentiles (most recent).
const LATENCY_SAMPLES: usize = 100_000;

/// Percentiles of window-end → in-lake latencies (s).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LatencySummary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            n: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v[v.len() - 1],
        }
    }
}

pub struct LakeSinkStage {
    writer: LakeWriter,
    /// Window ids in `windows` and in `features`, apart: a sink killed between the two tables'
    /// files leaves a window in one only, and the replay completes the other.
    windows: HashSet<String>,
    features: HashSet<String>,
    scores: HashSet<(String, String)>,
    magnitudes: HashSet<(String, String)>,
    forest_shap: HashSet<(String, String)>,
    cnn_shap: HashSet<(String, String)>,
    /// Where CNN explanation values sit (None: the lake's spectrograms are not the study's).
    axes: Option<SpectrogramAxes>,
    batch: usize,
    /// Seconds from window end to its row being in the lake, per message.
    pub latencies: Arc<Mutex<Vec<f64>>>,
    pub duplicates_skipped: u64,
}

/// Strings of the first column of a query result (Utf8 or Utf8View).
async fn column_strings(lake: &Lake, sql: &str) -> Result<Vec<String>, StageError> {
    let mut out = Vec::new();
    for batch in lake.sql(sql).await? {
        let col = batch.column(0);
        if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        } else if let Some(a) = col.as_any().downcast_ref::<StringViewArray>() {
            out.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
    }
    Ok(out)
}

fn has_table(root: &Path, table: &str) -> bool {
    root.join(table).is_dir()
}

impl LakeSinkStage {
    pub async fn open(root: &Path, shape: [usize; 3]) -> Result<Self, StageError> {
        let writer = LakeWriter::open(root, shape)?;
        let lake = Lake::open(root).await?;
        let mut me = Self {
            writer,
            windows: HashSet::new(),
            features: HashSet::new(),
            scores: HashSet::new(),
            magnitudes: HashSet::new(),
            forest_shap: HashSet::new(),
            cnn_shap: HashSet::new(),
            axes: crate::transform::spectrogram_axes(shape).ok(),
            batch: 500,
            latencies: Arc::new(Mutex::new(Vec::new())),
            duplicates_skipped: 0,
        };
        for (table, set) in [("windows", &mut me.windows), ("features", &mut me.features)] {
            if has_table(root, table) {
                let sql = format!("SELECT window_id FROM {table}");
                set.extend(column_strings(&lake, &sql).await?);
            }
        }
        for (table, set) in [
            ("scores", &mut me.scores),
            ("magnitudes", &mut me.magnitudes),
            ("forest_shap", &mut me.forest_shap),
            ("cnn_shap", &mut me.cnn_shap),
        ] {
            if has_table(root, table) {
                let sql = format!("SELECT DISTINCT window_id || '|' || model_hash FROM {table}");
                for pair in column_strings(&lake, &sql).await? {
                    if let Some((id, model)) = pair.split_once('|') {
                        set.insert((id.to_string(), model.to_string()));
                    }
                }
            }
        }
        tracing::info!(
            windows = me.windows.len(),
            scores = me.scores.len(),
            magnitudes = me.magnitudes.len(),
            "lake sink: rows already in the lake"
        );
        Ok(me)
    }
}

impl Stage for LakeSinkStage {
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
        let mut windows: Vec<WindowRecord> = Vec::new();
        let mut scores: Vec<ScoreRecord> = Vec::new();
        let mut magnitudes: Vec<MagnitudeRecord> = Vec::new();
        // Explanations with the feature names their values follow.
        let mut explained: Vec<(Vec<String>, Vec<ForestShapRecord>)> = Vec::new();
        let mut cnn_explained: Vec<CnnShapRecord> = Vec::new();
        let mut dead = Vec::new();
        let mut ends = Vec::new();
        for m in &batch {
            let Some(payload) = m.payload.as_deref() else {
                dead.push(dead_letter(STAGE, m, "empty message (no payload)"));
                continue;
            };
            let result = match m.topic.as_str() {
                WINDOWS => decode_windows(payload).map(|r| windows.extend(r)),
                SCORES => decode_scores(payload).map(|r| scores.extend(r)),
                MAGNITUDES => decode_magnitudes(payload).map(|r| magnitudes.extend(r)),
                SHAP_RESULTS if is_cnn_result(payload) => match &self.axes {
                    Some(_) => decode_cnn_shap(payload).map(|r| cnn_explained.extend(r)),
                    None => {
                        dead.push(dead_letter(
                            STAGE,
                            m,
                            "CNN explanations for a lake whose spectrograms are not the study's",
                        ));
                        continue;
                    }
                },
                SHAP_RESULTS => decode_forest_shap(payload).map(|(rows, names)| {
                    match explained.iter_mut().find(|(n, _)| *n == names) {
                        Some((_, all)) => all.extend(rows),
                        None => explained.push((names, rows)),
                    }
                }),
                other => {
                    dead.push(dead_letter(STAGE, m, &format!("unexpected topic {other}")));
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    if let Some(end) = m
                        .header(header::WINDOW_END_NS)
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                    {
                        ends.push(end);
                    }
                }
                Err(e) => dead.push(dead_letter(STAGE, m, &format!("{} message: {e}", m.topic))),
            }
        }
        let explained_rows = |e: &[(Vec<String>, Vec<ForestShapRecord>)]| -> usize {
            e.iter().map(|(_, r)| r.len()).sum()
        };
        let before = windows.len()
            + scores.len()
            + magnitudes.len()
            + explained_rows(&explained)
            + cnn_explained.len();
        // Each window once, into whichever of the two tables lacks it.
        let mut seen_windows = HashSet::new();
        windows.retain(|r| {
            (!self.windows.contains(&r.window_id) || !self.features.contains(&r.window_id))
                && seen_windows.insert(r.window_id.clone())
        });
        let (both, partial): (Vec<WindowRecord>, Vec<WindowRecord>) =
            windows.into_iter().partition(|r| {
                !self.windows.contains(&r.window_id) && !self.features.contains(&r.window_id)
            });
        let windows = both;
        scores.retain(|r| {
            !self
                .scores
                .contains(&(r.key.window_id.clone(), r.model_hash.clone()))
        });
        magnitudes.retain(|r| {
            !self
                .magnitudes
                .contains(&(r.key.window_id.clone(), r.model_hash.clone()))
        });
        let mut seen_now = HashSet::new();
        for (_, rows) in &mut explained {
            rows.retain(|r| {
                let k = (r.key.window_id.clone(), r.model_hash.clone());
                !self.forest_shap.contains(&k) && seen_now.insert(k)
            });
        }
        let mut cnn_seen_now = HashSet::new();
        cnn_explained.retain(|r| {
            let k = (r.key.window_id.clone(), r.model_hash.clone());
            !self.cnn_shap.contains(&k) && cnn_seen_now.insert(k)
        });
        let fresh = windows.len()
            + partial.len()
            + scores.len()
            + magnitudes.len()
            + explained_rows(&explained)
            + cnn_explained.len();
        self.duplicates_skipped += (before - fresh) as u64;
        tokio::task::block_in_place(|| -> Result<(), StageError> {
            self.writer.write(&windows)?;
            for r in &partial {
                tracing::warn!(window = %r.window_id, "completing a window one table lacks (a sink died between its files)");
            }
            let (lacks_windows, lacks_features): (Vec<WindowRecord>, Vec<WindowRecord>) = partial
                .iter()
                .cloned()
                .partition(|r| !self.windows.contains(&r.window_id));
            self.writer.write_tables(&lacks_windows, true, false)?;
            self.writer.write_tables(&lacks_features, false, true)?;
            self.writer.write_scores(&scores)?;
            self.writer.write_magnitudes(&magnitudes)?;
            for (names, rows) in &explained {
                self.writer.write_forest_shap(rows, names)?;
            }
            if let Some(axes) = &self.axes {
                self.writer.write_cnn_shap(&cnn_explained, axes)?;
            }
            Ok(())
        })?;
        for r in windows.iter().chain(&partial) {
            self.windows.insert(r.window_id.clone());
            self.features.insert(r.window_id.clone());
        }
        self.scores
            .extend(scores.into_iter().map(|r| (r.key.window_id, r.model_hash)));
        self.magnitudes.extend(
            magnitudes
                .into_iter()
                .map(|r| (r.key.window_id, r.model_hash)),
        );
        self.cnn_shap.extend(
            cnn_explained
                .into_iter()
                .map(|r| (r.key.window_id, r.model_hash)),
        );
        self.forest_shap.extend(
            explained
                .into_iter()
                .flat_map(|(_, rows)| rows.into_iter().map(|r| (r.key.window_id, r.model_hash))),
        );
        let now = now_ns();
        {
            let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
            for &e in &ends {
                let seconds = (now - e) as f64 / 1e9;
                metrics.window_latency(seconds);
                l.push(seconds);
            }
            if l.len() > LATENCY_SAMPLES {
                let cut = l.len() - LATENCY_SAMPLES;
                l.drain(..cut);
            }
        }
        metrics.records_out.inc_by(fresh as u64);
        metrics.dead_lettered(dead.len());
        t.send(dead).await?;
        t.store(&after_batch(&batch))?;
        Ok(())
    }
}
