//! The `postgres_replica` row of the per-budget Grafana dashboard (`lagbudget dashboards`):
//! how long each standby's WAL receiver has not heard from its primary. Clock skew and
//! read-your-writes, which this kind reports too, are product-wide and have a row of their
//! own in `generate/dashboards.rs`.

use crate::generate::grafana::{Row, range_target, timeseries};
use crate::metrics::RECEIVER_LAST_MESSAGE_AGE;

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![
        Row::collapsed("PostgreSQL standbys (postgres_replica)")
            .line(7, vec![(12, receiver_silence(probes))]),
    ]
}

fn receiver_silence(probes: &str) -> serde_json::Value {
    timeseries(
        "WAL receiver silence",
        "Seconds since each standby's WAL receiver last heard from its primary, on the \
         standby's own clock (`lagbudget_replica_receiver_last_message_age_seconds`). A \
         primary sends keepalives when idle, so a growing line means a stopped or cut-off \
         receiver even while the standby looks caught up. Only `postgres_replica` probes \
         report it.",
        vec![range_target(
            "A",
            &format!("max by (probe, replica) ({RECEIVER_LAST_MESSAGE_AGE}{{{probes}}})"),
            "{{probe}} {{replica}}",
        )],
        "s",
    )
}
