//! The in-process transport of the embedded mode: topics are vectors behind a mutex, each
//! [`MemoryTransport`] is the single member of its consumer group. Nothing is persisted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{partition_for, Incoming, Outgoing, Position, Revoked, Transport, TransportError};

type Partitions = Vec<Vec<Incoming>>;

/// Shared topics.
#[derive(Default)]
pub struct MemoryBroker {
    topics: Mutex<BTreeMap<String, Partitions>>,
    arrived: Notify,
}

impl MemoryBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.lock()
            .entry(name.to_string())
            .or_insert_with(|| vec![Vec::new(); partitions.max(1) as usize]);
    }

    /// A consumer of `topics` (its own group) that can also produce.
    pub fn transport(self: &Arc<Self>, topics: &[&str]) -> MemoryTransport {
        MemoryTransport {
            broker: Arc::clone(self),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            next: Mutex::new(BTreeMap::new()),
            stored: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every message of `topic`, partition by partition.
    pub fn messages(&self, topic: &str) -> Vec<Incoming> {
        self.lock()
            .get(topic)
            .map(|parts| parts.iter().flatten().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Partitions>> {
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One group member on a [`MemoryBroker`].
pub struct MemoryTransport {
    broker: Arc<MemoryBroker>,
    topics: Vec<String>,
    next: Mutex<BTreeMap<(String, i32), i64>>,
    stored: Mutex<BTreeMap<(String, i32), i64>>,
}

impl MemoryTransport {
    /// Positions stored so far (what a commit would write).
    pub fn stored(&self) -> BTreeMap<(String, i32), i64> {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn take(&self, max: usize) -> Vec<Incoming> {
        let topics = self.broker.lock();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for name in &self.topics {
            let Some(parts) = topics.get(name) else {
                continue;
            };
            for (p, messages) in parts.iter().enumerate() {
                let pos = next.entry((name.clone(), p as i32)).or_insert(0);
                while (*pos as usize) < messages.len() && out.len() < max {
                    out.push(messages[*pos as usize].clone());
                    *pos += 1;
                }
            }
        }
        out
    }
}

impl Transport for MemoryTransport {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<(), TransportError> {
        {
            let mut topics = self.broker.lock();
            for m in batch {
                let parts = topics
                    .get_mut(&m.topic)
                    .ok_or_else(|| TransportError::UnknownTopic(m.topic.clone()))?;
                let p = m
                    .partition
                    .unwrap_or_else(|| partition_for(&m.key, parts.len() as i32));
                let part = parts
                    .get_mut(p as usize)
                    .ok_or_else(|| TransportError::UnknownTopic(format!("{}[{p}]", m.topic)))?;
                part.push(Incoming {
                    topic: m.topic,
                    partition: p,
                    offset: part.len() as i64,
                    key: Some(m.key),
                    payload: Some(m.payload),
                    headers: m.headers,
                    timestamp_ms: None,
                });
            }
        }
        self.broker.arrived.notify_waiters();
        Ok(())
    }

    async fn recv(&self, max: usize, wait: Duration) -> Result<Vec<Incoming>, TransportError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.broker.arrived.notified();
            let got = self.take(max);
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    fn store(&self, positions: &[Position]) -> Result<(), TransportError> {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        for p in positions {
            stored.insert((p.topic.clone(), p.partition), p.offset);
        }
        Ok(())
    }

    async fn commit(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn take_revoked(&self) -> Revoked {
        Vec::new()
    }

    async fn read_all(&self, topic: &str) -> Result<Vec<Incoming>, TransportError> {
        Ok(self.broker.messages(topic))
    }

    fn partitions(&self, topic: &str) -> Result<i32, TransportError> {
        self.broker
            .lock()
            .get(topic)
            .map(|p| p.len() as i32)
            .ok_or_else(|| TransportError::UnknownTopic(topic.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_keep_their_partition_and_order() {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 4);
        let t = broker.transport(&["t"]);
        let batch: Vec<Outgoing> = (0..20u8)
            .map(|i| Outgoing::new("t", vec![b'k', i % 3], vec![i]))
            .collect();
        t.send(batch).await.unwrap();
        let got = t.recv(100, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 20);
        for k in 0..3u8 {
            let same: Vec<&Incoming> = got
                .iter()
                .filter(|m| m.key.as_deref() == Some(&[b'k', k][..]))
                .collect();
            assert!(same.windows(2).all(|w| w[0].partition == w[1].partition
                && w[0].payload.as_ref().unwrap()[0] < w[1].payload.as_ref().unwrap()[0]));
        }
        assert!(t
            .recv(10, Duration::from_millis(5))
            .await
            .unwrap()
            .is_empty());
        let unknown = t.send(vec![Outgoing::new("nope", "k", vec![])]).await;
        assert!(unknown.unwrap_err().to_string().contains("nope"));
    }

    /// On paused (virtual) time: a receiver that only woke at its deadline would take the
    /// whole 5 s of virtual time; woken by the send it returns at 20 ms.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_receiver_wakes_on_send() {
        let broker = MemoryBroker::new();
        broker.create_topic("t", 1);
        let rx = broker.transport(&["t"]);
        let tx = broker.transport(&[]);
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move {
            let got = rx.recv(1, Duration::from_secs(5)).await;
            (got, tokio::time::Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(vec![Outgoing::new("t", "k", vec![7])])
            .await
            .unwrap();
        let (got, woke) = waiter.await.unwrap();
        assert_eq!(got.unwrap()[0].payload.as_deref(), Some(&[7u8][..]));
        assert!(
            woke - started < Duration::from_secs(1),
            "woke after {:?} of virtual time",
            woke - started
        );
    }
}
