//! `lagbudget demo`: the daemon measuring an embedded mock Kafka cluster (librdkafka's
//! `MockCluster`, the real Kafka protocol on loopback ports) with a producer and three consumer
//! groups that behave in telling ways. No setup, and not real data.
//!
//! The demo is a user of the library, not a part of it: it writes a config file, loads it
//! through the real loader (`config::load`) and calls the real `run`, so the probe that reads
//! the mock cluster is the same code that reads a production cluster through its bootstrap
//! servers. rdkafka calls block, so the cluster, the producer and every consumer live on their
//! own std threads, stopped through one flag; every wait is bounded.
//!
//! The script, from the moment the cluster is up:
//! - `orders` (3 partitions) gets 10 records a second, `payments` (2 partitions) 4 a second,
//!   each with its creation time as the record timestamp.
//! - `loyalty-service` keeps up with `orders`, but stops reading 12 s after the start and then
//!   every 45 s, for 20 s each time: budget `loyalty-points` (10 s) goes ok → warn → breach and
//!   back to ok once it has caught up.
//! - `search-indexer` always keeps up with `orders`: `search-index` stays ok.
//! - `analytics-loader` reads `payments` for 20 s, then leaves the group for good while
//!   payments keep coming: `analytics-dashboard` (30 s) breaches and its feed is stalled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Where `lagbudget demo` serves HTTP unless `--listen` says otherwise (loopback only: the
/// demo is for the person at this machine).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The demo's budgets, in the order of its config.
pub const BUDGETS: [&str; 3] = [LOYALTY_BUDGET, SEARCH_BUDGET, ANALYTICS_BUDGET];
/// The budget that goes ok → breach → ok in a cycle.
pub const LOYALTY_BUDGET: &str = "loyalty-points";
/// The budget that stays ok.
pub const SEARCH_BUDGET: &str = "search-index";
/// The budget whose consumer leaves for good.
pub const ANALYTICS_BUDGET: &str = "analytics-dashboard";

const ORDERS: Topic = Topic {
    name: "orders",
    partitions: 3,
    records_per_second: 10,
};
const PAYMENTS: Topic = Topic {
    name: "payments",
    partitions: 2,
    records_per_second: 4,
};

const LOYALTY_GROUP: &str = "loyalty-service";
const SEARCH_GROUP: &str = "search-indexer";
const ANALYTICS_GROUP: &str = "analytics-loader";

/// `loyalty-service` stops reading this long after the start…
const LOYALTY_FIRST_PAUSE: Duration = Duration::from_secs(12);
/// …then again this long after each previous stop…
const LOYALTY_PAUSE_EVERY: Duration = Duration::from_secs(45);
/// …for this long each time (twice its 10 s budget).
const LOYALTY_PAUSE_FOR: Duration = Duration::from_secs(20);
/// `analytics-loader` leaves its group for good this long after the start.
const ANALYTICS_STOPS_AFTER: Duration = Duration::from_secs(20);

/// Brokers of the mock cluster.
const BROKERS: i32 = 3;
/// How often a consumer that keeps up commits what it has read.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// The longest a worker thread goes without looking at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How long the cluster may take to start, create topics and seed the groups' offsets.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// How long the producer and consumers get to stop (flush, leave their groups).
const CLIENTS_STOP_LIMIT: Duration = Duration::from_secs(10);
/// How long the cluster gets to shut down after its clients.
const CLUSTER_STOP_LIMIT: Duration = Duration::from_secs(5);

/// The demo config. `@BROKERS@` becomes the mock cluster's bootstrap servers; `listen` is
/// only a placeholder, the demo serves on the address it was given.
const CONFIG_TEMPLATE: &str = r#"# The config that `lagbudget demo` runs: three consumer groups on an embedded mock Kafka
# cluster (librdkafka's mock brokers on loopback ports). Not real data.
listen: 127.0.0.1:9464

sources:
  demo-kafka:
    kafka:
      brokers: "@BROKERS@"

budgets:
  - name: loyalty-points
    description: "Demo: loyalty balances trail paid orders (group loyalty-service on topic orders). The demo's consumer stops for 20 s every 45 s, so this budget breaches and recovers."
    owner: demo-team-loyalty
    labels: { demo: "true", service: loyalty }
    max_lag: 10s
    interval: 1s
    objective: { target: 99%, window: 1h }
    probes:
      - name: loyalty-service
        kafka_consumer_group: { source: demo-kafka, group: loyalty-service, topics: [orders] }

  - name: search-index
    description: "Demo: the search index trails orders (group search-indexer on topic orders). The demo's consumer always keeps up."
    owner: demo-team-search
    labels: { demo: "true", service: search }
    max_lag: 10s
    interval: 1s
    objective: { target: 99%, window: 1h }
    probes:
      - name: search-indexer
        kafka_consumer_group: { source: demo-kafka, group: search-indexer, topics: [orders] }

  - name: analytics-dashboard
    description: "Demo: the analytics dashboard trails payments (group analytics-loader on topic payments). The demo's consumer leaves for good after 20 s, so lag grows and the feed stalls."
    owner: demo-team-analytics
    labels: { demo: "true", service: analytics }
    max_lag: 30s
    interval: 2s
    stall_after: 15s
    severity: ticket
    objective: { target: 99%, window: 1h }
    probes:
      - name: analytics-loader
        kafka_consumer_group: { source: demo-kafka, group: analytics-loader, topics: [payments] }
"#;

/// The demo config for a cluster at `brokers` (`host:port,…`).
pub fn config_yaml(brokers: &str) -> String {
    CONFIG_TEMPLATE.replace("@BROKERS@", brokers)
}

/// Runs the demo until `shutdown` is cancelled: starts the mock cluster and its clients, loads
/// the demo config through the real loader, serves on `listen`, then stops everything. An
/// error if any part failed, or if a thread of the demo did not stop in time.
pub async fn run_demo(listen: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let kafka = tokio::select! {
        kafka = Kafka::start() => kafka?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let outcome = serve(&kafka, listen, shutdown).await;
    let stopped = kafka.stop().await;
    outcome.and(stopped)
}

/// Loads the demo config, binds `listen` and runs the daemon until `shutdown`.
async fn serve(
    kafka: &Kafka,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config_file = ConfigFile::write(&config_yaml(&kafka.bootstrap))?;
    let config = crate::config::load(&config_file.path).map_err(|errors| {
        anyhow::anyhow!("the demo config does not load (a bug in lagbudget):\n{errors}")
    })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    eprint!("{}", banner(address, &kafka.bootstrap, &config_file.path));
    tracing::info!(%address, "listening");
    let settings = crate::RunSettings {
        config,
        loader: None,
        enable_lifecycle: false,
        reload_on_sighup: false,
    };
    crate::run(settings, listener, shutdown).await
}

/// What the demo prints on stderr before it starts serving.
fn banner(address: SocketAddr, brokers: &str, config: &Path) -> String {
    let base = format!("http://{address}");
    format!(
        "
lagbudget demo — an embedded mock Kafka cluster, not real data

  status page   {base}/
  metrics       {base}/metrics
  budgets API   {base}/api/v1/budgets
  mock Kafka    {brokers} (topics `orders`, 3 partitions, 10 records/s; `payments`, 2 partitions, 4 records/s)
  config        {config} (removed on exit)

What to watch (times from now):
  {LOYALTY_BUDGET:<20} group `{LOYALTY_GROUP}` keeps up, but stops reading at {first} s and every {every} s after,
  {blank:<20} for {pause} s: ok → warn → breach (lag over its 10 s budget) → ok once it has caught up.
  {SEARCH_BUDGET:<20} group `{SEARCH_GROUP}` always keeps up: ok, lag about a second or less.
  {ANALYTICS_BUDGET:<20} group `{ANALYTICS_GROUP}` leaves for good at {stop} s while payments keep coming:
  {blank:<20} lag grows past its 30 s budget (breach) and the feed is stalled.

  curl -s {base}/api/v1/budgets/{LOYALTY_BUDGET}
  curl -s {base}/metrics | grep -E '^lagbudget_(lag_seconds|state|stalled)'

Ctrl-C stops the demo.

",
        blank = "",
        first = LOYALTY_FIRST_PAUSE.as_secs(),
        every = LOYALTY_PAUSE_EVERY.as_secs(),
        pause = LOYALTY_PAUSE_FOR.as_secs(),
        stop = ANALYTICS_STOPS_AFTER.as_secs(),
        config = config.display(),
    )
}

/// The demo config on disk for the loader; the directory is removed on drop.
struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    fn write(yaml: &str) -> anyhow::Result<ConfigFile> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("lagbudget-demo-{}-{nanos}", std::process::id()));
        // `create_dir`, not `create_dir_all`: a directory that already exists is not ours.
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = ConfigFile {
            path: dir.join("lagbudget-demo.yaml"),
            dir,
        };
        std::fs::write(&file.path, yaml)
            .with_context(|| format!("writing {}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy)]
struct Topic {
    name: &'static str,
    partitions: i32,
    records_per_second: u32,
}

/// How a demo consumer group behaves over time.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads and commits all the time.
    KeepsUp,
    /// Reads, but stops reading (and so committing) at the times `loyalty_paused` says.
    FallsBehindPeriodically,
    /// Reads for a while, then leaves its group for good.
    LeavesAfter(Duration),
}

/// Whether `loyalty-service` is not reading `elapsed` after the start.
fn loyalty_paused(elapsed: Duration) -> bool {
    let Some(since_first) = elapsed.checked_sub(LOYALTY_FIRST_PAUSE) else {
        return false;
    };
    let into_cycle = since_first.as_millis() % LOYALTY_PAUSE_EVERY.as_millis();
    into_cycle < LOYALTY_PAUSE_FOR.as_millis()
}

/// The flag the client threads watch. Set on drop too, so that a demo dropped without `stop`
/// (a panic, an aborted task) does not leave its clients running.
struct StopFlag(Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a client thread runs.
type ClientBody = Box<dyn FnOnce() + Send>;

/// The running mock cluster and its clients.
struct Kafka {
    bootstrap: String,
    stop: StopFlag,
    clients: Vec<(&'static str, JoinHandle<()>)>,
    cluster: JoinHandle<()>,
    /// Dropping (or sending on) this lets the cluster thread destroy the cluster.
    cluster_stop: std::sync::mpsc::Sender<()>,
}

impl Kafka {
    /// Starts the cluster (its own thread: a `MockCluster` must stay on the thread that made
    /// it), creates the topics, seeds the groups' offsets, then starts the clients.
    async fn start() -> anyhow::Result<Kafka> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (cluster_stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let cluster = std::thread::Builder::new()
            .name("demo-kafka-cluster".into())
            .spawn(move || cluster_thread(ready_tx, stop_rx))
            .context("starting the mock Kafka cluster thread")?;
        let bootstrap = match tokio::time::timeout(STARTUP_LIMIT, ready_rx).await {
            Ok(Ok(Ok(bootstrap))) => bootstrap,
            Ok(Ok(Err(e))) => return Err(e.context("starting the mock Kafka cluster")),
            Ok(Err(_)) => anyhow::bail!("the mock Kafka cluster thread ended while starting"),
            Err(_) => anyhow::bail!(
                "the mock Kafka cluster did not start within {}s",
                STARTUP_LIMIT.as_secs()
            ),
        };
        tracing::info!(brokers = %bootstrap, "mock Kafka cluster running");

        let mut kafka = Kafka {
            bootstrap,
            stop: StopFlag(Arc::new(AtomicBool::new(false))),
            clients: Vec::new(),
            cluster,
            cluster_stop,
        };
        let started = Instant::now();
        let clients: [(&'static str, ClientBody); 4] = [
            ("demo-producer", {
                let (brokers, stop) = (kafka.bootstrap.clone(), kafka.stop.0.clone());
                Box::new(move || produce(&brokers, &[ORDERS, PAYMENTS], &stop))
            }),
            ("demo-loyalty-service", {
                let (brokers, stop) = (kafka.bootstrap.clone(), kafka.stop.0.clone());
                Box::new(move || {
                    consume(
                        &brokers,
                        LOYALTY_GROUP,
                        ORDERS,
                        Behaviour::FallsBehindPeriodically,
                        started,
                        &stop,
                    )
                })
            }),
            ("demo-search-indexer", {
                let (brokers, stop) = (kafka.bootstrap.clone(), kafka.stop.0.clone());
                Box::new(move || {
                    consume(
                        &brokers,
                        SEARCH_GROUP,
                        ORDERS,
                        Behaviour::KeepsUp,
                        started,
                        &stop,
                    )
                })
            }),
            ("demo-analytics-loader", {
                let (brokers, stop) = (kafka.bootstrap.clone(), kafka.stop.0.clone());
                Box::new(move || {
                    consume(
                        &brokers,
                        ANALYTICS_GROUP,
                        PAYMENTS,
                        Behaviour::LeavesAfter(ANALYTICS_STOPS_AFTER),
                        started,
                        &stop,
                    )
                })
            }),
        ];
        for (name, body) in clients {
            match std::thread::Builder::new().name(name.into()).spawn(body) {
                Ok(handle) => kafka.clients.push((name, handle)),
                Err(e) => {
                    let error = anyhow::Error::new(e).context(format!("starting thread {name}"));
                    return Err(match kafka.stop().await {
                        Ok(()) => error,
                        Err(stop) => error.context(format!("{stop:#}")),
                    });
                }
            }
        }
        Ok(kafka)
    }

    /// Stops the clients (bounded), then the cluster (bounded). An error names the threads
    /// that did not stop in time or panicked.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.0.store(true, Ordering::SeqCst);
        let mut problems = join_within(self.clients, CLIENTS_STOP_LIMIT).await;
        let _ = self.cluster_stop.send(());
        problems.extend(
            join_within(
                vec![("demo-kafka-cluster", self.cluster)],
                CLUSTER_STOP_LIMIT,
            )
            .await,
        );
        if problems.is_empty() {
            tracing::info!("demo Kafka cluster and clients stopped");
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "demo threads did not stop cleanly: {}",
                problems.join("; ")
            ))
        }
    }
}

/// Waits until every thread has finished or `limit` has passed, without blocking the async
/// runtime; returns a description of each thread that is still running or panicked. Threads
/// still running are left detached (they end with the process).
async fn join_within(threads: Vec<(&'static str, JoinHandle<()>)>, limit: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    while threads.iter().any(|(_, h)| !h.is_finished()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut problems = Vec::new();
    for (name, handle) in threads {
        if !handle.is_finished() {
            problems.push(format!("{name} still running after {}s", limit.as_secs()));
        } else if handle.join().is_err() {
            problems.push(format!("{name} panicked"));
        }
    }
    problems
}

/// The body of the cluster thread: create, report, wait for the stop signal, destroy.
fn cluster_thread(
    ready: oneshot::Sender<anyhow::Result<String>>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let cluster = match MockCluster::new(BROKERS) {
        Ok(cluster) => cluster,
        Err(e) => {
            let _ = ready.send(Err(
                anyhow::Error::new(e).context("creating the mock cluster")
            ));
            return;
        }
    };
    let bootstrap = cluster.bootstrap_servers();
    let prepared = prepare(&cluster, &bootstrap);
    let failed = prepared.is_err();
    if ready.send(prepared.map(|()| bootstrap)).is_err() || failed {
        return;
    }
    // Until the demo stops (a message) or its `Kafka` is gone (the channel closes).
    let _ = stop.recv();
    drop(cluster);
}

/// Creates the topics and commits offset 0 on every partition for every group, as if the
/// services had been running, caught up, before the demo began. Without it the first seconds
/// would show partitions with data and no committed offset, which the probe rightly reports
/// as unknown.
fn prepare<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    bootstrap: &str,
) -> anyhow::Result<()> {
    for topic in [ORDERS, PAYMENTS] {
        cluster
            .create_topic(topic.name, topic.partitions, 1)
            .with_context(|| format!("creating topic {}", topic.name))?;
    }
    for (group, topic) in [
        (LOYALTY_GROUP, ORDERS),
        (SEARCH_GROUP, ORDERS),
        (ANALYTICS_GROUP, PAYMENTS),
    ] {
        let consumer: BaseConsumer = client_config(bootstrap, group)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .with_context(|| format!("creating a consumer for group {group}"))?;
        let mut offsets = TopicPartitionList::new();
        for partition in 0..topic.partitions {
            offsets
                .add_partition_offset(topic.name, partition, Offset::Offset(0))
                .context("building the offsets to seed")?;
        }
        consumer
            .commit(&offsets, CommitMode::Sync)
            .with_context(|| format!("seeding the committed offsets of group {group}"))?;
    }
    Ok(())
}

fn client_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", format!("lagbudget-demo-{client_id}"));
    config
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Produces to every topic at its rate, round robin over its partitions, with the creation
/// time as the record timestamp, until `stop`.
fn produce(bootstrap: &str, topics: &[Topic], stop: &AtomicBool) {
    let producer: BaseProducer = match client_config(bootstrap, "producer")
        .set("linger.ms", "5")
        .create()
    {
        Ok(producer) => producer,
        Err(e) => {
            tracing::error!(error = %e, "demo producer cannot start");
            return;
        }
    };
    let started = Instant::now();
    // Records sent so far per topic; the next one is due at `sent / rate` seconds.
    let mut sent = vec![0_u64; topics.len()];
    let mut dropped = 0_u64;
    while !stop.load(Ordering::SeqCst) {
        let elapsed = started.elapsed().as_secs_f64();
        for (topic, sent) in topics.iter().zip(sent.iter_mut()) {
            while (*sent as f64) / f64::from(topic.records_per_second) <= elapsed {
                let n = *sent;
                *sent += 1;
                let partitions = u64::try_from(topic.partitions).unwrap_or(1).max(1);
                let partition = i32::try_from(n % partitions).unwrap_or(0);
                let key = format!("{}-{n}", topic.name);
                let payload = format!(
                    "{{\"id\":{n},\"amount_cents\":{},\"demo\":true}}",
                    500 + (n * 37) % 9500
                );
                let record = BaseRecord::to(topic.name)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload)
                    .timestamp(unix_millis());
                if let Err((e, _)) = producer.send(record) {
                    dropped += 1;
                    if dropped == 1 || dropped.is_power_of_two() {
                        tracing::warn!(error = %e, dropped, "demo producer dropped a record");
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = producer.flush(Duration::from_secs(2)) {
        tracing::warn!(error = %e, "demo producer did not flush on stop");
    }
}

/// One consumer group with one member: reads `topic`, commits what it has read every
/// `COMMIT_EVERY`, and behaves as `behaviour` says, until `stop`.
fn consume(
    bootstrap: &str,
    group: &str,
    topic: Topic,
    behaviour: Behaviour,
    started: Instant,
    stop: &AtomicBool,
) {
    let consumer: BaseConsumer = match client_config(bootstrap, group)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(consumer) => consumer,
        Err(e) => {
            tracing::error!(group, error = %e, "demo consumer cannot start");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic.name]) {
        tracing::error!(group, error = %e, "demo consumer cannot subscribe");
        return;
    }
    let mut last_commit = Instant::now();
    let mut uncommitted = false;
    let mut paused = false;
    while !stop.load(Ordering::SeqCst) {
        let elapsed = started.elapsed();
        match behaviour {
            Behaviour::KeepsUp => {}
            Behaviour::LeavesAfter(after) => {
                if elapsed >= after {
                    tracing::info!(group, "demo consumer leaves its group for good");
                    consumer.unsubscribe();
                    break;
                }
            }
            Behaviour::FallsBehindPeriodically => {
                let now_paused = loyalty_paused(elapsed);
                if now_paused != paused {
                    paused = now_paused;
                    if paused {
                        tracing::info!(group, "demo consumer stops reading for a while");
                    } else {
                        tracing::info!(group, "demo consumer reads again and catches up");
                    }
                }
                if paused {
                    // A slow service: it neither reads nor commits. librdkafka keeps its group
                    // membership alive from its own threads (max.poll.interval.ms is 5 min).
                    std::thread::sleep(POLL);
                    continue;
                }
            }
        }
        match consumer.poll(POLL) {
            Some(Ok(_record)) => uncommitted = true,
            Some(Err(e)) => tracing::debug!(group, error = %e, "demo consumer poll"),
            None => {}
        }
        if uncommitted && last_commit.elapsed() >= COMMIT_EVERY {
            match consumer.commit_consumer_state(CommitMode::Async) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::debug!(group, error = %e, "demo consumer commit"),
            }
            uncommitted = false;
            last_commit = Instant::now();
        }
    }
    // Dropping the consumer closes it: it leaves the group (bounded by librdkafka's timeouts,
    // and the cluster is still up while clients stop).
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loyalty_pauses_first_at_12s_then_every_45s_for_20s() {
        let s = Duration::from_secs;
        for (at, paused) in [
            (0, false),
            (11, false),
            (12, true),
            (31, true),
            (32, false),
            (56, false),
            (57, true),
            (76, true),
            (77, false),
            (102, true),
        ] {
            assert_eq!(loyalty_paused(s(at)), paused, "at {at}s");
        }
    }

    #[test]
    fn the_demo_config_names_every_budget_and_the_brokers() {
        let yaml = config_yaml("127.0.0.1:1234,127.0.0.1:1235");
        assert!(yaml.contains("brokers: \"127.0.0.1:1234,127.0.0.1:1235\""));
        assert!(!yaml.contains("@BROKERS@"));
        for budget in BUDGETS {
            assert!(yaml.contains(&format!("- name: {budget}\n")), "{budget}");
        }
        for group in [LOYALTY_GROUP, SEARCH_GROUP, ANALYTICS_GROUP] {
            assert!(yaml.contains(&format!("group: {group},")), "{group}");
        }
    }
}
