//! `nats_consumer` against a private `nats-server -js` on a free port: pending and
//! ack-pending counts exact, the age of the first unacknowledged message within ±1 s of the
//! time it was published, a deleted message skipped to the next stored one, a caught-up
//! consumer at 0, and a missing consumer as `no_data`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::support::{
    Daemon, Metrics, PATIENCE, check_connect_lines, closed_port, load_config, unique, wait_for,
};

/// A `nats-server -js` of this test's own, stopped (and its store removed) on drop.
pub(crate) struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub(crate) async fn start() -> NatsServer {
        NatsServer::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> NatsServer {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .map(str::to_owned)
            .or_else(|| {
                let found = Command::new("sh")
                    .args(["-c", "command -v nats-server"])
                    .output()
                    .ok()?;
                let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
                (!path.is_empty()).then_some(path)
            })
            .expect(
                "nats-server must be installed for this test (Debian package nats-server; \
                 scripts/test installs it)",
            );
        let store = tempfile::tempdir().expect("store dir");
        let port = closed_port();
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = NatsServer {
            child,
            port,
            _store: store,
        };
        wait_for(
            "nats-server to accept connections",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Publishes one message and waits for JetStream to store it; returns the wall-clock time
/// after the acknowledgement (the server stamps the message just before).
async fn publish(js: &jetstream::Context, subject: &str) -> f64 {
    js.publish(subject.to_owned(), "order".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    wall_clock()
}

async fn pull_consumer(stream: &stream::Stream, name: &str) -> consumer::PullConsumer {
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create consumer")
}

/// Fetches exactly `count` messages (waiting up to 5 s for them).
async fn fetch(consumer: &consumer::PullConsumer, count: usize) -> Vec<jetstream::Message> {
    let mut batch = consumer
        .batch()
        .max_messages(count)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message.expect("message"));
    }
    assert_eq!(messages.len(), count, "fetched");
    messages
}

fn get(metrics: &Metrics, name: &str, budget: &str, probe: &str) -> Option<f64> {
    metrics.get(name, &[("budget", budget), ("probe", probe)])
}

/// Issue acceptance: pending exact, age within ±1 s; a consumer caught up reads 0.
#[tokio::test(flavor = "multi_thread")]
async fn consumer_lag_and_backlog_match_published_ages() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let name = unique("ORDERS");
    let subject = format!("{name}.created");
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .expect("create stream");
    let mailer = pull_consumer(&stream, "mailer").await;
    let done = pull_consumer(&stream, "done").await;
    pull_consumer(&stream, "lazy").await;

    let first_at = publish(&js, &subject).await;
    // Injects age: #1 is two seconds older than #2 (each age is checked against its own
    // publication time, not against this sleep).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_at = publish(&js, &subject).await;
    for _ in 0..3 {
        publish(&js, &subject).await;
    }
    // mailer: #1 acknowledged, #2 delivered and not acknowledged, #3..#5 not delivered.
    let delivered = fetch(&mailer, 2).await;
    delivered[0].double_ack().await.expect("ack #1");
    // done: everything acknowledged.
    for message in fetch(&done, 5).await {
        message.double_ack().await.expect("ack");
    }
    // Injects age: the outstanding messages age by 2 s more before the daemon starts (about
    // 4 s for #1 and 2 s for #2; checked against their publication times).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let budget = unique("nats");
    let probe = |probe: &str, consumer: &str| {
        format!(
            "      - name: {probe}
        interval: 1s
        nats_consumer: {{ source: bus, stream: {name}, consumer: {consumer} }}
"
        )
    };
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
  bus: {{ nats: {{ url: \"{url}\" }} }}
budgets:
  - name: {budget}
    max_lag: 5m
    probes:
{mailer}{done}{lazy}{missing}",
        url = server.url(),
        mailer = probe("mailer", "mailer"),
        done = probe("done", "done"),
        lazy = probe("lazy", "lazy"),
        missing = probe("missing", "nobody"),
    ))
    .await;
    daemon.wait_ready(PATIENCE).await;
    let metrics = wait_for("fresh samples", PATIENCE, || async {
        let metrics = daemon.metrics().await;
        ["mailer", "done", "lazy"]
            .iter()
            .all(|p| get(&metrics, "lagbudget_lag_seconds", &budget, p).is_some())
            .then_some(metrics)
    })
    .await;

    let check_age = |metrics: &Metrics, probe: &str, published_at: f64| {
        let lag = get(metrics, "lagbudget_lag_seconds", &budget, probe).expect("lag");
        let last_success = get(
            metrics,
            "lagbudget_probe_last_success_timestamp_seconds",
            &budget,
            probe,
        )
        .expect("last success");
        let expected = last_success - published_at;
        eprintln!("nats {probe}: measured lag {lag:.3} s, expected {expected:.3} s");
        assert!(
            (lag - expected).abs() <= 1.0,
            "{probe}: lag {lag} not within ±1 s of {expected}"
        );
    };
    // The oldest unacknowledged message of mailer is #2 (delivered, not acknowledged).
    check_age(&metrics, "mailer", second_at);
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", &budget, "mailer"),
        Some(4.0),
        "3 pending + 1 awaiting ack"
    );
    // Nothing delivered to lazy: its oldest is #1.
    check_age(&metrics, "lazy", first_at);
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", &budget, "lazy"),
        Some(5.0)
    );
    // Caught up: 0, not a growing number.
    assert_eq!(
        get(&metrics, "lagbudget_lag_seconds", &budget, "done"),
        Some(0.0)
    );
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", &budget, "done"),
        Some(0.0)
    );
    let missing = daemon.probe(&budget, "missing").await;
    assert_eq!(missing["error"]["reason"], "no_data", "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("has no consumer \"nobody\"")),
        "{missing}"
    );

    // #1 deleted: lazy's first unacknowledged message is now the next one stored, #2.
    assert!(stream.delete_message(1).await.expect("delete #1"));
    let metrics = wait_for("the deletion to be seen", PATIENCE, || async {
        let metrics = daemon.metrics().await;
        (get(&metrics, "lagbudget_backlog_messages", &budget, "lazy") == Some(4.0))
            .then_some(metrics)
    })
    .await;
    check_age(&metrics, "lazy", second_at);

    // mailer acknowledges #2 and takes the rest: caught up, 0 within a few runs.
    delivered[1].double_ack().await.expect("ack #2");
    for message in fetch(&mailer, 3).await {
        message.double_ack().await.expect("ack");
    }
    wait_for("mailer caught up", PATIENCE, || async {
        let metrics = daemon.metrics().await;
        let lag = get(&metrics, "lagbudget_lag_seconds", &budget, "mailer");
        let backlog = get(&metrics, "lagbudget_backlog_messages", &budget, "mailer");
        (lag == Some(0.0) && backlog == Some(0.0)).then_some(())
    })
    .await;

    // check --connect: the source and each probe.
    let config = lagbudget::config::load(&daemon.config_path).expect("valid");
    let lines = check_connect_lines(&config).await;
    assert!(
        lines.iter().any(|l| l.contains("ok JetStream answers")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/mailer") && l.contains("ok consumer readable")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/missing") && l.contains("no_data")),
        "{lines:?}"
    );
    daemon.stop().await;
}

/// No server on the port: the probe is down with a bounded reason within its timeout, and
/// never reports 0.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_down_not_caught_up() {
    let config = load_config(&format!(
        "sources:
  bus: {{ nats: {{ url: \"nats://127.0.0.1:{}\" }} }}
budgets:
  - name: b
    max_lag: 1m
    timeout: 2s
    probes:
      - name: c
        nats_consumer: {{ source: bus, stream: S, consumer: C }}
",
        closed_port()
    ));
    // Bounded: the run ends (with its 2 s timeout at the latest) rather than retrying forever.
    // How long it took is printed, not asserted: a loaded machine may take longer.
    let started = std::time::Instant::now();
    let results =
        tokio::time::timeout(PATIENCE, lagbudget::oneshot::run_probes_once(&config, None))
            .await
            .unwrap_or_else(|_| panic!("a run with a 2 s timeout still running after {PATIENCE:?}"))
            .expect("runs");
    let took = started.elapsed();
    let error = results[0].result.as_ref().expect_err("nobody answers");
    eprintln!("no server: {error} after {took:?}");
    assert!(
        ["connect", "timeout"].contains(&error.reason.as_str()),
        "{error}"
    );
}

/// Credentials in the URL are used (user and password), and a wrong password is a `connect`
/// error that does not show it.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_the_url_log_in_and_stay_secret() {
    let server = NatsServer::start_with(&["--user", "reader", "--pass", "nats-pw-right"]).await;
    for (password, works) in [("nats-pw-right", true), ("nats-pw-wrong", false)] {
        let config = load_config(&format!(
            "sources:
  bus: {{ nats: {{ url: \"nats://reader:{password}@127.0.0.1:{}\" }} }}
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: c
        nats_consumer: {{ source: bus, stream: S, consumer: C }}
",
            server.port
        ));
        let reports = lagbudget::oneshot::check_connections(&config, Duration::from_secs(3)).await;
        let source = reports.first().expect("source report");
        let shown = match &source.result {
            Ok(ok) => format!("ok {ok}"),
            Err(e) => format!("{e}"),
        };
        eprintln!("nats login with {password}: {shown}");
        assert!(!shown.contains(password), "{shown}");
        if works {
            assert!(shown.starts_with("ok JetStream answers"), "{shown}");
        } else {
            let error = source.result.as_ref().expect_err("wrong password");
            assert_eq!(error.reason.as_str(), "connect", "{error}");
        }
    }
}
