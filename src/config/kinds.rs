//! The source and probe kinds' tables, decoding and checks.

use std::collections::BTreeMap;
use std::error::Error as _;

use serde_json::Value;

use super::decode::{Ctx, Text};
use super::grammar::check_broker;
use super::schema::Defs;
use super::syntax::Node;
use super::table::config_table;
use super::tables::SourceKindConfig;
use super::value::{ConfigValue, Count, NonEmpty, Reserved, Scalar, SecretString, StringMap};
use crate::model::{
    KafkaSource, MysqlSource, NatsSource, PostgresSource, RabbitmqSource, RedisSource, Secret,
    SourceKind,
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
