//! What the HTTP server, the control loop and the probe tasks share: the daemon's state behind
//! one lock, and the process-level metrics registry.

use std::sync::{Mutex, MutexGuard};

use crate::clock;
use crate::metrics::{self, ProcessMetrics};
use crate::secret::SecretSet;
use crate::state::DaemonState;

/// What the HTTP server and the probe tasks share.
pub struct Shared {
    state: Mutex<DaemonState>,
    pub process: ProcessMetrics,
}

impl Shared {
    pub fn new(state: DaemonState) -> Self {
        Self {
            state: Mutex::new(state),
            process: ProcessMetrics::new(),
        }
    }

    /// Locks the state. A poisoned lock means a panic while updating plain data; the data
    /// is still the best we have, so keep serving it rather than taking the daemon down.
    pub fn state(&self) -> MutexGuard<'_, DaemonState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn observe_duration(&self, kind: &str, seconds: f64) {
        self.process.observe_duration(kind, seconds);
    }

    /// The whole `/metrics` answer, with one reading of the clock.
    pub fn render_metrics(&self) -> String {
        let now = clock::now();
        let families = {
            let state = self.state();
            metrics::state_families(&state, now)
        };
        metrics::encode(families, &self.process)
    }

    pub fn secrets(&self) -> SecretSet {
        self.state().config.secrets.clone()
    }
}
