//! One task per probe: runs it every effective interval (with a small random start offset so
//! probes of one source do not fire together), bounds each run by its timeout, records the
//! outcome in the shared state and logs up/down changes. Tasks stop on cancellation.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::evaluate::Transition;
use crate::model::Probe;
use crate::probe::{ProbeRunner, Reading, SourceHandles};
use crate::sample::{ErrorReason, ProbeError};
use crate::shared::Shared;

/// Extra time the task grants a run beyond its deadline before abandoning it. Probes stop at
/// the deadline themselves; this only guards against one that does not.
const DEADLINE_GRACE: Duration = Duration::from_millis(200);

/// What a probe task runs each interval: the probe's runner in the daemon (or the error that
/// kept it from being built, reported on every run), a script in tests.
pub trait Measure: Send + 'static {
    /// One run, which should end by `deadline`.
    fn measure(
        &mut self,
        deadline: Instant,
    ) -> impl Future<Output = Result<Reading, ProbeError>> + Send;
}

impl Measure for Result<ProbeRunner, ProbeError> {
    async fn measure(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        match self {
            Ok(runner) => runner.run(deadline).await,
            Err(error) => Err(error.clone()),
        }
    }
}

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
    spawn_with(shared, probe, task_id, runner, cancel)
}

/// Starts the loop of `probe` over any `Measure`, stopped by `cancel`.
fn spawn_with(
    shared: Arc<Shared>,
    probe: Arc<Probe>,
    task_id: u64,
    runner: impl Measure,
    cancel: CancellationToken,
) -> ProbeTask {
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
    mut runner: impl Measure,
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
        let outcome = match timeout_at(deadline + DEADLINE_GRACE, runner.measure(deadline)).await {
            Ok(result) => crate::probe::require_lag(&probe, result),
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                format!("run exceeded its {:?} timeout", probe.timeout),
            )),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::sample::Sample;
    use crate::state::{DaemonState, probe_key};

    /// A scripted probe: each run takes `takes` (past the deadline when longer than the
    /// timeout) and reports a lag equal to its run number.
    struct Script {
        runs: Arc<AtomicU64>,
        takes: Duration,
    }

    impl Measure for Script {
        async fn measure(&mut self, _deadline: Instant) -> Result<Reading, ProbeError> {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.takes).await;
            Ok(Sample {
                lag_seconds: Some(run as f64),
                ..Sample::default()
            }
            .into())
        }
    }

    /// Starts the probe's task over `script` and returns the shared state.
    fn start(
        interval: u64,
        timeout: u64,
        takes: Duration,
    ) -> (Arc<Shared>, Arc<AtomicU64>, ProbeTask) {
        let config = crate::testing::config(&format!(
            r#"
sources:
  db: {{ postgres: {{ dsn: "host=127.0.0.1 user=postgres dbname=test" }} }}
budgets:
  - name: b
    max_lag: 60s
    probes:
      - {{ name: p, interval: {interval}s, timeout: {timeout}s, sql_watermark: {{ source: db, watermark: "SELECT 1", mode: since_watermark }} }}
"#
        ));
        let probe = config.budgets[0].probes[0].clone();
        let mut next_id = 0;
        let (state, diff) = DaemonState::new(config, clock::now(), &mut next_id);
        let shared = Arc::new(Shared::new(state));
        let (_, task_id) = diff.start[0].clone();
        let runs = Arc::new(AtomicU64::new(0));
        let script = Script {
            runs: runs.clone(),
            takes,
        };
        let task = spawn_with(
            shared.clone(),
            probe,
            task_id,
            script,
            CancellationToken::new(),
        );
        (shared, runs, task)
    }

    /// Recorded runs of the one probe.
    fn recorded(shared: &Shared) -> u64 {
        shared.state().budgets[0].probes[0].history.runs
    }

    /// Lets the paused clock run until `done` holds, `limit` of tokio time at most.
    async fn run_until(limit: Duration, done: impl Fn() -> bool) {
        let deadline = clock::instant() + limit;
        while !done() && clock::instant() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_runs_once_per_interval_and_each_run_is_recorded() {
        let (shared, runs, task) = start(10, 5, Duration::from_millis(20));
        let started = clock::instant();
        run_until(Duration::from_secs(120), || recorded(&shared) >= 4).await;
        let elapsed = clock::elapsed(started);
        // The first run comes within the start offset (at most a tenth of the interval), then
        // one every 10 s: the fourth run ends between 30 s and 31 s plus its 20 ms.
        assert!(
            elapsed >= Duration::from_secs(30) && elapsed <= Duration::from_millis(31_100),
            "4 runs took {elapsed:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        let state = shared.state();
        let history = &state.budgets[0].probes[0].history;
        assert!(history.is_up());
        assert_eq!(
            history.last_sample.as_ref().and_then(|s| s.lag_seconds),
            Some(4.0)
        );
        drop(state);
        task.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_past_its_deadline_is_recorded_as_a_timeout_and_probing_goes_on() {
        // Each run takes 30 s against a 2 s timeout (plus the grace): every run is abandoned.
        let (shared, runs, task) = start(5, 2, Duration::from_secs(30));
        run_until(Duration::from_secs(60), || recorded(&shared) >= 2).await;
        let state = shared.state();
        let history = &state.budgets[0].probes[0].history;
        assert_eq!(history.runs, 2);
        assert_eq!(history.errors[ErrorReason::Timeout.index()], 2);
        let duration = history.last_duration.expect("a duration is recorded");
        assert!(
            (2.2..2.3).contains(&duration),
            "an abandoned run lasts its timeout plus the grace, not {duration}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        drop(state);
        task.cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_task_runs_no_more() {
        let (shared, runs, task) = start(1, 1, Duration::from_millis(10));
        run_until(Duration::from_secs(10), || recorded(&shared) >= 2).await;
        task.cancel.cancel();
        let _ = task.handle.await;
        let after_cancel = runs.load(Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(runs.load(Ordering::SeqCst), after_cancel);
        assert_eq!(recorded(&shared), after_cancel);
    }

    #[tokio::test(start_paused = true)]
    async fn results_of_a_replaced_task_are_dropped() {
        let (shared, _runs, task) = start(1, 1, Duration::from_millis(10));
        run_until(Duration::from_secs(10), || recorded(&shared) >= 1).await;
        let key = probe_key(&shared.state().budgets[0].probes[0].spec);
        // A reload gave the probe a new task id: the old task's late result must not count.
        std::sync::Arc::make_mut(&mut shared.state().budgets[0].probes)[0].task_id += 1;
        let before = recorded(&shared);
        let stale = shared
            .state()
            .record(&key, 0, clock::now(), 0.1, Ok(Sample::default().into()));
        assert!(stale.is_none());
        assert_eq!(recorded(&shared), before);
        task.cancel.cancel();
    }
}
