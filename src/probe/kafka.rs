//! One shared librdkafka client per Kafka source: topic metadata (cached), batched offset
//! queries, other groups' commits, and a record reader that `assign()`s partitions at given
//! offsets, reads one record from each with `read_committed`, and never commits.
//!
//! Every call here blocks (librdkafka is synchronous): probes call them from
//! `spawn_blocking`, never from the async workers, and a semaphore bounds how many run at once.

pub mod config;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, Timestamp, TopicPartitionList};
use tokio::sync::{Semaphore, watch};

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
    /// The source's brokers and properties, for the canary's own producer and consumers.
    spec: KafkaSource,
    /// `Some` until drop. The result queue must be destroyed before the client.
    admin: Option<AdminQueue>,
    /// `Some` until drop, where a tainted client is leaked instead of destroyed (see
    /// `AdminQueue::tainted`).
    client: Option<BaseConsumer>,
    /// The reader's assignment is one piece of state: one read at a time.
    reader: Mutex<()>,
    /// Read requests waiting for whoever holds `reader` next.
    pending: Mutex<Vec<ReadRequest>>,
    metadata: Mutex<Option<(Instant, TopicMetadata)>>,
    pub slots: Arc<Semaphore>,
    /// Cleared when the cluster does not answer DescribeGroups (some brokers and the mock
    /// cluster), so that we stop asking.
    members_supported: AtomicBool,
    /// Sends `true` once the client is destroyed; dropped unsent when it is leaked instead.
    closed: Option<watch::Sender<bool>>,
}

impl KafkaClient {
    /// Runs blocking librdkafka work for this source on one of its call slots, by `deadline`.
    /// The permit moves into the job: if the caller gives up at its deadline, the slot stays
    /// taken until the blocking work has really ended.
    pub async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        deadline: tokio::time::Instant,
        call: impl FnOnce() -> Result<T, ProbeError> + Send + 'static,
    ) -> Result<T, ProbeError> {
        let slot = tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                ProbeError::new(
                    ErrorReason::PoolTimeout,
                    "every Kafka call slot of the source stayed busy until the deadline",
                )
            })?
            .map_err(|_| ProbeError::new(ErrorReason::Connect, "client closed"))?;
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            call()
        });
        match tokio::time::timeout_at(deadline, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProbeError::new(
                ErrorReason::Connect,
                format!("{what}: the blocking call failed"),
            )),
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                format!("{what} did not complete in time"),
            )),
        }
    }

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
            spec: spec.clone(),
            admin: Some(admin),
            client: Some(client),
            reader: Mutex::new(()),
            pending: Mutex::new(Vec::new()),
            metadata: Mutex::new(None),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)),
            members_supported: AtomicBool::new(true),
            closed: Some(watch::channel(false).0),
        })
    }

    /// Becomes `true` once this client has been dropped and destroyed (which happens on a
    /// thread of its own, after the last reference is gone). Its sender is dropped without
    /// sending when the client is leaked instead (see `Drop`), so a waiter learns either way.
    pub fn closed(&self) -> watch::Receiver<bool> {
        match &self.closed {
            Some(closed) => closed.subscribe(),
            // Taken only in `drop`.
            None => watch::channel(true).1,
        }
    }

    /// The source's connection settings (brokers and the user's properties), for a client of
    /// another shape: the canary's producer and its readers' consumers.
    pub fn connection_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.spec.properties {
            config.set(key, value.expose());
        }
        config
            .set("bootstrap.servers", &self.spec.brokers)
            .set("client.id", "lagbudget");
        config
    }

    /// The source's name, for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn client(&self) -> &BaseConsumer {
        // Taken only in `drop`.
        self.client.as_ref().expect("client present until drop")
    }

    fn admin(&self) -> &AdminQueue {
        // Taken only in `drop`.
        self.admin.as_ref().expect("admin queue present until drop")
    }

    fn handle(&self) -> Handle {
        Handle(self.client().client().native_ptr())
    }

    /// Partitions of every topic, from a cache refreshed every 30 s, or at once when `need`
    /// names a topic the cache does not know (refreshed at most every 2 s for that reason).
    /// Topics the metadata reports with an error are kept, with the error, so that a probe
    /// that selects them fails instead of silently measuring fewer partitions.
    pub fn topics(&self, need: &[String], timeout: Duration) -> Result<TopicMetadata, ProbeError> {
        let mut cached = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, topics)) = cached.as_ref() {
            let age = crate::clock::std_elapsed(*at);
            let knows_all = need.iter().all(|t| topics.knows(t));
            if age < METADATA_TTL && (knows_all || age < Duration::from_secs(2)) {
                return Ok(topics.clone());
            }
        }
        let metadata = self
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| kafka_error("reading topic metadata", &e))?;
        let mut topics = TopicMetadata::default();
        for topic in metadata.topics() {
            if topic.name().starts_with("__") {
                continue;
            }
            if let Some(error) = topic.error() {
                let text = rdkafka::error::RDKafkaErrorCode::from(error).to_string();
                topics.errors.insert(topic.name().to_owned(), text);
                continue;
            }
            let mut partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            topics
                .partitions
                .insert(topic.name().to_owned(), partitions);
        }
        *cached = Some((crate::clock::std_instant(), topics.clone()));
        Ok(topics)
    }

    /// One end of each partition, in one batched request per leader.
    pub fn offsets(
        &self,
        partitions: &[(String, i32)],
        spec: OffsetSpec,
        timeout: Duration,
    ) -> Result<OffsetMap, ProbeError> {
        kafka_admin::list_offsets(self.handle(), self.admin(), partitions, spec, timeout)
            .map_err(|e| admin_error("listing offsets", &e))
    }

    /// The committed offsets of another group, without joining it.
    pub fn committed(
        &self,
        group: &str,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<CommitMap, ProbeError> {
        kafka_admin::group_offsets(self.handle(), self.admin(), group, partitions, timeout)
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
                found: HashMap::new(),
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
            if crate::clock::std_instant() > deadline + Duration::from_millis(200) {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "no record read before the deadline (the reader was busy)",
                ));
            }
        }
    }

    /// Serves one round of the pending requests. A partition can be assigned at one offset at
    /// a time, so a request that wants another offset of a partition already in the round goes
    /// back to the queue for the next round. The round ends at the earliest deadline among its
    /// requests; a request answered in full is answered at once, one with time left and
    /// partitions still unread goes back to the queue with what it has.
    fn serve(&self, requests: Vec<ReadRequest>) {
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
                    // The later view of the end wins: never conclude "nothing readable" before
                    // the newest known end.
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
            .min()
            .unwrap_or_else(crate::clock::std_instant);
        let (found, failure) = match self.read(&wanted, deadline) {
            Ok(found) => (found, None),
            Err((found, error)) => (found, Some(error)),
        };
        // Whatever happened, leave no assignment behind: the next read starts clean.
        let _ = self.client().unassign();
        let now = crate::clock::std_instant();
        for mut request in round {
            let mut missing = Vec::new();
            for w in request.wanted.drain(..) {
                let key = (w.topic.clone(), w.partition);
                match found.get(&key) {
                    Some(first) => {
                        request.found.insert(key, *first);
                    }
                    None => missing.push(w),
                }
            }
            if missing.is_empty() {
                let _ = request.reply.send(Ok(std::mem::take(&mut request.found)));
            } else if now >= request.deadline {
                let error = failure.clone().unwrap_or_else(|| {
                    ProbeError::new(
                        ErrorReason::Timeout,
                        format!("{} partitions unread at the deadline", missing.len()),
                    )
                });
                // The requester may have given up waiting; then nobody needs the answer.
                let _ = request.reply.send(Err(error));
            } else {
                request.wanted = missing;
                deferred.push(request);
            }
        }
        if !deferred.is_empty() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(deferred);
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
        // A pause outlives the assignment in librdkafka: clear any left by an earlier read
        // (this one pauses each partition it has answered).
        let _ = self.client().resume(&list);
        // (from, stable) of every partition still unread.
        let mut pending: HashMap<(String, i32), (i64, i64)> = wanted
            .iter()
            .map(|w| ((w.topic.clone(), w.partition), (w.from, w.stable)))
            .collect();
        let mut found = HashMap::with_capacity(wanted.len());
        let mut last_error = None;
        // The first check comes after one poll: a fresh assignment has no position yet.
        let mut last_position_check = crate::clock::std_instant();
        while !pending.is_empty() {
            let now = crate::clock::std_instant();
            if now >= deadline {
                let ((topic, partition), _) = pending
                    .iter()
                    .next()
                    .map_or(((String::new(), 0), (0, 0)), |(k, v)| (k.clone(), *v));
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
            // Every 100 ms: partitions whose position reached the stable end had nothing to
            // deliver (end-of-partition events name no topic, so positions decide).
            if crate::clock::std_elapsed(last_position_check) >= Duration::from_millis(100) {
                last_position_check = crate::clock::std_instant();
                let positions = match self.client().position() {
                    Ok(positions) => positions,
                    Err(e) => {
                        return Err((found, kafka_error("reading the reader's positions", &e)));
                    }
                };
                for element in positions.elements() {
                    let key = (element.topic().to_owned(), element.partition());
                    let at_end = match (pending.get(&key), element.offset().to_raw()) {
                        (Some((_, stable)), Some(position)) => position >= *stable,
                        _ => false,
                    };
                    if at_end {
                        pending.remove(&key);
                        found.insert(key, FirstRecord::EndOfPartition);
                    }
                }
                if pending.is_empty() {
                    break;
                }
            }
            match self
                .client()
                .poll((deadline - now).min(Duration::from_millis(50)))
            {
                Some(Ok(message)) => {
                    let key = (message.topic().to_owned(), message.partition());
                    // Only a record at or after the wanted offset answers (a record fetched for
                    // an earlier assignment of the same partition does not).
                    let answers = pending
                        .get(&key)
                        .is_some_and(|(from, _)| message.offset() >= *from);
                    if !answers {
                        continue;
                    }
                    pending.remove(&key);
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
                    // Stop fetching what is answered, so that a partition with a large backlog
                    // does not keep the reader busy while others still wait.
                    let mut done = TopicPartitionList::with_capacity(1);
                    done.add_partition(&key.0, key.1);
                    let _ = self.client().pause(&done);
                    found.insert(key, FirstRecord::Record(time));
                }
                Some(Err(e)) => last_error = Some(e.to_string()),
                None => {}
            }
        }
        Ok(found)
    }
}

impl Drop for KafkaClient {
    fn drop(&mut self) {
        let (Some(admin), Some(client)) = (self.admin.take(), self.client.take()) else {
            return;
        };
        if admin.is_tainted() {
            tracing::debug!(source = %self.source, "leaking a Kafka client with requests in flight");
            // The queue is not destroyed either (see `AdminQueue::drop`).
            drop(admin);
            std::mem::forget(client);
            return;
        }
        // librdkafka wants every queue destroyed before its client, and destroying a client
        // blocks until its threads end; this drop may run on an async worker (reload,
        // shutdown), so both happen, in that order, on a thread of their own.
        let closed = self.closed.take();
        let close = move || {
            drop(admin);
            drop(client);
            if let Some(closed) = closed {
                closed.send_replace(true);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("lagbudget-kafka-close".into())
            .spawn(close)
        {
            tracing::warn!(error = %e, "could not start a thread to close a Kafka client");
        }
    }
}

type FoundRecords = HashMap<(String, i32), FirstRecord>;

/// What the cluster's metadata says of its topics.
#[derive(Debug, Clone, Default)]
pub struct TopicMetadata {
    /// Partition ids by topic name.
    pub partitions: HashMap<String, Vec<i32>>,
    /// Topics the metadata reported with an error, and the error.
    pub errors: HashMap<String, String>,
}

impl TopicMetadata {
    fn knows(&self, topic: &str) -> bool {
        self.partitions.contains_key(topic) || self.errors.contains_key(topic)
    }
}

/// One probe's wish to read, and where to send what was found.
struct ReadRequest {
    /// Partitions still to read.
    wanted: Vec<Wanted>,
    /// What earlier rounds found for this request.
    found: FoundRecords,
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
pub(crate) fn kafka_error(what: &str, error: &KafkaError) -> ProbeError {
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
