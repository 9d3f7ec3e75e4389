//! `canary`: the lag a user sees end to end. The daemon writes a marker `(instance, probe, seq,
//! written_at)` at a source of truth every write period and reads it back from each view; lag is
//! the age, on the daemon's clock, of the first marker a view does not show yet.
//!
//! One writer per (budget, probe) and configuration, shared by the probe's per-view runners
//! through a process-wide registry and stopped when the last runner is dropped (a reload that
//! removes the probe). It keeps what it wrote in a `HeartbeatLedger`, the same ledger both
//! replica kinds use, so the rules are theirs: an idle system reads 0 (the marker itself is the
//! change), a view that stopped applying reads a growing lag, and a writer that fails makes the
//! lag unknown after two write periods, never 0.
//!
//! Sequence numbers start at the writer's start time in milliseconds and go up by one per
//! write, so a restarted daemon continues above anything it wrote before without reading its
//! target first, and a view still showing the previous process's markers is behind.
//!
//! Each run of a view reads it once, or `monotonic.reads` times through the same route (a
//! load-balanced DSN, a service URL): a seq lower than one already seen through that route is a
//! monotonic-read violation, and the run's lag is that of the oldest answer. With
//! `read_your_writes`, the run's first read checks that the newest marker written at least
//! `after` before it is visible. Each time a view shows newer markers, their time to visible
//! (an upper bound: the read that first saw them − when they were written) goes into the view's
//! histogram.
//!
//! How a marker is written and read (rows, keys, messages, requests, items) is each source
//! family's own module; this file only knows `MarkerWriter` and `MarkerReader`.

pub mod config;
pub mod dashboard;
pub mod detail;
mod dynamodb;
mod http;
mod kafka;
mod nats;
mod rabbitmq;
mod redis;
mod sql;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::heartbeat::{HeartbeatLedger, WriterRegistry};
use super::{
    Detail, ErrorReason, MonotonicReads, ProbeError, ReadYourWrites, Reading, Sample,
    SourceHandle, SourceHandles,
};
use crate::clock::{unix_ms_now, unix_now};
use config::{Canary, ReadTarget, WriteTarget};
use detail::{CanaryDetail, VisibilityHistogram};

/// The writers of every canary in this process, by probe and write configuration. Held weakly:
/// a writer lives as long as a runner of its probe does.
static WRITERS: LazyLock<WriterRegistry> = LazyLock::new(WriterRegistry::default);

/// One marker, as every writer writes it.
#[derive(Debug, Clone, Copy)]
pub struct Marker<'a> {
    /// The daemon's instance name.
    pub instance: &'a str,
    /// `budget/probe`.
    pub probe: &'a str,
    pub seq: i64,
    /// Daemon unix time when the write was sent.
    pub written_at: f64,
}

impl Marker<'_> {
    /// The marker as a JSON object, what message and key writers send:
    /// `{"instance", "probe", "seq", "written_at"}` with `written_at` in RFC 3339.
    pub fn json(&self) -> String {
        serde_json::json!({
            "instance": self.instance,
            "probe": self.probe,
            "seq": self.seq,
            "written_at": rfc3339(self.written_at),
        })
        .to_string()
    }
}

/// A unix time in RFC 3339, UTC, to the millisecond.
fn rfc3339(unix: f64) -> String {
    let nanos = (unix * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
                .ok()
        })
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `template` with `$instance` replaced: keys, subjects and paths name this daemon's marker.
pub fn with_instance(template: &str, instance: &str) -> String {
    fill_placeholders(template, &["$instance"], |_, out| out.push_str(instance))
}

/// `template` with each placeholder of `names` (a `$word` not followed by a letter, digit or
/// `_`, so `$seqs` is left alone) replaced by what `replace` writes for its index in `names`,
/// in one pass: a value written is never read again as a placeholder.
pub fn fill_placeholders(
    template: &str,
    names: &[&str],
    mut replace: impl FnMut(usize, &mut String),
) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    'outer: while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        for (index, name) in names.iter().enumerate() {
            let ends_word = tail[name.len().min(tail.len())..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if tail.starts_with(name) && ends_word {
                replace(index, &mut out);
                rest = &tail[name.len()..];
                continue 'outer;
            }
        }
        out.push('$');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// The seq of this daemon's marker in a JSON message or value: `{"instance", "probe", "seq"}`
/// objects of another instance or probe are not ours (`None`).
pub fn seq_of_marker(value: &serde_json::Value, instance: &str, probe: &str) -> Option<i64> {
    let mine = value.get("instance").and_then(|v| v.as_str()) == Some(instance)
        && value.get("probe").and_then(|v| v.as_str()) == Some(probe);
    if !mine {
        return None;
    }
    value.get("seq").and_then(|v| v.as_i64())
}

/// A seq read from a view: a JSON integer, or a string of digits.
pub fn seq_from_json(value: &serde_json::Value) -> Result<i64, ProbeError> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        let shown: String = value.to_string().chars().take(40).collect();
        ProbeError::new(
            ErrorReason::Decode,
            format!("the view's seq {shown} is not an integer"),
        )
    })
}

/// How markers reach the write target: one variant per source family.
enum MarkerWriter {
    Sql(sql::SqlWriter),
    Redis(redis::RedisWriter),
    Http(http::HttpWriter),
    Kafka(kafka::KafkaWriter),
    Nats(nats::NatsWriter),
    Rabbitmq(rabbitmq::RabbitmqWriter),
    Dynamodb(dynamodb::DynamodbWriter),
}

impl MarkerWriter {
    fn new(spec: &Canary, probe: &str, sources: &SourceHandles) -> Result<Self, ProbeError> {
        let source = &spec.write.source;
        let handle = sources.get(source).ok_or_else(|| missing(source))?;
        match (&spec.write.target, handle) {
            (WriteTarget::Managed | WriteTarget::Sql(_), SourceHandle::Postgres(_) | SourceHandle::Mysql(_)) => {
                Ok(MarkerWriter::Sql(sql::SqlWriter::new(spec, handle)?))
            }
            (
                WriteTarget::Managed | WriteTarget::RedisKey(_) | WriteTarget::RedisStream(_),
                SourceHandle::Redis(_),
            ) => Ok(MarkerWriter::Redis(redis::RedisWriter::new(spec, probe, handle)?)),
            (WriteTarget::Http { .. }, SourceHandle::Http(_)) => {
                Ok(MarkerWriter::Http(http::HttpWriter::new(spec, handle)?))
            }
            (WriteTarget::Managed | WriteTarget::KafkaTopic(_), SourceHandle::Kafka(_)) => {
                Ok(MarkerWriter::Kafka(kafka::KafkaWriter::new(spec, handle)?))
            }
            (WriteTarget::Managed | WriteTarget::NatsSubject(_), SourceHandle::Nats(_)) => {
                Ok(MarkerWriter::Nats(nats::NatsWriter::new(spec, handle)?))
            }
            (WriteTarget::Managed | WriteTarget::Rabbitmq { .. }, SourceHandle::Rabbitmq(_)) => Ok(
                MarkerWriter::Rabbitmq(rabbitmq::RabbitmqWriter::new(spec, probe, handle)?),
            ),
            (WriteTarget::Managed | WriteTarget::Dynamodb(_), SourceHandle::Dynamodb(_)) => {
                Ok(MarkerWriter::Dynamodb(dynamodb::DynamodbWriter::new(spec, handle)?))
            }
            (target, _) => Err(ProbeError::new(
                ErrorReason::Connect,
                format!("source {source} cannot take a canary write of {target:?}"),
            )),
        }
    }

    async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        match self {
            MarkerWriter::Sql(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Redis(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Http(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Kafka(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Nats(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Rabbitmq(writer) => writer.write(marker, deadline).await,
            MarkerWriter::Dynamodb(writer) => writer.write(marker, deadline).await,
        }
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        match self {
            MarkerWriter::Sql(writer) => writer.check(deadline).await,
            MarkerWriter::Redis(writer) => writer.check(deadline).await,
            MarkerWriter::Http(writer) => writer.check(deadline).await,
            MarkerWriter::Kafka(writer) => writer.check(deadline).await,
            MarkerWriter::Nats(writer) => writer.check(deadline).await,
            MarkerWriter::Rabbitmq(writer) => writer.check(deadline).await,
            MarkerWriter::Dynamodb(writer) => writer.check(deadline).await,
        }
    }
}

/// How a view is asked for the highest marker it shows: one variant per source family.
enum MarkerReader {
    Sql(sql::SqlReader),
    Redis(redis::RedisReader),
    Http(http::HttpReader),
    Kafka(kafka::KafkaReader),
    Nats(nats::NatsReader),
    Rabbitmq(rabbitmq::RabbitmqReader),
    Dynamodb(dynamodb::DynamodbReader),
}

impl MarkerReader {
    fn new(spec: &Canary, probe: &str, sources: &SourceHandles) -> Result<Self, ProbeError> {
        let source = &spec.read.source;
        let handle = sources.get(source).ok_or_else(|| missing(source))?;
        if spec.read.target == ReadTarget::Managed {
            // lagbudget's own marker has one place per kind of source (a table, a key, a
            // topic…): a bare read finds it only where a bare write of the same kind put it.
            let written = sources.get(&spec.write.source);
            let same_kind = written.is_some_and(|w| {
                std::mem::discriminant(w) == std::mem::discriminant(handle)
            });
            if !same_kind {
                return Err(ProbeError::new(
                    ErrorReason::Query,
                    format!(
                        "a bare read of {source} looks for lagbudget's own marker, which the \
                         write to {} (another kind of source) never puts there; name what \
                         the view shows (query, key, stream, topic, subject, queue, path or \
                         table)",
                        spec.write.source
                    ),
                ));
            }
        }
        match (&spec.read.target, handle) {
            (ReadTarget::Managed | ReadTarget::Sql(_), SourceHandle::Postgres(_) | SourceHandle::Mysql(_)) => {
                Ok(MarkerReader::Sql(sql::SqlReader::new(spec, probe, handle)?))
            }
            (
                ReadTarget::Managed | ReadTarget::RedisKey { .. } | ReadTarget::RedisStream(_),
                SourceHandle::Redis(_),
            ) => Ok(MarkerReader::Redis(redis::RedisReader::new(spec, probe, handle)?)),
            (ReadTarget::Http { .. }, SourceHandle::Http(_)) => {
                Ok(MarkerReader::Http(http::HttpReader::new(spec, handle)?))
            }
            (ReadTarget::Managed | ReadTarget::KafkaTopic { .. }, SourceHandle::Kafka(_)) => {
                Ok(MarkerReader::Kafka(kafka::KafkaReader::new(spec, probe, handle)?))
            }
            (ReadTarget::Managed | ReadTarget::NatsSubject(_), SourceHandle::Nats(_)) => {
                Ok(MarkerReader::Nats(nats::NatsReader::new(spec, probe, handle)?))
            }
            (ReadTarget::Managed | ReadTarget::RabbitmqQueue(_), SourceHandle::Rabbitmq(_)) => Ok(
                MarkerReader::Rabbitmq(rabbitmq::RabbitmqReader::new(spec, probe, handle)?),
            ),
            (ReadTarget::Managed | ReadTarget::Dynamodb(_), SourceHandle::Dynamodb(_)) => Ok(
                MarkerReader::Dynamodb(dynamodb::DynamodbReader::new(spec, probe, handle)?),
            ),
            (target, _) => Err(ProbeError::new(
                ErrorReason::Connect,
                format!("source {source} cannot be read as a canary view of {target:?}"),
            )),
        }
    }

    /// The highest seq of this daemon's markers the view shows now; `None` when it shows none.
    async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        match self {
            MarkerReader::Sql(reader) => reader.read(deadline).await,
            MarkerReader::Redis(reader) => reader.read(deadline).await,
            MarkerReader::Http(reader) => reader.read(deadline).await,
            MarkerReader::Kafka(reader) => reader.read(deadline).await,
            MarkerReader::Nats(reader) => reader.read(deadline).await,
            MarkerReader::Rabbitmq(reader) => reader.read(deadline).await,
            MarkerReader::Dynamodb(reader) => reader.read(deadline).await,
        }
    }

    /// Subscribes a reader of messages (a queue, a topic, a subject) so that every marker
    /// written from now on reaches it; nothing to do for a reader of current state.
    async fn listen(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        match self {
            MarkerReader::Sql(_)
            | MarkerReader::Redis(_)
            | MarkerReader::Http(_)
            | MarkerReader::Dynamodb(_) => {
                let _ = deadline;
                Ok(())
            }
            MarkerReader::Kafka(reader) => reader.listen(deadline).await,
            MarkerReader::Nats(reader) => reader.listen(deadline).await,
            MarkerReader::Rabbitmq(reader) => reader.listen(deadline).await,
        }
    }

    /// Whether the view is a stream of markers that only shows those sent after `listen`
    /// (lagbudget's own topic, subject or queue included, which `ReadTarget::Managed` names).
    fn sees_only_new_markers(&self) -> bool {
        matches!(
            self,
            MarkerReader::Kafka(_) | MarkerReader::Nats(_) | MarkerReader::Rabbitmq(_)
        )
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        match self {
            MarkerReader::Sql(reader) => reader.check(deadline).await,
            MarkerReader::Redis(reader) => reader.check(deadline).await,
            MarkerReader::Http(reader) => reader.check(deadline).await,
            MarkerReader::Kafka(reader) => reader.check(deadline).await,
            MarkerReader::Nats(reader) => reader.check(deadline).await,
            MarkerReader::Rabbitmq(reader) => reader.check(deadline).await,
            MarkerReader::Dynamodb(reader) => reader.check(deadline).await,
        }
    }
}

fn missing(source: &str) -> ProbeError {
    ProbeError::new(
        ErrorReason::Connect,
        format!("source {source} is not configured"),
    )
}

/// The writer of one canary, shared by its views' runners: the ledger of what it wrote, a count
/// of its attempts, and its task's stop guard.
struct SharedWriter {
    ledger: Arc<Mutex<HeartbeatLedger>>,
    /// The seq before this writer's first marker: what a view that shows none of them has seen.
    origin: i64,
    attempts: watch::Receiver<u64>,
    _stop: DropGuard,
}

impl SharedWriter {
    /// The running writer of this canary, or a new one writing with `writer`.
    fn shared(spec: &Canary, probe: &str, sources: &SourceHandles) -> Result<Arc<Self>, ProbeError> {
        // The handle's address ties the writer to the connection it writes through: a reload
        // that changes the source gets a new writer.
        let handle = sources
            .get(&spec.write.source)
            .map(SourceHandle::id)
            .ok_or_else(|| missing(&spec.write.source))?;
        let key = format!(
            "{probe}|{:?}|{handle}|{:?}|{}|{}",
            spec.write, spec.write_period, spec.instance, spec.schema
        );
        // Cheap: writers connect on their first write. Dropped unused when one is running.
        let writer = MarkerWriter::new(spec, probe, sources)?;
        Ok(WRITERS.shared(&key, || SharedWriter::start(writer, spec, probe)))
    }

    fn start(writer: MarkerWriter, spec: &Canary, probe: &str) -> Self {
        let origin = unix_ms_now().saturating_sub(1);
        let mut ledger = HeartbeatLedger::new(spec.write_period).with_noun("marker");
        ledger.seed(origin);
        let ledger = Arc::new(Mutex::new(ledger));
        let (attempts_tx, attempts) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let task = write_loop(
            writer,
            spec.write_period,
            spec.instance.clone(),
            probe.to_owned(),
            ledger.clone(),
            attempts_tx,
        );
        let task_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task_stop.cancelled() => {}
                _ = task => {}
            }
        });
        SharedWriter {
            ledger,
            origin,
            attempts,
            _stop: stop.drop_guard(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, HeartbeatLedger> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a marker every period until cancelled. A write that fails or outlasts its time is a
/// failure; the ledger turns failures into "unknown" after two write periods.
async fn write_loop(
    mut writer: MarkerWriter,
    period: Duration,
    instance: String,
    probe: String,
    ledger: Arc<Mutex<HeartbeatLedger>>,
    attempts: watch::Sender<u64>,
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let lock = || ledger.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        ticker.tick().await;
        // A write gets at least a second: a slow commit is a late marker, not a failure.
        let deadline = crate::clock::instant() + period.max(Duration::from_secs(1));
        let seq = lock().next_seq();
        let written_at = unix_now();
        let marker = Marker {
            instance: &instance,
            probe: &probe,
            seq,
            written_at,
        };
        let written = timeout_at(deadline, writer.write(&marker, deadline))
            .await
            .unwrap_or_else(|_| {
                Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "the canary write did not complete in time",
                ))
            });
        match written {
            Ok(()) => lock().record_write(seq, written_at),
            Err(error) => lock().record_failure(
                unix_now(),
                ProbeError::new(error.reason, format!("canary write: {}", error.message)),
            ),
        }
        attempts.send_modify(|n| *n += 1);
    }
}

/// One view of one canary.
pub struct CanaryProbe {
    spec: Canary,
    /// `budget/probe`: the marker's `probe` and part of the writer's key.
    key: String,
    max_lag: Option<Duration>,
    sources: SourceHandles,
    /// Started at the first run (not by `check`, which must not write).
    writer: Option<Arc<SharedWriter>>,
    reader: MarkerReader,
    /// For views that only show markers sent after the reader subscribed: the last seq written
    /// before its first read, which it can never show.
    baseline: Option<i64>,
    /// The highest seq seen through the view's route (monotonic reads).
    route_highest: Option<i64>,
    /// The highest seq the view showed at the previous run, for time-to-visible.
    shown: Option<i64>,
    visibility: VisibilityHistogram,
}

impl CanaryProbe {
    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        let writer = match &self.writer {
            Some(writer) => writer.clone(),
            None => {
                let writer = SharedWriter::shared(&self.spec, &self.key, &self.sources)?;
                self.writer = Some(writer.clone());
                writer
            }
        };
        // The first run may come before the writer's first attempt; wait for it (within the
        // deadline) rather than report "nothing written".
        let mut attempts = writer.attempts.clone();
        let _ = timeout_at(deadline, attempts.wait_for(|n| *n > 0)).await;
        if self.reader.sees_only_new_markers() && self.baseline.is_none() {
            // Listening first: a marker written between taking the baseline and subscribing
            // would never arrive, and the view would read as stuck.
            self.reader.listen(deadline).await?;
            self.baseline = writer.ledger().last_seq();
        }

        let reads = self.spec.monotonic_reads.unwrap_or(1).max(1);
        let mut oldest: Option<Option<i64>> = None;
        let mut violations = 0u32;
        let mut first_read_sent_at = None;
        let mut received_at = unix_now();
        let mut answered = false;
        for _ in 0..reads {
            let sent_at = unix_now();
            let shown = self.reader.read(deadline).await?;
            received_at = unix_now();
            self.check_ours(shown, &writer)?;
            answered |= shown.is_some();
            // A view showing none of this writer's markers has seen what came before them; a
            // view that only shows new messages has seen everything written before it listened.
            let floor = self.baseline.unwrap_or(writer.origin);
            let shown = Some(match (shown, self.baseline) {
                (Some(seq), Some(base)) => seq.max(base),
                (Some(seq), None) => seq,
                (None, _) => floor,
            });
            first_read_sent_at.get_or_insert((sent_at, shown));
            if let (Some(seq), Some(highest)) = (shown, self.route_highest) {
                if seq < highest {
                    violations += 1;
                }
            }
            if let Some(seq) = shown {
                self.route_highest = Some(self.route_highest.map_or(seq, |h| h.max(seq)));
            }
            oldest = Some(match oldest {
                None => shown,
                Some(before) => before.min(shown),
            });
        }
        let shown = oldest.flatten();

        let ledger = writer.ledger();
        let lag = ledger
            .lag(shown, received_at)
            // Unknown, not merely down: the last 0 said "shows every marker written", and
            // none is being written, so it must not stand for the next intervals.
            .map_err(|e| {
                ProbeError::new(e.reason, format!("canary writer: {}", e.message))
                    .voiding_last_sample()
            })?;
        let read_your_writes = self.spec.read_your_writes.and_then(|after| {
            let (sent_at, seen) = first_read_sent_at?;
            let (seq, _) = ledger.latest_write_at_or_before(sent_at - after.as_secs_f64())?;
            Some(ReadYourWrites {
                missed: seen.is_none_or(|seen| seen < seq),
            })
        });
        if let Some(newest) = shown.filter(|&seq| self.shown.is_none_or(|before| seq > before)) {
            let since = self.shown.unwrap_or(i64::MIN);
            for (_, written_at) in ledger.written_between(since, newest) {
                self.visibility.observe((received_at - written_at).max(0.0));
            }
        }
        let first_unseen = ledger.first_unseen(shown);
        // Counted from what this process wrote: a view behind a previous process's markers
        // has a seq gap of milliseconds, not of markers.
        let unseen_markers = ledger.written_between(shown.unwrap_or(i64::MIN), i64::MAX).count() as u64;
        drop(ledger);
        if shown.is_some() {
            self.shown = self.shown.max(shown);
        }

        if lag.lag_seconds > self.spec.give_up.as_secs_f64() {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "marker seq {} written {:.0}s ago is still not visible at {} (give_up {})",
                    first_unseen.map_or_else(|| "?".to_owned(), |seq| seq.to_string()),
                    lag.lag_seconds,
                    self.spec.read.name,
                    crate::model::format_duration(self.spec.give_up),
                ),
            ));
        }
        if lag.lower_bound {
            // The view shows a marker older than anything this process remembers: it is at
            // least this far behind. Certain when over budget; below it, unknown.
            if self.max_lag.is_none_or(|max| lag.lag_seconds < max.as_secs_f64()) {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!(
                        "the view shows a marker older than this process remembers: lag is at \
                         least {:.1}s",
                        lag.lag_seconds
                    ),
                ));
            }
        }
        let sample = Sample {
            lag_seconds: Some(lag.lag_seconds),
            position: shown.filter(|_| answered).map(|seq| seq.to_string()),
            detail: Some(format!(
                "marker seq {} visible at {}, {} not yet{}",
                shown.map_or_else(|| "none".to_owned(), |seq| seq.to_string()),
                self.spec.read.name,
                unseen_markers,
                if lag.lower_bound { " (lag is a lower bound)" } else { "" },
            )),
            read_your_writes,
            monotonic_reads: self.spec.monotonic_reads.map(|_| MonotonicReads {
                reads,
                violations,
            }),
            ..Sample::default()
        };
        let detail = CanaryDetail {
            visible_seq: shown,
            unseen_markers,
            visibility: self.visibility.clone(),
        };
        Ok(Reading {
            sample,
            detail: Some(Detail::Canary(detail)),
        })
    }

    /// A view showing a marker of this instance and probe newer than any this writer wrote
    /// (beyond the one it may be writing now) shows another writer's markers: another daemon
    /// with the same `instance` overwrites this one's. Its seqs started at another time, so the
    /// lag would be wrong either way, and read as 0 when the other started later.
    fn check_ours(&self, shown: Option<i64>, writer: &SharedWriter) -> Result<(), ProbeError> {
        let last = writer.ledger().last_seq();
        match (shown, last) {
            (Some(seq), Some(last)) if seq > last.saturating_add(1) => Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "{} shows marker seq {seq} of instance {}, newer than any this daemon wrote \
                     ({last}): another daemon writes markers as the same instance (give each \
                     its own `instance`), or this daemon's clock went back",
                    self.spec.read.name, self.spec.instance
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let mut writer = MarkerWriter::new(&self.spec, &self.key, &self.sources)?;
        let wrote = writer.check(deadline).await?;
        let read = self.reader.check(deadline).await?;
        Ok(format!("write: {wrote}; read {}: {read}", self.spec.read.name))
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for CanaryProbe {
    const KEY: &'static str = "canary";
    type Settings = Canary;

    fn new(
        probe: &crate::model::Probe,
        settings: &Canary,
        sources: &SourceHandles,
    ) -> Result<Self, ProbeError> {
        let key = format!("{}/{}", probe.budget, probe.name);
        let reader = MarkerReader::new(settings, &key, sources)?;
        Ok(CanaryProbe {
            spec: settings.clone(),
            key,
            max_lag: probe.max_lag,
            sources: sources.clone(),
            writer: None,
            reader,
            baseline: None,
            route_highest: None,
            shown: None,
            visibility: VisibilityHistogram::default(),
        })
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        CanaryProbe::run(self, deadline).await
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        CanaryProbe::check(self, deadline).await
    }

    fn source(settings: &Canary) -> &str {
        &settings.read.source
    }

    fn sources(settings: &Canary) -> Vec<&str> {
        vec![settings.read.source.as_str(), settings.write.source.as_str()]
    }

    fn checks_read_your_writes(settings: &Canary) -> bool {
        settings.read_your_writes.is_some()
    }

    fn checks_monotonic_reads(settings: &Canary) -> bool {
        settings.monotonic_reads.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_json_with_their_instance_probe_seq_and_time() {
        let marker = Marker {
            instance: "host-1",
            probe: "orders/visible",
            seq: 1_700_000_000_123,
            written_at: 1_700_000_000.123_4,
        };
        let json: serde_json::Value = serde_json::from_str(&marker.json()).expect("json");
        assert_eq!(seq_of_marker(&json, "host-1", "orders/visible"), Some(1_700_000_000_123));
        assert_eq!(seq_of_marker(&json, "host-2", "orders/visible"), None);
        assert_eq!(seq_of_marker(&json, "host-1", "orders/other"), None);
        assert_eq!(json["written_at"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn seqs_are_integers_or_digit_strings() {
        assert_eq!(seq_from_json(&serde_json::json!(42)).ok(), Some(42));
        assert_eq!(seq_from_json(&serde_json::json!(" 42 ")).ok(), Some(42));
        let error = seq_from_json(&serde_json::json!({"seq": 1})).expect_err("an object");
        assert_eq!(error.reason, ErrorReason::Decode);
    }

    #[test]
    fn instance_placeholders_are_replaced() {
        assert_eq!(
            with_instance("lagbudget:canary:$instance", "h1"),
            "lagbudget:canary:h1"
        );
    }
}
