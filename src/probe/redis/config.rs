//! The `redis` source kind's config: its table, its model and how its connection is read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{NonEmpty, Scalar};
use crate::model::{Secret, SourceKind};

/// A Redis server, reached through one multiplexed connection per source.
#[derive(Clone, PartialEq)]
pub struct RedisSource {
    /// `redis://[user:password@]host:port[/db]` after interpolation. It may hold a password, so
    /// it is never printed: use `redacted` for humans.
    pub url: Secret,
    /// The URL with its password replaced by `***`.
    pub redacted: String,
}

impl fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSource")
            .field("url", &self.redacted)
            .finish()
    }
}

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
        ctx.remember_url_password(&url.value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn redis_sources_resolve_to_the_model() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://lagbudget:${REDIS_PASSWORD}@cache-1:6380/2" } }
  local: { redis: { url: "redis://127.0.0.1" } }
"#;
        let env =
            |name: &str| (name == "REDIS_PASSWORD").then(|| "redis-secret-password".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
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
    }

    #[test]
    fn redis_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://:hunter2-secret@cache-1:x" } }
  tls: { redis: { url: "rediss://cache-2:6380", max_connections: 2 } }
  env: { redis: { url: "${REDIS_URL}" } }
"#;
        let env = |name: &str| (name == "REDIS_URL").then(|| "redis://:env-secret@".to_owned());
        let expected = [
            "3:26: sources.cache.redis.url: invalid Redis URL \"redis://:***@cache-1:x\": Redis URL did not parse; expected redis://[user:password@]host[:port][/db]",
            "4:24: sources.tls.redis.url: TLS (rediss://) is not supported yet; use redis:// on a trusted network",
            "4:49: sources.tls.redis.max_connections: unknown key `max_connections`; valid keys: url",
            "5:24: sources.env.redis.url: invalid Redis URL \"${REDIS_URL}\": Redis URL did not parse; expected redis://[user:password@]host[:port][/db]",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }
}
