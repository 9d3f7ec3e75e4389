//! The `mysql` source kind's config: its table, its model and how its connection is read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{Count, NonEmpty, Scalar};
use crate::model::{Secret, SourceKind};

#[derive(Clone, PartialEq)]
pub struct MysqlSource {
    /// The `mysql://` URL after interpolation. It may hold a password, so it is never printed:
    /// use `redacted` for humans.
    pub url: Secret,
    /// `mysql://user@host:port/database`, without the password, for logs and `check`.
    pub redacted: String,
}

impl fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlSource")
            .field("url", &self.redacted)
            .finish()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn mysql_sources_resolve_to_the_model() {
        let text = r#"
sources:
  primary: { mysql: { url: "mysql://lagbudget:${MYSQL_PASSWORD}@db-1:3307/shop" } }
  replica-a: { mysql: { url: "mysql://lagbudget:${MYSQL_PASSWORD}@db-2/shop", max_connections: 2 } }
"#;
        let env = |name: &str| (name == "MYSQL_PASSWORD").then(|| "mysql-secret-pw".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let SourceKind::Mysql(primary) = &config.sources["primary"].kind else {
            panic!("primary is not a mysql source");
        };
        assert_eq!(primary.redacted, "mysql://lagbudget@db-1:3307/shop");
        assert!(!format!("{:?}", config.sources).contains("mysql-secret-pw"));
        assert_eq!(config.secrets.scrub("pw mysql-secret-pw"), "pw ***");
        assert_eq!(config.sources["primary"].max_connections, 4);
        assert_eq!(config.sources["replica-a"].max_connections, 2);
    }

    #[test]
    fn mysql_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  primary: { mysql: { url: "postgres://u:topsecret@db/x" } }
  bad-url: { mysql: { url: "mysql://u:${PW}@db:99999/x" } }
  bad-param: { mysql: { url: "mysql://db/x?frobnicate=1" } }
  replica: { mysql: { url: "mysql://db-2/x", dsn: x } }
"#;
        let env = |name: &str| (name == "PW").then(|| "env-secret".to_owned());
        let expected = [
            "3:28: sources.primary.mysql.url: invalid MySQL URL: scheme \"postgres\" is not supported; expected mysql://user:password@host:3306/database",
            "4:28: sources.bad-url.mysql.url: invalid MySQL URL: invalid port number; expected mysql://user:password@host:3306/database",
            "5:30: sources.bad-param.mysql.url: invalid MySQL URL: unknown parameter \"frobnicate\"",
            "6:46: sources.replica.mysql.dsn: unknown key `dsn`; valid keys: url, max_connections",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }
}
