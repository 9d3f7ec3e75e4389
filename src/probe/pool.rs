//! The small connection pool behind the PostgreSQL and MySQL sources, generic over the
//! driver's connection type.
//!
//! Deliberately tiny instead of a general pool crate: we need exactly three behaviours that
//! decide what users see — a wait that ends at the run's deadline with `pool_timeout`, a
//! connection kept only after a successful run (a failed run drops it, so the next run
//! reconnects, as vector's postgres source does), and errors mapped to bounded reasons (the
//! driver's connect closure does that).

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, timeout_at};

use super::{ErrorReason, ProbeError};

/// A driver connection the pool can hold.
pub trait Connection {
    /// Whether the driver already knows the connection is gone (never reused or kept then).
    fn is_closed(&self) -> bool;
}

pub struct Pool<C> {
    source: String,
    max_connections: usize,
    permits: Semaphore,
    idle: Mutex<Vec<C>>,
}

/// A connection checked out of the pool. Dropped: closed. `release`d: back to the pool.
pub struct Pooled<'a, C: Connection> {
    conn: Option<C>,
    idle: &'a Mutex<Vec<C>>,
    _permit: SemaphorePermit<'a>,
}

impl<C: Connection> std::ops::Deref for Pooled<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        // The connection is only taken out by `release`, which consumes self.
        self.conn
            .as_ref()
            .expect("connection present until released")
    }
}

impl<C: Connection> std::ops::DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("connection present until released")
    }
}

impl<C: Connection> Pooled<'_, C> {
    /// Returns a connection that just completed a run successfully to the pool.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_closed() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
            }
        }
    }
}

impl<C: Connection> Pool<C> {
    pub fn new(source: &str, max_connections: usize) -> Self {
        Self {
            source: source.to_owned(),
            max_connections,
            permits: Semaphore::new(max_connections),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Checks out a connection, reusing an idle one or opening a new one with `connect`, by
    /// `deadline`.
    pub async fn get<F>(
        &self,
        deadline: Instant,
        connect: impl FnOnce() -> F,
    ) -> Result<Pooled<'_, C>, ProbeError>
    where
        F: Future<Output = Result<C, ProbeError>>,
    {
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
            while let Some(conn) = idle.pop() {
                if !conn.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(conn) => conn,
            None => connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            idle: &self.idle,
            _permit: permit,
        })
    }
}

