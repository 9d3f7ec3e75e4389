//! `mongodb` sources and `mongodb_replica` probes against a scripted replica set
//! (`mongodb_support::MongoPeer`, MockupDB servers answering from a state the test sets; no
//! `mongod` runs here). Oplog method: an idle set with no-op entries only reads 0; a secondary
//! behind a real write reads the write's age on the primary's clock, which the test fixes; a
//! member whose optime stays still while the primary's no-ops pile up is not applying; a
//! member in RECOVERING, gone, removed from the set, or a set whose primary stepped down fails
//! with `topology`, never 0. Heartbeat method: a member that stops applying reads a growing
//! lag, and about 0 once it caught up. `check --connect` on the source and the probes.

use serde_json::{Value, json};

use crate::mongodb_support::MongoPeer;
use crate::support::{
    Daemon, Metrics, PATIENCE, check_connect_lines, load_config, unique, wait_for,
};

/// Unix seconds the scripted oplog is dated around (the primary's clock is fixed near it).
const T0: i64 = 1_700_000_000;

fn optime(secs: i64) -> Value {
    json!({ "ts": [secs, 1], "t": 1 })
}

fn entry(secs: i64, op: &str) -> Value {
    json!({ "ts": [secs, 1], "t": 1, "op": op, "ns": if op == "n" { "" } else { "shop.profiles" },
            "wall_ms": secs * 1000, "o": if op == "n" { json!({ "msg": "periodic noop" }) } else { json!({ "_id": 1 }) } })
}

fn config(peer: &MongoPeer, budget: &str, probe: &str) -> String {
    format!(
        r#"
sources:
  profiles: {{ mongodb: {{ uri: "{uri}" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    interval: 1s
    timeout: 1s
    probes:
      - name: members
        mongodb_replica: {{ source: profiles, {probe} }}
"#,
        uri = peer.uri(),
    )
}

fn lag(metrics: &Metrics, budget: &str, member: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_lag_seconds",
        &[
            ("budget", budget),
            ("probe", "members"),
            ("replica", member),
        ],
    )
}

/// The API's object of the probe entry measuring `member`.
async fn entry_of(daemon: &Daemon, budget: &str, member: &str) -> Value {
    let status = daemon.budget(budget).await;
    status["probes"]
        .as_array()
        .and_then(|probes| probes.iter().find(|p| p["replica"] == member))
        .cloned()
        .unwrap_or_else(|| panic!("no probe entry for {member} in {status}"))
}

/// Waits until the entry of `member` fails with `topology` and a message containing `says`;
/// then its lag is not exported (unknown, never 0).
async fn wait_for_topology(daemon: &Daemon, budget: &str, member: &str, says: &str) {
    let error = wait_for(
        &format!("{member} to fail with topology saying {says:?}"),
        PATIENCE,
        || async {
            let error = entry_of(daemon, budget, member).await["error"].clone();
            (error["reason"] == "topology"
                && error["message"].as_str().is_some_and(|m| m.contains(says)))
            .then_some(error)
        },
    )
    .await;
    eprintln!("{member}: {error}");
    let metrics = daemon.metrics().await;
    assert_eq!(
        lag(&metrics, budget, member),
        None,
        "{member} has no lag while down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oplog_lag_is_the_age_of_the_first_write_a_member_lacks_and_idle_is_zero() {
    let mut peer = MongoPeer::start(3);
    let (primary, behind, current) = (peer.member(0), peer.member(1), peer.member(2));
    // An idle set: the primary's periodic no-ops only. Member 1 has not applied the latest
    // no-op yet (the sawtooth an optime difference shows); nothing it lacks is a change.
    peer.set(json!({
        "clock_ms": (T0 + 100) * 1000,
        "oplog": [entry(T0 + 80, "n"), entry(T0 + 90, "n")],
        "members": {
            "0": { "optime": optime(T0 + 90) },
            "1": { "optime": optime(T0 + 80) },
            "2": { "optime": optime(T0 + 90) },
        },
    }));
    let budget = unique("mongo_oplog");
    // A no-op period longer than the test: member 1 is never taken for stuck here.
    let yaml = config(&peer, &budget, "method: oplog, noop_period: 10m");

    let lines = check_connect_lines(&load_config(&yaml)).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("source profiles (mongodb): ok replica set rs0")),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("oplog readable"))
            .count(),
        3,
        "{lines:?}"
    );

    let daemon = Daemon::start(&yaml).await;
    let metrics = daemon
        .wait_for_metrics("every member's lag", PATIENCE, |m| {
            [&primary, &behind, &current]
                .iter()
                .all(|member| lag(m, &budget, member).is_some())
        })
        .await;
    for member in [&primary, &behind, &current] {
        assert_eq!(
            lag(&metrics, &budget, member),
            Some(0.0),
            "{member} on an idle set"
        );
    }
    assert_eq!(
        entry_of(&daemon, &budget, &primary).await["detail"],
        "primary"
    );

    // A real write at T0 + 93, applied by member 2 only; the primary's clock says T0 + 100.
    peer.set(json!({
        "oplog": [entry(T0 + 93, "i")],
        "members": { "0": { "optime": optime(T0 + 93) }, "2": { "optime": optime(T0 + 93) } },
    }));
    let metrics = daemon
        .wait_for_metrics("member 1 behind the write", PATIENCE, |m| {
            lag(m, &budget, &behind).is_some_and(|lag| lag > 0.0)
        })
        .await;
    let seen = lag(&metrics, &budget, &behind).expect("lag");
    assert!(
        (seen - 7.0).abs() <= 1.0,
        "the write is 7 s old on the primary's clock, read {seen}"
    );
    assert_eq!(lag(&metrics, &budget, &current), Some(0.0));

    // Applied: caught up again.
    peer.set(json!({ "members": { "1": { "optime": optime(T0 + 93) } } }));
    daemon
        .wait_for_metrics("member 1 caught up", PATIENCE, |m| {
            lag(m, &budget, &behind) == Some(0.0)
        })
        .await;

    // A write dated after the primary's clock (written by a previous primary whose clock ran
    // ahead): clamped to 0 and counted, never turned positive.
    peer.set(json!({
        "oplog": [entry(T0 + 104, "u")],
        "members": { "0": { "optime": optime(T0 + 104) } },
    }));
    let counted = |m: &Metrics, name: &str, member: &str| {
        m.get(
            name,
            &[
                ("budget", &budget),
                ("probe", "members"),
                ("replica", member),
            ],
        )
        .unwrap_or(0.0)
    };
    let metrics = daemon
        .wait_for_metrics("a clamped negative lag", PATIENCE, |m| {
            counted(m, "lagbudget_negative_lag_total", &behind) >= 1.0
        })
        .await;
    assert_eq!(lag(&metrics, &budget, &behind), Some(0.0));

    // An election: member 2's optime changes term (and a rollback takes it back to T0 + 90).
    peer.set(json!({ "members": { "2": { "optime": { "ts": [T0 + 90, 1], "t": 2 } } } }));
    daemon
        .wait_for_metrics("a position regression", PATIENCE, |m| {
            counted(m, "lagbudget_position_regressions_total", &current) >= 1.0
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_applies_not_even_the_no_ops_is_behind_on_an_idle_set() {
    let mut peer = MongoPeer::start(2);
    let stuck = peer.member(1);
    peer.set(json!({
        "clock_ms": (T0 + 100) * 1000,
        "oplog": [entry(T0 + 90, "n"), entry(T0 + 95, "n")],
        "members": { "0": { "optime": optime(T0 + 95) }, "1": { "optime": optime(T0 + 90) } },
    }));
    let budget = unique("mongo_stuck");
    let daemon = Daemon::start(&config(&peer, &budget, "method: oplog, noop_period: 1s")).await;
    // Still for more than 2 × noop_period while the primary is ahead: the first entry it
    // lacks, a no-op written at T0 + 95, is 5 s old on the primary's clock.
    let metrics = daemon
        .wait_for_metrics("the stuck member's lag", PATIENCE, |m| {
            lag(m, &budget, &stuck).is_some_and(|lag| lag > 0.0)
        })
        .await;
    assert_eq!(lag(&metrics, &budget, &stuck), Some(5.0));
    let entry = entry_of(&daemon, &budget, &stuck).await;
    assert!(
        entry["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("not applying")),
        "{entry}"
    );
    peer.set(json!({ "members": { "1": { "optime": optime(T0 + 95) } } }));
    daemon
        .wait_for_metrics("the member applying again", PATIENCE, |m| {
            lag(m, &budget, &stuck) == Some(0.0)
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_not_secondary_gone_or_removed_and_a_primary_stepping_down_are_topology() {
    let mut peer = MongoPeer::start(3);
    let (first, second, third) = (peer.member(0), peer.member(1), peer.member(2));
    let budget = unique("mongo_topology");
    let daemon = Daemon::start(&config(&peer, &budget, "method: oplog")).await;
    daemon
        .wait_for_metrics("every member's lag", PATIENCE, |m| {
            [&first, &second, &third]
                .iter()
                .all(|member| lag(m, &budget, member) == Some(0.0))
        })
        .await;

    peer.set(json!({ "members": { "2": { "state": "RECOVERING" } } }));
    wait_for_topology(
        &daemon,
        &budget,
        &third,
        &format!("member {third} is RECOVERING"),
    )
    .await;

    // The primary steps down and no one is elected; member 2 still sees it as the primary for
    // a while (views travel by heartbeat), and the primary itself says what it is now.
    peer.set(json!({ "members": {
        "0": { "state": "SECONDARY" },
        "2": { "state": "SECONDARY", "stale_primary": 0 },
    } }));
    wait_for_topology(
        &daemon,
        &budget,
        &third,
        &format!("{first} is SECONDARY, no longer the primary (it stepped down)"),
    )
    .await;
    wait_for_topology(&daemon, &budget, &first, "the replica set has no primary").await;

    // Member 2 leaves the set; member 1 goes away.
    peer.set(json!({ "members": { "0": { "state": "PRIMARY" }, "2": { "in_set": false } } }));
    wait_for_topology(&daemon, &budget, &third, "is not in the replica set").await;
    peer.set(json!({ "members": { "1": { "up": false } } }));
    wait_for_topology(
        &daemon,
        &budget,
        &second,
        &format!("member {second} does not answer"),
    )
    .await;
    // The primary's own series stays what it is.
    daemon
        .wait_for_metrics("the primary back at 0", PATIENCE, |m| {
            lag(m, &budget, &first) == Some(0.0)
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_lag_grows_while_a_member_stops_applying_and_is_zero_once_caught_up() {
    let mut peer = MongoPeer::start(2);
    let secondary = peer.member(1);
    let budget = unique("mongo_heartbeat");
    let yaml = config(&peer, &budget, "method: heartbeat, write_period: 200ms");
    let lines = check_connect_lines(&load_config(&yaml)).await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("heartbeat writable on primary"))
            .count(),
        2,
        "{lines:?}"
    );
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_metrics("the secondary caught up", PATIENCE, |m| {
            lag(m, &budget, &secondary).is_some_and(|lag| lag < 1.0)
        })
        .await;

    peer.set(json!({ "members": { "1": { "applying": false } } }));
    let first = daemon
        .wait_for_metrics("the secondary behind", PATIENCE, |m| {
            lag(m, &budget, &secondary).is_some_and(|lag| lag >= 2.0)
        })
        .await;
    let first = lag(&first, &budget, &secondary).expect("lag");
    daemon
        .wait_for_metrics("the lag growing", PATIENCE, |m| {
            lag(m, &budget, &secondary).is_some_and(|lag| lag >= first + 1.0)
        })
        .await;

    peer.set(json!({ "members": { "1": { "applying": true } } }));
    daemon
        .wait_for_metrics("the secondary caught up again", PATIENCE, |m| {
            lag(m, &budget, &secondary).is_some_and(|lag| lag < 1.0)
        })
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_does_not_answer_is_connect_and_the_password_is_never_shown() {
    let port = crate::support::closed_port();
    let yaml = format!(
        r#"
sources:
  profiles: {{ mongodb: {{ uri: "mongodb://lagbudget:mongo-secret-pw@127.0.0.1:{port}/?replicaSet=rs0" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    probes:
      - name: members
        mongodb_replica: {{ source: profiles, method: oplog }}
"#,
        budget = unique("mongo_closed"),
    );
    let lines = check_connect_lines(&load_config(&yaml)).await;
    let source = lines
        .iter()
        .find(|l| l.starts_with("source profiles (mongodb)"))
        .expect("a line for the source");
    assert!(
        source.contains(": connect: no server could be selected"),
        "{source}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("member 127.0.0.1:{port} does not answer"))),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("mongo-secret-pw")),
        "{lines:?}"
    );
}
