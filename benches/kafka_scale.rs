//! Kafka scale figures (a bench binary, not a timed test): `cargo bench --bench kafka_scale`.
//!
//! On librdkafka's mock cluster: 1,000 consumer groups over 20,000 partitions (1,000 topics of
//! 20 partitions, one group per topic; half the groups behind on every partition, half caught
//! up). One full evaluation runs every group's `kafka_consumer_group` probe once, concurrently,
//! as the daemon's probe tasks would. Prints wall time and CPU time of the first evaluation
//! (cold: it reads the first pending record of 10,000 partitions) and of the next ones (warm:
//! timestamps cached), and the process's resident memory.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use lagbudget::probe::{ProbeRunner, SourceHandles};

const GROUPS: usize = 1_000;
const PARTITIONS_PER_TOPIC: i32 = 20;

fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second on
    // Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        .unwrap_or_else(|| "unavailable".into())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kafka_scale: run with `cargo bench --bench kafka_scale`; nothing to test here");
        return;
    }
    let setup_started = Instant::now();
    let mock = MockCluster::new(1).expect("mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let topics: Vec<String> = (0..GROUPS).map(|i| format!("bench-{i:04}")).collect();
    for topic in &topics {
        mock.create_topic(topic, PARTITIONS_PER_TOPIC, 1)
            .expect("topic");
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "50")
        .create()
        .expect("producer");
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        - 5_000;
    for topic in &topics {
        for partition in 0..PARTITIONS_PER_TOPIC {
            loop {
                let record = BaseRecord::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload("x")
                    .timestamp(ts);
                match producer.send(record) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    // Even groups are caught up (offset 1), odd ones have one record pending everywhere.
    for (i, topic) in topics.iter().enumerate() {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("group-{i:04}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS_PER_TOPIC {
            let offset = if i % 2 == 0 { 1 } else { 0 };
            list.add_partition_offset(topic, partition, Offset::Offset(offset))
                .expect("offset");
        }
        consumer.commit(&list, CommitMode::Sync).expect("commit");
    }
    println!(
        "setup: {GROUPS} groups, {} partitions, in {:.1} s",
        GROUPS * PARTITIONS_PER_TOPIC as usize,
        setup_started.elapsed().as_secs_f64()
    );

    let mut yaml =
        format!("sources:\n  events: {{ kafka: {{ brokers: \"{bootstrap}\" }} }}\nbudgets:\n");
    for (i, topic) in topics.iter().enumerate() {
        let _ = write!(
            yaml,
            "  - name: g{i:04}\n    max_lag: 30s\n    probes:\n      - name: p\n        kafka_consumer_group: {{ source: events, group: group-{i:04}, topics: [{topic}] }}\n"
        );
    }
    let dir = std::env::temp_dir().join(format!("lagbudget-kafka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bench.yaml");
    std::fs::write(&path, yaml).expect("write");
    let config = lagbudget::config::load(&path).expect("bench config");
    let _ = std::fs::remove_dir_all(&dir);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let sources = SourceHandles::build(&config, None).expect("sources");
        let mut runners: Vec<ProbeRunner> = config
            .budgets
            .iter()
            .flat_map(|b| b.probes.iter())
            .map(|p| ProbeRunner::new(p, &sources).expect("runner"))
            .collect();
        for round in 0..4 {
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut handles = Vec::with_capacity(runners.len());
            for mut runner in runners.drain(..) {
                handles.push(tokio::spawn(async move {
                    let result = runner.run(deadline).await;
                    (runner, result)
                }));
            }
            let (mut ok, mut behind, mut failed) = (0, 0, 0);
            let mut first_error = None;
            for handle in handles {
                let (runner, result) = handle.await.expect("probe task");
                runners.push(runner);
                match result {
                    Ok(reading) => {
                        ok += 1;
                        if reading.sample.lag_seconds.is_some_and(|lag| lag > 0.0) {
                            behind += 1;
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            let wall = started.elapsed();
            let cpu = cpu_seconds() - cpu_before;
            println!(
                "evaluation {} ({}): wall {:.3} s, cpu {:.2} s, {ok} ok ({behind} behind), {failed} failed{}; rss {}",
                round + 1,
                if round == 0 { "cold" } else { "warm" },
                wall.as_secs_f64(),
                cpu,
                first_error.map(|e| format!(" (first: {e})")).unwrap_or_default(),
                rss_kib()
            );
        }
    });
}
