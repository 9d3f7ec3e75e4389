//! `canary` from a Redis primary to its replica: a private primary (as the `redis_key_age`
//! tests start one) and a private `redis-server --replicaof` of it, both on free loopback ports
//! with their own directories, killed when the test ends. Replication is stopped by telling the
//! replica `REPLICAOF NO ONE`: it keeps answering reads with what it had applied, and applies
//! nothing more until it is pointed at the primary again.

use lagbudget::probe::oldest_pending::parse_timestamp;
use redis::aio::MultiplexedConnection;

use crate::cache::PrivateRedis;
use crate::support::{Daemon, Metrics, PATIENCE, poll_until, unique, wait_for};

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("a port in the url")
}

/// Waits until the replica's link to its primary is up and it has applied all it was sent.
async fn wait_linked(con: &mut MultiplexedConnection) {
    wait_for("the replica linked to its primary", PATIENCE, || async {
        let mut con = con.clone();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con)
            .await
            .ok()?;
        let linked = info.contains("role:slave")
            && info.contains("master_link_status:up")
            && info.contains("master_sync_in_progress:0");
        linked.then_some(())
    })
    .await;
}

/// The seq and write time (unix seconds) of a marker as lagbudget SETs it.
fn marker(json: &str) -> (i64, f64) {
    let value: serde_json::Value = serde_json::from_str(json).expect("a JSON marker");
    let seq = value["seq"].as_i64().expect("seq");
    let at = parse_timestamp(value["written_at"].as_str().expect("written_at"))
        .expect("an RFC 3339 time");
    let at = at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    (seq, at)
}

fn labels(budget: &str) -> [(&str, &str); 3] {
    [
        ("budget", budget),
        ("probe", "visible"),
        ("replica", "replica"),
    ]
}

fn lag(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get("lagbudget_lag_seconds", &labels(budget))
}

fn last_success(metrics: &Metrics, budget: &str) -> Option<f64> {
    metrics.get(
        "lagbudget_probe_last_success_timestamp_seconds",
        &labels(budget),
    )
}

/// Issue acceptance (Redis primary → replica): lagbudget's own marker key is SET on the
/// primary and read with GET on the replica. Idle ⇒ 0. The replica told `REPLICAOF NO ONE`
/// (replication stopped, reads still answered) ⇒ the lag grows with the time since, measured
/// against the daemon's last successful run: within ±1 s, at two points 3 s apart. Pointed at
/// the primary again ⇒ 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_stops_replicating_reads_the_time_since_and_0_once_restored() {
    let primary = PrivateRedis::start().await;
    let primary_port = port_of(&primary.url());
    let replica =
        PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &primary_port.to_string()]).await;
    let mut replica_con = replica.connection().await;
    wait_linked(&mut replica_con).await;

    let budget = unique("redisrep");
    let instance = unique("h");
    let yaml = format!(
        "sources:
  primary: {{ redis: {{ url: \"{primary}\" }} }}
  replica: {{ redis: {{ url: \"{replica}\" }} }}
budgets:
  - name: {budget}
    max_lag: 30s
    interval: 1s
    timeout: 1s
    probes:
      - name: visible
        canary:
          write: {{ source: primary }}
          read: [ {{ source: replica }} ]
          write_period: 500ms
          instance: {instance}
",
        primary = primary.url(),
        replica = replica.url(),
    );
    let daemon = Daemon::start(&yaml).await;

    // Idle and replicating: 0, and the marker key is the one key of this instance.
    daemon
        .wait_for_metrics("lag 0 while replicating", PATIENCE, |m| {
            lag(m, &budget) == Some(0.0)
        })
        .await;
    let key = format!("lagbudget:canary:{instance}:{budget}/visible");
    let mut primary_con = primary.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("lagbudget:canary:{instance}:*"))
        .query_async(&mut primary_con)
        .await
        .expect("KEYS");
    assert_eq!(
        keys,
        vec![key.clone()],
        "one marker key per instance and probe"
    );

    // Replication stopped: the replica keeps its last marker and answers reads.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica_con)
        .await
        .expect("REPLICAOF NO ONE");
    let stopped_at = lagbudget::clock::unix_now();
    let frozen: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut replica_con)
        .await
        .expect("GET on the replica");
    let frozen = frozen.expect("the replica holds a marker");
    println!("replica stopped at its marker {frozen}");
    // The truth, when the primary is seen holding the next marker (it is overwritten a write
    // period later): the first marker the replica does not show was written then.
    let frozen_seq = marker(&frozen).0;
    let next = poll_until(PATIENCE, || async {
        let mut con = primary_con.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut con)
            .await
            .ok()?;
        let (seq, written_at) = marker(&value?);
        (seq > frozen_seq).then_some((seq, written_at))
    })
    .await
    .expect("the primary moves on");
    let first_unseen_at = (next.0 == frozen_seq + 1).then_some(next.1);
    println!(
        "the primary moved on to seq {} written at {:.3}",
        next.0, next.1
    );

    let mut measured = Vec::new();
    for after in [3.0, 6.0] {
        let metrics = daemon
            .wait_for_metrics(&format!("a run {after} s after the stop"), PATIENCE, |m| {
                last_success(m, &budget).is_some_and(|at| at >= stopped_at + after)
                    && lag(m, &budget).is_some()
            })
            .await;
        let lag = lag(&metrics, &budget).expect("lag");
        let injected = last_success(&metrics, &budget).expect("success") - stopped_at;
        println!("replication stopped: measured lag {lag:.3} s, injected {injected:.3} s");
        assert!(
            (lag - injected).abs() <= 1.0,
            "lag {lag:.3} s not within ±1 s of the {injected:.3} s since replication stopped"
        );
        if let Some(written_at) = first_unseen_at {
            let truth = last_success(&metrics, &budget).expect("success") - written_at;
            println!("  the first marker not replicated is {truth:.3} s old at that run");
            assert!(
                (lag - truth).abs() <= 1.0,
                "lag {lag:.3} s not within ±1 s of the first unseen marker's age {truth:.3} s"
            );
        }
        measured.push(lag);
    }
    assert!(measured[1] > measured[0], "the lag grows: {measured:?}");
    let still: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut replica_con)
        .await
        .expect("GET on the replica");
    assert_eq!(still.as_deref(), Some(frozen.as_str()), "nothing applied");

    // Replication restored: the replica catches up and the lag is 0 again.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary_port)
        .query_async(&mut replica_con)
        .await
        .expect("REPLICAOF the primary");
    let restored_at = lagbudget::clock::unix_now();
    wait_linked(&mut replica_con).await;
    daemon
        .wait_for_metrics("lag 0 after replication resumed", PATIENCE, |m| {
            last_success(m, &budget).is_some_and(|at| at > restored_at)
                && lag(m, &budget) == Some(0.0)
        })
        .await;
    println!(
        "replication restored: lag 0 {:.1} s later",
        lagbudget::clock::unix_now() - restored_at
    );

    daemon.stop().await;
    drop(replica);
    drop(primary);
}
