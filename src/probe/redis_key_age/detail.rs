//! What only a `redis_key_age` probe knows beyond lag: the keys it read and missed, the
//! entities it knows to trail their source, the passes over the keyspace; the metric families
//! it exports and the `cache` object the API shows for it. Shown, like lag, only while the
//! probe is fresh.

use serde::Serialize;

use crate::families::{Exposition, FamilyBuilder, Labels, counter, gauge};

pub const CACHE_MISSES: &str = "lagbudget_cache_misses_total";
pub const CACHE_SAMPLED_KEYS: &str = "lagbudget_cache_sampled_keys_total";
pub const CACHE_STALE_KEYS: &str = "lagbudget_cache_stale_keys";
pub const CACHE_SCAN_PASSES: &str = "lagbudget_cache_scan_passes_total";

/// The stalest entities a detail lists, at most.
pub const MAX_STALEST: usize = 10;

/// A cache probe's reads and what it knows about its keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheDetail {
    /// The probe reads entity caches by `pattern` (else one `key`).
    pub pattern: bool,
    /// Keys the last run read, and how many of them were missing.
    pub keys_read: u64,
    pub keys_missing: u64,
    /// Entities the last run found trailing their source; `None` with `mode: since_build`,
    /// which compares nothing.
    pub stale_keys: Option<u64>,
    /// The stalest of them, most stale first (at most `MAX_STALEST`).
    pub stalest: Vec<StaleKey>,
    /// Since the probe's runner started: keys read, keys missing, and (pattern only) passes
    /// over the whole keyspace completed.
    pub sampled_keys_total: u64,
    pub misses_total: u64,
    pub scan_passes_total: Option<u64>,
    /// Keys `SCAN` returned so far in the pass under way (pattern only).
    pub pass_keys_scanned: Option<u64>,
}

/// One entity cache that trails its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StaleKey {
    pub key: String,
    pub lag_seconds: f64,
}

impl CacheDetail {
    /// The `cache` object of the probe in the API.
    pub fn status(&self) -> CacheStatus {
        CacheStatus {
            shape: if self.pattern { "pattern" } else { "key" },
            keys_read: self.keys_read,
            keys_missing: self.keys_missing,
            stale_keys: self.stale_keys,
            stalest: self.stalest.clone(),
            sampled_keys_total: self.sampled_keys_total,
            misses_total: self.misses_total,
            scan_passes_total: self.scan_passes_total,
            pass_keys_scanned: self.pass_keys_scanned,
        }
    }
}

/// The `cache` object of a `redis_key_age` probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// `key` or `pattern`.
    pub shape: &'static str,
    pub keys_read: u64,
    pub keys_missing: u64,
    pub stale_keys: Option<u64>,
    pub stalest: Vec<StaleKey>,
    pub sampled_keys_total: u64,
    pub misses_total: u64,
    pub scan_passes_total: Option<u64>,
    pub pass_keys_scanned: Option<u64>,
}

/// The families only `redis_key_age` probes fill, from fresh probes' details.
pub struct Families {
    misses: FamilyBuilder,
    sampled: FamilyBuilder,
    stale: FamilyBuilder,
    passes: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            misses: counter(
                CACHE_MISSES,
                "Cache keys a redis_key_age probe found missing (a miss, never staleness), since \
                 its runner started.",
            ),
            sampled: counter(
                CACHE_SAMPLED_KEYS,
                "Cache keys a redis_key_age probe read, missing ones included, since its runner \
                 started.",
            ),
            stale: gauge(
                CACHE_STALE_KEYS,
                "Cache entries the last run found trailing their source (sampled and tracked \
                 ones; absent with mode since_build).",
            ),
            passes: counter(
                CACHE_SCAN_PASSES,
                "Passes of a redis_key_age pattern probe's SCAN over the whole keyspace \
                 completed, since its runner started.",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &CacheDetail) {
        self.misses.push(labels, detail.misses_total as f64);
        self.sampled.push(labels, detail.sampled_keys_total as f64);
        if let Some(stale) = detail.stale_keys {
            self.stale.push(labels, stale as f64);
        }
        if let Some(passes) = detail.scan_passes_total {
            self.passes.push(labels, passes as f64);
        }
    }

    pub fn finish(self, out: &mut Exposition) {
        for family in [self.misses, self.sampled, self.stale, self.passes] {
            family.finish(out);
        }
    }
}
