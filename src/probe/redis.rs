//! The Redis connection of one `redis` source: a single multiplexed connection shared by every
//! probe of the source, opened lazily and dropped after a failed call so that the next run
//! reconnects.
//!
//! A multiplexed connection rather than a pool: Redis answers one command at a time per
//! connection anyway, each probe sends one short script per run, and pipelining many probes'
//! requests over one socket is what the protocol is built for.

pub mod config;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::time::{Instant, timeout_at};

use super::pool::SharedConnection;
use super::{ErrorReason, ProbeError};
use crate::model::RedisSource;

pub struct RedisClient {
    client: redis::Client,
    connection: SharedConnection<MultiplexedConnection>,
}

impl RedisClient {
    /// Parses the URL; connects to nothing.
    pub fn new(source: &str, spec: &RedisSource) -> Result<Self, ProbeError> {
        let client = redis::Client::open(spec.url.expose()).map_err(|_| {
            // Validation parsed this URL already; never echo it, it may hold a password.
            ProbeError::new(ErrorReason::Connect, "invalid Redis URL")
        })?;
        Ok(Self {
            client,
            connection: SharedConnection::new(source),
        })
    }

    /// The shared connection, opened by `deadline` if there is none.
    pub async fn connection(&self, deadline: Instant) -> Result<MultiplexedConnection, ProbeError> {
        self.connection
            .get(deadline, |left| async move {
                // The client's own timeout bounds the handshake. Calls get no client-side
                // response timeout: the connection outlives this run, and a timeout fixed now
                // (from this run's time left, or the client's 500 ms default) would cut later
                // runs short of their own deadlines; each call is bounded by `timeout_at` on
                // its run's deadline instead.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(left))
                    .set_response_timeout(None);
                let connecting = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                connecting.await.map_err(|error| connect_error(&error))
            })
            .await
    }

    /// Forgets the shared connection after a failed call, so that the next run reconnects
    /// instead of reusing a socket in an unknown state.
    ///
    /// Never waits: the lock is held for long only while another run connects, and then the
    /// slot is empty already. Waiting there would hold this run past its deadline (the
    /// scheduler would replace its error by a generic timeout).
    pub fn discard(&self) {
        self.connection.discard();
    }

    /// One call on the shared connection, by `deadline`. A failed or late call drops the
    /// connection (unless the server merely refused the command: `query`), so that the next
    /// run reconnects instead of reusing a socket in an unknown state.
    pub async fn call<T>(
        &self,
        what: &str,
        deadline: Instant,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, ProbeError> {
        self.settle(what, timeout_at(deadline, call).await)
    }

    /// What `call` makes of an answer, for a caller that maps some server errors itself first.
    pub fn settle<T>(
        &self,
        what: &str,
        answer: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, ProbeError> {
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let error = call_error(&error);
                if error.reason != ErrorReason::Query {
                    self.discard();
                }
                Err(error)
            }
            Err(_) => {
                // The answer may still arrive on the shared socket; a new one is cleaner.
                self.discard();
                Err(ProbeError::new(
                    ErrorReason::Timeout,
                    format!("{what} did not answer before the deadline"),
                ))
            }
        }
    }

    /// Connects and reads the server's version: the `check --connect` answer for this source.
    /// The probes need Redis 7.0 (read-only scripts, `XINFO GROUPS` lag), so older servers fail.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let mut connection = self.connection(deadline).await?;
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let answer: Result<String, ProbeError> =
            match timeout_at(deadline, info.query_async::<String>(&mut connection)).await {
                Ok(Ok(text)) => Ok(text),
                Ok(Err(error)) => Err(call_error(&error)),
                Err(_) => Err(ProbeError::new(ErrorReason::Timeout, "INFO timed out")),
            };
        let text = match answer {
            Ok(text) => text,
            Err(error) => {
                self.discard();
                return Err(error);
            }
        };
        let version = text
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(str::trim)
            .ok_or_else(|| ProbeError::new(ErrorReason::Decode, "INFO has no redis_version"))?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!("Redis {version}: the redis probe kinds need Redis 7.0 or later"),
            ));
        }
        Ok(format!("Redis {version}"))
    }
}

/// Maps an error from connecting: everything is `connect` except a timeout.
pub fn connect_error(error: &RedisError) -> ProbeError {
    if error.is_timeout() {
        return ProbeError::new(ErrorReason::Timeout, "connecting timed out");
    }
    ProbeError::new(ErrorReason::Connect, error_text(error))
}

/// Maps an error from a call: a broken socket is `connect`, a timeout `timeout`, an answer the
/// client cannot parse `decode`, anything the server refused (permissions, unknown command)
/// `query`.
pub fn call_error(error: &RedisError) -> ProbeError {
    let reason = if error.is_timeout() {
        ErrorReason::Timeout
    } else if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped()
    {
        ErrorReason::Connect
    } else if matches!(
        error.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        ErrorReason::Decode
    } else {
        ErrorReason::Query
    };
    ProbeError::new(reason, error_text(error))
}

/// The error's own words on one line; the client never puts the URL or password in them.
fn error_text(error: &RedisError) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
