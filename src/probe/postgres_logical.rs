//! `postgres_logical`: a logical replication slot's backlog in bytes, and its lag in seconds
//! from an LSN→time map the probe builds in memory from its own read-only samples.
//!
//! PostgreSQL records no time for a WAL position, so each run samples the primary's WAL insert
//! position (`pg_current_wal_insert_lsn()`) and its transaction snapshot with the daemon's
//! monotonic clock. The slot's `confirmed_flush_lsn` is then placed in that map: the oldest
//! transaction the consumer has not confirmed committed after the last sample at or before
//! that position, and the first later sample whose snapshot shows a newly completed
//! transaction brackets its commit. Lag is `now −` the sample *before* that bracket: an upper
//! bound, over by at most one interval, never under.
//!
//! Idle is not lag: WAL written without any transaction completing (checkpoints, running-xacts
//! records, WAL switches) moves `pg_current_wal_lsn()` past a caught-up slot, but the snapshot's
//! `xmax` and in-progress list do not change, so it reads as 0. Before the map reaches back to
//! the slot's position (a daemon that just started on a slot already behind) the lag is
//! unknown (`no_data`), never 0.

pub mod config;

use std::sync::Arc;

use tokio::time::{Instant, timeout_at};
use tokio_postgres::types::PgLsn;

use super::postgres::{PgPool, query_error};
use super::postgres::query::begin;
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::model::PostgresLogical;

/// Samples kept at most; beyond that the map is thinned (see [`WalTimeMap::thin`]). At a 1 s
/// interval this covers more than an hour at full resolution, and any backlog after that at
/// a resolution that halves each time the map fills up.
const MAX_SAMPLES: usize = 4096;

/// One statement, so that every value comes from one moment of the server: the statement's
/// snapshot is taken first, the slot is read during the scan, and the WAL positions are read
/// last. Reading the slot before the WAL position can only overstate the backlog.
const SLOT_QUERY: &str = "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn(), \
     pg_current_wal_lsn(), s.slot_type, s.active, s.wal_status, s.confirmed_flush_lsn, s.plugin \
     FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = $1";

pub struct PostgresLogicalProbe {
    spec: PostgresLogical,
    pool: Arc<PgPool>,
    map: WalTimeMap,
    /// The slot's confirmed position on the previous run, to count positions that go back.
    previous: Option<u64>,
}

impl PostgresLogicalProbe {
    pub fn new(spec: PostgresLogical, pool: Arc<PgPool>) -> Self {
        Self {
            spec,
            pool,
            map: WalTimeMap::default(),
            previous: None,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let mut client = self.pool.get(deadline).await?;
        // Taken before the statement is sent: no later than the server's snapshot, so lag
        // measured from it is never understated.
        let sent_at = crate::clock::instant();
        let read = timeout_at(deadline, read_slot(&mut client, &self.spec.slot, deadline)).await;
        let now = crate::clock::instant();
        let reading = match read {
            Ok(Ok(reading)) => reading,
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(ProbeError::new(
                    ErrorReason::Timeout,
                    "slot query did not complete before the deadline",
                ));
            }
        };
        client.release();

        // The WAL sample goes into the map whatever the slot's state: a dropped slot that
        // comes back finds a map that already covers it.
        let reset = self
            .map
            .record(sent_at, reading.insert_lsn, reading.snapshot);
        let slot = usable_slot(&self.spec.slot, reading.slot)?;
        let confirmed = slot.confirmed_flush;
        let position_regressed = self.previous.is_some_and(|previous| confirmed < previous);
        self.previous = Some(confirmed);
        let backlog_bytes = reading.flush_lsn.saturating_sub(confirmed);

        let lag = self.map.lag(confirmed, now);
        self.map.forget_before(confirmed);
        let lag_seconds = match lag {
            MapLag::CaughtUp | MapLag::Idle => 0.0,
            MapLag::Behind { seconds } => seconds,
            MapLag::NotCovered { first_lsn, age } => {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!(
                        "the LSN-to-time map does not cover the backlog yet: slot {} is at {}, \
                         the first sample ({:.0} s ago) at {}; unknown until the consumer \
                         confirms past that sample",
                        self.spec.slot,
                        PgLsn::from(confirmed),
                        age,
                        PgLsn::from(first_lsn)
                    ),
                ));
            }
        };
        let mut detail = format!(
            "slot {} {} ({}, wal_status {}), confirmed {}, {} bytes behind",
            self.spec.slot,
            if slot.active { "active" } else { "inactive" },
            slot.plugin,
            slot.wal_status,
            PgLsn::from(confirmed),
            backlog_bytes
        );
        if lag == MapLag::Idle {
            detail.push_str("; no transaction committed since the slot's position");
        }
        if reset {
            detail.push_str("; WAL position went back, LSN-to-time map restarted");
        }
        // Nothing waits for the consumer when it is caught up or only background WAL lies past
        // it: that is not a stall, however long the slot stays put (the backlog still shows
        // those bytes, which alone would read as "behind and not moving").
        let progress_age_seconds = matches!(lag, MapLag::CaughtUp | MapLag::Idle).then_some(0.0);
        Ok(Sample {
            lag_seconds: Some(lag_seconds),
            backlog: Some(Backlog {
                unit: BacklogUnit::Bytes,
                value: backlog_bytes as f64,
            }),
            position: Some(PgLsn::from(confirmed).to_string()),
            detail: Some(detail),
            position_regressed,
            progress_age_seconds,
            // Both ends of the lag are the daemon's monotonic clock: no second clock to skew.
            ..Sample::default()
        })
    }

    /// Runs the probe's statement once: the WAL functions are allowed, the slot exists, is
    /// logical and has not lost its WAL. Adds nothing to the map.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let mut client = self.pool.get(deadline).await?;
        let read = timeout_at(deadline, read_slot(&mut client, &self.spec.slot, deadline)).await;
        let reading = match read {
            Ok(Ok(reading)) => reading,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(ProbeError::new(ErrorReason::Timeout, "check timed out")),
        };
        client.release();
        let slot = usable_slot(&self.spec.slot, reading.slot)?;
        Ok(format!(
            "slot {} found ({}, {}, wal_status {})",
            self.spec.slot,
            slot.plugin,
            if slot.active { "active" } else { "inactive" },
            slot.wal_status
        ))
    }
}

/// What one run reads from the server.
struct Reading {
    snapshot: Snapshot,
    insert_lsn: u64,
    flush_lsn: u64,
    /// `None` when no slot has that name.
    slot: Option<SlotRow>,
}

struct SlotRow {
    slot_type: String,
    active: bool,
    wal_status: Option<String>,
    confirmed_flush: Option<u64>,
    plugin: Option<String>,
}

/// A logical slot that can be measured.
struct Slot {
    active: bool,
    wal_status: String,
    confirmed_flush: u64,
    plugin: String,
}

async fn read_slot(
    client: &mut tokio_postgres::Client,
    slot: &str,
    deadline: Instant,
) -> Result<Reading, ProbeError> {
    let tx = begin(client, deadline).await?;
    let row = tx
        .query_one(SLOT_QUERY, &[&slot])
        .await
        .map_err(|e| query_error(&e))?;
    tx.rollback().await.map_err(|e| query_error(&e))?;
    let decode = |e: tokio_postgres::Error| ProbeError::new(ErrorReason::Decode, e.to_string());
    let snapshot: String = row.try_get(0).map_err(decode)?;
    let snapshot = Snapshot::parse(&snapshot).ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            format!("unexpected snapshot {snapshot:?}"),
        )
    })?;
    let insert_lsn: PgLsn = row.try_get(1).map_err(decode)?;
    let flush_lsn: PgLsn = row.try_get(2).map_err(decode)?;
    let slot_type: Option<String> = row.try_get(3).map_err(decode)?;
    let slot = match slot_type {
        None => None,
        Some(slot_type) => Some(SlotRow {
            slot_type,
            active: row.try_get(4).map_err(decode)?,
            wal_status: row.try_get(5).map_err(decode)?,
            confirmed_flush: row
                .try_get::<_, Option<PgLsn>>(6)
                .map_err(decode)?
                .map(u64::from),
            plugin: row.try_get(7).map_err(decode)?,
        }),
    };
    Ok(Reading {
        snapshot,
        insert_lsn: insert_lsn.into(),
        flush_lsn: flush_lsn.into(),
        slot,
    })
}

/// The slot if it can be measured, else why not. An inactive slot is measured (its lag grows
/// while nobody consumes); a dropped, physical or lost slot is not.
fn usable_slot(name: &str, row: Option<SlotRow>) -> Result<Slot, ProbeError> {
    let row = row.ok_or_else(|| {
        ProbeError::new(ErrorReason::NoData, format!("slot {name} does not exist"))
    })?;
    if row.slot_type != "logical" {
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "slot {name} is a {} slot; postgres_logical measures logical slots",
                row.slot_type
            ),
        ));
    }
    let wal_status = row.wal_status.unwrap_or_else(|| "unknown".to_owned());
    if wal_status == "lost" {
        // Its consumer can never receive what is missing: no lag figure would be true.
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "slot {name} has lost WAL it needs (wal_status lost, max_slot_wal_keep_size): \
                 its consumer cannot continue"
            ),
        ));
    }
    let confirmed_flush = row.confirmed_flush.ok_or_else(|| {
        ProbeError::new(
            ErrorReason::NoData,
            format!("slot {name} has no confirmed_flush_lsn"),
        )
    })?;
    Ok(Slot {
        active: row.active,
        wal_status,
        confirmed_flush,
        plugin: row.plugin.unwrap_or_default(),
    })
}

/// The parts of a `pg_current_snapshot()` that tell whether a transaction completed between
/// two samples.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// One past the latest completed transaction id (64-bit, `xid8`).
    xmax: u64,
    /// Transaction ids below `xmax` still in progress, sorted.
    xip: Vec<u64>,
}

impl Snapshot {
    /// Parses the text form `xmin:xmax:xip,xip,…`.
    fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let xip_text = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let mut xip = xip_text
            .split(',')
            .filter(|xid| !xid.is_empty())
            .map(|xid| xid.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        xip.sort_unstable();
        Some(Snapshot { xmax, xip })
    }

    /// Whether some transaction completed (committed or aborted) between `self` and `later`.
    /// A transaction that completes either raises `xmax` (it was at or above the old one) or
    /// leaves the in-progress list; nothing else changes either.
    fn completed_before(&self, later: &Snapshot) -> bool {
        later.xmax > self.xmax
            || self
                .xip
                .iter()
                .any(|xid| later.xip.binary_search(xid).is_err())
    }
}

/// One sample of the map: at `at` the WAL insert position was `insert_lsn`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WalSample {
    at: Instant,
    insert_lsn: u64,
    /// A transaction completed between the previous sample's snapshot and this one's (true for
    /// the first sample: nothing is known before it).
    completed_since_previous: bool,
}

/// Where the slot's position falls in the map.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MapLag {
    /// The slot has confirmed everything written.
    CaughtUp,
    /// WAL lies past the slot, but no transaction completed since: background records only.
    Idle,
    Behind {
        seconds: f64,
    },
    /// The map starts after the slot's position: unknown.
    NotCovered {
        first_lsn: u64,
        age: f64,
    },
}

/// WAL insert positions with the daemon's monotonic time they were sampled at, oldest first,
/// and the last snapshot.
#[derive(Debug, Default)]
struct WalTimeMap {
    samples: Vec<WalSample>,
    last_snapshot: Option<Snapshot>,
}

impl WalTimeMap {
    /// Adds a sample taken at `at`. A WAL position or snapshot that went back (another server
    /// behind the DSN, a restore) makes every earlier sample meaningless: the map restarts,
    /// and the function says so.
    fn record(&mut self, at: Instant, insert_lsn: u64, snapshot: Snapshot) -> bool {
        let went_back = self
            .samples
            .last()
            .is_some_and(|last| insert_lsn < last.insert_lsn)
            || self
                .last_snapshot
                .as_ref()
                .is_some_and(|last| snapshot.xmax < last.xmax);
        if went_back {
            self.samples.clear();
            self.last_snapshot = None;
        }
        let completed_since_previous = self
            .last_snapshot
            .as_ref()
            .is_none_or(|last| last.completed_before(&snapshot));
        self.samples.push(WalSample {
            at,
            insert_lsn,
            completed_since_previous,
        });
        self.last_snapshot = Some(snapshot);
        if self.samples.len() > MAX_SAMPLES {
            self.thin();
        }
        went_back
    }

    /// The lag of a slot confirmed up to `confirmed`, at `now`.
    fn lag(&self, confirmed: u64, now: Instant) -> MapLag {
        let Some(newest) = self.samples.last() else {
            return MapLag::NotCovered {
                first_lsn: 0,
                age: 0.0,
            };
        };
        if confirmed >= newest.insert_lsn {
            return MapLag::CaughtUp;
        }
        // The last sample at or before the slot's position: every transaction the consumer
        // has not confirmed committed after it (its commit record lies at or past that
        // position, so it was written after the sample's snapshot).
        let Some(base) = self
            .samples
            .iter()
            .rposition(|sample| sample.insert_lsn <= confirmed)
        else {
            let first = self.samples[0];
            return MapLag::NotCovered {
                first_lsn: first.insert_lsn,
                age: now.saturating_duration_since(first.at).as_secs_f64(),
            };
        };
        // The first later sample that saw a transaction complete: the oldest pending commit
        // happened after the sample before it. Report from that earlier sample (upper bound).
        match (base + 1..self.samples.len()).find(|&i| self.samples[i].completed_since_previous) {
            None => MapLag::Idle,
            Some(first) => MapLag::Behind {
                seconds: now
                    .saturating_duration_since(self.samples[first - 1].at)
                    .as_secs_f64(),
            },
        }
    }

    /// Drops samples the slot has moved past; they can never bracket its position again,
    /// since a slot's confirmed position only moves forward.
    fn forget_before(&mut self, confirmed: u64) {
        if let Some(base) = self
            .samples
            .iter()
            .rposition(|sample| sample.insert_lsn <= confirmed)
        {
            self.samples.drain(..base);
        }
    }

    /// Halves the number of samples, keeping the oldest (the slot's base) and the newest.
    /// Dropping a sample merges the two intervals around it, so "a transaction completed" is
    /// kept for the merged interval and the bound stays an upper bound, only coarser.
    fn thin(&mut self) {
        let Some((&oldest, rest)) = self.samples.split_first() else {
            return;
        };
        let mut thinned = Vec::with_capacity(rest.len() / 2 + 2);
        thinned.push(oldest);
        for pair in rest.chunks(2) {
            let mut kept = pair[pair.len() - 1];
            kept.completed_since_previous = pair.iter().any(|s| s.completed_since_previous);
            thinned.push(kept);
        }
        self.samples = thinned;
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for PostgresLogicalProbe {
    const KEY: &'static str = "postgres_logical";
    type Settings = PostgresLogical;

    fn new(
        _probe: &crate::model::Probe,
        settings: &PostgresLogical,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(settings.clone(), sources.postgres(&settings.source)?))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        PostgresLogicalProbe::run(self, deadline).await.map(super::Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        PostgresLogicalProbe::check(self, deadline).await
    }

    fn source(settings: &PostgresLogical) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn snap(xmax: u64, xip: &[u64]) -> Snapshot {
        Snapshot {
            xmax,
            xip: xip.to_vec(),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn snapshots_parse_and_detect_completed_transactions() {
        assert_eq!(Snapshot::parse("726:726:"), Some(snap(726, &[])));
        assert_eq!(
            Snapshot::parse("700:730:712,701"),
            Some(snap(730, &[701, 712]))
        );
        assert_eq!(Snapshot::parse("x:1:"), None);
        assert_eq!(Snapshot::parse("1:2"), None);
        // Nothing completed: same xmax (one past the latest completed id), same in-progress
        // list below it; transactions started since sit at or above xmax, unlisted.
        assert!(!snap(730, &[701]).completed_before(&snap(730, &[701])));
        // A transaction above the old xmax completed, or an in-progress one ended.
        assert!(snap(730, &[]).completed_before(&snap(731, &[])));
        assert!(snap(730, &[701, 712]).completed_before(&snap(730, &[712])));
    }

    #[test]
    fn lag_is_bracketed_by_the_sample_before_the_first_completion() {
        let t0 = Instant::now();
        let mut map = WalTimeMap::default();
        // t=0..2: idle at LSN 100; t=3: a commit; t=4: another.
        map.record(secs(t0, 0), 100, snap(10, &[]));
        map.record(secs(t0, 1), 100, snap(10, &[]));
        map.record(secs(t0, 2), 150, snap(10, &[])); // a checkpoint, no transaction
        map.record(secs(t0, 3), 300, snap(11, &[]));
        map.record(secs(t0, 4), 400, snap(12, &[]));
        // Confirmed at 100: the first commit came after t=2, so at t=10 lag ≤ 8 s.
        assert_eq!(map.lag(100, secs(t0, 10)), MapLag::Behind { seconds: 8.0 });
        // Confirmed at 300 (the first commit): the next came after t=3.
        assert_eq!(map.lag(300, secs(t0, 10)), MapLag::Behind { seconds: 7.0 });
        assert_eq!(map.lag(400, secs(t0, 10)), MapLag::CaughtUp);
        assert_eq!(map.lag(500, secs(t0, 10)), MapLag::CaughtUp);
    }

    #[test]
    fn background_wal_without_transactions_is_idle_not_lag() {
        let t0 = Instant::now();
        let mut map = WalTimeMap::default();
        map.record(secs(t0, 0), 100, snap(10, &[]));
        map.record(secs(t0, 1), 180, snap(10, &[])); // running-xacts record
        map.record(secs(t0, 16), 260, snap(10, &[])); // checkpoint
        assert_eq!(map.lag(100, secs(t0, 30)), MapLag::Idle);
        // A transaction that started (xid 10, at xmax) but has not committed is not visible to
        // the consumer yet.
        map.record(secs(t0, 17), 300, snap(10, &[]));
        assert_eq!(map.lag(100, secs(t0, 30)), MapLag::Idle);
        // It commits between t=17 and t=18.
        map.record(secs(t0, 18), 320, snap(11, &[]));
        assert_eq!(map.lag(100, secs(t0, 30)), MapLag::Behind { seconds: 13.0 });
    }

    #[test]
    fn a_slot_older_than_the_map_is_unknown_until_it_moves_into_it() {
        let t0 = Instant::now();
        let mut map = WalTimeMap::default();
        map.record(secs(t0, 0), 1000, snap(10, &[]));
        map.record(secs(t0, 5), 1000, snap(10, &[]));
        assert_eq!(
            map.lag(500, secs(t0, 6)),
            MapLag::NotCovered {
                first_lsn: 1000,
                age: 6.0
            }
        );
        // Even on an idle server: what happened before the first sample is not known.
        assert!(matches!(
            map.lag(999, secs(t0, 6)),
            MapLag::NotCovered { .. }
        ));
        map.record(secs(t0, 6), 1100, snap(11, &[]));
        assert_eq!(map.lag(1000, secs(t0, 7)), MapLag::Behind { seconds: 2.0 });
    }

    #[test]
    fn forgetting_keeps_the_base_and_wal_going_back_restarts_the_map() {
        let t0 = Instant::now();
        let mut map = WalTimeMap::default();
        for i in 0..5 {
            map.record(secs(t0, i), 100 * (i + 1), snap(10 + i, &[]));
        }
        map.forget_before(300);
        assert_eq!(map.samples.len(), 3);
        assert_eq!(map.samples[0].insert_lsn, 300);
        assert_eq!(map.lag(300, secs(t0, 10)), MapLag::Behind { seconds: 8.0 });
        assert!(map.record(secs(t0, 6), 50, snap(3, &[])), "went back");
        assert_eq!(map.samples.len(), 1);
        assert!(!map.record(secs(t0, 7), 60, snap(3, &[])));
    }

    #[test]
    fn thinning_halves_the_map_and_keeps_an_upper_bound() {
        let t0 = Instant::now();
        let mut map = WalTimeMap::default();
        map.record(secs(t0, 0), 100, snap(10, &[]));
        // Idle until a single commit between t=2000 and t=2001, then busy.
        for i in 1..=MAX_SAMPLES as u64 {
            let xmax = if i > 2000 { 10 + (i - 2000) } else { 10 };
            map.record(secs(t0, i), 100 + i, snap(xmax, &[]));
        }
        assert!(map.samples.len() <= MAX_SAMPLES / 2 + 2);
        assert_eq!(map.samples[0].insert_lsn, 100, "the base is kept");
        let now = secs(t0, MAX_SAMPLES as u64 + 1);
        let MapLag::Behind { seconds } = map.lag(100, now) else {
            panic!("behind");
        };
        let exact = (MAX_SAMPLES as u64 + 1 - 2000) as f64;
        assert!(
            seconds >= exact && seconds <= exact + 2.0,
            "{seconds} vs {exact}"
        );
    }
}
