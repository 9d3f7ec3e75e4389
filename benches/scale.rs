//! Scale figures (a bench binary, not a timed test): `cargo bench --bench scale`.
//!
//! 1. `/metrics` render time with 1,000 budgets × 5 probes, every probe with a fresh sample.
//! 2. The daemon's resident memory, idle, with 100 budgets probing the machine's PostgreSQL
//!    (127.0.0.1:5432, as in the test suite); skipped with a message if it is not reachable.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lagbudget::Shared;
use lagbudget::evaluate::Outcome;
use lagbudget::model::{
    Budget, Config, HttpSettings, PostgresSource, Probe, ProbeKind, Secret, SecretSet, Source,
    SourceKind, SqlWatermark, WatermarkMode,
};
use lagbudget::probe::{Backlog, BacklogUnit, Sample};
use lagbudget::state::DaemonState;

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

fn render_benchmark() {
    const BUDGETS: usize = 1_000;
    const PROBES: usize = 5;
    let config = Arc::new(synthetic_config(BUDGETS, PROBES));
    let now = lagbudget::clock::now();
    let mut task_id = 0;
    let (mut state, diff) = DaemonState::new(config, now, &mut task_id);
    for (probe, id) in diff.start {
        let key = lagbudget::state::probe_key(&probe);
        let sample = Sample {
            lag_seconds: Some(1.5),
            backlog: Some(Backlog {
                unit: BacklogUnit::Rows,
                value: 12.0,
            }),
            position: Some("42".into()),
            ..Sample::default()
        };
        state.record(&key, id, now, 0.004, Outcome::Success(sample));
    }
    let shared = Shared::new(state);
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
    timings.sort();
    let median = timings[timings.len() / 2];
    let worst = timings[timings.len() - 1];
    println!(
        "metrics render, {BUDGETS} budgets x {PROBES} probes: {series} series, {} KiB; \
         median {:.1} ms, worst {:.1} ms over {} renders",
        body.len() / 1024,
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        timings.len()
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
    idle_memory_benchmark();
}
