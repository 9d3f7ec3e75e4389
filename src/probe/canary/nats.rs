//! Canary markers on NATS: the marker as JSON, published on a subject (core NATS), and read
//! back by a subscription to it.
//!
//! lagbudget's own subject, for a bare `{source}`, is `lagbudget.canary.<instance>`. Core NATS
//! keeps nothing: a marker published while no one listens is gone, so nothing piles up, and
//! every subscriber gets its own copy (several views of one subject do not compete). A marker
//! dropped on the way (a reconnect) only delays the view until the next one arrives, because
//! the reader keeps the highest seq it received.

use std::sync::Arc;

use async_nats::connection::State;
use async_nats::{Client, Subscriber};
use futures_util::{FutureExt, StreamExt};
use tokio::time::{Instant, timeout_at};

use super::config::{Canary, ReadTarget, WriteTarget};
use super::{Marker, seq_of_marker, with_instance};
use crate::probe::nats::NatsClient;
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// lagbudget's own subject for one instance's markers.
pub fn managed_subject(instance: &str) -> String {
    format!("lagbudget.canary.{instance}")
}

fn client(handle: &SourceHandle) -> Result<Arc<NatsClient>, ProbeError> {
    match handle {
        SourceHandle::Nats(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "a nats canary target needs a nats source",
        )),
    }
}

/// The source's connection, failing at once while it is reconnecting.
async fn connected(source: &NatsClient, deadline: Instant) -> Result<Client, ProbeError> {
    let client = source.client(deadline).await?;
    if client.connection_state() != State::Connected {
        return Err(ProbeError::new(
            ErrorReason::Connect,
            "not connected to the NATS server (reconnecting)",
        ));
    }
    Ok(client)
}

fn timed_out(what: &str) -> ProbeError {
    ProbeError::new(ErrorReason::Timeout, format!("{what} did not complete in time"))
}

/// Publishes markers on a subject.
pub struct NatsWriter {
    source: Arc<NatsClient>,
    subject: String,
}

impl NatsWriter {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let subject = match &spec.write.target {
            WriteTarget::NatsSubject(subject) => with_instance(subject, &spec.instance),
            _ => managed_subject(&spec.instance),
        };
        Ok(Self {
            source: client(handle)?,
            subject,
        })
    }

    /// Publishes the marker and flushes it to the server.
    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        let client = connected(&self.source, deadline).await?;
        let payload = marker.json().into_bytes().into();
        timeout_at(deadline, async {
            client
                .publish(self.subject.clone(), payload)
                .await
                .map_err(|e| {
                    ProbeError::new(ErrorReason::Connect, format!("publishing the marker: {e}"))
                })?;
            client.flush().await.map_err(|e| {
                ProbeError::new(ErrorReason::Connect, format!("flushing the marker: {e}"))
            })
        })
        .await
        .map_err(|_| timed_out("publishing the marker"))?
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let client = connected(&self.source, deadline).await?;
        Ok(format!(
            "connected to NATS {}; markers are published on subject {}",
            client.server_info().version,
            self.subject
        ))
    }
}

/// Receives markers through a subscription.
pub struct NatsReader {
    source: Arc<NatsClient>,
    subject: String,
    instance: String,
    probe: String,
    subscriber: Option<Subscriber>,
    /// The highest seq of this instance's and probe's markers received so far.
    highest: Option<i64>,
}

impl NatsReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let subject = match &spec.read.target {
            ReadTarget::NatsSubject(subject) => with_instance(subject, &spec.instance),
            _ => managed_subject(&spec.instance),
        };
        Ok(Self {
            source: client(handle)?,
            subject,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
            subscriber: None,
            highest: None,
        })
    }

    /// Subscribes, and waits until the server has the subscription: a request on a subject no
    /// one answers comes back ("no responders") only after the server has handled everything
    /// this connection sent before it, the subscription included.
    pub async fn listen(&mut self, deadline: Instant) -> Result<(), ProbeError> {
        let client = connected(&self.source, deadline).await?;
        let subscriber = timeout_at(deadline, client.subscribe(self.subject.clone()))
            .await
            .map_err(|_| timed_out("subscribing"))?
            .map_err(|e| {
                ProbeError::new(
                    ErrorReason::Connect,
                    format!("subscribing to {}: {e}", self.subject),
                )
            })?;
        let sync = format!("_INBOX.lagbudget.sync.{:016x}", fastrand::u64(..));
        // Any answer (normally "no responders") means the server is past the subscription.
        let _ = timeout_at(deadline, client.request(sync, "".into()))
            .await
            .map_err(|_| timed_out("confirming the subscription"))?;
        if let Some(mut old) = self.subscriber.replace(subscriber) {
            let _ = old.unsubscribe().await;
        }
        Ok(())
    }

    /// Takes every marker that has arrived, without waiting, and returns the highest seq of
    /// this instance's and probe's markers received so far.
    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        if self.subscriber.is_none() {
            // The subscription ended: markers sent since are lost, and the next one shows.
            self.listen(deadline).await?;
        }
        let Some(subscriber) = self.subscriber.as_mut() else {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                format!("not subscribed to {} yet", self.subject),
            ));
        };
        loop {
            match subscriber.next().now_or_never() {
                Some(Some(message)) => {
                    let seq = serde_json::from_slice::<serde_json::Value>(&message.payload)
                        .ok()
                        .and_then(|json| seq_of_marker(&json, &self.instance, &self.probe));
                    if let Some(seq) = seq {
                        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
                    }
                }
                Some(None) => {
                    // The client closed the subscription (the connection is gone for good):
                    // subscribe again at the next run.
                    self.subscriber = None;
                    return Err(ProbeError::new(
                        ErrorReason::Connect,
                        format!("the subscription to {} ended", self.subject),
                    ));
                }
                None => break,
            }
        }
        Ok(self.highest)
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let client = connected(&self.source, deadline).await?;
        Ok(format!(
            "connected to NATS {}; markers are received by subscribing to {}",
            client.server_info().version,
            self.subject
        ))
    }
}
