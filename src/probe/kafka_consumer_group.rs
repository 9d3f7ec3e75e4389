//! `kafka_consumer_group`: a consumer group's lag in true seconds.
//!
//! Per partition, lag is the age of the first record at or after the group's committed offset
//! while that offset is below the last stable offset, and 0 otherwise: the age of the oldest
//! change the group has not yet processed, not an estimate from offsets over time. Timestamps
//! are cached per (partition, committed offset), so a group that is steady, or caught up,
//! costs no record reads at all; each run then costs three batched offset requests and one
//! offset fetch for the group.
//!
//! Record timestamps are written by producers (CreateTime) or by the broker (LogAppendTime):
//! lag is measured against the daemon's clock, so skew between those clocks shows up in the
//! lag; results below 0 are clamped and counted.

pub mod config;
pub mod dashboard;
pub mod detail;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_ms_now;

use regex::Regex;
use tokio::time::{Instant, timeout_at};

use super::kafka::{FirstRecord, KafkaClient, Wanted};
use super::kafka_admin::{OffsetMap, OffsetSpec};
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::model::{KafkaConsumerGroup, NoCommitPolicy, TopicSelector};
use detail::{KafkaDetail, PartitionLag};

/// Per-partition series are capped to the most lagging partitions.
pub const MAX_PARTITION_SERIES: usize = 50;

type PartitionKey = (String, i32);

/// The first record read at or after `from`, and the last stable offset at the time.
#[derive(Debug, Clone, Copy)]
struct CachedFirst {
    from: i64,
    stable: i64,
    first: FirstRecord,
}

pub struct KafkaConsumerGroupProbe {
    spec: Arc<KafkaConsumerGroup>,
    pattern: Option<Regex>,
    client: Arc<KafkaClient>,
    memory: Memory,
}

/// Log start offsets move only when retention deletes a segment: re-read them this often.
const LOG_START_TTL: Duration = Duration::from_secs(30);

/// What a probe remembers between runs so that a steady group costs as little as possible.
#[derive(Default)]
struct Memory {
    /// The first record at each partition's position, from earlier runs.
    times: HashMap<PartitionKey, CachedFirst>,
    /// Committed offsets of the previous run, to count positions that go backwards.
    previous: HashMap<PartitionKey, i64>,
    /// Log start offsets and when they were read.
    starts: Option<(std::time::Instant, OffsetMap)>,
    /// Per partition: the position the group was last seen at, and since when (unix seconds).
    moved_at: HashMap<PartitionKey, (i64, f64)>,
}

/// What one run learned, before turning it into a sample.
struct Measured {
    partitions: Vec<PartitionLag>,
    backlog: i64,
    committed_sum: i64,
    data_loss: bool,
    regressed: bool,
    negative: bool,
    log_append_time: Option<bool>,
    members: Option<usize>,
    /// The oldest time a partition that is behind last moved (now when none is behind).
    progress_at: f64,
    /// When these figures were taken, on the same clock as `progress_at`.
    measured_at: f64,
}

impl KafkaConsumerGroupProbe {
    pub fn new(spec: KafkaConsumerGroup, client: Arc<KafkaClient>) -> Result<Self, ProbeError> {
        let pattern = match &spec.topics {
            TopicSelector::Pattern(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                ProbeError::new(ErrorReason::Decode, format!("invalid topic_pattern: {e}"))
            })?),
            TopicSelector::List(_) => None,
        };
        Ok(Self {
            spec: Arc::new(spec),
            pattern,
            client,
            memory: Memory::default(),
        })
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<(Sample, KafkaDetail), ProbeError> {
        // The permit moves into the blocking job: if this future is dropped at its deadline,
        // the slot stays taken until the blocking work has really ended.
        let slot = timeout_at(deadline, self.client.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                ProbeError::new(
                    ErrorReason::PoolTimeout,
                    "every Kafka call slot of the source stayed busy until the deadline",
                )
            })?
            .map_err(|_| ProbeError::new(ErrorReason::Connect, "client closed"))?;
        let client = self.client.clone();
        let spec = self.spec.clone();
        let pattern = self.pattern.clone();
        let mut memory = std::mem::take(&mut self.memory);
        let std_deadline = deadline.into_std();
        let job = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let measured = measure(&client, &spec, pattern.as_ref(), &mut memory, std_deadline);
            if measured.is_err() {
                // A failure may come from stale log start offsets (records deleted since):
                // read them again next time; keep what else was learnt.
                memory.starts = None;
            }
            (memory, measured)
        });
        let (memory, measured) = job.await.map_err(|e| {
            ProbeError::new(ErrorReason::Connect, format!("probe task failed: {e}"))
        })?;
        self.memory = memory;
        Ok(sample_from(&measured?, self.spec.partition_detail))
    }

    /// Checks that the cluster answers and the group's offsets can be read.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let (sample, detail) = self.run(deadline).await?;
        let partitions = detail.partitions_total;
        Ok(format!(
            "group offsets readable on {partitions} partitions, lag {:.3}s",
            sample.lag_seconds.unwrap_or_default()
        ))
    }
}

fn remaining(deadline: std::time::Instant) -> Result<Duration, ProbeError> {
    let left = deadline.saturating_duration_since(crate::clock::std_instant());
    if left.is_zero() {
        Err(ProbeError::new(ErrorReason::Timeout, "deadline reached"))
    } else {
        Ok(left)
    }
}

fn selected_partitions(
    client: &KafkaClient,
    spec: &KafkaConsumerGroup,
    pattern: Option<&Regex>,
    deadline: std::time::Instant,
) -> Result<Vec<PartitionKey>, ProbeError> {
    let listed: &[String] = match &spec.topics {
        TopicSelector::List(topics) => topics,
        TopicSelector::Pattern(_) => &[],
    };
    let metadata = client.topics(listed, remaining(deadline)?)?;
    let topics = &metadata.partitions;
    let broken = |name: &String| {
        metadata.errors.get(name).map(|e| {
            ProbeError::new(
                ErrorReason::Query,
                format!("topic {name}: the cluster's metadata reports {e}"),
            )
        })
    };
    let mut names: Vec<&String> = match (&spec.topics, pattern) {
        (TopicSelector::List(list), _) => {
            if let Some(error) = list.iter().find_map(broken) {
                return Err(error);
            }
            if let Some(missing) = list.iter().find(|t| !topics.contains_key(*t)) {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!("topic {missing} does not exist"),
                ));
            }
            list.iter().collect()
        }
        (TopicSelector::Pattern(p), Some(regex)) => {
            if let Some(error) = metadata
                .errors
                .keys()
                .filter(|t| regex.is_match(t))
                .find_map(broken)
            {
                return Err(error);
            }
            let matched: Vec<&String> = topics.keys().filter(|t| regex.is_match(t)).collect();
            if matched.is_empty() {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!("no topic matches topic_pattern {p}"),
                ));
            }
            matched
        }
        (TopicSelector::Pattern(_), None) => Vec::new(),
    };
    names.sort();
    Ok(names
        .into_iter()
        .flat_map(|t| {
            topics
                .get(t)
                .into_iter()
                .flatten()
                .map(move |p| (t.clone(), *p))
        })
        .collect())
}

fn offset_of(
    map: &super::kafka_admin::OffsetMap,
    key: &PartitionKey,
    what: &str,
) -> Result<i64, ProbeError> {
    match map.get(key) {
        Some(Ok(offset)) => Ok(*offset),
        Some(Err(e)) => Err(ProbeError::new(
            ErrorReason::Query,
            format!("{what} of {}/{}: {e}", key.0, key.1),
        )),
        None => Err(ProbeError::new(
            ErrorReason::Decode,
            format!("no {what} returned for {}/{}", key.0, key.1),
        )),
    }
}

fn measure(
    client: &KafkaClient,
    spec: &KafkaConsumerGroup,
    pattern: Option<&Regex>,
    memory: &mut Memory,
    deadline: std::time::Instant,
) -> Result<Measured, ProbeError> {
    let partitions = selected_partitions(client, spec, pattern, deadline)?;
    let starts_fresh = memory.starts.as_ref().is_some_and(|(at, map)| {
        crate::clock::std_elapsed(*at) < LOG_START_TTL
            && partitions.iter().all(|p| map.contains_key(p))
    });
    if !starts_fresh {
        let map = client.offsets(&partitions, OffsetSpec::Earliest, remaining(deadline)?)?;
        memory.starts = Some((crate::clock::std_instant(), map));
    }
    let starts = match &memory.starts {
        Some((_, map)) => map,
        None => return Err(ProbeError::new(ErrorReason::Decode, "no log start offsets")),
    };
    let stables = client.offsets(&partitions, OffsetSpec::LastStable, remaining(deadline)?)?;
    let commits = client.committed(&spec.group, &partitions, remaining(deadline)?)?;
    // The high watermark matters only for a commit above the last stable offset: inside an
    // open transaction (fine) or beyond the end of the log (a regression). Ask only then.
    let above_stable: Vec<PartitionKey> = partitions
        .iter()
        .filter(|key| {
            let stable = stables.get(*key).and_then(|r| r.as_ref().ok()).copied();
            let commit = commits
                .get(*key)
                .and_then(|r| r.as_ref().ok())
                .copied()
                .flatten();
            matches!((commit, stable), (Some(c), Some(s)) if c > s)
        })
        .cloned()
        .collect();
    let highs = client.offsets(&above_stable, OffsetSpec::High, remaining(deadline)?)?;

    // Where the group stands in each partition, and which first records we must read.
    struct Position {
        key: PartitionKey,
        from: i64,
        stable: i64,
    }
    let mut positions = Vec::with_capacity(partitions.len());
    let mut committed = HashMap::with_capacity(partitions.len());
    let (mut data_loss, mut regressed, mut committed_sum) = (false, false, 0i64);
    for key in &partitions {
        let start = offset_of(starts, key, "log start offset")?;
        let stable = offset_of(&stables, key, "last stable offset")?;
        let commit = match commits.get(key) {
            Some(Ok(commit)) => *commit,
            Some(Err(e)) => {
                return Err(ProbeError::new(
                    ErrorReason::Query,
                    format!("committed offset of {}/{}: {e}", key.0, key.1),
                ));
            }
            // Asked for and not answered: unknown, not "no commit".
            None => {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    format!("no committed offset returned for {}/{}", key.0, key.1),
                ));
            }
        };
        let from = match (commit, spec.no_commit) {
            (Some(c), _) => {
                committed.insert(key.clone(), c);
                committed_sum = committed_sum.saturating_add(c);
                let beyond_end = c > stable && offset_of(&highs, key, "high watermark")? < c;
                if memory.previous.get(key).is_some_and(|p| c < *p) || beyond_end {
                    regressed = true;
                }
                if c < start {
                    // Retention deleted records the group never read: measure from the oldest
                    // record that is left, and say that data was lost.
                    data_loss = true;
                    start
                } else {
                    c.min(stable)
                }
            }
            // An empty partition needs no commit: nothing is pending.
            (None, _) if stable <= start => stable,
            (None, Some(NoCommitPolicy::Earliest)) => start,
            (None, Some(NoCommitPolicy::Latest)) => stable,
            (None, None) => {
                return Err(ProbeError::new(
                    ErrorReason::NoData,
                    format!(
                        "group {} has no committed offset on {}/{}, which holds {} records; \
                         set no_commit: earliest or latest to say what that means",
                        spec.group,
                        key.0,
                        key.1,
                        stable - start
                    ),
                ));
            }
        };
        positions.push(Position {
            key: key.clone(),
            from,
            stable,
        });
    }

    // Reuse what was read for the same offset; read only what is new. A record found at or
    // after `from` stays the answer while `from` does not move; "nothing readable" stays the
    // answer only while the last stable offset does not move either.
    let times = &mut memory.times;
    times.retain(|key, cached| {
        positions.iter().any(|p| {
            &p.key == key
                && p.from == cached.from
                && (matches!(cached.first, FirstRecord::Record(_)) || p.stable == cached.stable)
        })
    });
    let wanted: Vec<Wanted> = positions
        .iter()
        .filter(|p| p.from < p.stable && !times.contains_key(&p.key))
        .map(|p| Wanted {
            topic: p.key.0.clone(),
            partition: p.key.1,
            from: p.from,
            stable: p.stable,
        })
        .collect();
    if !wanted.is_empty() {
        let stable_of: HashMap<&PartitionKey, (i64, i64)> = positions
            .iter()
            .map(|p| (&p.key, (p.from, p.stable)))
            .collect();
        for (key, first) in client.first_records(&wanted, deadline)? {
            if let Some((from, stable)) = stable_of.get(&key).copied() {
                times.insert(
                    key,
                    CachedFirst {
                        from,
                        stable,
                        first,
                    },
                );
            }
        }
    }

    let now_ms = unix_ms_now();
    let now_s = now_ms as f64 / 1000.0;
    let (mut backlog, mut negative, mut log_append_time) = (0i64, false, None);
    let mut lags = Vec::with_capacity(positions.len());
    // Progress is tracked per partition: one stuck partition (a poison record) must show as
    // stalled even while the others advance.
    let mut moved_at = HashMap::with_capacity(positions.len());
    let mut progress_at = now_s;
    for p in &positions {
        let (lag_ms, behind) = if p.from >= p.stable {
            (0, 0)
        } else {
            match times.get(&p.key).map(|c| c.first) {
                Some(FirstRecord::Record(time)) => {
                    log_append_time.get_or_insert(time.log_append_time);
                    let age = now_ms - time.unix_ms;
                    if age < 0 {
                        negative = true;
                    }
                    (age.max(0), p.stable - p.from)
                }
                // Nothing readable before the LSO: only transaction markers or aborted
                // records, which no consumer will ever process. Caught up.
                Some(FirstRecord::EndOfPartition) => (0, 0),
                None => {
                    return Err(ProbeError::new(
                        ErrorReason::Decode,
                        format!("no record time for {}/{} at {}", p.key.0, p.key.1, p.from),
                    ));
                }
            }
        };
        backlog = backlog.saturating_add(behind);
        let since = match memory.moved_at.get(&p.key) {
            Some((offset, at)) if *offset == p.from => *at,
            _ => now_s,
        };
        moved_at.insert(p.key.clone(), (p.from, since));
        if behind > 0 {
            progress_at = progress_at.min(since);
        }
        lags.push(PartitionLag {
            topic: p.key.0.clone(),
            partition: p.key.1,
            lag_seconds: lag_ms as f64 / 1000.0,
            backlog: behind,
        });
    }
    memory.moved_at = moved_at;
    memory.previous = committed;
    let members = remaining(deadline)
        .ok()
        .and_then(|left| client.members(&spec.group, left.min(Duration::from_secs(1))));
    Ok(Measured {
        partitions: lags,
        backlog,
        committed_sum,
        data_loss,
        regressed,
        negative,
        log_append_time,
        members,
        progress_at,
        measured_at: now_s,
    })
}

fn sample_from(measured: &Measured, partition_detail: bool) -> (Sample, KafkaDetail) {
    let lag = measured
        .partitions
        .iter()
        .map(|p| p.lag_seconds)
        .fold(0.0, f64::max);
    let behind = measured.partitions.iter().filter(|p| p.backlog > 0).count();
    let total = measured.partitions.len();
    let mut detail_partitions = Vec::new();
    if partition_detail {
        let mut sorted = measured.partitions.clone();
        sorted.sort_by(|a, b| {
            b.lag_seconds
                .total_cmp(&a.lag_seconds)
                .then(b.backlog.cmp(&a.backlog))
        });
        sorted.truncate(MAX_PARTITION_SERIES);
        detail_partitions = sorted;
    }
    let sample = Sample {
        lag_seconds: Some(lag),
        backlog: Some(Backlog {
            unit: BacklogUnit::Messages,
            value: measured.backlog as f64,
        }),
        position: Some(measured.committed_sum.to_string()),
        progress_age_seconds: Some((measured.measured_at - measured.progress_at).max(0.0)),
        detail: Some(format!(
            "{behind} of {total} partitions behind, {} messages",
            measured.backlog
        )),
        negative_lag_clamped: measured.negative,
        position_regressed: measured.regressed,
        ..Sample::default()
    };
    let detail = KafkaDetail {
        members: measured.members,
        data_loss: measured.data_loss,
        log_append_time: measured.log_append_time,
        partitions_total: total,
        partitions: detail_partitions,
    };
    (sample, detail)
}
/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for KafkaConsumerGroupProbe {
    const KEY: &'static str = "kafka_consumer_group";
    type Settings = KafkaConsumerGroup;

    fn new(
        _probe: &crate::model::Probe,
        settings: &KafkaConsumerGroup,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Self::new(settings.clone(), sources.kafka(&settings.source)?)
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        let (sample, detail) = KafkaConsumerGroupProbe::run(self, deadline).await?;
        Ok(super::Reading {
            sample,
            detail: Some(super::Detail::KafkaConsumerGroup(Arc::new(detail))),
        })
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        KafkaConsumerGroupProbe::check(self, deadline).await
    }

    fn source(settings: &KafkaConsumerGroup) -> &str {
        &settings.source
    }
}

