//! `lagbudget demo`: the embedded mock Kafka cluster, its consumer groups and the daemon, run
//! in-process on a free port.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use lagbudget::demo::{BUDGETS, LOYALTY_BUDGET, run_demo};

use crate::support::Metrics;

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
