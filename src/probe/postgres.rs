//! PostgreSQL connections shared by the probes of one source: a small pool with a hard cap,
//! where waiting for a connection counts against the probe's deadline.
//!
//! Deliberately tiny instead of a general pool crate: we need exactly three behaviours that
//! decide what users see — a wait that ends at the run's deadline with `pool_timeout`, a
//! connection kept only after a successful run (a failed run drops it, so the next run
//! reconnects, as vector's postgres source does), and errors mapped to bounded reasons.

use std::str::FromStr;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, timeout_at};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::{ErrorReason, ProbeError};
use crate::model::PostgresSource;

pub struct PgPool {
    source: String,
    config: tokio_postgres::Config,
    max_connections: usize,
    permits: Semaphore,
    idle: Mutex<Vec<Client>>,
}

/// A connection checked out of the pool. Dropped: closed. `release`d: back to the pool.
pub struct PooledClient<'a> {
    client: Option<Client>,
    pool: &'a PgPool,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for PooledClient<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // The client is only taken out by `release`, which consumes self.
        self.client.as_ref().expect("client present until released")
    }
}

impl std::ops::DerefMut for PooledClient<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until released")
    }
}

impl PooledClient<'_> {
    /// Returns a connection that just completed a run successfully to the pool.
    pub fn release(mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(client);
                }
            }
        }
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
            source: source.to_owned(),
            config,
            max_connections,
            permits: Semaphore::new(max_connections),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Checks out a connection, reusing an idle one or opening a new one, by `deadline`.
    pub async fn get(&self, deadline: Instant) -> Result<PooledClient<'_>, ProbeError> {
        let permit = match timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ProbeError::new(ErrorReason::Connect, "pool closed")),
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::PoolTimeout,
                    format!(
                        "all {} connections of source {} stayed busy until the deadline",
                        self.max_connections, self.source
                    ),
                ));
            }
        };
        let reused = {
            let mut idle = self.idle.lock().map_err(|_| {
                ProbeError::new(ErrorReason::Connect, "connection pool lock poisoned")
            })?;
            let mut found = None;
            while let Some(client) = idle.pop() {
                if !client.is_closed() {
                    found = Some(client);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(client) => client,
            None => self.connect(deadline).await?,
        };
        Ok(PooledClient {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
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
