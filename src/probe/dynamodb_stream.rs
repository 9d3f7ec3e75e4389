//! `dynamodb_stream`: lag of a DynamoDB Streams consumer that checkpoints in a KCL lease table.
//!
//! Each run reads the table's latest stream ARN (DescribeTable), its shards (DescribeStream,
//! every page) and the consumer's leases (a Scan of the lease table: `leaseKey` = shard ID,
//! `checkpoint`), plans which shards to read (`shards.rs`: finished shards are skipped, parents
//! before children, trimmed checkpoints noticed) and reads, per planned shard, the first record
//! after its checkpoint: GetShardIterator AFTER_SEQUENCE_NUMBER (TRIM_HORIZON for a shard not
//! read yet), then GetRecords with Limit 1. Lag is now − the oldest such record's
//! ApproximateCreationDateTime, 0 when no shard has one: an idle stream reads 0. AWS gives that
//! time in whole seconds (rounded down), so lag reads up to 1 s high.
//!
//! Records never change, so the first record after a checkpoint is cached per (shard,
//! checkpoint): a consumer that is stuck costs no record reads after the first. A shard that is
//! caught up is read every run, since a new record may arrive at any time. Every shard is read
//! by at most one task of this process at a time (`SHARD_READERS`): AWS throttles more than two
//! readers per shard, and the consumer itself is one.
//!
//! There is no backlog: Streams tells no record counts, and counting by reading would cost a
//! read of every record.

pub mod config;
pub mod dashboard;
pub mod detail;
mod shards;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::dynamodb::{Api, DynamoClient, is_aws_error};
use super::{Detail, ErrorReason, ProbeError, Reading, Sample};
use crate::clock::unix_now;
use config::DynamodbStream;
use detail::StreamDetail;
use shards::{Checkpoint, Plan, ReadFrom, ShardRead, StreamShard, compare_sequences};

/// Shards asked for per DescribeStream page (its maximum).
const SHARDS_PER_PAGE: u64 = 100;
/// Pages a run may read of DescribeStream or of the lease table: a bound on a run's requests
/// (10,000 shards), far above any table's (a shard lives about four hours, and the stream keeps
/// 24 hours of them).
const MAX_PAGES: usize = 100;
/// GetRecords may answer no records from a point that has some further on (an empty stretch of
/// the shard); the next iterator is followed this many times before the shard reads as caught
/// up.
const MAX_EMPTY_PAGES: usize = 5;

/// One task at a time reads a shard, across every probe of this process: by stream ARN and shard
/// ID. Held weakly, so a shard no longer read leaves nothing behind but a dead entry, swept when
/// another is added.
static SHARD_READERS: LazyLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn shard_reader(stream: &str, shard: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut readers = SHARD_READERS.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{stream}/{shard}");
    if let Some(lock) = readers.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    readers.retain(|_, lock| lock.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    readers.insert(key, Arc::downgrade(&lock));
    lock
}

/// The first record after a shard's checkpoint.
#[derive(Debug, Clone, PartialEq)]
struct FirstRecord {
    sequence: String,
    /// ApproximateCreationDateTime, unix seconds.
    created_at: f64,
}

/// What one shard's read found.
struct ShardResult {
    shard: String,
    first: Option<FirstRecord>,
    /// The checkpoint was trimmed (found by the plan or by AWS), or the shard expired.
    lost: bool,
}

pub struct DynamodbStreamProbe {
    spec: DynamodbStream,
    client: Arc<DynamoClient>,
    /// The first record after (shard, sequence number), from earlier runs.
    firsts: HashMap<(String, String), FirstRecord>,
    /// Per shard: its lease's checkpoint last run (`None`: no lease) and since when (unix
    /// seconds), for regressions and progress.
    checkpoints: HashMap<String, (Option<Checkpoint>, f64)>,
}

impl DynamodbStreamProbe {
    pub fn new(spec: DynamodbStream, client: Arc<DynamoClient>) -> Self {
        Self {
            spec,
            client,
            firsts: HashMap::new(),
            checkpoints: HashMap::new(),
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        let stream = self.stream_arn(deadline).await?;
        let shards = self.shards(&stream, deadline).await?;
        let leases = self.leases(deadline).await?;
        let plan = shards::plan(&shards, &leases);
        if plan.reads.is_empty() && plan.unmeasured > 0 {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "every unfinished shard's lease is at LATEST or AT_TIMESTAMP ({} shards): \
                     nothing to measure until the consumer checkpoints",
                    plan.unmeasured
                ),
            ));
        }
        let results = self.read_shards(&stream, &plan, deadline).await?;
        let now = unix_now();
        let regressed = self.remember_checkpoints(&shards, &leases, &results, now);
        Ok(measure(&plan, &results, &leases, &self.checkpoints, regressed, now))
    }

    /// Reads the table, its stream's first page of shards and one lease: checks that the table
    /// has a stream, that both APIs answer and that the lease table can be read.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let stream = self.stream_arn(deadline).await?;
        let shards = self.shards(&stream, deadline).await?;
        let leases = self.leases(deadline).await?;
        Ok(format!(
            "stream of {} has {} shards; lease table {} holds {} leases",
            self.spec.table,
            shards.len(),
            self.spec.lease_table,
            leases.len()
        ))
    }

    /// The table's latest stream; `no_data` when it has none enabled.
    async fn stream_arn(&self, deadline: Instant) -> Result<String, ProbeError> {
        let table = self
            .client
            .call(
                Api::Dynamodb,
                "DescribeTable",
                &json!({ "TableName": self.spec.table }),
                deadline,
            )
            .await?;
        table["Table"]["LatestStreamArn"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                ProbeError::new(
                    ErrorReason::NoData,
                    format!(
                        "table {} has no stream: enable one (StreamSpecification) for its \
                         consumer to read",
                        self.spec.table
                    ),
                )
            })
    }

    /// Every shard the stream lists, through its pages.
    async fn shards(&self, stream: &str, deadline: Instant) -> Result<Vec<StreamShard>, ProbeError> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut request = json!({ "StreamArn": stream, "Limit": SHARDS_PER_PAGE });
            if let Some(last) = &after {
                request["ExclusiveStartShardId"] = json!(last);
            }
            let answer = self
                .client
                .call(Api::Streams, "DescribeStream", &request, deadline)
                .await?;
            let description = &answer["StreamDescription"];
            let listed = description["Shards"]
                .as_array()
                .ok_or_else(|| decode("DescribeStream answered without Shards"))?;
            for shard in listed {
                shards.push(stream_shard(shard)?);
            }
            match description["LastEvaluatedShardId"].as_str() {
                Some(last) => after = Some(last.to_owned()),
                None => return Ok(shards),
            }
        }
        Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "the stream lists more than {} shards: more than this probe reads in one run",
                MAX_PAGES as u64 * SHARDS_PER_PAGE
            ),
        ))
    }

    /// The lease table: shard ID → checkpoint, through its pages (consistent reads, so that a
    /// checkpoint just written is seen).
    async fn leases(&self, deadline: Instant) -> Result<BTreeMap<String, Checkpoint>, ProbeError> {
        let mut leases = BTreeMap::new();
        let mut start: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let mut request = json!({
                "TableName": self.spec.lease_table,
                "ConsistentRead": true,
                "ProjectionExpression": "leaseKey, #c",
                "ExpressionAttributeNames": { "#c": "checkpoint" },
            });
            if let Some(key) = start.take() {
                request["ExclusiveStartKey"] = key;
            }
            let answer = self
                .client
                .call(Api::Dynamodb, "Scan", &request, deadline)
                .await?;
            let items = answer["Items"]
                .as_array()
                .ok_or_else(|| decode("Scan of the lease table answered without Items"))?;
            for item in items {
                let (shard, checkpoint) = lease(item, &self.spec.lease_table)?;
                leases.insert(shard, checkpoint);
            }
            match answer.get("LastEvaluatedKey") {
                Some(key) if key.is_object() => start = Some(key.clone()),
                _ => return Ok(leases),
            }
        }
        Err(ProbeError::new(
            ErrorReason::Query,
            format!(
                "lease table {} has more than {MAX_PAGES} pages of leases: more than this probe \
                 reads in one run",
                self.spec.lease_table
            ),
        ))
    }

    /// Reads the first record of every planned shard not known from an earlier run, at most
    /// the source's request slots at once.
    async fn read_shards(
        &mut self,
        stream: &str,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<Vec<ShardResult>, ProbeError> {
        let mut results = Vec::with_capacity(plan.reads.len());
        let mut reads = JoinSet::new();
        for read in &plan.reads {
            if let ReadFrom::After(sequence) = &read.from {
                if let Some(first) = self.firsts.get(&(read.shard.clone(), sequence.clone())) {
                    results.push(ShardResult {
                        shard: read.shard.clone(),
                        first: Some(first.clone()),
                        lost: false,
                    });
                    continue;
                }
            }
            let client = self.client.clone();
            let stream = stream.to_owned();
            let read = read.clone();
            reads.spawn(async move { first_record(&client, &stream, read, deadline).await });
        }
        while let Some(joined) = reads.join_next().await {
            let result = joined.map_err(|e| {
                ProbeError::new(ErrorReason::Connect, format!("shard read failed: {e}"))
            })??;
            results.push(result);
        }
        // Keep what is still a checkpoint's first record; forget the rest.
        let found: HashMap<&str, &FirstRecord> = results
            .iter()
            .filter_map(|r| r.first.as_ref().map(|first| (r.shard.as_str(), first)))
            .collect();
        self.firsts = plan
            .reads
            .iter()
            .filter_map(|read| match (&read.from, found.get(read.shard.as_str())) {
                (ReadFrom::After(sequence), Some(first)) => {
                    Some(((read.shard.clone(), sequence.clone()), (*first).clone()))
                }
                _ => None,
            })
            .collect();
        results.sort_by(|a, b| a.shard.cmp(&b.shard));
        Ok(results)
    }

    /// Records each shard's checkpoint and since when the shard last made progress; whether
    /// any checkpoint went backwards (a sequence number lower than last run's, or a finished
    /// shard unfinished: the lease table restored or rewritten). A shard with nothing after its
    /// checkpoint has nothing to make progress on: it counts as progressing now, so that a
    /// record arriving after an idle hour is not taken for an hour-long stall.
    fn remember_checkpoints(
        &mut self,
        shards: &[StreamShard],
        leases: &BTreeMap<String, Checkpoint>,
        results: &[ShardResult],
        now: f64,
    ) -> bool {
        let behind: HashMap<&str, bool> = results
            .iter()
            .map(|r| (r.shard.as_str(), r.first.is_some()))
            .collect();
        let mut regressed = false;
        let mut next = HashMap::new();
        for shard in shards.iter().map(|s| s.id.as_str()) {
            let current = leases.get(shard).cloned();
            let previous = self.checkpoints.get(shard);
            if let Some((Some(before), _)) = previous {
                regressed |= went_back(before, current.as_ref());
            }
            let since = match previous {
                Some((before, since)) if *before == current && behind.get(shard) == Some(&true) => {
                    *since
                }
                _ => now,
            };
            next.insert(shard.to_owned(), (current, since));
        }
        self.checkpoints = next;
        regressed
    }
}

/// Whether a checkpoint moving from `previous` to `current` went backwards.
fn went_back(previous: &Checkpoint, current: Option<&Checkpoint>) -> bool {
    match (previous, current) {
        (Checkpoint::Sequence(before), Some(Checkpoint::Sequence(now))) => {
            compare_sequences(now, before) == std::cmp::Ordering::Less
        }
        (Checkpoint::Sequence(_), Some(Checkpoint::TrimHorizon)) => true,
        (Checkpoint::ShardEnd, Some(other)) => *other != Checkpoint::ShardEnd,
        _ => false,
    }
}

/// The run's reading from what it planned and read.
fn measure(
    plan: &Plan,
    results: &[ShardResult],
    leases: &BTreeMap<String, Checkpoint>,
    checkpoints: &HashMap<String, (Option<Checkpoint>, f64)>,
    regressed: bool,
    now: f64,
) -> Reading {
    let behind: Vec<(&ShardResult, &FirstRecord)> = results
        .iter()
        .filter_map(|r| r.first.as_ref().map(|first| (r, first)))
        .collect();
    let oldest = behind
        .iter()
        .min_by(|a, b| a.1.created_at.total_cmp(&b.1.created_at));
    let data_loss = !plan.expired_unfinished.is_empty() || results.iter().any(|r| r.lost);
    let mut sample = Sample {
        lag_seconds: Some(0.0),
        position_regressed: regressed,
        // A shard that is behind and whose checkpoint has not moved: the oldest such time.
        progress_age_seconds: Some(
            behind
                .iter()
                .filter_map(|(r, _)| checkpoints.get(&r.shard).map(|(_, since)| now - since))
                .fold(0.0, f64::max),
        ),
        ..Sample::default()
    };
    let counts = format!(
        "{} shards, {} behind{}",
        plan.shards,
        behind.len(),
        if plan.unmeasured > 0 {
            format!(", {} at LATEST (not measured)", plan.unmeasured)
        } else {
            String::new()
        }
    );
    sample.detail = Some(match oldest {
        Some((result, first)) => {
            let age = now - first.created_at;
            if age < 0.0 {
                sample.negative_lag_clamped = true;
            } else {
                sample.lag_seconds = Some(age);
            }
            let checkpoint = match leases.get(&result.shard) {
                Some(Checkpoint::Sequence(s)) => s.clone(),
                Some(Checkpoint::TrimHorizon) => "TRIM_HORIZON".to_owned(),
                _ => "no lease".to_owned(),
            };
            sample.position = Some(format!("{}@{checkpoint}", result.shard));
            format!(
                "{counts}; oldest unprocessed record {} in shard {}",
                first.sequence, result.shard
            )
        }
        None => counts,
    });
    if data_loss {
        let lost: Vec<&str> = results
            .iter()
            .filter(|r| r.lost)
            .map(|r| r.shard.as_str())
            .chain(plan.expired_unfinished.iter().map(String::as_str))
            .collect();
        if let Some(text) = sample.detail.as_mut() {
            text.push_str(&format!(
                "; records deleted unread (checkpoint trimmed or shard expired): {}",
                lost.join(", ")
            ));
        }
    }
    let detail = StreamDetail {
        data_loss,
        shards: plan.shards,
        shards_behind: behind.len(),
        shards_unmeasured: plan.unmeasured,
        oldest_shard: oldest.map(|(r, _)| r.shard.clone()),
    };
    Reading {
        sample,
        detail: Some(Detail::DynamodbStream(detail)),
    }
}

/// The first record of one planned read, by the shard's one reader.
async fn first_record(
    client: &DynamoClient,
    stream: &str,
    read: ShardRead,
    deadline: Instant,
) -> Result<ShardResult, ProbeError> {
    let reader = shard_reader(stream, &read.shard);
    let _only_reader = tokio::time::timeout_at(deadline, reader.lock())
        .await
        .map_err(|_| {
            ProbeError::new(
                ErrorReason::Timeout,
                format!("shard {} stayed busy with another read", read.shard),
            )
        })?;
    let mut lost = read.trimmed;
    let iterator = match shard_iterator(client, stream, &read.shard, &read.from, deadline).await {
        Ok(iterator) => iterator,
        Err(error) if is_aws_error(&error, "TrimmedDataAccessException") => {
            lost = true;
            shard_iterator(client, stream, &read.shard, &ReadFrom::TrimHorizon, deadline).await?
        }
        Err(error) if is_aws_error(&error, "ResourceNotFoundException") => {
            // Listed a moment ago, gone now: retention removed the shard before its lease
            // finished it.
            return Ok(ShardResult {
                shard: read.shard,
                first: None,
                lost: true,
            });
        }
        Err(error) => return Err(error),
    };
    let mut next = iterator;
    for _ in 0..MAX_EMPTY_PAGES {
        let Some(iterator) = next else { break };
        let answer = client
            .call(
                Api::Streams,
                "GetRecords",
                &json!({ "ShardIterator": iterator, "Limit": 1 }),
                deadline,
            )
            .await?;
        let records = answer["Records"]
            .as_array()
            .ok_or_else(|| decode("GetRecords answered without Records"))?;
        if let Some(record) = records.first() {
            return Ok(ShardResult {
                shard: read.shard,
                first: Some(record_of(record)?),
                lost,
            });
        }
        // No next iterator: a closed shard read to its end.
        next = answer["NextShardIterator"].as_str().map(str::to_owned);
    }
    Ok(ShardResult {
        shard: read.shard,
        first: None,
        lost,
    })
}

async fn shard_iterator(
    client: &DynamoClient,
    stream: &str,
    shard: &str,
    from: &ReadFrom,
    deadline: Instant,
) -> Result<Option<String>, ProbeError> {
    let mut request = json!({ "StreamArn": stream, "ShardId": shard });
    match from {
        ReadFrom::After(sequence) => {
            request["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
            request["SequenceNumber"] = json!(sequence);
        }
        ReadFrom::TrimHorizon => request["ShardIteratorType"] = json!("TRIM_HORIZON"),
    }
    let answer = client
        .call(Api::Streams, "GetShardIterator", &request, deadline)
        .await?;
    Ok(answer["ShardIterator"].as_str().map(str::to_owned))
}

/// One DescribeStream shard.
fn stream_shard(shard: &Value) -> Result<StreamShard, ProbeError> {
    let id = shard["ShardId"]
        .as_str()
        .ok_or_else(|| decode("a DescribeStream shard has no ShardId"))?;
    let first = shard["SequenceNumberRange"]["StartingSequenceNumber"]
        .as_str()
        .filter(|s| shards::is_sequence_number(s))
        .ok_or_else(|| {
            decode(&format!(
                "shard {id} has no StartingSequenceNumber of decimal digits"
            ))
        })?;
    Ok(StreamShard {
        id: id.to_owned(),
        parent: shard["ParentShardId"].as_str().map(str::to_owned),
        first_sequence: first.to_owned(),
    })
}

/// One lease item: `leaseKey` (the shard ID) and `checkpoint`, both strings.
fn lease(item: &Value, table: &str) -> Result<(String, Checkpoint), ProbeError> {
    let shard = item["leaseKey"]["S"].as_str().ok_or_else(|| {
        decode(&format!(
            "an item of lease table {table} has no string leaseKey: not a KCL lease table"
        ))
    })?;
    let text = item["checkpoint"]["S"].as_str().ok_or_else(|| {
        decode(&format!(
            "lease {shard} of {table} has no string checkpoint: not a KCL lease table"
        ))
    })?;
    let checkpoint = Checkpoint::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(48).collect();
        decode(&format!(
            "lease {shard} has checkpoint {shown:?}: neither a sequence number nor \
             TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END"
        ))
    })?;
    Ok((shard.to_owned(), checkpoint))
}

/// A GetRecords record's sequence number and creation time.
fn record_of(record: &Value) -> Result<FirstRecord, ProbeError> {
    let change = &record["dynamodb"];
    let sequence = change["SequenceNumber"]
        .as_str()
        .ok_or_else(|| decode("a stream record has no SequenceNumber"))?;
    let created_at = change["ApproximateCreationDateTime"]
        .as_f64()
        .filter(|t| t.is_finite())
        .ok_or_else(|| decode("a stream record has no ApproximateCreationDateTime"))?;
    Ok(FirstRecord {
        sequence: sequence.to_owned(),
        created_at,
    })
}

fn decode(message: &str) -> ProbeError {
    ProbeError::new(ErrorReason::Decode, message)
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for DynamodbStreamProbe {
    const KEY: &'static str = "dynamodb_stream";
    type Settings = DynamodbStream;

    fn new(
        _probe: &crate::model::Probe,
        settings: &DynamodbStream,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(settings.clone(), sources.dynamodb(&settings.source)?))
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        DynamodbStreamProbe::run(self, deadline).await
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        DynamodbStreamProbe::check(self, deadline).await
    }

    fn source(settings: &DynamodbStream) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(shard: &str, created_at: Option<f64>) -> ShardResult {
        ShardResult {
            shard: shard.to_owned(),
            first: created_at.map(|created_at| FirstRecord {
                sequence: "100".to_owned(),
                created_at,
            }),
            lost: false,
        }
    }

    fn plan_of(shards: usize) -> Plan {
        Plan {
            shards,
            ..Plan::default()
        }
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_record_after_a_checkpoint() {
        let reading = measure(
            &plan_of(3),
            &[result("a", Some(990.0)), result("b", Some(995.0)), result("c", None)],
            &BTreeMap::new(),
            &HashMap::new(),
            false,
            1000.0,
        );
        assert_eq!(reading.sample.lag_seconds, Some(10.0));
        assert_eq!(reading.sample.backlog, None, "Streams has no counts");
        let Some(Detail::DynamodbStream(detail)) = reading.detail else {
            panic!("no stream detail");
        };
        assert_eq!(detail.shards_behind, 2);
        assert_eq!(detail.oldest_shard.as_deref(), Some("a"));
        assert!(!detail.data_loss);
    }

    #[test]
    fn nothing_after_any_checkpoint_is_zero_and_a_future_record_is_clamped() {
        let idle = measure(
            &plan_of(1),
            &[result("a", None)],
            &BTreeMap::new(),
            &HashMap::new(),
            false,
            1000.0,
        );
        assert_eq!(idle.sample.lag_seconds, Some(0.0));
        assert_eq!(idle.sample.progress_age_seconds, Some(0.0));
        let ahead = measure(
            &plan_of(1),
            &[result("a", Some(1002.0))],
            &BTreeMap::new(),
            &HashMap::new(),
            false,
            1000.0,
        );
        assert_eq!(ahead.sample.lag_seconds, Some(0.0));
        assert!(ahead.sample.negative_lag_clamped);
    }

    #[test]
    fn trimmed_checkpoints_and_expired_leases_are_data_loss() {
        let mut lost = result("a", Some(990.0));
        lost.lost = true;
        let reading = measure(
            &plan_of(1),
            &[lost],
            &BTreeMap::new(),
            &HashMap::new(),
            false,
            1000.0,
        );
        let Some(Detail::DynamodbStream(detail)) = &reading.detail else {
            panic!("no stream detail");
        };
        assert!(detail.data_loss);
        let expired = Plan {
            expired_unfinished: vec!["gone".to_owned()],
            ..plan_of(1)
        };
        let reading = measure(
            &expired,
            &[],
            &BTreeMap::new(),
            &HashMap::new(),
            false,
            1000.0,
        );
        let Some(Detail::DynamodbStream(detail)) = &reading.detail else {
            panic!("no stream detail");
        };
        assert!(detail.data_loss);
        assert!(
            reading.sample.detail.as_deref().is_some_and(|d| d.contains("gone")),
            "{:?}",
            reading.sample.detail
        );
    }

    #[test]
    fn progress_age_is_how_long_a_shard_behind_kept_its_checkpoint() {
        let checkpoints = HashMap::from([
            ("a".to_owned(), (Some(Checkpoint::Sequence("5".to_owned())), 970.0)),
            ("b".to_owned(), (None, 990.0)),
        ]);
        let reading = measure(
            &plan_of(2),
            &[result("a", Some(980.0)), result("b", Some(995.0))],
            &BTreeMap::new(),
            &checkpoints,
            false,
            1000.0,
        );
        assert_eq!(reading.sample.progress_age_seconds, Some(30.0));
    }

    #[test]
    fn each_shard_has_one_reader_lock_in_the_process() {
        let first = shard_reader("arn:test-one-reader", "shard-1");
        let again = shard_reader("arn:test-one-reader", "shard-1");
        assert!(Arc::ptr_eq(&first, &again), "two probes of one shard share its lock");
        let other = shard_reader("arn:test-one-reader", "shard-2");
        assert!(!Arc::ptr_eq(&first, &other));
        let held = first.try_lock().expect("free");
        assert!(again.try_lock().is_err(), "a second reader waits");
        drop(held);
    }

    #[test]
    fn checkpoints_that_go_backwards_are_regressions() {
        let seq = |s: &str| Checkpoint::Sequence(s.to_owned());
        assert!(went_back(&seq("200"), Some(&seq("100"))));
        assert!(!went_back(&seq("100"), Some(&seq("200"))));
        assert!(went_back(&seq("100"), Some(&Checkpoint::TrimHorizon)));
        assert!(went_back(&Checkpoint::ShardEnd, Some(&seq("1"))));
        assert!(!went_back(&seq("100"), Some(&Checkpoint::ShardEnd)));
        assert!(!went_back(&seq("100"), None), "a lease deleted after its shard expired");
    }

    #[test]
    fn leases_and_records_decode_or_say_what_is_wrong() {
        let item = json!({ "leaseKey": { "S": "shardId-1" }, "checkpoint": { "S": "SHARD_END" } });
        assert_eq!(
            lease(&item, "leases").expect("lease"),
            ("shardId-1".to_owned(), Checkpoint::ShardEnd)
        );
        let bad = json!({ "leaseKey": { "S": "shardId-1" }, "checkpoint": { "S": "later" } });
        let error = lease(&bad, "leases").expect_err("not a checkpoint");
        assert_eq!(error.reason, ErrorReason::Decode);
        assert!(error.message.contains("\"later\""), "{}", error.message);
        let not_kcl = json!({ "id": { "S": "x" } });
        assert!(lease(&not_kcl, "leases").is_err());
        let record = json!({ "dynamodb": { "SequenceNumber": "300", "ApproximateCreationDateTime": 1.7e9 } });
        assert_eq!(
            record_of(&record).expect("record"),
            FirstRecord {
                sequence: "300".to_owned(),
                created_at: 1.7e9
            }
        );
    }
}
