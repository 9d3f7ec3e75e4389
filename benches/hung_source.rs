//! A hung source against a healthy probe (a bench binary, not a timed test):
//! `cargo bench --bench hung_source`.
//!
//! The integration test `daemon::hung_source_delays_no_other_probe` asserts the behaviour (the
//! healthy probe keeps succeeding while a source that accepts and never answers makes two other
//! probes time out). This bench gives the figure: how many runs the healthy probe completes per
//! interval, and the longest gap between two of its runs, with the hung source and without it.
//!
//! It runs the daemon binary twice against the machine's PostgreSQL (127.0.0.1:5432, as in the
//! test suite), for a fixed window each; skipped with a message if PostgreSQL is not reachable.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Measured window per phase, in probe intervals (the interval is 1 s).
const INTERVALS: u64 = 30;
const INTERVAL: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);

/// The probe's queries: they need no table, and the hung source never gets to run them.
const QUERIES: &str = "watermark: \"SELECT 1::bigint\", \
     oldest_pending: \"SELECT NULL::timestamptz, 0::bigint WHERE $1 > 0\"";

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A TCP server that accepts connections and never says a word; sockets are held until the
/// bench exits.
fn hung_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming().flatten() {
            held.push(socket);
        }
    });
    port
}

fn config(listen: u16, hung: Option<u16>) -> String {
    let mut yaml = format!(
        "listen: 127.0.0.1:{listen}
sources:
  healthy: {{ postgres: {{ dsn: \"host=127.0.0.1 port=5432 user=postgres dbname=test\" }} }}
"
    );
    if let Some(port) = hung {
        yaml.push_str(&format!(
            "  hung: {{ postgres: {{ dsn: \"host=127.0.0.1 port={port} user=postgres dbname=x\", max_connections: 1 }} }}\n"
        ));
    }
    yaml.push_str(&format!(
        "budgets:
  - name: healthy
    max_lag: 10s
    probes:
      - {{ name: p, interval: 1s, sql_watermark: {{ source: healthy, {QUERIES} }} }}
"
    ));
    if hung.is_some() {
        yaml.push_str(&format!(
            "  - name: hung
    max_lag: 10s
    probes:
      - {{ name: a, interval: 1s, timeout: 1s, sql_watermark: {{ source: hung, {QUERIES} }} }}
      - {{ name: b, interval: 1s, timeout: 1s, sql_watermark: {{ source: hung, {QUERIES} }} }}
"
        ));
    }
    yaml
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

/// `runs` of each probe of `budget`, by probe name.
fn runs(port: u16, budget: &str) -> Option<Vec<(String, u64)>> {
    let body = get(port, &format!("/api/v1/budgets/{budget}"))?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["probes"]
        .as_array()?
        .iter()
        .map(|p| Some((p["name"].as_str()?.to_owned(), p["runs"].as_u64()?)))
        .collect()
}

fn healthy_runs(port: u16) -> Option<u64> {
    runs(port, "healthy")?.first().map(|(_, n)| *n)
}

struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(yaml: &str, name: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("lagbudget-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = dir.join("bench.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["--log.level", "error", "run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    Daemon { child, dir }
}

/// One phase: start the daemon, wait until every probe ran once, then watch the healthy
/// probe's run count for `INTERVALS` intervals.
fn phase(name: &str, hung: Option<u16>) {
    let port = free_port();
    let _daemon = start(&config(port, hung), name);
    let started = Instant::now();
    while get(port, "/readyz").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: the daemon was not ready within 60 s"
        );
        std::thread::sleep(POLL);
    }
    // Start the window at a run of the healthy probe, so that the count is not off by the
    // phase of the poll.
    let first = healthy_runs(port).expect("healthy runs");
    let mut last = first;
    while last == first {
        std::thread::sleep(POLL);
        last = healthy_runs(port).expect("healthy runs");
    }
    let window_start = Instant::now();
    let runs_at_start = last;
    let mut run_seen_at = vec![window_start];
    let window = INTERVAL * INTERVALS as u32;
    while window_start.elapsed() < window {
        std::thread::sleep(POLL);
        let now = healthy_runs(port).expect("healthy runs");
        if now > last {
            run_seen_at.push(Instant::now());
            last = now;
        }
    }
    let completed = last - runs_at_start;
    // Gaps between runs as the poll saw them, and from the last run to the window's end.
    let tail = run_seen_at.last().expect("window start").elapsed();
    let longest_gap = run_seen_at
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([tail])
        .max()
        .unwrap_or_default();
    let hung_runs = if hung.is_some() {
        let probes = runs(port, "hung").expect("hung runs");
        let text = get(port, "/metrics").unwrap_or_default();
        let timeouts: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("lagbudget_probe_errors_total{")
                    && l.contains("budget=\"hung\"")
                    && (l.contains("reason=\"timeout\"") || l.contains("reason=\"pool_timeout\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        format!(
            "; hung probes: {} runs, {timeouts} timeouts (timeout or pool_timeout) since start",
            probes
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    println!(
        "{name}: healthy probe completed {completed} runs in {INTERVALS} intervals \
         ({:.2} per interval), longest gap between runs {:.2} s (poll {} ms){hung_runs}",
        completed as f64 / INTERVALS as f64,
        longest_gap.as_secs_f64(),
        POLL.as_millis()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run should not spend a minute measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "hung_source: benchmarks run with `cargo bench --bench hung_source`; nothing to test here"
        );
        return;
    }
    let reachable = TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok();
    if !reachable {
        println!("hung_source: skipped, PostgreSQL is not listening on 127.0.0.1:5432");
        return;
    }
    phase("without a hung source", None);
    phase("with a hung source", Some(hung_listener()));
}
