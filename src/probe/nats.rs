//! The NATS client of one `nats` source (async-nats), shared by every probe of the source.
//!
//! Opened lazily by the first run that needs it. Once connected, the client reconnects by
//! itself in the background; while it is not connected, runs fail at once with `connect`
//! rather than waiting for their requests to time out.

pub mod config;

use async_nats::connection::State;
use async_nats::jetstream::{self, Context};
use async_nats::{ConnectErrorKind, ConnectOptions, RequestErrorKind};
use tokio::time::{Instant, timeout_at};

use super::pool::SharedConnection;
use super::{ErrorReason, ProbeError};
use crate::model::NatsSource;

pub struct NatsClient {
    url: crate::model::Secret,
    client: SharedConnection<async_nats::Client>,
}

impl NatsClient {
    /// Connects to nothing; the URL was validated with the config.
    pub fn new(source: &str, spec: &NatsSource) -> Self {
        Self {
            url: spec.url.clone(),
            client: SharedConnection::new(source),
        }
    }

    /// A JetStream context whose requests time out at `deadline`, connecting first if needed.
    pub async fn jetstream(&self, deadline: Instant) -> Result<Context, ProbeError> {
        let client = self.client(deadline).await?;
        if client.connection_state() != State::Connected {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                "not connected to the NATS server (reconnecting)",
            ));
        }
        let mut context = jetstream::new(client);
        let left = deadline.saturating_duration_since(crate::clock::instant());
        context.set_timeout(left.max(std::time::Duration::from_millis(1)));
        Ok(context)
    }

    pub(crate) async fn client(&self, deadline: Instant) -> Result<async_nats::Client, ProbeError> {
        self.client
            .get(deadline, |left| async move {
                let mut options = ConnectOptions::new()
                    .name("lagbudget")
                    .connection_timeout(left);
                // The client does not take credentials from the URL itself: a user with a
                // password is user and password, a user alone is a token, as in the NATS tools.
                if let Ok(addr) = self.url.expose().parse::<async_nats::ServerAddr>() {
                    match (addr.username(), addr.password()) {
                        (Some(user), Some(password)) => {
                            options =
                                options.user_and_password(user.to_owned(), password.to_owned());
                        }
                        (Some(token), None) => options = options.token(token.to_owned()),
                        _ => {}
                    }
                }
                options.connect(self.url.expose()).await.map_err(|error| {
                    let reason = match error.kind() {
                        ConnectErrorKind::TimedOut => ErrorReason::Timeout,
                        _ => ErrorReason::Connect,
                    };
                    // The client's messages name the address, never the password; the caller
                    // scrubs secrets all the same.
                    ProbeError::new(reason, error.to_string())
                })
            })
            .await
    }

    /// Connects and asks for the JetStream account info: the `check --connect` answer. Read as
    /// plain JSON, because the client's typed account info expects fields older servers lack.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let client = self.client(deadline).await?;
        if client.connection_state() != State::Connected {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                "not connected to the NATS server (reconnecting)",
            ));
        }
        let answer = match timeout_at(deadline, client.request("$JS.API.INFO", "".into())).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => {
                let reason = match error.kind() {
                    RequestErrorKind::TimedOut => ErrorReason::Timeout,
                    // Nobody answers the JetStream API: it is not enabled for this account.
                    RequestErrorKind::NoResponders => ErrorReason::Query,
                    RequestErrorKind::Other => ErrorReason::Connect,
                };
                return Err(ProbeError::new(
                    reason,
                    format!("JetStream account info: {error}"),
                ));
            }
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "JetStream did not answer before the deadline",
                ));
            }
        };
        let info: serde_json::Value = serde_json::from_slice(&answer.payload).map_err(|_| {
            ProbeError::new(ErrorReason::Decode, "JetStream account info is not JSON")
        })?;
        if let Some(description) = info["error"]["description"].as_str() {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!("JetStream account info: {description}"),
            ));
        }
        let count = |key: &str| info[key].as_u64().unwrap_or_default();
        Ok(format!(
            "JetStream answers, {} streams, {} consumers",
            count("streams"),
            count("consumers")
        ))
    }
}
