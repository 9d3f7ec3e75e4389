//! The `mysql_replica` row of the per-budget Grafana dashboard (`lagbudget dashboards`):
//! whether each replica's replication threads run, and the replica's own
//! Seconds_Behind_Source as a secondary signal beside the heartbeat lag.

use serde_json::Value;

use crate::generate::grafana::{Row, mappings, range_target, state_timeline, timeseries};
use crate::metrics::{MYSQL_REPLICATION_RUNNING, MYSQL_SECONDS_BEHIND_SOURCE};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![Row::collapsed("MySQL replicas (mysql_replica)").line(
        7,
        vec![
            (12, replication_threads(probes)),
            (12, seconds_behind_source(probes)),
        ],
    )]
}

fn replication_threads(probes: &str) -> Value {
    state_timeline(
        "MySQL replication threads",
        "Whether each `mysql_replica` replica's IO and SQL threads run \
         (`lagbudget_mysql_replication_running`). A stopped thread makes Seconds_Behind_Master \
         NULL; lagbudget then reports it absent, never 0, while the heartbeat lag keeps \
         measuring.",
        vec![range_target(
            "A",
            &format!("max by (probe, replica, thread) ({MYSQL_REPLICATION_RUNNING}{{{probes}}})"),
            "{{probe}} {{replica}} {{thread}}",
        )],
        mappings(&[(0.0, "stopped", "red"), (1.0, "running", "green")]),
    )
}

fn seconds_behind_source(probes: &str) -> Value {
    timeseries(
        "Seconds_Behind_Source (secondary signal)",
        "The replica's own Seconds_Behind_Master/_Source \
         (`lagbudget_mysql_seconds_behind_source`), only while both replication threads run. \
         It reads 0 while the IO thread is behind and is not lag as lagbudget defines it: \
         compare with the heartbeat lag above.",
        vec![range_target(
            "A",
            &format!("max by (probe, replica) ({MYSQL_SECONDS_BEHIND_SOURCE}{{{probes}}})"),
            "{{probe}} {{replica}}",
        )],
        "s",
    )
}
