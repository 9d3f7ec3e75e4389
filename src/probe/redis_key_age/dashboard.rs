//! The `redis_key_age` row of the per-budget Grafana dashboard (`lagbudget dashboards`): how
//! many cache entries trail their source, the share of keys read that were missing, the keys
//! read per second and, for patterns, the passes over the keyspace.

use serde_json::{Value, json};

use crate::generate::grafana::{Row, Tap, range_target, timeseries};
use crate::metrics::{CACHE_MISSES, CACHE_SAMPLED_KEYS, CACHE_SCAN_PASSES, CACHE_STALE_KEYS};

/// The kind's rows, collapsed; `probes` are the label matchers of the probes the dashboard
/// shows.
pub fn rows(probes: &str) -> Vec<Row> {
    vec![Row::collapsed("Redis caches (redis_key_age)").line(
        7,
        vec![
            (6, stale_keys(probes)),
            (6, miss_ratio(probes)),
            (6, keys_read(probes)),
            (6, scan_passes(probes)),
        ],
    )]
}

fn stale_keys(probes: &str) -> Value {
    timeseries(
        "Stale cache entries",
        "Cache entries the last run of each `redis_key_age` probe found trailing their source \
         (`lagbudget_cache_stale_keys`): for a pattern, the entities of its sample plus those \
         found stale before and re-checked every run until refreshed. Entities not yet scanned \
         in the pass under way are not known. Absent with `mode: since_build`.",
        vec![range_target(
            "A",
            &format!("max by (probe) ({CACHE_STALE_KEYS}{{{probes}}})"),
            "{{probe}}",
        )],
        "none",
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["decimals"] = json!(0);
        p["fieldConfig"]["defaults"]["min"] = json!(0);
    })
}

fn miss_ratio(probes: &str) -> Value {
    timeseries(
        "Cache miss ratio",
        "Share of the keys each `redis_key_age` probe read that were missing \
         (`lagbudget_cache_misses_total` ÷ `lagbudget_cache_sampled_keys_total`): expired or \
         evicted entries, or keys deleted between SCAN and the read. A miss is never counted \
         as staleness; a missing `key` makes the probe's run fail (`no_data`).",
        vec![range_target(
            "A",
            &format!(
                "max by (probe) (rate({CACHE_MISSES}{{{probes}}}[$__rate_interval])) \
                 / max by (probe) (rate({CACHE_SAMPLED_KEYS}{{{probes}}}[$__rate_interval]))"
            ),
            "{{probe}}",
        )],
        "percentunit",
    )
}

fn keys_read(probes: &str) -> Value {
    timeseries(
        "Cache keys read",
        "Keys each `redis_key_age` probe reads per second \
         (`lagbudget_cache_sampled_keys_total`): 1 per run for a `key`, the SCAN sample plus \
         the tracked stale entities for a `pattern`. What the probe costs the cache.",
        vec![range_target(
            "A",
            &format!("max by (probe) (rate({CACHE_SAMPLED_KEYS}{{{probes}}}[$__rate_interval]))"),
            "{{probe}}",
        )],
        "reqps",
    )
}

fn scan_passes(probes: &str) -> Value {
    timeseries(
        "Keyspace passes per hour",
        "Complete SCAN passes over the keyspace per hour of each `redis_key_age` pattern probe \
         (`lagbudget_cache_scan_passes_total`). A stale entity is found at the latest one pass \
         after it went stale; a pass takes about keys ÷ sample runs.",
        vec![range_target(
            "A",
            &format!("max by (probe) (increase({CACHE_SCAN_PASSES}{{{probes}}}[1h]))"),
            "{{probe}}",
        )],
        "none",
    )
}
