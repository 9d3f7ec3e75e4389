//! Metric names and `/metrics` rendering.
//!
//! Metrics about budgets and probes are rendered at scrape time from a `Snapshot` of the state,
//! evaluated once at the scrape's `now` and rendered after the state lock is released, so a
//! probe removed by a reload has no series left behind, an unknown lag is simply absent, and a
//! scrape never holds up a probe task for longer than the copy. Only process-level metrics (the
//! duration histogram, the process collector) live in a registry.

use prometheus::{HistogramOpts, HistogramVec, Registry, TextEncoder};

use crate::evaluate::BudgetState;
use crate::evaluate::ProbeView;
use crate::families::{Exposition, Kind, LabelSet, bool_value};
use crate::probe::{BacklogUnit, DetailFamilies, ErrorReason};
use crate::sample::Sample;
// The kinds' own families are named in `probe/<kind>/detail.rs`; re-exported so that every
// metric name the generators and tests need is reachable from here.
pub use crate::probe::{
    CACHE_MISSES, CACHE_SAMPLED_KEYS, CACHE_SCAN_PASSES, CACHE_STALE_KEYS, CANARY_VISIBILITY,
    HTTP_RESPONSE_AGE, HTTP_RESPONSE_BYTES, HTTP_SERVED_STALE, KAFKA_DATA_LOSS,
    KAFKA_GROUP_MEMBERS, KAFKA_TIMESTAMP_TYPE, MYSQL_REPLICATION_RUNNING,
    MYSQL_SECONDS_BEHIND_SOURCE, PARTITION_BACKLOG, PARTITION_LAG, RECEIVER_LAST_MESSAGE_AGE,
    RECONCILE_LAST_SWEEP, RECONCILE_MISMATCHES, RECONCILE_ROWS_READ, RECONCILE_STATEMENTS,
    RECONCILE_SWEEP_PROGRESS, RECONCILE_SWEEP_ROWS, STREAM_DATA_LOSS, STREAM_SHARDS,
    STREAM_SHARDS_BEHIND,
};
use crate::state::{BudgetSnapshot, ProbeEntry, Snapshot};

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
pub const MONOTONIC_READS: &str = "lagbudget_monotonic_reads_total";
pub const MONOTONIC_READ_VIOLATIONS: &str = "lagbudget_monotonic_read_violations_total";
pub const MONOTONIC_VIOLATION_BUDGET: &str = "lagbudget_monotonic_read_violation_budget_ratio";
pub const RECONCILE_MAX_MISMATCHES: &str = "lagbudget_reconcile_max_mismatches";
pub const BUILD_INFO: &str = "lagbudget_build_info";
pub const RELOAD_SUCCESSFUL: &str = "lagbudget_config_last_reload_successful";
pub const RELOAD_SUCCESS_TIMESTAMP: &str = "lagbudget_config_last_reload_success_timestamp_seconds";

/// Version and git revision baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("LAGBUDGET_REVISION");

/// Process-level metrics kept in a registry: they accumulate independently of the config. The
/// probe duration histogram and the standard `process_*` collector.
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
        // The standard process metrics (`process_cpu_seconds_total`,
        // `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`…),
        // read from /proc at each scrape, outside the state lock. Linux only, as the collector.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
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
pub fn encode(mut families: Exposition, process: &ProcessMetrics) -> String {
    let mut text = String::new();
    // Encoding gathered families cannot fail for well-formed ones; an error would be a bug in
    // the registry, and a scrape without them is better than a crashed daemon.
    if let Err(e) = TextEncoder::new().encode_utf8(&process.registry.gather(), &mut text) {
        tracing::error!(error = %e, "rendering process metrics failed");
    }
    families.push_text(&text);
    families.into_text()
}

/// Every budget and probe family of one answer, in the text format.
pub fn render(state: &Snapshot) -> Exposition {
    let probes: usize = state.budgets.iter().map(|b| b.probes.len()).sum();
    // Room for what a scrape of this size writes; room never written costs only address space.
    let mut out = Exposition::with_capacity(4096 + state.budgets.len() * 2048 + probes * 2048);
    budget_families(&state.budgets, &mut out);
    probe_families(&state.budgets, &mut out);

    out.family(
        BUILD_INFO,
        "Always 1; the version and git revision of this build.",
        Kind::Gauge,
    )
    .push(&[("version", VERSION), ("revision", REVISION)], 1.0);
    out.family(
        RELOAD_SUCCESSFUL,
        "1 if the last config reload succeeded (or none was attempted).",
        Kind::Gauge,
    )
    .push(&[], bool_value(state.reload.last_successful));
    out.family(
        RELOAD_SUCCESS_TIMESTAMP,
        "Unix time of the last successful config load.",
        Kind::Gauge,
    )
    .push(&[], state.reload.last_success_at.unix);
    out
}

/// A budget or a probe, with its labels escaped once.
trait Labelled {
    fn set(&self) -> &LabelSet;
}

/// Writes one family with a series for each item that `value` gives a value for.
fn family_of<T: Labelled>(
    out: &mut Exposition,
    items: &[T],
    (name, help, kind): (&str, &str, Kind),
    value: impl Fn(&T) -> Option<f64>,
) {
    let mut family = out.family(name, help, kind);
    for item in items {
        if let Some(v) = value(item) {
            family.push_with(item.set(), &[], v);
        }
    }
}

/// One budget as `/metrics` labels it.
struct BudgetRow<'a> {
    budget: &'a BudgetSnapshot,
    set: LabelSet,
}

impl Labelled for BudgetRow<'_> {
    fn set(&self) -> &LabelSet {
        &self.set
    }
}

fn budget_families(budgets: &[BudgetSnapshot], out: &mut Exposition) {
    let rows: Vec<BudgetRow> = budgets
        .iter()
        .map(|budget| BudgetRow {
            budget,
            set: LabelSet::new(&[("budget", budget.spec.name.as_str())]),
        })
        .collect();
    let mut info = out.family(
        BUDGET_INFO,
        "Always 1; the budget's owner, severity, runbook and routing labels, to join on.",
        Kind::Gauge,
    );
    for row in &rows {
        let spec = &row.budget.spec;
        let mut labels: Vec<(&str, &str)> = vec![
            ("budget", spec.name.as_str()),
            ("owner", spec.owner.as_deref().unwrap_or("")),
            ("severity", spec.severity.as_str()),
            ("runbook_url", spec.runbook_url.as_deref().unwrap_or("")),
        ];
        labels.extend(spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        info.push(&labels, 1.0);
    }
    family_of(
        out,
        &rows,
        (
            OBJECTIVE_RATIO,
            "Target share of time the budget should be within its limits.",
            Kind::Gauge,
        ),
        |row| row.budget.spec.objective.map(|o| o.target),
    );
    family_of(
        out,
        &rows,
        (
            OBJECTIVE_WINDOW,
            "Window of the budget's objective.",
            Kind::Gauge,
        ),
        |row| row.budget.spec.objective.map(|o| o.window.as_secs_f64()),
    );
    let mut state_gauge = out.family(
        STATE,
        "1 for the budget's current state, 0 for the others.",
        Kind::Gauge,
    );
    for row in &rows {
        for s in BudgetState::ALL {
            state_gauge.push_with(
                &row.set,
                &[("state", s.as_str())],
                bool_value(row.budget.tracker.state == s),
            );
        }
    }
    family_of(
        out,
        &rows,
        (
            STATE_SINCE,
            "Unix time the budget's current state began.",
            Kind::Gauge,
        ),
        |row| Some(row.budget.tracker.since.unix),
    );
    family_of(
        out,
        &rows,
        (
            EVALUATED_SECONDS,
            "Wall time the budget was evaluated.",
            Kind::Counter,
        ),
        |row| Some(row.budget.tracker.evaluated_seconds_total),
    );
    family_of(
        out,
        &rows,
        (
            OVER_SECONDS,
            "Wall time the budget was in breach or unknown (not within budget).",
            Kind::Counter,
        ),
        |row| Some(row.budget.tracker.over_seconds_total),
    );
}

/// One probe as `/metrics` labels it, with its evaluation at the scrape's `now`.
struct ProbeRow<'a> {
    labels: Vec<(&'a str, &'a str)>,
    set: LabelSet,
    probe: &'a ProbeEntry,
    view: &'a ProbeView,
}

impl Labelled for ProbeRow<'_> {
    fn set(&self) -> &LabelSet {
        &self.set
    }
}

impl ProbeRow<'_> {
    fn fresh(&self) -> Option<&Sample> {
        self.probe.fresh_sample(self.view)
    }
}

/// Every per-probe family, one family at a time over all probes, written straight into `out`.
fn probe_families(budgets: &[BudgetSnapshot], out: &mut Exposition) {
    let rows: Vec<ProbeRow> = budgets
        .iter()
        .flat_map(|budget| {
            budget.probes().map(|(probe, view)| {
                let mut labels = vec![
                    ("budget", budget.spec.name.as_str()),
                    ("probe", probe.spec.name.as_str()),
                ];
                if let Some(replica) = &probe.spec.replica {
                    labels.push(("replica", replica.as_str()));
                }
                ProbeRow {
                    set: LabelSet::new(&labels),
                    labels,
                    probe,
                    view,
                }
            })
        })
        .collect();
    let gauge = |name, help| (name, help, Kind::Gauge);
    let counter = |name, help| (name, help, Kind::Counter);
    family_of(
        out,
        &rows,
        gauge(
            LAG_SECONDS,
            "Lag of a fresh probe; absent while the probe is stale.",
        ),
        |row| row.fresh().and_then(|s| s.lag_seconds),
    );
    family_of(
        out,
        &rows,
        gauge(BUDGET_SECONDS, "The effective lag budget of the probe."),
        |row| row.probe.spec.max_lag.map(|max| max.as_secs_f64()),
    );
    family_of(
        out,
        &rows,
        gauge(
            BUDGET_USED_RATIO,
            "Lag over budget (or backlog over max backlog, the larger); absent while stale.",
        ),
        |row| row.view.used_ratio,
    );
    for unit in BacklogUnit::ALL {
        let name = format!("{BACKLOG_PREFIX}{}", unit.as_str());
        let help = format!(
            "Positions behind, in {}; absent while stale.",
            unit.as_str()
        );
        family_of(out, &rows, (&name, &help, Kind::Gauge), |row| {
            row.fresh()
                .and_then(|s| s.backlog)
                .filter(|b| b.unit == unit)
                .map(|b| b.value)
        });
    }
    family_of(
        out,
        &rows,
        gauge(PROBE_UP, "1 if the probe's last run succeeded."),
        |row| Some(bool_value(row.probe.history.is_up())),
    );
    family_of(
        out,
        &rows,
        gauge(
            PROBE_STALE,
            "1 while the probe has had no success within 3 intervals (or never).",
        ),
        |row| Some(bool_value(row.view.stale)),
    );
    family_of(
        out,
        &rows,
        gauge(PROBE_LAST_DURATION, "Duration of the probe's last run."),
        |row| row.probe.history.last_duration,
    );
    family_of(
        out,
        &rows,
        gauge(
            PROBE_LAST_SUCCESS,
            "Unix time of the probe's last successful run.",
        ),
        |row| row.probe.history.last_success_at.map(|at| at.unix),
    );
    let mut errors = out.family(PROBE_ERRORS, "Failed probe runs by reason.", Kind::Counter);
    for row in &rows {
        for reason in ErrorReason::ALL {
            errors.push_with(
                &row.set,
                &[("reason", reason.as_str())],
                row.probe.history.errors[reason.index()] as f64,
            );
        }
    }
    family_of(
        out,
        &rows,
        gauge(
            PROGRESS_TIMESTAMP,
            "Unix time the view's position last advanced.",
        ),
        |row| row.probe.history.progress_at.map(|at| at.unix),
    );
    family_of(
        out,
        &rows,
        gauge(
            STALLED,
            "1 while the probe is behind and its position has not advanced for the stall limit.",
        ),
        |row| Some(bool_value(row.view.stalled)),
    );
    family_of(
        out,
        &rows,
        counter(
            NEGATIVE_LAG,
            "Measurements below zero, clamped to 0 (clock skew or future timestamps).",
        ),
        |row| Some(row.probe.history.negative_lag_total as f64),
    );
    family_of(
        out,
        &rows,
        counter(
            POSITION_REGRESSIONS,
            "Positions that went backwards (failover, rewind).",
        ),
        |row| Some(row.probe.history.position_regressions_total as f64),
    );
    family_of(
        out,
        &rows,
        gauge(
            CLOCK_SKEW,
            "Source clock minus daemon clock, where a probe compares the two; absent while stale.",
        ),
        |row| row.fresh().and_then(|s| s.clock_skew_seconds),
    );
    let checks_ryw = |row: &ProbeRow| row.probe.spec.checks_read_your_writes();
    family_of(
        out,
        &rows,
        counter(
            READ_YOUR_WRITES_CHECKS,
            "Reads at a replica a set delay after a write at the primary.",
        ),
        |row| checks_ryw(row).then_some(row.probe.history.read_your_writes_checks as f64),
    );
    family_of(
        out,
        &rows,
        counter(
            READ_YOUR_WRITES_MISSES,
            "Reads at a replica a set delay after a write at the primary that did not see it.",
        ),
        |row| checks_ryw(row).then_some(row.probe.history.read_your_writes_misses as f64),
    );
    let checks_monotonic = |row: &ProbeRow| row.probe.spec.checks_monotonic_reads();
    family_of(
        out,
        &rows,
        counter(
            MONOTONIC_READS,
            "Reads through a canary view's route made to check monotonic reads.",
        ),
        |row| checks_monotonic(row).then_some(row.probe.history.monotonic_reads as f64),
    );
    family_of(
        out,
        &rows,
        counter(
            MONOTONIC_READ_VIOLATIONS,
            "Reads through a canary view's route that showed an older marker than one already \
             seen through it.",
        ),
        |row| checks_monotonic(row).then_some(row.probe.history.monotonic_read_violations as f64),
    );
    family_of(
        out,
        &rows,
        gauge(
            MONOTONIC_VIOLATION_BUDGET,
            "The share of a canary view's monotonic reads that may be violations \
             (max_monotonic_violations).",
        ),
        |row| row.probe.spec.max_monotonic_violations,
    );
    family_of(
        out,
        &rows,
        gauge(
            RECONCILE_MAX_MISMATCHES,
            "How many mismatched records a reconcile probe may find (max_mismatches).",
        ),
        |row| row.probe.spec.max_mismatches.map(|limit| limit as f64),
    );
    let mut details = DetailFamilies::new();
    for row in &rows {
        if let Some(detail) = row.probe.fresh_detail(row.view) {
            details.push(&row.labels, detail);
        }
    }
    details.finish(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use crate::probe::kafka_consumer_group::detail::{KafkaDetail, PartitionLag};
    use crate::probe::mysql_replica::detail::MysqlReplicaDetail;
    use crate::probe::postgres_replica::detail::StandbyDetail;
    use crate::probe::{Detail, Reading};
    use crate::state::{DaemonState, probe_key};
    use crate::testing::{MIXED, at, config, sample};
    use std::sync::Arc;

    /// The series of `name` in `text`: (labels text, value).
    fn series<'t>(text: &'t str, name: &str) -> Vec<(&'t str, f64)> {
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (labels, value) = rest.rsplit_once(' ')?;
                (labels.is_empty() || labels.starts_with('{'))
                    .then(|| (labels, value.parse().expect("a number")))
            })
            .collect()
    }

    fn render_at(state: &DaemonState, now: Now) -> String {
        render(&state.copy(now, None).evaluate()).into_text()
    }

    /// Every probe of `MIXED` reports once at 1 s, each kind with its detail.
    fn measured() -> DaemonState {
        let mut next = 0;
        let (mut state, diff) = DaemonState::new(config(MIXED), at(0.0), &mut next);
        for (probe, task) in diff.start {
            let detail = match probe.name.as_str() {
                "group" => Some(Detail::KafkaConsumerGroup(Arc::new(KafkaDetail {
                    members: Some(3),
                    data_loss: true,
                    log_append_time: Some(true),
                    partitions_total: 4,
                    partitions: vec![PartitionLag {
                        topic: "orders".into(),
                        partition: 2,
                        lag_seconds: 1.5,
                        backlog: 9,
                    }],
                }))),
                "mirror" => Some(Detail::MysqlReplica(MysqlReplicaDetail {
                    io_running: true,
                    sql_running: false,
                    seconds_behind_source: None,
                })),
                "stream" => Some(Detail::PostgresReplica(StandbyDetail {
                    receiver_last_message_age_seconds: Some(0.75),
                })),
                _ => None,
            };
            let reading = Reading {
                sample: sample(3.0),
                detail,
            };
            state.record(&probe_key(&probe), task, at(1.0), 0.1, Ok(reading));
        }
        state
    }

    #[test]
    fn every_error_reason_counter_exists_at_zero_from_load() {
        let mut next = 0;
        let (state, _) = DaemonState::new(config(MIXED), at(0.0), &mut next);
        let text = render_at(&state, at(0.5));
        let errors = series(&text, PROBE_ERRORS);
        assert_eq!(errors.len(), 5 * ErrorReason::ALL.len(), "{text}");
        assert!(errors.iter().all(|(_, value)| *value == 0.0));
        for reason in ErrorReason::ALL {
            let label = format!("reason=\"{}\"", reason.as_str());
            assert_eq!(
                errors.iter().filter(|(l, _)| l.contains(&label)).count(),
                5,
                "{reason:?}"
            );
        }
        // Nothing measured yet: stale, down, and no lag, ratio or backlog at all.
        assert_eq!(series(&text, PROBE_STALE).len(), 5);
        assert!(series(&text, PROBE_STALE).iter().all(|(_, v)| *v == 1.0));
        assert!(series(&text, PROBE_UP).iter().all(|(_, v)| *v == 0.0));
        for absent in [LAG_SECONDS, BUDGET_USED_RATIO, "lagbudget_backlog_messages"] {
            assert!(series(&text, absent).is_empty(), "{absent} in:\n{text}");
        }
        // The other per-probe counters too, and the read-your-writes counters where they apply.
        for counter in [NEGATIVE_LAG, POSITION_REGRESSIONS] {
            assert_eq!(series(&text, counter).len(), 5, "{counter}");
        }
        assert_eq!(
            series(&text, READ_YOUR_WRITES_CHECKS),
            [(
                "{budget=\"checkout\",probe=\"mirror\",replica=\"replica\"}",
                0.0
            )]
        );
    }

    /// The monotonic-read counters exist from load for canaries with `monotonic`, and the
    /// violation limit only for those with a `max_monotonic_violations` (the probe's or its
    /// budget's), as a ratio.
    #[test]
    fn monotonic_read_counters_and_their_limit_exist_from_load_where_they_apply() {
        let config = config(
            r#"
sources:
  db: { postgres: { dsn: "host=127.0.0.1 user=postgres dbname=test" } }
  replica: { postgres: { dsn: "host=127.0.0.2 user=postgres dbname=test" } }
budgets:
  - name: visible
    max_lag: 60s
    max_monotonic_violations: 2%
    probes:
      - name: limited
        canary: { write: { source: db }, read: [{ source: replica }], monotonic: { reads: 2 } }
      - name: strict
        max_monotonic_violations: 0%
        canary: { write: { source: db }, read: [{ source: replica }], monotonic: { reads: 2 } }
      - name: once
        canary: { write: { source: db }, read: [{ source: replica }] }
"#,
        );
        let mut next = 0;
        let (state, _) = DaemonState::new(config, at(0.0), &mut next);
        let text = render_at(&state, at(0.5));
        let reads = series(&text, MONOTONIC_READS);
        assert_eq!(reads.len(), 2, "{text}");
        assert!(reads.iter().all(|(_, v)| *v == 0.0));
        assert_eq!(series(&text, MONOTONIC_READ_VIOLATIONS).len(), 2);
        assert_eq!(
            series(&text, MONOTONIC_VIOLATION_BUDGET),
            [
                (
                    "{budget=\"visible\",probe=\"limited\",replica=\"replica\"}",
                    0.02
                ),
                (
                    "{budget=\"visible\",probe=\"strict\",replica=\"replica\"}",
                    0.0
                ),
            ]
        );
    }

    #[test]
    fn a_stale_probe_has_no_lag_ratio_backlog_or_detail_series() {
        let state = measured();
        let fresh = render_at(&state, at(2.0));
        assert_eq!(series(&fresh, LAG_SECONDS).len(), 5);
        assert_eq!(series(&fresh, BUDGET_USED_RATIO).len(), 5);
        assert_eq!(series(&fresh, "lagbudget_backlog_messages").len(), 5);
        assert!(
            series(&fresh, BUDGET_USED_RATIO)
                .iter()
                .all(|(_, v)| *v == 0.05)
        );
        // 3 intervals of 10 s after the last success: every probe is stale.
        let stale = render_at(&state, at(31.5));
        for absent in [
            LAG_SECONDS,
            BUDGET_USED_RATIO,
            "lagbudget_backlog_messages",
            KAFKA_GROUP_MEMBERS,
            KAFKA_DATA_LOSS,
            PARTITION_LAG,
            MYSQL_REPLICATION_RUNNING,
            RECEIVER_LAST_MESSAGE_AGE,
        ] {
            assert!(series(&stale, absent).is_empty(), "{absent} in:\n{stale}");
        }
        assert!(series(&stale, PROBE_STALE).iter().all(|(_, v)| *v == 1.0));
        // What is known without being fresh stays: the budget, the last success, the counters.
        assert_eq!(series(&stale, BUDGET_SECONDS).len(), 5);
        assert_eq!(series(&stale, PROBE_LAST_SUCCESS).len(), 5);
        // And the budget is unknown at the same instant, in the same answer.
        let unknown = series(&stale, STATE)
            .into_iter()
            .filter(|(labels, v)| labels.contains("state=\"unknown\"") && *v == 1.0)
            .count();
        assert_eq!(unknown, 2, "{stale}");
    }

    #[test]
    fn kind_details_render_while_fresh() {
        let text = render_at(&measured(), at(2.0));
        let group = "{budget=\"checkout\",probe=\"group\"}";
        assert_eq!(series(&text, KAFKA_GROUP_MEMBERS), [(group, 3.0)]);
        assert_eq!(series(&text, KAFKA_DATA_LOSS), [(group, 1.0)]);
        assert_eq!(
            series(&text, KAFKA_TIMESTAMP_TYPE),
            [(
                "{budget=\"checkout\",probe=\"group\",timestamp_type=\"LogAppendTime\"}",
                1.0
            )]
        );
        let partition = "{budget=\"checkout\",probe=\"group\",topic=\"orders\",partition=\"2\"}";
        assert_eq!(series(&text, PARTITION_LAG), [(partition, 1.5)]);
        assert_eq!(series(&text, PARTITION_BACKLOG), [(partition, 9.0)]);
        let mirror = "budget=\"checkout\",probe=\"mirror\",replica=\"replica\"";
        assert_eq!(
            series(&text, MYSQL_REPLICATION_RUNNING),
            [
                (format!("{{{mirror},thread=\"io\"}}").as_str(), 1.0),
                (format!("{{{mirror},thread=\"sql\"}}").as_str(), 0.0),
            ]
        );
        assert!(
            series(&text, MYSQL_SECONDS_BEHIND_SOURCE).is_empty(),
            "NULL is absent, never 0"
        );
        assert_eq!(
            series(&text, RECEIVER_LAST_MESSAGE_AGE),
            [(
                "{budget=\"checkout\",probe=\"stream\",replica=\"standby\"}",
                0.75
            )]
        );
        // Each family once, with its help.
        for name in [
            KAFKA_GROUP_MEMBERS,
            MYSQL_REPLICATION_RUNNING,
            RECEIVER_LAST_MESSAGE_AGE,
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} gauge\n")).count(),
                1,
                "{name}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_standard_process_metrics_are_exported() {
        let text = encode(Exposition::new(), &ProcessMetrics::new());
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            let line = text
                .lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            let value: f64 = line[name.len() + 1..].parse().expect("a number");
            assert!(value >= 0.0, "{line}");
        }
    }
}
