//! What only a `reconcile` probe knows beyond lag: its mismatches by kind, the sweep's
//! progress, and the load it puts on each side; the metric families it exports and the
//! `reconcile` object the API shows for it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::ledger::{MismatchKind, Summary};
use crate::families::{Exposition, FamilyBuilder, Kind, LabelSet, Labels};

pub const RECONCILE_MISMATCHES: &str = "lagbudget_reconcile_mismatches";
pub const RECONCILE_SWEEP_ROWS: &str = "lagbudget_reconcile_sweep_rows";
pub const RECONCILE_SWEEP_PROGRESS: &str = "lagbudget_reconcile_sweep_progress_ratio";
pub const RECONCILE_LAST_SWEEP: &str = "lagbudget_reconcile_last_sweep_timestamp_seconds";
pub const RECONCILE_ROWS_READ: &str = "lagbudget_reconcile_rows_read_total";
pub const RECONCILE_STATEMENTS: &str = "lagbudget_reconcile_statements_total";

/// Which side of a reconciliation a statement ran on: the `side` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideName {
    Source,
    Derived,
}

impl SideName {
    pub const ALL: [SideName; 2] = [SideName::Source, SideName::Derived];

    pub fn label(self) -> &'static str {
        match self {
            SideName::Source => "source",
            SideName::Derived => "derived",
        }
    }
}

/// Rows read and statements run on one side since the probe's runner started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub rows: u64,
    pub statements: u64,
}

/// A reconciliation's state at its last successful run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileDetail {
    pub summary: Summary,
    pub source: Load,
    pub derived: Load,
}

impl ReconcileDetail {
    fn load(&self, side: SideName) -> Load {
        match side {
            SideName::Source => self.source,
            SideName::Derived => self.derived,
        }
    }

    fn count(&self, kind: MismatchKind) -> Option<u64> {
        match kind {
            MismatchKind::Missing => Some(self.summary.missing),
            MismatchKind::Stale => Some(self.summary.stale),
            MismatchKind::Extra => self.summary.extra,
        }
    }

    /// The share of the last completed sweep's rows the running sweep has covered; 1 between
    /// sweeps; unknown before the first sweep completes.
    fn progress(&self) -> Option<f64> {
        let sweep = self.summary.sweep.as_ref()?;
        if !sweep.running {
            return sweep.last_rows.map(|_| 1.0);
        }
        match sweep.last_rows? {
            0 => Some(1.0),
            last => Some((sweep.rows as f64 / last as f64).min(1.0)),
        }
    }

    /// The `reconcile` object of the probe in the API.
    pub fn status(&self) -> ReconcileStatus {
        let summary = &self.summary;
        ReconcileStatus {
            mismatches: Mismatches {
                missing: summary.missing,
                stale: summary.stale,
                extra: summary.extra,
            },
            not_visible: summary.not_visible,
            sweep: summary.sweep.as_ref().map(|sweep| SweepStatus {
                running: sweep.running,
                rows: sweep.rows,
                progress_ratio: self.progress(),
                last_completed: sweep.last_completed.map(|at| crate::status::rfc3339(unix(at))),
                last_rows: sweep.last_rows,
                completed: sweep.completed,
            }),
            sample: summary
                .sample
                .iter()
                .map(|(kind, key)| SampleKey {
                    kind: kind.label(),
                    key: key.clone(),
                })
                .collect(),
        }
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// The `reconcile` object of a `reconcile` probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileStatus {
    /// Records older than max_lag that are mismatched, by kind; `extra` only with a derived
    /// sweep.
    pub mismatches: Mismatches,
    /// Source records not yet visible that lagbudget knows of, in flight or mismatched.
    pub not_visible: u64,
    pub sweep: Option<SweepStatus>,
    /// Keys of current mismatches, oldest first (only with `sample_keys`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<SampleKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatches {
    pub missing: u64,
    pub stale: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepStatus {
    pub running: bool,
    /// Source rows the running sweep has covered.
    pub rows: u64,
    pub progress_ratio: Option<f64>,
    pub last_completed: Option<String>,
    pub last_rows: Option<u64>,
    /// Sweeps completed since the probe's runner started.
    pub completed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleKey {
    pub kind: &'static str,
    pub key: String,
}

/// The families only `reconcile` probes fill, from fresh probes' details.
pub struct Families {
    mismatches: FamilyBuilder,
    sweep_rows: FamilyBuilder,
    progress: FamilyBuilder,
    last_sweep: FamilyBuilder,
    rows_read: FamilyBuilder,
    statements: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            mismatches: FamilyBuilder::new(
                RECONCILE_MISMATCHES,
                "Records older than max_lag that the derived view does not show as the source \
                 has them, by kind: missing (no derived record), stale (an older version), \
                 extra (a derived record without a source record; only with a derived sweep).",
                Kind::Gauge,
            ),
            sweep_rows: FamilyBuilder::new(
                RECONCILE_SWEEP_ROWS,
                "Source rows the running reconcile sweep has covered (the last sweep's total \
                 between sweeps).",
                Kind::Gauge,
            ),
            progress: FamilyBuilder::new(
                RECONCILE_SWEEP_PROGRESS,
                "Share of the last completed sweep's rows the running sweep has covered; 1 \
                 between sweeps; absent before the first sweep completes.",
                Kind::Gauge,
            ),
            last_sweep: FamilyBuilder::new(
                RECONCILE_LAST_SWEEP,
                "Unix time the last reconcile sweep completed.",
                Kind::Gauge,
            ),
            rows_read: FamilyBuilder::new(
                RECONCILE_ROWS_READ,
                "Rows a reconcile probe read from each side (source, derived) since its runner \
                 started: the load it puts on each database.",
                Kind::Counter,
            ),
            statements: FamilyBuilder::new(
                RECONCILE_STATEMENTS,
                "Queries a reconcile probe ran on each side since its runner started.",
                Kind::Counter,
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &ReconcileDetail) {
        let set = LabelSet::new(labels);
        for kind in MismatchKind::ALL {
            if let Some(count) = detail.count(kind) {
                self.mismatches
                    .push_with(&set, &[("kind", kind.label())], count as f64);
            }
        }
        if let Some(sweep) = &detail.summary.sweep {
            let rows = if sweep.running {
                Some(sweep.rows)
            } else {
                sweep.last_rows
            };
            if let Some(rows) = rows {
                self.sweep_rows.push(labels, rows as f64);
            }
            if let Some(progress) = detail.progress() {
                self.progress.push(labels, progress);
            }
            if let Some(at) = sweep.last_completed {
                self.last_sweep.push(labels, unix(at));
            }
        }
        for side in SideName::ALL {
            let load = detail.load(side);
            let extra = [("side", side.label())];
            self.rows_read.push_with(&set, &extra, load.rows as f64);
            self.statements
                .push_with(&set, &extra, load.statements as f64);
        }
    }

    pub fn finish(self, out: &mut Exposition) {
        self.mismatches.finish(out);
        self.sweep_rows.finish(out);
        self.progress.finish(out);
        self.last_sweep.finish(out);
        self.rows_read.finish(out);
        self.statements.finish(out);
    }
}
