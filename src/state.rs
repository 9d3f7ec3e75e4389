//! The daemon's memory: every budget and probe of the running config with its history. Probe
//! tasks write results here; `/metrics`, the API and the status page read a `Snapshot` of it. No
//! IO.
//!
//! An answer copies the state under the lock (`DaemonState::copy`: per budget, two `Arc`s and
//! its tracker; a budget's probes are shared and copied on write, only when one of them records
//! while an answer still holds them) and evaluates and renders that copy outside the lock
//! (`StateCopy::evaluate`), so a scrape of thousands of probes never makes a probe task wait for
//! more than the copy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::clock::Now;
use crate::evaluate::{BudgetTracker, Outcome, ProbeHistory, ProbeView, Transition};
use crate::history::{BudgetTimeline, Point, ProbeSeries};
use crate::model::{Budget, Config, Probe};
use crate::probe::{Detail, ProbeError, Reading};
use crate::sample::Sample;

/// A probe's identity across reloads: its budget's name, its own, and its replica if it has one.
pub type ProbeKey = (String, String, Option<String>);

/// The state key of a probe.
pub fn probe_key(probe: &Probe) -> ProbeKey {
    (
        probe.budget.clone(),
        probe.name.clone(),
        probe.replica.clone(),
    )
}

pub struct DaemonState {
    pub config: Arc<Config>,
    /// Budgets in config order.
    pub budgets: Vec<BudgetEntry>,
    pub reload: ReloadStatus,
}

#[derive(Clone)]
pub struct BudgetEntry {
    pub spec: Arc<Budget>,
    pub tracker: BudgetTracker,
    /// State changes and counter checkpoints for the status page; shared like `probes`.
    pub timeline: Arc<BudgetTimeline>,
    /// Shared with the answers that copied this budget; a record copies them first
    /// (`Arc::make_mut`) if an answer still holds them.
    pub probes: Arc<Vec<ProbeEntry>>,
}

#[derive(Clone)]
pub struct ProbeEntry {
    pub spec: Arc<Probe>,
    pub history: ProbeHistory,
    /// The recent runs the status page draws; shared with answers, copied on write.
    pub series: Arc<ProbeSeries>,
    /// The kind's detail of the last success (kept beside `history.last_sample`, and like it
    /// shown only while the probe is fresh).
    pub detail: Option<Detail>,
    /// Identifies the task that measures this probe; results of replaced tasks are ignored.
    pub task_id: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct ReloadStatus {
    pub last_successful: bool,
    pub last_success_at: Now,
}

/// What a config change means for probe tasks.
#[derive(Debug, Default)]
pub struct ConfigDiff {
    /// Probes whose task must be (re)started, with the task id to give it.
    pub start: Vec<(Arc<Probe>, u64)>,
    /// Probes whose running task must stop.
    pub stop: Vec<ProbeKey>,
    /// Probes that kept their task and history.
    pub kept: usize,
}

impl DaemonState {
    /// The state of a freshly loaded config: every probe needs a task.
    pub fn new(config: Arc<Config>, now: Now, next_task_id: &mut u64) -> (Self, ConfigDiff) {
        let mut state = DaemonState {
            config: config.clone(),
            budgets: Vec::new(),
            reload: ReloadStatus {
                last_successful: true,
                last_success_at: now,
            },
        };
        let diff = state.apply(config, now, next_task_id);
        (state, diff)
    }

    /// Replaces the config. A probe whose resolved definition (including its source) is
    /// unchanged keeps its task and history; a budget that keeps its name keeps its state and
    /// time counters. Everything else starts fresh, and what is gone disappears.
    pub fn apply(&mut self, config: Arc<Config>, now: Now, next_task_id: &mut u64) -> ConfigDiff {
        let old_config = self.config.clone();
        let mut old_budgets: BTreeMap<String, BudgetEntry> = self
            .budgets
            .drain(..)
            .map(|b| (b.spec.name.clone(), b))
            .collect();
        let mut diff = ConfigDiff::default();
        let mut kept_keys = BTreeSet::new();

        for budget in &config.budgets {
            let mut old = old_budgets.remove(&budget.name);
            let (tracker, timeline) = old
                .as_ref()
                .map(|b| (b.tracker.clone(), b.timeline.clone()))
                .unwrap_or_else(|| (BudgetTracker::new(now), Arc::default()));
            let mut old_probes: BTreeMap<ProbeKey, ProbeEntry> = old
                .take()
                .map(|b| {
                    Arc::unwrap_or_clone(b.probes)
                        .into_iter()
                        .map(|p| (probe_key(&p.spec), p))
                        .collect()
                })
                .unwrap_or_default();
            let mut probes = Vec::with_capacity(budget.probes.len());
            for probe in &budget.probes {
                // Every source the probe reads (a replica probe reads its primary too) must be
                // unchanged for its task and history to carry over.
                let reusable = old_probes.remove(&probe_key(probe)).filter(|entry| {
                    entry.spec == *probe
                        && probe
                            .source_names()
                            .iter()
                            .all(|name| old_config.sources.get(*name) == config.sources.get(*name))
                });
                match reusable {
                    Some(mut entry) => {
                        kept_keys.insert(probe_key(probe));
                        diff.kept += 1;
                        if entry.series.window() != config.http.history_window.as_secs_f64() {
                            Arc::make_mut(&mut entry.series)
                                .resize(config.http.history_window, probe.interval);
                        }
                        probes.push(ProbeEntry {
                            spec: probe.clone(),
                            ..entry
                        });
                    }
                    None => {
                        *next_task_id += 1;
                        diff.start.push((probe.clone(), *next_task_id));
                        probes.push(ProbeEntry {
                            spec: probe.clone(),
                            history: ProbeHistory::default(),
                            series: Arc::new(ProbeSeries::new(
                                config.http.history_window,
                                probe.interval,
                            )),
                            detail: None,
                            task_id: *next_task_id,
                        });
                    }
                }
            }
            self.budgets.push(BudgetEntry {
                spec: budget.clone(),
                tracker,
                timeline,
                probes: Arc::new(probes),
            });
        }
        for budget in old_config.budgets.iter() {
            for probe in &budget.probes {
                let key = probe_key(probe);
                if !kept_keys.contains(&key) {
                    diff.stop.push(key);
                }
            }
        }
        self.config = config;
        self.evaluate_all(now);
        diff
    }

    /// Records a finished run, re-evaluates its budget, and says whether the probe's up/down
    /// state changed. Results from a task that a reload replaced are dropped.
    pub fn record(
        &mut self,
        key: &ProbeKey,
        task_id: u64,
        now: Now,
        duration: f64,
        result: Result<Reading, ProbeError>,
    ) -> Option<Transition> {
        let budget = self.budgets.iter_mut().find(|b| b.spec.name == key.0)?;
        let index = budget.probes.iter().position(|p| {
            p.spec.name == key.1 && p.spec.replica == key.2 && p.task_id == task_id
        })?;
        let probe = &mut Arc::make_mut(&mut budget.probes)[index];
        let (outcome, lag, backlog) = match result {
            Ok(Reading { sample, detail }) => {
                probe.detail = detail;
                let (lag, backlog) = (sample.lag_seconds, sample.backlog.map(|b| b.value));
                (Outcome::Success(sample), lag, backlog)
            }
            Err(error) => (Outcome::Failure(error), None, None),
        };
        let failed = matches!(outcome, Outcome::Failure(_));
        let transition = probe.history.record(now, duration, outcome);
        evaluate_budget(budget, now);
        // After the evaluation, so that the point carries the state this run led to.
        let state = budget.tracker.state;
        let probe = &mut Arc::make_mut(&mut budget.probes)[index];
        Arc::make_mut(&mut probe.series).push(Point::new(now.unix, lag, backlog, state, failed));
        Some(transition)
    }

    /// Re-evaluates every budget: freshness changes with time alone.
    pub fn evaluate_all(&mut self, now: Now) {
        for budget in &mut self.budgets {
            evaluate_budget(budget, now);
        }
    }

    pub fn budget(&self, name: &str) -> Option<&BudgetEntry> {
        self.budgets.iter().find(|b| b.spec.name == name)
    }
}

impl ProbeEntry {
    pub fn interval_secs(&self) -> f64 {
        self.spec.interval.as_secs_f64()
    }

    /// The probe evaluated at `now`.
    pub fn view(&self, now: Now) -> ProbeView {
        ProbeView::of(&self.spec, &self.history, now)
    }

    /// The last success's sample, if `view` (this probe's, at the answer's `now`) is fresh.
    pub fn fresh_sample(&self, view: &ProbeView) -> Option<&Sample> {
        if view.stale {
            None
        } else {
            self.history.last_sample.as_deref()
        }
    }

    /// The last success's detail, if `view` is fresh: shown exactly when the sample is.
    pub fn fresh_detail(&self, view: &ProbeView) -> Option<&Detail> {
        self.fresh_sample(view).and(self.detail.as_ref())
    }
}

/// Re-evaluates `budget` at `now`: every probe's view, then the tracker from them, then the
/// timeline from the tracker.
fn evaluate_budget(budget: &mut BudgetEntry, now: Now) -> Vec<ProbeView> {
    let views: Vec<ProbeView> = budget.probes.iter().map(|p| p.view(now)).collect();
    let before = budget.tracker.state;
    budget.tracker.evaluate(&budget.spec, &views, now);
    let window = budget.spec.objective.map(|o| o.window.as_secs_f64());
    if budget.timeline.wants(before, &budget.tracker, now, window) {
        Arc::make_mut(&mut budget.timeline).observe(before, &budget.tracker, now, window);
    }
    views
}

impl DaemonState {
    /// A copy for one answer at `now` (read by the caller while it holds the lock, so that
    /// answers and records are ordered by their `now`): every budget, or the one named `only`.
    /// Cheap: see the module comment.
    pub fn copy(&self, now: Now, only: Option<&str>) -> StateCopy {
        StateCopy {
            now,
            config: self.config.clone(),
            reload: self.reload,
            budgets: self
                .budgets
                .iter()
                .filter(|b| only.is_none_or(|name| b.spec.name == name))
                .cloned()
                .collect(),
        }
    }
}

/// The state as one answer copied it, not yet evaluated.
pub struct StateCopy {
    now: Now,
    config: Arc<Config>,
    reload: ReloadStatus,
    budgets: Vec<BudgetEntry>,
}

impl StateCopy {
    /// Evaluates every budget of the copy at its `now`, as the daemon's tick would: each probe's
    /// view, then a copy of the budget's tracker from them. The state's own trackers are not
    /// touched; they move on with the tick and with records.
    pub fn evaluate(self) -> Snapshot {
        let now = self.now;
        Snapshot {
            now,
            config: self.config,
            reload: self.reload,
            budgets: self
                .budgets
                .into_iter()
                .map(|mut budget| {
                    let views = evaluate_budget(&mut budget, now);
                    BudgetSnapshot {
                        spec: budget.spec,
                        tracker: budget.tracker,
                        timeline: budget.timeline,
                        probes: budget.probes,
                        views,
                    }
                })
                .collect(),
        }
    }
}

/// Everything one answer shows, evaluated once at one `now`: `/metrics`, the API and the status
/// page render from this and compute nothing about freshness or budgets themselves.
pub struct Snapshot {
    pub now: Now,
    pub config: Arc<Config>,
    pub reload: ReloadStatus,
    /// Budgets in config order.
    pub budgets: Vec<BudgetSnapshot>,
}

/// One budget at the answer's `now`.
pub struct BudgetSnapshot {
    pub spec: Arc<Budget>,
    /// The budget's tracker evaluated at `now` from `views` (state, since, time counters, the
    /// largest used ratio).
    pub tracker: BudgetTracker,
    /// The budget's state changes, including one this evaluation made.
    pub timeline: Arc<BudgetTimeline>,
    pub probes: Arc<Vec<ProbeEntry>>,
    /// Each probe evaluated at `now`, in the order of `probes`.
    pub views: Vec<ProbeView>,
}

impl BudgetSnapshot {
    /// Each probe with its view.
    pub fn probes(&self) -> impl Iterator<Item = (&ProbeEntry, &ProbeView)> {
        self.probes.iter().zip(&self.views)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::BudgetState;
    use crate::testing::{at, config, sample};

    const BEFORE: &str = r#"
sources:
  db: { postgres: { dsn: "host=127.0.0.1 user=postgres dbname=test" } }
  db2: { postgres: { dsn: "host=127.0.0.2 user=postgres dbname=test" } }
budgets:
  - name: checkout
    max_lag: 60s
    probes:
      - { name: kept, interval: 10s, sql_watermark: { source: db, watermark: "SELECT 1", mode: since_watermark } }
      - { name: moved, interval: 10s, sql_watermark: { source: db2, watermark: "SELECT 1", mode: since_watermark } }
      - { name: dropped, interval: 10s, sql_watermark: { source: db, watermark: "SELECT 3", mode: since_watermark } }
  - name: gone
    max_lag: 60s
    probes:
      - { name: p, interval: 10s, sql_watermark: { source: db, watermark: "SELECT 1", mode: since_watermark } }
"#;

    /// `checkout` keeps its name (with another warn level), `kept` is unchanged, `moved`'s
    /// source points elsewhere, `dropped` and the budget `gone` are removed, `added` is new.
    const AFTER: &str = r#"
sources:
  db: { postgres: { dsn: "host=127.0.0.1 user=postgres dbname=test" } }
  db2: { postgres: { dsn: "host=127.0.0.3 user=postgres dbname=test" } }
budgets:
  - name: checkout
    max_lag: 60s
    warn_at: 90%
    probes:
      - { name: kept, interval: 10s, sql_watermark: { source: db, watermark: "SELECT 1", mode: since_watermark } }
      - { name: moved, interval: 10s, sql_watermark: { source: db2, watermark: "SELECT 1", mode: since_watermark } }
      - { name: added, interval: 10s, sql_watermark: { source: db, watermark: "SELECT 4", mode: since_watermark } }
"#;

    fn key(budget: &str, probe: &str) -> ProbeKey {
        (budget.to_owned(), probe.to_owned(), None)
    }

    fn entry<'s>(state: &'s DaemonState, budget: &str, probe: &str) -> &'s ProbeEntry {
        state
            .budget(budget)
            .and_then(|b| b.probes.iter().find(|p| p.spec.name == probe))
            .unwrap_or_else(|| panic!("{budget}/{probe}"))
    }

    #[test]
    fn a_reload_keeps_what_did_not_change_and_drops_what_is_gone() {
        let mut next = 0;
        let (mut state, diff) = DaemonState::new(config(BEFORE), at(0.0), &mut next);
        assert_eq!(diff.start.len(), 4);
        for (probe, task) in &diff.start {
            state.record(
                &probe_key(probe),
                *task,
                at(1.0),
                0.1,
                Ok(sample(1.0).into()),
            );
        }
        state.evaluate_all(at(5.0));
        let kept_task = entry(&state, "checkout", "kept").task_id;
        let moved_task = entry(&state, "checkout", "moved").task_id;
        let tracker_before = state.budget("checkout").expect("checkout").tracker.clone();
        assert_eq!(tracker_before.state, BudgetState::Ok);

        let diff = state.apply(config(AFTER), at(6.0), &mut next);

        // Unchanged: same task, same history.
        let kept = entry(&state, "checkout", "kept");
        assert_eq!(kept.task_id, kept_task);
        assert_eq!(kept.history.runs, 1);
        let points: Vec<(f64, Option<f64>)> =
            kept.series.recent(6.0).map(|p| (p.at, p.lag())).collect();
        assert_eq!(points, [(1.0, Some(1.0))], "the status page's samples stay");
        let checkout = state.budget("checkout").expect("checkout");
        assert_eq!(
            checkout
                .timeline
                .changes(6.0)
                .map(|c| c.to)
                .collect::<Vec<_>>(),
            // Newest first: the new probe has not run yet.
            [BudgetState::Unknown, BudgetState::Ok],
            "the budget's state changes stay"
        );
        // Its source changed: a new task and a fresh history.
        let moved = entry(&state, "checkout", "moved");
        assert_ne!(moved.task_id, moved_task);
        assert_eq!(moved.series.recent(6.0).count(), 0);
        assert_eq!(moved.history.runs, 0);
        assert!(entry(&state, "checkout", "added").history.runs == 0);
        let started: Vec<&str> = diff.start.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(started, ["moved", "added"]);
        assert_eq!(diff.kept, 1);
        let mut stopped = diff.stop.clone();
        stopped.sort();
        assert_eq!(
            stopped,
            [
                key("checkout", "dropped"),
                key("checkout", "moved"),
                key("gone", "p")
            ]
        );
        // Removed things are gone.
        assert!(state.budget("gone").is_none());
        assert!(
            !state
                .budget("checkout")
                .expect("checkout")
                .probes
                .iter()
                .any(|p| p.spec.name == "dropped")
        );
        // The budget keeps its tracker by name (its spec changed): the same `since`, time
        // counters that went on, and unknown now that two probes have not run.
        let budget = state.budget("checkout").expect("checkout");
        assert_eq!(budget.spec.warn_at, 0.9);
        assert_eq!(budget.tracker.since, at(6.0), "ok → unknown at the reload");
        assert_eq!(budget.tracker.state, BudgetState::Unknown);
        assert_eq!(
            budget.tracker.evaluated_seconds_total,
            tracker_before.evaluated_seconds_total + 1.0
        );
        // A result of the replaced task is dropped.
        assert!(
            state
                .record(
                    &key("checkout", "moved"),
                    moved_task,
                    at(7.0),
                    0.1,
                    Ok(sample(1.0).into())
                )
                .is_none()
        );
    }

    #[test]
    fn an_answer_is_one_evaluation_of_a_copy_at_its_own_now() {
        let mut next = 0;
        let (mut state, diff) = DaemonState::new(config(BEFORE), at(0.0), &mut next);
        for (probe, task) in &diff.start {
            state.record(
                &probe_key(probe),
                *task,
                at(1.0),
                0.1,
                Ok(sample(6.0).into()),
            );
        }
        let copy = state.copy(at(2.0), Some("checkout"));
        // A record after the copy changes the state, not the copy.
        let (kept, task) = diff.start[0].clone();
        state.record(
            &probe_key(&kept),
            task,
            at(3.0),
            0.1,
            Ok(sample(30.0).into()),
        );
        let answer = copy.evaluate();
        assert_eq!(answer.now, at(2.0));
        assert_eq!(answer.budgets.len(), 1);
        let budget = &answer.budgets[0];
        assert_eq!(budget.views[0].used_ratio, Some(0.1));
        assert_eq!(budget.tracker.max_used_ratio, Some(0.1));
        assert_eq!(entry(&state, "checkout", "kept").history.runs, 2);

        // Evaluated later, the answer sees every probe stale and the budget unknown, while the
        // state's own tracker, last evaluated at 3 s, is untouched.
        let late = state.copy(at(40.0), None).evaluate();
        let budget = &late.budgets[0];
        assert!(
            budget
                .views
                .iter()
                .all(|v| v.stale && v.used_ratio.is_none())
        );
        assert_eq!(budget.tracker.state, BudgetState::Unknown);
        assert_eq!(budget.tracker.since, at(40.0));
        assert_eq!(budget.tracker.max_used_ratio, None);
        let live = &state.budget("checkout").expect("checkout").tracker;
        assert_eq!(live.state, BudgetState::Ok);
        assert_eq!(live.max_used_ratio, Some(0.5));
    }
}
