//! `postgres_logical` against a private PostgreSQL with `wal_level = logical`: a slot with
//! unconsumed changes, consumed, idle with background WAL, dropped; a daemon that starts on a
//! slot already behind; and a streaming consumer (`pg_recvlogical`).

use std::cell::Cell;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::support::{
    Daemon, Metrics, PATIENCE, PrivatePostgres, connect, poll_until, postgres_bin_dir, unique,
    wait_for,
};

/// `autovacuum = off`: an autovacuum ANALYZE of the test table commits a catalog-only
/// transaction, which this probe counts (conservatively) as a change until the consumer
/// confirms past it; the idle assertions must not depend on when autovacuum wakes up.
const LOGICAL: &[&str] = &["wal_level = logical", "autovacuum = off"];

const LAG: &str = "lagbudget_lag_seconds";
const BACKLOG: &str = "lagbudget_backlog_bytes";

fn config(dsn: &str, budget: &str, slot: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
sources:
  primary: {{ postgres: {{ dsn: \"{dsn}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    probes:
      - name: slot
        interval: 1s
        postgres_logical: {{ source: primary, slot: {slot} }}
"
    )
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A private server with `wal_level = logical`, a table and a `test_decoding` slot whose
/// consumer has confirmed everything.
struct Setup {
    server: PrivatePostgres,
    db: Client,
    table: String,
    slot: String,
}

impl Setup {
    async fn new() -> Setup {
        let server = tokio::task::spawn_blocking(|| PrivatePostgres::start_with(LOGICAL))
            .await
            .expect("start PostgreSQL");
        let db = connect(&server.dsn()).await;
        let table = unique("lb_orders");
        let slot = unique("lb_slot");
        db.batch_execute(&format!(
            "CREATE TABLE {table} (id serial PRIMARY KEY, note text)"
        ))
        .await
        .expect("create table");
        db.query_one(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&slot],
        )
        .await
        .expect("create slot");
        let setup = Setup {
            server,
            db,
            table,
            slot,
        };
        setup.consume().await;
        setup
    }

    /// Inserts one row in its own transaction; returns the daemon-clock time its commit had
    /// returned by (the change is at least this old from then on).
    async fn insert(&self) -> f64 {
        self.db
            .execute(
                format!("INSERT INTO {} (note) VALUES ('x')", self.table).as_str(),
                &[],
            )
            .await
            .expect("insert");
        unix_now()
    }

    /// Consumes everything, as a polling consumer does; returns the rows decoded.
    async fn consume(&self) -> i64 {
        self.db
            .query_one(
                "SELECT count(*) FROM pg_logical_slot_get_changes($1, NULL, NULL)",
                &[&self.slot],
            )
            .await
            .expect("get changes")
            .get(0)
    }
}

fn labels(budget: &str) -> [(&str, &str); 2] {
    [("budget", budget), ("probe", "slot")]
}

/// Waits for a run to report lag 0, consuming as a polling consumer would meanwhile (a
/// background WAL record written before the daemon's first sample would otherwise leave the
/// map uncovered).
async fn wait_caught_up(daemon: &Daemon, setup: &Setup, budget: &str) -> Metrics {
    wait_for("the slot to read caught up", PATIENCE, || async {
        setup.consume().await;
        let metrics = daemon.metrics().await;
        (metrics.get(LAG, &labels(budget)) == Some(0.0)).then_some(metrics)
    })
    .await
}

fn last_success(metrics: &Metrics, budget: &str) -> f64 {
    metrics
        .get(
            "lagbudget_probe_last_success_timestamp_seconds",
            &labels(budget),
        )
        .expect("last success")
}

/// Waits for a successful run at or after unix time `at` that measured a lag, and returns
/// that scrape.
async fn wait_for_success_after(daemon: &Daemon, budget: &str, at: f64) -> Metrics {
    daemon
        .wait_for_metrics(&format!("a successful run after {at:.3}"), PATIENCE, |m| {
            m.get(LAG, &labels(budget)).is_some()
                && m.get(
                    "lagbudget_probe_last_success_timestamp_seconds",
                    &labels(budget),
                )
                .is_some_and(|success| success >= at)
        })
        .await
}

/// What `check --connect` says about the probe: `ok: …` or `reason: message`.
async fn check_connect(daemon: &Daemon) -> String {
    let config = lagbudget::config::load(&daemon.config_path).expect("config");
    let reports = lagbudget::oneshot::check_connections(&config, Duration::from_secs(5)).await;
    let probe = reports
        .into_iter()
        .find(|report| report.what.contains("(postgres_logical)"))
        .expect("a report for the probe");
    match probe.result {
        Ok(found) => format!("ok: {found}"),
        Err(error) => error.to_string(),
    }
}

/// Issue acceptance: unconsumed changes ⇒ backlog bytes > 0 and lag within ±2 s of the age of
/// the oldest unconsumed change; consumed ⇒ lag 0 and backlog about 0; background WAL on an
/// idle primary ⇒ still 0; a dropped slot ⇒ down with `no_data`.
#[tokio::test(flavor = "multi_thread")]
async fn unconsumed_changes_read_as_their_age_consumed_and_idle_as_zero() {
    let setup = Setup::new().await;
    let budget = unique("cdc");
    let labels = labels(&budget);
    let daemon = Daemon::start(&config(&setup.server.dsn(), &budget, &setup.slot)).await;
    wait_caught_up(&daemon, &setup, &budget).await;
    // One more run at or before the slot's position, so that the map brackets what follows.
    daemon.wait_for_runs(&budget, "slot", 1, PATIENCE).await;

    let oldest = setup.insert().await;
    let mut newest = oldest;
    for _ in 0..2 {
        // Injects age: the three changes are committed about a second apart.
        tokio::time::sleep(Duration::from_secs(1)).await;
        newest = setup.insert().await;
    }
    // The oldest change ages unconsumed: measured by a successful run at least 4 s after the
    // last insert (the daemon's timestamps say when it ran; no fixed sleep).
    let metrics = wait_for_success_after(&daemon, &budget, newest + 4.0).await;
    let lag = metrics.get(LAG, &labels).expect("lag while fresh");
    let backlog = metrics.get(BACKLOG, &labels).expect("backlog bytes");
    let last_success = last_success(&metrics, &budget);
    let expected = last_success - oldest;
    println!(
        "unconsumed: measured lag {lag:.3} s, expected {expected:.3} s (age of the oldest \
         unconsumed commit at the last run); backlog {backlog} bytes"
    );
    assert!(
        (lag - expected).abs() <= 2.0,
        "lag {lag} not within ±2 s of {expected}"
    );
    assert!(backlog > 0.0, "three unconsumed inserts are WAL bytes");
    let probe = daemon.probe(&budget, "slot").await;
    let detail = probe["detail"].as_str().expect("detail");
    assert!(detail.contains("inactive"), "nobody is connected: {detail}");
    assert_eq!(
        metrics.get("lagbudget_stalled", &labels),
        Some(0.0),
        "stall_after defaults to max_lag (30 s)"
    );

    let decoded = setup.consume().await;
    assert!(decoded >= 9, "BEGIN, INSERT, COMMIT per row: {decoded}");
    let started = Instant::now();
    let metrics = daemon
        .wait_for_metrics("lag 0 after consuming", PATIENCE, |m| {
            m.get(LAG, &labels) == Some(0.0)
        })
        .await;
    let backlog = metrics.get(BACKLOG, &labels).expect("backlog");
    println!(
        "consumed: lag 0 after {:?}, backlog {backlog} bytes",
        started.elapsed()
    );
    // Everything the consumer read is confirmed; only a background record written since
    // (running-xacts, a few dozen bytes) can lie past it.
    assert!(backlog <= 1024.0, "backlog after consuming: {backlog}");

    // Background WAL without a transaction: the slot's consumer has nothing to receive, so
    // the backlog grows by the checkpoint record while the lag stays 0.
    setup
        .db
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let metrics = daemon
        .wait_for_metrics("the checkpoint record in the backlog", PATIENCE, |m| {
            m.get(BACKLOG, &labels).unwrap_or(0.0) > 0.0
        })
        .await;
    let idle_backlog = metrics.get(BACKLOG, &labels).expect("backlog");
    // Idle: lag 0 at every scrape through five more runs.
    let idle_since = Instant::now();
    daemon
        .watch_runs((&budget, "slot"), 5, PATIENCE, |metrics| {
            assert_eq!(
                metrics.get(LAG, &labels),
                Some(0.0),
                "background WAL is not lag ({:?} after the checkpoint)",
                idle_since.elapsed()
            );
        })
        .await;
    let probe = daemon.probe(&budget, "slot").await;
    let detail = probe["detail"].as_str().expect("detail").to_owned();
    println!(
        "idle after CHECKPOINT: lag 0 for 5 runs ({:?}), backlog {idle_backlog} bytes; {detail}",
        idle_since.elapsed()
    );
    assert!(detail.contains("no transaction committed"), "{detail}");
    assert_eq!(daemon.state(&budget).await, "ok");

    let check = check_connect(&daemon).await;
    assert!(
        check.starts_with("ok: slot ") && check.contains("found"),
        "{check}"
    );
    setup
        .db
        .query_one("SELECT pg_drop_replication_slot($1)", &[&setup.slot])
        .await
        .expect("drop slot");
    let probe = wait_for("the probe to fail", PATIENCE, || async {
        let probe = daemon.probe(&budget, "slot").await;
        probe["error"].is_object().then_some(probe)
    })
    .await;
    println!("dropped: {}", probe["error"]);
    assert_eq!(probe["error"]["reason"], "no_data");
    assert_eq!(
        probe["error"]["message"],
        format!("slot {} does not exist", setup.slot)
    );
    let metrics = daemon.metrics().await;
    assert_eq!(metrics.get("lagbudget_probe_up", &labels), Some(0.0));
    let no_data = [
        ("budget", budget.as_str()),
        ("probe", "slot"),
        ("reason", "no_data"),
    ];
    assert!(metrics.get("lagbudget_probe_errors_total", &no_data) >= Some(1.0));
    let check = check_connect(&daemon).await;
    assert_eq!(
        check,
        format!("no_data: slot {} does not exist", setup.slot)
    );
    daemon.wait_for_state(&budget, "unknown", PATIENCE).await;
    let metrics = daemon.metrics().await;
    assert!(!metrics.has_series(LAG, &labels), "stale: no lag series");
    daemon.stop().await;
}

/// Idle is not a stall: background WAL past a consumed slot is backlog in bytes, but nothing
/// waits for the consumer, so the probe must not read as stalled however long the slot stays
/// put. A commit nobody consumes is behind and not moving: that one stalls.
#[tokio::test(flavor = "multi_thread")]
async fn background_wal_on_an_idle_primary_is_not_a_stall() {
    let setup = Setup::new().await;
    let budget = unique("cdc_idle");
    let labels = labels(&budget);
    let yaml = config(&setup.server.dsn(), &budget, &setup.slot)
        .replace("interval: 1s", "interval: 1s\n        stall_after: 2s");
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &setup, &budget).await;
    setup
        .db
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let first = daemon
        .wait_for_metrics("the checkpoint record in the backlog", PATIENCE, |m| {
            m.get(BACKLOG, &labels).unwrap_or(0.0) > 0.0
        })
        .await;
    // Three stall periods with the slot put and its backlog above 0: seven more runs, a second
    // apart at least, checked at every scrape.
    let idle_since = Instant::now();
    let last = daemon
        .watch_runs((&budget, "slot"), 7, PATIENCE, |metrics| {
            let backlog = metrics.get(BACKLOG, &labels).unwrap_or(0.0);
            assert_eq!(
                (
                    metrics.get(LAG, &labels),
                    metrics.get("lagbudget_stalled", &labels)
                ),
                (Some(0.0), Some(0.0)),
                "idle with {backlog} bytes of background WAL, {:?} after the checkpoint",
                idle_since.elapsed()
            );
        })
        .await;
    let idle_for = last_success(&last, &budget) - last_success(&first, &budget);
    println!("idle: lag 0 and not stalled through 7 runs, {idle_for:.3} s (stall_after 2 s)");
    assert!(idle_for >= 6.0, "three stall periods of runs: {idle_for}");

    setup.insert().await;
    let inserted = Instant::now();
    daemon
        .wait_for_metrics("the unconsumed commit to stall", PATIENCE, |m| {
            m.get("lagbudget_stalled", &labels) == Some(1.0)
        })
        .await;
    println!(
        "unconsumed commit: stalled after {:?} (stall_after 2 s)",
        inserted.elapsed()
    );
    daemon.stop().await;
}

/// A daemon that starts while the slot is already behind cannot know when those changes were
/// written: unknown (`no_data`), never 0, until the consumer confirms past its first sample;
/// from then on the map covers the slot and lag is measured.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_daemon_on_a_slot_already_behind_is_unknown_until_covered() {
    let setup = Setup::new().await;
    setup.insert().await;
    setup.insert().await;
    // Injects age: the changes are a second old when the daemon starts, older than anything
    // its first sample could bracket.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let budget = unique("cdc_restart");
    let labels = labels(&budget);
    let daemon = Daemon::start(&config(&setup.server.dsn(), &budget, &setup.slot)).await;
    wait_for("three runs", PATIENCE, || async {
        (daemon.runs(&budget, "slot").await >= 3).then_some(())
    })
    .await;
    let probe = daemon.probe(&budget, "slot").await;
    println!("fresh daemon, slot behind: {}", probe["error"]);
    assert_eq!(probe["error"]["reason"], "no_data");
    let message = probe["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("does not cover the backlog yet"),
        "{message}"
    );
    let metrics = daemon.metrics().await;
    assert!(!metrics.has_series(LAG, &labels), "never a lag for unknown");
    assert_eq!(daemon.state(&budget).await, "unknown");

    // The consumer catches up: caught up needs no map.
    setup.consume().await;
    wait_caught_up(&daemon, &setup, &budget).await;
    // Now the map covers the slot's position: new changes are measured.
    daemon.wait_for_runs(&budget, "slot", 1, PATIENCE).await;
    let committed = setup.insert().await;
    // The change ages unconsumed: measured by a successful run at least 3 s after its commit.
    let metrics = wait_for_success_after(&daemon, &budget, committed + 3.0).await;
    let lag = metrics.get(LAG, &labels).expect("lag once covered");
    let last_success = last_success(&metrics, &budget);
    let expected = last_success - committed;
    println!("covered: measured lag {lag:.3} s, expected {expected:.3} s");
    assert!(
        (lag - expected).abs() <= 2.0,
        "lag {lag} not within ±2 s of {expected}"
    );
    daemon.stop().await;
}

/// `pg_recvlogical` streaming with a 1 s status interval.
struct Streamer(Child);

impl Streamer {
    fn start(setup: &Setup, out: &std::path::Path) -> Streamer {
        let child = Command::new(postgres_bin_dir().join("pg_recvlogical"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &setup.server.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-S",
                &setup.slot,
                "--start",
                "--no-loop",
                "-s",
                "1",
                "-F",
                "1",
                "-f",
            ])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pg_recvlogical (installed with the PostgreSQL server binaries)");
        Streamer(child)
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A streaming consumer confirms what it received every status interval and, on an idle
/// primary, confirms background WAL when the server's keepalive reaches it: lag stays within
/// a few seconds while it keeps up, and stays 0 across a checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_consumer_keeps_lag_low_and_idle_reads_zero() {
    let setup = Setup::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let _streamer = Streamer::start(&setup, &dir.path().join("changes.txt"));
    let budget = unique("cdc_stream");
    let labels = labels(&budget);
    let daemon = Daemon::start(&config(&setup.server.dsn(), &budget, &setup.slot)).await;
    // pg_recvlogical connects on its own schedule: a caught-up slot can read 0 before it is
    // active, so wait for both rather than assume the order.
    let detail = wait_for(
        "the slot to read caught up with pg_recvlogical connected",
        PATIENCE,
        || async {
            let caught_up = daemon.metrics().await.get(LAG, &labels) == Some(0.0);
            let detail = daemon.probe(&budget, "slot").await["detail"]
                .as_str()
                .map(str::to_owned)?;
            (caught_up && detail.contains(" active")).then_some(detail)
        },
    )
    .await;
    assert!(detail.contains("slot"), "{detail}");

    setup.insert().await;
    let inserted = Instant::now();
    let mut max_lag: f64 = 0.0;
    let mut zero_again = None;
    // Eight runs after the insert, every scrape's lag noted.
    daemon
        .watch_runs((&budget, "slot"), 8, PATIENCE, |metrics| {
            let lag = metrics.get(LAG, &labels).unwrap_or(0.0);
            max_lag = max_lag.max(lag);
            if lag == 0.0 && max_lag > 0.0 && zero_again.is_none() {
                zero_again = Some(inserted.elapsed());
            }
        })
        .await;
    println!(
        "streaming consumer: max lag {max_lag:.3} s after one insert, 0 again after {zero_again:?}"
    );
    assert!(
        max_lag <= 4.0,
        "a consumer confirming every second stays within status interval + probe interval: \
         {max_lag}"
    );
    daemon
        .wait_for_metrics("lag 0 again", PATIENCE, |m| {
            m.get(LAG, &labels) == Some(0.0)
        })
        .await;

    setup
        .db
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let checkpointed = Instant::now();
    // Lag 0 at every scrape until the checkpoint's backlog is seen and confirmed (or 15 s
    // pass: a confirmation between two scrapes is never seen as backlog).
    let backlog_seen = Cell::new(0.0_f64);
    let confirmed_after = poll_until(Duration::from_secs(15), || async {
        let metrics = daemon.metrics().await;
        assert_eq!(
            metrics.get(LAG, &labels),
            Some(0.0),
            "background WAL is not lag ({:?} after the checkpoint)",
            checkpointed.elapsed()
        );
        let backlog = metrics.get(BACKLOG, &labels).unwrap_or(0.0);
        backlog_seen.set(backlog_seen.get().max(backlog));
        (backlog_seen.get() > 0.0 && backlog == 0.0).then(|| checkpointed.elapsed())
    })
    .await;
    println!(
        "streaming consumer, idle: lag 0 throughout; checkpoint backlog {} bytes, \
         confirmed after {confirmed_after:?}",
        backlog_seen.get()
    );
    // The consumer confirms background WAL when the server's keepalive reaches it.
    daemon
        .wait_for_metrics("backlog 0", PATIENCE, |m| {
            m.get(BACKLOG, &labels) == Some(0.0)
        })
        .await;
    daemon.stop().await;
}
