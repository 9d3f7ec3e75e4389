//! The `canary` kind's config: its tables, its model and what it checks.
//!
//! A canary names one place to write markers (`write`) and the views to read them back from
//! (`read`). Which keys of `write` and of each `read` are set decides how the marker travels
//! (a row, a key, a message, a request) and so which kind of source each may name; that is
//! checked at load like any source reference.

use std::time::Duration;

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope};
use crate::config::value::{Count, NonEmpty, PositiveDuration, Scalar};
use crate::model::ProbeKind;
use crate::probe::heartbeat::config::{default_instance, resolve_write_period};
use crate::probe::http_watermark::config::{HttpMethod, RequestPath};
use crate::probe::postgres_replica::config::PlainIdentifier;

/// One view of one canary: the model of one probe entry (a canary with several `read`s is
/// expanded into one entry per view, each labelled `replica` with the view's name).
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub write: MarkerWrite,
    pub read: MarkerRead,
    /// How often a marker is written.
    pub write_period: Duration,
    /// A marker not visible this long after it was written fails the view with `no_data`
    /// instead of a lag that keeps growing without bound.
    pub give_up: Duration,
    /// This daemon's name in every marker, so that several daemons never collide.
    pub instance: String,
    /// The schema of the table of markers lagbudget manages on SQL sources.
    pub schema: String,
    /// Read-your-writes: a read checks the newest marker written at least this long before it.
    pub read_your_writes: Option<Duration>,
    /// Monotonic reads: reads per run through the view's route.
    pub monotonic_reads: Option<u32>,
}

/// Where markers are written.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerWrite {
    pub source: String,
    pub target: WriteTarget,
}

/// How a marker is written. `Managed`: lagbudget's own marker, whose shape depends on the
/// source's kind (a row in `<schema>.canary`, a Redis key, a Kafka topic, a NATS subject, a
/// RabbitMQ queue, an item in the DynamoDB table `lagbudget-canary`).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteTarget {
    Managed,
    /// An SQL statement with `$instance`, `$probe` and `$seq` placeholders.
    Sql(String),
    /// Redis `SET` of the marker to this key (`$instance` replaced).
    RedisKey(String),
    /// Redis `XADD` to this stream (`$instance` replaced), capped.
    RedisStream(String),
    /// Kafka: produce the marker to this topic, keyed by instance.
    KafkaTopic(String),
    /// NATS: publish the marker on this subject (`$instance` replaced).
    NatsSubject(String),
    /// RabbitMQ: publish through the management API.
    Rabbitmq { exchange: String, routing_key: String },
    /// HTTP: a request to `path` (`$instance` and `$seq` replaced) with `body` (default: the
    /// marker as JSON).
    Http {
        path: String,
        method: HttpMethod,
        body: Option<String>,
    },
    /// DynamoDB: `PutItem` of this instance's item in `table`, keyed by the string attribute
    /// `key_attribute`.
    Dynamodb(DynamodbItem),
}

/// The table and key of a DynamoDB marker item, written or read.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamodbItem {
    pub table: String,
    /// The name of the table's partition key, a string attribute whose value in the marker
    /// item is `<instance>/<budget>/<probe>`.
    pub key_attribute: String,
}

/// The table a bare `{source}` on a dynamodb source writes to and reads from.
///
/// lagbudget never creates DynamoDB tables (a global table's replicas and capacity are its
/// owner's), but its own marker has a place on every other kind it can write to, and a bare
/// `write: {source: aws-eu}` with `read: [{source: aws-us}]` is the natural way to measure a
/// global table made for the canary. So a bare source means this documented name, with the
/// key `id`; the first write and `check --connect` say to create it when it is missing.
pub const DYNAMODB_MANAGED_TABLE: &str = "lagbudget-canary";
/// The key attribute when `key_attribute` is not set, and of the bare table.
pub const DYNAMODB_DEFAULT_KEY: &str = "id";

impl DynamodbItem {
    fn new(table: &str, key_attribute: Option<&String>) -> Self {
        DynamodbItem {
            table: table.to_owned(),
            key_attribute: key_attribute.map_or(DYNAMODB_DEFAULT_KEY, String::as_str).to_owned(),
        }
    }

    /// lagbudget's own item, for a bare `{source}`.
    pub fn managed() -> Self {
        DynamodbItem::new(DYNAMODB_MANAGED_TABLE, None)
    }
}

/// One view markers are read back from.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkerRead {
    /// The view's name: the `replica` label of its series.
    pub name: String,
    pub source: String,
    pub target: ReadTarget,
}

/// How a view is asked for the highest marker it shows.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadTarget {
    /// lagbudget's own marker where the writer's `Managed` target puts it, on this source.
    Managed,
    /// An SQL query returning the highest visible seq, with `$instance` and `$probe`
    /// placeholders.
    Sql(String),
    /// Redis `GET` of a key (`$instance` replaced): an integer, or JSON read at `pointer`
    /// (default `/seq`).
    RedisKey {
        key: String,
        pointer: Option<String>,
    },
    /// Redis `XREVRANGE` of a stream (`$instance` replaced): the newest markers of this
    /// instance.
    RedisStream(String),
    /// Kafka: a consumer of this topic in its own group.
    KafkaTopic { topic: String, group: String },
    /// NATS: a subscription to this subject (`$instance` replaced).
    NatsSubject(String),
    /// RabbitMQ: messages taken from this queue through the management API.
    RabbitmqQueue(String),
    /// HTTP: a request to `path` (`$instance` replaced), the seq read at `pointer`.
    Http {
        path: String,
        method: HttpMethod,
        body: Option<String>,
        pointer: String,
    },
    /// DynamoDB: an eventually consistent `GetItem` of this instance's item in a table.
    Dynamodb(DynamodbItem),
}

impl ReadTarget {
    /// Whether the view is a stream of markers that only shows those sent after the reader
    /// subscribed (a consumer, a subscription), rather than the latest state.
    pub fn sees_only_new_markers(&self) -> bool {
        matches!(
            self,
            ReadTarget::KafkaTopic { .. } | ReadTarget::NatsSubject(_) | ReadTarget::RabbitmqQueue(_)
        )
    }
}

const SQL: &[&str] = &["postgres", "mysql"];
const REDIS: &[&str] = &["redis"];
const KAFKA: &[&str] = &["kafka"];
const NATS: &[&str] = &["nats"];
const RABBITMQ: &[&str] = &["rabbitmq"];
const HTTP: &[&str] = &["http"];
const DYNAMODB: &[&str] = &["dynamodb"];
/// The kinds of source lagbudget can keep its own marker on.
const MANAGED: &[&str] = &[
    "postgres", "mysql", "redis", "kafka", "nats", "rabbitmq", "dynamodb",
];

/// Monotonic reads per run, at most.
pub const MAX_MONOTONIC_READS: u64 = 100;

config_table! {
    /// End to end: lagbudget writes a marker (instance, seq, time) at a source of truth every
    /// write period and reads it back from each view; lag is the age, on the daemon's clock,
    /// of the first marker a view does not show yet.
    ///
    /// An idle system reads 0 (the marker is the change), a view that stopped applying reads a
    /// growing lag, and a writer that fails makes the lag unknown after two write periods,
    /// never 0. Each view is measured on its own, labelled `replica` with its name.
    pub(crate) struct CanaryConfig = "canary" {
        /// Where markers are written: a bare `{source}` lets lagbudget keep its own marker (a
        /// row in <schema>.canary on postgres and mysql, a key on redis, a topic on kafka, a
        /// subject on nats, a queue on rabbitmq, an item of the table lagbudget-canary, which
        /// you create, on dynamodb); `sql`, `key`, `stream`, `topic`, `subject`,
        /// `routing_key`, `path` or `table` write where you say.
        write: CanaryWriteConfig,
        /// The views to read markers back from, each its own series.
        read: NonEmpty<Vec<CanaryReadConfig>>,
        /// How often a marker is written; at most max_lag / 2. Default: max_lag / 10, between
        /// 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// A marker not visible this long after it was written fails the view (reason
        /// no_data) rather than reporting a lag that grows without bound.
        give_up: PositiveDuration = "10m",
        /// This daemon's name in every marker, so that several daemons never collide; letters,
        /// digits, `.`, `_` and `-`. Default: the host name.
        instance: Option<NonEmpty<InstanceName>>,
        /// Schema of lagbudget's marker table on postgres and mysql sources, created if
        /// missing.
        schema: NonEmpty<PlainIdentifier> = "lagbudget",
        /// Read-your-writes: each run checks at every view that the newest marker written at
        /// least `after` before the read is visible.
        read_your_writes: Option<ReadYourWritesConfig>,
        /// Monotonic reads: each run reads each view `reads` times through the same route; a
        /// marker older than one already seen through that route is a violation.
        monotonic: Option<MonotonicConfig>,
    }
}

config_table! {
    /// Where a canary writes its markers.
    pub(crate) struct CanaryWriteConfig = "canary_write" {
        /// The source written to.
        source: Spanned<NonEmpty<String>>,
        /// postgres or mysql: the statement that writes a marker, with the placeholders
        /// $instance, $probe and $seq, such as an upsert into a table your pipeline copies.
        sql: Option<NonEmpty<String>>,
        /// redis: the key SET to the marker as JSON ($instance replaced).
        key: Option<NonEmpty<String>>,
        /// redis: the stream the marker is XADDed to, capped at about 1000 entries
        /// ($instance replaced).
        stream: Option<NonEmpty<String>>,
        /// kafka: the topic the marker is produced to, keyed by instance.
        topic: Option<NonEmpty<String>>,
        /// nats: the subject the marker is published on ($instance replaced).
        subject: Option<NonEmpty<String>>,
        /// rabbitmq: the routing key the marker is published with, through the management API.
        routing_key: Option<NonEmpty<String>>,
        /// rabbitmq: the exchange published to. Default: the default exchange.
        exchange: Option<String>,
        /// http: the path requested for each marker ($instance and $seq replaced).
        path: Option<NonEmpty<RequestPath>>,
        /// http: the request method.
        method: Option<HttpMethod>,
        /// http: the request body ($instance, $probe, $seq and $written_at replaced). Default:
        /// the marker as JSON for POST, PUT and PATCH; none for GET.
        body: Option<String>,
        /// dynamodb: the table this instance's marker item is put in (PutItem), in the
        /// source's region; it must exist, lagbudget creates no tables.
        table: Option<DynamodbTableName>,
        /// dynamodb: the table's partition key, a string attribute; its value is
        /// <instance>/<budget>/<probe>. Default: id.
        key_attribute: Option<NonEmpty<String>>,
    }
}

config_table! {
    /// A view a canary reads its markers back from.
    pub(crate) struct CanaryReadConfig = "canary_read" {
        /// The view's name, the `replica` label of its series. Default: the source's name.
        name: Option<Spanned<crate::config::value::Name>>,
        /// The source read from.
        source: Spanned<NonEmpty<String>>,
        /// postgres or mysql: a query returning the highest visible seq of this daemon's
        /// markers, with the placeholders $instance and $probe.
        query: Option<NonEmpty<String>>,
        /// redis: the key holding the marker, an integer or JSON ($instance replaced).
        key: Option<NonEmpty<String>>,
        /// redis: the stream holding markers ($instance replaced).
        stream: Option<NonEmpty<String>>,
        /// kafka: the topic carrying markers, read by a consumer of its own group.
        topic: Option<NonEmpty<String>>,
        /// kafka: the reader's consumer group, never the measured one. Default:
        /// lagbudget-canary-<instance>.
        group: Option<NonEmpty<String>>,
        /// nats: the subject carrying markers ($instance replaced).
        subject: Option<NonEmpty<String>>,
        /// rabbitmq: the queue markers arrive in; the reader takes them off it.
        queue: Option<NonEmpty<String>>,
        /// http: the path of the view ($instance replaced).
        path: Option<NonEmpty<RequestPath>>,
        /// http: the request method.
        method: Option<HttpMethod>,
        /// http: the request body ($instance replaced).
        body: Option<String>,
        /// JSON pointer to the seq in an http answer (required with path) or in a redis
        /// key's JSON value (default /seq).
        pointer: Option<String>,
        /// dynamodb: the table the marker item is read from (an eventually consistent GetItem)
        /// in the source's region, such as a global table's replica there.
        table: Option<DynamodbTableName>,
        /// dynamodb: the table's partition key, a string attribute. Default: id.
        key_attribute: Option<NonEmpty<String>>,
    }
}

config_table! {
    /// A read-your-writes check at every view.
    pub(crate) struct ReadYourWritesConfig = "read_your_writes" {
        /// How long after a write a read must show it.
        after: PositiveDuration,
    }
}

config_table! {
    /// Monotonic reads through each view's route.
    pub(crate) struct MonotonicConfig = "monotonic" {
        /// Reads per run through the route, 2 to 100.
        reads: Count<2, MAX_MONOTONIC_READS>,
    }
}

/// A daemon's name in markers: safe in keys, subjects, paths and queue names.
pub(crate) struct InstanceName;

impl Scalar for InstanceName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        if is_instance_name(&name.value) {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid instance {}: use letters, digits, `.`, `_` and `-`, at most 64 \
                 characters",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// A DynamoDB table name: 3 to 255 letters, digits, `_`, `-` and `.` (what AWS accepts), so a
/// typo is a load error rather than a failing write.
pub(crate) struct DynamodbTableName;

impl Scalar for DynamodbTableName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        if is_dynamodb_table_name(&name.value) {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid DynamoDB table name {}: use 3 to 255 letters, digits, `_`, `-` and `.`",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        serde_json::json!({
            "type": "string",
            "pattern": "^[A-Za-z0-9_.-]{3,255}$",
        })
    }
}

fn is_dynamodb_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_instance_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The host name made safe as an instance name.
fn default_instance_name() -> String {
    let name: String = default_instance()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if is_instance_name(&name) {
        name
    } else {
        "lagbudget".to_owned()
    }
}

/// The target keys a table has written, by key name, with the source kinds each needs.
fn targets_written<'a>(
    candidates: &[(Option<crate::config::syntax::Span>, &'a str, &'static [&'static str])],
) -> Vec<(&'a str, &'static [&'static str])> {
    candidates
        .iter()
        .filter(|(span, _, _)| span.is_some())
        .map(|&(_, key, needs)| (key, needs))
        .collect()
}

impl CanaryWriteConfig {
    /// The target keys written, with the source kinds each needs; none: lagbudget keeps its
    /// own marker.
    fn targets(&self) -> Vec<(&'static str, &'static [&'static str])> {
        targets_written(&[
            (written!(self.sql), "sql", SQL),
            (written!(self.key), "key", REDIS),
            (written!(self.stream), "stream", REDIS),
            (written!(self.topic), "topic", KAFKA),
            (written!(self.subject), "subject", NATS),
            (written!(self.routing_key), "routing_key", RABBITMQ),
            (written!(self.path), "path", HTTP),
            (written!(self.table), "table", DYNAMODB),
        ])
    }

    fn is_bare(&self) -> bool {
        self.targets().is_empty()
    }

    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let targets = self.targets();
        let mut ok = one_target(ctx, &self.keys, &targets, "write");
        let needs = targets.first().map_or(MANAGED, |(_, needs)| needs);
        if let Some(source) = self.source_text() {
            ctx.refer(source, target_label(&targets, "canary write"), needs);
        }
        let path = written!(self.path).is_some();
        for (span, key, message) in [
            (
                written!(self.method),
                "method",
                "`method` applies only to an http write (`path`)",
            ),
            (
                written!(self.body),
                "body",
                "`body` applies only to an http write (`path`)",
            ),
        ] {
            if let (Some(span), false) = (span, path) {
                ctx.error(span, &self.keys.path_of(key), message);
                ok = false;
            }
        }
        if let (Some(span), None) = (written!(self.key_attribute), written!(self.table)) {
            ctx.error(
                span,
                &self.keys.path_of("key_attribute"),
                "`key_attribute` applies only to a dynamodb write (`table`)",
            );
            ok = false;
        }
        ok &= free_key_attribute(ctx, &self.keys, self.key_attribute.as_ref());
        if let (Some(span), None) = (written!(self.exchange), written!(self.routing_key)) {
            ctx.error(
                span,
                &self.keys.path_of("exchange"),
                "`exchange` needs `routing_key`: a rabbitmq write publishes with a routing key",
            );
            ok = false;
        }
        ok
    }

    fn source_text(&self) -> Option<Text> {
        self.source.clone()
    }

    fn target(&self) -> WriteTarget {
        if let Some(sql) = &self.sql {
            WriteTarget::Sql(sql.clone())
        } else if let Some(key) = &self.key {
            WriteTarget::RedisKey(key.clone())
        } else if let Some(stream) = &self.stream {
            WriteTarget::RedisStream(stream.clone())
        } else if let Some(topic) = &self.topic {
            WriteTarget::KafkaTopic(topic.clone())
        } else if let Some(subject) = &self.subject {
            WriteTarget::NatsSubject(subject.clone())
        } else if let Some(routing_key) = &self.routing_key {
            WriteTarget::Rabbitmq {
                exchange: self.exchange.clone().unwrap_or_default(),
                routing_key: routing_key.clone(),
            }
        } else if let Some(path) = &self.path {
            WriteTarget::Http {
                path: path.clone(),
                method: self.method.unwrap_or(HttpMethod::Post),
                body: self.body.clone(),
            }
        } else if let Some(table) = &self.table {
            WriteTarget::Dynamodb(DynamodbItem::new(table, self.key_attribute.as_ref()))
        } else {
            WriteTarget::Managed
        }
    }
}

impl CanaryReadConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let targets = self.targets();
        let mut ok = one_target(ctx, &self.keys, &targets, "read");
        let needs = targets.first().map_or(MANAGED, |(_, needs)| needs);
        if let Some(source) = self.source_text() {
            ctx.refer(source, target_label(&targets, "canary read"), needs);
        }
        let path = written!(self.path).is_some();
        let key = written!(self.key).is_some();
        let mut only = |span: Option<crate::config::syntax::Span>, name: &str, ok_here: bool, message: &str| {
            if let (Some(span), false) = (span, ok_here) {
                ctx.error(span, &self.keys.path_of(name), message);
                ok = false;
            }
        };
        only(
            written!(self.method),
            "method",
            path,
            "`method` applies only to an http read (`path`)",
        );
        only(
            written!(self.body),
            "body",
            path,
            "`body` applies only to an http read (`path`)",
        );
        only(
            written!(self.group),
            "group",
            written!(self.topic).is_some(),
            "`group` applies only to a kafka read (`topic`)",
        );
        only(
            written!(self.key_attribute),
            "key_attribute",
            written!(self.table).is_some(),
            "`key_attribute` applies only to a dynamodb read (`table`)",
        );
        only(
            written!(self.pointer),
            "pointer",
            path || key,
            "`pointer` applies only to an http read (`path`) or a redis `key` holding JSON",
        );
        ok &= free_key_attribute(ctx, &self.keys, self.key_attribute.as_ref());
        if path && written!(self.pointer).is_none() {
            ctx.error(
                self.keys.span,
                &self.keys.path,
                "missing `pointer`: the JSON pointer to the seq in the view's answer, such as \
                 /seq",
            );
            ok = false;
        }
        for pointer in self.pointer.iter() {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                let span = written!(self.pointer).unwrap_or(self.keys.span);
                ctx.error(
                    span,
                    &self.keys.path_of("pointer"),
                    format!("pointer {pointer:?} must be empty or start with `/` (RFC 6901)"),
                );
                ok = false;
            }
        }
        ok
    }

    fn source_text(&self) -> Option<Text> {
        self.source.clone()
    }

    /// The key that makes this view a stream of messages (a consumer or a subscription), if
    /// one does.
    /// The target keys written, with the source kinds each needs; none: the read looks for
    /// lagbudget's own marker.
    fn targets(&self) -> Vec<(&'static str, &'static [&'static str])> {
        targets_written(&[
            (written!(self.query), "query", SQL),
            (written!(self.key), "key", REDIS),
            (written!(self.stream), "stream", REDIS),
            (written!(self.topic), "topic", KAFKA),
            (written!(self.subject), "subject", NATS),
            (written!(self.queue), "queue", RABBITMQ),
            (written!(self.path), "path", HTTP),
            (written!(self.table), "table", DYNAMODB),
        ])
    }

    fn is_bare(&self) -> bool {
        self.targets().is_empty()
    }

    fn message_key(&self) -> Option<&'static str> {
        [
            (written!(self.topic), "topic"),
            (written!(self.subject), "subject"),
            (written!(self.queue), "queue"),
        ]
        .into_iter()
        .find_map(|(span, key)| span.map(|_| key))
    }

    /// The view's name: its own, or its source's.
    fn view_name(&self) -> Option<&str> {
        self.name
            .as_ref()
            .map(|name| name.value.as_str())
            .or(self.source.as_ref().map(|source| source.value.as_str()))
    }

    fn target(&self, instance: &str) -> ReadTarget {
        if let Some(query) = &self.query {
            ReadTarget::Sql(query.clone())
        } else if let Some(key) = &self.key {
            ReadTarget::RedisKey {
                key: key.clone(),
                pointer: self.pointer.clone(),
            }
        } else if let Some(stream) = &self.stream {
            ReadTarget::RedisStream(stream.clone())
        } else if let Some(topic) = &self.topic {
            ReadTarget::KafkaTopic {
                topic: topic.clone(),
                group: self
                    .group
                    .clone()
                    .unwrap_or_else(|| format!("lagbudget-canary-{instance}")),
            }
        } else if let Some(subject) = &self.subject {
            ReadTarget::NatsSubject(subject.clone())
        } else if let Some(queue) = &self.queue {
            ReadTarget::RabbitmqQueue(queue.clone())
        } else if let Some(path) = &self.path {
            ReadTarget::Http {
                path: path.clone(),
                method: self.method.unwrap_or(HttpMethod::Get),
                body: self.body.clone(),
                pointer: self.pointer.clone().unwrap_or_default(),
            }
        } else if let Some(table) = &self.table {
            ReadTarget::Dynamodb(DynamodbItem::new(table, self.key_attribute.as_ref()))
        } else {
            ReadTarget::Managed
        }
    }
}

/// Reports a DynamoDB key attribute that is one of the marker item's other attributes (the
/// marker would overwrite its own key); true when it is free.
fn free_key_attribute(
    ctx: &mut Ctx<'_>,
    keys: &crate::config::table::Keys,
    key_attribute: Option<&String>,
) -> bool {
    let Some(name) = key_attribute else {
        return true;
    };
    if super::dynamodb::is_free_key_attribute(name) {
        return true;
    }
    ctx.error(
        keys.span_of("key_attribute").unwrap_or(keys.span),
        &keys.path_of("key_attribute"),
        format!(
            "key_attribute {name:?} is one of the marker item's own attributes (instance, \
             probe, seq, written_at): name the table's partition key something else"
        ),
    );
    false
}

/// Reports more than one target key in one table; true when there is at most one.
fn one_target(
    ctx: &mut Ctx<'_>,
    keys: &crate::config::table::Keys,
    targets: &[(&str, &[&str])],
    what: &str,
) -> bool {
    if targets.len() <= 1 {
        return true;
    }
    let names: Vec<String> = targets.iter().map(|(key, _)| format!("`{key}`")).collect();
    ctx.error(
        keys.span,
        &keys.path,
        format!(
            "a canary {what} sets one of sql/query, key, stream, topic, subject, \
             routing_key/queue, path and table; this one sets {}",
            names.join(" and ")
        ),
    );
    false
}

/// The `by` of a source reference, naming the key that decided the source kind.
fn target_label(targets: &[(&str, &[&str])], bare: &'static str) -> &'static str {
    let Some((key, _)) = targets.first() else {
        return if bare == "canary write" {
            "a canary write of lagbudget's own marker"
        } else {
            "a canary read of lagbudget's own marker"
        };
    };
    let write = bare == "canary write";
    match (*key, write) {
        ("sql", _) => "a canary write with `sql`",
        ("query", _) => "a canary read with `query`",
        ("key", true) => "a canary write with `key`",
        ("key", false) => "a canary read with `key`",
        ("stream", true) => "a canary write with `stream`",
        ("stream", false) => "a canary read with `stream`",
        ("topic", true) => "a canary write with `topic`",
        ("topic", false) => "a canary read with `topic`",
        ("subject", true) => "a canary write with `subject`",
        ("subject", false) => "a canary read with `subject`",
        ("routing_key", _) => "a canary write with `routing_key`",
        ("queue", _) => "a canary read with `queue`",
        ("table", true) => "a canary write with `table`",
        ("table", false) => "a canary read with `table`",
        (_, true) => "a canary write with `path`",
        (_, false) => "a canary read with `path`",
    }
}

impl ProbeKindConfig for CanaryConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        if let Some(write) = &self.write {
            ok &= write.check(ctx);
        }
        let mut seen: Vec<String> = Vec::new();
        let mut queues: Vec<(String, String)> = Vec::new();
        let write_is_bare = self.write.as_ref().map(CanaryWriteConfig::is_bare);
        for read in self.read.iter().flatten() {
            ok &= read.check(ctx);
            // lagbudget's own marker is where a bare write puts it; a write to the user's
            // table, key or topic never reaches it, and the view would read as stuck.
            if write_is_bare == Some(false) && read.is_bare() {
                ctx.error(
                    read.keys.span,
                    &read.keys.path,
                    "a bare `{source}` read looks for lagbudget's own marker, which only a bare \
                     `write: {source}` puts there; name what this view shows (query, key, \
                     stream, topic, subject, queue, path or table)",
                );
                ok = false;
            }
            // A queue hands each message to one reader: two views of one queue would each see
            // about half the markers, and both read as behind.
            if let (Some(source), Some(queue)) = (&read.source, &read.queue) {
                let taken = (source.value.clone(), queue.clone());
                if queues.contains(&taken) {
                    ctx.error(
                        written!(read.queue).unwrap_or(read.keys.span),
                        &read.keys.path_of("queue"),
                        format!(
                            "queue {queue:?} of source {:?} is read by another view of this \
                             canary: a queue hands each marker to one reader, so read it once",
                            source.value
                        ),
                    );
                    ok = false;
                } else {
                    queues.push(taken);
                }
            }
            if let Some(name) = read.view_name() {
                if seen.iter().any(|s| s == name) {
                    ctx.error(
                        read.keys.span,
                        &read.keys.path,
                        format!(
                            "duplicate view {name:?}: give each read of one source its own \
                             `name`, the `replica` label of its series"
                        ),
                    );
                    ok = false;
                } else {
                    seen.push(name.to_owned());
                }
            }
        }
        if let Some(monotonic) = &self.monotonic {
            // A consumer only ever takes newer messages: its reads cannot go back, so counting
            // them as monotonic reads would report a route that is always fine.
            let streams: Vec<String> = self
                .read
                .iter()
                .flatten()
                .filter_map(|read| {
                    let key = read.message_key()?;
                    Some(format!("{} (`{key}`)", read.view_name().unwrap_or("?")))
                })
                .collect();
            if !streams.is_empty() {
                let span = written!(self.monotonic).unwrap_or(monotonic.keys.span);
                ctx.error(
                    span,
                    &monotonic.keys.path,
                    format!(
                        "`monotonic` reads each view several times through its route, which \
                         needs views that answer with what they show now (query, key, stream, \
                         path, table); {} only receives markers newer than those it has, so its \
                         reads cannot go back: measure it in a canary without `monotonic`",
                        streams.join(" and ")
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let (Some(write), Some(reads)) = (&self.write, &self.read) else {
            return Vec::new();
        };
        let Some(write_source) = write.source.clone() else {
            return Vec::new();
        };
        let instance = self.instance.clone().unwrap_or_else(default_instance_name);
        let write = MarkerWrite {
            source: write_source.value,
            target: write.target(),
        };
        let write_period = resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag);
        if let Some(ryw) = &self.read_your_writes {
            if let Some(after) = ryw.after.filter(|&after| after < write_period) {
                let period = match &self.write_period {
                    Some(period) => format!("write_period {}", period.shown()),
                    None => format!(
                        "the write period {} (max_lag / 10, from 100ms to 1s, when \
                         write_period is not set)",
                        crate::model::format_duration(write_period)
                    ),
                };
                ctx.error(
                    written!(ryw.after).unwrap_or(ryw.keys.span),
                    &ryw.keys.path_of("after"),
                    format!(
                        "read_your_writes.after {} is shorter than {period}: a read would \
                         often find no marker written that long before it to check",
                        crate::model::format_duration(after)
                    ),
                );
                return Vec::new();
            }
        }
        let monotonic_reads = match &self.monotonic {
            Some(monotonic) => match monotonic.reads {
                Some(reads) => Some(u32::try_from(reads).unwrap_or(u32::MAX)),
                None => return Vec::new(),
            },
            None => None,
        };
        reads
            .iter()
            .filter_map(|read| {
                let name = read.view_name()?.to_owned();
                let canary = Canary {
                    write: write.clone(),
                    read: MarkerRead {
                        name: name.clone(),
                        source: read.source.clone()?.value,
                        target: read.target(&instance),
                    },
                    write_period,
                    give_up: self.give_up?,
                    instance: instance.clone(),
                    schema: self.schema.clone()?,
                    read_your_writes: self.read_your_writes.as_ref().and_then(|ryw| ryw.after),
                    monotonic_reads,
                };
                Some(ProbeEntry {
                    kind: ProbeKind::Canary(canary),
                    replica: Some(name),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    const CANARIES: &str = r#"
sources:
  orders-db: { postgres: { dsn: "host=db user=lagbudget dbname=orders" } }
  orders-replica: { postgres: { dsn: "host=replica user=lagbudget dbname=orders" } }
  cache: { redis: { url: "redis://cache:6379" } }
  events: { kafka: { brokers: "kafka-1:9092" } }
  order-api: { http: { url: "http://order-api:8080" } }
budgets:
  - name: order-visible
    max_lag: 30s
    max_monotonic_violations: 1%
    probes:
      - name: visible
        canary:
          write: { source: orders-db }
          read:
            - { source: orders-replica }
            - { name: order-api, source: order-api, path: "/canary/$instance", pointer: /seq }
          write_period: 1s
          read_your_writes: { after: 2s }
          monotonic: { reads: 3 }
          instance: host-1
      - name: strict
        max_monotonic_violations: 0%
        canary:
          write: { source: cache, key: "canary:$instance" }
          read:
            - { name: cache-replica, source: cache, key: "canary:$instance", pointer: /seq }
          monotonic: { reads: 2 }
      - name: events
        canary:
          write: { source: events, topic: lagbudget.canary }
          read:
            - { source: events, topic: lagbudget.canary }
          read_your_writes: { after: 5s }
"#;

    fn canary(probe: &crate::model::Probe) -> &Canary {
        match &probe.kind {
            ProbeKind::Canary(canary) => canary,
            other => panic!("not a canary: {other:?}"),
        }
    }

    #[test]
    fn each_view_is_a_probe_labelled_with_its_name() {
        let config = load_text(CANARIES, &|_| None).unwrap_or_else(|e| panic!("errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        let views: Vec<(&str, Option<&str>)> = probes
            .iter()
            .map(|p| (p.name.as_str(), p.replica.as_deref()))
            .collect();
        assert_eq!(
            views,
            [
                ("visible", Some("orders-replica")),
                ("visible", Some("order-api")),
                ("strict", Some("cache-replica")),
                ("events", Some("events")),
            ]
        );
        let replica = canary(&probes[0]);
        assert_eq!(replica.write.target, WriteTarget::Managed);
        assert_eq!(replica.read.target, ReadTarget::Managed);
        assert_eq!(replica.instance, "host-1");
        assert_eq!(replica.schema, "lagbudget");
        assert_eq!(replica.give_up, Duration::from_secs(600));
        assert_eq!(replica.read_your_writes, Some(Duration::from_secs(2)));
        assert_eq!(replica.monotonic_reads, Some(3));
        assert_eq!(
            canary(&probes[1]).read.target,
            ReadTarget::Http {
                path: "/canary/$instance".into(),
                method: HttpMethod::Get,
                body: None,
                pointer: "/seq".into(),
            }
        );
        let events = canary(&probes[3]);
        assert_eq!(
            events.read.target,
            ReadTarget::KafkaTopic {
                topic: "lagbudget.canary".into(),
                group: format!("lagbudget-canary-{}", events.instance),
            }
        );
        assert!(events.read.target.sees_only_new_markers());
        // write_period defaults to max_lag / 10, at most 1s.
        assert_eq!(events.write_period, Duration::from_secs(1));
    }

    #[test]
    fn the_violation_limit_is_the_probes_or_its_budgets_and_only_where_reads_are_monotonic() {
        let config = load_text(CANARIES, &|_| None).unwrap_or_else(|e| panic!("errors:\n{e}"));
        let limits: Vec<Option<f64>> = config.budgets[0]
            .probes
            .iter()
            .map(|p| p.max_monotonic_violations)
            .collect();
        assert_eq!(limits, [Some(0.01), Some(0.01), Some(0.0), None]);
    }

    #[test]
    fn a_monotonic_canary_with_a_consumer_view_is_rejected_at_monotonic() {
        let text = r#"
sources:
  bus: { nats: { url: "nats://bus:4222" } }
budgets:
  - name: b
    max_lag: 30s
    probes:
      - name: p
        canary:
          write: { source: bus, subject: "lagbudget.canary.$instance" }
          read:
            - { name: sub, source: bus, subject: "lagbudget.canary.$instance" }
          monotonic: { reads: 2 }
"#;
        let errors = errors_of(text, &|_| None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("13:11: budgets[0].probes[0].canary.monotonic: ")
                && errors[0].contains("sub (`subject`)"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bare_read_needs_a_bare_write() {
        let text = r#"
sources:
  db: { postgres: { dsn: "host=db" } }
  api: { http: { url: "http://api:8080" } }
budgets:
  - name: b
    max_lag: 30s
    probes:
      - name: p
        canary:
          write: { source: db, sql: "UPDATE t SET seq = $seq WHERE who = $instance" }
          read:
            - { source: db }
            - { name: api, source: api, path: "canary/$instance", pointer: /seq }
"#;
        let errors = errors_of(text, &|_| None);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("13:15: budgets[0].probes[0].canary.read[0]: a bare `{source}` read"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("14:47: budgets[0].probes[0].canary.read[1].path: invalid path"),
            "{errors:?}"
        );
    }

    const DYNAMODB_CANARIES: &str = r#"
sources:
  aws-eu: { dynamodb: { region: eu-west-1 } }
  aws-us: { dynamodb: { region: us-east-1 } }
budgets:
  - name: global
    max_lag: 30s
    probes:
      - name: visible
        canary:
          write: { source: aws-eu, table: orders-canary, key_attribute: pk }
          read:
            - { name: us, source: aws-us, table: orders-canary, key_attribute: pk }
            - { name: eu, source: aws-eu, table: orders-canary }
      - name: bare
        canary:
          write: { source: aws-eu }
          read: [ { source: aws-us } ]
"#;

    #[test]
    fn a_dynamodb_canary_names_its_table_or_uses_lagbudgets() {
        let config =
            load_text(DYNAMODB_CANARIES, &|_| None).unwrap_or_else(|e| panic!("errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        let item = |table: &str, key: &str| DynamodbItem {
            table: table.into(),
            key_attribute: key.into(),
        };
        let us = canary(&probes[0]);
        assert_eq!(
            us.write.target,
            WriteTarget::Dynamodb(item("orders-canary", "pk"))
        );
        assert_eq!(us.read.target, ReadTarget::Dynamodb(item("orders-canary", "pk")));
        assert!(!us.read.target.sees_only_new_markers());
        // key_attribute defaults to `id`.
        assert_eq!(
            canary(&probes[1]).read.target,
            ReadTarget::Dynamodb(item("orders-canary", "id"))
        );
        let bare = canary(&probes[2]);
        assert_eq!(bare.write.target, WriteTarget::Managed);
        assert_eq!(bare.read.target, ReadTarget::Managed);
        assert_eq!(DynamodbItem::managed(), item("lagbudget-canary", "id"));
    }

    #[test]
    fn dynamodb_targets_are_checked_at_load_with_their_paths() {
        let text = r#"
sources:
  aws: { dynamodb: { region: eu-west-1 } }
  cache: { redis: { url: "redis://cache:6379" } }
budgets:
  - name: b
    max_lag: 30s
    probes:
      - name: p
        canary:
          write: { source: aws, table: "t", key_attribute: seq }
          read:
            - { name: r1, source: cache, table: lagbudget-canary }
            - { name: r2, source: aws, key_attribute: pk }
            - { name: r3, source: aws, table: lagbudget-canary, key: k }
"#;
        let errors = errors_of(text, &|_| None);
        let expected = [
            "11:40: budgets[0].probes[0].canary.write.table: invalid DynamoDB table name \"t\"",
            "11:45: budgets[0].probes[0].canary.write.key_attribute: key_attribute \"seq\" is one \
             of the marker item's own attributes",
            "13:35: budgets[0].probes[0].canary.read[0].source: source \"cache\" is a redis \
             source; a canary read with `table` needs dynamodb",
            // The bare-read rule holds for dynamodb too: the write names a table.
            "14:15: budgets[0].probes[0].canary.read[1]: a bare `{source}` read",
            "14:40: budgets[0].probes[0].canary.read[1].key_attribute: `key_attribute` applies \
             only to a dynamodb read (`table`)",
            "15:15: budgets[0].probes[0].canary.read[2]: a canary read sets one of sql/query, key, \
             stream, topic, subject, routing_key/queue, path and table; this one sets `key` and \
             `table`",
            "15:35: budgets[0].probes[0].canary.read[2].source: source \"aws\" is a dynamodb \
             source; a canary read with `key` needs redis",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.starts_with(expected), "{error}\n  does not start with\n{expected}");
        }
    }
}
