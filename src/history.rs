//! The recent past that the status page draws, kept in memory and bounded: per probe a ring of
//! its last runs (`ProbeSeries`: time, lag, backlog, the budget's state after the run) over
//! `http.history_window` and a coarser 24-hour summary (5-minute buckets of min/max lag, max
//! backlog and worst state); per budget the state changes of the last 24 hours and checkpoints
//! of its time counters over its objective window (`BudgetTimeline`). Pure: every function takes
//! the time from its caller.
//!
//! Nothing here is persisted: a restart starts an empty history, a reload keeps the history of
//! unchanged probes and of budgets that keep their name (the same rule as `ProbeHistory`).

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Now;
use crate::evaluate::{BudgetState, BudgetTracker};

/// The most samples one probe keeps, whatever its interval and the window: a probe that runs
/// every 100 ms keeps its last 6 minutes, not 36,000 samples.
pub const MAX_SAMPLES: usize = 3_600;
/// Width of one bucket of the 24-hour summary.
pub const SUMMARY_BUCKET_SECONDS: f64 = 300.0;
/// How far back the summary and the budget's state changes reach.
pub const DAY_SECONDS: f64 = 86_400.0;
/// The most buckets the summary holds: a day of them and the one the day starts in.
const SUMMARY_BUCKETS: usize = 289;
/// The most state changes one budget keeps: a budget flapping every second keeps its last
/// ones, not a day of them.
pub const MAX_STATE_CHANGES: usize = 1_000;
/// The most checkpoints of a budget's time counters: the objective window divided into this
/// many steps (at least a minute each) bounds the error of the windowed figures.
pub const MAX_CHECKPOINTS: usize = 720;

/// How many samples a probe run every `interval` keeps over `window`.
pub fn capacity_for(window: Duration, interval: Duration) -> usize {
    let interval = interval.as_secs_f64().max(0.001);
    ((window.as_secs_f64() / interval).ceil() as usize).clamp(1, MAX_SAMPLES)
}

/// The rank of a state for "worst of": breach, then unknown, then warn, then ok.
fn severity(state: BudgetState) -> u8 {
    match state {
        BudgetState::Breach => 3,
        BudgetState::Unknown => 2,
        BudgetState::Warn => 1,
        BudgetState::Ok => 0,
    }
}

/// The worse of two states.
pub fn worst(a: BudgetState, b: BudgetState) -> BudgetState {
    if severity(b) > severity(a) { b } else { a }
}

/// One run of a probe. Lag and backlog are `f32` with NaN for "none": half the memory of
/// `Option<f64>` and more precision than a chart needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Wall-clock unix seconds the run ended.
    pub at: f64,
    lag: f32,
    backlog: f32,
    /// The budget's state after this run was counted.
    pub state: BudgetState,
    /// The run failed: it measured nothing (never a lag of 0).
    pub failed: bool,
}

impl Point {
    pub fn new(
        at: f64,
        lag: Option<f64>,
        backlog: Option<f64>,
        state: BudgetState,
        failed: bool,
    ) -> Self {
        Self {
            at,
            lag: lag.map_or(f32::NAN, |v| v as f32),
            backlog: backlog.map_or(f32::NAN, |v| v as f32),
            state,
            failed,
        }
    }

    pub fn lag(&self) -> Option<f64> {
        (!self.lag.is_nan()).then_some(f64::from(self.lag))
    }

    pub fn backlog(&self) -> Option<f64> {
        (!self.backlog.is_nan()).then_some(f64::from(self.backlog))
    }
}

/// Five minutes of a probe's runs, for the 24-hour view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Unix seconds the bucket starts, a multiple of `SUMMARY_BUCKET_SECONDS`.
    pub start: f64,
    min_lag: f32,
    max_lag: f32,
    max_backlog: f32,
    /// The worst budget state after any run of the bucket.
    pub worst: BudgetState,
    pub runs: u32,
    pub failures: u32,
}

impl Bucket {
    /// The smallest and largest lag measured in the bucket; `None` if no run measured one.
    pub fn lag_range(&self) -> Option<(f64, f64)> {
        (!self.max_lag.is_nan()).then_some((f64::from(self.min_lag), f64::from(self.max_lag)))
    }

    pub fn max_backlog(&self) -> Option<f64> {
        (!self.max_backlog.is_nan()).then_some(f64::from(self.max_backlog))
    }
}

/// `a` and `b` with NaN meaning "none": the smaller (or larger) of the values present.
fn merge(a: f32, b: f32, larger: bool) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, _) => b,
        (_, true) => a,
        _ if larger => a.max(b),
        _ => a.min(b),
    }
}

/// One probe's recent runs and its 24-hour summary.
#[derive(Debug, Clone, Default)]
pub struct ProbeSeries {
    samples: VecDeque<Point>,
    capacity: usize,
    window: f64,
    summary: VecDeque<Bucket>,
}

impl ProbeSeries {
    /// An empty series of a probe run every `interval`, keeping `window` of samples.
    pub fn new(window: Duration, interval: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            capacity: capacity_for(window, interval),
            window: window.as_secs_f64(),
            summary: VecDeque::new(),
        }
    }

    /// Changes the window (a reload that changed `http.history_window`), dropping what no
    /// longer fits.
    pub fn resize(&mut self, window: Duration, interval: Duration) {
        self.capacity = capacity_for(window, interval);
        self.window = window.as_secs_f64();
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
        self.samples.shrink_to(self.capacity);
    }

    /// How far back samples are kept, in seconds.
    pub fn window(&self) -> f64 {
        self.window
    }

    /// Records one run.
    pub fn push(&mut self, point: Point) {
        // Allocated once, exactly: a ring grown by doubling would hold up to twice its samples.
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(self.capacity);
        }
        if self.summary.capacity() == 0 {
            self.summary.reserve_exact(SUMMARY_BUCKETS);
        }
        if self.samples.len() >= self.capacity {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|p| p.at < point.at - self.window)
        {
            self.samples.pop_front();
        }
        self.samples.push_back(point);

        let start = (point.at / SUMMARY_BUCKET_SECONDS).floor() * SUMMARY_BUCKET_SECONDS;
        match self.summary.back_mut() {
            Some(bucket) if bucket.start == start => {
                bucket.min_lag = merge(bucket.min_lag, point.lag, false);
                bucket.max_lag = merge(bucket.max_lag, point.lag, true);
                bucket.max_backlog = merge(bucket.max_backlog, point.backlog, true);
                bucket.worst = worst(bucket.worst, point.state);
                bucket.runs += 1;
                bucket.failures += u32::from(point.failed);
            }
            // A wall clock stepped back lands in the last bucket rather than out of order.
            Some(bucket) if bucket.start > start => {
                bucket.worst = worst(bucket.worst, point.state);
                bucket.runs += 1;
                bucket.failures += u32::from(point.failed);
            }
            _ => self.summary.push_back(Bucket {
                start,
                min_lag: point.lag,
                max_lag: point.lag,
                max_backlog: point.backlog,
                worst: point.state,
                runs: 1,
                failures: u32::from(point.failed),
            }),
        }
        while self
            .summary
            .front()
            .is_some_and(|b| b.start + SUMMARY_BUCKET_SECONDS <= point.at - DAY_SECONDS)
        {
            self.summary.pop_front();
        }
    }

    /// The samples within the window before `now` (unix seconds), oldest first.
    pub fn recent(&self, now: f64) -> impl Iterator<Item = &Point> {
        self.samples
            .iter()
            .filter(move |p| p.at >= now - self.window)
    }

    /// The summary buckets of the 24 hours before `now`, oldest first.
    pub fn day(&self, now: f64) -> impl Iterator<Item = &Bucket> {
        self.summary
            .iter()
            .filter(move |b| b.start + SUMMARY_BUCKET_SECONDS > now - DAY_SECONDS)
    }

    /// Bytes this series holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.samples.capacity() * size_of::<Point>() + self.summary.capacity() * size_of::<Bucket>()
    }
}

/// A change of a budget's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateChange {
    /// Wall-clock unix seconds.
    pub at: f64,
    pub from: BudgetState,
    pub to: BudgetState,
}

/// A budget's time counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Checkpoint {
    mono: f64,
    evaluated: f64,
    over: f64,
}

/// One stretch of the 24-hour state strip: `None` before the budget existed (or before the
/// daemon started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub from: f64,
    pub to: f64,
    pub state: Option<BudgetState>,
}

/// The objective figures over the window, from the budget's own time counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveFigures {
    /// Seconds the figures cover: the window, or less while the daemon has not run that long.
    pub covered_seconds: f64,
    /// Share of the covered time within budget (not breach or unknown).
    pub within_ratio: f64,
    /// 1 − (over share ÷ (1 − target)): 1 untouched, 0 spent, below 0 overspent.
    pub error_budget_left: f64,
}

/// A budget's state changes of the last 24 hours and checkpoints of its time counters.
#[derive(Debug, Clone, Default)]
pub struct BudgetTimeline {
    /// Wall-clock unix seconds the budget was first evaluated by this process.
    started_at: Option<f64>,
    changes: VecDeque<StateChange>,
    checkpoints: VecDeque<Checkpoint>,
}

impl BudgetTimeline {
    /// Whether `observe` with the same arguments would change anything: answers evaluate
    /// shared copies and only copy a timeline that changes.
    pub fn wants(
        &self,
        before: BudgetState,
        tracker: &BudgetTracker,
        now: Now,
        objective_window: Option<f64>,
    ) -> bool {
        self.started_at.is_none()
            || tracker.state != before
            || self
                .changes
                .front()
                .is_some_and(|c| c.at < now.unix - DAY_SECONDS)
            || objective_window.is_some_and(|window| {
                let step = (window / MAX_CHECKPOINTS as f64).max(60.0);
                self.checkpoints
                    .back()
                    .is_none_or(|last| now.mono - last.mono >= step)
            })
    }

    /// Notes the tracker's state after an evaluation at `now` that found it `before`;
    /// `objective_window` (seconds) spaces the counter checkpoints.
    pub fn observe(
        &mut self,
        before: BudgetState,
        tracker: &BudgetTracker,
        now: Now,
        objective_window: Option<f64>,
    ) {
        self.started_at.get_or_insert(tracker_start(tracker, now));
        if tracker.state != before {
            if self.changes.len() >= MAX_STATE_CHANGES {
                self.changes.pop_front();
            }
            self.changes.push_back(StateChange {
                at: now.unix,
                from: before,
                to: tracker.state,
            });
        }
        while self
            .changes
            .front()
            .is_some_and(|c| c.at < now.unix - DAY_SECONDS)
        {
            self.changes.pop_front();
        }
        if let Some(window) = objective_window {
            let step = (window / MAX_CHECKPOINTS as f64).max(60.0);
            let due = self
                .checkpoints
                .back()
                .is_none_or(|last| now.mono - last.mono >= step);
            if due {
                self.checkpoints.push_back(Checkpoint {
                    mono: now.mono,
                    evaluated: tracker.evaluated_seconds_total,
                    over: tracker.over_seconds_total,
                });
            }
            // Keep one checkpoint at or before the window's start: the baseline.
            while self.checkpoints.len() > 1 && self.checkpoints[1].mono <= now.mono - window {
                self.checkpoints.pop_front();
            }
        }
    }

    /// Unix seconds this process first evaluated the budget, if it has.
    pub fn started_at(&self) -> Option<f64> {
        self.started_at
    }

    /// The state changes of the last 24 hours before `now`, newest first.
    pub fn changes(&self, now: f64) -> impl Iterator<Item = &StateChange> {
        self.changes
            .iter()
            .rev()
            .filter(move |c| c.at >= now - DAY_SECONDS)
    }

    /// The 24 hours before `now` as stretches of one state, oldest first, ending in `current`.
    pub fn strip(&self, now: f64, current: BudgetState) -> Vec<Stretch> {
        let day_start = now - DAY_SECONDS;
        let mut stretches = Vec::new();
        let known_from = self.started_at.unwrap_or(now).max(day_start);
        if known_from > day_start {
            stretches.push(Stretch {
                from: day_start,
                to: known_from,
                state: None,
            });
        }
        let mut cursor = known_from;
        let mut state = self
            .changes
            .iter()
            .find(|c| c.at >= day_start)
            .map_or(current, |c| c.from);
        for change in self.changes.iter().filter(|c| c.at >= day_start) {
            let at = change.at.clamp(cursor, now);
            if at > cursor {
                stretches.push(Stretch {
                    from: cursor,
                    to: at,
                    state: Some(state),
                });
            }
            cursor = at;
            state = change.to;
        }
        if now > cursor {
            stretches.push(Stretch {
                from: cursor,
                to: now,
                state: Some(state),
            });
        }
        stretches
    }

    /// Time within budget and error budget left over `window` seconds before `now`, from the
    /// counters of `tracker` (evaluated at `now`) less those of the checkpoint at the window's
    /// start. `None` before anything was evaluated.
    pub fn objective(
        &self,
        tracker: &BudgetTracker,
        now: Now,
        window: f64,
        target: f64,
    ) -> Option<ObjectiveFigures> {
        let baseline = self
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.mono <= now.mono - window)
            .map_or((0.0, 0.0), |c| (c.evaluated, c.over));
        let evaluated = tracker.evaluated_seconds_total - baseline.0;
        let over = tracker.over_seconds_total - baseline.1;
        if evaluated <= 0.0 {
            return None;
        }
        let over_share = (over / evaluated).clamp(0.0, 1.0);
        Some(ObjectiveFigures {
            covered_seconds: evaluated,
            within_ratio: 1.0 - over_share,
            error_budget_left: 1.0 - over_share / (1.0 - target),
        })
    }

    /// The most bytes one timeline can hold on the heap (a full list of state changes and of
    /// checkpoints), before the `VecDeque`s' growth rounding.
    pub const MAX_HEAP_BYTES: usize = MAX_STATE_CHANGES * size_of::<StateChange>()
        + (MAX_CHECKPOINTS + 1) * size_of::<Checkpoint>();

    /// Bytes this timeline holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.changes.capacity() * size_of::<StateChange>()
            + self.checkpoints.capacity() * size_of::<Checkpoint>()
    }
}

/// When the tracker began: its `since` while it has never changed state.
fn tracker_start(tracker: &BudgetTracker, now: Now) -> f64 {
    tracker.since.unix.min(now.unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    fn point(at: f64, lag: f64, state: BudgetState) -> Point {
        Point::new(at, Some(lag), None, state, false)
    }

    #[test]
    fn capacity_is_the_window_at_the_interval_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(capacity_for(s(3600), s(10)), 360);
        assert_eq!(
            capacity_for(s(3600), Duration::from_millis(100)),
            MAX_SAMPLES
        );
        assert_eq!(capacity_for(s(60), s(3600)), 1);
        assert_eq!(capacity_for(s(100), s(30)), 4);
    }

    #[test]
    fn the_ring_keeps_the_window_and_no_more() {
        let mut series = ProbeSeries::new(Duration::from_secs(60), Duration::from_secs(10));
        for i in 0..20 {
            series.push(point(f64::from(i) * 10.0, f64::from(i), BudgetState::Ok));
        }
        let kept: Vec<f64> = series.recent(190.0).map(|p| p.at).collect();
        assert_eq!(kept, [140.0, 150.0, 160.0, 170.0, 180.0, 190.0]);
        // Runs that came late (a slow source) are dropped by age, not only by count.
        series.push(point(400.0, 1.0, BudgetState::Ok));
        assert_eq!(series.recent(400.0).count(), 1);
        // Looking later, nothing old is shown.
        assert_eq!(series.recent(1000.0).count(), 0);
    }

    #[test]
    fn a_failed_run_has_no_lag_not_zero() {
        let failed = Point::new(5.0, None, None, BudgetState::Unknown, true);
        assert_eq!(failed.lag(), None);
        assert_eq!(failed.backlog(), None);
        let counted = Point::new(5.0, None, Some(3.0), BudgetState::Ok, false);
        assert_eq!(counted.backlog(), Some(3.0));
    }

    #[test]
    fn the_summary_has_min_max_and_worst_state_per_five_minutes_for_a_day() {
        let mut series = ProbeSeries::new(Duration::from_secs(3600), Duration::from_secs(60));
        series.push(point(0.0, 4.0, BudgetState::Ok));
        series.push(point(60.0, 9.0, BudgetState::Breach));
        series.push(Point::new(120.0, None, None, BudgetState::Unknown, true));
        series.push(point(180.0, 2.0, BudgetState::Ok));
        series.push(point(300.0, 5.0, BudgetState::Warn));
        let day: Vec<&Bucket> = series.day(300.0).collect();
        assert_eq!(day.len(), 2);
        assert_eq!(day[0].lag_range(), Some((2.0, 9.0)));
        assert_eq!(day[0].worst, BudgetState::Breach);
        assert_eq!((day[0].runs, day[0].failures), (4, 1));
        assert_eq!(day[1].lag_range(), Some((5.0, 5.0)));
        assert_eq!(day[1].worst, BudgetState::Warn);
        // A day later the first bucket is gone; the one the day starts in stays (289 at most).
        for i in 2..=289 {
            series.push(point(f64::from(i) * 300.0, 1.0, BudgetState::Ok));
        }
        let day: Vec<&Bucket> = series.day(289.0 * 300.0).collect();
        assert_eq!(day.first().map(|b| b.start), Some(300.0));
        assert_eq!(day.len(), 289);
        assert!(series.summary.len() <= 289);
    }

    fn tracker(state: BudgetState, since: Now) -> BudgetTracker {
        let mut tracker = BudgetTracker::new(since);
        tracker.state = state;
        tracker.since = since;
        tracker
    }

    #[test]
    fn state_changes_make_the_strip_and_age_out_after_a_day() {
        let mut timeline = BudgetTimeline::default();
        let start = at(1000.0);
        timeline.observe(
            BudgetState::Unknown,
            &tracker(BudgetState::Unknown, start),
            start,
            None,
        );
        timeline.observe(
            BudgetState::Unknown,
            &tracker(BudgetState::Ok, at(1010.0)),
            at(1010.0),
            None,
        );
        timeline.observe(
            BudgetState::Ok,
            &tracker(BudgetState::Breach, at(1100.0)),
            at(1100.0),
            None,
        );
        // Evaluations without a change add nothing.
        timeline.observe(
            BudgetState::Breach,
            &tracker(BudgetState::Breach, at(1100.0)),
            at(1150.0),
            None,
        );
        let now = 1200.0;
        let changes: Vec<(f64, BudgetState)> =
            timeline.changes(now).map(|c| (c.at, c.to)).collect();
        assert_eq!(
            changes,
            [(1100.0, BudgetState::Breach), (1010.0, BudgetState::Ok)]
        );
        let strip = timeline.strip(now, BudgetState::Breach);
        let day_start = now - DAY_SECONDS;
        assert_eq!(
            strip,
            [
                Stretch {
                    from: day_start,
                    to: 1000.0,
                    state: None
                },
                Stretch {
                    from: 1000.0,
                    to: 1010.0,
                    state: Some(BudgetState::Unknown)
                },
                Stretch {
                    from: 1010.0,
                    to: 1100.0,
                    state: Some(BudgetState::Ok)
                },
                Stretch {
                    from: 1100.0,
                    to: now,
                    state: Some(BudgetState::Breach)
                },
            ]
        );
        // A day later the changes are gone and the strip is one state.
        let later = at(1100.0 + DAY_SECONDS + 1.0);
        timeline.observe(
            BudgetState::Breach,
            &tracker(BudgetState::Breach, at(1100.0)),
            later,
            None,
        );
        assert_eq!(timeline.changes(later.unix).count(), 0);
        assert_eq!(
            timeline.strip(later.unix, BudgetState::Breach),
            [Stretch {
                from: later.unix - DAY_SECONDS,
                to: later.unix,
                state: Some(BudgetState::Breach)
            }]
        );
    }

    #[test]
    fn objective_figures_cover_the_window_from_checkpoints() {
        let mut timeline = BudgetTimeline::default();
        let mut tracker = BudgetTracker::new(at(0.0));
        let window = 3600.0;
        // One hour within budget, then 6 minutes over, evaluated every minute.
        for minute in 0..=66 {
            let now = at(f64::from(minute) * 60.0);
            tracker.evaluated_seconds_total = f64::from(minute) * 60.0;
            tracker.over_seconds_total = f64::from((minute - 60).max(0)) * 60.0;
            timeline.observe(tracker.state, &tracker, now, Some(window));
        }
        let now = at(66.0 * 60.0);
        let figures = timeline
            .objective(&tracker, now, window, 0.9)
            .expect("figures");
        assert_eq!(figures.covered_seconds, 3600.0);
        assert!((figures.within_ratio - 0.9).abs() < 1e-9, "{figures:?}");
        assert!(figures.error_budget_left.abs() < 1e-9, "{figures:?}");
        // Before a window has passed, the figures cover what was evaluated.
        let early = BudgetTimeline::default();
        let mut young = BudgetTracker::new(at(0.0));
        young.evaluated_seconds_total = 100.0;
        young.over_seconds_total = 1.0;
        let figures = early
            .objective(&young, at(100.0), window, 0.99)
            .expect("figures");
        assert_eq!(figures.covered_seconds, 100.0);
        assert!((figures.error_budget_left - 0.0).abs() < 1e-9);
        assert!(
            early
                .objective(&BudgetTracker::new(at(0.0)), at(0.0), window, 0.99)
                .is_none()
        );
        assert!(timeline.checkpoints.len() <= MAX_CHECKPOINTS + 1);
    }
}
