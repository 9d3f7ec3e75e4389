//! The `canary` row of the per-budget Grafana dashboard (`lagbudget dashboards`): how long
//! markers take to become visible at each view.

use serde_json::Value;

use crate::generate::grafana::{Row, range_target, timeseries};
use crate::metrics::CANARY_VISIBILITY;

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![Row::collapsed("End-to-end canaries (canary)").line(7, vec![(24, visibility(probes))])]
}

fn visibility(probes: &str) -> Value {
    timeseries(
        "Time to visible (p50, p99)",
        "How long canary markers took from being written to being first seen at each view \
         (`lagbudget_canary_visibility_seconds`), an upper bound within one read interval.",
        vec![
            range_target(
                "A",
                &format!(
                    "histogram_quantile(0.5, sum by (probe, replica, le) \
                     (rate({CANARY_VISIBILITY}_bucket{{{probes}}}[$__rate_interval])))"
                ),
                "p50 {{probe}} {{replica}}",
            ),
            range_target(
                "B",
                &format!(
                    "histogram_quantile(0.99, sum by (probe, replica, le) \
                     (rate({CANARY_VISIBILITY}_bucket{{{probes}}}[$__rate_interval])))"
                ),
                "p99 {{probe}} {{replica}}",
            ),
        ],
        "s",
    )
}
