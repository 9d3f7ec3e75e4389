//! `reconcile` acceptance, against the machine's PostgreSQL (the source of truth: `orders`, in a
//! schema of its own) and MariaDB (the derived view: `invoices`, in a database of its own), fed
//! by a worker the test controls: it copies every order it has not copied yet (at its current
//! version) every 100 ms, can be paused and resumed, and can be told to skip an order for good
//! while it keeps going.
//!
//! How lag is compared with what was injected: the probe takes ages on the source's clock,
//! read during the run; the API's `last_run` is when that run ended (daemon clock, the same
//! host's) and `last_duration_seconds` how long it took, so the source-clock instant of the
//! reading lies within `[last_run − duration, last_run]`. The expected age is the distance
//! from that instant to the oldest uncopied order's `changed_at` (read from the databases, not
//! from the worker's memory), and the lag must fall within that interval widened by the
//! stated tolerance. Where possible a second, clock-independent bracket is checked too: the
//! PostgreSQL clock read before a run started and after it ended. Every wait is bounded and
//! waits on runs or metric values, never on time alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde_json::Value;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::support::{
    Daemon, Metrics, PATIENCE, SHARED_PG_DSN, connect, poll_until, unique, wait_for,
};

const PROBE: &str = "invoices";

/// The machine's MariaDB, as root.
const MARIADB: &str = "mysql://root@127.0.0.1:3306";

/// How far a measured lag may be from the age it should show, beyond the bracket of the run.
const LAG_TOLERANCE: f64 = 1.0;

/// The source (`orders`) and derived view (`invoices`) of one test, and its worker.
struct Shop {
    schema: String,
    db: String,
    pg: Client,
    my: Mutex<Conn>,
    next_id: Arc<AtomicI64>,
    /// Held by the worker for each copy and by the test while paused (tokio's mutex is fair,
    /// so a pause waits for the copy in progress and no copy starts after it).
    gate: Arc<Mutex<()>>,
    paused: Mutex<Option<OwnedMutexGuard<()>>>,
    skipped: Arc<std::sync::Mutex<HashSet<i64>>>,
    stop: CancellationToken,
}

impl Shop {
    async fn create() -> Shop {
        let schema = unique("lb_rec");
        let pg = connect(SHARED_PG_DSN).await;
        pg.batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, version int NOT NULL,
                                           changed_at timestamptz NOT NULL
                                             DEFAULT clock_timestamp());"
        ))
        .await
        .expect("create orders");
        let db = unique("lb_rec");
        let mut my = mysql_conn("test").await;
        my.query_drop(format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.invoices (order_id BIGINT PRIMARY KEY,
                                         order_version INT NOT NULL) ENGINE=InnoDB;
             USE {db};"
        ))
        .await
        .expect("create invoices");
        let shop = Shop {
            schema,
            db,
            pg,
            my: Mutex::new(my),
            next_id: Arc::new(AtomicI64::new(1)),
            gate: Arc::new(Mutex::new(())),
            paused: Mutex::new(None),
            skipped: Arc::new(std::sync::Mutex::new(HashSet::new())),
            stop: CancellationToken::new(),
        };
        shop.start_worker().await;
        shop
    }

    /// A budget with one `reconcile` probe of `orders` against `invoices` (interval 1 s);
    /// `extra` adds lines to its `reconcile:` mapping (indented by 10).
    fn config(&self, budget: &str, max_lag: &str, extra: &str) -> String {
        format!(
            r#"
sources:
  pg: {{ postgres: {{ dsn: "{SHARED_PG_DSN}" }} }}
  my: {{ mysql: {{ url: "{MARIADB}/{db}" }} }}
budgets:
  - name: {budget}
    max_lag: {max_lag}
    probes:
      - name: {PROBE}
        interval: 1s
        reconcile:
          source: {{ source: pg, query: "SELECT id, version, changed_at FROM {s}.orders WHERE changed_at > $1" }}
          derived: {{ source: my, query: "SELECT order_id, order_version FROM invoices WHERE order_id IN ($1)" }}
{extra}"#,
            db = self.db,
            s = self.schema,
        )
    }

    /// The `sweep:` lines of the config, with the derived sweep (finds `extra`).
    fn sweep(&self, every: &str, chunk: usize, chunks_per_run: usize) -> String {
        format!(
            r#"          sweep:
            query: "SELECT id, version, changed_at FROM {s}.orders WHERE id > $1 ORDER BY id LIMIT $2"
            derived_query: "SELECT order_id, order_version FROM invoices WHERE order_id > $1 ORDER BY order_id LIMIT $2"
            every: {every}
            chunk: {chunk}
            chunks_per_run: {chunks_per_run}
"#,
            s = self.schema
        )
    }

    /// The worker: every 100 ms, upserts into `invoices` each order whose current version it
    /// has not copied yet, except those it was told to skip.
    async fn start_worker(&self) {
        let pg = connect(SHARED_PG_DSN).await;
        let mut my = mysql_conn(&self.db).await;
        let (gate, skipped, stop) = (self.gate.clone(), self.skipped.clone(), self.stop.clone());
        let select = format!("SELECT id, version FROM {}.orders", self.schema);
        tokio::spawn(async move {
            let mut copied: HashMap<i64, i32> = HashMap::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                let _open = tokio::select! {
                    _ = stop.cancelled() => return,
                    open = gate.lock() => open,
                };
                let rows = match pg.query(select.as_str(), &[]).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        eprintln!("worker: reading orders: {e}");
                        continue;
                    }
                };
                let todo: Vec<(i64, i32)> = {
                    let skipped = skipped.lock().expect("skip list");
                    rows.iter()
                        .map(|row| (row.get::<_, i64>(0), row.get::<_, i32>(1)))
                        .filter(|(id, version)| {
                            copied.get(id) != Some(version) && !skipped.contains(id)
                        })
                        .collect()
                };
                if todo.is_empty() {
                    continue;
                }
                let upsert = my
                    .exec_batch(
                        "INSERT INTO invoices (order_id, order_version) VALUES (?, ?)
                         ON DUPLICATE KEY UPDATE order_version = VALUES(order_version)",
                        todo.iter().copied(),
                    )
                    .await;
                match upsert {
                    Ok(()) => copied.extend(todo),
                    Err(e) => eprintln!("worker: upserting invoices: {e}"),
                }
            }
        });
    }

    /// Pauses the worker; returns once no copy is in progress and none will start.
    async fn pause(&self) {
        let held = self.gate.clone().lock_owned().await;
        *self.paused.lock().await = Some(held);
    }

    async fn resume(&self) {
        self.paused.lock().await.take();
    }

    /// From now on the worker never copies order `id`, and keeps copying the others.
    fn skip(&self, id: i64) {
        self.skipped.lock().expect("skip list").insert(id);
    }

    /// Inserts the next order (version 1); returns its id.
    async fn insert_order(&self) -> i64 {
        insert_order(&self.pg, &self.schema, &self.next_id).await
    }

    /// Inserts one order every `every` until the token is cancelled.
    async fn keep_inserting(&self, every: Duration) -> CancellationToken {
        let stop = self.stop.child_token();
        let (pg, schema, next_id, token) = (
            connect(SHARED_PG_DSN).await,
            self.schema.clone(),
            self.next_id.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                insert_order(&pg, &schema, &next_id).await;
            }
        });
        stop
    }

    /// The source's clock, unix seconds.
    async fn pg_now(&self) -> f64 {
        self.pg
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .expect("clock_timestamp")
            .get(0)
    }

    /// When order `id` last changed, unix seconds on the source's clock.
    async fn changed_at(&self, id: i64) -> f64 {
        self.pg
            .query_one(
                format!(
                    "SELECT extract(epoch FROM changed_at)::float8 FROM {}.orders WHERE id = $1",
                    self.schema
                )
                .as_str(),
                &[&id],
            )
            .await
            .expect("changed_at")
            .get(0)
    }

    /// The truth, from both databases: `changed_at` (unix seconds) of every order that
    /// `invoices` does not show at its version or later, oldest first. The derived side is
    /// read after the source, so an order copied in between reads as copied.
    async fn uncopied(&self) -> Vec<(i64, f64)> {
        let orders = self
            .pg
            .query(
                format!(
                    "SELECT id, version, extract(epoch FROM changed_at)::float8
                     FROM {}.orders ORDER BY changed_at",
                    self.schema
                )
                .as_str(),
                &[],
            )
            .await
            .expect("orders");
        let invoices: Vec<(i64, i32)> = self
            .my
            .lock()
            .await
            .query("SELECT order_id, order_version FROM invoices")
            .await
            .expect("invoices");
        let invoices: HashMap<i64, i32> = invoices.into_iter().collect();
        orders
            .iter()
            .filter(|row| {
                invoices
                    .get(&row.get::<_, i64>(0))
                    .is_none_or(|version| *version < row.get::<_, i32>(1))
            })
            .map(|row| (row.get(0), row.get(2)))
            .collect()
    }

    /// `changed_at` of the oldest uncopied order, if any.
    async fn oldest_uncopied(&self) -> Option<f64> {
        self.uncopied().await.first().map(|(_, at)| *at)
    }

    /// Waits until `invoices` shows every order (the worker has caught up).
    async fn wait_copied(&self) {
        wait_for("the worker to copy every order", PATIENCE, || async {
            self.uncopied().await.is_empty().then_some(())
        })
        .await;
    }

    /// Waits until `invoices` shows every order but `id`, which it must not show.
    async fn wait_copied_except(&self, id: i64) {
        let uncopied = wait_for(
            "the worker to copy every order but one",
            PATIENCE,
            || async {
                let uncopied = self.uncopied().await;
                (uncopied.len() == 1).then_some(uncopied)
            },
        )
        .await;
        assert_eq!(uncopied[0].0, id);
        assert!(
            self.next_id.load(Ordering::SeqCst) > id + 5,
            "orders kept arriving after the skipped one"
        );
    }

    async fn on_mariadb(&self, sql: &str) {
        self.my
            .lock()
            .await
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn drop_all(self) {
        self.stop.cancel();
        let _ = self
            .pg
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
        let _ = self
            .my
            .lock()
            .await
            .query_drop(format!("DROP DATABASE {}", self.db))
            .await;
    }
}

async fn mysql_conn(db: &str) -> Conn {
    Conn::from_url(format!("{MARIADB}/{db}"))
        .await
        .unwrap_or_else(|e| panic!("MariaDB at 127.0.0.1:3306 must be running for this test: {e}"))
}

async fn insert_order(pg: &Client, schema: &str, next_id: &AtomicI64) -> i64 {
    let id = next_id.fetch_add(1, Ordering::SeqCst);
    pg.execute(
        format!("INSERT INTO {schema}.orders (id, version) VALUES ($1, 1)").as_str(),
        &[&id],
    )
    .await
    .expect("insert order");
    id
}

/// One snapshot of the probe through the API: its last run and its `reconcile` object.
#[derive(Debug)]
struct Run {
    runs: u64,
    up: bool,
    lag: f64,
    /// When the run ended (unix seconds, daemon clock) and how long it took.
    ended: f64,
    duration: f64,
    missing: u64,
    stale: u64,
    extra: Option<u64>,
    not_visible: u64,
    sweeps_completed: Option<u64>,
    /// When the last sweep completed (unix seconds, daemon clock).
    sweep_last_completed: Option<f64>,
    sweep_last_rows: Option<u64>,
    /// (kind, key) of the sample of mismatches.
    sample: Vec<(String, String)>,
}

impl Run {
    /// The interval the reading's source-clock instant lies in: within the run.
    fn taken(&self) -> (f64, f64) {
        (self.ended - self.duration, self.ended)
    }
}

/// The probe's last run; waits for its first success (and panics if it is not fresh then).
async fn last_run(daemon: &Daemon, budget: &str) -> Run {
    let first = poll_until(PATIENCE, || async {
        let probe = daemon.probe(budget, PROBE).await;
        (!probe["last_success"].is_null()).then_some(())
    })
    .await;
    let probe = daemon.probe(budget, PROBE).await;
    assert!(
        first.is_some(),
        "a first success within {PATIENCE:?}: {probe:#}"
    );
    let parse = |probe: &Value| -> Option<Run> {
        let reconcile = &probe["reconcile"];
        let mismatches = &reconcile["mismatches"];
        let ended = unix_time(&probe["last_run"])?;
        Some(Run {
            runs: probe["runs"].as_u64()?,
            up: probe["up"].as_bool()?,
            lag: probe["lag_seconds"].as_f64()?,
            ended,
            duration: probe["last_duration_seconds"].as_f64()?,
            missing: mismatches["missing"].as_u64()?,
            stale: mismatches["stale"].as_u64()?,
            extra: mismatches["extra"].as_u64(),
            not_visible: reconcile["not_visible"].as_u64()?,
            sweeps_completed: reconcile["sweep"]["completed"].as_u64(),
            sweep_last_completed: unix_time(&reconcile["sweep"]["last_completed"]),
            sweep_last_rows: reconcile["sweep"]["last_rows"].as_u64(),
            sample: reconcile["sample"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .map(|k| {
                            (
                                k["kind"].as_str().unwrap_or("?").to_owned(),
                                k["key"].as_str().unwrap_or("?").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    };
    parse(&probe).unwrap_or_else(|| panic!("a fresh reconcile probe that ran: {probe:#}"))
}

/// An RFC 3339 time of the API as unix seconds.
fn unix_time(value: &Value) -> Option<f64> {
    let at = time::OffsetDateTime::parse(
        value.as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e9)
}

/// The first run after `from` runs at least `more` runs later.
async fn run_after(daemon: &Daemon, budget: &str, from: u64, more: u64) -> Run {
    wait_for(
        &format!("{budget}/{PROBE} to run {more} more times after run {from}"),
        PATIENCE,
        || async {
            let run = last_run(daemon, budget).await;
            (run.runs >= from + more).then_some(run)
        },
    )
    .await
}

fn labels(budget: &str) -> [(&str, &str); 2] {
    [("budget", budget), ("probe", PROBE)]
}

fn gauge(metrics: &Metrics, name: &str, budget: &str) -> Option<f64> {
    metrics.get(name, &labels(budget))
}

fn lag(metrics: &Metrics, budget: &str) -> Option<f64> {
    gauge(metrics, "lagbudget_lag_seconds", budget)
}

fn mismatches(metrics: &Metrics, budget: &str, kind: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_reconcile_mismatches",
        &[("budget", budget), ("probe", PROBE), ("kind", kind)],
    )
}

/// (rows read, statements) on `side` so far.
fn load(metrics: &Metrics, budget: &str, side: &str) -> (f64, f64) {
    let labels = [("budget", budget), ("probe", PROBE), ("side", side)];
    let get = |name: &str| {
        metrics
            .get(name, &labels)
            .unwrap_or_else(|| panic!("{name}{{side={side}}} for {budget}:\n{}", metrics.text))
    };
    (
        get("lagbudget_reconcile_rows_read_total"),
        get("lagbudget_reconcile_statements_total"),
    )
}

/// Waits for a scrape with the probe up, lag 0 and no mismatch of any kind exported.
async fn wait_all_matched(daemon: &Daemon, budget: &str, kinds: &[&str]) -> Metrics {
    daemon
        .wait_for_metrics(
            &format!("{budget}: up, lag 0 and no mismatches"),
            PATIENCE,
            |m| {
                gauge(m, "lagbudget_probe_up", budget) == Some(1.0)
                    && lag(m, budget) == Some(0.0)
                    && kinds.iter().all(|k| mismatches(m, budget, k) == Some(0.0))
            },
        )
        .await
}

/// Asserts that `lag` is the age of a record changed at `changed_at` as `run` read it, within
/// `tolerance` beyond the run's own span; returns how far it was from the run's end.
fn assert_age(what: &str, run: &Run, changed_at: f64, tolerance: f64) -> f64 {
    let (from, to) = run.taken();
    let (low, high) = (from - changed_at, to - changed_at);
    assert!(
        run.lag >= low - tolerance && run.lag <= high + tolerance,
        "{what}: lag {:.3} s, but the record was {low:.3}..{high:.3} s old during the run \
         (tolerance {tolerance} s): {run:?}",
        run.lag
    );
    run.lag - high
}

/// Acceptance 1: the worker paused for 10 s while orders keep arriving ⇒ lag within ±1 s of
/// the age of the oldest order `invoices` does not show (at the instant the run read it);
/// resumed ⇒ lag 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_reads_as_the_age_of_the_oldest_uncopied_order() {
    let shop = Shop::create().await;
    for _ in 0..5 {
        shop.insert_order().await;
    }
    let budget = unique("rec_pause");
    let daemon = Daemon::start(&shop.config(&budget, "60s", "")).await;
    shop.wait_copied().await;
    wait_all_matched(&daemon, &budget, &["missing", "stale"]).await;

    shop.pause().await;
    let paused_at = shop.pg_now().await;
    let inserting = shop.keep_inserting(Duration::from_millis(500)).await;
    // Injects lag: the worker stays paused until a run reads a lag of 9 s; the readings
    // below come at least two runs later, from about 10 s on.
    daemon
        .wait_for_metrics(
            "lag of 9 s while the worker is paused",
            Duration::from_secs(60),
            |m| lag(m, &budget).is_some_and(|l| l >= 9.0),
        )
        .await;
    let oldest = shop
        .oldest_uncopied()
        .await
        .expect("orders arrived while paused");
    assert!(
        oldest >= paused_at,
        "every order before the pause was copied"
    );
    for _ in 0..3 {
        // Clock-independent bracket: the PostgreSQL clock before a run started and after it
        // ended (run `from + 2` started after run `from + 1` ended, which is after `before`).
        let before = shop.pg_now().await;
        let from = daemon.runs(&budget, PROBE).await;
        let run = run_after(&daemon, &budget, from, 2).await;
        let after = shop.pg_now().await;
        assert!(run.up, "{run:?}");
        assert_eq!(
            shop.oldest_uncopied().await,
            Some(oldest),
            "the oldest uncopied order stays while paused"
        );
        let off = assert_age("paused worker", &run, oldest, LAG_TOLERANCE);
        assert!(
            run.lag >= before - oldest - LAG_TOLERANCE && run.lag <= after - oldest + LAG_TOLERANCE,
            "lag {:.3} s outside the PostgreSQL clock's bracket {:.3}..{:.3} s",
            run.lag,
            before - oldest,
            after - oldest
        );
        eprintln!(
            "paused: lag {:.3} s, oldest uncopied {:.3} s old at the run's end ({off:+.3} s), \
             run took {:.3} s",
            run.lag,
            run.ended - oldest,
            run.duration
        );
        assert!(
            run.lag >= 10.0 - LAG_TOLERANCE,
            "paused about 10 s: {run:?}"
        );
        // Every uncopied order the run could see, bar those committed while it read (the
        // newest, within half a second of its instant).
        let uncopied = shop.uncopied().await;
        let at = oldest + run.lag;
        let seen = |by: f64| uncopied.iter().filter(|(_, t)| *t <= by).count() as u64;
        assert!(
            (seen(at - 0.5)..=seen(at)).contains(&run.not_visible),
            "not visible {}, but {}..={} uncopied orders existed then",
            run.not_visible,
            seen(at - 0.5),
            seen(at)
        );
    }

    inserting.cancel();
    shop.resume().await;
    shop.wait_copied().await;
    let metrics = wait_all_matched(&daemon, &budget, &["missing", "stale"]).await;
    assert_eq!(
        gauge(&metrics, "lagbudget_backlog_rows", &budget),
        Some(0.0)
    );
    let run = last_run(&daemon, &budget).await;
    assert_eq!(
        (run.lag, run.not_visible, run.missing),
        (0.0, 0, 0),
        "{run:?}"
    );
    daemon.stop().await;
    shop.drop_all().await;
}

/// Acceptance 2: one order skipped for good while the worker keeps copying the others ⇒ its
/// lag keeps growing with the time that passes, and once it is older than max_lag it is
/// counted as missing (exactly one) and the API's sample names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_order_keeps_growing_and_is_missing_once_older_than_max_lag() {
    const MAX_LAG: f64 = 4.0;
    let shop = Shop::create().await;
    for _ in 0..3 {
        shop.insert_order().await;
    }
    let budget = unique("rec_skip");
    let daemon = Daemon::start(&shop.config(&budget, "4s", "          sample_keys: 5\n")).await;
    shop.wait_copied().await;
    wait_all_matched(&daemon, &budget, &["missing", "stale"]).await;
    let inserting = shop.keep_inserting(Duration::from_millis(300)).await;

    let skipped = shop.next_id.fetch_add(1, Ordering::SeqCst);
    shop.skip(skipped);
    shop.pg
        .execute(
            format!(
                "INSERT INTO {}.orders (id, version) VALUES ($1, 1)",
                shop.schema
            )
            .as_str(),
            &[&skipped],
        )
        .await
        .expect("insert the skipped order");
    let changed_at = shop.changed_at(skipped).await;

    // Two successive readings, at least 1.5 s apart, grow by the time between them.
    let first = wait_for(
        "a run that sees the skipped order 1 s old",
        PATIENCE,
        || async {
            let run = last_run(&daemon, &budget).await;
            (run.lag >= 1.0).then_some(run)
        },
    )
    .await;
    assert_age("skipped order", &first, changed_at, LAG_TOLERANCE);
    let second = wait_for("a run 1.5 s later", PATIENCE, || async {
        let run = last_run(&daemon, &budget).await;
        (run.runs > first.runs && run.ended - first.ended >= 1.5).then_some(run)
    })
    .await;
    assert_age("skipped order", &second, changed_at, LAG_TOLERANCE);
    let (grew, elapsed) = (second.lag - first.lag, second.ended - first.ended);
    // Each reading's instant lies within its run: the growth is the time between the runs'
    // ends within both runs' durations (and 0.25 s for timestamps' rounding).
    let slack = first.duration + second.duration + 0.25;
    assert!(
        (grew - elapsed).abs() <= slack,
        "lag grew {grew:.3} s in {elapsed:.3} s (slack {slack:.3} s): {first:?} then {second:?}"
    );
    eprintln!("skipped: lag grew {grew:.3} s in {elapsed:.3} s");

    // Missing exactly once it is older than max_lag; never before.
    let counted = wait_for("the skipped order counted as missing", PATIENCE, || async {
        let run = last_run(&daemon, &budget).await;
        assert_eq!(run.stale, 0, "{run:?}");
        let age_at_end = run.ended - changed_at;
        if run.missing == 0 {
            assert!(
                age_at_end <= MAX_LAG + run.duration + 0.25,
                "older than max_lag at the run and not missing: {run:?}"
            );
            return None;
        }
        Some(run)
    })
    .await;
    assert_eq!(counted.missing, 1, "{counted:?}");
    assert!(
        counted.lag > MAX_LAG && counted.ended - changed_at > MAX_LAG,
        "missing only once older than max_lag: {counted:?}"
    );
    assert_eq!(
        counted.sample,
        vec![("missing".to_owned(), skipped.to_string())],
        "the sample names the skipped order"
    );
    let metrics = daemon
        .wait_for_metrics("missing = 1 exported", PATIENCE, |m| {
            mismatches(m, &budget, "missing") == Some(1.0)
        })
        .await;
    assert_eq!(mismatches(&metrics, &budget, "stale"), Some(0.0));
    assert_eq!(
        mismatches(&metrics, &budget, "extra"),
        None,
        "no extra without derived_query"
    );

    // The worker keeps going: orders after the skipped one are copied, and the count stays 1
    // while the lag keeps growing.
    let mut previous = counted;
    for _ in 0..3 {
        let run = run_after(&daemon, &budget, previous.runs, 1).await;
        assert_eq!((run.missing, run.stale), (1, 0), "{run:?}");
        assert!(run.lag > previous.lag, "{previous:?} then {run:?}");
        assert_age("skipped order", &run, changed_at, LAG_TOLERANCE);
        previous = run;
    }
    inserting.cancel();
    shop.wait_copied_except(skipped).await;
    daemon.stop().await;
    shop.drop_all().await;
}

/// Acceptance 3: an invoice at an older version than its order ⇒ stale = 1; an invoice with
/// no order ⇒ extra = 1, found by the derived sweep and counted once it has been seen longer
/// than max_lag; neither counted before max_lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_is_stale_and_an_invoice_without_order_is_extra() {
    const MAX_LAG: f64 = 2.0;
    let shop = Shop::create().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(shop.insert_order().await);
    }
    let budget = unique("rec_stale");
    let extra = format!("          sample_keys: 10\n{}", shop.sweep("1s", 1000, 10));
    let daemon = Daemon::start(&shop.config(&budget, "2s", &extra)).await;
    shop.wait_copied().await;
    wait_all_matched(&daemon, &budget, &["missing", "stale", "extra"]).await;

    // The worker misses the update of one order: its invoice stays at version 1.
    let stale_id = ids[1];
    shop.skip(stale_id);
    shop.pg
        .execute(
            format!(
                "UPDATE {}.orders SET version = 2, changed_at = clock_timestamp() WHERE id = $1",
                shop.schema
            )
            .as_str(),
            &[&stale_id],
        )
        .await
        .expect("update order");
    let updated_at = shop.changed_at(stale_id).await;
    // An invoice whose order never existed (or was deleted at the source).
    let extra_id = 1_000_000_i64;
    let extra_inserted = lagbudget::clock::unix_now();
    shop.on_mariadb(&format!(
        "INSERT INTO invoices (order_id, order_version) VALUES ({extra_id}, 1)"
    ))
    .await;

    let both = wait_for("stale = 1 and extra = 1", PATIENCE, || async {
        let run = last_run(&daemon, &budget).await;
        assert_eq!(run.missing, 0, "{run:?}");
        if run.stale > 0 {
            assert!(
                run.ended - updated_at > MAX_LAG,
                "stale before max_lag: {run:?}"
            );
        }
        if run.extra.unwrap_or(0) > 0 {
            assert!(
                run.ended - extra_inserted > MAX_LAG,
                "extra before it was seen for max_lag: {run:?}"
            );
        }
        (run.stale > 0 && run.extra.unwrap_or(0) > 0).then_some(run)
    })
    .await;
    assert_eq!((both.stale, both.extra), (1, Some(1)), "{both:?}");
    assert_eq!(
        both.not_visible, 1,
        "only the stale order is a source record not visible"
    );
    let mut sample = both.sample.clone();
    sample.sort();
    assert_eq!(
        sample,
        vec![
            ("extra".to_owned(), extra_id.to_string()),
            ("stale".to_owned(), stale_id.to_string())
        ]
    );
    // Stable over the next runs (and sweeps), in the metrics too.
    daemon
        .watch_runs((&budget, PROBE), 3, PATIENCE, |m| {
            assert_eq!(gauge(m, "lagbudget_probe_up", &budget), Some(1.0));
            assert_eq!(mismatches(m, &budget, "missing"), Some(0.0));
            assert_eq!(mismatches(m, &budget, "stale"), Some(1.0));
            assert_eq!(mismatches(m, &budget, "extra"), Some(1.0));
        })
        .await;
    let run = last_run(&daemon, &budget).await;
    assert!(
        run.sweeps_completed.unwrap_or(0) >= 2,
        "the sweep runs every second: {run:?}"
    );
    // The stale order is the oldest thing not visible (the extra invoice came later).
    assert_age("stale order", &run, updated_at, LAG_TOLERANCE);
    daemon.stop().await;
    shop.drop_all().await;
}

/// A derived record the sweep saw before its source record existed (written and copied
/// between the sweep's source and derived reads, or derived first) is extra only until the
/// recent pass reads its source record, not until the next sweep (here an hour away): it is
/// never counted once the order exists, and the lag stays 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_whose_order_arrives_after_the_sweep_saw_it_is_not_extra() {
    const MAX_LAG: f64 = 2.0;
    let shop = Shop::create().await;
    for _ in 0..3 {
        shop.insert_order().await;
    }
    shop.wait_copied().await;
    let early_id = 1_000_i64;
    shop.on_mariadb(&format!(
        "INSERT INTO invoices (order_id, order_version) VALUES ({early_id}, 1)"
    ))
    .await;
    let budget = unique("rec_early");
    let extra = format!("          sample_keys: 10\n{}", shop.sweep("1h", 1000, 10));
    let daemon = Daemon::start(&shop.config(&budget, "2s", &extra)).await;
    let swept = wait_for("the first sweep", PATIENCE, || async {
        let run = last_run(&daemon, &budget).await;
        (run.sweeps_completed == Some(1)).then_some(run)
    })
    .await;
    let seen_at = swept.sweep_last_completed.expect("last sweep time");
    shop.pg
        .execute(
            format!(
                "INSERT INTO {}.orders (id, version) VALUES ($1, 1)",
                shop.schema
            )
            .as_str(),
            &[&early_id],
        )
        .await
        .expect("the order arrives");
    let from = daemon.runs(&budget, PROBE).await;
    // Every run that started after the order arrived (from + 2 on), until well past the time
    // the sweep's sighting became older than max_lag.
    let mut watched = 0;
    loop {
        let run = run_after(&daemon, &budget, from, 2 + watched).await;
        assert_eq!(run.sweeps_completed, Some(1), "no other sweep: {run:?}");
        assert_eq!(
            (run.extra, run.missing, run.stale, run.lag),
            (Some(0), 0, 0, 0.0),
            "the order exists and its invoice shows it: {run:?}"
        );
        watched += 1;
        if watched >= 3 && run.ended - seen_at > MAX_LAG + 1.0 {
            break;
        }
    }
    daemon.stop().await;
    shop.drop_all().await;
}

/// Acceptance 4: records younger than max_lag are in flight, never missing. With the worker
/// paused and an order arriving every 500 ms, every run counts as missing exactly the uncopied
/// orders older than max_lag at its source-clock instant (which the lag gives: the oldest
/// uncopied order's change time plus the lag), so 0 in every run before the oldest reaches
/// max_lag, and the first ones after it, one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_younger_than_max_lag_are_never_missing() {
    const MAX_LAG: f64 = 8.0;
    // Orders whose age is this close to max_lag at the run may be counted either way.
    const EDGE: f64 = 0.05;
    let shop = Shop::create().await;
    shop.insert_order().await;
    let budget = unique("rec_young");
    let daemon = Daemon::start(&shop.config(&budget, "8s", "")).await;
    shop.wait_copied().await;
    wait_all_matched(&daemon, &budget, &["missing", "stale"]).await;
    shop.pause().await;
    let inserting = shop.keep_inserting(Duration::from_millis(500)).await;

    let (mut young_runs, mut old_runs, mut seen) = (0, 0, 0u64);
    let started = Instant::now();
    while old_runs < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "timed out watching runs ({young_runs} before max_lag, {old_runs} after)"
        );
        let run = last_run(&daemon, &budget).await;
        if run.runs == seen {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        seen = run.runs;
        assert!(run.up, "{run:?}");
        if run.lag == 0.0 {
            // Before the first order after the pause.
            assert_eq!(
                (run.missing, run.stale, run.not_visible),
                (0, 0, 0),
                "{run:?}"
            );
            continue;
        }
        let uncopied = shop.uncopied().await;
        let oldest = uncopied.first().expect("uncopied orders").1;
        // The run's instant on the source's clock.
        let at = oldest + run.lag;
        let older_than = |age: f64| uncopied.iter().filter(|(_, t)| at - t > age).count() as u64;
        let (least, most) = (older_than(MAX_LAG + EDGE), older_than(MAX_LAG - EDGE));
        assert!(
            (least..=most).contains(&run.missing),
            "missing {} but {least}..={most} uncopied orders were older than max_lag: {run:?}",
            run.missing
        );
        assert_eq!(run.stale, 0, "{run:?}");
        if run.lag < MAX_LAG {
            assert_eq!(run.missing, 0, "{run:?}");
            young_runs += 1;
        } else if run.lag > MAX_LAG + EDGE {
            old_runs += 1;
            eprintln!(
                "young: run at lag {:.3} s counts {} missing of {} not visible",
                run.lag, run.missing, run.not_visible
            );
        }
    }
    eprintln!("young: {young_runs} runs before max_lag with nothing missing");
    assert!(
        young_runs >= 4,
        "watched {young_runs} runs before the oldest order reached max_lag"
    );
    inserting.cancel();
    shop.resume().await;
    shop.wait_copied().await;
    wait_all_matched(&daemon, &budget, &["missing", "stale"]).await;
    daemon.stop().await;
    shop.drop_all().await;
}

/// Acceptance 5: everything copied and nothing changing for 20 s ⇒ lag 0 and no mismatch of
/// any kind in every run of that time, with the recent pass and a sweep (over several runs,
/// three rows a chunk) reading both sides all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_all_copied_reads_zero_in_every_run() {
    let shop = Shop::create().await;
    for _ in 0..12 {
        shop.insert_order().await;
    }
    let budget = unique("rec_idle");
    let daemon = Daemon::start(&shop.config(&budget, "5s", &shop.sweep("2s", 3, 2))).await;
    shop.wait_copied().await;
    let kinds = ["missing", "stale", "extra"];
    wait_all_matched(&daemon, &budget, &kinds).await;
    let swept = wait_for("a completed sweep", PATIENCE, || async {
        let run = last_run(&daemon, &budget).await;
        (run.sweeps_completed.unwrap_or(0) >= 1).then_some(run)
    })
    .await;
    assert_eq!(
        swept.sweep_last_rows,
        Some(12),
        "the sweep covers every order: {swept:?}"
    );

    let first = daemon.metrics().await;
    let (source_rows, source_statements) = load(&first, &budget, "source");
    let (derived_rows, derived_statements) = load(&first, &budget, "derived");
    let from = daemon.runs(&budget, PROBE).await;
    let started = Instant::now();
    let mut scrapes = 0;
    let (last, runs) = loop {
        let runs = daemon.runs(&budget, PROBE).await;
        let metrics = daemon.metrics().await;
        let get = |name: &str| gauge(&metrics, name, &budget);
        assert_eq!(get("lagbudget_probe_up"), Some(1.0), "up at run {runs}");
        assert_eq!(lag(&metrics, &budget), Some(0.0), "lag at run {runs}");
        assert_eq!(
            get("lagbudget_backlog_rows"),
            Some(0.0),
            "backlog at run {runs}"
        );
        for kind in kinds {
            assert_eq!(
                mismatches(&metrics, &budget, kind),
                Some(0.0),
                "{kind} at run {runs}"
            );
        }
        scrapes += 1;
        if started.elapsed() >= Duration::from_secs(20) && runs >= from + 10 {
            break (metrics, runs - from);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {} runs in 90 s",
            runs - from
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (source_rows_now, source_statements_now) = load(&last, &budget, "source");
    let (derived_rows_now, derived_statements_now) = load(&last, &budget, "derived");
    assert!(
        source_rows_now > source_rows && derived_rows_now > derived_rows,
        "rows read grow on both sides: source {source_rows} -> {source_rows_now}, derived \
         {derived_rows} -> {derived_rows_now}"
    );
    assert!(
        source_statements_now >= source_statements + runs as f64
            && derived_statements_now > derived_statements,
        "statements grow on both sides (at least one source statement a run): source \
         {source_statements} -> {source_statements_now}, derived {derived_statements} -> \
         {derived_statements_now} in {runs} runs"
    );
    let run = last_run(&daemon, &budget).await;
    assert!(
        run.sweeps_completed.unwrap_or(0) >= swept.sweeps_completed.unwrap_or(0) + 3,
        "sweeps kept completing while idle: {swept:?} then {run:?}"
    );
    assert_eq!(run.sweep_last_rows, Some(12));
    eprintln!("idle: {runs} runs, {scrapes} scrapes, all zero");
    daemon.stop().await;
    shop.drop_all().await;
}
