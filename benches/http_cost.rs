//! What one run of `http_watermark` costs (a bench binary, not a timed test): `cargo bench
//! --bench http_cost`.
//!
//! Per run: HTTP requests that reach the origin, bytes on the wire between the probe and the
//! HTTP server (request and answer, headers included, counted by a TCP relay in front of it),
//! and wall time, p50 and p99; then the `oldest_pending` comparison alone. Two shapes:
//! - the Elasticsearch recipe (POST `_search` with a JSON body, version by JSON pointer)
//!   straight to an origin that answers the recorded `_search` answer of
//!   `tests/fixtures/http/elasticsearch_search.json`;
//! - a page read through a private Varnish (version header, `max-age=3600`), so every run after
//!   the first is a cache hit, as a CDN- or Varnish-fronted view would be.
//!
//! Needs the machine's PostgreSQL (127.0.0.1:5432, as the test suite) and, for the second
//! shape, `/usr/sbin/varnishd`.

use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use lagbudget::probe::oldest_pending::{OldestPending, SourceComparison};
use lagbudget::probe::{ProbeRunner, SourceHandles};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const RUNS: usize = 500;
const WARM_UP: usize = 20;
const PG_DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const SEARCH_BODY: &str = r#"{"size":1,"sort":[{"source_seq":"desc"}],"_source":["source_seq"],"track_total_hits":false}"#;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "http_cost: benchmarks run with `cargo bench --bench http_cost`; nothing to test here"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let (pg, connection) = tokio_postgres::connect(PG_DSN, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run at {PG_DSN}: {e}"));
    tokio::spawn(connection);
    let table = format!("http_cost_changes_{}", std::process::id());
    pg.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (seq bigint PRIMARY KEY, changed_at timestamptz NOT NULL);
         INSERT INTO {table} SELECT s, now() - make_interval(secs => 2000 - s)
           FROM generate_series(1, 2000) AS s;"
    ))
    .await
    .expect("changes table");
    let query = format!("SELECT min(changed_at), count(*) FROM {table} WHERE seq > $1");

    let origin = Origin::start().await;
    let relay = Relay::start(origin.port).await;
    let search = measure(
        "Elasticsearch recipe, POST _search straight to the origin",
        &relay,
        &origin,
        &format!(
            "pointer: /hits/hits/0/_source/source_seq, path: /orders/_search, method: POST, body: '{SEARCH_BODY}'"
        ),
        &query,
    )
    .await;

    let varnish = Varnish::start(origin.port).await;
    let cached_relay = Relay::start(varnish.port).await;
    let cached = measure(
        "page through Varnish (cache hits), version header",
        &cached_relay,
        &origin,
        "header: X-Source-Version, path: /page",
        &query,
    )
    .await;
    drop(varnish);

    let comparison = comparison_alone(&query).await;
    pg.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");

    println!("\n| what | {} | {} |", search.name, cached.name);
    println!("|---|---|---|");
    for (what, a, b) in [
        (
            "origin requests per run",
            format!("{:.3}", search.origin_requests),
            format!("{:.3}", cached.origin_requests),
        ),
        (
            "bytes sent per run (request line, headers, body)",
            format!("{:.0}", search.bytes_out),
            format!("{:.0}", cached.bytes_out),
        ),
        (
            "bytes received per run (status, headers, body)",
            format!("{:.0}", search.bytes_in),
            format!("{:.0}", cached.bytes_in),
        ),
        (
            "TCP connections opened",
            search.connections.to_string(),
            cached.connections.to_string(),
        ),
        (
            "ms per run, p50 / p99 (request + oldest_pending)",
            format!("{:.2} / {:.2}", search.p50, search.p99),
            format!("{:.2} / {:.2}", cached.p50, cached.p99),
        ),
    ] {
        println!("| {what} | {a} | {b} |");
    }
    println!(
        "| oldest_pending alone, ms p50 / p99 | {:.2} / {:.2} | |",
        comparison.0, comparison.1
    );
}

struct Figures {
    name: &'static str,
    origin_requests: f64,
    bytes_out: f64,
    bytes_in: f64,
    connections: u64,
    p50: f64,
    p99: f64,
}

async fn measure(
    name: &'static str,
    relay: &Relay,
    origin: &Origin,
    read: &str,
    query: &str,
) -> Figures {
    let yaml = format!(
        "sources:
  view: {{ http: {{ url: \"http://127.0.0.1:{}\" }} }}
  db: {{ postgres: {{ dsn: \"{PG_DSN}\" }} }}
budgets:
  - name: cost
    max_lag: 30s
    probes:
      - name: view
        http_watermark: {{ source: view, {read}, oldest_pending: {{ source: db, query: \"{query}\" }} }}
",
        relay.port
    );
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("cost.yaml");
    std::fs::write(&path, yaml).expect("config");
    let config = lagbudget::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let sources = SourceHandles::build(&config, None).expect("sources");
    let probe = &config.budgets[0].probes[0];
    let mut runner = ProbeRunner::new(probe, &sources).expect("runner");
    for _ in 0..WARM_UP {
        run_once(&mut runner).await;
    }
    let (requests, counted) = (origin.requests(), relay.totals());
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        times.push(run_once(&mut runner).await);
    }
    let origin_requests = (origin.requests() - requests) as f64 / RUNS as f64;
    // Close the pooled connections so the relay has counted every byte they carried.
    drop(runner);
    drop(sources);
    relay.wait_idle().await;
    let after = relay.totals();
    times.sort();
    let ms = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Figures {
        name,
        origin_requests,
        bytes_out: (after.0 - counted.0) as f64 / RUNS as f64,
        bytes_in: (after.1 - counted.1) as f64 / RUNS as f64,
        connections: after.2 - counted.2,
        p50: ms(0.5),
        p99: ms(0.99),
    }
}

/// One run, which must measure a lag; how long it took.
async fn run_once(runner: &mut ProbeRunner) -> Duration {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let reading = runner.run(deadline).await.expect("run");
    assert!(reading.sample.lag_seconds.is_some());
    started.elapsed()
}

/// The `oldest_pending` comparison alone, p50 and p99 in ms.
async fn comparison_alone(query: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db.yaml");
    std::fs::write(
        &path,
        format!("sources:\n  db: {{ postgres: {{ dsn: \"{PG_DSN}\" }} }}\n"),
    )
    .expect("config");
    let config = lagbudget::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let sources = SourceHandles::build(&config, None).expect("sources");
    let comparison = SourceComparison::new(
        &OldestPending {
            source: "db".to_owned(),
            query: query.to_owned(),
        },
        &sources,
    )
    .expect("comparison");
    let mut times = Vec::with_capacity(RUNS);
    for n in 0..(WARM_UP + RUNS) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let started = Instant::now();
        comparison.one("1234", deadline).await.expect("comparison");
        if n >= WARM_UP {
            times.push(started.elapsed());
        }
    }
    times.sort();
    let ms = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (ms(0.5), ms(0.99))
}

/// The origin: the recorded `_search` answer on `POST /orders/_search`, and a page with a
/// version header and `max-age=3600` on `/page`. Counts the requests it answers.
struct Origin {
    port: u16,
    requests: Arc<AtomicU64>,
}

impl Origin {
    async fn start() -> Origin {
        let search = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/http/elasticsearch_search.json"),
        )
        .expect("fixture");
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let app = Router::new()
            .route(
                "/orders/_search",
                axum::routing::post(move || {
                    let body = search.clone();
                    async move { ([(header::CONTENT_TYPE, "application/json")], body) }
                }),
            )
            .route(
                "/page",
                axum::routing::get(|| async {
                    (
                        [
                            ("x-source-version", "1234"),
                            ("cache-control", "public, max-age=3600"),
                            ("content-type", "application/json"),
                        ],
                        "{\"version\":1234}",
                    )
                        .into_response()
                }),
            )
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::Relaxed);
                        next.run(request).await
                    }
                },
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Origin { port, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A TCP relay in front of an HTTP server that counts the bytes each way and the connections.
struct Relay {
    port: u16,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay {
            port: listener.local_addr().expect("addr").port(),
            sent: Arc::default(),
            received: Arc::default(),
            opened: Arc::default(),
            open: Arc::default(),
        };
        let (sent, received, opened, open) = (
            relay.sent.clone(),
            relay.received.clone(),
            relay.opened.clone(),
            relay.open.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", target))
                    .await
                    .expect("relay target");
                opened.fetch_add(1, Ordering::Relaxed);
                open.fetch_add(1, Ordering::Relaxed);
                let (sent, received, open) = (sent.clone(), received.clone(), open.clone());
                tokio::spawn(async move {
                    let mut client = Counted {
                        inner: client,
                        read: sent,
                        written: received,
                    };
                    let mut server = server;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        relay
    }

    /// Bytes from the probe, bytes to the probe, connections opened.
    fn totals(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.opened.load(Ordering::Relaxed),
        )
    }

    async fn wait_idle(&self) {
        let started = Instant::now();
        while self.open.load(Ordering::Relaxed) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the probe's connections did not close"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The probe's side of a relayed connection, counting what it reads and writes.
struct Counted {
    inner: TcpStream,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A private `varnishd` in front of the origin, default VCL; stopped on drop.
struct Varnish {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Varnish {
    async fn start(origin: u16) -> Varnish {
        let dir = tempfile::tempdir().expect("dir");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let child = Command::new("/usr/sbin/varnishd")
            .args(["-F", "-j", "none"])
            .args(["-a", &format!("127.0.0.1:{port}")])
            .args(["-b", &format!("127.0.0.1:{origin}")])
            .arg("-n")
            .arg(dir.path().join("work"))
            .args(["-s", "malloc,16m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("/usr/sbin/varnishd");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "varnishd did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Varnish {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
