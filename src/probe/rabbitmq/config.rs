//! The `rabbitmq` source kind's config: its table, its model and how its connection is read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{Count, NonEmpty, Scalar, SecretString};
use crate::model::{Secret, SourceKind};
use crate::probe::http::config::base_url;

/// A RabbitMQ node's management HTTP API.
#[derive(Clone, PartialEq)]
pub struct RabbitmqSource {
    /// The management API's base URL (`http://rabbit:15672`), without credentials; requests go
    /// to `{url}/api/…`.
    pub url: String,
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for RabbitmqSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqSource")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

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
        let problem = match base_url(&url.value, "`username` and `password`", "") {
            Err(problem) => Some(problem),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn rabbitmq_sources_resolve_to_the_model() {
        let text = r#"
sources:
  broker:
    rabbitmq: { url: "https://rabbit.example.com/mgmt/", username: lagbudget, password: "${RABBIT_PASSWORD}" }
  local: { rabbitmq: { url: "http://127.0.0.1:15672", username: guest, password: guest, max_connections: 2 } }
"#;
        let env = |name: &str| (name == "RABBIT_PASSWORD").then(|| "rabbit-secret-pw".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
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
    }

    #[test]
    fn rabbitmq_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  a: { rabbitmq: { url: "ftp://rabbit", username: u, password: p } }
  b: { rabbitmq: { url: "http://rabbit:15672/?x=1", username: "", password: p, vhost: "/" } }
  c: { rabbitmq: { url: "${RABBIT_URL}", username: u } }
  d: { rabbitmq: { url: "not a url", username: u, password: p, max_connections: 0 } }
  e: { rabbitmq: { url: "http://rabbit:15672/api/", username: u, password: p } }
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
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("rabbit-pw")));
    }
}
