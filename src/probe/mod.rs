//! Probes: the only code that talks to the systems being measured. One file per probe kind,
//! all behind `ProbeRunner::run`, which yields a `Reading` (a `Sample`, and the kind's `Detail`
//! for kinds that have one) or a `ProbeError` with a bounded reason.
//!
//! This file is the registry: the closed enums over the kinds (`SourceHandle`, `ProbeRunner`,
//! `Detail`). Evaluation, state and the outputs name only what it exports, never a kind's module.

pub mod dynamodb;
pub mod heartbeat;
pub mod http;
pub mod kafka;
mod kafka_admin;
pub mod mongodb;
pub mod mysql;
pub mod nats;
pub mod oldest_pending;
mod pool;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use serde::Serialize;

use crate::families::{Exposition, Labels};
use crate::model::{Config, Probe, Source, SourceKind};
pub use crate::sample::{
    Backlog, BacklogUnit, ErrorReason, MonotonicReads, ProbeError, ReadYourWrites, Sample,
};
// The names of the kinds' own metric families, for the rule and dashboard generators (which
// reach them through `metrics`) and tests.
pub use canary::detail::CANARY_VISIBILITY;
pub use dynamodb_stream::detail::{STREAM_DATA_LOSS, STREAM_SHARDS, STREAM_SHARDS_BEHIND};
pub use http_watermark::detail::{HTTP_RESPONSE_AGE, HTTP_RESPONSE_BYTES, HTTP_SERVED_STALE};
pub use kafka_consumer_group::detail::{
    KAFKA_DATA_LOSS, KAFKA_GROUP_MEMBERS, KAFKA_TIMESTAMP_TYPE, PARTITION_BACKLOG, PARTITION_LAG,
};
pub use mysql_replica::detail::{MYSQL_REPLICATION_RUNNING, MYSQL_SECONDS_BEHIND_SOURCE};
pub use postgres_replica::detail::RECEIVER_LAST_MESSAGE_AGE;
pub use reconcile::detail::{
    RECONCILE_LAST_SWEEP, RECONCILE_MISMATCHES, RECONCILE_ROWS_READ, RECONCILE_STATEMENTS,
    RECONCILE_SWEEP_PROGRESS, RECONCILE_SWEEP_ROWS,
};
pub use redis_key_age::detail::{
    CACHE_MISSES, CACHE_SAMPLED_KEYS, CACHE_SCAN_PASSES, CACHE_STALE_KEYS,
};

/// What one successful run yields: the sample every kind has, and the detail only its kind has.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sample: Sample,
    pub detail: Option<Detail>,
}

impl From<Sample> for Reading {
    fn from(sample: Sample) -> Self {
        Self {
            sample,
            detail: None,
        }
    }
}

/// What only one kind knows beyond the common `Sample`, carried beside it (never inside it:
/// `sample.rs` is a leaf and cannot name the kinds). One variant per kind that has a detail; each
/// kind's `detail.rs` owns the type, the metric families it exports and its API object. The
/// state keeps the last success's detail and the outputs show it only while the probe is fresh,
/// like its lag. Cheap to clone: large details are behind an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    KafkaConsumerGroup(Arc<kafka_consumer_group::detail::KafkaDetail>),
    MysqlReplica(mysql_replica::detail::MysqlReplicaDetail),
    PostgresReplica(postgres_replica::detail::StandbyDetail),
    RedisKeyAge(redis_key_age::detail::CacheDetail),
    HttpWatermark(http_watermark::detail::HttpDetail),
    Canary(canary::detail::CanaryDetail),
    Reconcile(Box<reconcile::detail::ReconcileDetail>),
    DynamodbStream(dynamodb_stream::detail::StreamDetail),
}

impl Detail {
    /// The detail's object in the API, for kinds that show one.
    pub fn status(&self) -> Option<DetailStatus> {
        match self {
            Detail::KafkaConsumerGroup(detail) => Some(DetailStatus::Kafka(detail.status())),
            Detail::RedisKeyAge(detail) => Some(DetailStatus::Cache(detail.status())),
            Detail::HttpWatermark(detail) => Some(DetailStatus::Http(detail.status())),
            Detail::Canary(detail) => Some(DetailStatus::Canary(detail.status())),
            Detail::Reconcile(detail) => Some(DetailStatus::Reconcile(detail.status())),
            Detail::DynamodbStream(detail) => Some(DetailStatus::DynamodbStream(detail.status())),
            Detail::MysqlReplica(_) | Detail::PostgresReplica(_) => None,
        }
    }
}

/// A kind's object in a probe of `/api/v1/budgets`, flattened into the probe: the variant's name
/// is the key (`"kafka": {…}`).
#[derive(Debug, Clone, Serialize)]
pub enum DetailStatus {
    #[serde(rename = "kafka")]
    Kafka(kafka_consumer_group::detail::KafkaStatus),
    #[serde(rename = "cache")]
    Cache(redis_key_age::detail::CacheStatus),
    #[serde(rename = "http")]
    Http(http_watermark::detail::HttpStatus),
    #[serde(rename = "canary")]
    Canary(canary::detail::CanaryStatus),
    #[serde(rename = "reconcile")]
    Reconcile(reconcile::detail::ReconcileStatus),
    #[serde(rename = "dynamodb_stream")]
    DynamodbStream(dynamodb_stream::detail::StreamStatus),
}

/// The metric families of every kind's detail, filled from fresh probes while `/metrics` is
/// rendered.
#[derive(Default)]
pub struct DetailFamilies {
    kafka_consumer_group: kafka_consumer_group::detail::Families,
    mysql_replica: mysql_replica::detail::Families,
    postgres_replica: postgres_replica::detail::Families,
    redis_key_age: redis_key_age::detail::Families,
    http_watermark: http_watermark::detail::Families,
    canary: canary::detail::Families,
    reconcile: reconcile::detail::Families,
    dynamodb_stream: dynamodb_stream::detail::Families,
}

impl DetailFamilies {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the series of one fresh probe's detail, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &Detail) {
        match detail {
            Detail::KafkaConsumerGroup(d) => self.kafka_consumer_group.push(labels, d),
            Detail::MysqlReplica(d) => self.mysql_replica.push(labels, d),
            Detail::PostgresReplica(d) => self.postgres_replica.push(labels, d),
            Detail::RedisKeyAge(d) => self.redis_key_age.push(labels, d),
            Detail::HttpWatermark(d) => self.http_watermark.push(labels, d),
            Detail::Canary(d) => self.canary.push(labels, d),
            Detail::Reconcile(d) => self.reconcile.push(labels, d),
            Detail::DynamodbStream(d) => self.dynamodb_stream.push(labels, d),
        }
    }

    /// Appends every family with at least one series to `out`.
    pub fn finish(self, out: &mut Exposition) {
        self.postgres_replica.finish(out);
        self.mysql_replica.finish(out);
        self.kafka_consumer_group.finish(out);
        self.redis_key_age.finish(out);
        self.http_watermark.finish(out);
        self.canary.finish(out);
        self.reconcile.finish(out);
        self.dynamodb_stream.finish(out);
    }
}

/// Holds every probe kind to `Sample::lag_seconds`' promise: a probe with a `max_lag` that
/// measured no lag fails with `no_data`, since the budget would otherwise count the missing
/// lag as 0 (`used_ratio`). Each kind already fails itself in that case; this keeps a future
/// kind, or a missed path, from turning unknown into "within budget".
pub fn require_lag(
    probe: &Probe,
    result: Result<Reading, ProbeError>,
) -> Result<Reading, ProbeError> {
    match result {
        Ok(reading) if probe.max_lag.is_some() && reading.sample.lag_seconds.is_none() => {
            Err(ProbeError::new(
                ErrorReason::NoData,
                "the probe measured no lag, and it has a max_lag to enforce",
            ))
        }
        other => other,
    }
}

/// The rows of the per-budget Grafana dashboard that only some probe kinds fill, from each
/// kind's `dashboard.rs`, in the order the dashboard shows them; `probes` are the label
/// matchers of the probes it shows. Every one is collapsed, so a budget without that kind
/// does not open on empty panels. `generate/dashboards.rs` calls this and knows no kind.
pub fn dashboard_rows(probes: &str) -> Vec<crate::generate::grafana::Row> {
    [
        postgres_replica::dashboard::rows(probes),
        mysql_replica::dashboard::rows(probes),
        kafka_consumer_group::dashboard::rows(probes),
        redis_key_age::dashboard::rows(probes),
        http_watermark::dashboard::rows(probes),
        canary::dashboard::rows(probes),
        reconcile::dashboard::rows(probes),
        dynamodb_stream::dashboard::rows(probes),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A live connection handle per configured source, shared by every probe that reads it.
#[derive(Clone)]
pub enum SourceHandle {
    Postgres(Arc<postgres::PgPool>),
    Kafka(Arc<kafka::KafkaClient>),
    Rabbitmq(Arc<rabbitmq::RabbitmqClient>),
    Redis(Arc<redis::RedisClient>),
    Nats(Arc<nats::NatsClient>),
    Mysql(Arc<mysql::MysqlPool>),
    Http(Arc<http::HttpClient>),
    Dynamodb(Arc<dynamodb::DynamoClient>),
    Mongodb(Arc<mongodb::MongoClient>),
}

impl SourceHandle {
    /// The address of the live client behind this handle: the same for every clone, different
    /// for a handle built anew (a reload that changed the source).
    pub fn id(&self) -> usize {
        match self {
            SourceHandle::Postgres(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Kafka(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Rabbitmq(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Redis(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Nats(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Mysql(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Http(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Dynamodb(h) => Arc::as_ptr(h) as usize,
            SourceHandle::Mongodb(h) => Arc::as_ptr(h) as usize,
        }
    }

    pub fn new(source: &Source) -> Result<Self, ProbeError> {
        match &source.kind {
            SourceKind::Postgres(pg) => Ok(SourceHandle::Postgres(Arc::new(
                postgres::PgPool::new(&source.name, pg, source.max_connections)?,
            ))),
            SourceKind::Kafka(spec) => Ok(SourceHandle::Kafka(Arc::new(kafka::KafkaClient::new(
                &source.name,
                spec,
            )?))),
            SourceKind::Rabbitmq(spec) => Ok(SourceHandle::Rabbitmq(Arc::new(
                rabbitmq::RabbitmqClient::new(&source.name, spec, source.max_connections)?,
            ))),
            SourceKind::Redis(spec) => Ok(SourceHandle::Redis(Arc::new(redis::RedisClient::new(
                &source.name,
                spec,
            )?))),
            SourceKind::Nats(spec) => Ok(SourceHandle::Nats(Arc::new(nats::NatsClient::new(
                &source.name,
                spec,
            )))),
            SourceKind::Mysql(spec) => Ok(SourceHandle::Mysql(Arc::new(mysql::MysqlPool::new(
                &source.name,
                spec,
                source.max_connections,
            )?))),
            SourceKind::Http(spec) => Ok(SourceHandle::Http(Arc::new(http::HttpClient::new(
                &source.name,
                spec,
                source.max_connections,
            )?))),
            SourceKind::Dynamodb(spec) => Ok(SourceHandle::Dynamodb(Arc::new(
                dynamodb::DynamoClient::new(&source.name, spec, source.max_connections)?,
            ))),
            SourceKind::Mongodb(spec) => Ok(SourceHandle::Mongodb(Arc::new(
                mongodb::MongoClient::new(spec, source.max_connections),
            ))),
        }
    }

    /// Connects once and runs a trivial query: what `check --connect` reports per source.
    pub async fn check_connect(&self, deadline: Instant) -> Result<String, ProbeError> {
        match self {
            SourceHandle::Postgres(pool) => pool.check(deadline).await,
            SourceHandle::Kafka(client) => {
                let client = client.clone();
                let timeout = deadline.saturating_duration_since(crate::clock::instant());
                tokio::task::spawn_blocking(move || client.topics(&[], timeout))
                    .await
                    .map_err(|e| ProbeError::new(ErrorReason::Connect, e.to_string()))?
                    .map(|topics| format!("cluster answers, {} topics", topics.partitions.len()))
            }
            SourceHandle::Rabbitmq(client) => client.check(deadline).await,
            SourceHandle::Redis(client) => client.check(deadline).await,
            SourceHandle::Nats(client) => client.check(deadline).await,
            SourceHandle::Mysql(pool) => pool.check(deadline).await,
            SourceHandle::Http(client) => client.check(deadline).await,
            SourceHandle::Dynamodb(client) => client.check(deadline).await,
            SourceHandle::Mongodb(client) => client.check(deadline).await,
        }
    }
}

/// The live handles of every source of a config, built once per (re)load and reused for
/// sources whose definition did not change.
#[derive(Clone, Default)]
pub struct SourceHandles {
    handles: BTreeMap<String, (Arc<Source>, SourceHandle)>,
}

impl SourceHandles {
    /// Builds handles for `config`, keeping those of `previous` whose source is unchanged, so
    /// that a reload does not drop healthy connections.
    pub fn build(config: &Config, previous: Option<&SourceHandles>) -> Result<Self, ProbeError> {
        let mut handles = BTreeMap::new();
        for (name, source) in &config.sources {
            let reused = previous
                .and_then(|p| p.handles.get(name))
                .filter(|(old, _)| old.as_ref() == source.as_ref())
                .map(|(_, handle)| handle.clone());
            let handle = match reused {
                Some(handle) => handle,
                None => SourceHandle::new(source)?,
            };
            handles.insert(name.clone(), (source.clone(), handle));
        }
        Ok(Self { handles })
    }

    /// Drops these handles and waits until every Kafka client among them is destroyed (or
    /// leaked, see `KafkaClient`'s `Drop`). A probe run still in a blocking call holds its
    /// client until that call returns, so the caller bounds the wait. Other kinds of clients
    /// close on drop by themselves.
    pub async fn close(self) {
        let closing: Vec<_> = self
            .handles
            .into_values()
            .filter_map(|(_, handle)| match handle {
                SourceHandle::Kafka(client) => Some(client.closed()),
                _ => None,
            })
            .collect();
        for mut closed in closing {
            // An error means the client was leaked instead: nothing more to wait for.
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }

    /// The handle of the `kind` source `name`, through `pick`; an error names what is missing.
    fn typed<T>(
        &self,
        name: &str,
        kind: &str,
        pick: impl FnOnce(&SourceHandle) -> Option<&Arc<T>>,
    ) -> Result<Arc<T>, ProbeError> {
        self.get(name).and_then(pick).cloned().ok_or_else(|| {
            ProbeError::new(
                ErrorReason::Connect,
                format!("source {name} is not a configured {kind} source"),
            )
        })
    }

    pub fn postgres(&self, name: &str) -> Result<Arc<postgres::PgPool>, ProbeError> {
        self.typed(name, "postgres", |h| match h {
            SourceHandle::Postgres(pool) => Some(pool),
            _ => None,
        })
    }

    pub fn kafka(&self, name: &str) -> Result<Arc<kafka::KafkaClient>, ProbeError> {
        self.typed(name, "kafka", |h| match h {
            SourceHandle::Kafka(client) => Some(client),
            _ => None,
        })
    }

    pub fn rabbitmq(&self, name: &str) -> Result<Arc<rabbitmq::RabbitmqClient>, ProbeError> {
        self.typed(name, "rabbitmq", |h| match h {
            SourceHandle::Rabbitmq(client) => Some(client),
            _ => None,
        })
    }

    pub fn redis(&self, name: &str) -> Result<Arc<redis::RedisClient>, ProbeError> {
        self.typed(name, "redis", |h| match h {
            SourceHandle::Redis(client) => Some(client),
            _ => None,
        })
    }

    pub fn nats(&self, name: &str) -> Result<Arc<nats::NatsClient>, ProbeError> {
        self.typed(name, "nats", |h| match h {
            SourceHandle::Nats(client) => Some(client),
            _ => None,
        })
    }

    pub fn mysql(&self, name: &str) -> Result<Arc<mysql::MysqlPool>, ProbeError> {
        self.typed(name, "mysql", |h| match h {
            SourceHandle::Mysql(pool) => Some(pool),
            _ => None,
        })
    }

    pub fn http(&self, name: &str) -> Result<Arc<http::HttpClient>, ProbeError> {
        self.typed(name, "http", |h| match h {
            SourceHandle::Http(client) => Some(client),
            _ => None,
        })
    }

    pub fn dynamodb(&self, name: &str) -> Result<Arc<dynamodb::DynamoClient>, ProbeError> {
        self.typed(name, "dynamodb", |h| match h {
            SourceHandle::Dynamodb(client) => Some(client),
            _ => None,
        })
    }

    pub fn mongodb(&self, name: &str) -> Result<Arc<mongodb::MongoClient>, ProbeError> {
        self.typed(name, "mongodb", |h| match h {
            SourceHandle::Mongodb(client) => Some(client),
            _ => None,
        })
    }

    pub fn get(&self, name: &str) -> Option<&SourceHandle> {
        self.handles.get(name).map(|(_, handle)| handle)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Source>, &SourceHandle)> {
        self.handles
            .values()
            .map(|(source, handle)| (source, handle))
    }
}

/// What the registry asks of every probe kind, implemented by the kind's runner in its own
/// module. The registry (`probe_kinds!` below) builds the closed enums and their dispatch from
/// it, so the shared layers never name a kind and a new kind is one line there.
pub trait Kind: Sized + Send + 'static {
    /// The kind's key in the config (`nats_consumer`): the tag of its table, the `kind` label of
    /// the duration histogram.
    const KEY: &'static str;
    /// The kind's validated settings, from its `config.rs`.
    type Settings: Clone + PartialEq + std::fmt::Debug + Send + Sync;

    /// The runner of one probe entry, over the live source handles it reads. Validation
    /// guarantees the sources exist and are of the right kind; an error here only guards a
    /// reload race.
    fn new(
        probe: &Probe,
        settings: &Self::Settings,
        sources: &SourceHandles,
    ) -> Result<Self, ProbeError>;

    /// One measurement, which stops at `deadline`.
    fn run(
        &mut self,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<Reading, ProbeError>> + Send;

    /// Checks that the source accepts what the probe will ask (syntax, objects, grants) without
    /// measuring: `check --connect`.
    fn check(
        &mut self,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<String, ProbeError>> + Send;

    /// The source the probe measures.
    fn source(settings: &Self::Settings) -> &str;

    /// Every source the probe reads or writes, the measured one first: replica kinds also
    /// write their primary.
    fn sources(settings: &Self::Settings) -> Vec<&str> {
        vec![Self::source(settings)]
    }

    /// Whether runs check read-your-writes at a replica, so that the counters exist from load.
    fn checks_read_your_writes(_settings: &Self::Settings) -> bool {
        false
    }

    /// Whether runs read a route several times for monotonic reads, so that the counters exist
    /// from load.
    fn checks_monotonic_reads(_settings: &Self::Settings) -> bool {
        false
    }

    /// Whether runs count mismatched records, so that `max_mismatches` applies.
    fn counts_mismatches(_settings: &Self::Settings) -> bool {
        false
    }
}

/// The registry of probe kinds: one line per kind, its variant name, its runner and its config
/// table. It declares the kind's module and generates `ProbeKind` (the validated settings, in
/// the model), `ProbeRunner` (a probe ready to run) and the config loader's list of kind tables.
macro_rules! probe_kinds {
    ($($variant:ident: $module:ident::$runner:ident, config $config:path;)+) => {
        $(pub mod $module;)+

        /// What a probe measures, with its kind's validated settings. A closed enum: the set of
        /// kinds is known, and the compiler finds every `match` a new one needs.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProbeKind {
            $($variant(<$module::$runner as Kind>::Settings),)+
        }

        impl ProbeKind {
            /// The kind's config key.
            pub fn key(&self) -> &'static str {
                match self {
                    $(ProbeKind::$variant(_) => <$module::$runner as Kind>::KEY,)+
                }
            }

            /// The source the probe measures (no allocation: the API asks for it per probe).
            pub fn source(&self) -> &str {
                match self {
                    $(ProbeKind::$variant(settings) => <$module::$runner as Kind>::source(settings),)+
                }
            }

            /// Every source the probe reads or writes, the measured one first.
            pub fn sources(&self) -> Vec<&str> {
                match self {
                    $(ProbeKind::$variant(settings) => <$module::$runner as Kind>::sources(settings),)+
                }
            }

            /// Whether runs check read-your-writes at a replica.
            pub fn checks_read_your_writes(&self) -> bool {
                match self {
                    $(ProbeKind::$variant(settings) => {
                        <$module::$runner as Kind>::checks_read_your_writes(settings)
                    })+
                }
            }

            /// Whether runs read a route several times for monotonic reads.
            pub fn checks_monotonic_reads(&self) -> bool {
                match self {
                    $(ProbeKind::$variant(settings) => {
                        <$module::$runner as Kind>::checks_monotonic_reads(settings)
                    })+
                }
            }

            /// Whether runs count mismatched records.
            pub fn counts_mismatches(&self) -> bool {
                match self {
                    $(ProbeKind::$variant(settings) => {
                        <$module::$runner as Kind>::counts_mismatches(settings)
                    })+
                }
            }
        }

        /// A probe ready to run: its kind's state (prepared queries, previous positions) plus
        /// the sources it reads.
        pub enum ProbeRunner {
            $($variant(Box<$module::$runner>),)+
        }

        impl ProbeRunner {
            pub fn new(probe: &Probe, sources: &SourceHandles) -> Result<Self, ProbeError> {
                match &probe.kind {
                    $(ProbeKind::$variant(settings) => {
                        <$module::$runner as Kind>::new(probe, settings, sources)
                            .map(|runner| ProbeRunner::$variant(Box::new(runner)))
                    })+
                }
            }

            /// Runs one measurement. Implementations stop at `deadline` and return `Timeout`.
            pub async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
                match self {
                    $(ProbeRunner::$variant(runner) => Kind::run(runner.as_mut(), deadline).await,)+
                }
            }

            /// Checks that the probe's queries are accepted by the source (syntax, tables,
            /// grants), without measuring: `check --connect`.
            pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
                match self {
                    $(ProbeRunner::$variant(runner) => Kind::check(runner.as_mut(), deadline).await,)+
                }
            }
        }

        crate::config::table::config_kinds!("probe": dyn crate::config::tables::ProbeKindConfig {
            $($config,)+
        });
    };
}

probe_kinds! {
    SqlWatermark: sql_watermark::SqlWatermarkProbe, config sql_watermark::config::SqlWatermarkConfig;
    KafkaConsumerGroup: kafka_consumer_group::KafkaConsumerGroupProbe, config kafka_consumer_group::config::KafkaConsumerGroupConfig;
    PostgresLogical: postgres_logical::PostgresLogicalProbe, config postgres_logical::config::PostgresLogicalConfig;
    RabbitmqQueue: rabbitmq_queue::RabbitmqQueueProbe, config rabbitmq_queue::config::RabbitmqQueueConfig;
    RedisStreamGroup: redis_stream_group::RedisStreamGroupProbe, config redis_stream_group::config::RedisStreamGroupConfig;
    NatsConsumer: nats_consumer::NatsConsumerProbe, config nats_consumer::config::NatsConsumerConfig;
    MysqlReplica: mysql_replica::MysqlReplicaProbe, config mysql_replica::config::MysqlReplicaConfig;
    PostgresReplica: postgres_replica::PostgresReplicaProbe, config postgres_replica::config::PostgresReplicaConfig;
    RedisKeyAge: redis_key_age::RedisKeyAgeProbe, config redis_key_age::config::RedisKeyAgeConfig;
    HttpWatermark: http_watermark::HttpWatermarkProbe, config http_watermark::config::HttpWatermarkConfig;
    Canary: canary::CanaryProbe, config canary::config::CanaryConfig;
    Reconcile: reconcile::ReconcileProbe, config reconcile::config::ReconcileConfig;
    DynamodbStream: dynamodb_stream::DynamodbStreamProbe, config dynamodb_stream::config::DynamodbStreamConfig;
    MongodbReplica: mongodb_replica::MongodbReplicaProbe, config mongodb_replica::config::MongodbReplicaConfig;
}
