//! The `postgres` source kind's config: its table, its model and how its connection is read.

use std::error::Error as _;
use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{Count, NonEmpty, Scalar};
use crate::model::{Secret, SourceKind};

#[derive(Clone, PartialEq)]
pub struct PostgresSource {
    /// The libpq-style connection string after interpolation. It may hold a password, so it is
    /// never printed: use `redacted` for humans.
    pub dsn: Secret,
    /// `host=… port=… dbname=… user=…` without the password, for logs and `check`.
    pub redacted: String,
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSource")
            .field("dsn", &self.redacted)
            .finish()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn postgres_sources_keep_the_dsn_secret_and_show_it_redacted() {
        let text = r#"
sources:
  orders: { postgres: { dsn: "host=a port=5433 user=lb password=${PG_PASSWORD} dbname=shop", max_connections: 8 } }
  url: { postgres: { dsn: "postgresql://lb:${PG_PASSWORD}@b/shop" } }
  socket: { postgres: { dsn: "host='/run/my pg' dbname=x" } }
"#;
        let env = |name: &str| (name == "PG_PASSWORD").then(|| "pg-secret-pw".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let redacted = |name: &str| match &config.sources[name].kind {
            SourceKind::Postgres(postgres) => postgres.redacted.clone(),
            other => panic!("{name} is a {} source", other.key()),
        };
        assert_eq!(redacted("orders"), "host=a port=5433 dbname=shop user=lb");
        assert_eq!(redacted("url"), "host=b port=5432 dbname=shop user=lb");
        assert_eq!(redacted("socket"), "host='/run/my pg' dbname=x");
        assert_eq!(config.sources["orders"].max_connections, 8);
        assert_eq!(config.sources["url"].max_connections, 4);
        assert_eq!(config.secrets.scrub("pw pg-secret-pw"), "pw ***");
        assert!(!format!("{config:?}").contains("pg-secret-pw"));
    }

    #[test]
    fn postgres_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  no-host: { postgres: { dsn: "dbname=x password=${PG_PASSWORD}" } }
  bad-option: { postgres: { dsn: "host=a frobnicate=1" } }
  empty: { postgres: { dsn: "", max_connections: 65 } }
"#;
        let env = |name: &str| (name == "PG_PASSWORD").then(|| "pg-secret-pw".to_owned());
        let expected = [
            "3:31: sources.no-host.postgres.dsn: invalid PostgreSQL connection string: no host (add host=…)",
            "4:34: sources.bad-option.postgres.dsn: invalid PostgreSQL connection string: unknown option `frobnicate`",
            "5:29: sources.empty.postgres.dsn: must not be empty",
            "5:50: sources.empty.postgres.max_connections: must be between 1 and 64, found 65",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
