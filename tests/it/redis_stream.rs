//! `redis_stream_group` against the machine's Redis (127.0.0.1:6379): ages injected through
//! explicit entry IDs whose milliseconds lie a known time in the past, for undelivered and for
//! delivered-but-unacknowledged entries; exact backlogs; an empty group; non-time IDs; an idle
//! consumer holding entries (a stall); a missing group; and a port that answers garbage.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::support::{Daemon, PATIENCE, check_connect_lines, load_config, unique, wait_for};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

async fn redis() -> MultiplexedConnection {
    let client = redis::Client::open(REDIS_URL).expect("url");
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("Redis answers within 5 s")
    .unwrap_or_else(|e| panic!("Redis at {REDIS_URL} must be running for this test: {e}"))
}

/// Redis' clock, in milliseconds since the epoch.
async fn redis_now_ms(con: &mut MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await.expect("TIME");
    secs * 1000 + micros / 1000
}

async fn xadd(con: &mut MultiplexedConnection, key: &str, id: &str) {
    let _: String = redis::cmd("XADD")
        .arg(key)
        .arg(id)
        .arg("field")
        .arg("value")
        .query_async(con)
        .await
        .expect("XADD");
}

async fn create_group(con: &mut MultiplexedConnection, key: &str, group: &str, from: &str) {
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(from)
        .arg("MKSTREAM")
        .query_async(con)
        .await
        .expect("XGROUP CREATE");
}

/// Delivers `count` entries to `consumer` (leaving them pending until acknowledged).
async fn deliver(
    con: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    consumer: &str,
    count: u32,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query_async(con)
        .await
        .expect("XREADGROUP");
}

/// Deletes the test's keys when dropped, so that a failing assertion leaves nothing behind.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A synchronous connection: `Drop` cannot await.
        if let Ok(mut con) = redis::Client::open(REDIS_URL).and_then(|c| c.get_connection()) {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&self.0).query(&mut con);
        }
    }
}

fn probe_yaml(name: &str, key: &str, group: &str, extra: &str) -> String {
    format!(
        "      - name: {name}
        interval: 1s
        stall_after: 2s
{extra}        redis_stream_group: {{ source: cache, stream: \"{key}\", group: {group}{} }}
",
        if extra.is_empty() {
            ""
        } else {
            ", id_time: false"
        }
    )
}

/// Issue acceptance: backlog exact; lag within ±1 s of the injected age for an undelivered
/// entry and for a delivered-but-unacknowledged one; an empty group reads 0; non-time IDs give
/// backlog only; an idle consumer sitting on its entries is a stall; a missing group is
/// `no_data`.
#[tokio::test(flavor = "multi_thread")]
async fn stream_group_lag_and_backlog_match_injected_ages() {
    let mut con = redis().await;
    let undelivered = unique("lb_undelivered");
    let pending = unique("lb_pending");
    let empty = unique("lb_empty");
    let counters = unique("lb_counters");
    let _cleanup = Cleanup(vec![
        undelivered.clone(),
        pending.clone(),
        empty.clone(),
        counters.clone(),
    ]);
    let now = redis_now_ms(&mut con).await;

    // Three entries 30, 20 and 10 s old, none delivered yet.
    for age in [30_000, 20_000, 10_000] {
        xadd(&mut con, &undelivered, &format!("{}-0", now - age)).await;
    }
    create_group(&mut con, &undelivered, "g", "0").await;
    // One entry 40 s old delivered to a consumer that never acknowledges it, one 5 s old not
    // delivered: the older, pending one is the lag.
    xadd(&mut con, &pending, &format!("{}-0", now - 40_000)).await;
    xadd(&mut con, &pending, &format!("{}-0", now - 5_000)).await;
    create_group(&mut con, &pending, "g", "0").await;
    deliver(&mut con, &pending, "g", "worker-1", 1).await;
    let delivered_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // A group on an empty stream.
    create_group(&mut con, &empty, "g", "$").await;
    // Explicit non-time IDs: one delivered, two not.
    for id in ["1-0", "2-0", "3-0"] {
        xadd(&mut con, &counters, id).await;
    }
    create_group(&mut con, &counters, "g", "0").await;
    deliver(&mut con, &counters, "g", "worker-1", 1).await;

    let budget = unique("streams");
    let mut probes = String::new();
    probes += &probe_yaml("undelivered", &undelivered, "g", "");
    probes += &probe_yaml("pending", &pending, "g", "");
    probes += &probe_yaml("empty", &empty, "g", "");
    // The only probe with extra settings is the backlog-only one.
    probes += &probe_yaml("counters", &counters, "g", "        max_backlog: 10\n");
    probes += &probe_yaml("no-group", &undelivered, "nobody", "");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  cache: {{ redis: {{ url: \"{REDIS_URL}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5m
    probes:
{probes}"
    ))
    .await;
    daemon.wait_ready(PATIENCE).await;

    let labels = |probe: &'static str| [("budget", budget.clone()), ("probe", probe.to_owned())];
    let get = |metrics: &crate::support::Metrics, name: &str, probe: &'static str| {
        let labels = labels(probe);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        metrics.get(name, &labels)
    };
    // Wait for a scrape where every probe has a fresh sample (or its error) and the idle
    // consumer has been idle past the 2 s stall limit.
    let metrics = wait_for(
        "fresh samples and the idle consumer's stall",
        PATIENCE,
        || async {
            let metrics = daemon.metrics().await;
            let ready = get(&metrics, "lagbudget_stalled", "pending") == Some(1.0)
                && get(&metrics, "lagbudget_backlog_messages", "counters").is_some()
                && get(&metrics, "lagbudget_lag_seconds", "empty").is_some();
            ready.then_some(metrics)
        },
    )
    .await;

    for (probe, oldest_age_ms, backlog) in [("undelivered", 30_000, 3.0), ("pending", 40_000, 2.0)]
    {
        let lag = get(&metrics, "lagbudget_lag_seconds", probe).expect("lag");
        let last_success = get(
            &metrics,
            "lagbudget_probe_last_success_timestamp_seconds",
            probe,
        )
        .expect("last success");
        let expected = last_success - (now - oldest_age_ms) as f64 / 1000.0;
        eprintln!("redis {probe}: measured lag {lag:.3} s, expected {expected:.3} s");
        assert!(
            (lag - expected).abs() <= 1.0,
            "{probe}: lag {lag} not within ±1 s of {expected}"
        );
        assert_eq!(
            get(&metrics, "lagbudget_backlog_messages", probe),
            Some(backlog),
            "{probe}: pending + undelivered"
        );
    }
    assert_eq!(get(&metrics, "lagbudget_lag_seconds", "empty"), Some(0.0));
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", "empty"),
        Some(0.0)
    );
    assert_eq!(get(&metrics, "lagbudget_stalled", "empty"), Some(0.0));

    // Non-time IDs: 1 pending + 2 undelivered, and no lag series at all (not a 0).
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", "counters"),
        Some(3.0)
    );
    assert_eq!(get(&metrics, "lagbudget_lag_seconds", "counters"), None);
    assert!(
        daemon.probe(&budget, "counters").await["lag_seconds"].is_null(),
        "backlog-only probe has null lag in the API"
    );

    // The idle consumer: progress is when it last moved (its delivery), so it stalls.
    let progress =
        get(&metrics, "lagbudget_progress_timestamp_seconds", "pending").expect("progress");
    eprintln!(
        "redis pending: progress at {progress:.3}, delivery at {delivered_at:.3} (diff {:.3} s)",
        progress - delivered_at
    );
    assert!(
        (progress - delivered_at).abs() <= 1.0,
        "progress {progress} is the idle consumer's last activity {delivered_at}"
    );

    let no_group = daemon.probe(&budget, "no-group").await;
    assert_eq!(no_group["up"], false);
    assert_eq!(no_group["error"]["reason"], "no_data", "{no_group}");
    let message = no_group["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("has no consumer group \"nobody\""),
        "{message}"
    );

    // Acknowledging the old pending entry leaves the 5 s undelivered one as the lag.
    let _: i64 = redis::cmd("XACK")
        .arg(&pending)
        .arg("g")
        .arg(format!("{}-0", now - 40_000))
        .query_async(&mut con)
        .await
        .expect("XACK");
    let metrics = wait_for("the ack to be seen", PATIENCE, || async {
        let metrics = daemon.metrics().await;
        (get(&metrics, "lagbudget_backlog_messages", "pending") == Some(1.0)).then_some(metrics)
    })
    .await;
    let lag = get(&metrics, "lagbudget_lag_seconds", "pending").expect("lag");
    let last_success = get(
        &metrics,
        "lagbudget_probe_last_success_timestamp_seconds",
        "pending",
    )
    .expect("last success");
    let expected = last_success - (now - 5_000) as f64 / 1000.0;
    eprintln!("redis pending after XACK: measured lag {lag:.3} s, expected {expected:.3} s");
    assert!((lag - expected).abs() <= 1.0, "lag {lag} vs {expected}");

    daemon.stop().await;
}

/// `lagbudget probe` and `check --connect` through the library: the source answers with its
/// version, the probe's script runs, and a missing stream is `no_data`.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_and_one_shot_runs_read_the_stream() {
    let mut con = redis().await;
    let key = unique("lb_check");
    let _cleanup = Cleanup(vec![key.clone()]);
    let now = redis_now_ms(&mut con).await;
    // The entry is 3 s old on Redis' clock now, and ages with everything below.
    let added = Instant::now();
    xadd(&mut con, &key, &format!("{}-0", now - 3_000)).await;
    create_group(&mut con, &key, "g", "0").await;
    let config = load_config(&format!(
        "sources:
  cache: {{ redis: {{ url: \"{REDIS_URL}\" }} }}
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: stream
        redis_stream_group: {{ source: cache, stream: \"{key}\", group: g }}
      - name: missing
        redis_stream_group: {{ source: cache, stream: \"{key}-missing\", group: g }}
"
    ));

    let lines = check_connect_lines(&config).await;
    assert!(
        lines.iter().any(|l| l.contains(": ok Redis 7")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stream") && l.contains("ok stream and group readable, 0 pending")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("missing") && l.contains("no_data: stream")),
        "{lines:?}"
    );

    let results = lagbudget::oneshot::run_probes_once(&config, None)
        .await
        .expect("runs");
    // Config load and check --connect take a while on a loaded machine: bound the expected
    // age by the time that passed rather than assume it was short.
    let aged = added.elapsed().as_secs_f64();
    let table = lagbudget::oneshot::format_table(&results);
    eprintln!("{table}");
    let stream = results
        .iter()
        .find(|r| r.probe == "stream")
        .expect("stream");
    let sample = stream.result.as_ref().expect("measured");
    let lag = sample.lag_seconds.expect("time-based IDs give a lag");
    eprintln!(
        "one-shot: measured lag {lag:.3} s, expected 3 s to {:.3} s",
        3.0 + aged
    );
    assert!(
        lag >= 3.0 - 0.01 && lag <= 3.0 + aged + 0.01,
        "lag {lag} for an entry 3 s old {aged:.3} s ago"
    );
    assert_eq!(sample.backlog.map(|b| b.value), Some(1.0));
}

/// A port that answers garbage and a port nobody listens on: each probe reports a bounded
/// reason within its timeout, and neither hangs nor panics.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_answering_garbage_is_a_bounded_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                // Answer every request with bytes that are not RESP, and keep the socket open.
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 || socket.write_all(b"\x00\x17garbage\xff\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = load_config(&format!(
        "sources:
  fake: {{ redis: {{ url: \"redis://:garbage-secret@127.0.0.1:{port}\" }} }}
  nobody: {{ redis: {{ url: \"redis://127.0.0.1:{closed}\" }} }}
budgets:
  - name: b
    max_lag: 1m
    timeout: 2s
    probes:
      - name: stream
        redis_stream_group: {{ source: fake, stream: s, group: g }}
      - name: closed
        redis_stream_group: {{ source: nobody, stream: s, group: g }}
",
        closed = crate::support::closed_port()
    ));
    // Bounded: the run ends (with its 2 s timeout at the latest) rather than waiting forever
    // for a valid reply. How long it took is printed, not asserted: a loaded machine may take
    // longer.
    let started = Instant::now();
    let results =
        tokio::time::timeout(PATIENCE, lagbudget::oneshot::run_probes_once(&config, None))
            .await
            .unwrap_or_else(|_| panic!("a run with a 2 s timeout still running after {PATIENCE:?}"))
            .expect("runs");
    let took = started.elapsed();
    let error = results[0]
        .result
        .as_ref()
        .expect_err("garbage is not a sample");
    eprintln!("garbage server: {error} after {took:?}");
    assert!(
        ["connect", "decode", "timeout"].contains(&error.reason.as_str()),
        "bounded reason, got {error}"
    );
    assert!(!error.message.contains("garbage-secret"));
    let refused = results[1].result.as_ref().expect_err("nothing listens");
    eprintln!("closed port: {refused}");
    assert_eq!(refused.reason.as_str(), "connect", "{refused}");
    server.abort();
}
