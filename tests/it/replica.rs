//! `postgres_replica` against a real primary and streaming standby (both methods): paused
//! replay, an idle primary, a frozen WAL receiver, a killed standby and a promoted one. Each
//! test starts its own pair, so they run concurrently.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{Daemon, Metrics, PATIENCE, StreamingPair, connect, unique, wait_for};

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

fn last_success(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_probe_last_success_timestamp_seconds",
        &labels(budget),
    )
}

/// When the budget's current state began (daemon clock, unix seconds).
fn state_since(metrics: &Metrics, budget: &str) -> f64 {
    metrics
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", budget)],
        )
        .unwrap_or_else(|| panic!("state since of {budget}"))
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
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
    // Injects lag: replay stays paused until both probes have a successful run at least 12 s
    // after the insert (the daemon's timestamps) and ten more read-your-writes checks ran.
    let metrics = daemon
        .wait_for_metrics("runs 12 s into the pause", Duration::from_secs(60), |m| {
            [&heartbeat, &passive].into_iter().all(|budget| {
                lag(m, budget).is_some()
                    && last_success(m, budget).is_some_and(|at| at >= inserted_at + 12.0)
            }) && ryw(m, "lagbudget_read_your_writes_checks_total") - checks_before >= 10.0
        })
        .await;
    let hb_lag = lag(&metrics, &heartbeat).expect("heartbeat lag while fresh");
    let last_success = last_success(&metrics, &heartbeat).expect("last success");
    let row_age = last_success - inserted_at;
    let pv_lag = lag(&metrics, &passive).expect("passive lag while fresh");
    eprintln!(
        "replay paused {row_age:.1} s: heartbeat lag {hb_lag:.3} s vs row age {row_age:.3} s \
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
    let resumed = unix_now();
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
        .await;
    let metrics = daemon.metrics().await;
    let (hb, pv) = (
        lag(&metrics, &heartbeat).expect("lag"),
        lag(&metrics, &passive).expect("lag"),
    );
    // Ok within two intervals (1 s) of the resume, by the daemon's clock: the time the state
    // changed, not the time this test saw it. A third interval of slack covers run durations.
    let ok_after = [&heartbeat, &passive].map(|budget| state_since(&metrics, budget) - resumed);
    eprintln!(
        "resumed: ok {ok_after:.3?} s after the resume; heartbeat lag {hb:.3} s, passive lag \
         {pv:.3} s"
    );
    assert!(hb < 2.0 && pv < 2.0, "{hb} {pv}");
    assert!(
        ok_after.iter().all(|after| *after <= 3.0),
        "ok within two intervals of the resume: {ok_after:?}"
    );
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
        .await;
    let mut max_lag = [0.0f64; 2];
    // Scrapes every 250 ms until `done` holds for a scrape; neither budget may breach at any
    // scrape meanwhile, and the largest lag of each is kept.
    let watch = async |max_lag: &mut [f64; 2], done: &dyn Fn(&Metrics) -> bool| {
        let started = Instant::now();
        loop {
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
            if done(&metrics) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "watched for {:?} without an end",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    // Injects idle time: the primary gets no write for 60 s (wall time is the point here; the
    // naive formula below measures it by itself).
    let idle_since = Instant::now();
    watch(&mut max_lag, &|_| {
        idle_since.elapsed() >= Duration::from_secs(60)
    })
    .await;
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
    // Injects lag: replay stays paused for 3 s of wall time.
    let paused = Instant::now();
    watch(&mut paused_max, &|_| {
        paused.elapsed() >= Duration::from_secs(3)
    })
    .await;
    for pair in [&heartbeat_pair, &passive_pair] {
        pair.resume_replay().await;
    }
    let resumed = unix_now();
    let paused_for = paused.elapsed();
    // After the resume: watched until both probes have a success 4 s after it (four runs).
    watch(&mut paused_max, &|metrics| {
        [&heartbeat, &passive]
            .into_iter()
            .all(|budget| last_success(metrics, budget).is_some_and(|at| at >= resumed + 4.0))
    })
    .await;
    eprintln!(
        "one write, replay paused {paused_for:.1?}: max lag heartbeat {:.3} s, passive {:.3} s \
         (budget 5 s, never breach)",
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
        .wait_for_states(&[&heartbeat, &passive, &silent], "ok", PATIENCE)
        .await;
    let pid = pair.stop_walreceiver().await;
    let stopped = unix_now();
    let mut last_lag = [0.0f64; 2];
    // Injects lag: the receiver stays frozen, with a write every 300 ms, until each probe is
    // down or has a successful run 9 s after the freeze, and the silent probe is down.
    let frozen_long_enough = |metrics: &Metrics| {
        [&heartbeat, &passive].into_iter().all(|budget| {
            metrics.get("lagbudget_probe_up", &labels(budget)) == Some(0.0)
                || last_success(metrics, budget).is_some_and(|at| at >= stopped + 9.0)
        }) && metrics.get("lagbudget_probe_up", &[("budget", silent.as_str())]) == Some(0.0)
    };
    let metrics = loop {
        insert_row(&pair.primary_dsn(), &table).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let metrics = daemon.metrics().await;
        for (i, budget) in [&heartbeat, &passive].into_iter().enumerate() {
            let up = metrics.get("lagbudget_probe_up", &labels(budget));
            if let Some(lag) = lag(&metrics, budget) {
                // Measured by a run more than 2 s into the freeze (the daemon's timestamp).
                let into = last_success(&metrics, budget).expect("last success") - stopped;
                if up == Some(1.0) && into > 2.0 {
                    assert!(
                        lag > 1.0,
                        "{budget}: a frozen receiver is not caught up, lag {lag} measured \
                         {into:.3} s into the freeze"
                    );
                }
                last_lag[i] = lag;
            }
        }
        if frozen_long_enough(&metrics) {
            break metrics;
        }
        assert!(
            unix_now() - stopped < 60.0,
            "frozen for 60 s without every probe down or measured 9 s in:\n{}",
            metrics.text
        );
    };
    for budget in [&heartbeat, &passive] {
        let up = metrics.get("lagbudget_probe_up", &labels(budget));
        let lag = lag(&metrics, budget);
        let into = last_success(&metrics, budget).map(|at| at - stopped);
        eprintln!(
            "walreceiver {pid} frozen: {budget} up {up:?}, lag {lag:?} measured {into:.3?} s \
             into the freeze"
        );
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
        .wait_for_states(&[&heartbeat, &passive, &silent], "ok", PATIENCE)
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
        .await;
    let (pair, ()) = pair.step("kill standby", StreamingPair::kill_standby).await;
    let killed = Instant::now();
    for budget in [&heartbeat, &passive] {
        daemon
            .wait_for_metrics("probe down", PATIENCE, |m| {
                m.get("lagbudget_probe_up", &labels(budget)) == Some(0.0)
            })
            .await;
    }
    for budget in [&heartbeat, &passive] {
        daemon.wait_for_state(budget, "unknown", PATIENCE).await;
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
        .await;
    let (pair, ()) = pair.step("promote", StreamingPair::promote_standby).await;
    let topology = |m: &Metrics, budget: &str| {
        m.get(
            "lagbudget_probe_errors_total",
            &[("budget", budget), ("reason", "topology")],
        )
        .expect("topology counter")
    };
    let mut found = Vec::new();
    for budget in [&heartbeat, &passive] {
        let metrics = daemon
            .wait_for_metrics("a topology error", PATIENCE, |m| topology(m, budget) >= 1.0)
            .await;
        let probe = daemon.probe(budget, "standby").await;
        eprintln!(
            "promoted: {budget} topology errors {}, probe {probe}",
            topology(&metrics, budget)
        );
        // From the first topology error on, the pre-promotion lag (0) is not shown: the
        // probe counts as stale at once, and its budget is unknown.
        assert!(
            lag(&daemon.metrics().await, budget).is_none(),
            "{budget}: no lag once the standby is found promoted"
        );
        assert_eq!(probe["stale"], true, "{probe}");
        assert_eq!(daemon.state(budget).await, "unknown");
        found.push((
            budget,
            topology(&metrics, budget),
            last_success(&metrics, budget).expect("last success"),
        ));
    }
    // Every run after the promotion was found fails: three more runs, three more topology
    // errors, and no new success.
    for (budget, errors, success_before) in found {
        daemon.wait_for_runs(budget, "standby", 3, PATIENCE).await;
        let metrics = daemon.metrics().await;
        assert_eq!(daemon.state(budget).await, "unknown");
        assert!(
            topology(&metrics, budget) >= errors + 3.0,
            "{budget}: every run is a topology error"
        );
        assert_eq!(
            last_success(&metrics, budget),
            Some(success_before),
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
    daemon.wait_for_state(&heartbeat, "ok", PATIENCE).await;
    // Some heartbeats written, so that a restart from seq 1 could not pass for one continuing.
    wait_for("heartbeat seq 4", PATIENCE, || async {
        (seq().await.0 >= 4).then_some(())
    })
    .await;
    daemon.stop().await;
    let (first_seq, rows) = seq().await;
    assert_eq!(rows, 1, "one row per instance and probe");

    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
        .await;
    let (second_seq, rows) = seq().await;
    eprintln!("heartbeat seq {first_seq} before the restart, {second_seq} after; {rows} row");
    assert!(second_seq > first_seq, "{second_seq} continues {first_seq}");
    assert_eq!(rows, 1);

    let (pair, ()) = pair.step("kill primary", StreamingPair::kill_primary).await;
    let killed = Instant::now();
    for budget in [&heartbeat, &passive] {
        daemon
            .wait_for_metrics("probe down", PATIENCE, |m| {
                m.get("lagbudget_probe_up", &labels(budget)) == Some(0.0)
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
        .wait_for_states(&[&heartbeat, &passive], "ok", PATIENCE)
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
        wait_for("a topology error", PATIENCE, || async {
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
