//! A `reconcile` sweep of 1,000,000 source rows (a bench binary, not a timed test):
//! `cargo bench --bench reconcile_sweep`.
//!
//! The source of truth is a table of 1,000,000 orders in the machine's PostgreSQL
//! (127.0.0.1:5432, database `test`); the derived view a table of invoices in a database of
//! its own on the machine's MariaDB (127.0.0.1:3306), with 100 invoices missing, 100 at an
//! older version (stale) and 100 without an order (extra), spread over the whole key range.
//! Every order changed two hours ago, so the recent pass finds nothing and only the sweep can
//! find the mismatches.
//!
//! It runs the daemon binary as a process of its own, with one `reconcile` probe (interval
//! 1 s, chunk 5,000, 10 chunks per run at most), polls `/api/v1/budgets/<budget>` and
//! `/metrics` until the first sweep completed, and prints: the sweep's wall time and rows per
//! second, statements and rows per run on each side, run durations, the daemon's peak
//! resident memory (`VmHWM`), the rows read per second on each side as the daemon counts them
//! and as each database counts them (PostgreSQL `pg_stat_user_tables`, MariaDB
//! `information_schema.TABLE_STATISTICS` with `userstat` switched on for the bench and back
//! off after it), and the mismatches found, which must be exactly those injected (the bench
//! panics otherwise). Twice: with the derived side's own sweep (`derived_query`), and with
//! lookups of each chunk's keys (`IN (…)` of 5,000 keys); then with the derived side's sweep
//! and `chunks_per_run: 1000` (the maximum), so that only the time bound (half the run's
//! timeout, here 0.5 s) ends a run's chunks: the fastest one probe sweeps.
//!
//! Tables and the database are dropped at the end; skipped with a message if PostgreSQL or
//! MariaDB is not reachable.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

const PG_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const MY_URL: &str = "mysql://root@127.0.0.1:3306";
/// Source rows; keys are the even numbers 2..=2 × ROWS, so that extra keys (odd) fall between
/// them.
const ROWS: u64 = 1_000_000;
/// Every 10,000th order has no invoice, every 10,000th (offset 5,000) an invoice of an older
/// version, and an odd key after every 10,000th (offset 2,500) an invoice without an order.
const EVERY: u64 = 10_000;
const INJECTED: u64 = ROWS / EVERY;
const CHUNK: u64 = 5_000;
const CHUNKS_PER_RUN: u64 = 10;
const MAX_LAG_SECONDS: u64 = 5;
const POLL: Duration = Duration::from_millis(50);
/// Bound on one sweep: far above what it takes on a loaded 2-core machine.
const SWEEP_LIMIT: Duration = Duration::from_secs(600);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `GET path` over HTTP/1.0; the body, or `None` if the daemon does not answer (yet).
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}

struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
}

impl Daemon {
    fn start(yaml: &str, name: &str) -> Daemon {
        let dir =
            std::env::temp_dir().join(format!("lagbudget-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let config = dir.join("bench.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
            .args(["--log.level", "error", "run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn daemon");
        Daemon { child, dir }
    }

    /// A field of `/proc/<pid>/status` in kB.
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("daemon status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the series of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// Rows read and statements on one side, as the daemon counts them.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    rows: f64,
    statements: f64,
}

fn counted(text: &str, side: &str) -> Counted {
    let side = format!("side=\"{side}\"");
    let labels = ["budget=\"invoiced\"", side.as_str()];
    Counted {
        rows: metric(text, "lagbudget_reconcile_rows_read_total", &labels).unwrap_or(0.0),
        statements: metric(text, "lagbudget_reconcile_statements_total", &labels).unwrap_or(0.0),
    }
}

/// The probe's object in `/api/v1/budgets/invoiced`.
fn probe(port: u16) -> Option<serde_json::Value> {
    let body = get(port, "/api/v1/budgets/invoiced")?;
    let budget: serde_json::Value = serde_json::from_str(&body).ok()?;
    budget["probes"].as_array()?.first().cloned()
}

/// What the databases count for the bench's tables.
#[derive(Debug, Clone, Copy, Default)]
struct DbReads {
    /// PostgreSQL: seq_tup_read + idx_tup_fetch of the orders table, and its scans.
    pg_rows: i64,
    pg_scans: i64,
    /// MariaDB: ROWS_READ of the invoices table (userstat).
    my_rows: u64,
}

struct Services {
    pg: tokio_postgres::Client,
    my: mysql_async::Conn,
    table: String,
    database: String,
    _cleanup: Cleanup,
}

impl Services {
    async fn reads(&mut self) -> DbReads {
        let row = self
            .pg
            .query_one(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0), \
                        coalesce(seq_scan, 0) + coalesce(idx_scan, 0) \
                 FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = $1",
                &[&self.table],
            )
            .await
            .expect("pg_stat_user_tables");
        let my_rows: Option<u64> = self
            .my
            .exec_first(
                "SELECT ROWS_READ FROM information_schema.TABLE_STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'invoices'",
                (self.database.as_str(),),
            )
            .await
            .expect("TABLE_STATISTICS");
        DbReads {
            pg_rows: row.get(0),
            pg_scans: row.get(1),
            my_rows: my_rows.unwrap_or(0),
        }
    }
}

/// Drops the bench's table and database and puts `userstat` back when dropped, also when the
/// bench panics (on a thread of its own: it may be dropped inside the runtime).
struct Cleanup {
    table: String,
    database: String,
    userstat_was: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let table = self.table.clone();
        let database = self.database.clone();
        let userstat = self.userstat_was.clone();
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (pg, connection) = tokio_postgres::connect(PG_DSN, tokio_postgres::NoTls)
                    .await
                    .expect("PostgreSQL");
                tokio::spawn(connection);
                pg.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                    .await
                    .expect("drop table");
                let mut my = mysql_async::Conn::from_url(MY_URL).await.expect("MariaDB");
                my.query_drop(format!("DROP DATABASE IF EXISTS {database}"))
                    .await
                    .expect("drop database");
                my.query_drop(format!("SET GLOBAL userstat = {userstat}"))
                    .await
                    .expect("restore userstat");
                let _ = my.disconnect().await;
            });
        })
        .join();
        match cleaned {
            Ok(()) => println!(
                "\ncleaned up: dropped {}, database {}, userstat back to {}",
                self.table, self.database, self.userstat_was
            ),
            Err(_) => eprintln!(
                "cleanup failed: drop table {} (PostgreSQL test) and database {} (MariaDB) by hand",
                self.table, self.database
            ),
        }
    }
}

async fn setup() -> Services {
    let (pg, connection) = tokio_postgres::connect(PG_DSN, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {PG_DSN}: {e}"));
    tokio::spawn(connection);
    let mut my = mysql_async::Conn::from_url(MY_URL)
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {MY_URL}: {e}"));
    let id = std::process::id();
    let table = format!("lb_sweep_orders_{id}");
    let database = format!("lb_sweep_{id}");
    let userstat_was: String = my
        .query_first("SELECT @@GLOBAL.userstat")
        .await
        .expect("userstat")
        .expect("a row");
    // From here on, whatever happens, the table and database go and userstat is put back.
    let cleanup = Cleanup {
        table: table.clone(),
        database: database.clone(),
        userstat_was: userstat_was.clone(),
    };

    let filled = Instant::now();
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, version bigint NOT NULL,
                               changed_at timestamptz NOT NULL, customer_id bigint NOT NULL,
                               total numeric(12, 2) NOT NULL);
         INSERT INTO {table}
           SELECT 2 * n, 1 + n % 7, now() - interval '2 hours', n % 9973, (n % 100000) / 100.0
           FROM generate_series(1, {ROWS}) AS n;
         CREATE INDEX ON {table} (changed_at);"
    ))
    .await
    .expect("orders");
    // On its own: VACUUM cannot run in the implicit transaction of a multi-statement query.
    pg.batch_execute(&format!("VACUUM ANALYZE {table}"))
        .await
        .expect("vacuum");
    let pg_seconds = filled.elapsed().as_secs_f64();

    let filled = Instant::now();
    for statement in [
        "SET GLOBAL userstat = 1".to_owned(),
        format!("CREATE DATABASE {database}"),
        format!(
            "CREATE TABLE {database}.invoices (order_id bigint PRIMARY KEY, \
             order_version bigint NOT NULL, amount decimal(12, 2) NOT NULL, \
             issued_at datetime(6) NOT NULL) ENGINE = InnoDB"
        ),
        // The derived view of every order but every 10,000th (missing)...
        format!(
            "INSERT INTO {database}.invoices \
             SELECT 2 * seq, 1 + seq % 7, (seq % 100000) / 100.0, NOW(6) - INTERVAL 1 HOUR \
             FROM test.seq_1_to_{ROWS} WHERE seq % {EVERY} <> 0"
        ),
        // ... every 10,000th at offset 5,000 one version behind (stale)...
        format!(
            "UPDATE {database}.invoices SET order_version = order_version - 1 \
             WHERE order_id % {} = {}",
            2 * EVERY,
            EVERY
        ),
        // ... and an invoice of no order after every 10,000th at offset 2,500 (extra).
        format!(
            "INSERT INTO {database}.invoices \
             SELECT 2 * seq + 1, 1, 0, NOW(6) - INTERVAL 1 HOUR \
             FROM test.seq_1_to_{ROWS} WHERE seq % {EVERY} = {}",
            EVERY / 4
        ),
        format!("ANALYZE TABLE {database}.invoices"),
    ] {
        my.query_drop(statement).await.expect("invoices");
    }
    println!(
        "setup: PostgreSQL table {table}, {ROWS} orders (keys 2..{}, index on changed_at, all \
         changed 2 h ago) in {pg_seconds:.1} s; MariaDB {database}.invoices, {} rows \
         ({INJECTED} missing, {INJECTED} stale, {INJECTED} extra) in {:.1} s; userstat was {userstat_was}",
        2 * ROWS,
        ROWS,
        filled.elapsed().as_secs_f64()
    );
    Services {
        pg,
        my,
        table,
        database,
        _cleanup: cleanup,
    }
}

fn config(listen: u16, services: &Services, derived_sweep: bool, chunks_per_run: u64) -> String {
    let table = &services.table;
    let database = &services.database;
    let derived_query = if derived_sweep {
        "\n            derived_query: \"SELECT order_id, order_version FROM invoices \
         WHERE order_id > $1 ORDER BY order_id LIMIT $2\""
    } else {
        ""
    };
    format!(
        "listen: 127.0.0.1:{listen}
sources:
  orders: {{ postgres: {{ dsn: \"{PG_DSN}\" }} }}
  invoices: {{ mysql: {{ url: \"{MY_URL}/{database}\" }} }}
budgets:
  - name: invoiced
    max_lag: {MAX_LAG_SECONDS}s
    max_mismatches: 0
    probes:
      - name: invoices
        interval: 1s
        reconcile:
          source: {{ source: orders, query: \"SELECT id, version, changed_at FROM {table} WHERE changed_at > $1\" }}
          derived: {{ source: invoices, query: \"SELECT order_id, order_version FROM invoices WHERE order_id IN ($1)\" }}
          sweep:
            query: \"SELECT id, version, changed_at FROM {table} WHERE id > $1 ORDER BY id LIMIT $2\"{derived_query}
            every: 24h
            chunk: {CHUNK}
            chunks_per_run: {chunks_per_run}
"
    )
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::min)
}

/// One daemon, one sweep; checks the mismatches it finds.
async fn variant(services: &mut Services, name: &str, derived_sweep: bool, chunks_per_run: u64) {
    println!("\n{name}: chunk {CHUNK}, chunks_per_run {chunks_per_run}, interval 1 s");
    let port = free_port();
    let before = services.reads().await;
    let daemon = Daemon::start(&config(port, services, derived_sweep, chunks_per_run), name);
    // The first run starts as the daemon starts: the sweep's time is counted from the spawn.
    let started = Instant::now();
    // Per run (as seen by the poll): duration, and sweep rows covered.
    let mut durations = Vec::new();
    let mut rows_per_run = Vec::new();
    let mut last_runs = 0;
    let mut last_rows = 0;
    let mut failed = 0u64;
    let mut first_error: Option<String> = None;
    let (completed_at, sweep_runs, text) = loop {
        assert!(
            started.elapsed() < SWEEP_LIMIT,
            "{name}: the sweep did not complete within {} s",
            SWEEP_LIMIT.as_secs()
        );
        tokio::time::sleep(POLL).await;
        let Some(probe) = probe(port) else { continue };
        let runs = probe["runs"].as_u64().unwrap_or(0);
        if runs == last_runs {
            continue;
        }
        if let Some(error) = probe["error"].as_str() {
            failed += 1;
            first_error.get_or_insert_with(|| error.to_owned());
        }
        let sweep = &probe["reconcile"]["sweep"];
        let completed = sweep["completed"].as_u64().unwrap_or(0);
        let rows = if completed > 0 {
            sweep["last_rows"].as_u64().unwrap_or(0)
        } else {
            sweep["rows"].as_u64().unwrap_or(0)
        };
        if runs == last_runs + 1 {
            durations.push(probe["last_duration_seconds"].as_f64().unwrap_or(f64::NAN));
            rows_per_run.push((rows - last_rows) as f64);
        }
        last_runs = runs;
        last_rows = rows;
        if completed > 0 {
            let text = get(port, "/metrics").expect("metrics");
            break (Instant::now(), runs, text);
        }
    };
    let wall = completed_at - started;
    let source = counted(&text, "source");
    let derived = counted(&text, "derived");
    let peak_kb = daemon.status_kb("VmHWM");
    let rss_kb = daemon.status_kb("VmRSS");

    let runs = sweep_runs as f64;
    println!(
        "  sweep: {last_rows} source rows in {sweep_runs} runs, {:.1} s from the daemon's \
         start to the first answer showing it completed (poll {} ms): {:.0} rows/s",
        wall.as_secs_f64(),
        POLL.as_millis(),
        last_rows as f64 / wall.as_secs_f64()
    );
    println!(
        "  per run: {:.0}-{:.0} source rows swept (mean {:.0}, {} of {} runs seen one by one); \
         duration mean {:.3} s, max {:.3} s, min {:.3} s",
        min(&rows_per_run),
        max(&rows_per_run),
        mean(&rows_per_run),
        rows_per_run.len(),
        sweep_runs,
        mean(&durations),
        max(&durations),
        min(&durations)
    );
    // The time the runs themselves took, from the durations seen one by one.
    let busy: f64 = durations.iter().sum::<f64>() * runs / durations.len().max(1) as f64;
    for (side, load) in [
        ("source (PostgreSQL)", source),
        ("derived (MariaDB)", derived),
    ] {
        println!(
            "  {side}: {:.0} statements, {:.2} per run; {:.0} rows read, {:.0} per run, \
             {:.0} rows/s over the sweep, {:.0} rows/s while a run runs (the daemon's counters)",
            load.statements,
            load.statements / runs,
            load.rows,
            load.rows / runs,
            load.rows / wall.as_secs_f64(),
            load.rows / busy
        );
    }
    println!(
        "  failed runs seen: {failed}{}",
        first_error.map_or(String::new(), |e| format!(" (first: {e})"))
    );
    println!("  daemon memory: peak {peak_kb} kB (VmHWM), now {rss_kb} kB (VmRSS)");

    // Extras count once seen longer than max_lag: wait for the injected counts, bounded.
    let expected_extra = derived_sweep.then_some(INJECTED);
    let exact = Instant::now();
    let mismatches = loop {
        let probe = probe(port).expect("probe");
        let m = &probe["reconcile"]["mismatches"];
        let found = (
            m["missing"].as_u64(),
            m["stale"].as_u64(),
            m["extra"].as_u64(),
        );
        if found == (Some(INJECTED), Some(INJECTED), expected_extra)
            || exact.elapsed() > Duration::from_secs(MAX_LAG_SECONDS * 6)
        {
            break found;
        }
        tokio::time::sleep(POLL).await;
    };
    println!(
        "  mismatches: missing {:?}, stale {:?}, extra {:?} (injected {INJECTED} each{}), \
         {:.1} s after the sweep completed",
        mismatches.0,
        mismatches.1,
        mismatches.2,
        if derived_sweep {
            ""
        } else {
            "; extra is not looked for without derived_query"
        },
        exact.elapsed().as_secs_f64()
    );
    assert_eq!(
        mismatches,
        (Some(INJECTED), Some(INJECTED), expected_extra),
        "{name}: the sweep must find exactly the injected mismatches"
    );
    let text = get(port, "/metrics").expect("metrics");
    let (final_source, final_derived) = (counted(&text, "source"), counted(&text, "derived"));
    daemon.stop();
    // The server backends flush their table statistics when the daemon's sessions end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = services.reads().await;
    println!(
        "  the databases' count, daemon start to stop (the daemon's counters at stop: source \
         {:.0} rows in {:.0} statements, derived {:.0} rows in {:.0} statements):",
        final_source.rows, final_source.statements, final_derived.rows, final_derived.statements
    );
    println!(
        "    PostgreSQL orders: {} tuples read (seq_tup_read + idx_tup_fetch) in {} scans",
        after.pg_rows - before.pg_rows,
        after.pg_scans - before.pg_scans
    );
    println!(
        "    MariaDB invoices: {} rows read (TABLE_STATISTICS.ROWS_READ)",
        after.my_rows - before.my_rows
    );
}

fn reachable(address: &str) -> bool {
    TcpStream::connect_timeout(&address.parse().expect("addr"), Duration::from_secs(1)).is_ok()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "reconcile_sweep: benchmarks run with `cargo bench --bench reconcile_sweep`; nothing \
             to test here"
        );
        return;
    }
    for (address, what) in [
        ("127.0.0.1:5432", "PostgreSQL"),
        ("127.0.0.1:3306", "MariaDB"),
    ] {
        if !reachable(address) {
            println!("reconcile_sweep: skipped, {what} is not listening on {address}");
            return;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut services = setup().await;
        variant(
            &mut services,
            "with the derived side's own sweep (derived_query)",
            true,
            CHUNKS_PER_RUN,
        )
        .await;
        variant(
            &mut services,
            "without derived_query: each chunk's keys looked up (IN of 5,000 keys)",
            false,
            CHUNKS_PER_RUN,
        )
        .await;
        // As many chunks as half the run's timeout allows: the fastest one probe sweeps.
        variant(
            &mut services,
            "with derived_query, chunks bounded by time only",
            true,
            1000,
        )
        .await;
    });
}
