//! The OpenAPI document (`src/openapi.json`, served at `/api/v1/openapi.json`) against a live
//! daemon: schemathesis, a property-based API tester (PyPI, installed by `scripts/test` into
//! `.venv`), generates requests for every documented operation from the document and checks
//! that every answer's status code, content type, headers and body are what the document says,
//! that none is a server error, and that undocumented methods are refused (405). The daemon's budgets are in each state, with a failing probe
//! (the `error` object), a canary (its `canary` object, `replica` and `read_your_writes`) and a
//! cache probe (its `cache` object), so that the answers schemathesis validates hold every
//! shape the machine's services can produce cheaply.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::canary_e2e::unix_now;
use crate::support::{
    Daemon, PATIENCE, Projection, SHARED_PG_DSN, closed_port, connect, unique, wait_for,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A daemon on the machine's PostgreSQL with a budget in each state: `steady` in `ok`, `close`
/// in `warn` (a watermark always 17 s old against a 20 s budget: warn from 16 s, with 3 s for
/// a slow run), `behind` in `breach` (an order
/// paid an hour ago that the projection has not applied) and `blind` in `unknown` (its
/// database refuses connections), after `http_section` (a YAML `http:` mapping, or nothing).
/// Returns once each budget is in its state.
pub async fn daemon_in_every_state(http_section: &str) -> (Daemon, Vec<Projection>) {
    let steady = Projection::caught_up(SHARED_PG_DSN, 3).await;
    let behind = Projection::create(SHARED_PG_DSN).await;
    connect(SHARED_PG_DSN)
        .await
        .batch_execute(&format!(
            "INSERT INTO {}.orders (paid_at) VALUES (now() - interval '1 hour')",
            behind.schema
        ))
        .await
        .expect("an order the projection has not applied");
    let refused = closed_port();
    let config = format!(
        "listen: 127.0.0.1:0
{http_section}
sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  refused: {{ postgres: {{ dsn: \"host=127.0.0.1 port={refused} user=postgres dbname=x\" }} }}
budgets:
  - name: steady
    owner: team-points
    max_lag: 1m
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {steady_probe} }}
  - name: close
    max_lag: 20s
    probes:
      - name: clock
        interval: 1s
        sql_watermark:
          source: db
          watermark: \"SELECT now() - interval '17 seconds'\"
          mode: since_watermark
  - name: behind
    max_lag: 10s
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {behind_probe} }}
  - name: blind
    max_lag: 10s
    probes:
      - {{ name: projection, interval: 1s, timeout: 1s, sql_watermark: {blind_probe} }}
",
        steady_probe = steady.probe_yaml("db"),
        behind_probe = behind.probe_yaml("db"),
        blind_probe = steady.probe_yaml("refused"),
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_for_state("steady", "ok", PATIENCE).await;
    daemon.wait_for_state("close", "warn", PATIENCE).await;
    daemon.wait_for_state("behind", "breach", PATIENCE).await;
    daemon.wait_for_state("blind", "unknown", PATIENCE).await;
    (daemon, vec![steady, behind])
}

/// Issue 15 acceptance: the OpenAPI check runs against a live daemon with no failures.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_every_answer_of_a_live_daemon_as_documented() {
    let schemathesis = venv_bin("schemathesis");
    let built_at = unix_now() - 30.0;
    let cache_key = unique("lb_openapi_built_at");
    let mut redis = redis::Client::open(REDIS_URL)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis must be running on {REDIS_URL} for this test: {e}"));
    redis::cmd("SET")
        .arg(&cache_key)
        .arg(format!("{built_at:.3}"))
        .arg("EX")
        .arg(600)
        .query_async::<()>(&mut redis)
        .await
        .expect("SET the cache's build time");
    let instance = unique("openapi");
    let http = "http:
  cors_allowed_origins: [\"https://points.example\"]
  api_cache_max_age: 2s";
    let (daemon, projections) = daemon_in_every_state(http).await;
    // The same budgets plus a canary and a cache probe, loaded by reload: the lifecycle API
    // answers 200 then, and schemathesis' own reloads find nothing to change.
    let config = std::fs::read_to_string(&daemon.config_path).expect("config");
    let config = config.replacen(
        "sources:\n",
        &format!("sources:\n  cache: {{ redis: {{ url: \"{REDIS_URL}\" }} }}\n"),
        1,
    ) + &format!(
        "  - name: visible
    max_lag: 30s
    probes:
      - name: marker
        interval: 1s
        canary:
          write: {{ source: db }}
          read: [ {{ source: db, name: primary }} ]
          write_period: 500ms
          instance: {instance}
          read_your_writes: {{ after: 1s }}
          monotonic: {{ reads: 2 }}
  - name: menu
    max_lag: 1h
    probes:
      - {{ name: built, interval: 1s, redis_key_age: {{ source: cache, key: \"{cache_key}\", mode: since_build }} }}
"
    );
    let (status, body) = daemon.reload_with(&config).await;
    assert_eq!(
        status, 200,
        "the reload with a canary and a cache probe: {body}"
    );
    wait_for(
        "the canary's objects and the cache's in the API",
        PATIENCE,
        || async {
            let canary = daemon.probe("visible", "marker").await;
            let cache = daemon.probe("menu", "built").await;
            let shown = ["canary", "read_your_writes", "monotonic_reads", "replica"]
                .iter()
                .all(|key| canary.get(key).is_some());
            (shown && cache.get("cache").is_some()).then_some(())
        },
    )
    .await;

    let url = daemon.url("/api/v1/openapi.json");
    let work = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (status, output) = tokio::task::spawn_blocking({
        let work = work.path().to_owned();
        move || {
            run_bounded(
                Command::new(&schemathesis)
                    .args([
                        "run",
                        &url,
                        "--checks",
                        "not_a_server_error,status_code_conformance,\
                         content_type_conformance,response_schema_conformance,\
                         response_headers_conformance,unsupported_method",
                        "--phases",
                        "examples,coverage,fuzzing",
                        "--max-examples",
                        "40",
                        "--workers",
                        "2",
                        "--request-timeout",
                        "10",
                        "--no-color",
                        "--report",
                        "junit",
                        "--report-junit-path",
                        "junit.xml",
                    ])
                    // Hypothesis keeps its example database in the working directory.
                    .current_dir(&work),
                Duration::from_secs(120),
            )
        }
    })
    .await
    .expect("schemathesis");
    println!(
        "schemathesis ran in {:.1} s:\n{output}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status,
        "schemathesis found answers the document does not describe:\n{output}"
    );
    // Every operation was tested (schemathesis leaves out the document it was given, which it
    // loaded from the daemon above).
    let junit = std::fs::read_to_string(work.path().join("junit.xml")).expect("junit report");
    for operation in [
        "GET /",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
        "GET /api/v1/budgets",
        "GET /api/v1/budgets/{name}",
        "GET /examples/updating",
        "POST /-/reload",
    ] {
        assert!(
            junit.contains(&format!("<testcase name=\"{operation}\"")),
            "schemathesis tested {operation}:\n{junit}"
        );
    }
    daemon.stop().await;
    for projection in projections {
        projection.drop_schema().await;
    }
}

/// A program in the project's venv (`.venv`, made by `scripts/test`).
fn venv_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/test installs it into .venv (schemathesis: the version \
         SCHEMATHESIS_VERSION there, .venv/bin/pip install schemathesis==VERSION)",
        path.display()
    );
    path
}

/// Runs `command` to its end or kills it after `limit`; returns whether it succeeded and its
/// output (stdout, then stderr).
fn run_bounded(command: &mut Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("killed after {limit:?}:\n{output}")),
    }
}
