//! What only a Kafka consumer group probe knows beyond lag and backlog (members, data loss,
//! timestamp type, per-partition lag), the metric families it exports and the `kafka` object the
//! API shows for it. Shown, like lag, only while the probe is fresh.

use serde::Serialize;

use crate::families::{Exposition, FamilyBuilder, Labels, bool_value, gauge, with_label};

pub const KAFKA_GROUP_MEMBERS: &str = "lagbudget_kafka_group_members";
pub const KAFKA_DATA_LOSS: &str = "lagbudget_kafka_data_loss";
pub const KAFKA_TIMESTAMP_TYPE: &str = "lagbudget_kafka_timestamp_type";
pub const PARTITION_LAG: &str = "lagbudget_partition_lag_seconds";
pub const PARTITION_BACKLOG: &str = "lagbudget_partition_backlog_messages";

/// Consumer-group facts beyond lag and backlog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaDetail {
    /// Members of the group, when the cluster answers DescribeGroups.
    pub members: Option<usize>,
    /// A committed offset was below the log start: records were deleted unread.
    pub data_loss: bool,
    /// Whether the lag came from LogAppendTime (broker) or CreateTime (producer) timestamps;
    /// `None` when no record had to be read.
    pub log_append_time: Option<bool>,
    pub partitions_total: usize,
    /// The most lagging partitions, when `partition_detail` is on (capped).
    pub partitions: Vec<PartitionLag>,
}

/// One partition's lag and backlog.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag_seconds: f64,
    pub backlog: i64,
}

impl KafkaDetail {
    fn timestamp_type(&self) -> Option<&'static str> {
        self.log_append_time
            .map(|l| if l { "LogAppendTime" } else { "CreateTime" })
    }

    /// The `kafka` object of the probe in the API.
    pub fn status(&self) -> KafkaStatus {
        KafkaStatus {
            members: self.members,
            data_loss: self.data_loss,
            timestamp_type: self.timestamp_type(),
            partitions_total: self.partitions_total,
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionStatus {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    lag_seconds: p.lag_seconds,
                    backlog_messages: p.backlog,
                })
                .collect(),
        }
    }
}

/// The `kafka` object of a Kafka probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaStatus {
    pub members: Option<usize>,
    pub data_loss: bool,
    pub timestamp_type: Option<&'static str>,
    pub partitions_total: usize,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub lag_seconds: f64,
    pub backlog_messages: i64,
}

/// The families only `kafka_consumer_group` probes fill, from fresh probes' details.
pub struct Families {
    members: FamilyBuilder,
    data_loss: FamilyBuilder,
    timestamp_type: FamilyBuilder,
    partition_lag: FamilyBuilder,
    partition_backlog: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            members: gauge(
                KAFKA_GROUP_MEMBERS,
                "Members of the consumer group (absent when the cluster does not say).",
            ),
            data_loss: gauge(
                KAFKA_DATA_LOSS,
                "1 when a committed offset is below the log start: records were deleted unread.",
            ),
            timestamp_type: gauge(
                KAFKA_TIMESTAMP_TYPE,
                "1 for the record timestamp type lag was measured from (CreateTime or LogAppendTime).",
            ),
            partition_lag: gauge(
                PARTITION_LAG,
                "Lag of one partition (opt-in with partition_detail, most lagging partitions only).",
            ),
            partition_backlog: gauge(
                PARTITION_BACKLOG,
                "Messages behind in one partition (opt-in with partition_detail).",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &KafkaDetail) {
        if let Some(members) = detail.members {
            self.members.push(labels, members as f64);
        }
        self.data_loss.push(labels, bool_value(detail.data_loss));
        if let Some(kind) = detail.timestamp_type() {
            self.timestamp_type
                .push(&with_label(labels, ("timestamp_type", kind)), 1.0);
        }
        for p in &detail.partitions {
            let partition = p.partition.to_string();
            let mut series = with_label(labels, ("topic", p.topic.as_str()));
            series.push(("partition", partition.as_str()));
            self.partition_lag.push(&series, p.lag_seconds);
            self.partition_backlog.push(&series, p.backlog as f64);
        }
    }

    pub fn finish(self, out: &mut Exposition) {
        for family in [
            self.members,
            self.data_loss,
            self.timestamp_type,
            self.partition_lag,
            self.partition_backlog,
        ] {
            family.finish(out);
        }
    }
}
