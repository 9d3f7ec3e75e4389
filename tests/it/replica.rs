//! `postgres_replica` against a real primary and streaming standby (both methods): paused
//! replay, an idle primary, a frozen WAL receiver, a killed standby and a promoted one. Each
//! test starts its own pair, so they run concurrently.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Daemon, Metrics, StreamingPair, connect, unique, wait_for};

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

/// One budget per method over `pairs` (heartbeat on the first, passive on the last), 5 s
/// budgets, 1 s interval. Returns the config and the two budget names.
fn config(pairs: &[&StreamingPair], heartbeat_extra: &str) -> (String, String, String) {
    let heartbeat = unique("hb");
    let passive = unique("pv");
    let first = pairs[0];
    let last = pairs[pairs.len() - 1];
    let yaml = format!(
        "listen: 127.0.0.1:0
sources:
  primary-a: {{ postgres: {{ dsn: \"{pa}\" }} }}
  standby-a: {{ postgres: {{ dsn: \"{sa}\" }} }}
  primary-b: {{ postgres: {{ dsn: \"{pb}\" }} }}
  standby-b: {{ postgres: {{ dsn: \"{sb}\" }} }}
budgets:
  - name: {heartbeat}
    max_lag: 5s
    probes:
      - name: standby
        interval: 1s
        postgres_replica: {{ primary: primary-a, standbys: [standby-a], method: heartbeat{heartbeat_extra} }}
  - name: {passive}
    max_lag: 5s
    probes:
      - name: standby
        interval: 1s
        postgres_replica: {{ primary: primary-b, standbys: [standby-b], method: passive }}
",
        pa = first.primary_dsn(),
        sa = first.standby_dsn(),
        pb = last.primary_dsn(),
        sb = last.standby_dsn(),
    );
    (yaml, heartbeat, passive)
}

/// The series of a budget's probe on its first standby (`config` gives heartbeat budgets
/// standby-a and passive budgets standby-b).
fn labels(budget: &str) -> [(&str, &str); 3] {
    let replica = if budget.starts_with("hb") {
        "standby-a"
    } else {
        "standby-b"
    };
    [
        ("budget", budget),
        ("probe", "standby"),
        ("replica", replica),
    ]
}

fn lag(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get("lagbudget_lag_seconds", &labels(budget))
}

/// A table on the primary with one row per insert, stamped with the primary's clock (the same
/// machine's clock as the daemon's).
async fn create_rows_table(dsn: &str) -> String {
    let table = unique("rows");
    connect(dsn)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, \
             at float8 NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))"
        ))
        .await
        .expect("create table");
    table
}

/// Inserts one row and returns its time (primary clock, unix seconds).
async fn insert_row(dsn: &str, table: &str) -> f64 {
    connect(dsn)
        .await
        .query_one(
            &format!("INSERT INTO {table} DEFAULT VALUES RETURNING at"),
            &[],
        )
        .await
        .expect("insert")
        .get(0)
}

/// Issue acceptance: replay paused for 12 s under a 5 s budget while a row is inserted right
/// after pausing ⇒ heartbeat lag within ±1.5 s of that row's age, `breach`; passive over budget
/// too; resumed ⇒ both under 2 s and `ok` within two intervals. Also: read-your-writes misses
/// while paused, clock skew near 0 on one machine, receiver age exported.
#[tokio::test(flavor = "multi_thread")]
async fn paused_replay_breaches_with_true_lag_and_recovers() {
    let pair = start_pair().await;
    let table = create_rows_table(&pair.primary_dsn()).await;
    let (yaml, heartbeat, passive) = config(&[&pair], ", ryw_delay: 1s");
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(15))
        .await;
    let before = daemon.metrics().await;
    let ryw = |m: &Metrics, name: &str| {
        m.get(
            name,
            &[("budget", heartbeat.as_str()), ("replica", "standby-a")],
        )
        .unwrap_or_else(|| panic!("{name} for the heartbeat probe:\n{}", m.text))
    };
    let checks_before = ryw(&before, "lagbudget_read_your_writes_checks_total");
    let misses_before = ryw(&before, "lagbudget_read_your_writes_misses_total");

    pair.pause_replay().await;
    let inserted_at = insert_row(&pair.primary_dsn(), &table).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let metrics = daemon.metrics().await;
    let hb_lag = lag(&metrics, &heartbeat).expect("heartbeat lag while fresh");
    let last_success = metrics
        .get(
            "lagbudget_probe_last_success_timestamp_seconds",
            &labels(&heartbeat),
        )
        .expect("last success");
    let row_age = last_success - inserted_at;
    let pv_lag = lag(&metrics, &passive).expect("passive lag while fresh");
    eprintln!(
        "replay paused 12 s: heartbeat lag {hb_lag:.3} s vs row age {row_age:.3} s \
         (tolerance ±1.5 s); passive lag {pv_lag:.3} s (budget 5 s)"
    );
    assert!(
        (hb_lag - row_age).abs() <= 1.5,
        "heartbeat lag {hb_lag} not within ±1.5 s of the row's age {row_age}"
    );
    assert!(pv_lag > 5.0, "passive is over budget too: {pv_lag}");
    assert_eq!(daemon.state(&heartbeat).await, "breach");
    assert_eq!(daemon.state(&passive).await, "breach");
    for budget in [&heartbeat, &passive] {
        let backlog = metrics
            .get("lagbudget_backlog_bytes", &labels(budget))
            .expect("byte backlog");
        assert!(backlog > 0.0, "{budget}: WAL waits, backlog {backlog}");
        let skew = metrics
            .get("lagbudget_clock_skew_seconds", &labels(budget))
            .expect("clock skew");
        assert!(skew.abs() < 0.5, "one machine, one clock: skew {skew}");
        let age = metrics
            .get(
                "lagbudget_replica_receiver_last_message_age_seconds",
                &labels(budget),
            )
            .expect("receiver age");
        assert!((0.0..60.0).contains(&age), "receiver age {age}");
        eprintln!("{budget}: backlog {backlog} bytes, skew {skew:.4} s, receiver age {age:.1} s");
    }
    let checks = ryw(&metrics, "lagbudget_read_your_writes_checks_total") - checks_before;
    let misses = ryw(&metrics, "lagbudget_read_your_writes_misses_total") - misses_before;
    eprintln!("read-your-writes while paused: {misses} misses of {checks} checks");
    assert!(
        checks >= 10.0 && misses >= checks - 2.0,
        "{misses}/{checks}"
    );
    assert_eq!(
        ryw(&before, "lagbudget_read_your_writes_misses_total"),
        0.0,
        "no misses while streaming normally (ryw_delay 1 s)"
    );

    pair.resume_replay().await;
    let resumed = Instant::now();
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_millis(2500))
        .await;
    let metrics = daemon.metrics().await;
    let (hb, pv) = (
        lag(&metrics, &heartbeat).expect("lag"),
        lag(&metrics, &passive).expect("lag"),
    );
    eprintln!(
        "resumed: both ok after {:?}; heartbeat lag {hb:.3} s, passive lag {pv:.3} s",
        resumed.elapsed()
    );
    assert!(hb < 2.0 && pv < 2.0, "{hb} {pv}");
    daemon.stop().await;
}

/// Issue acceptance: primary idle for 60 s, then one write with replay paused for 3 s under a
/// 5 s budget ⇒ neither method ever reports a breach (the naive formula would). Passive gets a
/// pair of its own: the heartbeat writer would keep its primary busy.
#[tokio::test(flavor = "multi_thread")]
async fn idle_primary_is_not_lag() {
    let heartbeat_pair = start_pair().await;
    let passive_pair = start_pair().await;
    let hb_table = create_rows_table(&heartbeat_pair.primary_dsn()).await;
    let pv_table = create_rows_table(&passive_pair.primary_dsn()).await;
    let (yaml, heartbeat, passive) = config(&[&heartbeat_pair, &passive_pair], "");
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(15))
        .await;
    let mut max_lag = [0.0f64; 2];
    let watch = async |seconds: u64, max_lag: &mut [f64; 2]| {
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            let metrics = daemon.metrics().await;
            for (i, budget) in [&heartbeat, &passive].into_iter().enumerate() {
                let state = metrics
                    .get(
                        "lagbudget_state",
                        &[("budget", budget), ("state", "breach")],
                    )
                    .expect("state series");
                assert_eq!(state, 0.0, "{budget} must never breach:\n{}", metrics.text);
                if let Some(lag) = lag(&metrics, budget) {
                    max_lag[i] = max_lag[i].max(lag);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    watch(60, &mut max_lag).await;
    let naive: f64 = connect(&passive_pair.standby_dsn())
        .await
        .query_one(
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
            &[],
        )
        .await
        .expect("naive lag")
        .get(0);
    eprintln!(
        "idle 60 s: max lag heartbeat {:.3} s, passive {:.3} s; naive now() - \
         pg_last_xact_replay_timestamp() reads {naive:.1} s",
        max_lag[0], max_lag[1]
    );
    assert!(naive > 50.0, "the naive formula reads idle as lag: {naive}");
    assert!(
        max_lag[1] < 1.0,
        "idle passive stays near 0: {}",
        max_lag[1]
    );

    let mut paused_max = [0.0f64; 2];
    for pair in [&heartbeat_pair, &passive_pair] {
        pair.pause_replay().await;
    }
    insert_row(&heartbeat_pair.primary_dsn(), &hb_table).await;
    insert_row(&passive_pair.primary_dsn(), &pv_table).await;
    watch(3, &mut paused_max).await;
    for pair in [&heartbeat_pair, &passive_pair] {
        pair.resume_replay().await;
    }
    watch(4, &mut paused_max).await;
    eprintln!(
        "one write, replay paused 3 s: max lag heartbeat {:.3} s, passive {:.3} s (budget 5 s, \
         never breach)",
        paused_max[0], paused_max[1]
    );
    assert!(
        paused_max[0] >= 1.5 && paused_max[1] >= 1.0,
        "the pause is seen as lag: {paused_max:?}"
    );
    daemon.stop().await;
}

/// Issue acceptance: the WAL receiver stopped with SIGSTOP while writes continue ⇒ never 0:
/// lag grows or the probe is down; SIGCONT ⇒ recovers. A passive probe with a 3 s
/// `receiver_silence_limit` goes down instead (`no_data`).
#[tokio::test(flavor = "multi_thread")]
async fn frozen_wal_receiver_is_not_caught_up() {
    let pair = start_pair().await;
    let table = create_rows_table(&pair.primary_dsn()).await;
    let (mut yaml, heartbeat, passive) = config(&[&pair], "");
    let silent = unique("silent");
    yaml.push_str(&format!(
        "  - name: {silent}
    max_lag: 5s
    probes:
      - name: standby
        interval: 1s
        postgres_replica: {{ primary: primary-b, standbys: [standby-b], method: passive, receiver_silence_limit: 3s }}
"
    ));
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(
            &[&heartbeat, &passive, &silent],
            "ok",
            Duration::from_secs(15),
        )
        .await;
    let pid = pair.stop_walreceiver().await;
    let stopped = Instant::now();
    let mut last_lag = [0.0f64; 2];
    while stopped.elapsed() < Duration::from_secs(9) {
        insert_row(&pair.primary_dsn(), &table).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let metrics = daemon.metrics().await;
        for (i, budget) in [&heartbeat, &passive].into_iter().enumerate() {
            let up = metrics.get("lagbudget_probe_up", &labels(budget));
            if let Some(lag) = lag(&metrics, budget) {
                if up == Some(1.0) && stopped.elapsed() > Duration::from_secs(2) {
                    assert!(
                        lag > 1.0,
                        "{budget}: a frozen receiver is not caught up, lag {lag} after {:?}",
                        stopped.elapsed()
                    );
                }
                last_lag[i] = lag;
            }
        }
    }
    let metrics = daemon.metrics().await;
    for budget in [&heartbeat, &passive] {
        let up = metrics.get("lagbudget_probe_up", &labels(budget));
        let lag = lag(&metrics, budget);
        eprintln!("walreceiver {pid} frozen 9 s: {budget} up {up:?}, lag {lag:?}");
        assert!(
            up == Some(0.0) || lag.is_some_and(|lag| lag > 6.0),
            "{budget}: down or lag grown to about 9 s, got up {up:?} lag {lag:?}"
        );
    }
    assert!(last_lag.iter().all(|lag| *lag > 6.0), "{last_lag:?}");
    let probe = daemon.probe(&silent, "standby").await;
    eprintln!("receiver_silence_limit 3 s: {}", probe["error"]);
    assert_eq!(probe["up"], false, "{probe}");
    assert_eq!(probe["error"]["reason"], "no_data", "{probe}");
    assert!(
        probe["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has not heard from the primary")),
        "{probe}"
    );

    pair.continue_walreceiver();
    let resumed = Instant::now();
    daemon
        .wait_for_states(
            &[&heartbeat, &passive, &silent],
            "ok",
            Duration::from_secs(5),
        )
        .await;
    eprintln!("SIGCONT: both ok after {:?}", resumed.elapsed());
    daemon.stop().await;
}

/// Issue acceptance: standby killed ⇒ probe down, stale, `unknown`, no `lag_seconds`;
/// restarted ⇒ recovers without restarting the daemon. A second standby of the same probes
/// stays up and fresh under its own `replica` label meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn killed_standby_is_unknown_and_recovers() {
    let pair = start_pair().await;
    let (pair, second_dsn) = pair
        .step("second standby", StreamingPair::add_standby)
        .await;
    let (yaml, heartbeat, passive) = config(&[&pair], "");
    let yaml = yaml
        .replace(
            "sources:\n",
            &format!("sources:\n  second: {{ postgres: {{ dsn: \"{second_dsn}\" }} }}\n"),
        )
        .replace("standbys: [standby-a]", "standbys: [standby-a, second]")
        .replace("standbys: [standby-b]", "standbys: [standby-b, second]");
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(15))
        .await;
    let (pair, ()) = pair.step("kill standby", StreamingPair::kill_standby).await;
    let killed = Instant::now();
    for budget in [&heartbeat, &passive] {
        wait_for("probe down", Duration::from_secs(3), || async {
            let m = daemon.metrics().await;
            (m.get("lagbudget_probe_up", &labels(budget)) == Some(0.0)).then_some(())
        })
        .await;
    }
    for budget in [&heartbeat, &passive] {
        daemon
            .wait_for_state(budget, "unknown", Duration::from_secs(6))
            .await;
        let metrics = daemon.metrics().await;
        assert_eq!(
            metrics.get("lagbudget_probe_stale", &labels(budget)),
            Some(1.0)
        );
        assert!(
            lag(&metrics, budget).is_none(),
            "{budget}: no lag_seconds while stale:\n{}",
            metrics.text
        );
        let [budget_label, probe_label, replica_label] = labels(budget);
        let connect_errors = metrics
            .get(
                "lagbudget_probe_errors_total",
                &[
                    budget_label,
                    probe_label,
                    replica_label,
                    ("reason", "connect"),
                ],
            )
            .expect("errors by reason");
        assert!(connect_errors >= 1.0);
    }
    let metrics = daemon.metrics().await;
    for budget in [&heartbeat, &passive] {
        let second = [("budget", budget.as_str()), ("replica", "second")];
        assert_eq!(metrics.get("lagbudget_probe_up", &second), Some(1.0));
        assert_eq!(metrics.get("lagbudget_probe_stale", &second), Some(0.0));
        let lag = metrics
            .get("lagbudget_lag_seconds", &second)
            .expect("the other standby keeps its lag");
        assert!(lag < 2.0, "{budget}: the second standby is fine, lag {lag}");
    }
    eprintln!(
        "standby killed: both down, stale and unknown after {:?}; the second standby stays up",
        killed.elapsed()
    );
    let (pair, ()) = pair
        .step("restart standby", StreamingPair::start_standby)
        .await;
    let restarted = Instant::now();
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(20))
        .await;
    eprintln!("standby restarted: both ok after {:?}", restarted.elapsed());
    daemon.stop().await;
    drop(pair);
}

/// Issue acceptance: `pg_ctl promote` on the standby ⇒ `reason=topology`, never lag 0 or
/// negative: no run succeeds after the promotion, and the lag goes away once stale.
#[tokio::test(flavor = "multi_thread")]
async fn promoted_standby_is_a_topology_error() {
    let pair = start_pair().await;
    let (yaml, heartbeat, passive) = config(&[&pair], "");
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(15))
        .await;
    let (pair, ()) = pair.step("promote", StreamingPair::promote_standby).await;
    let promoted_at = unix_now();
    for budget in [&heartbeat, &passive] {
        let errors = wait_for("a topology error", Duration::from_secs(5), || async {
            let m = daemon.metrics().await;
            m.get(
                "lagbudget_probe_errors_total",
                &[("budget", budget), ("reason", "topology")],
            )
            .filter(|n| *n >= 1.0)
        })
        .await;
        let probe = daemon.probe(budget, "standby").await;
        eprintln!("promoted: {budget} topology errors {errors}, probe {probe}");
        // From the first topology error on, the pre-promotion lag (0) is not shown: the
        // probe counts as stale at once, and its budget is unknown.
        assert!(
            lag(&daemon.metrics().await, budget).is_none(),
            "{budget}: no lag once the standby is found promoted"
        );
        assert_eq!(probe["stale"], true, "{probe}");
        assert_eq!(daemon.state(budget).await, "unknown");
    }
    // Every run after the promotion fails.
    for budget in [&heartbeat, &passive] {
        daemon
            .wait_for_state(budget, "unknown", Duration::from_secs(6))
            .await;
        let metrics = daemon.metrics().await;
        let last_success = metrics
            .get(
                "lagbudget_probe_last_success_timestamp_seconds",
                &labels(budget),
            )
            .expect("last success");
        assert!(
            last_success < promoted_at + 0.5,
            "{budget}: no successful run after the promotion"
        );
        assert!(
            lag(&metrics, budget).is_none(),
            "{budget}: no lag once stale"
        );
    }
    daemon.stop().await;
    drop(pair);
}

/// The heartbeat table stays one row per (instance, probe) and its `seq` continues after a
/// daemon restart; a primary that goes away makes both methods unknown (down), never "caught
/// up", and they recover when it returns.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_continues_after_restart_and_a_lost_primary_is_unknown() {
    let pair = start_pair().await;
    let (yaml, heartbeat, passive) = config(&[&pair], ", instance: test-daemon");
    let row_key = format!("{heartbeat}/standby");
    let seq = async || -> (i64, i64) {
        let row = connect(&pair.primary_dsn())
            .await
            .query_one(
                "SELECT max(seq), count(*) FROM lagbudget.heartbeat \
                 WHERE instance = 'test-daemon' AND probe = $1",
                &[&row_key],
            )
            .await
            .expect("heartbeat table");
        (row.get(0), row.get(1))
    };
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_state(&heartbeat, "ok", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.stop().await;
    let (first_seq, rows) = seq().await;
    assert_eq!(rows, 1, "one row per instance and probe");

    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(15))
        .await;
    let (second_seq, rows) = seq().await;
    eprintln!("heartbeat seq {first_seq} before the restart, {second_seq} after; {rows} row");
    assert!(second_seq > first_seq, "{second_seq} continues {first_seq}");
    assert_eq!(rows, 1);

    let (pair, ()) = pair.step("kill primary", StreamingPair::kill_primary).await;
    let killed = Instant::now();
    for budget in [&heartbeat, &passive] {
        wait_for("probe down", Duration::from_secs(4), || async {
            let m = daemon.metrics().await;
            (m.get("lagbudget_probe_up", &labels(budget)) == Some(0.0)).then_some(())
        })
        .await;
        let probe = daemon.probe(budget, "standby").await;
        eprintln!(
            "primary gone: {budget} down after {:?}: {}",
            killed.elapsed(),
            probe["error"]
        );
        assert_eq!(probe["error"]["reason"], "connect", "{probe}");
    }
    let (pair, ()) = pair
        .step("restart primary", StreamingPair::start_primary)
        .await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", Duration::from_secs(20))
        .await;
    daemon.stop().await;
    drop(pair);
}

/// `check --connect` checks the topology and the heartbeat grants without writing; a standby
/// whose DSN points at the primary is a topology error there and in `lagbudget probe`.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_checks_topology_without_writing() {
    let pair = start_pair().await;
    let schema = unique("lb_check");
    let yaml = format!(
        "sources:
  primary: {{ postgres: {{ dsn: \"{p}\" }} }}
  standby: {{ postgres: {{ dsn: \"{s}\" }} }}
  not-a-standby: {{ postgres: {{ dsn: \"{p}\" }} }}
budgets:
  - name: replicas
    max_lag: 5s
    probes:
      - name: hb
        postgres_replica: {{ primary: primary, standbys: [standby], method: heartbeat, schema: {schema} }}
      - name: pv
        postgres_replica: {{ primary: primary, standbys: [standby, not-a-standby], method: passive }}
",
        p = pair.primary_dsn(),
        s = pair.standby_dsn(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replicas.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["check", "--connect", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(!out.status.success(), "the wrong standby fails the check");
    assert!(
        stdout.contains(&format!(
            "ok    probe replicas/hb[standby] (postgres_replica): standby streams from primary on timeline 1; {schema}.heartbeat writable"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    probe replicas/pv[standby] (postgres_replica)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "FAIL  probe replicas/pv[not-a-standby] (postgres_replica): topology: not-a-standby is not in recovery"
        ),
        "{stdout}"
    );
    let exists: bool = connect(&pair.primary_dsn())
        .await
        .query_one("SELECT to_regnamespace($1) IS NOT NULL", &[&schema])
        .await
        .expect("query")
        .get(0);
    assert!(!exists, "check --connect writes nothing");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["probe", "-c"])
        .arg(&path)
        .output()
        .expect("run probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(stdout.contains("down: topology"), "{stdout}");
    let heartbeat_line = stdout
        .lines()
        .find(|line| line.contains(" hb"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        heartbeat_line.contains("ok (heartbeat seq"),
        "{heartbeat_line}"
    );
    connect(&pair.primary_dsn())
        .await
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop schema");
}

/// Each run checks the topology, not only after a promotion: a standby of another system, a
/// "standby" that is a primary, and a "primary" that is a standby are each `topology`, with a
/// message saying which, and never a lag.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_topologies_are_reported_as_such_and_never_measured() {
    let (a, b) = tokio::join!(start_pair(), start_pair());
    let budget = unique("topology");
    let yaml = format!(
        "listen: 127.0.0.1:0
sources:
  primary-a: {{ postgres: {{ dsn: \"{pa}\" }} }}
  standby-a: {{ postgres: {{ dsn: \"{sa}\" }} }}
  primary-b: {{ postgres: {{ dsn: \"{pb}\" }} }}
  standby-b: {{ postgres: {{ dsn: \"{sb}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    interval: 1s
    probes:
      - name: other-system
        postgres_replica: {{ primary: primary-a, standbys: [standby-b], method: passive }}
      - name: not-a-standby
        postgres_replica: {{ primary: primary-a, standbys: [primary-b], method: passive }}
      - name: primary-is-a-standby
        postgres_replica: {{ primary: standby-a, standbys: [standby-b], method: passive }}
",
        pa = a.primary_dsn(),
        sa = a.standby_dsn(),
        pb = b.primary_dsn(),
        sb = b.standby_dsn(),
    );
    let daemon = Daemon::start(&yaml).await;
    for (probe, says) in [
        ("other-system", "belongs to system"),
        ("not-a-standby", "is not in recovery"),
        ("primary-is-a-standby", "the primary is in recovery"),
    ] {
        wait_for("a topology error", Duration::from_secs(10), || async {
            daemon
                .metrics()
                .await
                .get(
                    "lagbudget_probe_errors_total",
                    &[
                        ("budget", budget.as_str()),
                        ("probe", probe),
                        ("reason", "topology"),
                    ],
                )
                .filter(|n| *n >= 1.0)
        })
        .await;
        let status = daemon.probe(&budget, probe).await;
        eprintln!("{probe}: {}", status["error"]);
        assert_eq!(status["error"]["reason"], "topology", "{status}");
        let message = status["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{probe}: {message}");
        assert_eq!(status["lag_seconds"], serde_json::Value::Null, "{status}");
        assert_eq!(status["runs"].as_u64().map(|r| r > 0), Some(true));
        let metrics = daemon.metrics().await;
        assert_eq!(
            metrics.get(
                "lagbudget_lag_seconds",
                &[("budget", budget.as_str()), ("probe", probe)]
            ),
            None,
            "{probe}: no lag for a server that is not what the probe measures"
        );
    }
    assert_eq!(daemon.state(&budget).await, "unknown");
    daemon.stop().await;
    drop((a, b));
}
