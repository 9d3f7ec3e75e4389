//! `redis_key_age`: lag of a cache in Redis, as the age of the oldest source change newer than
//! the version the cache holds, asked of the source database on its own clock.
//!
//! A cache says *what* it holds (a source sequence, the source's updated-at), never how far
//! behind that is. So the probe reads the version and hands it to the shared source-side
//! comparison (`oldest_pending`): the source returns the time of its oldest change newer than
//! that version, and lag is that change's age on the database's clock. An idle source has no
//! newer change and reads 0; a cache stuck on old data reads a growing lag. Never `OBJECT
//! IDLETIME` (it counts reads, not writes) and never the key's TTL.
//!
//! Two shapes:
//! - **one key** (or hash field) for the whole cache: `GET`/`HGET`, then one query. A missing
//!   key is a miss: counted, and the run fails with `no_data`, never 0.
//! - **a pattern of entity caches**: per run one `SCAN cursor MATCH pattern COUNT sample TYPE
//!   string|hash`, the cursor kept between runs so that a large keyspace is covered over
//!   several runs without blocking Redis; one `MGET` (pipelined `HGET`s with a field) of those
//!   keys plus the entities earlier runs found stale; one query for all of them. Lag is the
//!   largest lag among the stale entities, which are re-checked every run until the source no
//!   longer reports them (refreshed) or they are gone: a stale entity, once found, keeps a
//!   growing lag until refreshed, while a fresh keyspace reads 0. Entities not scanned yet in
//!   the pass under way are unknown; a pass takes about keys ÷ sample runs.
//!
//! `mode: since_build` (one key, opt-in) reads the value as the cache's build time instead and
//! reports now − that time, which an idle source reads as lag.

pub mod config;
pub mod dashboard;
pub mod detail;
pub mod pattern;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use redis::RedisError;
use tokio::time::{Instant, timeout_at};

use super::oldest_pending::{Entity, Shape, SourceComparison, StaleEntity, parse_timestamp};
use super::redis::RedisClient;
use super::{Backlog, BacklogUnit, Detail, ErrorReason, ProbeError, Reading, Sample};
use crate::clock::unix_now;
use crate::model::{CacheKeys, KeyAgeMode, RedisKeyAge};
use detail::{CacheDetail, MAX_STALEST, StaleKey};
use pattern::KeyPattern;

pub struct RedisKeyAgeProbe {
    client: Arc<RedisClient>,
    /// The hash field holding the version, if the keys are hashes.
    field: Option<String>,
    /// The source-side comparison; `None` with `mode: since_build`.
    comparison: Option<SourceComparison>,
    keys: Keys,
    /// Keys read and keys missing since this runner started.
    sampled_total: u64,
    misses_total: u64,
}

enum Keys {
    One {
        key: String,
        /// The previous version, to count positions that go backwards.
        previous: Option<String>,
    },
    Pattern(Scan),
}

/// A pattern probe's walk over the keyspace.
struct Scan {
    glob: String,
    pattern: KeyPattern,
    sample: u64,
    /// Where the next run's `SCAN` continues; 0 starts a pass.
    cursor: u64,
    stale: StaleSet,
    ledger: PassLedger,
}

impl RedisKeyAgeProbe {
    pub fn new(
        spec: &RedisKeyAge,
        client: Arc<RedisClient>,
        comparison: Option<SourceComparison>,
    ) -> Result<Self, ProbeError> {
        let keys = match &spec.keys {
            CacheKeys::Key(key) => Keys::One {
                key: key.clone(),
                previous: None,
            },
            CacheKeys::Pattern { pattern, sample } => Keys::Pattern(Scan {
                glob: pattern.clone(),
                // Checked when the config was loaded.
                pattern: KeyPattern::new(pattern).map_err(|problem| {
                    ProbeError::new(ErrorReason::Query, format!("pattern {pattern:?} {problem}"))
                })?,
                sample: *sample,
                cursor: 0,
                stale: StaleSet::new(*sample as usize),
                ledger: PassLedger::default(),
            }),
        };
        Ok(Self {
            client,
            field: spec.field.clone(),
            comparison,
            keys,
            sampled_total: 0,
            misses_total: 0,
        })
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        let reader = Reader {
            client: &self.client,
            field: self.field.as_deref(),
        };
        let mut totals = Totals {
            sampled: &mut self.sampled_total,
            misses: &mut self.misses_total,
        };
        match &mut self.keys {
            Keys::One { key, previous } => {
                run_one(
                    &reader,
                    self.comparison.as_ref(),
                    key,
                    previous,
                    &mut totals,
                    deadline,
                )
                .await
            }
            Keys::Pattern(scan) => {
                let comparison = self.comparison.as_ref().ok_or_else(|| {
                    ProbeError::new(ErrorReason::Query, "a pattern needs oldest_pending")
                })?;
                run_pattern(&reader, comparison, scan, &mut totals, deadline).await
            }
        }
    }

    /// Checks what runs will ask without measuring: the key's type (and that it exists) or one
    /// `SCAN` batch and a read of its first key, then the source's acceptance of the query.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let reader = Reader {
            client: &self.client,
            field: self.field.as_deref(),
        };
        let (mut answer, shape) = match &self.keys {
            Keys::One { key, .. } => {
                let answer = check_one(&reader, key, self.comparison.is_none(), deadline).await?;
                (answer, Shape::OneVersion)
            }
            Keys::Pattern(scan) => {
                let (_, found) = reader.scan(&scan.glob, 0, scan.sample, deadline).await?;
                if let Some(first) = found.first() {
                    reader.read(std::slice::from_ref(first), deadline).await?;
                }
                let answer = format!(
                    "SCAN answers, {} {} keys match {:?} in its first batch",
                    found.len(),
                    reader.key_type(),
                    scan.glob
                );
                (answer, Shape::Entities)
            }
        };
        if let Some(comparison) = &self.comparison {
            comparison.check(shape, deadline).await?;
            answer.push_str("; oldest_pending accepted");
        }
        Ok(answer)
    }
}

/// The running totals a run adds to once its reads completed.
struct Totals<'a> {
    sampled: &'a mut u64,
    misses: &'a mut u64,
}

/// Reads from the probe's Redis source, every call bounded by the run's deadline.
struct Reader<'a> {
    client: &'a RedisClient,
    field: Option<&'a str>,
}

impl Reader<'_> {
    /// The type of key the probe reads: a hash with `field`, else a string.
    fn key_type(&self) -> &'static str {
        if self.field.is_some() { "hash" } else { "string" }
    }

    /// One call, by `deadline`. A failed or late call drops the shared connection (unless the
    /// server merely refused the command), so that the next run reconnects.
    async fn call<T>(
        &self,
        what: &str,
        deadline: Instant,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, ProbeError> {
        match timeout_at(deadline, call).await {
            Ok(Err(error)) if error.code() == Some("WRONGTYPE") => Err(ProbeError::new(
                ErrorReason::Query,
                match self.field {
                    None => format!(
                        "{what}: the key is not a string; for a hash, set `field` to the field \
                         holding the version"
                    ),
                    Some(field) => format!("{what}: the key is not a hash (`field: {field}`)"),
                },
            )),
            answer => self.client.settle(what, answer),
        }
    }

    /// The value of one key (`GET`) or hash field (`HGET`); `None` when missing.
    async fn read_one(&self, key: &str, deadline: Instant) -> Result<Option<Vec<u8>>, ProbeError> {
        let mut connection = self.client.connection(deadline).await?;
        match self.field {
            None => {
                let mut get = redis::cmd("GET");
                get.arg(key);
                let what = format!("GET {key:?}");
                self.call(&what, deadline, get.query_async(&mut connection))
                    .await
            }
            Some(field) => {
                let mut hget = redis::cmd("HGET");
                hget.arg(key).arg(field);
                let what = format!("HGET {key:?} {field:?}");
                self.call(&what, deadline, hget.query_async(&mut connection))
                    .await
            }
        }
    }

    /// One `SCAN` step: the next cursor (0 when the pass is complete) and the keys of the type
    /// the probe reads that it returned.
    async fn scan(
        &self,
        glob: &str,
        cursor: u64,
        count: u64,
        deadline: Instant,
    ) -> Result<(u64, Vec<Vec<u8>>), ProbeError> {
        let mut connection = self.client.connection(deadline).await?;
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(glob)
            .arg("COUNT")
            .arg(count)
            .arg("TYPE")
            .arg(self.key_type());
        self.call("SCAN", deadline, scan.query_async(&mut connection))
            .await
    }

    /// The values of `keys` in one round trip (`MGET`, or pipelined `HGET`s), in their order;
    /// `None` for a missing key or field.
    async fn read(
        &self,
        keys: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<Vec<Option<Vec<u8>>>, ProbeError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.client.connection(deadline).await?;
        let values: Vec<Option<Vec<u8>>> = match self.field {
            None => {
                let mut mget = redis::cmd("MGET");
                mget.arg(keys);
                self.call("MGET", deadline, mget.query_async(&mut connection))
                    .await?
            }
            Some(field) => {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("HGET").arg(key).arg(field);
                }
                self.call("HGET", deadline, pipe.query_async(&mut connection))
                    .await?
            }
        };
        if values.len() != keys.len() {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!("{} values for {} keys", values.len(), keys.len()),
            ));
        }
        Ok(values)
    }
}

async fn run_one(
    reader: &Reader<'_>,
    comparison: Option<&SourceComparison>,
    key: &str,
    previous: &mut Option<String>,
    totals: &mut Totals<'_>,
    deadline: Instant,
) -> Result<Reading, ProbeError> {
    let value = reader.read_one(key, deadline).await?;
    *totals.sampled += 1;
    let Some(value) = value else {
        *totals.misses += 1;
        let what = match reader.field {
            None => format!("key {key:?}"),
            Some(field) => format!("field {field:?} of key {key:?}"),
        };
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!("{what} is missing: a miss, not staleness"),
        ));
    };
    let version = String::from_utf8(value).map_err(|_| {
        ProbeError::new(
            ErrorReason::Decode,
            format!("key {key:?} does not hold UTF-8 text"),
        )
    })?;
    let mut detail = CacheDetail {
        pattern: false,
        keys_read: 1,
        keys_missing: 0,
        sampled_keys_total: *totals.sampled,
        misses_total: *totals.misses,
        ..CacheDetail::default()
    };
    let mut sample = match comparison {
        Some(comparison) => {
            let pending = comparison.one(&version, deadline).await?;
            let stale = pending.count.map_or(pending.lag_seconds > 0.0, |n| n > 0);
            detail.stale_keys = Some(u64::from(stale));
            if stale {
                detail.stalest = vec![StaleKey {
                    key: key.to_owned(),
                    lag_seconds: pending.lag_seconds,
                }];
            }
            Sample {
                lag_seconds: Some(pending.lag_seconds),
                backlog: pending.count.map(|n| Backlog {
                    unit: BacklogUnit::Rows,
                    value: n as f64,
                }),
                detail: Some(match pending.count {
                    Some(n) => format!("version {}, {n} newer source changes", shorten(&version)),
                    None => format!("version {}", shorten(&version)),
                }),
                negative_lag_clamped: pending.negative_lag_clamped,
                ..Sample::default()
            }
        }
        None => {
            let built = parse_timestamp(&version).map_err(|problem| {
                ProbeError::new(
                    ErrorReason::Decode,
                    format!("mode since_build reads key {key:?} as a time, but {problem}"),
                )
            })?;
            let built = match built.duration_since(UNIX_EPOCH) {
                Ok(since) => since.as_secs_f64(),
                Err(_) => 0.0,
            };
            let (lag, clamped) = clamp(unix_now() - built);
            Sample {
                lag_seconds: Some(lag),
                detail: Some(format!("built at {}", shorten(&version))),
                negative_lag_clamped: clamped,
                ..Sample::default()
            }
        }
    };
    sample.position_regressed = previous
        .as_deref()
        .is_some_and(|previous| went_back(previous, &version));
    sample.position = Some(version.clone());
    *previous = Some(version);
    Ok(Reading {
        sample,
        detail: Some(Detail::RedisKeyAge(detail)),
    })
}

async fn run_pattern(
    reader: &Reader<'_>,
    comparison: &SourceComparison,
    scan: &mut Scan,
    totals: &mut Totals<'_>,
    deadline: Instant,
) -> Result<Reading, ProbeError> {
    let (next_cursor, found) = reader
        .scan(&scan.glob, scan.cursor, scan.sample, deadline)
        .await?;
    let batch = batch(&found, scan.stale.keys());
    let values = reader.read(&batch, deadline).await?;
    let mut entities = Vec::with_capacity(batch.len());
    let mut raw_keys: HashMap<String, &[u8]> = HashMap::with_capacity(batch.len());
    let mut missing = 0;
    for (raw, value) in batch.iter().zip(values) {
        let Some(version) = value else {
            missing += 1;
            continue;
        };
        let key = String::from_utf8_lossy(raw).into_owned();
        // Two keys that are not UTF-8 may read alike; the query can tell them apart no better.
        if raw_keys.contains_key(&key) {
            continue;
        }
        raw_keys.insert(key.clone(), raw);
        entities.push(Entity {
            id: scan.pattern.id_of(&key).to_owned(),
            key,
            version: String::from_utf8_lossy(&version).into_owned(),
        });
    }
    let answer = comparison.entities(&entities, deadline).await?;

    // Every call answered: the run's reads count, and the walk moves on.
    *totals.sampled += batch.len() as u64;
    *totals.misses += missing;
    scan.cursor = next_cursor;
    let coverage = scan
        .ledger
        .record(found.len() as u64, entities.len() as u64, next_cursor == 0);
    let stalest = scan.stale.replace(&answer.stale, &raw_keys);
    match coverage {
        Coverage::Known => {}
        Coverage::EmptyPass => {
            let mut message = format!(
                "pattern {:?} matched no {} keys in a whole pass over the keyspace",
                scan.glob,
                reader.key_type()
            );
            if missing > 0 {
                message.push_str(&format!(
                    " that were still there when read ({missing} vanished)"
                ));
            }
            return Err(ProbeError::new(ErrorReason::NoData, message));
        }
        Coverage::NothingYet => {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "no {} key matching {:?} read yet in this pass ({} scanned); the scan goes \
                     on next run",
                    reader.key_type(),
                    scan.glob,
                    scan.ledger.scanned
                ),
            ));
        }
    }

    let lag = stalest.first().map_or(0.0, |s| s.lag_seconds);
    // The stalest entity and the version it holds: it moves when that entity is refreshed.
    let position = stalest.first().and_then(|s| {
        entities
            .iter()
            .find(|e| e.key == s.key)
            .map(|e| format!("{}@{}", e.key, e.version))
    });
    let mut text = format!(
        "{} keys read ({missing} missing), {} stale",
        batch.len(),
        answer.stale.len()
    );
    if let Some(s) = stalest.first() {
        text.push_str(&format!(
            ", stalest {} ({:.1} s)",
            shorten(&s.key),
            s.lag_seconds
        ));
    }
    text.push_str(&format!(
        "; pass {}, {} keys scanned",
        scan.ledger.passes + 1,
        scan.ledger.scanned
    ));
    let detail = CacheDetail {
        pattern: true,
        keys_read: batch.len() as u64,
        keys_missing: missing,
        stale_keys: Some(answer.stale.len() as u64),
        stalest: stalest.into_iter().take(MAX_STALEST).collect(),
        sampled_keys_total: *totals.sampled,
        misses_total: *totals.misses,
        scan_passes_total: Some(scan.ledger.passes),
        pass_keys_scanned: Some(scan.ledger.scanned),
    };
    Ok(Reading {
        sample: Sample {
            lag_seconds: Some(lag),
            position,
            detail: Some(text),
            negative_lag_clamped: answer.negative_lag_clamped,
            ..Sample::default()
        },
        detail: Some(Detail::RedisKeyAge(detail)),
    })
}

async fn check_one(
    reader: &Reader<'_>,
    key: &str,
    since_build: bool,
    deadline: Instant,
) -> Result<String, ProbeError> {
    let mut connection = reader.client.connection(deadline).await?;
    let mut type_of = redis::cmd("TYPE");
    type_of.arg(key);
    let kind: String = reader
        .call("TYPE", deadline, type_of.query_async(&mut connection))
        .await?;
    let wanted = reader.key_type();
    if kind == "none" {
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "key {key:?} does not exist: until it is written, every run counts a miss and \
                 fails with no_data"
            ),
        ));
    }
    if kind != wanted {
        let hint = match reader.field {
            None if kind == "hash" => "; set `field` to the field holding the version",
            None => "",
            Some(_) => "; remove `field` for a string key",
        };
        return Err(ProbeError::new(
            ErrorReason::Query,
            format!("key {key:?} is a {kind}, not a {wanted}{hint}"),
        ));
    }
    let Some(value) = reader.read_one(key, deadline).await? else {
        return Err(ProbeError::new(
            ErrorReason::NoData,
            format!(
                "hash {key:?} has no field {:?}: every run would count a miss",
                reader.field.unwrap_or_default()
            ),
        ));
    };
    let value = String::from_utf8_lossy(&value);
    if since_build {
        parse_timestamp(&value).map_err(|problem| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("mode since_build reads key {key:?} as a time, but {problem}"),
            )
        })?;
    }
    Ok(format!("{wanted} key {key:?} holds {}", shorten(&value)))
}

/// The keys one pattern run reads: those `SCAN` returned, then the tracked stale ones, each
/// once.
fn batch<'k>(found: &'k [Vec<u8>], tracked: impl Iterator<Item = &'k [u8]>) -> Vec<Vec<u8>> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    found
        .iter()
        .map(Vec::as_slice)
        .chain(tracked)
        .filter(|key| seen.insert(key))
        .map(<[u8]>::to_vec)
        .collect()
}

/// The entities known to trail their source, re-checked every run until the source no longer
/// reports them (refreshed) or they are gone; at most `cap`, the stalest kept.
#[derive(Debug, Default)]
struct StaleSet {
    cap: usize,
    /// Raw key (as Redis spells it) and lag, stalest first.
    entries: Vec<(Vec<u8>, StaleKey)>,
}

impl StaleSet {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: Vec::new(),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|(raw, _)| raw.as_slice())
    }

    /// Replaces the set with this run's answer: `stale` are the entities of the run's batch
    /// (its sample and the tracked ones) that trail their source, `raw_keys` how Redis spells
    /// each. Tracked entities absent from `stale` were refreshed or are gone. Returns the
    /// answer, stalest first.
    fn replace(&mut self, stale: &[StaleEntity], raw_keys: &HashMap<String, &[u8]>) -> Vec<StaleKey> {
        let mut ranked: Vec<StaleKey> = stale
            .iter()
            .map(|s| StaleKey {
                key: s.key.clone(),
                lag_seconds: s.lag_seconds,
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.lag_seconds
                .total_cmp(&a.lag_seconds)
                .then_with(|| a.key.cmp(&b.key))
        });
        self.entries = ranked
            .iter()
            .filter_map(|s| Some((raw_keys.get(&s.key)?.to_vec(), s.clone())))
            .take(self.cap)
            .collect();
        ranked
    }
}

/// Where a pattern probe stands in its walk over the keyspace, and whether what it compared is
/// enough to speak for the keyspace.
#[derive(Debug, Default, PartialEq)]
struct PassLedger {
    /// Passes completed (`SCAN` returned cursor 0).
    passes: u64,
    /// Keys `SCAN` returned in the pass under way.
    scanned: u64,
    /// Present keys compared with the source in the pass under way, and in the last complete
    /// pass (`None` before the first completes).
    compared: u64,
    compared_last_pass: Option<u64>,
}

/// What a run's reads say about the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// Keys were compared in this pass or the last complete one: no stale entity known is 0.
    Known,
    /// Nothing compared yet: a pass under way that found no key so far, after none or an
    /// empty pass. Unknown, never 0.
    NothingYet,
    /// A whole pass found no key to compare: the pattern matches nothing.
    EmptyPass,
}

impl PassLedger {
    /// Records one run: `scanned` keys returned by `SCAN`, `compared` present keys sent to the
    /// source, and whether `SCAN` completed the pass.
    fn record(&mut self, scanned: u64, compared: u64, completed: bool) -> Coverage {
        self.scanned += scanned;
        self.compared += compared;
        if completed {
            self.passes += 1;
            let compared = std::mem::take(&mut self.compared);
            self.scanned = 0;
            self.compared_last_pass = Some(compared);
            if compared == 0 {
                return Coverage::EmptyPass;
            }
            return Coverage::Known;
        }
        if self.compared > 0 || self.compared_last_pass.is_some_and(|n| n > 0) {
            Coverage::Known
        } else {
            Coverage::NothingYet
        }
    }
}

/// Whether `now` is an older version than `previous`, when both are numbers or times.
fn went_back(previous: &str, now: &str) -> bool {
    match (previous.trim().parse::<f64>(), now.trim().parse::<f64>()) {
        (Ok(previous), Ok(now)) => now < previous,
        _ => match (parse_timestamp(previous), parse_timestamp(now)) {
            (Ok(previous), Ok(now)) => now < previous,
            _ => false,
        },
    }
}

fn clamp(seconds: f64) -> (f64, bool) {
    if seconds < 0.0 {
        (0.0, true)
    } else {
        (seconds, false)
    }
}

/// A value from the cache, cut for a message.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for RedisKeyAgeProbe {
    const KEY: &'static str = "redis_key_age";
    type Settings = RedisKeyAge;

    fn new(
        _probe: &crate::model::Probe,
        settings: &RedisKeyAge,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        let comparison = match &settings.mode {
            KeyAgeMode::OldestPending(spec) => Some(SourceComparison::new(spec, sources)?),
            KeyAgeMode::SinceBuild => None,
        };
        RedisKeyAgeProbe::new(settings, sources.redis(&settings.source)?, comparison)
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        RedisKeyAgeProbe::run(self, deadline).await
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        RedisKeyAgeProbe::check(self, deadline).await
    }

    fn source(settings: &RedisKeyAge) -> &str {
        &settings.source
    }

    fn sources(settings: &RedisKeyAge) -> Vec<&str> {
        let mut sources = vec![settings.source.as_str()];
        if let KeyAgeMode::OldestPending(spec) = &settings.mode {
            sources.push(spec.source.as_str());
        }
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stale(key: &str, lag_seconds: f64) -> StaleEntity {
        StaleEntity {
            key: key.to_owned(),
            lag_seconds,
        }
    }

    fn raw(keys: &[&'static str]) -> HashMap<String, &'static [u8]> {
        keys.iter().map(|k| ((*k).to_owned(), k.as_bytes())).collect()
    }

    fn tracked(set: &StaleSet) -> Vec<&str> {
        set.keys()
            .map(|k| std::str::from_utf8(k).expect("utf-8"))
            .collect()
    }

    #[test]
    fn a_run_reads_its_sample_and_the_tracked_stale_keys_once_each() {
        let found = vec![b"p:1".to_vec(), b"p:2".to_vec(), b"p:1".to_vec()];
        let tracked: Vec<&[u8]> = vec![b"p:2", b"p:9"];
        assert_eq!(
            batch(&found, tracked.into_iter()),
            [b"p:1".to_vec(), b"p:2".to_vec(), b"p:9".to_vec()]
        );
    }

    #[test]
    fn stale_entities_are_tracked_until_refreshed_or_gone_stalest_first_and_capped() {
        let mut set = StaleSet::new(2);
        let answer = set.replace(
            &[stale("p:1", 5.0), stale("p:2", 9.0), stale("p:3", 7.0)],
            &raw(&["p:1", "p:2", "p:3", "p:4"]),
        );
        let order: Vec<&str> = answer.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(order, ["p:2", "p:3", "p:1"], "the whole answer, stalest first");
        assert_eq!(tracked(&set), ["p:2", "p:3"], "capped at 2, the stalest kept");
        // Next run: p:2 was refreshed (not in the answer), p:3 still trails and older.
        set.replace(&[stale("p:3", 8.0)], &raw(&["p:2", "p:3"]));
        assert_eq!(tracked(&set), ["p:3"]);
        // Gone (missing keys are never in the answer): the set empties, lag is 0 again.
        let answer = set.replace(&[], &raw(&[]));
        assert!(answer.is_empty() && tracked(&set).is_empty());
    }

    #[test]
    fn nothing_compared_is_unknown_and_an_empty_pass_says_so() {
        let mut ledger = PassLedger::default();
        // A first run that found no key yet: unknown, not 0.
        assert_eq!(ledger.record(0, 0, false), Coverage::NothingYet);
        assert_eq!(ledger.record(3, 2, false), Coverage::Known);
        // A run with nothing to compare, in a pass that compared keys already: known.
        assert_eq!(ledger.record(0, 0, false), Coverage::Known);
        assert_eq!(ledger.record(1, 1, true), Coverage::Known);
        assert_eq!((ledger.passes, ledger.scanned), (1, 0));
        // The next pass starts empty, but the last one spoke for the keyspace.
        assert_eq!(ledger.record(0, 0, false), Coverage::Known);
        // A whole pass without a key: the pattern matches nothing.
        assert_eq!(ledger.record(0, 0, true), Coverage::EmptyPass);
        assert_eq!(ledger.record(0, 0, false), Coverage::NothingYet);
        assert_eq!(ledger.record(0, 0, true), Coverage::EmptyPass);
        assert_eq!(ledger.record(5, 5, true), Coverage::Known);
        assert_eq!(ledger.passes, 4);
    }

    #[test]
    fn versions_go_back_only_when_comparable() {
        assert!(went_back("17", "16"));
        assert!(!went_back("17", "18"));
        assert!(!went_back("17", "17"));
        assert!(went_back("2026-12-05T15:00:01Z", "2026-12-05T15:00:00Z"));
        assert!(!went_back("v17", "v16"), "text versions have no order");
    }
}
