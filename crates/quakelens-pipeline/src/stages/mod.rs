//! The pipeline's streaming stages, each written once against [`Transport`]: Kafka between
//! services, memory inside one process. A stage reads a batch, sends what it derives, waits for
//! the acknowledgements, and only then stores its input positions (at-least-once). Messages it
//! cannot use go to `dead-letter` with the reason; they never stop a partition.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use quakelens_transport::topics::{header, DEAD_LETTER};
use quakelens_transport::{Incoming, Outgoing, Transport, TransportError};

pub mod cnn_parts;
pub mod explainer;
pub mod ingest;
pub mod lake_sink;
pub mod scorer;
pub mod seedlink;
pub mod windower;

pub use crate::metrics::StageMetrics;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("lake: {0}")]
    Lake(#[from] quakelens_lake::LakeError),
    #[error("lake query: {0}")]
    Query(#[from] quakelens_lake::QueryError),
    #[error("scoring: {0}")]
    Score(#[from] crate::score::ScoreError),
    #[error("catalogue: {0}")]
    Catalog(#[from] quakelens_synth::CatalogError),
    #[error("input: {0}")]
    Input(String),
}

/// Stops a stage between batches (SIGTERM: finish in-flight work, commit, exit).
pub type Stop = watch::Receiver<bool>;

/// A consuming stage: [`run`] reads batches and hands each to [`Stage::step`].
pub trait Stage {
    /// Messages read per batch.
    fn batch_size(&self) -> usize;

    /// Handles one batch (possibly empty): send what it derives, wait for the acks, then store
    /// the input positions.
    fn step<T: Transport>(
        &mut self,
        t: &T,
        batch: Vec<Incoming>,
        metrics: &StageMetrics,
    ) -> impl std::future::Future<Output = Result<(), StageError>>;
}

/// Drives `stage` until `stop`, then commits: the batch in flight always finishes.
pub async fn run<S: Stage, T: Transport>(
    stage: &mut S,
    t: &T,
    stop: Stop,
    metrics: &StageMetrics,
) -> Result<(), StageError> {
    while !stopped(&stop) {
        let batch = t.recv(stage.batch_size(), POLL).await?;
        let (n, started) = (batch.len(), Instant::now());
        metrics.records_in.inc_by(n as u64);
        stage.step(t, batch, metrics).await?;
        if n > 0 {
            metrics.batch(n, started.elapsed().as_secs_f64());
        }
    }
    t.commit().await?;
    Ok(())
}

pub fn stopped(stop: &Stop) -> bool {
    *stop.borrow()
}

/// Spreads one topic's messages over its partitions in turn. Explanation tasks go this way:
/// keyed hashing leaves some partitions with more tasks than others, and the workers sharing
/// the partitions would then finish unevenly.
#[derive(Debug, Default)]
pub struct RoundRobin {
    partitions: Option<i32>,
    next: i32,
}

impl RoundRobin {
    /// Gives each message for `topic` in `messages` the next partition (the count is read once).
    pub fn assign<T: Transport>(
        &mut self,
        t: &T,
        topic: &str,
        messages: &mut [Outgoing],
    ) -> Result<(), StageError> {
        if !messages.iter().any(|m| m.topic == topic) {
            return Ok(());
        }
        let n = match self.partitions {
            Some(n) => n,
            None => *self.partitions.insert(t.partitions(topic)?.max(1)),
        };
        for m in messages.iter_mut().filter(|m| m.topic == topic) {
            m.partition = Some(self.next % n);
            self.next = (self.next + 1) % n;
        }
        Ok(())
    }
}

/// How long a stage waits for its first message of a batch.
pub const POLL: Duration = Duration::from_millis(200);

/// The original message, unchanged, with why and where in headers.
pub fn dead_letter(stage: &str, m: &Incoming, reason: &str) -> Outgoing {
    tracing::warn!(stage, origin = %m.position(), "dead letter: {reason}");
    let mut out = Outgoing::new(
        DEAD_LETTER,
        m.key.clone().unwrap_or_default(),
        m.payload.clone().unwrap_or_default(),
    );
    out.headers = m.headers.clone();
    out.header(header::ERROR, reason)
        .header(header::STAGE, stage)
        .header(header::ORIGIN, m.position().to_string())
}

/// Positions after each partition's last message in `batch` (everything consumed is done).
pub fn after_batch(batch: &[Incoming]) -> Vec<quakelens_transport::Position> {
    let mut last: std::collections::BTreeMap<(String, i32), i64> = Default::default();
    for m in batch {
        let e = last
            .entry((m.topic.clone(), m.partition))
            .or_insert(m.offset);
        *e = (*e).max(m.offset);
    }
    last.into_iter()
        .map(|((topic, partition), o)| quakelens_transport::Position {
            topic,
            partition,
            offset: o + 1,
        })
        .collect()
}

/// Problems a stage lists by name for a run's report; past this many they are only counted
/// (and logged), so a list never grows with uptime.
pub const LISTED: usize = 1000;

/// Appends `item` while `list` is shorter than [`LISTED`].
pub fn list_first(list: &mut Vec<String>, item: String) {
    if list.len() < LISTED {
        list.push(item);
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
