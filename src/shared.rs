//! What the HTTP server, the control loop and the probe tasks share: the daemon's state behind
//! one lock, and the process-level metrics registry.
//!
//! The lock is held only for short, bounded work: a probe task recording one run (and
//! re-evaluating its budget), the control loop's tick, a reload's diff, and an answer's copy of
//! the state. Answers evaluate and render their copy after releasing it. Every holder that
//! needs the time reads it while holding the lock, so that records, ticks and answers are ordered
//! by their `now` and no answer can show a counter that a later record would take back.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::{self, Now};
use crate::evaluate::Transition;
use crate::metrics::{self, ProcessMetrics};
use crate::model::Config;
use crate::probe::{ProbeError, Reading};
use crate::secret::SecretSet;
use crate::state::{ConfigDiff, DaemonState, ProbeKey, Snapshot};

/// Where `Shared` reads the time: `clock::now` in the daemon, a fixed reading in tests.
pub type Clock = Box<dyn Fn() -> Now + Send + Sync>;

/// What the HTTP server and the probe tasks share.
pub struct Shared {
    state: Mutex<DaemonState>,
    pub process: ProcessMetrics,
    clock: Clock,
}

impl Shared {
    pub fn new(state: DaemonState) -> Self {
        Self::with_clock(state, Box::new(clock::now))
    }

    /// `Shared` reading the time from `clock`: tests answer at an instant they choose.
    pub fn with_clock(state: DaemonState, clock: Clock) -> Self {
        Self {
            state: Mutex::new(state),
            process: ProcessMetrics::new(),
            clock,
        }
    }

    /// Locks the state. A poisoned lock means a panic while updating plain data; the data
    /// is still the best we have, so keep serving it rather than taking the daemon down.
    pub fn state(&self) -> MutexGuard<'_, DaemonState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a finished run of the task `task_id` at the current time (see
    /// `DaemonState::record`).
    pub fn record(
        &self,
        key: &ProbeKey,
        task_id: u64,
        duration: f64,
        result: Result<Reading, ProbeError>,
    ) -> Option<Transition> {
        let mut state = self.state();
        state.record(key, task_id, (self.clock)(), duration, result)
    }

    /// Replaces the running config after a successful reload, at the current time (see
    /// `DaemonState::apply`), and marks the reload successful.
    pub fn apply_reload(&self, config: Arc<Config>, next_task_id: &mut u64) -> ConfigDiff {
        let mut state = self.state();
        let now = (self.clock)();
        let diff = state.apply(config, now, next_task_id);
        state.reload.last_successful = true;
        state.reload.last_success_at = now;
        diff
    }

    /// Re-evaluates every budget at the current time: freshness changes with time alone.
    pub fn tick(&self) {
        let mut state = self.state();
        state.evaluate_all((self.clock)());
    }

    /// Every budget (or the one named `only`) evaluated at one reading of the clock, for one
    /// answer. Only the copy is made under the lock.
    pub fn snapshot(&self, only: Option<&str>) -> Snapshot {
        let copy = {
            let state = self.state();
            state.copy((self.clock)(), only)
        };
        copy.evaluate()
    }

    pub fn observe_duration(&self, kind: &str, seconds: f64) {
        self.process.observe_duration(kind, seconds);
    }

    /// The whole `/metrics` answer, with one reading of the clock.
    pub fn render_metrics(&self) -> String {
        let snapshot = self.snapshot(None);
        metrics::encode(metrics::render(&snapshot), &self.process)
    }

    pub fn secrets(&self) -> SecretSet {
        self.state().config.secrets.clone()
    }
}
