//! The heartbeat ledger of a replica probe: which sequence numbers its writer committed at the
//! primary, and when on the daemon's clock, so that the highest sequence number a replica shows
//! turns into lag measured on one clock.
//!
//! The ledger is pure: no IO and no clock. The writers (`postgres_replica`, `mysql_replica`,
//! `mongodb_replica`) record what they did; the per-replica runs ask for lag. Lag is the age of the first heartbeat the replica does
//! not show yet, so an idle primary reads 0 (every heartbeat is visible), and a replica that
//! stopped applying reads a growing number even when nothing else is written, because the
//! writer keeps writing.

pub mod config;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{ErrorReason, ProbeError};

/// Writes remembered, at most: more than a day at the default one write per second. Older
/// writes are forgotten; a replica further behind than that gets a lower bound.
const MAX_REMEMBERED: usize = 100_000;

/// Without a successful write for this many write periods, the ledger cannot say that an
/// up-to-date replica is caught up (nothing recent was written to be seen), so lag is unknown.
const UNKNOWN_AFTER_PERIODS: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct HeartbeatLedger {
    write_period: f64,
    /// What the writes are called in errors: "heartbeat" (replica kinds), "marker" (canary).
    noun: &'static str,
    /// Successful writes, oldest first, by increasing `seq`: (seq, sent_at).
    writes: VecDeque<(i64, f64)>,
    /// The highest sequence number known to be in the table, written by us or found there.
    last_seq: Option<i64>,
    last_success_at: Option<f64>,
    /// The last failed write since the last success, and when it failed.
    last_error: Option<(f64, ProbeError)>,
}

/// A replica's lag as the ledger sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatLag {
    /// Now − sent time of the first heartbeat the replica does not show; 0 when it shows all.
    pub lag_seconds: f64,
    /// Heartbeats written and not yet visible at the replica.
    pub unseen_writes: u64,
    /// The replica shows a heartbeat older than anything this ledger remembers (the daemon
    /// restarted, or the replica is more than a day behind): the true lag is at least
    /// `lag_seconds`.
    pub lower_bound: bool,
}

impl HeartbeatLedger {
    pub fn new(write_period: Duration) -> Self {
        Self {
            write_period: write_period.as_secs_f64(),
            noun: "heartbeat",
            writes: VecDeque::new(),
            last_seq: None,
            last_success_at: None,
            last_error: None,
        }
    }

    /// The ledger of a writer whose writes its errors call `noun` ("marker").
    pub fn with_noun(mut self, noun: &'static str) -> Self {
        self.noun = noun;
        self
    }

    /// The highest sequence number found in the table when the writer started (seq continues
    /// from there after a restart, so replicas never see it go backwards).
    pub fn seed(&mut self, table_max_seq: i64) {
        if self.last_seq.is_none_or(|last| table_max_seq > last) {
            self.last_seq = Some(table_max_seq);
        }
    }

    /// The sequence number the next write should use.
    pub fn next_seq(&self) -> i64 {
        self.last_seq.map_or(1, |last| last.saturating_add(1))
    }

    /// A heartbeat `seq` was committed; `sent_at` is the daemon's unix time when its
    /// transaction was sent. The change is at most that old, so lag is never under-reported.
    pub fn record_write(&mut self, seq: i64, sent_at: f64) {
        if self.writes.back().is_none_or(|&(last, _)| seq > last) {
            self.writes.push_back((seq, sent_at));
            if self.writes.len() > MAX_REMEMBERED {
                self.writes.pop_front();
            }
        }
        if self.last_seq.is_none_or(|last| seq > last) {
            self.last_seq = Some(seq);
        }
        self.last_success_at = Some(self.last_success_at.map_or(sent_at, |at| at.max(sent_at)));
        self.last_error = None;
    }

    /// A write failed at `at` (its outcome is unknown: it may still become visible, which only
    /// ever makes the replica look less behind than the writes that succeeded say).
    pub fn record_failure(&mut self, at: f64, error: ProbeError) {
        self.last_error = Some((at, error));
    }

    /// Highest sequence number written or found in the table.
    pub fn last_seq(&self) -> Option<i64> {
        self.last_seq
    }

    /// Whether a write has succeeded yet.
    pub fn has_written(&self) -> bool {
        self.last_success_at.is_some()
    }

    /// Lag of a replica whose highest visible heartbeat is `visible_seq` (`None`: no row of this
    /// writer is visible there yet), at daemon time `now`.
    pub fn lag(&self, visible_seq: Option<i64>, now: f64) -> Result<HeartbeatLag, ProbeError> {
        let Some(last_success_at) = self.last_success_at else {
            return Err(self.last_error.as_ref().map_or_else(
                || {
                    ProbeError::new(
                        ErrorReason::NoData,
                        format!("no {} has been written yet", self.noun),
                    )
                },
                |(_, error)| error.clone(),
            ));
        };
        let silent_for = now - last_success_at;
        if silent_for > UNKNOWN_AFTER_PERIODS * self.write_period {
            let why = self.last_error.as_ref().map_or_else(
                || format!("the {} writer has stopped", self.noun),
                |(at, error)| format!("last write failed {:.1}s ago: {}", now - at, error.message),
            );
            let reason = self
                .last_error
                .as_ref()
                .map_or(ErrorReason::NoData, |(_, error)| error.reason);
            // The last success said "shows every heartbeat written", and nothing is written:
            // it must not stand while the probe is down.
            return Err(ProbeError::new(
                reason,
                format!("no {} written for {silent_for:.1}s: {why}", self.noun),
            )
            .voiding_last_sample());
        }
        // Sequence numbers start at 1, so "nothing visible" is the same as having seen 0.
        let visible = visible_seq.unwrap_or(0);
        let last = self.last_seq.unwrap_or(0);
        let unseen_writes = u64::try_from(last.saturating_sub(visible)).unwrap_or(0);
        let first_unseen = self.writes.iter().find(|&&(seq, _)| seq > visible);
        let Some(&(first_seq, sent_at)) = first_unseen else {
            return Ok(HeartbeatLag {
                lag_seconds: 0.0,
                unseen_writes,
                lower_bound: unseen_writes > 0,
            });
        };
        Ok(HeartbeatLag {
            lag_seconds: (now - sent_at).max(0.0),
            unseen_writes,
            // Heartbeats between the visible one and the first we remember were written
            // before our memory begins: the replica is at least this far behind.
            lower_bound: first_seq > visible.saturating_add(1),
        })
    }

    /// Writes remembered with `after < seq <= up_to`, oldest first, with when they were sent:
    /// the markers a view showed for the first time when its seq moved from `after` to `up_to`.
    pub fn written_between(&self, after: i64, up_to: i64) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.writes
            .iter()
            .copied()
            .skip_while(move |&(seq, _)| seq <= after)
            .take_while(move |&(seq, _)| seq <= up_to)
    }

    /// The first remembered write a view showing `visible_seq` does not show yet.
    pub fn first_unseen(&self, visible_seq: Option<i64>) -> Option<i64> {
        let visible = visible_seq.unwrap_or(0);
        self.writes
            .iter()
            .find(|&&(seq, _)| seq > visible)
            .map(|&(seq, _)| seq)
    }

    /// The newest successful write sent at or before `at`, for read-your-writes checks.
    pub fn latest_write_at_or_before(&self, at: f64) -> Option<(i64, f64)> {
        self.writes
            .iter()
            .rev()
            .find(|&&(_, sent_at)| sent_at <= at)
            .copied()
    }
}

/// The heartbeat writers of the replica probes that write to one primary, owned by that
/// primary's source handle (`PgPool`, `MysqlPool`) so that both replica kinds keep them the same
/// way. A probe listing several replicas expands into one runner per replica; they all ask for
/// the writer by the probe's key and share one. Writers are held weakly: a writer stops when the
/// last runner using it is dropped (a reload that removes the probe), and the next runner for
/// that key starts a new one.
#[derive(Default)]
pub struct WriterRegistry {
    writers: Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>,
}

impl WriterRegistry {
    /// The live writer for `key`, or a new one from `create`. A writer of another type under the
    /// same key (impossible while each kind keys its own writers) is replaced.
    pub fn shared<W: Any + Send + Sync>(&self, key: &str, create: impl FnOnce() -> W) -> Arc<W> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        writers.retain(|_, writer| writer.strong_count() > 0);
        if let Some(writer) = writers.get(key).and_then(Weak::upgrade) {
            if let Ok(writer) = writer.downcast::<W>() {
                return writer;
            }
        }
        let writer = Arc::new(create());
        let erased: Arc<dyn Any + Send + Sync> = writer.clone();
        writers.insert(key.to_owned(), Arc::downgrade(&erased));
        writer
    }
}

/// A heartbeat writer that writes once per period (`mysql_replica`, `mongodb_replica`).
pub trait PeriodicWriter: Send + Sync + 'static {
    /// One write attempt; failures are recorded in the writer's ledger, not returned.
    fn write_once(&self) -> impl std::future::Future<Output = ()> + Send;
    fn task(&self) -> &WriterTask;
}

/// A periodic writer's background task: started on first use, holding the writer weakly so that
/// it ends when the last probe using the writer is dropped, and aborted when the writer is
/// dropped. It counts write attempts, so that a run can wait for the first one.
pub struct WriterTask {
    task: Mutex<Option<JoinHandle<()>>>,
    attempts: watch::Sender<u64>,
}

impl Default for WriterTask {
    fn default() -> Self {
        Self {
            task: Mutex::new(None),
            attempts: watch::Sender::new(0),
        }
    }
}

impl WriterTask {
    /// Starts `writer`'s loop, one write per `period`, unless it runs already.
    pub fn ensure_started<W: PeriodicWriter>(writer: &Arc<W>, period: Duration) {
        let mut task = writer.task().task.lock().unwrap_or_else(|p| p.into_inner());
        if task.is_none() {
            *task = Some(tokio::spawn(write_loop(Arc::downgrade(writer), period)));
        }
    }

    /// Counts one write attempt, whatever its outcome.
    pub fn attempted(&self) {
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Waits until the writer has tried to write at least once, or until `deadline`.
    pub async fn wait_first_attempt(&self, deadline: Instant) {
        let mut attempts = self.attempts.subscribe();
        let _ = tokio::time::timeout_at(deadline, attempts.wait_for(|n| *n > 0)).await;
    }
}

impl Drop for WriterTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

async fn write_loop<W: PeriodicWriter>(writer: Weak<W>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    // A slow write delays the next one rather than causing a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(writer) = writer.upgrade() else {
            return;
        };
        writer.write_once().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_key_while_someone_holds_it() {
        let registry = WriterRegistry::default();
        let first = registry.shared("b/p", || 1u32);
        let again = registry.shared("b/p", || 2u32);
        assert!(
            Arc::ptr_eq(&first, &again),
            "replicas of one probe share a writer"
        );
        let other = registry.shared("b/q", || 3u32);
        assert_eq!(*other, 3);
        drop((first, again));
        assert_eq!(
            *registry.shared("b/p", || 4u32),
            4,
            "a dropped writer is replaced"
        );
    }

    fn ledger(writes: &[(i64, f64)]) -> HeartbeatLedger {
        let mut ledger = HeartbeatLedger::new(Duration::from_secs(1));
        for &(seq, at) in writes {
            ledger.record_write(seq, at);
        }
        ledger
    }

    fn lag(ledger: &HeartbeatLedger, visible: Option<i64>, now: f64) -> HeartbeatLag {
        ledger.lag(visible, now).expect("writer is healthy")
    }

    #[test]
    fn lag_is_the_age_of_the_first_heartbeat_not_visible() {
        let ledger = ledger(&[(1, 100.0), (2, 101.0), (3, 102.0), (4, 103.0)]);
        let cases = [
            // (visible, now, lag, unseen, lower bound)
            (Some(4), 103.5, 0.0, 0, false),
            (Some(3), 103.5, 0.5, 1, false),
            (Some(1), 103.5, 2.5, 3, false),
            (None, 103.5, 3.5, 4, false),
            // A replica showing more than we wrote (another writer's table): nothing unseen.
            (Some(9), 103.5, 0.0, 0, false),
        ];
        for (visible, now, expected, unseen, lower_bound) in cases {
            let got = lag(&ledger, visible, now);
            assert_eq!(
                got,
                HeartbeatLag {
                    lag_seconds: expected,
                    unseen_writes: unseen,
                    lower_bound
                },
                "visible {visible:?}"
            );
        }
    }

    #[test]
    fn an_idle_caught_up_replica_reads_zero_however_long_the_primary_is_idle() {
        // The writer keeps writing through idle time; a replica that shows every heartbeat is
        // caught up, never "an hour behind" because nothing else changed for an hour.
        let mut ledger = HeartbeatLedger::new(Duration::from_secs(1));
        for seq in 1..=3600 {
            ledger.record_write(seq, seq as f64);
        }
        assert_eq!(lag(&ledger, Some(3600), 3600.4).lag_seconds, 0.0);
    }

    #[test]
    fn seq_continues_from_the_table_after_a_restart() {
        let mut ledger = HeartbeatLedger::new(Duration::from_secs(1));
        assert_eq!(ledger.next_seq(), 1);
        ledger.seed(41);
        assert_eq!(ledger.next_seq(), 42);
        ledger.record_write(42, 10.0);
        assert_eq!(ledger.next_seq(), 43);
        // A replica still at a heartbeat of the previous process is behind by at least the
        // age of our first write; one at 41 is exactly that far behind.
        assert_eq!(
            lag(&ledger, Some(30), 12.0),
            HeartbeatLag {
                lag_seconds: 2.0,
                unseen_writes: 12,
                lower_bound: true
            }
        );
        assert_eq!(
            lag(&ledger, Some(41), 12.0),
            HeartbeatLag {
                lag_seconds: 2.0,
                unseen_writes: 1,
                lower_bound: false
            }
        );
    }

    #[test]
    fn a_failing_writer_makes_lag_unknown_after_two_periods_never_zero() {
        let mut ledger = ledger(&[(1, 100.0)]);
        ledger.record_failure(
            101.0,
            ProbeError::new(ErrorReason::Connect, "primary refused"),
        );
        // Within two periods of the last success the replica's view is still meaningful.
        assert_eq!(lag(&ledger, Some(1), 101.9).lag_seconds, 0.0);
        let error = ledger.lag(Some(1), 102.5).expect_err("writer silent");
        assert!(
            error.voids_last_sample,
            "a silent writer's last 0 must not stand"
        );
        assert_eq!(error.reason, ErrorReason::Connect);
        assert!(error.message.contains("primary refused"), "{error}");
        assert!(
            error.message.starts_with("no heartbeat written for"),
            "{error}"
        );
        let canary = ledger.clone().with_noun("marker");
        let error = canary.lag(Some(1), 102.5).expect_err("writer silent");
        assert!(
            error.message.starts_with("no marker written for"),
            "{error}"
        );
        // Recovered writes make it known again.
        ledger.record_write(2, 103.0);
        assert_eq!(lag(&ledger, Some(1), 103.5).lag_seconds, 0.5);
    }

    #[test]
    fn no_write_yet_is_unknown() {
        let ledger = HeartbeatLedger::new(Duration::from_secs(1));
        let error = ledger.lag(None, 1.0).expect_err("nothing written");
        assert_eq!(error.reason, ErrorReason::NoData);
    }

    #[test]
    fn read_your_writes_finds_the_newest_write_before_a_time() {
        let ledger = ledger(&[(1, 100.0), (2, 101.0), (3, 102.0)]);
        assert_eq!(ledger.latest_write_at_or_before(101.5), Some((2, 101.0)));
        assert_eq!(ledger.latest_write_at_or_before(102.0), Some((3, 102.0)));
        assert_eq!(ledger.latest_write_at_or_before(99.0), None);
    }

    #[test]
    fn a_view_moving_forward_first_shows_the_writes_in_between() {
        let ledger = ledger(&[(1, 100.0), (2, 101.0), (3, 102.0), (4, 103.0)]);
        let shown: Vec<i64> = ledger.written_between(1, 3).map(|(seq, _)| seq).collect();
        assert_eq!(shown, [2, 3]);
        assert_eq!(ledger.written_between(i64::MIN, 1).count(), 1);
        assert_eq!(ledger.first_unseen(Some(2)), Some(3));
        assert_eq!(ledger.first_unseen(None), Some(1));
        assert_eq!(ledger.first_unseen(Some(4)), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut ledger = HeartbeatLedger::new(Duration::from_secs(1));
        for seq in 1..=(MAX_REMEMBERED as i64 + 10) {
            ledger.record_write(seq, seq as f64);
        }
        assert_eq!(ledger.writes.len(), MAX_REMEMBERED);
        // Behind the oldest remembered write: a lower bound, not a made-up exact figure.
        let got = lag(&ledger, Some(1), MAX_REMEMBERED as f64 + 11.0);
        assert!(got.lower_bound);
    }
}
