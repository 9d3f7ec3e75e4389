//! `canary` over HTTP, against a service the test serves itself (axum on 127.0.0.1, as the
//! `http_watermark` tests do): the daemon POSTs its markers to `/canary/<instance>`, and reads
//! them back from the same path, answered by one of two "replicas" of the test's own: A shows
//! the newest marker received, B the newest received at least `HOLD_BACK` before the request.
//! Which replica answers is the route, chosen by the view's query string: always A, always B,
//! or A and B in turn, as a load balancer in front of two replicas at different positions
//! would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::support::{
    Daemon, Metrics, PATIENCE, check_connect_lines, load_config, unique, wait_for,
};

/// How far replica B is behind: it shows the newest marker received this long ago.
const HOLD_BACK: f64 = 4.0;

/// Which replica answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replica {
    A,
    B,
}

/// One read of a route, as the service answered it.
#[derive(Debug, Clone, Copy)]
struct Served {
    replica: Replica,
    /// The seq shown; `None` for a 404 (no marker yet).
    seq: Option<i64>,
}

#[derive(Default)]
struct ServiceState {
    /// Every marker POSTed, in order: (path, body, seq, unix time received).
    written: Vec<(String, String, i64, f64)>,
    /// Reads by route (`a`, `b`, `balanced`).
    reads: HashMap<String, Vec<Served>>,
    /// Answer writes with 503.
    refuse_writes: bool,
}

/// The service: a writable primary and two replicas behind one path.
struct Service {
    addr: SocketAddr,
    state: Arc<Mutex<ServiceState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start() -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ServiceState::default()));
        let app = Router::new().fallback(serve).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Service { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServiceState> {
        self.state.lock().expect("service state")
    }

    fn reads(&self, route: &str) -> Vec<Served> {
        self.lock().reads.get(route).cloned().unwrap_or_default()
    }

    /// Seconds between the first and the newest marker received.
    fn written_span(&self) -> f64 {
        let state = self.lock();
        match (state.written.first(), state.written.last()) {
            (Some(first), Some(last)) => last.3 - first.3,
            _ => 0.0,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(state): State<Arc<Mutex<ServiceState>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let now = lagbudget::clock::unix_now();
    let mut state = state.lock().expect("service state");
    if !uri.path().starts_with("/canary/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if method == Method::POST {
        if state.refuse_writes {
            return (StatusCode::SERVICE_UNAVAILABLE, "read-only for maintenance").into_response();
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let Some(seq) = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|json| json["seq"].as_i64())
        else {
            return (StatusCode::BAD_REQUEST, "no seq").into_response();
        };
        state.written.push((uri.path().to_owned(), text, seq, now));
        return StatusCode::NO_CONTENT.into_response();
    }
    let route = uri
        .query()
        .and_then(|q| q.strip_prefix("via="))
        .unwrap_or("a")
        .to_owned();
    match route.as_str() {
        "broken" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "html" => return ([("content-type", "text/html")], "<!DOCTYPE html><p>hi").into_response(),
        _ => {}
    }
    let reads = state.reads.entry(route.clone()).or_default();
    let replica = match route.as_str() {
        "b" => Replica::B,
        "balanced" if reads.len() % 2 == 1 => Replica::B,
        _ => Replica::A,
    };
    let cutoff = match replica {
        Replica::A => f64::INFINITY,
        Replica::B => now - HOLD_BACK,
    };
    let shown = state
        .written
        .iter()
        .rev()
        .find(|(path, _, _, at)| path == uri.path() && *at <= cutoff)
        .map(|(_, body, seq, _)| (body.clone(), *seq));
    let reads = state.reads.entry(route).or_default();
    reads.push(Served {
        replica,
        seq: shown.as_ref().map(|(_, seq)| *seq),
    });
    match shown {
        Some((body, _)) => ([("content-type", "application/json")], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such marker").into_response(),
    }
}

// --- Reading what the daemon says ----------------------------------------------------------------

fn view<'a>(budget: &'a str, view: &'a str) -> [(&'a str, &'a str); 3] {
    [("budget", budget), ("probe", "visible"), ("replica", view)]
}

fn lag(metrics: &Metrics, budget: &str, name: &str) -> Option<f64> {
    metrics.get("lagbudget_lag_seconds", &view(budget, name))
}

fn reads(metrics: &Metrics, budget: &str, name: &str) -> f64 {
    metrics
        .get("lagbudget_monotonic_reads_total", &view(budget, name))
        .unwrap_or(0.0)
}

fn violations(metrics: &Metrics, budget: &str, name: &str) -> f64 {
    metrics
        .get(
            "lagbudget_monotonic_read_violations_total",
            &view(budget, name),
        )
        .unwrap_or(0.0)
}

fn errors(metrics: &Metrics, budget: &str, name: &str) -> f64 {
    metrics
        .samples
        .iter()
        .filter(|(n, labels, _)| {
            n == "lagbudget_probe_errors_total"
                && view(budget, name)
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// The status API's entry for one view of the canary.
async fn view_status(daemon: &Daemon, budget: &str, name: &str) -> serde_json::Value {
    let status = daemon.budget(budget).await;
    status["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|p| p["replica"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("view {name} in {status}"))
}

/// Violations the daemon should count for `served`, by the rule it applies: a read showing a
/// lower seq than one already seen through the route (a 404 is below every marker).
fn expected_violations(served: &[Served]) -> u64 {
    let mut highest: Option<i64> = None;
    let mut seen_any = false;
    let mut count = 0;
    for read in served {
        let seq = read.seq.unwrap_or(i64::MIN);
        if seen_any && highest.is_some_and(|h| seq < h) {
            count += 1;
        }
        seen_any = true;
        highest = Some(highest.map_or(seq, |h| h.max(seq)));
    }
    count
}

/// Issue acceptance (monotonic reads): one canary writes its markers to the service and reads
/// them back through three routes. Through the route that alternates between replica A
/// (current) and B (held back `HOLD_BACK` s), violations are counted: more than 0, never more
/// than the reads, and exactly the reads the service answered with an older seq than one it
/// had already shown through that route (with `reads: 3` per run, that is between a third and
/// two thirds of the reads; alternating, a half). Through A only and B only, none. The lag of
/// the lagging routes is the hold-back, ±1 s; of A, within ±1 s of 0. Then the service refuses
/// writes (503): every view is unknown, never 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_route_alternating_between_replicas_counts_monotonic_read_violations() {
    let service = Service::start().await;
    let budget = unique("mono");
    let instance = unique("h");
    let yaml = format!(
        "sources:
  api: {{ http: {{ url: \"{url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    interval: 1s
    timeout: 1s
    probes:
      - name: visible
        canary:
          write: {{ source: api, path: \"/canary/$instance\" }}
          read:
            - {{ name: balanced, source: api, path: \"/canary/$instance?via=balanced\", pointer: /seq }}
            - {{ name: lagging, source: api, path: \"/canary/$instance?via=b\", pointer: /seq }}
            - {{ name: current, source: api, path: \"/canary/$instance?via=a\", pointer: /seq }}
          write_period: 500ms
          instance: {instance}
          monotonic: {{ reads: 3 }}
",
        url = service.url()
    );
    let daemon = Daemon::start(&yaml).await;

    // Past the hold-back, B shows markers too, and its lag stops growing.
    wait_for(
        "markers written for longer than the hold-back",
        PATIENCE,
        || async { (service.written_span() > HOLD_BACK + 1.0).then_some(()) },
    )
    .await;
    {
        let state = service.lock();
        let (path, body, seq, _) = state.written.last().expect("a marker");
        assert_eq!(
            path,
            &format!("/canary/{instance}"),
            "$instance is replaced"
        );
        let marker: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
        assert_eq!(marker["instance"], instance.as_str());
        assert_eq!(marker["probe"], format!("{budget}/visible"));
        assert_eq!(marker["seq"], *seq);
        assert!(marker["written_at"].as_str().is_some(), "{marker}");
    }
    let steady = |m: &Metrics| {
        ["balanced", "lagging"]
            .iter()
            .all(|v| lag(m, &budget, v).is_some_and(|lag| lag >= HOLD_BACK - 1.0))
    };
    daemon
        .wait_for_metrics("the held-back routes at their lag", PATIENCE, steady)
        .await;

    // Several runs of every view; every scrape on the way is checked.
    let from = view_status(&daemon, &budget, "balanced").await["runs"]
        .as_u64()
        .expect("runs");
    let scrapes = AtomicU64::new(0);
    let metrics = wait_for("six more runs of each view", 2 * PATIENCE, || async {
        let m = daemon.metrics().await;
        for name in ["balanced", "lagging"] {
            let measured = lag(&m, &budget, name).expect("a lag");
            assert!(
                (measured - HOLD_BACK).abs() <= 1.0,
                "{name}: lag {measured:.3} s not within ±1 s of the {HOLD_BACK} s hold-back"
            );
        }
        let current = lag(&m, &budget, "current").expect("a lag");
        assert!(
            current <= 1.0,
            "current: lag {current:.3} s, not within ±1 s of 0"
        );
        assert_eq!(
            violations(&m, &budget, "lagging"),
            0.0,
            "B only: no violation"
        );
        assert_eq!(
            violations(&m, &budget, "current"),
            0.0,
            "A only: no violation"
        );
        scrapes.fetch_add(1, Ordering::Relaxed);
        let mut done = true;
        for name in ["balanced", "lagging", "current"] {
            let runs = view_status(&daemon, &budget, name).await["runs"]
                .as_u64()
                .expect("runs");
            done &= runs >= from + 6;
        }
        done.then_some(m)
    })
    .await;
    for name in ["balanced", "lagging", "current"] {
        println!(
            "{name}: lag {:.3} s (hold-back {HOLD_BACK} s for B), {} reads, {} violations",
            lag(&metrics, &budget, name).expect("lag"),
            reads(&metrics, &budget, name),
            violations(&metrics, &budget, name)
        );
    }
    println!("{} scrapes checked", scrapes.load(Ordering::Relaxed));

    // The alternating route: the bound, and the exact count from what the service answered.
    let counted_reads = reads(&metrics, &budget, "balanced");
    let counted = violations(&metrics, &budget, "balanced");
    assert!(
        counted > 0.0,
        "alternating replicas: violations are counted"
    );
    assert!(
        counted <= counted_reads,
        "{counted} violations in {counted_reads} reads"
    );
    assert!(
        counted >= (counted_reads / 3.0).floor() - 1.0
            && counted <= (2.0 * counted_reads / 3.0).ceil(),
        "{counted} violations in {counted_reads} reads: every run of 3 reads has 1 or 2 reads of \
         B after a read of A"
    );
    let served = service.reads("balanced");
    let reads_counted = counted_reads as usize;
    assert!(
        served.len() >= reads_counted,
        "the service answered every read counted"
    );
    let b_reads = served[..reads_counted]
        .iter()
        .filter(|r| r.replica == Replica::B)
        .count();
    let expected = expected_violations(&served[..reads_counted]);
    println!(
        "balanced: {counted_reads} reads counted, {b_reads} answered by B, {expected} expected \
         violations, {counted} counted (rate {:.3})",
        counted / counted_reads
    );
    if errors(&metrics, &budget, "balanced") == 0.0 {
        // Every read served belongs to a run that counted it: the counts agree exactly.
        assert_eq!(
            counted as u64, expected,
            "violations as the service answered them"
        );
    }
    let status = view_status(&daemon, &budget, "balanced").await;
    println!("status of balanced: {status}");
    assert!(
        status["monotonic_reads"]["violations"].as_u64() >= Some(counted as u64),
        "{status}"
    );
    assert!(status["monotonic_reads"]["reads"].as_u64() >= Some(counted_reads as u64));
    assert_eq!(
        view_status(&daemon, &budget, "lagging").await["monotonic_reads"]["violations"],
        0
    );

    // The service refuses writes: after two write periods every view is unknown, never 0.
    service.lock().refuse_writes = true;
    let refused_at = lagbudget::clock::unix_now();
    daemon
        .wait_for_metrics("a view failing while writes fail", PATIENCE, |m| {
            errors(m, &budget, "current") > 0.0
        })
        .await;
    println!(
        "writes refused: the first view failed {:.1} s later",
        lagbudget::clock::unix_now() - refused_at
    );
    let metrics = daemon
        .wait_for_metrics("every view unknown while writes fail", PATIENCE, |m| {
            ["balanced", "lagging", "current"]
                .iter()
                .all(|v| lag(m, &budget, v).is_none() && errors(m, &budget, v) > 0.0)
        })
        .await;
    println!(
        "writes refused: every view's lag absent {:.1} s later (it stays while fresh)",
        lagbudget::clock::unix_now() - refused_at
    );
    let current = view_status(&daemon, &budget, "current").await;
    println!("current while writes fail: {}", current["error"]);
    assert_eq!(current["error"]["reason"], "http_status", "{current}");
    assert!(
        current["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{current}"
    );
    assert!(errors(&metrics, &budget, "current") > 0.0);

    daemon.stop().await;
}

/// How an HTTP view fails, each a bounded reason while the others carry on: a 500 is
/// `http_status`; HTML, or JSON with nothing at the pointer, is `decode` (saying where the
/// pointer stops); a 404 is "no marker yet", a lag that grows from the first marker, never 0.
/// `check --connect` says what each view shows, and sends no marker.
#[tokio::test(flavor = "multi_thread")]
async fn every_way_an_http_view_fails_is_bounded_and_a_404_is_no_marker_yet() {
    let service = Service::start().await;
    let budget = unique("httpfail");
    let instance = unique("h");
    let yaml = format!(
        "sources:
  api: {{ http: {{ url: \"{url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    interval: 1s
    timeout: 1s
    probes:
      - name: visible
        canary:
          write: {{ source: api, path: \"/canary/$instance\" }}
          read:
            - {{ name: good, source: api, path: \"/canary/$instance\", pointer: /seq }}
            - {{ name: broken, source: api, path: \"/canary/$instance?via=broken\", pointer: /seq }}
            - {{ name: html, source: api, path: \"/canary/$instance?via=html\", pointer: /seq }}
            - {{ name: shape, source: api, path: \"/canary/$instance\", pointer: /version }}
            - {{ name: unseen, source: api, path: \"/elsewhere/$instance\", pointer: /seq }}
          write_period: 500ms
          instance: {instance}
",
        url = service.url()
    );
    // Before the daemon: check --connect sends no marker.
    let lines = check_connect_lines(&load_config(&yaml)).await;
    assert!(
        service.lock().written.is_empty(),
        "check --connect wrote nothing"
    );
    let line = |view: &str| line_of(&lines, view);
    assert!(
        line("good").contains(&format!("markers are sent as POST /canary/{instance}")),
        "{lines:?}"
    );
    assert!(
        line("good").contains("shows no marker of this instance yet (HTTP 404"),
        "{lines:?}"
    );
    assert!(
        line("broken").contains("HTTP 500 Internal Server Error"),
        "{lines:?}"
    );

    let daemon = Daemon::start(&yaml).await;
    let metrics = daemon
        .wait_for_metrics("each view read or failed", PATIENCE, |m| {
            lag(m, &budget, "good").is_some()
                && lag(m, &budget, "unseen").is_some_and(|lag| lag >= 2.0)
                && ["broken", "html", "shape"]
                    .iter()
                    .all(|v| errors(m, &budget, v) > 0.0)
        })
        .await;
    let good = lag(&metrics, &budget, "good").expect("lag");
    assert!(good <= 1.0, "good: lag {good:.3} s, not within ±1 s of 0");
    let unseen = lag(&metrics, &budget, "unseen").expect("lag");
    let first_written = service.lock().written.first().expect("a marker").3;
    let age = lagbudget::clock::unix_now() - first_written;
    println!("unseen: lag {unseen:.3} s, the first marker is {age:.3} s old");
    assert!(
        unseen > 0.0 && unseen <= age + 1.0,
        "404: the age of the first marker"
    );
    for (view, reason, says) in [
        (
            "broken",
            "http_status",
            "HTTP 500 Internal Server Error for GET /canary/",
        ),
        (
            "html",
            "decode",
            "is not JSON (HTTP 200, content-type text/html",
        ),
        (
            "shape",
            "decode",
            "pointer /version finds nothing in the answer to GET /canary/",
        ),
    ] {
        let status = view_status(&daemon, &budget, view).await;
        println!("{view}: {}", status["error"]);
        assert_eq!(status["error"]["reason"], reason, "{status}");
        assert!(
            status["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{view}: {status}"
        );
        assert!(lag(&metrics, &budget, view).is_none(), "{view}: no lag");
    }
    let shape = view_status(&daemon, &budget, "shape").await;
    assert!(
        shape["error"]["message"]
            .as_str()
            .is_some_and(|m| m
                .contains("the answer is an object with keys instance, probe, seq, written_at")),
        "{shape}"
    );

    let lines = check_connect_lines(&load_config(&yaml)).await;
    assert!(
        line_of(&lines, "good").contains("shows marker seq"),
        "{lines:?}"
    );
    assert!(
        line_of(&lines, "unseen")
            .contains("shows no marker of this instance yet (HTTP 404 for GET /elsewhere/"),
        "{lines:?}"
    );
    assert!(line_of(&lines, "shape").contains("decode"), "{lines:?}");
    daemon.stop().await;
}

/// The `check --connect` line of one view of the canary.
fn line_of(lines: &[String], view: &str) -> String {
    lines
        .iter()
        .find(|l| l.contains(&format!("[{view}] (canary)")))
        .cloned()
        .unwrap_or_else(|| panic!("a line for {view} in {lines:?}"))
}
