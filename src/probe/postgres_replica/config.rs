//! The `postgres_replica` kind's config: its table, its model and what it checks.

use std::time::Duration;

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope};
use crate::config::value::{Choice, NonEmpty, PositiveDuration, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::heartbeat::config::{check_replicas, default_instance, resolve_write_period};
use crate::probe::postgres::config::PostgresSourceConfig;

/// A PostgreSQL streaming standby's lag behind its primary. A configured probe with several
/// `standbys` becomes one `Probe` per standby (same name, `replica` set), each with this kind.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresReplica {
    /// The primary's source name.
    pub primary: String,
    /// The standby's source name; also the probe's `replica` label.
    pub standby: String,
    pub method: ReplicaMethod,
}

/// How a replica probe turns positions into seconds; chosen in the config, never switched at
/// run time.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaMethod {
    /// The daemon writes heartbeat rows on the primary and looks for them on the standby.
    Heartbeat(HeartbeatSettings),
    /// Read-only: LSNs sampled with the daemon's time into an LSN→time map.
    Passive {
        /// The WAL receiver silent (no message from the primary) for longer than this is down.
        receiver_silence_limit: Duration,
    },
}

impl ReplicaMethod {
    pub fn key(&self) -> &'static str {
        match self {
            ReplicaMethod::Heartbeat(_) => "heartbeat",
            ReplicaMethod::Passive { .. } => "passive",
        }
    }
}

/// What the heartbeat writer of one replica probe writes, where and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatSettings {
    /// How often the heartbeat is written (default min(1 s, max_lag / 10)).
    pub period: Duration,
    /// The schema of the heartbeat table on the primary.
    pub schema: String,
    /// This daemon's name in the heartbeat rows (default: the host name), so that several
    /// daemons writing to one primary never collide.
    pub instance: String,
    /// When set, each run checks that the newest heartbeat written at least this long before
    /// the read is visible on the standby (read-your-writes).
    pub ryw_delay: Option<Duration>,
}

config_table! {
    /// PostgreSQL streaming standbys of a primary: lag is the age of the oldest change not yet
    /// replayed on each standby.
    ///
    /// Each standby is measured on its own, labelled `replica` with its source name. Every run
    /// checks that the standby is in recovery, belongs to the primary's system and is on its
    /// timeline (else reason=topology).
    pub(crate) struct PostgresReplicaConfig = "postgres_replica" {
        /// Name of the postgres source of the primary.
        primary: SourceRef<PostgresReplica>,
        /// Names of the postgres sources of the standbys; each is the `replica` label of its
        /// series.
        standbys: NonEmpty<Vec<SourceRef<PostgresReplica>>>,
        /// `heartbeat`: lagbudget writes a row per write period into a table of its own on
        /// the primary and reads it on each standby (needs write access). `passive`:
        /// read-only; WAL positions sampled with the daemon's time.
        method: Method,
        /// How often the heartbeat is written (heartbeat only); at most max_lag / 2. Default:
        /// max_lag / 10, between 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// Schema of the heartbeat table on the primary, created if missing (heartbeat only).
        schema: NonEmpty<PlainIdentifier> = "lagbudget",
        /// This daemon's name in the heartbeat rows, so that several daemons can write to one
        /// primary (heartbeat only). Default: the host name.
        instance: Option<NonEmpty<String>>,
        /// Read-your-writes check (heartbeat only): each run checks that the newest heartbeat
        /// written at least this long before the read is visible on the standby.
        ryw_delay: Option<PositiveDuration>,
        /// A WAL receiver that has not heard from the primary for longer is down (passive
        /// only). An idle primary sends a keepalive at least every wal_sender_timeout / 2.
        receiver_silence_limit: PositiveDuration = "1m",
    }
}

impl ReadsSource for PostgresReplica {
    const KIND: &'static str = <PostgresReplicaConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <PostgresSourceConfig as Table>::TABLE.id;
}

/// How a replica probe turns positions into seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Heartbeat,
    Passive,
}

impl Choice for Method {
    const ALL: &'static [Self] = &[Method::Heartbeat, Method::Passive];

    fn key(self) -> &'static str {
        match self {
            Method::Heartbeat => "heartbeat",
            Method::Passive => "passive",
        }
    }
}

/// A schema name that needs no quoting and means the same to every client: lower-case.
pub(crate) struct PlainIdentifier;

impl Scalar for PlainIdentifier {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        let mut chars = name.value.chars();
        let plain = name.value.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid schema {}: use lower-case letters, digits and _, starting with a letter \
                 or _, at most 63 characters",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for PostgresReplicaConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = check_replicas(
            ctx,
            self.primary.as_ref(),
            self.standbys.iter().flatten(),
            "standby",
            "a server cannot be its own standby",
        );
        let wrong_method: &[(Option<_>, &str, &str)] = match self.method {
            Some(Method::Heartbeat) => &[(
                written!(self.receiver_silence_limit),
                "receiver_silence_limit",
                "`receiver_silence_limit` needs `method: passive`; with heartbeat a silent \
                 receiver shows as growing lag",
            )],
            Some(Method::Passive) => &[
                (
                    written!(self.write_period),
                    "write_period",
                    "`write_period` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.schema),
                    "schema",
                    "`schema` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.instance),
                    "instance",
                    "`instance` needs `method: heartbeat`: passive writes nothing",
                ),
                (
                    written!(self.ryw_delay),
                    "ryw_delay",
                    "`ryw_delay` needs `method: heartbeat`: a read-your-writes check needs a \
                     write, and passive writes nothing",
                ),
            ],
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
        let (Some(primary), Some(standbys), Some(method)) =
            (&self.primary, &self.standbys, self.method)
        else {
            return Vec::new();
        };
        let method = match method {
            Method::Heartbeat => ReplicaMethod::Heartbeat(HeartbeatSettings {
                period: resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag),
                schema: self.schema.clone().unwrap_or_default(),
                instance: self.instance.clone().unwrap_or_else(default_instance),
                ryw_delay: self.ryw_delay,
            }),
            Method::Passive => ReplicaMethod::Passive {
                receiver_silence_limit: self.receiver_silence_limit.unwrap_or_default(),
            },
        };
        standbys
            .iter()
            .map(|standby| ProbeEntry {
                kind: ProbeKind::PostgresReplica(PostgresReplica {
                    primary: primary.value.clone(),
                    standby: standby.value.clone(),
                    method: method.clone(),
                }),
                replica: Some(standby.value.clone()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::load_with;
    use crate::config::testing::errors_of;

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
}
