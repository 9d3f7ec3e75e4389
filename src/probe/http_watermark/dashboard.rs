//! The `http_watermark` row of the per-budget Grafana dashboard (`lagbudget dashboards`): what
//! the cache headers of each HTTP view's answers say (the Age of the entry, whether it was
//! served stale) and how large the answers are. None of it is lag: the lag panels above show
//! the age of the oldest source change the view does not show.

use serde_json::Value;

use crate::generate::grafana::{Row, mappings, range_target, state_timeline, timeseries};
use crate::metrics::{HTTP_RESPONSE_AGE, HTTP_RESPONSE_BYTES, HTTP_SERVED_STALE};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![Row::collapsed("HTTP views (http_watermark)").line(
        7,
        vec![
            (8, response_age(probes)),
            (8, served_stale(probes)),
            (8, response_bytes(probes)),
        ],
    )]
}

fn response_age(probes: &str) -> Value {
    timeseries(
        "Age of the cached answer",
        "The `Age` header of each `http_watermark` probe's last answer \
         (`lagbudget_http_response_age_seconds`): how long the answer sat in caches. It dates \
         the cache entry, not the data: an entry refreshed a second ago can hold data that \
         trails its source by minutes, and an old entry can be current. The lag panels show \
         the data's lag. Absent when no cache set the header.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({HTTP_RESPONSE_AGE}{{{probes}}})"),
            "{{probe}}",
        )],
        "s",
    )
}

fn served_stale(probes: &str) -> Value {
    state_timeline(
        "Served stale",
        "Whether a cache served each `http_watermark` probe's last answer past its freshness \
         lifetime (`lagbudget_http_served_stale`: `Age` above `s-maxage` or `max-age`), as \
         stale-while-revalidate, stale-if-error or Varnish grace allow. Stale content is \
         counted in the lag, never hidden.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({HTTP_SERVED_STALE}{{{probes}}})"),
            "{{probe}}",
        )],
        mappings(&[(0.0, "fresh", "green"), (1.0, "stale", "orange")]),
    )
}

fn response_bytes(probes: &str) -> Value {
    timeseries(
        "Answer size",
        "Bytes of the body of each `http_watermark` probe's last answer \
         (`lagbudget_http_response_bytes`), against the source's `max_body`: an answer over \
         the cap fails the run (reason `decode`).",
        vec![range_target(
            "A",
            &format!("max by (probe) ({HTTP_RESPONSE_BYTES}{{{probes}}})"),
            "{{probe}}",
        )],
        "bytes",
    )
}
