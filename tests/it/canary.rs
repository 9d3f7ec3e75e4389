//! `canary` against a real PostgreSQL primary and streaming standby: markers written on the
//! primary into lagbudget's own table and read back on the standby. Paused replay is lag within
//! a second of the truth and counts read-your-writes misses, resumed and idle read 0; two
//! daemons on one config keep one row each and agree; a dead writer makes the view unknown,
//! never 0; `check --connect` writes nothing. Each test starts its own servers, so they run
//! concurrently.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;

use crate::mariadb_support::MariaDbPair;
use crate::support::{
    Daemon, Metrics, PATIENCE, SHARED_PG_DSN, StreamingPair, connect, unique, wait_for,
};

/// Measured lag against injected lag, either way, in seconds. The first marker a paused
/// standby misses was written up to a write period after the pause began, so the canary reads
/// up to one write period less than the pause's age (and never more than the milliseconds
/// streaming takes). The paused tests write every 500 ms, half the tolerance, so that a late
/// write on a loaded machine stays inside it: at a 1 s period the error is up to the whole
/// tolerance by construction, and the pause, taken just after a run, lands just after a write.
const TOLERANCE: f64 = 1.0;

/// The probe's name in every config here.
const PROBE: &str = "visible";

async fn start_pair() -> StreamingPair {
    tokio::task::spawn_blocking(StreamingPair::start)
        .await
        .expect("start primary and standby")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .expect("clock")
}

/// One budget with one canary: markers in lagbudget's table on `primary` (schema `lagbudget`)
/// every `write_period`, read back on the view `standby` every second. `extra` is more lines of
/// the canary's mapping.
fn config(
    primary_dsn: &str,
    standby_dsn: &str,
    budget: &str,
    write_period: &str,
    extra: &[&str],
) -> String {
    let mut yaml = format!(
        "listen: 127.0.0.1:0
sources:
  primary: {{ postgres: {{ dsn: \"{primary_dsn}\" }} }}
  standby: {{ postgres: {{ dsn: \"{standby_dsn}\" }} }}
budgets:
  - name: {budget}
    max_lag: 60s
    probes:
      - name: {PROBE}
        interval: 1s
        canary:
          write: {{ source: primary }}
          read: [{{ source: standby }}]
          write_period: {write_period}
"
    );
    for line in extra {
        yaml.push_str(&format!("          {line}\n"));
    }
    yaml
}

fn labels(budget: &str) -> [(&str, &str); 3] {
    [("budget", budget), ("probe", PROBE), ("replica", "standby")]
}

fn lag(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get("lagbudget_lag_seconds", &labels(budget))
}

fn up(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get("lagbudget_probe_up", &labels(budget))
}

/// When the view's last successful run ended (daemon clock, unix seconds).
fn last_success(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_probe_last_success_timestamp_seconds",
        &labels(budget),
    )
}

/// A read-your-writes counter of the view (`checks` or `misses`).
fn ryw(metrics: &Metrics, budget: &str, which: &str) -> f64 {
    let name = format!("lagbudget_read_your_writes_{which}_total");
    metrics
        .get(&name, &labels(budget))
        .unwrap_or_else(|| panic!("{name} of the view:\n{}", metrics.text))
}

/// Pauses WAL replay on the standby and returns the test's clock once the pause is in force:
/// once the call returns, the standby applies no further WAL record.
async fn pause_replay(pair: &StreamingPair) -> f64 {
    pair.pause_replay().await;
    let paused_at = unix_now();
    let state: String = connect(&pair.standby_dsn())
        .await
        .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
        .await
        .expect("pause state")
        .get(0);
    assert_ne!(state, "not paused", "replay pause requested");
    paused_at
}

/// Rows of lagbudget's marker table on `dsn` for `budget`'s probe: (instance, rows).
async fn marker_rows(dsn: &str, schema: &str, budget: &str) -> Vec<(String, i64)> {
    connect(dsn)
        .await
        .query(
            &format!(
                "SELECT instance, count(*) FROM {schema}.canary WHERE probe = $1 \
                 GROUP BY instance ORDER BY instance"
            ),
            &[&format!("{budget}/{PROBE}")],
        )
        .await
        .expect("marker table")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Waits until the view is up with lag 0 from a run that ended after `since`.
async fn wait_caught_up(daemon: &Daemon, budget: &str, since: f64) -> Metrics {
    daemon
        .wait_for_metrics("the view caught up (lag 0)", PATIENCE, |m| {
            up(m, budget) == Some(1.0)
                && lag(m, budget) == Some(0.0)
                && last_success(m, budget).is_some_and(|at| at > since)
        })
        .await
}

/// Acceptance: replay paused 10 s by the test's clock ⇒ the standby view's lag is within ±1 s
/// of the pause's age and read-your-writes misses are counted; resumed ⇒ 0; then 30 idle runs
/// (nothing but the canary writes) ⇒ every lag under a second, the marker being the change.
#[tokio::test(flavor = "multi_thread")]
async fn canary_paused_replay_is_lag_and_misses_resumed_and_idle_are_zero() {
    let pair = start_pair().await;
    let budget = unique("cn_pause");
    let yaml = config(
        &pair.primary_dsn(),
        &pair.standby_dsn(),
        &budget,
        "500ms",
        &["read_your_writes: { after: 2s }"],
    );
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, 0.0).await;
    // A few read-your-writes checks while streaming, so that "no misses" means something.
    let before = daemon
        .wait_for_metrics("read-your-writes checks", PATIENCE, |m| {
            m.get("lagbudget_read_your_writes_checks_total", &labels(&budget))
                .is_some_and(|checks| checks >= 2.0)
        })
        .await;
    let (checks_before, misses_before) = (
        ryw(&before, &budget, "checks"),
        ryw(&before, &budget, "misses"),
    );
    assert_eq!(
        misses_before, 0.0,
        "no misses while streaming (after 2 s):\n{}",
        before.text
    );

    // Injects lag: replay stays paused until a run of the view ended 10 s after the pause and
    // five read-your-writes checks ran after the one 3 s into it.
    let paused_at = pause_replay(&pair).await;
    // A run ending 3 s into the pause: every later run reads at least 3 s into it, so the
    // marker it checks (the newest written 2 s before its read; one every 500 ms) was written
    // after the pause began and cannot be visible.
    let settled = daemon
        .wait_for_metrics("a run 3 s into the pause", PATIENCE, |m| {
            last_success(m, &budget).is_some_and(|at| at >= paused_at + 3.0)
        })
        .await;
    let (checks_settled, misses_settled) = (
        ryw(&settled, &budget, "checks"),
        ryw(&settled, &budget, "misses"),
    );
    let during = daemon
        .wait_for_metrics("a run 10 s into the pause", Duration::from_secs(60), |m| {
            lag(m, &budget).is_some()
                && last_success(m, &budget).is_some_and(|at| at >= paused_at + 10.0)
                && ryw(m, &budget, "checks") - checks_settled >= 5.0
        })
        .await;
    let measured = lag(&during, &budget).expect("lag while paused");
    let injected = last_success(&during, &budget).expect("last success") - paused_at;
    let checks = ryw(&during, &budget, "checks") - checks_before;
    let misses = ryw(&during, &budget, "misses") - misses_before;
    let late_checks = ryw(&during, &budget, "checks") - checks_settled;
    let late_misses = ryw(&during, &budget, "misses") - misses_settled;
    eprintln!(
        "replay paused {injected:.3} s: canary lag {measured:.3} s (tolerance ±{TOLERANCE} s); \
         read-your-writes during the pause: {misses} misses of {checks} checks, \
         {late_misses} of {late_checks} from 3 s in"
    );
    assert!(
        (measured - injected).abs() <= TOLERANCE,
        "lag {measured} not within ±{TOLERANCE} s of the pause's age {injected}"
    );
    assert_eq!(
        late_misses, late_checks,
        "every read-your-writes check 3 s into the pause misses"
    );
    let status = daemon.probe(&budget, PROBE).await;
    let unseen = status["canary"]["unseen_markers"]
        .as_u64()
        .unwrap_or_else(|| panic!("canary detail in {status}"));
    assert!(
        unseen >= 8,
        "markers written during the pause wait: {status}"
    );

    pair.resume_replay().await;
    let resumed_at = unix_now();
    wait_caught_up(&daemon, &budget, resumed_at).await;
    eprintln!(
        "resumed: lag 0 {:.1} s after the resume",
        unix_now() - resumed_at
    );

    // Idle: nothing but the canary writes to the primary for 30 runs of the view.
    let mut observed = Vec::new();
    daemon
        .watch_runs((&budget, PROBE), 30, Duration::from_secs(90), |m| {
            let lag = lag(m, &budget).unwrap_or_else(|| panic!("idle lag is known:\n{}", m.text));
            assert!(lag < 1.0, "idle is not lag: {lag}");
            observed.push(lag);
        })
        .await;
    let zeros = observed.iter().filter(|lag| **lag == 0.0).count();
    let max = observed.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "idle 30 runs: {} scrapes, {zeros} at exactly 0, max {max:.3} s",
        observed.len()
    );
    assert_eq!(
        marker_rows(&pair.primary_dsn(), "lagbudget", &budget)
            .await
            .len(),
        1,
        "one marker row for this daemon"
    );
    daemon.stop().await;
    drop(pair);
}

/// Acceptance: two daemons load one config whose `instance` comes from the environment. Each
/// keeps exactly one row in lagbudget's table, both views are up, and with replay paused both
/// measure the same lag within ±1 s.
#[tokio::test(flavor = "multi_thread")]
async fn canary_two_daemons_on_one_config_never_collide_and_agree() {
    let pair = start_pair().await;
    let budget = unique("cn_two");
    let yaml = config(
        &pair.primary_dsn(),
        &pair.standby_dsn(),
        &budget,
        "500ms",
        &["instance: \"${CANARY_INSTANCE}\""],
    );
    let instances = [unique("daemon-a"), unique("daemon-b")];
    let a = Daemon::start_with_env(&yaml, &[("CANARY_INSTANCE", &instances[0])]).await;
    let b = Daemon::start_with_env(&yaml, &[("CANARY_INSTANCE", &instances[1])]).await;
    for daemon in [&a, &b] {
        wait_caught_up(daemon, &budget, 0.0).await;
    }
    let rows = marker_rows(&pair.primary_dsn(), "lagbudget", &budget).await;
    let expected: Vec<(String, i64)> = instances.iter().map(|i| (i.clone(), 1)).collect();
    assert_eq!(rows, expected, "exactly one marker row per instance");

    // Injects lag: replay paused until both daemons have a run 5 s into the pause, scraped
    // together.
    let paused_at = pause_replay(&pair).await;
    let (ma, mb) = wait_for(
        "both daemons 5 s into the pause",
        Duration::from_secs(60),
        || async {
            let (ma, mb) = (a.metrics().await, b.metrics().await);
            let ready = |m: &Metrics| {
                lag(m, &budget).is_some()
                    && last_success(m, &budget).is_some_and(|at| at >= paused_at + 5.0)
            };
            (ready(&ma) && ready(&mb)).then_some((ma, mb))
        },
    )
    .await;
    // Each lag was measured at its own run: carried forward to the later of the two runs, the
    // two are the age of the same pause, each daemon's own markers.
    let runs = [&ma, &mb].map(|m| last_success(m, &budget).expect("last success"));
    let lags = [&ma, &mb].map(|m| lag(m, &budget).expect("lag"));
    let at = runs[0].max(runs[1]);
    let carried = [lags[0] + (at - runs[0]), lags[1] + (at - runs[1])];
    eprintln!(
        "two daemons, replay paused: lags {lags:.3?} s measured {:.3?} s after the pause; at one \
         instant {carried:.3?} s (tolerance ±{TOLERANCE} s)",
        runs.map(|run| run - paused_at)
    );
    assert!(
        (carried[0] - carried[1]).abs() <= TOLERANCE,
        "both measure the same lag: {carried:?}"
    );
    for (lag, run) in lags.iter().zip(runs) {
        let injected = run - paused_at;
        assert!(
            (lag - injected).abs() <= TOLERANCE,
            "lag {lag} within ±{TOLERANCE} s of the pause's age {injected}"
        );
    }
    for m in [&ma, &mb] {
        assert_eq!(up(m, &budget), Some(1.0), "both views up:\n{}", m.text);
    }

    pair.resume_replay().await;
    let resumed_at = unix_now();
    for daemon in [&a, &b] {
        wait_caught_up(daemon, &budget, resumed_at).await;
    }
    let rows = marker_rows(&pair.primary_dsn(), "lagbudget", &budget).await;
    assert_eq!(rows, expected, "still one marker row per instance");
    let total: i64 = connect(&pair.primary_dsn())
        .await
        .query_one("SELECT count(*) FROM lagbudget.canary", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(total, 2, "nothing piles up");
    a.stop().await;
    b.stop().await;
    drop(pair);
}

/// Acceptance: the writer's target down (the primary killed, the standby still answering) ⇒
/// the view is down with the write's error after two write periods, and its lag is never
/// measured again: no run after that reports one (0 least of all), and the series goes once
/// the probe is stale. The primary back ⇒ lag 0 again.
#[tokio::test(flavor = "multi_thread")]
async fn canary_writer_down_is_unknown_never_zero() {
    let pair = start_pair().await;
    let budget = unique("cn_down");
    let yaml = config(&pair.primary_dsn(), &pair.standby_dsn(), &budget, "1s", &[]);
    let daemon = Daemon::start(&yaml).await;
    wait_caught_up(&daemon, &budget, 0.0).await;

    let (pair, ()) = pair.step("kill primary", StreamingPair::kill_primary).await;
    let killed_at = unix_now();
    // No marker is written after `killed_at`, so no view run may succeed later than two write
    // periods after it; 1 s more covers the end of a run that read just before that.
    let last_allowed = killed_at + 2.0 + 1.0;
    let started = std::time::Instant::now();
    let mut scrapes = 0;
    let mut went_down_after = None;
    let metrics = loop {
        let m = daemon.metrics().await;
        scrapes += 1;
        if let Some(value) = lag(&m, &budget) {
            let run = last_success(&m, &budget).expect("a lag has a success");
            assert!(
                run <= last_allowed,
                "lag {value} from a run {:.3} s after the writer died:\n{}",
                run - killed_at,
                m.text
            );
        }
        let down = up(&m, &budget) == Some(0.0);
        // The run that finds the writer silent for two periods makes the lag unknown at once:
        // the last 0 does not stand while the probe is down.
        assert!(
            !down || lag(&m, &budget).is_none(),
            "down with a lag still exported:\n{}",
            m.text
        );
        if down && went_down_after.is_none() {
            went_down_after = Some(unix_now() - killed_at);
        }
        if down && lag(&m, &budget).is_none() {
            break m;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the view down and its lag gone within {PATIENCE:?}:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let final_success = last_success(&metrics, &budget).expect("an earlier success");
    eprintln!(
        "writer killed: view down {:.1} s later, lag gone after {scrapes} scrapes; last success \
         {:.3} s after the kill",
        went_down_after.unwrap_or(f64::NAN),
        final_success - killed_at
    );
    assert!(
        final_success <= last_allowed,
        "{final_success} vs {last_allowed}"
    );
    let probe = daemon.probe(&budget, PROBE).await;
    eprintln!("status: {}", probe["error"]);
    assert_eq!(probe["up"], false, "{probe}");
    assert!(probe["lag_seconds"].is_null(), "{probe}");
    assert_eq!(probe["error"]["reason"], "connect", "{probe}");
    let message = probe["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("no marker written for") && message.contains("canary write:"),
        "{message}"
    );

    // Still down, still no lag, run after run.
    daemon
        .watch_runs((&budget, PROBE), 3, PATIENCE, |m| {
            assert_eq!(up(m, &budget), Some(0.0), "{}", m.text);
            assert_eq!(lag(m, &budget), None, "{}", m.text);
        })
        .await;

    let (pair, ()) = pair
        .step("restart primary", StreamingPair::start_primary)
        .await;
    let restarted_at = unix_now();
    wait_caught_up(&daemon, &budget, restarted_at).await;
    daemon.stop().await;
    drop(pair);
}

/// `lagbudget check --connect` on canaries reports each write and read target and writes no
/// marker: lagbudget's schema is still absent afterwards, and a statement the user gives is not
/// run.
#[tokio::test(flavor = "multi_thread")]
async fn canary_check_connect_reports_targets_without_writing() {
    let schema = unique("lb_canary_check");
    let user = unique("lb_canary_user");
    let client = connect(SHARED_PG_DSN).await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {user}; \
             CREATE TABLE {user}.markers (instance text, probe text, seq bigint, \
             PRIMARY KEY (instance, probe))"
        ))
        .await
        .expect("user's marker table");
    let budget = unique("cn_check");
    let yaml = format!(
        "sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    probes:
      - name: managed
        canary:
          write: {{ source: db }}
          read: [{{ name: view, source: db }}]
          schema: {schema}
          instance: checker
      - name: statement
        canary:
          write:
            source: db
            sql: \"INSERT INTO {user}.markers VALUES ($instance, $probe, $seq) \
                   ON CONFLICT (instance, probe) DO UPDATE SET seq = EXCLUDED.seq\"
          read:
            - name: projection
              source: db
              query: \"SELECT max(seq) FROM {user}.markers WHERE instance = $instance AND probe = $probe\"
          instance: checker
"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("canary.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["check", "--connect", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check --connect passes");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|line| line.contains(what))
            .unwrap_or_else(|| panic!("{what} in:\n{stdout}"))
            .to_owned()
    };
    let managed = line(&format!("probe {budget}/managed[view] (canary)"));
    assert!(managed.starts_with("ok "), "{managed}");
    assert!(
        managed.contains(&format!("write: {schema}.canary")),
        "{managed}"
    );
    assert!(managed.contains("read view:"), "{managed}");
    let statement = line(&format!("probe {budget}/statement[projection] (canary)"));
    assert!(statement.starts_with("ok "), "{statement}");
    assert!(statement.contains("write: "), "{statement}");
    assert!(statement.contains("read projection:"), "{statement}");

    let row = client
        .query_one(
            &format!(
                "SELECT to_regnamespace($1) IS NOT NULL, (SELECT count(*) FROM {user}.markers)"
            ),
            &[&schema],
        )
        .await
        .expect("query");
    let (schema_exists, user_rows): (bool, i64) = (row.get(0), row.get(1));
    assert!(!schema_exists, "check --connect creates no marker table");
    assert_eq!(user_rows, 0, "check --connect runs no marker statement");

    // Once a daemon has written, the check finds the table and its grants, and the markers.
    let daemon = Daemon::start(&std::fs::read_to_string(&path).expect("config")).await;
    daemon.wait_ready(PATIENCE).await;
    daemon.stop().await;
    let seq = |table: String| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    &format!("SELECT seq FROM {table} WHERE instance = 'checker'"),
                    &[],
                )
                .await
                .expect("a marker");
            row.get::<_, i64>(0)
        }
    };
    let (managed_seq, user_seq) = (
        seq(format!("{schema}.canary")).await,
        seq(format!("{user}.markers")).await,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["check", "--connect", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "check --connect passes");
    assert!(
        stdout.contains(&format!(
            "write: {schema}.canary writable; read view: shows marker seq {managed_seq}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("read projection: shows marker seq {user_seq}")),
        "{stdout}"
    );
    let after = (
        seq(format!("{schema}.canary")).await,
        seq(format!("{user}.markers")).await,
    );
    client
        .batch_execute(&format!(
            "DROP SCHEMA {user} CASCADE; DROP SCHEMA IF EXISTS {schema} CASCADE"
        ))
        .await
        .expect("clean up");
    assert_eq!(
        after,
        (managed_seq, user_seq),
        "check --connect wrote no marker"
    );
}

/// `check --connect` on a MariaDB primary and replica with the least-privilege account: the
/// marker table missing before the first write is reported, not failed, and nothing is
/// written; after a daemon wrote, the table is writable and the replica shows the marker.
#[tokio::test(flavor = "multi_thread")]
async fn canary_check_connect_on_mysql_writes_nothing() {
    let pair = MariaDbPair::start().await;
    let budget = unique("cn_check_mysql");
    let yaml = format!(
        "sources:
  primary: {{ mysql: {{ url: \"{primary}\" }} }}
  replica: {{ mysql: {{ url: \"{replica}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    probes:
      - name: {PROBE}
        interval: 1s
        canary:
          write: {{ source: primary }}
          read: [{{ source: replica }}]
          instance: checker
",
        primary = pair.url(pair.primary_port),
        replica = pair.url(pair.replica_port),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("canary.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
            .args(["check", "--connect", "-c"])
            .arg(&path)
            .output()
            .expect("run check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "check --connect passes");
        stdout
    };
    let table_rows = async || -> Option<i64> {
        let mut conn = pair.root(pair.primary_port).await;
        let exists: Option<i64> = conn
            .query_first(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = 'lagbudget' AND table_name = 'canary'",
            )
            .await
            .expect("information_schema");
        let rows = if exists == Some(1) {
            conn.query_first("SELECT MAX(seq) FROM lagbudget.canary")
                .await
                .expect("markers")
        } else {
            None
        };
        let _ = conn.disconnect().await;
        rows
    };

    let stdout = check();
    assert!(
        stdout.contains(&format!(
            "ok    probe {budget}/{PROBE}[replica] (canary): write: lagbudget.canary missing, \
             created by the first write; read replica: lagbudget.canary not here yet"
        )),
        "{stdout}"
    );
    assert_eq!(table_rows().await, None, "check --connect creates no table");

    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_metrics("the replica shows markers", PATIENCE, |m| {
            m.get(
                "lagbudget_lag_seconds",
                &[("budget", budget.as_str()), ("replica", "replica")],
            ) == Some(0.0)
        })
        .await;
    daemon.stop().await;
    let written = table_rows().await.expect("markers written by the daemon");
    let replica_seq = wait_for("the replica at the last marker", PATIENCE, || async {
        let mut conn = pair.root(pair.replica_port).await;
        let seq: Option<i64> = conn
            .query_first("SELECT MAX(seq) FROM lagbudget.canary")
            .await
            .expect("replica markers");
        let _ = conn.disconnect().await;
        seq.filter(|seq| *seq == written)
    })
    .await;
    let stdout = check();
    assert!(
        stdout.contains(&format!(
            "write: lagbudget.canary writable; read replica: shows marker seq {replica_seq}"
        )),
        "{stdout}"
    );
    assert_eq!(
        table_rows().await,
        Some(written),
        "check --connect wrote no marker"
    );
}

/// A `lagbudget run` process on a config file, on a port of its own; killed on drop. Two
/// processes, unlike two daemons in this test's process, share nothing but the servers.
struct Process {
    child: std::process::Child,
    port: u16,
    http: reqwest::Client,
}

impl Process {
    fn start(config: &std::path::Path) -> Process {
        let port = crate::support::closed_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
            .args(["run", "--log.level", "error", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-c")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start lagbudget run");
        Process {
            child,
            port,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        }
    }

    async fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.http.get(url).send().await.ok()?.text().await.ok()
    }

    async fn metrics(&self) -> Option<Metrics> {
        self.get("/metrics").await.map(|text| Metrics::parse(&text))
    }

    /// The last error of the budget's only probe, if it is down.
    async fn error(&self, budget: &str) -> Option<serde_json::Value> {
        let text = self.get(&format!("/api/v1/budgets/{budget}")).await?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(status["probes"][0]["error"].clone()).filter(|e| !e.is_null())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two daemon processes with one instance name (as two on one host get with the default, the
/// host name) overwrite one marker row. The one started first then reads the other's newer
/// seqs, which would pass for "caught up" (lag 0) whatever the view: it reports them as
/// another writer's instead (`no_data`); the other reads older seqs than it wrote (a lower
/// bound, `no_data` too).
#[tokio::test(flavor = "multi_thread")]
async fn canary_two_processes_with_one_instance_say_so() {
    let schema = unique("lb_canary_same");
    let budget = unique("cn_same");
    let yaml = format!(
        "sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 60s
    probes:
      - name: {PROBE}
        interval: 1s
        canary:
          write: {{ source: db }}
          read: [{{ name: view, source: db }}]
          write_period: 500ms
          schema: {schema}
          instance: shared-host
"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("canary.yaml");
    std::fs::write(&path, &yaml).expect("write");
    let view = [("budget", budget.as_str()), ("replica", "view")];
    let first = Process::start(&path);
    wait_for("the first daemon measuring", PATIENCE, || async {
        let m = first.metrics().await?;
        (m.get("lagbudget_lag_seconds", &view) == Some(0.0)).then_some(())
    })
    .await;
    let second = Process::start(&path);

    let error = wait_for(
        "the first daemon to see the other's markers",
        PATIENCE,
        || async {
            first.error(&budget).await.filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("same instance"))
            })
        },
    )
    .await;
    eprintln!("first daemon: {error}");
    assert_eq!(error["reason"], "no_data", "{error}");
    let no_data = [("budget", budget.as_str()), ("reason", "no_data")];
    let errors = wait_for("the second daemon's no_data runs", PATIENCE, || async {
        let m = second.metrics().await?;
        m.get("lagbudget_probe_errors_total", &no_data)
            .filter(|n| *n > 0.0)
    })
    .await;
    eprintln!("second daemon: {errors} no_data runs");
    drop((first, second));

    let client = connect(SHARED_PG_DSN).await;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.canary"), &[])
        .await
        .expect("markers")
        .get(0);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("clean up");
    assert_eq!(rows, 1, "one instance name, one row for both daemons");
}
