//! The in-process transport of the embedded mode. Each [`MemoryTransport`] is the single member
//! of its own consumer group. Nothing is persisted.
//!
//! [`MemoryBroker::new`] keeps every message (tests read topics back whole);
//! [`MemoryBroker::bounded`] is the embedded run's: a message is dropped once every reader of
//! its topic has taken it, and a send waits while its topic holds more unread bytes than the
//! limit, so a fast stage is held back by a slow one instead of filling memory. State topics
//! created with [`MemoryBroker::create_compacted_topic`] keep the newest message per key, as
//! Kafka's log compaction does, and never hold a sender back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{partition_for, Incoming, Outgoing, Position, Revoked, Transport, TransportError};

#[derive(Default)]
struct Partition {
    /// Retained messages in offset order (compaction leaves holes in the offsets).
    messages: VecDeque<Incoming>,
    next_offset: i64,
}

impl Partition {
    /// Index of the first retained message at or after `offset`.
    fn index_of(&self, offset: i64) -> usize {
        self.messages.partition_point(|m| m.offset < offset)
    }
}

struct Topic {
    partitions: Vec<Partition>,
    compacted: bool,
    /// Payload and key bytes retained.
    bytes: usize,
    /// Readers (transport ids) subscribed to it.
    readers: Vec<usize>,
}

fn size(m: &Incoming) -> usize {
    m.payload.as_ref().map_or(0, Vec::len) + m.key.as_ref().map_or(0, Vec::len) + 64
}

#[derive(Default)]
struct State {
    topics: BTreeMap<String, Topic>,
    /// Next offset each reader takes, per (reader, topic, partition).
    cursors: HashMap<(usize, String, i32), i64>,
    next_reader: usize,
}

impl State {
    /// Drops what every reader of `topic` has taken (bounded brokers only). A topic nobody
    /// reads keeps nothing.
    fn trim(&mut self, topic: &str) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if t.compacted {
            return;
        }
        for (p, part) in t.partitions.iter_mut().enumerate() {
            let slowest = t
                .readers
                .iter()
                .map(|r| {
                    self.cursors
                        .get(&(*r, topic.to_string(), p as i32))
                        .copied()
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(part.next_offset);
            while part.messages.front().is_some_and(|m| m.offset < slowest) {
                let m = part.messages.pop_front().expect("checked");
                t.bytes -= size(&m);
            }
        }
    }
}

/// Shared topics.
#[derive(Default)]
pub struct MemoryBroker {
    state: Mutex<State>,
    arrived: Notify,
    /// Woken when messages are dropped (senders waiting for room).
    freed: Notify,
    /// Unread bytes a topic may hold before a send waits (None: keep everything).
    limit: Option<usize>,
}

impl MemoryBroker {
    /// A broker that keeps every message.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A broker whose topics hold at most about `bytes` each of messages not yet taken by
    /// every reader (at least one message, however large).
    pub fn bounded(bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: Some(bytes),
            ..Self::default()
        })
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.add_topic(name, partitions, false);
    }

    /// A state topic: only the newest message of each key is kept.
    pub fn create_compacted_topic(&self, name: &str, partitions: i32) {
        self.add_topic(name, partitions, true);
    }

    fn add_topic(&self, name: &str, partitions: i32, compacted: bool) {
        self.lock()
            .topics
            .entry(name.to_string())
            .or_insert_with(|| Topic {
                partitions: (0..partitions.max(1))
                    .map(|_| Partition::default())
                    .collect(),
                compacted,
                bytes: 0,
                readers: Vec::new(),
            });
    }

    /// A consumer of `topics` (its own group, from the oldest retained message) that can also
    /// produce.
    pub fn transport(self: &Arc<Self>, topics: &[&str]) -> MemoryTransport {
        let id = {
            let mut state = self.lock();
            let id = state.next_reader;
            state.next_reader += 1;
            for name in topics {
                if let Some(t) = state.topics.get_mut(*name) {
                    t.readers.push(id);
                }
            }
            id
        };
        MemoryTransport {
            broker: Arc::clone(self),
            id,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            stored: Mutex::new(BTreeMap::new()),
            turn: AtomicUsize::new(0),
        }
    }

    /// Every retained message of `topic`, partition by partition.
    pub fn messages(&self, topic: &str) -> Vec<Incoming> {
        self.lock()
            .topics
            .get(topic)
            .map(|t| {
                t.partitions
                    .iter()
                    .flat_map(|p| p.messages.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes retained in `topic` (what its readers have not all taken yet).
    pub fn retained_bytes(&self, topic: &str) -> usize {
        self.lock().topics.get(topic).map_or(0, |t| t.bytes)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `m` unless its topic is full; gives it back when it is.
    fn push(&self, m: Outgoing) -> Result<Option<Outgoing>, TransportError> {
        let mut state = self.lock();
        let t = state
            .topics
            .get_mut(&m.topic)
            .ok_or_else(|| TransportError::UnknownTopic(m.topic.clone()))?;
        let p = m
            .partition
            .unwrap_or_else(|| partition_for(&m.key, t.partitions.len() as i32));
        if p < 0 || p as usize >= t.partitions.len() {
            return Err(TransportError::UnknownTopic(format!("{}[{p}]", m.topic)));
        }
        let bounded = self.limit.filter(|_| !t.compacted);
        if let Some(limit) = bounded {
            if t.bytes > 0 && t.bytes + m.payload.len() + m.key.len() > limit {
                return Ok(Some(m));
            }
        }
        let part = &mut t.partitions[p as usize];
        if t.compacted {
            let key = m.key.as_slice();
            if let Some(i) = part
                .messages
                .iter()
                .position(|old| old.key.as_deref() == Some(key))
            {
                let old = part.messages.remove(i).expect("found");
                t.bytes -= size(&old);
            }
        }
        let incoming = Incoming {
            topic: m.topic,
            partition: p,
            offset: part.next_offset,
            key: Some(m.key),
            payload: Some(m.payload),
            headers: m.headers,
            timestamp_ms: None,
        };
        part.next_offset += 1;
        t.bytes += size(&incoming);
        let unread = bounded.is_some() && t.readers.is_empty();
        let name = unread.then(|| incoming.topic.clone());
        part.messages.push_back(incoming);
        if let Some(name) = name {
            state.trim(&name);
        }
        Ok(None)
    }
}

/// One group member on a [`MemoryBroker`].
pub struct MemoryTransport {
    broker: Arc<MemoryBroker>,
    id: usize,
    topics: Vec<String>,
    stored: Mutex<BTreeMap<(String, i32), i64>>,
    /// Which subscribed partition a read starts at: each gets its turn to be read first, so
    /// one busy partition does not starve the others.
    turn: AtomicUsize,
}

impl MemoryTransport {
    /// Positions stored so far (what a commit would write).
    pub fn stored(&self) -> BTreeMap<(String, i32), i64> {
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Messages in the subscribed topics not taken yet.
    pub fn unread(&self) -> usize {
        let state = self.broker.lock();
        let mut n = 0;
        for name in &self.topics {
            let Some(t) = state.topics.get(name) else {
                continue;
            };
            for (p, part) in t.partitions.iter().enumerate() {
                let at = state
                    .cursors
                    .get(&(self.id, name.clone(), p as i32))
                    .copied()
                    .unwrap_or(0);
                n += part.messages.len() - part.index_of(at);
            }
        }
        n
    }

    fn take(&self, max: usize) -> Vec<Incoming> {
        let mut state = self.broker.lock();
        let slots: Vec<(String, i32)> = self
            .topics
            .iter()
            .filter_map(|name| Some((name, state.topics.get(name)?.partitions.len())))
            .flat_map(|(name, n)| (0..n as i32).map(move |p| (name.clone(), p)))
            .collect();
        let mut out = Vec::new();
        if slots.is_empty() {
            return out;
        }
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % slots.len();
        for (name, p) in slots.iter().cycle().skip(first).take(slots.len()) {
            if out.len() >= max {
                break;
            }
            let cursor = (self.id, name.clone(), *p);
            let at = state.cursors.get(&cursor).copied().unwrap_or(0);
            let part = &state.topics[name].partitions[*p as usize];
            let taken: Vec<Incoming> = part
                .messages
                .iter()
                .skip(part.index_of(at))
                .take(max - out.len())
                .cloned()
                .collect();
            if let Some(last) = taken.last() {
                state.cursors.insert(cursor, last.offset + 1);
            }
            out.extend(taken);
        }
        if self.broker.limit.is_some() && !out.is_empty() {
            for name in &self.topics {
                state.trim(name);
            }
            drop(state);
            self.broker.freed.notify_waiters();
        }
        out
    }
}

impl Drop for MemoryTransport {
    /// A reader that goes away no longer holds its topics' messages.
    fn drop(&mut self) {
        let mut state = self.broker.lock();
        for name in &self.topics {
            if let Some(t) = state.topics.get_mut(name) {
                t.readers.retain(|r| *r != self.id);
            }
        }
        state.cursors.retain(|(r, _, _), _| *r != self.id);
        if self.broker.limit.is_some() {
            for name in &self.topics {
                state.trim(name);
            }
            drop(state);
            self.broker.freed.notify_waiters();
        }
    }
}

impl Transport for MemoryTransport {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<(), TransportError> {
        for m in batch {
            let mut pending = Some(m);
            while let Some(m) = pending.take() {
                // Registered before the check, so a read in between still wakes it.
                let room = self.broker.freed.notified();
                pending = self.broker.push(m)?;
                if pending.is_some() {
                    self.broker.arrived.notify_waiters();
                    room.await;
                }
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
            .topics
            .get(topic)
            .map(|t| t.partitions.len() as i32)
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

    /// A producer twice as fast as its reader is held at the limit: the topic never holds
    /// much more than it, every message arrives once and in order, and taken messages are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_topic_holds_its_sender_back_and_drops_what_was_read() {
        let broker = MemoryBroker::bounded(10_000);
        broker.create_topic("t", 2);
        let rx = broker.transport(&["t"]);
        let tx = broker.transport(&[]);
        let producer = tokio::spawn(async move {
            for i in 0..200u32 {
                let m = Outgoing::new("t", i.to_string(), vec![0u8; 936]);
                tx.send(vec![m.header("i", i.to_be_bytes())]).await.unwrap();
            }
        });
        let mut got: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        let mut most = 0;
        while got.values().map(Vec::len).sum::<usize>() < 200 {
            most = most.max(broker.retained_bytes("t"));
            for m in rx.recv(3, Duration::from_millis(50)).await.unwrap() {
                let i = u32::from_be_bytes(m.header("i").unwrap().try_into().unwrap());
                got.entry(m.partition).or_default().push(i);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        producer.await.unwrap();
        assert!(most <= 11_000, "{most} bytes held");
        assert!(got.values().all(|v| v.is_sorted()), "{got:?}");
        assert_eq!(got.values().map(Vec::len).sum::<usize>(), 200);
        assert_eq!(broker.retained_bytes("t"), 0);
        assert_eq!(rx.unread(), 0);
    }

    /// A topic two readers share keeps a message until both took it; one that goes away
    /// holds nothing back.
    #[tokio::test]
    async fn a_message_stays_until_every_reader_took_it() {
        let broker = MemoryBroker::bounded(1 << 20);
        broker.create_topic("t", 1);
        let (a, b) = (broker.transport(&["t"]), broker.transport(&["t"]));
        a.send(vec![
            Outgoing::new("t", "k", vec![1]),
            Outgoing::new("t", "k", vec![2]),
        ])
        .await
        .unwrap();
        assert_eq!(a.recv(10, Duration::ZERO).await.unwrap().len(), 2);
        assert_eq!((broker.messages("t").len(), b.unread()), (2, 2));
        assert_eq!(b.recv(1, Duration::ZERO).await.unwrap()[0].offset, 0);
        assert_eq!(broker.messages("t").len(), 1);
        drop(b);
        assert!(broker.messages("t").is_empty());
        // Nobody reads it: nothing is kept.
        broker.create_topic("unread", 1);
        a.send(vec![Outgoing::new("unread", "k", vec![1])])
            .await
            .unwrap();
        assert_eq!(broker.retained_bytes("unread"), 0);
    }

    #[tokio::test]
    async fn a_compacted_topic_keeps_the_newest_message_per_key() {
        let broker = MemoryBroker::bounded(10);
        broker.create_compacted_topic("state", 1);
        let t = broker.transport(&[]);
        for (k, v) in [("a", 1u8), ("b", 2), ("a", 3)] {
            t.send(vec![Outgoing::new("state", k, vec![v; 40])])
                .await
                .unwrap();
        }
        let kept: Vec<(Vec<u8>, u8, i64)> = t
            .read_all("state")
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.key.unwrap(), m.payload.unwrap()[0], m.offset))
            .collect();
        assert_eq!(kept, vec![(b"b".to_vec(), 2, 1), (b"a".to_vec(), 3, 2)]);
    }
}
