//! `mysql_replica` against a private MariaDB primary and replica the tests start: heartbeat lag
//! while the replica's SQL thread is stopped (the issue's acceptance), Seconds_Behind_Master
//! reported as down rather than 0, read-your-writes misses, a killed replica, and topology.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;

use crate::mariadb_support::MariaDbPair;
use crate::support::{Daemon, Metrics, PATIENCE, unique, wait_for};

const PROBE: &str = "replica-lag";

/// A budget with one `mysql_replica` probe. With `ryw`, read-your-writes is checked (1 s) and
/// a second replica source names the same replica server, so the probe has two entries that
/// share one heartbeat writer.
fn config(pair: &MariaDbPair, budget: &str, ryw: bool) -> String {
    let (replicas, ryw) = if ryw {
        ("[replica, replica-again]", ", ryw_delay: 1s")
    } else {
        ("[replica]", "")
    };
    format!(
        r#"
sources:
  primary: {{ mysql: {{ url: "{primary}" }} }}
  replica: {{ mysql: {{ url: "{replica}" }} }}
  replica-again: {{ mysql: {{ url: "{replica}" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    interval: 1s
    probes:
      - name: {PROBE}
        mysql_replica: {{ primary: primary, replicas: {replicas}{ryw} }}
"#,
        primary = pair.url(pair.primary_port),
        replica = pair.url(pair.replica_port),
    )
}

fn now() -> f64 {
    lagbudget::clock::unix_now()
}

fn lag(metrics: &Metrics, budget: &str) -> Option<f64> {
    replica_lag(metrics, budget, "replica")
}

fn replica_lag(metrics: &Metrics, budget: &str, replica: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_lag_seconds",
        &[("budget", budget), ("probe", PROBE), ("replica", replica)],
    )
}

/// Inserts an order on the primary every 200 ms until cancelled: the primary keeps getting
/// application writes while the replica is held back.
fn keep_writing(pair: &MariaDbPair) -> CancellationToken {
    let stop = CancellationToken::new();
    let url = format!("mysql://root@127.0.0.1:{}/app", pair.primary_port);
    let token = stop.clone();
    tokio::spawn(async move {
        let Ok(mut conn) = mysql_async::Conn::from_url(url).await else {
            return;
        };
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let _ = conn
                .exec_drop("INSERT INTO orders (at) VALUES (?)", (now(),))
                .await;
        }
    });
    stop
}

async fn wait_caught_up(daemon: &Daemon, budget: &str, limit: Duration) -> f64 {
    wait_for(
        &format!("{budget} ok with lag under 1.5 s"),
        limit,
        || async {
            let lag = lag(&daemon.metrics().await, budget)?;
            (lag < 1.5 && daemon.state(budget).await == "ok").then_some(lag)
        },
    )
    .await
}

/// What `check --connect` says about each source and probe of the daemon's config.
async fn check_connect(daemon: &Daemon) -> Vec<(String, Result<String, String>)> {
    let config = lagbudget::config::load(&daemon.config_path).expect("config");
    lagbudget::oneshot::check_connections(&config, Duration::from_secs(5))
        .await
        .into_iter()
        .map(|report| (report.what, report.result.map_err(|e| e.to_string())))
        .collect()
}

fn ryw_counters(metrics: &Metrics, budget: &str) -> (f64, f64) {
    let labels = [("budget", budget), ("probe", PROBE), ("replica", "replica")];
    let get = |name: &str| {
        metrics
            .get(name, &labels)
            .unwrap_or_else(|| panic!("{name} for {budget}/{PROBE} replica=replica"))
    };
    (
        get("lagbudget_read_your_writes_checks_total"),
        get("lagbudget_read_your_writes_misses_total"),
    )
}

/// The acceptance case of issue 5: `STOP SLAVE SQL_THREAD` for 10 s while the primary keeps
/// getting writes ⇒ heartbeat lag within ±1.5 s of how long the thread has been stopped, and
/// Seconds_Behind_Master reported as down (NULL, thread stopped), never as 0; read-your-writes
/// checks miss meanwhile; `START SLAVE` ⇒ back under 1.5 s and `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_sql_thread_reads_as_heartbeat_lag_and_sbm_as_down() {
    let pair = MariaDbPair::start().await;
    let writes = keep_writing(&pair);
    let budget = unique("mysql_stop");
    let daemon = Daemon::start(&config(&pair, &budget, true)).await;
    let caught_up = wait_caught_up(&daemon, &budget, Duration::from_secs(30)).await;
    eprintln!("caught up: heartbeat lag {caught_up:.3} s");
    let (checks_before, misses_before) = ryw_counters(&daemon.metrics().await, &budget);

    pair.on_replica("STOP SLAVE SQL_THREAD").await;
    let stopped_at = now();
    // Injects lag: the SQL thread stays stopped until a successful run at least 10 s after
    // the stop (the daemon's own timestamp) that counted five more read-your-writes checks.
    let last_success = |m: &Metrics| {
        m.get(
            "lagbudget_probe_last_success_timestamp_seconds",
            &[("budget", budget.as_str()), ("probe", PROBE)],
        )
    };
    let metrics = daemon
        .wait_for_metrics("a run 10 s into the stop", Duration::from_secs(60), |m| {
            last_success(m).is_some_and(|at| at >= stopped_at + 10.0)
                && lag(m, &budget).is_some()
                && ryw_counters(m, &budget).0 - checks_before >= 5.0
        })
        .await;
    let measured = lag(&metrics, &budget).expect("lag while the SQL thread is stopped");
    let measured_at = last_success(&metrics).expect("last success");
    // The first heartbeat the replica cannot apply was sent within one write period (500 ms)
    // after the stop; its age at the run that measured it is the expected lag.
    let expected = measured_at - stopped_at;
    let status = pair.replica_status().await;
    let probe = daemon.probe(&budget, PROBE).await;
    let detail = probe["detail"].as_str().unwrap_or_default().to_owned();
    eprintln!(
        "SQL thread stopped {:.1} s: heartbeat lag {measured:.3} s, expected {expected:.3} s \
         (difference {:+.3} s, tolerance ±1.5 s); MariaDB says: {status}; probe detail: {detail}",
        measured_at - stopped_at,
        measured - expected
    );
    assert!(
        (measured - expected).abs() <= 1.5,
        "heartbeat lag {measured:.3} s, expected {expected:.3} s ± 1.5 s"
    );
    // The second entry of the probe reads the same server through another source: same lag
    // within a run interval, from the same (shared) writer.
    let again = replica_lag(&metrics, &budget, "replica-again").expect("second entry's lag");
    eprintln!("second replica entry: heartbeat lag {again:.3} s");
    assert!((again - measured).abs() <= 1.5, "{again} vs {measured}");
    let mut primary = pair.root(pair.primary_port).await;
    let rows: Option<u64> = primary
        .exec_first(
            "SELECT COUNT(*) FROM lagbudget.heartbeat WHERE probe = ?",
            (format!("{budget}/{PROBE}"),),
        )
        .await
        .expect("heartbeat rows");
    assert_eq!(
        rows,
        Some(1),
        "one writer, one row, for both replica entries"
    );
    assert!(status.contains("Seconds_Behind_Master=NULL"), "{status}");
    // The secondary signal says "down", never 0 seconds behind.
    assert!(detail.contains("SQL thread stopped"), "{detail}");
    assert!(detail.contains("Seconds_Behind_Source NULL"), "{detail}");
    // And in /metrics: the SQL thread is reported stopped and Seconds_Behind_Source is absent,
    // not 0, while the IO thread still runs.
    let thread = |name: &str| {
        metrics.get(
            "lagbudget_mysql_replication_running",
            &[
                ("budget", budget.as_str()),
                ("probe", PROBE),
                ("thread", name),
            ],
        )
    };
    assert_eq!(thread("sql"), Some(0.0), "SQL thread reported stopped");
    assert_eq!(thread("io"), Some(1.0), "IO thread reported running");
    assert_eq!(
        metrics.get(
            "lagbudget_mysql_seconds_behind_source",
            &[("budget", budget.as_str())]
        ),
        None,
        "Seconds_Behind_Source is absent while a thread is stopped, never 0"
    );
    assert_eq!(
        probe["up"], true,
        "heartbeat lag is measured, so the probe is up"
    );
    assert_eq!(daemon.state(&budget).await, "breach");
    let (checks, misses) = ryw_counters(&metrics, &budget);
    eprintln!(
        "read-your-writes (1 s delay) while stopped: {} checks, {} misses",
        checks - checks_before,
        misses - misses_before
    );
    assert!(checks - checks_before >= 5.0, "checks counted: {checks}");
    assert!(
        misses - misses_before >= 5.0,
        "misses while stopped: {misses}"
    );

    pair.on_replica("START SLAVE SQL_THREAD").await;
    let resumed = std::time::Instant::now();
    let lag_after = wait_caught_up(&daemon, &budget, PATIENCE).await;
    eprintln!(
        "SQL thread started: lag {lag_after:.3} s and ok after {:.1} s",
        resumed.elapsed().as_secs_f64()
    );
    let probe = daemon.probe(&budget, PROBE).await;
    let detail = probe["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("SQL thread running"), "{detail}");
    let metrics_after = daemon.metrics().await;
    let behind = metrics_after.get(
        "lagbudget_mysql_seconds_behind_source",
        &[("budget", budget.as_str()), ("probe", PROBE)],
    );
    eprintln!("Seconds_Behind_Source after START SLAVE: {behind:?}");
    assert!(behind.is_some(), "reported again while both threads run");
    // Caught up, read-your-writes checks stop missing: three more checks, no more misses.
    let (checks_caught_up, misses_caught_up) = ryw_counters(&daemon.metrics().await, &budget);
    let later = daemon
        .wait_for_metrics("three more read-your-writes checks", PATIENCE, |m| {
            ryw_counters(m, &budget).0 >= checks_caught_up + 3.0
        })
        .await;
    let (checks_later, misses_later) = ryw_counters(&later, &budget);
    eprintln!(
        "read-your-writes after catching up: {} checks, {} misses",
        checks_later - checks_caught_up,
        misses_later - misses_caught_up
    );
    assert!(checks_later > checks_caught_up);
    assert_eq!(misses_later, misses_caught_up);
    writes.cancel();
    daemon.stop().await;
}

/// A killed replica is down, then stale and `unknown`, with no lag series — never caught up;
/// restarted, it recovers without restarting the daemon. A restarted daemon continues the
/// heartbeat's seq from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_is_unknown_and_recovers() {
    let mut pair = MariaDbPair::start().await;
    let budget = unique("mysql_kill");
    let yaml = config(&pair, &budget, false);
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, Duration::from_secs(30)).await;
    // `check --connect` reaches both sources and checks the grants the probe needs (the
    // daemon's user has only those of docs/src/probes/mysql_replica.md).
    for (what, result) in check_connect(&daemon).await {
        eprintln!("check --connect: {what}: {result:?}");
        assert!(result.is_ok(), "{what}: {result:?}");
    }

    pair.kill_replica();
    let labels = [("budget", budget.as_str()), ("probe", PROBE)];
    let killed = std::time::Instant::now();
    let metrics = daemon
        .wait_for_metrics("the probe to be stale", PATIENCE, |m| {
            m.get("lagbudget_probe_stale", &labels) == Some(1.0)
        })
        .await;
    let probe = daemon.probe(&budget, PROBE).await;
    eprintln!(
        "replica killed: stale after {:.1} s, error {}",
        killed.elapsed().as_secs_f64(),
        probe["error"]
    );
    assert_eq!(metrics.get("lagbudget_probe_up", &labels), Some(0.0));
    assert!(
        lag(&metrics, &budget).is_none(),
        "no lag series while stale"
    );
    assert_eq!(probe["error"]["reason"], "connect");
    // The budget is evaluated every second: it follows the stale probe within one tick, by
    // the daemon's clock (stale: more than 3 intervals of 1 s after the last success).
    daemon.wait_for_state(&budget, "unknown", PATIENCE).await;
    let metrics = daemon.metrics().await;
    let unknown_after = metrics
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", budget.as_str())],
        )
        .expect("state since")
        - metrics
            .get("lagbudget_probe_last_success_timestamp_seconds", &labels)
            .expect("last success");
    eprintln!("replica killed: unknown {unknown_after:.3} s after the last success");
    assert!(
        (3.0..=5.0).contains(&unknown_after),
        "unknown once stale (3 s), within a tick or a run (1 s): {unknown_after}"
    );

    pair.restart_replica().await;
    let restarted = std::time::Instant::now();
    let lag_after = wait_caught_up(&daemon, &budget, Duration::from_secs(30)).await;
    eprintln!(
        "replica restarted: lag {lag_after:.3} s and ok after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );

    // A new daemon (same host name, same probe) continues the seq rather than restarting at 1,
    // so a replica showing the old row cannot read as caught up with the new writer.
    let seq = || async {
        let mut conn = pair.root(pair.primary_port).await;
        let seq: Option<i64> = conn
            .query_first("SELECT MAX(seq) FROM lagbudget.heartbeat")
            .await
            .expect("seq");
        seq.expect("a heartbeat row")
    };
    daemon.stop().await;
    let before = seq().await;
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, Duration::from_secs(30)).await;
    let after = seq().await;
    eprintln!("daemon restarted: heartbeat seq {before} -> {after}");
    assert!(after > before);
    daemon.stop().await;
}

/// A "replica" that is not one (the machine's own MariaDB) and a replica source that points
/// at the primary itself are `topology` errors, never lag 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_a_replica_of_the_primary_is_topology() {
    let pair = MariaDbPair::start().await;
    let budget = unique("mysql_topology");
    let yaml = format!(
        r#"
sources:
  primary: {{ mysql: {{ url: "{primary}" }} }}
  standalone: {{ mysql: {{ url: "mysql://root@127.0.0.1:3306/test" }} }}
  primary-again: {{ mysql: {{ url: "{primary}" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    interval: 1s
    probes:
      - name: standalone
        mysql_replica: {{ primary: primary, replicas: [standalone] }}
  - name: {budget}_self
    max_lag: 5s
    interval: 1s
    probes:
      - name: self
        mysql_replica: {{ primary: primary, replicas: [primary-again] }}
"#,
        primary = pair.url(pair.primary_port),
    );
    let daemon = Daemon::start(&yaml).await;
    for (budget, probe) in [
        (budget.clone(), "standalone"),
        (format!("{budget}_self"), "self"),
    ] {
        let error = wait_for(
            &format!("{budget}/{probe} to fail with topology"),
            Duration::from_secs(20),
            || async {
                let status = daemon.probe(&budget, probe).await;
                (status["error"]["reason"] == "topology").then(|| status["error"].clone())
            },
        )
        .await;
        eprintln!("{probe}: {error}");
        let metrics = daemon.metrics().await;
        let labels = [("budget", budget.as_str()), ("probe", probe)];
        assert!(!metrics.has_series("lagbudget_lag_seconds", &labels));
        assert!(
            metrics
                .get(
                    "lagbudget_probe_errors_total",
                    &[
                        ("budget", budget.as_str()),
                        ("probe", probe),
                        ("reason", "topology")
                    ]
                )
                .is_some_and(|n| n >= 1.0)
        );
    }
    let reports = check_connect(&daemon).await;
    let standalone = reports
        .iter()
        .find(|(what, _)| what.contains("/standalone"))
        .expect("a report for the standalone probe");
    eprintln!("check --connect: {standalone:?}");
    assert!(
        standalone
            .1
            .as_ref()
            .is_err_and(|e| e.starts_with("topology:")),
        "{standalone:?}"
    );
    daemon.stop().await;
}

/// A primary the writer cannot reach makes its replicas unknown (the writer's reason), never
/// "every heartbeat visible, lag 0", although the replica itself still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_heartbeat_writer_makes_the_replica_unknown_not_zero() {
    let mut pair = MariaDbPair::start().await;
    let budget = unique("mysql_writer");
    let daemon = Daemon::start(&config(&pair, &budget, false)).await;
    wait_caught_up(&daemon, &budget, Duration::from_secs(30)).await;

    pair.kill_primary();
    let killed = std::time::Instant::now();
    let error = wait_for("the probe to go down", PATIENCE, || async {
        let probe = daemon.probe(&budget, PROBE).await;
        (probe["up"] == false).then(|| probe["error"].clone())
    })
    .await;
    eprintln!(
        "primary killed: replica probe down after {:.1} s: {error}",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(error["reason"], "connect");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("no heartbeat written")),
        "{error}"
    );
    daemon.wait_for_state(&budget, "unknown", PATIENCE).await;
    assert!(lag(&daemon.metrics().await, &budget).is_none());
    daemon.stop().await;
}
