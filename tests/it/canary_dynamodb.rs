//! `canary` on a DynamoDB global table, against one moto server (tests/it/moto_support.rs)
//! serving two regions: two `dynamodb` sources with the same endpoint, eu-west-1 (written) and
//! us-east-1 (read). moto keeps tables per region but does not replicate global tables, so the
//! test is the replication: a task it controls reads the eu table's stream (DescribeTable →
//! LatestStreamArn, DescribeStream, GetShardIterator, GetRecords) and puts each NewImage into
//! the us table, and it can be paused and resumed. It records every stream record it has read
//! but not applied, so the truth (the age of the first marker not replicated) is known at any
//! time. Also: a region without the table, a table keyed otherwise, and a bare `{source}`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lagbudget::probe::dynamodb::{Api, DynamoClient};
use lagbudget::probe::oldest_pending::parse_timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::moto_support::Moto;
use crate::support::{Daemon, Metrics, PATIENCE, check_connect_lines, load_config, unique};

/// Measured lag against injected lag, either way, in seconds (as in tests/it/canary.rs). The
/// first marker the paused replicator misses was written up to a write period after the pause,
/// so the canary reads up to a write period less than the pause's age; writing every 500 ms
/// leaves the other half of the tolerance for a write made late by a loaded machine.
const TOLERANCE: f64 = 1.0;

const WRITE_PERIOD: &str = "500ms";

/// How often the replicator asks the stream for new records when the last ask found none.
const REPLICATOR_POLL: Duration = Duration::from_millis(100);

/// The sources, eu-west-1 and us-east-1, of one moto server.
fn sources_yaml(moto: &Moto) -> String {
    format!(
        "sources:\n{}{}",
        moto.source_yaml("aws-eu", "eu-west-1"),
        moto.source_yaml("aws-us", "us-east-1")
    )
}

/// The two regions' clients, as the daemon's sources build them.
fn clients(moto: &Moto) -> (Arc<DynamoClient>, Arc<DynamoClient>) {
    (moto.client("eu-west-1"), moto.client("us-east-1"))
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// Creates `table` keyed by the string `id`, with a NEW_IMAGE stream when `stream`.
async fn create_table(client: &DynamoClient, table: &str, stream: bool) {
    crate::moto_support::create_table(client, table, "id", stream).await;
}

/// The seq and write time (unix seconds) of a marker item.
fn marker_of(item: &Value) -> (i64, f64) {
    let seq = item["seq"]["N"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a Number seq in {item}"));
    let at = parse_timestamp(item["written_at"]["S"].as_str().expect("written_at"))
        .expect("an RFC 3339 time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    (seq, at)
}

/// What the replicator has read from the stream and not yet applied, oldest first: the seq
/// and write time of each marker.
#[derive(Default)]
struct Backlog {
    pending: VecDeque<(i64, f64)>,
    applied: u64,
    last_error: Option<String>,
}

/// The test's replication from eu to us: a task reading the eu table's stream and putting each
/// new image into the us table, in order, unless paused.
struct Replicator {
    paused: watch::Sender<bool>,
    backlog: Arc<Mutex<Backlog>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replicator {
    async fn start(from: Arc<DynamoClient>, to: Arc<DynamoClient>, table: &str) -> Replicator {
        let described = from
            .call(
                Api::Dynamodb,
                "DescribeTable",
                &json!({ "TableName": table }),
                deadline(),
            )
            .await
            .expect("DescribeTable");
        let stream = described["Table"]["LatestStreamArn"]
            .as_str()
            .unwrap_or_else(|| panic!("a stream on {described}"))
            .to_owned();
        let shards = from
            .call(
                Api::Streams,
                "DescribeStream",
                &json!({ "StreamArn": stream }),
                deadline(),
            )
            .await
            .expect("DescribeStream");
        // moto: one shard per table, never closed.
        let shard = shards["StreamDescription"]["Shards"][0]["ShardId"]
            .as_str()
            .unwrap_or_else(|| panic!("a shard in {shards}"))
            .to_owned();
        let iterator = from
            .call(
                Api::Streams,
                "GetShardIterator",
                &json!({
                    "StreamArn": stream,
                    "ShardId": shard,
                    "ShardIteratorType": "TRIM_HORIZON",
                }),
                deadline(),
            )
            .await
            .expect("GetShardIterator");
        let iterator = iterator["ShardIterator"]
            .as_str()
            .expect("ShardIterator")
            .to_owned();
        let (paused, paused_rx) = watch::channel(false);
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        let task = tokio::spawn(replicate(
            from,
            to,
            table.to_owned(),
            iterator,
            paused_rx,
            backlog.clone(),
        ));
        Replicator {
            paused,
            backlog,
            task,
        }
    }

    fn pause(&self) {
        self.paused.send_replace(true);
    }

    fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// The first marker read from the stream and not yet applied.
    fn first_pending(&self) -> Option<(i64, f64)> {
        self.backlog().pending.front().copied()
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().expect("backlog")
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The replicator's loop: read what the stream has, then apply it in order while not paused.
/// It keeps reading while paused, so that the backlog always holds every marker not applied.
async fn replicate(
    from: Arc<DynamoClient>,
    to: Arc<DynamoClient>,
    table: String,
    mut iterator: String,
    mut paused: watch::Receiver<bool>,
    backlog: Arc<Mutex<Backlog>>,
) {
    let mut images: VecDeque<Value> = VecDeque::new();
    let note_error = |what: &str, e: &lagbudget::probe::ProbeError| {
        let message = format!("{what}: {e:?}");
        eprintln!("replicator: {message}");
        backlog.lock().expect("backlog").last_error = Some(message);
    };
    loop {
        // Marks the flag seen, so that the wait below ends on the next change only.
        let was_paused = *paused.borrow_and_update();
        match from
            .call(
                Api::Streams,
                "GetRecords",
                &json!({ "ShardIterator": iterator, "Limit": 100 }),
                deadline(),
            )
            .await
        {
            Ok(answer) => {
                if let Some(next) = answer["NextShardIterator"].as_str() {
                    iterator = next.to_owned();
                }
                for record in answer["Records"].as_array().into_iter().flatten() {
                    let Some(image) = record["dynamodb"].get("NewImage") else {
                        continue;
                    };
                    backlog
                        .lock()
                        .expect("backlog")
                        .pending
                        .push_back(marker_of(image));
                    images.push_back(image.clone());
                }
            }
            Err(e) => note_error("GetRecords", &e),
        }
        while !was_paused && !*paused.borrow() {
            let Some(image) = images.front() else { break };
            let put = to
                .call(
                    Api::Dynamodb,
                    "PutItem",
                    &json!({ "TableName": table, "Item": image }),
                    deadline(),
                )
                .await;
            match put {
                Ok(_) => {
                    images.pop_front();
                    let mut backlog = backlog.lock().expect("backlog");
                    backlog.pending.pop_front();
                    backlog.applied += 1;
                }
                Err(e) => {
                    note_error("PutItem", &e);
                    break;
                }
            }
        }
        // The stream's poll cadence, cut short by a pause or a resume.
        tokio::select! {
            _ = tokio::time::sleep(REPLICATOR_POLL) => {}
            _ = paused.changed() => {}
        }
    }
}

fn view(budget: &str, replica: &str) -> [(&'static str, String); 3] {
    [
        ("budget", budget.to_owned()),
        ("probe", "visible".to_owned()),
        ("replica", replica.to_owned()),
    ]
}

fn metric(metrics: &Metrics, name: &str, budget: &str, replica: &str) -> Option<f64> {
    let labels = view(budget, replica);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    metrics.get(name, &labels)
}

fn lag(metrics: &Metrics, budget: &str, replica: &str) -> Option<f64> {
    metric(metrics, "lagbudget_lag_seconds", budget, replica)
}

fn last_success(metrics: &Metrics, budget: &str, replica: &str) -> Option<f64> {
    metric(
        metrics,
        "lagbudget_probe_last_success_timestamp_seconds",
        budget,
        replica,
    )
}

fn up(metrics: &Metrics, budget: &str, replica: &str) -> Option<f64> {
    metric(metrics, "lagbudget_probe_up", budget, replica)
}

async fn view_status(daemon: &Daemon, budget: &str, replica: &str) -> Value {
    let status = daemon.budget(budget).await;
    status["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|p| p["replica"] == replica))
        .cloned()
        .unwrap_or_else(|| panic!("view {replica} in {status}"))
}

/// One budget, one canary: markers put in `table` in eu-west-1 every 500 ms, read back from
/// each `(name, source)` view every second.
fn config(
    moto: &Moto,
    budget: &str,
    instance: &str,
    table: &str,
    views: &[(&str, &str)],
) -> String {
    let reads: Vec<String> = views
        .iter()
        .map(|(name, source)| format!("{{ name: {name}, source: {source}, table: {table} }}"))
        .collect();
    format!(
        "listen: 127.0.0.1:0
{sources}budgets:
  - name: {budget}
    max_lag: 60s
    interval: 1s
    timeout: 1s
    probes:
      - name: visible
        canary:
          write: {{ source: aws-eu, table: {table} }}
          read: [ {reads} ]
          write_period: {WRITE_PERIOD}
          instance: {instance}
",
        sources = sources_yaml(moto),
        reads = reads.join(", "),
    )
}

/// Waits for a run of the view ending after `since` with a lag within the tolerance of 0, then
/// watches three more runs stay there. "0" is what a read taken after the newest marker was
/// replicated shows; a read taken while it is in flight shows its age, under a write period
/// plus the replicator's poll, so "caught up" is a lag within `TOLERANCE`, never a growing one.
async fn wait_caught_up(daemon: &Daemon, budget: &str, replica: &str, since: f64) {
    let caught_up = daemon
        .wait_for_metrics(&format!("{replica} caught up"), PATIENCE, |m| {
            last_success(m, budget, replica).is_some_and(|at| at > since)
                && lag(m, budget, replica).is_some_and(|lag| lag <= TOLERANCE)
        })
        .await;
    println!(
        "{replica} caught up: lag {:?}",
        lag(&caught_up, budget, replica)
    );
    daemon
        .watch_runs((budget, "visible"), 3, PATIENCE, |m| {
            let lag = lag(m, budget, replica).expect("a lag");
            assert!(
                lag <= TOLERANCE,
                "{replica}: lag {lag:.3} s while replicating, not within {TOLERANCE} s of 0"
            );
        })
        .await;
}

/// Issue acceptance (a DynamoDB global table, eu-west-1 → us-east-1): the marker is one item
/// per instance in the eu table, read back eventually consistent in us. Replicating ⇒ lag
/// within a second of 0. Replication paused ⇒ the lag grows with the pause and, at two points
/// 3 s apart, is within ±1 s of both the time since the pause and the age of the first marker
/// not replicated. Resumed ⇒ back to 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_global_table_replica_that_stops_replicating_reads_the_time_since_and_0_once_resumed() {
    let moto = Moto::start().await;
    let (eu, us) = clients(&moto);
    let table = unique("canary").replace('_', "-");
    create_table(&eu, &table, true).await;
    create_table(&us, &table, false).await;
    let replicator = Replicator::start(eu.clone(), us.clone(), &table).await;

    let budget = unique("ddbglobal");
    let instance = unique("h").replace('_', "-");
    let daemon = Daemon::start(&config(
        &moto,
        &budget,
        &instance,
        &table,
        &[("us", "aws-us")],
    ))
    .await;
    wait_caught_up(&daemon, &budget, "us", 0.0).await;

    // One item per instance and probe, overwritten by every write: nothing accumulates.
    let key = format!("{instance}/{budget}/visible");
    let item = eu
        .call(
            Api::Dynamodb,
            "GetItem",
            &json!({ "TableName": table, "Key": { "id": { "S": key } }, "ConsistentRead": true }),
            deadline(),
        )
        .await
        .expect("GetItem")["Item"]
        .clone();
    assert_eq!(item["instance"]["S"], instance.as_str(), "{item}");
    assert_eq!(item["probe"]["S"], format!("{budget}/visible"), "{item}");
    let _ = marker_of(&item);
    let count = eu
        .call(
            Api::Dynamodb,
            "Scan",
            &json!({ "TableName": table, "Select": "COUNT" }),
            deadline(),
        )
        .await
        .expect("Scan");
    assert_eq!(
        count["Count"], 1,
        "one item per instance and probe: {count}"
    );
    assert!(
        replicator.backlog().applied >= 3,
        "markers went through the replicator"
    );

    // Paused: the us table keeps its last marker and answers reads.
    replicator.pause();
    let paused_at = lagbudget::clock::unix_now();
    let mut measured = Vec::new();
    for after in [3.0, 6.0] {
        let metrics = daemon
            .wait_for_metrics(&format!("a run {after} s into the pause"), PATIENCE, |m| {
                last_success(m, &budget, "us").is_some_and(|at| at >= paused_at + after)
                    && lag(m, &budget, "us").is_some()
            })
            .await;
        let lag = lag(&metrics, &budget, "us").expect("lag");
        let run_at = last_success(&metrics, &budget, "us").expect("a success");
        let since_pause = run_at - paused_at;
        let (first_seq, first_written_at) = replicator
            .first_pending()
            .expect("markers written since the pause are pending");
        let truth = run_at - first_written_at;
        println!(
            "paused: lag {lag:.3} s at {since_pause:.3} s into the pause; the first marker not \
             replicated (seq {first_seq}) is {truth:.3} s old"
        );
        assert!(
            lag >= since_pause - TOLERANCE && lag <= since_pause + TOLERANCE,
            "lag {lag:.3} s not within ±{TOLERANCE} s of the {since_pause:.3} s since the pause"
        );
        assert!(
            (lag - truth).abs() <= TOLERANCE,
            "lag {lag:.3} s not within ±{TOLERANCE} s of the first unreplicated marker's age \
             {truth:.3} s"
        );
        measured.push(lag);
    }
    assert!(measured[1] > measured[0], "the lag grows: {measured:?}");

    // Resumed: the backlog is applied and the lag is 0 again.
    replicator.resume();
    let resumed_at = lagbudget::clock::unix_now();
    wait_caught_up(&daemon, &budget, "us", resumed_at).await;
    assert_eq!(
        replicator.backlog().last_error,
        None,
        "the replicator never failed"
    );

    daemon.stop().await;
    drop(replicator);
    drop(moto);
}

/// The table missing in one region: that view is down with a `query` error saying the table
/// does not exist there and that lagbudget creates none, while the view of the other region
/// carries on at 0; `check --connect` says the same and checks the writer's table, and a
/// table keyed otherwise than `key_attribute` says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_without_the_table_is_down_with_why_and_the_others_carry_on() {
    let moto = Moto::start().await;
    let (eu, _us) = clients(&moto);
    let table = unique("canary").replace('_', "-");
    create_table(&eu, &table, false).await;

    let keyed_otherwise = format!("{table}-pk");
    crate::moto_support::create_table(&eu, &keyed_otherwise, "pk", false).await;
    let yaml = config(
        &moto,
        &unique("ddbkey"),
        "h1",
        &keyed_otherwise,
        &[("eu", "aws-eu")],
    );
    let lines = check_connect_lines(&load_config(&yaml)).await;
    let line = lines
        .iter()
        .find(|line| line.contains("[eu] (canary)"))
        .unwrap_or_else(|| panic!("a line for the eu view in {lines:?}"));
    assert!(
        line.contains(&format!(
            "query: table {keyed_otherwise} cannot hold the canary's item: its partition key is \
             `pk`"
        )) && line.contains("`key_attribute`"),
        "{line}"
    );

    let budget = unique("ddbmissing");
    let instance = unique("h").replace('_', "-");
    let yaml = config(
        &moto,
        &budget,
        &instance,
        &table,
        &[("us", "aws-us"), ("eu", "aws-eu")],
    );
    let lines = check_connect_lines(&load_config(&yaml)).await;
    let writer = lines
        .iter()
        .find(|line| line.contains("[eu] (canary)"))
        .unwrap_or_else(|| panic!("a line for the eu view in {lines:?}"));
    assert!(
        writer.contains(&format!("write: table {table} ACTIVE (key id)"))
            && writer.contains("shows no marker of this instance yet"),
        "{writer}"
    );
    let missing = lines
        .iter()
        .find(|line| line.contains("[us] (canary)"))
        .unwrap_or_else(|| panic!("a line for the us view in {lines:?}"));
    assert!(
        missing.contains(&format!(
            "table {table} does not exist in the region of source aws-us"
        )) && missing.contains("lagbudget creates no tables"),
        "{missing}"
    );

    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, "eu", 0.0).await;
    let down = daemon
        .wait_for_metrics("the us view down", PATIENCE, |m| {
            up(m, &budget, "us") == Some(0.0)
        })
        .await;
    assert_eq!(
        lag(&down, &budget, "us"),
        None,
        "no lag for a view that cannot be read"
    );
    let status = view_status(&daemon, &budget, "us").await;
    assert_eq!(status["error"]["reason"], "query", "{status}");
    let message = status["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!(
            "table {table} does not exist in the region of source aws-us"
        )) && message.contains("lagbudget creates no tables")
            && message.contains("partition key `id`"),
        "{message}"
    );
    assert_eq!(up(&down, &budget, "eu"), Some(1.0), "{}", down.text);

    daemon.stop().await;
    drop(moto);
}

/// A bare `{source}` on dynamodb sources writes and reads lagbudget's own item, in the
/// documented table `lagbudget-canary` keyed by `id`, once its owner has created it there.
#[tokio::test(flavor = "multi_thread")]
async fn a_bare_dynamodb_source_uses_the_lagbudget_canary_table() {
    let moto = Moto::start().await;
    let (eu, _us) = clients(&moto);
    create_table(&eu, "lagbudget-canary", false).await;
    let budget = unique("ddbbare");
    let instance = unique("h").replace('_', "-");
    let yaml = format!(
        "listen: 127.0.0.1:0
{sources}budgets:
  - name: {budget}
    max_lag: 60s
    interval: 1s
    timeout: 1s
    probes:
      - name: visible
        canary:
          write: {{ source: aws-eu }}
          read: [ {{ name: eu, source: aws-eu }} ]
          write_period: {WRITE_PERIOD}
          instance: {instance}
",
        sources = sources_yaml(&moto),
    );
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, "eu", 0.0).await;
    let item = eu
        .call(
            Api::Dynamodb,
            "GetItem",
            &json!({
                "TableName": "lagbudget-canary",
                "Key": { "id": { "S": format!("{instance}/{budget}/visible") } },
            }),
            deadline(),
        )
        .await
        .expect("GetItem")["Item"]
        .clone();
    assert_eq!(item["instance"]["S"], instance.as_str(), "{item}");
    daemon.stop().await;
    drop(moto);
}
