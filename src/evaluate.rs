//! Pure evaluation: probe outcomes and budgets in, freshness, budget states and time counters
//! out. No IO and no clocks: every function takes `now` (both clocks, read once by its caller),
//! so the rules (docs/src/budget-states.md) are tested with tables. Elapsed time (freshness,
//! `breach_after`, stall limits, the SLI counters) is measured on the monotonic reading; the wall
//! reading only dates things (`since`, last success) for display.
//!
//! What a probe shows at an instant (stale, stalled, its used ratio) is computed in one place,
//! `ProbeView::of`, and a budget's state from those views in one place, `BudgetTracker::evaluate`:
//! the daemon's tick and each recorded run use them on the state, and every answer (`/metrics`,
//! the API, the status page) uses them on its own copy at its own `now`, so that everything one
//! answer shows comes from one evaluation.

use std::sync::Arc;

use crate::clock::Now;
use crate::model::{Budget, Probe};
use crate::sample::{Backlog, ErrorReason, ProbeError, Sample};

/// A probe run is stale after this many effective intervals without a success.
pub const STALE_AFTER_INTERVALS: f64 = 3.0;

/// What one probe has done so far. Owned by the daemon state, updated by `record`. Cheap to
/// clone (the sample and the error are shared), since every answer may copy it.
#[derive(Debug, Clone, Default)]
pub struct ProbeHistory {
    pub runs: u64,
    pub last_run_at: Option<Now>,
    pub last_duration: Option<f64>,
    /// The last run's error, `None` after a success.
    pub last_error: Option<Arc<ProbeError>>,
    pub last_success_at: Option<Now>,
    /// The last successful sample. Kept while the probe is down, so that `last_lag` can still be
    /// shown, but never exported as the current lag once stale.
    pub last_sample: Option<Arc<Sample>>,
    /// Failed runs by reason, indexed by `ErrorReason::index`.
    pub errors: [u64; ErrorReason::ALL.len()],
    /// The last position seen and when it last changed.
    pub position: Option<String>,
    pub progress_at: Option<Now>,
    /// Results below zero (clamped to 0) and positions that went backwards.
    pub negative_lag_total: u64,
    pub position_regressions_total: u64,
    /// Reads at a replica a set delay after a primary write, and how many missed it.
    pub read_your_writes_checks: u64,
    pub read_your_writes_misses: u64,
    /// Reads through a view's route for monotonic reads, and how many showed an older marker
    /// than one already seen through it.
    pub monotonic_reads: u64,
    pub monotonic_read_violations: u64,
}

/// How a run ended, as the scheduler reports it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success(Sample),
    Failure(ProbeError),
}

/// Whether the last run changed the probe's up/down state, for logging on change only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    WentDown,
    Recovered,
    FirstSuccess,
}

impl ProbeHistory {
    /// Records one run that ended at `now` after `duration` seconds.
    pub fn record(&mut self, now: Now, duration: f64, outcome: Outcome) -> Transition {
        let was_up = self.runs > 0 && self.last_error.is_none();
        let first_run = self.runs == 0;
        self.runs += 1;
        self.last_run_at = Some(now);
        self.last_duration = Some(duration);
        match outcome {
            Outcome::Success(sample) => {
                let had_success = self.last_success_at.is_some();
                if sample.negative_lag_clamped {
                    self.negative_lag_total += 1;
                }
                if sample.position_regressed {
                    self.position_regressions_total += 1;
                }
                if let Some(check) = sample.read_your_writes {
                    self.read_your_writes_checks += 1;
                    if check.missed {
                        self.read_your_writes_misses += 1;
                    }
                }
                if let Some(check) = sample.monotonic_reads {
                    self.monotonic_reads += u64::from(check.reads);
                    self.monotonic_read_violations += u64::from(check.violations);
                }
                if let Some(position) = &sample.position {
                    if self.position.as_ref() != Some(position) {
                        self.position = Some(position.clone());
                        self.progress_at = Some(now);
                    }
                }
                if let Some(age) = sample.progress_age_seconds {
                    self.progress_at = Some(now.plus(-age.max(0.0)));
                }
                self.last_error = None;
                self.last_success_at = Some(now);
                self.last_sample = Some(Arc::new(sample));
                if !had_success {
                    Transition::FirstSuccess
                } else if was_up {
                    Transition::Unchanged
                } else {
                    Transition::Recovered
                }
            }
            Outcome::Failure(error) => {
                self.errors[error.reason.index()] += 1;
                let changed = first_run
                    || was_up
                    || self.last_error.as_ref().map(|e| e.reason) != Some(error.reason);
                self.last_error = Some(Arc::new(error));
                if changed {
                    Transition::WentDown
                } else {
                    Transition::Unchanged
                }
            }
        }
    }

    /// True if the last run succeeded.
    pub fn is_up(&self) -> bool {
        self.runs > 0 && self.last_error.is_none()
    }

    /// Stale: no success within 3 effective intervals, or never a success, or the last run
    /// found that the server is not what the probe measures (`topology`: a promoted standby, a
    /// DSN pointing at the primary). The last success then described a server that no longer
    /// exists as such, so its lag (often 0 just before a promotion) must not be shown for the
    /// next 3 intervals. The same for an error that says so (`voids_last_sample`).
    pub fn is_stale(&self, now: Now, interval_secs: f64) -> bool {
        if self
            .last_error
            .as_ref()
            .is_some_and(|error| error.reason == ErrorReason::Topology || error.voids_last_sample)
        {
            return true;
        }
        match self.last_success_at {
            None => true,
            Some(at) => now.since(at) > STALE_AFTER_INTERVALS * interval_secs,
        }
    }

    /// The sample to count toward the budget: the last success, unless the probe is stale.
    pub fn fresh_sample(&self, now: Now, interval_secs: f64) -> Option<&Sample> {
        if self.is_stale(now, interval_secs) {
            None
        } else {
            self.last_sample.as_deref()
        }
    }

    /// Stalled: fresh, behind, and the position has not moved for `stall_after` seconds.
    pub fn is_stalled(&self, now: Now, interval_secs: f64, stall_after_secs: f64) -> bool {
        let Some(sample) = self.fresh_sample(now, interval_secs) else {
            return false;
        };
        let behind = sample.lag_seconds.is_some_and(|lag| lag > 0.0)
            || sample.backlog.is_some_and(|b| b.value > 0.0);
        match self.progress_at {
            Some(at) if behind && sample.position.is_some() => now.since(at) >= stall_after_secs,
            _ => false,
        }
    }
}

/// The used ratio of one sample against a probe's budgets: lag ÷ max_lag or backlog ÷
/// max_backlog, the larger. A `max_backlog` of 0 means "must be empty": any backlog is
/// infinitely over (reported as the backlog itself so that the number stays finite and useful).
pub fn used_ratio(probe: &Probe, sample: &Sample) -> f64 {
    let lag_ratio = probe
        .max_lag
        .zip(sample.lag_seconds)
        .map(|(max, lag)| lag / max.as_secs_f64())
        .unwrap_or(0.0);
    let backlog_ratio = match (probe.max_backlog, sample.backlog) {
        (Some(0), Some(Backlog { value, .. })) if value > 0.0 => 1.0 + value,
        (Some(0), Some(_)) => 0.0,
        (Some(max), Some(Backlog { value, .. })) => value / max as f64,
        _ => 0.0,
    };
    lag_ratio.max(backlog_ratio)
}

/// The four budget states, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetState {
    Breach,
    Unknown,
    Warn,
    Ok,
}

impl BudgetState {
    pub const ALL: [BudgetState; 4] = [
        BudgetState::Breach,
        BudgetState::Unknown,
        BudgetState::Warn,
        BudgetState::Ok,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Breach => "breach",
            BudgetState::Unknown => "unknown",
            BudgetState::Warn => "warn",
            BudgetState::Ok => "ok",
        }
    }

    /// States that count as "not within budget" for the SLI counters.
    pub fn is_over(self) -> bool {
        matches!(self, BudgetState::Breach | BudgetState::Unknown)
    }
}

/// One probe evaluated at one instant: what a budget's evaluation and every output see of it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProbeView {
    /// No success within 3 intervals, never one, or the last run found the wrong topology
    /// (`ProbeHistory::is_stale`).
    pub stale: bool,
    /// Fresh, behind and not advancing for `stall_after` (`ProbeHistory::is_stalled`).
    pub stalled: bool,
    /// Used ratio of the fresh sample (`used_ratio`); `None` while stale.
    pub used_ratio: Option<f64>,
}

impl ProbeView {
    /// `probe` with `history`, at `now`: the one place freshness, stall and the used ratio are
    /// computed for display and for the budget.
    pub fn of(probe: &Probe, history: &ProbeHistory, now: Now) -> Self {
        let interval = probe.interval.as_secs_f64();
        let fresh = history.fresh_sample(now, interval);
        Self {
            stale: fresh.is_none(),
            stalled: history.is_stalled(now, interval, probe.stall_after.as_secs_f64()),
            used_ratio: fresh.map(|sample| used_ratio(probe, sample)),
        }
    }
}

/// A budget's state over time: the sticky breach, `breach_after` and the SLI time counters.
#[derive(Debug, Clone)]
pub struct BudgetTracker {
    pub state: BudgetState,
    pub since: Now,
    /// When the budget was first seen over budget in the current run of "over" evaluations.
    over_since: Option<Now>,
    last_evaluated_at: Option<Now>,
    pub evaluated_seconds_total: f64,
    pub over_seconds_total: f64,
    /// The largest used ratio among fresh probes at the last evaluation.
    pub max_used_ratio: Option<f64>,
}

impl BudgetTracker {
    /// A budget starts `unknown`: nothing has been measured yet.
    pub fn new(now: Now) -> Self {
        Self {
            state: BudgetState::Unknown,
            since: now,
            over_since: None,
            last_evaluated_at: None,
            evaluated_seconds_total: 0.0,
            over_seconds_total: 0.0,
            max_used_ratio: None,
        }
    }

    /// Re-evaluates the budget at `now` from its probes. Time since the previous evaluation is
    /// attributed to the state that held during it. Returns the new state.
    pub fn evaluate(&mut self, budget: &Budget, probes: &[ProbeView], now: Now) -> BudgetState {
        if let Some(previous) = self.last_evaluated_at {
            let elapsed = now.since(previous);
            self.evaluated_seconds_total += elapsed;
            if self.state.is_over() {
                self.over_seconds_total += elapsed;
            }
        }
        // Never backwards: a result recorded with a `now` taken before another evaluation must
        // not make the next one count the same seconds twice.
        self.last_evaluated_at = Some(match self.last_evaluated_at {
            Some(previous) if previous.mono > now.mono => previous,
            _ => now,
        });

        let any_stale = probes.iter().any(|p| p.stale);
        let max_ratio = probes
            .iter()
            .filter_map(|p| p.used_ratio)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            });
        self.max_used_ratio = max_ratio;
        let over = max_ratio.is_some_and(|r| r > 1.0);

        if over {
            self.over_since.get_or_insert(now);
        } else if !any_stale {
            // Only a fresh, complete view that is under budget ends an "over" streak: going blind
            // must not reset `breach_after` nor resolve a breach.
            self.over_since = None;
        }

        let breach_due = self
            .over_since
            .is_some_and(|since| now.since(since) >= budget.breach_after.as_secs_f64());
        // A breach holds until a fresh, complete view is back under budget.
        let breach_holds = self.state == BudgetState::Breach && (over || any_stale);
        let next = if breach_holds || (over && breach_due) {
            BudgetState::Breach
        } else if any_stale {
            BudgetState::Unknown
        } else if max_ratio.is_some_and(|r| r >= budget.warn_at) {
            BudgetState::Warn
        } else {
            BudgetState::Ok
        };
        if next != self.state {
            self.state = next;
            self.since = now;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    /// A reading at `x` seconds on both clocks.
    use crate::model::{ProbeKind, SqlWatermark, WatermarkMode};
    use crate::probe::BacklogUnit;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    fn probe(max_lag: Option<u64>, max_backlog: Option<u64>) -> Probe {
        Probe {
            budget: "b".into(),
            name: "p".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_lag: max_lag.map(Duration::from_secs),
            max_backlog,
            max_monotonic_violations: None,
            max_mismatches: None,
            stall_after: Duration::from_secs(10),
            replica: None,
            kind: ProbeKind::SqlWatermark(SqlWatermark {
                source: "s".into(),
                watermark: "SELECT 1".into(),
                oldest_pending: None,
                mode: WatermarkMode::SinceWatermark,
            }),
        }
    }

    #[test]
    fn a_missing_lag_under_a_lag_budget_is_unknown_not_zero() {
        let backlog_only = Sample {
            lag_seconds: None,
            backlog: Some(Backlog {
                unit: BacklogUnit::Messages,
                value: 3.0,
            }),
            ..Sample::default()
        };
        // Counted against max_lag it would read as ratio 0: the run fails instead.
        let error =
            crate::probe::require_lag(&probe(Some(10), None), Ok(backlog_only.clone().into()))
                .expect_err("no lag under max_lag");
        assert_eq!(error.reason, ErrorReason::NoData);
        // Budgeted by backlog only, it is a sample like any other.
        let kept =
            crate::probe::require_lag(&probe(None, Some(5)), Ok(backlog_only.clone().into()))
                .expect("backlog-only");
        assert_eq!(used_ratio(&probe(None, Some(5)), &kept.sample), 0.6);
    }

    fn budget(breach_after: u64) -> Budget {
        Budget {
            name: "b".into(),
            description: None,
            owner: None,
            labels: BTreeMap::new(),
            max_lag: Some(Duration::from_secs(10)),
            max_backlog: None,
            warn_at: 0.8,
            breach_after: Duration::from_secs(breach_after),
            objective: None,
            severity: "page".into(),
            runbook_url: None,
            probes: vec![Arc::new(probe(Some(10), None))],
        }
    }

    fn sample(lag: f64) -> Sample {
        Sample {
            lag_seconds: Some(lag),
            ..Sample::default()
        }
    }

    fn fail(reason: ErrorReason) -> Outcome {
        Outcome::Failure(ProbeError::new(reason, "boom"))
    }

    #[test]
    fn used_ratio_takes_the_larger_of_lag_and_backlog() {
        let with_backlog = |lag: f64, value: f64| Sample {
            lag_seconds: Some(lag),
            backlog: Some(Backlog {
                unit: BacklogUnit::Rows,
                value,
            }),
            ..Sample::default()
        };
        let cases = [
            (probe(Some(10), None), sample(5.0), 0.5),
            (probe(Some(10), Some(100)), with_backlog(5.0, 80.0), 0.8),
            (probe(Some(10), Some(100)), with_backlog(12.0, 80.0), 1.2),
            (probe(None, Some(0)), with_backlog(0.0, 0.0), 0.0),
            (probe(None, Some(0)), with_backlog(0.0, 1.0), 2.0),
            (probe(None, Some(10)), sample(1000.0), 0.0),
        ];
        for (probe, sample, expected) in cases {
            assert!((used_ratio(&probe, &sample) - expected).abs() < 1e-9);
        }
    }

    #[test]
    fn freshness_distinguishes_down_from_stale() {
        let mut h = ProbeHistory::default();
        assert!(h.is_stale(at(0.0), 1.0), "never succeeded is stale");
        assert!(!h.is_up());
        h.record(at(10.0), 0.1, Outcome::Success(sample(0.0)));
        assert!(h.is_up() && !h.is_stale(at(10.0), 1.0));
        h.record(at(11.0), 0.1, fail(ErrorReason::Connect));
        assert!(!h.is_up(), "one failure is down");
        assert!(!h.is_stale(at(11.0), 1.0), "but not yet stale");
        assert!(!h.is_stale(at(13.0), 1.0), "3 intervals is still fresh");
        assert!(h.is_stale(at(13.01), 1.0), "beyond 3 intervals is stale");
        assert!(h.fresh_sample(at(14.0), 1.0).is_none());
        assert_eq!(h.errors[ErrorReason::Connect.index()], 1);
    }

    #[test]
    fn transitions_are_reported_once_per_change() {
        let mut h = ProbeHistory::default();
        assert_eq!(
            h.record(at(1.0), 0.1, fail(ErrorReason::Connect)),
            Transition::WentDown
        );
        assert_eq!(
            h.record(at(2.0), 0.1, fail(ErrorReason::Connect)),
            Transition::Unchanged
        );
        assert_eq!(
            h.record(at(3.0), 0.1, fail(ErrorReason::Timeout)),
            Transition::WentDown,
            "a new reason is worth a log line"
        );
        assert_eq!(
            h.record(at(4.0), 0.1, Outcome::Success(sample(0.0))),
            Transition::FirstSuccess
        );
        assert_eq!(
            h.record(at(5.0), 0.1, Outcome::Success(sample(0.0))),
            Transition::Unchanged
        );
        assert_eq!(
            h.record(at(6.0), 0.1, fail(ErrorReason::Query)),
            Transition::WentDown
        );
        assert_eq!(
            h.record(at(7.0), 0.1, Outcome::Success(sample(0.0))),
            Transition::Recovered
        );
    }

    #[test]
    fn a_topology_failure_makes_the_probe_stale_at_once() {
        let mut h = ProbeHistory::default();
        h.record(at(10.0), 0.1, Outcome::Success(sample(0.0)));
        h.record(at(11.0), 0.1, fail(ErrorReason::Connect));
        assert!(
            !h.is_stale(at(11.0), 1.0),
            "one failed run is down, not stale"
        );
        assert!(h.fresh_sample(at(11.0), 1.0).is_some());
        h.record(at(12.0), 0.1, fail(ErrorReason::Topology));
        assert!(
            h.is_stale(at(12.0), 1.0),
            "a promoted standby's last lag means nothing"
        );
        assert!(h.fresh_sample(at(12.0), 1.0).is_none());
        h.record(at(13.0), 0.1, Outcome::Success(sample(0.0)));
        assert!(!h.is_stale(at(13.0), 1.0));
    }

    #[test]
    fn an_error_that_voids_the_last_sample_makes_the_probe_stale_at_once() {
        let mut h = ProbeHistory::default();
        h.record(at(10.0), 0.1, Outcome::Success(sample(0.0)));
        let silent = ProbeError::new(ErrorReason::NoData, "no marker written for 2.1s")
            .voiding_last_sample();
        h.record(at(11.0), 0.1, Outcome::Failure(silent));
        assert!(
            h.is_stale(at(11.0), 1.0),
            "a silent writer's last 0 means nothing"
        );
        assert!(h.fresh_sample(at(11.0), 1.0).is_none());
    }

    #[test]
    fn counters_follow_what_samples_report() {
        let mut h = ProbeHistory::default();
        let checked = |missed| Sample {
            read_your_writes: Some(crate::probe::ReadYourWrites { missed }),
            ..sample(0.0)
        };
        h.record(at(1.0), 0.1, Outcome::Success(checked(false)));
        h.record(at(2.0), 0.1, Outcome::Success(checked(true)));
        h.record(at(3.0), 0.1, Outcome::Success(sample(0.0)));
        h.record(
            at(4.0),
            0.1,
            Outcome::Success(Sample {
                negative_lag_clamped: true,
                position_regressed: true,
                ..sample(0.0)
            }),
        );
        assert_eq!(
            (h.read_your_writes_checks, h.read_your_writes_misses),
            (2, 1)
        );
        assert_eq!((h.negative_lag_total, h.position_regressions_total), (1, 1));
    }

    #[test]
    fn stall_needs_behind_and_no_progress() {
        let moved = |lag: f64, pos: &str| {
            Outcome::Success(Sample {
                lag_seconds: Some(lag),
                position: Some(pos.into()),
                ..Sample::default()
            })
        };
        let mut h = ProbeHistory::default();
        h.record(at(0.0), 0.1, moved(1.0, "5"));
        h.record(at(5.0), 0.1, moved(6.0, "5"));
        assert!(!h.is_stalled(at(5.0), 1.0, 10.0));
        h.record(at(10.0), 0.1, moved(11.0, "5"));
        assert!(
            h.is_stalled(at(10.0), 1.0, 10.0),
            "behind, same position for 10 s"
        );
        h.record(at(11.0), 0.1, moved(2.0, "6"));
        assert!(!h.is_stalled(at(11.0), 1.0, 10.0), "moved");
        let mut idle = ProbeHistory::default();
        idle.record(at(0.0), 0.1, moved(0.0, "9"));
        idle.record(at(100.0), 0.1, moved(0.0, "9"));
        assert!(
            !idle.is_stalled(at(100.0), 1.0, 10.0),
            "idle is not stalled"
        );
    }

    /// A probe's view with this ratio (`None`: stale).
    fn view(ratio: Option<f64>) -> ProbeView {
        ProbeView {
            stale: ratio.is_none(),
            stalled: false,
            used_ratio: ratio,
        }
    }

    /// One step of a budget table: at `now`, the probes show these ratios (None = stale).
    struct Step {
        now: f64,
        ratios: &'static [Option<f64>],
        expect: BudgetState,
    }

    fn run_table(breach_after: u64, steps: &[Step]) -> BudgetTracker {
        let b = budget(breach_after);
        let mut t = BudgetTracker::new(at(0.0));
        for (i, step) in steps.iter().enumerate() {
            let views: Vec<ProbeView> = step.ratios.iter().map(|r| view(*r)).collect();
            let got = t.evaluate(&b, &views, at(step.now));
            assert_eq!(got, step.expect, "step {i} at t={}", step.now);
        }
        t
    }

    #[test]
    #[rustfmt::skip]
    fn state_precedence_and_sticky_breach() {
        run_table(
            0,
            &[
                Step { now: 0.0, ratios: &[None], expect: BudgetState::Unknown },
                Step { now: 1.0, ratios: &[Some(0.1)], expect: BudgetState::Ok },
                Step { now: 2.0, ratios: &[Some(0.8)], expect: BudgetState::Warn },
                Step { now: 3.0, ratios: &[Some(1.0)], expect: BudgetState::Warn },
                Step { now: 4.0, ratios: &[Some(1.01)], expect: BudgetState::Breach },
                // Going blind during a breach does not resolve it.
                Step { now: 5.0, ratios: &[None], expect: BudgetState::Breach },
                Step { now: 9.0, ratios: &[None], expect: BudgetState::Breach },
                // A fresh run back under budget does.
                Step { now: 10.0, ratios: &[Some(0.2)], expect: BudgetState::Ok },
                // Unknown outranks warn; breach outranks unknown.
                Step { now: 11.0, ratios: &[Some(0.9), None], expect: BudgetState::Unknown },
                Step { now: 12.0, ratios: &[Some(1.5), None], expect: BudgetState::Breach },
                // One probe back under while another is blind keeps the breach.
                Step { now: 13.0, ratios: &[Some(0.1), None], expect: BudgetState::Breach },
                Step { now: 14.0, ratios: &[Some(0.1), Some(0.1)], expect: BudgetState::Ok },
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn breach_after_delays_the_breach_and_resets_when_back_under() {
        run_table(
            5,
            &[
                Step { now: 0.0, ratios: &[Some(2.0)], expect: BudgetState::Warn },
                Step { now: 4.0, ratios: &[Some(2.0)], expect: BudgetState::Warn },
                Step { now: 5.0, ratios: &[Some(2.0)], expect: BudgetState::Breach },
                Step { now: 6.0, ratios: &[Some(0.5)], expect: BudgetState::Ok },
                Step { now: 7.0, ratios: &[Some(2.0)], expect: BudgetState::Warn },
                // Blind in between does not reset the streak.
                Step { now: 9.0, ratios: &[None], expect: BudgetState::Unknown },
                Step { now: 12.0, ratios: &[Some(2.0)], expect: BudgetState::Breach },
            ],
        );
    }

    #[test]
    #[rustfmt::skip]
    fn time_counters_attribute_elapsed_time_to_the_state_that_held() {
        let t = run_table(
            0,
            &[
                Step { now: 0.0, ratios: &[None], expect: BudgetState::Unknown },
                Step { now: 2.0, ratios: &[Some(0.1)], expect: BudgetState::Ok },
                Step { now: 5.0, ratios: &[Some(3.0)], expect: BudgetState::Breach },
                Step { now: 9.0, ratios: &[Some(0.1)], expect: BudgetState::Ok },
                Step { now: 10.0, ratios: &[Some(0.1)], expect: BudgetState::Ok },
            ],
        );
        assert_eq!(t.evaluated_seconds_total, 10.0);
        // 2 s unknown at the start plus 4 s in breach.
        assert_eq!(t.over_seconds_total, 6.0);
        assert_eq!(t.since, at(9.0));
    }

    #[test]
    fn a_wall_clock_step_neither_stales_probes_nor_counts_as_time() {
        // The wall clock jumps an hour ahead (an NTP step, a VM resumed after suspend) while one
        // second passes on the monotonic clock.
        let before = Now {
            unix: 1_000.0,
            mono: 10.0,
        };
        let after = Now {
            unix: 4_601.0,
            mono: 11.0,
        };
        let mut h = ProbeHistory::default();
        h.record(before, 0.1, Outcome::Success(sample(0.0)));
        assert!(
            !h.is_stale(after, 1.0),
            "one monotonic second is not three intervals"
        );
        assert!(h.fresh_sample(after, 1.0).is_some());

        let b = budget(0);
        let mut tracker = BudgetTracker::new(before);
        let view = [view(Some(2.0))];
        tracker.evaluate(&b, &view, before);
        tracker.evaluate(&b, &view, after);
        assert_eq!(tracker.evaluated_seconds_total, 1.0);
        assert_eq!(tracker.over_seconds_total, 1.0);
        // Dates stay on the wall clock: the breach began at the wall time it was seen.
        assert_eq!(tracker.since.unix, 1_000.0);

        // A step back does not make the counters go backwards or double-count either.
        let stepped_back = Now {
            unix: 500.0,
            mono: 12.0,
        };
        tracker.evaluate(&b, &view, stepped_back);
        assert_eq!(tracker.evaluated_seconds_total, 2.0);
    }
}
