//! The daemon as a whole: reloads, a hung source, the HTTP API, and the binary's CLI with
//! secrets that must never leak.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::support::{
    Daemon, Metrics, PATIENCE, Projection, SHARED_PG_DSN, closed_port, unique, wait_for,
};

/// A TCP server that accepts connections and never says a word: the worst kind of source.
async fn hung_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// Issue acceptance: with a source that accepts and never answers, the healthy probe keeps
/// completing successful runs while the hung probes time out again and again; the hung probe is
/// down with `timeout`. How many runs the healthy probe completes per interval meanwhile is a
/// figure, not an assertion: `cargo bench --bench hung_source` (BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread")]
async fn hung_source_delays_no_other_probe() {
    let (hung_port, hung_task) = hung_listener().await;
    let projection = Projection::caught_up(SHARED_PG_DSN, 1).await;
    let config = format!(
        "listen: 127.0.0.1:0
sources:
  healthy: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  hung: {{ postgres: {{ dsn: \"host=127.0.0.1 port={hung_port} user=postgres dbname=x\", max_connections: 1 }} }}
budgets:
  - name: healthy
    max_lag: 10s
    probes:
      - {{ name: p, interval: 1s, sql_watermark: {healthy} }}
  - name: hung
    max_lag: 10s
    probes:
      - {{ name: a, interval: 1s, timeout: 1s, sql_watermark: {hung} }}
      - {{ name: b, interval: 1s, timeout: 1s, sql_watermark: {hung} }}
",
        healthy = projection.probe_yaml("healthy"),
        hung = projection.probe_yaml("hung"),
    );
    let daemon = Daemon::start(&config).await;
    daemon.wait_ready(PATIENCE).await;
    let healthy = [("budget", "healthy"), ("probe", "p")];
    let hung_timeouts = |m: &Metrics| {
        ["timeout", "pool_timeout"]
            .iter()
            .map(|reason| {
                m.get(
                    "lagbudget_probe_errors_total",
                    &[("budget", "hung"), ("probe", "a"), ("reason", reason)],
                )
                .expect("error counters exist from load")
            })
            .sum::<f64>()
    };
    let healthy_errors = |m: &Metrics| {
        m.samples
            .iter()
            .filter(|(name, labels, _)| {
                name == "lagbudget_probe_errors_total"
                    && healthy
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
            .sum::<f64>()
    };
    // The healthy probe runs 5 more times while the hung probe hangs through at least three
    // of its own runs; every one of those healthy runs succeeds.
    const MORE: u64 = 5;
    let before = daemon.runs("healthy", "p").await;
    let errors_before = healthy_errors(&daemon.metrics().await);
    let started = std::time::Instant::now();
    let m = wait_for(
        "5 more healthy runs while the hung probe times out 3 times",
        Duration::from_secs(60),
        || async {
            let runs = daemon.runs("healthy", "p").await;
            let m = daemon.metrics().await;
            (runs >= before + MORE && hung_timeouts(&m) >= 3.0).then_some(m)
        },
    )
    .await;
    println!(
        "healthy probe: {MORE}+ more runs in {:?} while the hung probe timed out {} times",
        started.elapsed(),
        hung_timeouts(&m)
    );
    assert_eq!(
        healthy_errors(&m),
        errors_before,
        "every healthy run succeeded meanwhile:\n{}",
        m.text
    );
    assert_eq!(m.get("lagbudget_probe_up", &healthy), Some(1.0));

    let hung = daemon.probe("hung", "a").await;
    assert_eq!(hung["up"], false);
    let reason = hung["error"]["reason"].as_str().expect("reason");
    assert!(
        reason == "timeout" || reason == "pool_timeout",
        "hung source ⇒ timeout, got {hung}"
    );
    // Two probes share one connection slot of the hung source: a run either times out
    // connecting or, rarely, waiting for the slot (both counted in `hung_timeouts` above).
    assert!(!m.has_series("lagbudget_lag_seconds", &[("budget", "hung")]));
    assert_eq!(daemon.state("healthy").await, "ok");
    assert_eq!(daemon.state("hung").await, "unknown");

    daemon.stop().await;
    hung_task.abort();
    projection.drop_schema().await;
}

/// Issue acceptance: a valid reload adds and removes series and keeps unchanged probes'
/// history; an invalid one keeps the old config running and sets the reload metric to 0.
#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_valid_configs_and_keeps_running_on_invalid_ones() {
    let projection = Projection::caught_up(SHARED_PG_DSN, 1).await;
    let probe = projection.probe_yaml("db");
    let nowhere = closed_port();
    let head = format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  nowhere: {{ postgres: {{ dsn: \"host=127.0.0.1 port={nowhere} user=postgres dbname=x\" }} }}
budgets:
  - name: kept
    max_lag: 10s
    probes:
      - {{ name: failing, interval: 1s, sql_watermark: {failing} }}
      - {{ name: working, interval: 1s, sql_watermark: {probe} }}
",
        failing = projection.probe_yaml("nowhere"),
    );
    let first = format!(
        "{head}  - name: removed
    max_lag: 10s
    probes:
      - {{ name: p, interval: 1s, sql_watermark: {probe} }}
"
    );
    let second = format!(
        "{head}  - name: added
    max_lag: 10s
    probes:
      - {{ name: p, interval: 1s, sql_watermark: {probe} }}
"
    );
    let daemon = Daemon::start(&first).await;
    daemon.wait_ready(PATIENCE).await;
    let failing = [
        ("budget", "kept"),
        ("probe", "failing"),
        ("reason", "connect"),
    ];
    // History worth keeping: the failing probe has counted two connect errors.
    let m = daemon
        .wait_for_metrics("2 connect errors of kept/failing", PATIENCE, |m| {
            m.get("lagbudget_probe_errors_total", &failing)
                .is_some_and(|n| n >= 2.0)
        })
        .await;
    let errors_before = m
        .get("lagbudget_probe_errors_total", &failing)
        .expect("counter");
    assert!(m.has_series("lagbudget_probe_up", &[("budget", "removed")]));
    assert!(!m.has_series("lagbudget_probe_up", &[("budget", "added")]));
    let working_runs = daemon.runs("kept", "working").await;

    let (status, body) = daemon.reload_with(&second).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("1 probes started, 1 stopped, 2 unchanged"),
        "{body}"
    );
    let m = daemon.metrics().await;
    assert!(
        !m.text.contains("budget=\"removed\""),
        "removed budget's series vanish"
    );
    assert!(m.has_series("lagbudget_probe_stale", &[("budget", "added")]));
    assert!(m.has_series("lagbudget_budget_info", &[("budget", "added")]));
    let errors_after = m
        .get("lagbudget_probe_errors_total", &failing)
        .expect("counter");
    assert!(
        errors_after >= errors_before,
        "unchanged probe keeps its counter: {errors_before} → {errors_after}"
    );
    assert!(daemon.runs("kept", "working").await >= working_runs);
    assert_eq!(
        m.get("lagbudget_config_last_reload_successful", &[]),
        Some(1.0)
    );
    daemon.wait_for_state("added", "ok", PATIENCE).await;

    // An invalid file: every error reported, nothing changes, the reload metric says 0.
    let broken = second.replace("max_lag: 10s", "max_lag: ten seconds");
    let (status, body) = daemon.reload_with(&broken).await;
    assert_eq!(status, 500);
    assert!(body.contains("budgets[0].max_lag"), "{body}");
    assert!(body.contains("budgets[1].max_lag"), "{body}");
    // The old config keeps running: its probes go on running (two more runs, observed).
    daemon.wait_for_runs("added", "p", 2, PATIENCE).await;
    let m = daemon.metrics().await;
    assert_eq!(
        m.get("lagbudget_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(daemon.state("added").await, "ok");

    let (status, _) = daemon.reload_with(&second).await;
    assert_eq!(status, 200);
    let m = daemon.metrics().await;
    assert_eq!(
        m.get("lagbudget_config_last_reload_successful", &[]),
        Some(1.0)
    );

    daemon.stop().await;
    projection.drop_schema().await;
}

/// The status API: JSON shape, CORS, caching, 404, readiness and the status page.
#[tokio::test(flavor = "multi_thread")]
async fn api_serves_json_with_cors_and_readiness() {
    let (hung_port, hung_task) = hung_listener().await;
    let projection = Projection::caught_up(SHARED_PG_DSN, 2).await;
    let config = format!(
        "listen: 127.0.0.1:0
http:
  cors_allowed_origins: [\"https://shop.example.com\"]
  api_cache_max_age: 2s
sources:
  db: {{ postgres: {{ dsn: \"{SHARED_PG_DSN}\" }} }}
  hung: {{ postgres: {{ dsn: \"host=127.0.0.1 port={hung_port} user=postgres dbname=x\" }} }}
budgets:
  - name: checkout
    owner: team-checkout
    labels: {{ tier: \"1\" }}
    max_lag: 30s
    objective: {{ target: 99.9%, window: 28d }}
    probes:
      - {{ name: projection, interval: 1s, sql_watermark: {probe} }}
  - name: slow
    max_lag: 60s
    probes:
      - {{ name: hung, interval: 3s, timeout: 3s, sql_watermark: {hung} }}
",
        probe = projection.probe_yaml("db"),
        hung = projection.probe_yaml("hung"),
    );
    let daemon = Daemon::start(&config).await;
    // The hung probe's first run takes its whole 3 s timeout: not ready until it ends. Whether
    // it had ended is read after the answer (a loaded machine may be slow to ask), so a 200
    // here is only wrong if the probe had not run.
    let ready = daemon.get("/readyz").await;
    let (status, body) = (ready.status(), ready.text().await.expect("body"));
    if daemon.runs("slow", "hung").await == 0 {
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("have not run yet"), "{body}");
    } else {
        eprintln!("/readyz was asked after the hung probe's first run: {status} {body}");
    }
    assert_eq!(daemon.text("/healthz").await, "ok\n");
    daemon.wait_ready(PATIENCE).await;

    let response = reqwest::Client::new()
        .get(daemon.url("/api/v1/budgets"))
        .header("Origin", "https://shop.example.com")
        .send()
        .await
        .expect("api");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert_eq!(response.headers()["cache-control"], "max-age=2");
    let list: serde_json::Value = response.json().await.expect("json");
    let checkout = &list["budgets"][0];
    assert_eq!(checkout["name"], "checkout");
    assert_eq!(checkout["state"], "ok");
    assert_eq!(checkout["within_budget"], true);
    assert_eq!(checkout["owner"], "team-checkout");
    assert_eq!(checkout["lag_seconds"], 0.0);
    assert_eq!(checkout["max_lag_seconds"], 30.0);
    assert!(checkout["since"].as_str().expect("since").ends_with('Z'));
    assert_eq!(checkout["probes"][0]["kind"], "sql_watermark");
    assert_eq!(checkout["probes"][0]["backlog"]["unit"], "rows");
    let slow = &list["budgets"][1];
    assert_eq!(slow["state"], "unknown");
    assert_eq!(slow["within_budget"], false);
    assert!(slow["lag_seconds"].is_null());

    let other_origin = reqwest::Client::new()
        .get(daemon.url("/api/v1/budgets/checkout"))
        .header("Origin", "https://evil.example.com")
        .send()
        .await
        .expect("api");
    assert!(
        other_origin
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(daemon.get("/api/v1/budgets/nope").await.status(), 404);

    let m = daemon.metrics().await;
    assert_eq!(
        m.get(
            "lagbudget_budget_info",
            &[
                ("budget", "checkout"),
                ("owner", "team-checkout"),
                ("tier", "1")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get("lagbudget_objective_ratio", &[("budget", "checkout")]),
        Some(0.999)
    );
    assert_eq!(
        m.get(
            "lagbudget_objective_window_seconds",
            &[("budget", "checkout")]
        ),
        Some(28.0 * 86400.0)
    );
    assert_eq!(
        m.get("lagbudget_budget_seconds", &[("budget", "checkout")]),
        Some(30.0)
    );
    assert!(
        m.text
            .contains("lagbudget_probe_duration_seconds_bucket{kind=\"sql_watermark\"")
    );
    assert!(m.has_series("lagbudget_build_info", &[]));

    let page = daemon.text("/").await;
    assert!(
        page.contains("<section class=\"card ok\" data-budget=\"checkout\">"),
        "{page}"
    );
    assert!(
        page.contains("<section class=\"card unknown\" data-budget=\"slow\">")
            && page.contains("timeout"),
        "{page}"
    );

    daemon.stop().await;
    hung_task.abort();
    projection.drop_schema().await;
}

fn lagbudget() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lagbudget"))
}

/// A config with budget `b` and one `sql_watermark` probe `p` on source `db`.
fn one_probe_config(dsn: &str, watermark: &str) -> String {
    format!(
        "sources:\n  db: {{ postgres: {{ dsn: \"{dsn}\" }} }}\nbudgets:\n  - name: b\n    max_lag: 5s\n    probes:\n      - name: p\n        sql_watermark: {{ source: db, watermark: \"{watermark}\", oldest_pending: \"SELECT now() WHERE $1 > 0\" }}\n"
    )
}

/// `check` exits 0 on a valid file, 2 with every error on an invalid one, and never panics.
#[test]
fn check_reports_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, one_probe_config(SHARED_PG_DSN, "SELECT 1")).expect("write");
    let out = lagbudget()
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid (1 sources, 1 budgets, 1 probes)")
    );

    let connect = lagbudget()
        .args(["check", "--connect", "-c"])
        .arg(&good)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&connect.stdout);
    assert!(connect.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok    source db (postgres): PostgreSQL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    probe b/p (sql_watermark): queries accepted"),
        "{stdout}"
    );

    // A role that may connect but not read the table: --connect names the missing grant.
    let role = unique("lb_nogrant");
    let table = unique("lb_granted");
    let admin = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(format!(
            "CREATE ROLE {role} LOGIN; CREATE TABLE {table} (id bigint)"
        ))
        .status()
        .expect("psql");
    assert!(admin.success());
    let no_grant = dir.path().join("no-grant.yaml");
    std::fs::write(
        &no_grant,
        one_probe_config(
            &format!("host=127.0.0.1 user={role} dbname=test"),
            &format!("SELECT max(id) FROM {table}"),
        ),
    )
    .expect("write");
    let denied = lagbudget()
        .args(["check", "--connect", "-c"])
        .arg(&no_grant)
        .output()
        .expect("run");
    let _ = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-c",
        ])
        .arg(format!("DROP TABLE {table}; DROP ROLE {role}"))
        .status();
    let stdout = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok    source db (postgres)"), "{stdout}");
    assert!(
        stdout
            .contains("FAIL  probe b/p (sql_watermark): query: 42501: permission denied for table"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "sources:\n  db: { postgres: { dsn: \"host=x\" } }\nbudgets:\n  - name: b\n    max_lag: -1s\n    bogus: 1\n    probes: []\n",
    )
    .expect("write");
    let out = lagbudget()
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":5:"),
        "max_lag error names its line: {stderr}"
    );
    assert!(stderr.contains("budgets[0].bogus"), "{stderr}");
    assert!(stderr.contains("errors in config"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = lagbudget()
        .args(["check", "-c", "/nonexistent/lagbudget.yaml"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
}

/// Issue acceptance: a password given in a DSN or a secret file never appears in logs,
/// `/metrics`, the API, the status page, `check` or `probe` output.
#[test]
fn secrets_never_leave_the_process() {
    const FILE_SECRET: &str = "file-secret-Zq8Xw";
    const INLINE_SECRET: &str = "inline-secret-Pv3Kr";
    const ENV_SECRET: &str = "env-secret-Mt5Ya";
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("db-password");
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).expect("write secret");
    let schema = unique("lb_secret");
    let port = closed_port();
    let listen_port = closed_port();
    let config = dir.path().join("lagbudget.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{listen_port}
sources:
  from-file: {{ postgres: {{ dsn: \"host=127.0.0.1 port={port} user=lb password=${{file:{file}}} dbname=x\" }} }}
  inline: {{ postgres: {{ dsn: \"host=127.0.0.1 port=5432 user=postgres password={INLINE_SECRET} dbname=test\" }} }}
  from-env: {{ postgres: {{ dsn: \"postgresql://lb:${{LB_TEST_PASSWORD}}@127.0.0.1:{port}/x\" }} }}
budgets:
  - name: secretive
    max_lag: 10s
    probes:
      - {{ name: file, interval: 1s, sql_watermark: {{ source: from-file, watermark: \"SELECT 1\", oldest_pending: \"SELECT now() WHERE $1 > 0\" }} }}
      - {{ name: inline, interval: 1s, sql_watermark: {{ source: inline, watermark: \"SELECT 1 FROM {schema}.missing\", oldest_pending: \"SELECT now() WHERE $1 > 0\" }} }}
      - {{ name: env, interval: 1s, sql_watermark: {{ source: from-env, watermark: \"SELECT 1\", oldest_pending: \"SELECT now() WHERE $1 > 0\" }} }}
",
            file = secret_file.display()
        ),
    )
    .expect("write config");
    let secrets = [FILE_SECRET, INLINE_SECRET, ENV_SECRET];
    let assert_clean = |what: &str, text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} leaks a secret:\n{text}");
        }
    };

    let mut child = lagbudget()
        .args(["--log.level", "debug", "run", "-c"])
        .arg(&config)
        .env("LB_TEST_PASSWORD", ENV_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let base = format!("http://127.0.0.1:{listen_port}");
    let bodies = runtime.block_on(async {
        let client = reqwest::Client::new();
        wait_for("the daemon to be ready", PATIENCE, || async {
            let ready = client.get(format!("{base}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await;
        // Every probe fails a few times (three runs each), so that errors are logged and
        // counted.
        wait_for("three runs of every probe", PATIENCE, || async {
            let response = client
                .get(format!("{base}/api/v1/budgets/secretive"))
                .send()
                .await
                .ok()?;
            let status: serde_json::Value = response.json().await.ok()?;
            let probes = status["probes"].as_array()?;
            (probes.len() == 3 && probes.iter().all(|p| p["runs"].as_u64() >= Some(3)))
                .then_some(())
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
            bodies.push((path, body));
        }
        bodies
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read logs");
    assert!(
        exit.success(),
        "graceful shutdown exits 0: {exit:?}\n{logs}"
    );
    assert!(logs.contains("probe down"), "failures are logged: {logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert_clean("logs", &logs);
    for (path, body) in &bodies {
        assert_clean(path, body);
    }
    let api = &bodies[1].1;
    assert!(api.contains("\"reason\":\"connect\""), "{api}");
    assert!(api.contains("\"reason\":\"query\""), "{api}");

    for args in [vec!["probe", "-c"], vec!["check", "--connect", "-c"]] {
        let out = lagbudget()
            .args(&args)
            .arg(&config)
            .env("LB_TEST_PASSWORD", ENV_SECRET)
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
            "{args:?} reports failures: {text}"
        );
        assert_clean(&format!("{args:?}"), &text);
    }

    // A secret interpolated where it makes the config invalid is not echoed either.
    let invalid = dir.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        format!(
            "sources: {{}}\nbudgets:\n  - name: b\n    max_lag: \"${{file:{}}}\"\n    probes: []\n",
            secret_file.display()
        ),
    )
    .expect("write");
    let out = lagbudget()
        .args(["check", "-c"])
        .arg(&invalid)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_clean(
        "check of an invalid config",
        &String::from_utf8_lossy(&out.stderr),
    );
}
