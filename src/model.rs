//! The validated domain model: what a config means once every check has passed.
//!
//! Nothing here knows YAML. The config loader (`config/` and each kind's
//! `probe/<kind>/config.rs`) is the only producer of these types; the scheduler, probes,
//! evaluation and outputs only ever see a `Config` that is already known to be valid, with
//! defaults applied and effective intervals computed. Each kind's own types are defined with
//! its config and re-exported here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::probe::ProbeKind;
pub use crate::probe::canary::config::{Canary, MarkerRead, MarkerWrite, ReadTarget, WriteTarget};
pub use crate::probe::dynamodb::config::{DynamodbKeys, DynamodbSource};
pub use crate::probe::http::config::{ClientIdentity, HttpAuth, HttpSource, PemFile};
pub use crate::probe::http_watermark::config::{
    HttpMethod, HttpWatermark, HttpWatermarkMode, ValueAt,
};
pub use crate::probe::kafka::config::KafkaSource;
pub use crate::probe::kafka_consumer_group::config::{
    KafkaConsumerGroup, NoCommitPolicy, TopicSelector,
};
pub use crate::probe::mongodb::config::MongodbSource;
pub use crate::probe::mongodb_replica::config::{
    MongodbHeartbeat, MongodbReplica, MongodbReplicaMethod,
};
pub use crate::probe::mysql::config::MysqlSource;
pub use crate::probe::mysql_replica::config::MysqlReplica;
pub use crate::probe::nats::config::NatsSource;
pub use crate::probe::nats_consumer::config::NatsConsumer;
pub use crate::probe::postgres::config::PostgresSource;
pub use crate::probe::postgres_logical::config::PostgresLogical;
pub use crate::probe::postgres_replica::config::{
    HeartbeatSettings, PostgresReplica, ReplicaMethod,
};
pub use crate::probe::rabbitmq::config::RabbitmqSource;
pub use crate::probe::rabbitmq_queue::config::RabbitmqQueue;
pub use crate::probe::redis::config::RedisSource;
pub use crate::probe::redis_key_age::config::{CacheKeys, KeyAgeMode, RedisKeyAge};
pub use crate::probe::redis_stream_group::config::RedisStreamGroup;
pub use crate::probe::sql_watermark::config::{SqlWatermark, WatermarkMode};
pub use crate::secret::{Secret, SecretSet};

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where `run` serves HTTP unless the command line overrides it.
    pub listen: SocketAddr,
    pub http: HttpSettings,
    pub sources: BTreeMap<String, Arc<Source>>,
    /// Budgets in config order (files first, then `include:`d files in glob order).
    pub budgets: Vec<Arc<Budget>>,
    /// Every secret value interpolated into the config, so that any text leaving the daemon
    /// (logs, errors, API) can be scrubbed of them as a last line of defence.
    pub secrets: SecretSet,
}

/// Settings of the status API that product pages call from browsers.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Origins allowed by CORS on `/api/v1/*`; `*` allows any. Empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// `Cache-Control: max-age` of `/api/v1/*` answers.
    pub api_cache_max_age: Duration,
    /// How far back each probe's samples are kept for the status page.
    pub history_window: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            cors_allowed_origins: Vec::new(),
            api_cache_max_age: Duration::from_secs(1),
            history_window: Duration::from_secs(3600),
        }
    }
}

/// A named connection to a system that probes read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    /// Connections shared by every probe of this source, at most.
    pub max_connections: usize,
    pub kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Postgres(PostgresSource),
    Kafka(KafkaSource),
    Rabbitmq(RabbitmqSource),
    Redis(RedisSource),
    Nats(NatsSource),
    Mysql(MysqlSource),
    Http(HttpSource),
    Dynamodb(DynamodbSource),
    Mongodb(MongodbSource),
}

impl SourceKind {
    /// The config key of this kind, as users write it (`postgres`).
    pub fn key(&self) -> &'static str {
        match self {
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Kafka(_) => "kafka",
            SourceKind::Rabbitmq(_) => "rabbitmq",
            SourceKind::Redis(_) => "redis",
            SourceKind::Nats(_) => "nats",
            SourceKind::Mysql(_) => "mysql",
            SourceKind::Http(_) => "http",
            SourceKind::Dynamodb(_) => "dynamodb",
            SourceKind::Mongodb(_) => "mongodb",
        }
    }
}

/// One feature's agreement on how far its derived view may trail the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    /// Free-form routing labels, exported only on `lagbudget_budget_info`.
    pub labels: BTreeMap<String, String>,
    pub max_lag: Option<Duration>,
    pub max_backlog: Option<u64>,
    /// Used ratio at or above which the state is `warn` (0.8 for `80%`).
    pub warn_at: f64,
    /// How long a probe must be over budget before the state is `breach`.
    pub breach_after: Duration,
    pub objective: Option<Objective>,
    pub severity: String,
    pub runbook_url: Option<String>,
    pub probes: Vec<Arc<Probe>>,
}

/// The share of time a budget should be within its limits, over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// 0.999 for `99.9%`.
    pub target: f64,
    pub window: Duration,
}

/// One measurement of one hop, with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub budget: String,
    pub name: String,
    /// The effective interval: the configured one, but never longer than `max_lag / 3`.
    pub interval: Duration,
    /// Per-run timeout, never longer than `interval`.
    pub timeout: Duration,
    /// The lag budget of this probe (the budget's, or the probe's own override).
    pub max_lag: Option<Duration>,
    /// The backlog budget of this probe (the budget's, or the probe's own override).
    pub max_backlog: Option<u64>,
    /// The share of monotonic reads that may be violations (0.01 for `1%`), for probes that
    /// check monotonic reads (the budget's, or the probe's own override); enforced by an alert
    /// on the counters' rates, not by the daemon's state.
    pub max_monotonic_violations: Option<f64>,
    /// How many mismatched records a reconciliation may find (the budget's, or the probe's own
    /// override), for probes that reconcile; enforced by an alert, not by the daemon's state.
    pub max_mismatches: Option<u64>,
    /// Behind and not advancing for this long ⇒ stalled.
    pub stall_after: Duration,
    /// The configured name of the standby or replica this entry measures (the `replica`
    /// label). A replica probe listing several standbys is expanded at load into one `Probe`
    /// per standby, each with its own task, history and freshness; `None` for other kinds.
    pub replica: Option<String>,
    pub kind: ProbeKind,
}

impl Probe {
    /// The probe's identity within its budget: its name, and its replica if it has one.
    pub fn key(&self) -> (&str, Option<&str>) {
        (&self.name, self.replica.as_deref())
    }

    /// `name` or `name[replica]`, for logs and messages.
    pub fn display_name(&self) -> String {
        match &self.replica {
            Some(replica) => format!("{}[{replica}]", self.name),
            None => self.name.clone(),
        }
    }

    /// The kind's config key, used as the `kind` label of duration histograms.
    pub fn kind_key(&self) -> &'static str {
        self.kind.key()
    }

    /// Whether runs of this probe check read-your-writes at a replica, so that its check and
    /// miss counters exist from config load.
    pub fn checks_read_your_writes(&self) -> bool {
        self.kind.checks_read_your_writes()
    }

    /// Whether runs of this probe read a route several times for monotonic reads, so that its
    /// counters exist from config load.
    pub fn checks_monotonic_reads(&self) -> bool {
        self.kind.checks_monotonic_reads()
    }

    /// The source this probe measures, by name.
    pub fn source_name(&self) -> &str {
        self.kind.source()
    }

    /// Every source this probe reads or writes: a replica probe also writes its primary.
    pub fn source_names(&self) -> Vec<&str> {
        self.kind.sources()
    }
}

/// Formats a duration the way configs write it (`500ms`, `30s`, `5m`, `2h`, `28d`), choosing
/// the largest unit that represents it exactly.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis % 1000 != 0 {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_in_their_largest_exact_unit() {
        let cases = [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(28 * 86_400), "28d"),
            (Duration::ZERO, "0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
        }
    }
}
