//! Canary markers in Kafka: the marker as JSON, produced to a topic keyed by instance, and read
//! back by a consumer of the topic.
//!
//! lagbudget's own topic, for a bare `{source}`, is `lagbudget.canary`, shared by every instance
//! and probe (each reader keeps only its own instance's and probe's markers); the writer
//! creates it with one partition and an hour's retention when missing, so nothing piles up (a
//! cluster that refuses CreateTopics must create it at the first produce, with
//! `auto.create.topics.enable`, or have it created beforehand).
//!
//! The reader is a consumer of its own (never the measured group's): it `assign()`s every
//! partition of the topic at its last stable offset when it starts listening, so every marker
//! produced after that arrives, and it never commits. Partitions added to the topic later are
//! not read until the daemon reloads. Every librdkafka call blocks, so it runs on
//! `spawn_blocking`; clients are destroyed on a thread of their own, as the source's client is.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::{Instant, timeout_at};

use super::config::{Canary, ReadTarget, WriteTarget};
use super::{Marker, seq_of_marker};
use crate::probe::kafka::{KafkaClient, kafka_error};
use crate::probe::kafka_admin::OffsetSpec;
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// lagbudget's own topic of markers.
pub const MANAGED_TOPIC: &str = "lagbudget.canary";
/// How long lagbudget's own topic keeps markers.
const MANAGED_RETENTION_MS: &str = "3600000";
/// How long one read waits for markers still on their way, at most: a read drains what has
/// arrived, it does not wait for the next marker.
const DRAIN: Duration = Duration::from_millis(250);

fn client(handle: &SourceHandle) -> Result<Arc<KafkaClient>, ProbeError> {
    match handle {
        SourceHandle::Kafka(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "a kafka canary target needs a kafka source",
        )),
    }
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(crate::clock::instant())
        .max(Duration::from_millis(1))
}

/// Drops a librdkafka client on a thread of its own: destroying one blocks until its threads
/// end, and this may run on an async worker.
fn close_later<T: Send + 'static>(client: T) {
    let _ = std::thread::Builder::new()
        .name("lagbudget-kafka-close".into())
        .spawn(move || drop(client));
}

/// Produces markers to a topic.
pub struct KafkaWriter {
    source: Arc<KafkaClient>,
    topic: String,
    managed: bool,
    /// Whether lagbudget's own topic was looked after (at the first write).
    topic_ensured: bool,
    /// Created at the first write.
    producer: Option<FutureProducer>,
}

impl KafkaWriter {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let (topic, managed) = match &spec.write.target {
            WriteTarget::KafkaTopic(topic) => (topic.clone(), false),
            _ => (MANAGED_TOPIC.to_owned(), true),
        };
        Ok(Self {
            source: client(handle)?,
            topic,
            managed,
            topic_ensured: false,
            producer: None,
        })
    }

    fn producer(&mut self) -> Result<&FutureProducer, ProbeError> {
        if self.producer.is_none() {
            let mut config = self.source.connection_config();
            // A marker not delivered within 10 s is late enough to count as lost: the next one
            // replaces it.
            config
                .set("linger.ms", "0")
                .set("message.timeout.ms", "10000")
                .set("acks", "all");
            let producer: FutureProducer = config.create().map_err(|e| {
                kafka_error(
                    &format!("sources.{}: cannot create the canary producer", self.source.source()),
                    &e,
                )
            })?;
            self.producer = Some(producer);
        }
        Ok(self.producer.as_ref().expect("created above"))
    }

    /// Creates lagbudget's own topic when it is missing (one partition, an hour's retention).
    async fn ensure_topic(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        let config = self.source.connection_config();
        let admin: AdminClient<DefaultClientContext> = config
            .create()
            .map_err(|e| kafka_error("creating an admin client", &e))?;
        let topic = NewTopic::new(MANAGED_TOPIC, 1, TopicReplication::Fixed(-1))
            .set("retention.ms", MANAGED_RETENTION_MS);
        let options = AdminOptions::new().operation_timeout(Some(left(deadline)));
        let created = timeout_at(deadline, admin.create_topics([&topic], &options)).await;
        close_later(admin);
        match created {
            Ok(Ok(results)) => match results.into_iter().next() {
                Some(Ok(_)) | None => Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
                Some(Err((_, code))) => Err(ProbeError::new(
                    ErrorReason::Query,
                    format!("creating topic {MANAGED_TOPIC}: {code}"),
                )),
            },
            Ok(Err(e)) => Err(kafka_error(&format!("creating topic {MANAGED_TOPIC}"), &e)),
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                format!("creating topic {MANAGED_TOPIC} did not complete in time"),
            )),
        }
    }

    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        if self.managed && !self.topic_ensured {
            // Once: a cluster that does not take CreateTopics (or this user may not) may still
            // create the topic at the first produce (auto.create.topics.enable); if neither
            // does, the produce fails and says so.
            self.topic_ensured = true;
            if let Err(error) = self.ensure_topic(deadline).await {
                tracing::info!(
                    source = %self.source.source(),
                    error = %error.message,
                    "could not create the canary topic {MANAGED_TOPIC}; producing to it anyway"
                );
            }
        }
        let payload = marker.json();
        let topic = self.topic.clone();
        let producer = self.producer()?;
        let record = FutureRecord::to(&topic).key(marker.instance).payload(&payload);
        match producer.send(record, left(deadline)).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(produce_error(&topic, &error)),
        }
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let source = self.source.clone();
        let topic = self.topic.clone();
        let managed = self.managed;
        let timeout = left(deadline);
        self.source.blocking("reading topic metadata", deadline, move || {
            let topics = source.topics(std::slice::from_ref(&topic), timeout)?;
            Ok(match (topics.partitions.get(&topic), topics.errors.get(&topic)) {
                (Some(partitions), _) => format!(
                    "markers are produced to topic {topic} ({} partitions), keyed by instance",
                    partitions.len()
                ),
                (None, _) if managed => {
                    format!("markers are produced to topic {topic}, created at the first write")
                }
                (None, Some(error)) => {
                    return Err(ProbeError::new(
                        ErrorReason::Query,
                        format!("topic {topic}: {error}"),
                    ));
                }
                (None, None) => {
                    return Err(ProbeError::new(
                        ErrorReason::Query,
                        format!("topic {topic} does not exist"),
                    ));
                }
            })
        })
        .await
    }
}

impl Drop for KafkaWriter {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            close_later(producer);
        }
    }
}

fn produce_error(topic: &str, error: &KafkaError) -> ProbeError {
    let what = format!("producing to topic {topic}");
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => ProbeError::new(
            ErrorReason::Timeout,
            format!("{what}: not delivered in time"),
        ),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            ProbeError::new(ErrorReason::Query, format!("{what}: the topic does not exist"))
        }
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            ProbeError::new(ErrorReason::Query, format!("{what}: not authorized"))
        }
        _ => kafka_error(&what, error),
    }
}

/// Consumes markers from a topic.
pub struct KafkaReader {
    source: Arc<KafkaClient>,
    topic: String,
    group: String,
    instance: String,
    probe: String,
    /// Assigned by `listen`.
    consumer: Option<Arc<BaseConsumer>>,
    /// The highest seq of this instance's and probe's markers received so far.
    highest: Option<i64>,
}

impl KafkaReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let (topic, group) = match &spec.read.target {
            ReadTarget::KafkaTopic { topic, group } => (topic.clone(), group.clone()),
            _ => (
                MANAGED_TOPIC.to_owned(),
                format!("lagbudget-canary-{}", spec.instance),
            ),
        };
        Ok(Self {
            source: client(handle)?,
            topic,
            group,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
            consumer: None,
            highest: None,
        })
    }

    /// Assigns every partition of the topic at its last stable offset: every marker produced
    /// from now on arrives.
    pub async fn listen(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        let source = self.source.clone();
        let topic = self.topic.clone();
        let group = self.group.clone();
        let timeout = left(deadline);
        let consumer = self.source.blocking("subscribing to the canary topic", deadline, move || {
            let topics = source.topics(std::slice::from_ref(&topic), timeout)?;
            let partitions = match (topics.partitions.get(&topic), topics.errors.get(&topic)) {
                (Some(partitions), _) => partitions.clone(),
                (None, Some(error)) => {
                    return Err(ProbeError::new(
                        ErrorReason::Query,
                        format!("topic {topic}: {error}"),
                    ));
                }
                (None, None) => {
                    return Err(ProbeError::new(
                        ErrorReason::Query,
                        format!("topic {topic} does not exist (yet)"),
                    ));
                }
            };
            let wanted: Vec<(String, i32)> =
                partitions.iter().map(|&p| (topic.clone(), p)).collect();
            let ends = source.offsets(&wanted, OffsetSpec::LastStable, timeout)?;
            let mut list = TopicPartitionList::with_capacity(wanted.len());
            for key in &wanted {
                let end = match ends.get(key) {
                    Some(Ok(end)) => *end,
                    Some(Err(error)) => {
                        return Err(ProbeError::new(
                            ErrorReason::Query,
                            format!("the end of {}/{}: {error}", key.0, key.1),
                        ));
                    }
                    None => {
                        return Err(ProbeError::new(
                            ErrorReason::Query,
                            format!("no end offset for {}/{}", key.0, key.1),
                        ));
                    }
                };
                list.add_partition_offset(&key.0, key.1, Offset::Offset(end))
                    .map_err(|e| kafka_error("preparing the assignment", &e))?;
            }
            let mut config = source.connection_config();
            // Its own group, set last so nothing overrides it; it never commits.
            config
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "latest")
                .set("fetch.wait.max.ms", "50");
            let consumer: BaseConsumer = config
                .create()
                .map_err(|e| kafka_error("creating the canary consumer", &e))?;
            if let Err(e) = consumer.assign(&list) {
                close_later(consumer);
                return Err(kafka_error("assigning the canary topic", &e));
            }
            Ok(consumer)
        })
        .await?;
        if let Some(old) = self.consumer.replace(Arc::new(consumer)) {
            close_later(old);
        }
        Ok(())
    }

    /// Drains what has arrived (waiting at most a quarter of a second for more) and returns
    /// the highest seq of this instance's and probe's markers received so far.
    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let Some(consumer) = self.consumer.clone() else {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                format!("not listening to topic {} yet", self.topic),
            ));
        };
        let until = deadline
            .min(crate::clock::instant() + DRAIN)
            .into_std();
        let instance = self.instance.clone();
        let probe = self.probe.clone();
        let drained = self.source.blocking("reading the canary topic", deadline, move || {
            drain(&consumer, until, &instance, &probe)
        })
        .await?;
        if let Some(seq) = drained {
            self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        }
        Ok(self.highest)
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let source = self.source.clone();
        let topic = self.topic.clone();
        let group = self.group.clone();
        let timeout = left(deadline);
        self.source.blocking("reading topic metadata", deadline, move || {
            let topics = source.topics(std::slice::from_ref(&topic), timeout)?;
            match (topics.partitions.get(&topic), topics.errors.get(&topic)) {
                (Some(partitions), _) => Ok(format!(
                    "topic {topic} has {} partitions; read by a consumer of group {group} \
                     that never commits",
                    partitions.len()
                )),
                (None, Some(error)) => Err(ProbeError::new(
                    ErrorReason::Query,
                    format!("topic {topic}: {error}"),
                )),
                (None, None) if topic == MANAGED_TOPIC => Ok(format!(
                    "topic {topic} does not exist yet; the canary's writer creates it"
                )),
                (None, None) => Err(ProbeError::new(
                    ErrorReason::Query,
                    format!("topic {topic} does not exist"),
                )),
            }
        })
        .await
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            close_later(consumer);
        }
    }
}

/// Polls until nothing more arrives (or `until`), returning the highest seq of this instance's
/// and probe's markers among the records. A consumer error with nothing received fails the
/// read: the view is unknown, not behind.
fn drain(
    consumer: &BaseConsumer,
    until: std::time::Instant,
    instance: &str,
    probe: &str,
) -> Result<Option<i64>, ProbeError> {
    let mut highest: Option<i64> = None;
    let mut received = false;
    let mut error = None;
    loop {
        let now = crate::clock::std_instant();
        if now >= until {
            break;
        }
        match consumer.poll((until - now).min(Duration::from_millis(50))) {
            Some(Ok(message)) => {
                received = true;
                let seq = message
                    .payload()
                    .and_then(|payload| serde_json::from_slice::<serde_json::Value>(payload).ok())
                    .and_then(|json| seq_of_marker(&json, instance, probe));
                if let Some(seq) = seq {
                    highest = Some(highest.map_or(seq, |h| h.max(seq)));
                }
            }
            Some(Err(e)) => error = Some(e),
            None => break,
        }
    }
    match error {
        Some(e) if !received => Err(kafka_error("consuming the canary topic", &e)),
        _ => Ok(highest),
    }
}
