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

    use super::*;
    use crate::model::{Objective, ProbeKind, SourceKind, SqlWatermark, WatermarkMode};

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
                { "required": ["redis_key_age"] },
                { "required": ["http_watermark"] },
                { "required": ["canary"] },
                { "required": ["reconcile"] },
                { "required": ["dynamodb_stream"] },
                { "required": ["mongodb_replica"] },
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
                { "required": ["http"] },
                { "required": ["dynamodb"] },
                { "required": ["mongodb"] },
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

    #[test]
    fn the_history_window_is_positive_and_at_most_a_day() {
        let text = |window: &str| {
            format!(
                "http:\n  history_window: {window}\nsources:\n  db: {{ postgres: {{ dsn: host=db }} }}\nbudgets: []\n"
            )
        };
        let config = testing::load_text(&text("30m"), &|_| None).expect("valid");
        assert_eq!(config.http.history_window, Duration::from_secs(1800));
        assert_eq!(
            testing::errors_of(&text("25h"), &|_| None),
            [
                "2:19: http.history_window: must be at most 24h: the status page keeps a coarser summary of the last 24h beside it"
            ]
        );
        assert_eq!(
            testing::errors_of(&text("0s"), &|_| None),
            ["2:19: http.history_window: must be greater than 0s"]
        );
    }
}
