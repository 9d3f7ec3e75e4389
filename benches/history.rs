//! History and status page figures (a bench binary, not a timed test):
//! `cargo bench --bench history`.
//!
//! 5,000 probes (1,000 budgets × 5 `sql_watermark` probes, interval 10 s, the default
//! `http.history_window` of 1 h) after 24 hours of runs: each probe's ring full (360 samples)
//! and its 24-hour summary full (289 five-minute buckets); each budget with an objective and
//! state changes.
//!
//! 1. Memory of the history per probe: the bytes its `ProbeSeries` holds (ring and summary, by
//!    their capacity) plus the `Arc` around it, and the process's resident memory before and
//!    after building them (VmRSS, a cross-check that includes the allocator's overhead).
//! 2. Render time of the overview page (`page::overview` of a snapshot: copy, evaluation,
//!    HTML and SVG) and of one budget page, at that size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lagbudget::Shared;
use lagbudget::evaluate::BudgetState;
use lagbudget::history::{DAY_SECONDS, Point, ProbeSeries};
use lagbudget::model::{
    Budget, Config, HttpSettings, Objective, PostgresSource, Probe, ProbeKind, Secret, SecretSet,
    Source, SourceKind, SqlWatermark, WatermarkMode,
};
use lagbudget::probe::{Backlog, BacklogUnit, Sample};
use lagbudget::state::DaemonState;

const BUDGETS: usize = 1_000;
const PROBES: usize = 5;
const INTERVAL: Duration = Duration::from_secs(10);

fn synthetic_config() -> Config {
    let source = Arc::new(Source {
        name: "db".into(),
        max_connections: 4,
        kind: SourceKind::Postgres(PostgresSource {
            dsn: Secret::new("host=127.0.0.1 user=postgres dbname=test"),
            redacted: "host=127.0.0.1 user=postgres dbname=test".into(),
        }),
    });
    let budgets = (0..BUDGETS)
        .map(|b| {
            let name = format!("feature-{b:04}");
            let probes = (0..PROBES)
                .map(|p| {
                    Arc::new(Probe {
                        budget: name.clone(),
                        name: format!("hop-{p}"),
                        interval: INTERVAL,
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
                description: Some("A feature's derived view".into()),
                owner: Some("team-x".into()),
                labels: BTreeMap::new(),
                max_lag: Some(Duration::from_secs(30)),
                max_backlog: None,
                warn_at: 0.8,
                breach_after: Duration::ZERO,
                objective: Some(Objective {
                    target: 0.999,
                    window: Duration::from_secs(30 * 86_400),
                }),
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

/// A day of runs every 10 s ending at `end` (unix seconds): a sawtooth lag, over budget one
/// stretch in ten, a failed run now and then.
fn day_of_runs(end: f64, seed: usize) -> ProbeSeries {
    let mut series = ProbeSeries::new(Duration::from_secs(3600), INTERVAL);
    let runs = (DAY_SECONDS / INTERVAL.as_secs_f64()) as usize;
    for i in 0..runs {
        let at = end - DAY_SECONDS + (i as f64 + 1.0) * INTERVAL.as_secs_f64();
        let phase = (i + seed) % 360;
        let (lag, state) = if phase < 36 {
            (35.0 + phase as f64, BudgetState::Breach)
        } else {
            ((phase % 30) as f64, BudgetState::Ok)
        };
        let failed = (i + seed) % 97 == 0;
        series.push(Point::new(
            at,
            (!failed).then_some(lag),
            (!failed).then_some(lag * 3.0),
            if failed { BudgetState::Unknown } else { state },
            failed,
        ));
    }
    series
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Median and maximum of `timings`, in milliseconds.
fn spread(timings: &mut [Duration]) -> (f64, f64) {
    timings.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(timings[timings.len() / 2]),
        ms(timings[timings.len() - 1]),
    )
}

fn main() {
    let config = Arc::new(synthetic_config());
    let now = lagbudget::clock::now();
    let mut task_id = 0;
    let (mut state, diff) = DaemonState::new(config, now, &mut task_id);
    for (probe, id) in &diff.start {
        let key = lagbudget::state::probe_key(probe);
        let sample = Sample {
            lag_seconds: Some(1.5),
            backlog: Some(Backlog {
                unit: BacklogUnit::Rows,
                value: 12.0,
            }),
            position: Some("42".into()),
            ..Sample::default()
        };
        state.record(&key, *id, now, 0.004, Ok(sample.into()));
    }

    let rss_before = rss_kib();
    let started = Instant::now();
    let mut bytes = 0;
    let mut samples = 0;
    let mut buckets = 0;
    for (b, budget) in state.budgets.iter_mut().enumerate() {
        let probes = Arc::make_mut(&mut budget.probes);
        for (p, probe) in probes.iter_mut().enumerate() {
            let series = day_of_runs(now.unix, b * PROBES + p);
            samples += series.recent(now.unix).count();
            buckets += series.day(now.unix).count();
            bytes += series.heap_bytes() + size_of::<ProbeSeries>() + 2 * size_of::<usize>();
            probe.series = Arc::new(series);
        }
    }
    let built = started.elapsed();
    let rss_after = rss_kib();
    let probes = BUDGETS * PROBES;
    println!(
        "history, {probes} probes after 24 h of runs every 10 s (window 1 h): {} samples and \
         {} summary buckets per probe; {} bytes per probe ({:.1} MiB in all); resident memory \
         +{} KiB ({} bytes per probe); built in {:.2} s",
        samples / probes,
        buckets / probes,
        bytes / probes,
        bytes as f64 / (1024.0 * 1024.0),
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) * 1024 / probes as u64,
        built.as_secs_f64()
    );
    println!(
        "per budget besides: at most {} bytes of state changes and objective checkpoints \
         (1,000 changes, 721 checkpoints)",
        lagbudget::history::BudgetTimeline::MAX_HEAP_BYTES
    );

    let shared = Shared::new(state);
    // Warm up, then time.
    let page = lagbudget::page::overview(&shared.snapshot(None));
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let page = lagbudget::page::overview(&shared.snapshot(None));
        timings.push(started.elapsed());
        std::hint::black_box(page);
    }
    let (median, worst) = spread(&mut timings);
    println!(
        "overview page, {BUDGETS} budgets x {PROBES} probes: {} KiB of HTML; median {median:.1} \
         ms, worst {worst:.1} ms over {} renders (target under 50 ms)",
        page.len() / 1024,
        timings.len()
    );
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let page = lagbudget::page::budget(&shared.snapshot(Some("feature-0500")));
        timings.push(started.elapsed());
        std::hint::black_box(page);
    }
    let (median, worst) = spread(&mut timings);
    println!(
        "one budget page (5 probes): median {median:.2} ms, worst {worst:.2} ms over {} renders",
        timings.len()
    );
}
