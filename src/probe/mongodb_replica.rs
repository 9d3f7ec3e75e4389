//! `mongodb_replica`: lag of each member of a MongoDB replica set behind its primary, over a
//! direct connection to the member (never whichever server the driver would select).
//!
//! Every run first asks the member itself (`replSetGetStatus`): a member that does not answer,
//! is not in the set, is in any state but SECONDARY or PRIMARY, or sees no primary fails with
//! `topology`, never 0. A member that is the primary right now reads 0 ("primary"): roles
//! change at run time, so the member stays expanded and says what it is.
//!
//! - `oplog` (read-only): the member's own applied optime; on the primary (direct too, and
//!   asked whether it still is the primary and still lists the member), the first oplog entry
//!   after that optime that is not a no-op (`op != "n"`). Lag = the primary's clock (its
//!   `replSetGetStatus.date`, read in the same round) − that entry's `wall`, 0 when there is
//!   none: the primary's periodic no-op writes, which make optime differences saw between 0
//!   and 10 s on an idle set, are not changes. A member whose optime stays still for more than
//!   2 × `noop_period` while the primary's moves is not applying even the no-ops: its lag is
//!   then the age of the first entry it lacks, no-op or not, so a stuck member of an idle set
//!   is not read as caught up. An optime that goes backwards, or changes term, is a position
//!   regression (a rollback or an election).
//! - `heartbeat`: the daemon writes `{_id: "<instance>/<budget>/<probe>", seq, written_at}` on
//!   the primary through the set's client every write period, and each member's run reads the
//!   seq visible there; the `HeartbeatLedger` turns it into lag on the daemon's clock.

pub mod config;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{Bson, DateTime, Document, Timestamp, doc};
use tokio::time::Instant;

use super::heartbeat::{HeartbeatLedger, PeriodicWriter, WriterTask};
use super::mongodb::{MongoClient, command, try_command, write_command};
use super::{ErrorReason, ProbeError, Reading, Sample};
use crate::clock::{instant, unix_now};
use crate::model::{MongodbHeartbeat, MongodbReplica, MongodbReplicaMethod};

/// Server error codes that mean the server is not (or no longer) a member of a set:
/// NoReplicationEnabled, InvalidReplicaSetConfig (a removed member), NotYetInitialized.
const NOT_IN_A_SET: [i32; 3] = [76, 93, 94];

/// A member's optime: the election term and the oplog timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct OpTime {
    term: i64,
    ts: Timestamp,
}

impl OpTime {
    fn text(self) -> String {
        format!("{}:{}.{}", self.term, self.ts.time, self.ts.increment)
    }
}

/// One member as a `replSetGetStatus` lists it.
#[derive(Debug, Clone)]
struct MemberEntry {
    name: String,
    state: String,
    optime: Option<OpTime>,
}

/// What one server says of the set in `replSetGetStatus`.
#[derive(Debug, Clone)]
struct SetStatus {
    set: String,
    /// The server's clock, unix milliseconds.
    date_ms: i64,
    /// The server's clock − the daemon's, against the midpoint of the command's round trip.
    clock_skew_seconds: f64,
    me: MemberEntry,
    members: Vec<MemberEntry>,
}

impl SetStatus {
    fn parse(answer: &Document) -> Result<Self, ProbeError> {
        let decode = |what: &str| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("replSetGetStatus without {what}"),
            )
        };
        let set = answer.get_str("set").map_err(|_| decode("set"))?.to_owned();
        let date_ms = answer
            .get_datetime("date")
            .map_err(|_| decode("date"))?
            .timestamp_millis();
        let mut me = None;
        let mut members = Vec::new();
        for member in answer.get_array("members").map_err(|_| decode("members"))? {
            let Bson::Document(member) = member else {
                return Err(decode("member documents"));
            };
            let entry = MemberEntry {
                name: member.get_str("name").map_err(|_| decode("member name"))?.to_owned(),
                state: member
                    .get_str("stateStr")
                    .map_err(|_| decode("member stateStr"))?
                    .to_owned(),
                optime: member.get_document("optime").ok().and_then(parse_optime),
            };
            if member.get_bool("self").unwrap_or(false) {
                me = Some(entry.clone());
            }
            members.push(entry);
        }
        Ok(Self {
            set,
            date_ms,
            clock_skew_seconds: 0.0,
            me: me.ok_or_else(|| decode("the member itself (self: true)"))?,
            members,
        })
    }

    fn primary(&self) -> Option<&MemberEntry> {
        self.members.iter().find(|m| m.state == "PRIMARY")
    }
}

fn parse_optime(optime: &Document) -> Option<OpTime> {
    let ts = optime.get_timestamp("ts").ok()?;
    let term = match optime.get("t")? {
        Bson::Int64(t) => *t,
        Bson::Int32(t) => i64::from(*t),
        Bson::Double(t) => *t as i64,
        _ => return None,
    };
    Some(OpTime { term, ts })
}

/// What the member is, once the topology checks passed.
enum Role {
    Primary,
    Secondary { primary: String },
}

/// Asks the server at `address` for `replSetGetStatus` over its direct connection. An
/// unreachable server, or one outside any set, is a topology problem of the set.
async fn status_of(
    client: &MongoClient,
    address: &str,
    what: &str,
    deadline: Instant,
) -> Result<SetStatus, ProbeError> {
    let direct = client.member(address).await?;
    let before = unix_now();
    let answer = try_command(
        &direct,
        "admin",
        doc! { "replSetGetStatus": 1 },
        deadline,
        "replSetGetStatus",
    )
    .await
    .map_err(|(error, code)| match (error.reason, code) {
        (_, Some(code)) if NOT_IN_A_SET.contains(&code) => ProbeError::new(
            ErrorReason::Topology,
            format!("{what} {address} is not in the replica set: {}", error.message),
        ),
        (ErrorReason::Connect | ErrorReason::Timeout, _) => ProbeError::new(
            ErrorReason::Topology,
            format!("{what} {address} does not answer: {}", error.message),
        ),
        _ => error,
    })?;
    let after = unix_now();
    let mut status = SetStatus::parse(&answer)?;
    status.clock_skew_seconds = status.date_ms as f64 / 1000.0 - (before + after) / 2.0;
    Ok(status)
}

/// The member's own view, and the checks every method makes of it.
async fn member_role(
    client: &MongoClient,
    member: &str,
    deadline: Instant,
) -> Result<(SetStatus, Role), ProbeError> {
    let status = status_of(client, member, "member", deadline).await?;
    if let Some(expected) = client.replica_set() {
        if status.set != expected {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!(
                    "member {member} belongs to replica set {}, not {expected}",
                    status.set
                ),
            ));
        }
    }
    let role = match status.me.state.as_str() {
        "PRIMARY" => Role::Primary,
        "SECONDARY" => match status.primary() {
            Some(primary) => Role::Secondary {
                primary: primary.name.clone(),
            },
            None => {
                return Err(ProbeError::new(
                    ErrorReason::Topology,
                    format!("the replica set has no primary (as member {member} sees it)"),
                ));
            }
        },
        state => {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!("member {member} is {state}"),
            ));
        }
    };
    Ok((status, role))
}

/// One expected member of a `mongodb_replica` probe.
pub struct MongodbReplicaProbe {
    spec: MongodbReplica,
    client: Arc<MongoClient>,
    method: MethodState,
}

enum MethodState {
    Oplog(OplogState),
    Heartbeat {
        writer: Arc<HeartbeatWriter>,
        previous: Option<i64>,
    },
}

#[derive(Default)]
struct OplogState {
    /// The member's optime at the previous run.
    previous: Option<OpTime>,
    /// When (daemon monotonic clock) the member's optime was last seen to change.
    advanced_at: Option<Instant>,
}

impl MongodbReplicaProbe {
    pub fn new(budget: &str, probe: &str, spec: MongodbReplica, client: Arc<MongoClient>) -> Self {
        let method = match &spec.method {
            MongodbReplicaMethod::Oplog { .. } => MethodState::Oplog(OplogState::default()),
            MongodbReplicaMethod::Heartbeat(heartbeat) => {
                let id = format!("{}/{budget}/{probe}", heartbeat.instance);
                let key = format!("{id}|{heartbeat:?}");
                let writer = client.heartbeat_writers.shared(&key, || {
                    HeartbeatWriter::new(client.clone(), id, heartbeat.clone())
                });
                MethodState::Heartbeat {
                    writer,
                    previous: None,
                }
            }
        };
        Self {
            spec,
            client,
            method,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        match &self.method {
            MethodState::Oplog(_) => self.run_oplog(deadline).await,
            MethodState::Heartbeat { .. } => self.run_heartbeat(deadline).await,
        }
    }

    async fn run_oplog(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let MongodbReplicaMethod::Oplog { noop_period } = self.spec.method else {
            return Err(ProbeError::new(ErrorReason::Decode, "not an oplog probe"));
        };
        let member = self.spec.member.clone();
        let (status, role) = member_role(&self.client, &member, deadline).await?;
        let optime = status.me.optime.ok_or_else(|| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("member {member} reports no optime"),
            )
        })?;
        let MethodState::Oplog(state) = &mut self.method else {
            return Err(ProbeError::new(ErrorReason::Decode, "not an oplog probe"));
        };
        let now = instant();
        let position_regressed = state.previous.is_some_and(|previous| {
            // A rollback (the optime goes backwards) or an election (another term).
            optime < previous || optime.term != previous.term
        });
        if state.previous != Some(optime) || state.advanced_at.is_none() {
            state.advanced_at = Some(now);
        }
        state.previous = Some(optime);
        let still_for = now.saturating_duration_since(state.advanced_at.unwrap_or(now));

        let mut sample = Sample {
            position: Some(optime.text()),
            position_regressed,
            clock_skew_seconds: Some(status.clock_skew_seconds),
            ..Sample::default()
        };
        let primary = match role {
            Role::Primary => {
                // The primary's own series: it has applied everything it wrote.
                sample.lag_seconds = Some(0.0);
                sample.progress_age_seconds = Some(0.0);
                sample.detail = Some("primary".to_owned());
                return Ok(sample);
            }
            Role::Secondary { primary } => primary,
        };

        let primary_status = status_of(&self.client, &primary, "primary", deadline).await?;
        if primary_status.me.state != "PRIMARY" {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!(
                    "{primary} is {}, no longer the primary (it stepped down)",
                    primary_status.me.state
                ),
            ));
        }
        if !primary_status.members.iter().any(|m| m.name == member) {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!("member {member} is not in the replica set (the primary does not list it)"),
            ));
        }
        let primary_optime = primary_status.me.optime;
        let behind = primary_optime.is_some_and(|p| p.ts > optime.ts);
        let direct = self.client.member(&primary).await?;
        let change = first_entry_after(&direct, optime.ts, true, deadline).await?;
        let stuck = behind && still_for > noop_period * 2;
        let (entry, detail) = match (change, stuck) {
            (Some(entry), _) => (Some(entry), "behind a write"),
            (None, true) => (
                first_entry_after(&direct, optime.ts, false, deadline).await?,
                "not applying: no-op writes of the primary wait",
            ),
            (None, false) => (None, "caught up (no write after its optime)"),
        };
        sample.progress_age_seconds = Some(if behind { still_for.as_secs_f64() } else { 0.0 });
        sample.detail = Some(detail.to_owned());
        sample.lag_seconds = Some(match entry {
            None => 0.0,
            Some(wall_ms) => {
                let lag = (primary_status.date_ms - wall_ms) as f64 / 1000.0;
                if lag < 0.0 {
                    sample.negative_lag_clamped = true;
                }
                lag.max(0.0)
            }
        });
        Ok(sample)
    }

    async fn run_heartbeat(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let MethodState::Heartbeat { writer, .. } = &self.method else {
            return Err(ProbeError::new(ErrorReason::Decode, "not a heartbeat probe"));
        };
        let writer = writer.clone();
        WriterTask::ensure_started(&writer, writer.spec.period);
        writer.task.wait_first_attempt(deadline).await;
        let member = self.spec.member.clone();
        let (status, role) = member_role(&self.client, &member, deadline).await?;
        let direct = self.client.member(&member).await?;
        let visible = writer.visible_seq(&direct, deadline).await?;
        // Read after the answer: the lag of what the member showed is never under-reported.
        let now = unix_now();
        let lag = writer.ledger().lag(visible, now)?;
        let MethodState::Heartbeat { previous, .. } = &mut self.method else {
            return Err(ProbeError::new(ErrorReason::Decode, "not a heartbeat probe"));
        };
        let position_regressed = matches!((*previous, visible), (Some(p), Some(v)) if v < p);
        *previous = visible.or(*previous);
        let detail = match role {
            Role::Primary => "primary".to_owned(),
            Role::Secondary { .. } => format!("{} heartbeats not visible yet", lag.unseen_writes),
        };
        Ok(Sample {
            lag_seconds: Some(lag.lag_seconds),
            position: visible.map(|seq| seq.to_string()),
            position_regressed,
            detail: Some(detail),
            clock_skew_seconds: Some(status.clock_skew_seconds),
            ..Sample::default()
        })
    }

    /// `check --connect`: the member's status and, for `oplog`, the primary's and one oplog
    /// read; for `heartbeat`, an upsert that creates the document if missing and changes
    /// nothing otherwise (it checks the write grant), and one read on the member.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let member = self.spec.member.clone();
        let (status, role) = member_role(&self.client, &member, deadline).await?;
        let primary = match &role {
            Role::Primary => member.clone(),
            Role::Secondary { primary } => primary.clone(),
        };
        match &self.method {
            MethodState::Oplog(_) => {
                let direct = self.client.member(&primary).await?;
                let ts = status.me.optime.map_or(Timestamp { time: 0, increment: 0 }, |o| o.ts);
                first_entry_after(&direct, ts, false, deadline).await?;
                Ok(format!(
                    "member {member} is {}, primary {primary}, oplog readable",
                    status.me.state
                ))
            }
            MethodState::Heartbeat { writer, .. } => {
                writer.check(deadline).await?;
                let direct = self.client.member(&member).await?;
                writer.visible_seq(&direct, deadline).await?;
                Ok(format!(
                    "member {member} is {}, heartbeat writable on primary {primary}",
                    status.me.state
                ))
            }
        }
    }
}

/// The `wall` time (unix ms) of the primary's first oplog entry after `after`, skipping no-ops
/// when `changes_only`; `None` when there is none.
async fn first_entry_after(
    primary: &mongodb::Client,
    after: Timestamp,
    changes_only: bool,
    deadline: Instant,
) -> Result<Option<i64>, ProbeError> {
    let filter = if changes_only {
        doc! { "ts": { "$gt": after }, "op": { "$ne": "n" } }
    } else {
        doc! { "ts": { "$gt": after } }
    };
    let answer = command(
        primary,
        "local",
        doc! {
            "find": "oplog.rs",
            "filter": filter,
            "sort": { "$natural": 1 },
            "limit": 1,
            "singleBatch": true,
        },
        deadline,
        "find on local.oplog.rs",
    )
    .await?;
    let batch = first_batch(&answer)?;
    let Some(entry) = batch.first() else {
        return Ok(None);
    };
    let wall = entry.get_datetime("wall").map_err(|_| {
        ProbeError::new(
            ErrorReason::Decode,
            "an oplog entry without a `wall` date (MongoDB 4.2 or later writes one)",
        )
    })?;
    Ok(Some(wall.timestamp_millis()))
}

fn first_batch(answer: &Document) -> Result<Vec<&Document>, ProbeError> {
    let batch = answer
        .get_document("cursor")
        .and_then(|cursor| cursor.get_array("firstBatch"))
        .map_err(|_| ProbeError::new(ErrorReason::Decode, "find answered without cursor.firstBatch"))?;
    batch
        .iter()
        .map(|doc| match doc {
            Bson::Document(doc) => Ok(doc),
            _ => Err(ProbeError::new(ErrorReason::Decode, "find answered a non-document")),
        })
        .collect()
}

/// The daemon's heartbeat for one probe, written on its own cadence on the primary through the
/// set's client; shared by the probe's per-member runners.
pub struct HeartbeatWriter {
    client: Arc<MongoClient>,
    /// The document's `_id`: `<instance>/<budget>/<probe>`.
    id: String,
    spec: MongodbHeartbeat,
    state: Mutex<WriterState>,
    /// The write loop, and the count of its attempts.
    task: WriterTask,
}

struct WriterState {
    ledger: HeartbeatLedger,
    /// Whether the ledger was seeded with the document's seq (seq continues after a restart).
    seeded: bool,
}

impl HeartbeatWriter {
    fn new(client: Arc<MongoClient>, id: String, spec: MongodbHeartbeat) -> Self {
        Self {
            client,
            id,
            state: Mutex::new(WriterState {
                ledger: HeartbeatLedger::new(spec.period),
                seeded: false,
            }),
            spec,
            task: WriterTask::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ledger(&self) -> HeartbeatLedger {
        self.state().ledger.clone()
    }



    async fn write_once(&self) {
        // A write may take longer than a short period under load; it is still true data.
        let deadline = instant() + self.spec.period.max(Duration::from_secs(1));
        let result = self.try_write(deadline).await;
        let now = unix_now();
        {
            let mut state = self.state();
            match result {
                Ok((seq, sent_at)) => state.ledger.record_write(seq, sent_at),
                Err(error) => state.ledger.record_failure(now, error),
            }
        }
        self.task.attempted();
    }

    async fn try_write(&self, deadline: Instant) -> Result<(i64, f64), ProbeError> {
        let set = self.client.set().await?;
        if !self.state().seeded {
            let answer = write_command(&set, &self.spec.database, self.find(), deadline, "heartbeat read")
                .await?;
            let previous = seq_of(&answer)?;
            let mut state = self.state();
            if let Some(previous) = previous {
                state.ledger.seed(previous);
            }
            state.seeded = true;
        }
        let seq = {
            let mut state = self.state();
            let seq = state.ledger.next_seq();
            // Once sent, a seq is never reused, even when the write fails: it may have
            // committed anyway, and a member showing it must not read as caught up later.
            state.ledger.seed(seq);
            seq
        };
        let sent_at = unix_now();
        let written_at = DateTime::from_millis((sent_at * 1000.0) as i64);
        let answer = write_command(
            &set,
            &self.spec.database,
            doc! {
                "update": &self.spec.collection,
                "updates": [{
                    "q": { "_id": &self.id },
                    "u": { "$set": { "seq": seq, "written_at": written_at } },
                    "upsert": true,
                }],
                // Acknowledged by the primary alone: the default (majority, from MongoDB 5.0)
                // would wait for the very members being measured, so a stuck member of a small
                // set would stop the heartbeat instead of showing as behind.
                "writeConcern": { "w": 1 },
            },
            deadline,
            "heartbeat write",
        )
        .await?;
        check_write(&answer)?;
        Ok((seq, sent_at))
    }

    /// The `find` of this writer's document.
    fn find(&self) -> Document {
        doc! {
            "find": &self.spec.collection,
            "filter": { "_id": &self.id },
            "limit": 1,
            "singleBatch": true,
        }
    }

    /// The seq of this writer's document as the member behind `direct` shows it.
    async fn visible_seq(
        &self,
        direct: &mongodb::Client,
        deadline: Instant,
    ) -> Result<Option<i64>, ProbeError> {
        let answer = command(direct, &self.spec.database, self.find(), deadline, "heartbeat read")
            .await?;
        seq_of(&answer)
    }

    /// `check --connect` on the primary: an upsert that inserts seq 0 when the document is
    /// missing and changes nothing otherwise, which checks the grant the writer needs.
    async fn check(&self, deadline: Instant) -> Result<(), ProbeError> {
        let set = self.client.set().await?;
        let answer = write_command(
            &set,
            &self.spec.database,
            doc! {
                "update": &self.spec.collection,
                "updates": [{
                    "q": { "_id": &self.id },
                    "u": { "$setOnInsert": { "seq": 0_i64, "written_at": DateTime::from_millis(0) } },
                    "upsert": true,
                }],
            },
            deadline,
            "heartbeat write",
        )
        .await?;
        check_write(&answer)
    }
}


/// The `seq` of the one document a `find` answered, `None` when it found none.
fn seq_of(answer: &Document) -> Result<Option<i64>, ProbeError> {
    let Some(found) = first_batch(answer)?.first().copied() else {
        return Ok(None);
    };
    match found.get("seq") {
        Some(Bson::Int64(seq)) => Ok(Some(*seq)),
        Some(Bson::Int32(seq)) => Ok(Some(i64::from(*seq))),
        _ => Err(ProbeError::new(
            ErrorReason::Decode,
            "the heartbeat document has no integer `seq`",
        )),
    }
}

/// An `update` answers ok with `writeErrors` when a document could not be written.
fn check_write(answer: &Document) -> Result<(), ProbeError> {
    match answer.get_array("writeErrors") {
        Ok(errors) if !errors.is_empty() => {
            let first = errors.first().and_then(Bson::as_document);
            let message = first
                .and_then(|e| e.get_str("errmsg").ok())
                .unwrap_or("write error");
            Err(ProbeError::new(
                ErrorReason::Query,
                format!("heartbeat write: {message}"),
            ))
        }
        _ => Ok(()),
    }
}

impl PeriodicWriter for HeartbeatWriter {
    async fn write_once(&self) {
        HeartbeatWriter::write_once(self).await;
    }

    fn task(&self) -> &WriterTask {
        &self.task
    }
}

impl super::Kind for MongodbReplicaProbe {
    const KEY: &'static str = "mongodb_replica";
    type Settings = MongodbReplica;

    fn new(
        probe: &crate::model::Probe,
        settings: &MongodbReplica,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(
            &probe.budget,
            &probe.name,
            settings.clone(),
            sources.mongodb(&settings.source)?,
        ))
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        MongodbReplicaProbe::run(self, deadline).await.map(Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        MongodbReplicaProbe::check(self, deadline).await
    }

    fn source(settings: &MongodbReplica) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `replSetGetStatus` as MongoDB 7 answers it on a secondary (fields trimmed to those that
    /// vary), with a member down.
    fn status() -> Document {
        doc! {
            "set": "rs0",
            "date": DateTime::from_millis(1_700_000_100_000),
            "myState": 2,
            "term": 3_i64,
            "members": [
                {
                    "_id": 0, "name": "m1:27017", "health": 1.0, "state": 1, "stateStr": "PRIMARY",
                    "optime": { "ts": Timestamp { time: 1_700_000_090, increment: 2 }, "t": 3_i64 },
                    "optimeDate": DateTime::from_millis(1_700_000_090_000),
                },
                {
                    "_id": 1, "name": "m2:27017", "health": 1.0, "state": 2, "stateStr": "SECONDARY",
                    "optime": { "ts": Timestamp { time: 1_700_000_080, increment: 1 }, "t": 3_i64 },
                    "optimeDate": DateTime::from_millis(1_700_000_080_000),
                    "self": true,
                },
                {
                    "_id": 2, "name": "m3:27017", "health": 0.0, "state": 8,
                    "stateStr": "(not reachable/healthy)",
                    "optime": { "ts": Timestamp { time: 0, increment: 0 }, "t": -1_i64 },
                },
            ],
            "ok": 1.0,
        }
    }

    #[test]
    fn a_status_names_the_member_itself_and_the_primary() {
        let status = SetStatus::parse(&status()).expect("a valid status");
        assert_eq!(status.set, "rs0");
        assert_eq!(status.date_ms, 1_700_000_100_000);
        assert_eq!(status.me.name, "m2:27017");
        assert_eq!(status.me.state, "SECONDARY");
        let optime = status.me.optime.expect("optime");
        assert_eq!(optime.text(), "3:1700000080.1");
        assert_eq!(status.primary().map(|p| p.name.as_str()), Some("m1:27017"));
        assert_eq!(status.members.len(), 3);
    }

    #[test]
    fn optimes_order_by_term_then_timestamp() {
        let at = |term, time| OpTime {
            term,
            ts: Timestamp { time, increment: 1 },
        };
        assert!(at(3, 80) < at(3, 90));
        // A new term starts above every optime of the previous one.
        assert!(at(4, 10) > at(3, 90));
    }

    #[test]
    fn shapes_it_cannot_read_are_decode_errors() {
        let mut without_self = status();
        let members = without_self.get_array_mut("members").expect("members");
        members.truncate(1);
        let error = SetStatus::parse(&without_self).expect_err("no self");
        assert_eq!(error.reason, ErrorReason::Decode);
        assert!(error.message.contains("self: true"), "{error}");
        let error = SetStatus::parse(&doc! { "ok": 1.0 }).expect_err("empty");
        assert_eq!(error.message, "replSetGetStatus without set");

        let found = |batch: Vec<Document>| doc! { "cursor": { "id": 0_i64, "firstBatch": batch } };
        assert_eq!(seq_of(&found(vec![])).expect("none"), None);
        assert_eq!(seq_of(&found(vec![doc! { "seq": 7_i64 }])).expect("int64"), Some(7));
        assert_eq!(seq_of(&found(vec![doc! { "seq": 7 }])).expect("int32"), Some(7));
        assert_eq!(
            seq_of(&found(vec![doc! { "seq": "7" }])).expect_err("text").reason,
            ErrorReason::Decode
        );
        assert_eq!(
            seq_of(&doc! { "ok": 1.0 }).expect_err("no cursor").reason,
            ErrorReason::Decode
        );
    }

    #[test]
    fn write_errors_in_an_ok_answer_fail_the_write() {
        assert!(check_write(&doc! { "n": 1, "ok": 1.0 }).is_ok());
        let error = check_write(&doc! {
            "n": 0,
            "writeErrors": [{ "index": 0, "code": 13, "errmsg": "not authorized on lagbudget" }],
            "ok": 1.0,
        })
        .expect_err("a write error");
        assert_eq!(error.reason, ErrorReason::Query);
        assert_eq!(error.message, "heartbeat write: not authorized on lagbudget");
    }
}
