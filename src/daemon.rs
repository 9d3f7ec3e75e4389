//! The running daemon: owns the probe tasks and source connections, applies reloads, and ticks
//! evaluation so that freshness and the time counters advance even when no probe reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::ConfigErrors;
use crate::model::Config;
use crate::probe::SourceHandles;
use crate::schedule::{ProbeTask, spawn_probe};
use crate::server::{self, ReloadRequest};
use crate::shared::Shared;
use crate::state::{ConfigDiff, DaemonState, ProbeKey};

/// Reads the config again for a reload (the file may have changed).
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>;

/// How long in-flight HTTP requests get to finish, and Kafka clients to be destroyed, after a
/// shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `run` needs besides the listener and the shutdown signal.
pub struct RunSettings {
    pub config: Config,
    /// Where reloads come from; `None` makes reload requests fail with a clear message.
    pub loader: Option<ConfigLoader>,
    /// Serve `POST /-/reload` (Prometheus' `--web.enable-lifecycle`).
    pub enable_lifecycle: bool,
    /// Reload on SIGHUP (the binary does; embedded uses and tests may not want to).
    pub reload_on_sighup: bool,
}

/// Serves HTTP on `listener` and measures every probe of `settings.config` until `shutdown`
/// is cancelled, then drains within a grace period.
pub async fn run(
    settings: RunSettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut next_task_id = 0;
    let config = Arc::new(settings.config);
    let sources = SourceHandles::build(&config, None)
        .map_err(|e| anyhow::anyhow!("cannot prepare sources: {e}"))?;
    let (state, diff) = DaemonState::new(config.clone(), clock::now(), &mut next_task_id);
    let shared = Arc::new(Shared::new(state));

    let (reload_tx, reload_rx) = mpsc::channel(4);
    if settings.reload_on_sighup {
        spawn_sighup_listener(reload_tx.clone(), shutdown.clone())?;
    }
    let app = server::app(server::AppState {
        shared: shared.clone(),
        reload: settings.enable_lifecycle.then(|| reload_tx.clone()),
    });
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
    });

    let mut daemon = Daemon {
        shared,
        sources,
        tasks: BTreeMap::new(),
        loader: settings.loader,
        next_task_id,
        probes_token: shutdown.child_token(),
    };
    daemon.apply_diff(diff);
    tracing::info!(
        budgets = config.budgets.len(),
        probes = daemon.tasks.len(),
        "lagbudget running"
    );
    daemon.control_loop(reload_rx, &shutdown).await;
    daemon.probes_token.cancel();
    for (_, task) in std::mem::take(&mut daemon.tasks) {
        task.handle.abort();
    }
    // Kafka clients are destroyed on threads of their own, after the probe runs still in a
    // blocking call let go of them: wait for that (bounded), so that nothing of the daemon is
    // still talking to a cluster once `run` has returned (the demo stops its mock cluster then).
    let sources = std::mem::take(&mut daemon.sources);
    drop(daemon);
    let (closed, served) = tokio::join!(
        tokio::time::timeout(SHUTDOWN_GRACE, sources.close()),
        tokio::time::timeout(SHUTDOWN_GRACE, server)
    );
    if closed.is_err() {
        tracing::warn!("a Kafka client was still being destroyed after the grace period");
    }
    match served {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(anyhow::anyhow!("HTTP server failed: {e}")),
        Ok(Err(e)) => return Err(anyhow::anyhow!("HTTP server task failed: {e}")),
        Err(_) => tracing::warn!("HTTP connections still open after the grace period"),
    }
    tracing::info!("lagbudget stopped");
    Ok(())
}

struct Daemon {
    shared: Arc<Shared>,
    sources: SourceHandles,
    tasks: BTreeMap<ProbeKey, ProbeTask>,
    loader: Option<ConfigLoader>,
    next_task_id: u64,
    probes_token: CancellationToken,
}

impl Daemon {
    async fn control_loop(
        &mut self,
        mut reloads: mpsc::Receiver<ReloadRequest>,
        shutdown: &CancellationToken,
    ) {
        // Freshness and the SLI time counters move with time even when no probe reports.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(request) = reloads.recv() => {
                    let outcome = self.reload().await;
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
                _ = tick.tick() => self.shared.tick(),
            }
        }
    }

    async fn reload(&mut self) -> Result<String, String> {
        let Some(loader) = self.loader.clone() else {
            return Err("this daemon was started without a config file to reload".into());
        };
        let loaded = tokio::task::spawn_blocking(move || loader())
            .await
            .map_err(|e| format!("config loader failed: {e}"))?;
        let config = match loaded {
            Ok(config) => config,
            Err(errors) => {
                self.shared.state().reload.last_successful = false;
                for error in &errors.0 {
                    tracing::error!(%error, "reload rejected; the running config stays");
                }
                return Err(errors.to_string());
            }
        };
        let sources = match SourceHandles::build(&config, Some(&self.sources)) {
            Ok(sources) => sources,
            Err(e) => {
                self.shared.state().reload.last_successful = false;
                tracing::error!(error = %e, "reload rejected; the running config stays");
                return Err(e.to_string());
            }
        };
        self.sources = sources;
        let diff = self
            .shared
            .apply_reload(Arc::new(config), &mut self.next_task_id);
        let summary = format!(
            "config reloaded: {} probes started, {} stopped, {} unchanged",
            diff.start.len(),
            diff.stop.len(),
            diff.kept
        );
        self.apply_diff(diff);
        tracing::info!("{summary}");
        Ok(summary)
    }

    fn apply_diff(&mut self, diff: ConfigDiff) {
        for key in diff.stop {
            if let Some(task) = self.tasks.remove(&key) {
                task.cancel.cancel();
            }
        }
        for (probe, task_id) in diff.start {
            let key = crate::state::probe_key(&probe);
            let task = spawn_probe(
                self.shared.clone(),
                probe,
                task_id,
                &self.sources,
                &self.probes_token,
            );
            if let Some(old) = self.tasks.insert(key, task) {
                old.cancel.cancel();
            }
        }
    }
}

#[cfg(unix)]
fn spawn_sighup_listener(
    reloads: mpsc::Sender<ReloadRequest>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading config");
                    if reloads.send(ReloadRequest { reply: None }).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn spawn_sighup_listener(
    _reloads: mpsc::Sender<ReloadRequest>,
    _shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Ok(())
}
