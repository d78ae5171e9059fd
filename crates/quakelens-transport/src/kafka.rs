//! Kafka through librdkafka. Consumers store offsets only when a stage says its outputs are
//! acknowledged (`enable.auto.offset.store=false`); stored offsets are committed in the
//! background, synchronously before partitions are revoked, and on shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{backoff, Incoming, Outgoing, Position, Revoked, Transport, TransportError};

/// How long failed deliveries are sent again before `send` gives up.
const RESEND_FOR: Duration = Duration::from_secs(120);

/// Whether a failed delivery may succeed if sent again: not when the message or topic itself
/// is refused.
fn resendable(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
        )
    )
}

/// Connection settings shared by every service.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group (one per service kind; members share partitions).
    pub group: String,
    /// Extra librdkafka properties (`key=value`), applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("quakelens-{}", self.group))
            // Largest message we produce (a zstd Arrow IPC batch of windows) stays well under it.
            .set("message.max.bytes", "4000000")
            .set("reconnect.backoff.max.ms", "2000");
        c
    }

    /// Applies the user's properties to the client they belong to, keeping consumer-only ones
    /// off the producer and producer-only ones off the consumer (librdkafka warns about both).
    fn apply_overrides(&self, c: &mut ClientConfig, consumer: bool) {
        for (k, v) in &self.properties {
            if property_applies(k, consumer) {
                c.set(k, v);
            }
        }
    }
}

/// Whether librdkafka property `key` belongs on a consumer (`consumer`) or on a producer.
fn property_applies(key: &str, consumer: bool) -> bool {
    const CONSUMER_ONLY: [&str; 8] = [
        "statistics.interval.ms",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "queued.max.messages.kbytes",
        "fetch.max.bytes",
        "partition.assignment.strategy",
    ];
    const PRODUCER_ONLY: [&str; 8] = [
        "enable.idempotence",
        "acks",
        "linger.ms",
        "message.timeout.ms",
        "compression.type",
        "batch.size",
        "retries",
        "message.send.max.retries",
    ];
    if consumer {
        !(PRODUCER_ONLY.contains(&key) || key.starts_with("queue.buffering."))
    } else {
        !(CONSUMER_ONLY.contains(&key) || key.starts_with("group."))
    }
}

/// Records revocations for the stage, commits stored offsets before partitions leave, and keeps
/// the consumer lag librdkafka's statistics report.
struct GroupContext {
    revoked: Mutex<Revoked>,
    lag: Mutex<Vec<PartitionLag>>,
}

/// Messages between a partition's committed position and its high watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub messages: i64,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal partition; a lag of -1 means "not known (yet)".
                if partition >= 0 && p.consumer_lag >= 0 {
                    lag.push(PartitionLag {
                        topic: topic.clone(),
                        partition,
                        messages: p.consumer_lag,
                    });
                }
            }
        }
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored yet is the common harmless case.
                if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                    tracing::warn!("commit before revoke failed: {e}");
                }
            }
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            for e in list.elements() {
                revoked.push((e.topic().to_string(), e.partition()));
            }
            tracing::info!(partitions = list.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let parts: Vec<String> = list
                .elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect();
            tracing::info!(assigned = %parts.join(","), "partitions assigned");
        }
    }
}

/// A service's connection: a consumer in its group (when it reads) and an idempotent producer.
pub struct KafkaTransport {
    cfg: KafkaConfig,
    consumer: Option<StreamConsumer<GroupContext>>,
    producer: FutureProducer,
    stored: Mutex<BTreeMap<(String, i32), i64>>,
    metadata_timeout: Duration,
}

impl KafkaTransport {
    /// Queues every message, then waits for each delivery report.
    async fn send_once(
        &self,
        batch: &[&Outgoing],
    ) -> Result<Vec<Result<(), KafkaError>>, TransportError> {
        let mut pending = Vec::with_capacity(batch.len());
        for m in batch {
            let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
            for (k, v) in &m.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::to(&m.topic)
                .key(&m.key)
                .payload(&m.payload)
                .headers(headers);
            if let Some(p) = m.partition {
                record = record.partition(p);
            }
            let mut attempt = 0;
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                    Err((error, _)) => {
                        return Err(TransportError::Kafka {
                            what: format!("send to {}", m.topic),
                            error,
                        })
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for delivery in pending {
            out.push(match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => Err(error),
                Err(_) => return Err(TransportError::Closed),
            });
        }
        Ok(out)
    }

    /// Connects; subscribes to `inputs` unless it is empty (a pure producer such as `ingest`).
    pub fn connect(cfg: &KafkaConfig, inputs: &[&str]) -> Result<Arc<Self>, TransportError> {
        let mut p = cfg.client();
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "300000");
        cfg.apply_overrides(&mut p, false);
        let producer: FutureProducer = p.create().map_err(TransportError::kafka("producer"))?;
        let consumer = if inputs.is_empty() {
            None
        } else {
            let mut c = cfg.client();
            c.set("group.id", &cfg.group)
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000")
                .set("max.poll.interval.ms", "60000")
                // Bounded memory under a slow stage: librdkafka prefetches at most this much.
                .set("queued.max.messages.kbytes", "32768")
                .set("fetch.max.bytes", "8388608")
                // Statistics carry the per-partition consumer lag the metrics export.
                .set("statistics.interval.ms", "5000");
            cfg.apply_overrides(&mut c, true);
            let consumer: StreamConsumer<GroupContext> = c
                .create_with_context(GroupContext {
                    revoked: Mutex::new(Vec::new()),
                    lag: Mutex::new(Vec::new()),
                })
                .map_err(TransportError::kafka("consumer"))?;
            consumer
                .subscribe(inputs)
                .map_err(TransportError::kafka(format!("subscribe {inputs:?}")))?;
            Some(consumer)
        };
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            consumer,
            producer,
            stored: Mutex::new(BTreeMap::new()),
            metadata_timeout: Duration::from_secs(10),
        }))
    }

    fn consumer(&self) -> Result<&StreamConsumer<GroupContext>, TransportError> {
        self.consumer.as_ref().ok_or(TransportError::Closed)
    }

    /// The consumer lag of the assigned partitions, as of the last statistics (every 5 s).
    pub fn consumer_lag(&self) -> Vec<PartitionLag> {
        self.consumer
            .as_ref()
            .map(|c| {
                c.context()
                    .lag
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Waits until every queued message is delivered (shutdown of a pure producer).
    pub fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        self.producer
            .flush(timeout)
            .map_err(TransportError::kafka("flush"))
    }
}

fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> Incoming {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Incoming {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

impl Transport for KafkaTransport {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<(), TransportError> {
        // Deliveries that fail while a broker restarts (connection closed mid-request, an
        // unknown error from a broker going down) are sent again until this deadline: a
        // message may then be stored twice, which every consumer here already tolerates.
        let deadline = tokio::time::Instant::now() + RESEND_FOR;
        let mut todo: Vec<&Outgoing> = batch.iter().collect();
        let mut round = 0;
        loop {
            let mut failed = Vec::new();
            for (m, result) in todo.iter().zip(self.send_once(&todo).await?) {
                if let Err(error) = result {
                    if !resendable(&error) || tokio::time::Instant::now() >= deadline {
                        return Err(TransportError::Kafka {
                            what: format!("delivery to {}", m.topic),
                            error,
                        });
                    }
                    tracing::warn!(topic = %m.topic, %error, "delivery failed, sending again");
                    failed.push(*m);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(backoff(round)).await;
            round += 1;
            todo = failed;
        }
    }

    async fn recv(&self, max: usize, wait: Duration) -> Result<Vec<Incoming>, TransportError> {
        let consumer = self.consumer()?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while out.len() < max {
            // After the first message only drain what is already fetched.
            let until = if out.is_empty() {
                deadline
            } else {
                tokio::time::Instant::now() + Duration::from_millis(2)
            };
            match tokio::time::timeout_at(until, consumer.recv()).await {
                Ok(Ok(m)) => out.push(owned(&m)),
                Ok(Err(e)) => {
                    // Transient broker trouble: report what we have, librdkafka reconnects.
                    tracing::warn!("consume: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    fn store(&self, positions: &[Position]) -> Result<(), TransportError> {
        let consumer = self.consumer()?;
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        for p in positions {
            let key = (p.topic.clone(), p.partition);
            if stored.get(&key).is_some_and(|&o| o >= p.offset) {
                continue;
            }
            match consumer.store_offset(&p.topic, p.partition, p.offset - 1) {
                Ok(()) => {
                    stored.insert(key, p.offset);
                }
                // Revoked in the meantime: the new owner replays from the last commit.
                Err(KafkaError::StoreOffset(_)) => {}
                Err(error) => {
                    return Err(TransportError::Kafka {
                        what: format!("store {p}"),
                        error,
                    })
                }
            }
        }
        Ok(())
    }

    async fn commit(&self) -> Result<(), TransportError> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(TransportError::Kafka {
                what: "commit".into(),
                error,
            }),
        }
    }

    fn take_revoked(&self) -> Revoked {
        let Some(consumer) = &self.consumer else {
            return Vec::new();
        };
        let revoked = std::mem::take(
            &mut *consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if !revoked.is_empty() {
            let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
            for key in &revoked {
                stored.remove(key);
            }
        }
        revoked
    }

    async fn read_all(&self, topic: &str) -> Result<Vec<Incoming>, TransportError> {
        let parts = self.partitions(topic)?;
        let mut c = self.cfg.client();
        c.set("group.id", format!("{}-reader", self.cfg.group))
            .set("enable.auto.commit", "false");
        self.cfg.apply_overrides(&mut c, true);
        let topic = topic.to_string();
        let timeout = self.metadata_timeout;
        tokio::task::spawn_blocking(move || read_partitions(c, &topic, parts, timeout))
            .await
            .map_err(|_| TransportError::Closed)?
    }

    fn partitions(&self, topic: &str) -> Result<i32, TransportError> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.metadata_timeout)
            .map_err(TransportError::kafka(format!("metadata of {topic}")))?;
        match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            _ => Err(TransportError::UnknownTopic(topic.to_string())),
        }
    }
}

fn read_partitions(
    mut c: ClientConfig,
    topic: &str,
    parts: i32,
    timeout: Duration,
) -> Result<Vec<Incoming>, TransportError> {
    // The end of each partition is where a fetch reports it (partition EOF), not what
    // ListOffsets says: tansu 0.6.0's object-store engines answer ListOffsets(latest) with the
    // newest batch's first offset + 1, which hides every record of a multi-record batch but
    // its first.
    c.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().map_err(TransportError::kafka("reader"))?;
    let mut tpl = TopicPartitionList::new();
    let mut unread = std::collections::BTreeSet::new();
    for p in 0..parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(TransportError::kafka(format!("watermarks of {topic}[{p}]")))?;
        if high > low {
            unread.insert(p);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(TransportError::kafka("assign"))?;
        }
    }
    let mut out = Vec::new();
    if unread.is_empty() {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .map_err(TransportError::kafka(format!("assign {topic}")))?;
    let deadline = std::time::Instant::now() + timeout * 3;
    while !unread.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(TransportError::Kafka {
                what: format!("reading {topic} to its end"),
                error: KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(owned(&m)),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                unread.remove(&p);
            }
            Some(Err(e)) => tracing::warn!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(out)
}

/// Creates `topics` (name, partitions); existing ones are left alone.
pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), TransportError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(TransportError::kafka("admin client"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, parts)| NewTopic::new(name, *parts, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(TransportError::kafka("create topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(TransportError::Kafka {
                    what: format!("create topic {name}"),
                    error: KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

/// The committed position of `group` on every partition of `topic` (`None` = nothing committed).
pub fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>, TransportError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .map_err(TransportError::kafka("consumer"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(TransportError::kafka(format!(
            "committed offsets of {group}"
        )))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_go_to_the_client_they_belong_to() {
        for key in ["enable.idempotence", "acks", "queue.buffering.max.ms"] {
            assert!(property_applies(key, false), "{key} on the producer");
            assert!(!property_applies(key, true), "{key} off the consumer");
        }
        for key in ["session.timeout.ms", "group.instance.id"] {
            assert!(property_applies(key, true), "{key} on the consumer");
            assert!(!property_applies(key, false), "{key} off the producer");
        }
        for key in ["max.in.flight.requests.per.connection", "socket.timeout.ms"] {
            assert!(property_applies(key, true) && property_applies(key, false));
        }
    }

    #[test]
    fn broker_trouble_is_sent_again_but_refused_messages_are_not() {
        let failed = |code| KafkaError::MessageProduction(code);
        assert!(resendable(&failed(RDKafkaErrorCode::Unknown)));
        assert!(resendable(&failed(RDKafkaErrorCode::NotLeaderForPartition)));
        assert!(resendable(&failed(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!resendable(&failed(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(!resendable(&failed(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }
}
