//! MySQL and MariaDB connections shared by the probes of one source: the small pool of
//! `pool.rs` (hard cap, waits that end at the run's deadline with `pool_timeout`, a
//! connection kept only after a successful run), over `mysql_async` connections.
//!
//! `mysql_async` has a pool of its own, but its waits have no deadline and it returns a
//! connection to the pool whenever it is dropped, even after a failed or abandoned query; the
//! run deadline and "a failed run reconnects" are what users see, so we keep our own.

pub mod config;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::time::{Instant, timeout_at};

use super::heartbeat::WriterRegistry;
use super::pool::{Connection, Pool, Pooled};
use super::{ErrorReason, ProbeError};
use crate::model::MysqlSource;

pub struct MysqlPool {
    pool: Pool<Conn>,
    opts: Opts,
    /// The heartbeat writers of replica probes whose primary is this source.
    pub heartbeat_writers: WriterRegistry,
}

/// A connection checked out of the pool. Dropped: closed. `release`d: back to the pool.
pub type PooledConn<'a> = Pooled<'a, Conn>;

impl Connection for Conn {
    /// `mysql_async` finds a broken connection only by using it; a failed run drops it.
    fn is_closed(&self) -> bool {
        false
    }
}

impl MysqlPool {
    pub fn new(
        source: &str,
        spec: &MysqlSource,
        max_connections: usize,
    ) -> Result<Self, ProbeError> {
        let opts = Opts::from_url(spec.url.expose()).map_err(|_| {
            // Validation parsed this URL already; never echo it, it may hold a password.
            ProbeError::new(ErrorReason::Connect, "invalid MySQL URL")
        })?;
        Ok(Self {
            pool: Pool::new(source, max_connections),
            opts,
            heartbeat_writers: WriterRegistry::default(),
        })
    }

    pub fn source(&self) -> &str {
        self.pool.source()
    }

    /// Checks out a connection, reusing an idle one or opening a new one, by `deadline`.
    pub async fn get(&self, deadline: Instant) -> Result<PooledConn<'_>, ProbeError> {
        self.pool.get(deadline, || self.connect(deadline)).await
    }

    async fn connect(&self, deadline: Instant) -> Result<Conn, ProbeError> {
        match timeout_at(deadline, Conn::new(self.opts.clone())).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(connect_error(&error)),
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                "connecting did not complete before the deadline",
            )),
        }
    }

    /// Connects and reads the server's version: the `check --connect` answer for this source.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let mut conn = self.get(deadline).await?;
        let version: Option<String> = run(deadline, conn.query_first("SELECT VERSION()")).await?;
        conn.release();
        version
            .ok_or_else(|| ProbeError::new(ErrorReason::NoData, "SELECT VERSION() returned no row"))
    }
}

/// Runs one statement future with the run's deadline. A statement that does not finish is
/// abandoned with its connection (dropped by the caller, never released to the pool).
pub async fn run<T>(
    deadline: Instant,
    statement: impl std::future::Future<Output = mysql_async::Result<T>>,
) -> Result<T, ProbeError> {
    match timeout_at(deadline, statement).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(query_error(&error)),
        Err(_) => Err(ProbeError::new(
            ErrorReason::Timeout,
            "statement did not complete before the deadline",
        )),
    }
}

/// Maps an error from connecting to a bounded reason. Server messages (access denied) name
/// the user but never the password.
pub fn connect_error(error: &mysql_async::Error) -> ProbeError {
    match error {
        mysql_async::Error::Server(server) => ProbeError::new(
            ErrorReason::Connect,
            format!("{}: {}", server.code, server.message),
        ),
        mysql_async::Error::Io(io) => ProbeError::new(ErrorReason::Connect, io_message(io)),
        other => ProbeError::new(ErrorReason::Connect, other.to_string()),
    }
}

/// The operating system's message ("Connection refused (os error 111)") without the two
/// "Input/output error:" prefixes the driver adds.
fn io_message(error: &mysql_async::IoError) -> String {
    match error {
        mysql_async::IoError::Io(io) => io.to_string(),
        // TLS errors exist only when the driver is built with a TLS feature.
        #[allow(unreachable_patterns)]
        other => other.to_string(),
    }
}

/// MariaDB's `max_statement_time` and MySQL's `max_execution_time` interrupts.
const STATEMENT_TIMEOUT_CODES: [u16; 2] = [1969, 3024];

/// Maps an error from a statement: a statement time limit is `timeout`, a broken connection
/// is `connect`, anything the server rejected is `query`.
pub fn query_error(error: &mysql_async::Error) -> ProbeError {
    match error {
        mysql_async::Error::Server(server) => {
            let reason = if STATEMENT_TIMEOUT_CODES.contains(&server.code) {
                ErrorReason::Timeout
            } else {
                ErrorReason::Query
            };
            ProbeError::new(reason, format!("{}: {}", server.code, server.message))
        }
        mysql_async::Error::Io(io) => ProbeError::new(ErrorReason::Connect, io_message(io)),
        mysql_async::Error::Driver(driver) => {
            ProbeError::new(ErrorReason::Connect, driver.to_string())
        }
        other => ProbeError::new(ErrorReason::Query, other.to_string()),
    }
}
