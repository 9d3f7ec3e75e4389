//! The `oldest_pending` table that cache and HTTP-view kinds share: which SQL source to ask for
//! the oldest change a view has not shown yet, and the query that asks it.

use crate::config::table::{Table, config_table};
use crate::config::value::{NonEmpty, ReadsSource, SourceRef};
use crate::probe::mysql::config::MysqlSourceConfig;
use crate::probe::postgres::config::PostgresSourceConfig;

/// A source-side comparison: the query on `source` that, given the version a view shows, returns
/// the time of the oldest source change newer than it.
#[derive(Debug, Clone, PartialEq)]
pub struct OldestPending {
    /// A postgres or mysql source.
    pub source: String,
    pub query: String,
}

config_table! {
    /// The source-side comparison that turns the version a view shows into lag.
    ///
    /// lagbudget runs `query` on `source` (a postgres or mysql source) with the version the
    /// view shows as its one parameter ($1 on PostgreSQL, ? on MySQL), and subtracts the
    /// timestamp it returns from that database's own clock. For one version the query returns
    /// one row: the time of the oldest source change newer than the version (NULL or no row
    /// when there is none) and, optionally, how many there are. For a sample of entity caches
    /// the parameter is a JSON array of {"key", "id", "version"} objects and the query returns
    /// one row per entity that trails its source: the key and the time of its oldest change
    /// newer than the cached version.
    pub(crate) struct OldestPendingConfig = "oldest_pending" {
        /// Name of the postgres or mysql source to query.
        source: SourceRef<OldestPending>,
        /// The query, with the view's version as its one parameter.
        query: NonEmpty<String>,
    }
}

impl ReadsSource for OldestPending {
    const KIND: &'static str = <OldestPendingConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <PostgresSourceConfig as Table>::TABLE.id;
    const SOURCES: &'static [&'static str] = &[
        <PostgresSourceConfig as Table>::TABLE.id,
        <MysqlSourceConfig as Table>::TABLE.id,
    ];
}

impl OldestPendingConfig {
    /// The settings, once every key decoded.
    pub fn settings(&self) -> Option<OldestPending> {
        Some(OldestPending {
            source: self.source.as_ref()?.value.clone(),
            query: self.query.clone()?,
        })
    }
}
