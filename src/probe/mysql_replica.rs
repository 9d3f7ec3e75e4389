//! `mysql_replica`: lag of MySQL and MariaDB replicas, measured with a heartbeat the daemon
//! writes on the primary, with the replication threads' own report as a secondary signal.
//!
//! One `HeartbeatWriter` per configured probe (shared by its per-replica entries) upserts the
//! row `(instance, probe, seq, written_at)` in `<database>.heartbeat` on the primary every
//! write period and records in a `HeartbeatLedger` when each seq was sent, on the daemon's
//! clock. Each replica run reads the seq visible there: lag is the age of the first heartbeat
//! not yet visible, so it grows while anything blocks replication and reads 0 on an idle,
//! caught-up replica. `Seconds_Behind_Master` is never the lag: it is NULL when a replication
//! thread stopped and 0 while the IO thread is behind, so it is only reported, beside whether
//! each thread runs (`MysqlReplicaDetail`).

pub mod config;
pub mod dashboard;
pub mod detail;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Row, TxOpts, Value};
use tokio::time::Instant;

use super::heartbeat::config::default_instance;
use super::heartbeat::{HeartbeatLedger, PeriodicWriter, WriterTask};
use super::mysql::{MysqlPool, run};
use super::{ErrorReason, ProbeError, ReadYourWrites, Sample};
use crate::clock::unix_now;
use crate::model::MysqlReplica;
use detail::MysqlReplicaDetail;

/// What identifies one writer: the probe it belongs to and how it writes. Replicas of the same
/// probe get the same key, and so share one writer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WriterKey {
    budget: String,
    probe: String,
    database: String,
    instance: Option<String>,
    write_period: Duration,
}

/// MySQL server errors that mean the heartbeat table is not (yet) on a replica: nothing of it
/// is visible there, which is lag, not an error (unknown database, unknown table).
const NOT_REPLICATED_YET: [u16; 2] = [1049, 1146];
/// "Access denied; you need … privilege" for `SHOW SLAVE STATUS`.
const MISSING_PRIVILEGE: u16 = 1227;

/// The daemon's heartbeat for one probe, written on its own cadence on the primary.
pub struct HeartbeatWriter {
    pool: Arc<MysqlPool>,
    database: String,
    instance: String,
    /// `budget/probe`: the row key beside `instance`.
    probe_key: String,
    write_period: Duration,
    /// How long write completions are remembered for read-your-writes checks.
    keep_completions: Duration,
    state: Mutex<WriterState>,
    /// The write loop, and the count of its attempts.
    task: WriterTask,
}

struct WriterState {
    ledger: HeartbeatLedger,
    /// Whether the ledger was seeded with the table's seq (seq continues after a restart).
    seeded: bool,
    schema_ready: bool,
    /// When each recent write returned (seq, daemon unix seconds), oldest first.
    completions: VecDeque<(i64, f64)>,
    /// The primary's `@@server_id` as of the last successful write.
    primary_server_id: Option<u64>,
}

impl HeartbeatWriter {
    fn new(pool: Arc<MysqlPool>, budget: &str, probe: &str, spec: &MysqlReplica) -> Self {
        let keep_completions = spec.ryw_delay.unwrap_or_default() + spec.write_period * 4;
        Self {
            pool,
            database: spec.database.clone(),
            instance: spec.instance.clone().unwrap_or_else(default_instance),
            probe_key: format!("{budget}/{probe}"),
            write_period: spec.write_period,
            keep_completions,
            state: Mutex::new(WriterState {
                ledger: HeartbeatLedger::new(spec.write_period),
                seeded: false,
                schema_ready: false,
                completions: VecDeque::new(),
                primary_server_id: None,
            }),
            task: WriterTask::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }



    async fn write_once(&self) {
        // A write may take longer than a short period under load; it is still true data.
        let deadline = crate::clock::instant() + self.write_period.max(Duration::from_secs(1));
        let result = self.try_write(deadline).await;
        let now = unix_now();
        {
            let mut state = self.state();
            match result {
                Ok(write) => {
                    state.ledger.record_write(write.seq, write.sent_at);
                    state.completions.push_back((write.seq, write.returned_at));
                    let horizon = now - self.keep_completions.as_secs_f64();
                    while state
                        .completions
                        .front()
                        .is_some_and(|(_, at)| *at < horizon)
                    {
                        state.completions.pop_front();
                    }
                    state.primary_server_id = Some(write.server_id);
                }
                Err(error) => {
                    // The schema is checked again after any failure: the primary may have
                    // been replaced or restored.
                    state.schema_ready = false;
                    state.ledger.record_failure(now, error);
                }
            }
        }
        self.task.attempted();
    }

    async fn try_write(&self, deadline: Instant) -> Result<Written, ProbeError> {
        let mut conn = self.pool.get(deadline).await?;
        let (schema_ready, seeded) = {
            let state = self.state();
            (state.schema_ready, state.seeded)
        };
        if !schema_ready {
            for ddl in self.ddl() {
                run(deadline, conn.query_drop(ddl)).await?;
            }
        }
        if !seeded {
            let row: Option<Row> = run(
                deadline,
                conn.exec_first(
                    format!(
                        "SELECT seq FROM {} WHERE instance = ? AND probe = ?",
                        self.table()
                    ),
                    (&self.instance, &self.probe_key),
                ),
            )
            .await?;
            let previous = match row {
                Some(row) => int_at(&row, 0)?,
                None => None,
            };
            let mut state = self.state();
            if let Some(previous) = previous {
                state.ledger.seed(previous);
            }
            state.seeded = true;
        }
        let seq = {
            let mut state = self.state();
            state.schema_ready = true;
            let seq = state.ledger.next_seq();
            // Once sent, a seq is never reused, even when the write fails: it may have
            // committed anyway, and a replica showing it must not read as caught up later.
            state.ledger.seed(seq);
            seq
        };
        let sent_at = unix_now();
        run(
            deadline,
            conn.exec_drop(
                format!(
                    "INSERT INTO {} (instance, probe, seq, written_at) VALUES (?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE seq = VALUES(seq), written_at = VALUES(written_at)",
                    self.table()
                ),
                (&self.instance, &self.probe_key, seq, sent_at),
            ),
        )
        .await?;
        let returned_at = unix_now();
        let row: Option<Row> = run(deadline, conn.query_first("SELECT @@server_id")).await?;
        let server_id = row
            .map(|row| int_at(&row, 0))
            .transpose()?
            .flatten()
            .ok_or_else(|| ProbeError::new(ErrorReason::Decode, "@@server_id is NULL"))?;
        conn.release();
        Ok(Written {
            seq,
            sent_at,
            returned_at,
            server_id: u64::try_from(server_id).unwrap_or_default(),
        })
    }

    fn table(&self) -> String {
        format!("`{}`.`heartbeat`", self.database)
    }

    /// The documented DDL: the only objects lagbudget creates. One row per (instance, probe).
    fn ddl(&self) -> [String; 2] {
        [
            format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (\
                 instance VARCHAR(255) NOT NULL, \
                 probe VARCHAR(512) CHARACTER SET ascii NOT NULL, \
                 seq BIGINT NOT NULL, \
                 written_at DOUBLE NOT NULL COMMENT 'unix seconds on the writing daemon''s clock', \
                 PRIMARY KEY (instance, probe)) ENGINE=InnoDB",
                self.table()
            ),
        ]
    }

    /// `check --connect` on the primary: creates the database and table if missing (the DDL
    /// lagbudget needs anyway) and runs the upsert in a transaction that is rolled back, which
    /// checks every grant the writer needs without writing a heartbeat.
    async fn check(&self, deadline: Instant) -> Result<(), ProbeError> {
        let mut conn = self.pool.get(deadline).await?;
        for ddl in self.ddl() {
            run(deadline, conn.query_drop(ddl)).await?;
        }
        {
            let mut tx = run(deadline, conn.start_transaction(TxOpts::default())).await?;
            run(
                deadline,
                tx.exec_drop(
                    format!(
                        "INSERT INTO {} (instance, probe, seq, written_at) VALUES (?, ?, 0, 0) \
                         ON DUPLICATE KEY UPDATE seq = seq",
                        self.table()
                    ),
                    (&self.instance, &self.probe_key),
                ),
            )
            .await?;
            run(deadline, tx.rollback()).await?;
        }
        conn.release();
        Ok(())
    }

    /// The newest write that had returned at or before `at` (for read-your-writes).
    fn returned_at_or_before(&self, at: f64) -> Option<i64> {
        self.state()
            .completions
            .iter()
            .rev()
            .find(|(_, returned)| *returned <= at)
            .map(|(seq, _)| *seq)
    }
}


struct Written {
    seq: i64,
    sent_at: f64,
    returned_at: f64,
    server_id: u64,
}


/// One replica of a `mysql_replica` probe.
pub struct MysqlReplicaProbe {
    spec: MysqlReplica,
    writer: Arc<HeartbeatWriter>,
    replica: Arc<MysqlPool>,
    /// The seq visible at the previous run, to count positions that go backwards.
    previous: Option<i64>,
}

/// What the replica's replication threads report about themselves.
struct ReplicationStatus {
    io_running: bool,
    sql_running: bool,
    seconds_behind: Option<f64>,
    source_server_id: Option<u64>,
    last_error: Option<String>,
}

impl MysqlReplicaProbe {
    pub fn new(
        budget: &str,
        probe: &str,
        spec: MysqlReplica,
        primary: Arc<MysqlPool>,
        replica: Arc<MysqlPool>,
    ) -> Self {
        let key = WriterKey {
            budget: budget.to_owned(),
            probe: probe.to_owned(),
            database: spec.database.clone(),
            instance: spec.instance.clone(),
            write_period: spec.write_period,
        };
        let writer = primary.heartbeat_writers.shared(&format!("{key:?}"), || {
            HeartbeatWriter::new(primary.clone(), budget, probe, &spec)
        });
        Self {
            spec,
            writer,
            replica,
            previous: None,
        }
    }

    pub async fn run(
        &mut self,
        deadline: Instant,
    ) -> Result<(Sample, MysqlReplicaDetail), ProbeError> {
        WriterTask::ensure_started(&self.writer, self.writer.write_period);
        self.writer.task.wait_first_attempt(deadline).await;
        let mut conn = self.replica.get(deadline).await?;

        // The replica's clock, read between two daemon readings: skew is measured against
        // their midpoint.
        let before = unix_now();
        let row: Option<Row> = run(
            deadline,
            conn.query_first("SELECT UNIX_TIMESTAMP(NOW(6)), @@server_id, VERSION()"),
        )
        .await?;
        let after = unix_now();
        let row = row.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "no row"))?;
        let replica_now = float_at(&row, 0)?;
        let replica_server_id = int_at(&row, 1)?.and_then(|id| u64::try_from(id).ok());
        let version: String = text_at(&row, 2)?.unwrap_or_default();
        let clock_skew = replica_now.map(|now| now - (before + after) / 2.0);

        let primary_server_id = self.writer.state().primary_server_id;
        let status = replication_status(&mut conn, &version, primary_server_id, deadline).await?;

        let read_started = unix_now();
        let visible = self.visible_seq(&mut conn, deadline).await?;
        // Read after the answer: the lag of what the replica showed is never under-reported.
        let now = unix_now();
        conn.release();
        check_topology(replica_server_id, primary_server_id, &status)?;

        let lag = self.writer.state().ledger.lag(visible, now)?;
        let read_your_writes = self.spec.ryw_delay.and_then(|delay| {
            let seq = self
                .writer
                .returned_at_or_before(read_started - delay.as_secs_f64())?;
            Some(ReadYourWrites {
                missed: visible.is_none_or(|visible| visible < seq),
            })
        });
        let regressed = matches!((self.previous, visible), (Some(p), Some(v)) if v < p);
        if visible.is_some() {
            self.previous = visible;
        }
        let sample = Sample {
            lag_seconds: Some(lag.lag_seconds),
            position: visible.map(|seq| seq.to_string()),
            detail: Some(detail(visible, lag.unseen_writes, lag.lower_bound, &status)),
            position_regressed: regressed,
            clock_skew_seconds: clock_skew,
            read_your_writes,
            ..Sample::default()
        };
        let detail = MysqlReplicaDetail {
            io_running: status.io_running,
            sql_running: status.sql_running,
            // Reported only while both threads run: NULL or a stopped thread's 0 is not a
            // number of seconds.
            seconds_behind_source: status
                .seconds_behind
                .filter(|_| status.io_running && status.sql_running),
        };
        Ok((sample, detail))
    }

    /// The highest heartbeat seq the replica shows; `None` when none is visible yet (not even
    /// the table, while its creation has not replicated).
    async fn visible_seq(
        &self,
        conn: &mut mysql_async::Conn,
        deadline: Instant,
    ) -> Result<Option<i64>, ProbeError> {
        let sql = format!(
            "SELECT seq FROM `{}`.`heartbeat` WHERE instance = ? AND probe = ?",
            self.spec.database
        );
        let params = (&self.writer.instance, &self.writer.probe_key);
        match tokio::time::timeout_at(deadline, conn.exec_first::<Row, _, _>(sql, params)).await {
            Ok(Ok(Some(row))) => int_at(&row, 0),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(mysql_async::Error::Server(server)))
                if NOT_REPLICATED_YET.contains(&server.code) =>
            {
                Ok(None)
            }
            Ok(Err(error)) => Err(super::mysql::query_error(&error)),
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                "statement did not complete before the deadline",
            )),
        }
    }

    /// `check --connect`: the primary's DDL and upsert grants, then on the replica the
    /// heartbeat table's `SELECT`, the replication status grant and the topology.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        self.writer.check(deadline).await?;
        let mut conn = self.replica.get(deadline).await?;
        let row: Option<Row> =
            run(deadline, conn.query_first("SELECT @@server_id, VERSION()")).await?;
        let row = row.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "no row"))?;
        let replica_server_id = int_at(&row, 0)?.and_then(|id| u64::try_from(id).ok());
        let version = text_at(&row, 1)?.unwrap_or_default();
        let primary_server_id = self.primary_server_id(deadline).await?;
        let status =
            replication_status(&mut conn, &version, Some(primary_server_id), deadline).await?;
        let visible = self.visible_seq(&mut conn, deadline).await?;
        conn.release();
        check_topology(replica_server_id, Some(primary_server_id), &status)?;
        Ok(format!(
            "heartbeat table writable on the primary; replica {} (seq {}), IO {}, SQL {}",
            self.spec.replica,
            visible.map_or_else(|| "none yet".to_owned(), |seq| seq.to_string()),
            yes_no(status.io_running),
            yes_no(status.sql_running)
        ))
    }

    async fn primary_server_id(&self, deadline: Instant) -> Result<u64, ProbeError> {
        let mut conn = self.writer.pool.get(deadline).await?;
        let row: Option<Row> = run(deadline, conn.query_first("SELECT @@server_id")).await?;
        conn.release();
        row.map(|row| int_at(&row, 0))
            .transpose()?
            .flatten()
            .and_then(|id| u64::try_from(id).ok())
            .ok_or_else(|| ProbeError::new(ErrorReason::Decode, "@@server_id is NULL"))
    }
}

fn yes_no(running: bool) -> &'static str {
    if running { "running" } else { "stopped" }
}

/// A replica must replicate from the configured primary: a server that is not a replica, or
/// replicates from another server, must not read as "all visible".
fn check_topology(
    replica_server_id: Option<u64>,
    primary_server_id: Option<u64>,
    status: &ReplicationStatus,
) -> Result<(), ProbeError> {
    let Some(primary) = primary_server_id else {
        // The writer has not reached the primary yet; the heartbeat ledger reports that.
        return Ok(());
    };
    if replica_server_id == Some(primary) {
        return Err(ProbeError::new(
            ErrorReason::Topology,
            format!(
                "the replica has the primary's server_id {primary}: it is the primary, or misconfigured"
            ),
        ));
    }
    // 0 until the IO thread first connected: nothing to compare yet.
    match status.source_server_id {
        Some(source) if source != 0 && source != primary => Err(ProbeError::new(
            ErrorReason::Topology,
            format!(
                "the replica replicates from server_id {source}, the primary is server_id {primary}"
            ),
        )),
        _ => Ok(()),
    }
}

fn detail(
    visible: Option<i64>,
    unseen: u64,
    lower_bound: bool,
    status: &ReplicationStatus,
) -> String {
    let seen = match visible {
        Some(seq) => format!("heartbeat {seq} visible"),
        None => "no heartbeat visible".to_owned(),
    };
    let bound = if lower_bound {
        " (lag is a lower bound)"
    } else {
        ""
    };
    let sbm = match status.seconds_behind {
        Some(seconds) if status.io_running && status.sql_running => format!("{seconds}s"),
        Some(_) => "not meaningful".to_owned(),
        None => "NULL".to_owned(),
    };
    let mut text = format!(
        "{seen}, {unseen} not yet{bound}; IO thread {}, SQL thread {}, Seconds_Behind_Source {sbm}",
        yes_no(status.io_running),
        yes_no(status.sql_running)
    );
    if let Some(error) = &status.last_error {
        text.push_str("; last error: ");
        text.push_str(error);
    }
    text
}

/// `SHOW REPLICA STATUS` on MySQL 8.0.22 and later, `SHOW SLAVE STATUS` on MariaDB and older
/// MySQL; the columns are read under either name (`Replica_*`/`Slave_*`,
/// `Seconds_Behind_Source`/`_Master`, `Source_Server_Id`/`Master_Server_Id`). With several
/// rows (MySQL channels, one per source) the channel replicating from `primary_server_id` is
/// reported; when none does, the first, which the topology check then rejects.
async fn replication_status(
    conn: &mut mysql_async::Conn,
    version: &str,
    primary_server_id: Option<u64>,
    deadline: Instant,
) -> Result<ReplicationStatus, ProbeError> {
    let sql = if uses_replica_keyword(version) {
        "SHOW REPLICA STATUS"
    } else {
        "SHOW SLAVE STATUS"
    };
    let rows: Vec<Row> = match tokio::time::timeout_at(deadline, conn.query::<Row, _>(sql)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(mysql_async::Error::Server(server))) if server.code == MISSING_PRIVILEGE => {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!(
                    "{sql} needs REPLICATION CLIENT (MySQL, MariaDB before 10.5) or SLAVE \
                     MONITOR (MariaDB 10.5 and later): {}",
                    server.message
                ),
            ));
        }
        Ok(Err(error)) => return Err(super::mysql::query_error(&error)),
        Err(_) => {
            return Err(ProbeError::new(
                ErrorReason::Timeout,
                "statement did not complete before the deadline",
            ));
        }
    };
    let mut statuses = rows
        .iter()
        .map(parse_status)
        .collect::<Result<Vec<_>, _>>()?;
    if statuses.is_empty() {
        return Err(ProbeError::new(
            ErrorReason::Topology,
            format!("the server is not a replica: {sql} is empty"),
        ));
    }
    let chosen = statuses
        .iter()
        .position(|status| {
            primary_server_id.is_some() && status.source_server_id == primary_server_id
        })
        .unwrap_or(0);
    Ok(statuses.swap_remove(chosen))
}

/// One row (one channel) of the replication status.
fn parse_status(row: &Row) -> Result<ReplicationStatus, ProbeError> {
    let yes = |names: &[&str]| -> Result<bool, ProbeError> {
        Ok(column_text(row, names)?.is_some_and(|value| value == "Yes"))
    };
    let io_running = yes(&["Replica_IO_Running", "Slave_IO_Running"])?;
    let sql_running = yes(&["Replica_SQL_Running", "Slave_SQL_Running"])?;
    let seconds_behind = column_text(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])?
        .map(|text| {
            text.parse::<f64>().map_err(|_| {
                ProbeError::new(ErrorReason::Decode, "Seconds_Behind_Source is not a number")
            })
        })
        .transpose()?;
    let source_server_id = column_text(row, &["Source_Server_Id", "Master_Server_Id"])?
        .and_then(|text| text.parse::<u64>().ok());
    let last_error = [
        column_text(row, &["Last_IO_Error"])?,
        column_text(row, &["Last_SQL_Error"])?,
    ]
    .into_iter()
    .flatten()
    .find(|error| !error.is_empty());
    Ok(ReplicationStatus {
        io_running,
        sql_running,
        seconds_behind,
        source_server_id,
        last_error,
    })
}

/// MySQL 8.0.22 renamed `SHOW SLAVE STATUS` (deprecated since) to `SHOW REPLICA STATUS`;
/// MariaDB keeps `SHOW SLAVE STATUS` and its column names in every version.
fn uses_replica_keyword(version: &str) -> bool {
    if version.contains("MariaDB") {
        return false;
    }
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    version >= (8, 0, 22)
}

/// The text of the first of `names` that the row has; `None` for SQL NULL.
fn column_text(row: &Row, names: &[&str]) -> Result<Option<String>, ProbeError> {
    let columns = row.columns_ref();
    let Some(index) = names.iter().find_map(|name| {
        columns
            .iter()
            .position(|column| column.name_str().eq_ignore_ascii_case(name))
    }) else {
        return Err(ProbeError::new(
            ErrorReason::Decode,
            format!("replication status has no column {}", names.join(" or ")),
        ));
    };
    value_text(row.as_ref(index))
}

fn value_text(value: Option<&Value>) -> Result<Option<String>, ProbeError> {
    match value {
        None | Some(Value::NULL) => Ok(None),
        Some(Value::Bytes(bytes)) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        Some(Value::Int(n)) => Ok(Some(n.to_string())),
        Some(Value::UInt(n)) => Ok(Some(n.to_string())),
        Some(Value::Float(n)) => Ok(Some(n.to_string())),
        Some(Value::Double(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ProbeError::new(
            ErrorReason::Decode,
            "unexpected value type in replication status",
        )),
    }
}

pub(crate) fn text_at(row: &Row, index: usize) -> Result<Option<String>, ProbeError> {
    value_text(row.as_ref(index))
}

pub(crate) fn int_at(row: &Row, index: usize) -> Result<Option<i64>, ProbeError> {
    text_at(row, index)?
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ProbeError::new(ErrorReason::Decode, format!("not an integer: {text}"))
            })
        })
        .transpose()
}

fn float_at(row: &Row, index: usize) -> Result<Option<f64>, ProbeError> {
    text_at(row, index)?
        .map(|text| {
            text.parse::<f64>()
                .map_err(|_| ProbeError::new(ErrorReason::Decode, format!("not a number: {text}")))
        })
        .transpose()
}

impl PeriodicWriter for HeartbeatWriter {
    async fn write_once(&self) {
        HeartbeatWriter::write_once(self).await;
    }

    fn task(&self) -> &WriterTask {
        &self.task
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for MysqlReplicaProbe {
    const KEY: &'static str = "mysql_replica";
    type Settings = MysqlReplica;

    fn new(
        probe: &crate::model::Probe,
        settings: &MysqlReplica,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(
            &probe.budget,
            &probe.name,
            settings.clone(),
            sources.mysql(&settings.primary)?,
            sources.mysql(&settings.replica)?,
        ))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        let (sample, detail) = MysqlReplicaProbe::run(self, deadline).await?;
        Ok(super::Reading {
            sample,
            detail: Some(super::Detail::MysqlReplica(detail)),
        })
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        MysqlReplicaProbe::check(self, deadline).await
    }

    fn source(settings: &MysqlReplica) -> &str {
        &settings.replica
    }

    fn sources(settings: &MysqlReplica) -> Vec<&str> {
        vec![settings.replica.as_str(), settings.primary.as_str()]
    }

    fn checks_read_your_writes(settings: &MysqlReplica) -> bool {
        settings.ryw_delay.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_keyword_from_mysql_8_0_22_only() {
        let cases = [
            ("10.11.19-MariaDB-0+deb12u1-log", false),
            ("11.4.2-MariaDB", false),
            ("8.0.21", false),
            ("8.0.22", true),
            ("8.4.0-commercial", true),
            ("5.7.44-log", false),
            ("9.1.0", true),
        ];
        for (version, expected) in cases {
            assert_eq!(uses_replica_keyword(version), expected, "{version}");
        }
    }

    fn status(source: Option<u64>) -> ReplicationStatus {
        ReplicationStatus {
            io_running: true,
            sql_running: true,
            seconds_behind: Some(0.0),
            source_server_id: source,
            last_error: None,
        }
    }

    #[test]
    fn topology_needs_the_configured_primary_as_source() {
        // (replica id, primary id, replica's source id) => topology error?
        let cases = [
            (Some(2), Some(1), Some(1), false),
            (Some(2), Some(1), Some(3), true),
            // The primary itself configured as a replica.
            (Some(1), Some(1), Some(1), true),
            // The IO thread never connected: nothing to compare yet.
            (Some(2), Some(1), Some(0), false),
            // The writer has not reached the primary yet.
            (Some(2), None, Some(3), false),
        ];
        for (replica, primary, source, expected) in cases {
            let result = check_topology(replica, primary, &status(source));
            assert_eq!(
                result
                    .as_ref()
                    .is_err_and(|e| e.reason == ErrorReason::Topology),
                expected,
                "{replica:?} {primary:?} {source:?}: {result:?}"
            );
        }
    }

    #[test]
    fn seconds_behind_is_detail_and_says_null() {
        let mut stopped = status(Some(1));
        stopped.sql_running = false;
        stopped.seconds_behind = None;
        assert_eq!(
            detail(Some(7), 3, false, &stopped),
            "heartbeat 7 visible, 3 not yet; IO thread running, SQL thread stopped, \
             Seconds_Behind_Source NULL"
        );
        assert_eq!(
            detail(None, 1, true, &status(Some(1))),
            "no heartbeat visible, 1 not yet (lag is a lower bound); IO thread running, SQL \
             thread running, Seconds_Behind_Source 0s"
        );
    }
}
