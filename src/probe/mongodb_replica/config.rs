//! The `mongodb_replica` kind's config: its table, its model and what it checks.

use std::time::Duration;

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope};
use crate::config::value::{Choice, NonEmpty, PositiveDuration, ReadsSource, Scalar, SourceRef};
use crate::model::{ProbeKind, SourceKind};
use crate::probe::heartbeat::config::{default_instance, resolve_write_period};
use crate::probe::mongodb::config::{DEFAULT_PORT, MongodbSourceConfig};

/// One member of a MongoDB replica set, measured against the set's primary. A configured probe
/// becomes one `Probe` per expected member (its `members`, else the source URI's seed list),
/// labelled `replica` with the member's `host:port`.
#[derive(Debug, Clone, PartialEq)]
pub struct MongodbReplica {
    /// The mongodb source of the set.
    pub source: String,
    /// The member this entry measures, `host:port` as the set names it (also `Probe::replica`).
    pub member: String,
    pub method: MongodbReplicaMethod,
}

/// How a member's lag is measured; chosen in the config, never switched at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum MongodbReplicaMethod {
    /// Read-only: the member's applied optime, and the primary's first oplog entry after it
    /// that is not a no-op.
    Oplog {
        /// The primary's no-op write period (`periodicNoopIntervalSecs`, 10 s by default): a
        /// member whose optime does not move for twice as long while the primary's does is not
        /// applying.
        noop_period: Duration,
    },
    /// The daemon writes a marker document on the primary and reads it on each member.
    Heartbeat(MongodbHeartbeat),
}

impl MongodbReplicaMethod {
    pub fn key(&self) -> &'static str {
        match self {
            MongodbReplicaMethod::Oplog { .. } => "oplog",
            MongodbReplicaMethod::Heartbeat(_) => "heartbeat",
        }
    }
}

/// What the heartbeat writer of one probe writes, where and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct MongodbHeartbeat {
    pub period: Duration,
    pub database: String,
    pub collection: String,
    /// This daemon's part of the document `_id` (default: the host name).
    pub instance: String,
}

config_table! {
    /// Members of a MongoDB replica set: lag of each member behind the primary.
    ///
    /// Each expected member is measured on its own over a direct connection, labelled
    /// `replica` with its host:port. A member the set does not list, that does not answer, or
    /// that is neither SECONDARY nor PRIMARY fails with reason=topology, never 0; a member that
    /// is the primary right now reads 0 ("primary").
    pub(crate) struct MongodbReplicaConfig = "mongodb_replica" {
        /// Name of the mongodb source of the set.
        source: SourceRef<MongodbReplica>,
        /// `oplog`: read-only; each member's applied optime, and the wall time of the
        /// primary's first oplog entry after it that is not a no-op (needs clusterMonitor and
        /// read on local). `heartbeat`: lagbudget writes a document on the primary every
        /// write period and reads it on each member (needs readWrite on `database`).
        method: Method,
        /// The members to measure, as host:port the way the set names them. Default: the
        /// source URI's seed list.
        members: Option<NonEmpty<Vec<Spanned<MemberAddress>>>>,
        /// The primary's periodic no-op write period (periodicNoopIntervalSecs) (oplog only): a
        /// member whose optime stays still for twice as long while the primary's moves is not
        /// applying.
        noop_period: PositiveDuration = "10s",
        /// How often the heartbeat is written (heartbeat only); at most max_lag / 2. Default:
        /// max_lag / 10, between 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// Database of the heartbeat collection (heartbeat only).
        database: NonEmpty<MongoName> = "lagbudget",
        /// Collection of the heartbeat documents, one per daemon instance and probe (heartbeat
        /// only).
        collection: NonEmpty<MongoName> = "heartbeat",
        /// This daemon's name in the heartbeat documents' `_id`, so that several daemons can
        /// write to one set (heartbeat only). Default: the host name.
        instance: Option<NonEmpty<String>>,
    }
}

impl ReadsSource for MongodbReplica {
    const KIND: &'static str = <MongodbReplicaConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <MongodbSourceConfig as Table>::TABLE.id;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Oplog,
    Heartbeat,
}

impl Choice for Method {
    const ALL: &'static [Self] = &[Method::Oplog, Method::Heartbeat];

    fn key(self) -> &'static str {
        match self {
            Method::Oplog => "oplog",
            Method::Heartbeat => "heartbeat",
        }
    }
}

/// A member's `host:port`; the port defaults to 27017, as in a URI.
pub(crate) struct MemberAddress;

impl Scalar for MemberAddress {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<String> {
        let value = text.value.trim();
        let (host, port) = match value.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)),
            None => (value, Some(DEFAULT_PORT)),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        match port {
            Some(port) if host_ok => Some(format!("{host}:{port}")),
            _ => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!(
                        "invalid member {}: expected host:port, such as m1.example.net:27017",
                        text.quoted()
                    ),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// A database or collection name that needs no escaping anywhere: letters, digits, `_` and
/// `-`, at most 63 characters.
pub(crate) struct MongoName;

impl Scalar for MongoName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        let valid = name.value.len() <= 63
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid name {}: use letters, digits, `_` and `-`, at most 63 characters",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for MongodbReplicaConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        let mut seen: Vec<&str> = Vec::new();
        for member in self.members.iter().flatten() {
            if seen.contains(&member.value.as_str()) {
                ctx.error(
                    member.span,
                    &member.path,
                    format!("duplicate member {}", member.quoted()),
                );
                ok = false;
            } else {
                seen.push(&member.value);
            }
        }
        let wrong_method: &[(Option<_>, &str, &str)] = match self.method {
            Some(Method::Oplog) => &[
                (
                    written!(self.write_period),
                    "write_period",
                    "`write_period` needs `method: heartbeat`: oplog writes nothing",
                ),
                (
                    written!(self.database),
                    "database",
                    "`database` needs `method: heartbeat`: oplog writes nothing",
                ),
                (
                    written!(self.collection),
                    "collection",
                    "`collection` needs `method: heartbeat`: oplog writes nothing",
                ),
                (
                    written!(self.instance),
                    "instance",
                    "`instance` needs `method: heartbeat`: oplog writes nothing",
                ),
            ],
            Some(Method::Heartbeat) => &[(
                written!(self.noop_period),
                "noop_period",
                "`noop_period` needs `method: oplog`: with heartbeat a member that stops \
                 applying shows as growing lag",
            )],
            None => &[],
        };
        for (span, key, message) in wrong_method {
            if let Some(span) = span {
                ctx.error(*span, &self.keys.path_of(key), *message);
                ok = false;
            }
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let (Some(source), Some(method)) = (&self.source, self.method) else {
            return Vec::new();
        };
        let members: Vec<String> = match &self.members {
            Some(members) => members.iter().map(|m| m.value.clone()).collect(),
            // A reference to a missing or other-kind source is reported by the loader.
            None => match scope.sources.get(&source.value).map(|s| &s.kind) {
                Some(SourceKind::Mongodb(spec)) => spec.seeds.clone(),
                _ => return Vec::new(),
            },
        };
        let method = match method {
            Method::Oplog => MongodbReplicaMethod::Oplog {
                noop_period: self.noop_period.unwrap_or(Duration::from_secs(10)),
            },
            Method::Heartbeat => MongodbReplicaMethod::Heartbeat(MongodbHeartbeat {
                period: resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag),
                database: self.database.clone().unwrap_or_default(),
                collection: self.collection.clone().unwrap_or_default(),
                instance: self.instance.clone().unwrap_or_else(default_instance),
            }),
        };
        members
            .into_iter()
            .map(|member| ProbeEntry {
                kind: ProbeKind::MongodbReplica(MongodbReplica {
                    source: source.value.clone(),
                    member: member.clone(),
                    method: method.clone(),
                }),
                replica: Some(member),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn mongodb_replica_probes_expand_to_one_probe_per_member() {
        let text = r#"
sources:
  profiles: { mongodb: { uri: "mongodb://lagbudget:${PW}@m1,m2:27018,m3/?replicaSet=rs0" } }
budgets:
  - name: reads
    max_lag: 5s
    probes:
      - name: oplog
        mongodb_replica: { source: profiles, method: oplog }
      - name: listed
        mongodb_replica:
          source: profiles
          method: heartbeat
          members: [m2:27018, "m4"]
          write_period: 250ms
          database: lb
          collection: beats
          instance: eu-1
"#;
        let env = |name: &str| (name == "PW").then(|| "mongo-secret".to_owned());
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        let entries: Vec<(&str, Option<&str>)> = probes
            .iter()
            .map(|p| (p.name.as_str(), p.replica.as_deref()))
            .collect();
        assert_eq!(
            entries,
            [
                ("oplog", Some("m1:27017")),
                ("oplog", Some("m2:27018")),
                ("oplog", Some("m3:27017")),
                ("listed", Some("m2:27018")),
                ("listed", Some("m4:27017")),
            ]
        );
        assert_eq!(
            probes[0].kind,
            ProbeKind::MongodbReplica(MongodbReplica {
                source: "profiles".to_owned(),
                member: "m1:27017".to_owned(),
                method: MongodbReplicaMethod::Oplog {
                    noop_period: Duration::from_secs(10)
                },
            })
        );
        assert_eq!(
            probes[4].kind,
            ProbeKind::MongodbReplica(MongodbReplica {
                source: "profiles".to_owned(),
                member: "m4:27017".to_owned(),
                method: MongodbReplicaMethod::Heartbeat(MongodbHeartbeat {
                    period: Duration::from_millis(250),
                    database: "lb".to_owned(),
                    collection: "beats".to_owned(),
                    instance: "eu-1".to_owned(),
                }),
            })
        );
        assert_eq!(probes[0].kind_key(), "mongodb_replica");
        assert_eq!(probes[0].source_names(), ["profiles"]);
    }

    #[test]
    fn mongodb_replica_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  set: { mongodb: { uri: "mongodb://m1,m2/?replicaSet=rs0" } }
  pg: { postgres: { dsn: host=pg } }
budgets:
  - name: b
    max_lag: 4s
    probes:
      - name: wrong
        mongodb_replica: { source: pg, method: oplog, members: ["m1:x", m2, "m2:27017"], database: lb }
      - name: method
        mongodb_replica: { source: set, method: wal, noop_period: 5s }
      - name: heartbeat
        mongodb_replica: { source: set, method: heartbeat, noop_period: 5s, collection: "a.b" }
"#;
        let env = |_: &str| None;
        let expected = [
            "10:36: budgets[0].probes[0].mongodb_replica.source: source \"pg\" is a postgres source; mongodb_replica needs mongodb",
            "10:65: budgets[0].probes[0].mongodb_replica.members[0]: invalid member \"m1:x\": expected host:port, such as m1.example.net:27017",
            "10:77: budgets[0].probes[0].mongodb_replica.members[2]: duplicate member \"m2:27017\"",
            "10:90: budgets[0].probes[0].mongodb_replica.database: `database` needs `method: heartbeat`: oplog writes nothing",
            "12:49: budgets[0].probes[1].mongodb_replica.method: invalid value \"wal\": expected one of oplog, heartbeat",
            "14:60: budgets[0].probes[2].mongodb_replica.noop_period: `noop_period` needs `method: oplog`: with heartbeat a member that stops applying shows as growing lag",
            "14:89: budgets[0].probes[2].mongodb_replica.collection: invalid name \"a.b\": use letters, digits, `_` and `-`, at most 63 characters",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
