//! `reconcile`: compares a source of truth with a view derived from it, record by record, and
//! finds what never arrived (`missing`), arrived at an older version (`stale`) or is in the
//! view without a source record (`extra`).
//!
//! Position-based probes cannot see a skipped record: the view's position moves on and reads
//! 0. This kind reads the records themselves. Every run, the **recent pass** reads the source
//! records changed within the window, then (after them) asks the derived side for their keys
//! and those of records still followed from earlier runs; lag is the age, on the source's
//! clock, of the oldest record not yet visible. Records younger than max_lag are in flight;
//! older ones are mismatches. On its own cadence, the **sweep** pages through every source key
//! (and, with `derived_query`, every derived key) from a cursor kept between runs, a bounded
//! number of chunks per run, and finds the mismatches older than the window. The ledger
//! (`ledger.rs`) holds what is known between runs; `sql.rs` the two engines.
//!
//! Everything is read-only. A run that fails (a side down, a query rejected, the deadline)
//! changes no count and keeps the sweep's cursor: the next run resumes where it stopped. After
//! a restart the ledger is empty and the sweep starts from the first key.

pub mod config;
pub mod dashboard;
pub mod detail;
mod ledger;
mod sql;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use self::config::{KeyType, Reconcile};
use self::detail::{Load, ReconcileDetail};
use self::ledger::{DerivedPage, DerivedRecord, Key, Ledger, Normalise, SourceRecord, Summary};
use self::sql::{Ask, Page, Shape, Side, SourcePage};
use super::{Backlog, BacklogUnit, Detail, ProbeError, Reading, Sample, SourceHandles};

pub struct ReconcileProbe {
    spec: Reconcile,
    source: Side,
    derived: Side,
    normalise: Normalise,
    ledger: Ledger,
    source_load: Load,
    derived_load: Load,
}

impl ReconcileProbe {
    fn text_keys(&self) -> bool {
        self.spec.compare.keys == KeyType::Text
    }

    /// Reads a page's rows as records, counting them; returns the source's clock beside them.
    fn source_records(
        &mut self,
        page: SourcePage,
    ) -> Result<(i64, Vec<SourceRecord>), ProbeError> {
        self.source_load.statements += 1;
        self.source_load.rows += page.rows.len() as u64;
        let records = page
            .rows
            .into_iter()
            .map(|row| self.normalise.source(row))
            .collect::<Result<_, _>>()?;
        Ok((page.now, records))
    }

    /// The derived records of `keys`, in batches of the configured size.
    async fn lookup(
        &mut self,
        keys: &[Key],
        deadline: Instant,
    ) -> Result<Vec<DerivedRecord>, ProbeError> {
        let mut records = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.spec.batch.max(1)) {
            let rows = self
                .derived
                .derived(&self.spec.derived.query, Ask::Lookup(batch), deadline)
                .await?;
            self.derived_load.statements += 1;
            self.derived_load.rows += rows.len() as u64;
            for row in rows {
                records.push(self.normalise.derived(row)?);
            }
        }
        Ok(records)
    }

    /// The recent pass; returns the source's clock.
    async fn recent_pass(&mut self, deadline: Instant) -> Result<i64, ProbeError> {
        let page = self
            .source
            .source(
                &self.spec.source.query,
                Ask::Recent(self.spec.window),
                deadline,
            )
            .await?;
        let (now_source, records) = self.source_records(page)?;
        let keys = self.ledger.lookup_keys(&records);
        let derived = self.lookup(&keys, deadline).await?;
        self.ledger.apply_recent(&records, &derived);
        Ok(now_source)
    }

    /// Sweep chunks while the sweep is due, the run's chunk allowance lasts and less than half
    /// the run's time is spent; returns the source's clock at the last chunk.
    async fn sweep(
        &mut self,
        started: Instant,
        deadline: Instant,
    ) -> Result<Option<i64>, ProbeError> {
        let Some(sweep) = self.spec.sweep.clone() else {
            return Ok(None);
        };
        if !self.ledger.sweep_due(crate::clock::instant(), sweep.every) {
            return Ok(None);
        }
        let halfway = started + deadline.saturating_duration_since(started) / 2;
        let text_keys = self.text_keys();
        let mut now_source = None;
        for _ in 0..sweep.chunks_per_run {
            if crate::clock::instant() >= halfway {
                break;
            }
            let cursor = self.ledger.sweep_cursor().cloned();
            let page_of = Page {
                after: cursor.as_ref(),
                limit: sweep.chunk,
                text_keys,
            };
            let page = self
                .source
                .source(&sweep.query, Ask::SourcePage(page_of), deadline)
                .await?;
            let source_full = page.rows.len() >= sweep.chunk;
            let (page_now, records) = self.source_records(page)?;
            let derived = match &sweep.derived_query {
                Some(query) => {
                    let rows = self
                        .derived
                        .derived(query, Ask::DerivedPage(page_of), deadline)
                        .await?;
                    self.derived_load.statements += 1;
                    self.derived_load.rows += rows.len() as u64;
                    let full = rows.len() >= sweep.chunk;
                    let records = rows
                        .into_iter()
                        .map(|row| self.normalise.derived(row))
                        .collect::<Result<Vec<_>, _>>()?;
                    DerivedPage::Swept { records, full }
                }
                None => {
                    let keys: Vec<Key> = records.iter().map(|r| r.key.clone()).collect();
                    DerivedPage::Lookup(self.lookup(&keys, deadline).await?)
                }
            };
            let done = self.ledger.apply_sweep_chunk(
                &records,
                source_full,
                derived,
                page_now,
                wall_now(),
            )?;
            now_source = Some(page_now);
            if done {
                break;
            }
        }
        Ok(now_source)
    }

    fn reading(&self, summary: Summary) -> Reading {
        let detail_text = describe(&summary);
        let sample = Sample {
            lag_seconds: Some(summary.lag_seconds),
            backlog: Some(Backlog {
                unit: BacklogUnit::Rows,
                value: summary.not_visible as f64,
            }),
            detail: Some(detail_text),
            negative_lag_clamped: summary.negative_lag_clamped,
            ..Sample::default()
        };
        Reading {
            sample,
            detail: Some(Detail::Reconcile(Box::new(ReconcileDetail {
                summary,
                source: self.source_load,
                derived: self.derived_load,
            }))),
        }
    }
}

/// The daemon's wall clock, for the times the ledger keeps (first sightings, sweeps).
fn wall_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(crate::clock::now().unix.max(0.0))
}

/// The short human detail of a run.
fn describe(summary: &Summary) -> String {
    let mut text = format!(
        "{} not visible; mismatches: {} missing, {} stale",
        summary.not_visible, summary.missing, summary.stale
    );
    if let Some(extra) = summary.extra {
        text.push_str(&format!(", {extra} extra"));
    }
    if let Some(sweep) = &summary.sweep {
        if sweep.running {
            text.push_str(&format!("; sweep running, {} rows so far", sweep.rows));
        } else if let Some(rows) = sweep.last_rows {
            text.push_str(&format!("; last sweep {rows} rows"));
        }
    }
    text
}

impl super::Kind for ReconcileProbe {
    const KEY: &'static str = "reconcile";
    type Settings = Reconcile;

    fn new(
        _probe: &crate::model::Probe,
        settings: &Reconcile,
        sources: &SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self {
            source: Side::of(&settings.source.source, sources)?,
            derived: Side::of(&settings.derived.source, sources)?,
            normalise: Normalise {
                compare: settings.compare,
            },
            ledger: Ledger::new(
                settings.in_flight,
                settings.sweep.is_some(),
                settings
                    .sweep
                    .as_ref()
                    .is_some_and(|s| s.derived_query.is_some()),
            ),
            spec: settings.clone(),
            source_load: Load::default(),
            derived_load: Load::default(),
        })
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        let started = crate::clock::instant();
        let recent_now = self.recent_pass(deadline).await?;
        let now_source = self.sweep(started, deadline).await?.unwrap_or(recent_now);
        let summary = self
            .ledger
            .summary(now_source, wall_now(), self.spec.sample_keys);
        Ok(self.reading(summary))
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        self.source
            .check(&self.spec.source.query, Shape::Recent, deadline)
            .await?;
        self.derived
            .check(&self.spec.derived.query, Shape::Lookup, deadline)
            .await?;
        let mut checked = "source and derived queries accepted".to_owned();
        if let Some(sweep) = &self.spec.sweep {
            self.source
                .check(&sweep.query, Shape::SourcePage, deadline)
                .await?;
            if let Some(query) = &sweep.derived_query {
                self.derived
                    .check(query, Shape::DerivedPage, deadline)
                    .await?;
            }
            checked.push_str(", and the sweep's");
        }
        Ok(checked)
    }

    fn source(settings: &Reconcile) -> &str {
        &settings.source.source
    }

    fn counts_mismatches(_settings: &Reconcile) -> bool {
        true
    }

    fn sources(settings: &Reconcile) -> Vec<&str> {
        let mut sources = vec![settings.source.source.as_str()];
        if settings.derived.source != settings.source.source {
            sources.push(settings.derived.source.as_str());
        }
        sources
    }
}
