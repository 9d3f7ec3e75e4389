//! `redis_key_age` against a private `redis-server` per test, with PostgreSQL (the machine's, or
//! a private one whose statement log counts the queries) and the machine's MariaDB as the
//! source of truth. Source changes are injected with known times (`now() - interval …`) and
//! the measured lag is compared with their age: against the daemon's last successful run
//! (±1 s), or between two readings of the database's own clock taken around a run.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lagbudget::probe::redis_key_age::detail::CacheDetail;
use lagbudget::probe::{Detail, ProbeRunner, Reading, SourceHandles};
use mysql_async::prelude::Queryable;
use redis::aio::MultiplexedConnection;

use crate::support::{
    Daemon, Metrics, PATIENCE, PrivatePostgres, SHARED_PG_DSN, check_connect_lines, closed_port,
    connect, load_config, poll_until, unique,
};

const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A private `redis-server` on a free loopback port, without persistence; killed on drop, even
/// when the test fails.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub(crate) async fn start() -> PrivateRedis {
        Self::start_with(&[]).await
    }

    /// A private server started with `extra` arguments too (such as `--replicaof`).
    pub(crate) async fn start_with(extra: &[&str]) -> PrivateRedis {
        let port = closed_port();
        let dir = tempfile::tempdir().expect("dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed for this test (scripts/test does): {e}")
            });
        let server = PrivateRedis {
            port,
            child,
            _dir: dir,
        };
        let url = server.url();
        let answered = poll_until(PATIENCE, || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let connecting = client.get_multiplexed_async_connection();
            let mut con = tokio::time::timeout(Duration::from_secs(2), connecting)
                .await
                .ok()?
                .ok()?;
            let pong: String = redis::cmd("PING").query_async(&mut con).await.ok()?;
            (pong == "PONG").then_some(())
        })
        .await;
        assert!(
            answered.is_some(),
            "redis-server on port {port} did not answer PING within {PATIENCE:?}"
        );
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn connection(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private redis-server")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .expect("SET");
}

async fn del(con: &mut MultiplexedConnection, key: &str) {
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(con)
        .await
        .expect("DEL");
}

/// Calls per command so far (`INFO commandstats`).
async fn command_calls(con: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands issued between two `command_calls`, leaving out the `INFO` that read them and
/// what a client says about itself when it connects (`CLIENT SETINFO`, `HELLO`).
fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| {
            name.as_str() != "info" && name.as_str() != "hello" && !name.starts_with("client|")
        })
        .filter_map(|(name, calls)| {
            let delta = calls - before.get(name).copied().unwrap_or(0);
            (delta > 0).then(|| (name.clone(), delta))
        })
        .collect()
}

fn unix_now() -> f64 {
    lagbudget::clock::unix_now()
}

fn labels<'a>(budget: &'a str, probe: &'a str) -> [(&'a str, &'a str); 2] {
    [("budget", budget), ("probe", probe)]
}

fn last_success(metrics: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_probe_last_success_timestamp_seconds",
        &labels(budget, probe),
    )
}

/// A source table of changes, `(product_id, seq, changed_at)`, in the machine's PostgreSQL.
async fn pg_changes(rows: &str) -> String {
    let table = unique("lb_cache_changes");
    connect(SHARED_PG_DSN)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (product_id bigint NOT NULL, seq bigint PRIMARY KEY,
                                   changed_at timestamptz NOT NULL);
             INSERT INTO {table} VALUES {rows};"
        ))
        .await
        .expect("create the change table");
    table
}

async fn pg_drop(table: &str) {
    let _ = connect(SHARED_PG_DSN)
        .await
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await;
}

/// Unix time of the change `seq`, as PostgreSQL stored it.
async fn pg_change_time(table: &str, seq: i64) -> f64 {
    connect(SHARED_PG_DSN)
        .await
        .query_one(
            &format!("SELECT extract(epoch FROM changed_at)::float8 FROM {table} WHERE seq = $1"),
            &[&seq],
        )
        .await
        .expect("change time")
        .get(0)
}

/// The PostgreSQL query of the redis_key_age page (docs/src/probes/redis_key_age.md) for one version.
fn one_version_query(table: &str) -> String {
    format!("SELECT min(changed_at), count(*) FROM {table} WHERE seq > $1")
}

/// The redis_key_age page's PostgreSQL query for a sample of entities.
fn entity_query(table: &str) -> String {
    format!(
        "SELECT c.key, min(ch.changed_at) \
         FROM jsonb_to_recordset($1::jsonb) AS c(key text, id bigint, version bigint) \
         JOIN {table} ch ON ch.product_id = c.id AND ch.seq > c.version GROUP BY c.key"
    )
}

/// Issue acceptance: a cache version held back while the source moved on ⇒ lag within ±1 s of
/// the age of the oldest newer source change (and its count as the backlog), `breach`; the
/// cache refreshed ⇒ 0 and `ok` within two intervals. Also `mode: since_build`: now − the time
/// the key holds, ±1 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_back_version_reads_the_age_of_the_oldest_newer_change_and_a_refresh_reads_0() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    let table = pg_changes(
        "(1, 1, now() - interval '60 seconds'), (1, 2, now() - interval '7 seconds'),
         (2, 3, now() - interval '3 seconds')",
    )
    .await;
    set(&mut con, "catalog:version", "1").await;
    let built_at = unix_now() - 12.0;
    set(&mut con, "menu:built_at", &format!("{built_at:.3}")).await;

    let budget = unique("cache_held");
    let built_budget = unique("cache_built");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    probes:
      - name: catalog
        interval: 1s
        redis_key_age:
          source: cache
          key: \"catalog:version\"
          oldest_pending: {{ source: db, query: \"{query}\" }}
  - name: {built_budget}
    max_lag: 1m
    probes:
      - name: menu
        interval: 1s
        redis_key_age: {{ source: cache, key: \"menu:built_at\", mode: since_build }}
",
        url = redis.url(),
        query = one_version_query(&table),
    ))
    .await;
    let catalog = labels(&budget, "catalog");
    let menu = labels(&built_budget, "menu");
    let metrics = daemon
        .wait_for_metrics("both probes' lag", PATIENCE, |m| {
            m.has_series("lagbudget_lag_seconds", &catalog)
                && m.has_series("lagbudget_lag_seconds", &menu)
        })
        .await;

    let lag = metrics.get("lagbudget_lag_seconds", &catalog).expect("lag");
    let expected = last_success(&metrics, &budget, "catalog").expect("success")
        - pg_change_time(&table, 2).await;
    println!("held back: measured lag {lag:.3} s, expected {expected:.3} s");
    assert!(
        (lag - expected).abs() <= 1.0,
        "lag {lag} not within ±1 s of {expected}"
    );
    assert_eq!(metrics.get("lagbudget_backlog_rows", &catalog), Some(2.0));
    assert_eq!(
        metrics.get("lagbudget_cache_stale_keys", &catalog),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("lagbudget_cache_misses_total", &catalog),
        Some(0.0)
    );
    assert_eq!(daemon.state(&budget).await, "breach");
    let probe = daemon.probe(&budget, "catalog").await;
    assert_eq!(probe["cache"]["shape"], "key");
    assert_eq!(probe["cache"]["stalest"][0]["key"], "catalog:version");

    let built_lag = metrics.get("lagbudget_lag_seconds", &menu).expect("lag");
    let built_expected = last_success(&metrics, &built_budget, "menu").expect("success") - built_at;
    println!("since_build: measured lag {built_lag:.3} s, expected {built_expected:.3} s");
    assert!((built_lag - built_expected).abs() <= 1.0);
    // since_build compares nothing with a source: no stale-key gauge.
    assert!(!metrics.has_series("lagbudget_cache_stale_keys", &menu));

    set(&mut con, "catalog:version", "3").await;
    let refreshed = unix_now();
    daemon.wait_for_state(&budget, "ok", PATIENCE).await;
    let metrics = daemon.metrics().await;
    // Ok within two intervals (1 s) of the refresh, by the daemon's clock; a third interval of
    // slack covers run durations.
    let ok_after = metrics
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", &budget)],
        )
        .expect("state since")
        - refreshed;
    println!("refreshed: ok {ok_after:.3} s after the refresh (interval 1 s)");
    assert!(ok_after <= 3.0, "ok within two intervals: {ok_after}");
    assert_eq!(metrics.get("lagbudget_lag_seconds", &catalog), Some(0.0));
    assert_eq!(metrics.get("lagbudget_backlog_rows", &catalog), Some(0.0));
    assert_eq!(
        metrics.get("lagbudget_cache_stale_keys", &catalog),
        Some(0.0)
    );

    daemon.stop().await;
    pg_drop(&table).await;
}

/// Issue acceptance: the source idle for 20 s with the cache current ⇒ 0 on every run, for one
/// key and for a pattern of entity caches (each run of which completes a pass here).
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_source_with_a_current_cache_reads_0_all_the_time() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    // Ten products, each changed twice long ago; every cache entry holds the latest version.
    let rows: Vec<String> = (1..=10)
        .flat_map(|id| {
            [
                format!("({id}, {}, now() - interval '1 hour')", id * 2 - 1),
                format!("({id}, {}, now() - interval '30 minutes')", id * 2),
            ]
        })
        .collect();
    let table = pg_changes(&rows.join(", ")).await;
    set(&mut con, "catalog:version", "20").await;
    for id in 1..=10 {
        set(&mut con, &format!("product:{id}"), &(id * 2).to_string()).await;
    }

    let budget = unique("cache_idle");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    probes:
      - name: catalog
        interval: 1s
        redis_key_age: {{ source: cache, key: \"catalog:version\", oldest_pending: {{ source: db, query: \"{one}\" }} }}
      - name: products
        interval: 1s
        redis_key_age: {{ source: cache, pattern: \"product:*\", oldest_pending: {{ source: db, query: \"{entities}\" }} }}
",
        url = redis.url(),
        one = one_version_query(&table),
        entities = entity_query(&table),
    ))
    .await;
    daemon.wait_for_state(&budget, "ok", PATIENCE).await;
    let catalog = labels(&budget, "catalog");
    let products = labels(&budget, "products");
    let first = daemon
        .wait_for_metrics("both probes' lag", PATIENCE, |m| {
            m.has_series("lagbudget_lag_seconds", &catalog)
                && m.has_series("lagbudget_lag_seconds", &products)
        })
        .await;
    let started = std::time::Instant::now();
    let last = daemon
        .watch_runs((&budget, "catalog"), 21, Duration::from_secs(90), |m| {
            for probe in [&catalog, &products] {
                assert_eq!(
                    m.get("lagbudget_lag_seconds", probe),
                    Some(0.0),
                    "idle and current is 0 after {:?}",
                    started.elapsed()
                );
                assert_eq!(m.get("lagbudget_cache_stale_keys", probe), Some(0.0));
            }
            assert_eq!(m.get("lagbudget_backlog_rows", &catalog), Some(0.0));
        })
        .await;
    let idle_for = last_success(&last, &budget, "catalog").expect("success")
        - last_success(&first, &budget, "catalog").expect("success");
    let passes = last
        .get("lagbudget_cache_scan_passes_total", &products)
        .expect("passes");
    println!("idle: lag 0 through 21 runs, {idle_for:.3} s of runs, {passes} passes over 10 keys");
    assert!(idle_for >= 20.0, "21 runs a second apart: {idle_for}");
    assert!(passes >= 20.0, "ten keys: every run completes a pass");
    assert_eq!(daemon.state(&budget).await, "ok");
    daemon.stop().await;
    pg_drop(&table).await;
}

/// Issue acceptance: a missing key is a miss, counted, and the probe is down (`no_data`), never
/// 0; an entity cache that disappears while known stale is a miss, not staleness; a pattern
/// that matches nothing in a whole pass is `no_data`. The new families are served with their
/// types, and the API shows the `cache` object.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_is_a_counted_miss_and_never_0() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    let table = pg_changes(
        "(1, 1, now() - interval '1 hour'), (1, 2, now() - interval '8 seconds'),
         (2, 3, now() - interval '1 hour')",
    )
    .await;
    // product:1 holds version 1, behind its change 2; product:2 is current.
    set(&mut con, "product:1", "1").await;
    set(&mut con, "product:2", "3").await;

    let budget = unique("cache_miss");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 1m
    probes:
      - name: catalog
        interval: 1s
        redis_key_age: {{ source: cache, key: \"catalog:version\", oldest_pending: {{ source: db, query: \"{one}\" }} }}
      - name: products
        interval: 1s
        redis_key_age: {{ source: cache, pattern: \"product:*\", sample: 100, oldest_pending: {{ source: db, query: \"{entities}\" }} }}
      - name: nothing
        interval: 1s
        redis_key_age: {{ source: cache, pattern: \"absent:*\", oldest_pending: {{ source: db, query: \"{entities}\" }} }}
",
        url = redis.url(),
        one = one_version_query(&table),
        entities = entity_query(&table),
    ))
    .await;
    let catalog = labels(&budget, "catalog");
    let products = labels(&budget, "products");
    let nothing = labels(&budget, "nothing");
    let no_data = |probe: &str| {
        [
            ("budget", budget.clone()),
            ("probe", probe.to_owned()),
            ("reason", "no_data".to_owned()),
        ]
    };
    let errors = |m: &Metrics, probe: &str| {
        let labels = no_data(probe);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        m.get("lagbudget_probe_errors_total", &labels)
            .unwrap_or_default()
    };

    // The missing key: down with no_data on every run, no lag at all.
    let metrics = daemon
        .wait_for_metrics("three failed runs on the missing key", PATIENCE, |m| {
            errors(m, "catalog") >= 3.0
                && errors(m, "nothing") >= 1.0
                && m.has_series("lagbudget_lag_seconds", &products)
        })
        .await;
    assert_eq!(metrics.get("lagbudget_probe_up", &catalog), Some(0.0));
    assert!(!metrics.has_series("lagbudget_lag_seconds", &catalog));
    let probe = daemon.probe(&budget, "catalog").await;
    let message = probe["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"catalog:version\" is missing: a miss, not staleness"),
        "{probe}"
    );
    // The pattern that matches nothing: each run is a whole (empty) pass, never 0.
    assert!(errors(&metrics, "nothing") >= 1.0);
    assert!(!metrics.has_series("lagbudget_lag_seconds", &nothing));
    let probe = daemon.probe(&budget, "nothing").await;
    assert!(
        probe["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("matched no string keys in a whole pass"),
        "{probe}"
    );

    // The pattern: product:1 is stale by the age of change 2, the one the query returns.
    let lag = metrics
        .get("lagbudget_lag_seconds", &products)
        .expect("lag");
    let expected = last_success(&metrics, &budget, "products").expect("success")
        - pg_change_time(&table, 2).await;
    println!("stale entity: measured lag {lag:.3} s, expected {expected:.3} s");
    assert!(
        (lag - expected).abs() <= 1.0,
        "lag {lag}, expected {expected}"
    );
    assert_eq!(
        metrics.get("lagbudget_cache_stale_keys", &products),
        Some(1.0)
    );
    for family in [
        "# TYPE lagbudget_cache_misses_total counter",
        "# TYPE lagbudget_cache_sampled_keys_total counter",
        "# TYPE lagbudget_cache_stale_keys gauge",
        "# TYPE lagbudget_cache_scan_passes_total counter",
    ] {
        assert!(
            metrics.text.contains(family),
            "{family} in\n{}",
            metrics.text
        );
    }
    let probe = daemon.probe(&budget, "products").await;
    assert_eq!(probe["cache"]["shape"], "pattern");
    assert_eq!(probe["cache"]["stalest"][0]["key"], "product:1");

    // The stale entity expires: it is re-read as a tracked key, found missing, counted as a
    // miss and dropped. Not staleness: the lag returns to 0.
    let misses_before = metrics
        .get("lagbudget_cache_misses_total", &products)
        .expect("misses");
    del(&mut con, "product:1").await;
    let metrics = daemon
        .wait_for_metrics("the expired entity counted as a miss", PATIENCE, |m| {
            m.get("lagbudget_cache_misses_total", &products) > Some(misses_before)
        })
        .await;
    let misses = metrics
        .get("lagbudget_cache_misses_total", &products)
        .expect("misses");
    let sampled = metrics
        .get("lagbudget_cache_sampled_keys_total", &products)
        .expect("sampled");
    println!("pattern: {misses} misses of {sampled} keys read");
    assert_eq!(misses, misses_before + 1.0, "one miss: the key is dropped");
    assert_eq!(metrics.get("lagbudget_lag_seconds", &products), Some(0.0));
    assert_eq!(
        metrics.get("lagbudget_cache_stale_keys", &products),
        Some(0.0)
    );

    // The key appears: the probe is up, and its counter holds every miss (each failed run).
    set(&mut con, "catalog:version", "3").await;
    let metrics = daemon
        .wait_for_metrics("the key written and read", PATIENCE, |m| {
            m.get("lagbudget_probe_up", &catalog) == Some(1.0)
        })
        .await;
    let failed = errors(&metrics, "catalog");
    let misses = metrics
        .get("lagbudget_cache_misses_total", &catalog)
        .expect("misses while fresh");
    println!("key: {misses} misses counted over {failed} failed runs");
    assert_eq!(
        misses, failed,
        "every failed run was a miss, and every miss is counted"
    );
    // Every run read the key once: the failed ones, and at least the one that succeeded.
    let sampled = metrics
        .get("lagbudget_cache_sampled_keys_total", &catalog)
        .expect("sampled");
    assert!(sampled > misses, "{sampled} keys read, {misses} missing");
    assert_eq!(metrics.get("lagbudget_lag_seconds", &catalog), Some(0.0));
    daemon.stop().await;
    pg_drop(&table).await;
}

/// `check --connect` without measuring: a key that exists and is of the type read, a missing
/// key, a hash read without `field`, a `since_build` key that holds no time, a pattern's first
/// SCAN batch, and a query of the wrong shape for a pattern.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_reports_missing_keys_wrong_types_and_the_query_shape() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    let table = pg_changes("(1, 1, now())").await;
    set(&mut con, "catalog:version", "1").await;
    set(&mut con, "menu:built_at", "yesterday").await;
    set(&mut con, "product:1", "1").await;
    let _: () = redis::cmd("HSET")
        .arg("price:1")
        .arg("version")
        .arg("1")
        .query_async(&mut con)
        .await
        .expect("HSET");
    let one = one_version_query(&table);
    let entities = entity_query(&table);
    let config = load_config(&format!(
        "sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: caches
    max_lag: 1m
    probes:
      - {{ name: current, redis_key_age: {{ source: cache, key: \"catalog:version\", oldest_pending: {{ source: db, query: \"{one}\" }} }} }}
      - {{ name: missing, redis_key_age: {{ source: cache, key: \"catalog:nothing\", oldest_pending: {{ source: db, query: \"{one}\" }} }} }}
      - {{ name: hash, redis_key_age: {{ source: cache, key: \"price:1\", oldest_pending: {{ source: db, query: \"{one}\" }} }} }}
      - {{ name: built, redis_key_age: {{ source: cache, key: \"menu:built_at\", mode: since_build }} }}
      - {{ name: products, redis_key_age: {{ source: cache, pattern: \"product:*\", oldest_pending: {{ source: db, query: \"{entities}\" }} }} }}
      - {{ name: prices, redis_key_age: {{ source: cache, pattern: \"price:*\", field: version, oldest_pending: {{ source: db, query: \"{entities}\" }} }} }}
      - {{ name: wrong-shape, redis_key_age: {{ source: cache, pattern: \"product:*\", oldest_pending: {{ source: db, query: \"{one}\" }} }} }}
",
        url = redis.url(),
    ));
    let lines = check_connect_lines(&config).await;
    let line = |probe: &str| {
        let prefix = format!("probe caches/{probe} (redis_key_age): ");
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no line for {probe}: {lines:?}"))
            .to_owned()
    };
    assert_eq!(
        line("current"),
        "ok string key \"catalog:version\" holds 1; oldest_pending accepted"
    );
    assert!(
        line("missing").starts_with("no_data: key \"catalog:nothing\" does not exist"),
        "{lines:?}"
    );
    assert_eq!(
        line("hash"),
        "query: key \"price:1\" is a hash, not a string; set `field` to the field holding the version"
    );
    assert!(
        line("built").starts_with("decode: mode since_build reads key \"menu:built_at\" as a time"),
        "{lines:?}"
    );
    assert_eq!(
        line("products"),
        "ok SCAN answers, 1 string keys match \"product:*\" in its first batch; oldest_pending accepted"
    );
    assert_eq!(
        line("prices"),
        "ok SCAN answers, 1 hash keys match \"price:*\" in its first batch; oldest_pending accepted"
    );
    assert!(line("wrong-shape").starts_with("decode: "), "{lines:?}");
    pg_drop(&table).await;
}

/// Keys the test fills and the planted stale one.
const ENTITIES: u64 = 100_000;
const SAMPLE: u64 = 500;
const PLANTED: u64 = 77_777;
/// One pass over 100,000 keys with `sample: 500` takes about ceil(100000 / 500) = 200 runs
/// (SCAN COUNT is a hint: a batch may hold a few more or fewer keys); the planted entity must be
/// found within the first pass, and that pass within 220 runs.
const PASS_RUNS_AT_MOST: u64 = ENTITIES.div_ceil(SAMPLE) * 11 / 10;

/// Issue acceptance: a pattern over 100,000 entity keys with `sample: 500`. Every run sends one
/// SCAN and one MGET (Redis' own command counts) and one entity query (the source's statement
/// log); a planted stale entity is found within the first pass (at most 220 runs) with its
/// lag on the database's clock, keeps a growing lag while the scan moves on, and reads 0 once
/// refreshed.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_entity_among_100000_keys_is_found_within_one_pass() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    let server = tokio::task::spawn_blocking(|| {
        PrivatePostgres::start_with(&["log_statement = 'all'", "log_parameter_max_length = 0"])
    })
    .await
    .expect("start private PostgreSQL");
    let pg = connect(&server.dsn()).await;
    pg.batch_execute(&format!(
        "CREATE TABLE product_changes (product_id bigint NOT NULL, seq bigint NOT NULL,
                                       changed_at timestamptz NOT NULL);
         INSERT INTO product_changes
           SELECT id, 1, now() - interval '1 hour' FROM generate_series(1, {ENTITIES}) AS id;
         INSERT INTO product_changes VALUES ({PLANTED}, 2, now() - interval '9 seconds');
         CREATE INDEX ON product_changes (product_id, seq);
         ANALYZE product_changes;"
    ))
    .await
    .expect("source tables");
    // Every entity cache holds version 1; the planted one's source moved on to 2.
    for chunk in (1..=ENTITIES).collect::<Vec<_>>().chunks(10_000) {
        let mut mset = redis::cmd("MSET");
        for id in chunk {
            mset.arg(format!("product:{id}")).arg("1");
        }
        let _: () = mset.query_async(&mut con).await.expect("MSET");
    }

    const MARKER: &str = "/* lagbudget cache test */";
    let config = load_config(&format!(
        "sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  db: {{ postgres: {{ dsn: \"{dsn}\" }} }}
budgets:
  - name: products
    max_lag: 1m
    probes:
      - name: products
        redis_key_age:
          source: cache
          pattern: \"product:*\"
          sample: {SAMPLE}
          oldest_pending: {{ source: db, query: \"{MARKER} {query}\" }}
",
        url = redis.url(),
        dsn = server.dsn(),
        query = entity_query("product_changes"),
    ));
    let handles = SourceHandles::build(&config, None).expect("handles");
    let mut runner = ProbeRunner::new(&config.budgets[0].probes[0], &handles).expect("runner");
    let planted_age = || async {
        pg.query_one(
            "SELECT extract(epoch FROM clock_timestamp() - changed_at)::float8
             FROM product_changes WHERE seq = 2",
            &[],
        )
        .await
        .expect("age")
        .get::<_, f64>(0)
    };
    let entity_queries = || {
        server
            .server_log()
            .lines()
            .filter(|line| line.contains("execute") && line.contains(MARKER))
            .count()
    };
    let mut found: Option<(u64, f64)> = None;
    let mut runs = 0;
    let mut most_keys = 0;
    let pass_runs = loop {
        runs += 1;
        assert!(
            runs <= PASS_RUNS_AT_MOST,
            "no complete pass over {ENTITIES} keys within {PASS_RUNS_AT_MOST} runs"
        );
        let calls_before = command_calls(&mut con).await;
        let queries_before = entity_queries();
        let before = planted_age().await;
        let (reading, detail) = run_once(&mut runner).await;
        let after = planted_age().await;
        let calls = calls_between(&calls_before, &command_calls(&mut con).await);
        let expected_calls = BTreeMap::from([("mget".to_owned(), 1), ("scan".to_owned(), 1)]);
        assert_eq!(calls, expected_calls, "run {runs}: one SCAN, one MGET");
        assert_eq!(
            entity_queries() - queries_before,
            1,
            "run {runs}: one query for the whole sample"
        );
        most_keys = most_keys.max(detail.keys_read);
        let lag = reading.sample.lag_seconds.expect("lag");
        match detail.stalest.first() {
            Some(stale) => {
                assert_eq!(stale.key, format!("product:{PLANTED}"));
                assert!(
                    before <= lag && lag <= after,
                    "run {runs}: lag {lag} not within [{before}, {after}]"
                );
                found.get_or_insert((runs, lag));
            }
            None => assert_eq!(lag, 0.0, "run {runs}: nothing stale known yet is 0"),
        }
        if detail.scan_passes_total == Some(1) {
            break runs;
        }
    };
    let (found_at, found_lag) = found.expect("the planted entity is found within the first pass");
    println!(
        "{ENTITIES} keys, sample {SAMPLE}: one pass took {pass_runs} runs (at most \
         {PASS_RUNS_AT_MOST} allowed), the planted entity was found at run {found_at} with lag \
         {found_lag:.3} s; at most {most_keys} keys read in one run"
    );
    assert!(
        most_keys <= SAMPLE * 2,
        "a run reads about a sample: {most_keys}"
    );

    // The scan moves on into the next pass; the entity stays known, its lag growing.
    let mut previous = found_lag;
    for _ in 0..3 {
        let (reading, detail) = run_once(&mut runner).await;
        let lag = reading.sample.lag_seconds.expect("lag");
        assert_eq!(detail.stale_keys, Some(1));
        assert!(lag >= previous, "still stale: {lag} after {previous}");
        previous = lag;
    }
    // Refreshed: the next run re-reads it and reads 0.
    set(&mut con, &format!("product:{PLANTED}"), "2").await;
    let (reading, detail) = run_once(&mut runner).await;
    assert_eq!(reading.sample.lag_seconds, Some(0.0));
    assert_eq!(detail.stale_keys, Some(0));
    assert!(detail.stalest.is_empty());
}

/// One run of `runner`, which must succeed, with its cache detail.
async fn run_once(runner: &mut ProbeRunner) -> (Reading, CacheDetail) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reading = runner.run(deadline).await.expect("run succeeds");
    let Some(Detail::RedisKeyAge(detail)) = reading.detail.clone() else {
        panic!("a redis_key_age reading carries its detail: {reading:?}");
    };
    (reading, detail)
}

/// The comparison on a MariaDB source (the machine's, on 3306): one key held back ⇒ lag within
/// ±1 s of the age of the oldest newer change (DATETIME on MariaDB's clock), backlog its count;
/// and the redis_key_age page's JSON_TABLE entity query for a pattern.
#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_source_answers_for_one_key_and_for_a_pattern() {
    let redis = PrivateRedis::start().await;
    let mut con = redis.connection().await;
    let opts = mysql_async::Opts::from_url(MARIADB_URL).expect("url");
    let mut my = mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {MARIADB_URL} must be running for this test: {e}"));
    let table = unique("lb_cache_changes");
    my.query_drop(format!(
        "CREATE TABLE test.{table} (product_id BIGINT NOT NULL, seq BIGINT PRIMARY KEY,
                                    changed_at DATETIME(6) NOT NULL);
         INSERT INTO test.{table} VALUES
           (1, 1, NOW(6) - INTERVAL 60 SECOND),
           (1, 2, NOW(6) - INTERVAL 7 SECOND),
           (2, 3, NOW(6) - INTERVAL 3 SECOND);"
    ))
    .await
    .expect("source table");
    set(&mut con, "catalog:version", "1").await;
    set(&mut con, "product:1", "1").await;
    set(&mut con, "product:2", "3").await;

    let budget = unique("cache_mariadb");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  cache: {{ redis: {{ url: \"{url}\" }} }}
  shop: {{ mysql: {{ url: \"{MARIADB_URL}\" }} }}
budgets:
  - name: {budget}
    max_lag: 1m
    probes:
      - name: catalog
        interval: 1s
        redis_key_age:
          source: cache
          key: \"catalog:version\"
          oldest_pending: {{ source: shop, query: \"SELECT MIN(changed_at), COUNT(*) FROM test.{table} WHERE seq > ?\" }}
      - name: products
        interval: 1s
        redis_key_age:
          source: cache
          pattern: \"product:*\"
          oldest_pending:
            source: shop
            query: >-
              SELECT c.k, MIN(ch.changed_at)
              FROM JSON_TABLE(?, '$[*]' COLUMNS (k VARCHAR(512) PATH '$.key',
                   id BIGINT PATH '$.id', version BIGINT PATH '$.version')) AS c
              JOIN test.{table} ch ON ch.product_id = c.id AND ch.seq > c.version
              GROUP BY c.k
",
        url = redis.url(),
    ))
    .await;
    let catalog = labels(&budget, "catalog");
    let products = labels(&budget, "products");
    let metrics = daemon
        .wait_for_metrics("both probes' lag", PATIENCE, |m| {
            m.has_series("lagbudget_lag_seconds", &catalog)
                && m.has_series("lagbudget_lag_seconds", &products)
        })
        .await;
    let changed_at: f64 = my
        .query_first(format!(
            "SELECT CAST(UNIX_TIMESTAMP(changed_at) AS DOUBLE) FROM test.{table} WHERE seq = 2"
        ))
        .await
        .expect("change time")
        .expect("row");
    for (probe, name) in [(&catalog, "catalog"), (&products, "products")] {
        let lag = metrics.get("lagbudget_lag_seconds", probe).expect("lag");
        let expected = last_success(&metrics, &budget, name).expect("success") - changed_at;
        println!("mariadb {name}: measured lag {lag:.3} s, expected {expected:.3} s");
        assert!(
            (lag - expected).abs() <= 1.0,
            "{name}: lag {lag} not within ±1 s of {expected}"
        );
        assert_eq!(metrics.get("lagbudget_cache_stale_keys", probe), Some(1.0));
    }
    assert_eq!(metrics.get("lagbudget_backlog_rows", &catalog), Some(2.0));
    let probe = daemon.probe(&budget, "products").await;
    assert_eq!(probe["cache"]["stalest"][0]["key"], "product:1");

    daemon.stop().await;
    my.query_drop(format!("DROP TABLE test.{table}"))
        .await
        .expect("drop");
    my.disconnect().await.expect("disconnect");
}
