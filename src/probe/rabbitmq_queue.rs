//! `rabbitmq_queue`: one queue's depth, consumers and head-message age, from the management
//! API's statistics (`GET /api/queues/{vhost}/{queue}`).
//!
//! Backlog is `messages` (ready plus unacknowledged). Lag is `now − head_message_timestamp`:
//! the AMQP `timestamp` property of the oldest message still in the queue (classic queues count
//! messages delivered but not yet acknowledged too), in whole seconds on the publisher's clock;
//! an empty queue is 0. Quorum queues and streams report no head timestamp, and a head message
//! published without the property has none: then the age is unknown, so the probe reports
//! backlog only, or fails with `no_data` when it has a `max_lag` to enforce.
//!
//! The figures are the management plugin's statistics, which each node refreshes every
//! `collect_statistics_interval` (5 s by default), so every figure may be that old: a message
//! consumed moments ago can still be the head (lag reads high), and one that arrived into an
//! empty queue may not show yet (lag reads 0). Progress for stall detection is the queue's count
//! of messages taken out by consumers (acknowledged, or delivered without acknowledgement).

pub mod config;

use crate::clock::unix_now;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::rabbitmq::{Answer, RabbitmqClient};
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::model::RabbitmqQueue;

/// Only the columns we read: a queue with thousands of consumers otherwise answers with every
/// consumer's details.
const COLUMNS: &str = "columns=name,type,messages,messages_ready,messages_unacknowledged,\
                       consumers,head_message_timestamp,message_stats.ack,\
                       message_stats.deliver_no_ack,message_stats.get_no_ack";

pub struct RabbitmqQueueProbe {
    spec: RabbitmqQueue,
    client: Arc<RabbitmqClient>,
    /// Whether the probe enforces a `max_lag`: then an unknown age is an error, not backlog
    /// only.
    has_lag_budget: bool,
}

/// The statistics of one queue that the probe reads.
#[derive(Debug, Clone, PartialEq)]
struct QueueStats {
    queue_type: String,
    messages: u64,
    ready: Option<u64>,
    unacknowledged: Option<u64>,
    consumers: Option<u64>,
    /// Unix seconds of the head message's `timestamp` property; `None` when the queue reports
    /// none (empty, head without the property, or a queue type that does not track it).
    head_timestamp: Option<u64>,
    /// Messages taken out by consumers so far: the progress marker.
    taken: u64,
}

impl RabbitmqQueueProbe {
    pub fn new(spec: RabbitmqQueue, client: Arc<RabbitmqClient>, has_lag_budget: bool) -> Self {
        Self {
            spec,
            client,
            has_lag_budget,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let stats = self.fetch(deadline).await?;
        if self.has_lag_budget {
            self.check_can_give_times(&stats)?;
        }
        sample_from(&self.spec, &stats, self.has_lag_budget, unix_now())
    }

    /// Reads the queue once and checks that its budget can be measured: a `max_lag` on a queue
    /// type that reports no head timestamps is rejected here, whether or not it is empty now.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let stats = self.fetch(deadline).await?;
        if self.has_lag_budget {
            self.check_can_give_times(&stats)?;
        }
        let times = if gives_times(&self.spec, &stats) {
            "head-message age readable where messages carry a timestamp"
        } else {
            "backlog only"
        };
        Ok(format!(
            "{} queue, {} messages, {}: {times}",
            stats.queue_type,
            stats.messages,
            consumers_text(stats.consumers)
        ))
    }

    async fn fetch(&self, deadline: Instant) -> Result<QueueStats, ProbeError> {
        let answer = self
            .client
            .get(
                &["queues", &self.spec.vhost, &self.spec.queue],
                Some(COLUMNS),
                deadline,
            )
            .await?;
        match answer {
            Answer::Found(body) => parse_stats(&self.spec.queue, &body),
            Answer::NotFound => Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "queue {:?} does not exist in vhost {:?} (HTTP 404)",
                    self.spec.queue, self.spec.vhost
                ),
            )),
        }
    }

    fn check_can_give_times(&self, stats: &QueueStats) -> Result<(), ProbeError> {
        if stats.queue_type == "classic" {
            return Ok(());
        }
        Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "queue {:?} is a {} queue, which reports no head-message timestamp: max_lag \
                 cannot be measured; budget it with max_backlog",
                self.spec.queue, stats.queue_type
            ),
        ))
    }
}

/// Only classic queues report `head_message_timestamp`, and they are trusted only when the config
/// does not say the messages carry none.
fn gives_times(spec: &RabbitmqQueue, stats: &QueueStats) -> bool {
    spec.timestamps && stats.queue_type == "classic"
}

fn consumers_text(consumers: Option<u64>) -> String {
    match consumers {
        Some(1) => "1 consumer".to_owned(),
        Some(n) => format!("{n} consumers"),
        None => "consumers unknown".to_owned(),
    }
}

/// The sample for one reading of the statistics at `now` (unix seconds, the daemon's clock).
fn sample_from(
    spec: &RabbitmqQueue,
    stats: &QueueStats,
    has_lag_budget: bool,
    now: f64,
) -> Result<Sample, ProbeError> {
    let gives_times = gives_times(spec, stats);
    let mut clamped = false;
    let lag = if stats.messages == 0 {
        Some(0.0)
    } else {
        match (gives_times, stats.head_timestamp) {
            (true, Some(head)) => {
                // Publisher clock against ours: a head "from the future" is skew, clamped and
                // counted rather than hidden.
                let age = now - head as f64;
                clamped = age < 0.0;
                Some(age.max(0.0))
            }
            _ => None,
        }
    };
    if lag.is_none() && has_lag_budget {
        let why = if gives_times {
            "its head message carries no timestamp property"
        } else {
            // Reached only with `timestamps: false`, which validation keeps away from max_lag.
            "its messages carry no timestamp (timestamps: false)"
        };
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "queue {:?} is not empty ({} messages) but {why}, so its age is unknown",
                spec.queue, stats.messages
            ),
        ));
    }
    let mut detail = format!(
        "{} messages ({} ready, {} unacknowledged), {}",
        stats.messages,
        count_text(stats.ready),
        count_text(stats.unacknowledged),
        consumers_text(stats.consumers)
    );
    if stats.messages > 0 && lag.is_none() {
        detail.push_str(", head age unknown");
    }
    if stats.messages > 0 && stats.consumers == Some(0) {
        detail.push_str(", nobody consumes");
    }
    Ok(Sample {
        lag_seconds: lag,
        backlog: Some(Backlog {
            unit: BacklogUnit::Messages,
            value: stats.messages as f64,
        }),
        position: Some(stats.taken.to_string()),
        detail: Some(detail),
        negative_lag_clamped: clamped,
        ..Sample::default()
    })
}

fn count_text(count: Option<u64>) -> String {
    count.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

/// Reads the answer of `GET /api/queues/{vhost}/{queue}`. An answer that is not an object about
/// this queue is `decode`; one without `messages` is a queue the statistics have not covered
/// yet (just declared, or the node's statistics are still starting), which is `no_data`.
fn parse_stats(queue: &str, body: &Value) -> Result<QueueStats, ProbeError> {
    let object = body.as_object().ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            format!(
                "expected a JSON object about the queue, got {}",
                kind_of(body)
            ),
        )
    })?;
    match object.get("name").and_then(Value::as_str) {
        Some(name) if name == queue => {}
        _ => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!("the answer is not about queue {queue:?} (no matching `name`)"),
            ));
        }
    }
    // Queues from before queue types (RabbitMQ < 3.8) are classic.
    let queue_type = match object.get("type") {
        None => "classic".to_owned(),
        Some(Value::String(queue_type)) => queue_type.clone(),
        Some(other) => return Err(field_error("type", "a string", other)),
    };
    let Some(messages) = count(object, "messages")? else {
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "the management API has no statistics for queue {queue:?} yet (they refresh \
                 every few seconds)"
            ),
        ));
    };
    let head_timestamp = match object.get("head_message_timestamp") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| field_error("head_message_timestamp", "unix seconds", value))?,
        ),
    };
    // `message_stats` is an object once the queue saw traffic; before that it is absent, and
    // for queue types without some of the counters the API answers an empty list.
    let taken = match object.get("message_stats") {
        Some(Value::Object(stats)) => {
            let mut taken = 0u64;
            for key in ["ack", "deliver_no_ack", "get_no_ack"] {
                taken = taken.saturating_add(count(stats, key)?.unwrap_or(0));
            }
            taken
        }
        _ => 0,
    };
    Ok(QueueStats {
        queue_type,
        messages,
        ready: count(object, "messages_ready")?,
        unacknowledged: count(object, "messages_unacknowledged")?,
        consumers: count(object, "consumers")?,
        head_timestamp,
        taken,
    })
}

/// A non-negative integer field; absent or null is `None`.
fn count(object: &Map<String, Value>, key: &str) -> Result<Option<u64>, ProbeError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| field_error(key, "a count", value)),
    }
}

fn field_error(key: &str, expected: &str, found: &Value) -> ProbeError {
    ProbeError::new(
        ErrorReason::Decode,
        format!("`{key}` should be {expected}, got {}", kind_of(found)),
    )
}

/// What a JSON value is, for messages that must not repeat what a server sent.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for RabbitmqQueueProbe {
    const KEY: &'static str = "rabbitmq_queue";
    type Settings = RabbitmqQueue;

    fn new(
        probe: &crate::model::Probe,
        settings: &RabbitmqQueue,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(
            settings.clone(),
            sources.rabbitmq(&settings.source)?,
            probe.max_lag.is_some(),
        ))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        RabbitmqQueueProbe::run(self, deadline).await.map(super::Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        RabbitmqQueueProbe::check(self, deadline).await
    }

    fn source(settings: &RabbitmqQueue) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(timestamps: bool) -> RabbitmqQueue {
        RabbitmqQueue {
            source: "rabbit".into(),
            queue: "orders".into(),
            vhost: "/".into(),
            timestamps,
        }
    }

    fn stats(queue_type: &str, messages: u64, head: Option<u64>) -> QueueStats {
        QueueStats {
            queue_type: queue_type.into(),
            messages,
            ready: Some(messages),
            unacknowledged: Some(0),
            consumers: Some(1),
            head_timestamp: head,
            taken: 7,
        }
    }

    #[test]
    fn answers_of_the_wrong_shape_are_decode_errors_and_missing_statistics_no_data() {
        let cases = [
            (json!([1, 2]), ErrorReason::Decode, "expected a JSON object"),
            (
                json!({"name": "other"}),
                ErrorReason::Decode,
                "not about queue",
            ),
            (
                json!({"name": "orders", "messages": "many"}),
                ErrorReason::Decode,
                "`messages` should be a count, got a string",
            ),
            (
                json!({"name": "orders", "messages": 1, "head_message_timestamp": -5}),
                ErrorReason::Decode,
                "`head_message_timestamp` should be unix seconds",
            ),
            (
                json!({"name": "orders", "type": "classic"}),
                ErrorReason::NoData,
                "no statistics for queue \"orders\" yet",
            ),
        ];
        for (body, reason, text) in cases {
            let error = parse_stats("orders", &body).expect_err("must fail");
            assert_eq!(error.reason, reason, "{body}");
            assert!(error.message.contains(text), "{body}: {}", error.message);
        }
    }

    #[test]
    fn statistics_are_read_as_the_api_answers_them() {
        // Answers as RabbitMQ 3.10 gives them: a classic queue after traffic, and a quorum
        // queue whose missing counters come as an empty list.
        let classic = json!({
            "name": "orders", "type": "classic", "messages": 3, "messages_ready": 2,
            "messages_unacknowledged": 1, "consumers": 1, "head_message_timestamp": 1_700_000_000,
            "message_stats": {"ack": 4, "deliver_no_ack": 1, "get_no_ack": 2}
        });
        let parsed = parse_stats("orders", &classic).expect("classic");
        assert_eq!(
            parsed,
            QueueStats {
                queue_type: "classic".into(),
                messages: 3,
                ready: Some(2),
                unacknowledged: Some(1),
                consumers: Some(1),
                head_timestamp: Some(1_700_000_000),
                taken: 7,
            }
        );
        let quorum =
            json!({"name": "orders", "type": "quorum", "messages": 1, "message_stats": []});
        let parsed = parse_stats("orders", &quorum).expect("quorum");
        assert_eq!(
            (parsed.messages, parsed.head_timestamp, parsed.taken),
            (1, None, 0)
        );
    }

    #[test]
    fn lag_is_the_head_age_zero_when_empty_and_unknown_without_times() {
        let now = 1_000.5;
        // (spec timestamps, stats, has max_lag) => Ok(lag) or Err(reason)
        type Expected = Result<Option<f64>, ErrorReason>;
        let cases: [(bool, QueueStats, bool, Expected); 8] = [
            (true, stats("classic", 2, Some(980)), true, Ok(Some(20.5))),
            (true, stats("classic", 0, None), true, Ok(Some(0.0))),
            // A head without the timestamp property: unknown, not 0.
            (true, stats("classic", 2, None), false, Ok(None)),
            (
                true,
                stats("classic", 2, None),
                true,
                Err(ErrorReason::NoData),
            ),
            // Quorum queues never report times: backlog only; empty is still 0.
            (true, stats("quorum", 2, None), false, Ok(None)),
            (true, stats("quorum", 0, None), false, Ok(Some(0.0))),
            // The config says the messages carry no timestamp: a timestamp is not trusted.
            (false, stats("classic", 2, Some(980)), false, Ok(None)),
            // A head from the publisher's future is clamped to 0.
            (true, stats("classic", 1, Some(1_003)), true, Ok(Some(0.0))),
        ];
        for (index, (timestamps, stats, budget, expected)) in cases.into_iter().enumerate() {
            let result = sample_from(&spec(timestamps), &stats, budget, now);
            match (result, expected) {
                (Ok(sample), Ok(lag)) => {
                    assert_eq!(sample.lag_seconds, lag, "case {index}");
                    assert_eq!(
                        sample.backlog.map(|b| b.value),
                        Some(stats.messages as f64),
                        "case {index}"
                    );
                    assert_eq!(sample.position.as_deref(), Some("7"), "case {index}");
                    assert_eq!(sample.negative_lag_clamped, index == 7, "case {index}");
                }
                (Err(error), Err(reason)) => {
                    assert_eq!(error.reason, reason, "case {index}");
                    assert!(
                        error.message.contains("no timestamp property"),
                        "case {index}: {}",
                        error.message
                    );
                }
                (result, expected) => panic!("case {index}: {result:?}, expected {expected:?}"),
            }
        }
    }
}
