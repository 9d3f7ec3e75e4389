//! The real paging path, end to end: the daemon measures a PostgreSQL projection the test
//! controls, a real Prometheus scrapes it every second and evaluates the generated rules, a real
//! Alertmanager with the inhibition rules of `deploy/alertmanager/alertmanager.yml` groups and
//! inhibits, and a webhook receiver in this test records every notification. Along the way every
//! dashboard panel query runs against that Prometheus, and the status page is rendered in
//! headless Chromium (screenshot under `target/lagbudget-screenshots/`). A second, healthy
//! budget measures a consumer group on librdkafka's mock cluster, so that the Kafka panels have
//! data too, and a third a PostgreSQL standby (both replica methods, read-your-writes), a
//! MariaDB replica, a Redis cache of entities and a DynamoDB stream's consumer (in a private
//! moto), so that the Replicas, cache and stream panels have data.
//!
//! Prometheus, Alertmanager and Chromium are Debian packages that `scripts/test` installs when
//! run as root; a missing binary fails this test with a message saying so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lagbudget::generate::dashboards::panel_queries;
use lagbudget::generate::rules::{RulesFormat, RulesOptions, render};
use serde_json::Value;

use crate::cache::{PrivateRedis, set};
use crate::chromium::{CHROMIUM, chromium};
use crate::dynamodb_stream::consumer_one_record_behind;
use crate::kafka::{Cluster, unix_ms};
use crate::mariadb_support::MariaDbPair;
use crate::moto_support::Moto;
use crate::support::{
    Daemon, PrivatePostgres, Projection, StreamingPair, closed_port, unique, wait_for,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

const EXCEEDED: &str = "ConsistencyBudgetExceeded";
const AT_RISK: &str = "ConsistencyBudgetAtRisk";
const BURN_RATE: &str = "ConsistencyBudgetBurnRate";
const UNKNOWN: &str = "ConsistencyLagUnknown";

const MAX_LAG_SECONDS: f64 = 3.0;
const KEEP_FIRING_FOR: Duration = Duration::from_secs(30);
const OWNER: &str = "team-e2e";
const RUNBOOK: &str = "https://runbooks.example.com/e2e";

/// Issue 4 acceptance: a breach is exactly one `ConsistencyBudgetExceeded` page with the right
/// labels and annotations; the database stopped ⇒ `ConsistencyLagUnknown` joins it and Exceeded
/// does not resolve; the database back and the projection caught up ⇒ both resolve. Every panel
/// query returns data during the scenario, lag panels agree with the API, and the status page
/// renders in Chromium showing the breach.
#[tokio::test(flavor = "multi_thread")]
async fn a_breach_pages_once_stays_paged_while_blind_and_resolves() {
    let test_started = Instant::now();
    let mut timings = Timings::default();
    for (binary, package) in [
        (PROMETHEUS, "prometheus"),
        (PROMTOOL, "prometheus"),
        (ALERTMANAGER, "prometheus-alertmanager"),
        (CHROMIUM, "chromium"),
    ] {
        assert!(
            Path::new(binary).is_file(),
            "{binary} is missing: this test needs the Debian package `{package}` \
             (scripts/test installs it when run as root: apt-get install {package})"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");

    // 1. A private PostgreSQL with a projection the test controls, and the daemon over it.
    // A PostgreSQL primary + standby and a MariaDB primary + replica start meanwhile: a third,
    // healthy budget measures them so that the Replicas panels have data too.
    let streaming_pair = tokio::task::spawn_blocking(StreamingPair::start);
    let server = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("start private PostgreSQL");
    let dsn = server.dsn();
    let projection = Projection::create(&dsn).await;
    projection.start_workers(Duration::from_millis(200));
    let budget = unique("e2e");
    // The Kafka budget: a group one record behind on each of two partitions, well within 1 h.
    let cluster = Cluster::start();
    let topic = cluster.topic(2);
    let now_ms = unix_ms();
    for partition in 0..2 {
        cluster.produce(&topic, partition, &[now_ms - 5000, now_ms - 4000]);
    }
    let group = unique("e2e_group");
    cluster.commit(&group, &[(&topic, 0, 1), (&topic, 1, 1)]);
    let kafka_budget = unique("e2e_kafka");
    let mariadb = MariaDbPair::start().await;
    let streaming_pair = streaming_pair.await.expect("start streaming pair");
    let replica_budget = unique("e2e_replicas");
    // Entity caches in a private Redis, one of two behind its source (a table on the streaming
    // primary, which this test never stops): the cache panels' data.
    let redis = PrivateRedis::start().await;
    let mut cache = redis.connection().await;
    set(&mut cache, "product:1", "1").await;
    set(&mut cache, "product:2", "2").await;
    let changes = unique("e2e_cache_changes");
    crate::support::connect(&streaming_pair.primary_dsn())
        .await
        .batch_execute(&format!(
            "CREATE TABLE {changes} (product_id bigint, seq bigint, changed_at timestamptz);
             INSERT INTO {changes} VALUES (1, 2, now() - interval '1 minute'), (2, 2, now());"
        ))
        .await
        .expect("cache source table");
    // A search view over HTTP that shows the newest product change (seq 2) from a cache that
    // says how old its copy is: the HTTP view row's data.
    let search = serve_search_view().await;
    // Orders on the streaming primary, reconciled with their copies on its standby, every one
    // present: the reconcile row's data, and no mismatch to page for.
    let orders = unique("e2e_orders");
    crate::support::connect(&streaming_pair.primary_dsn())
        .await
        .batch_execute(&format!(
            "CREATE TABLE {orders} (id bigint PRIMARY KEY, version int, changed_at timestamptz);
             INSERT INTO {orders} SELECT g, 1, now() - interval '1 minute' FROM generate_series(1, 3) g;"
        ))
        .await
        .expect("reconciled table");
    // A DynamoDB stream's consumer one record behind, in a private moto: the stream row's data.
    let moto = Moto::start().await;
    let ddb_orders = unique("e2e-ddb-orders");
    let ddb_leases = format!("{ddb_orders}-leases");
    consumer_one_record_behind(&moto.client("eu-west-1"), &ddb_orders, &ddb_leases).await;
    // A canary from the streaming primary to its standby, with read-your-writes, monotonic
    // reads and a violation limit: the canary row's data.
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  db: {{ postgres: {{ dsn: \"{dsn}\" }} }}
  events: {{ kafka: {{ brokers: \"{bootstrap}\" }} }}
  pg-primary: {{ postgres: {{ dsn: \"{pg_primary}\" }} }}
  pg-standby: {{ postgres: {{ dsn: \"{pg_standby}\" }} }}
  my-primary: {{ mysql: {{ url: \"{my_primary}\" }} }}
  my-replica: {{ mysql: {{ url: \"{my_replica}\" }} }}
  cache: {{ redis: {{ url: \"{redis_url}\" }} }}
  search: {{ http: {{ url: \"http://{search}\" }} }}
{ddb_source}budgets:
  - name: {budget}
    description: End-to-end paging test projection.
    owner: {OWNER}
    severity: page
    runbook_url: {RUNBOOK}
    max_lag: 3s
    objective: {{ target: 99.9%, window: 28d }}
    probes:
      - name: projection
        interval: 1s
        sql_watermark: {probe}
  - name: {kafka_budget}
    owner: {OWNER}
    max_lag: 1h
    probes:
      - name: consumer
        interval: 1s
        kafka_consumer_group: {{ source: events, group: {group}, topics: [{topic}], partition_detail: true }}
  - name: {replica_budget}
    owner: {OWNER}
    max_lag: 1h
    interval: 1s
    probes:
      - name: standby-heartbeat
        postgres_replica: {{ primary: pg-primary, standbys: [pg-standby], method: heartbeat, ryw_delay: 200ms }}
      - name: standby-passive
        postgres_replica: {{ primary: pg-primary, standbys: [pg-standby], method: passive }}
      - name: mariadb
        mysql_replica: {{ primary: my-primary, replicas: [my-replica], ryw_delay: 200ms }}
      - name: canary
        max_monotonic_violations: 1%
        canary: {{ write: {{ source: pg-primary }}, read: [{{ source: pg-standby }}], read_your_writes: {{ after: 1s }}, monotonic: {{ reads: 2 }} }}
      - name: search
        http_watermark: {{ source: search, path: /search, pointer: /seq, oldest_pending: {{ source: pg-primary, query: \"SELECT min(changed_at), count(*) FROM {changes} WHERE seq > $1\" }} }}
      - name: orders
        max_mismatches: 0
        reconcile: {{ source: {{ source: pg-primary, query: \"SELECT id, version, changed_at FROM {orders} WHERE changed_at > $1\" }}, derived: {{ source: pg-standby, query: \"SELECT id, version FROM {orders} WHERE id = ANY($1)\" }}, sweep: {{ query: \"SELECT id, version, changed_at FROM {orders} WHERE id > $1 ORDER BY id LIMIT $2\", derived_query: \"SELECT id, version FROM {orders} WHERE id > $1 ORDER BY id LIMIT $2\", every: 5s }} }}
      - name: cache
        redis_key_age: {{ source: cache, pattern: \"product:*\", oldest_pending: {{ source: pg-primary, query: \"SELECT c.key, min(ch.changed_at) FROM jsonb_to_recordset($1::jsonb) AS c(key text, id bigint, version bigint) JOIN {changes} ch ON ch.product_id = c.id AND ch.seq > c.version GROUP BY c.key\" }} }}
      - name: orders-stream
        dynamodb_stream: {{ source: ddb, table: {ddb_orders}, lease_table: {ddb_leases} }}
",
        probe = projection.probe_yaml("db"),
        bootstrap = cluster.bootstrap,
        pg_primary = streaming_pair.primary_dsn(),
        pg_standby = streaming_pair.standby_dsn(),
        my_primary = mariadb.url(mariadb.primary_port),
        my_replica = mariadb.url(mariadb.replica_port),
        redis_url = redis.url(),
        search = search,
        ddb_source = moto.source_yaml("ddb", "eu-west-1"),
    ))
    .await;
    daemon
        .wait_for_state(&budget, "ok", Duration::from_secs(15))
        .await;
    daemon
        .wait_for_state(&kafka_budget, "ok", Duration::from_secs(15))
        .await;
    daemon
        .wait_for_state(&replica_budget, "ok", Duration::from_secs(20))
        .await;
    timings.add(
        "PostgreSQL, projection and daemon up, budget ok",
        test_started,
    );
    let api_lag = ApiLagRecorder::start(daemon.url(&format!("/api/v1/budgets/{budget}")));

    // 2. Webhook receiver, generated rules, Alertmanager and Prometheus.
    let inbox = Inbox::start().await;
    let rules_path = dir.path().join("lagbudget.rules.yml");
    let options = RulesOptions {
        job_selector: r#"job="lagbudget""#.to_owned(),
        exceeded_for: Duration::from_secs(1),
        keep_firing_for: KEEP_FIRING_FOR,
        unknown_for: Duration::from_secs(1),
        ..Default::default()
    };
    std::fs::write(&rules_path, render(&options, RulesFormat::Prometheus)).expect("write rules");
    promtool_check_rules(&rules_path);

    let am_port = closed_port();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "# Written by tests/it/paging.rs: a fast route to the test's webhook receiver, and the
# inhibition rules copied verbatim from deploy/alertmanager/alertmanager.yml.
route:
  receiver: webhook
  group_by: [alertname, budget]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://{}/hook
        send_resolved: true
{}",
            inbox.addr,
            deploy_inhibit_rules()
        ),
    )
    .expect("write alertmanager config");
    let am_data = dir.path().join("alertmanager-data");
    let mut alertmanager = Service::spawn(
        "alertmanager",
        ALERTMANAGER,
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", am_data.display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        dir.path(),
    );
    let am_url = format!("http://127.0.0.1:{am_port}");

    let prom_port = closed_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - \"{rules}\"
alerting:
  alertmanagers:
    - static_configs:
        - targets: [\"127.0.0.1:{am_port}\"]
scrape_configs:
  - job_name: lagbudget
    static_configs:
      - targets: [\"{daemon}\"]
",
            rules = rules_path.display(),
            daemon = daemon.addr,
        ),
    )
    .expect("write prometheus config");
    let prom_data = dir.path().join("prometheus-data");
    let mut prometheus = Service::spawn(
        "prometheus",
        PROMETHEUS,
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", prom_data.display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        dir.path(),
    );
    let prom = Prom {
        url: format!("http://127.0.0.1:{prom_port}"),
        http: http.clone(),
    };
    let phase = Instant::now();
    alertmanager
        .wait_ready(&http, &format!("{am_url}/-/ready"), Duration::from_secs(30))
        .await;
    prometheus
        .wait_ready(
            &http,
            &format!("{}/-/ready", prom.url),
            Duration::from_secs(30),
        )
        .await;
    let selector = format!("lagbudget_state{{budget=\"{budget}\",state=\"ok\"}} == 1");
    wait_for(
        "Prometheus to scrape the daemon (budget ok)",
        Duration::from_secs(30),
        || async { (prom.series(&selector, None).await.ok()? > 0).then_some(()) },
    )
    .await;
    timings.add("Alertmanager and Prometheus ready, first scrape", phase);
    assert!(
        inbox.alerts(&budget).is_empty(),
        "nothing pages while the budget is ok: {:#?}",
        inbox.alerts(&budget)
    );

    // 3. Breach ⇒ exactly one Exceeded page.
    let mut panels = PanelCheck::new(&[&budget, &kafka_budget, &replica_budget]);
    panels.run(&prom, "ok").await;
    projection.pause();
    let paused = Instant::now();
    daemon
        .wait_for_state(&budget, "breach", Duration::from_secs(15))
        .await;
    timings.add("projection paused → daemon state breach", paused);
    let breach_since = daemon
        .metrics()
        .await
        .get(
            "lagbudget_state_since_timestamp_seconds",
            &[("budget", &budget)],
        )
        .expect("state since");
    let page = wait_for(
        "a firing ConsistencyBudgetExceeded notification",
        Duration::from_secs(60),
        || async { inbox.firing(&budget, EXCEEDED).into_iter().next() },
    )
    .await;
    let breach_to_page = page.received - breach_since;
    println!("time from breach (daemon state since) to page: {breach_to_page:.2} s");
    timings.note(format!(
        "breach (daemon state since) → Exceeded page at the webhook: {breach_to_page:.2} s"
    ));
    assert_page_labels(&page, &budget);

    // 6, during the breach: every panel query, lag panels against the API, the status page.
    panels.run(&prom, "breach").await;
    lag_panels_agree_with_api(&prom, &api_lag, &budget).await;
    status_page_in_chromium(&daemon, &budget, dir.path()).await;
    check_inhibited_in_alertmanager(&http, &am_url, &budget, "breach").await;

    // 4. The database stops ⇒ LagUnknown, and Exceeded does not resolve.
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .expect("stop PostgreSQL");
    let stopped = Instant::now();
    println!("PostgreSQL stopped");
    let unknown_page = wait_for(
        "a firing ConsistencyLagUnknown notification",
        Duration::from_secs(30),
        || async { inbox.firing(&budget, UNKNOWN).into_iter().next() },
    )
    .await;
    timings.add("database stopped → LagUnknown notification", stopped);
    assert_eq!(unknown_page.label("budget"), budget);
    assert_eq!(unknown_page.label("severity"), "page");
    assert_eq!(unknown_page.label("owner"), OWNER);
    for annotation in ["summary", "description", "runbook_url", "dashboard_url"] {
        assert!(
            !unknown_page.annotation(annotation).is_empty(),
            "LagUnknown carries annotation {annotation}: {:#?}",
            unknown_page.alert
        );
    }
    assert_eq!(daemon.state(&budget).await, "breach", "blind keeps breach");
    panels.run(&prom, "blind").await;
    blind_status_page(&daemon, &budget, dir.path()).await;
    // Watch the blind period a little longer: no resolved Exceeded, no second page, through
    // five more failed runs of the probe and five more evaluations of the rules (a resolve
    // would follow an evaluation that found the alert gone).
    let failed = |m: &crate::support::Metrics| {
        m.samples
            .iter()
            .filter(|(name, labels, _)| {
                name == "lagbudget_probe_errors_total"
                    && labels.get("budget").map(String::as_str) == Some(budget.as_str())
            })
            .map(|(_, _, value)| *value)
            .sum::<f64>()
    };
    let failed_from = failed(&daemon.metrics().await);
    let evaluations = std::cell::RefCell::new((prom.last_evaluations().await, 0));
    wait_for(
        "five more failed runs and rule evaluations while blind",
        Duration::from_secs(60),
        || async {
            assert!(
                inbox.resolved(&budget, EXCEEDED).is_empty(),
                "Exceeded must not resolve while the daemon is blind: {:#?}",
                inbox.resolved(&budget, EXCEEDED)
            );
            let now = prom.last_evaluations().await;
            let evaluated = {
                let mut seen = evaluations.borrow_mut();
                if now != seen.0 {
                    *seen = (now, seen.1 + 1);
                }
                seen.1
            };
            let failed_runs = failed(&daemon.metrics().await) - failed_from;
            (evaluated >= 5 && failed_runs >= 5.0).then_some(())
        },
    )
    .await;
    check_inhibited_in_alertmanager(&http, &am_url, &budget, "blind").await;
    assert_eq!(
        inbox.firing(&budget, EXCEEDED).len(),
        1,
        "exactly one Exceeded page through breach and blindness"
    );
    timings.add(
        "database stopped → recovery started (blind period)",
        stopped,
    );

    // 5. The database returns and the projection catches up ⇒ both resolve.
    let recovering = Instant::now();
    let recovery_started_unix = unix_now();
    let server = tokio::task::spawn_blocking(move || {
        server.start_again();
        server
    })
    .await
    .expect("start PostgreSQL again");
    // The workers' connections died with the server: start fresh ones, unpaused.
    projection.resume();
    projection.start_workers(Duration::from_millis(200));
    daemon
        .wait_for_state(&budget, "ok", Duration::from_secs(20))
        .await;
    timings.add("database restarted → daemon state ok", recovering);
    let unknown_resolved = wait_for(
        "a resolved ConsistencyLagUnknown notification",
        Duration::from_secs(30),
        || async { inbox.resolved(&budget, UNKNOWN).into_iter().next() },
    )
    .await;
    println!(
        "LagUnknown resolved {:.2} s after recovery started",
        unknown_resolved.received - recovery_started_unix
    );
    let exceeded_resolved = wait_for(
        "a resolved ConsistencyBudgetExceeded notification",
        KEEP_FIRING_FOR + Duration::from_secs(30),
        || async { inbox.resolved(&budget, EXCEEDED).into_iter().next() },
    )
    .await;
    timings.note(format!(
        "recovery started → LagUnknown resolved: {:.2} s, Exceeded resolved: {:.2} s \
         (keep_firing_for {KEEP_FIRING_FOR:?})",
        unknown_resolved.received - recovery_started_unix,
        exceeded_resolved.received - recovery_started_unix
    ));
    panels.run(&prom, "recovered").await;

    // The whole story, as the receiver saw it.
    println!("notifications for {budget}:");
    for alert in inbox.alerts(&budget) {
        println!(
            "  +{:6.2} s  {:<28} {:<8} (notification {}, {})",
            alert.received - breach_since,
            alert.label("alertname"),
            alert.status,
            alert.notification,
            alert.notification_status
        );
    }
    assert_eq!(
        inbox.firing(&budget, EXCEEDED).len(),
        1,
        "one incident, one Exceeded page"
    );
    assert!(
        exceeded_resolved.received - recovery_started_unix >= KEEP_FIRING_FOR.as_secs_f64() - 2.0,
        "Exceeded resolves only after keep_firing_for"
    );
    let inhibited: Vec<AlertSeen> = inbox
        .alerts(&budget)
        .into_iter()
        .filter(|a| {
            (a.label("alertname") == AT_RISK || a.label("alertname") == BURN_RATE)
                && a.status == "firing"
                && a.received >= page.received
                && a.received < recovery_started_unix
        })
        .collect();
    assert!(
        inhibited.is_empty(),
        "AtRisk and BurnRate are inhibited while Exceeded fires: {inhibited:#?}"
    );
    // librdkafka's mock cluster answers neither ListGroups nor DescribeGroups, and no Kafka
    // broker is packaged for these machines, so the group-members panel cannot get data here.
    // It is the one panel exempt from "every query returns a series", by its metric's name.
    let (unfeedable, failures): (Vec<String>, Vec<String>) = panels
        .failures()
        .into_iter()
        .partition(|f| f.contains(lagbudget::metrics::KAFKA_GROUP_MEMBERS));
    for panel in &unfeedable {
        println!("no data, as expected on the mock cluster (no DescribeGroups):\n{panel}");
    }
    assert!(
        failures.is_empty(),
        "panel queries that returned no series at any point of the scenario \
         (phases ok, breach, blind, recovered; budgets {budget} and {kafka_budget}):\n{}",
        failures.join("\n")
    );

    timings.add("whole test", test_started);
    timings.print();
    api_lag.stop();
    daemon.stop().await;
    projection.drop_schema().await;
    drop(cluster);
    drop(prometheus);
    drop(alertmanager);
    drop(server);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .expect("clock after 1970")
}

#[derive(Default)]
struct Timings(Vec<String>);

impl Timings {
    fn add(&mut self, what: &str, since: Instant) {
        let line = format!("{what}: {:.2} s", since.elapsed().as_secs_f64());
        println!("{line}");
        self.0.push(line);
    }

    fn note(&mut self, line: String) {
        self.0.push(line);
    }

    fn print(&self) {
        println!("timings:");
        for line in &self.0 {
            println!("  {line}");
        }
    }
}

/// A child process killed on drop; its output goes to a log file whose tail is printed when
/// the test fails.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(name: &'static str, program: &str, args: &[String], dir: &Path) -> Service {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Service { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for `url` to answer 2xx; fails at once if the process exits.
    async fn wait_ready(&mut self, http: &reqwest::Client, url: &str, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(response) = http.get(url).send().await {
                if response.status().is_success() {
                    println!("{} ready after {:?}", self.name, started.elapsed());
                    return;
                }
            }
            assert!(
                started.elapsed() < limit,
                "{} not ready at {url} after {limit:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the {} log ---\n{}",
                self.name,
                self.log_tail()
            );
        }
    }
}

fn promtool_check_rules(path: &Path) {
    let output = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(path)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool check rules rejects the generated rules:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `inhibit_rules:` block of the deploy Alertmanager config, verbatim, so the test runs
/// exactly the inhibitions users deploy.
fn deploy_inhibit_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/alertmanager/alertmanager.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut block = String::new();
    let mut inside = false;
    for line in text.lines() {
        if inside {
            let top_level_key = !line.is_empty()
                && !line.starts_with(' ')
                && !line.starts_with('#')
                && !line.starts_with('-');
            if top_level_key {
                break;
            }
        } else if line.starts_with("inhibit_rules:") {
            inside = true;
        } else {
            continue;
        }
        block.push_str(line);
        block.push('\n');
    }
    assert!(
        inside && block.contains(EXCEEDED) && block.contains("LagbudgetDown"),
        "{} has a top-level inhibit_rules block naming {EXCEEDED} and LagbudgetDown; found:\n{block}",
        path.display()
    );
    block
}

/// One alert of one webhook notification, as received.
#[derive(Debug, Clone)]
struct AlertSeen {
    /// Unix time the notification arrived.
    received: f64,
    /// Index of the notification among all received.
    notification: usize,
    notification_status: String,
    status: String,
    alert: Value,
}

impl AlertSeen {
    fn label(&self, name: &str) -> &str {
        self.alert["labels"][name].as_str().unwrap_or("")
    }

    fn annotation(&self, name: &str) -> &str {
        self.alert["annotations"][name].as_str().unwrap_or("")
    }
}

/// The webhook receiver: records every notification Alertmanager posts.
struct Inbox {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(f64, Value)>>>,
}

impl Inbox {
    async fn start() -> Inbox {
        let received: Arc<Mutex<Vec<(f64, Value)>>> = Arc::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let store = store.clone();
                async move {
                    let value: Value = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("webhook body is JSON ({e}): {body}"));
                    store.lock().expect("inbox").push((unix_now(), value));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Inbox { addr, received }
    }

    /// Every alert of every notification about `budget`, in arrival order.
    fn alerts(&self, budget: &str) -> Vec<AlertSeen> {
        let received = self.received.lock().expect("inbox");
        let mut seen = Vec::new();
        for (i, (at, notification)) in received.iter().enumerate() {
            for alert in notification["alerts"].as_array().into_iter().flatten() {
                if alert["labels"]["budget"] == budget {
                    seen.push(AlertSeen {
                        received: *at,
                        notification: i,
                        notification_status: notification["status"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        status: alert["status"].as_str().unwrap_or("").to_owned(),
                        alert: alert.clone(),
                    });
                }
            }
        }
        seen
    }

    fn with_status(&self, budget: &str, alertname: &str, status: &str) -> Vec<AlertSeen> {
        self.alerts(budget)
            .into_iter()
            .filter(|a| a.label("alertname") == alertname && a.status == status)
            .collect()
    }

    fn firing(&self, budget: &str, alertname: &str) -> Vec<AlertSeen> {
        self.with_status(budget, alertname, "firing")
    }

    fn resolved(&self, budget: &str, alertname: &str) -> Vec<AlertSeen> {
        self.with_status(budget, alertname, "resolved")
    }
}

fn assert_page_labels(page: &AlertSeen, budget: &str) {
    let alert = &page.alert;
    assert_eq!(page.label("budget"), budget, "{alert:#?}");
    assert_eq!(page.label("severity"), "page", "{alert:#?}");
    assert_eq!(page.label("owner"), OWNER, "{alert:#?}");
    for annotation in ["summary", "description", "runbook_url", "dashboard_url"] {
        assert!(
            !page.annotation(annotation).is_empty(),
            "the page carries annotation {annotation}: {alert:#?}"
        );
    }
    assert_eq!(page.annotation("runbook_url"), RUNBOOK, "{alert:#?}");
    assert!(
        page.annotation("dashboard_url").contains(budget),
        "dashboard_url leads to this budget: {alert:#?}"
    );
    println!(
        "page: summary {:?}; description {:?}; dashboard_url {:?}",
        page.annotation("summary"),
        page.annotation("description"),
        page.annotation("dashboard_url")
    );
}

/// Alertmanager's own view: any AtRisk or BurnRate alert it holds for the budget while
/// Exceeded fires is suppressed by an inhibition.
async fn check_inhibited_in_alertmanager(
    http: &reqwest::Client,
    am_url: &str,
    budget: &str,
    phase: &str,
) {
    let alerts: Value = http
        .get(format!("{am_url}/api/v2/alerts"))
        .query(&[("filter", format!("budget=\"{budget}\""))])
        .send()
        .await
        .expect("Alertmanager alerts")
        .json()
        .await
        .expect("alerts JSON");
    let mut held = Vec::new();
    for alert in alerts.as_array().expect("alert list") {
        let name = alert["labels"]["alertname"].as_str().unwrap_or("");
        let state = alert["status"]["state"].as_str().unwrap_or("");
        held.push(format!("{name}={state}"));
        if name == AT_RISK || name == BURN_RATE {
            let inhibited_by = alert["status"]["inhibitedBy"]
                .as_array()
                .map_or(0, Vec::len);
            assert!(
                state == "suppressed" && inhibited_by > 0,
                "{name} is inhibited while {EXCEEDED} fires ({phase}): {alert:#}"
            );
        }
    }
    println!(
        "Alertmanager holds for {budget} ({phase}): {}",
        held.join(", ")
    );
}

/// Prometheus' HTTP query API.
struct Prom {
    url: String,
    http: reqwest::Client,
}

impl Prom {
    /// The `data` of an instant query at `time` (now if `None`).
    async fn query(&self, expr: &str, time: Option<f64>) -> Result<Value, String> {
        let mut params = vec![("query", expr.to_owned())];
        if let Some(time) = time {
            params.push(("time", format!("{time:.3}")));
        }
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// When Prometheus last evaluated each rule group (changes at every evaluation).
    async fn last_evaluations(&self) -> Vec<String> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/rules", self.url))
            .send()
            .await
            .expect("rules")
            .json()
            .await
            .expect("rules json");
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|group| {
                group["lastEvaluation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// How many series an instant query returns.
    async fn series(&self, expr: &str, time: Option<f64>) -> Result<usize, String> {
        let data = self.query(expr, time).await?;
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().map_or(0, Vec::len),
            _ => 1,
        })
    }

    /// The (labels, value) pairs of an instant vector query.
    async fn vector(&self, expr: &str, time: Option<f64>) -> Vec<(Value, f64)> {
        let data = self
            .query(expr, time)
            .await
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (s["metric"].clone(), value)
            })
            .collect()
    }
}

/// Every panel query (one per target) of the dashboards, filled in for each budget and run at
/// several phases of the scenario; a query passes when, for some budget, it returned at least
/// one series at some phase.
struct PanelCheck {
    /// Per budget, the panel queries in the same order: (dashboard uid, panel title, expr).
    filled: Vec<Vec<(String, String, String)>>,
    /// Per query: (phase, budget) where it returned series, and the errors it met.
    outcomes: Vec<(Vec<String>, Vec<String>)>,
}

impl PanelCheck {
    fn new(budgets: &[&str]) -> PanelCheck {
        let filled: Vec<Vec<(String, String, String)>> = budgets
            .iter()
            .map(|budget| panel_queries(budget, "5m"))
            .collect();
        let count = filled[0].len();
        assert!(count > 0, "the dashboards have panel queries");
        assert!(filled.iter().all(|f| f.len() == count));
        let outcomes = vec![(Vec::new(), Vec::new()); count];
        PanelCheck { filled, outcomes }
    }

    async fn run(&mut self, prom: &Prom, phase: &str) {
        let mut answered = vec![false; self.outcomes.len()];
        for queries in &self.filled {
            for (i, (_, _, expr)) in queries.iter().enumerate() {
                match prom.series(expr, None).await {
                    Ok(0) => {}
                    Ok(_) => {
                        answered[i] = true;
                        self.outcomes[i].0.push(phase.to_owned());
                    }
                    Err(e) => self.outcomes[i].1.push(format!("{phase}: {e}")),
                }
            }
        }
        println!(
            "panel queries ({phase}): {} of {} returned series",
            answered.iter().filter(|a| **a).count(),
            answered.len()
        );
    }

    fn failures(&self) -> Vec<String> {
        self.filled[0]
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, (phases, _))| phases.is_empty())
            .map(|((uid, title, expr), (_, errors))| {
                format!("  {uid} / {title}: {expr}  {}", errors.join("; "))
            })
            .collect()
    }
}

/// (unix time of reading, `lag_seconds`) pairs.
type Readings = Arc<Mutex<Vec<(f64, Option<f64>)>>>;

/// `lag_seconds` of `/api/v1/budgets/{name}`, read every 100 ms with the time of reading.
struct ApiLagRecorder {
    readings: Readings,
    task: tokio::task::JoinHandle<()>,
}

impl ApiLagRecorder {
    fn start(url: String) -> ApiLagRecorder {
        let readings: Readings = Arc::default();
        let store = readings.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            loop {
                let before = unix_now();
                if let Ok(response) = http.get(&url).send().await {
                    if let Ok(body) = response.json::<Value>().await {
                        // The state is read between `before` and now: take the midpoint.
                        let at = (before + unix_now()) / 2.0;
                        store
                            .lock()
                            .expect("readings")
                            .push((at, body["lag_seconds"].as_f64()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        ApiLagRecorder { readings, task }
    }

    /// API readings taken within `window` seconds of `at`.
    fn around(&self, at: f64, window: f64) -> Vec<(f64, Option<f64>)> {
        self.readings
            .lock()
            .expect("readings")
            .iter()
            .filter(|(t, _)| (t - at).abs() <= window)
            .copied()
            .collect()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Lag panels against the API: the lag Prometheus scraped at time `s` equals a `lag_seconds`
/// the API gave within one scrape interval (1 s) of `s`.
async fn lag_panels_agree_with_api(prom: &Prom, api: &ApiLagRecorder, budget: &str) {
    let panels = panel_queries(budget, "5m");
    let lag_panels: Vec<&(String, String, String)> = panels
        .iter()
        .filter(|(_, _, expr)| expr.contains("lagbudget_lag_seconds"))
        .collect();
    assert!(
        !lag_panels.is_empty(),
        "the dashboards have lag panels (lagbudget_lag_seconds)"
    );
    let raw = format!("lagbudget_lag_seconds{{budget=\"{budget}\"}}");
    for round in 0..3 {
        // Let the API readings cover one second past the evaluation time.
        let at = unix_now() - 1.2;
        let scraped = prom.vector(&format!("timestamp({raw})"), Some(at)).await;
        let values = prom.vector(&raw, Some(at)).await;
        assert_eq!(
            values.len(),
            1,
            "one lag series for the one probe: {values:?}"
        );
        let scraped_at = scraped.first().expect("timestamp of the lag sample").1;
        let value = values[0].1;
        let readings = api.around(scraped_at, 1.0);
        let closest = readings
            .iter()
            .filter_map(|(t, lag)| lag.map(|lag| (t, lag, (lag - value).abs())))
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let Some((t, lag, diff)) = closest else {
            panic!("no API lag reading within 1 s of the scrape at {scraped_at}: {readings:?}");
        };
        println!(
            "lag agreement {round}: Prometheus {value:.3} s scraped at {scraped_at:.3}; \
             API {lag:.3} s read {:+.3} s from it",
            t - scraped_at
        );
        assert!(
            diff < 0.01,
            "Prometheus lag {value} (scraped at {scraped_at}) matches no API lag_seconds within \
             1 s of that scrape: {readings:?}"
        );
        for (uid, title, expr) in &lag_panels {
            let series = prom.vector(expr, Some(at)).await;
            let shown: Vec<f64> = series.iter().map(|(_, v)| *v).collect();
            assert!(
                shown.iter().any(|v| (v - value).abs() < 0.01),
                "lag panel {uid} / {title} ({expr}) shows {shown:?}, Prometheus' lag is {value}"
            );
        }
        // The next round looks at the next scrape: wait until Prometheus has one newer than
        // this round's, 1.2 s old at least (so that API readings cover a second past it).
        wait_for(
            "Prometheus' next scrape",
            Duration::from_secs(30),
            || async {
                let newer = prom
                    .vector(&format!("timestamp({raw})"), Some(unix_now() - 1.2))
                    .await
                    .first()
                    .map(|(_, at)| *at)?;
                (newer > scraped_at).then_some(())
            },
        )
        .await;
    }
}

/// The DOM of the status page as Chromium built it.
async fn status_page_dom(daemon: &Daemon, dir: &Path, name: &str) -> String {
    let (url, dir, name) = (daemon.url("/"), dir.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        chromium(
            &["--dump-dom".to_owned()],
            &url,
            &dir,
            &format!("{name}-dom"),
        )
        .0
    })
    .await
    .expect("chromium")
}

/// The status page during the breach: a screenshot saved for people, the DOM checked for the
/// budget, its state and since when, lag against budget, the probe's freshness, and that it
/// refreshes itself without JavaScript.
async fn status_page_in_chromium(daemon: &Daemon, budget: &str, dir: &Path) {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lagbudget-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let png = shots.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let (url, dir_owned, png_arg) = (
        daemon.url("/"),
        dir.to_owned(),
        format!("--screenshot={}", png.display()),
    );
    tokio::task::spawn_blocking(move || {
        chromium(
            &[png_arg, "--window-size=1200,800".to_owned()],
            &url,
            &dir_owned,
            "screenshot",
        )
    })
    .await
    .expect("chromium");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("screenshot {}: {e}", png.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        png.display()
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().expect("width"));
    let height = u32::from_be_bytes(bytes[20..24].try_into().expect("height"));
    println!(
        "status page screenshot: {} ({width}x{height}, {} bytes)",
        png.display(),
        bytes.len()
    );
    assert_eq!(
        (width, height),
        (1200, 800),
        "screenshot has the window size"
    );

    let dom = status_page_dom(daemon, dir, "breach").await;
    let api = daemon.budget(budget).await;
    assert!(dom.contains(budget), "the page names the budget:\n{dom}");
    assert!(
        dom.contains(">breach<"),
        "the page shows state breach:\n{dom}"
    );
    let since = api["since"].as_str().expect("since");
    assert!(
        dom.contains(since),
        "the page says since when ({since}):\n{dom}"
    );
    let budget_shown = format!("/ {MAX_LAG_SECONDS:.1} s");
    assert!(
        dom.contains(&budget_shown),
        "lag against the budget ({budget_shown}):\n{dom}"
    );
    assert!(dom.contains("fresh"), "the probe's freshness:\n{dom}");
    // The page's script only swaps in a fresh copy; without scripts it reloads itself.
    assert!(
        dom.contains("<noscript><meta http-equiv=\"refresh\""),
        "the page refreshes itself without JavaScript:\n{dom}"
    );
}

/// The status page while blind: the probe is stale and shows its last error.
async fn blind_status_page(daemon: &Daemon, budget: &str, dir: &Path) {
    let api = daemon.budget(budget).await;
    let probe = &api["probes"][0];
    assert!(probe["stale"].as_bool().expect("stale"), "blind: {api}");
    let reason = probe["error"]["reason"].as_str().expect("error reason");
    let dom = status_page_dom(daemon, dir, "blind").await;
    assert!(dom.contains(budget), "the page names the budget:\n{dom}");
    assert!(dom.contains("stale"), "the probe shows stale:\n{dom}");
    assert!(
        dom.contains(&format!("{reason}:")),
        "the probe shows its last error ({reason}):\n{dom}"
    );
    println!("status page while blind: stale, last error {reason}");
}

/// An HTTP view on a free port: `{"seq": 2}` from a cache that held it 30 s of its 60 s.
async fn serve_search_view() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the search view");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/search",
        axum::routing::get(|| async {
            (
                [
                    (axum::http::header::AGE, "30"),
                    (axum::http::header::CACHE_CONTROL, "max-age=60"),
                ],
                axum::Json(serde_json::json!({ "seq": 2 })),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
