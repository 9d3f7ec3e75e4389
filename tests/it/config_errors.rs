//! Config errors as users see them: every broken fixture's exact output (file, line, column,
//! YAML path, message), several errors across files at once, and secrets kept out of all of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lagbudget::config;
use lagbudget::model::{
    CacheKeys, HttpMethod, HttpWatermark, HttpWatermarkMode, KafkaConsumerGroup, NoCommitPolicy,
    ProbeKind, RabbitmqQueue, SourceKind, TopicSelector, ValueAt, WatermarkMode,
};

/// Prefixes a fixture's path as errors display it: relative to the package root, which is the
/// working directory cargo gives integration tests.
macro_rules! bad {
    ($text:literal) => {
        concat!("tests/fixtures/config/bad/", $text)
    };
}

/// The environment the broken fixtures see: deliberately empty, so `${VAR}`s are unset.
fn no_env(_: &str) -> Option<String> {
    None
}

fn load_errors(fixture: &str) -> String {
    let path = Path::new("tests/fixtures/config/bad").join(fixture);
    match config::load_with(&path, &no_env) {
        Ok(_) => format!("<{fixture} loaded without errors>"),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn each_broken_config_reports_exactly_where_and_what() {
    let cases: &[(&str, &str)] = &[
        (
            "syntax_error.yaml",
            bad!(
                "syntax_error.yaml:5:11: (root): YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'"
            ),
        ),
        (
            "unknown_key.yaml",
            bad!(
                "unknown_key.yaml:8:9: budgets[0].probes[0].intervall: unknown key `intervall`; did you mean `interval`?"
            ),
        ),
        (
            "duplicate_key.yaml",
            bad!(
                "duplicate_key.yaml:6:5: budgets[0].max_lag: duplicate key `max_lag` (first at line 5)"
            ),
        ),
        (
            "duplicate_budget.yaml",
            bad!(
                "duplicate_budget.yaml:12:11: budgets[1].name: duplicate budget \"orders\" (first defined at tests/fixtures/config/bad/duplicate_budget.yaml:4)"
            ),
        ),
        (
            "duplicate_probe.yaml",
            bad!(
                "duplicate_probe.yaml:12:15: budgets[0].probes[1].name: duplicate probe \"projection\" (first defined at tests/fixtures/config/bad/duplicate_probe.yaml:7)"
            ),
        ),
        (
            "duplicate_source_across_files/main.yaml",
            concat!(
                bad!(
                    "duplicate_source_across_files/budgets.d/loyalty.yaml:2:3: sources.orders-db: duplicate source \"orders-db\" (first defined at tests/fixtures/config/bad/duplicate_source_across_files/main.yaml:3)\n"
                ),
                bad!(
                    "duplicate_source_across_files/budgets.d/loyalty.yaml:3:1: listen: `listen` is only allowed in the main file"
                ),
            ),
        ),
        (
            "missing_source.yaml",
            bad!(
                "missing_source.yaml:10:19: budgets[0].probes[0].sql_watermark.source: unknown source \"order-db\"; defined sources: orders-db, orders-replica"
            ),
        ),
        (
            "unknown_source_kind.yaml",
            bad!(
                "unknown_source_kind.yaml:3:12: sources.cache.memcached: unknown source kind `memcached`; supported: postgres, kafka, rabbitmq, redis, nats, mysql, http, dynamodb, mongodb"
            ),
        ),
        (
            "zero_max_lag.yaml",
            bad!("zero_max_lag.yaml:5:14: budgets[0].max_lag: must be greater than 0s"),
        ),
        (
            "negative_max_backlog.yaml",
            bad!(
                "negative_max_backlog.yaml:5:18: budgets[0].max_backlog: must be at least 0, found -1"
            ),
        ),
        (
            "no_limit.yaml",
            bad!(
                "no_limit.yaml:4:5: budgets[0]: neither max_lag nor max_backlog is set: set one on the budget or on every probe"
            ),
        ),
        (
            "warn_at_out_of_range.yaml",
            bad!(
                "warn_at_out_of_range.yaml:6:14: budgets[0].warn_at: \"120%\" is out of range: must be above 0% and at most 100%"
            ),
        ),
        (
            "objective_target_out_of_range.yaml",
            bad!(
                "objective_target_out_of_range.yaml:6:26: budgets[0].objective.target: \"100%\" is out of range: must be above 0% and below 100%"
            ),
        ),
        (
            "missing_env_var.yaml",
            bad!(
                "missing_env_var.yaml:4:12: sources.orders-db.postgres.dsn: environment variable ORDERS_DB_PASSWORD is not set"
            ),
        ),
        (
            "missing_secret_file.yaml",
            bad!(
                "missing_secret_file.yaml:4:12: sources.orders-db.postgres.dsn: cannot read secret file /nonexistent/lagbudget/orders-db-password: No such file or directory (os error 2)"
            ),
        ),
        (
            "bad_dsn.yaml",
            bad!(
                "bad_dsn.yaml:2:33: sources.orders-db.postgres.dsn: invalid PostgreSQL connection string: invalid value for option `sslmode`"
            ),
        ),
        (
            "bad_listen.yaml",
            bad!(
                "bad_listen.yaml:1:9: listen: invalid socket address \"localhost:9464\": expected IP:PORT, such as 0.0.0.0:9464"
            ),
        ),
        (
            "malformed_duration.yaml",
            bad!(
                "malformed_duration.yaml:5:14: budgets[0].max_lag: invalid duration \"30\": missing unit (use ms, s, m, h or d)"
            ),
        ),
        (
            "interval_above_half_max_lag.yaml",
            bad!(
                "interval_above_half_max_lag.yaml:8:19: budgets[0].probes[0].interval: interval 10s is above half of max_lag 5s: a 5s budget cannot be enforced by looking every 10s"
            ),
        ),
        (
            "timeout_above_interval.yaml",
            bad!(
                "timeout_above_interval.yaml:7:14: budgets[0].timeout: timeout 5s is above the interval 2s: a run must finish before the next one is due"
            ),
        ),
        (
            "probe_without_kind.yaml",
            bad!(
                "probe_without_kind.yaml:7:9: budgets[0].probes[0]: a probe needs exactly one kind key; supported: sql_watermark, kafka_consumer_group, postgres_logical, rabbitmq_queue, redis_stream_group, nats_consumer, mysql_replica, postgres_replica, redis_key_age, http_watermark, canary, reconcile, dynamodb_stream, mongodb_replica"
            ),
        ),
        (
            "unknown_probe_kind.yaml",
            bad!(
                "unknown_probe_kind.yaml:8:9: budgets[0].probes[0].cassandra_repair: unknown probe kind `cassandra_repair`; supported: sql_watermark, kafka_consumer_group, postgres_logical, rabbitmq_queue, redis_stream_group, nats_consumer, mysql_replica, postgres_replica, redis_key_age, http_watermark, canary, reconcile, dynamodb_stream, mongodb_replica"
            ),
        ),
        (
            "replica_ryw_with_passive.yaml",
            concat!(
                bad!(
                    "replica_ryw_with_passive.yaml:11:38: budgets[0].probes[0].postgres_replica.standbys[1]: standby \"orders-db\" is the primary: a server cannot be its own standby\n"
                ),
                bad!(
                    "replica_ryw_with_passive.yaml:13:11: budgets[0].probes[0].postgres_replica.ryw_delay: `ryw_delay` needs `method: heartbeat`: a read-your-writes check needs a write, and passive writes nothing"
                ),
            ),
        ),
        (
            "since_watermark_not_opted_in.yaml",
            bad!(
                "since_watermark_not_opted_in.yaml:9:11: budgets[0].probes[0].sql_watermark: missing `oldest_pending`: without it lag could only be now - watermark, which cannot tell an idle source from a stuck view; add `oldest_pending`, or opt into that with `mode: since_watermark`"
            ),
        ),
        (
            "since_watermark_with_oldest_pending.yaml",
            bad!(
                "since_watermark_with_oldest_pending.yaml:12:17: budgets[0].probes[0].sql_watermark.mode: `mode: since_watermark` ignores `oldest_pending`: remove one of them"
            ),
        ),
        (
            "wrong_type.yaml",
            concat!(
                bad!(
                    "wrong_type.yaml:2:80: sources.orders-db.postgres.max_connections: expected an integer, found the string \"8\": remove the quotes\n"
                ),
                bad!("wrong_type.yaml:7:7: budgets[0].probes: expected a list, found a mapping"),
            ),
        ),
        (
            "bad_label_name.yaml",
            concat!(
                bad!(
                    "bad_label_name.yaml:7:7: budgets[0].labels.team-name: invalid label name \"team-name\": must match [a-zA-Z_][a-zA-Z0-9_]*\n"
                ),
                bad!(
                    "bad_label_name.yaml:8:7: budgets[0].labels.__tier: invalid label name \"__tier\": names starting with \"__\" are reserved for Prometheus\n"
                ),
                bad!(
                    "bad_label_name.yaml:9:7: budgets[0].labels.severity: label name \"severity\" is reserved: lagbudget sets it itself"
                ),
            ),
        ),
        (
            "missing_include.yaml",
            bad!(
                "missing_include.yaml:1:11: include[0]: included file tests/fixtures/config/bad/budgets.d/orders.yaml does not exist"
            ),
        ),
        (
            "kafka_forbidden_property.yaml",
            bad!(
                "kafka_forbidden_property.yaml:7:9: sources.events.kafka.properties[\"enable.auto.commit\"]: property `enable.auto.commit` is set by lagbudget: its reader never commits offsets"
            ),
        ),
        (
            "kafka_topics_and_pattern.yaml",
            bad!(
                "kafka_topics_and_pattern.yaml:12:11: budgets[0].probes[0].kafka_consumer_group.topic_pattern: `topics` and `topic_pattern` cannot both be set: set exactly one of them"
            ),
        ),
        (
            "kafka_bad_topic_pattern.yaml",
            bad!(
                "kafka_bad_topic_pattern.yaml:11:26: budgets[0].probes[0].kafka_consumer_group.topic_pattern: invalid topic_pattern \"orders.(eu|us\": unclosed group"
            ),
        ),
        (
            "kafka_probe_on_postgres_source.yaml",
            bad!(
                "kafka_probe_on_postgres_source.yaml:9:41: budgets[0].probes[0].kafka_consumer_group.source: source \"orders-db\" is a postgres source; kafka_consumer_group needs kafka"
            ),
        ),
        (
            "rabbitmq_credentials_in_url.yaml",
            concat!(
                bad!(
                    "rabbitmq_credentials_in_url.yaml:3:22: sources.broker.rabbitmq.url: invalid management API url \"http://guest:guest@rabbit:15672\": it holds credentials; put them in `username` and `password`; expected such as http://rabbit:15672\n"
                ),
                bad!(
                    "rabbitmq_credentials_in_url.yaml:3:88: sources.broker.rabbitmq.password: environment variable RABBIT_PASSWORD is not set"
                ),
            ),
        ),
        (
            "rabbitmq_timestamps_false_with_max_lag.yaml",
            bad!(
                "rabbitmq_timestamps_false_with_max_lag.yaml:10:18: budgets[0].probes[1].max_lag: max_lag cannot be measured here: with `timestamps: false` messages carry no time, so this probe reports backlog only; use max_backlog"
            ),
        ),
        (
            "rabbitmq_queue_on_kafka_source.yaml",
            concat!(
                bad!(
                    "rabbitmq_queue_on_kafka_source.yaml:8:35: budgets[0].probes[0].rabbitmq_queue.source: source \"events\" is a kafka source; rabbitmq_queue needs rabbitmq\n"
                ),
                bad!(
                    "rabbitmq_queue_on_kafka_source.yaml:8:65: budgets[0].probes[0].rabbitmq_queue.vhost: must not be empty"
                ),
            ),
        ),
        (
            "sql_watermark_on_kafka_source.yaml",
            bad!(
                "sql_watermark_on_kafka_source.yaml:10:19: budgets[0].probes[0].sql_watermark.source: source \"events\" is a kafka source; sql_watermark needs postgres"
            ),
        ),
        (
            "postgres_logical_bad_slot.yaml",
            concat!(
                bad!(
                    "postgres_logical_bad_slot.yaml:9:54: budgets[0].probes[0].postgres_logical.slot: invalid slot name \"Debezium-Orders\": PostgreSQL slot names are 1 to 63 lower-case letters, digits and '_'\n"
                ),
                bad!(
                    "postgres_logical_bad_slot.yaml:11:37: budgets[0].probes[1].postgres_logical.source: source \"events\" is a kafka source; postgres_logical needs postgres\n"
                ),
                bad!(
                    "postgres_logical_bad_slot.yaml:13:27: budgets[0].probes[2].postgres_logical: missing required key `slot`\n"
                ),
                bad!(
                    "postgres_logical_bad_slot.yaml:13:48: budgets[0].probes[2].postgres_logical.slott: unknown key `slott`; did you mean `slot`?"
                ),
            ),
        ),
        (
            "kafka_bad_brokers.yaml",
            bad!(
                "kafka_bad_brokers.yaml:4:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,kafka-2\": entry 2 \"kafka-2\" has no port; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092"
            ),
        ),
        (
            "canary_targets.yaml",
            concat!(
                bad!(
                    "canary_targets.yaml:12:18: budgets[0].probes[0].canary.write: a canary write sets one of sql/query, key, stream, topic, subject, routing_key/queue, path and table; this one sets `key` and `stream`\n"
                ),
                bad!(
                    "canary_targets.yaml:17:39: budgets[0].probes[1].canary.write.method: `method` applies only to an http write (`path`)\n"
                ),
                bad!(
                    "canary_targets.yaml:17:53: budgets[0].probes[1].canary.write.body: `body` applies only to an http write (`path`)\n"
                ),
                bad!(
                    "canary_targets.yaml:19:25: budgets[0].probes[1].canary.read[0].source: source \"order-api\" is a http source; a canary read of lagbudget's own marker needs postgres or mysql or redis or kafka or nats or rabbitmq or dynamodb\n"
                ),
                bad!(
                    "canary_targets.yaml:19:36: budgets[0].probes[1].canary.read[0].method: `method` applies only to an http read (`path`)\n"
                ),
                bad!(
                    "canary_targets.yaml:19:50: budgets[0].probes[1].canary.read[0].pointer: `pointer` applies only to an http read (`path`) or a redis `key` holding JSON\n"
                ),
                bad!(
                    "canary_targets.yaml:24:15: budgets[0].probes[2].canary.read[0]: missing `pointer`: the JSON pointer to the seq in the view's answer, such as /seq\n"
                ),
                bad!(
                    "canary_targets.yaml:25:86: budgets[0].probes[2].canary.read[1].pointer: pointer \"seq\" must be empty or start with `/` (RFC 6901)\n"
                ),
                bad!(
                    "canary_targets.yaml:26:84: budgets[0].probes[2].canary.read[2].pointer: `pointer` applies only to an http read (`path`) or a redis `key` holding JSON\n"
                ),
                bad!(
                    "canary_targets.yaml:29:36: budgets[0].probes[3].canary.write.exchange: `exchange` needs `routing_key`: a rabbitmq write publishes with a routing key\n"
                ),
                bad!(
                    "canary_targets.yaml:37:47: budgets[0].probes[4].canary.read[1].queue: queue \"canary-markers\" of source \"broker\" is read by another view of this canary: a queue hands each marker to one reader, so read it once"
                ),
            ),
        ),
        (
            "canary_views.yaml",
            concat!(
                bad!(
                    "canary_views.yaml:14:15: budgets[0].probes[0].canary.read[1]: duplicate view \"orders-replica\": give each read of one source its own `name`, the `replica` label of its series\n"
                ),
                bad!(
                    "canary_views.yaml:21:31: budgets[0].probes[1].canary.read_your_writes.after: read_your_writes.after 1s is shorter than write_period 2s: a read would often find no marker written that long before it to check\n"
                ),
                bad!(
                    "canary_views.yaml:27:31: budgets[0].probes[2].canary.read_your_writes.after: read_your_writes.after 500ms is shorter than the write period 1s (max_lag / 10, from 100ms to 1s, when write_period is not set): a read would often find no marker written that long before it to check\n"
                ),
                bad!(
                    "canary_views.yaml:33:11: budgets[0].probes[3].canary.monotonic: `monotonic` reads each view several times through its route, which needs views that answer with what they show now (query, key, stream, path, table); events (`topic`) only receives markers newer than those it has, so its reads cannot go back: measure it in a canary without `monotonic`"
                ),
            ),
        ),
        (
            "canary_sources.yaml",
            concat!(
                bad!(
                    "canary_sources.yaml:11:28: budgets[0].probes[0].canary.write.source: unknown source \"order-db\"; defined sources: events, order-api, orders-db\n"
                ),
                bad!(
                    "canary_sources.yaml:16:28: budgets[0].probes[1].canary.write.source: source \"order-api\" is a http source; a canary write of lagbudget's own marker needs postgres or mysql or redis or kafka or nats or rabbitmq or dynamodb\n"
                ),
                bad!(
                    "canary_sources.yaml:18:25: budgets[0].probes[1].canary.read[0].source: source \"events\" is a kafka source; a canary read with `query` needs postgres or mysql\n"
                ),
                bad!(
                    "canary_sources.yaml:24:21: budgets[0].probes[2].canary.instance: invalid instance \"host 1/eu\": use letters, digits, `.`, `_` and `-`, at most 64 characters\n"
                ),
                bad!(
                    "canary_sources.yaml:27:31: budgets[1].max_monotonic_violations: max_monotonic_violations limits the monotonic-read violations of a canary with `monotonic: {reads: N}`, and no probe of this budget is one\n"
                ),
                bad!(
                    "canary_sources.yaml:30:35: budgets[1].probes[0].max_monotonic_violations: \"150%\" is out of range: must be at least 0% and at most 100%\n"
                ),
                bad!(
                    "canary_sources.yaml:36:35: budgets[1].probes[1].max_monotonic_violations: max_monotonic_violations limits the monotonic-read violations of a canary with `monotonic: {reads: N}`, and this probe is not one"
                ),
            ),
        ),
        (
            "reconcile.yaml",
            concat!(
                bad!(
                    "reconcile.yaml:13:22: budgets[0].probes[0].reconcile.collation: `collation` applies to text keys: add `key_type: text`, or remove it\n"
                ),
                bad!(
                    "reconcile.yaml:18:22: budgets[0].probes[1].reconcile.precision: `precision` applies to timestamp versions: add `version_type: timestamp`, or remove it\n"
                ),
                bad!(
                    "reconcile.yaml:23:19: budgets[0].probes[2].reconcile.window: window must be longer than max_lag (30s): a record must still be in the window when it becomes older than max_lag, to be called missing\n"
                ),
                bad!(
                    "reconcile.yaml:28:27: budgets[0].probes[3].reconcile.max_mismatches: max_mismatches is a key of the probe (beside `reconcile:`, at the same indentation as `name:`) or of the budget, not of the reconcile table\n"
                ),
                bad!(
                    "reconcile.yaml:31:29: budgets[0].probes[4].reconcile.source.source: source \"cache\" is a redis source; reconcile needs postgres or mysql\n"
                ),
                bad!(
                    "reconcile.yaml:38:11: budgets[1].probes[0].reconcile: reconcile needs a max_lag (on the probe or its budget): records younger than it are in flight, older ones that are not visible are mismatches\n"
                ),
                bad!(
                    "reconcile.yaml:44:25: budgets[2].probes[0].max_mismatches: max_mismatches limits the mismatched records of a reconcile probe, and this probe is not one"
                ),
            ),
        ),
        (
            "included_error/main.yaml",
            bad!(
                "included_error/budgets.d/search.yaml:11:17: budgets[0].probes[0].sql_watermark.mode: invalid value \"oldest_pendng\": expected one of oldest_pending, since_watermark"
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (fixture, expected) in cases {
        let actual = load_errors(fixture);
        if actual != *expected {
            failures.push(format!(
                "{fixture}:\n  expected: {expected}\n  actual:   {actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_of_every_file_is_reported_at_once_in_file_then_line_order() {
    let expected = [
        bad!(
            "many_errors/main.yaml:4:13: defaults.interval: invalid duration \"10\": missing unit (use ms, s, m, h or d)"
        ),
        bad!(
            "many_errors/main.yaml:10:14: budgets[0].warn_at: invalid percentage \"80\": expected a number followed by %, such as 80% or 99.9%"
        ),
        bad!(
            "many_errors/budgets.d/loyalty.yaml:2:11: budgets[0].name: duplicate budget \"orders\" (first defined at tests/fixtures/config/bad/many_errors/main.yaml:8)"
        ),
        bad!(
            "many_errors/budgets.d/loyalty.yaml:4:14: budgets[0].timeout: timeout 20s is above the effective interval 3333ms (max_lag 10s / 3): a run must finish before the next one is due"
        ),
        bad!(
            "many_errors/budgets.d/loyalty.yaml:8:19: budgets[0].probes[0].sql_watermark.source: unknown source \"loyalty-db\"; defined sources: orders-db"
        ),
        bad!(
            "many_errors/budgets.d/search.yaml:6:9: budgets[0].probes[0].cassandra_repair: unknown probe kind `cassandra_repair`; supported: sql_watermark, kafka_consumer_group, postgres_logical, rabbitmq_queue, redis_stream_group, nats_consumer, mysql_replica, postgres_replica, redis_key_age, http_watermark, canary, reconcile, dynamodb_stream, mongodb_replica"
        ),
    ];
    assert_eq!(load_errors("many_errors/main.yaml"), expected.join("\n"));

    // The structured form carries the same facts for tools.
    let errors = match config::load_with(
        Path::new("tests/fixtures/config/bad/many_errors/main.yaml"),
        &no_env,
    ) {
        Ok(_) => panic!("many_errors loaded without errors"),
        Err(errors) => errors.0,
    };
    let first = &errors[0];
    assert_eq!(
        first.file,
        "tests/fixtures/config/bad/many_errors/main.yaml"
    );
    assert_eq!((first.line, first.column), (4, 13));
    assert_eq!(first.path, "defaults.interval");
}

#[test]
fn secrets_never_appear_in_errors_even_when_they_make_a_value_invalid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, "file-secret-password\n").expect("password file");
    let warn_at_file = dir.path().join("warn-at");
    std::fs::write(&warn_at_file, "file-secret-percent\n").expect("warn_at file");
    let config_path = dir.path().join("lagbudget.yaml");
    let text = format!(
        r#"sources:
  orders-db:
    postgres:
      dsn: "host=orders-db password=${{file:{password}}} ${{DSN_OPTION}}=1"
budgets:
  - name: "${{BUDGET_NAME}}"
    max_lag: "${{SECRET_LAG}}"
    warn_at: "${{file:{warn_at}}}"
    labels: {{ team: "${{SECRET_LABEL}}" }}
    max_backlog: ${{SECRET_BACKLOG}}
    probes:
      - name: projection
        timeout: ${{SECRET_LAG}}
        sql_watermark:
          source: "${{SECRET_SOURCE}}"
          watermark: "SELECT '${{SECRET_LAG}}'"
          oldest_pending: SELECT 1
"#,
        password = password_file.display(),
        warn_at = warn_at_file.display(),
    );
    std::fs::write(&config_path, text).expect("config");
    let env = |name: &str| {
        let value = match name {
            "DSN_OPTION" => "env-secret-option",
            "BUDGET_NAME" => "env secret budget name",
            "SECRET_LAG" => "env-secret-lag",
            "SECRET_LABEL" => "env-secret-label",
            "SECRET_BACKLOG" => "env-secret-backlog",
            "SECRET_SOURCE" => "env-secret-source",
            _ => return None,
        };
        Some(value.to_owned())
    };
    let errors = match config::load_with(&config_path, &env) {
        Ok(_) => panic!("a config with invalid secret values loaded"),
        Err(errors) => errors,
    };
    let text = errors.to_string();

    // Each secret did make its value invalid, and the message quotes what the file says.
    let file = config_path.display();
    let expected = [
        format!(
            "{file}:4:12: sources.orders-db.postgres.dsn: invalid PostgreSQL connection string: unknown option `***`"
        ),
        format!(
            "{file}:6:11: budgets[0].name: invalid name \"${{BUDGET_NAME}}\": names start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        ),
        format!(
            "{file}:7:14: budgets[0].max_lag: invalid duration \"${{SECRET_LAG}}\": expected a number before the unit"
        ),
        format!(
            "{file}:8:14: budgets[0].warn_at: invalid percentage \"${{file:{}}}\": expected a number followed by %, such as 80% or 99.9%",
            warn_at_file.display()
        ),
        format!(
            "{file}:10:18: budgets[0].max_backlog: expected an integer, found \"${{SECRET_BACKLOG}}\""
        ),
        format!(
            "{file}:13:18: budgets[0].probes[0].timeout: invalid duration \"${{SECRET_LAG}}\": expected a number before the unit"
        ),
        format!(
            "{file}:15:19: budgets[0].probes[0].sql_watermark.source: unknown source \"${{SECRET_SOURCE}}\"; defined sources: orders-db"
        ),
    ];
    assert_eq!(text, expected.join("\n"));

    for secret in [
        "file-secret-password",
        "file-secret-percent",
        "env-secret-option",
        "env secret budget name",
        "env-secret-lag",
        "env-secret-label",
        "env-secret-backlog",
        "env-secret-source",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
        for error in &errors.0 {
            assert!(!format!("{error:?}").contains(secret), "{secret:?} leaked");
        }
    }
}

#[test]
fn a_kafka_password_never_appears_in_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("lagbudget.yaml");
    // The password is used where it is a secret, and also where it makes values invalid, so
    // that every message about those values has a chance to leak it.
    let text = r#"sources:
  events:
    kafka:
      brokers: "kafka-1:9092,${KAFKA_PASSWORD}"
      properties:
        security.protocol: SASL_SSL
        sasl.mechanism: SCRAM-SHA-512
        sasl.username: lb-reader
        sasl.password: "${KAFKA_PASSWORD}"
        group.id: "${KAFKA_PASSWORD}"
budgets:
  - name: loyalty
    max_lag: 30s
    probes:
      - name: by-list
        kafka_consumer_group:
          source: events
          group: "${KAFKA_PASSWORD}"
          topics: ["${KAFKA_PASSWORD}"]
          partition_detail: "${KAFKA_PASSWORD}"
      - name: by-pattern
        kafka_consumer_group:
          source: "${KAFKA_PASSWORD}"
          group: loyalty-service
          topic_pattern: "${KAFKA_PASSWORD}"
          no_commit: "${KAFKA_PASSWORD}"
"#;
    std::fs::write(&config_path, text).expect("config");
    // Not a valid broker, topic name, boolean, policy or regular expression.
    let password = "kafka pass(word";
    let env = |name: &str| (name == "KAFKA_PASSWORD").then(|| password.to_owned());
    let errors = match config::load_with(&config_path, &env) {
        Ok(_) => panic!("a config with invalid secret values loaded"),
        Err(errors) => errors,
    };
    let text = errors.to_string();
    let file = config_path.display();
    let expected = [
        format!(
            "{file}:4:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,${{KAFKA_PASSWORD}}\": entry 2 has no port; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092"
        ),
        format!(
            "{file}:10:9: sources.events.kafka.properties[\"group.id\"]: property `group.id` is set by lagbudget: it reads with a group id of its own and never joins the measured group; name that group in the probe's `group`"
        ),
        format!(
            "{file}:19:20: budgets[0].probes[0].kafka_consumer_group.topics[0]: invalid topic name \"${{KAFKA_PASSWORD}}\": Kafka topic names are 1 to 249 letters, digits, '.', '_' and '-' (and not \".\" or \"..\")"
        ),
        format!(
            "{file}:20:29: budgets[0].probes[0].kafka_consumer_group.partition_detail: expected true or false, found \"${{KAFKA_PASSWORD}}\""
        ),
        format!(
            "{file}:23:19: budgets[0].probes[1].kafka_consumer_group.source: unknown source \"${{KAFKA_PASSWORD}}\"; defined sources: events"
        ),
        format!(
            "{file}:25:26: budgets[0].probes[1].kafka_consumer_group.topic_pattern: invalid topic_pattern \"${{KAFKA_PASSWORD}}\": unclosed group"
        ),
        format!(
            "{file}:26:22: budgets[0].probes[1].kafka_consumer_group.no_commit: invalid value \"${{KAFKA_PASSWORD}}\": expected one of earliest, latest"
        ),
    ];
    assert_eq!(text, expected.join("\n"));
    for fragment in [password, "pass(word", "kafka pass"] {
        assert!(
            !text.contains(fragment),
            "{fragment:?} leaked into:\n{text}"
        );
        for error in &errors.0 {
            assert!(
                !format!("{error:?}").contains(fragment),
                "{fragment:?} leaked"
            );
        }
    }

    // Valid, the password is a secret of the loaded config and never printed with it.
    std::fs::write(
        &config_path,
        "sources:\n  events:\n    kafka:\n      brokers: kafka-1:9092\n      properties:\n        sasl.password: \"${KAFKA_PASSWORD}\"\nbudgets: []\n",
    )
    .expect("config");
    let config = config::load_with(&config_path, &env)
        .unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"));
    assert_eq!(
        config
            .secrets
            .scrub(&format!("login failed for {password}")),
        "login failed for ***"
    );
    let SourceKind::Kafka(kafka) = &config.sources["events"].kind else {
        panic!("events is not a kafka source");
    };
    assert_eq!(kafka.properties["sasl.password"].expose(), password);
    assert!(!format!("{config:?}").contains(password));
}

fn good(fixture: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config/good")
        .join(fixture)
}

#[test]
fn the_minimal_config_loads() {
    let config = match config::load(&good("minimal.yaml")) {
        Ok(config) => config,
        Err(errors) => panic!("minimal.yaml has errors:\n{errors}"),
    };
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.sources["orders-db"].max_connections, 4);
    assert_eq!(config.budgets.len(), 1);
    let budget = &config.budgets[0];
    assert_eq!(budget.name, "order-projection");
    assert_eq!(budget.max_lag, Some(Duration::from_secs(30)));
    let probe = &budget.probes[0];
    assert_eq!(probe.budget, "order-projection");
    assert_eq!(probe.name, "projection");
    assert_eq!(probe.interval, Duration::from_secs(10));
    assert_eq!(probe.timeout, Duration::from_secs(5));
    assert_eq!(probe.stall_after, Duration::from_secs(30));
    assert_eq!(probe.source_name(), "orders-db");
    let ProbeKind::SqlWatermark(watermark) = &probe.kind else {
        panic!("minimal.yaml's probe is not a sql_watermark probe");
    };
    assert_eq!(watermark.mode, WatermarkMode::OldestPending);
}

/// The variables that the example's header sets on its `lagbudget check` command line.
fn example_header_variables(example: &str) -> Vec<String> {
    let command = example
        .lines()
        .take_while(|line| line.starts_with('#'))
        .find(|line| line.contains("lagbudget check -c config/example.yaml"))
        .expect("the example's header says how to check it");
    command
        .trim_start_matches('#')
        .split_whitespace()
        .take_while(|word| *word != "lagbudget")
        .map(|word| {
            let (name, _) = word
                .split_once('=')
                .unwrap_or_else(|| panic!("{word:?} in {command:?} is not NAME=…"));
            name.to_owned()
        })
        .collect()
}

/// What `lagbudget check` does after loading: create every source's client (which connects
/// to nothing). Returns each refusal, such as a `kafka` property librdkafka rejects.
fn source_client_errors(config: &lagbudget::model::Config) -> Vec<String> {
    config
        .sources
        .values()
        .filter_map(|source| {
            lagbudget::probe::SourceHandle::new(source)
                .err()
                .map(|e| config.secrets.scrub(&e.message))
        })
        .collect()
}

/// The configs the project ships must stay valid as the loader evolves, pass what
/// `lagbudget check` checks with the environment their header names (and no other), and the
/// example must keep covering every probe kind that exists (and its modes).
#[test]
fn shipped_configs_load_and_the_example_covers_every_probe_kind() {
    let text = std::fs::read_to_string("config/example.yaml").expect("read config/example.yaml");
    let variables = example_header_variables(&text);
    assert!(
        variables.iter().any(|v| v == "ORDERS_DB_PASSWORD"),
        "{variables:?}"
    );
    let env = |name: &str| {
        variables
            .iter()
            .any(|v| v == name)
            .then(|| "example-password".to_owned())
    };
    let example = config::load_with(Path::new("config/example.yaml"), &env)
        .unwrap_or_else(|e| panic!("config/example.yaml:\n{e}"));
    let refused = source_client_errors(&example);
    assert!(
        refused.is_empty(),
        "`lagbudget check -c config/example.yaml` with only {variables:?} set fails:\n{}",
        refused.join("\n")
    );
    let mut modes: Vec<WatermarkMode> = Vec::new();
    let mut kafka_groups: Vec<&KafkaConsumerGroup> = Vec::new();
    let mut slots: Vec<&String> = Vec::new();
    let mut queues: Vec<&RabbitmqQueue> = Vec::new();
    let mut redis_id_time: Vec<bool> = Vec::new();
    let mut nats_consumers = 0;
    let mut mysql_replicas: Vec<(&str, Option<&str>)> = Vec::new();
    let mut replica_methods: Vec<&'static str> = Vec::new();
    let mut caches: Vec<(&CacheKeys, &'static str)> = Vec::new();
    let mut http_views: Vec<&HttpWatermark> = Vec::new();
    let mut canaries = 0;
    let mut reconciliations = 0;
    let mut dynamodb_streams = 0;
    let mut mongodb_members: Vec<(&str, &'static str, Option<&str>)> = Vec::new();
    for probe in example.budgets.iter().flat_map(|b| b.probes.iter()) {
        match &probe.kind {
            ProbeKind::SqlWatermark(w) => modes.push(w.mode),
            ProbeKind::KafkaConsumerGroup(k) => kafka_groups.push(k),
            ProbeKind::PostgresLogical(l) => slots.push(&l.slot),
            ProbeKind::RabbitmqQueue(q) => queues.push(q),
            ProbeKind::RedisStreamGroup(r) => redis_id_time.push(r.id_time),
            ProbeKind::NatsConsumer(_) => nats_consumers += 1,
            ProbeKind::MysqlReplica(m) => {
                assert!(m.ryw_delay.is_some() && m.instance.is_some());
                mysql_replicas.push((probe.name.as_str(), probe.replica.as_deref()));
            }
            ProbeKind::PostgresReplica(r) => replica_methods.push(r.method.key()),
            ProbeKind::RedisKeyAge(c) => caches.push((&c.keys, c.mode.key())),
            ProbeKind::HttpWatermark(h) => http_views.push(h),
            ProbeKind::Canary(_) => canaries += 1,
            ProbeKind::Reconcile(_) => reconciliations += 1,
            ProbeKind::DynamodbStream(_) => dynamodb_streams += 1,
            ProbeKind::MongodbReplica(m) => mongodb_members.push((
                probe.name.as_str(),
                m.method.key(),
                probe.replica.as_deref(),
            )),
        }
    }
    // One key and a pattern compared with the source, and a key read as its build time.
    assert!(
        caches
            .iter()
            .any(|(k, m)| matches!(k, CacheKeys::Key(_)) && *m == "oldest_pending")
    );
    assert!(
        caches
            .iter()
            .any(|(k, m)| matches!(k, CacheKeys::Pattern { .. }) && *m == "oldest_pending")
    );
    assert!(caches.iter().any(|(_, m)| *m == "since_build"));
    assert_eq!(slots, ["debezium_orders"]);
    // Both methods; one entry per member, by default every seed of the URI.
    assert_eq!(
        mongodb_members,
        [
            ("oplog", "oplog", Some("profiles-1:27017")),
            ("oplog", "oplog", Some("profiles-2:27017")),
            ("oplog", "oplog", Some("profiles-3:27017")),
            ("heartbeat", "heartbeat", Some("profiles-2:27017")),
            ("heartbeat", "heartbeat", Some("profiles-3:27017")),
        ]
    );
    assert_eq!(
        reconciliations, 1,
        "the example shows orders reconciled with invoices"
    );
    assert_eq!(
        dynamodb_streams, 1,
        "the example shows a DynamoDB stream's consumer"
    );
    assert!(
        canaries >= 2,
        "the example shows canaries: a replica and an end-to-end view"
    );
    // The three recipes and the opt-in mode: a search index read by POST and pointer, a page
    // cache read by header, a task queue, and a time of the data shown.
    assert!(http_views.iter().any(|h| {
        matches!(h.mode, HttpWatermarkMode::OldestPending(_))
            && h.method == HttpMethod::Post
            && matches!(h.value, ValueAt::Pointer(_))
    }));
    assert!(http_views.iter().any(|h| {
        matches!(h.mode, HttpWatermarkMode::OldestPending(_))
            && matches!(h.value, ValueAt::Header(_))
    }));
    assert!(
        http_views
            .iter()
            .any(|h| matches!(h.mode, HttpWatermarkMode::QueueAge { .. }))
    );
    assert!(
        http_views
            .iter()
            .any(|h| h.mode == HttpWatermarkMode::SinceVersion)
    );
    // Both kinds of Redis stream IDs, and a JetStream consumer.
    assert!(redis_id_time.contains(&true) && redis_id_time.contains(&false));
    assert!(nats_consumers > 0);
    // One entry per configured replica, each labelled with its source name.
    assert_eq!(
        mysql_replicas,
        [
            ("catalog-replicas", Some("catalog-replica-1")),
            ("catalog-replicas", Some("catalog-replica-2"))
        ]
    );
    assert!(replica_methods.contains(&"heartbeat") && replica_methods.contains(&"passive"));

    assert!(modes.contains(&WatermarkMode::OldestPending));
    assert!(modes.contains(&WatermarkMode::SinceWatermark));
    // Both ways of choosing topics, and the optional keys set away from their defaults.
    assert!(
        kafka_groups
            .iter()
            .any(|k| matches!(k.topics, TopicSelector::List(_)))
    );
    assert!(kafka_groups.iter().any(|k| {
        matches!(k.topics, TopicSelector::Pattern(_))
            && k.no_commit == Some(NoCommitPolicy::Earliest)
            && k.partition_detail
    }));
    // A queue with timestamps and a backlog-only dead-letter queue.
    assert!(queues.iter().any(|q| q.timestamps && q.vhost == "/"));
    assert!(queues.iter().any(|q| !q.timestamps));
    let quickstart = config::load_with(Path::new("config/quickstart.yaml"), &no_env)
        .unwrap_or_else(|e| panic!("config/quickstart.yaml:\n{e}"));
    assert_eq!(source_client_errors(&quickstart), Vec::<String>::new());
}

/// Every full config among the recipes of the `canary` page (docs/src/probes/canary.md) loads as written,
/// each view becoming a probe entry of its own.
#[test]
fn the_canary_pages_recipes_load() {
    let page = std::fs::read_to_string("docs/src/probes/canary.md").expect("read the canary page");
    let section = page.as_str();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut loaded = 0;
    for (index, block) in section.split("```yaml\n").skip(1).enumerate() {
        let yaml = block.split("```").next().expect("a closed block");
        if !yaml.contains("sources:") {
            continue;
        }
        let path = dir.path().join(format!("recipe-{index}.yaml"));
        std::fs::write(&path, yaml).expect("write recipe");
        let config = config::load_with(&path, &no_env)
            .unwrap_or_else(|e| panic!("canary page recipe {index} does not load:\n{e}\n{yaml}"));
        let views = config
            .budgets
            .iter()
            .flat_map(|b| &b.probes)
            .filter(|p| matches!(p.kind, ProbeKind::Canary(_)) && p.replica.is_some())
            .count();
        assert!(views >= 1, "recipe {index} has a canary view:\n{yaml}");
        loaded += 1;
    }
    assert!(loaded >= 4, "the four recipes (found {loaded})");
}

/// Every YAML block of the `reconcile` page (docs/src/probes/reconcile.md) loads: a budget entry as it is, a
/// `reconcile:` table inside a probe of a budget, over sources of the kinds its names suggest.
#[test]
fn the_reconcile_pages_recipes_load() {
    let page =
        std::fs::read_to_string("docs/src/probes/reconcile.md").expect("read the reconcile page");
    let section = page.as_str();
    let sources = "sources:\n\
        \x20 orders-db: { postgres: { dsn: \"host=orders-db user=lagbudget\" } }\n\
        \x20 catalog-db: { postgres: { dsn: \"host=catalog-db user=lagbudget\" } }\n\
        \x20 search-db: { postgres: { dsn: \"host=search-db user=lagbudget\" } }\n\
        \x20 billing-db: { mysql: { url: \"mysql://lagbudget@billing-db:3306/billing\" } }\n";
    let indent = |text: &str, by: &str| -> String {
        text.lines()
            .map(|line| format!("{by}{line}\n"))
            .collect::<String>()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut loaded = 0;
    for (index, block) in section.split("```yaml\n").skip(1).enumerate() {
        let yaml = block.split("```").next().expect("a closed block");
        let budgets = if yaml.starts_with("- name:") {
            indent(yaml, "  ")
        } else if yaml.starts_with("reconcile:") {
            format!(
                "  - name: recipe\n    max_lag: 30s\n    probes:\n      - name: recipe\n{}",
                indent(yaml, "        ")
            )
        } else {
            panic!("reconcile page block {index} is neither a budget nor a probe:\n{yaml}");
        };
        let config_text = format!("{sources}budgets:\n{budgets}");
        let path = dir.path().join(format!("recipe-{index}.yaml"));
        std::fs::write(&path, &config_text).expect("write recipe");
        let config = config::load_with(&path, &no_env).unwrap_or_else(|e| {
            panic!("reconcile page block {index} does not load:\n{e}\n{config_text}")
        });
        let reconciles = config
            .budgets
            .iter()
            .flat_map(|b| &b.probes)
            .filter(|p| matches!(p.kind, ProbeKind::Reconcile(_)))
            .count();
        assert_eq!(reconciles, 1, "block {index} is one reconcile probe");
        loaded += 1;
    }
    assert!(loaded >= 3, "the example and the recipes (found {loaded})");
}

/// The `dynamodb_stream` page (docs/src/probes/dynamodb_stream.md) opens on a whole config: it must load as written.
#[test]
fn the_dynamodb_stream_pages_example_loads() {
    let page = std::fs::read_to_string("docs/src/probes/dynamodb_stream.md")
        .expect("read the dynamodb_stream page");
    let yaml = page
        .split("```yaml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("a yaml block");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dynamodb_stream.yaml");
    std::fs::write(&path, yaml).expect("write example");
    let config = config::load_with(&path, &no_env)
        .unwrap_or_else(|e| panic!("the dynamodb_stream page's example does not load:\n{e}"));
    assert!(matches!(
        config.budgets[0].probes[0].kind,
        ProbeKind::DynamodbStream(_)
    ));
}
