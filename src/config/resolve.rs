//! Raw settings of all files to the validated model: unique names, probe sources, limits,
//! inherited settings and effective intervals.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use super::decode::{Ctx, Spanned};
use super::document::{
    ProbeSource, RawBudget, RawDefaults, RawFile, RawProbe, RawProbeKind, RawReplicaMethod,
};
use super::tables::{DEFAULT_INTERVAL, DEFAULT_LISTEN, DEFAULT_TIMEOUT};
use crate::model::{
    Budget, Config, HeartbeatSettings, HttpSettings, KafkaConsumerGroup, MysqlReplica,
    NatsConsumer, PostgresLogical, PostgresReplica, Probe, ProbeKind, RabbitmqQueue,
    RedisStreamGroup, ReplicaMethod, Source, SqlWatermark, format_duration,
};

/// The longest heartbeat write period chosen by default, and the shortest: lag is measured to
/// within one period, and writing more often than 10 times a second gains little.
const DEFAULT_WRITE_PERIOD_MAX: Duration = Duration::from_secs(1);
const DEFAULT_WRITE_PERIOD_MIN: Duration = Duration::from_millis(100);

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

/// Merges the files (main first) into the model, reporting every cross-file problem.
pub(crate) fn resolve(ctx: &mut Ctx<'_>, files: Vec<RawFile>) -> Config {
    let mut listen = DEFAULT_LISTEN;
    let mut http = HttpSettings::default();
    let mut defaults = RawDefaults::default();
    let mut sources: BTreeMap<String, Arc<Source>> = BTreeMap::new();
    // Every source name with its kind, even of invalid sources, so that a probe naming one
    // is not also told the source does not exist.
    let mut source_kinds: BTreeMap<String, (Option<&'static str>, FirstSeen)> = BTreeMap::new();
    let mut budgets_raw: Vec<RawBudget> = Vec::new();

    for (index, file) in files.into_iter().enumerate() {
        if index == 0 {
            listen = file.listen.unwrap_or(DEFAULT_LISTEN);
            http = file.http;
            defaults = file.defaults;
        }
        for raw in file.sources {
            match source_kinds.entry(raw.name.clone()) {
                Entry::Occupied(first) => {
                    let (_, first) = first.get();
                    let message = format!(
                        "duplicate source {:?} (first defined at {}:{})",
                        raw.name,
                        ctx.file_name(first.file),
                        first.line
                    );
                    ctx.error_in(raw.file, raw.span, &raw.path, message);
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert((
                        raw.kind_key,
                        FirstSeen {
                            file: raw.file,
                            line: raw.span.line,
                        },
                    ));
                }
            }
            if let Some(kind) = raw.kind {
                let source = Source {
                    name: raw.name.clone(),
                    max_connections: raw.max_connections,
                    kind,
                };
                sources.insert(raw.name, Arc::new(source));
            }
        }
        budgets_raw.extend(file.budgets);
    }

    let mut budget_names: BTreeMap<String, FirstSeen> = BTreeMap::new();
    let mut budgets = Vec::with_capacity(budgets_raw.len());
    for raw in &budgets_raw {
        if let Some(name) = &raw.name {
            match budget_names.entry(name.value.clone()) {
                Entry::Occupied(first) => {
                    let message = format!(
                        "duplicate budget {} (first defined at {}:{})",
                        name.quoted(),
                        ctx.file_name(first.get().file),
                        first.get().line
                    );
                    ctx.error_in(raw.file, name.span, &name.path, message);
                }
                Entry::Vacant(slot) => {
                    slot.insert(FirstSeen {
                        file: raw.file,
                        line: name.span.line,
                    });
                }
            }
        }
        if let Some(budget) = resolve_budget(ctx, raw, &defaults, &source_kinds) {
            budgets.push(Arc::new(budget));
        }
    }

    Config {
        listen,
        http,
        sources,
        budgets,
        secrets: ctx.secrets.clone(),
    }
}

fn resolve_budget(
    ctx: &mut Ctx<'_>,
    raw: &RawBudget,
    defaults: &RawDefaults,
    source_kinds: &BTreeMap<String, (Option<&'static str>, FirstSeen)>,
) -> Option<Budget> {
    let file = raw.file;
    // With no limit anywhere, one error on the budget says it better than one per probe.
    let unlimited: Vec<&RawProbe> = raw.probes.iter().filter(|probe| !probe.has_limit).collect();
    if !raw.has_limit && !raw.probes.is_empty() {
        if unlimited.len() == raw.probes.len() {
            ctx.error_in(
                file,
                raw.span,
                &raw.path,
                "neither max_lag nor max_backlog is set: set one on the budget or on every probe",
            );
        } else {
            for probe in unlimited {
                ctx.error_in(
                    file,
                    probe.span,
                    &probe.path,
                    "neither max_lag nor max_backlog is set on this probe or its budget",
                );
            }
        }
    }

    let mut probe_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut probes = Vec::with_capacity(raw.probes.len());
    for probe in &raw.probes {
        if let Some(name) = &probe.name {
            if let Some(first_line) = probe_names.get(name.value.as_str()) {
                let message = format!(
                    "duplicate probe {} (first defined at {}:{first_line})",
                    name.quoted(),
                    ctx.file_name(file)
                );
                ctx.error_in(file, name.span, &name.path, message);
            } else {
                probe_names.insert(&name.value, name.span.line);
            }
        }
        probes.extend(
            resolve_probe(ctx, raw, probe, defaults, source_kinds)
                .into_iter()
                .map(Arc::new),
        );
    }

    Some(Budget {
        name: raw.name.as_ref()?.value.clone(),
        description: raw.description.clone(),
        owner: raw.owner.clone(),
        labels: raw.labels.clone(),
        max_lag: value(&raw.max_lag),
        max_backlog: value(&raw.max_backlog),
        warn_at: raw.warn_at,
        breach_after: raw.breach_after,
        objective: raw.objective,
        severity: raw.severity.clone(),
        runbook_url: raw.runbook_url.clone(),
        probes,
    })
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

/// A configured probe to the model: one `Probe`, or one per replica for replica probes
/// (same name, `replica` set). Empty when anything about it is invalid.
fn resolve_probe(
    ctx: &mut Ctx<'_>,
    budget: &RawBudget,
    raw: &RawProbe,
    defaults: &RawDefaults,
    source_kinds: &BTreeMap<String, (Option<&'static str>, FirstSeen)>,
) -> Vec<Probe> {
    let file = budget.file;
    for source in raw.source.iter().chain(&raw.other_sources) {
        check_source(ctx, file, source, source_kinds);
    }

    let backlog_only = backlog_only(ctx, file, budget, raw);
    // A backlog-only probe has no seconds to hold against a budget's max_lag; it counts toward
    // the budget through max_backlog alone (its own max_lag is an error, reported above).
    let max_lag = if backlog_only {
        None
    } else {
        nearest(&raw.max_lag, &budget.max_lag)
    };
    let layers = |probe: &Option<Spanned<Duration>>,
                  budget: &Option<Spanned<Duration>>,
                  defaults: &Option<Spanned<Duration>>| Layers {
        probe: value(probe),
        budget: value(budget),
        defaults: value(defaults),
    };
    let (timing, problems) = resolve_timing(
        layers(&raw.interval, &budget.interval, &defaults.interval),
        layers(&raw.timeout, &budget.timeout, &defaults.timeout),
        layers(&raw.stall_after, &budget.stall_after, &defaults.stall_after),
        max_lag.map(|max_lag| max_lag.value),
    );
    for problem in problems {
        match problem {
            TimingProblem::IntervalAboveHalfMaxLag => {
                if let (Some(interval), Some(max_lag)) =
                    (nearest(&raw.interval, &budget.interval), max_lag)
                {
                    let message = format!(
                        "interval {interval} is above half of max_lag {max_lag}: a {max_lag} \
                         budget cannot be enforced by looking every {interval}",
                        interval = interval.shown,
                        max_lag = max_lag.shown,
                    );
                    ctx.error_in(file, interval.span, &interval.path, message);
                }
            }
            TimingProblem::TimeoutAboveInterval { interval, clamped } => {
                if let Some(timeout) = nearest(&raw.timeout, &budget.timeout) {
                    let which = match (clamped, max_lag) {
                        (true, Some(max_lag)) => format!(
                            "the effective interval {} (max_lag {} / 3)",
                            format_duration(interval),
                            max_lag.shown
                        ),
                        _ => format!("the interval {}", format_duration(interval)),
                    };
                    let message = format!(
                        "timeout {} is above {which}: a run must finish before the next one \
                         is due",
                        timeout.shown
                    );
                    ctx.error_in(file, timeout.span, &timeout.path, message);
                }
            }
        }
    }

    let Some(raw_kind) = raw.kind.as_ref() else {
        return Vec::new();
    };
    let kind = match raw_kind {
        RawProbeKind::SqlWatermark {
            source,
            watermark,
            oldest_pending,
            mode,
        } => ProbeKind::SqlWatermark(SqlWatermark {
            source: source.clone(),
            watermark: watermark.clone(),
            oldest_pending: oldest_pending.clone(),
            mode: *mode,
        }),
        RawProbeKind::KafkaConsumerGroup {
            source,
            group,
            topics,
            no_commit,
            partition_detail,
        } => ProbeKind::KafkaConsumerGroup(KafkaConsumerGroup {
            source: source.clone(),
            group: group.clone(),
            topics: topics.clone(),
            no_commit: *no_commit,
            partition_detail: *partition_detail,
        }),
        RawProbeKind::PostgresLogical { source, slot } => {
            ProbeKind::PostgresLogical(PostgresLogical {
                source: source.clone(),
                slot: slot.clone(),
            })
        }
        RawProbeKind::RabbitmqQueue {
            source,
            queue,
            vhost,
            timestamps,
        } => ProbeKind::RabbitmqQueue(RabbitmqQueue {
            source: source.clone(),
            queue: queue.clone(),
            vhost: vhost.clone(),
            timestamps: timestamps.as_ref().is_none_or(|declared| declared.value),
        }),
        RawProbeKind::RedisStreamGroup {
            source,
            stream,
            group,
            id_time,
        } => ProbeKind::RedisStreamGroup(RedisStreamGroup {
            source: source.clone(),
            stream: stream.clone(),
            group: group.clone(),
            id_time: id_time.value,
        }),
        RawProbeKind::NatsConsumer {
            source,
            stream,
            consumer,
        } => ProbeKind::NatsConsumer(NatsConsumer {
            source: source.clone(),
            stream: stream.clone(),
            consumer: consumer.clone(),
        }),
        RawProbeKind::PostgresReplica {
            primary,
            standbys,
            method,
        } => {
            let max_lag = max_lag.map(|max_lag| max_lag.value);
            let method = match method {
                RawReplicaMethod::Heartbeat {
                    period,
                    schema,
                    instance,
                    ryw_delay,
                } => ReplicaMethod::Heartbeat(HeartbeatSettings {
                    period: resolve_write_period(ctx, file, period.as_ref(), max_lag),
                    schema: schema.clone(),
                    instance: instance.clone(),
                    ryw_delay: *ryw_delay,
                }),
                RawReplicaMethod::Passive {
                    receiver_silence_limit,
                } => ReplicaMethod::Passive {
                    receiver_silence_limit: *receiver_silence_limit,
                },
            };
            let base = |standby: &String| {
                let kind = ProbeKind::PostgresReplica(PostgresReplica {
                    primary: primary.clone(),
                    standby: standby.clone(),
                    method: method.clone(),
                });
                (kind, Some(standby.clone()))
            };
            return expand(budget, raw, timing, max_lag, standbys.iter().map(base));
        }
        RawProbeKind::MysqlReplica {
            primary,
            replicas,
            write_period,
            database,
            instance,
            ryw_delay,
        } => {
            let max_lag = max_lag.map(|max_lag| max_lag.value);
            let write_period = resolve_write_period(ctx, file, write_period.as_ref(), max_lag);
            let base = |replica: &String| {
                let kind = ProbeKind::MysqlReplica(MysqlReplica {
                    primary: primary.clone(),
                    replica: replica.clone(),
                    write_period,
                    database: database.clone(),
                    instance: instance.clone(),
                    ryw_delay: *ryw_delay,
                });
                (kind, Some(replica.clone()))
            };
            return expand(budget, raw, timing, max_lag, replicas.iter().map(base));
        }
    };
    let max_lag = max_lag.map(|max_lag| max_lag.value);
    expand(budget, raw, timing, max_lag, [(kind, None)])
}

/// The model probes of one configured probe: one per `(kind, replica)` given, sharing name
/// and schedule. Replica probes are expanded into one entry per replica, so that each has its
/// own task, history and `replica` label.
fn expand(
    budget: &RawBudget,
    raw: &RawProbe,
    timing: Timing,
    max_lag: Option<Duration>,
    entries: impl IntoIterator<Item = (ProbeKind, Option<String>)>,
) -> Vec<Probe> {
    let (Some(budget_name), Some(name)) = (&budget.name, &raw.name) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|(kind, replica)| Probe {
            budget: budget_name.value.clone(),
            name: name.value.clone(),
            interval: timing.interval,
            timeout: timing.timeout,
            max_lag,
            max_backlog: value(&raw.max_backlog).or(value(&budget.max_backlog)),
            stall_after: timing.stall_after,
            kind,
            replica,
        })
        .collect()
}

/// A heartbeat's write period: the configured one, which must be at most `max_lag / 2`
/// (lag is measured to within one period), or `max_lag / 10` between 100ms and 1s.
fn resolve_write_period(
    ctx: &mut Ctx<'_>,
    file: usize,
    configured: Option<&Spanned<Duration>>,
    max_lag: Option<Duration>,
) -> Duration {
    match (configured, max_lag) {
        (Some(period), Some(max_lag)) => {
            if period.value > max_lag / 2 {
                let message = format!(
                    "write_period {} is above half of max_lag {}: lag is only measured to within \
                     one write period",
                    period.shown,
                    format_duration(max_lag)
                );
                ctx.error_in(file, period.span, &period.path, message);
            }
            period.value
        }
        (Some(period), None) => period.value,
        (None, Some(max_lag)) => {
            (max_lag / 10).clamp(DEFAULT_WRITE_PERIOD_MIN, DEFAULT_WRITE_PERIOD_MAX)
        }
        (None, None) => DEFAULT_WRITE_PERIOD_MAX,
    }
}

/// Whether the probe reports backlog only (a Redis stream with `id_time: false`, a RabbitMQ
/// queue with `timestamps: false`), reporting a `max_lag` written on it and a missing
/// `max_backlog`. A budget-level `max_lag` does not apply to such a probe, so that one budget
/// can hold a work queue with an age limit and its dead-letter queue with `max_backlog: 0`.
fn backlog_only(ctx: &mut Ctx<'_>, file: usize, budget: &RawBudget, raw: &RawProbe) -> bool {
    let (flag, key, why) = match &raw.kind {
        Some(RawProbeKind::RedisStreamGroup { id_time, .. }) if !id_time.value => (
            id_time,
            "id_time",
            "with `id_time: false` entry IDs carry no time",
        ),
        Some(RawProbeKind::RabbitmqQueue {
            timestamps: Some(timestamps),
            ..
        }) if !timestamps.value => (
            timestamps,
            "timestamps",
            "with `timestamps: false` messages carry no time",
        ),
        _ => return false,
    };
    if let Some(max_lag) = &raw.max_lag {
        ctx.error_in(
            file,
            max_lag.span,
            &max_lag.path,
            format!(
                "max_lag cannot be measured here: {why}, so this probe reports backlog only; \
                 use max_backlog"
            ),
        );
    }
    let has_max_backlog = raw.max_backlog.is_some() || budget.max_backlog.is_some();
    // Without any limit the budget-level message already says what is missing.
    if !has_max_backlog && (raw.has_limit || budget.has_limit) {
        ctx.error_in(
            file,
            flag.span,
            &flag.path,
            format!(
                "`{key}: false` reports backlog only: set max_backlog on this probe or its \
                 budget (a max_lag does not apply to it)"
            ),
        );
    }
    true
}

/// Reports a probe whose source does not exist or is of a kind the probe cannot read.
fn check_source(
    ctx: &mut Ctx<'_>,
    file: usize,
    probe_source: &ProbeSource,
    source_kinds: &BTreeMap<String, (Option<&'static str>, FirstSeen)>,
) {
    let ProbeSource {
        probe_kind,
        needs,
        name: source,
    } = probe_source;
    match source_kinds.get(&source.value) {
        None => {
            let known: Vec<&str> = source_kinds.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                format!("unknown source {}; no sources are defined", source.quoted())
            } else {
                format!(
                    "unknown source {}; defined sources: {}",
                    source.quoted(),
                    known.join(", ")
                )
            };
            ctx.error_in(file, source.span, &source.path, message);
        }
        Some((Some(source_kind), _)) if source_kind != needs => {
            let message = format!(
                "source {} is a {source_kind} source; {probe_kind} needs {needs}",
                source.quoted()
            );
            ctx.error_in(file, source.span, &source.path, message);
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
