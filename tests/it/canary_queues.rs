//! `canary` with message views: lagbudget's own Kafka topic (mock cluster), NATS subject
//! (a private `nats-server`) and RabbitMQ queue (the machine's, through the management API)
//! read back with lag under 1 s while markers flow; and a relay the test controls (subject →
//! subject, queue → queue) that, paused, makes the view past it lag by the pause (±1 s) while
//! the view before it keeps up.

use std::time::Duration;

use futures_util::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::canary_e2e::{Gate, lag_of};
use crate::kafka::Cluster;
use crate::nats::NatsServer;
use crate::support::{
    Daemon, Metrics, PATIENCE, check_connect_lines, load_config, poll_until, unique, wait_for,
};

/// How far a measured lag may be from the injected pause, and the most a flowing view lags.
const TOLERANCE_S: f64 = 1.0;
/// How long a pause lasts at least (observed as the view's lag).
const PAUSE_S: f64 = 3.0;

fn canary(name: &str, write: &str, reads: &[&str]) -> String {
    let reads: String = reads
        .iter()
        .map(|r| format!("            - {r}\n"))
        .collect();
    format!(
        "      - name: {name}
        interval: 500ms
        canary:
          write: {write}
          read:
{reads}          write_period: 200ms
          instance: $INSTANCE
"
    )
}

fn config(sources: &str, budget: &str, probes: &[String], instance: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
sources:
{sources}budgets:
  - name: {budget}
    max_lag: 60s
    probes:
{}",
        probes.concat()
    )
    .replace("$INSTANCE", instance)
}

/// `check --connect` answers ok for every source and probe, and says where markers go.
async fn check_connects(yaml: &str, says: &[&str]) {
    let lines = check_connect_lines(&load_config(yaml)).await;
    for line in &lines {
        assert!(line.contains(": ok "), "check --connect: {line}");
    }
    for what in says {
        assert!(
            lines.iter().any(|line| line.contains(what)),
            "check --connect says {what:?}: {lines:#?}"
        );
    }
}

/// Waits until every `(probe, view)` reads under the tolerance.
async fn wait_flowing(daemon: &Daemon, budget: &str, views: &[(&str, &str)]) -> Metrics {
    let flowing = poll_until(PATIENCE, || async {
        let m = daemon.metrics().await;
        views
            .iter()
            .all(|(probe, view)| {
                lag_of(&m, budget, probe, view).is_some_and(|(lag, _)| lag < TOLERANCE_S)
            })
            .then_some(m)
    })
    .await;
    let Some(m) = flowing else {
        panic!(
            "timed out after {PATIENCE:?} waiting for every view to read under 1 s: {:#}",
            daemon.budget(budget).await
        );
    };
    for (probe, view) in views {
        let (lag, _) = lag_of(&m, budget, probe, view).expect("view");
        println!("{budget}/{probe} {view}: lag {lag:.3} s while flowing");
    }
    m
}

/// Pauses the relay, waits for the view past it to lag by `PAUSE_S`, and checks that lag
/// against the pause (±1 s) and that the view before the relay kept up; then resumes.
async fn pause_relay(
    daemon: &Daemon,
    budget: &str,
    relay: &mut Gate,
    (probe, before, past): (&str, &str, &str),
) {
    let paused_at = relay.pause().await;
    let m = daemon
        .wait_for_metrics(
            "the view past the relay to lag by the pause",
            PATIENCE,
            |m| lag_of(m, budget, probe, past).is_some_and(|(lag, _)| lag >= PAUSE_S),
        )
        .await;
    let (lag, at) = lag_of(&m, budget, probe, past).expect("view past the relay");
    let injected = at - paused_at;
    println!("{budget}: relay paused, {past} lag {lag:.3} s, paused for {injected:.3} s");
    assert!(
        (lag - injected).abs() <= TOLERANCE_S,
        "{past}: lag {lag:.3} s vs pause {injected:.3} s"
    );
    let (lag, _) = lag_of(&m, budget, probe, before).expect("view before the relay");
    println!("{budget}: relay paused, {before} lag {lag:.3} s");
    assert!(
        lag < TOLERANCE_S,
        "{before} lags {lag:.3} s though the relay is after it"
    );
    relay.resume();
    wait_flowing(daemon, budget, &[(probe, before), (probe, past)]).await;
}

/// lagbudget's own topic on the mock cluster: created by the writer, read by the view.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_markers_in_the_managed_topic_read_back() {
    let cluster = Cluster::start();
    let instance = unique("k").replace('_', "-");
    let budget = "canary-kafka";
    let yaml = config(
        &format!(
            "  events: {{ kafka: {{ brokers: \"{}\" }} }}\n",
            cluster.bootstrap
        ),
        budget,
        &[canary(
            "managed",
            "{ source: events }",
            &["{ source: events }"],
        )],
        &instance,
    );
    let daemon = Daemon::start(&yaml).await;
    wait_flowing(&daemon, budget, &[("managed", "events")]).await;
    check_connects(&yaml, &["markers are produced to topic lagbudget.canary"]).await;

    // What is in the topic: marker JSON keyed by the instance.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("group.id", unique("inspect"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&["lagbudget.canary"])
        .expect("subscribe");
    let record = wait_for("a marker in lagbudget.canary", PATIENCE, || async {
        match consumer.poll(Duration::ZERO) {
            Some(Ok(record)) => Some((
                record.key().map(<[u8]>::to_vec),
                record.payload().map(<[u8]>::to_vec),
            )),
            _ => None,
        }
    })
    .await;
    let (key, payload) = record;
    assert_eq!(
        key.as_deref(),
        Some(instance.as_bytes()),
        "keyed by instance"
    );
    let marker: Value = serde_json::from_slice(&payload.expect("payload")).expect("json");
    println!("a marker in lagbudget.canary: {marker}");
    assert_eq!(marker["instance"], instance.as_str());
    assert_eq!(marker["probe"], "canary-kafka/managed");
    assert!(
        marker["seq"].is_i64() && marker["written_at"].is_string(),
        "{marker}"
    );
    daemon.stop().await;
}

/// lagbudget's own subject, and a subject → subject relay the test pauses.
#[tokio::test(flavor = "multi_thread")]
async fn nats_markers_flow_and_a_paused_relay_shows() {
    let server = NatsServer::start().await;
    let instance = unique("n").replace('_', "-");
    let stop = CancellationToken::new();
    let mut relay = Gate::new();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut incoming = client
        .subscribe(format!("in.{instance}"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let worker = {
        let (client, gate, stop) = (client.clone(), relay.gate.clone(), stop.clone());
        let out = format!("out.{instance}");
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = incoming.next() => message,
                };
                let Some(message) = message else { break };
                let _step = tokio::select! {
                    _ = stop.cancelled() => break,
                    step = gate.lock() => step,
                };
                client
                    .publish(out.clone(), message.payload)
                    .await
                    .expect("relay");
                client.flush().await.expect("flush");
            }
        })
    };

    let budget = "canary-nats";
    let yaml = config(
        &format!("  bus: {{ nats: {{ url: \"{}\" }} }}\n", server.url()),
        budget,
        &[
            canary("managed", "{ source: bus }", &["{ source: bus }"]),
            canary(
                "relayed",
                "{ source: bus, subject: \"in.$instance\" }",
                &[
                    "{ name: direct, source: bus, subject: \"in.$instance\" }",
                    "{ name: relayed, source: bus, subject: \"out.$instance\" }",
                ],
            ),
        ],
        &instance,
    );
    let daemon = Daemon::start(&yaml).await;
    wait_flowing(
        &daemon,
        budget,
        &[
            ("managed", "bus"),
            ("relayed", "direct"),
            ("relayed", "relayed"),
        ],
    )
    .await;
    check_connects(
        &yaml,
        &[&format!(
            "markers are published on subject lagbudget.canary.{instance}"
        )],
    )
    .await;
    pause_relay(
        &daemon,
        budget,
        &mut relay,
        ("relayed", "direct", "relayed"),
    )
    .await;
    daemon.stop().await;
    stop.cancel();
    let _ = worker.await;
}

const MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// The machine's RabbitMQ management API as guest.
#[derive(Clone)]
struct Rabbit {
    http: reqwest::Client,
}

impl Rabbit {
    fn new() -> Rabbit {
        Rabbit {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{MANAGEMENT_URL}/api/{path}"))
            .basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "the RabbitMQ management API must answer at {MANAGEMENT_URL} for this test \
                 (as scripts/test sets up): {e}"
            )
        });
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        let text = response.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Declares a queue the broker deletes after 10 unused minutes.
    async fn declare(&self, queue: &str) {
        let body = json!({"durable": true, "auto_delete": false,
                          "arguments": {"x-expires": 600_000}});
        self.call(
            reqwest::Method::PUT,
            &format!("queues/%2F/{queue}"),
            Some(body),
        )
        .await;
    }

    async fn delete(&self, queue: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("queues/%2F/{queue}"),
            None,
        )
        .await;
    }

    /// Moves what `from` holds to `to` through the default exchange.
    async fn relay(&self, from: &str, to: &str) {
        let got = self
            .call(
                reqwest::Method::POST,
                &format!("queues/%2F/{from}/get"),
                Some(json!({"count": 100, "ackmode": "ack_requeue_false", "encoding": "auto"})),
            )
            .await;
        for message in got.as_array().into_iter().flatten() {
            let body = json!({
                "properties": {},
                "routing_key": to,
                "payload": message["payload"],
                "payload_encoding": message["payload_encoding"],
            });
            let routed = self
                .call(
                    reqwest::Method::POST,
                    "exchanges/%2F/amq.default/publish",
                    Some(body),
                )
                .await;
            assert_eq!(routed["routed"], true, "relayed to {to}");
        }
    }
}

/// lagbudget's own queue (declared capped), a queue → queue relay the test pauses, and a
/// writer whose queue is deleted: unknown, never caught up.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_markers_flow_and_a_paused_relay_shows() {
    let rabbit = Rabbit::new();
    let (inbound, outbound) = (unique("canary_in"), unique("canary_out"));
    rabbit.declare(&inbound).await;
    rabbit.declare(&outbound).await;
    let instance = unique("r").replace('_', "-");
    let stop = CancellationToken::new();
    let mut relay = Gate::new();
    let worker = {
        let (rabbit, gate, stop) = (rabbit.clone(), relay.gate.clone(), stop.clone());
        let (from, to) = (inbound.clone(), outbound.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                {
                    let _step = tokio::select! {
                        _ = stop.cancelled() => break,
                        step = gate.lock() => step,
                    };
                    rabbit.relay(&from, &to).await;
                }
                // Pacing, not synchronisation: the relay looks ten times a second.
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    let budget = "canary-rabbit";
    let yaml = config(
        &format!(
            "  mq: {{ rabbitmq: {{ url: \"{MANAGEMENT_URL}\", username: guest, password: guest }} }}\n"
        ),
        budget,
        &[
            canary("managed", "{ source: mq }", &["{ source: mq }"]),
            canary(
                "relayed",
                &format!("{{ source: mq, routing_key: {inbound} }}"),
                &[&format!(
                    "{{ name: relayed, source: mq, queue: {outbound} }}"
                )],
            ),
        ],
        &instance,
    );
    let daemon = Daemon::start(&yaml).await;
    wait_flowing(
        &daemon,
        budget,
        &[("managed", "mq"), ("relayed", "relayed")],
    )
    .await;

    // lagbudget's own queue is capped.
    let managed = format!("lagbudget.canary.{instance}.{budget}%2Fmanaged");
    let queue = rabbit
        .call(reqwest::Method::GET, &format!("queues/%2F/{managed}"), None)
        .await;
    assert_eq!(queue["arguments"]["x-max-length"], 1000, "{queue}");
    check_connects(
        &yaml,
        &[&format!(
            "markers are published to exchange amq.default with routing key {inbound}"
        )],
    )
    .await;

    let paused_at = relay.pause().await;
    let m = daemon
        .wait_for_metrics("the relayed view to lag by the pause", PATIENCE, |m| {
            lag_of(m, budget, "relayed", "relayed").is_some_and(|(lag, _)| lag >= PAUSE_S)
        })
        .await;
    let (lag, at) = lag_of(&m, budget, "relayed", "relayed").expect("relayed view");
    let injected = at - paused_at;
    println!("{budget}: relay paused, relayed lag {lag:.3} s, paused for {injected:.3} s");
    assert!(
        (lag - injected).abs() <= TOLERANCE_S,
        "relayed: lag {lag:.3} s vs pause {injected:.3} s"
    );
    let (lag, _) = lag_of(&m, budget, "managed", "mq").expect("managed view");
    assert!(lag < TOLERANCE_S, "the managed view lags {lag:.3} s");
    relay.resume();
    wait_flowing(&daemon, budget, &[("relayed", "relayed")]).await;

    // The queue the writer publishes to is gone: every publish fails (routed to no queue), and
    // the view is unknown (no lag series) rather than caught up, while the other probe goes on.
    relay.pause().await;
    rabbit.delete(&inbound).await;
    let relayed = [
        ("budget", budget),
        ("probe", "relayed"),
        ("replica", "relayed"),
    ];
    daemon
        .wait_for_metrics("the relayed view to be unknown", PATIENCE, |m| {
            !m.has_series("lagbudget_lag_seconds", &relayed)
        })
        .await;
    let probe = daemon.probe(budget, "relayed").await;
    let error = probe["error"]["message"].as_str().unwrap_or_default();
    println!("{budget}: writer failing: {error}");
    assert!(error.contains("reached no queue"), "{probe:#}");
    daemon
        .watch_runs((budget, "relayed"), 3, PATIENCE, |m| {
            assert!(
                !m.has_series("lagbudget_lag_seconds", &relayed),
                "a lag while the writer fails"
            );
            let (lag, _) = lag_of(m, budget, "managed", "mq").expect("the managed view");
            assert!(lag < TOLERANCE_S, "the managed view lags {lag:.3} s");
        })
        .await;

    daemon.stop().await;
    stop.cancel();
    let _ = worker.await;
    rabbit.delete(&outbound).await;
    rabbit.delete(&managed).await;
}
