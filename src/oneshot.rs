//! The one-shot commands: `lagbudget probe` (run every probe once and print a table) and
//! `lagbudget check --connect` (reach every source and prepare every probe's queries).

use std::fmt::Write as _;
use std::time::Duration;

use crate::model::{Config, Probe, SecretSet};
use crate::probe::{ProbeError, ProbeRunner, Sample, SourceHandles};

/// One probe's single run.
pub struct ProbeResult {
    pub budget: String,
    pub probe: String,
    pub kind: &'static str,
    pub budget_seconds: Option<f64>,
    pub duration: Duration,
    pub result: Result<Sample, ProbeError>,
}

/// Runs every probe of `config` (or of one budget) once, concurrently, each bounded by its
/// timeout.
pub async fn run_probes_once(
    config: &Config,
    budget: Option<&str>,
) -> Result<Vec<ProbeResult>, ProbeError> {
    let sources = SourceHandles::build(config, None)?;
    let handles: Vec<_> = config
        .budgets
        .iter()
        .filter(|b| budget.is_none_or(|name| b.name == name))
        .flat_map(|b| b.probes.iter().cloned())
        .map(|probe| {
            let sources = sources.clone();
            let secrets = config.secrets.clone();
            tokio::spawn(async move { run_once(&probe, &sources, &secrets).await })
        })
        .collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(result) => results.push(result),
            Err(e) => {
                return Err(ProbeError::new(
                    crate::probe::ErrorReason::Query,
                    format!("probe task failed: {e}"),
                ));
            }
        }
    }
    Ok(results)
}

async fn run_once(probe: &Probe, sources: &SourceHandles, secrets: &SecretSet) -> ProbeResult {
    let started = crate::clock::instant();
    let result = match ProbeRunner::new(probe, sources) {
        Ok(mut runner) => {
            crate::probe::require_lag(probe, runner.run(started + probe.timeout).await)
                .map(|reading| reading.sample)
        }
        Err(e) => Err(e),
    };
    ProbeResult {
        budget: probe.budget.clone(),
        probe: probe.display_name(),
        kind: probe.kind_key(),
        budget_seconds: probe.max_lag.map(|d| d.as_secs_f64()),
        duration: crate::clock::elapsed(started),
        result: result.map_err(|e| e.scrubbed(secrets)),
    }
}

/// A readable fixed-width table of one-shot results.
pub fn format_table(results: &[ProbeResult]) -> String {
    let header = [
        "BUDGET", "PROBE", "KIND", "LAG", "BUDGET", "BACKLOG", "TOOK", "RESULT",
    ];
    let mut rows: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    for r in results {
        let (lag, backlog, outcome) = match &r.result {
            Ok(s) => (
                s.lag_seconds
                    .map_or_else(|| "-".into(), |lag| format!("{lag:.3}s")),
                s.backlog
                    .map(|b| format!("{} {}", b.value, b.unit.as_str()))
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "ok{}",
                    s.detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            ),
            Err(e) => ("unknown".into(), "-".into(), format!("down: {e}")),
        };
        rows.push([
            r.budget.clone(),
            r.probe.clone(),
            r.kind.to_owned(),
            lag,
            r.budget_seconds
                .map(|b| format!("{b}s"))
                .unwrap_or_else(|| "-".into()),
            backlog,
            format!("{}ms", r.duration.as_millis()),
            outcome,
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `check --connect` found for one source or probe.
pub struct ConnectReport {
    pub what: String,
    pub result: Result<String, ProbeError>,
}

/// Connects to every source, then prepares every probe's queries, each within `timeout`.
pub async fn check_connections(config: &Config, timeout: Duration) -> Vec<ConnectReport> {
    let mut reports = Vec::new();
    let sources = match SourceHandles::build(config, None) {
        Ok(s) => s,
        Err(e) => {
            reports.push(ConnectReport {
                what: "sources".into(),
                result: Err(e),
            });
            return reports;
        }
    };
    for (source, handle) in sources.iter() {
        let result = handle
            .check_connect(crate::clock::instant() + timeout)
            .await;
        reports.push(ConnectReport {
            what: format!("source {} ({})", source.name, source.kind.key()),
            result: result.map_err(|e| e.scrubbed(&config.secrets)),
        });
    }
    for budget in &config.budgets {
        for probe in &budget.probes {
            let result = match ProbeRunner::new(probe, &sources) {
                Ok(mut runner) => runner.check(crate::clock::instant() + timeout).await,
                Err(e) => Err(e),
            };
            reports.push(ConnectReport {
                what: format!(
                    "probe {}/{} ({})",
                    budget.name,
                    probe.display_name(),
                    probe.kind_key()
                ),
                result: result.map_err(|e| e.scrubbed(&config.secrets)),
            });
        }
    }
    reports
}
