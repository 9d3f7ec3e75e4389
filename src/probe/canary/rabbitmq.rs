//! Canary markers in RabbitMQ, through the management HTTP API the `rabbitmq` source already
//! speaks: the marker as JSON published to an exchange (`POST /api/exchanges/{vhost}/{exchange}/publish`),
//! and taken back off a queue (`POST /api/queues/{vhost}/{queue}/get`, `ack_requeue_false`).
//!
//! The management API is not a subscriber: reading takes the messages off the queue. A queue a
//! view reads must therefore be dedicated to the canary (and read by one view only), never a
//! queue an application consumes. lagbudget's own queue, for a bare `{source}`, is
//! `lagbudget.canary.<instance>.<budget/probe>` in vhost `/`, declared with `x-max-length`
//! (the oldest markers are dropped beyond it) and `x-expires` (removed a day after its last
//! reader stopped), and markers reach it through the default exchange.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::config::{Canary, ReadTarget, WriteTarget};
use super::{Marker, seq_of_marker, with_instance};
use crate::probe::rabbitmq::{Answer, RabbitmqClient};
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// The vhost markers are published and read in.
const VHOST: &str = "/";
/// Markers lagbudget's own queue keeps at most.
const MANAGED_MAX_LENGTH: u32 = 1000;
/// lagbudget's own queue is removed this long after it was last read (ms).
const MANAGED_EXPIRES_MS: u64 = 24 * 3600 * 1000;
/// Messages taken per `get` request, and requests per read at most.
const GET_COUNT: usize = 100;
const GETS_PER_READ: usize = 10;

/// lagbudget's own queue for one instance's and probe's markers.
pub fn managed_queue(instance: &str, probe: &str) -> String {
    format!("lagbudget.canary.{instance}.{probe}")
}

fn client(handle: &SourceHandle) -> Result<Arc<RabbitmqClient>, ProbeError> {
    match handle {
        SourceHandle::Rabbitmq(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "a rabbitmq canary target needs a rabbitmq source",
        )),
    }
}

/// Declares lagbudget's own queue (idempotent).
async fn declare(client: &RabbitmqClient, queue: &str, deadline: Instant) -> Result<(), ProbeError> {
    let body = json!({
        "durable": true,
        "auto_delete": false,
        "arguments": {"x-max-length": MANAGED_MAX_LENGTH, "x-expires": MANAGED_EXPIRES_MS},
    });
    client
        .send(Method::PUT, &["queues", VHOST, queue], &body, deadline)
        .await
        .map_err(|e| ProbeError::new(e.reason, format!("declaring queue {queue}: {}", e.message)))?;
    Ok(())
}

/// Publishes markers to an exchange.
pub struct RabbitmqWriter {
    client: Arc<RabbitmqClient>,
    /// The exchange's name in the API (`amq.default` for the default exchange).
    exchange: String,
    routing_key: String,
    /// lagbudget's own queue, declared at the first write.
    managed: Option<String>,
    declared: bool,
}

impl RabbitmqWriter {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let (exchange, routing_key, managed) = match &spec.write.target {
            WriteTarget::Rabbitmq {
                exchange,
                routing_key,
            } => (
                exchange.clone(),
                with_instance(routing_key, &spec.instance),
                None,
            ),
            _ => {
                let queue = managed_queue(&spec.instance, probe);
                (String::new(), queue.clone(), Some(queue))
            }
        };
        let exchange = if exchange.is_empty() {
            "amq.default".to_owned()
        } else {
            exchange
        };
        Ok(Self {
            client: client(handle)?,
            exchange,
            routing_key,
            managed,
            declared: false,
        })
    }

    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        if let (Some(queue), false) = (&self.managed, self.declared) {
            declare(&self.client, queue, deadline).await?;
            self.declared = true;
        }
        let body = json!({
            "properties": {"content_type": "application/json"},
            "routing_key": self.routing_key,
            "payload": marker.json(),
            "payload_encoding": "string",
        });
        let answer = self
            .client
            .send(
                Method::POST,
                &["exchanges", VHOST, &self.exchange, "publish"],
                &body,
                deadline,
            )
            .await?;
        match answer {
            Answer::Found(answer) if answer["routed"] == json!(true) => Ok(()),
            Answer::Found(_) => {
                // A managed queue deleted behind our back is declared again next time.
                self.declared = false;
                Err(ProbeError::new(
                    ErrorReason::Query,
                    format!(
                        "the marker published to exchange {} with routing key {} reached no queue",
                        self.exchange, self.routing_key
                    ),
                ))
            }
            Answer::NotFound => Err(ProbeError::new(
                ErrorReason::Query,
                format!("exchange {} does not exist in vhost {VHOST}", self.exchange),
            )),
        }
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let server = self.client.check(deadline).await?;
        Ok(match &self.managed {
            Some(queue) => format!("{server}; markers are published to queue {queue}"),
            None => format!(
                "{server}; markers are published to exchange {} with routing key {}",
                self.exchange, self.routing_key
            ),
        })
    }
}

/// Takes markers off a queue.
pub struct RabbitmqReader {
    client: Arc<RabbitmqClient>,
    queue: String,
    managed: bool,
    instance: String,
    probe: String,
    /// The highest seq of this instance's and probe's markers taken so far.
    highest: Option<i64>,
}

impl RabbitmqReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let (queue, managed) = match &spec.read.target {
            ReadTarget::RabbitmqQueue(queue) => (with_instance(queue, &spec.instance), false),
            _ => (managed_queue(&spec.instance, probe), true),
        };
        Ok(Self {
            client: client(handle)?,
            queue,
            managed,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
            highest: None,
        })
    }

    /// The queue keeps what is routed to it whether or not anyone reads: declares lagbudget's
    /// own queue, or checks that the user's exists.
    pub async fn listen(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        if self.managed {
            return declare(&self.client, &self.queue, deadline).await;
        }
        match self
            .client
            .get(&["queues", VHOST, &self.queue], Some("columns=name"), deadline)
            .await?
        {
            Answer::Found(_) => Ok(()),
            Answer::NotFound => Err(self.missing()),
        }
    }

    fn missing(&self) -> ProbeError {
        ProbeError::new(
            ErrorReason::Query,
            format!("queue {} does not exist in vhost {VHOST}", self.queue),
        )
    }

    /// Takes what the queue holds and returns the highest seq of this instance's and probe's
    /// markers taken so far.
    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let body = json!({
            "count": GET_COUNT,
            "ackmode": "ack_requeue_false",
            "encoding": "auto",
            "truncate": 65536,
        });
        for _ in 0..GETS_PER_READ {
            let answer = self
                .client
                .send(
                    Method::POST,
                    &["queues", VHOST, &self.queue, "get"],
                    &body,
                    deadline,
                )
                .await?;
            let messages = match answer {
                Answer::Found(Value::Array(messages)) => messages,
                Answer::Found(_) => {
                    return Err(ProbeError::new(
                        ErrorReason::Decode,
                        "the queue's get answer is not a list of messages",
                    ));
                }
                Answer::NotFound => return Err(self.missing()),
            };
            for message in &messages {
                let seq = message["payload"]
                    .as_str()
                    .filter(|_| message["payload_encoding"] == "string")
                    .and_then(|payload| serde_json::from_str::<Value>(payload).ok())
                    .and_then(|json| seq_of_marker(&json, &self.instance, &self.probe));
                if let Some(seq) = seq {
                    self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
                }
            }
            if messages.len() < GET_COUNT {
                break;
            }
        }
        Ok(self.highest)
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let server = self.client.check(deadline).await?;
        match self
            .client
            .get(&["queues", VHOST, &self.queue], Some("columns=name,messages"), deadline)
            .await?
        {
            Answer::Found(queue) => Ok(format!(
                "{server}; queue {} holds {} messages, taken off by the canary's reads",
                self.queue,
                queue["messages"].as_u64().unwrap_or_default()
            )),
            Answer::NotFound if self.managed => Ok(format!(
                "{server}; queue {} does not exist yet, declared at the first run",
                self.queue
            )),
            Answer::NotFound => Err(self.missing()),
        }
    }
}
