//! Metric names and `/metrics` rendering.
//!
//! Metrics about budgets and probes are rendered from the current state at scrape time, so a
//! probe removed by a reload has no series left behind and an unknown lag is simply absent.
//! Only process-level metrics (the duration histogram) live in a registry.

use prometheus::{HistogramOpts, HistogramVec, Registry, TextEncoder};

use crate::clock::Now;
use crate::evaluate::BudgetState;
use crate::families::{FamilyBuilder, bool_value, counter, gauge, with_label};
use crate::probe::{BacklogUnit, DetailFamilies, ErrorReason};
// The kinds' own families are named in `probe/<kind>/detail.rs`; re-exported so that every
// metric name the generators and tests need is reachable from here.
pub use crate::probe::{
    KAFKA_DATA_LOSS, KAFKA_GROUP_MEMBERS, KAFKA_TIMESTAMP_TYPE, MYSQL_REPLICATION_RUNNING,
    MYSQL_SECONDS_BEHIND_SOURCE, PARTITION_BACKLOG, PARTITION_LAG, RECEIVER_LAST_MESSAGE_AGE,
};
use crate::state::{BudgetEntry, DaemonState, ProbeEntry};

pub const LAG_SECONDS: &str = "lagbudget_lag_seconds";
pub const BUDGET_SECONDS: &str = "lagbudget_budget_seconds";
pub const BUDGET_USED_RATIO: &str = "lagbudget_budget_used_ratio";
pub const STATE: &str = "lagbudget_state";
pub const STATE_SINCE: &str = "lagbudget_state_since_timestamp_seconds";
pub const BACKLOG_PREFIX: &str = "lagbudget_backlog_";
pub const PROBE_UP: &str = "lagbudget_probe_up";
pub const PROBE_STALE: &str = "lagbudget_probe_stale";
pub const PROBE_LAST_DURATION: &str = "lagbudget_probe_last_duration_seconds";
pub const PROBE_DURATION: &str = "lagbudget_probe_duration_seconds";
pub const PROBE_LAST_SUCCESS: &str = "lagbudget_probe_last_success_timestamp_seconds";
pub const PROBE_ERRORS: &str = "lagbudget_probe_errors_total";
pub const PROGRESS_TIMESTAMP: &str = "lagbudget_progress_timestamp_seconds";
pub const STALLED: &str = "lagbudget_stalled";
pub const EVALUATED_SECONDS: &str = "lagbudget_budget_evaluated_seconds_total";
pub const OVER_SECONDS: &str = "lagbudget_budget_over_seconds_total";
pub const BUDGET_INFO: &str = "lagbudget_budget_info";
pub const OBJECTIVE_RATIO: &str = "lagbudget_objective_ratio";
pub const OBJECTIVE_WINDOW: &str = "lagbudget_objective_window_seconds";
pub const NEGATIVE_LAG: &str = "lagbudget_negative_lag_total";
pub const POSITION_REGRESSIONS: &str = "lagbudget_position_regressions_total";
pub const CLOCK_SKEW: &str = "lagbudget_clock_skew_seconds";
pub const READ_YOUR_WRITES_CHECKS: &str = "lagbudget_read_your_writes_checks_total";
pub const READ_YOUR_WRITES_MISSES: &str = "lagbudget_read_your_writes_misses_total";
pub const BUILD_INFO: &str = "lagbudget_build_info";
pub const RELOAD_SUCCESSFUL: &str = "lagbudget_config_last_reload_successful";
pub const RELOAD_SUCCESS_TIMESTAMP: &str = "lagbudget_config_last_reload_success_timestamp_seconds";

/// Version and git revision baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("LAGBUDGET_REVISION");

/// Process-level metrics kept in a registry: they accumulate independently of the config.
pub struct ProcessMetrics {
    registry: Registry,
    durations: HistogramVec,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let durations = HistogramVec::new(
            HistogramOpts::new(PROBE_DURATION, "Probe run durations by probe kind.").buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind"],
        )
        .expect("static histogram options are valid");
        registry
            .register(Box::new(durations.clone()))
            .expect("registered once into a fresh registry");
        Self {
            registry,
            durations,
        }
    }

    pub fn observe_duration(&self, kind: &str, seconds: f64) {
        self.durations.with_label_values(&[kind]).observe(seconds);
    }
}

/// Appends the process registry's families to the budget and probe families, all in the
/// Prometheus text format.
pub fn encode(mut text: String, process: &ProcessMetrics) -> String {
    // Encoding gathered families cannot fail for well-formed ones; an error would be a bug in
    // the registry, and a scrape without them is better than a crashed daemon.
    if let Err(e) = TextEncoder::new().encode_utf8(&process.registry.gather(), &mut text) {
        tracing::error!(error = %e, "rendering process metrics failed");
    }
    text
}

/// Every budget and probe family, rendered from the state at `now`.
pub fn state_families(state: &DaemonState, now: Now) -> String {
    let mut out = String::with_capacity(1 << 20);
    budget_families(&state.budgets, &mut out);
    probe_families(&state.budgets, now, &mut out);

    let mut build = gauge(
        BUILD_INFO,
        "Always 1; the version and git revision of this build.",
    );
    build.push(&[("version", VERSION), ("revision", REVISION)], 1.0);
    build.finish(&mut out);
    let mut reload_ok = gauge(
        RELOAD_SUCCESSFUL,
        "1 if the last config reload succeeded (or none was attempted).",
    );
    reload_ok.push(&[], bool_value(state.reload.last_successful));
    reload_ok.finish(&mut out);
    let mut reload_at = gauge(
        RELOAD_SUCCESS_TIMESTAMP,
        "Unix time of the last successful config load.",
    );
    reload_at.push(&[], state.reload.last_success_at.unix);
    reload_at.finish(&mut out);
    out
}

fn budget_families(budgets: &[BudgetEntry], out: &mut String) {
    let mut info = gauge(
        BUDGET_INFO,
        "Always 1; the budget's owner, severity, runbook and routing labels, to join on.",
    );
    let mut objective = gauge(
        OBJECTIVE_RATIO,
        "Target share of time the budget should be within its limits.",
    );
    let mut window = gauge(OBJECTIVE_WINDOW, "Window of the budget's objective.");
    let mut state_gauge = gauge(STATE, "1 for the budget's current state, 0 for the others.");
    let mut since = gauge(STATE_SINCE, "Unix time the budget's current state began.");
    let mut evaluated = counter(EVALUATED_SECONDS, "Wall time the budget was evaluated.");
    let mut over = counter(
        OVER_SECONDS,
        "Wall time the budget was in breach or unknown (not within budget).",
    );
    for budget in budgets {
        let spec = &budget.spec;
        let name = spec.name.as_str();
        let mut labels: Vec<(&str, &str)> = vec![
            ("budget", name),
            ("owner", spec.owner.as_deref().unwrap_or("")),
            ("severity", spec.severity.as_str()),
            ("runbook_url", spec.runbook_url.as_deref().unwrap_or("")),
        ];
        labels.extend(spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        info.push(&labels, 1.0);
        if let Some(o) = spec.objective {
            objective.push(&[("budget", name)], o.target);
            window.push(&[("budget", name)], o.window.as_secs_f64());
        }
        for s in BudgetState::ALL {
            state_gauge.push(
                &[("budget", name), ("state", s.as_str())],
                bool_value(budget.tracker.state == s),
            );
        }
        since.push(&[("budget", name)], budget.tracker.since.unix);
        evaluated.push(&[("budget", name)], budget.tracker.evaluated_seconds_total);
        over.push(&[("budget", name)], budget.tracker.over_seconds_total);
    }
    for family in [info, objective, window, state_gauge, since, evaluated, over] {
        family.finish(out);
    }
}

fn probe_families(budgets: &[BudgetEntry], now: Now, out: &mut String) {
    let mut lag = gauge(
        LAG_SECONDS,
        "Lag of a fresh probe; absent while the probe is stale.",
    );
    let mut budget_seconds = gauge(BUDGET_SECONDS, "The effective lag budget of the probe.");
    let mut ratio = gauge(
        BUDGET_USED_RATIO,
        "Lag over budget (or backlog over max backlog, the larger); absent while stale.",
    );
    let mut backlogs: Vec<(BacklogUnit, FamilyBuilder)> = BacklogUnit::ALL
        .iter()
        .map(|unit| {
            let name = format!("{BACKLOG_PREFIX}{}", unit.as_str());
            let help = format!(
                "Positions behind, in {}; absent while stale.",
                unit.as_str()
            );
            (*unit, gauge(&name, &help))
        })
        .collect();
    let mut up = gauge(PROBE_UP, "1 if the probe's last run succeeded.");
    let mut stale = gauge(
        PROBE_STALE,
        "1 while the probe has had no success within 3 intervals (or never).",
    );
    let mut last_duration = gauge(PROBE_LAST_DURATION, "Duration of the probe's last run.");
    let mut last_success = gauge(
        PROBE_LAST_SUCCESS,
        "Unix time of the probe's last successful run.",
    );
    let mut errors = counter(PROBE_ERRORS, "Failed probe runs by reason.");
    let mut progress = gauge(
        PROGRESS_TIMESTAMP,
        "Unix time the view's position last advanced.",
    );
    let mut stalled = gauge(
        STALLED,
        "1 while the probe is behind and its position has not advanced for the stall limit.",
    );
    let mut negative = counter(
        NEGATIVE_LAG,
        "Measurements below zero, clamped to 0 (clock skew or future timestamps).",
    );
    let mut regressions = counter(
        POSITION_REGRESSIONS,
        "Positions that went backwards (failover, rewind).",
    );
    let mut skew = gauge(
        CLOCK_SKEW,
        "Source clock minus daemon clock, where a probe compares the two; absent while stale.",
    );
    let mut ryw_checks = counter(
        READ_YOUR_WRITES_CHECKS,
        "Reads at a replica a set delay after a write at the primary.",
    );
    let mut ryw_misses = counter(
        READ_YOUR_WRITES_MISSES,
        "Reads at a replica a set delay after a write at the primary that did not see it.",
    );
    let mut details = DetailFamilies::new();

    for budget in budgets {
        for probe in &budget.probes {
            let mut labels = vec![
                ("budget", budget.spec.name.as_str()),
                ("probe", probe.spec.name.as_str()),
            ];
            if let Some(replica) = &probe.spec.replica {
                labels.push(("replica", replica.as_str()));
            }
            let labels = labels.as_slice();
            let history = &probe.history;
            if let Some(max) = probe.spec.max_lag {
                budget_seconds.push(labels, max.as_secs_f64());
            }
            if let Some(sample) = history.fresh_sample(now, probe.interval_secs()) {
                if let Some(seconds) = sample.lag_seconds {
                    lag.push(labels, seconds);
                }
                if let Some(r) = probe.fresh_ratio(now) {
                    ratio.push(labels, r);
                }
                if let Some(b) = sample.backlog {
                    if let Some((_, family)) = backlogs.iter_mut().find(|(u, _)| *u == b.unit) {
                        family.push(labels, b.value);
                    }
                }
                if let Some(s) = sample.clock_skew_seconds {
                    skew.push(labels, s);
                }
                if let Some(detail) = &probe.detail {
                    details.push(labels, detail);
                }
            }
            up.push(labels, bool_value(history.is_up()));
            stale.push(labels, bool_value(probe.is_stale(now)));
            if let Some(d) = history.last_duration {
                last_duration.push(labels, d);
            }
            if let Some(at) = history.last_success_at {
                last_success.push(labels, at.unix);
            }
            for reason in ErrorReason::ALL {
                errors.push(
                    &with_label(labels, ("reason", reason.as_str())),
                    history.errors[reason.index()] as f64,
                );
            }
            if probe.spec.checks_read_your_writes() {
                ryw_checks.push(labels, history.read_your_writes_checks as f64);
                ryw_misses.push(labels, history.read_your_writes_misses as f64);
            }
            if let Some(at) = history.progress_at {
                progress.push(labels, at.unix);
            }
            stalled.push(labels, bool_value(ProbeEntry::is_stalled(probe, now)));
            negative.push(labels, history.negative_lag_total as f64);
            regressions.push(labels, history.position_regressions_total as f64);
        }
    }
    for family in [lag, budget_seconds, ratio] {
        family.finish(out);
    }
    for (_, family) in backlogs {
        family.finish(out);
    }
    for family in [
        up,
        stale,
        last_duration,
        last_success,
        errors,
        progress,
        stalled,
        negative,
        regressions,
        skew,
        ryw_checks,
        ryw_misses,
    ] {
        family.finish(out);
    }
    details.finish(out);
}
