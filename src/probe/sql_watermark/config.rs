//! The `sql_watermark` kind's config: its table, its model and what it checks.

use crate::config::decode::{Ctx, Spanned};
use crate::config::table::{Table, config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{Choice, NonEmpty, ReadsSource, SourceRef};
use crate::model::ProbeKind;
use crate::probe::postgres::config::PostgresSourceConfig;

/// A projection or read model whose position is read with SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlWatermark {
    pub source: String,
    /// Returns one row, one column: the view's position or timestamp.
    pub watermark: String,
    /// Given the watermark as `$1`, returns the timestamp of the oldest change not yet applied
    /// (NULL when nothing is pending) and optionally a pending count.
    pub oldest_pending: Option<String>,
    pub mode: WatermarkMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkMode {
    /// Lag is the age of the oldest pending source change (requires `oldest_pending`).
    OldestPending,
    /// Lag is `now − watermark timestamp`: reads an idle source as lag, so it is opt-in.
    SinceWatermark,
}

impl WatermarkMode {
    pub fn key(self) -> &'static str {
        match self {
            WatermarkMode::OldestPending => "oldest_pending",
            WatermarkMode::SinceWatermark => "since_watermark",
        }
    }
}

config_table! {
    /// A projection or read model whose position is read with SQL.
    pub(crate) struct SqlWatermarkConfig = "sql_watermark" {
        /// Name of the postgres source to query.
        source: SourceRef<SqlWatermark>,
        /// Returns one row, one column: the view's position or timestamp.
        watermark: NonEmpty<String>,
        /// Given the watermark as $1, returns the timestamp of the oldest change not yet
        /// applied (NULL when nothing is pending) and optionally a pending count.
        oldest_pending: Option<NonEmpty<String>>,
        /// `oldest_pending`: lag is the age of the oldest pending change. `since_watermark`:
        /// lag is now - watermark, which reads an idle source as lag; only without
        /// oldest_pending.
        mode: Spanned<WatermarkMode> = "oldest_pending",
    }
}

impl ReadsSource for SqlWatermark {
    const KIND: &'static str = <SqlWatermarkConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <PostgresSourceConfig as Table>::TABLE.id;
}

impl Choice for WatermarkMode {
    const ALL: &'static [Self] = &[WatermarkMode::OldestPending, WatermarkMode::SinceWatermark];

    fn key(self) -> &'static str {
        WatermarkMode::key(self)
    }
}

impl ProbeKindConfig for SqlWatermarkConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let Some(mode) = &self.mode else {
            return true;
        };
        let oldest_pending = written!(self.oldest_pending);
        match mode.value {
            WatermarkMode::OldestPending if oldest_pending.is_none() => {
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    "missing `oldest_pending`: without it lag could only be now - watermark, \
                     which cannot tell an idle source from a stuck view; add `oldest_pending`, \
                     or opt into that with `mode: since_watermark`",
                );
                false
            }
            WatermarkMode::SinceWatermark if oldest_pending.is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    "`mode: since_watermark` ignores `oldest_pending`: remove one of them",
                );
                false
            }
            _ => true,
        }
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::SqlWatermark(SqlWatermark {
                source: self.source.as_ref()?.value.clone(),
                watermark: self.watermark.clone()?,
                oldest_pending: self.oldest_pending.clone(),
                mode: self.mode.as_ref()?.value,
            }))
        };
        single(kind())
    }
}
