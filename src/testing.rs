//! Helpers for the unit tests: configs from YAML text, through the real loader (so that tests do
//! not depend on how the model types are laid out), and readings of the clocks at given seconds.

use std::sync::Arc;

use crate::clock::Now;
use crate::model::Config;

/// `yaml` loaded and validated as a config file, as `lagbudget check` would.
pub fn config(yaml: &str) -> Arc<Config> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("lagbudget.yaml");
    std::fs::write(&path, yaml).expect("config written");
    match crate::config::load_with(&path, &|_| None) {
        Ok(config) => Arc::new(config),
        Err(errors) => panic!("test config is invalid:\n{errors}"),
    }
}

/// A reading at `x` seconds on both clocks.
pub fn at(x: f64) -> Now {
    Now { unix: x, mono: x }
}

/// One budget with a `kafka_consumer_group`, a `sql_watermark`, a `mysql_replica` (one replica)
/// and a `postgres_replica` (one standby) probe, every interval 10 s, in that order; and a
/// budget `other` with one `sql_watermark` probe. CORS allows one origin; answers may be cached
/// for 5 s.
pub const MIXED: &str = r#"
http:
  cors_allowed_origins: ["https://app.example"]
  api_cache_max_age: 5s
sources:
  events: { kafka: { brokers: "127.0.0.1:9092" } }
  db: { postgres: { dsn: "host=127.0.0.1 user=postgres dbname=test" } }
  standby: { postgres: { dsn: "host=127.0.0.2 user=postgres dbname=test" } }
  primary: { mysql: { url: "mysql://root@127.0.0.1:3306" } }
  replica: { mysql: { url: "mysql://root@127.0.0.1:3307" } }
budgets:
  - name: checkout
    max_lag: 60s
    probes:
      - name: group
        interval: 10s
        kafka_consumer_group: { source: events, group: g, topics: [orders] }
      - name: table
        interval: 10s
        sql_watermark: { source: db, watermark: "SELECT 1", mode: since_watermark }
      - name: mirror
        interval: 10s
        mysql_replica: { primary: primary, replicas: [replica], ryw_delay: 1s }
      - name: stream
        interval: 10s
        postgres_replica: { primary: db, standbys: [standby], method: passive }
  - name: other
    max_lag: 60s
    probes:
      - name: p
        interval: 10s
        sql_watermark: { source: db, watermark: "SELECT 2", mode: since_watermark }
"#;

/// A sample with this lag and a backlog of 7 messages.
pub fn sample(lag: f64) -> crate::sample::Sample {
    crate::sample::Sample {
        lag_seconds: Some(lag),
        backlog: Some(crate::sample::Backlog {
            unit: crate::sample::BacklogUnit::Messages,
            value: 7.0,
        }),
        position: Some("1".into()),
        ..crate::sample::Sample::default()
    }
}
