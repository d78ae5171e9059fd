//! `windows` → `scores` (the CNN, service `scorer`) and/or `magnitudes` (the forest, service
//! `forest`): the same [`Scorer`] the embedded run uses, fed by the transport.

use quakelens_lake::WindowRecord;
use quakelens_transport::topics::{header, MAGNITUDES, SCORES, WINDOWS};
use quakelens_transport::{Incoming, Outgoing, Transport};

use super::{after_batch, dead_letter, Stage, StageError, StageMetrics};
use crate::messages::{decode_windows, encode_magnitudes, encode_scores};
use crate::score::{Scored, Scorer};

/// Scores every window message; a message that cannot be decoded or scored is a dead letter.
pub struct ScorerStage {
    scorer: Scorer,
    name: &'static str,
    batch: usize,
    /// Windows the forest could not score (missing inputs), with the reason.
    pub unscored: Vec<String>,
}

impl ScorerStage {
    /// `name` is the service (`scorer` or `forest`), used in dead letters and logs.
    pub fn new(scorer: Scorer, name: &'static str) -> Self {
        Self {
            scorer,
            name,
            batch: 64,
            unscored: Vec::new(),
        }
    }
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
        metrics.records_in.inc_by(batch.len() as u64);
        let mut out = Vec::new();
        let mut decoded: Vec<(&Incoming, Vec<WindowRecord>)> = Vec::new();
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
                Some(Ok(rows)) => decoded.push((m, rows)),
                Some(Err(e)) => {
                    out.push(dead_letter(self.name, m, &format!("windows message: {e}")))
                }
                None => out.push(dead_letter(self.name, m, "empty message (no payload)")),
            }
        }
        let all: Vec<WindowRecord> = decoded
            .iter()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        let model = if self.name == "forest" {
            "forest"
        } else {
            "cnn"
        };
        let started = std::time::Instant::now();
        let scored = match tokio::task::block_in_place(|| self.scorer.score(&all)) {
            Ok(s) => vec![(None, s)],
            // One bad message must not cost the others: score them one by one.
            Err(_) => decoded
                .iter()
                .map(
                    |(m, rows)| match tokio::task::block_in_place(|| self.scorer.score(rows)) {
                        Ok(s) => (None, s),
                        Err(e) => (
                            Some(dead_letter(self.name, m, &format!("scoring: {e}"))),
                            Scored::default(),
                        ),
                    },
                )
                .collect(),
        };
        metrics.inference(model, started.elapsed().as_secs_f64());
        let end = batch
            .iter()
            .filter_map(|m| m.header(header::WINDOW_END_NS))
            .filter_map(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .max()
            .unwrap_or(0)
            .to_string();
        let mut done = std::collections::HashSet::new();
        for (dead, s) in &scored {
            out.extend(dead.iter().cloned());
            metrics
                .records_out
                .inc_by((s.scores.len() + s.magnitudes.len()) as u64);
            metrics.records_failed.inc_by(s.unscored.len() as u64);
            for u in &s.unscored {
                tracing::warn!("not scored: {u}");
            }
            for r in &s.scores {
                let k = &r.key;
                let station = format!("{}.{}.{}.{}", k.network, k.station, k.location, k.band);
                metrics.prediction(&station, r.p_aftershock);
            }
            done.extend(s.scores.iter().map(|r| r.key.window_id.as_str()));
            done.extend(s.magnitudes.iter().map(|r| r.key.window_id.as_str()));
            self.unscored.extend(s.unscored.iter().cloned());
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
        let dead = out
            .iter()
            .filter(|o| o.topic == quakelens_transport::topics::DEAD_LETTER)
            .count();
        metrics.dead_lettered(dead);
        t.send(out).await?;
        t.store(&after_batch(&batch))?;
        let now = super::now_ns();
        for w in all.iter().filter(|w| done.contains(w.window_id.as_str())) {
            metrics.window_latency((now - w.end_ns) as f64 / 1e9);
        }
        Ok(())
    }
}
