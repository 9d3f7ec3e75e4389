//! What only a `dynamodb_stream` probe knows beyond lag (data loss, shards), the metric
//! families it exports and the `dynamodb_stream` object the API shows for it. Shown, like lag,
//! only while the probe is fresh.

use serde::Serialize;

use crate::families::{Exposition, FamilyBuilder, Labels, bool_value, gauge};

pub const STREAM_DATA_LOSS: &str = "lagbudget_dynamodb_stream_data_loss";
pub const STREAM_SHARDS: &str = "lagbudget_dynamodb_stream_shards";
pub const STREAM_SHARDS_BEHIND: &str = "lagbudget_dynamodb_stream_shards_behind";

/// Stream facts beyond lag. There is no backlog: Streams has no record counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamDetail {
    /// A checkpoint was trimmed, or a shard expired before the consumer finished it: records
    /// were deleted unread.
    pub data_loss: bool,
    /// Shards the stream lists.
    pub shards: usize,
    /// Shards with a record after their checkpoint.
    pub shards_behind: usize,
    /// Leases at LATEST or AT_TIMESTAMP, not measured until their first checkpoint.
    pub shards_unmeasured: usize,
    /// The shard whose record set the lag, while one is behind.
    pub oldest_shard: Option<String>,
}

impl StreamDetail {
    /// The `dynamodb_stream` object of the probe in the API.
    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            data_loss: self.data_loss,
            shards: self.shards,
            shards_behind: self.shards_behind,
            shards_unmeasured: self.shards_unmeasured,
            oldest_shard: self.oldest_shard.clone(),
        }
    }
}

/// The `dynamodb_stream` object of a `dynamodb_stream` probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub data_loss: bool,
    pub shards: usize,
    pub shards_behind: usize,
    pub shards_unmeasured: usize,
    pub oldest_shard: Option<String>,
}

/// The families only `dynamodb_stream` probes fill, from fresh probes' details.
pub struct Families {
    data_loss: FamilyBuilder,
    shards: FamilyBuilder,
    shards_behind: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            data_loss: gauge(
                STREAM_DATA_LOSS,
                "1 when a checkpoint was trimmed or a shard expired unfinished: stream records \
                 were deleted unread.",
            ),
            shards: gauge(STREAM_SHARDS, "Shards the DynamoDB stream lists."),
            shards_behind: gauge(
                STREAM_SHARDS_BEHIND,
                "Shards of the DynamoDB stream with a record after the consumer's checkpoint.",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &StreamDetail) {
        self.data_loss.push(labels, bool_value(detail.data_loss));
        self.shards.push(labels, detail.shards as f64);
        self.shards_behind.push(labels, detail.shards_behind as f64);
    }

    pub fn finish(self, out: &mut Exposition) {
        for family in [self.data_loss, self.shards, self.shards_behind] {
            family.finish(out);
        }
    }
}
