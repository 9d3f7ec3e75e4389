//! The tables every config file shares: the file itself, `defaults`, `http`, sources, budgets
//! and probes, and the lists of source and probe kinds. Each kind's own table, decoding and
//! checks live with the kind (`probe/<kind>/config.rs`) and meet these through
//! [`SourceKindConfig`] and [`ProbeKindConfig`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Ctx, Spanned, Text};
use super::table::{Tagged, config_kinds, config_table};
use super::value::{
    Count, Labels, Map, Name, NonEmpty, Percent, PercentBelow100, PercentFrom0, PositiveDuration,
};
use crate::model::{ProbeKind, Source, SourceKind};
use crate::probe::dynamodb::config::DynamodbSourceConfig;
use crate::probe::http::config::HttpSourceConfig;
use crate::probe::kafka::config::KafkaSourceConfig;
use crate::probe::mongodb::config::MongodbSourceConfig;
use crate::probe::mysql::config::MysqlSourceConfig;
use crate::probe::nats::config::NatsSourceConfig;
use crate::probe::postgres::config::PostgresSourceConfig;
use crate::probe::rabbitmq::config::RabbitmqSourceConfig;
use crate::probe::redis::config::RedisSourceConfig;

config_table! {
    /// lagbudget configuration: sources to read from and consistency budgets to enforce.
    pub(crate) struct FileConfig = "config" {
        /// Address (IP:PORT) of the HTTP server for /metrics and the API, unless the command
        /// line overrides it. Main file only.
        listen: SocketAddr = "0.0.0.0:9464",
        /// Glob patterns of further files with `sources` and `budgets`, relative to this
        /// file's directory, loaded in sorted order. A pattern without glob characters must
        /// match a file. Main file only.
        include: Option<Vec<Text>>,
        /// Defaults for every probe. Main file only.
        defaults: DefaultsConfig = {},
        /// Settings of the status API. Main file only.
        http: HttpConfig = {},
        /// Named connections that probes read from.
        sources: Option<Map<SourceConfig>>,
        /// Consistency budgets: how far each feature's derived views may trail their source.
        budgets: Option<Vec<BudgetConfig>>,
    }
    main_file_only(listen, include, defaults, http);
}

config_table! {
    /// Defaults for every probe; a budget's or probe's own setting wins.
    pub(crate) struct DefaultsConfig = "defaults" {
        /// How often each probe runs; never less often than max_lag / 3.
        interval: Spanned<PositiveDuration> = "10s",
        /// How long one probe run may take, waiting for a connection included; never longer
        /// than the interval.
        timeout: Spanned<PositiveDuration> = "5s",
        /// How long a probe may be behind without progress before it counts as stalled.
        /// Default: max_lag or 3 intervals, whichever is longer.
        stall_after: Option<Spanned<PositiveDuration>>,
    }
}

config_table! {
    /// Settings of the status API that product pages call from browsers.
    pub(crate) struct HttpConfig = "http_api" {
        /// Origins allowed by CORS on /api/v1/*; `*` allows any. Empty: no CORS headers.
        cors_allowed_origins: Option<Vec<String>>,
        /// Cache-Control max-age of /api/v1/* answers.
        api_cache_max_age: Duration = "1s",
        /// How far back the status page's per-probe lag charts reach: each probe keeps one
        /// sample per run for this long in memory (at most 3600 samples), at most 24h.
        history_window: Spanned<PositiveDuration> = "1h",
    }
}

config_table! {
    /// A named connection, tagged with its kind.
    pub(crate) struct SourceConfig = "source" {
        kind: Tagged<dyn SourceKindConfig>,
    }
}

config_table! {
    /// One feature's agreement on how far its derived views may trail the source.
    pub(crate) struct BudgetConfig = "budget" {
        /// Unique name; the `budget` label of every series.
        name: Spanned<Name>,
        /// What the budget protects, for humans.
        description: Option<String>,
        /// The team that owns the budget.
        owner: Option<String>,
        /// Free-form routing labels, exported on lagbudget_budget_info.
        labels: Option<Labels>,
        /// How far the view may trail the source. Set max_lag or max_backlog here or on
        /// every probe.
        max_lag: Option<Spanned<PositiveDuration>>,
        /// How many items may wait; 0 means the backlog must be empty.
        max_backlog: Option<Spanned<Count<0>>>,
        /// Share of the reads of a canary's `monotonic` check that may go back in time (show
        /// an older marker than one already seen through the same route), such as 1%; 0%
        /// allows none. Applies to this budget's canaries with `monotonic`; the
        /// ConsistencyMonotonicReadsViolated alert fires when the share over the last hour is
        /// above it.
        max_monotonic_violations: Option<Spanned<PercentFrom0>>,
        /// How many mismatched records (missing, stale or extra, older than max_lag) a
        /// reconcile probe may find, such as 0. Applies to this budget's reconcile probes; the
        /// ConsistencyReconcileMismatches alert fires when there are more.
        max_mismatches: Option<Spanned<Count<0>>>,
        /// Share of the budget used at which the state is `warn`.
        warn_at: Percent = "80%",
        /// How long a probe must be over budget before the state is `breach`.
        breach_after: Duration = "0s",
        /// Share of time the budget should be met, over a window.
        objective: Option<ObjectiveConfig>,
        /// Severity label of this budget's alerts.
        severity: NonEmpty<String> = "page",
        /// Link put on this budget's alerts.
        runbook_url: Option<String>,
        /// How often this budget's probes run; at most max_lag / 2.
        interval: Option<Spanned<PositiveDuration>>,
        /// How long one run of this budget's probes may take; at most the interval.
        timeout: Option<Spanned<PositiveDuration>>,
        /// How long a probe may be behind without progress before it counts as stalled.
        stall_after: Option<Spanned<PositiveDuration>>,
        /// The measurements of this feature's hops and views.
        probes: NonEmpty<Vec<ProbeConfig>>,
    }
}

config_table! {
    /// Share of time the budget should be met, over a window.
    pub(crate) struct ObjectiveConfig = "objective" {
        /// Share of the window the budget should be met, such as 99.9%; below 100%.
        target: PercentBelow100,
        /// The rolling window, such as 28d.
        window: PositiveDuration,
    }
}

config_table! {
    /// One measurement of one hop or view, tagged with its kind.
    pub(crate) struct ProbeConfig = "probe" {
        /// Name, unique within its budget; the `probe` label.
        name: Spanned<Name>,
        /// How often this probe runs; at most max_lag / 2.
        interval: Option<Spanned<PositiveDuration>>,
        /// How long one run may take; at most the interval.
        timeout: Option<Spanned<PositiveDuration>>,
        /// Overrides the budget's max_lag.
        max_lag: Option<Spanned<PositiveDuration>>,
        /// Overrides the budget's max_backlog.
        max_backlog: Option<Spanned<Count<0>>>,
        /// Overrides the budget's max_monotonic_violations; only on a canary with `monotonic`.
        max_monotonic_violations: Option<Spanned<PercentFrom0>>,
        /// Overrides the budget's max_mismatches; only on a reconcile probe.
        max_mismatches: Option<Spanned<Count<0>>>,
        /// How long this probe may be behind without progress before it counts as stalled.
        stall_after: Option<Spanned<PositiveDuration>>,
        kind: Tagged<dyn ProbeKindConfig>,
    }
}

/// One source kind's table (`postgres: {…}`), as the source table dispatches to it.
///
/// The loader calls `check` on every decoded kind, then `resolve` when it passed.
pub(crate) trait SourceKindConfig: Debug {
    /// Checks what the kind's keys mean together, on whichever of them are valid, reporting
    /// each problem; false when one failed.
    fn check(&self, _ctx: &mut Ctx<'_>) -> bool {
        true
    }

    /// The connection, and how many connections (or requests at once) the source allows.
    /// `None` when something about it is invalid (and already reported).
    fn resolve(&self) -> Option<(SourceKind, usize)>;
}

/// One probe kind's table (`sql_watermark: {…}`), as the probe table dispatches to it.
///
/// The loader calls `check` on every decoded kind, then, when the kind's table is complete
/// (every key written valid, every required key written) and every check passed,
/// `backlog_only` and `resolve`.
pub(crate) trait ProbeKindConfig: Debug {
    /// Checks what the kind's keys mean together, on whichever of them are valid, reporting
    /// each problem; false when one failed.
    fn check(&self, _ctx: &mut Ctx<'_>) -> bool {
        true
    }

    /// The flag that makes this probe report its backlog only, if it does.
    fn backlog_only(&self) -> Option<BacklogOnly<'_>> {
        None
    }

    /// The model probes of this configured probe: one, or one per replica for replica kinds.
    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry>;
}

/// A probe that cannot measure lag, only its backlog: the written `false` that says so, its
/// key, and why (completing "max_lag cannot be measured here: …").
#[derive(Debug)]
pub(crate) struct BacklogOnly<'a> {
    pub flag: &'a Spanned<bool>,
    pub key: &'static str,
    pub why: &'static str,
}

/// What a probe kind resolves against, beyond its own keys.
#[derive(Debug)]
pub(crate) struct ProbeScope<'a> {
    /// The probe's own max_lag or its budget's; `None` for a backlog-only probe.
    pub max_lag: Option<Duration>,
    /// The sources that resolved, for kinds that expand per member of their source
    /// (`mongodb_replica` measures its URI's seed list by default).
    pub sources: &'a BTreeMap<String, Arc<Source>>,
}

/// One model probe of a configured probe: its kind, and the replica it measures.
#[derive(Debug)]
pub(crate) struct ProbeEntry {
    pub kind: ProbeKind,
    pub replica: Option<String>,
}

/// The one model probe of a kind that measures one thing, if its config gave one.
pub(crate) fn single(kind: Option<ProbeKind>) -> Vec<ProbeEntry> {
    kind.map(|kind| ProbeEntry {
        kind,
        replica: None,
    })
    .into_iter()
    .collect()
}

config_kinds!("source": dyn SourceKindConfig {
    PostgresSourceConfig,
    KafkaSourceConfig,
    RabbitmqSourceConfig,
    RedisSourceConfig,
    NatsSourceConfig,
    MysqlSourceConfig,
    HttpSourceConfig,
    DynamodbSourceConfig,
    MongodbSourceConfig,
});
