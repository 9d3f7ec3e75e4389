//! How sources hold their connections, generic over the driver's connection type: the small
//! pool behind the PostgreSQL and MySQL sources, and the one lazily opened connection shared
//! by every probe of a Redis or NATS source (`SharedConnection`).
//!
//! Deliberately tiny instead of a general pool crate: we need exactly three behaviours that
//! decide what users see — a wait that ends at the run's deadline with `pool_timeout`, a
//! connection kept only after a successful run (a failed run drops it, so the next run
//! reconnects, as vector's postgres source does), and errors mapped to bounded reasons (the
//! driver's connect closure does that).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::{Instant, timeout_at};

use super::{ErrorReason, ProbeError};

/// A driver connection the pool can hold.
pub trait Connection {
    /// Whether the driver already knows the connection is gone (never reused or kept then).
    fn is_closed(&self) -> bool;
}

pub struct Pool<C> {
    slots: Slots,
    idle: Mutex<Vec<C>>,
}

/// At most `max` uses of one source at once (connections of a pool, requests in flight of an
/// HTTP client), shared by its probes: waiting for one ends at the run's deadline with
/// `pool_timeout`, naming the source and what it ran out of.
pub struct Slots {
    source: String,
    max: usize,
    /// What a slot is, in the error ("connections", "request slots").
    what: &'static str,
    permits: Semaphore,
}

impl Slots {
    pub fn new(source: &str, max: usize, what: &'static str) -> Self {
        Self {
            source: source.to_owned(),
            max,
            what,
            permits: Semaphore::new(max),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// One slot, held until the permit is dropped, by `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, ProbeError> {
        match timeout_at(deadline, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ProbeError::new(
                ErrorReason::Connect,
                format!("the {} of source {} are closed", self.what, self.source),
            )),
            Err(_) => Err(ProbeError::new(
                ErrorReason::PoolTimeout,
                format!(
                    "all {} {} of source {} stayed busy until the deadline",
                    self.max, self.what, self.source
                ),
            )),
        }
    }
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
            slots: Slots::new(source, max_connections, "connections"),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn source(&self) -> &str {
        self.slots.source()
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
        let permit = self.slots.acquire(deadline).await?;
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

/// One connection shared by every probe of a source, opened by the first run that needs it.
/// Locked while connecting, so concurrent probes wait for one connection instead of each
/// opening their own.
pub struct SharedConnection<C> {
    source: String,
    slot: tokio::sync::Mutex<Option<C>>,
}

impl<C: Clone> SharedConnection<C> {
    pub fn new(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The shared connection, opened by `deadline` with `connect` (given the time left, for
    /// the driver's own connect timeout) if there is none.
    pub async fn get<F>(
        &self,
        deadline: Instant,
        connect: impl FnOnce(Duration) -> F,
    ) -> Result<C, ProbeError>
    where
        F: Future<Output = Result<C, ProbeError>>,
    {
        let mut slot = timeout_at(deadline, self.slot.lock()).await.map_err(|_| {
            ProbeError::new(
                ErrorReason::PoolTimeout,
                format!(
                    "connecting to source {} took until the deadline",
                    self.source
                ),
            )
        })?;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let left = deadline.saturating_duration_since(crate::clock::instant());
        if left.is_zero() {
            return Err(ProbeError::new(
                ErrorReason::Timeout,
                "no time left to connect",
            ));
        }
        let conn = match timeout_at(deadline, connect(left)).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "connecting did not complete before the deadline",
                ));
            }
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the shared connection, so that the next run reconnects. Never waits: the lock
    /// is held for long only while another run connects, and then the slot is empty already.
    pub fn discard(&self) {
        if let Ok(mut slot) = self.slot.try_lock() {
            *slot = None;
        }
    }
}
