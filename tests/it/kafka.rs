//! `kafka_consumer_group` against librdkafka's mock cluster, a real Kafka-protocol peer:
//! records with known timestamps, groups committed at known offsets, transactions, a stalled
//! consumer and a broker that goes down.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::support::{Daemon, Metrics, PATIENCE, unique, wait_for};

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock after 1970")
}

/// A mock cluster with a producer, and helpers to shape topics and group offsets.
pub struct Cluster {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    producer: BaseProducer,
}

impl Cluster {
    pub fn start() -> Cluster {
        let mock = MockCluster::new(1).expect("mock cluster");
        let bootstrap = mock.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        Cluster {
            mock,
            bootstrap,
            producer,
        }
    }

    pub fn topic(&self, partitions: i32) -> String {
        let topic = unique("orders");
        self.mock
            .create_topic(&topic, partitions, 1)
            .expect("create topic");
        topic
    }

    /// Produces one record per timestamp to `partition`, in order.
    pub fn produce(&self, topic: &str, partition: i32, timestamps_ms: &[i64]) {
        for ts in timestamps_ms {
            self.producer
                .send(
                    BaseRecord::to(topic)
                        .partition(partition)
                        .key("k")
                        .payload("order")
                        .timestamp(*ts),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Commits `offsets` for `group` as a standalone consumer would (without joining).
    pub fn commit(&self, group: &str, offsets: &[(&str, i32, i64)]) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .expect("offset");
        }
        consumer.commit(&list, CommitMode::Sync).expect("commit");
    }

    pub fn config(&self, budgets: &str) -> String {
        format!(
            "listen: 127.0.0.1:0
sources:
  events: {{ kafka: {{ brokers: \"{}\" }} }}
budgets:
{budgets}",
            self.bootstrap
        )
    }
}

/// `count` timestamps one second apart, the first `age_s` seconds ago.
fn aged(count: i64, age_s: i64) -> Vec<i64> {
    let now = unix_ms();
    (0..count).map(|i| now - age_s * 1000 + i * 1000).collect()
}

fn budget(name: &str, max_lag: &str, probe: &str) -> String {
    format!(
        "  - name: {name}
    max_lag: {max_lag}
    probes:
      - name: group
        interval: 1s
        kafka_consumer_group: {probe}
"
    )
}

/// Issue acceptance: exact per-partition backlog and lag within ±1 s of the age of the record at
/// the committed offset; a caught-up group reads 0; a group without commits on a topic with data
/// is unknown; an empty topic reads 0.
#[tokio::test(flavor = "multi_thread")]
async fn lag_is_the_age_of_the_record_at_the_committed_offset() {
    let cluster = Cluster::start();
    let topic = cluster.topic(3);
    let empty = cluster.topic(2);
    let stamps = aged(10, 40);
    for partition in 0..3 {
        cluster.produce(&topic, partition, &stamps);
    }
    // p0: 6 behind from the record produced 36 s ago; p1: caught up; p2: 10 behind, 40 s.
    cluster.commit("behind", &[(&topic, 0, 4), (&topic, 1, 10), (&topic, 2, 0)]);
    cluster.commit(
        "caught-up",
        &[(&topic, 0, 10), (&topic, 1, 10), (&topic, 2, 10)],
    );
    let probe = |group: &str, t: &str, extra: &str| {
        format!("{{ source: events, group: {group}, topics: [{t}]{extra} }}")
    };
    let config = cluster.config(&format!(
        "{}{}{}{}{}",
        budget(
            "behind",
            "60s",
            &probe("behind", &topic, ", partition_detail: true")
        ),
        budget("caught-up", "60s", &probe("caught-up", &topic, "")),
        budget("no-commits", "60s", &probe("never-committed", &topic, "")),
        budget(
            "no-commits-earliest",
            "60s",
            &probe("never-committed", &topic, ", no_commit: earliest")
        ),
        budget("empty", "60s", &probe("never-committed", &empty, "")),
    ));
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    // One more run of every probe after the first, so that each has a success after its
    // first-record reads.
    let budgets = [
        "behind",
        "caught-up",
        "no-commits",
        "no-commits-earliest",
        "empty",
    ];
    let mut first = Vec::new();
    for budget in budgets {
        first.push(daemon.runs(budget, "group").await);
    }
    wait_for("one more run of every probe", PATIENCE, || async {
        for (budget, runs) in budgets.iter().zip(&first) {
            if daemon.runs(budget, "group").await <= *runs {
                return None;
            }
        }
        Some(())
    })
    .await;

    let m = daemon.metrics().await;
    let labels = [("budget", "behind"), ("probe", "group")];
    let lag = m.get("lagbudget_lag_seconds", &labels).expect("lag");
    let last_success = m
        .get("lagbudget_probe_last_success_timestamp_seconds", &labels)
        .expect("success");
    // The oldest pending record is p2's offset 0; its age at the last successful run:
    let expected = last_success - stamps[0] as f64 / 1000.0;
    println!("behind: lag {lag:.3} s, expected {expected:.3} s");
    assert!((lag - expected).abs() <= 1.0, "lag {lag} vs {expected}");
    assert_eq!(m.get("lagbudget_backlog_messages", &labels), Some(16.0));
    let partition = |p: &str| {
        let series = [
            ("budget", "behind"),
            ("probe", "group"),
            ("topic", topic.as_str()),
            ("partition", p),
        ];
        (
            m.get("lagbudget_partition_lag_seconds", &series),
            m.get("lagbudget_partition_backlog_messages", &series),
        )
    };
    let (p0_lag, p0_backlog) = partition("0");
    assert_eq!(p0_backlog, Some(6.0));
    let p0_expected = last_success - stamps[4] as f64 / 1000.0;
    assert!((p0_lag.expect("p0 lag") - p0_expected).abs() <= 1.0);
    assert_eq!(partition("1"), (Some(0.0), Some(0.0)));
    assert_eq!(partition("2").1, Some(10.0));
    assert_eq!(
        m.get(
            "lagbudget_kafka_timestamp_type",
            &[("budget", "behind"), ("timestamp_type", "CreateTime")]
        ),
        Some(1.0)
    );
    assert_eq!(m.get("lagbudget_kafka_data_loss", &labels), Some(0.0));

    let caught = [("budget", "caught-up"), ("probe", "group")];
    assert_eq!(m.get("lagbudget_lag_seconds", &caught), Some(0.0));
    assert_eq!(m.get("lagbudget_backlog_messages", &caught), Some(0.0));
    assert_eq!(daemon.state("caught-up").await, "ok");

    let empty_labels = [("budget", "empty"), ("probe", "group")];
    assert_eq!(m.get("lagbudget_lag_seconds", &empty_labels), Some(0.0));

    let no_commits = daemon.probe("no-commits", "group").await;
    assert_eq!(no_commits["error"]["reason"], "no_data", "{no_commits}");
    assert!(no_commits["lag_seconds"].is_null());
    assert!(!m.has_series("lagbudget_lag_seconds", &[("budget", "no-commits")]));
    daemon
        .wait_for_state("no-commits", "unknown", PATIENCE)
        .await;
    let earliest = m
        .get(
            "lagbudget_lag_seconds",
            &[("budget", "no-commits-earliest"), ("probe", "group")],
        )
        .expect("no_commit: earliest measures from the first record");
    assert!(
        (earliest - expected).abs() <= 1.0,
        "{earliest} vs {expected}"
    );

    // A steady group costs no record reads: its lag keeps growing with the clock alone, by as
    // much as the time between two successful runs (two runs or more apart).
    let success = |m: &Metrics| m.get("lagbudget_probe_last_success_timestamp_seconds", &labels);
    let later = daemon
        .wait_for_metrics("a success 2 s after the first one read", PATIENCE, |m| {
            success(m).is_some_and(|at| at >= last_success + 2.0)
        })
        .await;
    let lag_later = later.get("lagbudget_lag_seconds", &labels).expect("lag");
    let between = success(&later).expect("success") - last_success;
    println!("steady group: lag {lag:.3} s → {lag_later:.3} s over {between:.3} s of runs");
    assert!(
        (lag_later - lag - between).abs() <= 1.0,
        "waiting lag grows with the clock: {lag} → {lag_later} over {between} s"
    );
    daemon.stop().await;
}

/// Issue acceptance: committed and aborted transactions followed by a group committed at the end
/// read 0, not a timeout. (The mock cluster writes no control records, so a commit pointing at a
/// transaction marker cannot be shaped here; that path — nothing readable before the last stable
/// offset — reads as 0 through the reader's end-of-partition event.)
#[tokio::test(flavor = "multi_thread")]
async fn transaction_markers_read_as_caught_up() {
    let cluster = Cluster::start();
    let topic = cluster.topic(1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("transactional.id", unique("txn"))
        .create()
        .expect("transactional producer");
    let timeout = Duration::from_secs(10);
    producer.init_transactions(timeout).expect("init");
    for commit in [true, false] {
        producer.begin_transaction().expect("begin");
        for _ in 0..3 {
            producer
                .send(
                    BaseRecord::to(&topic)
                        .partition(0)
                        .key("k")
                        .payload("order")
                        .timestamp(unix_ms() - 30_000),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(timeout).expect("flush");
        if commit {
            producer.commit_transaction(timeout).expect("commit txn");
        } else {
            producer.abort_transaction(timeout).expect("abort txn");
        }
    }
    let end = {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cluster.bootstrap)
            .set("group.id", unique("watermarks"))
            .create()
            .expect("consumer");
        consumer
            .fetch_watermarks(&topic, 0, timeout)
            .expect("watermarks")
            .1
    };
    println!("two transactions: high watermark {end}");
    cluster.commit("at-end", &[(&topic, 0, end)]);
    cluster.commit("at-start", &[(&topic, 0, 0)]);
    let probe = |group: &str| format!("{{ source: events, group: {group}, topics: [{topic}] }}");
    let config = cluster.config(&format!(
        "{}{}",
        budget("at-end", "60s", &probe("at-end")),
        budget("at-start", "60s", &probe("at-start")),
    ));
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    let at_end = daemon.probe("at-end", "group").await;
    assert_eq!(at_end["up"], true, "{at_end}");
    assert_eq!(at_end["lag_seconds"], 0.0, "{at_end}");
    assert_eq!(at_end["backlog"]["value"], 0.0, "{at_end}");
    // The committed transaction's first record, read with read_committed, is 30 s old.
    let at_start = daemon.probe("at-start", "group").await;
    let lag = at_start["lag_seconds"].as_f64().expect("lag");
    assert!((29.0..33.0).contains(&lag), "{at_start}");
    daemon.stop().await;
}

/// Issue acceptance: a consumer that stops committing while behind is flagged stalled and its
/// lag keeps growing.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_stops_committing_is_stalled_and_its_lag_grows() {
    let cluster = Cluster::start();
    let topic = cluster.topic(1);
    cluster.produce(&topic, 0, &aged(5, 5));
    cluster.commit("stuck", &[(&topic, 0, 2)]);
    let config = cluster.config(&format!(
        "  - name: stuck
    max_lag: 60s
    stall_after: 3s
    probes:
      - name: group
        interval: 1s
        kafka_consumer_group: {{ source: events, group: stuck, topics: [{topic}] }}
"
    ));
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    let labels = [("budget", "stuck"), ("probe", "group")];
    let first = daemon.metrics().await;
    assert_eq!(first.get("lagbudget_stalled", &labels), Some(0.0));
    let success = |m: &Metrics| {
        m.get("lagbudget_probe_last_success_timestamp_seconds", &labels)
            .expect("last success")
    };
    let lag_before = first.get("lagbudget_lag_seconds", &labels).expect("lag");
    // New records keep arriving; the group's commit does not move.
    cluster.produce(&topic, 0, &aged(2, 0));
    let stalled_after = daemon
        .wait_for_metrics("stalled", PATIENCE, |m| {
            m.get("lagbudget_stalled", &labels) == Some(1.0)
        })
        .await;
    let lag_after = stalled_after
        .get("lagbudget_lag_seconds", &labels)
        .expect("lag");
    // Stalled after 3 s without progress: at least two more runs, each adding the time
    // between them to the lag.
    let between = success(&stalled_after) - success(&first);
    println!("stalled: lag {lag_before:.3} s → {lag_after:.3} s over {between:.3} s of runs");
    assert!(
        between >= 1.0,
        "stalled only after runs 3 s apart: {between}"
    );
    assert!(
        (lag_after - lag_before - between).abs() <= 1.0,
        "lag grows with the clock: {lag_before} → {lag_after} over {between} s"
    );
    assert_eq!(
        stalled_after.get("lagbudget_backlog_messages", &labels),
        Some(5.0)
    );
    daemon.stop().await;
}

/// Issue acceptance: `broker_down` ⇒ down with a reason, stale after 3 intervals; `broker_up` ⇒
/// recovers without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn broker_down_is_unknown_and_recovers() {
    let cluster = Cluster::start();
    let topic = cluster.topic(1);
    cluster.produce(&topic, 0, &aged(3, 3));
    cluster.commit("g", &[(&topic, 0, 3)]);
    let config = cluster.config(&budget(
        "kafka",
        "10s",
        &format!("{{ source: events, group: g, topics: [{topic}] }}"),
    ));
    let daemon = Daemon::start(&config).await;
    daemon.wait_for_state("kafka", "ok", PATIENCE).await;
    cluster.mock.broker_down(1).expect("broker down");
    let labels = [("budget", "kafka"), ("probe", "group")];
    daemon
        .wait_for_metrics("probe down", PATIENCE, |m| {
            m.get("lagbudget_probe_up", &labels) == Some(0.0)
        })
        .await;
    let reason = daemon.probe("kafka", "group").await["error"]["reason"].clone();
    println!("broker down: reason {reason}");
    assert!(reason == "timeout" || reason == "connect", "{reason}");
    daemon.wait_for_state("kafka", "unknown", PATIENCE).await;
    let m = daemon.metrics().await;
    assert!(!m.has_series("lagbudget_lag_seconds", &labels));
    // Unknown once stale: more than 3 intervals after the last success, by the daemon's clock.
    let unknown_since = m
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", "kafka")],
        )
        .expect("state since");
    let last_success = m
        .get("lagbudget_probe_last_success_timestamp_seconds", &labels)
        .expect("last success");
    println!(
        "broker down: unknown {:.3} s after the last success",
        unknown_since - last_success
    );
    assert!(
        unknown_since - last_success >= 3.0,
        "stale after 3 intervals (1 s): unknown {unknown_since}, last success {last_success}"
    );
    cluster.mock.broker_up(1).expect("broker up");
    let took = daemon
        .wait_for_state("kafka", "ok", Duration::from_secs(30))
        .await;
    println!("broker up: ok after {took:?}");
    daemon.stop().await;
}

/// librdkafka rejects what the loader cannot know (property names); `check` reports it, exits
/// 2, and never repeats the value, which may be a credential under a misspelt key.
#[test]
fn check_reports_client_property_errors_without_their_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("kafka.yaml");
    std::fs::write(
        &config,
        "sources:\n  events: { kafka: { brokers: \"127.0.0.1:9092\", properties: { sasl.pasword: hunter2-Xq9 } } }\nbudgets:\n  - name: b\n    max_lag: 30s\n    probes:\n      - name: p\n        kafka_consumer_group: { source: events, group: g, topics: [orders] }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sources.events: cannot create the Kafka client: property `sasl.pasword`"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-Xq9"), "{stderr}");
}

/// A group whose commits move is re-read at its new offsets (regression: a partition paused by
/// one read stayed paused for the next), and one partition stuck while another advances is a
/// stall (regression: progress was the sum of all commits).
#[tokio::test(flavor = "multi_thread")]
async fn moving_commits_are_followed_and_one_stuck_partition_is_a_stall() {
    let cluster = Cluster::start();
    let topic = cluster.topic(2);
    let stamps = aged(20, 60);
    cluster.produce(&topic, 0, &stamps);
    cluster.produce(&topic, 1, &stamps);
    cluster.commit("moving", &[(&topic, 0, 2), (&topic, 1, 2)]);
    let config = cluster.config(&format!(
        "  - name: moving
    max_lag: 120s
    stall_after: 3s
    probes:
      - name: group
        interval: 1s
        kafka_consumer_group: {{ source: events, group: moving, topics: [{topic}] }}
"
    ));
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    let labels = [("budget", "moving"), ("probe", "group")];
    // Both partitions at offset 2: the oldest pending record is stamps[2].
    let at = |offset: usize| {
        let daemon = &daemon;
        let expected_ts = stamps[offset] as f64 / 1000.0;
        async move {
            wait_for(
                &format!("lag of the record at offset {offset}"),
                PATIENCE,
                || async {
                    let m = daemon.metrics().await;
                    let lag = m.get("lagbudget_lag_seconds", &labels)?;
                    let success =
                        m.get("lagbudget_probe_last_success_timestamp_seconds", &labels)?;
                    ((lag - (success - expected_ts)).abs() <= 1.0).then_some(lag)
                },
            )
            .await
        }
    };
    at(2).await;
    // p0 advances twice (read again at new offsets each time); p1 stays at 2. A successful run
    // at the new offsets shows in the backlog (20 records per partition); the run after it
    // must succeed too.
    for offset in [8, 14] {
        cluster.commit("moving", &[(&topic, 0, offset), (&topic, 1, 2)]);
        let backlog = (20 - offset + 18) as f64;
        daemon
            .wait_for_metrics(
                &format!("a run at offset {offset} (backlog {backlog})"),
                PATIENCE,
                |m| m.get("lagbudget_backlog_messages", &labels) == Some(backlog),
            )
            .await;
        daemon.wait_for_runs("moving", "group", 1, PATIENCE).await;
        let probe = daemon.probe("moving", "group").await;
        assert_eq!(probe["up"], true, "re-read at offset {offset}: {probe}");
    }
    // The oldest pending record is still p1's offset 2, and p1 has not moved for > 3 s.
    let lag = at(2).await;
    daemon
        .wait_for_metrics("one stuck partition is a stall", PATIENCE, |m| {
            m.get("lagbudget_stalled", &labels) == Some(1.0)
        })
        .await;
    // Now p1 moves past p0: the oldest pending record becomes p0's offset 14.
    cluster.commit("moving", &[(&topic, 0, 14), (&topic, 1, 18)]);
    let later = at(14).await;
    println!("stuck partition: lag {lag:.3} s; after it moved: {later:.3} s");
    assert!(later < lag - 5.0, "{lag} → {later}");
    daemon.stop().await;
}
