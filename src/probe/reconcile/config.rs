//! The `reconcile` kind's config: its tables, its model and what it checks.
//!
//! A reconciliation names a source of truth (`source`), the view derived from it (`derived`),
//! how records of the two compare (`key_type`, `collation`, `version_type`, `precision`) and, for the
//! records older than the recent window, a `sweep` over every key.

use std::time::Duration;

use crate::config::decode::{Ctx, Spanned};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{Choice, Count, NonEmpty, PositiveDuration, ReadsSource, SourceRef};
use crate::model::ProbeKind;
use crate::probe::mysql::config::MysqlSourceConfig;
use crate::probe::postgres::config::PostgresSourceConfig;

/// One reconciliation of a derived view against its source of truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconcile {
    /// `$1` = start of the recent window; returns (key, version, changed_at).
    pub source: SideQuery,
    /// `$1` = the keys; returns (key, version).
    pub derived: SideQuery,
    /// Records changed this recently are read from the source on every run.
    pub window: Duration,
    /// Records younger than this are in flight, not missing: the probe's max_lag.
    pub in_flight: Duration,
    /// The pass over every key, when configured.
    pub sweep: Option<Sweep>,
    pub compare: Compare,
    /// Keys of current mismatches shown in the API, at most; 0 shows none.
    pub sample_keys: usize,
    /// Keys per statement of the derived side's lookups.
    pub batch: usize,
}

/// A query on one side and the source it runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct SideQuery {
    /// A postgres or mysql source.
    pub source: String,
    pub query: String,
}

/// The sweep over every source key, in keyset-paginated chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// On the source: `$1` = the last key of the previous chunk, `$2` = the chunk size;
    /// returns (key, version, changed_at) in ascending key order.
    pub query: String,
    /// On the derived side, the same shape returning (key, version): lets the sweep find
    /// derived records with no source record (`extra`).
    pub derived_query: Option<String>,
    /// How long after one sweep started the next one starts.
    pub every: Duration,
    /// Rows per statement.
    pub chunk: usize,
    /// Chunks per run, at most.
    pub chunks_per_run: usize,
}

/// How the two sides' records compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compare {
    pub keys: KeyType,
    pub collation: Collation,
    pub versions: VersionType,
    /// Timestamp versions are truncated to this before comparing.
    pub precision: Duration,
}

/// What the keys of both sides are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Integer,
    Text,
}

/// How text keys compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collation {
    /// Byte for byte.
    Exact,
    /// After Unicode lower-casing of both sides.
    CaseFolded,
}

/// What the versions of both sides are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionType {
    /// A derived version at or above the source's is visible.
    Integer,
    /// A derived time at or after the source's, after truncation to `precision`, is visible.
    Timestamp,
    /// Only an equal derived version is visible.
    Text,
}

impl Choice for KeyType {
    const ALL: &'static [Self] = &[KeyType::Integer, KeyType::Text];

    fn key(self) -> &'static str {
        match self {
            KeyType::Integer => "integer",
            KeyType::Text => "text",
        }
    }
}

impl Choice for Collation {
    const ALL: &'static [Self] = &[Collation::Exact, Collation::CaseFolded];

    fn key(self) -> &'static str {
        match self {
            Collation::Exact => "exact",
            Collation::CaseFolded => "case_folded",
        }
    }
}

impl Choice for VersionType {
    const ALL: &'static [Self] = &[
        VersionType::Integer,
        VersionType::Timestamp,
        VersionType::Text,
    ];

    fn key(self) -> &'static str {
        match self {
            VersionType::Integer => "integer",
            VersionType::Timestamp => "timestamp",
            VersionType::Text => "text",
        }
    }
}

/// The smallest window: shorter ones re-read too little to outlast a slow run.
pub const MIN_WINDOW: Duration = Duration::from_secs(60);
/// Keys per derived lookup statement without a sweep.
pub const DEFAULT_BATCH: usize = 5000;
/// Chunk sizes allowed: a chunk is held in memory, twice with a derived sweep.
pub const MAX_CHUNK: u64 = 100_000;

config_table! {
    /// Reconciliation: compares the records of a source of truth with a view derived from
    /// them and finds what never arrived, arrived stale, or should not be there.
    ///
    /// Every run reads the source records changed within `window` (`source.query`, $1 = the
    /// start of the window on the source's clock) and asks the derived side for those keys
    /// (`derived.query`, $1 = the keys: an array on PostgreSQL, `= ANY($1)`; expanded to one
    /// placeholder per key on MySQL, `IN ($1)`). A derived version at or above the source's
    /// is visible. Lag is the age, on the source's clock, of the oldest source record not yet
    /// visible; records younger than max_lag are in flight, older ones are mismatches
    /// (`missing` with no derived record, `stale` with an older version). Records not visible
    /// are followed on later runs even after they leave the window. A `sweep` pages through
    /// every key on its own cadence and finds the older mismatches, and with `derived_query`
    /// the `extra` records. On MySQL sources write `$1`, `$2` as on PostgreSQL.
    pub(crate) struct ReconcileConfig = "reconcile" {
        /// The source of truth: a postgres or mysql source and a query with $1 = the start of
        /// the window, returning (key, version, changed_at) of each record changed since.
        source: ReconcileSourceConfig,
        /// The derived view: a postgres or mysql source and a query with $1 = the keys,
        /// returning (key, version) of each derived record among them.
        derived: ReconcileSourceConfig,
        /// How far back each run re-reads source changes; more than max_lag. Default: 2 x
        /// max_lag, at least 1m.
        window: Option<Spanned<PositiveDuration>>,
        /// The pass over every key, in chunks, on its own cadence.
        sweep: Option<SweepConfig>,
        /// What keys are read as on both sides: integer or text.
        key_type: Spanned<KeyType> = "integer",
        /// How text keys compare: exact (byte for byte) or case_folded (lower-cased first).
        /// Only with `key_type: text`. Default: exact.
        collation: Option<Spanned<Collation>>,
        /// What versions are read as on both sides: integer (derived >= source is visible),
        /// timestamp (likewise after truncation to `precision`) or text (equal is visible).
        version_type: Spanned<VersionType> = "integer",
        /// Timestamp versions of both sides are truncated to this before comparing, such as
        /// 1s when one side stores whole seconds. Only with `version_type: timestamp`. Default:
        /// 1us.
        precision: Option<Spanned<PositiveDuration>>,
        /// Show up to this many keys of current mismatches in the API (never their values,
        /// never as labels); 0 shows none.
        sample_keys: Count<0, 100> = "0",
        /// Not a key of this table: max_mismatches is a probe key (beside `reconcile:`) or a
        /// budget key.
        max_mismatches: Option<Spanned<Count<0>>>,
    }
}

config_table! {
    /// One side of a reconciliation: the source queried and the query.
    pub(crate) struct ReconcileSourceConfig = "reconcile_side" {
        /// Name of the postgres or mysql source to query.
        source: SourceRef<SideQuery>,
        /// The query; see `reconcile` for its parameter and columns.
        query: NonEmpty<String>,
    }
}

config_table! {
    /// The sweep: every source key in keyset-paginated chunks, a bounded number per run,
    /// resumed from a cursor kept between runs (and from the start after a restart).
    pub(crate) struct SweepConfig = "reconcile_sweep" {
        /// On the source: $1 = the last key of the previous chunk (the smallest integer, or
        /// the empty text, for the first), $2 = the chunk size; returns (key, version,
        /// changed_at) in ascending key order, such as `WHERE id > $1 ORDER BY id LIMIT $2`.
        query: NonEmpty<String>,
        /// On the derived source, the same shape returning (key, version) in the same order:
        /// finds derived records without a source record (`extra`). Both sides must order
        /// keys alike (integers; text under a binary collation).
        derived_query: Option<NonEmpty<String>>,
        /// How long after a sweep started the next one starts.
        every: PositiveDuration = "1h",
        /// Rows per statement.
        chunk: Count<1, MAX_CHUNK> = "5000",
        /// Chunks per run, at most; a run also stops starting chunks once half its timeout
        /// is spent.
        chunks_per_run: Count<1, 1000> = "10",
    }
}

impl ReadsSource for SideQuery {
    const KIND: &'static str = <ReconcileConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <PostgresSourceConfig as Table>::TABLE.id;
    const SOURCES: &'static [&'static str] = &[
        <PostgresSourceConfig as Table>::TABLE.id,
        <MysqlSourceConfig as Table>::TABLE.id,
    ];
}

impl ReconcileSourceConfig {
    fn settings(&self) -> Option<SideQuery> {
        Some(SideQuery {
            source: self.source.as_ref()?.value.clone(),
            query: self.query.clone()?,
        })
    }
}

impl ProbeKindConfig for ReconcileConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        if let Some(limit) = &self.max_mismatches {
            ctx.error(
                limit.span,
                &limit.path,
                "max_mismatches is a key of the probe (beside `reconcile:`, at the same \
                 indentation as `name:`) or of the budget, not of the reconcile table",
            );
            ok = false;
        }
        let text_keys = self.key_type.as_ref().map(|k| k.value) != Some(KeyType::Integer);
        if let (Some(collation), false) = (&self.collation, text_keys) {
            ctx.error(
                collation.span,
                &collation.path,
                "`collation` applies to text keys: add `key_type: text`, or remove it",
            );
            ok = false;
        }
        let timestamps =
            self.version_type.as_ref().map(|v| v.value) == Some(VersionType::Timestamp);
        if let (Some(precision), false) = (&self.precision, timestamps) {
            ctx.error(
                precision.span,
                &precision.path,
                "`precision` applies to timestamp versions: add `version_type: timestamp`, or \
                 remove it",
            );
            ok = false;
        }
        ok
    }

    fn resolve(&self, ctx: &mut Ctx<'_>, scope: &ProbeScope) -> Vec<ProbeEntry> {
        let Some(max_lag) = scope.max_lag else {
            ctx.error(
                self.keys.span,
                &self.keys.path,
                "reconcile needs a max_lag (on the probe or its budget): records younger than \
                 it are in flight, older ones that are not visible are mismatches",
            );
            return Vec::new();
        };
        let window = match &self.window {
            Some(window) if window.value <= max_lag => {
                ctx.error(
                    window.span,
                    &window.path,
                    format!(
                        "window must be longer than max_lag ({}): a record must still be in the \
                         window when it becomes older than max_lag, to be called missing",
                        crate::model::format_duration(max_lag)
                    ),
                );
                return Vec::new();
            }
            Some(window) => window.value,
            None => (max_lag * 2).max(MIN_WINDOW),
        };
        let sweep = match &self.sweep {
            Some(sweep) => match sweep.settings() {
                Some(sweep) => Some(sweep),
                None => return Vec::new(),
            },
            None => None,
        };
        let kind = || {
            let keys = self.key_type.as_ref()?.value;
            let versions = self.version_type.as_ref()?.value;
            Some(ProbeKind::Reconcile(Reconcile {
                source: self.source.as_ref()?.settings()?,
                derived: self.derived.as_ref()?.settings()?,
                window,
                in_flight: max_lag,
                batch: sweep.as_ref().map_or(DEFAULT_BATCH, |s| s.chunk),
                sweep,
                compare: Compare {
                    keys,
                    collation: self
                        .collation
                        .as_ref()
                        .map_or(Collation::Exact, |c| c.value),
                    versions,
                    precision: self
                        .precision
                        .as_ref()
                        .map_or(Duration::from_micros(1), |p| p.value),
                },
                sample_keys: usize::try_from(self.sample_keys?).unwrap_or(usize::MAX),
            }))
        };
        single(kind())
    }
}

impl SweepConfig {
    fn settings(&self) -> Option<Sweep> {
        Some(Sweep {
            query: self.query.clone()?,
            derived_query: self.derived_query.clone(),
            every: self.every?,
            chunk: usize::try_from(self.chunk?).ok()?,
            chunks_per_run: usize::try_from(self.chunks_per_run?).ok()?,
        })
    }
}
