//! One config file's node tree to raw settings: every key read through its table, each value
//! checked on its own. Checks that need several files (names, sources, limits, intervals) are
//! `resolve`'s.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::decode::{Ctx, Fields, Spanned, Text};
use super::syntax::{Node, Span};
use super::tables::{DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_RECEIVER_SILENCE_LIMIT, ROOT};
use super::values::{
    SLOT_RULE, TOPIC_RULE, check_broker, is_valid_slot_name, is_valid_topic_name, regex_problem,
};
use crate::model::{
    HttpSettings, KafkaSource, MysqlSource, NatsSource, NoCommitPolicy, Objective, PostgresSource,
    RabbitmqSource, RedisSource, Secret, SourceKind, TopicSelector, WatermarkMode,
};

/// The longest `ryw_delay`: the writer remembers when each write returned for that long.
pub(crate) const MAX_RYW_DELAY: Duration = Duration::from_secs(600);

/// Keys of the main file that an included file may not set.
const MAIN_ONLY: [&str; 4] = ["listen", "include", "defaults", "http"];

/// What one file says, before cross-file checks.
#[derive(Debug)]
pub(crate) struct RawFile {
    pub listen: Option<SocketAddr>,
    pub include: Vec<Text>,
    pub defaults: RawDefaults,
    pub http: HttpSettings,
    pub sources: Vec<RawSource>,
    pub budgets: Vec<RawBudget>,
}

#[derive(Debug, Default)]
pub(crate) struct RawDefaults {
    pub interval: Option<Spanned<Duration>>,
    pub timeout: Option<Spanned<Duration>>,
    pub stall_after: Option<Spanned<Duration>>,
}

#[derive(Debug)]
pub(crate) struct RawSource {
    pub file: usize,
    pub name: String,
    /// Where the source's name is written.
    pub span: Span,
    pub path: String,
    /// The kind key (`postgres`, `kafka`), when exactly one supported kind was given.
    pub kind_key: Option<&'static str>,
    /// A postgres source's pool size; 1 for a kafka source, which has one shared client.
    pub max_connections: usize,
    /// The decoded connection, when everything about it was valid.
    pub kind: Option<SourceKind>,
}

#[derive(Debug)]
pub(crate) struct RawBudget {
    pub file: usize,
    pub path: String,
    pub span: Span,
    pub name: Option<Text>,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub max_lag: Option<Spanned<Duration>>,
    pub max_backlog: Option<Spanned<u64>>,
    /// Whether `max_lag` or `max_backlog` was written, even if invalid: an invalid limit is
    /// reported once, not again as a missing one.
    pub has_limit: bool,
    pub warn_at: f64,
    pub breach_after: Duration,
    pub objective: Option<Objective>,
    pub severity: String,
    pub runbook_url: Option<String>,
    pub interval: Option<Spanned<Duration>>,
    pub timeout: Option<Spanned<Duration>>,
    pub stall_after: Option<Spanned<Duration>>,
    pub probes: Vec<RawProbe>,
}

#[derive(Debug)]
pub(crate) struct RawProbe {
    pub path: String,
    pub span: Span,
    pub name: Option<Text>,
    pub interval: Option<Spanned<Duration>>,
    pub timeout: Option<Spanned<Duration>>,
    pub max_lag: Option<Spanned<Duration>>,
    pub max_backlog: Option<Spanned<u64>>,
    pub has_limit: bool,
    pub stall_after: Option<Spanned<Duration>>,
    /// The source the probe reads, checked even when the rest of its kind is invalid.
    pub source: Option<ProbeSource>,
    /// Further sources of a probe that reads several (a replica probe's replicas).
    pub other_sources: Vec<ProbeSource>,
    pub kind: Option<RawProbeKind>,
}

/// The source a probe names, with what the probe needs it to be.
#[derive(Debug)]
pub(crate) struct ProbeSource {
    /// The probe kind's key (`sql_watermark`).
    pub probe_kind: &'static str,
    /// The source kind the probe kind reads from (`postgres`).
    pub needs: &'static str,
    pub name: Text,
}

#[derive(Debug)]
pub(crate) enum RawProbeKind {
    SqlWatermark {
        source: String,
        watermark: String,
        oldest_pending: Option<String>,
        mode: WatermarkMode,
    },
    KafkaConsumerGroup {
        source: String,
        group: String,
        topics: TopicSelector,
        no_commit: Option<NoCommitPolicy>,
        partition_detail: bool,
    },
    PostgresLogical {
        source: String,
        slot: String,
    },
    RabbitmqQueue {
        source: String,
        queue: String,
        vhost: String,
        /// Where `timestamps` was written, when it was: a `false` there cannot go with max_lag.
        timestamps: Option<Spanned<bool>>,
    },
    RedisStreamGroup {
        source: String,
        stream: String,
        group: String,
        /// `false` only when written so; its span, for the "backlog only" checks of `resolve`.
        id_time: Spanned<bool>,
    },
    NatsConsumer {
        source: String,
        stream: String,
        consumer: String,
    },
    MysqlReplica {
        primary: String,
        replicas: Vec<String>,
        write_period: Option<Spanned<Duration>>,
        database: String,
        instance: Option<String>,
        ryw_delay: Option<Duration>,
    },
    PostgresReplica {
        primary: String,
        standbys: Vec<String>,
        method: RawReplicaMethod,
    },
}

/// A replica probe's method with what was written for it; defaults that need `max_lag` are
/// resolved later.
#[derive(Debug)]
pub(crate) enum RawReplicaMethod {
    Heartbeat {
        period: Option<Spanned<Duration>>,
        schema: String,
        instance: String,
        ryw_delay: Option<Duration>,
    },
    Passive {
        receiver_silence_limit: Duration,
    },
}

/// Decodes one file. Main-file-only keys are rejected in included files.
pub(crate) fn decode_file(ctx: &mut Ctx<'_>, root: &Node, main: bool) -> RawFile {
    let mut raw = RawFile {
        listen: None,
        include: Vec::new(),
        defaults: RawDefaults::default(),
        http: HttpSettings::default(),
        sources: Vec::new(),
        budgets: Vec::new(),
    };
    let Some(fields) = Fields::take(ctx, root, &ROOT, "") else {
        return raw;
    };
    if main {
        raw.listen = fields.socket_addr_or_default(ctx, "listen");
        raw.include = fields.strings(ctx, "include");
        if let Some(defaults) = fields.table(ctx, "defaults") {
            raw.defaults = RawDefaults {
                interval: defaults.duration(ctx, "interval"),
                timeout: defaults.duration(ctx, "timeout"),
                stall_after: defaults.duration(ctx, "stall_after"),
            };
        }
        if let Some(http) = fields.table(ctx, "http") {
            raw.http = HttpSettings {
                cors_allowed_origins: http
                    .strings(ctx, "cors_allowed_origins")
                    .into_iter()
                    .map(|origin| origin.value)
                    .collect(),
                api_cache_max_age: http.duration_or_default(ctx, "api_cache_max_age"),
            };
        }
    } else {
        for key in MAIN_ONLY {
            if let Some(span) = fields.key_span(key) {
                ctx.error(
                    span,
                    key,
                    format!("`{key}` is only allowed in the main file"),
                );
            }
        }
    }
    for (name, source) in fields.table_map(ctx, "sources") {
        let path = source.path.clone();
        raw.sources.push(decode_source(
            ctx,
            name.text.clone(),
            name.span,
            path,
            &source,
        ));
    }
    for budget in fields.table_list(ctx, "budgets") {
        raw.budgets.push(decode_budget(ctx, &budget));
    }
    raw
}

fn decode_source(
    ctx: &mut Ctx<'_>,
    name: String,
    span: Span,
    path: String,
    fields: &Fields<'_>,
) -> RawSource {
    let mut raw = RawSource {
        file: ctx.file,
        name,
        span,
        path,
        kind_key: None,
        max_connections: 0,
        kind: None,
    };
    match fields.variant(ctx) {
        Some(("postgres", postgres)) => {
            raw.kind_key = Some("postgres");
            let max_connections = postgres.integer_or_default(ctx, "max_connections");
            // The table bounds it to 1..=64, so the conversion cannot fail in practice.
            raw.max_connections = usize::try_from(max_connections).unwrap_or(1);
            raw.kind = postgres
                .text(ctx, "dsn")
                .and_then(|dsn| decode_dsn(ctx, &dsn))
                .map(SourceKind::Postgres);
        }
        Some(("kafka", kafka)) => {
            raw.kind_key = Some("kafka");
            // One client per source, shared by every probe that reads it.
            raw.max_connections = 1;
            let brokers = kafka
                .text(ctx, "brokers")
                .and_then(|brokers| decode_brokers(ctx, &brokers));
            let properties = decode_properties(ctx, &kafka);
            raw.kind = brokers.map(|brokers| {
                SourceKind::Kafka(KafkaSource {
                    brokers,
                    properties,
                })
            });
        }
        Some(("rabbitmq", rabbitmq)) => {
            raw.kind_key = Some("rabbitmq");
            let max_connections = rabbitmq.integer_or_default(ctx, "max_connections");
            // The table bounds it to 1..=64, so the conversion cannot fail in practice.
            raw.max_connections = usize::try_from(max_connections).unwrap_or(1);
            let url = rabbitmq
                .text(ctx, "url")
                .and_then(|url| decode_management_url(ctx, &url));
            let username = rabbitmq.text(ctx, "username");
            let password = rabbitmq.text(ctx, "password");
            if let Some(password) = &password {
                ctx.secrets.insert(&password.value);
            }
            raw.kind = match (url, username, password) {
                (Some(url), Some(username), Some(password)) => {
                    Some(SourceKind::Rabbitmq(RabbitmqSource {
                        url,
                        username: username.value,
                        password: Secret::new(password.value),
                    }))
                }
                _ => None,
            };
        }
        Some(("redis", redis)) => {
            raw.kind_key = Some("redis");
            // One multiplexed connection per source, shared by every probe that reads it.
            raw.max_connections = 1;
            raw.kind = redis
                .text(ctx, "url")
                .and_then(|url| decode_redis_url(ctx, &url))
                .map(SourceKind::Redis);
        }
        Some(("nats", nats)) => {
            raw.kind_key = Some("nats");
            // One client per source, shared by every probe that reads it.
            raw.max_connections = 1;
            raw.kind = nats
                .text(ctx, "url")
                .and_then(|url| decode_nats_url(ctx, &url))
                .map(SourceKind::Nats);
        }
        Some(("mysql", mysql)) => {
            raw.kind_key = Some("mysql");
            let max_connections = mysql.integer_or_default(ctx, "max_connections");
            // The table bounds it to 1..=64, so the conversion cannot fail in practice.
            raw.max_connections = usize::try_from(max_connections).unwrap_or(1);
            raw.kind = mysql
                .text(ctx, "url")
                .and_then(|url| decode_mysql_url(ctx, &url))
                .map(SourceKind::Mysql);
        }
        Some((other, _)) => {
            debug_assert!(false, "source kind `{other}` has a table but no decoder");
        }
        None => {}
    }
    raw
}

/// Validates a PostgreSQL connection string and remembers its password as a secret.
fn decode_dsn(ctx: &mut Ctx<'_>, dsn: &Text) -> Option<PostgresSource> {
    let config = match dsn.value.parse::<tokio_postgres::Config>() {
        Ok(config) => config,
        Err(error) => {
            // The error's cause is the useful part ("unknown option `foo`"); its own text is
            // only "invalid connection string". Neither contains the DSN, and the message is
            // scrubbed of secrets anyway.
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

/// Checks a management API base URL: http or https, a host, no credentials (they belong in
/// `username` and `password`, where they are kept secret), no query or fragment. Returns it
/// without a trailing slash, ready for `/api/…` to be appended.
fn decode_management_url(ctx: &mut Ctx<'_>, url: &Text) -> Option<String> {
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
            // An interpolated URL is never echoed, and the parser's message does not quote it.
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

/// Validates a Redis URL and remembers its password as a secret. The parser's messages never
/// contain the URL; an interpolated URL is not quoted either.
fn decode_redis_url(ctx: &mut Ctx<'_>, url: &Text) -> Option<RedisSource> {
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

/// Validates a NATS URL and remembers its password as a secret.
fn decode_nats_url(ctx: &mut Ctx<'_>, url: &Text) -> Option<NatsSource> {
    remember_url_password(ctx, &url.value);
    let addr = match url.value.parse::<async_nats::ServerAddr>() {
        Ok(addr) if !url.value.contains("://") || url.value.starts_with("nats://") => addr,
        Ok(_) => {
            ctx.error(
                url.span,
                &url.path,
                format!(
                    "invalid NATS URL {}: only nats:// is supported (no TLS or websockets yet)",
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

/// Validates a `mysql://` URL and remembers its password as a secret.
fn decode_mysql_url(ctx: &mut Ctx<'_>, url: &Text) -> Option<MysqlSource> {
    // The password is remembered before anything is reported, raw (percent-encoded) and
    // decoded, so no message can carry either form. Not `remember_url_password`: a MySQL user
    // without a password is a user name, not a token, and must stay readable in messages.
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

/// Checks every entry of a `brokers` list and returns the list as librdkafka will get it.
fn decode_brokers(ctx: &mut Ctx<'_>, brokers: &Text) -> Option<String> {
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
                "invalid brokers {}: {which} {problem}; expected host:port entries separated by \
                 commas, such as kafka-1:9092,kafka-2:9092",
                brokers.quoted()
            ),
        );
    }
    ok.then(|| entries.join(","))
}

/// A kafka source's librdkafka properties. Every value is kept as a `Secret` (never printed),
/// but only the values of credential-like keys join the scrub list, along with everything
/// interpolated from `${…}`: scrubbing ordinary values such as `kafka` or `SASL_SSL` from every
/// message would mangle the messages and protect nothing.
fn decode_properties(ctx: &mut Ctx<'_>, fields: &Fields<'_>) -> BTreeMap<String, Secret> {
    let mut properties = BTreeMap::new();
    for (name, value) in fields.string_map(ctx, "properties") {
        if is_credential_key(&name) {
            ctx.secrets.insert(&value.value);
        }
        properties.insert(name, Secret::new(value.value));
    }
    properties
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

fn decode_budget(ctx: &mut Ctx<'_>, fields: &Fields<'_>) -> RawBudget {
    let name = fields.name(ctx, "name");
    let description = fields.text(ctx, "description").map(|text| text.value);
    let owner = fields.text(ctx, "owner").map(|text| text.value);
    let labels = fields.labels(ctx, "labels");
    let max_lag = fields.duration(ctx, "max_lag");
    let max_backlog = backlog(fields.integer(ctx, "max_backlog"));
    let warn_at = fields.percent_or_default(ctx, "warn_at");
    let breach_after = fields.duration_or_default(ctx, "breach_after");
    let objective = fields.table(ctx, "objective").and_then(|objective| {
        // Both are read before either is required, so both are checked.
        let target = objective.percent(ctx, "target");
        let window = objective.duration(ctx, "window");
        Some(Objective {
            target: target?.value,
            window: window?.value,
        })
    });
    let severity = fields.text_or_default(ctx, "severity");
    let runbook_url = fields.text(ctx, "runbook_url").map(|text| text.value);
    let interval = fields.duration(ctx, "interval");
    let timeout = fields.duration(ctx, "timeout");
    let stall_after = fields.duration(ctx, "stall_after");
    let probes = fields
        .table_list(ctx, "probes")
        .iter()
        .map(|probe| decode_probe(ctx, probe))
        .collect();
    RawBudget {
        file: ctx.file,
        path: fields.path.clone(),
        span: fields.span,
        name,
        description,
        owner,
        labels,
        max_lag,
        max_backlog,
        has_limit: fields.has("max_lag") || fields.has("max_backlog"),
        warn_at,
        breach_after,
        objective,
        severity,
        runbook_url,
        interval,
        timeout,
        stall_after,
        probes,
    }
}

/// A backlog limit; the table's minimum of 0 makes the conversion total.
fn backlog(value: Option<Spanned<i64>>) -> Option<Spanned<u64>> {
    let value = value?;
    Some(Spanned {
        value: u64::try_from(value.value).ok()?,
        span: value.span,
        path: value.path,
        shown: value.shown,
    })
}

fn decode_probe(ctx: &mut Ctx<'_>, fields: &Fields<'_>) -> RawProbe {
    let name = fields.name(ctx, "name");
    let interval = fields.duration(ctx, "interval");
    let timeout = fields.duration(ctx, "timeout");
    let max_lag = fields.duration(ctx, "max_lag");
    let max_backlog = backlog(fields.integer(ctx, "max_backlog"));
    let stall_after = fields.duration(ctx, "stall_after");
    let mut other_sources = Vec::new();
    // Each kind names the source kind it reads; the source is read first so that it is
    // checked even when the rest of the kind is invalid.
    let (source, kind) = match fields.variant(ctx) {
        Some(("sql_watermark", watermark)) => {
            let source = probe_source(ctx, &watermark, "source", "sql_watermark", "postgres");
            let kind = decode_sql_watermark(ctx, &watermark, &source);
            (source, kind)
        }
        Some(("kafka_consumer_group", group)) => {
            let source = probe_source(ctx, &group, "source", "kafka_consumer_group", "kafka");
            let kind = decode_kafka_consumer_group(ctx, &group, &source);
            (source, kind)
        }
        Some(("postgres_logical", logical)) => {
            let source = probe_source(ctx, &logical, "source", "postgres_logical", "postgres");
            let kind = decode_postgres_logical(ctx, &logical, &source);
            (source, kind)
        }
        Some(("rabbitmq_queue", queue)) => {
            let source = probe_source(ctx, &queue, "source", "rabbitmq_queue", "rabbitmq");
            let kind = decode_rabbitmq_queue(ctx, &queue, &source);
            (source, kind)
        }
        Some(("redis_stream_group", group)) => {
            let source = probe_source(ctx, &group, "source", "redis_stream_group", "redis");
            let kind = decode_redis_stream_group(ctx, &group, &source);
            (source, kind)
        }
        Some(("nats_consumer", consumer)) => {
            let source = probe_source(ctx, &consumer, "source", "nats_consumer", "nats");
            // Both names are checked before either is required, so both are reported.
            let stream = consumer
                .text(ctx, "stream")
                .and_then(|name| nats_name(ctx, name, "stream"));
            let name = consumer
                .text(ctx, "consumer")
                .and_then(|name| nats_name(ctx, name, "consumer"));
            let kind = (|| {
                Some(RawProbeKind::NatsConsumer {
                    source: source.as_ref()?.name.value.clone(),
                    stream: stream?,
                    consumer: name?,
                })
            })();
            (source, kind)
        }
        Some(("mysql_replica", replica)) => {
            let primary = probe_source(ctx, &replica, "primary", "mysql_replica", "mysql");
            let replicas = probe_sources(ctx, &replica, "replicas", "mysql_replica", "mysql");
            let kind = decode_mysql_replica(ctx, &replica, &primary, &replicas);
            other_sources = replicas;
            (primary, kind)
        }
        Some(("postgres_replica", replica)) => {
            let primary = probe_source(ctx, &replica, "primary", "postgres_replica", "postgres");
            let standbys = probe_sources(ctx, &replica, "standbys", "postgres_replica", "postgres");
            let kind = decode_postgres_replica(ctx, &replica, &primary, &standbys);
            other_sources = standbys;
            (primary, kind)
        }
        Some((other, _)) => {
            debug_assert!(false, "probe kind `{other}` has a table but no decoder");
            (None, None)
        }
        None => (None, None),
    };
    RawProbe {
        path: fields.path.clone(),
        span: fields.span,
        name,
        interval,
        timeout,
        max_lag,
        max_backlog,
        has_limit: fields.has("max_lag") || fields.has("max_backlog"),
        stall_after,
        source,
        other_sources,
        kind,
    }
}

/// A probe kind's key naming one source (`source`, `primary`) of kind `needs`.
fn probe_source(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    key: &str,
    probe_kind: &'static str,
    needs: &'static str,
) -> Option<ProbeSource> {
    fields.text(ctx, key).map(|name| ProbeSource {
        probe_kind,
        needs,
        name,
    })
}

/// A probe kind's key listing sources (`replicas`, `standbys`) of kind `needs`.
fn probe_sources(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    key: &str,
    probe_kind: &'static str,
    needs: &'static str,
) -> Vec<ProbeSource> {
    fields
        .strings(ctx, key)
        .into_iter()
        .map(|name| ProbeSource {
            probe_kind,
            needs,
            name,
        })
        .collect()
}

fn decode_redis_stream_group(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    source: &Option<ProbeSource>,
) -> Option<RawProbeKind> {
    let stream = fields.text(ctx, "stream");
    let group = fields.text(ctx, "group");
    let id_time = match fields.boolean(ctx, "id_time") {
        Some(id_time) => id_time,
        None if fields.has("id_time") => return None,
        None => Spanned {
            value: true,
            span: fields.span,
            path: format!("{}.id_time", fields.path),
            shown: "true".to_owned(),
        },
    };
    Some(RawProbeKind::RedisStreamGroup {
        source: source.as_ref()?.name.value.clone(),
        stream: stream?.value,
        group: group?.value,
        id_time,
    })
}

/// A JetStream stream or consumer name: the server rejects names with spaces, dots, `*`, `>`
/// or path separators, and a request subject built from one would be wrong, so say so here.
fn nats_name(ctx: &mut Ctx<'_>, name: Text, what: &str) -> Option<String> {
    let bad = name
        .value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    match bad {
        Some(c) => {
            ctx.error(
                name.span,
                &name.path,
                format!(
                    "invalid {what} name {}: JetStream names may not contain {c:?} \
                     (no whitespace, '.', '*', '>', '/' or '\\')",
                    name.quoted()
                ),
            );
            None
        }
        None => Some(name.value),
    }
}

fn decode_sql_watermark(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    source: &Option<ProbeSource>,
) -> Option<RawProbeKind> {
    let watermark = fields.text(ctx, "watermark");
    let oldest_pending = fields.text(ctx, "oldest_pending");
    let chosen = fields.choice(ctx, "mode");
    let mode_key = match &chosen {
        Some(chosen) => Some(chosen.value),
        None if fields.has("mode") => None,
        None => fields.choice_default("mode"),
    };
    // The table lists the mode keys; the model owns their meaning.
    let mode = mode_key.and_then(|key| {
        [WatermarkMode::OldestPending, WatermarkMode::SinceWatermark]
            .into_iter()
            .find(|mode| mode.key() == key)
    });
    match mode {
        Some(WatermarkMode::OldestPending) if !fields.has("oldest_pending") => {
            ctx.error(
                fields.span,
                &fields.path,
                "missing `oldest_pending`: without it lag could only be now - watermark, which \
                 cannot tell an idle source from a stuck view; add `oldest_pending`, or opt into \
                 that with `mode: since_watermark`",
            );
        }
        Some(WatermarkMode::SinceWatermark) if fields.has("oldest_pending") => {
            if let Some(chosen) = &chosen {
                ctx.error(
                    chosen.span,
                    &chosen.path,
                    "`mode: since_watermark` ignores `oldest_pending`: remove one of them",
                );
            }
        }
        _ => {}
    }
    Some(RawProbeKind::SqlWatermark {
        source: source.as_ref()?.name.value.clone(),
        watermark: watermark?.value,
        oldest_pending: oldest_pending.map(|text| text.value),
        mode: mode?,
    })
}

fn decode_kafka_consumer_group(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    source: &Option<ProbeSource>,
) -> Option<RawProbeKind> {
    let group = fields.text(ctx, "group");
    let topics = decode_topics(ctx, fields);
    let pattern = fields.text(ctx, "topic_pattern").and_then(|pattern| {
        // Compiled as written, so that the error is about what the user wrote; the probe
        // anchors it to match whole topic names.
        match regex::Regex::new(&pattern.value) {
            Ok(_) => Some(pattern.value),
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
    });
    // The table lists the policy keys; the model owns their meaning.
    let no_commit = fields.choice(ctx, "no_commit").map(|chosen| {
        [NoCommitPolicy::Earliest, NoCommitPolicy::Latest]
            .into_iter()
            .find(|policy| policy.key() == chosen.value)
    });
    let partition_detail = fields.bool_or_default(ctx, "partition_detail");
    // Neither or both of `topics` and `topic_pattern` was reported by the table's `one_of`.
    let topics = match (topics, pattern) {
        (Some(topics), None) if !fields.has("topic_pattern") => TopicSelector::List(topics),
        (None, Some(pattern)) if !fields.has("topics") => TopicSelector::Pattern(pattern),
        _ => return None,
    };
    let no_commit = match no_commit {
        Some(policy) => Some(policy?),
        None if fields.has("no_commit") => return None,
        None => None,
    };
    Some(RawProbeKind::KafkaConsumerGroup {
        source: source.as_ref()?.name.value.clone(),
        group: group?.value,
        topics,
        no_commit,
        partition_detail,
    })
}

fn decode_postgres_logical(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    source: &Option<ProbeSource>,
) -> Option<RawProbeKind> {
    let slot = fields.text(ctx, "slot").and_then(|slot| {
        if is_valid_slot_name(&slot.value) {
            Some(slot.value)
        } else {
            ctx.error(
                slot.span,
                &slot.path,
                format!("invalid slot name {}: {SLOT_RULE}", slot.quoted()),
            );
            None
        }
    });
    Some(RawProbeKind::PostgresLogical {
        source: source.as_ref()?.name.value.clone(),
        slot: slot?,
    })
}

fn decode_rabbitmq_queue(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    source: &Option<ProbeSource>,
) -> Option<RawProbeKind> {
    let queue = fields.text(ctx, "queue");
    let vhost = match fields.text(ctx, "vhost") {
        Some(vhost) => Some(vhost.value),
        None if fields.has("vhost") => None,
        None => Some(fields.text_or_default(ctx, "vhost")),
    };
    let timestamps = fields.boolean(ctx, "timestamps");
    if fields.has("timestamps") && timestamps.is_none() {
        return None;
    }
    Some(RawProbeKind::RabbitmqQueue {
        source: source.as_ref()?.name.value.clone(),
        queue: queue?.value,
        vhost: vhost?,
        timestamps,
    })
}

fn decode_mysql_replica(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    primary: &Option<ProbeSource>,
    replicas: &[ProbeSource],
) -> Option<RawProbeKind> {
    let mut ok = true;
    let mut names: Vec<&str> = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let name = &replica.name;
        if primary
            .as_ref()
            .is_some_and(|primary| primary.name.value == name.value)
        {
            ctx.error(
                name.span,
                &name.path,
                format!(
                    "replica {} is the primary: a server cannot be measured against itself",
                    name.quoted()
                ),
            );
            ok = false;
        } else if names.contains(&name.value.as_str()) {
            ctx.error(
                name.span,
                &name.path,
                format!("duplicate replica {}", name.quoted()),
            );
            ok = false;
        }
        names.push(&name.value);
    }
    let write_period = fields.duration(ctx, "write_period");
    let database = fields.text(ctx, "database");
    let database = match database {
        Some(database) => {
            let valid = database.value.len() <= 64
                && database
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            if !valid {
                ctx.error(
                    database.span,
                    &database.path,
                    format!(
                        "invalid database {}: use letters, digits, `_` and `$`, at most 64 \
                         characters",
                        database.quoted()
                    ),
                );
                None
            } else {
                Some(database.value)
            }
        }
        None if fields.has("database") => None,
        None => fields.choice_default("database").map(str::to_owned),
    };
    let instance = fields.text(ctx, "instance");
    if let Some(instance) = &instance {
        if instance.value.len() > 255 {
            ctx.error(
                instance.span,
                &instance.path,
                "instance is longer than 255 characters",
            );
            ok = false;
        }
    }
    let ryw_delay = fields.duration(ctx, "ryw_delay");
    if let Some(delay) = &ryw_delay {
        if delay.value > MAX_RYW_DELAY {
            ctx.error(
                delay.span,
                &delay.path,
                format!("ryw_delay {} is above the maximum of 10m", delay.shown),
            );
            ok = false;
        }
    }
    if !ok || (fields.has("instance") && instance.is_none()) || replicas.is_empty() {
        return None;
    }
    Some(RawProbeKind::MysqlReplica {
        primary: primary.as_ref()?.name.value.clone(),
        replicas: replicas.iter().map(|r| r.name.value.clone()).collect(),
        write_period,
        database: database?,
        instance: instance.map(|text| text.value),
        ryw_delay: ryw_delay.map(|delay| delay.value),
    })
}

fn decode_postgres_replica(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    primary: &Option<ProbeSource>,
    standbys: &[ProbeSource],
) -> Option<RawProbeKind> {
    let mut ok = fields.has("standbys") && !standbys.is_empty();
    let mut names: Vec<String> = Vec::with_capacity(standbys.len());
    for standby in standbys {
        let name = &standby.name;
        if primary
            .as_ref()
            .is_some_and(|primary| primary.name.value == name.value)
        {
            ctx.error(
                name.span,
                &name.path,
                format!(
                    "standby {} is the primary: a server cannot be its own standby",
                    name.quoted()
                ),
            );
            ok = false;
        } else if names.contains(&name.value) {
            ctx.error(
                name.span,
                &name.path,
                format!("duplicate standby {}", name.quoted()),
            );
            ok = false;
        } else {
            names.push(name.value.clone());
        }
    }
    let method = fields.choice(ctx, "method");
    let period = fields.duration(ctx, "write_period");
    let schema = fields.text(ctx, "schema");
    let instance = fields.text(ctx, "instance");
    let ryw_delay = fields.duration(ctx, "ryw_delay");
    let silence = fields.duration(ctx, "receiver_silence_limit");
    if let Some(schema) = &schema {
        if !is_plain_identifier(&schema.value) {
            ctx.error(
                schema.span,
                &schema.path,
                format!(
                    "invalid schema {}: use lower-case letters, digits and _, starting with a \
                     letter or _, at most 63 characters",
                    schema.quoted()
                ),
            );
            ok = false;
        }
    }
    let method = match method?.value {
        "heartbeat" => {
            if let Some(span) = fields.key_span("receiver_silence_limit") {
                ctx.error(
                    span,
                    &super::path::key(&fields.path, "receiver_silence_limit"),
                    "`receiver_silence_limit` needs `method: passive`; with heartbeat a silent \
                     receiver shows as growing lag",
                );
                ok = false;
            }
            RawReplicaMethod::Heartbeat {
                period,
                schema: schema.map_or_else(|| DEFAULT_HEARTBEAT_SCHEMA.to_owned(), |s| s.value),
                instance: match instance {
                    Some(instance) => instance.value,
                    None => default_instance(),
                },
                ryw_delay: ryw_delay.map(|delay| delay.value),
            }
        }
        _ => {
            for (key, why) in [
                ("write_period", "passive writes nothing"),
                ("schema", "passive writes nothing"),
                ("instance", "passive writes nothing"),
                (
                    "ryw_delay",
                    "a read-your-writes check needs a write, and passive writes nothing",
                ),
            ] {
                if let Some(span) = fields.key_span(key) {
                    ctx.error(
                        span,
                        &super::path::key(&fields.path, key),
                        format!("`{key}` needs `method: heartbeat`: {why}"),
                    );
                    ok = false;
                }
            }
            RawReplicaMethod::Passive {
                receiver_silence_limit: silence
                    .map_or(DEFAULT_RECEIVER_SILENCE_LIMIT, |limit| limit.value),
            }
        }
    };
    if !ok {
        return None;
    }
    Some(RawProbeKind::PostgresReplica {
        primary: primary.as_ref()?.name.value.clone(),
        standbys: names,
        method,
    })
}

/// A schema name that needs no quoting and means the same to every client: lower-case.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
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

/// The `topics` list, when it was given and every topic name in it is valid.
fn decode_topics(ctx: &mut Ctx<'_>, fields: &Fields<'_>) -> Option<Vec<String>> {
    if !fields.has("topics") {
        return None;
    }
    let items = fields.strings(ctx, "topics");
    let mut ok = !items.is_empty();
    let mut topics: Vec<String> = Vec::with_capacity(items.len());
    for topic in items {
        if !is_valid_topic_name(&topic.value) {
            ctx.error(
                topic.span,
                &topic.path,
                format!("invalid topic name {}: {TOPIC_RULE}", topic.quoted()),
            );
            ok = false;
        } else if topics.contains(&topic.value) {
            ctx.error(
                topic.span,
                &topic.path,
                format!("duplicate topic {}", topic.quoted()),
            );
            ok = false;
        } else {
            topics.push(topic.value);
        }
    }
    ok.then_some(topics)
}
