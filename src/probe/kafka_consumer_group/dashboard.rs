//! The `kafka_consumer_group` rows of the per-budget Grafana dashboard (`lagbudget
//! dashboards`): the group (members, data loss, record timestamp type) and, for probes with
//! `partition_detail: true`, single partitions' lag and backlog.

use serde_json::{Value, json};

use super::MAX_PARTITION_SERIES;
use crate::generate::grafana::{
    Row, Tap, mappings, range_target, state_timeline, table, table_legend, table_target, timeseries,
};
use crate::metrics::{
    KAFKA_DATA_LOSS, KAFKA_GROUP_MEMBERS, KAFKA_TIMESTAMP_TYPE, PARTITION_BACKLOG, PARTITION_LAG,
};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![
        Row::collapsed("Kafka consumer group (kafka_consumer_group)").line(
            7,
            vec![
                (8, group_members(probes)),
                (8, data_loss(probes)),
                (8, timestamp_type(probes)),
            ],
        ),
        Row::collapsed("Kafka partitions (kafka_consumer_group with partition_detail: true)").line(
            9,
            vec![(12, partition_lag(probes)), (12, partition_backlog(probes))],
        ),
    ]
}

fn group_members(probes: &str) -> Value {
    timeseries(
        "Consumer group members",
        "Members of each `kafka_consumer_group` probe's group (`lagbudget_kafka_group_members`). \
         A group with no members while it is behind is not consuming. Not reported where the \
         cluster does not answer DescribeGroups, and empty for other probe kinds.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({KAFKA_GROUP_MEMBERS}{{{probes}}})"),
            "{{probe}}",
        )],
        "none",
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["decimals"] = json!(0);
        p["fieldConfig"]["defaults"]["min"] = json!(0);
        p["fieldConfig"]["defaults"]["noValue"] = json!("not reported");
    })
}

fn data_loss(probes: &str) -> Value {
    state_timeline(
        "Data loss",
        "Whether a group's committed offset is below the log start: records were deleted by \
         retention before the group read them (`lagbudget_kafka_data_loss`). Empty for other \
         probe kinds.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({KAFKA_DATA_LOSS}{{{probes}}})"),
            "{{probe}}",
        )],
        mappings(&[
            (0.0, "no loss", "green"),
            (1.0, "records deleted unread", "red"),
        ]),
    )
}

fn timestamp_type(probes: &str) -> Value {
    table(
        "Record timestamp type",
        "Which record timestamp each Kafka probe measured lag from \
         (`lagbudget_kafka_timestamp_type`): CreateTime (set by the producer) or LogAppendTime \
         (set by the broker).",
        vec![table_target(
            "A",
            &format!("max by (probe, timestamp_type) ({KAFKA_TIMESTAMP_TYPE}{{{probes}}})"),
        )],
        &[("probe", "Probe"), ("timestamp_type", "Timestamp type")],
        &["Time", "Value"],
    )
}

fn partition_lag(probes: &str) -> Value {
    timeseries(
        "Partition lag",
        &format!(
            "Lag of single partitions (`lagbudget_partition_lag_seconds`), only for Kafka \
             probes with `partition_detail: true`: at most the {MAX_PARTITION_SERIES} most \
             lagging partitions per probe, and which ones can change between runs."
        ),
        vec![range_target(
            "A",
            &format!("max by (probe, topic, partition) ({PARTITION_LAG}{{{probes}}})"),
            "{{probe}} {{topic}}/{{partition}}",
        )],
        "s",
    )
    .tap(|p| p["options"]["legend"] = table_legend())
}

fn partition_backlog(probes: &str) -> Value {
    timeseries(
        "Partition backlog",
        "Messages behind in single partitions (`lagbudget_partition_backlog_messages`), only \
         for Kafka probes with `partition_detail: true` (the same partitions as the lag panel).",
        vec![range_target(
            "A",
            &format!("max by (probe, topic, partition) ({PARTITION_BACKLOG}{{{probes}}})"),
            "{{probe}} {{topic}}/{{partition}}",
        )],
        "short",
    )
    .tap(|p| p["options"]["legend"] = table_legend())
}
