//! The decoded files to the validated model: unique names, source references, limits,
//! inherited settings and effective intervals. Each kind's own checks and model are the
//! kind's (`ProbeKindConfig`, `SourceKindConfig`).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Ctx, Spanned};
use super::table::written;
use super::tables::{BudgetConfig, DefaultsConfig, FileConfig, ProbeConfig, ProbeScope};
use crate::model::{Budget, Config, HttpSettings, Objective, Probe, Source, format_duration};

/// The longest `http.history_window`: the page's 24-hour summary covers beyond it.
const MAX_HISTORY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How often a probe runs when nothing says so (`defaults.interval` documents it).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How long one probe run may take when nothing says so (`defaults.timeout` documents it).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One setting at the levels it can be written at, most specific first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Layers {
    pub probe: Option<Duration>,
    pub budget: Option<Duration>,
    pub defaults: Option<Duration>,
}

impl Layers {
    fn configured(&self) -> Option<Duration> {
        self.probe.or(self.budget).or(self.defaults)
    }

    /// Written for this probe specifically (on it or its budget), not inherited from defaults.
    fn explicit(&self) -> bool {
        self.probe.is_some() || self.budget.is_some()
    }
}

/// A probe's resolved schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub stall_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TimingProblem {
    /// An explicit interval too long to enforce `max_lag`.
    IntervalAboveHalfMaxLag,
    /// An explicit timeout longer than the effective interval; `clamped` when that interval was
    /// shortened to `max_lag / 3`.
    TimeoutAboveInterval { interval: Duration, clamped: bool },
}

/// Resolves a probe's interval, timeout and stall time.
///
/// The effective interval is the configured one, but at most `max_lag / 3` (whole
/// milliseconds): a budget is only enforceable if it is looked at several times within it. An
/// interval the user chose explicitly above `max_lag / 2` is an error rather than silently
/// overridden, because it states an intent the budget cannot honour. An interval inherited
/// from `defaults` is simply shortened.
pub(crate) fn resolve_timing(
    interval: Layers,
    timeout: Layers,
    stall_after: Layers,
    max_lag: Option<Duration>,
) -> (Timing, Vec<TimingProblem>) {
    let mut problems = Vec::new();
    let configured = interval.configured().unwrap_or(DEFAULT_INTERVAL);
    let mut effective = configured;
    if let Some(max_lag) = max_lag {
        if interval.explicit() && configured > max_lag / 2 {
            problems.push(TimingProblem::IntervalAboveHalfMaxLag);
        }
        let third =
            Duration::from_millis(u64::try_from(max_lag.as_millis() / 3).unwrap_or(u64::MAX));
        // A budget under 3ms would give a zero interval; 1ms is as often as anything can run.
        effective = effective.min(third).max(Duration::from_millis(1));
    }
    let configured_timeout = timeout.configured().unwrap_or(DEFAULT_TIMEOUT);
    if timeout.explicit() && configured_timeout > effective {
        problems.push(TimingProblem::TimeoutAboveInterval {
            interval: effective,
            clamped: effective < configured,
        });
    }
    let stall_after = stall_after
        .configured()
        .unwrap_or_else(|| max_lag.unwrap_or_default().max(effective * 3));
    let timing = Timing {
        interval: effective,
        timeout: configured_timeout.min(effective),
        stall_after,
    };
    (timing, problems)
}

/// Where a name was first defined, for duplicate messages.
struct FirstSeen {
    file: usize,
    line: usize,
}

/// Every source name with its kind key, even of invalid sources, so that a probe naming one
/// is not also told the source does not exist.
type SourceKinds = BTreeMap<String, (Option<&'static str>, FirstSeen)>;

/// Merges the files (main first) into the model, reporting every cross-file problem. `None`
/// when anything is invalid (and reported).
pub(crate) fn resolve(ctx: &mut Ctx<'_>, files: Vec<FileConfig>) -> Option<Config> {
    let mut sources: BTreeMap<String, Arc<Source>> = BTreeMap::new();
    let mut source_kinds = SourceKinds::new();
    let mut budget_configs: Vec<BudgetConfig> = Vec::new();
    let mut files = files.into_iter();
    let main = files.next()?;
    for file in std::iter::once(&main).chain(files.as_slice()) {
        for named in file.sources.iter().flatten() {
            let file = named.value.keys.file;
            let variant = named.value.kind.as_ref();
            match source_kinds.entry(named.name.clone()) {
                Entry::Occupied(first) => {
                    let (_, first) = first.get();
                    let message = format!(
                        "duplicate source {:?} (first defined at {}:{})",
                        named.name,
                        ctx.file_name(first.file),
                        first.line
                    );
                    ctx.error_in(file, named.span, &named.path, message);
                    continue;
                }
                Entry::Vacant(slot) => {
                    let first = FirstSeen {
                        file,
                        line: named.span.line,
                    };
                    slot.insert((variant.map(|variant| variant.key), first));
                }
            }
            ctx.file = file;
            let checked = variant.filter(|variant| variant.config.check(ctx));
            if let Some((kind, max_connections)) = checked.and_then(|v| v.config.resolve()) {
                let source = Source {
                    name: named.name.clone(),
                    max_connections,
                    kind,
                };
                sources.insert(named.name.clone(), Arc::new(source));
            }
        }
    }
    budget_configs.extend(main.budgets.into_iter().flatten());
    for file in files {
        budget_configs.extend(file.budgets.into_iter().flatten());
    }

    let defaults = main.defaults.as_ref();
    let mut budget_names: BTreeMap<String, FirstSeen> = BTreeMap::new();
    let mut budgets = Vec::with_capacity(budget_configs.len());
    for budget in &budget_configs {
        ctx.file = budget.keys.file;
        if let Some(name) = &budget.name {
            match budget_names.entry(name.value.clone()) {
                Entry::Occupied(first) => {
                    let message = format!(
                        "duplicate budget {} (first defined at {}:{})",
                        name.quoted(),
                        ctx.file_name(first.get().file),
                        first.get().line
                    );
                    ctx.error(name.span, &name.path, message);
                }
                Entry::Vacant(slot) => {
                    slot.insert(FirstSeen {
                        file: budget.keys.file,
                        line: name.span.line,
                    });
                }
            }
        }
        budgets.push(resolve_budget(ctx, budget, defaults, &sources).map(Arc::new));
    }
    for reference in ctx.take_references() {
        check_reference(ctx, &reference, &source_kinds);
    }

    let http = main.http?;
    let history_window = http.history_window?;
    if history_window.value > MAX_HISTORY_WINDOW {
        ctx.error(
            history_window.span,
            &history_window.path,
            "must be at most 24h: the status page keeps a coarser summary of the last 24h beside it",
        );
        return None;
    }
    Some(Config {
        listen: main.listen?,
        http: HttpSettings {
            cors_allowed_origins: http.cors_allowed_origins.unwrap_or_default(),
            api_cache_max_age: http.api_cache_max_age?,
            history_window: history_window.value,
        },
        sources,
        budgets: budgets.into_iter().collect::<Option<_>>()?,
        secrets: ctx.secrets.clone(),
    })
}

/// Whether a budget or probe sets a limit, even an invalid one: an invalid limit is reported
/// once, not again as a missing one.
fn has_limit_budget(budget: &BudgetConfig) -> bool {
    written!(budget.max_lag).is_some() || written!(budget.max_backlog).is_some()
}

fn has_limit_probe(probe: &ProbeConfig) -> bool {
    written!(probe.max_lag).is_some() || written!(probe.max_backlog).is_some()
}

fn resolve_budget(
    ctx: &mut Ctx<'_>,
    budget: &BudgetConfig,
    defaults: Option<&DefaultsConfig>,
    sources: &BTreeMap<String, Arc<Source>>,
) -> Option<Budget> {
    let configured = budget.probes.as_deref().unwrap_or_default();
    // With no limit anywhere, one error on the budget says it better than one per probe.
    let unlimited: Vec<&ProbeConfig> = configured
        .iter()
        .filter(|probe| !has_limit_probe(probe))
        .collect();
    if !has_limit_budget(budget) && !configured.is_empty() {
        if unlimited.len() == configured.len() {
            ctx.error(
                budget.keys.span,
                &budget.keys.path,
                "neither max_lag nor max_backlog is set: set one on the budget or on every probe",
            );
        } else {
            for probe in unlimited {
                ctx.error(
                    probe.keys.span,
                    &probe.keys.path,
                    "neither max_lag nor max_backlog is set on this probe or its budget",
                );
            }
        }
    }

    let mut probe_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut probes = Vec::with_capacity(configured.len());
    // Whether every configured probe resolved, so that "no probe checks monotonic reads" is
    // not said of a budget whose canary is invalid (and reported) already.
    let mut all_resolved = true;
    for probe in configured {
        if let Some(name) = &probe.name {
            if let Some(first_line) = probe_names.get(name.value.as_str()) {
                let message = format!(
                    "duplicate probe {} (first defined at {}:{first_line})",
                    name.quoted(),
                    ctx.file_name(budget.keys.file)
                );
                ctx.error(name.span, &name.path, message);
            } else {
                probe_names.insert(&name.value, name.span.line);
            }
        }
        let resolved = resolve_probe(ctx, budget, probe, defaults, sources);
        all_resolved &= !resolved.is_empty();
        probes.extend(resolved.into_iter().map(Arc::new));
    }
    if let Some(limit) = &budget.max_monotonic_violations {
        if all_resolved && !probes.iter().any(|probe| probe.checks_monotonic_reads()) {
            ctx.error(
                limit.span,
                &limit.path,
                not_monotonic("no probe of this budget is one"),
            );
        }
    }
    if let Some(limit) = &budget.max_mismatches {
        if all_resolved && !probes.iter().any(|probe| probe.kind.counts_mismatches()) {
            ctx.error(
                limit.span,
                &limit.path,
                not_reconciling("no probe of this budget is one"),
            );
        }
    }

    let objective = match &budget.objective {
        Some(objective) => Some(Objective {
            target: objective.target?,
            window: objective.window?,
        }),
        None => None,
    };
    Some(Budget {
        name: budget.name.as_ref()?.value.clone(),
        description: budget.description.clone(),
        owner: budget.owner.clone(),
        labels: budget.labels.clone().unwrap_or_default(),
        max_lag: value(&budget.max_lag),
        max_backlog: value(&budget.max_backlog),
        warn_at: budget.warn_at?,
        breach_after: budget.breach_after?,
        objective,
        severity: budget.severity.clone()?,
        runbook_url: budget.runbook_url.clone(),
        probes,
    })
}

/// The message for a `max_mismatches` where nothing reconciles.
fn not_reconciling(which: &str) -> String {
    format!("max_mismatches limits the mismatched records of a reconcile probe, and {which}")
}

/// The message for a `max_monotonic_violations` where nothing checks monotonic reads.
fn not_monotonic(which: &str) -> String {
    format!(
        "max_monotonic_violations limits the monotonic-read violations of a canary with \
         `monotonic: {{reads: N}}`, and {which}"
    )
}

fn value<T: Copy>(spanned: &Option<Spanned<T>>) -> Option<T> {
    spanned.as_ref().map(|spanned| spanned.value)
}

/// The most specific of a probe-level and a budget-level setting.
fn nearest<'a, T>(
    probe: &'a Option<Spanned<T>>,
    budget: &'a Option<Spanned<T>>,
) -> Option<&'a Spanned<T>> {
    probe.as_ref().or(budget.as_ref())
}

/// A configured probe to the model: one `Probe`, or one per replica for replica kinds
/// (same name, `replica` set). Empty when anything about it is invalid.
fn resolve_probe(
    ctx: &mut Ctx<'_>,
    budget: &BudgetConfig,
    probe: &ProbeConfig,
    defaults: Option<&DefaultsConfig>,
    sources: &BTreeMap<String, Arc<Source>>,
) -> Vec<Probe> {
    // A kind with an invalid or missing key, or that fails its own checks, is checked no
    // further.
    let kind = probe.kind.as_ref().and_then(|variant| {
        let checked = variant.config.check(ctx);
        (checked && variant.complete).then_some(&variant.config)
    });
    let backlog_only = kind.is_some_and(|kind| backlog_only(ctx, budget, probe, kind.as_ref()));
    // A backlog-only probe has no seconds to hold against a budget's max_lag; it counts toward
    // the budget through max_backlog alone (its own max_lag is an error, reported above).
    let max_lag = if backlog_only {
        None
    } else {
        nearest(&probe.max_lag, &budget.max_lag)
    };
    let layers = |probe: &Option<Spanned<Duration>>,
                  budget: &Option<Spanned<Duration>>,
                  defaults: Option<&Option<Spanned<Duration>>>| Layers {
        probe: value(probe),
        budget: value(budget),
        defaults: defaults.and_then(value),
    };
    let (timing, problems) = resolve_timing(
        layers(
            &probe.interval,
            &budget.interval,
            defaults.map(|d| &d.interval),
        ),
        layers(
            &probe.timeout,
            &budget.timeout,
            defaults.map(|d| &d.timeout),
        ),
        layers(
            &probe.stall_after,
            &budget.stall_after,
            defaults.map(|d| &d.stall_after),
        ),
        max_lag.map(|max_lag| max_lag.value),
    );
    for problem in problems {
        match problem {
            TimingProblem::IntervalAboveHalfMaxLag => {
                if let (Some(interval), Some(max_lag)) =
                    (nearest(&probe.interval, &budget.interval), max_lag)
                {
                    let message = format!(
                        "interval {interval} is above half of max_lag {max_lag}: a {max_lag} \
                         budget cannot be enforced by looking every {interval}",
                        interval = interval.shown(),
                        max_lag = max_lag.shown(),
                    );
                    ctx.error(interval.span, &interval.path, message);
                }
            }
            TimingProblem::TimeoutAboveInterval { interval, clamped } => {
                if let Some(timeout) = nearest(&probe.timeout, &budget.timeout) {
                    let which = match (clamped, max_lag) {
                        (true, Some(max_lag)) => format!(
                            "the effective interval {} (max_lag {} / 3)",
                            format_duration(interval),
                            max_lag.shown()
                        ),
                        _ => format!("the interval {}", format_duration(interval)),
                    };
                    let message = format!(
                        "timeout {} is above {which}: a run must finish before the next one \
                         is due",
                        timeout.shown()
                    );
                    ctx.error(timeout.span, &timeout.path, message);
                }
            }
        }
    }

    let Some(kind) = kind else {
        return Vec::new();
    };
    let max_lag = max_lag.map(|max_lag| max_lag.value);
    let entries = kind.resolve(ctx, &ProbeScope { max_lag, sources });
    let (Some(budget_name), Some(name)) = (&budget.name, &probe.name) else {
        return Vec::new();
    };
    let monotonic = entries
        .iter()
        .any(|entry| entry.kind.checks_monotonic_reads());
    if let (Some(limit), false, false) = (
        &probe.max_monotonic_violations,
        monotonic,
        entries.is_empty(),
    ) {
        ctx.error(
            limit.span,
            &limit.path,
            not_monotonic("this probe is not one"),
        );
    }
    let max_monotonic_violations = nearest(
        &probe.max_monotonic_violations,
        &budget.max_monotonic_violations,
    )
    .map(|limit| limit.value);
    let reconciles = entries.iter().any(|entry| entry.kind.counts_mismatches());
    if let (Some(limit), false, false) = (&probe.max_mismatches, reconciles, entries.is_empty()) {
        ctx.error(
            limit.span,
            &limit.path,
            not_reconciling("this probe is not one"),
        );
    }
    let max_mismatches = value(&probe.max_mismatches).or(value(&budget.max_mismatches));
    // Replica kinds give one entry per replica, so that each has its own task, history and
    // `replica` label.
    entries
        .into_iter()
        .map(|entry| Probe {
            budget: budget_name.value.clone(),
            name: name.value.clone(),
            interval: timing.interval,
            timeout: timing.timeout,
            max_lag,
            max_backlog: value(&probe.max_backlog).or(value(&budget.max_backlog)),
            max_monotonic_violations: max_monotonic_violations
                .filter(|_| entry.kind.checks_monotonic_reads()),
            max_mismatches: max_mismatches.filter(|_| entry.kind.counts_mismatches()),
            stall_after: timing.stall_after,
            kind: entry.kind,
            replica: entry.replica,
        })
        .collect()
}

/// Whether the probe reports backlog only (its kind says so, such as a Redis stream with
/// `id_time: false`), reporting a `max_lag` written on it and a missing `max_backlog`. A
/// budget-level `max_lag` does not apply to such a probe, so that one budget can hold a work
/// queue with an age limit and its dead-letter queue with `max_backlog: 0`.
fn backlog_only(
    ctx: &mut Ctx<'_>,
    budget: &BudgetConfig,
    probe: &ProbeConfig,
    kind: &dyn super::tables::ProbeKindConfig,
) -> bool {
    let Some(only) = kind.backlog_only() else {
        return false;
    };
    if let Some(max_lag) = &probe.max_lag {
        ctx.error(
            max_lag.span,
            &max_lag.path,
            format!(
                "max_lag cannot be measured here: {}, so this probe reports backlog only; use \
                 max_backlog",
                only.why
            ),
        );
    }
    let has_max_backlog = probe.max_backlog.is_some() || budget.max_backlog.is_some();
    // Without any limit the budget-level message already says what is missing.
    if !has_max_backlog && (has_limit_probe(probe) || has_limit_budget(budget)) {
        ctx.error(
            only.flag.span,
            &only.flag.path,
            format!(
                "`{}: false` reports backlog only: set max_backlog on this probe or its budget \
                 (a max_lag does not apply to it)",
                only.key
            ),
        );
    }
    true
}

/// Reports a source reference to a source that does not exist or is of a kind its probe
/// cannot read.
fn check_reference(ctx: &mut Ctx<'_>, reference: &super::decode::Reference, kinds: &SourceKinds) {
    let source = &reference.name;
    match kinds.get(&source.value) {
        None => {
            let known: Vec<&str> = kinds.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                format!("unknown source {}; no sources are defined", source.quoted())
            } else {
                format!(
                    "unknown source {}; defined sources: {}",
                    source.quoted(),
                    known.join(", ")
                )
            };
            ctx.error_in(reference.file, source.span, &source.path, message);
        }
        Some((Some(kind), _)) if !reference.needs.contains(kind) => {
            let message = format!(
                "source {} is a {kind} source; {} needs {}",
                source.quoted(),
                reference.by,
                reference.needs.join(" or ")
            );
            ctx.error_in(reference.file, source.span, &source.path, message);
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Option<Duration> {
        Some(Duration::from_millis(millis))
    }

    fn s(secs: u64) -> Option<Duration> {
        Some(Duration::from_secs(secs))
    }

    fn layers(
        probe: Option<Duration>,
        budget: Option<Duration>,
        defaults: Option<Duration>,
    ) -> Layers {
        Layers {
            probe,
            budget,
            defaults,
        }
    }

    #[test]
    fn effective_interval_timeout_and_stall_time() {
        let none = Layers::default();
        // (interval, timeout, stall_after, max_lag) => (interval, timeout, stall_after)
        let cases = [
            // Nothing set: the built-in defaults, stall after 3 intervals.
            (none, none, none, None, (s(10), s(5), s(30))),
            // A 30s budget: 10s is a third already.
            (none, none, none, s(30), (s(10), s(5), s(30))),
            // A 5s budget shortens the default interval to 1666ms, and the timeout with it.
            (none, none, none, s(5), (ms(1666), ms(1666), s(5))),
            // Defaults that are too long for a budget are shortened, not an error.
            (
                layers(None, None, s(60)),
                layers(None, None, s(30)),
                none,
                s(6),
                (s(2), s(2), s(6)),
            ),
            // An explicit interval within max_lag / 2 is still capped at max_lag / 3.
            (
                layers(None, s(2), None),
                none,
                none,
                s(5),
                (ms(1666), ms(1666), s(5)),
            ),
            // The probe's own setting beats its budget's, which beats the defaults.
            (
                layers(s(1), s(3), s(4)),
                layers(ms(500), s(2), s(3)),
                none,
                s(60),
                (s(1), ms(500), s(60)),
            ),
            (
                layers(None, s(3), s(4)),
                layers(None, s(2), s(3)),
                none,
                s(60),
                (s(3), s(2), s(60)),
            ),
            // stall_after from any level wins over the computed one.
            (
                none,
                none,
                layers(None, None, s(7)),
                s(60),
                (s(10), s(5), s(7)),
            ),
            (
                none,
                none,
                layers(s(8), s(9), s(7)),
                None,
                (s(10), s(5), s(8)),
            ),
            // Without max_lag the interval is used as configured.
            (
                layers(s(120), None, None),
                none,
                none,
                None,
                (s(120), s(5), s(360)),
            ),
            // A tiny budget still runs, at most every millisecond.
            (none, none, none, ms(2), (ms(1), ms(1), ms(3))),
        ];
        for (index, (interval, timeout, stall_after, max_lag, expected)) in
            cases.into_iter().enumerate()
        {
            let (timing, problems) = resolve_timing(interval, timeout, stall_after, max_lag);
            assert_eq!(problems, [], "case {index}");
            let expected = Timing {
                interval: expected.0.expect("interval"),
                timeout: expected.1.expect("timeout"),
                stall_after: expected.2.expect("stall_after"),
            };
            assert_eq!(timing, expected, "case {index}");
        }
    }

    #[test]
    fn explicit_settings_that_cannot_be_honoured_are_problems() {
        let none = Layers::default();
        let cases = [
            // An explicit 10s interval cannot enforce a 5s budget, at either level.
            (
                layers(s(10), None, None),
                none,
                s(5),
                vec![TimingProblem::IntervalAboveHalfMaxLag],
            ),
            (
                layers(None, s(10), None),
                none,
                s(5),
                vec![TimingProblem::IntervalAboveHalfMaxLag],
            ),
            // Exactly half is allowed.
            (layers(ms(2500), None, None), none, s(5), vec![]),
            // An explicit timeout above the interval.
            (
                layers(s(2), None, None),
                layers(s(3), None, None),
                None,
                vec![TimingProblem::TimeoutAboveInterval {
                    interval: Duration::from_secs(2),
                    clamped: false,
                }],
            ),
            // Above the interval as shortened by max_lag.
            (
                none,
                layers(None, s(5), None),
                s(6),
                vec![TimingProblem::TimeoutAboveInterval {
                    interval: Duration::from_secs(2),
                    clamped: true,
                }],
            ),
            // A timeout from defaults is shortened silently.
            (
                layers(s(2), None, None),
                layers(None, None, s(3)),
                None,
                vec![],
            ),
        ];
        for (index, (interval, timeout, max_lag, expected)) in cases.into_iter().enumerate() {
            let (_, problems) = resolve_timing(interval, timeout, none, max_lag);
            assert_eq!(problems, expected, "case {index}");
        }
    }
}
