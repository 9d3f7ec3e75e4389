//! `reconcile` at its edges: text keys compared across engines (exact and case-folded, recent
//! pass and sweep), a source that goes down in the middle of a sweep, `check --connect` on
//! queries of the wrong shape, and a sweep query that pages out of order.

use std::cell::{Cell, RefCell};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::support::{
    Daemon, Metrics, PATIENCE, PrivatePostgres, SHARED_PG_DSN, check_connect_lines, connect,
    load_config, unique, wait_for,
};

/// The machine's MariaDB; each test creates its own database there.
const MARIADB_ROOT: &str = "mysql://root@127.0.0.1:3306/test";

/// A database of its own on the machine's MariaDB, utf8mb4 under its default case-insensitive
/// collation; returns a root connection to it and its URL.
async fn mariadb(prefix: &str) -> (Conn, String, String) {
    let opts = mysql_async::Opts::from_url(MARIADB_ROOT).expect("url");
    let mut conn = Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {MARIADB_ROOT} must be running for this test: {e}"));
    let db = unique(prefix);
    conn.query_drop(format!(
        "CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci; USE {db};"
    ))
    .await
    .expect("create database");
    let url = format!("mysql://root@127.0.0.1:3306/{db}");
    (conn, db, url)
}

async fn drop_mariadb(mut conn: Conn, db: &str) {
    let _ = conn.query_drop(format!("DROP DATABASE {db}")).await;
    let _ = conn.disconnect().await;
}

fn labels<'a>(budget: &'a str, probe: &'a str) -> [(&'a str, &'a str); 2] {
    [("budget", budget), ("probe", probe)]
}

/// The mismatch gauge of one kind, if exported.
fn mismatches(m: &Metrics, budget: &str, probe: &str, kind: &str) -> Option<f64> {
    m.get(
        "lagbudget_reconcile_mismatches",
        &[("budget", budget), ("probe", probe), ("kind", kind)],
    )
}

/// The mismatch gauges of one probe: missing, stale, extra.
fn kinds(m: &Metrics, budget: &str, probe: &str) -> [Option<f64>; 3] {
    ["missing", "stale", "extra"].map(|kind| mismatches(m, budget, probe, kind))
}

fn lag(m: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    m.get("lagbudget_lag_seconds", &labels(budget, probe))
}

fn up(m: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    m.get("lagbudget_probe_up", &labels(budget, probe))
}

fn last_sweep(m: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    m.get(
        "lagbudget_reconcile_last_sweep_timestamp_seconds",
        &labels(budget, probe),
    )
}

/// Waits until a sweep of the probe completed more than `gap` seconds after the first one
/// this wait saw: anything that sweep found has been seen longer than `gap` since.
async fn wait_for_a_later_sweep(daemon: &Daemon, budget: &str, probe: &str, gap: f64) -> Metrics {
    let first = daemon
        .wait_for_metrics(&format!("{budget}/{probe}'s first sweep"), PATIENCE, |m| {
            last_sweep(m, budget, probe).is_some()
        })
        .await;
    let first = last_sweep(&first, budget, probe).expect("a sweep");
    daemon
        .wait_for_metrics(
            &format!("a sweep of {budget}/{probe} more than {gap} s after the one at {first}"),
            PATIENCE * 2,
            |m| last_sweep(m, budget, probe).is_some_and(|at| at > first + gap),
        )
        .await
}

/// Text keys across engines: PostgreSQL writes 'Order-A', MariaDB (a case-insensitive
/// collation) holds 'order-a' at the same version. `collation: exact` reports the record as
/// missing (older than max_lag) and, with a derived sweep, 'order-a' as extra; `case_folded`
/// reports nothing. Each comes as a recent pass alone and with a sweep, whose keys both sides
/// order by the compared form in byte order. 'Order-D' changed an hour ago, outside the
/// window: only a sweep sees it.
#[tokio::test(flavor = "multi_thread")]
async fn text_keys_across_engines_compare_as_the_collation_says() {
    let pg = connect(SHARED_PG_DSN).await;
    let schema = unique("lb_rec_text");
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (k text PRIMARY KEY, version bigint NOT NULL,
                                       changed_at timestamptz NOT NULL);
         INSERT INTO {schema}.orders VALUES
           ('Order-A', 1, now() - interval '10 seconds'),
           ('order-b', 1, now() - interval '10 seconds'),
           ('Order-C', 2, now() - interval '10 seconds'),
           ('Order-D', 1, now() - interval '1 hour');"
    ))
    .await
    .expect("source table");
    let inserted = unix_now();
    let (mut my, db, my_url) = mariadb("lb_rec_text").await;
    my.query_drop(
        "CREATE TABLE invoices (k VARCHAR(64) PRIMARY KEY, version BIGINT NOT NULL);
         INSERT INTO invoices VALUES ('order-a', 1), ('order-b', 1), ('Order-C', 2),
                                     ('order-d', 1);",
    )
    .await
    .expect("derived table");

    let exact_sweep = format!(
        "{{ query: \"SELECT k, version, changed_at FROM {schema}.orders WHERE k COLLATE \\\"C\\\" > $1 ORDER BY k COLLATE \\\"C\\\" LIMIT $2\", \
         derived_query: \"SELECT k, version FROM invoices WHERE k COLLATE utf8mb4_bin > $1 ORDER BY k COLLATE utf8mb4_bin LIMIT $2\", \
         every: 1s, chunk: 2, chunks_per_run: 1 }}"
    );
    let folded_sweep = format!(
        "{{ query: \"SELECT k, version, changed_at FROM {schema}.orders WHERE lower(k) COLLATE \\\"C\\\" > $1 ORDER BY lower(k) COLLATE \\\"C\\\" LIMIT $2\", \
         derived_query: \"SELECT k, version FROM invoices WHERE LOWER(k) COLLATE utf8mb4_bin > $1 ORDER BY LOWER(k) COLLATE utf8mb4_bin LIMIT $2\", \
         every: 1s, chunk: 2, chunks_per_run: 1 }}"
    );
    let probe = |name: &str, collation: &str, sweep: Option<&str>| {
        format!(
            "
      - name: {name}
        reconcile:
          source: {{ source: pg, query: \"SELECT k, version, changed_at FROM {schema}.orders WHERE changed_at > $1\" }}
          derived: {{ source: my, query: \"SELECT k, version FROM invoices WHERE k IN ($1)\" }}
          key_type: text
          collation: {collation}
          sample_keys: 10{sweep}",
            sweep = sweep.map_or(String::new(), |s| format!("\n          sweep: {s}"))
        )
    };
    let (exact, folded) = (unique("rec_exact"), unique("rec_folded"));
    let max_lag = 3.0;
    let yaml = format!(
        "listen: 127.0.0.1:0
sources:
  pg: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  my: {{ mysql: {{ url: \"{my_url}\" }} }}
defaults:
  interval: 500ms
budgets:
  - name: {exact}
    max_lag: 3s
    probes:{}{}
  - name: {folded}
    max_lag: 3s
    probes:{}{}
",
        probe("recent", "exact", None),
        probe("swept", "exact", Some(&exact_sweep)),
        probe("recent", "case_folded", None),
        probe("swept", "case_folded", Some(&folded_sweep)),
    );
    let daemon = Daemon::start(&yaml).await;

    // exact, recent pass alone: 'Order-A' is missing (its lookup finds 'order-a', another
    // key); 'Order-D' is outside the window and never read.
    let m = daemon
        .wait_for_metrics("exact/recent to report its mismatch", PATIENCE, |m| {
            mismatches(m, &exact, "recent", "missing").is_some()
        })
        .await;
    assert_eq!(
        kinds(&m, &exact, "recent"),
        [Some(1.0), Some(0.0), None],
        "missing, stale, extra\n{}",
        m.text
    );
    let measured = lag(&m, &exact, "recent").expect("lag");
    let upper = 10.0 + (unix_now() - inserted) + 1.0;
    assert!(
        (10.0 - 0.5..=upper).contains(&measured),
        "lag {measured} is the age of 'Order-A' (10 s at insert, ≤ {upper} s now)"
    );
    let status = daemon.probe(&exact, "recent").await;
    assert_eq!(
        status["reconcile"]["sample"],
        serde_json::json!([{ "kind": "missing", "key": "Order-A" }]),
        "{status}"
    );
    assert_eq!(status["reconcile"]["not_visible"], 1, "{status}");

    // exact with a sweep: 'Order-D' too, and both derived spellings as extra once seen
    // longer than max_lag.
    let m = wait_for_a_later_sweep(&daemon, &exact, "swept", max_lag + 0.5).await;
    assert_eq!(
        kinds(&m, &exact, "swept"),
        [Some(2.0), Some(0.0), Some(2.0)],
        "missing, stale, extra\n{}",
        m.text
    );
    let measured = lag(&m, &exact, "swept").expect("lag");
    assert!(
        (3600.0 - 0.5..=3600.0 + (unix_now() - inserted) + 1.0).contains(&measured),
        "lag {measured} is the age of 'Order-D', an hour"
    );
    let status = daemon.probe(&exact, "swept").await;
    let mut sample: Vec<String> = status["reconcile"]["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["kind"].as_str().unwrap_or("?"),
                s["key"].as_str().unwrap_or("?")
            )
        })
        .collect();
    sample.sort();
    assert_eq!(
        sample,
        [
            "extra:order-a",
            "extra:order-d",
            "missing:Order-A",
            "missing:Order-D"
        ],
        "{status}"
    );
    assert_eq!(status["reconcile"]["sweep"]["last_rows"], 4, "{status}");

    // case_folded: nothing, neither in the recent pass nor in sweeps that started after any
    // first sighting had time to count.
    let m = wait_for_a_later_sweep(&daemon, &folded, "swept", max_lag + 0.5).await;
    for (probe, extra) in [("recent", None), ("swept", Some(0.0))] {
        assert_eq!(
            kinds(&m, &folded, probe),
            [Some(0.0), Some(0.0), extra],
            "{probe}: missing, stale, extra\n{}",
            m.text
        );
        assert_eq!(lag(&m, &folded, probe), Some(0.0), "{probe}: {}", m.text);
        assert_eq!(up(&m, &folded, probe), Some(1.0), "{probe}: {}", m.text);
    }
    let status = daemon.probe(&folded, "swept").await;
    assert_eq!(status["reconcile"]["not_visible"], 0, "{status}");
    assert_eq!(status["reconcile"]["sweep"]["last_rows"], 4, "{status}");
    assert!(status["reconcile"].get("sample").is_none(), "{status}");

    daemon.stop().await;
    drop_mariadb(my, &db).await;
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The sweep's (running, rows, completed, last_rows) from the API, while the probe is fresh.
fn sweep_state(probe: &Value) -> Option<(bool, u64, u64, Option<u64>)> {
    let sweep = probe.get("reconcile")?.get("sweep")?;
    Some((
        sweep["running"].as_bool()?,
        sweep["rows"].as_u64()?,
        sweep["completed"].as_u64()?,
        sweep["last_rows"].as_u64(),
    ))
}

/// Watches sweep states: the running sweep's rows never go back.
#[derive(Default)]
struct SweepWatch {
    rows: u64,
    seen: Vec<(bool, u64)>,
}

impl SweepWatch {
    fn saw(&mut self, probe: &Value) -> Option<(bool, u64, u64, Option<u64>)> {
        let state = sweep_state(probe)?;
        let (running, rows, completed, _) = state;
        if completed == 0 {
            assert!(
                running,
                "before the first sweep completes, one runs: {probe}"
            );
            assert!(
                rows >= self.rows,
                "the running sweep went back from {} to {rows} rows (seen: {:?}): {probe}",
                self.rows,
                self.seen
            );
            self.rows = rows;
        }
        if self.seen.last() != Some(&(running, rows)) {
            self.seen.push((running, rows));
        }
        Some(state)
    }
}

/// The source stops in the middle of a sweep: the probe goes down with reason connect, no
/// mismatch count is made up while it is down (the last true one while fresh, none once
/// stale), and after the restart the sweep resumes from its cursor: its rows never go back,
/// and the completed sweep read exactly the source's rows and found exactly the injected
/// mismatches.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_down_mid_sweep_resumes_from_its_cursor() {
    const ROWS: u64 = 100;
    let server = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("private PostgreSQL");
    let pg = connect(&server.dsn()).await;
    pg.batch_execute(&format!(
        "CREATE TABLE orders (id bigint PRIMARY KEY, version bigint NOT NULL,
                              changed_at timestamptz NOT NULL);
         INSERT INTO orders SELECT n, 2, now() - interval '1 hour' FROM generate_series(1, {ROWS}) n;"
    ))
    .await
    .expect("source table");
    let (mut my, db, my_url) = mariadb("lb_rec_down").await;
    // 3 never arrived, 6 arrived at version 1: the sweep's first two chunks find them.
    my.query_drop(format!(
        "CREATE TABLE invoices (order_id BIGINT PRIMARY KEY, order_version BIGINT NOT NULL);
         INSERT INTO invoices
           WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS})
           SELECT n, IF(n = 6, 1, 2) FROM s WHERE n <> 3;"
    ))
    .await
    .expect("derived table");

    let budget = unique("rec_down");
    let probe = "invoices";
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  pg: {{ postgres: {{ dsn: \"{dsn}\" }} }}
  my: {{ mysql: {{ url: \"{my_url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    probes:
      - name: {probe}
        interval: 500ms
        reconcile:
          source: {{ source: pg, query: \"SELECT id, version, changed_at FROM orders WHERE changed_at > $1\" }}
          derived: {{ source: my, query: \"SELECT order_id, order_version FROM invoices WHERE order_id IN ($1)\" }}
          sweep:
            query: \"SELECT id, version, changed_at FROM orders WHERE id > $1 ORDER BY id LIMIT $2\"
            every: 1h
            chunk: 4
            chunks_per_run: 1
",
        dsn = server.dsn()
    ))
    .await;

    let watch = RefCell::new(SweepWatch::default());
    let before = wait_for("the sweep to be running with rows", PATIENCE, || async {
        let status = daemon.probe(&budget, probe).await;
        let (running, rows, _, _) = watch.borrow_mut().saw(&status)?;
        (running && rows >= 8).then_some(status)
    })
    .await;
    let (_, rows_before, completed_before, _) = sweep_state(&before).expect("sweep");
    assert_eq!(completed_before, 0, "{before}");
    assert!(rows_before < ROWS, "the sweep is still running: {before}");
    let m = daemon.metrics().await;
    let counts_before: Vec<Option<f64>> = ["missing", "stale"]
        .iter()
        .map(|kind| mismatches(&m, &budget, probe, kind))
        .collect();
    assert_eq!(counts_before, [Some(1.0), Some(1.0)], "{}", m.text);

    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop");

    // Down, reason connect; while fresh the counts are the last true ones, then none.
    let went_down = Cell::new(false);
    let down = wait_for("the probe down and stale", PATIENCE, || async {
        let m = daemon.metrics().await;
        let status = daemon.probe(&budget, probe).await;
        watch.borrow_mut().saw(&status);
        for (kind, before) in ["missing", "stale"].iter().zip(&counts_before) {
            let now = mismatches(&m, &budget, probe, kind);
            assert!(
                now.is_none() || now == *before,
                "{kind} became {now:?} with the source down (was {before:?}):\n{}",
                m.text
            );
        }
        went_down.set(went_down.get() || up(&m, &budget, probe) == Some(0.0));
        let stale = status["stale"] == true;
        (went_down.get() && stale).then_some((m, status))
    })
    .await;
    let (m, status) = down;
    let seen_before_down = watch.borrow().seen.clone();
    assert!(
        seen_before_down
            .last()
            .is_some_and(|(running, rows)| *running && *rows < ROWS),
        "the source went down while the sweep was running: {seen_before_down:?}"
    );
    for kind in ["missing", "stale", "extra"] {
        assert_eq!(
            mismatches(&m, &budget, probe, kind),
            None,
            "{kind}:\n{}",
            m.text
        );
    }
    assert_eq!(lag(&m, &budget, probe), None, "{}", m.text);
    assert_eq!(
        m.get("lagbudget_reconcile_sweep_rows", &labels(&budget, probe)),
        None,
        "{}",
        m.text
    );
    // The hour-old mismatches had the budget in breach; a source going down does not clear it.
    assert_eq!(daemon.state(&budget).await, "breach");
    assert!(
        status.get("reconcile").is_none_or(Value::is_null),
        "{status}"
    );
    let reason = wait_for("the error reason to be connect", PATIENCE, || async {
        let status = daemon.probe(&budget, probe).await;
        (status["error"]["reason"] == "connect").then_some(status)
    })
    .await;
    eprintln!("down: {}", reason["error"]);
    let m = daemon.metrics().await;
    let errors = m
        .get(
            "lagbudget_probe_errors_total",
            &[("budget", &budget), ("probe", probe), ("reason", "connect")],
        )
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "{}", m.text);

    let server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .expect("start again");

    // Back: the sweep goes on from its cursor and completes with exactly the source's rows.
    let done = wait_for(
        "the sweep to complete after the restart",
        PATIENCE * 2,
        || async {
            let status = daemon.probe(&budget, probe).await;
            let (running, _, completed, _) = watch.borrow_mut().saw(&status)?;
            (!running && completed >= 1).then_some(status)
        },
    )
    .await;
    let watch = watch.into_inner();
    eprintln!("sweep (running, rows) seen: {:?}", watch.seen);
    // The first state after the restart: the same sweep, running on from where it was (the
    // watch has checked that its rows never went back).
    assert!(
        watch
            .seen
            .get(seen_before_down.len())
            .is_some_and(|(running, _)| *running),
        "the sweep was still running after the restart: {:?}",
        watch.seen
    );
    let (_, _, completed, last_rows) = sweep_state(&done).expect("sweep");
    assert_eq!(completed, 1, "{done}");
    assert_eq!(last_rows, Some(ROWS), "{done}");
    let m = daemon
        .wait_for_metrics("the counts after the sweep", PATIENCE, |m| {
            up(m, &budget, probe) == Some(1.0) && mismatches(m, &budget, probe, "missing").is_some()
        })
        .await;
    assert_eq!(
        kinds(&m, &budget, probe),
        [Some(1.0), Some(1.0), None],
        "missing, stale, and no extra without a derived sweep\n{}",
        m.text
    );
    assert_eq!(done["reconcile"]["not_visible"], 2, "{done}");

    daemon.stop().await;
    drop_mariadb(my, &db).await;
    drop(server);
}

/// `check --connect` names what is wrong with a query's shape before the daemon runs it.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_reports_queries_of_the_wrong_shape() {
    let pg = connect(SHARED_PG_DSN).await;
    let schema = unique("lb_rec_check");
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, version bigint NOT NULL,
                                       changed_at timestamptz NOT NULL);"
    ))
    .await
    .expect("source table");
    let (mut my, db, my_url) = mariadb("lb_rec_check").await;
    my.query_drop(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, version BIGINT NOT NULL,
                              changed_at DATETIME(6) NOT NULL);",
    )
    .await
    .expect("mysql table");

    let source =
        format!("SELECT id, version, changed_at FROM {schema}.orders WHERE changed_at > $1");
    let lookup = format!("SELECT id, version FROM {schema}.orders WHERE id = ANY($1)");
    let probe =
        |name: &str, body: String| format!("\n      - name: {name}\n        reconcile:\n{body}");
    let side = |key: &str, on: &str, query: &str| {
        format!("          {key}: {{ source: {on}, query: \"{query}\" }}\n")
    };
    let budget = unique("rec_check");
    let yaml = format!(
        "sources:
  pg: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  my: {{ mysql: {{ url: \"{my_url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    probes:{}{}{}{}{}{}
",
        probe(
            "good",
            side("source", "pg", &source)
                + &side("derived", "pg", &lookup)
                + &format!(
                    "          sweep: {{ query: \"SELECT id, version, changed_at FROM {schema}.orders WHERE id > $1 ORDER BY id LIMIT $2\" }}\n"
                )
        ),
        probe(
            "source-params",
            side("source", "pg", &format!("{source} AND id > $2"))
                + &side("derived", "pg", &lookup)
        ),
        probe(
            "my-source-params",
            side(
                "source",
                "my",
                "SELECT id, version, changed_at FROM orders WHERE changed_at > $1 AND id > $2"
            ) + &side("derived", "pg", &lookup)
        ),
        probe(
            "derived-not-array",
            side("source", "pg", &source)
                + &side(
                    "derived",
                    "pg",
                    &format!("SELECT id, version FROM {schema}.orders WHERE id = $1")
                )
        ),
        probe(
            "sweep-columns",
            side("source", "pg", &source)
                + &side("derived", "pg", &lookup)
                + &format!(
                    "          sweep: {{ query: \"SELECT id, version FROM {schema}.orders WHERE id > $1 ORDER BY id LIMIT $2\" }}\n"
                )
        ),
        probe(
            "my-sweep-columns",
            side("source", "pg", &source)
                + &side("derived", "pg", &lookup)
                + "          sweep: { query: \"SELECT id, version FROM orders WHERE id > $1 ORDER BY id LIMIT $2\" }\n"
        ),
    );
    // The last one sweeps on MySQL: its source must be MySQL too.
    let yaml = yaml.replace(
        &format!(
            "      - name: my-sweep-columns\n        reconcile:\n          source: {{ source: pg, query: \"{source}\" }}"
        ),
        "      - name: my-sweep-columns\n        reconcile:\n          source: { source: my, query: \"SELECT id, version, changed_at FROM orders WHERE changed_at > $1\" }",
    );
    let config = load_config(&yaml);
    let lines = check_connect_lines(&config).await;
    let line = |name: &str| {
        let prefix = format!("probe {budget}/{name} (reconcile): ");
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no line for {name}: {lines:#?}"))
            .to_owned()
    };
    assert_eq!(
        line("good"),
        "ok source and derived queries accepted, and the sweep's"
    );
    assert_eq!(
        line("source-params"),
        "query: the source query takes 2 parameter(s); it is given 1 ($1, the start of the window)"
    );
    assert_eq!(
        line("my-source-params"),
        "query: the source query is given $1, the start of the window (write them so on MySQL too); it also uses $2"
    );
    assert_eq!(
        line("derived-not-array"),
        "query: the derived query's $1 is the keys, an array, but the query takes it as int8; write `key = ANY($1)` over a bigint or text key, or cast (key::text = ANY($1::text[]))"
    );
    assert_eq!(
        line("sweep-columns"),
        "decode: the sweep query returns 2 column(s); it must return (key, version, changed_at)"
    );
    assert_eq!(
        line("my-sweep-columns"),
        "decode: the sweep query returns 2 column(s); it must return (key, version, changed_at)"
    );

    drop_mariadb(my, &db).await;
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

/// A sweep query that pages keys out of the order lagbudget compares them in (by id DESC; or
/// case-folded keys ordered as written) would skip or repeat records: the probe is down with
/// reason decode and says keys must ascend, and no mismatch is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_out_of_order_is_a_decode_error() {
    let pg = connect(SHARED_PG_DSN).await;
    let schema = unique("lb_rec_desc");
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, version bigint NOT NULL,
                                       changed_at timestamptz NOT NULL);
         CREATE TABLE {schema}.invoices (order_id bigint PRIMARY KEY, version bigint NOT NULL);
         INSERT INTO {schema}.orders SELECT n, 1, now() - interval '1 hour' FROM generate_series(1, 5) n;
         INSERT INTO {schema}.invoices SELECT n, 1 FROM generate_series(1, 5) n;
         CREATE TABLE {schema}.accounts (k text PRIMARY KEY, version bigint NOT NULL,
                                         changed_at timestamptz NOT NULL);
         CREATE TABLE {schema}.account_view (k text PRIMARY KEY, version bigint NOT NULL);
         INSERT INTO {schema}.accounts VALUES ('B', 1, now() - interval '1 hour'),
                                              ('a', 1, now() - interval '1 hour');
         INSERT INTO {schema}.account_view VALUES ('B', 1), ('a', 1);"
    ))
    .await
    .expect("tables");
    let budget = unique("rec_desc");
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  pg: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5s
    probes:
      - name: descending
        interval: 500ms
        reconcile:
          source: {{ source: pg, query: \"SELECT id, version, changed_at FROM {schema}.orders WHERE changed_at > $1\" }}
          derived: {{ source: pg, query: \"SELECT order_id, version FROM {schema}.invoices WHERE order_id = ANY($1)\" }}
          sweep:
            query: \"SELECT id, version, changed_at FROM {schema}.orders WHERE id > $1 ORDER BY id DESC LIMIT $2\"
            chunk: 10
      - name: folded-ordered-as-written
        interval: 500ms
        reconcile:
          source: {{ source: pg, query: \"SELECT k, version, changed_at FROM {schema}.accounts WHERE changed_at > $1\" }}
          derived: {{ source: pg, query: \"SELECT k, version FROM {schema}.account_view WHERE k = ANY($1)\" }}
          key_type: text
          collation: case_folded
          sweep:
            query: \"SELECT k, version, changed_at FROM {schema}.accounts WHERE lower(k) COLLATE \\\"C\\\" > $1 ORDER BY k COLLATE \\\"C\\\" LIMIT $2\"
            chunk: 10
"
    ))
    .await;
    // Ordered by id DESC; and case-folded keys ordered as written ('B' before 'a' in bytes,
    // but compared as 'b', after 'a').
    for probe in ["descending", "folded-ordered-as-written"] {
        let status = wait_for("the probe to fail with decode", PATIENCE, || async {
            let status = daemon.probe(&budget, probe).await;
            (status["error"]["reason"] == "decode").then_some(status)
        })
        .await;
        assert_eq!(status["up"], false, "{status}");
        let message = status["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("the sweep query returned keys out of order")
                && message.contains("ascending order"),
            "{message}"
        );
        // It never succeeds, so no reconcile series or object appears, run after run.
        daemon
            .watch_runs((&budget, probe), 3, PATIENCE, |m| {
                assert_eq!(up(m, &budget, probe), Some(0.0), "{}", m.text);
                for kind in ["missing", "stale", "extra"] {
                    assert_eq!(mismatches(m, &budget, probe, kind), None, "{}", m.text);
                }
            })
            .await;
        let m = daemon.metrics().await;
        let errors = m.get(
            "lagbudget_probe_errors_total",
            &[("budget", &budget), ("probe", probe), ("reason", "decode")],
        );
        assert!(errors.is_some_and(|n| n >= 3.0), "{}", m.text);
    }

    daemon.stop().await;
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}
