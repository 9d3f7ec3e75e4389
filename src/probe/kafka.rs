//! One shared librdkafka client per Kafka source: topic metadata (cached), batched offset
//! queries, other groups' commits, and a record reader that `assign()`s partitions at given
//! offsets, reads one record from each with `read_committed`, and never commits.
//!
//! Every call here blocks (librdkafka is synchronous): probes call them from
//! `spawn_blocking`, never from the async workers, and a semaphore bounds how many run at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};
use tokio::sync::Semaphore;

use super::kafka_admin::{self, AdminQueue, CommitMap, Handle, OffsetMap, OffsetSpec};
use super::{ErrorReason, ProbeError};
use crate::model::KafkaSource;

/// Topic metadata is re-read at most this often (and sooner when a topic is missing).
const METADATA_TTL: Duration = Duration::from_secs(30);
/// Blocking calls of one source that may run at once.
const MAX_CONCURRENT_CALLS: usize = 64;

/// When a record was written, as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTime {
    pub offset: i64,
    pub unix_ms: i64,
    pub log_append_time: bool,
}

/// What reading "the first record at or after offset N" found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstRecord {
    Record(RecordTime),
    /// Nothing readable before the last stable offset (only transaction markers or aborted
    /// records between the offset and the end).
    EndOfPartition,
}

pub struct KafkaClient {
    source: String,
    /// Declared before `client`: the result queue must be destroyed before the client.
    admin: AdminQueue,
    /// `Some` until drop, where a tainted client is leaked instead of destroyed (see
    /// `AdminQueue::tainted`).
    client: Option<BaseConsumer>,
    /// The reader's assignment is one piece of state: one read at a time.
    reader: Mutex<()>,
    /// Read requests waiting for whoever holds `reader` next.
    pending: Mutex<Vec<ReadRequest>>,
    metadata: Mutex<Option<(Instant, TopicPartitions)>>,
    pub slots: Semaphore,
    /// Cleared when the cluster does not answer DescribeGroups (some brokers and the mock
    /// cluster), so that we stop asking.
    members_supported: AtomicBool,
}

impl KafkaClient {
    pub fn new(source: &str, spec: &KafkaSource) -> Result<Self, ProbeError> {
        let mut config = ClientConfig::new();
        for (key, value) in &spec.properties {
            config.set(key, value.expose());
        }
        // Set last so that nothing above can override them: lagbudget reads with its own group
        // id, never joins the measured group, never commits, and reads only committed data.
        let reader_group = format!(
            "lagbudget-reader-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        );
        config
            .set("bootstrap.servers", &spec.brokers)
            .set("client.id", "lagbudget")
            .set("group.id", &reader_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", "65536")
            .set("fetch.max.bytes", "4194304")
            .set("queued.max.messages.kbytes", "4096");
        let client: BaseConsumer = config.create().map_err(|e| {
            // librdkafka's message repeats the property's value, which may be a credential
            // under a misspelt key: name the key only.
            let why = match &e {
                KafkaError::ClientConfig(_, description, key, _value) => {
                    format!("property `{key}`: {description}")
                }
                other => other.to_string(),
            };
            ProbeError::new(
                ErrorReason::Connect,
                format!("sources.{source}: cannot create the Kafka client: {why}"),
            )
        })?;
        let admin = AdminQueue::new(Handle(client.client().native_ptr())).map_err(|e| {
            ProbeError::new(
                ErrorReason::Connect,
                format!("sources.{source}: cannot create the Kafka client: {e}"),
            )
        })?;
        Ok(Self {
            source: source.to_owned(),
            admin,
            client: Some(client),
            reader: Mutex::new(()),
            pending: Mutex::new(Vec::new()),
            metadata: Mutex::new(None),
            slots: Semaphore::new(MAX_CONCURRENT_CALLS),
            members_supported: AtomicBool::new(true),
        })
    }

    fn client(&self) -> &BaseConsumer {
        // Taken only in `drop`.
        self.client.as_ref().expect("client present until drop")
    }

    fn handle(&self) -> Handle {
        Handle(self.client().client().native_ptr())
    }

    /// Partitions of every topic, from a cache refreshed every 30 s, or at once when `need`
    /// names a topic the cache does not know (refreshed at most every 2 s for that reason).
    pub fn topics(
        &self,
        need: &[String],
        timeout: Duration,
    ) -> Result<HashMap<String, Vec<i32>>, ProbeError> {
        let mut cached = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        let fresh_enough = |at: &Instant, topics: &HashMap<String, Vec<i32>>| {
            let age = at.elapsed();
            age < METADATA_TTL
                && (need.iter().all(|t| topics.contains_key(t)) || age < Duration::from_secs(2))
        };
        if let Some((at, topics)) = cached.as_ref() {
            if fresh_enough(at, topics) {
                return Ok(topics.clone());
            }
        }
        let metadata = self
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| kafka_error("reading topic metadata", &e))?;
        let mut topics = HashMap::new();
        for topic in metadata.topics() {
            if topic.error().is_some() || topic.name().starts_with("__") {
                continue;
            }
            let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            topics.insert(topic.name().to_owned(), partitions);
        }
        *cached = Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// One end of each partition, in one batched request per leader.
    pub fn offsets(
        &self,
        partitions: &[(String, i32)],
        spec: OffsetSpec,
        timeout: Duration,
    ) -> Result<OffsetMap, ProbeError> {
        kafka_admin::list_offsets(self.handle(), &self.admin, partitions, spec, timeout)
            .map_err(|e| admin_error("listing offsets", &e))
    }

    /// The committed offsets of another group, without joining it.
    pub fn committed(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<CommitMap, ProbeError> {
        kafka_admin::group_offsets(self.handle(), &self.admin, group, partitions, timeout)
            .map_err(|e| admin_error("reading the group's committed offsets", &e))
    }

    /// Members of `group`, or `None` when the cluster does not tell (then we stop asking).
    pub fn members(&self, group: &str, timeout: Duration) -> Option<usize> {
        if !self.members_supported.load(Ordering::Relaxed) {
            return None;
        }
        match self.client().fetch_group_list(Some(group), timeout) {
            Ok(list) => list.groups().first().map(|g| g.members().len()),
            Err(e) => {
                let text = e.to_string();
                if text.contains("nsupported") || text.contains("not supported") {
                    tracing::info!(
                        source = %self.source,
                        "the cluster does not answer DescribeGroups; group members are not exported"
                    );
                    self.members_supported.store(false, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// Reads the first record at or after each partition's `from` offset. A partition whose
    /// reader position reaches `stable` without a record has nothing readable (only
    /// transaction markers or aborted records) and reads as `EndOfPartition`.
    ///
    /// Requests from concurrent probes are served together: whoever gets the reader drains
    /// every pending request and reads the union in one assignment, so a thousand groups that
    /// need a read each cost a few assignments, not a thousand.
    pub fn first_records(
        &self,
        wanted: &[Wanted],
        deadline: Instant,
    ) -> Result<HashMap<(String, i32), FirstRecord>, ProbeError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ReadRequest {
                wanted: wanted.to_vec(),
                deadline,
                reply,
            });
        loop {
            if let Ok(result) = answer.try_recv() {
                return result;
            }
            if let Ok(_reading) = self.reader.try_lock() {
                let batch =
                    std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
                self.serve(batch);
                continue;
            }
            match answer.recv_timeout(Duration::from_millis(20)) {
                Ok(result) => return result,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(ProbeError::new(
                        ErrorReason::Timeout,
                        "the reader dropped the request",
                    ));
                }
            }
            if Instant::now() > deadline + Duration::from_millis(200) {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "no record read before the deadline (the reader was busy)",
                ));
            }
        }
    }

    /// Serves a batch of requests, in rounds: a partition can be assigned at one offset at a
    /// time, so a request that wants another offset of a partition already in the round waits
    /// for the next one.
    fn serve(&self, mut requests: Vec<ReadRequest>) {
        while !requests.is_empty() {
            let mut round_keys: HashMap<(String, i32), (i64, i64)> = HashMap::new();
            let (mut round, mut deferred) = (Vec::new(), Vec::new());
            for request in requests {
                let fits = request.wanted.iter().all(|w| {
                    round_keys
                        .get(&(w.topic.clone(), w.partition))
                        .is_none_or(|(from, _)| *from == w.from)
                });
                if fits {
                    for w in &request.wanted {
                        let entry = round_keys
                            .entry((w.topic.clone(), w.partition))
                            .or_insert((w.from, w.stable));
                        // The later view of the end wins: never conclude "nothing readable"
                        // before the newest known end.
                        entry.1 = entry.1.max(w.stable);
                    }
                    round.push(request);
                } else {
                    deferred.push(request);
                }
            }
            let wanted: Vec<Wanted> = round_keys
                .into_iter()
                .map(|((topic, partition), (from, stable))| Wanted {
                    topic,
                    partition,
                    from,
                    stable,
                })
                .collect();
            let deadline = round
                .iter()
                .map(|r| r.deadline)
                .max()
                .unwrap_or_else(Instant::now);
            let (found, failure) = match self.read(&wanted, deadline) {
                Ok(found) => (found, None),
                Err((found, error)) => (found, Some(error)),
            };
            // Whatever happened, leave no assignment behind: the next read starts clean.
            let _ = self.client().unassign();
            for request in round {
                let mut mine = HashMap::with_capacity(request.wanted.len());
                let mut missing = false;
                for w in &request.wanted {
                    let key = (w.topic.clone(), w.partition);
                    match found.get(&key) {
                        Some(first) => {
                            mine.insert(key, *first);
                        }
                        None => missing = true,
                    }
                }
                let result = match (&failure, missing) {
                    (Some(error), true) => Err(error.clone()),
                    _ => Ok(mine),
                };
                // The requester may have given up waiting; then nobody needs the answer.
                let _ = request.reply.send(result);
            }
            requests = deferred;
        }
    }

    /// Reads every partition of `wanted` at once. On failure, what was read so far comes back
    /// with the error.
    fn read(
        &self,
        wanted: &[Wanted],
        deadline: Instant,
    ) -> Result<FoundRecords, (FoundRecords, ProbeError)> {
        let mut list = TopicPartitionList::with_capacity(wanted.len());
        for w in wanted {
            list.add_partition_offset(&w.topic, w.partition, Offset::Offset(w.from))
                .map_err(|e| (HashMap::new(), kafka_error("preparing a read", &e)))?;
        }
        self.client().assign(&list).map_err(|e| {
            (
                HashMap::new(),
                kafka_error("assigning partitions to the reader", &e),
            )
        })?;
        let mut pending: HashMap<(String, i32), i64> = wanted
            .iter()
            .map(|w| ((w.topic.clone(), w.partition), w.stable))
            .collect();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut last_error = None;
        while !pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                let ((topic, partition), _) = pending
                    .iter()
                    .next()
                    .map_or(((String::new(), 0), 0), |(k, v)| (k.clone(), *v));
                let why = last_error.map_or_else(String::new, |e: String| format!(" ({e})"));
                let error = ProbeError::new(
                    ErrorReason::Timeout,
                    format!(
                        "{} partitions unread at the deadline, such as {topic}/{partition}{why}",
                        pending.len()
                    ),
                );
                return Err((found, error));
            }
            match self
                .client()
                .poll((deadline - now).min(Duration::from_millis(50)))
            {
                Some(Ok(message)) => {
                    let key = (message.topic().to_owned(), message.partition());
                    if pending.remove(&key).is_none() {
                        continue;
                    }
                    let (unix_ms, log_append_time) = match message.timestamp() {
                        Timestamp::CreateTime(ms) => (ms, false),
                        Timestamp::LogAppendTime(ms) => (ms, true),
                        Timestamp::NotAvailable => {
                            let error = ProbeError::new(
                                ErrorReason::Decode,
                                format!(
                                    "records of {} carry no timestamp (message format v0)",
                                    key.0
                                ),
                            );
                            return Err((found, error));
                        }
                    };
                    let time = RecordTime {
                        offset: message.offset(),
                        unix_ms,
                        log_append_time,
                    };
                    found.insert(key, FirstRecord::Record(time));
                }
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {
                    // Quiet: partitions whose position reached the stable end had nothing to
                    // deliver. (End-of-partition events name no topic, so positions decide.)
                    let positions = match self.client().position() {
                        Ok(positions) => positions,
                        Err(e) => {
                            return Err((found, kafka_error("reading the reader's positions", &e)));
                        }
                    };
                    for element in positions.elements() {
                        let key = (element.topic().to_owned(), element.partition());
                        let at_end = match (pending.get(&key), element.offset().to_raw()) {
                            (Some(stable), Some(position)) => position >= *stable,
                            _ => false,
                        };
                        if at_end {
                            pending.remove(&key);
                            found.insert(key, FirstRecord::EndOfPartition);
                        }
                    }
                }
            }
        }
        Ok(found)
    }
}

impl Drop for KafkaClient {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.admin.is_tainted() {
            tracing::debug!(source = %self.source, "leaking a Kafka client with requests in flight");
            std::mem::forget(client);
            return;
        }
        // Destroying a librdkafka client blocks until its threads end; this drop may run on an
        // async worker (reload, shutdown), so the destruction gets a thread of its own.
        let spawned = std::thread::Builder::new()
            .name("lagbudget-kafka-close".into())
            .spawn(move || drop(client));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "closing a Kafka client inline");
        }
    }
}

type FoundRecords = HashMap<(String, i32), FirstRecord>;

/// Partition ids by topic name.
pub type TopicPartitions = HashMap<String, Vec<i32>>;

/// One probe's wish to read, and where to send what was found.
struct ReadRequest {
    wanted: Vec<Wanted>,
    deadline: Instant,
    reply: mpsc::SyncSender<Result<FoundRecords, ProbeError>>,
}

/// A partition to read: from which offset, and its last stable offset.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub stable: i64,
}

/// Maps a client error: transport problems are `connect`, time-outs `timeout`.
fn kafka_error(what: &str, error: &KafkaError) -> ProbeError {
    let text = error.to_string();
    let reason = if text.contains("imed out") {
        ErrorReason::Timeout
    } else {
        ErrorReason::Connect
    };
    ProbeError::new(reason, format!("{what}: {text}"))
}

fn admin_error(what: &str, text: &str) -> ProbeError {
    let reason = if text.contains("imed out") {
        ErrorReason::Timeout
    } else if text.contains("uthorization") {
        // The cluster answered and refused: a missing ACL, like a missing SQL grant.
        ErrorReason::Query
    } else {
        ErrorReason::Connect
    };
    ProbeError::new(reason, format!("{what}: {text}"))
}
