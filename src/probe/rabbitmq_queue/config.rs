//! The `rabbitmq_queue` kind's config: its table, its model and what it checks.

use crate::config::decode::{Ctx, Spanned};
use crate::config::table::{Table, config_table};
use crate::config::tables::{BacklogOnly, ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{NonEmpty, ReadsSource, SourceRef};
use crate::model::ProbeKind;
use crate::probe::rabbitmq::config::RabbitmqSourceConfig;

/// One RabbitMQ queue, read through the management API: its depth, consumers and the age of
/// its head message.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitmqQueue {
    pub source: String,
    pub queue: String,
    pub vhost: String,
    /// Whether the queue's messages carry the AMQP `timestamp` property. `false` declares a
    /// backlog-only probe, which validation keeps away from `max_lag`.
    pub timestamps: bool,
}

config_table! {
    /// A RabbitMQ queue: depth, consumers and the age of its head message.
    ///
    /// Read through the management API: backlog is its depth (ready and unacknowledged
    /// messages); lag is the age of its head message, from the message's AMQP `timestamp`
    /// property (whole seconds), 0 when the queue is empty. Only classic queues report a head
    /// timestamp; for other queues, or messages without timestamps, use max_backlog
    /// (dead-letter queues: max_backlog: 0). The management statistics behind every figure
    /// refresh every few seconds (collect_statistics_interval).
    pub(crate) struct RabbitmqQueueConfig = "rabbitmq_queue" {
        /// Name of the rabbitmq source to read.
        source: SourceRef<RabbitmqQueue>,
        /// The queue's name.
        queue: NonEmpty<String>,
        /// The queue's virtual host.
        vhost: NonEmpty<String> = "/",
        /// Whether the queue's messages carry the AMQP timestamp property. `false`: backlog
        /// only; max_lag is then rejected.
        timestamps: Spanned<bool> = true,
    }
}

impl ReadsSource for RabbitmqQueue {
    const KIND: &'static str = <RabbitmqQueueConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <RabbitmqSourceConfig as Table>::TABLE.id;
}

impl ProbeKindConfig for RabbitmqQueueConfig {
    fn backlog_only(&self) -> Option<BacklogOnly<'_>> {
        let flag = self.timestamps.as_ref().filter(|flag| !flag.value)?;
        Some(BacklogOnly {
            flag,
            key: "timestamps",
            why: "with `timestamps: false` messages carry no time",
        })
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::RabbitmqQueue(RabbitmqQueue {
                source: self.source.as_ref()?.value.clone(),
                queue: self.queue.clone()?,
                vhost: self.vhost.clone()?,
                timestamps: self.timestamps.as_ref()?.value,
            }))
        };
        single(kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn rabbitmq_queue_probes_resolve_to_the_model() {
        let text = r#"
sources:
  broker:
    rabbitmq: { url: "https://rabbit.example.com/mgmt/", username: lagbudget, password: "${RABBIT_PASSWORD}" }
  local: { rabbitmq: { url: "http://127.0.0.1:15672", username: guest, password: guest, max_connections: 2 } }
budgets:
  - name: mails
    max_backlog: 0
    probes:
      - name: queue
        max_lag: 1m
        rabbitmq_queue: { source: broker, queue: order-emails }
      - name: dead-letters
        rabbitmq_queue: { source: local, queue: "mails.dlq", vhost: shop, timestamps: false }
"#;
        let env = |name: &str| (name == "RABBIT_PASSWORD").then(|| "rabbit-secret-pw".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        assert_eq!(
            probes[0].kind,
            ProbeKind::RabbitmqQueue(RabbitmqQueue {
                source: "broker".to_owned(),
                queue: "order-emails".to_owned(),
                vhost: "/".to_owned(),
                timestamps: true,
            })
        );
        assert_eq!(probes[0].kind_key(), "rabbitmq_queue");
        assert_eq!(probes[1].source_name(), "local");
        assert_eq!(probes[1].max_lag, None);
        assert_eq!(probes[1].max_backlog, Some(0));
        assert_eq!(
            probes[1].kind,
            ProbeKind::RabbitmqQueue(RabbitmqQueue {
                source: "local".to_owned(),
                queue: "mails.dlq".to_owned(),
                vhost: "shop".to_owned(),
                timestamps: false,
            })
        );
    }

    #[test]
    fn rabbitmq_queue_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  a: { rabbitmq: { url: "http://rabbit-a", username: u, password: p } }
  b: { rabbitmq: { url: "http://rabbit-b", username: u, password: p } }
  c: { rabbitmq: { url: "http://rabbit-c", username: u, password: p } }
  d: { rabbitmq: { url: "http://rabbit-d", username: u, password: p } }
  e: { rabbitmq: { url: "http://rabbit-e", username: u, password: p } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: q
        rabbitmq_queue: { source: a, queue: "", timestamps: "no" }
"#;
        let expected = [
            "13:45: budgets[0].probes[0].rabbitmq_queue.queue: must not be empty",
            "13:61: budgets[0].probes[0].rabbitmq_queue.timestamps: expected true or false, found the string \"no\"",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
