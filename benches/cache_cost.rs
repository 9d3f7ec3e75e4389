//! What a `redis_key_age` run costs (a bench binary, not a timed test): `cargo bench --bench
//! cache_cost`.
//!
//! Against a private `redis-server` it starts (no persistence, free loopback port) and the
//! machine's PostgreSQL (127.0.0.1:5432, as in the test suite), it prints per run, for one key
//! and for a pattern over 100,000 entity keys with `sample: 500` (strings with MGET, and hashes
//! with `field`, pipelined HGETs):
//! - Redis commands (`INFO commandstats` deltas) and the server time each one took;
//! - bytes in and out of Redis (`INFO stats` deltas, less what the INFO calls themselves add);
//! - milliseconds per run (the whole run: Redis calls and the source query);
//!
//! and the latency other clients see from Redis while the pattern probe scans back to back: a
//! concurrent `PING` loop's p50/p99/max, against the same loop on an idle server. The test
//! suite asserts the behaviour (one SCAN, one MGET and one query per run); this gives figures.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lagbudget::probe::{ProbeRunner, SourceHandles};
use redis::aio::MultiplexedConnection;

const PG_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const ENTITIES: u64 = 100_000;
const SAMPLE: u64 = 500;
/// Runs measured per shape: one pass over the keyspace for the patterns.
const RUNS: usize = 200;

struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn connection(&self) -> MultiplexedConnection {
        self.connection_to(0).await
    }

    async fn connection_to(&self, db: u8) -> MultiplexedConnection {
        redis::Client::open(format!("{}/{db}", self.url()))
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

async fn start_redis() -> Redis {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("dir");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let redis = Redis {
        port,
        child,
        _dir: dir,
    };
    let started = Instant::now();
    loop {
        if let Ok(client) = redis::Client::open(redis.url()) {
            if let Ok(Ok(mut con)) = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut con).await;
                if pong.as_deref() == Ok("PONG") {
                    return redis;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "redis-server did not answer PING within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `INFO <section>` as name → value.
async fn info(con: &mut MultiplexedConnection, section: &str) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .expect("INFO");
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Per command: calls and server microseconds.
async fn command_stats(con: &mut MultiplexedConnection) -> BTreeMap<String, (u64, u64)> {
    info(con, "commandstats")
        .await
        .into_iter()
        .filter_map(|(name, stats)| {
            let name = name.strip_prefix("cmdstat_")?.to_owned();
            let field = |key: &str| -> Option<u64> {
                stats
                    .split(',')
                    .find_map(|s| s.strip_prefix(key))?
                    .parse()
                    .ok()
            };
            Some((name, (field("calls=")?, field("usec=")?)))
        })
        .collect()
}

async fn net_bytes(con: &mut MultiplexedConnection) -> (u64, u64) {
    let stats = info(con, "stats").await;
    let get = |key: &str| stats.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    (get("total_net_input_bytes"), get("total_net_output_bytes"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cache_cost: benchmarks run with `cargo bench --bench cache_cost`; nothing to test here"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let redis = start_redis().await;
    let mut con = redis.connection().await;
    let (pg, connection) = tokio_postgres::connect(PG_DSN, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {PG_DSN} must be running: {e}"));
    tokio::spawn(connection);
    let schema = format!("lb_cache_bench_{}", std::process::id());
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.catalog_changes (seq bigint PRIMARY KEY,
                                                changed_at timestamptz NOT NULL);
         INSERT INTO {schema}.catalog_changes
           SELECT n, now() - interval '1 hour' FROM generate_series(1, 1000) AS n;
         CREATE TABLE {schema}.product_changes (product_id bigint NOT NULL, seq bigint NOT NULL,
                                                changed_at timestamptz NOT NULL);
         INSERT INTO {schema}.product_changes
           SELECT id, 1, now() - interval '1 hour' FROM generate_series(1, {ENTITIES}) AS id;
         INSERT INTO {schema}.product_changes VALUES (77777, 2, now() - interval '9 seconds');
         CREATE INDEX ON {schema}.product_changes (product_id, seq);
         ANALYZE {schema}.product_changes;"
    ))
    .await
    .expect("source tables");

    let filled = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("catalog:version")
        .arg("1000")
        .query_async(&mut con)
        .await
        .expect("SET");
    // The hashes in database 1: SCAN walks a database's whole keyspace, so sharing one would
    // double the length of both passes.
    let mut hashes = redis.connection_to(1).await;
    let ids: Vec<u64> = (1..=ENTITIES).collect();
    for chunk in ids.chunks(10_000) {
        let mut mset = redis::cmd("MSET");
        let mut pipe = redis::pipe();
        for id in chunk {
            mset.arg(format!("product:{id}")).arg("1");
            pipe.cmd("HSET")
                .arg(format!("item:{id}"))
                .arg("version")
                .arg("1")
                .arg("name")
                .arg("a product name of some length")
                .ignore();
        }
        let _: () = mset.query_async(&mut con).await.expect("MSET");
        let _: () = pipe.query_async(&mut hashes).await.expect("HSET");
    }
    println!(
        "redis-server: database 0 holds 100,000 strings product:N and the key catalog:version, \
         database 1 100,000 hashes item:N (2 fields); filled in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let entity_query = format!(
        "SELECT c.key, min(ch.changed_at) \
         FROM jsonb_to_recordset($1::jsonb) AS c(key text, id bigint, version bigint) \
         JOIN {schema}.product_changes ch ON ch.product_id = c.id AND ch.seq > c.version \
         GROUP BY c.key"
    );
    let shapes = [
        (
            0,
            "one key (GET)",
            format!(
                "key: \"catalog:version\", oldest_pending: {{ source: db, query: \"SELECT \
                 min(changed_at), count(*) FROM {schema}.catalog_changes WHERE seq > $1\" }}"
            ),
        ),
        (
            0,
            "pattern product:* (strings, MGET), sample 500",
            format!(
                "pattern: \"product:*\", sample: {SAMPLE}, oldest_pending: {{ source: db, query: \"{entity_query}\" }}"
            ),
        ),
        (
            1,
            "pattern item:* (hashes, field: version, pipelined HGET), sample 500",
            format!(
                "pattern: \"item:*\", field: version, sample: {SAMPLE}, oldest_pending: {{ source: db, query: \"{}\" }}",
                entity_query
            ),
        ),
    ];
    for (db, name, body) in &shapes {
        measure(&redis, *db, &mut con, name, body).await;
    }
    latency_during_scan(&redis, &entity_query).await;

    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}

fn runner_for(redis: &Redis, db: u8, body: &str) -> ProbeRunner {
    let yaml = format!(
        "sources:
  cache: {{ redis: {{ url: \"{}/{db}\" }} }}
  db: {{ postgres: {{ dsn: \"{PG_DSN}\" }} }}
budgets:
  - name: bench
    max_lag: 1m
    probes:
      - name: cache
        redis_key_age: {{ source: cache, {body} }}
",
        redis.url()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let config = lagbudget::config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}"));
    let sources = SourceHandles::build(&config, None).expect("sources");
    ProbeRunner::new(&config.budgets[0].probes[0], &sources).expect("runner")
}

async fn run(runner: &mut ProbeRunner) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reading = runner.run(deadline).await.expect("run succeeds");
    reading.sample.lag_seconds.expect("lag")
}

async fn measure(redis: &Redis, db: u8, con: &mut MultiplexedConnection, name: &str, body: &str) {
    let mut runner = runner_for(redis, db, body);
    // Warm-up: connections opened, statements planned.
    for _ in 0..3 {
        run(&mut runner).await;
    }
    // What two INFO calls add on their own, to take out of the deltas.
    let (in_a, out_a) = net_bytes(con).await;
    let (in_b, out_b) = net_bytes(con).await;
    let (info_in, info_out) = (in_b - in_a, out_b - out_a);

    let commands_before = command_stats(con).await;
    let (in_before, out_before) = net_bytes(con).await;
    let mut durations = Vec::with_capacity(RUNS);
    let mut max_lag: f64 = 0.0;
    for _ in 0..RUNS {
        let started = Instant::now();
        max_lag = max_lag.max(run(&mut runner).await);
        durations.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (in_after, out_after) = net_bytes(con).await;
    let commands_after = command_stats(con).await;
    durations.sort_by(f64::total_cmp);
    let runs = RUNS as f64;
    println!("\n{name}: {RUNS} runs");
    for (command, (calls, usec)) in &commands_after {
        if command == "info" {
            continue;
        }
        let (calls_before, usec_before) = commands_before.get(command).copied().unwrap_or((0, 0));
        let (calls, usec) = (calls - calls_before, usec - usec_before);
        if calls > 0 {
            println!(
                "  {command}: {:.1} calls per run, {:.1} µs of server time per run ({:.2} µs per call)",
                calls as f64 / runs,
                usec as f64 / runs,
                usec as f64 / calls as f64
            );
        }
    }
    let bytes_in = (in_after - in_before).saturating_sub(info_in) as f64 / runs;
    let bytes_out = (out_after - out_before).saturating_sub(info_out) as f64 / runs;
    println!("  bytes per run: {bytes_in:.0} to Redis, {bytes_out:.0} from Redis");
    println!(
        "  ms per run: median {:.2}, p99 {:.2}, max {:.2} (whole run: Redis calls and the source query); largest lag seen {max_lag:.1} s",
        percentile(&durations, 0.5),
        percentile(&durations, 0.99),
        durations.last().copied().unwrap_or(f64::NAN)
    );
}

/// PING round trips of another client on its own connection, sorted, until `stop`.
async fn ping_loop(url: String, stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut con = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .expect("PING");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    samples.sort_by(f64::total_cmp);
    samples
}

fn print_latency(what: &str, samples: &[f64]) {
    println!(
        "  {what}: {} PINGs, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

async fn latency_during_scan(redis: &Redis, entity_query: &str) {
    println!(
        "\nRedis latency seen by another client (PING every ~1 ms on its own connection), \
         idle vs. while pattern product:* runs back to back (no interval) for one pass"
    );
    let window = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn({
        let stop = stop.clone();
        let url = redis.url();
        ping_loop(url, stop)
    });
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let idle = idle.await.expect("idle loop");
    print_latency("idle", &idle);

    let mut runner = runner_for(
        redis,
        0,
        &format!(
            "pattern: \"product:*\", sample: {SAMPLE}, oldest_pending: {{ source: db, query: \"{entity_query}\" }}"
        ),
    );
    run(&mut runner).await;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = tokio::spawn({
        let stop = stop.clone();
        let url = redis.url();
        ping_loop(url, stop)
    });
    let started = Instant::now();
    for _ in 0..RUNS {
        run(&mut runner).await;
    }
    let scanning = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let busy = busy.await.expect("busy loop");
    print_latency(
        &format!(
            "during {RUNS} back-to-back runs ({:.1} s)",
            scanning.as_secs_f64()
        ),
        &busy,
    );
}
