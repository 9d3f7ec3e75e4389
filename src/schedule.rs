//! One task per probe: runs it every effective interval (with a small random start offset so
//! probes of one source do not fire together), bounds each run by its timeout, records the
//! outcome in the shared state and logs up/down changes. Tasks stop on cancellation.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{MissedTickBehavior, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::evaluate::Transition;
use crate::model::Probe;
use crate::probe::{ErrorReason, ProbeError, ProbeRunner, SourceHandles};
use crate::shared::Shared;

/// Extra time the task grants a run beyond its deadline before abandoning it. Probes stop at
/// the deadline themselves; this only guards against one that does not.
const DEADLINE_GRACE: Duration = Duration::from_millis(200);

/// A running probe task.
pub struct ProbeTask {
    pub cancel: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
}

/// Starts the task of `probe`, identified by `task_id` in the shared state.
pub fn spawn_probe(
    shared: Arc<Shared>,
    probe: Arc<Probe>,
    task_id: u64,
    sources: &SourceHandles,
    parent: &CancellationToken,
) -> ProbeTask {
    let cancel = parent.child_token();
    let runner = ProbeRunner::new(&probe, sources);
    let token = cancel.clone();
    let handle = tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = probe_loop(shared, probe, task_id, runner) => {}
        }
    });
    ProbeTask { cancel, handle }
}

async fn probe_loop(
    shared: Arc<Shared>,
    probe: Arc<Probe>,
    task_id: u64,
    mut runner: Result<ProbeRunner, ProbeError>,
) {
    let interval = probe.interval;
    // Up to a tenth of the interval (at most 1 s) so that a reload or start does not make
    // every probe hit its source in the same millisecond.
    let max_offset = (interval / 10).min(Duration::from_secs(1));
    let offset = max_offset.mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(clock::instant() + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let key = crate::state::probe_key(&probe);
    let kind = probe.kind_key();
    loop {
        ticker.tick().await;
        let started = clock::instant();
        let deadline = started + probe.timeout;
        let outcome = match &mut runner {
            Ok(runner) => match timeout_at(deadline + DEADLINE_GRACE, runner.run(deadline)).await {
                Ok(result) => crate::probe::require_lag(&probe, result),
                Err(_) => Err(ProbeError::new(
                    ErrorReason::Timeout,
                    format!("run exceeded its {:?} timeout", probe.timeout),
                )),
            },
            Err(error) => Err(error.clone()),
        };
        let duration = clock::elapsed(started).as_secs_f64();
        shared.observe_duration(kind, duration);
        let outcome = outcome.map_err(|error| error.scrubbed(&shared.secrets()));
        let log_error = outcome.as_ref().err().cloned();
        let transition = shared.record(&key, task_id, duration, outcome);
        match (transition, log_error) {
            (Some(Transition::WentDown), Some(error)) => tracing::warn!(
                budget = %probe.budget,
                probe = %probe.display_name(),
                reason = error.reason.as_str(),
                error = %error.message,
                "probe down"
            ),
            (Some(Transition::Recovered), _) => tracing::info!(
                budget = %probe.budget,
                probe = %probe.display_name(),
                "probe recovered"
            ),
            (Some(Transition::FirstSuccess), _) => tracing::debug!(
                budget = %probe.budget,
                probe = %probe.display_name(),
                "probe measuring"
            ),
            _ => {}
        }
    }
}
