//! `rabbitmq_queue` against the machine's RabbitMQ (127.0.0.1, management API on 15672, which
//! `scripts/test` enables): exact backlog, head-message age, an empty queue, a dead-letter queue
//! that must stay empty, backlog-only queues, `check --connect`, and sources that answer
//! garbage, refuse us or do not know the queue.
//!
//! Queues are declared and filled through the management API itself (no AMQP client needed),
//! with unique names, deleted at the end, and declared with `x-expires` so that a failed test
//! leaves nothing behind for long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Daemon, Metrics, unique, wait_for};

const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// The machine's RabbitMQ, through its management API as the guest user.
struct Rabbit {
    http: reqwest::Client,
    queues: Vec<String>,
}

impl Rabbit {
    /// Fails (never skips) with what to do when the management API does not answer.
    async fn connect() -> Rabbit {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let answer = http
            .get(format!("{MANAGEMENT_URL}/api/overview"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {}
            other => panic!(
                "the RabbitMQ management API must answer at {MANAGEMENT_URL} for this test \
                 (RabbitMQ on 127.0.0.1:5672 with `rabbitmq-plugins enable \
                 rabbitmq_management`, as scripts/test does): {other:?}"
            ),
        }
        Rabbit {
            http,
            queues: Vec::new(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{MANAGEMENT_URL}/api/{path}")
    }

    /// Declares a queue in vhost `/` that the broker deletes after 10 unused minutes.
    async fn declare(&mut self, queue: &str, mut arguments: Value) {
        arguments["x-expires"] = json!(600_000);
        let response = self
            .http
            .put(self.api(&format!("queues/%2F/{queue}")))
            .basic_auth("guest", Some("guest"))
            .json(&json!({"durable": true, "auto_delete": false, "arguments": arguments}))
            .send()
            .await
            .expect("declare queue");
        assert!(
            response.status().is_success(),
            "declare {queue}: {response:?}"
        );
        self.queues.push(queue.to_owned());
    }

    /// Publishes one message through the default exchange with the given AMQP properties.
    async fn publish(&self, queue: &str, properties: Value) {
        let response: Value = self
            .http
            .post(self.api("exchanges/%2F/amq.default/publish"))
            .basic_auth("guest", Some("guest"))
            .json(&json!({
                "properties": properties,
                "routing_key": queue,
                "payload": "lagbudget test",
                "payload_encoding": "string",
            }))
            .send()
            .await
            .expect("publish")
            .json()
            .await
            .expect("publish answer");
        assert_eq!(response["routed"], true, "published to {queue}");
    }

    /// Waits until the management statistics of `queue` show `messages` messages with head
    /// timestamp `head` (they refresh every 5 s), so the daemon reads settled figures.
    async fn wait_for_statistics(&self, queue: &str, messages: u64, head: Option<u64>) {
        let url = self.api(&format!("queues/%2F/{queue}"));
        wait_for(
            &format!("statistics of {queue}: {messages} messages, head {head:?}"),
            Duration::from_secs(20),
            || async {
                let stats: Value = self
                    .http
                    .get(&url)
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let agrees = stats["messages"].as_u64() == Some(messages)
                    && stats["head_message_timestamp"].as_u64() == head;
                agrees.then_some(())
            },
        )
        .await;
    }

    async fn delete_queues(self) {
        for queue in &self.queues {
            let response = self
                .http
                .delete(self.api(&format!("queues/%2F/{queue}")))
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .expect("delete queue");
            assert!(response.status().is_success(), "delete {queue}");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn source_yaml(name: &str, url: &str, password: &str) -> String {
    format!(
        "  {name}: {{ rabbitmq: {{ url: \"{url}\", username: guest, password: \"{password}\" }} }}\n"
    )
}

fn probe_yaml(name: &str, source: &str, queue: &str, extra: &str) -> String {
    format!(
        "      - name: {name}\n        interval: 1s\n{extra}        rabbitmq_queue: {{ source: {source}, queue: \"{queue}\" }}\n"
    )
}

/// Waits until the probe has a fresh sample with a backlog, and returns that scrape.
async fn wait_for_backlog(daemon: &Daemon, budget: &str, probe: &str) -> Metrics {
    wait_for(
        &format!("a backlog from {budget}/{probe}"),
        Duration::from_secs(20),
        || async {
            let metrics = daemon.metrics().await;
            metrics
                .has_series(
                    "lagbudget_backlog_messages",
                    &[("budget", budget), ("probe", probe)],
                )
                .then_some(metrics)
        },
    )
    .await
}

/// Issue acceptance: backlog exact, head age within ±2 s (timestamps are whole seconds), an
/// empty queue reads 0; a queue nobody consumes stalls; a queue that cannot give times reports
/// backlog only (no lag series), and fails with `no_data` under a lag budget.
#[tokio::test(flavor = "multi_thread")]
async fn queue_backlog_head_age_empty_queue_and_backlog_only() {
    let mut rabbit = Rabbit::connect().await;
    let work = unique("lb_work");
    let empty = unique("lb_empty");
    let quorum = unique("lb_quorum");
    let untimed = unique("lb_untimed");
    rabbit.declare(&work, json!({})).await;
    rabbit.declare(&empty, json!({})).await;
    rabbit
        .declare(&quorum, json!({"x-queue-type": "quorum"}))
        .await;
    rabbit.declare(&untimed, json!({})).await;

    // Three messages, the head published "20 s ago" on the publisher's clock.
    let head = unix_now() - 20;
    for timestamp in [head, head + 5, head + 10] {
        rabbit.publish(&work, json!({"timestamp": timestamp})).await;
    }
    rabbit.publish(&quorum, json!({"timestamp": head})).await;
    rabbit.publish(&quorum, json!({"timestamp": head})).await;
    rabbit.publish(&untimed, json!({})).await;
    rabbit.wait_for_statistics(&work, 3, Some(head)).await;
    rabbit.wait_for_statistics(&empty, 0, None).await;
    rabbit.wait_for_statistics(&untimed, 1, None).await;
    rabbit.wait_for_statistics(&quorum, 2, None).await;

    let timed = unique("rabbit_timed");
    let counted = unique("rabbit_counted");
    let yaml = format!(
        "sources:\n{source}budgets:\n  - name: {timed}\n    max_lag: 2m\n    probes:\n{work_probe}{empty_probe}{quorum_timed}{untimed_timed}  - name: {counted}\n    max_backlog: 10\n    probes:\n{quorum_counted}{untimed_counted}",
        source = source_yaml("rabbit", MANAGEMENT_URL, "guest"),
        work_probe = probe_yaml("work", "rabbit", &work, "        stall_after: 2s\n"),
        empty_probe = probe_yaml("empty", "rabbit", &empty, "        stall_after: 2s\n"),
        quorum_timed = probe_yaml("quorum", "rabbit", &quorum, ""),
        untimed_timed = probe_yaml("untimed", "rabbit", &untimed, ""),
        quorum_counted = probe_yaml("quorum", "rabbit", &quorum, ""),
        untimed_counted = probe_yaml("untimed", "rabbit", &untimed, ""),
    );
    let daemon = Daemon::start(&yaml).await;
    daemon.wait_ready(Duration::from_secs(15)).await;

    let metrics = wait_for_backlog(&daemon, &timed, "work").await;
    let work_labels = [("budget", timed.as_str()), ("probe", "work")];
    let backlog = metrics.get("lagbudget_backlog_messages", &work_labels);
    let lag = metrics
        .get("lagbudget_lag_seconds", &work_labels)
        .expect("a classic queue with timestamps has a lag");
    let measured_at = metrics
        .get(
            "lagbudget_probe_last_success_timestamp_seconds",
            &work_labels,
        )
        .expect("last success");
    let expected = measured_at - head as f64;
    eprintln!(
        "work queue: backlog {backlog:?} (expected 3), head age {lag:.3} s (expected {expected:.3} s)"
    );
    assert_eq!(backlog, Some(3.0));
    assert!(
        (lag - expected).abs() <= 2.0,
        "head age {lag} not within ±2 s of {expected}"
    );
    let detail = daemon.probe(&timed, "work").await["detail"].clone();
    assert_eq!(
        detail,
        "3 messages (3 ready, 0 unacknowledged), 0 consumers, nobody consumes"
    );

    let empty_labels = [("budget", timed.as_str()), ("probe", "empty")];
    let metrics = wait_for_backlog(&daemon, &timed, "empty").await;
    let empty_lag = metrics.get("lagbudget_lag_seconds", &empty_labels);
    let empty_backlog = metrics.get("lagbudget_backlog_messages", &empty_labels);
    eprintln!("empty queue: lag {empty_lag:?}, backlog {empty_backlog:?} (expected 0 and 0)");
    assert_eq!((empty_lag, empty_backlog), (Some(0.0), Some(0.0)));

    // Nobody takes messages out of the work queue: it stalls; the empty queue does not.
    wait_for(
        "the unconsumed work queue to stall",
        Duration::from_secs(15),
        || async {
            let metrics = daemon.metrics().await;
            (metrics.get("lagbudget_stalled", &work_labels) == Some(1.0)).then_some(())
        },
    )
    .await;
    let metrics = daemon.metrics().await;
    assert_eq!(metrics.get("lagbudget_stalled", &empty_labels), Some(0.0));

    // Backlog only: a quorum queue reports no head timestamp, and a classic queue's head
    // published without one has none. Counted, they have a backlog and no lag series (unknown
    // is not 0); under max_lag they are unknown with `no_data`.
    for (probe, expected) in [("quorum", 2.0), ("untimed", 1.0)] {
        let labels = [("budget", counted.as_str()), ("probe", probe)];
        let metrics = wait_for_backlog(&daemon, &counted, probe).await;
        let backlog = metrics.get("lagbudget_backlog_messages", &labels);
        eprintln!("{probe} queue, backlog only: backlog {backlog:?} (expected {expected})");
        assert_eq!(backlog, Some(expected));
        assert!(!metrics.has_series("lagbudget_lag_seconds", &labels));
        assert_eq!(metrics.get("lagbudget_probe_up", &labels), Some(1.0));
        let api = daemon.probe(&counted, probe).await;
        assert!(api["lag_seconds"].is_null(), "{api}");

        let timed_labels = [("budget", timed.as_str()), ("probe", probe)];
        assert_eq!(metrics.get("lagbudget_probe_up", &timed_labels), Some(0.0));
        assert!(
            metrics
                .get(
                    "lagbudget_probe_errors_total",
                    &[timed_labels[0], timed_labels[1], ("reason", "no_data")]
                )
                .is_some_and(|n| n > 0.0)
        );
        let error = daemon.probe(&timed, probe).await["error"].to_string();
        eprintln!("{probe} queue under max_lag: {error}");
        assert!(error.contains("timestamp"), "{error}");
    }

    daemon.stop().await;
    rabbit.delete_queues().await;
}

/// Issue acceptance: a dead-letter queue holding one message under `max_backlog: 0` is a
/// breach. The message is dead-lettered by the broker itself (per-message expiration) from a
/// work queue whose `x-dead-letter-routing-key` points at the DLQ.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_queue_with_one_message_breaches_max_backlog_zero() {
    let mut rabbit = Rabbit::connect().await;
    let dlq = unique("lb_dlq");
    let work = unique("lb_dlx_work");
    rabbit.declare(&dlq, json!({})).await;
    rabbit
        .declare(
            &work,
            json!({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}),
        )
        .await;
    let published = unix_now();
    rabbit
        .publish(&work, json!({"timestamp": published, "expiration": "1"}))
        .await;
    rabbit.wait_for_statistics(&dlq, 1, Some(published)).await;
    rabbit.wait_for_statistics(&work, 0, None).await;

    let budget = unique("rabbit_dlq");
    let yaml = format!(
        "sources:\n{}budgets:\n  - name: {budget}\n    max_backlog: 0\n    probes:\n{}{}",
        source_yaml("rabbit", MANAGEMENT_URL, "guest"),
        probe_yaml("dead-letters", "rabbit", &dlq, ""),
        probe_yaml("work", "rabbit", &work, ""),
    );
    let daemon = Daemon::start(&yaml).await;
    let took = daemon
        .wait_for_state(&budget, "breach", Duration::from_secs(20))
        .await;
    let metrics = daemon.metrics().await;
    let labels = [("budget", budget.as_str()), ("probe", "dead-letters")];
    let backlog = metrics.get("lagbudget_backlog_messages", &labels);
    let ratio = metrics.get("lagbudget_budget_used_ratio", &labels);
    let age = metrics.get("lagbudget_lag_seconds", &labels);
    eprintln!(
        "dead-letter queue: backlog {backlog:?} (expected 1), used ratio {ratio:?}, head age \
         {age:?} s, breach after {took:?}"
    );
    assert_eq!(backlog, Some(1.0));
    assert_eq!(
        metrics.get(
            "lagbudget_state",
            &[("budget", budget.as_str()), ("state", "breach")]
        ),
        Some(1.0)
    );
    // The emptied work queue is within budget; the DLQ alone breaches.
    let work_labels = [("budget", budget.as_str()), ("probe", "work")];
    assert_eq!(
        metrics.get("lagbudget_backlog_messages", &work_labels),
        Some(0.0)
    );
    assert_eq!(
        metrics.get("lagbudget_budget_used_ratio", &work_labels),
        Some(0.0)
    );

    daemon.stop().await;
    rabbit.delete_queues().await;
}

/// Answers every request with `200 text/html`, as a web server in the wrong place would.
async fn start_html_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 8192];
                let mut read = 0;
                // Read up to the end of the request head (GETs have no body), bounded.
                while read < request.len() {
                    match socket.read(&mut request[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let body = "<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, task)
}

/// Issue acceptance: a source that answers garbage (HTML) makes its probe down with
/// `reason=decode`, and the other probes of the daemon carry on. Also: wrong credentials are
/// `connect`, an unknown queue is `no_data`, and no message shows the password.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_refusals_and_unknown_queues_are_bounded_reasons_and_others_carry_on() {
    let mut rabbit = Rabbit::connect().await;
    let healthy = unique("lb_healthy");
    rabbit.declare(&healthy, json!({})).await;
    rabbit.wait_for_statistics(&healthy, 0, None).await;
    let (port, server) = start_html_server().await;

    let budget = unique("rabbit_bad");
    let password = "wrong-secret-password";
    let yaml = format!(
        "sources:\n{}{}{}budgets:\n  - name: {budget}\n    max_backlog: 100\n    probes:\n{}{}{}{}",
        source_yaml("rabbit", MANAGEMENT_URL, "guest"),
        source_yaml("html", &format!("http://127.0.0.1:{port}"), "guest"),
        source_yaml("refused", MANAGEMENT_URL, password),
        probe_yaml("garbage", "html", &healthy, ""),
        probe_yaml("refused", "refused", &healthy, ""),
        probe_yaml("unknown", "rabbit", &unique("lb_missing"), ""),
        probe_yaml("healthy", "rabbit", &healthy, ""),
    );
    let daemon = Daemon::start(&yaml).await;
    daemon.wait_ready(Duration::from_secs(15)).await;

    let errors = |metrics: &Metrics, probe: &str, reason: &str| {
        metrics
            .get(
                "lagbudget_probe_errors_total",
                &[
                    ("budget", budget.as_str()),
                    ("probe", probe),
                    ("reason", reason),
                ],
            )
            .unwrap_or(0.0)
    };
    // Let every probe run a few times.
    let metrics = wait_for(
        "three runs of the garbage probe",
        Duration::from_secs(15),
        || async {
            let metrics = daemon.metrics().await;
            (errors(&metrics, "garbage", "decode") >= 3.0).then_some(metrics)
        },
    )
    .await;
    for (probe, reason) in [
        ("garbage", "decode"),
        ("refused", "connect"),
        ("unknown", "no_data"),
    ] {
        let labels = [("budget", budget.as_str()), ("probe", probe)];
        let count = errors(&metrics, probe, reason);
        let error = daemon.probe(&budget, probe).await["error"].to_string();
        eprintln!("{probe}: {count} errors with reason {reason}; last: {error}");
        assert!(count > 0.0, "{probe} counts {reason}");
        assert_eq!(metrics.get("lagbudget_probe_up", &labels), Some(0.0));
        assert!(!error.contains(password), "{error}");
    }
    let garbage_error = daemon.probe(&budget, "garbage").await["error"].to_string();
    assert!(garbage_error.contains("text/html"), "{garbage_error}");

    let healthy_labels = [("budget", budget.as_str()), ("probe", "healthy")];
    assert_eq!(
        metrics.get("lagbudget_probe_up", &healthy_labels),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("lagbudget_backlog_messages", &healthy_labels),
        Some(0.0)
    );
    assert!(!metrics.text.contains(password));

    daemon.stop().await;
    server.abort();
    rabbit.delete_queues().await;
}

/// `check --connect` reaches the management API and rejects a seconds budget on a queue that
/// cannot give times (a quorum queue), while accepting a counted one and a classic queue.
#[tokio::test(flavor = "multi_thread")]
async fn check_connect_rejects_max_lag_on_a_queue_without_times() {
    let mut rabbit = Rabbit::connect().await;
    let classic = unique("lb_check_classic");
    let quorum = unique("lb_check_quorum");
    rabbit.declare(&classic, json!({})).await;
    rabbit
        .declare(&quorum, json!({"x-queue-type": "quorum"}))
        .await;
    rabbit.wait_for_statistics(&classic, 0, None).await;
    rabbit.wait_for_statistics(&quorum, 0, None).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let check = |yaml: String| {
        let path = dir.path().join(format!("{}.yaml", unique("check")));
        std::fs::write(&path, yaml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lagbudget"))
            .args(["check", "--connect", "-c"])
            .arg(&path)
            .output()
            .expect("run lagbudget");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let config = |limit: &str| {
        format!(
            "sources:\n{}budgets:\n  - name: b\n    {limit}\n    probes:\n{}{}",
            source_yaml("rabbit", MANAGEMENT_URL, "guest"),
            probe_yaml("classic", "rabbit", &classic, ""),
            probe_yaml("quorum", "rabbit", &quorum, ""),
        )
    };

    let (ok, stdout) = check(config("max_lag: 1m"));
    eprintln!("check --connect with max_lag:\n{stdout}");
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("ok    source rabbit (rabbitmq): RabbitMQ "),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    probe b/classic (rabbitmq_queue): classic queue, 0 messages"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "FAIL  probe b/quorum (rabbitmq_queue): no_data: queue \"{quorum}\" is a quorum \
             queue, which reports no head-message timestamp: max_lag cannot be measured; \
             budget it with max_backlog"
        )),
        "{stdout}"
    );

    let (ok, stdout) = check(config("max_backlog: 0"));
    eprintln!("check --connect with max_backlog:\n{stdout}");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("ok    probe b/quorum (rabbitmq_queue): quorum queue, 0 messages, 0 consumers: backlog only"),
        "{stdout}"
    );

    rabbit.delete_queues().await;
}
