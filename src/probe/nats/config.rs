//! The `nats` source kind's config: its table, its model and how its connection is read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{NonEmpty, Scalar};
use crate::model::{Secret, SourceKind};

/// A NATS server (or cluster entry point) with JetStream, reached through one client per source.
#[derive(Clone, PartialEq)]
pub struct NatsSource {
    /// `nats://[user:password@]host:port` after interpolation; never printed.
    pub url: Secret,
    /// The URL with its password replaced by `***`.
    pub redacted: String,
}

impl fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSource")
            .field("url", &self.redacted)
            .finish()
    }
}

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
        ctx.remember_url_password(&url.value);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn nats_sources_resolve_to_the_model() {
        let text = r#"
sources:
  bus: { nats: { url: "nats://reader:${NATS_PASSWORD}@nats-1:4222" } }
  token: { nats: { url: "nats://s3cr3t-token@nats-2" } }
"#;
        let env = |name: &str| (name == "NATS_PASSWORD").then(|| "nats-secret-password".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let SourceKind::Nats(bus) = &config.sources["bus"].kind else {
            panic!("bus is not a nats source");
        };
        assert_eq!(bus.redacted, "nats://reader:***@nats-1:4222");
        assert_eq!(config.sources["bus"].kind.key(), "nats");
        assert_eq!(config.sources["bus"].max_connections, 1);
        let SourceKind::Nats(token) = &config.sources["token"].kind else {
            panic!("token is not a nats source");
        };
        // A user without a password is how NATS URLs carry a token.
        assert_eq!(token.redacted, "nats://***@nats-2:4222");
        for secret in ["nats-secret-password", "s3cr3t-token"] {
            assert_eq!(config.secrets.scrub(secret), "***");
            assert!(!format!("{config:?}").contains(secret));
        }
    }

    #[test]
    fn nats_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  bus: { nats: { url: "tls://nats-1:4222" } }
  empty: { nats: { url: "" } }
"#;
        let expected = [
            "3:23: sources.bus.nats.url: invalid NATS URL \"tls://nats-1:4222\": only nats:// is supported (no TLS or websockets yet)",
            "4:25: sources.empty.nats.url: must not be empty",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
