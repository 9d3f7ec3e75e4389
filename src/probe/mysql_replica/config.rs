//! The `mysql_replica` kind's config: its table, its model and what it checks.

use std::time::Duration;

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope};
use crate::config::value::{NonEmpty, PositiveDuration, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::heartbeat::config::{check_replicas, resolve_write_period};
use crate::probe::mysql::config::MysqlSourceConfig;

/// One MySQL or MariaDB replica, measured with a heartbeat the daemon writes on the primary.
/// A configured `mysql_replica` probe with several `replicas` becomes one `Probe` per replica,
/// all sharing one heartbeat writer.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlReplica {
    /// The mysql source the heartbeat is written to.
    pub primary: String,
    /// The mysql source of the replica this entry measures (also `Probe::replica`).
    pub replica: String,
    /// How often the heartbeat is written.
    pub write_period: Duration,
    /// Database (schema) of the heartbeat table; a plain identifier (checked at load).
    pub database: String,
    /// This daemon's row key; `None`: the host name, read when the writer starts.
    pub instance: Option<String>,
    /// Read-your-writes check delay; `None`: no check.
    pub ryw_delay: Option<Duration>,
}

/// The longest `ryw_delay`: the writer remembers when each write returned for that long.
const MAX_RYW_DELAY: Duration = Duration::from_secs(600);

config_table! {
    /// MySQL or MariaDB replicas: lag of each replica, measured with a heartbeat the daemon
    /// writes on the primary.
    ///
    /// The daemon writes a heartbeat row (instance, probe, seq, written_at) into a table of its
    /// own database on the primary every write_period and reads the highest visible seq on
    /// each replica: lag is the age of the oldest heartbeat not yet visible there, on the
    /// daemon's clock. Each replica is measured on its own, labelled `replica` with its source
    /// name.
    pub(crate) struct MysqlReplicaConfig = "mysql_replica" {
        /// Name of the mysql source the heartbeat is written to.
        primary: SourceRef<MysqlReplica>,
        /// Names of the mysql sources of the replicas to measure.
        replicas: NonEmpty<Vec<SourceRef<MysqlReplica>>>,
        /// How often the heartbeat is written; lag is measured to within one period. At most
        /// max_lag / 2. Default: max_lag / 10, between 100ms and 1s.
        write_period: Option<Spanned<PositiveDuration>>,
        /// Database (schema) of the heartbeat table on the primary; created if missing.
        /// Letters, digits, `_` and `$`, at most 64 characters.
        database: NonEmpty<MysqlDatabase> = "lagbudget",
        /// This daemon's name in the heartbeat table, so that several daemons never share a
        /// row. Default: the host name.
        instance: Option<Spanned<NonEmpty<String>>>,
        /// Check read-your-writes: each run reads, on the replica, the newest heartbeat whose
        /// write at the primary returned at least this long ago, and counts a miss when it is
        /// not visible. At most 10m. Unset: no check.
        ryw_delay: Option<Spanned<PositiveDuration>>,
    }
}

impl ReadsSource for MysqlReplica {
    const KIND: &'static str = <MysqlReplicaConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <MysqlSourceConfig as Table>::TABLE.id;
}

/// A MySQL database name lagbudget can use unquoted: letters, digits, `_` and `$`.
pub(crate) struct MysqlDatabase;

impl Scalar for MysqlDatabase {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, database: &Text) -> Option<String> {
        let valid = database.value.len() <= 64
            && database
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
        if valid {
            return Some(database.value.clone());
        }
        ctx.error(
            database.span,
            &database.path,
            format!(
                "invalid database {}: use letters, digits, `_` and `$`, at most 64 characters",
                database.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for MysqlReplicaConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = check_replicas(
            ctx,
            self.primary.as_ref(),
            self.replicas.iter().flatten(),
            "replica",
            "a server cannot be measured against itself",
        );
        if let Some(instance) = &self.instance {
            if instance.value.len() > 255 {
                ctx.error(
                    instance.span,
                    &instance.path,
                    "instance is longer than 255 characters",
                );
                ok = false;
            }
        }
        if let Some(delay) = &self.ryw_delay {
            if delay.value > MAX_RYW_DELAY {
                ctx.error(
                    delay.span,
                    &delay.path,
                    format!("ryw_delay {} is above the maximum of 10m", delay.shown()),
                );
                ok = false;
            }
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let (Some(primary), Some(replicas), Some(database)) =
            (&self.primary, &self.replicas, &self.database)
        else {
            return Vec::new();
        };
        let write_period = resolve_write_period(ctx, self.write_period.as_ref(), scope.max_lag);
        replicas
            .iter()
            .map(|replica| ProbeEntry {
                kind: ProbeKind::MysqlReplica(MysqlReplica {
                    primary: primary.value.clone(),
                    replica: replica.value.clone(),
                    write_period,
                    database: database.clone(),
                    instance: self
                        .instance
                        .as_ref()
                        .map(|instance| instance.value.clone()),
                    ryw_delay: self.ryw_delay.as_ref().map(|delay| delay.value),
                }),
                replica: Some(replica.value.clone()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{errors_of, load_text};

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
        let env = |name: &str| (name == "MYSQL_PASSWORD").then(|| "mysql-secret-pw".to_owned());
        let config = load_text(MYSQL, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
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
        // The measured replica first, then the primary its heartbeat is written to.
        assert_eq!(probes[0].source_names(), ["replica-a", "primary"]);
        assert_eq!(probes[0].source_name(), "replica-a");
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
    fn mysql_replica_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  primary: { mysql: { url: "mysql://u:topsecret@db/x" } }
  bad-url: { mysql: { url: "mysql://u:${PW}@db:3306/x" } }
  bad-param: { mysql: { url: "mysql://db/x" } }
  replica: { mysql: { url: "mysql://db-2/x" } }
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
}
