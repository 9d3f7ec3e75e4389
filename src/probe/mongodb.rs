//! The clients of one `mongodb` source: one driver client for the replica set (server discovery
//! and monitoring; writes and `check --connect` go through it), and one direct client per
//! member (`directConnection=true`, the source's URI with the member as the only host), made on
//! first use and kept, so that a `mongodb_replica` probe reads each member itself rather than
//! whichever server the driver would select.
//!
//! The URI is parsed by the driver when the first client is made (its parser is async), once
//! per source handle. Unless the URI sets them, server selection and connecting wait at most
//! `SELECTION_TIMEOUT` (the driver's 30 s default would outlast every probe's deadline and turn
//! "no such server" into a bare timeout).

pub mod config;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::Document;
use mongodb::error::{Error, ErrorKind};
use mongodb::options::{ClientOptions, ReadPreference, SelectionCriteria, ServerAddress};
use tokio::sync::OnceCell;
use tokio::time::{Instant, timeout_at};

use super::heartbeat::WriterRegistry;
use super::{ErrorReason, ProbeError};
use crate::model::{MongodbSource, Secret};

/// Server selection and connect timeouts unless the URI sets its own.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

pub struct MongoClient {
    uri: Secret,
    replica_set: Option<String>,
    redacted: String,
    max_pool_size: u32,
    options: OnceCell<ClientOptions>,
    set: OnceCell<Client>,
    /// Direct clients by member address (`host:port`).
    members: Mutex<HashMap<String, Client>>,
    /// The heartbeat writers of `mongodb_replica` probes with `method: heartbeat` (one per
    /// probe, shared by its per-member runners).
    pub heartbeat_writers: WriterRegistry,
}

impl MongoClient {
    /// Remembers the URI; parses and connects to nothing (the driver's parser is async).
    pub fn new(spec: &MongodbSource, max_connections: usize) -> Self {
        Self {
            uri: spec.uri.clone(),
            replica_set: spec.replica_set.clone(),
            redacted: spec.redacted.clone(),
            max_pool_size: u32::try_from(max_connections).unwrap_or(u32::MAX),
            options: OnceCell::new(),
            set: OnceCell::new(),
            members: Mutex::new(HashMap::new()),
            heartbeat_writers: WriterRegistry::default(),
        }
    }

    /// The set the URI names (`replicaSet`), which every member must belong to.
    pub fn replica_set(&self) -> Option<&str> {
        self.replica_set.as_deref()
    }

    async fn options(&self) -> Result<&ClientOptions, ProbeError> {
        self.options
            .get_or_try_init(|| async {
                let mut options = ClientOptions::parse(self.uri.expose()).await.map_err(|e| {
                    // Validation parsed this URI already; never echo it, it may hold a password.
                    ProbeError::new(
                        ErrorReason::Connect,
                        format!("invalid MongoDB URI {}: {}", self.redacted, e.kind),
                    )
                })?;
                options.server_selection_timeout = Some(
                    options
                        .server_selection_timeout
                        .unwrap_or(SELECTION_TIMEOUT),
                );
                options.connect_timeout =
                    Some(options.connect_timeout.unwrap_or(SELECTION_TIMEOUT));
                options.max_pool_size = Some(self.max_pool_size);
                options.app_name = Some(options.app_name.unwrap_or_else(|| "lagbudget".to_owned()));
                Ok(options)
            })
            .await
    }

    /// The client of the whole set (or of the one server the URI names).
    pub async fn set(&self) -> Result<Client, ProbeError> {
        self.set
            .get_or_try_init(|| async {
                let options = self.options().await?.clone();
                Client::with_options(options).map_err(|e| connect_error(&e))
            })
            .await
            .cloned()
    }

    /// The direct client of the member at `address` (`host:port`), made on first use.
    pub async fn member(&self, address: &str) -> Result<Client, ProbeError> {
        if let Some(client) = self.lock_members().get(address) {
            return Ok(client.clone());
        }
        let mut options = self.options().await?.clone();
        let host = ServerAddress::parse(address).map_err(|e| {
            ProbeError::new(
                ErrorReason::Connect,
                format!("invalid member address {address}: {}", e.kind),
            )
        })?;
        options.hosts = vec![host];
        options.direct_connection = Some(true);
        // The member is checked against the set by what it reports (a member removed from the
        // set has no set name, and must still answer so that the probe can say so).
        options.repl_set_name = None;
        let client = Client::with_options(options).map_err(|e| connect_error(&e))?;
        // Another run may have made one meanwhile: keep the first, so the pool is shared.
        Ok(self
            .lock_members()
            .entry(address.to_owned())
            .or_insert(client)
            .clone())
    }

    fn lock_members(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `hello` through the set's client: the `check --connect` answer for this source.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let client = self.set().await?;
        let hello = command(
            &client,
            "admin",
            mongodb::bson::doc! { "hello": 1 },
            deadline,
            "hello",
        )
        .await?;
        let set = hello.get_str("setName").ok();
        let primary = hello.get_str("primary").ok();
        let hosts = hello.get_array("hosts").map(Vec::len).unwrap_or(0);
        Ok(match (set, primary) {
            (Some(set), Some(primary)) => {
                format!("replica set {set} answers: {hosts} members, primary {primary}")
            }
            (Some(set), None) => format!("replica set {set} answers, without a primary"),
            _ => "server answers (not a replica set member)".to_owned(),
        })
    }
}

/// Runs `body` on `database` through `client` by `deadline`, reading from whichever server
/// the client reaches (a direct client's member, whatever its state).
pub async fn command(
    client: &Client,
    database: &str,
    body: Document,
    deadline: Instant,
    what: &str,
) -> Result<Document, ProbeError> {
    try_command(client, database, body, deadline, what)
        .await
        .map_err(|(error, _)| error)
}

/// Runs `body` on the set's primary (the default read preference): for writes, and reads that
/// must see what was written.
pub async fn write_command(
    client: &Client,
    database: &str,
    body: Document,
    deadline: Instant,
    what: &str,
) -> Result<Document, ProbeError> {
    let database = client.database(database);
    let run = database.run_command(body);
    settle(timeout_at(deadline, run).await, what).map_err(|(error, _)| error)
}

/// `command`, with the server's error code beside the error when the server refused it.
pub async fn try_command(
    client: &Client,
    database: &str,
    body: Document,
    deadline: Instant,
    what: &str,
) -> Result<Document, (ProbeError, Option<i32>)> {
    let database = client.database(database);
    let run = database
        .run_command(body)
        .selection_criteria(SelectionCriteria::ReadPreference(
            ReadPreference::PrimaryPreferred {
                options: Default::default(),
            },
        ));
    settle(timeout_at(deadline, run).await, what)
}

fn settle(
    answer: Result<mongodb::error::Result<Document>, tokio::time::error::Elapsed>,
    what: &str,
) -> Result<Document, (ProbeError, Option<i32>)> {
    match answer {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => {
            let code = match error.kind.as_ref() {
                ErrorKind::Command(command) => Some(command.code),
                _ => None,
            };
            Err((call_error(&error, what), code))
        }
        Err(_) => Err((
            ProbeError::new(
                ErrorReason::Timeout,
                format!("{what} did not answer before the deadline"),
            ),
            None,
        )),
    }
}

/// The driver's error as a probe error: unreachable servers and refused credentials are
/// `connect`, a command the server refused is `query`, an answer the driver could not read is
/// `decode`.
pub fn call_error(error: &Error, what: &str) -> ProbeError {
    let (reason, detail) = match error.kind.as_ref() {
        ErrorKind::Command(command) => (
            ErrorReason::Query,
            format!(
                "{} ({} {})",
                command.message, command.code, command.code_name
            ),
        ),
        ErrorKind::Write(failure) => (ErrorReason::Query, format!("{failure:?}")),
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            (ErrorReason::Decode, error.kind.to_string())
        }
        _ => return connect_error(error),
    };
    ProbeError::new(reason, format!("{what}: {detail}"))
}

fn connect_error(error: &Error) -> ProbeError {
    let detail = match error.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => {
            // The driver's message describes the whole topology; its first sentence says why.
            let first = message.split(". Topology:").next().unwrap_or(message);
            format!("no server could be selected: {first}")
        }
        ErrorKind::Authentication { message, .. } => format!("authentication failed: {message}"),
        other => other.to_string(),
    };
    ProbeError::new(ErrorReason::Connect, detail)
}
