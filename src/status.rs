//! The JSON views of `/api/v1/budgets`, built from a `Snapshot` of the state: freshness, stall,
//! used ratios and the budget's state all come from its one evaluation at the answer's `now`.
//! Unknown values are `null`, never 0: a product page must be able to tell "caught up" from
//! "cannot see".

use serde::Serialize;

use crate::evaluate::{BudgetState, ProbeView};
use crate::probe::{DetailStatus, ErrorReason};
use crate::state::{BudgetSnapshot, ProbeEntry};

#[derive(Debug, Clone, Serialize)]
pub struct BudgetList {
    pub budgets: Vec<BudgetStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub severity: String,
    pub runbook_url: Option<String>,
    pub state: BudgetState,
    /// `state` is `ok` or `warn`: what a product page wants to know.
    pub within_budget: bool,
    /// RFC 3339 UTC time the current state began.
    pub since: String,
    /// The largest lag among the probes; `null` while any probe is stale.
    pub lag_seconds: Option<f64>,
    /// The largest last known lag, even if stale; `null` if nothing was ever measured.
    pub last_lag_seconds: Option<f64>,
    /// The most recent successful run of any probe.
    pub last_success: Option<String>,
    pub max_lag_seconds: Option<f64>,
    pub max_backlog: Option<u64>,
    /// The largest used ratio among fresh probes.
    pub used_ratio: Option<f64>,
    pub probes: Vec<ProbeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    pub name: String,
    /// The standby or replica this entry measures (replica probes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub kind: &'static str,
    pub source: String,
    pub up: bool,
    pub stale: bool,
    pub stalled: bool,
    /// Runs since this probe was loaded (a reload that changes the probe starts again at 0).
    pub runs: u64,
    /// Lag of the last success while fresh; `null` while stale or before the first success.
    pub lag_seconds: Option<f64>,
    pub last_lag_seconds: Option<f64>,
    pub budget_seconds: Option<f64>,
    pub used_ratio: Option<f64>,
    pub backlog: Option<BacklogStatus>,
    pub last_run: Option<String>,
    pub last_success: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub interval_seconds: f64,
    pub error: Option<ErrorStatus>,
    pub detail: Option<String>,
    /// The kind's own object, for kinds that show one, while the probe is fresh: `"kafka":
    /// {…}` for `kafka_consumer_group` (see `probe::DetailStatus`).
    #[serde(flatten)]
    pub kind_detail: Option<DetailStatus>,
    /// Source clock − daemon clock, where the probe compares them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<f64>,
    /// Read-your-writes checks and misses so far (probes with `ryw_delay` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_your_writes: Option<ReadYourWritesStatus>,
    /// Monotonic-read checks so far (canaries with `monotonic` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monotonic_reads: Option<MonotonicReadsStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadYourWritesStatus {
    pub checks: u64,
    pub misses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonotonicReadsStatus {
    pub reads: u64,
    pub violations: u64,
    /// The share of reads that may be violations (`max_monotonic_violations`), if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_violations_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacklogStatus {
    pub unit: &'static str,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    pub reason: ErrorReason,
    pub message: String,
}

impl BudgetStatus {
    pub fn new(budget: &BudgetSnapshot) -> Self {
        let probes: Vec<ProbeStatus> = budget
            .probes()
            .map(|(probe, view)| ProbeStatus::new(probe, view))
            .collect();
        let any_stale = probes.iter().any(|p| p.stale);
        let lag_seconds = if any_stale {
            None
        } else {
            probes.iter().filter_map(|p| p.lag_seconds).reduce(f64::max)
        };
        let spec = &budget.spec;
        let last_success_at = budget
            .probes
            .iter()
            .filter_map(|p| p.history.last_success_at.map(|at| at.unix))
            .reduce(f64::max);
        Self {
            name: spec.name.clone(),
            description: spec.description.clone(),
            owner: spec.owner.clone(),
            severity: spec.severity.clone(),
            runbook_url: spec.runbook_url.clone(),
            state: budget.tracker.state,
            within_budget: matches!(budget.tracker.state, BudgetState::Ok | BudgetState::Warn),
            since: rfc3339(budget.tracker.since.unix),
            lag_seconds,
            last_lag_seconds: probes
                .iter()
                .filter_map(|p| p.last_lag_seconds)
                .reduce(f64::max),
            last_success: last_success_at.map(rfc3339),
            max_lag_seconds: spec.max_lag.map(|d| d.as_secs_f64()),
            max_backlog: spec.max_backlog,
            used_ratio: budget.tracker.max_used_ratio,
            probes,
        }
    }
}

impl ProbeStatus {
    /// `probe` as `view` (its evaluation at the answer's `now`) shows it.
    pub fn new(probe: &ProbeEntry, view: &ProbeView) -> Self {
        let history = &probe.history;
        let fresh = probe.fresh_sample(view);
        let last = history.last_sample.as_deref();
        Self {
            name: probe.spec.name.clone(),
            replica: probe.spec.replica.clone(),
            kind: probe.spec.kind_key(),
            source: probe.spec.source_name().to_owned(),
            up: history.is_up(),
            stale: view.stale,
            stalled: view.stalled,
            runs: history.runs,
            lag_seconds: fresh.and_then(|s| s.lag_seconds),
            last_lag_seconds: last.and_then(|s| s.lag_seconds),
            budget_seconds: probe.spec.max_lag.map(|d| d.as_secs_f64()),
            used_ratio: view.used_ratio,
            backlog: fresh.and_then(|s| s.backlog).map(|b| BacklogStatus {
                unit: b.unit.as_str(),
                value: b.value,
            }),
            last_run: history.last_run_at.map(|at| rfc3339(at.unix)),
            last_success: history.last_success_at.map(|at| rfc3339(at.unix)),
            last_duration_seconds: history.last_duration,
            interval_seconds: probe.interval_secs(),
            error: history.last_error.as_ref().map(|e| ErrorStatus {
                reason: e.reason,
                message: e.message.clone(),
            }),
            detail: last.and_then(|s| s.detail.clone()),
            kind_detail: probe.fresh_detail(view).and_then(|detail| detail.status()),
            clock_skew_seconds: fresh.and_then(|s| s.clock_skew_seconds),
            read_your_writes: (history.read_your_writes_checks > 0).then_some(
                ReadYourWritesStatus {
                    checks: history.read_your_writes_checks,
                    misses: history.read_your_writes_misses,
                },
            ),
            monotonic_reads: probe
                .spec
                .checks_monotonic_reads()
                .then_some(MonotonicReadsStatus {
                    reads: history.monotonic_reads,
                    violations: history.monotonic_read_violations,
                    max_violations_ratio: probe.spec.max_monotonic_violations,
                }),
        }
    }
}

/// Formats unix seconds as RFC 3339 UTC with milliseconds (`2026-11-21T23:53:29.123Z`).
pub fn rfc3339(unix_seconds: f64) -> String {
    let total_ms = (unix_seconds * 1000.0).round() as i64;
    let ms = total_ms.rem_euclid(1000);
    let secs = total_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::kafka_consumer_group::detail::{KafkaDetail, PartitionLag};
    use crate::probe::{Detail, Reading, Sample};
    use crate::state::DaemonState;
    use crate::testing::{MIXED, at, config};
    use std::sync::Arc;

    /// The `kafka` object kept its exact JSON when the detail left the sample: same keys, same
    /// place (after `detail`), same values; absent once the probe is stale.
    #[test]
    fn a_kafka_probe_shows_its_kafka_object_while_fresh() {
        let mut next = 0;
        let (mut state, diff) = DaemonState::new(config(MIXED), at(0.0), &mut next);
        let (probe, task) = diff.start[0].clone();
        assert_eq!(probe.name, "group");
        let detail = KafkaDetail {
            members: Some(2),
            data_loss: false,
            log_append_time: Some(false),
            partitions_total: 3,
            partitions: vec![PartitionLag {
                topic: "orders".into(),
                partition: 1,
                lag_seconds: 4.5,
                backlog: 12,
            }],
        };
        let reading = Reading {
            sample: Sample {
                lag_seconds: Some(4.5),
                detail: Some("1 of 3 partitions behind, 12 messages".into()),
                ..Sample::default()
            },
            detail: Some(Detail::KafkaConsumerGroup(Arc::new(detail))),
        };
        let key = crate::state::probe_key(&probe);
        state.record(&key, task, at(1.0), 0.25, Ok(reading));
        let status = |now| {
            let budget = &state.copy(now, None).evaluate().budgets[0];
            ProbeStatus::new(&budget.probes[0], &budget.views[0])
        };
        let json = serde_json::to_string(&status(at(2.0))).expect("json");
        assert_eq!(
            json,
            r#"{"name":"group","kind":"kafka_consumer_group","source":"events","up":true,"stale":false,"stalled":false,"runs":1,"lag_seconds":4.5,"last_lag_seconds":4.5,"budget_seconds":60.0,"used_ratio":0.075,"backlog":null,"last_run":"1970-01-01T00:00:01.000Z","last_success":"1970-01-01T00:00:01.000Z","last_duration_seconds":0.25,"interval_seconds":10.0,"error":null,"detail":"1 of 3 partitions behind, 12 messages","kafka":{"members":2,"data_loss":false,"timestamp_type":"CreateTime","partitions_total":3,"partitions":[{"topic":"orders","partition":1,"lag_seconds":4.5,"backlog_messages":12}]}}"#
        );
        let stale = serde_json::to_value(status(at(31.5))).expect("json");
        assert_eq!(stale["stale"], true);
        assert!(stale.get("kafka").is_none(), "{stale}");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let cases = [
            (0.0, "1970-01-01T00:00:00.000Z"),
            (951_782_400.5, "2000-02-29T00:00:00.500Z"),
            (1_795_305_209.123, "2026-11-21T23:53:29.123Z"),
            (-1.0, "1969-12-31T23:59:59.000Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(rfc3339(secs), text);
        }
    }
}
