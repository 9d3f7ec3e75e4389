//! `dynamodb_stream` against moto (tests/it/moto_support.rs): a consumer checkpointed behind
//! reads the age of its first unprocessed record, one caught up and an idle stream read 0, a
//! trimmed checkpoint and an expired unfinished shard are data loss, and moto stopped makes the
//! probe down, then its lag unknown.
//!
//! Tolerance: lag is compared with `last success − the record's ApproximateCreationDateTime`
//! within ±1 s. moto stamps records to the millisecond from the same clock as the daemon; AWS
//! rounds the stamp down to the whole second, so there the lag may read up to 1 s more.

use std::time::Duration;

use lagbudget::probe::dynamodb::{Api, DynamoClient};
use serde_json::{Value, json};

use crate::moto_support::{Moto, aws, create_table};
use crate::support::{
    Daemon, Metrics, PATIENCE, check_connect_lines, load_config, unique, wait_for,
};

/// A stream record as the test read it.
pub struct Record {
    pub sequence: String,
    pub created_at: f64,
}

pub async fn put_order(client: &DynamoClient, table: &str, id: &str) {
    aws(
        client,
        Api::Dynamodb,
        "PutItem",
        json!({ "TableName": table, "Item": { "id": { "S": id } } }),
    )
    .await;
}

/// The table's stream's one shard (moto keeps one per table), and every record in it.
pub async fn shard_and_records(client: &DynamoClient, table: &str) -> (String, Vec<Record>) {
    let described = aws(
        client,
        Api::Dynamodb,
        "DescribeTable",
        json!({ "TableName": table }),
    )
    .await;
    let arn = described["Table"]["LatestStreamArn"]
        .as_str()
        .expect("stream")
        .to_owned();
    let stream = aws(
        client,
        Api::Streams,
        "DescribeStream",
        json!({ "StreamArn": arn }),
    )
    .await;
    let shard = stream["StreamDescription"]["Shards"][0]["ShardId"]
        .as_str()
        .expect("shard")
        .to_owned();
    let iterator = aws(
        client,
        Api::Streams,
        "GetShardIterator",
        json!({ "StreamArn": arn, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON" }),
    )
    .await;
    let records = aws(
        client,
        Api::Streams,
        "GetRecords",
        json!({ "ShardIterator": iterator["ShardIterator"] }),
    )
    .await;
    let records = records["Records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| Record {
            sequence: r["dynamodb"]["SequenceNumber"]
                .as_str()
                .expect("seq")
                .to_owned(),
            created_at: r["dynamodb"]["ApproximateCreationDateTime"]
                .as_f64()
                .expect("time"),
        })
        .collect();
    (shard, records)
}

pub async fn set_lease(client: &DynamoClient, table: &str, shard: &str, checkpoint: &str) {
    aws(
        client,
        Api::Dynamodb,
        "PutItem",
        json!({
            "TableName": table,
            "Item": {
                "leaseKey": { "S": shard },
                "checkpoint": { "S": checkpoint },
                "leaseOwner": { "S": "worker-1" },
                "leaseCounter": { "N": "7" },
            },
        }),
    )
    .await;
}

/// A table with a stream holding one record, and a lease table whose consumer has processed
/// none of it (`TRIM_HORIZON`): lag is that record's age.
pub async fn consumer_one_record_behind(client: &DynamoClient, table: &str, lease_table: &str) {
    create_table(client, table, "id", true).await;
    create_table(client, lease_table, "leaseKey", false).await;
    put_order(client, table, "o-1").await;
    let (shard, _) = shard_and_records(client, table).await;
    set_lease(client, lease_table, &shard, "TRIM_HORIZON").await;
}

fn get(metrics: &Metrics, name: &str, budget: &str, probe: &str) -> Option<f64> {
    metrics.get(name, &[("budget", budget), ("probe", probe)])
}

/// The acceptance, but for moto stopped (below): behind ⇒ the first unprocessed
/// record's age ±1 s; caught up ⇒ 0; idle ⇒ 0; checkpoint trimmed ⇒ data loss.
#[tokio::test(flavor = "multi_thread")]
async fn stream_consumer_lag_is_the_age_of_its_first_unprocessed_record() {
    let moto = Moto::start().await;
    let client = moto.client("eu-west-1");
    let orders = unique("orders");
    let idle = unique("idle");
    create_table(&client, &orders, "id", true).await;
    create_table(&client, &idle, "id", true).await;
    let leases =
        ["behind", "caught", "trimmed", "expired", "idle"].map(|name| format!("{orders}-{name}"));
    for table in &leases {
        create_table(&client, table, "leaseKey", false).await;
    }

    put_order(&client, &orders, "o-1").await;
    // Injects age: o-2 is two seconds younger than o-1 (each age is checked against its own
    // record's time, not against this sleep).
    tokio::time::sleep(Duration::from_secs(2)).await;
    put_order(&client, &orders, "o-2").await;
    put_order(&client, &orders, "o-3").await;
    let (shard, records) = shard_and_records(&client, &orders).await;
    assert_eq!(records.len(), 3, "three records in the stream");
    let [first, second, third] = &records[..] else {
        unreachable!()
    };

    // behind: processed o-1 only. caught: processed all. trimmed: its checkpoint is below the
    // shard's first record (retention deleted what came after it). expired: caught up on the
    // live shard, but a lease of a shard the stream no longer lists was never finished.
    set_lease(&client, &leases[0], &shard, &first.sequence).await;
    set_lease(&client, &leases[1], &shard, &third.sequence).await;
    set_lease(&client, &leases[2], &shard, "1").await;
    set_lease(&client, &leases[3], &shard, &third.sequence).await;
    set_lease(
        &client,
        &leases[3],
        "shardId-00000001000000000000-00000000",
        "000000000000000000042",
    )
    .await;
    let (idle_shard, idle_records) = shard_and_records(&client, &idle).await;
    assert!(idle_records.is_empty());
    set_lease(&client, &leases[4], &idle_shard, "TRIM_HORIZON").await;

    let budget = unique("ddb_stream");
    let probe = |name: &str, table: &str, lease_table: &str| {
        format!(
            "      - name: {name}
        interval: 1s
        dynamodb_stream: {{ source: aws, table: {table}, lease_table: {lease_table} }}
"
        )
    };
    let daemon = Daemon::start(&format!(
        "listen: 127.0.0.1:0
sources:
{source}budgets:
  - name: {budget}
    max_lag: 5m
    probes:
{behind}{caught}{trimmed}{expired}{idle}",
        source = moto.source_yaml("aws", "eu-west-1"),
        behind = probe("behind", &orders, &leases[0]),
        caught = probe("caught", &orders, &leases[1]),
        trimmed = probe("trimmed", &orders, &leases[2]),
        expired = probe("expired", &orders, &leases[3]),
        idle = probe("idle", &idle, &leases[4]),
    ))
    .await;
    daemon.wait_ready(PATIENCE).await;
    let probes = ["behind", "caught", "trimmed", "expired", "idle"];
    let metrics = daemon
        .wait_for_metrics("every stream probe's lag", PATIENCE, |m| {
            probes
                .iter()
                .all(|p| get(m, "lagbudget_lag_seconds", &budget, p).is_some())
        })
        .await;

    let check_age = |metrics: &Metrics, probe: &str, record: &Record| {
        let lag = get(metrics, "lagbudget_lag_seconds", &budget, probe).expect("lag");
        let last_success = get(
            metrics,
            "lagbudget_probe_last_success_timestamp_seconds",
            &budget,
            probe,
        )
        .expect("last success");
        let expected = last_success - record.created_at;
        eprintln!("dynamodb_stream {probe}: measured lag {lag:.3} s, expected {expected:.3} s");
        assert!(
            (lag - expected).abs() <= 1.0,
            "{probe}: lag {lag} not within ±1 s of {expected}"
        );
    };
    check_age(&metrics, "behind", second);
    check_age(&metrics, "trimmed", first);
    for zero in ["caught", "expired", "idle"] {
        assert_eq!(
            get(&metrics, "lagbudget_lag_seconds", &budget, zero),
            Some(0.0),
            "{zero} reads 0"
        );
    }
    let data_loss = |probe: &str| {
        get(
            &metrics,
            "lagbudget_dynamodb_stream_data_loss",
            &budget,
            probe,
        )
    };
    assert_eq!(data_loss("behind"), Some(0.0));
    assert_eq!(data_loss("caught"), Some(0.0));
    assert_eq!(data_loss("trimmed"), Some(1.0));
    assert_eq!(data_loss("expired"), Some(1.0));
    assert_eq!(
        get(
            &metrics,
            "lagbudget_dynamodb_stream_shards_behind",
            &budget,
            "behind"
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            &metrics,
            "lagbudget_dynamodb_stream_shards",
            &budget,
            "behind"
        ),
        Some(1.0)
    );
    // Streams has no counts: no backlog series, rather than a made-up 0.
    assert_eq!(
        get(&metrics, "lagbudget_backlog_messages", &budget, "behind"),
        None
    );
    let api = daemon.probe(&budget, "expired").await;
    assert_eq!(api["dynamodb_stream"]["data_loss"], true, "{api}");
    assert!(
        api["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shardId-00000001000000000000-00000000")),
        "{api}"
    );

    // The consumer catches up: 0, and a new record after that is measured again.
    set_lease(&client, &leases[0], &shard, &third.sequence).await;
    daemon
        .wait_for_metrics("behind to catch up", PATIENCE, |m| {
            get(m, "lagbudget_lag_seconds", &budget, "behind") == Some(0.0)
        })
        .await;
    put_order(&client, &orders, "o-4").await;
    let (_, records) = shard_and_records(&client, &orders).await;
    let fourth = records.last().expect("o-4's record");
    let metrics = daemon
        .wait_for_metrics("behind to see o-4", PATIENCE, |m| {
            get(
                m,
                "lagbudget_dynamodb_stream_shards_behind",
                &budget,
                "behind",
            ) == Some(1.0)
        })
        .await;
    check_age(&metrics, "behind", fourth);
    daemon.stop().await;
}

/// moto stopped: the probe goes down with a connect error, then its lag is unknown (absent),
/// never 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_endpoint_is_down_then_unknown() {
    let moto = Moto::start().await;
    let client = moto.client("eu-west-1");
    let orders = unique("orders");
    let lease_table = format!("{orders}-leases");
    create_table(&client, &orders, "id", true).await;
    create_table(&client, &lease_table, "leaseKey", false).await;
    put_order(&client, &orders, "o-1").await;
    let (shard, records) = shard_and_records(&client, &orders).await;
    set_lease(&client, &lease_table, &shard, &records[0].sequence).await;

    let budget = unique("ddb_down");
    let yaml = format!(
        "listen: 127.0.0.1:0
sources:
{source}budgets:
  - name: {budget}
    max_lag: 5m
    probes:
      - name: stream
        interval: 1s
        dynamodb_stream: {{ source: aws, table: {orders}, lease_table: {lease_table} }}
      - name: no-stream
        dynamodb_stream: {{ source: aws, table: {lease_table}, lease_table: {lease_table} }}
",
        source = moto.source_yaml("aws", "eu-west-1"),
    );
    // check --connect reads the table, its stream and the lease table; a table without a
    // stream is named as such.
    let lines = check_connect_lines(&load_config(&yaml)).await;
    assert!(
        lines.iter().any(|l| l.ends_with(&format!(
            "ok stream of {orders} has 1 shards; lease table {lease_table} holds 1 leases"
        ))),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("no-stream")
            && l.contains(&format!("table {lease_table} has no stream"))),
        "{lines:?}"
    );
    let daemon = Daemon::start(&yaml).await;
    daemon
        .wait_for_metrics("a caught-up lag", PATIENCE, |m| {
            get(m, "lagbudget_lag_seconds", &budget, "stream") == Some(0.0)
        })
        .await;

    drop(moto);
    let probe: Value = wait_for("the probe to go down", PATIENCE, || async {
        let probe = daemon.probe(&budget, "stream").await;
        (probe["up"] == false).then_some(probe)
    })
    .await;
    assert_eq!(probe["error"]["reason"], "connect", "{probe}");
    let metrics = daemon
        .wait_for_metrics("the lag to become unknown", PATIENCE, |m| {
            get(m, "lagbudget_probe_stale", &budget, "stream") == Some(1.0)
        })
        .await;
    assert_eq!(
        get(&metrics, "lagbudget_lag_seconds", &budget, "stream"),
        None
    );
    assert_eq!(
        get(&metrics, "lagbudget_probe_up", &budget, "stream"),
        Some(0.0)
    );
    daemon.stop().await;
}
