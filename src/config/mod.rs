//! Config loading: YAML -> validated `model::Config`. The only module that knows YAML.
//!
//! The pipeline, one stage per module:
//! - `syntax`: YAML text to a tree of nodes that keep their line and column;
//! - `table` + `value`: tables declared once with `config_table!`, their keys typed by value
//!   grammars, which give the decoder, the defaults and the schema (`schema`); `tables`
//!   declares the tables every file shares, and each kind declares its own next to its probe
//!   (`probe/<kind>/config.rs`);
//! - `decode` + `interpolate`: the error collector that lets one run report every problem of
//!   every file, and `${…}` substitution; `grammar`: scalar grammars and suggestions;
//! - `include`: which other files to read;
//! - `resolve`: all files to the model (unique names, sources, limits, effective intervals).

pub(crate) mod decode;
mod grammar;
mod include;
mod interpolate;
mod kinds;
mod path;
mod resolve;
pub(crate) mod schema;
pub(crate) mod syntax;
pub(crate) mod table;
pub(crate) mod tables;
pub(crate) mod value;

use std::fmt;
use std::path::Path;

pub use grammar::parse_duration;

use crate::model::Config;
use decode::Ctx;
use syntax::Span;
use tables::FileConfig;
use value::ConfigValue;

/// One problem in a config file, where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The main file's path as given, or an included file's path as resolved.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// The YAML path, such as `budgets[0].probes[1].sql_watermark.source`, or `(root)`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.path, self.message
        )
    }
}

/// Every problem found in a config, in file then line order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads and validates the config at `path`, reading `${VAR}`s from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Loads and validates the config at `path`, reading `${VAR}`s through `env`.
pub fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(env);
    let dir = path.parent().unwrap_or(Path::new(""));
    ctx.enter_file(path.display().to_string(), dir);
    // Without the main file's tree there is no `include` to follow: a syntax error there is
    // the one error to report.
    let Some(main) = read_file(&mut ctx, path) else {
        return Err(ctx.into_errors());
    };
    let patterns = main.include.as_deref().unwrap_or_default();
    let included = include::expand(&mut ctx, path, dir, patterns);
    let mut files = vec![main];
    for path in included {
        ctx.enter_file(
            path.display().to_string(),
            path.parent().unwrap_or(Path::new("")),
        );
        files.extend(read_file(&mut ctx, &path));
    }
    match resolve::resolve(&mut ctx, files) {
        Some(config) if !ctx.has_errors() => Ok(config),
        _ => Err(ctx.into_errors()),
    }
}

/// Reads, parses and decodes the file `ctx` has entered.
fn read_file(ctx: &mut Ctx<'_>, path: &Path) -> Option<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            ctx.error(Span::START, "", format!("cannot read file: {error}"));
            return None;
        }
    };
    let (root, problems) = syntax::parse(&text);
    for problem in problems {
        ctx.error(problem.span, &problem.path, problem.message);
    }
    FileConfig::decode(ctx, &root?, "")
}

/// The JSON Schema (draft 2020-12) of the config file, for editors.
pub fn json_schema() -> serde_json::Value {
    schema::json_schema()
}

/// The schema as committed in `config/lagbudget.schema.json`: pretty JSON and a newline.
pub fn json_schema_string() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Loading configs written inline, for the tests of the tables and of every kind.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Loads `text` as a main file.
    pub(crate) fn load_text(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, text).expect("config");
        load_with(&path, env)
    }

    /// Loads `text` as a main file and returns its errors as `line:column: path: message`.
    pub(crate) fn errors_of(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        match load_text(text, env) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .into_iter()
                .map(|error| {
                    format!(
                        "{}:{}: {}: {}",
                        error.line, error.column, error.path, error.message
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::testing::errors_of;
    use super::*;
    use crate::model::{
        HeartbeatSettings, KafkaConsumerGroup, MysqlReplica, NoCommitPolicy, Objective,
        PostgresReplica, ProbeKind, RabbitmqQueue, RedisStreamGroup, ReplicaMethod, SourceKind,
        SqlWatermark, TopicSelector, WatermarkMode,
    };

    #[test]
    fn committed_schema_is_up_to_date() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lagbudget.schema.json");
        let generated = json_schema_string();
        if std::env::var("LAGBUDGET_REGENERATE").as_deref() == Ok("1") {
            std::fs::write(&path, &generated).expect("write config/lagbudget.schema.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "config/lagbudget.schema.json is out of date with the key tables in \
             the table declarations; regenerate it with:\n    LAGBUDGET_REGENERATE=1 cargo test \
             --lib config::tests::committed_schema_is_up_to_date"
        );
    }

    #[test]
    fn schema_lists_keys_types_and_defaults() {
        let schema = json_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["listen"]["default"], "0.0.0.0:9464");
        let budget = &schema["$defs"]["budget"];
        assert_eq!(budget["required"], serde_json::json!(["name", "probes"]));
        assert_eq!(budget["properties"]["warn_at"]["default"], "80%");
        assert_eq!(budget["properties"]["probes"]["minItems"], 1);
        let probe = &schema["$defs"]["probe"];
        assert_eq!(
            probe["oneOf"],
            serde_json::json!([
                { "required": ["sql_watermark"] },
                { "required": ["kafka_consumer_group"] },
                { "required": ["postgres_logical"] },
                { "required": ["rabbitmq_queue"] },
                { "required": ["redis_stream_group"] },
                { "required": ["nats_consumer"] },
                { "required": ["mysql_replica"] },
                { "required": ["postgres_replica"] },
            ])
        );
        assert_eq!(
            schema["$defs"]["postgres_logical"]["required"],
            serde_json::json!(["source", "slot"])
        );
        assert_eq!(
            schema["$defs"]["source"]["oneOf"],
            serde_json::json!([
                { "required": ["postgres"] },
                { "required": ["kafka"] },
                { "required": ["rabbitmq"] },
                { "required": ["redis"] },
                { "required": ["nats"] },
                { "required": ["mysql"] },
            ])
        );
        let queue = &schema["$defs"]["rabbitmq_queue"];
        assert_eq!(queue["required"], serde_json::json!(["source", "queue"]));
        assert_eq!(queue["properties"]["vhost"]["default"], "/");
        assert_eq!(queue["properties"]["timestamps"]["default"], true);
        let replica = &schema["$defs"]["mysql_replica"];
        assert_eq!(
            replica["required"],
            serde_json::json!(["primary", "replicas"])
        );
        assert_eq!(replica["properties"]["database"]["default"], "lagbudget");
        let kafka = &schema["$defs"]["kafka"];
        assert_eq!(kafka["required"], serde_json::json!(["brokers"]));
        assert_eq!(
            kafka["properties"]["properties"]["propertyNames"]["not"]["enum"][0],
            "group.id"
        );
        let group = &schema["$defs"]["kafka_consumer_group"];
        assert_eq!(group["required"], serde_json::json!(["source", "group"]));
        assert_eq!(
            group["oneOf"],
            serde_json::json!([{ "required": ["topics"] }, { "required": ["topic_pattern"] }])
        );
        assert_eq!(group["properties"]["topics"]["minItems"], 1);
        assert_eq!(group["properties"]["partition_detail"]["default"], false);
        assert_eq!(
            group["properties"]["no_commit"]["enum"],
            serde_json::json!(["earliest", "latest"])
        );
        assert_eq!(
            schema["$defs"]["sql_watermark"]["properties"]["mode"]["enum"],
            serde_json::json!(["oldest_pending", "since_watermark"])
        );
        assert_eq!(
            schema["$defs"]["postgres"]["properties"]["max_connections"]["default"],
            4
        );
    }

    const MAIN: &str = r#"
listen: 127.0.0.1:19464
include: [budgets.d/*.yaml]
defaults:
  interval: 20s
  timeout: 3s
http:
  cors_allowed_origins: ["https://shop.example.com"]
  api_cache_max_age: 5s
sources:
  orders-db:
    postgres:
      dsn: "host=orders-primary port=5433 user=lagbudget password=${ORDERS_DB_PASSWORD} dbname=shop"
      max_connections: 8
budgets:
  - name: loyalty-points
    description: Loyalty balance on the profile page trails the paid order.
    owner: team-loyalty
    labels: { service: loyalty, tier: "1" }
    max_lag: 30s
    warn_at: 90%
    breach_after: 1m
    objective: { target: 99.9%, window: 28d }
    severity: ticket
    runbook_url: https://runbooks.example.com/loyalty-points
    probes:
      - name: points-projection
        sql_watermark:
          source: orders-db
          watermark: "SELECT last_order_id FROM projection_checkpoints WHERE name = 'points'"
          oldest_pending: "SELECT min(paid_at), count(*) FROM orders WHERE id > $1"
"#;

    const TEAM: &str = r#"
sources:
  search-db: { postgres: { dsn: "postgresql://search@search-db/search" } }
budgets:
  - name: search-index
    max_backlog: 0
    interval: 2s
    probes:
      - name: indexer
        max_lag: 1m30s
        stall_after: 10m
        sql_watermark:
          source: search-db
          watermark: SELECT indexed_at FROM index_state
          mode: since_watermark
      - name: dead-letters
        sql_watermark:
          source: orders-db
          watermark: SELECT 1
          oldest_pending: SELECT min(created_at), count(*) FROM dead_letters
"#;

    #[test]
    fn a_valid_config_with_an_included_team_file_resolves_to_the_model() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("budgets.d")).expect("budgets.d");
        std::fs::write(dir.path().join("lagbudget.yaml"), MAIN).expect("main file");
        std::fs::write(dir.path().join("budgets.d/search.yaml"), TEAM).expect("team file");
        let env = |name: &str| (name == "ORDERS_DB_PASSWORD").then(|| "hunter22".to_owned());
        let config = match load_with(&dir.path().join("lagbudget.yaml"), &env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };

        assert_eq!(config.listen, "127.0.0.1:19464".parse().expect("address"));
        assert_eq!(
            config.http.cors_allowed_origins,
            ["https://shop.example.com"]
        );
        assert_eq!(config.http.api_cache_max_age, Duration::from_secs(5));

        let orders = &config.sources["orders-db"];
        assert_eq!(orders.max_connections, 8);
        let SourceKind::Postgres(postgres) = &orders.kind else {
            panic!("orders-db is not a postgres source");
        };
        assert_eq!(
            postgres.dsn.expose(),
            "host=orders-primary port=5433 user=lagbudget password=hunter22 dbname=shop"
        );
        assert_eq!(
            postgres.redacted,
            "host=orders-primary port=5433 dbname=shop user=lagbudget"
        );
        let search = &config.sources["search-db"];
        assert_eq!(search.max_connections, 4);
        let SourceKind::Postgres(postgres) = &search.kind else {
            panic!("search-db is not a postgres source");
        };
        assert_eq!(
            postgres.redacted,
            "host=search-db port=5432 dbname=search user=search"
        );
        assert_eq!(config.secrets.scrub("pw hunter22"), "pw ***");

        let names: Vec<&str> = config.budgets.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["loyalty-points", "search-index"]);

        let loyalty = &config.budgets[0];
        assert_eq!(
            loyalty.description.as_deref(),
            Some("Loyalty balance on the profile page trails the paid order.")
        );
        assert_eq!(loyalty.owner.as_deref(), Some("team-loyalty"));
        assert_eq!(
            loyalty.labels,
            BTreeMap::from([
                ("service".to_owned(), "loyalty".to_owned()),
                ("tier".to_owned(), "1".to_owned()),
            ])
        );
        assert_eq!(loyalty.max_lag, Some(Duration::from_secs(30)));
        assert_eq!(loyalty.max_backlog, None);
        assert_eq!(loyalty.warn_at, 0.9);
        assert_eq!(loyalty.breach_after, Duration::from_secs(60));
        assert_eq!(
            loyalty.objective,
            Some(Objective {
                target: 0.999,
                window: Duration::from_secs(28 * 86_400),
            })
        );
        assert_eq!(loyalty.severity, "ticket");
        assert_eq!(
            loyalty.runbook_url.as_deref(),
            Some("https://runbooks.example.com/loyalty-points")
        );
        let points = &loyalty.probes[0];
        assert_eq!(points.budget, "loyalty-points");
        assert_eq!(points.name, "points-projection");
        // defaults.interval 20s is capped at max_lag / 3; the 3s default timeout fits.
        assert_eq!(points.interval, Duration::from_secs(10));
        assert_eq!(points.timeout, Duration::from_secs(3));
        assert_eq!(points.max_lag, Some(Duration::from_secs(30)));
        assert_eq!(points.stall_after, Duration::from_secs(30));
        assert_eq!(
            points.kind,
            ProbeKind::SqlWatermark(SqlWatermark {
                source: "orders-db".to_owned(),
                watermark: "SELECT last_order_id FROM projection_checkpoints WHERE name = 'points'"
                    .to_owned(),
                oldest_pending: Some(
                    "SELECT min(paid_at), count(*) FROM orders WHERE id > $1".to_owned()
                ),
                mode: WatermarkMode::OldestPending,
            })
        );

        let search = &config.budgets[1];
        assert_eq!(search.warn_at, 0.8);
        assert_eq!(search.severity, "page");
        assert_eq!(search.breach_after, Duration::ZERO);
        assert_eq!(search.objective, None);
        assert_eq!(search.max_backlog, Some(0));
        let indexer = &search.probes[0];
        assert_eq!(indexer.interval, Duration::from_secs(2));
        assert_eq!(indexer.timeout, Duration::from_secs(2));
        assert_eq!(indexer.max_lag, Some(Duration::from_secs(90)));
        assert_eq!(indexer.max_backlog, Some(0));
        assert_eq!(indexer.stall_after, Duration::from_secs(600));
        let ProbeKind::SqlWatermark(watermark) = &indexer.kind else {
            panic!("indexer is not a sql_watermark probe");
        };
        assert_eq!(watermark.mode, WatermarkMode::SinceWatermark);
        assert_eq!(watermark.oldest_pending, None);
        let dead_letters = &search.probes[1];
        assert_eq!(dead_letters.max_lag, None);
        assert_eq!(dead_letters.max_backlog, Some(0));
        assert_eq!(dead_letters.interval, Duration::from_secs(2));
        assert_eq!(dead_letters.stall_after, Duration::from_secs(6));
        assert_eq!(dead_letters.source_name(), "orders-db");
    }

    #[test]
    fn defaults_apply_when_keys_are_absent() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(
            &path,
            "sources:\n  db: {postgres: {dsn: host=db}}\nbudgets:\n  - name: b\n    max_lag: 1h\n    probes:\n      - name: p\n        sql_watermark: {source: db, watermark: SELECT 1, oldest_pending: SELECT 2}\n",
        )
        .expect("config");
        let config = load_with(&path, &|_| None).expect("valid config");
        assert_eq!(config.listen, "0.0.0.0:9464".parse().expect("address"));
        assert_eq!(config.http, crate::model::HttpSettings::default());
        let probe = &config.budgets[0].probes[0];
        assert_eq!(probe.interval, Duration::from_secs(10));
        assert_eq!(probe.timeout, Duration::from_secs(5));
        assert_eq!(probe.stall_after, Duration::from_secs(3600));
    }

    #[test]
    fn anchors_and_quoted_interpolated_integers_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(
            &path,
            r#"
sources:
  db: { postgres: { dsn: host=db, max_connections: "${POOL}" } }
budgets:
  - name: a
    max_lag: 1m
    max_backlog: ${BACKLOG}
    probes:
      - name: p
        sql_watermark: &watermark
          source: db
          watermark: SELECT position FROM checkpoints
          oldest_pending: SELECT min(at) FROM changes WHERE position > $1
  - name: b
    max_lag: 2m
    probes:
      - name: p
        sql_watermark: *watermark
"#,
        )
        .expect("config");
        let env = |name: &str| match name {
            "POOL" => Some("12".to_owned()),
            "BACKLOG" => Some("100".to_owned()),
            _ => None,
        };
        let config = match load_with(&path, &env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };
        assert_eq!(config.sources["db"].max_connections, 12);
        assert_eq!(config.budgets[0].max_backlog, Some(100));
        assert_eq!(
            config.budgets[0].probes[0].kind,
            config.budgets[1].probes[0].kind
        );
    }

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
    fn kafka_sources_and_consumer_group_probes_resolve_to_the_model() {
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
            Err(errors) => panic!(
                "unexpected errors:
{errors}"
            ),
        };

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
    fn kafka_mistakes_are_reported_where_they_are_written() {
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

    const QUEUES: &str = r#"
sources:
  cache: { redis: { url: "redis://lagbudget:${REDIS_PASSWORD}@cache-1:6380/2" } }
  local: { redis: { url: "redis://127.0.0.1" } }
budgets:
  - name: mail
    max_lag: 30s
    probes:
      - name: outbox
        redis_stream_group: { source: cache, stream: "outbox:mail", group: mailer }
      - name: audit-log
        max_backlog: 100
        redis_stream_group: { source: local, stream: audit, group: archiver, id_time: false }
"#;

    #[test]
    fn redis_sources_and_stream_group_probes_resolve_to_the_model() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, QUEUES).expect("config");
        let env = |name: &str| match name {
            "REDIS_PASSWORD" => Some("redis-secret-password".to_owned()),
            _ => None,
        };
        let config = match load_with(&path, &env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };
        let SourceKind::Redis(cache) = &config.sources["cache"].kind else {
            panic!("cache is not a redis source");
        };
        assert_eq!(cache.redacted, "redis://lagbudget:***@cache-1:6380/2");
        assert_eq!(
            cache.url.expose(),
            "redis://lagbudget:redis-secret-password@cache-1:6380/2"
        );
        assert_eq!(config.sources["cache"].max_connections, 1);
        assert_eq!(config.sources["cache"].kind.key(), "redis");
        let SourceKind::Redis(local) = &config.sources["local"].kind else {
            panic!("local is not a redis source");
        };
        assert_eq!(local.redacted, "redis://127.0.0.1:6379/0");
        assert_eq!(config.secrets.scrub("redis-secret-password"), "***");
        assert!(!format!("{config:?}").contains("redis-secret-password"));

        let probes = &config.budgets[0].probes;
        assert_eq!(
            probes[0].kind,
            ProbeKind::RedisStreamGroup(RedisStreamGroup {
                source: "cache".to_owned(),
                stream: "outbox:mail".to_owned(),
                group: "mailer".to_owned(),
                id_time: true,
            })
        );
        assert_eq!(probes[0].kind_key(), "redis_stream_group");
        assert_eq!(probes[0].max_lag, Some(Duration::from_secs(30)));
        // Backlog only: the budget's max_lag does not apply, nor shorten its interval.
        assert_eq!(probes[1].max_lag, None);
        assert_eq!(probes[1].max_backlog, Some(100));
        assert_eq!(probes[1].interval, Duration::from_secs(10));
    }

    #[test]
    fn redis_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://:hunter2-secret@cache-1:x" } }
  tls: { redis: { url: "rediss://cache-2:6380", max_connections: 2 } }
  env: { redis: { url: "${REDIS_URL}" } }
  db: { postgres: { dsn: host=db } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: lag-on-ids
        max_lag: 10s
        redis_stream_group: { source: cache, stream: s, group: g, id_time: false }
      - name: no-backlog
        redis_stream_group: { source: cache, stream: s, group: g, id_time: false }
      - name: quoted
        redis_stream_group: { source: db, stream: s, group: g, id_time: "false" }
      - name: missing
        redis_stream_group: { source: cache, group: g }
"#;
        let env = |name: &str| (name == "REDIS_URL").then(|| "redis://:env-secret@".to_owned());
        let expected = [
            "3:26: sources.cache.redis.url: invalid Redis URL \"redis://:***@cache-1:x\": Redis URL did not parse; expected redis://[user:password@]host[:port][/db]",
            "4:24: sources.tls.redis.url: TLS (rediss://) is not supported yet; use redis:// on a trusted network",
            "4:49: sources.tls.redis.max_connections: unknown key `max_connections`; valid keys: url",
            "5:24: sources.env.redis.url: invalid Redis URL \"${REDIS_URL}\": Redis URL did not parse; expected redis://[user:password@]host[:port][/db]",
            "12:18: budgets[0].probes[0].max_lag: max_lag cannot be measured here: with `id_time: false` entry IDs carry no time, so this probe reports backlog only; use max_backlog",
            "13:76: budgets[0].probes[0].redis_stream_group.id_time: `id_time: false` reports backlog only: set max_backlog on this probe or its budget (a max_lag does not apply to it)",
            "15:76: budgets[0].probes[1].redis_stream_group.id_time: `id_time: false` reports backlog only: set max_backlog on this probe or its budget (a max_lag does not apply to it)",
            "17:39: budgets[0].probes[2].redis_stream_group.source: source \"db\" is a postgres source; redis_stream_group needs redis",
            "17:73: budgets[0].probes[2].redis_stream_group.id_time: expected true or false, found the string \"false\": remove the quotes",
            "19:29: budgets[0].probes[3].redis_stream_group: missing required key `stream`",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }

    #[test]
    fn rabbitmq_sources_and_queue_probes_resolve_to_the_model() {
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
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, text).expect("config");
        let env = |name: &str| (name == "RABBIT_PASSWORD").then(|| "rabbit-secret-pw".to_owned());
        let config = load_with(&path, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let broker = &config.sources["broker"];
        assert_eq!(broker.max_connections, 4);
        let SourceKind::Rabbitmq(rabbit) = &broker.kind else {
            panic!("broker is not a rabbitmq source");
        };
        // Ready for `/api/…` to be appended.
        assert_eq!(rabbit.url, "https://rabbit.example.com/mgmt");
        assert_eq!(rabbit.username, "lagbudget");
        assert_eq!(rabbit.password.expose(), "rabbit-secret-pw");
        assert!(!format!("{rabbit:?}").contains("rabbit-secret-pw"));
        assert_eq!(config.secrets.scrub("pw rabbit-secret-pw"), "pw ***");
        assert_eq!(config.sources["local"].max_connections, 2);
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
    fn rabbitmq_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  a: { rabbitmq: { url: "ftp://rabbit", username: u, password: p } }
  b: { rabbitmq: { url: "http://rabbit:15672/?x=1", username: "", password: p, vhost: "/" } }
  c: { rabbitmq: { url: "${RABBIT_URL}", username: u } }
  d: { rabbitmq: { url: "not a url", username: u, password: p, max_connections: 0 } }
  e: { rabbitmq: { url: "http://rabbit:15672/api/", username: u, password: p } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: q
        rabbitmq_queue: { source: a, queue: "", timestamps: "no" }
"#;
        let env = |name: &str| (name == "RABBIT_URL").then(|| "http://u:rabbit-pw@x".to_owned());
        let expected = [
            "3:25: sources.a.rabbitmq.url: invalid management API url \"ftp://rabbit\": scheme \"ftp\" is not http or https; expected such as http://rabbit:15672",
            "4:25: sources.b.rabbitmq.url: invalid management API url \"http://rabbit:15672/?x=1\": it has a query or fragment; expected such as http://rabbit:15672",
            "4:63: sources.b.rabbitmq.username: must not be empty",
            "4:80: sources.b.rabbitmq.vhost: unknown key `vhost`; valid keys: url, username, password, max_connections",
            "5:18: sources.c.rabbitmq: missing required key `password`",
            "5:25: sources.c.rabbitmq.url: invalid management API url \"${RABBIT_URL}\": it holds credentials; put them in `username` and `password`; expected such as http://rabbit:15672",
            "6:25: sources.d.rabbitmq.url: invalid management API url \"not a url\": relative URL without a base; expected such as http://rabbit:15672",
            "6:81: sources.d.rabbitmq.max_connections: must be between 1 and 64, found 0",
            "7:25: sources.e.rabbitmq.url: invalid management API url \"http://rabbit:15672/api/\": it ends in /api; give the base url, lagbudget adds /api/…; expected such as http://rabbit:15672",
            "13:45: budgets[0].probes[0].rabbitmq_queue.queue: must not be empty",
            "13:61: budgets[0].probes[0].rabbitmq_queue.timestamps: expected true or false, found the string \"no\"",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("rabbit-pw")));
    }

    const MYSQL: &str = r#"
sources:
  primary: { mysql: { url: "mysql://lagbudget:${MYSQL_PASSWORD}@db-1:3307/shop" } }
  replica-a: { mysql: { url: "mysql://lagbudget:${MYSQL_PASSWORD}@db-2/shop", max_connections: 2 } }
  replica-b: { mysql: { url: "mysql://db-3" } }
budgets:
  - name: reads
    max_lag: 5s
    probes:
      - name: replicas
        mysql_replica: { primary: primary, replicas: [replica-a, replica-b] }
      - name: tuned
        max_lag: 60s
        mysql_replica:
          primary: primary
          replicas: [replica-b]
          write_period: 250ms
          database: lb_heartbeat
          instance: eu-1
          ryw_delay: 2s
      - name: slow-budget
        max_lag: 1h
        mysql_replica: { primary: primary, replicas: [replica-a] }
"#;

    #[test]
    fn mysql_replica_probes_expand_to_one_probe_per_replica() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, MYSQL).expect("config");
        let env = |name: &str| (name == "MYSQL_PASSWORD").then(|| "mysql-secret-pw".to_owned());
        let config = match load_with(&path, &env) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };
        let SourceKind::Mysql(primary) = &config.sources["primary"].kind else {
            panic!("primary is not a mysql source");
        };
        assert_eq!(primary.redacted, "mysql://lagbudget@db-1:3307/shop");
        assert!(!format!("{:?}", config.sources).contains("mysql-secret-pw"));
        assert_eq!(config.secrets.scrub("pw mysql-secret-pw"), "pw ***");
        assert_eq!(config.sources["primary"].max_connections, 4);
        assert_eq!(config.sources["replica-a"].max_connections, 2);

        let probes = &config.budgets[0].probes;
        let entries: Vec<(&str, Option<&str>)> = probes
            .iter()
            .map(|p| (p.name.as_str(), p.replica.as_deref()))
            .collect();
        assert_eq!(
            entries,
            [
                ("replicas", Some("replica-a")),
                ("replicas", Some("replica-b")),
                ("tuned", Some("replica-b")),
                ("slow-budget", Some("replica-a")),
            ]
        );
        let expected = |replica: &str, period_ms: u64| MysqlReplica {
            primary: "primary".to_owned(),
            replica: replica.to_owned(),
            // max_lag / 10, between 100ms and 1s.
            write_period: Duration::from_millis(period_ms),
            database: "lagbudget".to_owned(),
            instance: None,
            ryw_delay: None,
        };
        assert_eq!(
            probes[0].kind,
            ProbeKind::MysqlReplica(expected("replica-a", 500))
        );
        assert_eq!(
            probes[1].kind,
            ProbeKind::MysqlReplica(expected("replica-b", 500))
        );
        assert_eq!(probes[0].source_names(), ["primary", "replica-a"]);
        assert_eq!(probes[0].kind_key(), "mysql_replica");
        assert_eq!(
            probes[2].kind,
            ProbeKind::MysqlReplica(MysqlReplica {
                write_period: Duration::from_millis(250),
                database: "lb_heartbeat".to_owned(),
                instance: Some("eu-1".to_owned()),
                ryw_delay: Some(Duration::from_secs(2)),
                ..expected("replica-b", 0)
            })
        );
        assert_eq!(
            probes[3].kind,
            ProbeKind::MysqlReplica(expected("replica-a", 1000))
        );
    }

    #[test]
    fn mysql_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  primary: { mysql: { url: "postgres://u:topsecret@db/x" } }
  bad-url: { mysql: { url: "mysql://u:${PW}@db:99999/x" } }
  bad-param: { mysql: { url: "mysql://db/x?frobnicate=1" } }
  replica: { mysql: { url: "mysql://db-2/x", dsn: x } }
  pg: { postgres: { dsn: host=pg } }
budgets:
  - name: b
    max_lag: 4s
    probes:
      - name: self
        mysql_replica: { primary: replica, replicas: [replica, pg, nowhere, pg] }
      - name: settings
        mysql_replica:
          primary: pg
          replicas: []
          write_period: 3s
          database: "lag-budget"
          ryw_delay: 11m
          instance: ""
      - name: missing
        mysql_replica: { replicas: [replica] }
      - name: period
        mysql_replica: { primary: primary, replicas: [replica], write_period: 3s }
"#;
        let env = |name: &str| (name == "PW").then(|| "env-secret".to_owned());
        let expected = [
            "3:28: sources.primary.mysql.url: invalid MySQL URL: scheme \"postgres\" is not supported; expected mysql://user:password@host:3306/database",
            "4:28: sources.bad-url.mysql.url: invalid MySQL URL: invalid port number; expected mysql://user:password@host:3306/database",
            "5:30: sources.bad-param.mysql.url: invalid MySQL URL: unknown parameter \"frobnicate\"",
            "6:46: sources.replica.mysql.dsn: unknown key `dsn`; valid keys: url, max_connections",
            "13:55: budgets[0].probes[0].mysql_replica.replicas[0]: replica \"replica\" is the primary: a server cannot be measured against itself",
            "13:64: budgets[0].probes[0].mysql_replica.replicas[1]: source \"pg\" is a postgres source; mysql_replica needs mysql",
            "13:68: budgets[0].probes[0].mysql_replica.replicas[2]: unknown source \"nowhere\"; defined sources: bad-param, bad-url, pg, primary, replica",
            "13:77: budgets[0].probes[0].mysql_replica.replicas[3]: duplicate replica \"pg\"",
            "13:77: budgets[0].probes[0].mysql_replica.replicas[3]: source \"pg\" is a postgres source; mysql_replica needs mysql",
            "16:20: budgets[0].probes[1].mysql_replica.primary: source \"pg\" is a postgres source; mysql_replica needs mysql",
            "17:21: budgets[0].probes[1].mysql_replica.replicas: must list at least one item",
            "19:21: budgets[0].probes[1].mysql_replica.database: invalid database \"lag-budget\": use letters, digits, `_` and `$`, at most 64 characters",
            "20:22: budgets[0].probes[1].mysql_replica.ryw_delay: ryw_delay 11m is above the maximum of 10m",
            "21:21: budgets[0].probes[1].mysql_replica.instance: must not be empty",
            "23:24: budgets[0].probes[2].mysql_replica: missing required key `primary`",
            "25:79: budgets[0].probes[3].mysql_replica.write_period: write_period 3s is above half of max_lag 4s: lag is only measured to within one write period",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }

    #[test]
    fn replica_probes_expand_into_one_probe_per_standby_with_defaults() {
        let text = r#"
sources:
  orders-db: { postgres: { dsn: host=primary } }
  replica-a: { postgres: { dsn: host=a } }
  replica-b: { postgres: { dsn: host=b } }
budgets:
  - name: history
    max_lag: 5s
    probes:
      - name: standbys
        postgres_replica: { primary: orders-db, standbys: [replica-a, replica-b], method: heartbeat }
      - name: passive
        postgres_replica: { primary: orders-db, standbys: [replica-b], method: passive, receiver_silence_limit: 20s }
  - name: slow
    max_lag: 1h
    probes:
      - name: tuned
        postgres_replica:
          primary: orders-db
          standbys: [replica-a]
          method: heartbeat
          write_period: 2s
          schema: ops_lagbudget
          instance: daemon-1
          ryw_delay: 500ms
"#;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lagbudget.yaml");
        std::fs::write(&path, text).expect("config");
        let config = match load_with(&path, &|_| None) {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        };
        let probes = &config.budgets[0].probes;
        let keys: Vec<(&str, Option<&str>)> = probes.iter().map(|p| p.key()).collect();
        assert_eq!(
            keys,
            [
                ("standbys", Some("replica-a")),
                ("standbys", Some("replica-b")),
                ("passive", Some("replica-b")),
            ]
        );
        let ProbeKind::PostgresReplica(first) = &probes[0].kind else {
            panic!("not a replica probe");
        };
        assert_eq!(probes[0].source_name(), "replica-a");
        assert_eq!(probes[0].source_names(), ["replica-a", "orders-db"]);
        assert_eq!(first.primary, "orders-db");
        // max_lag / 10 = 500ms; the host name is the default instance.
        let ReplicaMethod::Heartbeat(heartbeat) = &first.method else {
            panic!("not heartbeat");
        };
        assert_eq!(heartbeat.period, Duration::from_millis(500));
        assert_eq!(heartbeat.schema, "lagbudget");
        assert!(!heartbeat.instance.is_empty());
        assert_eq!(heartbeat.ryw_delay, None);
        assert!(!probes[0].checks_read_your_writes());
        let ProbeKind::PostgresReplica(passive) = &probes[2].kind else {
            panic!("not a replica probe");
        };
        assert_eq!(
            passive.method,
            ReplicaMethod::Passive {
                receiver_silence_limit: Duration::from_secs(20)
            }
        );
        let tuned = &config.budgets[1].probes[0];
        let ProbeKind::PostgresReplica(PostgresReplica {
            method: ReplicaMethod::Heartbeat(tuned_heartbeat),
            ..
        }) = &tuned.kind
        else {
            panic!("not heartbeat");
        };
        assert_eq!(
            *tuned_heartbeat,
            HeartbeatSettings {
                period: Duration::from_secs(2),
                schema: "ops_lagbudget".to_owned(),
                instance: "daemon-1".to_owned(),
                ryw_delay: Some(Duration::from_millis(500)),
            }
        );
        assert!(tuned.checks_read_your_writes());
    }

    #[test]
    fn replica_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  db: { postgres: { dsn: host=db } }
  standby: { postgres: { dsn: host=standby } }
  events: { kafka: { brokers: "k:9092" } }
budgets:
  - name: b
    max_lag: 5s
    probes:
      - name: self
        postgres_replica: { primary: db, standbys: [standby, db, standby], method: heartbeat }
      - name: passive-writes
        postgres_replica: { primary: db, standbys: [standby], method: passive, ryw_delay: 1s, schema: x, instance: me, write_period: 1s }
      - name: heartbeat-silence
        postgres_replica: { primary: db, standbys: [standby], method: heartbeat, receiver_silence_limit: 10s, schema: "Bad-Schema" }
      - name: kinds
        postgres_replica: { primary: events, standbys: [nowhere], method: both }
      - name: none
        postgres_replica: { primary: db, standbys: [] }
"#;
        let expected = [
            "11:62: budgets[0].probes[0].postgres_replica.standbys[1]: standby \"db\" is the primary: a server cannot be its own standby",
            "11:66: budgets[0].probes[0].postgres_replica.standbys[2]: duplicate standby \"standby\"",
            "13:80: budgets[0].probes[1].postgres_replica.ryw_delay: `ryw_delay` needs `method: heartbeat`: a read-your-writes check needs a write, and passive writes nothing",
            "13:95: budgets[0].probes[1].postgres_replica.schema: `schema` needs `method: heartbeat`: passive writes nothing",
            "13:106: budgets[0].probes[1].postgres_replica.instance: `instance` needs `method: heartbeat`: passive writes nothing",
            "13:120: budgets[0].probes[1].postgres_replica.write_period: `write_period` needs `method: heartbeat`: passive writes nothing",
            "15:82: budgets[0].probes[2].postgres_replica.receiver_silence_limit: `receiver_silence_limit` needs `method: passive`; with heartbeat a silent receiver shows as growing lag",
            "15:119: budgets[0].probes[2].postgres_replica.schema: invalid schema \"Bad-Schema\": use lower-case letters, digits and _, starting with a letter or _, at most 63 characters",
            "17:38: budgets[0].probes[3].postgres_replica.primary: source \"events\" is a kafka source; postgres_replica needs postgres",
            "17:57: budgets[0].probes[3].postgres_replica.standbys[0]: unknown source \"nowhere\"; defined sources: db, events, standby",
            "17:75: budgets[0].probes[3].postgres_replica.method: invalid value \"both\": expected one of heartbeat, passive",
            "19:27: budgets[0].probes[4].postgres_replica: missing required key `method`",
            "19:52: budgets[0].probes[4].postgres_replica.standbys: must list at least one item",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }

    #[test]
    fn errors_display_one_per_line() {
        let error = |line, message: &str| ConfigError {
            file: "x.yaml".to_owned(),
            line,
            column: 3,
            path: "budgets[0].name".to_owned(),
            message: message.to_owned(),
        };
        let errors = ConfigErrors(vec![error(1, "first"), error(2, "second")]);
        assert_eq!(
            errors.to_string(),
            "x.yaml:1:3: budgets[0].name: first\nx.yaml:2:3: budgets[0].name: second"
        );
    }
}
