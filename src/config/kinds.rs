//! The source and probe kinds' tables, decoding and checks.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::time::Duration;

use serde_json::Value;

use super::decode::{Ctx, Spanned, Text};
use super::grammar::{
    SLOT_RULE, TOPIC_RULE, check_broker, is_valid_slot_name, is_valid_topic_name, regex_problem,
};
use super::schema::Defs;
use super::syntax::Node;
use super::table::{config_table, written};
use super::tables::{
    BacklogOnly, ProbeEntry, ProbeKindConfig, ProbeScope, SourceKindConfig, single,
};
use super::value::{
    Choice, ConfigValue, Count, NonEmpty, PositiveDuration, ReadsSource, Reserved, Scalar,
    SecretString, SourceRef, StringMap,
};
use crate::model::{
    HeartbeatSettings, KafkaConsumerGroup, KafkaSource, MysqlReplica, MysqlSource, NatsSource,
    NoCommitPolicy, PostgresLogical, PostgresReplica, PostgresSource, ProbeKind, RabbitmqQueue,
    RabbitmqSource, RedisSource, RedisStreamGroup, ReplicaMethod, Secret, SourceKind, SqlWatermark,
    TopicSelector, WatermarkMode, format_duration,
};

// ---------------------------------------------------------------------------------------------
// postgres

config_table! {
    /// A PostgreSQL server.
    pub(crate) struct PostgresSourceConfig = "postgres" {
        /// libpq-style connection string (`host=… user=… dbname=…`) or URL. Put the password
        /// in ${VAR} or ${file:/path}.
        dsn: NonEmpty<Dsn>,
        /// Connections shared by every probe of this source, at most.
        max_connections: Count<1, 64> = 4,
    }
}

impl SourceKindConfig for PostgresSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        let source = SourceKind::Postgres(self.dsn.clone()?);
        Some((source, usize::try_from(self.max_connections?).ok()?))
    }
}

/// A PostgreSQL connection string: parsed, its password remembered as a secret, and redacted.
pub(crate) struct Dsn;

impl Scalar for Dsn {
    type Out = PostgresSource;

    fn parse(ctx: &mut Ctx<'_>, dsn: &Text) -> Option<PostgresSource> {
        let config = match dsn.value.parse::<tokio_postgres::Config>() {
            Ok(config) => config,
            Err(error) => {
                // The error's cause is the useful part ("unknown option `foo`"); its own text
                // is only "invalid connection string". Neither contains the DSN, and the
                // message is scrubbed of secrets anyway.
                let cause = error
                    .source()
                    .map_or_else(|| error.to_string(), ToString::to_string);
                ctx.error(
                    dsn.span,
                    &dsn.path,
                    format!("invalid PostgreSQL connection string: {cause}"),
                );
                return None;
            }
        };
        if let Some(password) = config.get_password() {
            ctx.secrets.insert(&String::from_utf8_lossy(password));
        }
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            ctx.error(
                dsn.span,
                &dsn.path,
                "invalid PostgreSQL connection string: no host (add host=…)",
            );
            return None;
        }
        Some(PostgresSource {
            dsn: Secret::new(dsn.value.clone()),
            redacted: redact(&config),
        })
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// `host=… port=… dbname=… user=…` of a parsed connection string, without the password.
fn redact(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let addresses: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(ToString::to_string).collect();
    let parts = [
        ("host", hosts.join(",")),
        ("hostaddr", addresses.join(",")),
        ("port", ports.join(",")),
        ("dbname", config.get_dbname().unwrap_or_default().to_owned()),
        ("user", config.get_user().unwrap_or_default().to_owned()),
    ];
    parts
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| format!("{key}={}", quote_dsn_value(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a value the way libpq reads it back, when it needs quoting.
fn quote_dsn_value(value: &str) -> String {
    if value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        value.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// kafka

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

// ---------------------------------------------------------------------------------------------
// rabbitmq

config_table! {
    /// A RabbitMQ node, read through its management HTTP API.
    ///
    /// The API is the rabbitmq_management plugin's. Needs a user tagged `monitoring` (or
    /// `management` with access to the probed vhosts).
    pub(crate) struct RabbitmqSourceConfig = "rabbitmq" {
        /// Base URL of the management API, such as http://rabbit:15672 (http or https,
        /// optionally with a path prefix); without credentials.
        url: NonEmpty<ManagementUrl>,
        /// User of the management API.
        username: NonEmpty<String>,
        /// Password of that user; put it in ${VAR} or ${file:/path}. Never printed.
        password: SecretString,
        /// Requests in flight at once, shared by every probe of this source.
        max_connections: Count<1, 64> = 4,
    }
}

impl SourceKindConfig for RabbitmqSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        let source = RabbitmqSource {
            url: self.url.clone()?,
            username: self.username.clone()?,
            password: self.password.clone()?,
        };
        Some((
            SourceKind::Rabbitmq(source),
            usize::try_from(self.max_connections?).ok()?,
        ))
    }
}

/// A management API base URL: http or https, a host, no credentials (they belong in
/// `username` and `password`, where they are kept secret), no query or fragment. Read without a
/// trailing slash, ready for `/api/…` to be appended.
pub(crate) struct ManagementUrl;

impl Scalar for ManagementUrl {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<String> {
        let problem = match reqwest::Url::parse(&url.value) {
            Err(error) => Some(error.to_string()),
            Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
                Some(format!("scheme {:?} is not http or https", parsed.scheme()))
            }
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                Some("it holds credentials; put them in `username` and `password`".to_owned())
            }
            Ok(parsed) if parsed.query().is_some() || parsed.fragment().is_some() => {
                Some("it has a query or fragment".to_owned())
            }
            Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => Some("no host".to_owned()),
            // Requests go to `{url}/api/…`: a url that already ends in /api would ask for
            // /api/api/… and read every queue as missing.
            Ok(parsed) if parsed.path().trim_end_matches('/').ends_with("/api") => {
                Some("it ends in /api; give the base url, lagbudget adds /api/…".to_owned())
            }
            Ok(_) => None,
        };
        match problem {
            Some(problem) => {
                // An interpolated URL is never echoed, and the parser's message does not quote
                // it.
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid management API url {}: {problem}; expected such as \
                         http://rabbit:15672",
                        url.quoted()
                    ),
                );
                None
            }
            None => Some(url.value.trim_end_matches('/').to_owned()),
        }
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

// ---------------------------------------------------------------------------------------------
// redis

config_table! {
    /// A Redis server.
    ///
    /// Redis 7.0 or later, reached through one multiplexed connection shared by every probe of
    /// the source.
    pub(crate) struct RedisSourceConfig = "redis" {
        /// `redis://[user:password@]host[:port][/db]`. Put the password in ${VAR} or
        /// ${file:/path}. TLS (rediss://) is not supported yet.
        url: NonEmpty<RedisUrl>,
    }
}

impl SourceKindConfig for RedisSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        // One multiplexed connection per source, shared by every probe that reads it.
        Some((SourceKind::Redis(self.url.clone()?), 1))
    }
}

/// A Redis URL, its password remembered as a secret. The parser's messages never contain the
/// URL; an interpolated URL is not quoted either.
pub(crate) struct RedisUrl;

impl Scalar for RedisUrl {
    type Out = RedisSource;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<RedisSource> {
        use redis::IntoConnectionInfo as _;
        // Remember the password before anything can fail, so that no later message shows it.
        remember_url_password(ctx, &url.value);
        if url.value.starts_with("rediss://") {
            ctx.error(
                url.span,
                &url.path,
                "TLS (rediss://) is not supported yet; use redis:// on a trusted network",
            );
            return None;
        }
        let info = match url.value.as_str().into_connection_info() {
            Ok(info) => info,
            Err(error) => {
                // The client's text is "<what> - <kind>[: detail]"; the kind is noise here.
                let text = error.to_string();
                let what = text.split(" - ").next().unwrap_or_default();
                let problem = match error.detail() {
                    Some(detail) => format!("{what}: {detail}"),
                    None => what.to_owned(),
                };
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid Redis URL {}: {problem}; expected \
                         redis://[user:password@]host[:port][/db]",
                        url.quoted(),
                    ),
                );
                return None;
            }
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            ctx.secrets.insert(password);
        }
        let user = settings
            .username()
            .map(|user| format!("{user}:***@"))
            .or_else(|| settings.password().map(|_| ":***@".to_owned()))
            .unwrap_or_default();
        let redacted = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                format!("redis://{user}{host}:{port}/{}", settings.db())
            }
            redis::ConnectionAddr::Unix(path) => format!("unix://{}", path.display()),
            other => format!("{other}"),
        };
        Some(RedisSource {
            url: Secret::new(url.value.clone()),
            redacted,
        })
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// The password part of a URL's user info, as written (percent-encoded or not), joins the
/// secrets, so that no message quoting the URL can show it.
fn remember_url_password(ctx: &mut Ctx<'_>, url: &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((user_info, _)) = authority.rsplit_once('@') else {
        return;
    };
    match user_info.split_once(':') {
        Some((_, password)) => ctx.secrets.insert(password),
        None => ctx.secrets.insert(user_info),
    }
}

// ---------------------------------------------------------------------------------------------
// nats

config_table! {
    /// A NATS server with JetStream, reached through the client protocol.
    ///
    /// One client is shared by every probe of the source.
    pub(crate) struct NatsSourceConfig = "nats" {
        /// `nats://[user:password@]host[:port]`. Put the password in ${VAR} or ${file:/path}.
        url: NonEmpty<NatsUrl>,
    }
}

impl SourceKindConfig for NatsSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        // One client per source, shared by every probe that reads it.
        Some((SourceKind::Nats(self.url.clone()?), 1))
    }
}

/// A NATS URL, its password (or token) remembered as a secret.
pub(crate) struct NatsUrl;

impl Scalar for NatsUrl {
    type Out = NatsSource;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<NatsSource> {
        remember_url_password(ctx, &url.value);
        let addr = match url.value.parse::<async_nats::ServerAddr>() {
            Ok(addr) if !url.value.contains("://") || url.value.starts_with("nats://") => addr,
            Ok(_) => {
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid NATS URL {}: only nats:// is supported (no TLS or websockets \
                         yet)",
                        url.quoted()
                    ),
                );
                return None;
            }
            Err(_) => {
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid NATS URL {}; expected nats://[user:password@]host[:port]",
                        url.quoted()
                    ),
                );
                return None;
            }
        };
        if let Some(password) = addr.password() {
            ctx.secrets.insert(password);
        }
        let user = match (addr.username(), addr.password()) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            // A user without a password is how NATS URLs carry a token.
            (Some(_), None) => "***@".to_owned(),
            _ => String::new(),
        };
        if let (Some(token), None) = (addr.username(), addr.password()) {
            ctx.secrets.insert(token);
        }
        Some(NatsSource {
            url: Secret::new(url.value.clone()),
            redacted: format!("nats://{user}{}:{}", addr.host(), addr.port()),
        })
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

// ---------------------------------------------------------------------------------------------
// mysql

config_table! {
    /// A MySQL or MariaDB server.
    pub(crate) struct MysqlSourceConfig = "mysql" {
        /// Connection URL: mysql://user:password@host:3306/database. Put the password in
        /// ${VAR} or ${file:/path}.
        url: NonEmpty<MysqlUrl>,
        /// Connections shared by every probe of this source, at most.
        max_connections: Count<1, 64> = 4,
    }
}

impl SourceKindConfig for MysqlSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        Some((
            SourceKind::Mysql(self.url.clone()?),
            usize::try_from(self.max_connections?).ok()?,
        ))
    }
}

/// A `mysql://` URL, its password remembered as a secret.
pub(crate) struct MysqlUrl;

impl Scalar for MysqlUrl {
    type Out = MysqlSource;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<MysqlSource> {
        // The password is remembered before anything is reported, raw (percent-encoded) and
        // decoded, so no message can carry either form. Not `remember_url_password`: a MySQL
        // user without a password is a user name, not a token, and must stay readable in
        // messages.
        if let Some(password) = url_password(&url.value) {
            ctx.secrets.insert(password);
        }
        let opts = match mysql_async::Opts::from_url(&url.value) {
            Ok(opts) => opts,
            Err(error) => {
                ctx.error(
                    url.span,
                    &url.path,
                    format!("invalid MySQL URL: {}", mysql_url_problem(&error)),
                );
                return None;
            }
        };
        if let Some(password) = opts.pass() {
            ctx.secrets.insert(password);
        }
        let user = opts
            .user()
            .map(|user| format!("{user}@"))
            .unwrap_or_default();
        let database = opts.db_name().unwrap_or_default();
        Some(MysqlSource {
            url: Secret::new(url.value.clone()),
            redacted: format!(
                "mysql://{user}{}:{}/{database}",
                opts.ip_or_hostname(),
                opts.tcp_port()
            ),
        })
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// The password part of `scheme://user:password@host…`, as written.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, password)| password)
}

/// What is wrong with a URL, without repeating any of its values.
fn mysql_url_problem(error: &mysql_async::UrlError) -> String {
    use mysql_async::UrlError;
    match error {
        UrlError::UnsupportedScheme { scheme } => {
            format!(
                "scheme {scheme:?} is not supported; expected mysql://user:password@host:3306/database"
            )
        }
        UrlError::UnknownParameter { param } => format!("unknown parameter {param:?}"),
        UrlError::InvalidParamValue { param, .. } => {
            format!("invalid value of parameter {param:?}")
        }
        UrlError::FeatureRequired { param, .. } => {
            format!("parameter {param:?} is not supported by this build")
        }
        UrlError::Parse(parse) => {
            format!("{parse}; expected mysql://user:password@host:3306/database")
        }
        _ => "expected mysql://user:password@host:3306/database".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// sql_watermark

config_table! {
    /// A projection or read model whose position is read with SQL.
    pub(crate) struct SqlWatermarkConfig = "sql_watermark" {
        /// Name of the postgres source to query.
        source: SourceRef<SqlWatermark>,
        /// Returns one row, one column: the view's position or timestamp.
        watermark: NonEmpty<String>,
        /// Given the watermark as $1, returns the timestamp of the oldest change not yet
        /// applied (NULL when nothing is pending) and optionally a pending count.
        oldest_pending: Option<NonEmpty<String>>,
        /// `oldest_pending`: lag is the age of the oldest pending change. `since_watermark`:
        /// lag is now - watermark, which reads an idle source as lag; only without
        /// oldest_pending.
        mode: Spanned<WatermarkMode> = "oldest_pending",
    }
}

impl ReadsSource for SqlWatermark {
    const KIND: &'static str = "sql_watermark";
    const SOURCE: &'static str = "postgres";
}

impl Choice for WatermarkMode {
    const ALL: &'static [Self] = &[WatermarkMode::OldestPending, WatermarkMode::SinceWatermark];

    fn key(self) -> &'static str {
        WatermarkMode::key(self)
    }
}

impl ProbeKindConfig for SqlWatermarkConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let Some(mode) = &self.mode else {
            return true;
        };
        let oldest_pending = written!(self.oldest_pending);
        match mode.value {
            WatermarkMode::OldestPending if oldest_pending.is_none() => {
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    "missing `oldest_pending`: without it lag could only be now - watermark, \
                     which cannot tell an idle source from a stuck view; add `oldest_pending`, \
                     or opt into that with `mode: since_watermark`",
                );
                false
            }
            WatermarkMode::SinceWatermark if oldest_pending.is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    "`mode: since_watermark` ignores `oldest_pending`: remove one of them",
                );
                false
            }
            _ => true,
        }
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::SqlWatermark(SqlWatermark {
                source: self.source.as_ref()?.value.clone(),
                watermark: self.watermark.clone()?,
                oldest_pending: self.oldest_pending.clone(),
                mode: self.mode.as_ref()?.value,
            }))
        };
        single(kind())
    }
}

// ---------------------------------------------------------------------------------------------
// kafka_consumer_group

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
    const KIND: &'static str = "kafka_consumer_group";
    const SOURCE: &'static str = "kafka";
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

// ---------------------------------------------------------------------------------------------
// postgres_logical

config_table! {
    /// A logical replication slot: backlog in bytes, and lag from an LSN-to-time map lagbudget
    /// builds from its own samples.
    ///
    /// The slot is on a PostgreSQL primary (publications, Debezium, pg_recvlogical…).
    /// Backlog is the WAL the slot's consumer has not confirmed, in bytes; lag is the age of
    /// the oldest transaction committed after the slot's confirmed position, read from a map
    /// of WAL positions to times that lagbudget samples itself (read-only). Unknown until that
    /// map reaches back to the slot's position.
    pub(crate) struct PostgresLogicalConfig = "postgres_logical" {
        /// Name of the postgres source (the primary the slot lives on).
        source: SourceRef<PostgresLogical>,
        /// Name of the logical replication slot, as in pg_replication_slots.slot_name.
        slot: NonEmpty<SlotName>,
    }
}

impl ReadsSource for PostgresLogical {
    const KIND: &'static str = "postgres_logical";
    const SOURCE: &'static str = "postgres";
}

/// A name PostgreSQL accepts for a replication slot: anything else cannot name one.
pub(crate) struct SlotName;

impl Scalar for SlotName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, slot: &Text) -> Option<String> {
        if is_valid_slot_name(&slot.value) {
            return Some(slot.value.clone());
        }
        ctx.error(
            slot.span,
            &slot.path,
            format!("invalid slot name {}: {SLOT_RULE}", slot.quoted()),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for PostgresLogicalConfig {
    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::PostgresLogical(PostgresLogical {
                source: self.source.as_ref()?.value.clone(),
                slot: self.slot.clone()?,
            }))
        };
        single(kind())
    }
}

// ---------------------------------------------------------------------------------------------
// rabbitmq_queue

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
    const KIND: &'static str = "rabbitmq_queue";
    const SOURCE: &'static str = "rabbitmq";
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

// ---------------------------------------------------------------------------------------------
// redis_stream_group

config_table! {
    /// A Redis stream consumer group: lag is the age of the oldest entry it has not
    /// acknowledged or not yet been delivered.
    ///
    /// Lag is Redis TIME minus the milliseconds of the oldest entry the group has not
    /// acknowledged (XPENDING) or not yet delivered (the first entry after its
    /// last-delivered-id), read in one read-only script; backlog is pending plus undelivered
    /// entries. lagbudget never reads through the group, so it delivers nothing.
    pub(crate) struct RedisStreamGroupConfig = "redis_stream_group" {
        /// Name of the redis source to read.
        source: SourceRef<RedisStreamGroup>,
        /// The stream's key.
        stream: NonEmpty<String>,
        /// The consumer group.
        group: NonEmpty<String>,
        /// Entry IDs are Redis' time-based IDs (<milliseconds>-<seq>), so an entry's age is
        /// known. Set false for streams written with explicit non-time IDs: the probe then
        /// reports backlog only, and needs max_backlog rather than max_lag.
        id_time: Spanned<bool> = true,
    }
}

impl ReadsSource for RedisStreamGroup {
    const KIND: &'static str = "redis_stream_group";
    const SOURCE: &'static str = "redis";
}

impl ProbeKindConfig for RedisStreamGroupConfig {
    fn backlog_only(&self) -> Option<BacklogOnly<'_>> {
        let flag = self.id_time.as_ref().filter(|flag| !flag.value)?;
        Some(BacklogOnly {
            flag,
            key: "id_time",
            why: "with `id_time: false` entry IDs carry no time",
        })
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::RedisStreamGroup(RedisStreamGroup {
                source: self.source.as_ref()?.value.clone(),
                stream: self.stream.clone()?,
                group: self.group.clone()?,
                id_time: self.id_time.as_ref()?.value,
            }))
        };
        single(kind())
    }
}

// ---------------------------------------------------------------------------------------------
// mysql_replica

/// The longest `ryw_delay`: the writer remembers when each write returned for that long.
const MAX_RYW_DELAY: Duration = Duration::from_secs(600);

config_table! {
    /// MySQL or MariaDB replicas: lag of each replica, measured with a heartbeat the daemon
    /// writes on the primary.
    ///
    /// The daemon writes a heartbeat row (instance, probe, seq, written_at) into a table of its
    /// own database on the primary every write_period and reads the highest visible seq on
    /// each replica: lag is the age of the oldest heartbeat not yet visible there, on the
    /// daemon's clock. Each replica is measured on its own, labelled `replica` with its source
    /// name.
    pub(crate) struct MysqlReplicaConfig = "mysql_replica" {
        /// Name of the mysql source the heartbeat is written to.
        primary: SourceRef<MysqlReplica>,
        /// Names of the mysql sources of the replicas to measure.
        replicas: NonEmpty<Vec<SourceRef<MysqlReplica>>>,
        /// How often the heartbeat is written; lag is measured to within one period. At most
        /// max_lag / 2. Default: max_lag / 10, between 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// Database (schema) of the heartbeat table on the primary; created if missing.
        /// Letters, digits, `_` and `$`, at most 64 characters.
        database: NonEmpty<MysqlDatabase> = "lagbudget",
        /// This daemon's name in the heartbeat table, so that several daemons never share a
        /// row. Default: the host name.
        instance: Option<Spanned<NonEmpty<String>>>,
        /// Check read-your-writes: each run reads, on the replica, the newest heartbeat whose
        /// write at the primary returned at least this long ago, and counts a miss when it is
        /// not visible. At most 10m. Unset: no check.
        ryw_delay: Option<Spanned<PositiveDuration>>,
    }
}

impl ReadsSource for MysqlReplica {
    const KIND: &'static str = "mysql_replica";
    const SOURCE: &'static str = "mysql";
}

/// A MySQL database name lagbudget can use unquoted: letters, digits, `_` and `$`.
pub(crate) struct MysqlDatabase;

impl Scalar for MysqlDatabase {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, database: &Text) -> Option<String> {
        let valid = database.value.len() <= 64
            && database
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if valid {
            return Some(database.value.clone());
        }
        ctx.error(
            database.span,
            &database.path,
            format!(
                "invalid database {}: use letters, digits, `_` and `$`, at most 64 characters",
                database.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for MysqlReplicaConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = check_replicas(
            ctx,
            self.primary.as_ref(),
            self.replicas.iter().flatten(),
            "replica",
            "a server cannot be measured against itself",
        );
        if let Some(instance) = &self.instance {
            if instance.value.len() > 255 {
                ctx.error(
                    instance.span,
                    &instance.path,
                    "instance is longer than 255 characters",
                );
                ok = false;
            }
        }
        if let Some(delay) = &self.ryw_delay {
            if delay.value > MAX_RYW_DELAY {
                ctx.error(
                    delay.span,
                    &delay.path,
                    format!("ryw_delay {} is above the maximum of 10m", delay.shown()),
                );
                ok = false;
            }
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let (Some(primary), Some(replicas), Some(database)) =
            (&self.primary, &self.replicas, &self.database)
        else {
            return Vec::new();
        };
        let write_period = resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag);
        replicas
            .iter()
            .map(|replica| ProbeEntry {
                kind: ProbeKind::MysqlReplica(MysqlReplica {
                    primary: primary.value.clone(),
                    replica: replica.value.clone(),
                    write_period,
                    database: database.clone(),
                    instance: self
                        .instance
                        .as_ref()
                        .map(|instance| instance.value.clone()),
                    ryw_delay: self.ryw_delay.as_ref().map(|delay| delay.value),
                }),
                replica: Some(replica.value.clone()),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// postgres_replica

config_table! {
    /// PostgreSQL streaming standbys of a primary: lag is the age of the oldest change not yet
    /// replayed on each standby.
    ///
    /// Each standby is measured on its own, labelled `replica` with its source name. Every run
    /// checks that the standby is in recovery, belongs to the primary's system and is on its
    /// timeline (else reason=topology).
    pub(crate) struct PostgresReplicaConfig = "postgres_replica" {
        /// Name of the postgres source of the primary.
        primary: SourceRef<PostgresReplica>,
        /// Names of the postgres sources of the standbys; each is the `replica` label of its
        /// series.
        standbys: NonEmpty<Vec<SourceRef<PostgresReplica>>>,
        /// `heartbeat`: lagbudget writes a row per write period into a table of its own on
        /// the primary and reads it on each standby (needs write access). `passive`:
        /// read-only; WAL positions sampled with the daemon's time.
        method: Method,
        /// How often the heartbeat is written (heartbeat only); at most max_lag / 2. Default:
        /// max_lag / 10, between 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// Schema of the heartbeat table on the primary, created if missing (heartbeat only).
        schema: NonEmpty<PlainIdentifier> = "lagbudget",
        /// This daemon's name in the heartbeat rows, so that several daemons can write to one
        /// primary (heartbeat only). Default: the host name.
        instance: Option<NonEmpty<String>>,
        /// Read-your-writes check (heartbeat only): each run checks that the newest heartbeat
        /// written at least this long before the read is visible on the standby.
        ryw_delay: Option<PositiveDuration>,
        /// A WAL receiver that has not heard from the primary for longer is down (passive
        /// only). An idle primary sends a keepalive at least every wal_sender_timeout / 2.
        receiver_silence_limit: PositiveDuration = "1m",
    }
}

impl ReadsSource for PostgresReplica {
    const KIND: &'static str = "postgres_replica";
    const SOURCE: &'static str = "postgres";
}

/// How a replica probe turns positions into seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Heartbeat,
    Passive,
}

impl Choice for Method {
    const ALL: &'static [Self] = &[Method::Heartbeat, Method::Passive];

    fn key(self) -> &'static str {
        match self {
            Method::Heartbeat => "heartbeat",
            Method::Passive => "passive",
        }
    }
}

/// A schema name that needs no quoting and means the same to every client: lower-case.
pub(crate) struct PlainIdentifier;

impl Scalar for PlainIdentifier {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        let mut chars = name.value.chars();
        let plain = name.value.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid schema {}: use lower-case letters, digits and _, starting with a letter \
                 or _, at most 63 characters",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for PostgresReplicaConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = check_replicas(
            ctx,
            self.primary.as_ref(),
            self.standbys.iter().flatten(),
            "standby",
            "a server cannot be its own standby",
        );
        let wrong_method: &[(Option<_>, &str, &str)] = match self.method {
            Some(Method::Heartbeat) => &[(
                written!(self.receiver_silence_limit),
                "receiver_silence_limit",
                "`receiver_silence_limit` needs `method: passive`; with heartbeat a silent \
                 receiver shows as growing lag",
            )],
            Some(Method::Passive) => &[
                (
                    written!(self.write_period),
                    "write_period",
                    "`write_period` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.schema),
                    "schema",
                    "`schema` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.instance),
                    "instance",
                    "`instance` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.ryw_delay),
                    "ryw_delay",
                    "`ryw_delay` needs `method: heartbeat`: a read-your-writes check needs a \
                     write, and passive writes nothing",
                ),
            ],
            None => &[],
        };
        for (span, key, message) in wrong_method {
            if let Some(span) = span {
                ctx.error(*span, &self.keys.path_of(key), *message);
                ok = false;
            }
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let (Some(primary), Some(standbys), Some(method)) =
            (&self.primary, &self.standbys, self.method)
        else {
            return Vec::new();
        };
        let method = match method {
            Method::Heartbeat => ReplicaMethod::Heartbeat(HeartbeatSettings {
                period: resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag),
                schema: self.schema.clone().unwrap_or_default(),
                instance: self.instance.clone().unwrap_or_else(default_instance),
                ryw_delay: self.ryw_delay,
            }),
            Method::Passive => ReplicaMethod::Passive {
                receiver_silence_limit: self.receiver_silence_limit.unwrap_or_default(),
            },
        };
        standbys
            .iter()
            .map(|standby| ProbeEntry {
                kind: ProbeKind::PostgresReplica(PostgresReplica {
                    primary: primary.value.clone(),
                    standby: standby.value.clone(),
                    method: method.clone(),
                }),
                replica: Some(standby.value.clone()),
            })
            .collect()
    }
}

/// This machine's host name, the default `instance` of heartbeat rows.
fn default_instance() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "lagbudget".to_owned())
}

// ---------------------------------------------------------------------------------------------
// replica kinds

/// The longest heartbeat write period chosen by default, and the shortest: lag is measured to
/// within one period, and writing more often than 10 times a second gains little.
const DEFAULT_WRITE_PERIOD_MAX: Duration = Duration::from_secs(1);
const DEFAULT_WRITE_PERIOD_MIN: Duration = Duration::from_millis(100);

/// Reports a replica that is the primary, or listed twice; true when there is none.
fn check_replicas<'a>(
    ctx: &mut Ctx<'_>,
    primary: Option<&Text>,
    replicas: impl IntoIterator<Item = &'a Text>,
    what: &str,
    itself: &str,
) -> bool {
    let mut ok = true;
    let mut seen: Vec<&str> = Vec::new();
    for replica in replicas {
        let message = if primary.is_some_and(|primary| primary.value == replica.value) {
            format!("{what} {} is the primary: {itself}", replica.quoted())
        } else if seen.contains(&replica.value.as_str()) {
            format!("duplicate {what} {}", replica.quoted())
        } else {
            seen.push(&replica.value);
            continue;
        };
        ctx.error(replica.span, &replica.path, message);
        ok = false;
    }
    ok
}

/// A heartbeat's write period: the configured one, which must be at most `max_lag / 2`
/// (lag is measured to within one period), or `max_lag / 10` between 100ms and 1s.
fn resolve_write_period(
    ctx: &mut Ctx<'_>,
    configured: Option<&Spanned<Duration>>,
    max_lag: Option<Duration>,
) -> Duration {
    match (configured, max_lag) {
        (Some(period), Some(max_lag)) => {
            if period.value > max_lag / 2 {
                ctx.error(
                    period.span,
                    &period.path,
                    format!(
                        "write_period {} is above half of max_lag {}: lag is only measured to \
                         within one write period",
                        period.shown(),
                        format_duration(max_lag)
                    ),
                );
            }
            period.value
        }
        (Some(period), None) => period.value,
        (None, Some(max_lag)) => {
            (max_lag / 10).clamp(DEFAULT_WRITE_PERIOD_MIN, DEFAULT_WRITE_PERIOD_MAX)
        }
        (None, None) => DEFAULT_WRITE_PERIOD_MAX,
    }
}
