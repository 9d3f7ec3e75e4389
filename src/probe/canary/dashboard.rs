//! The `canary` row of the per-budget Grafana dashboard (`lagbudget dashboards`): how long
//! markers take to become visible at each view, and how often a view's reads went back in time.
//! Read-your-writes misses of canaries are in the product-wide read-your-writes panel, with
//! those of the replica kinds (the same counters).

use serde_json::{Value, json};

use crate::generate::grafana::{Row, heatmap, heatmap_target, range_target, timeseries};
use crate::metrics::{
    CANARY_VISIBILITY, MONOTONIC_READ_VIOLATIONS, MONOTONIC_READS, MONOTONIC_VIOLATION_BUDGET,
};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![
        Row::collapsed("End-to-end canaries (canary)")
            .line(
                8,
                vec![
                    (12, visibility(probes)),
                    (12, visibility_distribution(probes)),
                ],
            )
            .line(
                8,
                vec![
                    (12, monotonic_share(probes)),
                    (12, monotonic_violations(probes)),
                ],
            ),
    ]
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

fn visibility_distribution(probes: &str) -> Value {
    heatmap(
        "Time to visible, distribution",
        "How many canary markers became visible within each time-to-visible bucket \
         (`lagbudget_canary_visibility_seconds`), over every view of the probes shown: a \
         second band far above the first is a path that is sometimes slow. Pick one probe to \
         see one canary's views.",
        vec![heatmap_target(
            "A",
            &format!(
                "sum by (le) \
                 (increase({CANARY_VISIBILITY}_bucket{{{probes}}}[$__rate_interval]))"
            ),
        )],
        "s",
    )
}

fn monotonic_share(probes: &str) -> Value {
    let mut panel = timeseries(
        "Monotonic reads that went back, share per view",
        "Share of the reads through each view's route (canaries with `monotonic`) that showed \
         an older marker than one already seen through it \
         (`lagbudget_monotonic_read_violations_total` ÷ `lagbudget_monotonic_reads_total`): \
         how often a user refreshing that view sees a value and then an older one. Dashed: \
         the view's `max_monotonic_violations`, which ConsistencyMonotonicReadsViolated \
         holds the share of the last hour against.",
        vec![
            range_target(
                "A",
                &format!(
                    "sum by (probe, replica) \
                     (rate({MONOTONIC_READ_VIOLATIONS}{{{probes}}}[$__rate_interval])) \
                     / sum by (probe, replica) \
                     (rate({MONOTONIC_READS}{{{probes}}}[$__rate_interval]))"
                ),
                "{{probe}} {{replica}}",
            ),
            range_target(
                "B",
                &format!(
                    "max by (probe, replica) ({MONOTONIC_VIOLATION_BUDGET}{{{probes}}})"
                ),
                "limit {{probe}} {{replica}}",
            ),
        ],
        "percentunit",
    );
    // The limits as red dashed lines.
    panel["fieldConfig"]["overrides"] = json!([{
        "matcher": { "id": "byRegexp", "options": "^limit " },
        "properties": [
            { "id": "custom.lineStyle", "value": { "dash": [10, 10], "fill": "dash" } },
            { "id": "color", "value": { "fixedColor": "red", "mode": "fixed" } },
        ],
    }]);
    panel
}

fn monotonic_violations(probes: &str) -> Value {
    timeseries(
        "Monotonic-read violations per view",
        "Reads through each view's route that showed an older marker than one already seen \
         through it, per interval (`lagbudget_monotonic_read_violations_total`); 0 for a \
         route served by one replica.",
        vec![range_target(
            "A",
            &format!(
                "sum by (probe, replica) \
                 (increase({MONOTONIC_READ_VIOLATIONS}{{{probes}}}[$__rate_interval]))"
            ),
            "{{probe}} {{replica}}",
        )],
        "none",
    )
}
