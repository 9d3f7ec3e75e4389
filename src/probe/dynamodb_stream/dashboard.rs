//! The `dynamodb_stream` row of the per-budget Grafana dashboard (`lagbudget dashboards`):
//! data loss, and the stream's shards against those behind.

use serde_json::{Value, json};

use crate::generate::grafana::{Row, Tap, mappings, range_target, state_timeline, timeseries};
use crate::metrics::{STREAM_DATA_LOSS, STREAM_SHARDS, STREAM_SHARDS_BEHIND};

/// The kind's row, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![
        Row::collapsed("DynamoDB stream consumer (dynamodb_stream)")
            .line(7, vec![(12, data_loss(probes)), (12, shards(probes))]),
    ]
}

fn data_loss(probes: &str) -> Value {
    state_timeline(
        "Stream data loss",
        "Whether a consumer's checkpoint was trimmed, or a shard expired before the consumer \
         finished it: stream records were deleted (after 24 hours) unread \
         (`lagbudget_dynamodb_stream_data_loss`). Empty for other probe kinds.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({STREAM_DATA_LOSS}{{{probes}}})"),
            "{{probe}}",
        )],
        mappings(&[
            (0.0, "no loss", "green"),
            (1.0, "records deleted unread", "red"),
        ]),
    )
}

fn shards(probes: &str) -> Value {
    timeseries(
        "Stream shards behind",
        "Shards of each `dynamodb_stream` probe's stream with a record after the consumer's \
         checkpoint (`lagbudget_dynamodb_stream_shards_behind`), against the shards the stream \
         lists (`lagbudget_dynamodb_stream_shards`). Streams tells no record counts, so there \
         is no backlog. Empty for other probe kinds.",
        vec![
            range_target(
                "A",
                &format!("max by (probe) ({STREAM_SHARDS_BEHIND}{{{probes}}})"),
                "{{probe}} behind",
            ),
            range_target(
                "B",
                &format!("max by (probe) ({STREAM_SHARDS}{{{probes}}})"),
                "{{probe}} shards",
            ),
        ],
        "none",
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["decimals"] = json!(0);
        p["fieldConfig"]["defaults"]["min"] = json!(0);
    })
}
