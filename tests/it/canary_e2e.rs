//! `canary` end to end across hops: the canary writes a row in PostgreSQL (the machine's), a
//! worker the test controls copies new rows to a Kafka topic (librdkafka's mock cluster), and a
//! second worker applies the topic to a Redis key (a private `redis-server`). One view reads the
//! topic (`kafka-hop`), one the key (`redis-view`). Pausing either worker shows in the canary's
//! lag within ±1 s of the pause, and the per-hop view points at the paused hop.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use crate::cache::PrivateRedis;
use crate::kafka::Cluster;
use crate::support::{Daemon, Metrics, PATIENCE, SHARED_PG_DSN, connect, unique};

/// How far a measured lag may be from the injected pause.
const TOLERANCE_S: f64 = 1.0;
/// How long each pause lasts at least (observed as the view's lag).
const PAUSE_S: f64 = 5.0;

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .expect("clock after 1970")
}

/// A worker the test can pause: each step of its loop holds `gate`, so once `pause` returns
/// no step is in progress and none starts until `resume`.
pub(crate) struct Gate {
    pub(crate) gate: Arc<Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            gate: Arc::new(Mutex::new(())),
            held: None,
        }
    }

    /// Pauses the worker; returns when it is paused, the pause's start (unix seconds).
    pub(crate) async fn pause(&mut self) -> f64 {
        self.held = Some(self.gate.clone().lock_owned().await);
        unix_now()
    }

    pub(crate) fn resume(&mut self) {
        self.held = None;
    }
}

/// Worker 1: copies new marker rows from the table to the topic, as marker JSON.
fn copy_rows_to_kafka(
    table: String,
    topic: String,
    bootstrap: String,
    gate: Arc<Mutex<()>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let db = connect(SHARED_PG_DSN).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        let mut copied = i64::MIN;
        while !stop.is_cancelled() {
            {
                let _step = gate.lock().await;
                let rows = db
                    .query(
                        &format!(
                            "SELECT instance, probe, seq, \
                             to_char(written_at AT TIME ZONE 'UTC', \
                             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
                             FROM {table} WHERE seq > $1 ORDER BY seq"
                        ),
                        &[&copied],
                    )
                    .await
                    .expect("read new rows");
                for row in rows {
                    let (instance, probe, seq, written_at): (String, String, i64, String) =
                        (row.get(0), row.get(1), row.get(2), row.get(3));
                    let json = serde_json::json!({
                        "instance": instance, "probe": probe, "seq": seq, "written_at": written_at,
                    })
                    .to_string();
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&instance).payload(&json),
                            Duration::from_secs(5),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produce");
                    copied = seq;
                }
            }
            // Pacing, not synchronisation: the worker polls its table ten times a second.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
}

/// Worker 2: applies every record of the topic to `view:<instance>` in Redis (SET to the JSON).
fn apply_topic_to_redis(
    topic: String,
    bootstrap: String,
    redis_url: String,
    gate: Arc<Mutex<()>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", unique("view-worker"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&list).expect("assign");
        let mut redis = redis::Client::open(redis_url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        loop {
            let record = tokio::select! {
                _ = stop.cancelled() => break,
                record = consumer.recv() => record,
            };
            let Ok(record) = record else { continue };
            let Some(payload) = record.payload() else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_slice(payload).expect("marker json");
            let instance = json["instance"].as_str().expect("instance").to_owned();
            let _step = tokio::select! {
                _ = stop.cancelled() => break,
                step = gate.lock() => step,
            };
            let mut set = redis::cmd("SET");
            set.arg(format!("view:{instance}")).arg(json.to_string());
            set.query_async::<()>(&mut redis).await.expect("SET");
        }
    })
}

/// The view's lag and the time of the run that measured it.
fn view(metrics: &Metrics, budget: &str, name: &str) -> Option<(f64, f64)> {
    lag_of(metrics, budget, "canary", name)
}

/// A canary view's lag and the time of the run that measured it.
pub(crate) fn lag_of(
    metrics: &Metrics,
    budget: &str,
    probe: &str,
    view: &str,
) -> Option<(f64, f64)> {
    let labels = [("budget", budget), ("probe", probe), ("replica", view)];
    Some((
        metrics.get("lagbudget_lag_seconds", &labels)?,
        metrics.get("lagbudget_probe_last_success_timestamp_seconds", &labels)?,
    ))
}

/// Waits until both views read below the tolerance: markers flow through both hops.
async fn wait_flowing(daemon: &Daemon, budget: &str) -> Metrics {
    daemon
        .wait_for_metrics("both views to catch up", PATIENCE, |m| {
            let lag = |name| view(m, budget, name).map(|(lag, _)| lag);
            lag("kafka-hop").is_some_and(|l| l < TOLERANCE_S)
                && lag("redis-view").is_some_and(|l| l < TOLERANCE_S)
        })
        .await
}

/// Issue acceptance: PostgreSQL → worker → Kafka → worker → Redis. Pausing the first worker
/// makes both views lag by the pause (±1 s); pausing the second makes only the Redis view lag
/// by the pause (±1 s) while the Kafka view stays under 1 s; resumed, both read under 1 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_hop_shows_in_the_views_past_it() {
    let cluster = Cluster::start();
    let topic = unique("canary_e2e");
    cluster.mock.create_topic(&topic, 1, 1).expect("topic");
    let redis = PrivateRedis::start().await;
    let table = unique("canary_e2e");
    let db = connect(SHARED_PG_DSN).await;
    db.batch_execute(&format!(
        "CREATE TABLE {table} (instance text NOT NULL, probe text NOT NULL, \
         seq bigint NOT NULL, written_at timestamptz NOT NULL)"
    ))
    .await
    .expect("create table");

    let stop = CancellationToken::new();
    let (mut copier, mut applier) = (Gate::new(), Gate::new());
    let worker1 = copy_rows_to_kafka(
        table.clone(),
        topic.clone(),
        cluster.bootstrap.clone(),
        copier.gate.clone(),
        stop.clone(),
    );
    let worker2 = apply_topic_to_redis(
        topic.clone(),
        cluster.bootstrap.clone(),
        redis.url(),
        applier.gate.clone(),
        stop.clone(),
    );

    let budget = "e2e";
    let instance = unique("e2e").replace('_', "-");
    let config = format!(
        "listen: 127.0.0.1:0
sources:
  pg: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  events: {{ kafka: {{ brokers: \"{bootstrap}\" }} }}
  cache: {{ redis: {{ url: \"{redis_url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 60s
    probes:
      - name: canary
        interval: 500ms
        canary:
          write:
            source: pg
            sql: \"INSERT INTO {table}(instance, probe, seq, written_at) VALUES ($instance, $probe, $seq, now())\"
          read:
            - {{ name: kafka-hop, source: events, topic: {topic} }}
            - {{ name: redis-view, source: cache, key: \"view:$instance\", pointer: /seq }}
          write_period: 200ms
          instance: {instance}
",
        bootstrap = cluster.bootstrap,
        redis_url = redis.url(),
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    wait_flowing(&daemon, budget).await;

    // Worker 1 paused: nothing new reaches Kafka, so neither view shows new markers.
    let paused_at = copier.pause().await;
    let m = daemon
        .wait_for_metrics("the redis view to lag by the pause", PATIENCE, |m| {
            view(m, budget, "redis-view").is_some_and(|(lag, _)| lag >= PAUSE_S)
                && view(m, budget, "kafka-hop").is_some_and(|(lag, _)| lag >= PAUSE_S)
        })
        .await;
    for name in ["kafka-hop", "redis-view"] {
        let (lag, at) = view(&m, budget, name).expect("view");
        let injected = at - paused_at;
        println!("worker 1 paused: {name} lag {lag:.3} s, paused for {injected:.3} s at its run");
        assert!(
            (lag - injected).abs() <= TOLERANCE_S,
            "{name}: lag {lag:.3} s vs pause {injected:.3} s"
        );
    }
    copier.resume();
    let m = wait_flowing(&daemon, budget).await;
    for name in ["kafka-hop", "redis-view"] {
        println!(
            "worker 1 resumed: {name} lag {:.3} s",
            view(&m, budget, name).expect("view").0
        );
    }

    // Worker 2 paused: Kafka still gets every marker, Redis none.
    let paused_at = applier.pause().await;
    let m = daemon
        .wait_for_metrics("the redis view to lag by the pause", PATIENCE, |m| {
            view(m, budget, "redis-view").is_some_and(|(lag, _)| lag >= PAUSE_S)
        })
        .await;
    let (lag, at) = view(&m, budget, "redis-view").expect("redis view");
    let injected = at - paused_at;
    println!("worker 2 paused: redis-view lag {lag:.3} s, paused for {injected:.3} s at its run");
    assert!(
        (lag - injected).abs() <= TOLERANCE_S,
        "redis-view: lag {lag:.3} s vs pause {injected:.3} s"
    );
    // The hop before the paused one keeps up all along: check it over several more runs.
    daemon
        .watch_runs((budget, "canary"), 4, PATIENCE, |m| {
            if let Some((lag, _)) = view(m, budget, "kafka-hop") {
                assert!(
                    lag < TOLERANCE_S,
                    "kafka-hop lags {lag:.3} s while only worker 2 is paused"
                );
            }
        })
        .await;
    applier.resume();
    let m = wait_flowing(&daemon, budget).await;
    for name in ["kafka-hop", "redis-view"] {
        println!(
            "worker 2 resumed: {name} lag {:.3} s",
            view(&m, budget, name).expect("view").0
        );
    }

    daemon.stop().await;
    stop.cancel();
    let _ = worker1.await;
    let _ = worker2.await;
    let mut con = redis.connection().await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("view:{instance}"))
        .query_async(&mut con)
        .await
        .expect("DEL");
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop table");
}
