//! The `nats_consumer` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::nats::config::NatsSourceConfig;

/// A NATS JetStream consumer: lag is the age of its first unacknowledged message.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConsumer {
    pub source: String,
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
}

config_table! {
    /// A NATS JetStream consumer: lag is the age of its first unacknowledged message.
    ///
    /// That message is read by sequence from ack_floor.stream_seq + 1, through the stream's
    /// get-message API; backlog is num_pending plus num_ack_pending.
    pub(crate) struct NatsConsumerConfig = "nats_consumer" {
        /// Name of the nats source to read.
        source: SourceRef<NatsConsumer>,
        /// The JetStream stream.
        stream: NonEmpty<JetStreamName<Stream>>,
        /// The durable consumer whose progress is measured.
        consumer: NonEmpty<JetStreamName<Consumer>>,
    }
}

impl ReadsSource for NatsConsumer {
    const KIND: &'static str = <NatsConsumerConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <NatsSourceConfig as Table>::TABLE.id;
}

impl ProbeKindConfig for NatsConsumerConfig {
    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::NatsConsumer(NatsConsumer {
                source: self.source.as_ref()?.value.clone(),
                stream: self.stream.clone()?,
                consumer: self.consumer.clone()?,
            }))
        };
        single(kind())
    }
}

/// A JetStream stream or consumer name: the server rejects names with spaces, dots, `*`, `>`
/// or path separators, and a request subject built from one would be wrong, so say so here.
pub(crate) struct JetStreamName<W>(std::marker::PhantomData<W>);

/// What a [`JetStreamName`] names, for messages.
pub(crate) trait JetStreamObject {
    const WHAT: &'static str;
}

pub(crate) struct Stream;
pub(crate) struct Consumer;

impl JetStreamObject for Stream {
    const WHAT: &'static str = "stream";
}

impl JetStreamObject for Consumer {
    const WHAT: &'static str = "consumer";
}

impl<W: JetStreamObject> Scalar for JetStreamName<W> {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        let bad = name
            .value
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        let Some(c) = bad else {
            return Some(name.value.clone());
        };
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid {} name {}: JetStream names may not contain {c:?} (no whitespace, '.', \
                 '*', '>', '/' or '\\')",
                W::WHAT,
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn nats_consumer_probes_resolve_to_the_model() {
        let text = r#"
sources:
  bus: { nats: { url: "nats://reader:${NATS_PASSWORD}@nats-1:4222" } }
budgets:
  - name: mail
    max_lag: 30s
    probes:
      - name: invoices
        nats_consumer: { source: bus, stream: INVOICES, consumer: mailer }
"#;
        let env = |name: &str| (name == "NATS_PASSWORD").then(|| "nats-secret-password".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        assert_eq!(
            probes[0].kind,
            ProbeKind::NatsConsumer(NatsConsumer {
                source: "bus".to_owned(),
                stream: "INVOICES".to_owned(),
                consumer: "mailer".to_owned(),
            })
        );
        assert_eq!(probes[0].kind_key(), "nats_consumer");
        assert_eq!(probes[0].source_name(), "bus");
    }

    #[test]
    fn nats_consumer_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://cache-1" } }
  bus: { nats: { url: "nats://nats-1:4222" } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: bad-names
        nats_consumer: { source: bus, stream: "orders.new", consumer: "a b" }
      - name: nats-on-redis
        nats_consumer: { source: cache, stream: S, consumer: C }
"#;
        let expected = [
            "10:47: budgets[0].probes[0].nats_consumer.stream: invalid stream name \"orders.new\": JetStream names may not contain '.' (no whitespace, '.', '*', '>', '/' or '\\')",
            "10:71: budgets[0].probes[0].nats_consumer.consumer: invalid consumer name \"a b\": JetStream names may not contain ' ' (no whitespace, '.', '*', '>', '/' or '\\')",
            "12:34: budgets[0].probes[1].nats_consumer.source: source \"cache\" is a redis source; nats_consumer needs nats",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
