//! `sql_watermark` against real PostgreSQL: a stalled projection, an idle source, a database
//! that stops and returns, and the NULL/no-row rules.

use std::time::Duration;

use crate::support::{
    Daemon, Metrics, PATIENCE, PrivatePostgres, Projection, SHARED_PG_DSN, closed_port, connect,
    unique, wait_for,
};

fn unix_now() -> f64 {
    lagbudget::clock::unix_now()
}

fn one_budget_config(dsn: &str, budget: &str, max_lag: &str, probe: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{dsn}\" }} }}
budgets:
  - name: {budget}
    max_lag: {max_lag}
    probes:
      - name: projection
        interval: 1s
        sql_watermark: {probe}
"
    )
}

/// Issue acceptance: worker paused 10 s under a 4 s budget ⇒ lag within ±1 s of (last
/// successful run − insert time of the first unapplied row), `breach`; resumed ⇒ `ok` within
/// two intervals.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_projection_breaches_with_true_lag_and_recovers() {
    let projection = Projection::create(SHARED_PG_DSN).await;
    projection.start_workers(Duration::from_millis(200));
    let budget = unique("stalled");
    let daemon = Daemon::start(&one_budget_config(
        SHARED_PG_DSN,
        &budget,
        "4s",
        &projection.probe_yaml("db"),
    ))
    .await;
    daemon.wait_for_state(&budget, "ok", PATIENCE).await;

    projection.pause();
    let paused_at = unix_now();
    let labels = [("budget", budget.as_str()), ("probe", "projection")];
    let success = |m: &Metrics| m.get("lagbudget_probe_last_success_timestamp_seconds", &labels);
    // Injects lag: the worker stays paused until a successful run at least 10 s into the pause
    // (the daemon's timestamp). The position a run 2 s in saw is the last one: no progress
    // from there on.
    let early = daemon
        .wait_for_metrics("a run 2 s into the pause", PATIENCE, |m| {
            success(m).is_some_and(|at| at >= paused_at + 2.0)
        })
        .await;
    let progress_early = early
        .get("lagbudget_progress_timestamp_seconds", &labels)
        .expect("progress timestamp");
    let metrics = daemon
        .wait_for_metrics("a run 10 s into the pause", Duration::from_secs(60), |m| {
            m.has_series("lagbudget_lag_seconds", &labels)
                && success(m).is_some_and(|at| at >= paused_at + 10.0)
        })
        .await;
    let lag = metrics
        .get("lagbudget_lag_seconds", &labels)
        .expect("lag while fresh");
    let last_success = success(&metrics).expect("last success");
    let inserted = projection
        .first_unapplied_insert_time()
        .await
        .expect("rows are pending while paused");
    let expected = last_success - inserted;
    let paused_for = last_success - paused_at;
    println!("paused {paused_for:.1} s: measured lag {lag:.3} s, expected {expected:.3} s");
    assert!(
        (lag - expected).abs() <= 1.0,
        "lag {lag} not within ±1 s of {expected}"
    );
    assert!(
        lag > paused_for - 2.0,
        "{paused_for:.1} s of pause shows as about as much lag, got {lag}"
    );
    assert_eq!(daemon.state(&budget).await, "breach");
    assert_eq!(
        metrics.get(
            "lagbudget_state",
            &[("budget", &budget), ("state", "breach")]
        ),
        Some(1.0)
    );
    // The backlog counts the rows pending when the run queried: at least those inserted a
    // second before the run began, at most those pending now.
    let backlog = metrics
        .get("lagbudget_backlog_rows", &labels)
        .expect("count given ⇒ backlog rows");
    let run_began = last_success
        - metrics
            .get("lagbudget_probe_last_duration_seconds", &labels)
            .expect("last duration");
    let (at_least, at_most) = (
        projection.unapplied_rows(Some(run_began - 1.0)).await,
        projection.unapplied_rows(None).await,
    );
    println!("backlog {backlog} rows: between {at_least} and {at_most}");
    assert!(
        backlog > 0.0 && (at_least as f64..=at_most as f64).contains(&backlog),
        "backlog {backlog} rows, pending then between {at_least} and {at_most}"
    );
    // Behind and the watermark has not moved for longer than stall_after (= max_lag, 4 s).
    assert_eq!(metrics.get("lagbudget_stalled", &labels), Some(1.0));
    let progress = metrics
        .get("lagbudget_progress_timestamp_seconds", &labels)
        .expect("progress timestamp");
    assert_eq!(progress, progress_early, "no progress while paused");

    projection.resume();
    let resumed = unix_now();
    daemon.wait_for_state(&budget, "ok", PATIENCE).await;
    let metrics = daemon.metrics().await;
    // Ok within two intervals (1 s) of the resume, by the daemon's clock (when the state
    // changed, not when this test saw it); a third interval of slack covers run durations.
    let ok_after = metrics
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", &budget)],
        )
        .expect("state since")
        - resumed;
    println!("resumed: ok {ok_after:.3} s after the resume (interval 1 s)");
    assert!(ok_after <= 3.0, "ok within two intervals: {ok_after}");
    assert_eq!(metrics.get("lagbudget_stalled", &labels), Some(0.0));

    daemon.stop().await;
    projection.drop_schema().await;
}

/// Issue acceptance: source idle for 15 s with the projection caught up ⇒ lag stays 0.
#[tokio::test(flavor = "multi_thread")]
async fn idle_source_reports_zero_not_growing_lag() {
    let projection = Projection::caught_up(SHARED_PG_DSN, 5).await;
    let budget = unique("idle");
    let daemon = Daemon::start(&one_budget_config(
        SHARED_PG_DSN,
        &budget,
        "4s",
        &projection.probe_yaml("db"),
    ))
    .await;
    daemon.wait_for_state(&budget, "ok", PATIENCE).await;
    let labels = [("budget", budget.as_str()), ("probe", "projection")];
    let success = |m: &Metrics| {
        m.get("lagbudget_probe_last_success_timestamp_seconds", &labels)
            .expect("last success")
    };
    let first = daemon.metrics().await;
    // Idle through 15 more runs (15 s at least), lag and backlog 0 at every scrape.
    let started = std::time::Instant::now();
    let last = daemon
        .watch_runs(
            (&budget, "projection"),
            15,
            Duration::from_secs(60),
            |metrics| {
                assert_eq!(
                    metrics.get("lagbudget_lag_seconds", &labels),
                    Some(0.0),
                    "idle and caught up is 0 after {:?}",
                    started.elapsed()
                );
                assert_eq!(metrics.get("lagbudget_backlog_rows", &labels), Some(0.0));
            },
        )
        .await;
    let idle_for = success(&last) - success(&first);
    println!("idle: lag 0 through 15 runs, {idle_for:.3} s of runs");
    assert!(idle_for >= 14.0, "15 runs a second apart: {idle_for}");
    assert_eq!(daemon.state(&budget).await, "ok");
    daemon.stop().await;
    projection.drop_schema().await;
}

/// Issue acceptance: database stopped ⇒ down at once, stale and `unknown` after 3 intervals,
/// no `lag_seconds`; a budget already in breach stays `breach`; a probe whose database never
/// answered never has `lag_seconds`; everything recovers when the database returns.
#[tokio::test(flavor = "multi_thread")]
async fn stopped_database_is_unknown_never_zero_and_recovers() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("start private PostgreSQL");
    let dsn = server.dsn();
    let steady = Projection::caught_up(&dsn, 3).await;
    let behind = Projection::create(&dsn).await;
    behind.insert(1).await;
    let never_port = closed_port();
    let config = format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{dsn}\" }} }}
  nowhere: {{ postgres: {{ dsn: \"host=127.0.0.1 port={never_port} user=postgres dbname=x\" }} }}
budgets:
  - name: steady
    max_lag: 4s
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {steady_probe} }}
  - name: behind
    max_lag: 2s
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {behind_probe} }}
  - name: never
    max_lag: 4s
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {never_probe} }}
",
        steady_probe = steady.probe_yaml("db"),
        behind_probe = behind.probe_yaml("db"),
        never_probe = steady.probe_yaml("nowhere"),
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_for_state("steady", "ok", PATIENCE).await;
    daemon.wait_for_state("behind", "breach", PATIENCE).await;

    let steady_labels = [("budget", "steady"), ("probe", "projection")];
    let never_labels = [("budget", "never"), ("probe", "projection")];
    println!("stopping PostgreSQL on port {}", server.port);
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop");
    let stopped_at = std::time::Instant::now();
    let steady_success = |m: &Metrics| {
        m.get(
            "lagbudget_probe_last_success_timestamp_seconds",
            &steady_labels,
        )
        .expect("last success")
    };

    // Down at once: the next run fails (interval 1 s), but the probe is not yet stale. Stale
    // is judged when the scrape is served, so it must read 0 if the scrape ended within
    // 3 intervals of the last success (read after it, so that a slow scrape cannot fool it).
    let (down_after, scraped_by) = wait_for("steady probe down", PATIENCE, || async {
        let m = daemon.metrics().await;
        let scraped_by = unix_now();
        (m.get("lagbudget_probe_up", &steady_labels) == Some(0.0)).then_some((m, scraped_by))
    })
    .await;
    let silent_for = scraped_by - steady_success(&down_after);
    println!(
        "down after {:?}, {silent_for:.3} s after the last success",
        stopped_at.elapsed()
    );
    if silent_for < 3.0 {
        assert_eq!(
            down_after.get("lagbudget_probe_stale", &steady_labels),
            Some(0.0),
            "down {silent_for:.3} s after the last success is not stale yet"
        );
    }

    // Stale and unknown after 3 intervals (by the daemon's clock: the state's start against
    // the last success), and the lag disappears instead of reading 0.
    daemon.wait_for_state("steady", "unknown", PATIENCE).await;
    let m = daemon.metrics().await;
    let unknown_after = m
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", "steady")],
        )
        .expect("state since")
        - steady_success(&m);
    println!("unknown {unknown_after:.3} s after the last success");
    assert!(
        unknown_after >= 3.0,
        "not stale before 3 intervals: {unknown_after}"
    );
    assert_eq!(m.get("lagbudget_probe_stale", &steady_labels), Some(1.0));
    assert!(!m.has_series("lagbudget_lag_seconds", &steady_labels));
    assert!(!m.has_series("lagbudget_budget_used_ratio", &steady_labels));
    assert!(
        m.get(
            "lagbudget_probe_errors_total",
            &[("budget", "steady"), ("reason", "connect")]
        )
        .expect("connect counter")
            >= 1.0
    );
    let api = daemon.budget("steady").await;
    assert!(api["lag_seconds"].is_null(), "{api}");
    assert!(api["probes"][0]["lag_seconds"].is_null());
    assert_eq!(api["probes"][0]["error"]["reason"], "connect");
    assert!(
        api["last_lag_seconds"].is_number(),
        "last known lag kept: {api}"
    );

    // Going blind during a breach does not resolve it: still breach after two more failed
    // runs of its probe.
    assert_eq!(daemon.state("behind").await, "breach");
    let behind_errors = |m: &Metrics| {
        m.get(
            "lagbudget_probe_errors_total",
            &[("budget", "behind"), ("reason", "connect")],
        )
        .expect("connect counter")
    };
    let blind_from = behind_errors(&daemon.metrics().await);
    daemon
        .wait_for_metrics("two more failed runs of behind", PATIENCE, |m| {
            behind_errors(m) >= blind_from + 2.0
        })
        .await;
    assert_eq!(daemon.state("behind").await, "breach");

    // A probe that never reached its database never had a lag.
    assert!(!m.has_series("lagbudget_lag_seconds", &never_labels));
    assert_eq!(m.get("lagbudget_probe_stale", &never_labels), Some(1.0));
    assert_eq!(daemon.state("never").await, "unknown");
    assert!(!m.has_series(
        "lagbudget_probe_last_success_timestamp_seconds",
        &never_labels
    ));

    // The database returns: both recover without restarting the daemon.
    let server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .expect("start again");
    daemon.wait_for_state("steady", "ok", PATIENCE).await;
    assert_eq!(daemon.state("behind").await, "breach", "still behind");
    behind.apply_all().await;
    daemon.wait_for_state("behind", "ok", PATIENCE).await;
    let m = daemon.metrics().await;
    assert_eq!(m.get("lagbudget_lag_seconds", &steady_labels), Some(0.0));
    assert!(!m.has_series("lagbudget_lag_seconds", &never_labels));

    daemon.stop().await;
    drop(server);
}

/// The NULL and no-row rules of `sql_watermark` (docs/src/probes/sql_watermark.md),
/// and `mode: since_watermark`.
#[tokio::test(flavor = "multi_thread")]
async fn watermark_edge_cases_report_bounded_reasons() {
    let schema = unique("lb_edge");
    let client = connect(SHARED_PG_DSN).await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.cp (name text PRIMARY KEY, pos bigint, at timestamptz);
             INSERT INTO {schema}.cp VALUES ('null', NULL, NULL),
                                            ('stamp', 1, now() - interval '7 seconds');"
        ))
        .await
        .expect("schema");
    let config = format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: edges
    max_lag: 60s
    probes:
      - name: no-row
        sql_watermark:
          source: db
          watermark: \"SELECT pos FROM {schema}.cp WHERE name = 'missing'\"
          oldest_pending: \"SELECT now(), 1 WHERE $1::bigint > 0\"
      - name: null-watermark
        sql_watermark:
          source: db
          watermark: \"SELECT pos FROM {schema}.cp WHERE name = 'null'\"
          oldest_pending: \"SELECT now(), 1 WHERE $1::bigint > 0\"
      - name: count-without-time
        sql_watermark:
          source: db
          watermark: \"SELECT pos FROM {schema}.cp WHERE name = 'stamp'\"
          oldest_pending: \"SELECT NULL::timestamptz, 3::bigint WHERE $1::bigint > 0\"
      - name: nothing-pending
        sql_watermark:
          source: db
          watermark: \"SELECT pos FROM {schema}.cp WHERE name = 'stamp'\"
          oldest_pending: \"SELECT min(at), count(*) FROM {schema}.cp WHERE pos > $1\"
      - name: missing-table
        sql_watermark:
          source: db
          watermark: \"SELECT pos FROM {schema}.nope\"
          oldest_pending: \"SELECT now(), 1 WHERE $1::bigint > 0\"
      - name: since
        sql_watermark:
          source: db
          watermark: \"SELECT at FROM {schema}.cp WHERE name = 'stamp'\"
          mode: since_watermark
"
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(Duration::from_secs(30)).await;
    let reason = |probe: &'static str| {
        let daemon = &daemon;
        async move { daemon.probe("edges", probe).await["error"]["reason"].clone() }
    };
    assert_eq!(reason("no-row").await, "no_data");
    assert_eq!(reason("null-watermark").await, "no_data");
    assert_eq!(reason("count-without-time").await, "decode");
    assert_eq!(reason("missing-table").await, "query");
    let missing = daemon.probe("edges", "missing-table").await;
    assert!(
        missing["error"]["message"]
            .as_str()
            .expect("message")
            .contains("does not exist"),
        "{missing}"
    );
    let nothing = daemon.probe("edges", "nothing-pending").await;
    assert_eq!(nothing["lag_seconds"], 0.0, "{nothing}");
    assert_eq!(nothing["backlog"]["value"], 0.0);
    let since = daemon.probe("edges", "since").await;
    let lag = since["lag_seconds"].as_f64().expect("since lag");
    assert!(
        (7.0..9.0).contains(&lag),
        "now − watermark ≈ 7 s, got {lag}"
    );

    daemon.stop().await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}
