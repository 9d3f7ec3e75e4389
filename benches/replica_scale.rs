//! Replica probes at scale (a bench binary, not a timed test): `cargo bench --bench
//! replica_scale`.
//!
//! One `postgres_replica` probe with 50 standbys, for each method. Fifty real standbys do not
//! fit on a 2-core machine, so the bench starts one private primary and one streaming standby
//! (as the test suite does) and configures 50 standby *sources* with the standby's DSN: each
//! has its own pool, connection, runner, map and topology checks, exactly as 50 standbys would;
//! only the server answering them is shared, so run times include 50 concurrent queries on one
//! server. Each round runs all 50 runners concurrently, as the daemon's tasks would at the same
//! tick, then waits out the 1 s interval. Needs the PostgreSQL server binaries
//! (/usr/lib/postgresql/<major>/bin) and root or the postgres user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lagbudget::probe::postgres_replica::statements_sent;
use lagbudget::probe::{ProbeRunner, SourceHandles};

const STANDBYS: usize = 50;
const ROUNDS: usize = 20;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "replica_scale: benchmarks run with `cargo bench --bench replica_scale`; nothing to \
             test here"
        );
        return;
    }
    let pair = Pair::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for method in ["heartbeat", "passive"] {
        runtime.block_on(measure(&pair, method));
    }
}

async fn measure(pair: &Pair, method: &str) {
    let mut yaml = format!(
        "sources:\n  primary: {{ postgres: {{ dsn: \"{}\" }} }}\n",
        pair.dsn(pair.primary_port)
    );
    for n in 0..STANDBYS {
        yaml.push_str(&format!(
            "  standby-{n:02}: {{ postgres: {{ dsn: \"{}\", max_connections: 1 }} }}\n",
            pair.dsn(pair.standby_port)
        ));
    }
    let names: Vec<String> = (0..STANDBYS).map(|n| format!("standby-{n:02}")).collect();
    yaml.push_str(&format!(
        "budgets:\n  - name: scale\n    max_lag: 10s\n    probes:\n      - name: replicas\n        interval: 1s\n        postgres_replica: {{ primary: primary, standbys: [{}], method: {method} }}\n",
        names.join(", ")
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("replicas.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let config = lagbudget::config::load(&path).unwrap_or_else(|e| panic!("config:\n{e}"));
    let sources = SourceHandles::build(&config, None).expect("sources");
    let probes = &config.budgets[0].probes;
    assert_eq!(probes.len(), STANDBYS, "one probe per standby");
    let mut runners: Vec<ProbeRunner> = probes
        .iter()
        .map(|probe| ProbeRunner::new(probe, &sources).expect("runner"))
        .collect();

    // Warm-up: connections opened, the writer started, maps seeded.
    for _ in 0..3 {
        round(&mut runners).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let started = Instant::now();
    let statements_before = statements_sent();
    let mut durations: Vec<f64> = Vec::new();
    let mut failures = 0;
    for _ in 0..ROUNDS {
        let tick = Instant::now();
        for (took, ok) in round(&mut runners).await {
            durations.push(took);
            if !ok {
                failures += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    let statements = statements_sent() - statements_before;
    let elapsed = started.elapsed().as_secs_f64();
    durations.sort_by(f64::total_cmp);
    let percentile = |p: f64| durations[((durations.len() - 1) as f64 * p).round() as usize];
    let runs = (ROUNDS * STANDBYS) as f64;
    println!(
        "{method}: {STANDBYS} standbys, {ROUNDS} rounds at 1 s ({elapsed:.1} s): \
         {:.2} statements per standby run ({statements} in all: {runs} standby runs, the rest on \
         the primary), run time per standby median {:.2} ms, p90 {:.2} ms, max {:.2} ms; \
         {failures} failed runs",
        statements as f64 / runs,
        percentile(0.5) * 1000.0,
        percentile(0.9) * 1000.0,
        percentile(1.0) * 1000.0,
    );
    println!(
        "{method}: on the primary, {} per probe, whatever the number of standbys",
        if method == "heartbeat" {
            "one write per heartbeat period (1 s here: max_lag 10s / 10)"
        } else {
            "one sample per quarter interval at most (here one per round)"
        }
    );
}

/// Runs every runner once, concurrently, each on its own task as the daemon would; returns
/// (seconds, succeeded) per runner.
async fn round(runners: &mut Vec<ProbeRunner>) -> Vec<(f64, bool)> {
    let tasks: Vec<_> = runners
        .drain(..)
        .map(|mut runner| {
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let result = runner.run(started + Duration::from_secs(1)).await;
                if let Err(error) = &result {
                    eprintln!("run failed: {error}");
                }
                (runner, started.elapsed().as_secs_f64(), result.is_ok())
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (runner, took, ok) = task.await.expect("run task");
        runners.push(runner);
        outcomes.push((took, ok));
    }
    outcomes
}

/// A private primary and streaming standby, stopped and removed on drop.
struct Pair {
    dir: PathBuf,
    bin: PathBuf,
    primary_port: u16,
    standby_port: u16,
}

impl Pair {
    fn start() -> Pair {
        let bin = newest_postgres_bin();
        let dir = std::env::temp_dir().join(format!("lagbudget_bench_pair_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir));
        }
        let pair = Pair {
            primary_port: free_port(),
            standby_port: free_port(),
            dir,
            bin,
        };
        let primary = pair.dir.join("primary");
        let standby = pair.dir.join("standby");
        run(pair.pg("initdb").arg("-D").arg(&primary).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        append(
            &primary.join("postgresql.conf"),
            &format!(
                "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 fsync = off\nwal_level = replica\nmax_wal_senders = 5\nmax_connections = 200\n",
                pair.primary_port,
                pair.dir.display()
            ),
        );
        pair.start_server(&primary);
        run(pair
            .pg("pg_basebackup")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-R", "-X", "stream"])
            .args(["-p", &pair.primary_port.to_string()])
            .arg("-D")
            .arg(&standby));
        append(
            &standby.join("postgresql.conf"),
            &format!("\nport = {}\n", pair.standby_port),
        );
        pair.start_server(&standby);
        pair
    }

    fn dsn(&self, port: u16) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
    }

    fn pg(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn start_server(&self, data: &Path) {
        run(self
            .pg("pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(data.with_extension("log"))
            .args(["-w", "-t", "30", "start"]));
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for data in ["standby", "primary"] {
            let _ = self
                .pg("pg_ctl")
                .arg("-D")
                .arg(self.dir.join(data))
                .args(["-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn append(path: &Path, text: &str) {
    let mut existing = std::fs::read_to_string(path).expect("read conf");
    existing.push_str(text);
    std::fs::write(path, existing).expect("write conf");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn newest_postgres_bin() -> PathBuf {
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_unstable();
    PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        majors.last().expect("a PostgreSQL major version")
    ))
}
