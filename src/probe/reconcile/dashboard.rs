//! The `reconcile` row of the per-budget Grafana dashboard (`lagbudget dashboards`): the
//! mismatches by kind, the sweep's progress, and the load each side carries.

use serde_json::Value;

use crate::generate::grafana::{Row, range_target, timeseries};
use crate::metrics::{
    RECONCILE_LAST_SWEEP, RECONCILE_MAX_MISMATCHES, RECONCILE_MISMATCHES, RECONCILE_ROWS_READ,
    RECONCILE_SWEEP_PROGRESS,
};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![
        Row::collapsed("Reconciliation (reconcile)")
            .line(
                8,
                vec![(12, mismatches(probes)), (12, sweep_progress(probes))],
            )
            .line(8, vec![(12, rows_read(probes)), (12, sweep_age(probes))]),
    ]
}

fn mismatches(probes: &str) -> Value {
    timeseries(
        "Mismatches by kind",
        "Records older than max_lag that the derived view does not show as the source has \
         them (`lagbudget_reconcile_mismatches`): missing (never arrived), stale (an older \
         version), extra (no source record: deletes not applied; a lower bound of their age). \
         The dashed line is the probe's max_mismatches.",
        vec![
            range_target(
                "A",
                &format!("max by (probe, kind) ({RECONCILE_MISMATCHES}{{{probes}}})"),
                "{{probe}} {{kind}}",
            ),
            range_target(
                "B",
                &format!("max by (probe) ({RECONCILE_MAX_MISMATCHES}{{{probes}}})"),
                "{{probe}} max_mismatches",
            ),
        ],
        "short",
    )
}

fn sweep_progress(probes: &str) -> Value {
    timeseries(
        "Sweep progress",
        "Share of the last completed sweep's rows the running sweep has covered \
         (`lagbudget_reconcile_sweep_progress_ratio`); 1 between sweeps. A sweep that never \
         reaches 1 is too slow for its cadence: raise chunk or chunks_per_run.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({RECONCILE_SWEEP_PROGRESS}{{{probes}}})"),
            "{{probe}}",
        )],
        "percentunit",
    )
}

fn rows_read(probes: &str) -> Value {
    timeseries(
        "Rows read per second, by side",
        "The load reconciliation puts on each database (`lagbudget_reconcile_rows_read_total`): \
         the recent pass every run, the sweep in chunks.",
        vec![range_target(
            "A",
            &format!(
                "sum by (probe, side) (rate({RECONCILE_ROWS_READ}{{{probes}}}[$__rate_interval]))"
            ),
            "{{probe}} {{side}}",
        )],
        "rps",
    )
}

fn sweep_age(probes: &str) -> Value {
    timeseries(
        "Time since the last completed sweep",
        "How old the sweep's verdict on records older than the window is \
         (`lagbudget_reconcile_last_sweep_timestamp_seconds`).",
        vec![range_target(
            "A",
            &format!("time() - max by (probe) ({RECONCILE_LAST_SWEEP}{{{probes}}})"),
            "{{probe}}",
        )],
        "s",
    )
}
