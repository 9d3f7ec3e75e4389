//! PostgreSQL connections shared by the probes of one source: the small pool of `pool.rs`
//! (hard cap, waits that end at the run's deadline with `pool_timeout`, a connection kept only
//! after a successful run) over `tokio_postgres` clients.

pub mod config;
pub mod query;

use std::str::FromStr;

use tokio::time::{Instant, timeout_at};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::heartbeat::WriterRegistry;
use super::pool::{Connection, Pool, Pooled};
use super::{ErrorReason, ProbeError};
use crate::model::PostgresSource;

pub struct PgPool {
    pool: Pool<Client>,
    config: tokio_postgres::Config,
    /// The heartbeat writers of replica probes whose primary is this source.
    pub heartbeat_writers: WriterRegistry,
}

/// A connection checked out of the pool. Dropped: closed. `release`d: back to the pool.
pub type PooledClient<'a> = Pooled<'a, Client>;

impl Connection for Client {
    fn is_closed(&self) -> bool {
        Client::is_closed(self)
    }
}

impl PgPool {
    pub fn new(
        source: &str,
        spec: &PostgresSource,
        max_connections: usize,
    ) -> Result<Self, ProbeError> {
        let mut config = tokio_postgres::Config::from_str(spec.dsn.expose()).map_err(|_| {
            // Validation parsed this DSN already; never echo it, it may hold a password.
            ProbeError::new(ErrorReason::Connect, "invalid connection string")
        })?;
        if config.get_application_name().is_none() {
            config.application_name("lagbudget");
        }
        Ok(Self {
            pool: Pool::new(source, max_connections),
            config,
            heartbeat_writers: WriterRegistry::default(),
        })
    }

    /// Checks out a connection, reusing an idle one or opening a new one, by `deadline`.
    pub async fn get(&self, deadline: Instant) -> Result<PooledClient<'_>, ProbeError> {
        self.pool.get(deadline, || self.connect(deadline)).await
    }

    async fn connect(&self, deadline: Instant) -> Result<Client, ProbeError> {
        let connecting = self.config.connect(NoTls);
        let (client, connection) = match timeout_at(deadline, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(error)) => return Err(connect_error(&error)),
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "connecting did not complete before the deadline",
                ));
            }
        };
        // The connection future drives the socket; it ends when the client is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects and runs `SELECT version()`: the `check --connect` answer for this source.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let client = self.get(deadline).await?;
        let row = timeout_at(deadline, client.query_one("SELECT version()", &[]))
            .await
            .map_err(|_| ProbeError::new(ErrorReason::Timeout, "query timed out"))?
            .map_err(|e| query_error(&e))?;
        let version: String = row
            .try_get(0)
            .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))?;
        client.release();
        Ok(version)
    }
}

/// Maps an error from connecting to a bounded reason. Server messages (authentication
/// failures) name the user but never the password.
pub fn connect_error(error: &tokio_postgres::Error) -> ProbeError {
    match error.as_db_error() {
        Some(db) => ProbeError::new(
            ErrorReason::Connect,
            format!("{}: {}", db.code().code(), db.message()),
        ),
        None => ProbeError::new(ErrorReason::Connect, error.to_string()),
    }
}

/// Maps an error from a query: statement timeouts are `timeout`, a dropped connection is
/// `connect`, anything the server rejected is `query`.
pub fn query_error(error: &tokio_postgres::Error) -> ProbeError {
    if let Some(db) = error.as_db_error() {
        let reason = if *db.code() == SqlState::QUERY_CANCELED {
            ErrorReason::Timeout
        } else {
            ErrorReason::Query
        };
        return ProbeError::new(reason, format!("{}: {}", db.code().code(), db.message()));
    }
    if error.is_closed() {
        return ProbeError::new(ErrorReason::Connect, "connection closed");
    }
    ProbeError::new(ErrorReason::Query, error.to_string())
}
