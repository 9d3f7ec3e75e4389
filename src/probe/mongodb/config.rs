//! The `mongodb` source kind's config: its table, its model and how its URI is read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::config_table;
use crate::config::tables::SourceKindConfig;
use crate::config::value::{Count, NonEmpty, Scalar};
use crate::model::{Secret, SourceKind};

/// The port a seed without one is reached on, as the driver does.
pub const DEFAULT_PORT: u16 = 27017;

/// A MongoDB replica set (or a single server), reached through the official driver.
#[derive(Clone, PartialEq)]
pub struct MongodbSource {
    /// `mongodb://[user:password@]host[:port][,host[:port]…][/[db]][?options]` after
    /// interpolation. It may hold a password, so it is never printed: use `redacted`.
    pub uri: Secret,
    /// The URI with its password replaced by `***`.
    pub redacted: String,
    /// The seed list as `host:port` (the port filled in), in the URI's order: the members a
    /// `mongodb_replica` probe measures unless it lists its own.
    pub seeds: Vec<String>,
    /// The URI's `replicaSet`, when it names one.
    pub replica_set: Option<String>,
}

impl fmt::Debug for MongodbSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongodbSource")
            .field("uri", &self.redacted)
            .field("seeds", &self.seeds)
            .field("replica_set", &self.replica_set)
            .finish()
    }
}

config_table! {
    /// A MongoDB replica set, through the official Rust driver.
    ///
    /// One client for the set (server discovery and monitoring, writes go to the primary) and,
    /// for `mongodb_replica`, one direct connection per member. mongodb+srv:// seed lists are
    /// not supported (the driver is built without a DNS resolver).
    pub(crate) struct MongodbSourceConfig = "mongodb" {
        /// `mongodb://[user:password@]host[:port][,host[:port]…][/][?replicaSet=NAME&…]`, the
        /// driver's connection string. Put the password in ${VAR} or ${file:/path}; it is
        /// never printed.
        uri: NonEmpty<MongodbUri>,
        /// Connections per server, at most (the driver's maxPoolSize), shared by every probe of
        /// this source.
        max_connections: Count<1, 64> = 4,
    }
}

impl SourceKindConfig for MongodbSourceConfig {
    fn resolve(&self) -> Option<(SourceKind, usize)> {
        Some((
            SourceKind::Mongodb(self.uri.clone()?),
            usize::try_from(self.max_connections?).ok()?,
        ))
    }
}

/// A MongoDB connection string, its password remembered as a secret. The driver's parser
/// checks it; its messages are scrubbed of the password like every config error.
pub(crate) struct MongodbUri;

impl Scalar for MongodbUri {
    type Out = MongodbSource;

    fn parse(ctx: &mut Ctx<'_>, uri: &Text) -> Option<MongodbSource> {
        // Remember the password before anything can fail, so that no later message shows it.
        ctx.remember_url_password(&uri.value);
        let problem = if uri.value.starts_with("mongodb+srv://") {
            Err(
                "mongodb+srv:// is not supported (no DNS resolver is built in); list the \
                 members: mongodb://host1,host2,host3/?replicaSet=NAME"
                    .to_owned(),
            )
        } else {
            mongodb::options::ConnectionString::parse(&uri.value).map_err(|error| {
                format!(
                    "invalid MongoDB URI {}: {}; expected \
                     mongodb://[user:password@]host[:port][,host…][/][?replicaSet=NAME]",
                    uri.quoted(),
                    error.kind
                )
            })
        };
        let parsed = match problem {
            Ok(parsed) => parsed,
            Err(message) => {
                ctx.error(uri.span, &uri.path, message);
                return None;
            }
        };
        let seeds = match &parsed.host_info {
            mongodb::options::HostInfo::HostIdentifiers(hosts) => hosts
                .iter()
                .map(|host| match host {
                    mongodb::options::ServerAddress::Tcp { host, port } => {
                        format!("{host}:{}", port.unwrap_or(DEFAULT_PORT))
                    }
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(MongodbSource {
            uri: Secret::new(uri.value.clone()),
            redacted: redact(&uri.value),
            seeds,
            replica_set: parsed.replica_set.clone(),
        })
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// The URI with the password of its user info replaced by `***`.
fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "***".to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        // User info without a colon is a token of its own: the config remembers it as a secret.
        Some((user_info, hosts)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{tail}"),
            None => format!("{scheme}://***@{hosts}{tail}"),
        },
        None => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn mongodb_sources_resolve_to_the_model() {
        let text = r#"
sources:
  profiles: { mongodb: { uri: "mongodb://lagbudget:${MONGO_PASSWORD}@m1,m2:27018,m3/?replicaSet=rs0" } }
  single: { mongodb: { uri: "mongodb://127.0.0.1:4000", max_connections: 2 } }
"#;
        let env = |name: &str| (name == "MONGO_PASSWORD").then(|| "mongo-secret-pw".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let SourceKind::Mongodb(profiles) = &config.sources["profiles"].kind else {
            panic!("profiles is not a mongodb source");
        };
        assert_eq!(
            profiles.redacted,
            "mongodb://lagbudget:***@m1,m2:27018,m3/?replicaSet=rs0"
        );
        assert_eq!(profiles.seeds, ["m1:27017", "m2:27018", "m3:27017"]);
        assert_eq!(profiles.replica_set.as_deref(), Some("rs0"));
        assert_eq!(config.sources["profiles"].max_connections, 4);
        assert_eq!(config.sources["profiles"].kind.key(), "mongodb");
        let SourceKind::Mongodb(single) = &config.sources["single"].kind else {
            panic!("single is not a mongodb source");
        };
        assert_eq!(single.seeds, ["127.0.0.1:4000"]);
        assert_eq!(single.replica_set, None);
        assert_eq!(config.sources["single"].max_connections, 2);
        assert_eq!(config.secrets.scrub("mongo-secret-pw"), "***");
        assert!(!format!("{config:?}").contains("mongo-secret-pw"));
    }

    #[test]
    fn mongodb_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  srv: { mongodb: { uri: "mongodb+srv://u:hunter2-secret@cluster.example.net" } }
  scheme: { mongodb: { uri: "postgres://u:other-secret@db" } }
  empty: { mongodb: { uri: "" } }
  pool: { mongodb: { uri: "mongodb://m1", max_connections: 0 } }
"#;
        let env = |_: &str| None;
        let expected = [
            "3:26: sources.srv.mongodb.uri: mongodb+srv:// is not supported (no DNS resolver is built in); list the members: mongodb://host1,host2,host3/?replicaSet=NAME",
            "4:29: sources.scheme.mongodb.uri: invalid MongoDB URI \"postgres://u:***@db\": An invalid argument was provided: unsupported connection string scheme: postgres; expected mongodb://[user:password@]host[:port][,host…][/][?replicaSet=NAME]",
            "5:28: sources.empty.mongodb.uri: must not be empty",
            "6:60: sources.pool.mongodb.max_connections: must be between 1 and 64, found 0",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }

    #[test]
    fn only_the_password_is_redacted() {
        assert_eq!(
            redact("mongodb://m1/?replicaSet=rs0"),
            "mongodb://m1/?replicaSet=rs0"
        );
        assert_eq!(redact("mongodb://u:p@m1,m2/db"), "mongodb://u:***@m1,m2/db");
        assert_eq!(redact("mongodb://token@m1"), "mongodb://***@m1");
    }
}
