//! Shared test plumbing: the machine's PostgreSQL, private PostgreSQL instances, an in-process
//! daemon on port 0, and readers for `/metrics` and the API. Every wait is bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// The machine's PostgreSQL: trust auth, database `test`.
pub const SHARED_PG_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A name no other test (or earlier run) uses: tables, schemas, budgets.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

pub async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {dsn} must be running for this test: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A port nothing listens on (bound once, then released).
pub fn closed_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Loads `yaml` as a config file from a temporary directory, as `lagbudget check` would.
pub fn load_config(yaml: &str) -> lagbudget::model::Config {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("lagbudget.yaml");
    std::fs::write(&path, yaml).expect("config");
    lagbudget::config::load(&path).expect("valid")
}

/// What `check --connect` says about every source and probe of `config`, one line each
/// (`what: ok …` or `what: reason: message`), printed for the notes.
pub async fn check_connect_lines(config: &lagbudget::model::Config) -> Vec<String> {
    let reports = lagbudget::oneshot::check_connections(config, Duration::from_secs(5)).await;
    let lines: Vec<String> = reports
        .iter()
        .map(|r| match &r.result {
            Ok(ok) => format!("{}: ok {ok}", r.what),
            Err(e) => format!("{}: {e}", r.what),
        })
        .collect();
    eprintln!("check --connect:\n{}", lines.join("\n"));
    lines
}

/// The deadline of a wait for something that should happen within a few probe intervals. It
/// guards against a hang and is not a timing assertion: a loaded machine may take many times
/// longer than an idle one, and a test must still pass there.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a bounded wait looks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Polls `check` every 100 ms until it returns `Some`, or gives up with `None` after `limit`
/// (for callers whose failure message needs more than a description).
pub async fn poll_until<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// A daemon running in this test's runtime, on a port chosen by the OS.
pub struct Daemon {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Writes `yaml` to a temp file, loads it through the real config loader and starts the
    /// daemon with the lifecycle API enabled.
    pub async fn start(yaml: &str) -> Daemon {
        Daemon::start_with_env(yaml, &[]).await
    }

    /// `start`, with `${VAR}`s in the config read from `env` first and then from the process
    /// environment, for this daemon only (at start and at every reload): two daemons in one
    /// test can load one config file as two processes with different environments would.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Daemon {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let lookup = move |name: &str| env.get(name).cloned().or_else(|| std::env::var(name).ok());
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("lagbudget.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let config = lagbudget::config::load_with(&config_path, &lookup)
            .unwrap_or_else(|e| panic!("test config must be valid:\n{e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let loader_path = config_path.clone();
        let reload_lookup = lookup.clone();
        let settings = lagbudget::RunSettings {
            config,
            loader: Some(Arc::new(move || {
                lagbudget::config::load_with(&loader_path, &reload_lookup)
            })),
            enable_lifecycle: true,
            reload_on_sighup: false,
        };
        let task = tokio::spawn(lagbudget::run(settings, listener, shutdown.clone()));
        Daemon {
            addr,
            config_path,
            shutdown,
            task,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.text("/metrics").await)
    }

    /// `/api/v1/budgets/{name}` as JSON.
    pub async fn budget(&self, name: &str) -> serde_json::Value {
        let response = self.get(&format!("/api/v1/budgets/{name}")).await;
        assert_eq!(response.status(), 200, "budget {name} exists");
        response.json().await.expect("json")
    }

    /// The JSON of one probe of one budget.
    pub async fn probe(&self, budget: &str, probe: &str) -> serde_json::Value {
        let status = self.budget(budget).await;
        status["probes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == probe))
            .cloned()
            .unwrap_or_else(|| panic!("probe {probe} in {status}"))
    }

    /// Waits until every probe has run once (`/readyz` answers 200).
    pub async fn wait_ready(&self, limit: Duration) {
        wait_for("every probe to run once", limit, || async {
            (self.get("/readyz").await.status() == 200).then_some(())
        })
        .await;
    }

    /// How many times the probe has run since it was loaded.
    pub async fn runs(&self, budget: &str, probe: &str) -> u64 {
        self.probe(budget, probe).await["runs"]
            .as_u64()
            .expect("runs")
    }

    /// Waits until the probe has run `more` times after now (counted by the API's `runs`),
    /// and returns its run count then.
    pub async fn wait_for_runs(
        &self,
        budget: &str,
        probe: &str,
        more: u64,
        limit: Duration,
    ) -> u64 {
        let from = self.runs(budget, probe).await;
        wait_for(
            &format!("{budget}/{probe} to run {more} more times (from run {from})"),
            limit,
            || async {
                let runs = self.runs(budget, probe).await;
                (runs >= from + more).then_some(runs)
            },
        )
        .await
    }

    /// Scrapes `/metrics` every 100 ms until `done` holds for a scrape, which it returns.
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        wait_for(what, limit, || async {
            let metrics = self.metrics().await;
            done(&metrics).then_some(metrics)
        })
        .await
    }

    /// "Nothing changes": scrapes `/metrics` every 100 ms and hands each scrape to `check`
    /// (which asserts) until the probe has run `more` times after now; returns the last scrape
    /// checked, taken after the last of those runs. Counting runs rather than seconds keeps
    /// the assertion about what the daemon did on a loaded machine, where a second of wall time
    /// may hold no run at all.
    pub async fn watch_runs(
        &self,
        (budget, probe): (&str, &str),
        more: u64,
        limit: Duration,
        mut check: impl FnMut(&Metrics),
    ) -> Metrics {
        let from = self.runs(budget, probe).await;
        let started = Instant::now();
        loop {
            let runs = self.runs(budget, probe).await;
            let metrics = self.metrics().await;
            check(&metrics);
            if runs >= from + more {
                return metrics;
            }
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} watching {budget}/{probe} run {more} more times \
                 (from run {from}, at run {runs})"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    pub async fn state(&self, budget: &str) -> String {
        self.budget(budget).await["state"]
            .as_str()
            .expect("state")
            .to_owned()
    }

    /// Waits until the budget reaches `state`, returning how long it took.
    pub async fn wait_for_state(&self, budget: &str, state: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        wait_for(&format!("{budget} to be {state}"), limit, || async {
            (self.state(budget).await == state).then_some(())
        })
        .await;
        started.elapsed()
    }

    /// Waits for each budget in turn to be in `state`, each within `limit`.
    pub async fn wait_for_states(&self, budgets: &[&String], state: &str, limit: Duration) {
        for budget in budgets {
            self.wait_for_state(budget, state, limit).await;
        }
    }

    /// Rewrites the config file and asks for a reload; returns the HTTP status and body.
    pub async fn reload_with(&self, yaml: &str) -> (u16, String) {
        std::fs::write(&self.config_path, yaml).expect("rewrite config");
        let response = self
            .http
            .post(self.url("/-/reload"))
            .send()
            .await
            .expect("reload");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops within 10 s");
        result.expect("daemon task").expect("daemon ran cleanly");
    }
}

/// One scrape of `/metrics`, parsed.
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().expect("number"),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest.trim_end_matches('}'))),
            };
            samples.push((name, labels, value));
        }
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of `name` whose labels include all of `labels`, if exactly present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    pub fn has_series(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.get(name, labels).is_some()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// A private PostgreSQL server that a test may stop and start.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(&[])
    }

    /// A private server with extra `postgresql.conf` lines (`"wal_level = logical"`).
    pub fn start_with(settings: &[&str]) -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let port = closed_port();
        let dir = std::env::temp_dir().join(unique("lagbudget_pg"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        as_postgres_owner(&dir);
        let data = dir.join("data");
        run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            path_str(&dir)
        );
        for setting in settings {
            conf.push_str(setting);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("read conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("write conf");
        let server = PrivatePostgres { port, dir, bin };
        server.start_again();
        server
    }

    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// What the server has logged so far (`log_statement` and the like go there).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn stop(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.join("data")),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn start_again(&self) {
        let log = self.dir.join("server.log");
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.join("data")),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = postgres_command(&self.bin.join("pg_ctl"))
            .args(["-D", path_str(&data), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root, so as root its programs run as `postgres`.
fn postgres_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_as_postgres(program: &Path, args: &[&str]) {
    let output = postgres_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {:?} failed:\n{}\n{}",
        program.display(),
        args,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn as_postgres_owner(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres", path_str(dir)])
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", dir.display());
    }
}

/// The newest PostgreSQL server binaries installed (`/usr/lib/postgresql/<major>/bin`).
pub fn postgres_bin_dir() -> PathBuf {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test installs them)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_unstable();
    let major = majors.last().expect("a PostgreSQL major version");
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

/// A source table and a projection of it, in their own schema, fed by a worker the test
/// controls: `orders` rows are inserted continuously, and the worker copies the highest id into
/// `projection_checkpoints` unless paused.
pub struct Projection {
    pub dsn: String,
    pub schema: String,
    paused: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl Projection {
    pub async fn create(dsn: &str) -> Projection {
        let schema = unique("lb_proj");
        let client = connect(dsn).await;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.orders (id bigserial PRIMARY KEY,
                                               paid_at timestamptz NOT NULL DEFAULT now());
                 CREATE TABLE {schema}.projection_checkpoints (name text PRIMARY KEY,
                                                               last_order_id bigint NOT NULL);
                 INSERT INTO {schema}.projection_checkpoints VALUES ('orders', 0);"
            ))
            .await
            .expect("create projection schema");
        Projection {
            dsn: dsn.to_owned(),
            schema,
            paused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            stop: CancellationToken::new(),
        }
    }

    /// A projection with `rows` orders, all applied: caught up and idle.
    pub async fn caught_up(dsn: &str, rows: u32) -> Projection {
        let projection = Projection::create(dsn).await;
        projection.insert(rows).await;
        projection.apply_all().await;
        projection
    }

    /// The `sql_watermark` probe body for this projection (YAML flow mapping).
    pub fn probe_yaml(&self, source: &str) -> String {
        format!(
            "{{ source: {source}, \
             watermark: \"SELECT last_order_id FROM {s}.projection_checkpoints WHERE name = 'orders'\", \
             oldest_pending: \"SELECT min(paid_at), count(*) FROM {s}.orders WHERE id > $1\" }}",
            s = self.schema
        )
    }

    /// Starts the inserter (one order every `every`) and the worker (applies every 100 ms).
    pub fn start_workers(&self, every: Duration) {
        let (dsn, schema, stop) = (self.dsn.clone(), self.schema.clone(), self.stop.clone());
        tokio::spawn(async move {
            let client = connect(&dsn).await;
            let sql = format!("INSERT INTO {schema}.orders DEFAULT VALUES");
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let _ = client.execute(sql.as_str(), &[]).await;
            }
        });
        let (dsn, schema, stop, paused) = (
            self.dsn.clone(),
            self.schema.clone(),
            self.stop.clone(),
            self.paused.clone(),
        );
        tokio::spawn(async move {
            let client = connect(&dsn).await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                if !paused.load(Ordering::SeqCst) {
                    let _ = client.execute(apply_sql(&schema).as_str(), &[]).await;
                }
            }
        });
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    pub async fn insert(&self, rows: u32) {
        let client = connect(&self.dsn).await;
        for _ in 0..rows {
            client
                .execute(
                    format!("INSERT INTO {}.orders DEFAULT VALUES", self.schema).as_str(),
                    &[],
                )
                .await
                .expect("insert");
        }
    }

    /// Applies everything now, as the worker would.
    pub async fn apply_all(&self) {
        connect(&self.dsn)
            .await
            .execute(apply_sql(&self.schema).as_str(), &[])
            .await
            .expect("apply");
    }

    /// Unix time at which the oldest row the worker has not applied was inserted.
    pub async fn first_unapplied_insert_time(&self) -> Option<f64> {
        let row = connect(&self.dsn)
            .await
            .query_one(
                format!(
                    "SELECT extract(epoch FROM min(paid_at))::float8 FROM {s}.orders
                     WHERE id > (SELECT last_order_id FROM {s}.projection_checkpoints)",
                    s = self.schema
                )
                .as_str(),
                &[],
            )
            .await
            .expect("first unapplied");
        row.get(0)
    }

    /// How many rows the worker has not applied, of those inserted by unix time
    /// `inserted_by` (all of them with `None`).
    pub async fn unapplied_rows(&self, inserted_by: Option<f64>) -> i64 {
        connect(&self.dsn)
            .await
            .query_one(
                format!(
                    "SELECT count(*) FROM {s}.orders
                     WHERE id > (SELECT last_order_id FROM {s}.projection_checkpoints)
                       AND ($1::float8 IS NULL OR paid_at <= to_timestamp($1::float8))",
                    s = self.schema
                )
                .as_str(),
                &[&inserted_by],
            )
            .await
            .expect("unapplied rows")
            .get(0)
    }

    pub async fn drop_schema(self) {
        self.stop.cancel();
        let client = connect(&self.dsn).await;
        let _ = client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}

fn apply_sql(schema: &str) -> String {
    format!(
        "UPDATE {schema}.projection_checkpoints
         SET last_order_id = (SELECT coalesce(max(id), 0) FROM {schema}.orders)
         WHERE name = 'orders'"
    )
}

/// A private PostgreSQL primary with one streaming standby: `initdb`,
/// `wal_level = replica`, `pg_basebackup -R -X stream`, each on its own port. The test can
/// pause replay, stop the standby's WAL receiver, kill and restart the standby, and promote it.
pub struct StreamingPair {
    pub primary_port: u16,
    pub standby_port: u16,
    /// Ports of further standbys (`add_standby`), which the test leaves alone.
    extra_standbys: std::sync::Mutex<Vec<u16>>,
    dir: PathBuf,
    bin: PathBuf,
    /// A WAL receiver this test stopped with SIGSTOP, continued on drop so shutdown works.
    stopped_receiver: std::sync::Mutex<Option<i32>>,
}

impl StreamingPair {
    /// Starts both servers (blocking; a few seconds). Call through `spawn_blocking`.
    pub fn start() -> StreamingPair {
        let bin = postgres_bin_dir();
        let dir = std::env::temp_dir().join(unique("lagbudget_pair"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        as_postgres_owner(&dir);
        let (primary_port, standby_port) = (closed_port(), closed_port());
        let primary = dir.join("primary");
        run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&primary),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        append_conf(
            &primary,
            &format!(
                "port = {primary_port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{}'\nfsync = off\nwal_level = replica\n\
                 max_wal_senders = 5\n",
                path_str(&dir)
            ),
        );
        let pair = StreamingPair {
            primary_port,
            standby_port,
            extra_standbys: std::sync::Mutex::new(Vec::new()),
            dir,
            bin,
            stopped_receiver: std::sync::Mutex::new(None),
        };
        pair.pg_ctl_start(&primary);
        pair.base_backup(&pair.standby_dir(), standby_port);
        pair.start_standby();
        pair
    }

    /// Clones the primary into a standby at `data` listening on `port` (not started).
    fn base_backup(&self, data: &Path, port: u16) {
        run_as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                path_str(data),
                "-R",
                "-X",
                "stream",
            ],
        );
        // The copied configuration names the primary's port; a later line wins.
        append_conf(data, &format!("port = {port}\n"));
    }

    /// Starts one more standby of the same primary (blocking) and returns its DSN.
    /// Runs a blocking step (`pg_ctl`, `pg_basebackup`) on the pair off the runtime, and hands
    /// the pair back with what the step returned.
    pub async fn step<T: Send + 'static>(
        self,
        what: &str,
        step: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> (Self, T) {
        tokio::task::spawn_blocking(move || {
            let out = step(&self);
            (self, out)
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    pub fn add_standby(&self) -> String {
        let port = closed_port();
        let mut extra = self.extra_standbys.lock().expect("lock");
        let data = self.dir.join(format!("standby{}", extra.len() + 2));
        self.base_backup(&data, port);
        self.pg_ctl_start(&data);
        extra.push(port);
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
    }

    pub fn primary_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.primary_port
        )
    }

    pub fn standby_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.standby_port
        )
    }

    fn standby_dir(&self) -> PathBuf {
        self.dir.join("standby")
    }

    fn pg_ctl_start(&self, data: &Path) {
        let log = data.with_extension("log");
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// Starts the standby (again, after `kill_standby`).
    pub fn start_standby(&self) {
        self.pg_ctl_start(&self.standby_dir());
    }

    /// Stops the standby the way a crash does (`-m immediate`: no shutdown checkpoint).
    pub fn kill_standby(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.standby_dir()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Stops the primary the way a crash does; the standby keeps running.
    pub fn kill_primary(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.join("primary")),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    pub fn start_primary(&self) {
        self.pg_ctl_start(&self.dir.join("primary"));
    }

    /// `pg_ctl promote`: the standby becomes a primary on a new timeline.
    pub fn promote_standby(&self) {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", path_str(&self.standby_dir()), "-w", "promote"],
        );
    }

    pub async fn pause_replay(&self) {
        connect(&self.standby_dsn())
            .await
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .expect("pause replay");
    }

    pub async fn resume_replay(&self) {
        connect(&self.standby_dsn())
            .await
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .expect("resume replay");
    }

    /// The standby's WAL receiver process.
    pub async fn walreceiver_pid(&self) -> i32 {
        let client = connect(&self.standby_dsn()).await;
        wait_for(
            "the standby's WAL receiver",
            Duration::from_secs(10),
            || async {
                client
                    .query_opt(
                        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walreceiver'",
                        &[],
                    )
                    .await
                    .expect("pg_stat_activity")
                    .map(|row| row.get::<_, i32>(0))
            },
        )
        .await
    }

    /// Freezes the WAL receiver with SIGSTOP: it neither receives nor reports, but lives.
    pub async fn stop_walreceiver(&self) -> i32 {
        let pid = self.walreceiver_pid().await;
        signal(pid, "STOP");
        *self.stopped_receiver.lock().expect("lock") = Some(pid);
        pid
    }

    pub fn continue_walreceiver(&self) {
        if let Some(pid) = self.stopped_receiver.lock().expect("lock").take() {
            signal(pid, "CONT");
        }
    }
}

/// Sends signal `name` (`INT`, `STOP`, …) to process `pid` with `kill`.
pub fn signal(pid: i32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

fn append_conf(data: &Path, lines: &str) {
    let conf_path = data.join("postgresql.conf");
    let mut existing = std::fs::read_to_string(&conf_path).expect("read conf");
    existing.push('\n');
    existing.push_str(lines);
    std::fs::write(&conf_path, existing).expect("write conf");
}

impl Drop for StreamingPair {
    fn drop(&mut self) {
        if let Ok(mut stopped) = self.stopped_receiver.lock() {
            if let Some(pid) = stopped.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
        let extra = self.extra_standbys.lock().map(|e| e.len()).unwrap_or(0);
        let standbys = (0..extra).map(|n| self.dir.join(format!("standby{}", n + 2)));
        let all: Vec<PathBuf> = standbys
            .chain([self.standby_dir(), self.dir.join("primary")])
            .collect();
        for data in all {
            let _ = postgres_command(&self.bin.join("pg_ctl"))
                .args(["-D", path_str(&data), "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
