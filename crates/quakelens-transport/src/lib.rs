//! One transport for every stage. A stage reads [`Incoming`] messages, sends [`Outgoing`] ones and
//! tells the transport which input positions are safe to commit; whether that is Kafka between
//! separate services ([`kafka::KafkaTransport`]) or a queue inside one process
//! ([`memory::MemoryBroker`]) is invisible to it.
//!
//! Delivery is at least once: a stage stores a position only after every output derived from the
//! messages before it has been acknowledged, so a crash replays instead of losing.

use std::future::Future;
use std::time::Duration;

pub mod kafka;
pub mod memory;
pub mod topics;

/// A message as a stage receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Broker or producer timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// Where this message sits, for error messages and dead letters.
    pub fn position(&self) -> Position {
        Position {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// A message a stage sends.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Explicit partition; `None` hashes the key.
    pub partition: Option<i32>,
}

impl Outgoing {
    pub fn new(topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.to_string(),
            key: key.into(),
            payload,
            headers: Vec::new(),
            partition: None,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn to_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A position in a partition. Stored positions are "next offset to read": everything before them
/// is done.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// Partitions taken away from this consumer (another group member owns them now): a stage drops
/// what it buffered for them, the new owner replays from the committed position.
pub type Revoked = Vec<(String, i32)>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka {what}: {error}")]
    Kafka {
        what: String,
        #[source]
        error: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist (create it first: `quakelens topics create`)")]
    UnknownTopic(String),
    #[error("transport closed")]
    Closed,
}

impl TransportError {
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |error| Self::Kafka { what, error }
    }
}

/// What every stage talks to.
pub trait Transport: Send + Sync + 'static {
    /// Sends `batch` and returns once the broker acknowledged every message.
    fn send(&self, batch: Vec<Outgoing>)
        -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Up to `max` messages; waits at most `wait` for the first one.
    fn recv(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Incoming>, TransportError>> + Send;

    /// Marks everything before each position as done; it is committed in the background, on
    /// rebalance and on [`Transport::commit`].
    fn store(&self, positions: &[Position]) -> Result<(), TransportError>;

    /// Commits the stored positions now (graceful shutdown).
    fn commit(&self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Partitions revoked since the last call.
    fn take_revoked(&self) -> Revoked;

    /// Number of partitions of `topic`.
    fn partitions(&self, topic: &str) -> Result<i32, TransportError>;

    /// Everything currently in `topic`, outside any group (small state topics read at start).
    fn read_all(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<Incoming>, TransportError>> + Send;
}

/// Stable partition for a key (FNV-1a), the same in both transports, so the in-memory pipeline
/// groups exactly like the distributed one.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % partitions.max(1) as u64) as i32
}

/// Retry pause after a transient failure; grows to a cap so a dead broker is not hammered.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}
