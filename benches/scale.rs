//! Scale figures (a bench binary, not a timed test): `cargo bench --bench scale`.
//!
//! 1. `/metrics` render time with 1,000 budgets × 5 probes, every probe with a fresh sample.
//! 2. How long a probe task waits for the state lock to record its result while `/metrics` is
//!    rendered back to back on another thread, at the same size.
//! 3. The daemon's resident memory, idle, with 100 budgets probing the machine's PostgreSQL
//!    (127.0.0.1:5432, as in the test suite); skipped with a message if it is not reachable.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lagbudget::Shared;
use lagbudget::model::{
    Budget, Config, HttpSettings, PostgresSource, Probe, ProbeKind, Secret, SecretSet, Source,
    SourceKind, SqlWatermark, WatermarkMode,
};
use lagbudget::probe::{Backlog, BacklogUnit, Sample};
use lagbudget::state::{DaemonState, ProbeKey};

fn synthetic_config(budgets: usize, probes_per_budget: usize) -> Config {
    let source = Arc::new(Source {
        name: "db".into(),
        max_connections: 4,
        kind: SourceKind::Postgres(PostgresSource {
            dsn: Secret::new("host=127.0.0.1 user=postgres dbname=test"),
            redacted: "host=127.0.0.1 user=postgres dbname=test".into(),
        }),
    });
    let budgets = (0..budgets)
        .map(|b| {
            let name = format!("feature-{b:04}");
            let probes = (0..probes_per_budget)
                .map(|p| {
                    Arc::new(Probe {
                        budget: name.clone(),
                        name: format!("hop-{p}"),
                        interval: Duration::from_secs(10),
                        timeout: Duration::from_secs(5),
                        max_lag: Some(Duration::from_secs(30)),
                        max_backlog: None,
                        max_monotonic_violations: None,
                        max_mismatches: None,
                        stall_after: Duration::from_secs(60),
                        replica: None,
                        kind: ProbeKind::SqlWatermark(SqlWatermark {
                            source: "db".into(),
                            watermark: "SELECT 1".into(),
                            oldest_pending: Some("SELECT now() WHERE $1 > 0".into()),
                            mode: WatermarkMode::OldestPending,
                        }),
                    })
                })
                .collect();
            Arc::new(Budget {
                name,
                description: None,
                owner: Some("team-x".into()),
                labels: BTreeMap::from([("tier".to_owned(), "1".to_owned())]),
                max_lag: Some(Duration::from_secs(30)),
                max_backlog: None,
                warn_at: 0.8,
                breach_after: Duration::ZERO,
                objective: None,
                severity: "page".into(),
                runbook_url: None,
                probes,
            })
        })
        .collect();
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http: HttpSettings::default(),
        sources: BTreeMap::from([("db".to_owned(), source)]),
        budgets,
        secrets: SecretSet::default(),
    }
}

const BUDGETS: usize = 1_000;
const PROBES: usize = 5;

/// A fresh sample, as every probe of the synthetic config reports it.
fn fresh_sample() -> Sample {
    Sample {
        lag_seconds: Some(1.5),
        backlog: Some(Backlog {
            unit: BacklogUnit::Rows,
            value: 12.0,
        }),
        position: Some("42".into()),
        ..Sample::default()
    }
}

/// 1,000 budgets × 5 probes, every probe with one fresh sample; with each probe's key and task.
fn loaded_state() -> (Shared, Vec<(ProbeKey, u64)>) {
    let config = Arc::new(synthetic_config(BUDGETS, PROBES));
    let now = lagbudget::clock::now();
    let mut task_id = 0;
    let (mut state, diff) = DaemonState::new(config, now, &mut task_id);
    let mut tasks = Vec::with_capacity(diff.start.len());
    for (probe, id) in diff.start {
        let key = lagbudget::state::probe_key(&probe);
        state.record(&key, id, now, 0.004, Ok(fresh_sample().into()));
        tasks.push((key, id));
    }
    (Shared::new(state), tasks)
}

/// Median, 99th percentile and maximum of `timings`, in milliseconds.
fn spread(timings: &mut [Duration]) -> (f64, f64, f64) {
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| timings[((timings.len() - 1) as f64 * q).round() as usize];
    (ms(at(0.5)), ms(at(0.99)), ms(timings[timings.len() - 1]))
}

fn render_benchmark() {
    let (shared, _) = loaded_state();
    // Warm up allocations, then time.
    let body = shared.render_metrics();
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let body = shared.render_metrics();
        timings.push(started.elapsed());
        std::hint::black_box(body);
    }
    let (median, _, worst) = spread(&mut timings);
    println!(
        "metrics render, {BUDGETS} budgets x {PROBES} probes: {series} series, {} KiB; \
         median {median:.1} ms, worst {worst:.1} ms over {} renders",
        body.len() / 1024,
        timings.len()
    );
}

/// A probe task records a result every millisecond (round robin over every probe) while one
/// other thread renders `/metrics` back to back: the time from asking for the state lock to
/// holding it, per record. One scraping thread, so that on a 2-core machine the figure is the
/// lock's and not the scheduler's.
fn record_wait_benchmark() {
    const RECORDS: usize = 3_000;
    let (shared, tasks) = loaded_state();
    let shared = Arc::new(shared);
    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let scraper = {
        let (shared, stop, scrapes) = (shared.clone(), stop.clone(), scrapes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(shared.render_metrics());
                scrapes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the scraper get going.
    while scrapes.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut waits = Vec::with_capacity(RECORDS);
    let mut holds = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let (key, task_id) = &tasks[i % tasks.len()];
        let asked = Instant::now();
        let mut state = shared.state();
        let held = Instant::now();
        let now = lagbudget::clock::now();
        state.record(key, *task_id, now, 0.004, Ok(fresh_sample().into()));
        drop(state);
        waits.push(held - asked);
        holds.push(held.elapsed());
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    scraper.join().expect("scraper thread");
    let (median, p99, max) = spread(&mut waits);
    let (_, hold_p99, hold_max) = spread(&mut holds);
    println!(
        "record lock wait while /metrics renders back to back ({} renders), {BUDGETS} budgets x \
         {PROBES} probes, {RECORDS} records: median {median:.3} ms, p99 {p99:.3} ms, max \
         {max:.3} ms (record under the lock: p99 {hold_p99:.3} ms, max {hold_max:.3} ms)",
        scrapes.load(Ordering::Relaxed)
    );
    // What an answer holds the lock for: the copy of the state, alone on the machine's cores.
    let mut copies = Vec::with_capacity(200);
    for _ in 0..200 {
        let state = shared.state();
        let started = Instant::now();
        let copy = state.copy(lagbudget::clock::now(), None);
        copies.push(started.elapsed());
        drop(state);
        std::hint::black_box(copy.evaluate());
    }
    let (median, p99, max) = spread(&mut copies);
    println!(
        "state copy under the lock for one answer, {BUDGETS} budgets x {PROBES} probes, 200 \
         copies: median {median:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
    );
}

fn idle_memory_benchmark() {
    const BUDGETS: usize = 100;
    let reachable = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok();
    if !reachable {
        println!("idle memory: skipped, PostgreSQL is not listening on 127.0.0.1:5432");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lagbudget-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut yaml = format!(
        "listen: 127.0.0.1:{port}\nsources:\n  db: {{ postgres: {{ dsn: \"host=127.0.0.1 port=5432 user=postgres dbname=test\" }} }}\nbudgets:\n"
    );
    for b in 0..BUDGETS {
        yaml.push_str(&format!(
            "  - name: feature-{b:03}\n    max_lag: 30s\n    probes:\n      - name: p\n        interval: 2s\n        sql_watermark: {{ source: db, watermark: \"SELECT {b}::bigint\", oldest_pending: \"SELECT NULL::timestamptz, 0::bigint WHERE $1 > 0\" }}\n"
        ));
    }
    let config = dir.join("bench.yaml");
    std::fs::File::create(&config)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lagbudget"))
        .args(["--log.level", "warn", "run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let started = Instant::now();
    let ready = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read as _;
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Several probe rounds after readiness: connections and histories are in place.
    std::thread::sleep(Duration::from_secs(10));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        .unwrap_or_else(|| "unavailable".into());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "idle daemon, {BUDGETS} budgets x 1 probe (interval 2s, ready: {ready}): resident memory {rss}"
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run should not spend half a minute measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale: benchmarks run with `cargo bench --bench scale`; nothing to test here");
        return;
    }
    render_benchmark();
    record_wait_benchmark();
    idle_memory_benchmark();
}
