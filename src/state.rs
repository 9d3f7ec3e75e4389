//! The daemon's memory: every budget and probe of the running config with its history. Probe
//! tasks write results here; `/metrics`, the API and the status page read from here. No IO.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::clock::Now;
use crate::evaluate::{BudgetTracker, Outcome, ProbeHistory, ProbeView, Transition, used_ratio};
use crate::model::{Budget, Config, Probe};
use crate::probe::{Detail, ProbeError, Reading};

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

pub struct BudgetEntry {
    pub spec: Arc<Budget>,
    pub tracker: BudgetTracker,
    pub probes: Vec<ProbeEntry>,
}

pub struct ProbeEntry {
    pub spec: Arc<Probe>,
    pub history: ProbeHistory,
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
            let tracker = old
                .as_ref()
                .map(|b| b.tracker.clone())
                .unwrap_or_else(|| BudgetTracker::new(now));
            let mut old_probes: BTreeMap<ProbeKey, ProbeEntry> = old
                .as_mut()
                .map(|b| {
                    b.probes
                        .drain(..)
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
                    Some(entry) => {
                        kept_keys.insert(probe_key(probe));
                        diff.kept += 1;
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
                            detail: None,
                            task_id: *next_task_id,
                        });
                    }
                }
            }
            self.budgets.push(BudgetEntry {
                spec: budget.clone(),
                tracker,
                probes,
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
        let probe = budget
            .probes
            .iter_mut()
            .find(|p| p.spec.name == key.1 && p.spec.replica == key.2 && p.task_id == task_id)?;
        let outcome = match result {
            Ok(Reading { sample, detail }) => {
                probe.detail = detail;
                Outcome::Success(sample)
            }
            Err(error) => Outcome::Failure(error),
        };
        let transition = probe.history.record(now, duration, outcome);
        evaluate_budget(budget, now);
        Some(transition)
    }

    /// Re-evaluates every budget: freshness changes with time alone.
    pub fn evaluate_all(&mut self, now: Now) {
        for budget in &mut self.budgets {
            evaluate_budget(budget, now);
        }
    }

    /// Ready once every probe of the current config has run at least once.
    pub fn is_ready(&self) -> bool {
        self.budgets
            .iter()
            .flat_map(|b| b.probes.iter())
            .all(|p| p.history.runs > 0)
    }

    pub fn budget(&self, name: &str) -> Option<&BudgetEntry> {
        self.budgets.iter().find(|b| b.spec.name == name)
    }
}

impl ProbeEntry {
    pub fn interval_secs(&self) -> f64 {
        self.spec.interval.as_secs_f64()
    }

    /// The used ratio of the fresh sample, `None` while stale.
    pub fn fresh_ratio(&self, now: Now) -> Option<f64> {
        self.history
            .fresh_sample(now, self.interval_secs())
            .map(|s| used_ratio(&self.spec, s))
    }

    pub fn is_stale(&self, now: Now) -> bool {
        self.history.is_stale(now, self.interval_secs())
    }

    pub fn is_stalled(&self, now: Now) -> bool {
        self.history.is_stalled(
            now,
            self.interval_secs(),
            self.spec.stall_after.as_secs_f64(),
        )
    }
}

fn evaluate_budget(budget: &mut BudgetEntry, now: Now) {
    let views: Vec<ProbeView> = budget
        .probes
        .iter()
        .map(|p| ProbeView {
            used_ratio: p.fresh_ratio(now),
        })
        .collect();
    budget.tracker.evaluate(&budget.spec, &views, now);
}
