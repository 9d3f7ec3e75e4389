//! `http_watermark` on `http` sources, against origins the tests serve themselves (axum on
//! 127.0.0.1, answers the test changes as it goes), a private Varnish in front of one, and the
//! machine's PostgreSQL as the source of truth. Source changes are inserted with known times
//! and the measured lag is compared with their age: against the daemon's last successful run
//! (±1 s), or between two readings of the database's own clock taken around a run.
//!
//! Also: every way an HTTP view can fail (a 500, HTML, a body over the cap, no version, no
//! answer, no server) is a bounded reason while other probes carry on; secrets in headers
//! never leave the process; `check --connect` names what failed; the recipes of the
//! http_watermark page (docs/src/probes/http_watermark.md) read recorded answers of each
//! product's documented shape (`tests/fixtures/http/`); and
//! https with a private CA and mutual TLS, with certificates made by the `openssl` command.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use lagbudget::probe::http_watermark::detail::HttpDetail;
use lagbudget::probe::oldest_pending::parse_timestamp;
use lagbudget::probe::{Detail, ProbeError, ProbeRunner, Reading, SourceHandle, SourceHandles};
use tokio::sync::watch;

use crate::support::{
    Daemon, Metrics, PATIENCE, SHARED_PG_DSN, check_connect_lines, closed_port, connect,
    load_config, poll_until, unique, wait_for,
};

// --- An origin the test controls -------------------------------------------------------------

/// What the origin answers on one path.
#[derive(Clone)]
enum Reply {
    /// This status, content type and body.
    Fixed {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A recorded answer from `tests/fixtures/http/`, as JSON.
    Fixture(&'static str),
    /// 200 and blank JSON-ish chunks forever, without a Content-Length: only a cap enforced
    /// while the body streams in stops reading it.
    Endless,
    /// Nothing, ever.
    Hang,
    /// The page: `{"version": N}` with `X-Source-Version: N` and the page's Cache-Control;
    /// held while the page is held.
    Page,
    /// 401, quoting the credentials the request carried, as a careless server might.
    EchoCredentials,
}

/// The page's state, in one value so that a request reads whether it is held and the version
/// together.
#[derive(Clone)]
struct Page {
    version: u64,
    cache_control: String,
    held: bool,
}

/// One request the origin received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    authorization: Option<String>,
    api_key: Option<String>,
    body: String,
}

struct OriginState {
    routes: HashMap<String, Reply>,
    seen: Vec<Seen>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<OriginState>>,
    page: Arc<watch::Sender<Page>>,
}

struct Origin {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (shared, app) = Origin::app();
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin { addr, shared, task }
    }

    fn app() -> (Shared, Router) {
        let shared = Shared {
            state: Arc::new(Mutex::new(OriginState {
                routes: HashMap::new(),
                seen: Vec::new(),
            })),
            page: Arc::new(watch::Sender::new(Page {
                version: 1,
                cache_control: "no-cache".to_owned(),
                held: false,
            })),
        };
        shared.route("/page", Reply::Page);
        let app = Router::new().fallback(answer).with_state(shared.clone());
        (shared, app)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route(&self, path: &str, reply: Reply) {
        self.shared.route(path, reply);
    }

    /// Sets the page's version and Cache-Control.
    fn set_page(&self, version: u64, cache_control: &str) {
        self.shared.page.send_modify(|page| {
            page.version = version;
            page.cache_control = cache_control.to_owned();
        });
    }

    /// Moves the page to `version` and holds every request for it from then on, in one step:
    /// a request answered before serves the old version, none after serves the new one until
    /// released.
    fn move_on_and_hold(&self, version: u64) {
        self.shared.page.send_modify(|page| {
            page.version = version;
            page.held = true;
        });
    }

    fn release(&self) {
        self.shared.page.send_modify(|page| page.held = false);
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let state = self.shared.state.lock().expect("origin state");
        state
            .seen
            .iter()
            .filter(|seen| seen.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn route(&self, path: &str, reply: Reply) {
        let mut state = self.state.lock().expect("origin state");
        state.routes.insert(path.to_owned(), reply);
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/http")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn answer(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reply = {
        let mut state = shared.state.lock().expect("origin state");
        state.seen.push(Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            content_type: text("content-type"),
            authorization: text("authorization"),
            api_key: text("x-api-key"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        state.routes.get(uri.path()).cloned()
    };
    match reply {
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
        Some(Reply::Fixed {
            status,
            content_type,
            body,
        }) => (
            StatusCode::from_u16(status).expect("status"),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response(),
        Some(Reply::Fixture(name)) => {
            ([(header::CONTENT_TYPE, "application/json")], fixture(name)).into_response()
        }
        Some(Reply::Endless) => {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, Infallible>(Bytes::from_static(&[b' '; 8192]))
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(chunks),
            )
                .into_response()
        }
        Some(Reply::Hang) => std::future::pending::<Response>().await,
        Some(Reply::Page) => {
            let mut page = shared.page.subscribe();
            let page = loop {
                let current = page.borrow_and_update().clone();
                if !current.held {
                    break current;
                }
                if page.changed().await.is_err() {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
            };
            (
                [
                    ("x-source-version", page.version.to_string()),
                    ("cache-control", page.cache_control),
                    ("content-type", "application/json".to_owned()),
                ],
                format!("{{\"version\":{}}}", page.version),
            )
                .into_response()
        }
        Some(Reply::EchoCredentials) => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain")],
            format!(
                "refused {} with key {} for tenant {}",
                text("authorization").unwrap_or_default(),
                text("x-api-key").unwrap_or_default(),
                text("x-tenant").unwrap_or_default()
            ),
        )
            .into_response(),
    }
}

// --- A private Varnish -------------------------------------------------------------------------

/// A private `varnishd` on a free loopback port in front of `origin`, with a VCL of the test's
/// own: PURGE from localhost, and grace only from the origin's `stale-while-revalidate`
/// (`default_grace=0s`). Stopped on drop, even when the test fails.
struct Varnish {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

const VARNISHD: &str = "/usr/sbin/varnishd";

impl Varnish {
    async fn start(origin: &Origin) -> Varnish {
        let dir = tempfile::tempdir().expect("dir");
        let vcl = dir.path().join("test.vcl");
        std::fs::write(
            &vcl,
            format!(
                r#"vcl 4.1;

backend origin {{
    .host = "127.0.0.1";
    .port = "{}";
    # A revalidation the test holds back must stay in flight, not time out.
    .first_byte_timeout = 600s;
}}

acl local {{
    "127.0.0.1";
}}

sub vcl_recv {{
    if (req.method == "PURGE") {{
        if (client.ip !~ local) {{
            return (synth(405, "PURGE from localhost only"));
        }}
        return (purge);
    }}
}}
"#,
                origin.addr.port()
            ),
        )
        .expect("write vcl");
        let port = closed_port();
        // `-j none`: as root, varnishd would otherwise switch to a `varnish` user that cannot
        // read the test's temporary directory.
        let child = Command::new(VARNISHD)
            .args(["-F", "-j", "none"])
            .args(["-a", &format!("127.0.0.1:{port}")])
            .arg("-f")
            .arg(&vcl)
            .arg("-n")
            .arg(dir.path().join("work"))
            .args(["-s", "malloc,16m"])
            .args(["-p", "default_grace=0s", "-p", "default_keep=0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{VARNISHD} must be installed for this test (scripts/test does): {e}")
            });
        let varnish = Varnish {
            port,
            child,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let url = varnish.url("/varnish-ready");
        let answered = poll_until(PATIENCE, || async {
            let response = client.get(&url).send().await.ok()?;
            let via = response.headers().get("via")?.to_str().ok()?.to_owned();
            via.contains("varnish").then_some(())
        })
        .await;
        assert!(
            answered.is_some(),
            "varnishd on port {port} did not answer within {PATIENCE:?}"
        );
        varnish
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn purge(&self, path: &str) {
        let response = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(b"PURGE").expect("method"),
                self.url(path),
            )
            .send()
            .await
            .expect("PURGE");
        assert_eq!(response.status(), 200, "PURGE {path}");
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        // SIGTERM lets the manager stop its cache process; SIGKILL would leave that running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- The source of truth ------------------------------------------------------------------------

/// A table of source changes (seq, changed_at) in the machine's PostgreSQL, dropped at the end.
struct Changes {
    table: String,
    pg: tokio_postgres::Client,
}

impl Changes {
    async fn create() -> Changes {
        let pg = connect(SHARED_PG_DSN).await;
        let table = unique("http_changes");
        pg.batch_execute(&format!(
            "CREATE TABLE {table} (seq bigint PRIMARY KEY, changed_at timestamptz NOT NULL)"
        ))
        .await
        .expect("create changes");
        Changes { table, pg }
    }

    /// Records change `seq` as made `ago` seconds ago on the database's clock; returns when,
    /// in unix seconds.
    async fn add(&self, seq: i64, ago: f64) -> f64 {
        let row = self
            .pg
            .query_one(
                &format!(
                    "INSERT INTO {} VALUES ($1, clock_timestamp() - make_interval(secs => $2)) \
                     RETURNING extract(epoch FROM changed_at)::float8",
                    self.table
                ),
                &[&seq, &ago],
            )
            .await
            .expect("insert change");
        row.get(0)
    }

    /// The age of change `seq` now, on the database's clock.
    async fn age(&self, seq: i64) -> f64 {
        let row = self
            .pg
            .query_one(
                &format!(
                    "SELECT extract(epoch FROM clock_timestamp() - changed_at)::float8 FROM {} \
                     WHERE seq = $1",
                    self.table
                ),
                &[&seq],
            )
            .await
            .expect("age");
        row.get(0)
    }

    /// The `oldest_pending` table of a probe reading this table.
    fn oldest_pending(&self) -> String {
        format!(
            "{{ source: db, query: \"SELECT min(changed_at), count(*) FROM {} WHERE seq > $1\" }}",
            self.table
        )
    }

    async fn drop_table(self) {
        self.pg
            .batch_execute(&format!("DROP TABLE {}", self.table))
            .await
            .expect("drop changes");
    }
}

// --- Reading what the daemon says ----------------------------------------------------------------

fn series(metrics: &Metrics, name: &str, budget: &str, probe: &str) -> Option<f64> {
    metrics.get(name, &[("budget", budget), ("probe", probe)])
}

fn lag(metrics: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    series(metrics, "lagbudget_lag_seconds", budget, probe)
}

fn last_success(metrics: &Metrics, budget: &str, probe: &str) -> Option<f64> {
    series(
        metrics,
        "lagbudget_probe_last_success_timestamp_seconds",
        budget,
        probe,
    )
}

fn errors(metrics: &Metrics, budget: &str, probe: &str, reason: &str) -> f64 {
    metrics
        .get(
            "lagbudget_probe_errors_total",
            &[("budget", budget), ("probe", probe), ("reason", reason)],
        )
        .unwrap_or(0.0)
}

fn unix_now() -> f64 {
    lagbudget::clock::unix_now()
}

/// A daemon config: an `http` source `view` at `url`, the machine's PostgreSQL as `db`, and
/// budget `budget` with `probes` (YAML list items, indented by six spaces).
fn config(url: &str, source_extra: &str, budget: &str, probes: &str) -> String {
    format!(
        "sources:
  view: {{ http: {{ url: \"{url}\"{source_extra} }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    interval: 1s
    timeout: 1s
    probes:
{probes}"
    )
}

// --- Varnish ---------------------------------------------------------------------------------

/// Issue acceptance: the origin moves on while Varnish serves its cached object ⇒ the lag is
/// the age of the oldest change the cached version does not show, ±1 s of the truth, and grows;
/// the Age header is in the detail, not the lag; a PURGE ⇒ 0 within two runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_serving_an_old_version_reads_its_true_lag_until_purged() {
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let origin = Origin::start().await;
    origin.set_page(1, "public, max-age=3600");
    let varnish = Varnish::start(&origin).await;
    let budget = unique("varnish");
    let daemon = Daemon::start(&config(
        &varnish.url(""),
        "",
        &budget,
        &format!(
            "      - name: page\n        http_watermark: {{ source: view, path: /page, header: X-Source-Version, oldest_pending: {} }}\n",
            changes.oldest_pending()
        ),
    ))
    .await;
    // Idle: the version shown has no newer change.
    daemon
        .wait_for_metrics("lag 0 while the cache is current", PATIENCE, |m| {
            lag(m, &budget, "page") == Some(0.0)
        })
        .await;

    // The source moves on and so does the origin; Varnish keeps serving version 1.
    origin.set_page(2, "public, max-age=3600");
    let changed_at = changes.add(2, 0.0).await;
    let direct: serde_json::Value = reqwest::get(format!("{}/page", origin.url()))
        .await
        .expect("origin")
        .json()
        .await
        .expect("json");
    assert_eq!(direct["version"], 2, "the origin moved on");
    let early = daemon
        .wait_for_metrics("a run 2 s after the change", PATIENCE, |m| {
            last_success(m, &budget, "page").is_some_and(|at| at >= changed_at + 2.0)
                && lag(m, &budget, "page").is_some()
        })
        .await;
    let metrics = daemon
        .wait_for_metrics("a run 5 s after the change", PATIENCE, |m| {
            last_success(m, &budget, "page").is_some_and(|at| at >= changed_at + 5.0)
                && lag(m, &budget, "page").is_some()
        })
        .await;
    for m in [&early, &metrics] {
        let measured = lag(m, &budget, "page").expect("lag");
        let expected = last_success(m, &budget, "page").expect("success") - changed_at;
        println!("cached version 1: measured lag {measured:.3} s, expected {expected:.3} s");
        assert!(
            (measured - expected).abs() <= 1.0,
            "lag {measured} not within ±1 s of {expected}"
        );
    }
    assert!(
        lag(&metrics, &budget, "page") > lag(&early, &budget, "page"),
        "the lag grows while the cache holds the old version"
    );
    assert_eq!(
        series(&metrics, "lagbudget_backlog_rows", &budget, "page"),
        Some(1.0)
    );
    let probe = daemon.probe(&budget, "page").await;
    println!("probe while cached: {probe}");
    assert!(
        probe["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("version \"1\"")),
        "{probe}"
    );
    assert_eq!(probe["http"]["status"], 200);
    assert_eq!(probe["http"]["max_age_seconds"], 3600);
    assert_eq!(probe["http"]["served_stale"], false);
    assert!(probe["http"]["age_seconds"].as_u64().is_some(), "{probe}");
    assert!(
        series(
            &metrics,
            "lagbudget_http_response_age_seconds",
            &budget,
            "page"
        )
        .is_some()
    );
    assert_eq!(
        series(&metrics, "lagbudget_http_served_stale", &budget, "page"),
        Some(0.0)
    );

    varnish.purge("/page").await;
    daemon.wait_for_runs(&budget, "page", 2, PATIENCE).await;
    let metrics = daemon.metrics().await;
    assert_eq!(lag(&metrics, &budget, "page"), Some(0.0), "purged ⇒ 0");
    let probe = daemon.probe(&budget, "page").await;
    assert!(
        probe["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("version \"2\"")),
        "{probe}"
    );

    daemon.stop().await;
    drop(varnish);
    changes.drop_table().await;
}

/// Issue acceptance: stale-while-revalidate serving old content is counted as lag, not hidden.
/// The origin allows 1 s of freshness and 600 s of stale-while-revalidate, then moves on and
/// holds back the revalidation: Varnish keeps serving the old version, the lag is the age of
/// the change it does not show (±1 s), and the detail says the answer was served stale. Once
/// the revalidation goes through, the lag is 0 again.
#[tokio::test(flavor = "multi_thread")]
async fn content_served_stale_while_revalidating_counts_as_lag() {
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let origin = Origin::start().await;
    let cache_control = "public, max-age=1, stale-while-revalidate=600";
    origin.set_page(1, cache_control);
    let varnish = Varnish::start(&origin).await;
    let budget = unique("swr");
    let daemon = Daemon::start(&config(
        &varnish.url(""),
        "",
        &budget,
        &format!(
            "      - name: page\n        http_watermark: {{ source: view, path: /page, pointer: /version, oldest_pending: {} }}\n",
            changes.oldest_pending()
        ),
    ))
    .await;
    daemon
        .wait_for_metrics("lag 0 while current", PATIENCE, |m| {
            lag(m, &budget, "page") == Some(0.0)
        })
        .await;

    origin.move_on_and_hold(2);
    let changed_at = changes.add(2, 0.0).await;
    let metrics = daemon
        .wait_for_metrics("a stale answer 4 s after the change", PATIENCE, |m| {
            last_success(m, &budget, "page").is_some_and(|at| at >= changed_at + 4.0)
                && series(m, "lagbudget_http_served_stale", &budget, "page") == Some(1.0)
        })
        .await;
    let measured = lag(&metrics, &budget, "page").expect("lag");
    let expected = last_success(&metrics, &budget, "page").expect("success") - changed_at;
    println!("served stale: measured lag {measured:.3} s, expected {expected:.3} s");
    assert!(
        (measured - expected).abs() <= 1.0,
        "lag {measured} not within ±1 s of {expected}"
    );
    let probe = daemon.probe(&budget, "page").await;
    println!("probe while stale: {probe}");
    assert_eq!(probe["http"]["served_stale"], true);
    assert!(
        probe["http"]["age_seconds"].as_u64() > Some(1),
        "Age above max-age: {probe}"
    );
    assert!(
        origin.seen("/page").len() >= 2,
        "Varnish asked the origin to revalidate"
    );

    origin.release();
    daemon
        .wait_for_metrics("lag 0 once revalidated", PATIENCE, |m| {
            lag(m, &budget, "page") == Some(0.0)
        })
        .await;

    daemon.stop().await;
    drop(varnish);
    changes.drop_table().await;
}

// --- Failures ------------------------------------------------------------------------------------

/// Issue acceptance: an HTTP view answering 500, HTML instead of JSON, a body over the cap
/// (an endless one: the cap stops it while it streams), no version at the pointer, or nothing
/// at all, and a source nothing listens on, each make their probe down with a bounded reason
/// and a message that says what happened, while another probe of the same daemon and source
/// stays up.
#[tokio::test(flavor = "multi_thread")]
async fn every_way_a_view_can_fail_is_a_bounded_reason_and_others_carry_on() {
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let origin = Origin::start().await;
    origin.set_page(1, "no-cache");
    origin.route(
        "/broken",
        Reply::Fixed {
            status: 500,
            content_type: "text/plain",
            body: b"internal error: index unavailable".to_vec(),
        },
    );
    origin.route(
        "/html",
        Reply::Fixed {
            status: 200,
            content_type: "text/html",
            body: b"<!DOCTYPE html>\n<html><body>Welcome</body></html>".to_vec(),
        },
    );
    origin.route("/endless", Reply::Endless);
    origin.route(
        "/status",
        Reply::Fixed {
            status: 200,
            content_type: "application/json",
            body: br#"{"status":"ok"}"#.to_vec(),
        },
    );
    origin.route("/hang", Reply::Hang);
    let budget = unique("failures");
    let probe = |name: &str, source: &str, path: &str| {
        format!(
            "      - name: {name}\n        http_watermark: {{ source: {source}, path: {path}, pointer: /version, oldest_pending: {} }}\n",
            changes.oldest_pending()
        )
    };
    let probes = [
        probe("healthy", "view", "/page"),
        probe("broken", "view", "/broken"),
        probe("html", "view", "/html"),
        probe("endless", "view", "/endless"),
        probe("no-version", "view", "/status"),
        probe("hang", "view", "/hang"),
        probe("refused", "nobody", "/page"),
    ]
    .concat();
    let yaml = config(&origin.url(), ", max_body: 64KiB", &budget, &probes).replace(
        "budgets:",
        &format!(
            "  nobody: {{ http: {{ url: \"http://127.0.0.1:{}\" }} }}\nbudgets:",
            closed_port()
        ),
    );
    let daemon = Daemon::start(&yaml).await;
    let expected = [
        (
            "broken",
            "http_status",
            "HTTP 500 Internal Server Error for GET /broken: \"internal error: index unavailable\"",
        ),
        (
            "html",
            "decode",
            "the answer to GET /html is not JSON (HTTP 200, content-type text/html, 49 bytes): it starts with \"<!DOCTYPE html> <html><body>Welcome</body></html>\"",
        ),
        (
            "endless",
            "decode",
            "the answer to GET /endless is larger than max_body (65536 bytes; HTTP 200, content-type application/json): not read further",
        ),
        (
            "no-version",
            "no_data",
            "pointer /version finds nothing (the answer is an object with keys status): the answer to GET /status (HTTP 200, 15 bytes) shows no version",
        ),
        (
            "hang",
            "timeout",
            "GET /hang was not answered before the deadline",
        ),
        ("refused", "connect", "GET /page: "),
    ];
    let metrics = daemon
        .wait_for_metrics("every failing probe failed twice", PATIENCE, |m| {
            expected
                .iter()
                .all(|(probe, reason, _)| errors(m, &budget, probe, reason) >= 2.0)
        })
        .await;
    for (probe, reason, message) in expected {
        let status = daemon.probe(&budget, probe).await;
        println!("{probe}: {}", status["error"]);
        assert_eq!(status["error"]["reason"], reason, "{probe}: {status}");
        let text = status["error"]["message"].as_str().expect("message");
        assert!(text.starts_with(message), "{probe}: {text}");
        assert_eq!(
            series(&metrics, "lagbudget_probe_up", &budget, probe),
            Some(0.0)
        );
        // Only the reason it failed with.
        for other in lagbudget::probe::ErrorReason::ALL {
            if other.as_str() != reason {
                assert_eq!(errors(&metrics, &budget, probe, other.as_str()), 0.0);
            }
        }
    }
    let text = daemon.probe(&budget, "refused").await["error"]["message"].to_string();
    assert!(text.contains("Connection refused"), "{text}");

    // The healthy probe ran all along.
    daemon.wait_for_runs(&budget, "healthy", 3, PATIENCE).await;
    let metrics = daemon.metrics().await;
    assert_eq!(
        series(&metrics, "lagbudget_probe_up", &budget, "healthy"),
        Some(1.0)
    );
    assert_eq!(lag(&metrics, &budget, "healthy"), Some(0.0));
    assert_eq!(
        series(
            &metrics,
            "lagbudget_http_response_bytes",
            &budget,
            "healthy"
        ),
        Some(13.0)
    );
    // Neither a cache's Age nor a freshness verdict without one.
    assert!(!metrics.has_series(
        "lagbudget_http_response_age_seconds",
        &[("probe", "healthy")]
    ));
    assert!(!metrics.has_series("lagbudget_http_served_stale", &[("probe", "healthy")]));

    daemon.stop().await;
    changes.drop_table().await;
}

/// Issue acceptance: secrets in headers (a bearer token and a custom header from `${VAR}`, and
/// a header value written in the file) never appear in the daemon's logs (at trace level, the
/// HTTP and TLS libraries' included),
/// `/metrics`, the API, the status page, or the output of `probe` and `check --connect`, even
/// when the server quotes them back in its error page; and they are sent.
#[tokio::test(flavor = "multi_thread")]
async fn secret_headers_never_leave_the_process() {
    const TOKEN: &str = "tok-Hq7Zr2-secret";
    const KEY: &str = "key-Wd9Lm4-secret";
    const TENANT: &str = "tenant-Xv3Np8-secret";
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let origin = Origin::start().await;
    origin.set_page(1, "no-cache");
    origin.route("/echo", Reply::EchoCredentials);
    let dir = tempfile::tempdir().expect("dir");
    let listen_port = closed_port();
    let config_path = dir.path().join("lagbudget.yaml");
    let probe = |name: &str, path: &str| {
        format!(
            "      - name: {name}\n        http_watermark: {{ source: view, path: {path}, pointer: /version, oldest_pending: {} }}\n",
            changes.oldest_pending()
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:{listen_port}\n{}",
        config(
            &origin.url(),
            &format!(
                ", bearer_token: \"${{LB_HTTP_TOKEN}}\", headers: {{ X-Api-Key: \"${{LB_HTTP_KEY}}\", X-Tenant: {TENANT} }}"
            ),
            "secretive",
            &[probe("echo", "/echo"), probe("page", "/page")].concat(),
        )
    );
    std::fs::write(&config_path, yaml).expect("config");
    let lagbudget = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lagbudget"));
        command
            .env("LB_HTTP_TOKEN", TOKEN)
            .env("LB_HTTP_KEY", KEY)
            .arg("--log.level")
            .arg("trace,reqwest=trace,hyper=trace,hyper_util=trace,rustls=trace");
        command
    };
    let mut child = lagbudget()
        .arg("run")
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    // Trace logs are long: read them while the daemon runs so that it never blocks on a full
    // pipe.
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = stderr.read_to_string(&mut logs);
        logs
    });
    let base = format!("http://127.0.0.1:{listen_port}");
    let client = reqwest::Client::new();
    wait_for("three runs of both probes", PATIENCE, || async {
        let status: serde_json::Value = client
            .get(format!("{base}/api/v1/budgets/secretive"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let probes = status["probes"].as_array()?;
        (probes.len() == 2 && probes.iter().all(|p| p["runs"].as_u64() >= Some(3))).then_some(())
    })
    .await;
    let mut bodies = Vec::new();
    for path in [
        "/metrics",
        "/api/v1/budgets",
        "/api/v1/budgets/secretive",
        "/",
    ] {
        let body = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        bodies.push((path.to_owned(), body));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    let logs = logs.join().expect("log reader");
    assert!(exit.success(), "graceful shutdown: {exit:?}");
    assert!(logs.contains("probe down"), "failures are logged");
    assert!(
        logs.contains("hyper_util") && logs.contains("reqwest"),
        "the HTTP libraries' own trace logs are captured too"
    );
    for args in [vec!["probe", "-c"], vec!["check", "--connect", "-c"]] {
        let out = lagbudget()
            .args(&args)
            .arg(&config_path)
            .output()
            .expect("run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} reports the failure: {text}"
        );
        bodies.push((format!("{args:?}"), text));
    }
    bodies.push(("logs".to_owned(), logs));
    for (what, text) in &bodies {
        for secret in [TOKEN, KEY, TENANT] {
            assert!(!text.contains(secret), "{what} leaks {secret}:\n{text}");
        }
    }
    let api = &bodies[1].1;
    assert!(
        api.contains("HTTP 401 Unauthorized for GET /echo: \\\"refused Bearer ***"),
        "the server's quote is masked: {api}"
    );
    // The secrets were sent.
    let seen = origin.seen("/echo");
    let sent = seen.last().expect("requests to /echo");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(sent.api_key.as_deref(), Some(KEY));
    changes.drop_table().await;
}

/// `check --connect` sends each probe's request and names what failed: the status, a body
/// that is not JSON, a pointer that finds nothing and where it stops, a server nothing
/// answers on; and for sources, one GET of the base URL.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_names_what_failed() {
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let origin = Origin::start().await;
    origin.set_page(1, "no-cache");
    origin.route(
        "/html",
        Reply::Fixed {
            status: 200,
            content_type: "text/html",
            body: b"<html>hello</html>".to_vec(),
        },
    );
    origin.route("/search", Reply::Fixture("elasticsearch_search.json"));
    let probe = |name: &str, source: &str, path: &str, pointer: &str| {
        format!(
            "      - name: {name}\n        http_watermark: {{ source: {source}, path: {path}, pointer: {pointer}, oldest_pending: {} }}\n",
            changes.oldest_pending()
        )
    };
    let probes = [
        probe("good", "view", "/page", "/version"),
        probe("missing", "view", "/nowhere", "/version"),
        probe("html", "view", "/html", "/version"),
        probe("pointer", "view", "/search", "/hits/hits/0/_source/seq"),
        probe("refused", "nobody", "/page", "/version"),
    ]
    .concat();
    let yaml = config(&origin.url(), "", "checked", &probes).replace(
        "budgets:",
        &format!(
            "  nobody: {{ http: {{ url: \"http://127.0.0.1:{}\" }} }}\nbudgets:",
            closed_port()
        ),
    );
    let lines = check_connect_lines(&load_config(&yaml)).await;
    let expect = |prefix: &str, contains: &str| {
        let line = lines
            .iter()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line for {prefix}: {lines:#?}"));
        assert!(line.contains(contains), "{line}");
    };
    expect(
        "source view (http): ",
        "ok answers HTTP 404 Not Found at its url",
    );
    expect("source nobody (http): ", "connect: GET /: ");
    expect(
        "probe checked/good (http_watermark): ",
        "ok HTTP 200, 13 bytes, version \"1\"; oldest_pending accepted",
    );
    expect(
        "probe checked/missing (http_watermark): ",
        "http_status: HTTP 404 Not Found for GET /nowhere: \"no such page\"",
    );
    expect(
        "probe checked/html (http_watermark): ",
        "decode: the answer to GET /html is not JSON (HTTP 200, content-type text/html, 18 bytes): it starts with \"<html>hello</html>\"",
    );
    expect(
        "probe checked/pointer (http_watermark): ",
        "no_data: pointer /hits/hits/0/_source/seq finds nothing (/hits/hits/0/_source is an object with keys source_seq)",
    );
    expect(
        "probe checked/refused (http_watermark): ",
        "Connection refused",
    );
    changes.drop_table().await;
}

// --- The recipes --------------------------------------------------------------------------------

/// Runs probe `name` of the first budget of `config` once.
async fn run_once(
    config: &lagbudget::model::Config,
    sources: &SourceHandles,
    name: &str,
) -> Result<Reading, ProbeError> {
    let probe = config.budgets[0]
        .probes
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("probe {name}"));
    let mut runner = ProbeRunner::new(probe, sources).expect("runner");
    runner
        .run(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
}

fn http_detail(reading: &Reading) -> &HttpDetail {
    match &reading.detail {
        Some(Detail::HttpWatermark(detail)) => detail,
        other => panic!("not an http detail: {other:?}"),
    }
}

/// The http_watermark page's recipes against recorded answers of each product's documented shape:
/// Elasticsearch/OpenSearch `_search` (sorted by an indexed source sequence, asked by POST as
/// JSON) and an empty index (unknown, never 0); a service's JSON endpoint; Meilisearch's task
/// queue (the age of the oldest enqueued or processing task, of a failed task too, 0 only when
/// the total reads 0, and an answer without a total refused).
#[tokio::test(flavor = "multi_thread")]
async fn recipes_read_what_each_product_documents() {
    let changes = Changes::create().await;
    changes.add(1234, 60.0).await;
    changes.add(1235, 7.0).await;
    changes.add(1236, 3.0).await;
    let origin = Origin::start().await;
    origin.route(
        "/orders/_search",
        Reply::Fixture("elasticsearch_search.json"),
    );
    origin.route(
        "/empty/_search",
        Reply::Fixture("elasticsearch_search_empty.json"),
    );
    origin.route("/version", Reply::Fixture("service_version.json"));
    for (path, name) in [
        ("/pending/tasks", "meilisearch_tasks_pending.json"),
        ("/failed/tasks", "meilisearch_tasks_failed.json"),
        ("/idle/tasks", "meilisearch_tasks_empty.json"),
        ("/old/tasks", "meilisearch_tasks_without_total.json"),
    ] {
        origin.route(path, Reply::Fixture(name));
    }
    let search_body = r#"{"size":1,"sort":[{"source_seq":"desc"}],"_source":["source_seq"],"track_total_hits":false}"#;
    let tasks = |name: &str, prefix: &str| {
        format!(
            "      - name: {name}\n        http_watermark:\n          source: view\n          path: /{prefix}/tasks?indexUids=orders&statuses=enqueued,processing,failed&limit=1&reverse=true\n          pointer: /results/0/enqueuedAt\n          count_pointer: /total\n          mode: queue_age\n"
        )
    };
    let probes = [
        format!(
            "      - name: search\n        http_watermark:\n          source: view\n          path: /orders/_search\n          method: POST\n          body: '{search_body}'\n          pointer: /hits/hits/0/_source/source_seq\n          oldest_pending: {}\n",
            changes.oldest_pending()
        ),
        format!(
            "      - name: empty-index\n        http_watermark: {{ source: view, path: /empty/_search, method: POST, body: '{search_body}', pointer: /hits/hits/0/_source/source_seq, oldest_pending: {} }}\n",
            changes.oldest_pending()
        ),
        format!(
            "      - name: service\n        http_watermark: {{ source: view, path: /version, pointer: /version, oldest_pending: {} }}\n",
            changes.oldest_pending()
        ),
        tasks("pending", "pending"),
        tasks("failed", "failed"),
        tasks("idle", "idle"),
        tasks("old", "old"),
    ]
    .concat();
    let config = load_config(&config(&origin.url(), "", "recipes", &probes));
    let sources = SourceHandles::build(&config, None).expect("handles");

    // Elasticsearch: the index shows 1234; 1235 (7 s ago) and 1236 are newer.
    let before = changes.age(1235).await;
    let search = run_once(&config, &sources, "search").await.expect("search");
    let after = changes.age(1235).await;
    let lag = search.sample.lag_seconds.expect("lag");
    println!("search index at 1234: lag {lag:.3} s, between {before:.3} and {after:.3}");
    assert!(
        before <= lag && lag <= after,
        "{lag} not in [{before}, {after}]"
    );
    assert_eq!(search.sample.backlog.map(|b| b.value), Some(2.0));
    assert_eq!(search.sample.position.as_deref(), Some("1234"));
    let asked = origin.seen("/orders/_search");
    let asked = asked.last().expect("a search");
    assert_eq!(asked.method, "POST");
    assert_eq!(asked.content_type.as_deref(), Some("application/json"));
    assert_eq!(asked.body, search_body);
    assert_eq!(http_detail(&search).status, 200);

    let empty = run_once(&config, &sources, "empty-index")
        .await
        .expect_err("an empty index shows no version");
    assert_eq!(empty.reason.as_str(), "no_data", "{empty}");
    assert!(
        empty.message.contains("/hits/hits is an empty array"),
        "{empty}"
    );

    // A service that shows the newest version: nothing newer, 0.
    let service = run_once(&config, &sources, "service")
        .await
        .expect("service");
    assert_eq!(service.sample.lag_seconds, Some(0.0));
    assert_eq!(service.sample.backlog.map(|b| b.value), Some(0.0));

    // Meilisearch: the age of the oldest unfinished task, 3 waiting.
    let enqueued_at = |name: &str| {
        let json: serde_json::Value = serde_json::from_slice(&fixture(name)).expect("json");
        let text = json["results"][0]["enqueuedAt"]
            .as_str()
            .expect("enqueuedAt")
            .to_owned();
        parse_timestamp(&text)
            .expect("time")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    for (name, fixture_name, count) in [
        ("pending", "meilisearch_tasks_pending.json", 3.0),
        ("failed", "meilisearch_tasks_failed.json", 1.0),
    ] {
        let enqueued = enqueued_at(fixture_name);
        let before = unix_now() - enqueued;
        let reading = run_once(&config, &sources, name).await.expect(name);
        let after = unix_now() - enqueued;
        let lag = reading.sample.lag_seconds.expect("lag");
        println!("meilisearch {name}: lag {lag:.0} s, {count} tasks");
        assert!(
            before <= lag && lag <= after,
            "{name}: {lag} not in [{before}, {after}]"
        );
        let backlog = reading.sample.backlog.expect("backlog");
        assert_eq!((backlog.unit.as_str(), backlog.value), ("events", count));
    }
    let asked = origin.seen("/pending/tasks");
    assert_eq!(
        asked.last().and_then(|s| s.query.as_deref()),
        Some("indexUids=orders&statuses=enqueued,processing,failed&limit=1&reverse=true")
    );
    let idle = run_once(&config, &sources, "idle").await.expect("idle");
    assert_eq!(
        idle.sample.lag_seconds,
        Some(0.0),
        "empty and nothing failed"
    );
    assert_eq!(idle.sample.backlog.map(|b| b.value), Some(0.0));
    let old = run_once(&config, &sources, "old")
        .await
        .expect_err("no total: emptiness unknown");
    assert_eq!(old.reason.as_str(), "decode", "{old}");
    assert!(
        old.message
            .starts_with("count_pointer /total finds nothing"),
        "{old}"
    );

    changes.drop_table().await;
}

// --- TLS --------------------------------------------------------------------------------------

/// Certificates made with the `openssl` command: a CA, a server certificate for 127.0.0.1 and a
/// client certificate, all EC P-256, in a temporary directory.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| {
                    panic!("the openssl command must be installed for this test (scripts/test does): {e}")
                });
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=lagbudget test CA",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        for who in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &key,
                        "-out",
                        &csr,
                        "-subj",
                        &format!("/CN={who}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certificates { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Accepts TLS connections for axum; a client that fails the handshake is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An https origin with the server certificate; with `mutual`, it requires a client
/// certificate issued by the CA.
async fn https_origin(certificates: &Certificates, mutual: bool) -> Origin {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certificates.path("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(certificates.path("server.key")).expect("server.key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(certificates.path("ca.pem")).expect("ca.pem") {
            roots.add(ca.expect("ca")).expect("root");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let (shared, app) = Origin::app();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let origin = Origin { addr, shared, task };
    origin.set_page(1, "no-cache");
    origin
}

/// https with a private CA: without `ca_file` the handshake fails (`connect`, saying TLS);
/// with it the probe measures. Mutual TLS: without a client certificate the server refuses
/// the handshake; with `client_cert` and `client_key` the probe measures.
#[tokio::test(flavor = "multi_thread")]
async fn https_trusts_the_ca_file_and_presents_the_client_certificate() {
    let certificates = Certificates::make();
    let changes = Changes::create().await;
    changes.add(1, 60.0).await;
    let server = https_origin(&certificates, false).await;
    let mutual = https_origin(&certificates, true).await;
    let ca = certificates.path("ca.pem");
    let (cert, key) = (
        certificates.path("client.pem"),
        certificates.path("client.key"),
    );
    let yaml = format!(
        "sources:
  untrusted: {{ http: {{ url: \"https://127.0.0.1:{server}\" }} }}
  trusted: {{ http: {{ url: \"https://127.0.0.1:{server}\", ca_file: {ca} }} }}
  anonymous: {{ http: {{ url: \"https://127.0.0.1:{mutual}\", ca_file: {ca} }} }}
  identified: {{ http: {{ url: \"https://127.0.0.1:{mutual}\", ca_file: {ca}, client_cert: {cert}, client_key: {key} }} }}
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
budgets:
  - name: tls
    max_lag: 30s
    probes:
{}",
        ["untrusted", "trusted", "anonymous", "identified"]
            .iter()
            .map(|source| format!(
                "      - name: {source}\n        http_watermark: {{ source: {source}, path: /page, pointer: /version, oldest_pending: {} }}\n",
                changes.oldest_pending()
            ))
            .collect::<String>(),
        server = server.addr.port(),
        mutual = mutual.addr.port(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let config = load_config(&yaml);
    let sources = SourceHandles::build(&config, None).expect("handles");

    let untrusted = run_once(&config, &sources, "untrusted")
        .await
        .expect_err("an unknown issuer");
    println!("untrusted: {untrusted}");
    assert_eq!(untrusted.reason.as_str(), "connect");
    assert!(
        untrusted
            .message
            .starts_with("TLS with the server failed for GET /page"),
        "{untrusted}"
    );
    assert!(untrusted.message.contains("UnknownIssuer"), "{untrusted}");

    let trusted = run_once(&config, &sources, "trusted")
        .await
        .expect("trusted");
    assert_eq!(trusted.sample.lag_seconds, Some(0.0));

    let anonymous = run_once(&config, &sources, "anonymous")
        .await
        .expect_err("no client certificate");
    println!("anonymous: {anonymous}");
    // Under TLS 1.3 the server refuses a missing certificate after the client's side of the
    // handshake is done: the client reads its alert or, when it tries to send first, only a
    // closed connection. Either way the probe is down with `connect`.
    assert_eq!(anonymous.reason.as_str(), "connect", "{anonymous}");
    let alert = anonymous
        .message
        .starts_with("TLS with the server failed for GET /page")
        && anonymous.message.contains("CertificateRequired");
    assert!(
        alert || anonymous.message.contains("connection"),
        "{anonymous}"
    );

    let identified = run_once(&config, &sources, "identified")
        .await
        .expect("identified");
    assert_eq!(identified.sample.lag_seconds, Some(0.0));

    let Some(SourceHandle::Http(client)) = sources.get("identified") else {
        panic!("an http source");
    };
    let answer = client
        .check(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .expect("source check");
    assert_eq!(answer, "answers HTTP 404 Not Found at its url over TLS");
    changes.drop_table().await;
}
