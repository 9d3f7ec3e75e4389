//! `nats_consumer`: lag of a JetStream consumer, the age of its first unacknowledged message.
//!
//! Each run asks for the consumer's info (`$JS.API.CONSUMER.INFO`): `num_pending` (not yet
//! delivered) and `num_ack_pending` (delivered, not acknowledged) are the backlog — both count,
//! because a delivered message is not visible downstream until its consumer has processed and
//! acknowledged it. Everything below `ack_floor.stream_seq` is acknowledged, so the oldest change
//! not yet visible is the first message at or after `ack_floor.stream_seq + 1` that the
//! consumer's filter selects. It is read through the stream's get-message API with
//! `next_by_subj` (`$JS.API.STREAM.MSG.GET`), which answers the first message at or after a
//! sequence for a subject: a message that was deleted or expired is skipped to the next one
//! still stored, and a filtered consumer is never charged for messages it does not read.
//! Nothing pending and nothing awaiting an acknowledgement is 0.
//!
//! Two clocks meet here: the server stamps each message when it stores it, and the age is taken
//! on the daemon's clock. JetStream's API gives no server time to estimate the difference from
//! (2.9 has none), so a result below zero is clamped and counted in `negative_lag_total`, and the
//! README asks for synchronised clocks.

pub mod config;

use std::sync::Arc;

use async_nats::jetstream::consumer::Info;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use tokio::time::{Instant, timeout_at};

use super::nats::NatsClient;
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::clock::unix_now;
use crate::model::NatsConsumer;

pub struct NatsConsumerProbe {
    spec: NatsConsumer,
    client: Arc<NatsClient>,
}

impl NatsConsumerProbe {
    pub fn new(spec: NatsConsumer, client: Arc<NatsClient>) -> Self {
        Self { spec, client }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let (stream, info) = self.consumer_info(deadline).await?;
        let ack_floor = info.ack_floor.stream_sequence;
        let backlog = info.num_pending + info.num_ack_pending as u64;
        let mut sample = Sample {
            lag_seconds: Some(0.0),
            backlog: Some(Backlog {
                unit: BacklogUnit::Messages,
                value: backlog as f64,
            }),
            // The acknowledged floor is the consumer's progress: it moves whenever the oldest
            // outstanding message is acknowledged.
            position: Some(ack_floor.to_string()),
            ..Sample::default()
        };
        let counts = format!(
            "{} pending, {} awaiting ack, ack floor {ack_floor}",
            info.num_pending, info.num_ack_pending
        );
        if backlog == 0 {
            sample.detail = Some(counts);
            return Ok(sample);
        }
        let from = ack_floor + 1;
        let Some((sequence, stored_at)) =
            first_message(&stream, &filters(&info), from, deadline).await?
        else {
            // The counts say something waits but nothing is stored from the floor on: the
            // messages expired or were deleted between the two requests. Unknown, not 0.
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "{backlog} outstanding but no message stored at or after sequence {from} \
                     (expired or deleted)"
                ),
            ));
        };
        let age = unix_now() - stored_at;
        if age < 0.0 {
            sample.negative_lag_clamped = true;
        } else {
            sample.lag_seconds = Some(age);
        }
        sample.detail = Some(format!("{counts}, oldest unacknowledged #{sequence}"));
        Ok(sample)
    }

    /// Reads the consumer's info and the message API once: checks that both exist and that
    /// the account may use them.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let (stream, info) = self.consumer_info(deadline).await?;
        let from = info.ack_floor.stream_sequence + 1;
        first_message(&stream, &filters(&info), from, deadline).await?;
        Ok(format!(
            "consumer readable, {} pending, {} awaiting ack",
            info.num_pending, info.num_ack_pending
        ))
    }

    async fn consumer_info(&self, deadline: Instant) -> Result<(Stream<()>, Info), ProbeError> {
        let context = self.client.jetstream(deadline).await?;
        let stream = context
            .get_stream_no_info(&self.spec.stream)
            .await
            .map_err(|error| ProbeError::new(ErrorReason::Query, error.to_string()))?;
        let info = match timeout_at(deadline, stream.consumer_info(&self.spec.consumer)).await {
            Ok(Ok(info)) => info,
            Ok(Err(error)) => {
                let (reason, message) = match error.kind() {
                    ConsumerInfoErrorKind::NotFound => (
                        ErrorReason::NoData,
                        format!(
                            "stream {:?} has no consumer {:?}",
                            self.spec.stream, self.spec.consumer
                        ),
                    ),
                    ConsumerInfoErrorKind::StreamNotFound => (
                        ErrorReason::NoData,
                        format!("stream {:?} does not exist", self.spec.stream),
                    ),
                    ConsumerInfoErrorKind::TimedOut => (
                        ErrorReason::Timeout,
                        "consumer info did not arrive before the deadline".to_owned(),
                    ),
                    ConsumerInfoErrorKind::NoResponders => (
                        ErrorReason::Query,
                        "no responders: JetStream is not enabled for this account".to_owned(),
                    ),
                    ConsumerInfoErrorKind::Request | ConsumerInfoErrorKind::Offline => {
                        (ErrorReason::Connect, error.to_string())
                    }
                    _ => (ErrorReason::Query, error.to_string()),
                };
                return Err(ProbeError::new(reason, message));
            }
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "consumer info did not arrive before the deadline",
                ));
            }
        };
        Ok((stream, info))
    }
}

/// The subjects the consumer reads: its filters, or every subject of the stream.
fn filters(info: &Info) -> Vec<String> {
    let config = &info.config;
    if !config.filter_subjects.is_empty() {
        config.filter_subjects.clone()
    } else if !config.filter_subject.is_empty() {
        vec![config.filter_subject.clone()]
    } else {
        vec![">".to_owned()]
    }
}

/// The earliest stored message at or after `from` on any of `subjects`: its sequence and the
/// server's time stamp (unix seconds). `None` when no such message is stored.
async fn first_message(
    stream: &Stream<()>,
    subjects: &[String],
    from: u64,
    deadline: Instant,
) -> Result<Option<(u64, f64)>, ProbeError> {
    let mut first: Option<(u64, f64)> = None;
    for subject in subjects {
        let read = stream.get_first_raw_message_by_subject(subject, from);
        let message = match timeout_at(deadline, read).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => continue,
            Ok(Err(error)) => {
                return Err(ProbeError::new(
                    ErrorReason::Query,
                    format!("reading message {from} on {subject}: {error}"),
                ));
            }
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "reading the first unacknowledged message did not finish before the deadline",
                ));
            }
        };
        let stored_at = message.time.unix_timestamp_nanos() as f64 / 1e9;
        if first.is_none_or(|(sequence, _)| message.sequence < sequence) {
            first = Some((message.sequence, stored_at));
        }
    }
    Ok(first)
}
/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for NatsConsumerProbe {
    const KEY: &'static str = "nats_consumer";
    type Settings = NatsConsumer;

    fn new(
        _probe: &crate::model::Probe,
        settings: &NatsConsumer,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(settings.clone(), sources.nats(&settings.source)?))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        NatsConsumerProbe::run(self, deadline).await.map(super::Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        NatsConsumerProbe::check(self, deadline).await
    }

    fn source(settings: &NatsConsumer) -> &str {
        &settings.source
    }
}

