//! `windows`, `scores`, `magnitudes`, `shap.results` → Parquet. At-least-once delivery becomes exactly-once rows:
//! the sink remembers which (table, window_id[, model]) it holds, loading them from the lake at
//! start, and skips what it already wrote, so a replay after a crash adds nothing twice.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, StringArray, StringViewArray};

use quakelens_explain::image::Part;
use quakelens_lake::{
    CnnShapRecord, ForestShapRecord, Lake, LakeWriter, MagnitudeRecord, ScoreRecord,
    SpectrogramAxes, WindowRecord,
};
use quakelens_transport::topics::{header, DEAD_LETTER, MAGNITUDES, SCORES, SHAP_RESULTS, WINDOWS};
use quakelens_transport::{Incoming, Outgoing, Position, Transport};

use super::cnn_parts::{Origin, PartsBuffer};
use super::explainer::record_band_shares;
use super::{after_batch, dead_letter, now_ns, Stage, StageError, StageMetrics};
use crate::messages::{
    decode_cnn_shap, decode_forest_shap, decode_magnitudes, decode_scores, decode_windows,
    encode_cnn_shap, is_cnn_result,
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
    /// CNN explanations split into parts, waiting for the rest of their window.
    pub parts: PartsBuffer,
    /// After the last message read, per (topic, partition); stored once no held part is before.
    consumed: BTreeMap<(String, i32), i64>,
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
            parts: PartsBuffer::default(),
            consumed: BTreeMap::new(),
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
                WINDOWS => decode_windows(payload)
                    .map(|r| windows.extend(r))
                    .map_err(|e| e.to_string()),
                SCORES => decode_scores(payload)
                    .map(|r| scores.extend(r))
                    .map_err(|e| e.to_string()),
                MAGNITUDES => decode_magnitudes(payload)
                    .map(|r| magnitudes.extend(r))
                    .map_err(|e| e.to_string()),
                SHAP_RESULTS if is_cnn_result(payload) => match &self.axes {
                    Some(_) => match decode_cnn_shap(payload) {
                        Ok(rows) => self.take_cnn(rows, m, &mut cnn_explained, metrics),
                        Err(e) => Err(e.to_string()),
                    },
                    None => {
                        dead.push(dead_letter(
                            STAGE,
                            m,
                            "CNN explanations for a lake whose spectrograms are not the study's",
                        ));
                        continue;
                    }
                },
                SHAP_RESULTS => decode_forest_shap(payload)
                    .map(
                        |(rows, names)| match explained.iter_mut().find(|(n, _)| *n == names) {
                            Some((_, all)) => all.extend(rows),
                            None => explained.push((names, rows)),
                        },
                    )
                    .map_err(|e| e.to_string()),
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
        dead.extend(self.expired_parts());
        metrics.records_out.inc_by(fresh as u64);
        metrics.dead_lettered(dead.len());
        t.send(dead).await?;
        for p in after_batch(&batch) {
            self.consumed.insert((p.topic, p.partition), p.offset);
        }
        t.store(&self.positions())?;
        Ok(())
    }
}

impl LakeSinkStage {
    /// CNN explanations of a message: whole windows go on; parts wait in the buffer until their
    /// window is complete (or is in the lake already).
    fn take_cnn(
        &mut self,
        rows: Vec<(CnnShapRecord, Part)>,
        m: &Incoming,
        out: &mut Vec<CnnShapRecord>,
        metrics: &StageMetrics,
    ) -> Result<(), String> {
        for (record, part) in rows {
            if part == Part::WHOLE {
                out.push(record);
                continue;
            }
            let key = (record.key.window_id.clone(), record.model_hash.clone());
            if self.cnn_shap.contains(&key) {
                self.parts.forget(&key.0, &key.1);
                self.duplicates_skipped += 1;
                continue;
            }
            let origin = Origin {
                topic: m.topic.clone(),
                partition: m.partition,
                offset: m.offset,
            };
            if let Some(whole) = self.parts.add(record, part, origin)? {
                // No worker saw this window whole: its band shares (the drift metric) are set here.
                if let Some(axes) = &self.axes {
                    record_band_shares(metrics, &whole, &axes.freqs_hz, axes.times_s.len());
                }
                out.push(whole);
            }
        }
        Ok(())
    }

    /// Windows whose parts waited too long, as dead letters (their parts, re-encoded).
    fn expired_parts(&mut self) -> Vec<Outgoing> {
        self.parts
            .expired()
            .into_iter()
            .map(|w| {
                let got = w.parts.len();
                let rows: Vec<(CnnShapRecord, Part)> = w
                    .parts
                    .into_iter()
                    .map(|(index, (r, _))| {
                        (
                            r,
                            Part {
                                index,
                                count: w.count,
                            },
                        )
                    })
                    .collect();
                let window = rows[0].0.key.window_id.clone();
                let reason = format!(
                    "CNN explanation of window {window}: {got} of {} parts after {} s",
                    w.count,
                    self.parts.timeout.as_secs()
                );
                tracing::error!(window, "{reason}");
                Outgoing::new(DEAD_LETTER, window, encode_cnn_shap(&rows))
                    .header(header::ERROR, reason)
                    .header(header::STAGE, STAGE)
            })
            .collect()
    }

    /// What may be committed: everything read, except from the first held part on.
    fn positions(&self) -> Vec<Position> {
        let held = self.parts.held();
        self.consumed
            .iter()
            .map(|((topic, partition), &after)| Position {
                topic: topic.clone(),
                partition: *partition,
                offset: held
                    .get(&(topic.clone(), *partition))
                    .map_or(after, |&h| h.min(after)),
            })
            .collect()
    }
}
