//! `postgres_replica`: how far each PostgreSQL streaming standby trails its primary, in seconds.
//!
//! Two methods, chosen in the config and never switched at run time:
//!
//! - **heartbeat**: one writer per (budget, probe), shared by the probe's per-standby runners,
//!   upserts `(instance, probe, seq, written_at)` into `<schema>.heartbeat` on the primary every
//!   write period and remembers when it sent each `seq` on the daemon's clock
//!   (`HeartbeatLedger`). A run reads the highest visible `seq` on the standby; lag is the age
//!   of the first heartbeat not yet visible. One clock, and an idle primary is no lag because
//!   the heartbeat itself is the change.
//! - **passive**: read-only. Each run samples the primary's current WAL position and the
//!   standby's received and replayed positions, each with the daemon's time, into an LSN→time
//!   map (the first time each position was seen). Lag is now − the time the first position
//!   beyond the standby's replay position was first seen, so WAL that the standby has not even
//!   received counts (a stopped WAL receiver shows as growing lag, not as "caught up"). It
//!   under-reports by at most the sampling gap (one interval). A WAL receiver that is missing or
//!   silent beyond `receiver_silence_limit` is down.
//!
//! Both check the topology on every run — the standby is in recovery, has the primary's system
//! identifier and is on its timeline — and report `topology` otherwise: a promoted standby or a
//! DSN that points at a primary must never read as "everything visible". Per-standby maps and
//! positions are reset when the standby's identity or timeline changes; the writer's ledger is
//! reset when the primary's changes. Replay positions that go backwards are counted as
//! regressions. Byte backlog is the primary's current WAL position − the standby's replay
//! position (what `pg_stat_replication` would show as replay backlog, but also for a standby
//! that has vanished from that view).

pub mod config;
pub mod dashboard;
pub mod detail;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::heartbeat::HeartbeatLedger;
use super::postgres::{PgPool, query_error};
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, ReadYourWrites, Sample};
use crate::clock::unix_now;
use crate::model::{HeartbeatSettings, PostgresReplica, ReplicaMethod};
use detail::StandbyDetail;

/// Statements sent by replica probes and heartbeat writers in this process: the figure the
/// replica benchmark reports as queries per run.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// How many statements replica probes and heartbeat writers have sent so far.
pub fn statements_sent() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

fn count_statement() {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
}

/// LSN→time entries kept per standby at most (a day of 1 s samples); when full, entries in the
/// newer half are thinned, which only coarsens times of changes that are not the oldest.
const MAX_MAP_ENTRIES: usize = 86_400;

/// What a standby says about itself in one round trip.
const STANDBY_FACTS: &str = "SELECT pg_is_in_recovery(), c.system_identifier, r.received_tli, \
     k.timeline_id, extract(epoch FROM clock_timestamp())::float8, \
     extract(epoch FROM clock_timestamp() - r.last_msg_receipt_time)::float8, r.pid, \
     pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text";
const STANDBY_FROM: &str = " FROM pg_control_system() c CROSS JOIN pg_control_checkpoint() k \
     LEFT JOIN pg_stat_wal_receiver r ON true";

/// The primary's identity and position, for passive runs.
const PRIMARY_FACTS: &str = "SELECT pg_is_in_recovery(), c.system_identifier, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END \
     FROM pg_control_system() c";

/// A server's place in a replication topology: system identifier and timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    system: i64,
    timeline: u32,
}

/// The primary as last seen: identity and WAL position, with the daemon time of the sample.
#[derive(Debug, Clone, Copy)]
struct PrimaryFacts {
    identity: Identity,
    lsn: u64,
    /// Daemon unix time when the sampling statement was sent.
    seen_at: f64,
}

/// What one probe's standbys share on the primary: the cached primary facts (passive) or the
/// heartbeat writer (heartbeat). Created by the first runner that needs it and dropped with the
/// last one, which stops the writer.
struct Primary {
    pool: Arc<PgPool>,
    /// The last sample of the primary, or why it failed, with when it was taken: one failure
    /// is shared too, so that a dead primary is not asked again by every standby's run.
    facts: tokio::sync::Mutex<Option<(Instant, Result<PrimaryFacts, ProbeError>)>>,
    writer: Option<Writer>,
}

/// The heartbeat writer's shared state and its task's stop guard.
struct Writer {
    state: Arc<Mutex<WriterState>>,
    attempts: watch::Receiver<u64>,
    _stop: DropGuard,
}

struct WriterState {
    ledger: HeartbeatLedger,
    /// The primary's identity and WAL position as of the last successful write.
    primary: Option<PrimaryFacts>,
}

impl Primary {
    /// The `Primary` of this probe, shared with its other standbys' runners.
    fn shared(pool: &Arc<PgPool>, row_key: &str, method: &ReplicaMethod) -> Arc<Primary> {
        let key = format!("{row_key}|{method:?}");
        pool.heartbeat_writers
            .shared(&key, || Primary::new(pool, row_key, method))
    }

    fn new(pool: &Arc<PgPool>, row_key: &str, method: &ReplicaMethod) -> Primary {
        let writer = match method {
            ReplicaMethod::Heartbeat(settings) => Some(Writer::start(
                pool.clone(),
                settings.clone(),
                row_key.to_owned(),
            )),
            ReplicaMethod::Passive { .. } => None,
        };
        Primary {
            pool: pool.clone(),
            facts: tokio::sync::Mutex::new(None),
            writer,
        }
    }

    /// The primary's identity and position, sampled at most once per `max_age` for all of the
    /// probe's standbys.
    async fn facts(
        &self,
        max_age: Duration,
        deadline: Instant,
    ) -> Result<PrimaryFacts, ProbeError> {
        let mut cached = timeout_at(deadline, self.facts.lock())
            .await
            .map_err(|_| timeout("waiting for the primary's sample"))?;
        if let Some((sampled, result)) = &*cached {
            if crate::clock::elapsed(*sampled) < max_age {
                return result.clone();
            }
        }
        let sampled = crate::clock::instant();
        let result = self.sample(deadline).await;
        *cached = Some((sampled, result.clone()));
        result
    }

    async fn sample(&self, deadline: Instant) -> Result<PrimaryFacts, ProbeError> {
        let client = self.pool.get(deadline).await.map_err(on_primary)?;
        let seen_at = unix_now();
        count_statement();
        let row = timeout_at(deadline, client.query_one(PRIMARY_FACTS, &[]))
            .await
            .map_err(|_| timeout("the primary's sample"))?
            .map_err(|e| on_primary(query_error(&e)))?;
        let in_recovery: bool = get(&row, 0)?;
        if in_recovery {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                "the primary is in recovery: its DSN points at a standby",
            ));
        }
        let system: i64 = get(&row, 1)?;
        let walfile: Option<String> = get(&row, 2)?;
        let lsn: Option<String> = get(&row, 3)?;
        let facts = PrimaryFacts {
            identity: Identity {
                system,
                timeline: timeline_of_walfile(walfile.as_deref())?,
            },
            lsn: parse_lsn(lsn.as_deref())?,
            seen_at,
        };
        client.release();
        Ok(facts)
    }
}

impl Writer {
    fn start(pool: Arc<PgPool>, settings: HeartbeatSettings, row_key: String) -> Writer {
        let state = Arc::new(Mutex::new(WriterState {
            ledger: HeartbeatLedger::new(settings.period),
            primary: None,
        }));
        let (attempts_tx, attempts) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        let task_state = state.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = task_stop.cancelled() => {}
                _ = write_loop(pool, settings, row_key, task_state, attempts_tx) => {}
            }
        });
        Writer {
            state,
            attempts,
            _stop: stop.drop_guard(),
        }
    }
}

/// Writes a heartbeat every period until cancelled. A write that fails or outlasts its time is
/// recorded as a failure; the ledger turns failures into "unknown" after two write periods.
async fn write_loop(
    pool: Arc<PgPool>,
    settings: HeartbeatSettings,
    row_key: String,
    state: Arc<Mutex<WriterState>>,
    attempts: watch::Sender<u64>,
) {
    let mut ticker = tokio::time::interval(settings.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let sql = HeartbeatSql::new(&settings.schema);
    let mut table_ready = false;
    loop {
        ticker.tick().await;
        // A write gets at least a second: a slow commit is a late heartbeat, not a failure.
        let deadline = crate::clock::instant() + settings.period.max(Duration::from_secs(1));
        let proposed = lock(&state).ledger.next_seq();
        let written = timeout_at(
            deadline,
            write_once(
                &pool,
                &sql,
                &settings.instance,
                &row_key,
                proposed,
                &mut table_ready,
                deadline,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(timeout("the heartbeat write")));
        {
            let mut state = lock(&state);
            match written {
                Ok((seq, sent_at, facts)) => {
                    // Another cluster behind the same DSN (failover, restore): what this
                    // ledger remembers belongs to the old one.
                    if state
                        .primary
                        .is_some_and(|old| old.identity != facts.identity)
                    {
                        state.ledger = HeartbeatLedger::new(settings.period);
                    }
                    state.ledger.record_write(seq, sent_at);
                    state.primary = Some(facts);
                }
                Err(error) => {
                    // Whatever failed (a new server, a dropped table), look again next time.
                    table_ready = false;
                    state.ledger.record_failure(unix_now(), error);
                }
            }
        }
        attempts.send_modify(|n| *n += 1);
    }
}

/// The heartbeat statements for one schema.
struct HeartbeatSql {
    exists: String,
    create: String,
    write: String,
    read: String,
}

impl HeartbeatSql {
    fn new(schema: &str) -> Self {
        // The schema name is a checked plain identifier (lower-case letters, digits, _), so it
        // needs no quoting and cannot inject SQL.
        Self {
            exists: format!("SELECT to_regclass('{schema}.heartbeat') IS NOT NULL"),
            create: create_table_sql(schema),
            write: format!(
                "WITH w AS (INSERT INTO {schema}.heartbeat AS h (instance, probe, seq, written_at) \
                 VALUES ($1, $2, $3, clock_timestamp()) \
                 ON CONFLICT (instance, probe) DO UPDATE \
                 SET seq = greatest(EXCLUDED.seq, h.seq + 1), written_at = EXCLUDED.written_at \
                 RETURNING h.seq) \
                 SELECT w.seq, c.system_identifier, pg_walfile_name(pg_current_wal_lsn()), \
                 pg_current_wal_lsn()::text FROM w, pg_control_system() c"
            ),
            read: format!(
                "{STANDBY_FACTS}, (SELECT seq FROM {schema}.heartbeat \
                 WHERE instance = $1 AND probe = $2){STANDBY_FROM}"
            ),
        }
    }
}

/// The DDL of the heartbeat table, as documented in the README: one row per (instance, probe),
/// so the table stays as small as the number of writers.
pub fn create_table_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; \
         CREATE TABLE IF NOT EXISTS {schema}.heartbeat ( \
         instance text NOT NULL, probe text NOT NULL, seq bigint NOT NULL, \
         written_at timestamptz NOT NULL, PRIMARY KEY (instance, probe))"
    )
}

/// One heartbeat: creates the table when missing, then upserts the row. Returns the `seq`
/// written (never below what the table held: the sequence continues after a restart), the
/// daemon time the write was sent, and the primary's identity and position.
async fn write_once(
    pool: &PgPool,
    sql: &HeartbeatSql,
    instance: &str,
    row_key: &str,
    proposed: i64,
    table_ready: &mut bool,
    deadline: Instant,
) -> Result<(i64, f64, PrimaryFacts), ProbeError> {
    let client = pool.get(deadline).await?;
    if !*table_ready {
        // Checked first: `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when
        // the schema exists, and a least-privilege role may only have the table's grants.
        count_statement();
        let exists: bool = get(
            &client
                .query_one(sql.exists.as_str(), &[])
                .await
                .map_err(|e| write_error(&e))?,
            0,
        )?;
        if !exists {
            count_statement();
            client
                .batch_execute(&sql.create)
                .await
                .map_err(|e| write_error(&e))?;
        }
        *table_ready = true;
    }
    let sent_at = unix_now();
    count_statement();
    let params: [&(dyn ToSql + Sync); 3] = [&instance, &row_key, &proposed];
    let row = client
        .query_one(sql.write.as_str(), &params)
        .await
        .map_err(|e| write_error(&e))?;
    let seq: i64 = get(&row, 0)?;
    let system: i64 = get(&row, 1)?;
    let walfile: Option<String> = get(&row, 2)?;
    let lsn: Option<String> = get(&row, 3)?;
    let facts = PrimaryFacts {
        identity: Identity {
            system,
            timeline: timeline_of_walfile(walfile.as_deref())?,
        },
        lsn: parse_lsn(lsn.as_deref())?,
        seen_at: sent_at,
    };
    client.release();
    Ok((seq, sent_at, facts))
}

fn write_error(error: &tokio_postgres::Error) -> ProbeError {
    if error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        return ProbeError::new(
            ErrorReason::Topology,
            "the primary is read-only (in recovery): its DSN points at a standby",
        );
    }
    let error = query_error(error);
    ProbeError::new(
        error.reason,
        format!("heartbeat write failed: {}", error.message),
    )
}

/// One standby of one replica probe.
pub struct PostgresReplicaProbe {
    spec: PostgresReplica,
    /// `budget/probe`: the heartbeat row's `probe` column and part of the sharing key.
    row_key: String,
    interval: Duration,
    max_lag: Option<Duration>,
    primary_pool: Arc<PgPool>,
    standby: Arc<PgPool>,
    /// Created at the first run (not by `check`, which must not write).
    primary: Option<Arc<Primary>>,
    /// The standby's identity at the previous run; a change resets what follows.
    identity: Option<Identity>,
    previous_replay: Option<u64>,
    map: LsnTimeMap,
}

/// What the standby answered in one run.
struct StandbyFacts {
    identity: Identity,
    in_recovery: bool,
    /// Standby clock, unix seconds.
    server_time: f64,
    receiver_age: Option<f64>,
    receiver_running: bool,
    received: Option<u64>,
    replayed: Option<u64>,
    visible_seq: Option<i64>,
    /// Daemon unix time the query was sent and the answer arrived.
    sent_at: f64,
    received_at: f64,
}

impl PostgresReplicaProbe {
    pub fn new(
        budget: &str,
        probe: &str,
        interval: Duration,
        max_lag: Option<Duration>,
        spec: PostgresReplica,
        primary_pool: Arc<PgPool>,
        standby: Arc<PgPool>,
    ) -> Self {
        Self {
            spec,
            row_key: format!("{budget}/{probe}"),
            interval,
            max_lag,
            primary_pool,
            standby,
            primary: None,
            identity: None,
            previous_replay: None,
            map: LsnTimeMap::default(),
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<(Sample, StandbyDetail), ProbeError> {
        let primary = self
            .primary
            .get_or_insert_with(|| {
                Primary::shared(&self.primary_pool, &self.row_key, &self.spec.method)
            })
            .clone();
        match &self.spec.method {
            ReplicaMethod::Heartbeat(settings) => {
                let settings = settings.clone();
                self.run_heartbeat(&primary, &settings, deadline).await
            }
            ReplicaMethod::Passive {
                receiver_silence_limit,
            } => {
                let limit = *receiver_silence_limit;
                self.run_passive(&primary, limit, deadline).await
            }
        }
    }

    async fn run_heartbeat(
        &mut self,
        primary: &Primary,
        settings: &HeartbeatSettings,
        deadline: Instant,
    ) -> Result<(Sample, StandbyDetail), ProbeError> {
        let Some(writer) = &primary.writer else {
            return Err(ProbeError::new(ErrorReason::NoData, "no heartbeat writer"));
        };
        // The first run may come before the writer's first attempt; wait for it (within the
        // deadline) rather than report "nothing written".
        let mut attempts = writer.attempts.clone();
        let _ = timeout_at(deadline, attempts.wait_for(|n| *n > 0)).await;

        let facts = self
            .standby_facts(Some(&settings.instance), deadline)
            .await?;
        let (ledger_lag, ryw, primary_facts) = {
            let state = lock(&writer.state);
            let ryw = settings.ryw_delay.and_then(|delay| {
                let (seq, _) = state
                    .ledger
                    .latest_write_at_or_before(facts.sent_at - delay.as_secs_f64())?;
                Some(ReadYourWrites {
                    missed: facts.visible_seq.is_none_or(|visible| visible < seq),
                })
            });
            (
                state.ledger.lag(facts.visible_seq, facts.received_at),
                ryw,
                state.primary,
            )
        };
        let ledger_lag = ledger_lag
            .map_err(|e| ProbeError::new(e.reason, format!("heartbeat writer: {}", e.message)))?;
        let primary_facts = primary_facts
            .ok_or_else(|| ProbeError::new(ErrorReason::NoData, "no heartbeat written yet"))?;
        self.check_topology(&facts, &primary_facts)?;
        if ledger_lag.lower_bound {
            self.lower_bound_allowed(ledger_lag.lag_seconds, "heartbeats older than this process")?;
        }
        let (mut sample, detail) = self.sample_from(&facts, &primary_facts, ledger_lag.lag_seconds);
        sample.read_your_writes = ryw;
        sample.detail = Some(format!(
            "heartbeat seq {} visible, {} not yet{}{}",
            facts
                .visible_seq
                .map_or_else(|| "none".to_owned(), |seq| seq.to_string()),
            ledger_lag.unseen_writes,
            if ledger_lag.lower_bound {
                " (lag is a lower bound)"
            } else {
                ""
            },
            receiver_detail(&facts),
        ));
        Ok((sample, detail))
    }

    async fn run_passive(
        &mut self,
        primary: &Primary,
        silence_limit: Duration,
        deadline: Instant,
    ) -> Result<(Sample, StandbyDetail), ProbeError> {
        // Shared by the probe's standbys: sampled at most every quarter interval.
        let primary_facts = primary.facts(self.interval / 4, deadline).await?;
        let facts = self.standby_facts(None, deadline).await?;
        self.check_topology(&facts, &primary_facts)?;
        if !facts.receiver_running {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                "the standby's WAL receiver is not running: it is not streaming from the primary",
            ));
        }
        match facts.receiver_age {
            None => {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    "the WAL receiver reports no last_msg_receipt_time (none yet, or the role \
                     lacks pg_read_all_stats)",
                ));
            }
            Some(age) if age > silence_limit.as_secs_f64() => {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!(
                        "the WAL receiver has not heard from the primary for {age:.1} s \
                         (receiver_silence_limit {:?})",
                        silence_limit
                    ),
                ));
            }
            Some(_) => {}
        }
        let replayed = facts
            .replayed
            .ok_or_else(|| ProbeError::new(ErrorReason::NoData, "no replay position"))?;
        self.map.observe(primary_facts.lsn, primary_facts.seen_at);
        if let Some(received) = facts.received {
            self.map.observe(received, facts.sent_at);
        }
        let (lag, covered) = self.map.lag(replayed, facts.received_at);
        if !covered {
            self.lower_bound_allowed(lag, "WAL written before this process started sampling")?;
        }
        self.map.forget_before(replayed);
        let (mut sample, detail) = self.sample_from(&facts, &primary_facts, lag);
        sample.detail = Some(format!(
            "replayed {}, received {}, primary at {}{}{}",
            format_lsn(replayed),
            facts.received.map_or_else(|| "-".to_owned(), format_lsn),
            format_lsn(primary_facts.lsn),
            if covered {
                ""
            } else {
                " (lag is a lower bound)"
            },
            receiver_detail(&facts),
        ));
        Ok((sample, detail))
    }

    /// A lag that is only known to be at least `lag` is reported when it already exceeds the
    /// budget (that much is certain); below it, the probe does not know and says so.
    fn lower_bound_allowed(&self, lag: f64, cause: &str) -> Result<(), ProbeError> {
        match self.max_lag {
            Some(max_lag) if lag >= max_lag.as_secs_f64() => Ok(()),
            _ => Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "the standby still misses {cause}; lag is at least {lag:.1} s, not yet known"
                ),
            )),
        }
    }

    /// Queries the standby once: identity, clock, receiver, positions and (heartbeat) the
    /// visible `seq`. Resets per-standby state when its identity changed.
    async fn standby_facts(
        &mut self,
        instance: Option<&str>,
        deadline: Instant,
    ) -> Result<StandbyFacts, ProbeError> {
        let client = self.standby.get(deadline).await?;
        let queried = timeout_at(
            deadline,
            query_standby(&client, &self.spec, instance, &self.row_key),
        )
        .await
        .map_err(|_| timeout("the standby's query"))??;
        client.release();
        let (row, sent_at, received_at, with_seq) = queried;
        let facts = standby_facts_from(&row, sent_at, received_at, with_seq)?;
        if self.identity.is_some_and(|old| old != facts.identity) {
            self.map = LsnTimeMap::default();
            self.previous_replay = None;
        }
        self.identity = Some(facts.identity);
        Ok(facts)
    }

    fn check_topology(
        &self,
        standby: &StandbyFacts,
        primary: &PrimaryFacts,
    ) -> Result<(), ProbeError> {
        if !standby.in_recovery {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!(
                    "{} is not in recovery: it was promoted, or its DSN points at a primary",
                    self.spec.standby
                ),
            ));
        }
        if standby.identity.system != primary.identity.system {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!(
                    "{} belongs to system {}, the primary {} to system {}",
                    self.spec.standby,
                    standby.identity.system,
                    self.spec.primary,
                    primary.identity.system
                ),
            ));
        }
        if standby.identity.timeline != primary.identity.timeline {
            return Err(ProbeError::new(
                ErrorReason::Topology,
                format!(
                    "{} is on timeline {}, the primary {} on timeline {}",
                    self.spec.standby,
                    standby.identity.timeline,
                    self.spec.primary,
                    primary.identity.timeline
                ),
            ));
        }
        Ok(())
    }

    /// The parts of a sample both methods share: positions, regression, backlog, skew; and
    /// the receiver's age.
    fn sample_from(
        &mut self,
        facts: &StandbyFacts,
        primary: &PrimaryFacts,
        lag: f64,
    ) -> (Sample, StandbyDetail) {
        let regressed = match (self.previous_replay, facts.replayed) {
            (Some(previous), Some(now)) => now < previous,
            _ => false,
        };
        if facts.replayed.is_some() {
            self.previous_replay = facts.replayed;
        }
        let midpoint = (facts.sent_at + facts.received_at) / 2.0;
        let sample = Sample {
            lag_seconds: Some(lag.max(0.0)),
            negative_lag_clamped: lag < 0.0,
            backlog: facts.replayed.map(|replayed| Backlog {
                unit: BacklogUnit::Bytes,
                value: primary.lsn.saturating_sub(replayed) as f64,
            }),
            position: facts.replayed.map(format_lsn),
            position_regressed: regressed,
            clock_skew_seconds: Some(facts.server_time - midpoint),
            ..Sample::default()
        };
        let detail = StandbyDetail {
            receiver_last_message_age_seconds: facts.receiver_age,
        };
        (sample, detail)
    }

    /// `check --connect`: reaches both servers and checks the topology and, for heartbeat, the
    /// grants the writer needs — without writing anything.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let probe_primary = Primary {
            pool: self.primary_pool.clone(),
            facts: tokio::sync::Mutex::new(None),
            writer: None,
        };
        let primary = probe_primary.facts(Duration::ZERO, deadline).await?;
        let facts = self.standby_facts(None, deadline).await?;
        self.check_topology(&facts, &primary)?;
        let mut answer = format!(
            "{} streams from {} on timeline {}",
            self.spec.standby, self.spec.primary, primary.identity.timeline
        );
        if let ReplicaMethod::Heartbeat(settings) = &self.spec.method {
            check_heartbeat_grants(
                &self.primary_pool,
                &self.standby,
                &settings.schema,
                deadline,
            )
            .await?;
            answer.push_str(&format!("; {}.heartbeat writable", settings.schema));
        }
        Ok(answer)
    }
}

/// Checks that the writer can write the heartbeat table (or create it) on the primary and that
/// the standby's role can read it.
async fn check_heartbeat_grants(
    primary: &PgPool,
    standby: &PgPool,
    schema: &str,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let table = format!("{schema}.heartbeat");
    let sql = "SELECT to_regclass($1) IS NOT NULL, \
         CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE \
         has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT') \
         AND has_table_privilege($1, 'UPDATE') END, \
         has_database_privilege(current_database(), 'CREATE')";
    let client = primary.get(deadline).await.map_err(on_primary)?;
    let row = timeout_at(deadline, client.query_one(sql, &[&table]))
        .await
        .map_err(|_| timeout("the grant check"))?
        .map_err(|e| on_primary(query_error(&e)))?;
    let exists: bool = get(&row, 0)?;
    let writable: Option<bool> = get(&row, 1)?;
    let can_create: bool = get(&row, 2)?;
    client.release();
    match (exists, writable) {
        (true, Some(true)) => {}
        (true, _) => {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!("the primary's role needs SELECT, INSERT and UPDATE on {table}"),
            ));
        }
        (false, _) if !can_create => {
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!(
                    "{table} does not exist and the primary's role cannot create it: create it \
                     as documented, or grant CREATE on the database"
                ),
            ));
        }
        (false, _) => {}
    }
    let client = standby.get(deadline).await?;
    let row = timeout_at(
        deadline,
        client.query_one(
            "SELECT to_regclass($1) IS NULL OR has_table_privilege($1, 'SELECT')",
            &[&table],
        ),
    )
    .await
    .map_err(|_| timeout("the grant check"))?
    .map_err(|e| query_error(&e))?;
    let readable: bool = get(&row, 0)?;
    client.release();
    if !readable {
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!("the standby's role needs SELECT on {table}"),
        ));
    }
    Ok(())
}

/// Sends the standby query; with a heartbeat instance, also reads the visible `seq`. A standby
/// that has not replayed the table's creation yet shows no heartbeat at all.
async fn query_standby(
    client: &Client,
    spec: &PostgresReplica,
    instance: Option<&str>,
    row_key: &str,
) -> Result<(Row, f64, f64, bool), ProbeError> {
    if let (Some(instance), ReplicaMethod::Heartbeat(settings)) = (instance, &spec.method) {
        let sql = HeartbeatSql::new(&settings.schema).read;
        let sent_at = unix_now();
        count_statement();
        match client.query_one(sql.as_str(), &[&instance, &row_key]).await {
            Ok(row) => return Ok((row, sent_at, unix_now(), true)),
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => {}
            Err(error) => return Err(query_error(&error)),
        }
    }
    let sql = format!("{STANDBY_FACTS}{STANDBY_FROM}");
    let sent_at = unix_now();
    count_statement();
    let row = client
        .query_one(sql.as_str(), &[])
        .await
        .map_err(|e| query_error(&e))?;
    Ok((row, sent_at, unix_now(), false))
}

fn standby_facts_from(
    row: &Row,
    sent_at: f64,
    received_at: f64,
    with_seq: bool,
) -> Result<StandbyFacts, ProbeError> {
    let in_recovery: bool = get(row, 0)?;
    let system: i64 = get(row, 1)?;
    let received_tli: Option<i32> = get(row, 2)?;
    let checkpoint_tli: i32 = get(row, 3)?;
    let server_time: f64 = get(row, 4)?;
    let receiver_age: Option<f64> = get(row, 5)?;
    let receiver_pid: Option<i32> = get(row, 6)?;
    let received: Option<String> = get(row, 7)?;
    let replayed: Option<String> = get(row, 8)?;
    let visible_seq: Option<i64> = if with_seq { get(row, 9)? } else { None };
    // The receiver's timeline is the one it streams now; the last restartpoint's timeline
    // stands in while no receiver runs.
    let timeline = received_tli.unwrap_or(checkpoint_tli);
    Ok(StandbyFacts {
        identity: Identity {
            system,
            timeline: u32::try_from(timeline).map_err(|_| {
                ProbeError::new(ErrorReason::Decode, format!("timeline {timeline}"))
            })?,
        },
        in_recovery,
        server_time,
        receiver_age,
        receiver_running: receiver_pid.is_some(),
        received: received
            .as_deref()
            .map(|lsn| parse_lsn(Some(lsn)))
            .transpose()?,
        replayed: replayed
            .as_deref()
            .map(|lsn| parse_lsn(Some(lsn)))
            .transpose()?,
        visible_seq,
        sent_at,
        received_at,
    })
}

fn receiver_detail(facts: &StandbyFacts) -> String {
    match (facts.receiver_running, facts.receiver_age) {
        (false, _) => ", WAL receiver not running".to_owned(),
        (true, Some(age)) => format!(", receiver heard from the primary {age:.1} s ago"),
        (true, None) => String::new(),
    }
}

/// WAL positions with the daemon time each was first seen, strictly increasing in both.
#[derive(Debug, Default)]
struct LsnTimeMap {
    entries: VecDeque<(u64, f64)>,
}

impl LsnTimeMap {
    /// Records that the WAL reached `lsn` by `at`. Only positions beyond every known one are
    /// new; a time earlier than the newest entry's (a cached primary sample) is raised to it,
    /// which can only make lag smaller by that difference, never invent lag.
    fn observe(&mut self, lsn: u64, at: f64) {
        match self.entries.back() {
            Some(&(last_lsn, _)) if lsn <= last_lsn => {}
            Some(&(_, last_at)) => self.entries.push_back((lsn, at.max(last_at))),
            None => self.entries.push_back((lsn, at)),
        }
        if self.entries.len() > MAX_MAP_ENTRIES {
            // Thin the newer half; the oldest pending entries decide the lag.
            let middle = self.entries.len() / 2;
            self.entries.remove(middle + 1);
        }
    }

    /// Lag of a standby that replayed up to `replayed`, at `now`: now − the time the first
    /// position beyond it was seen (0 when none is). `covered` is false when the map starts
    /// beyond `replayed`: the oldest missing WAL was written before sampling began, so the lag
    /// is only a lower bound.
    fn lag(&self, replayed: u64, now: f64) -> (f64, bool) {
        let covered = self
            .entries
            .front()
            .is_none_or(|&(first, _)| first <= replayed);
        let lag = self
            .entries
            .iter()
            .find(|(lsn, _)| *lsn > replayed)
            .map_or(0.0, |(_, at)| now - at);
        (lag, covered)
    }

    /// Drops entries the standby has replayed, keeping the newest of them so that the map
    /// still covers the replay position.
    fn forget_before(&mut self, replayed: u64) {
        while self.entries.len() > 1 && self.entries[1].0 <= replayed {
            self.entries.pop_front();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, ProbeError> {
    row.try_get(index)
        .map_err(|e| ProbeError::new(ErrorReason::Decode, e.to_string()))
}

fn timeout(what: &str) -> ProbeError {
    ProbeError::new(
        ErrorReason::Timeout,
        format!("{what} did not complete before the deadline"),
    )
}

fn on_primary(error: ProbeError) -> ProbeError {
    ProbeError::new(error.reason, format!("primary: {}", error.message))
}

/// `16/B374D848` as a number.
fn parse_lsn(text: Option<&str>) -> Result<u64, ProbeError> {
    let text = text.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "WAL position is NULL"))?;
    let parsed = text.split_once('/').and_then(|(high, low)| {
        Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
    });
    parsed.ok_or_else(|| ProbeError::new(ErrorReason::Decode, format!("bad WAL position {text}")))
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The timeline of a WAL file name: its first 8 hex digits.
fn timeline_of_walfile(name: Option<&str>) -> Result<u32, ProbeError> {
    let name = name.ok_or_else(|| ProbeError::new(ErrorReason::NoData, "no WAL file name"))?;
    name.get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| ProbeError::new(ErrorReason::Decode, format!("bad WAL file name {name}")))
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for PostgresReplicaProbe {
    const KEY: &'static str = "postgres_replica";
    type Settings = PostgresReplica;

    fn new(
        probe: &crate::model::Probe,
        settings: &PostgresReplica,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(
            &probe.budget,
            &probe.name,
            probe.interval,
            probe.max_lag,
            settings.clone(),
            sources.postgres(&settings.primary)?,
            sources.postgres(&settings.standby)?,
        ))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        let (sample, detail) = PostgresReplicaProbe::run(self, deadline).await?;
        Ok(super::Reading {
            sample,
            detail: Some(super::Detail::PostgresReplica(detail)),
        })
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        PostgresReplicaProbe::check(self, deadline).await
    }

    fn source(settings: &PostgresReplica) -> &str {
        &settings.standby
    }

    fn sources(settings: &PostgresReplica) -> Vec<&str> {
        vec![settings.standby.as_str(), settings.primary.as_str()]
    }

    fn checks_read_your_writes(settings: &PostgresReplica) -> bool {
        matches!(&settings.method, ReplicaMethod::Heartbeat(h) if h.ryw_delay.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_format() {
        assert_eq!(parse_lsn(Some("16/B374D848")).expect("lsn"), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn(Some("0/0")).expect("lsn"), 0);
        assert_eq!(
            parse_lsn(Some("nope")).expect_err("bad").reason,
            ErrorReason::Decode
        );
        assert_eq!(
            parse_lsn(None).expect_err("null").reason,
            ErrorReason::NoData
        );
        assert_eq!(
            timeline_of_walfile(Some("000000020000000000000003")).expect("tli"),
            2
        );
    }

    #[test]
    fn lsn_map_measures_from_the_first_unreplayed_position() {
        let mut map = LsnTimeMap::default();
        // Idle for a minute: the same position again and again is one entry, first seen at 0.
        for t in 0..60 {
            map.observe(100, f64::from(t));
        }
        assert_eq!(map.lag(100, 60.0), (0.0, true), "idle and replayed is 0");
        // One write at 60 s, not replayed for 3 s: lag 3 s, not 63 s.
        map.observe(200, 60.0);
        assert_eq!(map.lag(100, 63.0), (3.0, true));
        // A stale (cached) sample time never goes back in time.
        map.observe(300, 59.0);
        assert_eq!(map.entries.back(), Some(&(300, 60.0)));
        map.forget_before(200);
        assert_eq!(map.entries.front(), Some(&(200, 60.0)), "keeps coverage");
        assert_eq!(map.lag(200, 64.0), (4.0, true));
        assert_eq!(map.lag(300, 64.0), (0.0, true));
        // A standby behind everything the map has seen: only a lower bound.
        assert_eq!(map.lag(150, 64.0), (4.0, false));
    }

    #[test]
    fn lsn_map_is_bounded() {
        let mut map = LsnTimeMap::default();
        for n in 0..(MAX_MAP_ENTRIES as u64 + 10) {
            map.observe(n + 1, n as f64);
        }
        assert_eq!(map.entries.len(), MAX_MAP_ENTRIES);
        assert_eq!(
            map.entries.front(),
            Some(&(1, 0.0)),
            "the oldest entry stays"
        );
    }
}
