//! The `kafka` source kind's config: its table, its model and how its connection is read.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::schema::Defs;
use crate::config::syntax::Node;
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{ConfigValue, NonEmpty, Reserved, Scalar, StringMap};
use crate::model::{Secret, SourceKind};

/// A Kafka cluster, reached through its bootstrap servers with librdkafka.
#[derive(Clone, PartialEq)]
pub struct KafkaSource {
    /// `bootstrap.servers`: `host:port,host:port`.
    pub brokers: String,
    /// Extra librdkafka properties (TLS, SASL…). Values may be secrets (`sasl.password`), so
    /// they are never printed. Properties that would make lagbudget's reader join a group or
    /// commit are rejected by validation.
    pub properties: BTreeMap<String, Secret>,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("brokers", &self.brokers)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

config_table! {
    /// A Kafka cluster, reached through its bootstrap brokers.
    ///
    /// One librdkafka client is shared by every probe of the source.
    pub(crate) struct KafkaSourceConfig = "kafka" {
        /// Bootstrap brokers: host:port entries separated by commas, such as
        /// kafka-1:9092,kafka-2:9092.
        brokers: NonEmpty<Brokers>,
        /// librdkafka properties, such as security.protocol, ssl.ca.location,
        /// sasl.mechanism, sasl.username and sasl.password. Every value is treated as a
        /// secret. group.id, enable.auto.commit, auto.commit.enable,
        /// enable.auto.offset.store, isolation.level, bootstrap.servers,
        /// metadata.broker.list, auto.offset.reset and enable.partition.eof are set by
        /// lagbudget and rejected here.
        properties: Option<Properties>,
    }
}

impl SourceKindConfig for KafkaSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        let source = KafkaSource {
            brokers: self.brokers.clone()?,
            properties: self.properties.clone().unwrap_or_default(),
        };
        // One client per source, shared by every probe that reads it.
        Some((SourceKind::Kafka(source), 1))
    }
}

/// A `brokers` list, every entry checked, as librdkafka will get it.
pub(crate) struct Brokers;

impl Scalar for Brokers {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, brokers: &Text) -> Option<String> {
        let entries: Vec<&str> = brokers.value.split(',').map(str::trim).collect();
        let mut ok = true;
        for (index, entry) in entries.iter().enumerate() {
            let Err(problem) = check_broker(entry) else {
                continue;
            };
            ok = false;
            // An interpolated value is never echoed, so its entries are named by number only.
            let which = if brokers.substituted || entry.is_empty() {
                format!("entry {}", index + 1)
            } else {
                format!("entry {} {entry:?}", index + 1)
            };
            ctx.error(
                brokers.span,
                &brokers.path,
                format!(
                    "invalid brokers {}: {which} {problem}; expected host:port entries separated \
                     by commas, such as kafka-1:9092,kafka-2:9092",
                    brokers.quoted()
                ),
            );
        }
        ok.then(|| entries.join(","))
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// librdkafka properties that lagbudget's Kafka reader sets itself: letting a config change
/// them would make the reader join the measured group, commit, or read uncommitted records.
pub(crate) struct OwnedByTheReader;

impl Reserved for OwnedByTheReader {
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        (
            "group.id",
            "it reads with a group id of its own and never joins the measured group; name that \
             group in the probe's `group`",
        ),
        ("enable.auto.commit", "its reader never commits offsets"),
        ("auto.commit.enable", "its reader never commits offsets"),
        (
            "enable.auto.offset.store",
            "its reader never stores offsets",
        ),
        ("isolation.level", "it always reads with read_committed"),
        ("bootstrap.servers", "list the brokers in `brokers`"),
        ("metadata.broker.list", "list the brokers in `brokers`"),
        (
            "auto.offset.reset",
            "its reader only reads from explicit offsets; for partitions without a committed \
             offset, set the probe's `no_commit`",
        ),
        (
            "enable.partition.eof",
            "its reader decides how the end of a partition is reported",
        ),
    ];
}

/// A kafka source's librdkafka properties. Every value is kept as a `Secret` (never printed),
/// but only the values of credential-like keys join the scrub list, along with everything
/// interpolated from `${…}`: scrubbing ordinary values such as `kafka` or `SASL_SSL` from every
/// message would mangle the messages and protect nothing.
pub(crate) struct Properties;

impl ConfigValue for Properties {
    type Out = BTreeMap<String, Secret>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let mut properties = BTreeMap::new();
        for (name, value) in <StringMap<OwnedByTheReader>>::decode(ctx, node, path)? {
            if is_credential_key(&name) {
                ctx.secrets.insert(&value.value);
            }
            properties.insert(name, Secret::new(value.value));
        }
        Some(properties)
    }

    fn schema(defs: &mut Defs) -> Value {
        <StringMap<OwnedByTheReader>>::schema(defs)
    }
}

/// librdkafka property names whose values are credentials or key material.
fn is_credential_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        ".key",
        "key.pem",
        "credentials",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// Checks one entry of a Kafka `brokers` list: `host:port`, `[ipv6]:port`, optionally behind
/// a `protocol://` prefix as librdkafka accepts. The error completes "entry N …".
pub(crate) fn check_broker(entry: &str) -> Result<(), &'static str> {
    if entry.is_empty() {
        return Err("is empty");
    }
    let address = match entry.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|byte| byte.is_ascii_alphabetic() || byte == b'_') =>
        {
            rest
        }
        _ => entry,
    };
    let (host, port, host_ok) = if let Some(bracketed) = address.strip_prefix('[') {
        let Some((host, rest)) = bracketed.split_once(']') else {
            return Err("has an unclosed \"[\"");
        };
        let Some(port) = rest.strip_prefix(':') else {
            return Err(if rest.is_empty() {
                "has no port"
            } else {
                "has text between \"]\" and the port"
            });
        };
        let ok = host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'.' | b'%'));
        (host, port, ok)
    } else {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err("has no port");
        };
        if host.contains(':') {
            return Err("has an IPv6 address without brackets: write it as [::1]:9092");
        }
        let ok = host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'));
        (host, port, ok)
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if !host_ok {
        return Err("has an invalid host");
    }
    if port.is_empty() {
        return Err("has no port");
    }
    // `u16::from_str` would also take a sign (`+9092`).
    let digits = port.bytes().all(|byte| byte.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits && port > 0 => Ok(()),
        _ => Err("has a port that is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn kafka_sources_resolve_to_the_model() {
        let text = r#"
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
"#;
        let env =
            |name: &str| (name == "KAFKA_PASSWORD").then(|| "kafka-secret-password".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let events = &config.sources["events"];
        // One client per kafka source, shared by its probes.
        assert_eq!(events.max_connections, 1);
        let SourceKind::Kafka(kafka) = &events.kind else {
            panic!("events is not a kafka source");
        };
        assert_eq!(events.kind.key(), "kafka");
        assert_eq!(kafka.brokers, "kafka-1:9092,kafka-2:9093,[::1]:9094");
        let properties: Vec<(&str, &str)> = kafka
            .properties
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
            .collect();
        assert_eq!(
            properties,
            [
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "kafka-secret-password"),
                ("sasl.username", "lagbudget-reader"),
                ("security.protocol", "SASL_SSL"),
                ("socket.timeout.ms", "30000"),
            ]
        );
        // Credentials are scrubbed from every message; ordinary values are not (scrubbing
        // `SASL_SSL` or `kafka` everywhere would mangle messages), but none is ever printed.
        for (name, value) in properties {
            let scrubbed = config.secrets.scrub(value) == "***";
            assert_eq!(scrubbed, name == "sasl.password", "{name}");
        }
        assert!(!format!("{kafka:?}").contains("kafka-secret-password"));
        let SourceKind::Kafka(plain) = &config.sources["plain"].kind else {
            panic!("plain is not a kafka source");
        };
        assert_eq!(plain.brokers, "SSL://kafka-3:9093");
        assert!(plain.properties.is_empty());
    }

    #[test]
    fn kafka_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  events:
    kafka:
      brokers: "kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1"
      max_connections: 4
      properties:
        group.id: mine
        Isolation.Level: read_uncommitted
        sasl.password:
        security.protocol: [SSL]
  env-brokers: { kafka: { brokers: "${BROKERS}" } }
"#;
        let env = |name: &str| (name == "BROKERS").then(|| "kafka-secret:bad".to_owned());
        let expected = [
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 2 is empty; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 3 \"kafka-2\" has no port; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 4 \":9092\" has no host; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 5 \"kafka-3:x\" has a port that is not a number from 1 to 65535; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 6 \"kafka-4:0\" has a port that is not a number from 1 to 65535; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 7 \"::1:9092\" has an IPv6 address without brackets: write it as [::1]:9092; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "5:16: sources.events.kafka.brokers: invalid brokers \"kafka-1:9092,,kafka-2,:9092,kafka-3:x,kafka-4:0,::1:9092,[::1\": entry 8 \"[::1\" has an unclosed \"[\"; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
            "6:7: sources.events.kafka.max_connections: unknown key `max_connections`; valid keys: brokers, properties",
            "8:9: sources.events.kafka.properties[\"group.id\"]: property `group.id` is set by lagbudget: it reads with a group id of its own and never joins the measured group; name that group in the probe's `group`",
            "9:9: sources.events.kafka.properties[\"Isolation.Level\"]: property `Isolation.Level` is set by lagbudget: it always reads with read_committed",
            "10:9: sources.events.kafka.properties[\"sasl.password\"]: expected a string, found null",
            "11:28: sources.events.kafka.properties[\"security.protocol\"]: expected a string, found a list",
            "12:36: sources.env-brokers.kafka.brokers: invalid brokers \"${BROKERS}\": entry 1 has a port that is not a number from 1 to 65535; expected host:port entries separated by commas, such as kafka-1:9092,kafka-2:9092",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("kafka-secret")));
    }

    #[test]
    fn broker_entries_need_a_host_and_a_numeric_port() {
        for good in [
            "kafka-1:9092",
            "10.0.0.7:9093",
            "[::1]:9092",
            "[fe80::1%eth0]:9092",
            "SSL://kafka-1:9093",
            "broker_1.internal:65535",
        ] {
            assert_eq!(check_broker(good), Ok(()), "{good}");
        }
        let cases = [
            ("", "is empty"),
            ("kafka-1", "has no port"),
            ("kafka-1:", "has no port"),
            (":9092", "has no host"),
            ("kafka 1:9092", "has an invalid host"),
            ("kafka/1:9092", "has an invalid host"),
            (
                "kafka:port",
                "has a port that is not a number from 1 to 65535",
            ),
            ("kafka:0", "has a port that is not a number from 1 to 65535"),
            (
                "kafka:65536",
                "has a port that is not a number from 1 to 65535",
            ),
            (
                "kafka:+9092",
                "has a port that is not a number from 1 to 65535",
            ),
            (
                "::1:9092",
                "has an IPv6 address without brackets: write it as [::1]:9092",
            ),
            ("[::1", "has an unclosed \"[\""),
            ("[::1]", "has no port"),
            ("[::1]x:9092", "has text between \"]\" and the port"),
            ("[]:9092", "has no host"),
        ];
        for (entry, problem) in cases {
            assert_eq!(check_broker(entry), Err(problem), "{entry:?}");
        }
    }
}
