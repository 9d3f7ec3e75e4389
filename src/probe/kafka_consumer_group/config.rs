//! The `kafka_consumer_group` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{Choice, NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::kafka::config::KafkaSourceConfig;

/// A Kafka consumer group's lag on some topics, in seconds: the age of the first record at or
/// after each partition's committed offset.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConsumerGroup {
    pub source: String,
    /// The consumer group whose committed offsets are measured (lagbudget never joins it).
    pub group: String,
    pub topics: TopicSelector,
    /// What a partition with data but no committed offset means; `None`: the probe cannot
    /// tell, so it reports `no_data` (unknown) rather than guess.
    pub no_commit: Option<NoCommitPolicy>,
    /// Export per-partition lag series (the most lagging ones, capped).
    pub partition_detail: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TopicSelector {
    /// These topics exactly.
    List(Vec<String>),
    /// Every topic whose whole name matches this regular expression (checked at load).
    Pattern(String),
}

/// How to read a partition that has data but no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCommitPolicy {
    /// The group will start from the beginning: everything in the partition is pending.
    Earliest,
    /// The group will start at the end: nothing is pending.
    Latest,
}

impl NoCommitPolicy {
    pub fn key(self) -> &'static str {
        match self {
            NoCommitPolicy::Earliest => "earliest",
            NoCommitPolicy::Latest => "latest",
        }
    }
}

config_table! {
    /// A Kafka consumer group: lag is the age of the first record at or after each
    /// partition's committed offset.
    ///
    /// Per partition, 0 when the group is caught up; the probe's lag is the largest.
    /// lagbudget reads with its own group id, never joins the group and never commits.
    pub(crate) struct KafkaConsumerGroupConfig = "kafka_consumer_group" {
        /// Name of the kafka source to read.
        source: SourceRef<KafkaConsumerGroup>,
        /// The consumer group whose committed offsets are measured.
        group: NonEmpty<String>,
        /// The topics the group consumes. Set exactly one of topics and topic_pattern.
        topics: Option<NonEmpty<Vec<Spanned<Topic>>>>,
        /// A regular expression (Rust regex syntax) matched against whole topic names, such
        /// as `orders\..*`. Set exactly one of topics and topic_pattern.
        topic_pattern: Option<NonEmpty<TopicPattern>>,
        /// How to read a partition that has records but no committed offset: `earliest` (the
        /// group will start from the beginning: every record is pending) or `latest` (it will
        /// start at the end: nothing is pending). Unset: such a partition makes the probe
        /// unknown.
        no_commit: Option<NoCommitPolicy>,
        /// Export per-partition lag series (the most lagging partitions, capped).
        partition_detail: bool = false,
    }
    exactly_one_of(topics, topic_pattern);
}

impl ReadsSource for KafkaConsumerGroup {
    const KIND: &'static str = <KafkaConsumerGroupConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <KafkaSourceConfig as Table>::TABLE.id;
}

impl Choice for NoCommitPolicy {
    const ALL: &'static [Self] = &[NoCommitPolicy::Earliest, NoCommitPolicy::Latest];

    fn key(self) -> &'static str {
        NoCommitPolicy::key(self)
    }
}

/// A Kafka topic name, non-empty.
pub(crate) struct Topic;

impl Scalar for Topic {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, topic: &Text) -> Option<String> {
        let topic_name = <NonEmpty<String>>::parse(ctx, topic)?;
        if is_valid_topic_name(&topic_name) {
            return Some(topic_name);
        }
        ctx.error(
            topic.span,
            &topic.path,
            format!("invalid topic name {}: {TOPIC_RULE}", topic.quoted()),
        );
        None
    }

    fn json_schema() -> Value {
        <NonEmpty<String>>::json_schema()
    }
}

/// A regular expression over topic names, compiled as written so that an error is about what
/// the user wrote; the probe anchors it to match whole topic names.
pub(crate) struct TopicPattern;

impl Scalar for TopicPattern {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, pattern: &Text) -> Option<String> {
        match regex::Regex::new(&pattern.value) {
            Ok(_) => Some(pattern.value.clone()),
            Err(error) => {
                ctx.error(
                    pattern.span,
                    &pattern.path,
                    format!(
                        "invalid topic_pattern {}: {}",
                        pattern.quoted(),
                        regex_problem(&error)
                    ),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for KafkaConsumerGroupConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut seen: Vec<&str> = Vec::new();
        let mut ok = true;
        for topic in self.topics.iter().flatten() {
            if seen.contains(&topic.value.as_str()) {
                ctx.error(
                    topic.span,
                    &topic.path,
                    format!("duplicate topic {}", topic.quoted()),
                );
                ok = false;
            } else {
                seen.push(&topic.value);
            }
        }
        ok
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            // `exactly_one_of` reported neither or both.
            let topics = match (&self.topics, &self.topic_pattern) {
                (Some(topics), None) => {
                    TopicSelector::List(topics.iter().map(|topic| topic.value.clone()).collect())
                }
                (None, Some(pattern)) => TopicSelector::Pattern(pattern.clone()),
                _ => return None,
            };
            Some(ProbeKind::KafkaConsumerGroup(KafkaConsumerGroup {
                source: self.source.as_ref()?.value.clone(),
                group: self.group.clone()?,
                topics,
                no_commit: self.no_commit,
                partition_detail: self.partition_detail?,
            }))
        };
        single(kind())
    }
}

/// Whether `text` is a legal Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn is_valid_topic_name(text: &str) -> bool {
    (1..=249).contains(&text.len())
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

const TOPIC_RULE: &str =
    "Kafka topic names are 1 to 249 letters, digits, '.', '_' and '-' (and not \".\" or \"..\")";

/// The reason of a regular expression error, on one line and without the pattern (which may
/// have been interpolated).
fn regex_problem(error: &regex::Error) -> String {
    match error {
        // The syntax error's text shows the pattern with a caret, then `error: <reason>`.
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix("error: "))
            .unwrap_or("invalid syntax")
            .to_owned(),
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled expression would be larger than the limit of {limit} bytes")
        }
        _ => "invalid regular expression".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::load_with;
    use crate::config::testing::errors_of;

    const KAFKA: &str = r#"
sources:
  events:
    kafka:
      brokers: "kafka-1:9092, kafka-2:9093,[::1]:9094"
      properties:
        security.protocol: SASL_SSL
        sasl.mechanism: SCRAM-SHA-512
        sasl.username: lagbudget-reader
        sasl.password: ${KAFKA_PASSWORD}
        socket.timeout.ms: 30000
  plain: { kafka: { brokers: "SSL://kafka-3:9093" } }
budgets:
  - name: loyalty
    max_lag: 30s
    probes:
      - name: consumer
        kafka_consumer_group: { source: events, group: loyalty-service, topics: [orders, refunds] }
      - name: audit
        max_backlog: 1000
        kafka_consumer_group:
          source: events
          group: audit
          topic_pattern: 'orders\..*'
          no_commit: earliest
          partition_detail: true
      - name: interpolated
        kafka_consumer_group:
          source: plain
          group: "${GROUP}"
          topic_pattern: "[a-z]+"
          no_commit: latest
          partition_detail: "${DETAIL}"
"#;

    #[test]
    fn kafka_consumer_group_probes_resolve_to_the_model() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, KAFKA).expect("config");
        let env = |name: &str| match name {
            "KAFKA_PASSWORD" => Some("kafka-secret-password".to_owned()),
            "GROUP" => Some("search-indexer".to_owned()),
            "DETAIL" => Some("false".to_owned()),
            _ => None,
        };
        let config = match load_with(&path, &env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };

        let probes = &config.budgets[0].probes;
        assert_eq!(
            probes[0].kind,
            ProbeKind::KafkaConsumerGroup(KafkaConsumerGroup {
                source: "events".to_owned(),
                group: "loyalty-service".to_owned(),
                topics: TopicSelector::List(vec!["orders".to_owned(), "refunds".to_owned()]),
                no_commit: None,
                partition_detail: false,
            })
        );
        assert_eq!(probes[0].kind_key(), "kafka_consumer_group");
        assert_eq!(probes[0].source_name(), "events");
        assert_eq!(probes[0].max_lag, Some(Duration::from_secs(30)));
        assert_eq!(probes[1].max_backlog, Some(1000));
        assert_eq!(
            probes[1].kind,
            ProbeKind::KafkaConsumerGroup(KafkaConsumerGroup {
                source: "events".to_owned(),
                group: "audit".to_owned(),
                topics: TopicSelector::Pattern("orders\\..*".to_owned()),
                no_commit: Some(NoCommitPolicy::Earliest),
                partition_detail: true,
            })
        );
        assert_eq!(
            probes[2].kind,
            ProbeKind::KafkaConsumerGroup(KafkaConsumerGroup {
                source: "plain".to_owned(),
                group: "search-indexer".to_owned(),
                topics: TopicSelector::Pattern("[a-z]+".to_owned()),
                no_commit: Some(NoCommitPolicy::Latest),
                partition_detail: false,
            })
        );
    }

    #[test]
    fn kafka_consumer_group_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  events:
    kafka:
      brokers: "kafka-1:9092"
      properties:
        security.protocol: SASL_SSL
        sasl.mechanism: SCRAM-SHA-512
        sasl.username: lagbudget-reader
        sasl.password: ${KAFKA_PASSWORD}
        socket.timeout.ms: 30000
  env-brokers: { kafka: { brokers: "${BROKERS}" } }
  db: { postgres: { dsn: host=db } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: no-topics
        kafka_consumer_group: { source: events, group: g }
      - name: bad-topics
        kafka_consumer_group: { source: events, group: "", topics: [orders, "", "a b", orders] }
      - name: empty-list
        kafka_consumer_group: { source: events, group: g, topics: [] }
      - name: bad-flags
        kafka_consumer_group: { source: events, group: g, topic_pattern: x, no_commit: none, partition_detail: "true" }
      - name: yes-flag
        kafka_consumer_group: { source: events, group: g, topic_pattern: x, partition_detail: yes }
      - name: sql-on-kafka
        sql_watermark: { source: env-brokers, watermark: SELECT 1, oldest_pending: SELECT 2 }
      - name: kafka-on-sql
        kafka_consumer_group: { source: db, group: g, topic_pattern: "(orders" }
"#;
        let env = |name: &str| match name {
            "BROKERS" => Some("kafka-2:9092".to_owned()),
            "KAFKA_PASSWORD" => Some("kafka-secret-password".to_owned()),
            _ => None,
        };
        let expected = [
            "19:31: budgets[0].probes[0].kafka_consumer_group: missing `topics` or `topic_pattern`: set exactly one of them",
            "21:56: budgets[0].probes[1].kafka_consumer_group.group: must not be empty",
            "21:77: budgets[0].probes[1].kafka_consumer_group.topics[1]: must not be empty",
            "21:81: budgets[0].probes[1].kafka_consumer_group.topics[2]: invalid topic name \"a b\": Kafka topic names are 1 to 249 letters, digits, '.', '_' and '-' (and not \".\" or \"..\")",
            "21:88: budgets[0].probes[1].kafka_consumer_group.topics[3]: duplicate topic \"orders\"",
            "23:67: budgets[0].probes[2].kafka_consumer_group.topics: must list at least one item",
            "25:88: budgets[0].probes[3].kafka_consumer_group.no_commit: invalid value \"none\": expected one of earliest, latest",
            "25:112: budgets[0].probes[3].kafka_consumer_group.partition_detail: expected true or false, found the string \"true\": remove the quotes",
            "27:95: budgets[0].probes[4].kafka_consumer_group.partition_detail: expected true or false, found \"yes\"",
            "29:34: budgets[0].probes[5].sql_watermark.source: source \"env-brokers\" is a kafka source; sql_watermark needs postgres",
            "31:41: budgets[0].probes[6].kafka_consumer_group.source: source \"db\" is a postgres source; kafka_consumer_group needs kafka",
            "31:70: budgets[0].probes[6].kafka_consumer_group.topic_pattern: invalid topic_pattern \"(orders\": unclosed group",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("kafka-secret")));
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in ["orders", "orders.v2", "dead_letters-1", &"t".repeat(249)] {
            assert!(is_valid_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a b", "orders/v2", "ördrs", &"t".repeat(250)] {
            assert!(!is_valid_topic_name(bad), "{bad}");
        }
    }

    #[test]
    fn regex_problems_are_one_line_without_the_pattern() {
        let problem = |pattern: &str| match regex::Regex::new(pattern) {
            Ok(_) => panic!("{pattern:?} compiled"),
            Err(error) => regex_problem(&error),
        };
        assert_eq!(problem("(orders-secret"), "unclosed group");
        assert_eq!(problem("orders-secret)"), "unopened group");
        assert_eq!(
            problem("[z-a]"),
            "invalid character class range, the start must be <= the end"
        );
        let long = problem("a{1000}{1000}");
        assert!(
            long.starts_with("the compiled expression would be larger"),
            "{long}"
        );
    }
}
