//! `lagbudget demo`: the embedded mock Kafka cluster, its consumer groups and the daemon, run
//! in-process on a free port.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use lagbudget::demo::{BUDGETS, LOYALTY_BUDGET, run_demo};

use crate::browser::Driver;
use crate::support::{Metrics, signal};

/// How long the demo has to show ok → breach → ok (the acceptance).
const CYCLE_LIMIT: Duration = Duration::from_secs(90);

/// Issue acceptance: `lagbudget demo` starts, and within 90 s a budget goes ok → breach → ok
/// while `/metrics` shows lag for every demo budget. Then it stops, threads included.
#[tokio::test(flavor = "multi_thread")]
async fn demo_budget_goes_ok_breach_ok_and_every_budget_shows_lag() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut demo = tokio::spawn(run_demo(addr, shutdown.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let base = format!("http://{addr}");

    // Each change of the loyalty budget's state, with when it was seen.
    let mut states: Vec<(Duration, String)> = Vec::new();
    let mut with_lag: BTreeSet<&str> = BTreeSet::new();
    let mut polls = 0_u64;
    while started.elapsed() < CYCLE_LIMIT {
        assert!(
            !demo.is_finished(),
            "the demo ended by itself: {:?}",
            (&mut demo).await
        );
        let loyalty = format!("{base}/api/v1/budgets/{LOYALTY_BUDGET}");
        if let Ok(response) = http.get(&loyalty).send().await {
            assert_eq!(response.status(), 200, "{LOYALTY_BUDGET} exists");
            let status: serde_json::Value = response.json().await.expect("json");
            let state = status["state"].as_str().expect("state").to_owned();
            if states.last().is_none_or(|(_, last)| *last != state) {
                println!(
                    "{:>6.1}s  {LOYALTY_BUDGET}: {state} (lag {})",
                    started.elapsed().as_secs_f64(),
                    status["lag_seconds"]
                );
                states.push((started.elapsed(), state));
            }
        }
        if polls % 4 == 0 && with_lag.len() < BUDGETS.len() {
            if let Ok(response) = http.get(format!("{base}/metrics")).send().await {
                let metrics = Metrics::parse(&response.text().await.expect("metrics body"));
                for budget in BUDGETS {
                    if metrics.has_series("lagbudget_lag_seconds", &[("budget", budget)])
                        && with_lag.insert(budget)
                    {
                        println!(
                            "{:>6.1}s  lagbudget_lag_seconds present for {budget}",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
        }
        if ok_breach_ok(&states) && with_lag.len() == BUDGETS.len() {
            break;
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if ok_breach_ok(&states) {
        demo_status_page(&http, &base).await;
    }

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(20), demo)
        .await
        .expect("the demo stops within 20 s of the shutdown signal")
        .expect("demo task");
    stopped.expect("the demo ran and stopped cleanly, every thread joined");

    let seen: Vec<String> = states
        .iter()
        .map(|(at, state)| format!("{state}@{:.1}s", at.as_secs_f64()))
        .collect();
    assert!(
        ok_breach_ok(&states),
        "{LOYALTY_BUDGET} must go ok → breach → ok within {CYCLE_LIMIT:?}; saw {seen:?}"
    );
    let missing: Vec<&str> = BUDGETS
        .iter()
        .copied()
        .filter(|b| !with_lag.contains(b))
        .collect();
    assert!(
        missing.is_empty(),
        "/metrics never had lagbudget_lag_seconds for {missing:?}"
    );
}

/// The demo's status page has its history from the first minute: the loyalty budget's page
/// lists the breach it just went through, its chart starts at the demo's start rather than an
/// hour back, and the overview in Chromium is saved as an artefact (and, with
/// `LAGBUDGET_REGENERATE=1`, as the README's picture, docs/src/images/status-page.png).
async fn demo_status_page(http: &reqwest::Client, base: &str) {
    let page = http
        .get(format!("{base}/budgets/{LOYALTY_BUDGET}"))
        .send()
        .await
        .expect("the loyalty page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("<table class=\"transitions\">") && page.contains("<b>breach</b>"),
        "the page lists the breach among the state changes:\n{page}"
    );
    assert!(
        page.contains("<polyline class=\"series"),
        "the lag is drawn:\n{page}"
    );
    assert!(
        !page.contains("last hour"),
        "the charts cover the demo's minute or two, not an empty hour:\n{page}"
    );

    let driver = Driver::start().await;
    let session = driver.session().await;
    session.set_window_size(1280, 1000).await;
    session.navigate(&format!("{base}/")).await;
    let png = session.screenshot().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lagbudget-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join("demo-overview.png"), &png).expect("demo screenshot");
    if std::env::var_os("LAGBUDGET_REGENERATE").is_some() {
        let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/images/status-page.png");
        std::fs::create_dir_all(readme.parent().expect("dir")).expect("images dir");
        std::fs::write(&readme, &png).expect("README screenshot");
        println!("wrote {}", readme.display());
    }
    session.close().await;
}

/// Ctrl-C stops `lagbudget demo` quietly: the daemon's Kafka client and the demo's producer and
/// consumers are destroyed before the mock cluster, so no client logs a broker it cannot reach.
#[tokio::test(flavor = "multi_thread")]
async fn demo_stops_on_sigint_without_kafka_errors() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("LAGBUDGET_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lagbudget demo");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let mut base = None;
    let started = Instant::now();
    while base.is_none() && started.elapsed() < Duration::from_secs(30) {
        if let Ok(line) = line_rx.recv_timeout(Duration::from_millis(200)) {
            base = line
                .split_once("metrics       ")
                .map(|(_, url)| url.trim().trim_end_matches("/metrics").to_owned());
            lines.push(line);
        }
    }
    let Some(base) = base else {
        let _ = child.kill();
        panic!("the demo printed no metrics URL:\n{}", lines.join("\n"));
    };

    // Every probe has measured: the daemon's client is connected to the cluster.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut measured = false;
    while !measured && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(response) = http.get(format!("{base}/metrics")).send().await {
            let metrics = Metrics::parse(&response.text().await.expect("metrics body"));
            measured = BUDGETS
                .iter()
                .all(|budget| metrics.has_series("lagbudget_lag_seconds", &[("budget", budget)]));
        }
    }
    if !measured {
        let _ = child.kill();
        panic!("the demo's budgets never all showed lag");
    }

    let pid = i32::try_from(child.id()).expect("pid");
    signal(pid, "INT");
    let stop_started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if stop_started.elapsed() > Duration::from_secs(25) {
            let _ = child.kill();
            panic!("the demo did not stop within 25 s of SIGINT");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    reader.join().expect("stderr reader");
    lines.extend(line_rx.try_iter());
    let log = lines.join("\n");
    assert!(
        status.success(),
        "the demo exits 0 on SIGINT ({status}):\n{log}"
    );
    let after_signal: Vec<&String> = lines
        .iter()
        .skip_while(|line| !line.contains("SIGINT"))
        .collect();
    assert!(
        after_signal
            .iter()
            .any(|line| line.contains("demo Kafka cluster and clients stopped")),
        "{log}"
    );
    let noisy: Vec<&&String> = after_signal
        .iter()
        .filter(|line| ["ERROR", "WARN", "FAIL"].iter().any(|w| line.contains(w)))
        .collect();
    assert!(
        noisy.is_empty(),
        "the demo's shutdown logged errors (a Kafka client outlived the cluster?):\n{log}"
    );
}

/// Whether `ok`, later `breach`, later `ok` again appear in this order.
fn ok_breach_ok(states: &[(Duration, String)]) -> bool {
    let mut wanted = ["ok", "breach", "ok"].into_iter().peekable();
    for (_, state) in states {
        if wanted.peek() == Some(&state.as_str()) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

/// `lagbudget demo --help` documents the subcommand and its loopback default.
#[test]
fn demo_help_works() {
    let output = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["demo", "--help"])
        .output()
        .expect("run lagbudget demo --help");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("--listen"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9464"), "{stdout}");
    assert!(stdout.contains("mock Kafka"), "{stdout}");
}
