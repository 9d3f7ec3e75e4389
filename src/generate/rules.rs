//! Prometheus alert and recording rules (`lagbudget rules`); docs/src/alerts-and-dashboards.md
//! describes them for users, and docs/src/runbooks/ has one runbook per alert.
//!
//! The rules are generic: they name no budget, so a budget added by a config reload is covered
//! at once. Per-budget patience lives in the daemon (`breach_after`), thresholds in metrics
//! (`lagbudget_objective_ratio`, `lagbudget_objective_window_seconds`) and routing in
//! `lagbudget_budget_info`. Every metric name comes from a const in `metrics.rs`, so a renamed
//! metric cannot leave a rule behind.
//!
//! Two daemon instances may scrape the same budgets (a rollout, or deliberate redundancy), so
//! every per-budget expression aggregates the instance away (`max by (budget)` for states,
//! sums of rates for the time counters) and the routing join picks one `lagbudget_budget_info`
//! series per budget: two instances give one alert per budget, not two, and two instances that
//! disagree about a budget's owner (mid-rollout of a config change) do not break the join.
//!
//! The rules are built as a `yaml_rust2::Yaml` tree and written by `yaml_rust2`'s emitter, with
//! multi-line PromQL and templates as literal blocks.

use std::time::Duration;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::metrics;

/// File name of the rules in the Prometheus format, as `lagbudget rules -o DIR` writes it.
pub const RULES_FILE: &str = "lagbudget.rules.yaml";
/// File name of the rules wrapped in a Kubernetes `PrometheusRule`.
pub const PROMETHEUSRULE_FILE: &str = "lagbudget.prometheusrule.yaml";

/// Grafana `uid` of the per-budget drill-down dashboard that `dashboard_url` links to.
pub const BUDGET_DASHBOARD_UID: &str = "lagbudget-budget";
/// Grafana `uid` of the overview dashboard that the daemon-level alerts link to.
pub const OVERVIEW_DASHBOARD_UID: &str = "lagbudget-overview";

/// Default of `--runbook-url-base`: the daemon under the deploy manifests' service name and
/// port, which serves every alert's runbook at `/runbooks/{AlertName}`.
pub const DEFAULT_RUNBOOK_URL_BASE: &str = "http://lagbudget:9464/runbooks";

pub const EXCEEDED: &str = "ConsistencyBudgetExceeded";
pub const AT_RISK: &str = "ConsistencyBudgetAtRisk";
pub const LAG_UNKNOWN: &str = "ConsistencyLagUnknown";
pub const FEED_STALLED: &str = "ConsistencyFeedStalled";
pub const BURN_RATE: &str = "ConsistencyBudgetBurnRate";
pub const MONOTONIC_VIOLATED: &str = "ConsistencyMonotonicReadsViolated";
pub const RECONCILE_MISMATCHED: &str = "ConsistencyReconcileMismatches";
pub const DAEMON_DOWN: &str = "LagbudgetDown";
pub const RELOAD_FAILED: &str = "LagbudgetConfigReloadFailed";

/// Every alert name, in the order the rules file lists them.
pub const ALERT_NAMES: [&str; 9] = [
    EXCEEDED,
    AT_RISK,
    LAG_UNKNOWN,
    FEED_STALLED,
    BURN_RATE,
    MONOTONIC_VIOLATED,
    RECONCILE_MISMATCHED,
    DAEMON_DOWN,
    RELOAD_FAILED,
];

/// Recorded share of evaluated time a budget was over (breach or unknown), per rate window.
pub const OVER_RATIO_RECORD_PREFIX: &str = "budget:lagbudget_budget_over_ratio:rate";
/// The rate windows recorded under [`OVER_RATIO_RECORD_PREFIX`].
pub const OVER_RATIO_WINDOWS: [&str; 4] = ["5m", "30m", "1h", "6h"];
/// Recorded routing labels (`owner`, `severity`, `runbook_url`) of each budget, value 1: the
/// join target of every per-budget alert.
pub const ROUTING_RECORD: &str = "budget:lagbudget_budget_info:latest";
/// Recorded objective target per budget (one series per budget across daemon instances).
pub const OBJECTIVE_RATIO_RECORD: &str = "budget:lagbudget_objective_ratio:max";
/// Recorded objective window in seconds per budget.
pub const OBJECTIVE_WINDOW_RECORD: &str = "budget:lagbudget_objective_window_seconds:max";

/// The window over which the share of monotonic reads that were violations is held against
/// each view's `max_monotonic_violations`: long enough for a rare violation to be a share, not
/// a spike (a view read 3 times every 10 s makes 1080 reads an hour).
pub const MONOTONIC_WINDOW: &str = "1h";
/// Recorded share of a canary view's monotonic reads that were violations over
/// [`MONOTONIC_WINDOW`], per budget, probe and view (summed over daemon instances).
pub const MONOTONIC_RATIO_RECORD: &str =
    "budget_probe_replica:lagbudget_monotonic_read_violations:ratio_rate1h";

/// The recorded over-ratio for one of [`OVER_RATIO_WINDOWS`].
pub fn over_ratio_record(window: &str) -> String {
    format!("{OVER_RATIO_RECORD_PREFIX}{window}")
}

/// What differs per deployment. `Default` is what the committed `alerts/` files are built with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesOptions {
    /// PromQL label matchers selecting the daemon's scrape job, without braces.
    pub job_selector: String,
    /// Grafana's base URL, for the `dashboard_url` annotation.
    pub dashboard_url_base: String,
    /// Where the runbooks are served (`GET /runbooks/{AlertName}` of the daemon), for the
    /// `runbook_url` annotation of an alert whose budget names no runbook of its own.
    pub runbook_url_base: String,
    /// `for` of `ConsistencyBudgetExceeded`; short, because `breach_after` is the patience.
    pub exceeded_for: Duration,
    /// `keep_firing_for` of `ConsistencyBudgetExceeded`, so a flapping probe does not resolve
    /// and page again.
    pub keep_firing_for: Duration,
    pub at_risk_for: Duration,
    /// `for` of `ConsistencyLagUnknown`; a probe is already stale after 3 intervals.
    pub unknown_for: Duration,
    pub stalled_for: Duration,
    /// `for` of `ConsistencyMonotonicReadsViolated`; the share it compares is already over
    /// [`MONOTONIC_WINDOW`].
    pub monotonic_for: Duration,
    /// `for` of `ConsistencyReconcileMismatches`; its mismatches are already older than the
    /// probe's `max_lag`.
    pub mismatches_for: Duration,
    pub down_for: Duration,
    pub reload_failed_for: Duration,
}

impl Default for RulesOptions {
    fn default() -> Self {
        Self {
            job_selector: r#"job="lagbudget""#.to_owned(),
            dashboard_url_base: "http://grafana:3000".to_owned(),
            // The daemon's name and port in the deploy manifests: it serves the runbooks.
            runbook_url_base: DEFAULT_RUNBOOK_URL_BASE.to_owned(),
            exceeded_for: Duration::from_secs(60),
            keep_firing_for: Duration::from_secs(10 * 60),
            at_risk_for: Duration::from_secs(5 * 60),
            unknown_for: Duration::from_secs(2 * 60),
            stalled_for: Duration::from_secs(5 * 60),
            monotonic_for: Duration::from_secs(5 * 60),
            mismatches_for: Duration::from_secs(5 * 60),
            down_for: Duration::from_secs(2 * 60),
            reload_failed_for: Duration::from_secs(5 * 60),
        }
    }
}

impl RulesOptions {
    /// Rejects options that would produce broken rules. The job selector is pasted into PromQL
    /// selectors and alert templates, so it may not carry braces or template delimiters; what
    /// else it says is checked by Prometheus (`promtool check rules`).
    pub fn validate(&self) -> Result<(), String> {
        let selector = self.job_selector.trim();
        if selector.is_empty() {
            return Err(
                "--job-selector is empty: the rules must select the daemon's scrape job \
                        (such as job=\"lagbudget\"), or `up` would match every target"
                    .to_owned(),
            );
        }
        if let Some(c) = selector
            .chars()
            .find(|&c| matches!(c, '{' | '}' | '`') || breaks_yaml(c))
        {
            return Err(format!(
                "--job-selector may not contain {c:?}: give label matchers without braces, \
                 such as job=\"lagbudget\""
            ));
        }
        let not_a_url = |base: &str| {
            let base = base.trim();
            base.is_empty()
                || base
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '{' | '}') || breaks_yaml(c))
        };
        if not_a_url(&self.dashboard_url_base) {
            return Err(format!(
                "--dashboard-url-base {:?} is not a URL such as http://grafana:3000",
                self.dashboard_url_base
            ));
        }
        if not_a_url(&self.runbook_url_base) {
            return Err(format!(
                "--runbook-url-base {:?} is not a URL such as {DEFAULT_RUNBOOK_URL_BASE}",
                self.runbook_url_base
            ));
        }
        Ok(())
    }
}

/// Characters that the YAML emitter may write as they are but that do not read back as
/// themselves in Prometheus: control characters, and what YAML 1.1 parsers such as Prometheus'
/// take for a line break (U+0085, U+2028, U+2029).
fn breaks_yaml(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Output format of [`render`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum RulesFormat {
    /// A Prometheus rule file (`rule_files:`).
    Prometheus,
    /// A Kubernetes `PrometheusRule` (monitoring.coreos.com/v1) for the Prometheus Operator.
    Prometheusrule,
}

impl RulesFormat {
    /// The file name `lagbudget rules -o DIR` writes.
    pub fn file_name(self) -> &'static str {
        match self {
            RulesFormat::Prometheus => RULES_FILE,
            RulesFormat::Prometheusrule => PROMETHEUSRULE_FILE,
        }
    }
}

/// The rule file text. Options are expected to be valid ([`RulesOptions::validate`]).
pub fn render(options: &RulesOptions, format: RulesFormat) -> String {
    let groups = Yaml::Array(rule_groups(options).iter().map(Group::to_yaml).collect());
    let (header, document) = match format {
        RulesFormat::Prometheus => (
            "# Prometheus rules for lagbudget, generated by `lagbudget rules`: do not edit.\n\
             # Load with `rule_files:` in prometheus.yml. Regenerate the committed copy with\n\
             # `cargo run -- rules -o alerts`; see alerts/README.md.\n",
            map([("groups", groups)]),
        ),
        RulesFormat::Prometheusrule => (
            "# lagbudget's Prometheus rules as a Prometheus Operator PrometheusRule, generated by\n\
             # `lagbudget rules --format prometheusrule`: do not edit. Add the labels your\n\
             # Prometheus' ruleSelector expects under metadata.labels.\n",
            map([
                ("apiVersion", string("monitoring.coreos.com/v1")),
                ("kind", string("PrometheusRule")),
                (
                    "metadata",
                    map([
                        ("name", string("lagbudget")),
                        (
                            "labels",
                            map([("app.kubernetes.io/name", string("lagbudget"))]),
                        ),
                    ]),
                ),
                ("spec", map([("groups", groups)])),
            ]),
        ),
    };
    let mut out = String::from(header);
    emit(&document, &mut out);
    out
}

/// Appends `document` as YAML (starting with `---`, ending with a line break). Multi-line
/// strings become literal blocks (`|-`), so PromQL and templates read as written; other strings
/// are plain, or double-quoted where plain would not read back as the same string.
fn emit(document: &Yaml, out: &mut String) {
    let mut emitter = YamlEmitter::new(out);
    emitter.multiline_strings(true);
    emitter
        .dump(document)
        .expect("emitting YAML into a String cannot fail");
    out.push('\n');
}

fn string(s: &str) -> Yaml {
    Yaml::String(s.to_owned())
}

/// A mapping whose keys keep the given order.
fn map<const N: usize>(entries: [(&str, Yaml); N]) -> Yaml {
    Yaml::Hash(entries.into_iter().map(|(k, v)| (string(k), v)).collect())
}

// --- the rules ---------------------------------------------------------------------------------

struct Group {
    name: &'static str,
    rules: Vec<Rule>,
}

enum RuleKind {
    Record(String),
    Alert(&'static str),
}

struct Rule {
    kind: RuleKind,
    expr: String,
    for_: Duration,
    keep_firing_for: Duration,
    labels: Vec<(&'static str, String)>,
    annotations: Vec<(&'static str, String)>,
}

impl Rule {
    fn record(name: String, expr: String) -> Self {
        Rule {
            kind: RuleKind::Record(name),
            expr,
            for_: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
            labels: Vec::new(),
            annotations: Vec::new(),
        }
    }

    fn alert(name: &'static str, expr: String, for_: Duration) -> Self {
        Rule {
            kind: RuleKind::Alert(name),
            expr,
            for_,
            keep_firing_for: Duration::ZERO,
            labels: Vec::new(),
            annotations: Vec::new(),
        }
    }

    fn label(mut self, name: &'static str, value: &str) -> Self {
        self.labels.push((name, value.to_owned()));
        self
    }

    fn annotate(mut self, name: &'static str, value: String) -> Self {
        self.annotations.push((name, break_lines(&value)));
        self
    }

    fn to_yaml(&self) -> Yaml {
        let mut entries = Hash::new();
        let (kind, name) = match &self.kind {
            RuleKind::Record(name) => ("record", name.as_str()),
            RuleKind::Alert(name) => ("alert", *name),
        };
        entries.insert(string(kind), string(name));
        entries.insert(string("expr"), string(&self.expr));
        if !self.for_.is_zero() {
            entries.insert(string("for"), string(&prometheus_duration(self.for_)));
        }
        if !self.keep_firing_for.is_zero() {
            entries.insert(
                string("keep_firing_for"),
                string(&prometheus_duration(self.keep_firing_for)),
            );
        }
        for (key, pairs) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if !pairs.is_empty() {
                let pairs = pairs.iter().map(|(k, v)| (string(k), string(v))).collect();
                entries.insert(string(key), Yaml::Hash(pairs));
            }
        }
        Yaml::Hash(entries)
    }
}

impl Group {
    fn to_yaml(&self) -> Yaml {
        map([
            ("name", string(self.name)),
            (
                "rules",
                Yaml::Array(self.rules.iter().map(Rule::to_yaml).collect()),
            ),
        ])
    }
}

/// The labels copied from `lagbudget_budget_info` onto per-budget alerts.
const ROUTING_LABELS: [&str; 3] = ["owner", "severity", "runbook_url"];

/// Builds PromQL and alert templates for one set of options.
struct Builder<'a> {
    options: &'a RulesOptions,
    /// The job selector, trimmed, without a trailing comma.
    job: String,
}

impl<'a> Builder<'a> {
    fn new(options: &'a RulesOptions) -> Self {
        let job = options
            .job_selector
            .trim()
            .trim_end_matches(',')
            .trim()
            .to_owned();
        Builder { options, job }
    }

    /// `metric{job…,extra…}`.
    fn select(&self, metric: &str, extra: &[&str]) -> String {
        let matchers: Vec<&str> = std::iter::once(self.job.as_str())
            .chain(extra.iter().copied())
            .collect();
        format!("{metric}{{{}}}", matchers.join(","))
    }

    /// `metric{job…,extra…}` for a `printf` format inside an alert template: `%` in the job
    /// selector is doubled, `extra` may carry `%s` verbs.
    fn template_select(&self, metric: &str, extra: &str) -> String {
        format!("{metric}{{{},{extra}}}", self.job.replace('%', "%%"))
    }

    /// `(filter) * on (budget) group_left(copy) routing record`: the routing join.
    fn join_routing(&self, filter: &str, copy: &[&str]) -> String {
        format!(
            "{filter}\n* on (budget) group_left({copy})\n  {ROUTING_RECORD}",
            copy = copy.join(", "),
        )
    }

    /// One `lagbudget_budget_info` label set per budget, value 1, whatever the number of daemon
    /// instances. Two instances with the same config give the same labels, which `max by`
    /// folds into one series. Two that disagree (a config change half rolled out) would give
    /// two, and a join on them fails with "many-to-many matching not allowed" for every budget
    /// of the rule; so the series of the instance that loaded its config last wins (`topk` by
    /// the load time), a choice that stays the same from one evaluation to the next, unlike a
    /// `topk` among equal values.
    fn routing_record(&self) -> Rule {
        Rule::record(
            ROUTING_RECORD.to_owned(),
            format!(
                "max by (budget, {labels}) (\n  topk by (budget) (1,\n    {info}\n    * on (job, instance) group_left\n    {loaded}\n  )\n) * 0 + 1",
                labels = ROUTING_LABELS.join(", "),
                info = self.select(metrics::BUDGET_INFO, &[]),
                loaded = self.select(metrics::RELOAD_SUCCESS_TIMESTAMP, &[]),
            ),
        )
    }

    fn dashboard_url(&self) -> String {
        format!(
            "{}/d/{BUDGET_DASHBOARD_UID}/{BUDGET_DASHBOARD_UID}?var-budget={{{{ $labels.budget }}}}",
            self.options.dashboard_url_base.trim().trim_end_matches('/'),
        )
    }

    /// The runbook of `alert` under `--runbook-url-base`.
    fn default_runbook_url(&self, alert: &str) -> String {
        format!(
            "{}/{alert}",
            self.options.runbook_url_base.trim().trim_end_matches('/')
        )
    }

    /// A per-budget alert's runbook: the budget's own `runbook_url` label when it has one, else
    /// the runbook of this alert that the daemon serves.
    fn budget_runbook_url(&self, alert: &str) -> String {
        format!(
            "{{{{ if $labels.runbook_url }}}}{{{{ $labels.runbook_url }}}}{{{{ else }}}}{}{{{{ end }}}}",
            self.default_runbook_url(alert)
        )
    }

    fn overview_url(&self) -> String {
        format!(
            "{}/d/{OVERVIEW_DASHBOARD_UID}/{OVERVIEW_DASHBOARD_UID}",
            self.options.dashboard_url_base.trim().trim_end_matches('/'),
        )
    }

    /// Fills an alert template: `<J:METRIC>` placeholders become job-scoped selector prefixes
    /// (`metric{job="…",`), and `<R:NAME>` placeholders become recorded series names.
    fn template(&self, text: &str, metrics_used: &[(&str, &str)]) -> String {
        let mut out = text.to_owned();
        for (placeholder, metric) in metrics_used {
            let full = self.template_select(metric, "");
            // `template_select` ends with ",}"; the template supplies the rest of the matchers.
            let prefix = &full[..full.len() - 1];
            out = out.replace(placeholder, prefix);
        }
        out
    }

    /// Describes the probe with the largest used ratio of `$labels.budget`: its share of the
    /// budget, lag and budget in human units; `otherwise` when no probe can measure.
    fn worst_probe(&self, otherwise: &str) -> String {
        self.template(
            "{{ with printf `topk(1, <RATIO>budget=\"%s\"})` $labels.budget | query }}\
             {{ with first . }}{{ $probe := .Labels.probe }}: probe {{ $probe }} is at \
             {{ .Value | humanizePercentage }} of its budget\
             {{ with printf `max(<LAG>budget=\"%s\",probe=\"%s\"})` $labels.budget $probe | query }}, \
             lag {{ . | first | value | humanizeDuration }}{{ end }}\
             {{ with printf `max(<BUDGET>budget=\"%s\",probe=\"%s\"})` $labels.budget $probe | query }} \
             against a budget of {{ . | first | value | humanizeDuration }}{{ end }}\
             {{ with printf `topk(1, <ANY>__name__=~\"<BACKLOG_PREFIX>.+\",budget=\"%s\",probe=\"%s\"})` $labels.budget $probe | query }}\
             {{ with first . }}, backlog {{ .Value }} {{ .Labels.__name__ | reReplaceAll \"<BACKLOG_PREFIX>\" \"\" }}{{ end }}{{ end }}\
             {{ end }}<OTHERWISE>{{ end }}",
            &[
                ("<RATIO>", metrics::BUDGET_USED_RATIO),
                ("<LAG>", metrics::LAG_SECONDS),
                ("<BUDGET>", metrics::BUDGET_SECONDS),
                // No metric name: the backlog's unit is in its name, matched by a regex.
                ("<ANY>", ""),
            ],
        )
        .replace("<BACKLOG_PREFIX>", metrics::BACKLOG_PREFIX)
        .replace(
            "<OTHERWISE>",
            &if otherwise.is_empty() {
                String::new()
            } else {
                format!("{{{{ else }}}}{otherwise}")
            },
        )
    }

    fn recording_rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = OVER_RATIO_WINDOWS
            .iter()
            .map(|window| {
                Rule::record(
                    over_ratio_record(window),
                    format!(
                        "sum by (budget) (rate({over}[{window}]))\n/\nsum by (budget) (rate({evaluated}[{window}]))",
                        over = self.select(metrics::OVER_SECONDS, &[]),
                        evaluated = self.select(metrics::EVALUATED_SECONDS, &[]),
                    ),
                )
            })
            .collect();
        rules.push(Rule::record(
            MONOTONIC_RATIO_RECORD.to_owned(),
            format!(
                "sum by (budget, probe, replica) (rate({violations}[{MONOTONIC_WINDOW}]))\n/\nsum by (budget, probe, replica) (rate({reads}[{MONOTONIC_WINDOW}]))",
                violations = self.select(metrics::MONOTONIC_READ_VIOLATIONS, &[]),
                reads = self.select(metrics::MONOTONIC_READS, &[]),
            ),
        ));
        rules.push(Rule::record(
            OBJECTIVE_RATIO_RECORD.to_owned(),
            format!(
                "max by (budget) ({})",
                self.select(metrics::OBJECTIVE_RATIO, &[])
            ),
        ));
        rules.push(Rule::record(
            OBJECTIVE_WINDOW_RECORD.to_owned(),
            format!(
                "max by (budget) ({})",
                self.select(metrics::OBJECTIVE_WINDOW, &[])
            ),
        ));
        rules
    }

    fn state_filter(&self, state: &str) -> String {
        let matcher = format!("state=\"{state}\"");
        format!(
            "(max by (budget) ({}) == 1)",
            self.select(metrics::STATE, &[&matcher])
        )
    }

    fn budget_alerts(&self) -> Vec<Rule> {
        let o = self.options;
        let per_budget = |rule: Rule| {
            let runbook = match rule.kind {
                RuleKind::Alert(name) => self.budget_runbook_url(name),
                RuleKind::Record(_) => unreachable!("only alerts get annotations"),
            };
            rule.annotate("runbook_url", runbook)
                .annotate("dashboard_url", self.dashboard_url())
        };
        let mut exceeded = per_budget(
            Rule::alert(
                EXCEEDED,
                self.join_routing(&self.state_filter("breach"), &ROUTING_LABELS),
                o.exceeded_for,
            )
            .annotate(
                "summary",
                "Consistency budget {{ $labels.budget }} is exceeded".to_owned(),
            )
            .annotate(
                "description",
                format!(
                    "Budget {{{{ $labels.budget }}}} is in breach{}.",
                    self.worst_probe(
                        ": no probe can measure it right now, and the breach holds until a \
                         fresh run is back under budget"
                    )
                ),
            ),
        );
        exceeded.keep_firing_for = o.keep_firing_for;

        let at_risk = per_budget(
            Rule::alert(
                AT_RISK,
                self.join_routing(&self.state_filter("warn"), &["owner", "runbook_url"]),
                o.at_risk_for,
            )
            .label("severity", "warning")
            .annotate(
                "summary",
                "Consistency budget {{ $labels.budget }} is at risk".to_owned(),
            )
            .annotate(
                "description",
                format!(
                    "Budget {{{{ $labels.budget }}}} is close to its limit{}.",
                    self.worst_probe("")
                ),
            ),
        );

        let probe_filter = |metric: &str| {
            format!(
                "(max by (budget, probe, replica) ({}) == 1)",
                self.select(metric, &[])
            )
        };
        let unknown = per_budget(
            Rule::alert(
                LAG_UNKNOWN,
                self.join_routing(&probe_filter(metrics::PROBE_STALE), &ROUTING_LABELS),
                o.unknown_for,
            )
            .annotate(
                "summary",
                "Lag of {{ $labels.budget }}/{{ $labels.probe }}{{ with $labels.replica }} at replica {{ . }}{{ end }} is unknown".to_owned(),
            )
            .annotate(
                "description",
                self.template(
                    "Probe {{ $labels.probe }}{{ with $labels.replica }} (replica {{ . }}){{ end }} of budget {{ $labels.budget }} has had no \
                     successful run for 3 intervals\
                     {{ with printf `time() - max(<SUCCESS>budget=\"%s\",probe=\"%s\",replica=\"%s\"})` $labels.budget $labels.probe $labels.replica | query }} \
                     (last success {{ . | first | value | humanizeDuration }} ago)\
                     {{ else }} and has never succeeded{{ end }}, so its lag is unknown\
                     {{ with printf `topk(1, sum by (reason) (increase(<ERRORS>budget=\"%s\",probe=\"%s\",replica=\"%s\"}[15m])) > 0)` $labels.budget $labels.probe $labels.replica | query }}\
                     {{ with first . }}; most frequent error: {{ .Labels.reason }}{{ end }}{{ end }}. \
                     lagbudget cannot see this hop, so someone must look.",
                    &[
                        ("<SUCCESS>", metrics::PROBE_LAST_SUCCESS),
                        ("<ERRORS>", metrics::PROBE_ERRORS),
                    ],
                ),
            ),
        );

        let stalled = per_budget(
            Rule::alert(
                FEED_STALLED,
                self.join_routing(&probe_filter(metrics::STALLED), &ROUTING_LABELS),
                o.stalled_for,
            )
            .annotate(
                "summary",
                "Feed of {{ $labels.budget }}/{{ $labels.probe }}{{ with $labels.replica }} at replica {{ . }}{{ end }} is stalled".to_owned(),
            )
            .annotate(
                "description",
                self.template(
                    "Probe {{ $labels.probe }}{{ with $labels.replica }} (replica {{ . }}){{ end }} of budget {{ $labels.budget }} is behind\
                     {{ with printf `max(<LAG>budget=\"%s\",probe=\"%s\",replica=\"%s\"})` $labels.budget $labels.probe $labels.replica | query }} \
                     (lag {{ . | first | value | humanizeDuration }}){{ end }} and its position \
                     has not advanced\
                     {{ with printf `time() - max(<PROGRESS>budget=\"%s\",probe=\"%s\",replica=\"%s\"})` $labels.budget $labels.probe $labels.replica | query }} \
                     for {{ . | first | value | humanizeDuration }}{{ end }}\
                     {{ with printf `max(<MEMBERS>budget=\"%s\",probe=\"%s\",replica=\"%s\"})` $labels.budget $labels.probe $labels.replica | query }}\
                     ; consumer group members: {{ . | first | value }}{{ end }}.",
                    &[
                        ("<LAG>", metrics::LAG_SECONDS),
                        ("<PROGRESS>", metrics::PROGRESS_TIMESTAMP),
                        ("<MEMBERS>", metrics::KAFKA_GROUP_MEMBERS),
                    ],
                ),
            ),
        );

        let mut rules = vec![exceeded, at_risk, unknown, stalled];
        rules.extend(self.burn_rate_alerts().into_iter().map(per_budget));
        rules.push(per_budget(self.monotonic_alert()));
        rules.push(per_budget(self.mismatches_alert()));
        rules
    }

    /// A canary view whose monotonic reads went back in time more often, over the last
    /// [`MONOTONIC_WINDOW`], than its `max_monotonic_violations` allows. Views without a limit
    /// have no `lagbudget_monotonic_read_violation_budget_ratio` series and never fire; a view
    /// not read in the window has no share (0 / 0) and does not fire either.
    fn monotonic_alert(&self) -> Rule {
        let filter = format!(
            "(\n  {MONOTONIC_RATIO_RECORD}\n    > on (budget, probe, replica)\n  max by (budget, probe, replica) ({})\n)",
            self.select(metrics::MONOTONIC_VIOLATION_BUDGET, &[])
        );
        Rule::alert(
            MONOTONIC_VIOLATED,
            self.join_routing(&filter, &ROUTING_LABELS),
            self.options.monotonic_for,
        )
        .annotate(
            "summary",
            "Reads of {{ $labels.budget }}/{{ $labels.probe }} at {{ $labels.replica }} go back in time".to_owned(),
        )
        .annotate(
            "description",
            self.template(
                &format!(
                    "{{{{ $value | humanizePercentage }}}} of the monotonic reads through view \
                     {{{{ $labels.replica }}}} of probe {{{{ $labels.probe }}}} (budget \
                     {{{{ $labels.budget }}}}) in the last {MONOTONIC_WINDOW} showed an older \
                     marker than one already seen through the same route\
                     {{{{ with printf `sum(increase(<VIOLATIONS>budget=\"%s\",probe=\"%s\",replica=\"%s\"}}[{MONOTONIC_WINDOW}]))` $labels.budget $labels.probe $labels.replica | query }}}} \
                     (violations: {{{{ . | first | value | humanize }}}}){{{{ end }}}}\
                     {{{{ with printf `max(<LIMIT>budget=\"%s\",probe=\"%s\",replica=\"%s\"}})` $labels.budget $labels.probe $labels.replica | query }}}}, \
                     above its limit of {{{{ . | first | value | humanizePercentage }}}}{{{{ end }}}}. \
                     A user refreshing this view can see a value and then an older one."
                ),
                &[
                    ("<VIOLATIONS>", metrics::MONOTONIC_READ_VIOLATIONS),
                    ("<LIMIT>", metrics::MONOTONIC_VIOLATION_BUDGET),
                ],
            ),
        )
    }

    /// A reconcile probe that finds more mismatched records (missing, stale and extra added up,
    /// each already older than `max_lag`) than its `max_mismatches` allows. Each kind is taken
    /// as the largest count among daemon instances before the kinds are added, so two daemons
    /// reconciling the same records count them once. Probes without a limit have no
    /// `lagbudget_reconcile_max_mismatches` series and never fire; a stale probe exports no
    /// mismatch series (an unknown count never reads as 0) and does not fire either:
    /// `ConsistencyLagUnknown` covers it.
    fn mismatches_alert(&self) -> Rule {
        let filter = format!(
            "(\n  sum by (budget, probe) (\n    max by (budget, probe, kind) ({})\n  )\n    > on (budget, probe)\n  max by (budget, probe) ({})\n)",
            self.select(metrics::RECONCILE_MISMATCHES, &[]),
            self.select(metrics::RECONCILE_MAX_MISMATCHES, &[]),
        );
        Rule::alert(
            RECONCILE_MISMATCHED,
            self.join_routing(&filter, &ROUTING_LABELS),
            self.options.mismatches_for,
        )
        .annotate(
            "summary",
            "{{ $value | printf \"%.0f\" }} records of {{ $labels.budget }}/{{ $labels.probe }} \
             do not match their source"
                .to_owned(),
        )
        .annotate(
            "description",
            self.template(
                "Reconcile probe {{ $labels.probe }} of budget {{ $labels.budget }} finds \
                 {{ $value | printf \"%.0f\" }} records, older than max_lag, that the derived \
                 view does not show as the source has them\
                 {{ with printf `max(<MISMATCHES>budget=\"%s\",probe=\"%s\",kind=\"missing\"})` $labels.budget $labels.probe | query }}\
                 : {{ . | first | value | printf \"%.0f\" }} missing (no derived record){{ end }}\
                 {{ with printf `max(<MISMATCHES>budget=\"%s\",probe=\"%s\",kind=\"stale\"})` $labels.budget $labels.probe | query }}\
                 , {{ . | first | value | printf \"%.0f\" }} stale (an older version){{ end }}\
                 {{ with printf `max(<MISMATCHES>budget=\"%s\",probe=\"%s\",kind=\"extra\"})` $labels.budget $labels.probe | query }}\
                 , {{ . | first | value | printf \"%.0f\" }} extra (a derived record without a \
                 source record){{ end }}\
                 {{ with printf `max(<LIMIT>budget=\"%s\",probe=\"%s\"})` $labels.budget $labels.probe | query }}\
                 ; its max_mismatches allows {{ . | first | value | printf \"%.0f\" }}{{ end }}. \
                 The status API (GET /api/v1/budgets, the probe's reconcile.sample) lists up to \
                 sample_keys of their keys with their kind; set sample_keys on the probe to see \
                 which records to repair.",
                &[
                    ("<MISMATCHES>", metrics::RECONCILE_MISMATCHES),
                    ("<LIMIT>", metrics::RECONCILE_MAX_MISMATCHES),
                ],
            ),
        )
    }

    /// Multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs"): fire
    /// when 2 % of the error budget is spent in one hour (fast, the budget's severity) or 5 % in
    /// six hours (slow, severity `warning`), each
    /// confirmed by a short window so the alert stops soon after the burning does. The factors
    /// (14.4 and 6 for a 30-day objective) are derived in PromQL from each budget's objective
    /// window, so a 7-day and a 28-day objective each get their own threshold.
    fn burn_rate_alerts(&self) -> Vec<Rule> {
        // (label, long window, its seconds, short window, share of the error budget, summary)
        let windows = [
            ("fast", "1h", 3600, "5m", "0.02", "fast"),
            ("slow", "6h", 21600, "30m", "0.05", "steadily"),
        ];
        windows
            .iter()
            .map(|(name, long, long_seconds, short, share, pace)| {
                // The factor is at least 1: for an objective window shorter than 50 h (fast) or
                // 120 h (slow) it would fall below 1 and fire while the budget is on track.
                let threshold = format!(
                    "clamp_min({share} * {OBJECTIVE_WINDOW_RECORD} / {long_seconds}, 1) * (1 - {OBJECTIVE_RATIO_RECORD})"
                );
                let long_ratio = over_ratio_record(long);
                let short_ratio = over_ratio_record(short);
                let filter = format!(
                    "(\n  {long_ratio}\n    > {threshold}\n  and\n  {short_ratio}\n    > {threshold}\n)"
                );
                let alert = Rule::alert(
                    BURN_RATE,
                    self.join_routing(&filter, &ROUTING_LABELS),
                    Duration::ZERO,
                )
                .label("window", name);
                // A slow burn is a ticket, not a page: it is still over its threshold for hours
                // after a breach has resolved (30m/6h windows), and paging then would make one
                // incident two pages. The fast burn keeps the budget's severity; its 5m window
                // has cleared by the time Exceeded stops firing (keep_firing_for).
                let alert = if *name == "slow" {
                    alert.label("severity", "warning")
                } else {
                    alert
                };
                alert
                .annotate(
                    "summary",
                    format!(
                        "Consistency budget {{{{ $labels.budget }}}} is burning its error budget {pace}"
                    ),
                )
                .annotate(
                    "description",
                    format!(
                        "Budget {{{{ $labels.budget }}}} was not within budget (breach or unknown) \
                         {{{{ $value | humanizePercentage }}}} of the last {long}\
                         {{{{ with printf `{short_ratio}{{budget=\"%s\"}}` $labels.budget | query }}}} \
                         and {{{{ . | first | value | humanizePercentage }}}} of the last {short}{{{{ end }}}}\
                         {{{{ with printf `{long_ratio}{{budget=\"%s\"}} / (1 - {OBJECTIVE_RATIO_RECORD}{{budget=\"%s\"}})` $labels.budget $labels.budget | query }}}}\
                         : {{{{ . | first | value | humanize }}}} times the pace its objective allows{{{{ end }}}}\
                         {{{{ with printf `{OBJECTIVE_RATIO_RECORD}{{budget=\"%s\"}}` $labels.budget | query }}}} \
                         (objective: within budget {{{{ . | first | value | humanizePercentage }}}} of the time{{{{ end }}}}\
                         {{{{ with printf `{OBJECTIVE_WINDOW_RECORD}{{budget=\"%s\"}} / 86400` $labels.budget | query }}}} \
                         over {{{{ . | first | value | printf \"%.3g\" }}}} days){{{{ end }}}}."
                    ),
                )
            })
            .collect()
    }

    fn daemon_alerts(&self) -> Vec<Rule> {
        let o = self.options;
        let up = self.select("up", &[]);
        let down = Rule::alert(
            DAEMON_DOWN,
            format!("{up} == 0\nor\nabsent({up})"),
            o.down_for,
        )
        .label("severity", "page")
        .annotate(
            "summary",
            "{{ with $labels.instance }}lagbudget at {{ . }} is down\
             {{ else }}No lagbudget target is scraped{{ end }}"
                .to_owned(),
        )
        .annotate(
            "description",
            format!(
                "{{{{ with $labels.instance }}}}Prometheus cannot scrape lagbudget at {{{{ . }}}}\
                 {{{{ else }}}}Prometheus has no target matching {{{}}}{{{{ end }}}}: the budgets \
                 it measures are not watched, and none of their alerts can fire. Alertmanager \
                 holds back the per-budget alerts while this one fires.",
                self.job,
            ),
        )
        .annotate("runbook_url", self.default_runbook_url(DAEMON_DOWN))
        .annotate("dashboard_url", self.overview_url());

        let reload = Rule::alert(
            RELOAD_FAILED,
            format!("{} == 0", self.select(metrics::RELOAD_SUCCESSFUL, &[])),
            o.reload_failed_for,
        )
        .label("severity", "warning")
        .annotate(
            "summary",
            "lagbudget at {{ $labels.instance }} failed to reload its config".to_owned(),
        )
        .annotate(
            "description",
            self.template(
                "The last config reload of lagbudget at {{ $labels.instance }} failed, so it \
                 keeps running its previous config\
                 {{ with printf `max(<LOADED>instance=\"%s\"})` $labels.instance | query }} \
                 (loaded {{ . | first | value | humanizeTimestamp }}){{ end }}. \
                 `lagbudget check -c FILE` prints every error of the new one.",
                &[("<LOADED>", metrics::RELOAD_SUCCESS_TIMESTAMP)],
            ),
        )
        .annotate("runbook_url", self.default_runbook_url(RELOAD_FAILED))
        .annotate("dashboard_url", self.overview_url());
        vec![down, reload]
    }
}

fn rule_groups(options: &RulesOptions) -> Vec<Group> {
    let b = Builder::new(options);
    // One group for everything about budgets: rules of a group run in order at the same
    // evaluation time, so every alert sees this evaluation's records. (Groups run
    // independently of each other; an alert reading another group's record would see this
    // evaluation's value or the previous one's, depending on timing.)
    let mut budget_rules = vec![b.routing_record()];
    budget_rules.extend(b.recording_rules());
    budget_rules.extend(b.budget_alerts());
    vec![
        Group {
            name: "lagbudget.budgets",
            rules: budget_rules,
        },
        Group {
            name: "lagbudget.daemon",
            rules: b.daemon_alerts(),
        },
    ]
}

/// Puts each `{{ with …` of a long template on a line of its own, written `{{- with …` so that
/// the template trims the line break again: the rules file stays readable and the text the
/// alert shows is unchanged. Only breaks where no whitespace precedes, which the trim would
/// also remove.
fn break_lines(template: &str) -> String {
    if template.len() < 100 {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find("{{ with ") {
        let before = &rest[..at];
        out.push_str(before);
        let breakable = !out.is_empty() && !out.ends_with(char::is_whitespace);
        out.push_str(if breakable { "\n{{- with " } else { "{{ with " });
        rest = &rest[at + "{{ with ".len()..];
    }
    out.push_str(rest);
    out
}

/// A duration in Prometheus' syntax (`1m`, `1h30m`, `1500ms`).
fn prometheus_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_rust2::{Yaml, YamlLoader};

    fn load(text: &str) -> Yaml {
        let mut docs = YamlLoader::load_from_str(text).expect("generated YAML parses");
        assert_eq!(docs.len(), 1, "one document");
        docs.remove(0)
    }

    /// The groups as built, before emitting: what the parser must read back.
    fn groups_tree(options: &RulesOptions) -> Yaml {
        Yaml::Array(rule_groups(options).iter().map(Group::to_yaml).collect())
    }

    /// Every string of a document read back, keys and values.
    fn strings(doc: &Yaml) -> Vec<&str> {
        match doc {
            Yaml::String(s) => vec![s.as_str()],
            Yaml::Array(items) => items.iter().flat_map(strings).collect(),
            Yaml::Hash(entries) => entries
                .iter()
                .flat_map(|(k, v)| strings(k).into_iter().chain(strings(v)))
                .collect(),
            other => panic!("only strings, lists and maps are written, not {other:?}"),
        }
    }

    fn rules_of(doc: &Yaml) -> Vec<&Yaml> {
        doc["groups"]
            .as_vec()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_vec().expect("rules"))
            .collect()
    }

    /// Options with characters that YAML gives a meaning to (quotes, `#`, `: `, `%`, `\\`,
    /// non-ASCII), all of which `validate` accepts.
    fn awkward_options() -> RulesOptions {
        RulesOptions {
            job_selector: r#"job=~"lb|lag'budget", env!="a: b #c", x="%s\\ü","#.to_owned(),
            dashboard_url_base: "https://grafana.example.com/g'#x:1/".to_owned(),
            runbook_url_base: "https://wiki.example.com/run'books#x:1/".to_owned(),
            ..RulesOptions::default()
        }
    }

    #[test]
    fn rules_read_back_as_the_tree_they_were_written_from() {
        for options in [RulesOptions::default(), awkward_options()] {
            assert_eq!(options.validate(), Ok(()));
            let rules = load(&render(&options, RulesFormat::Prometheus));
            assert_eq!(rules["groups"], groups_tree(&options), "{options:?}");
            let k8s = load(&render(&options, RulesFormat::Prometheusrule));
            assert_eq!(k8s["spec"]["groups"], groups_tree(&options), "{options:?}");
        }
    }

    /// Multi-line PromQL and templates are literal blocks, written as they read, never a
    /// double-quoted line full of `\\n`.
    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let text = render(&RulesOptions::default(), RulesFormat::Prometheus);
        assert!(
            text.starts_with("# Prometheus rules for lagbudget"),
            "{text}"
        );
        assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
        assert!(
            !text.contains("\\n"),
            "a multi-line string is not a block:\n{text}"
        );
        assert!(text.contains(
            "        expr: |-\n          \
             (max by (budget) (lagbudget_state{job=\"lagbudget\",state=\"breach\"}) == 1)\n"
        ));
        assert!(
            text.contains("            {{- with printf `topk(1, lagbudget_budget_used_ratio{"),
            "{text}"
        );
        let doc = load(&text);
        let multi_line = strings(&doc).iter().filter(|s| s.contains('\n')).count();
        assert!(multi_line > 10, "{multi_line} multi-line strings");
    }

    #[test]
    fn prometheusrule_wraps_the_same_groups() {
        let options = RulesOptions::default();
        let rules = load(&render(&options, RulesFormat::Prometheus));
        let k8s = load(&render(&options, RulesFormat::Prometheusrule));
        assert_eq!(k8s["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
        assert_eq!(k8s["kind"].as_str(), Some("PrometheusRule"));
        assert_eq!(k8s["metadata"]["name"].as_str(), Some("lagbudget"));
        assert_eq!(k8s["spec"]["groups"], rules["groups"]);
        assert!(!k8s["spec"]["groups"].as_vec().expect("groups").is_empty());
    }

    #[test]
    fn every_alert_is_there_with_the_labels_and_annotations_the_product_names() {
        let doc = load(&render(&RulesOptions::default(), RulesFormat::Prometheus));
        let mut seen = Vec::new();
        for group in doc["groups"].as_vec().expect("groups") {
            for rule in group["rules"].as_vec().expect("rules") {
                let Some(name) = rule["alert"].as_str() else {
                    let record = rule["record"]
                        .as_str()
                        .expect("a rule is an alert or a record");
                    assert_eq!(
                        record.split(':').count(),
                        3,
                        "{record} is named level:metric:operations"
                    );
                    continue;
                };
                seen.push(name.to_owned());
                let expr = rule["expr"].as_str().expect("expr");
                let annotations = &rule["annotations"];
                for key in ["summary", "description", "dashboard_url"] {
                    assert!(
                        annotations[key].as_str().is_some_and(|v| !v.is_empty()),
                        "{name} lacks annotation {key}"
                    );
                }
                let daemon_level = name == DAEMON_DOWN || name == RELOAD_FAILED;
                let served = format!("http://lagbudget:9464/runbooks/{name}");
                if daemon_level {
                    assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
                    assert_eq!(annotations["runbook_url"].as_str(), Some(&*served));
                    continue;
                }
                // The budget's own runbook when it names one, else the one the daemon serves.
                assert_eq!(
                    annotations["runbook_url"].as_str(),
                    Some(&*format!(
                        "{{{{ if $labels.runbook_url }}}}{{{{ $labels.runbook_url }}}}\
                         {{{{ else }}}}{served}{{{{ end }}}}"
                    )),
                    "{name}"
                );
                assert!(
                    annotations["dashboard_url"]
                        .as_str()
                        .is_some_and(|u| u.contains("/d/lagbudget-budget/")
                            && u.ends_with("var-budget={{ $labels.budget }}")),
                    "{name}"
                );
                // budget comes from the aggregation, owner and runbook_url from the join, and
                // severity from the join or, for AtRisk, the rule.
                assert!(
                    expr.contains("max by (budget") || expr.contains(OVER_RATIO_RECORD_PREFIX),
                    "{name}: {expr}"
                );
                assert!(
                    expr.contains("* on (budget) group_left(") && expr.contains(ROUTING_RECORD),
                    "{name}: {expr}"
                );
                assert!(
                    expr.contains("group_left(owner, severity, runbook_url)")
                        || (name == AT_RISK
                            && expr.contains("group_left(owner, runbook_url)")
                            && rule["labels"]["severity"].as_str() == Some("warning")),
                    "{name}: {expr}"
                );
            }
        }
        seen.dedup();
        assert_eq!(seen, ALERT_NAMES);
    }

    #[test]
    fn exceeded_keeps_firing_and_burn_rate_has_a_fast_and_a_slow_window() {
        let options = RulesOptions {
            exceeded_for: Duration::from_secs(90),
            keep_firing_for: Duration::from_secs(3600),
            ..RulesOptions::default()
        };
        let doc = load(&render(&options, RulesFormat::Prometheus));
        let rules = rules_of(&doc);
        let exceeded = rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(EXCEEDED))
            .expect("Exceeded");
        assert_eq!(exceeded["for"].as_str(), Some("1m30s"));
        assert_eq!(exceeded["keep_firing_for"].as_str(), Some("1h"));
        let windows: Vec<&str> = rules
            .iter()
            .filter(|r| r["alert"].as_str() == Some(BURN_RATE))
            .map(|r| r["labels"]["window"].as_str().expect("window label"))
            .collect();
        assert_eq!(windows, ["fast", "slow"]);
        for rule in rules
            .iter()
            .filter(|r| r["alert"].as_str() == Some(BURN_RATE))
        {
            let expr = rule["expr"].as_str().expect("expr");
            // The factor is derived from the objective window in PromQL, not a constant.
            assert!(expr.contains(OBJECTIVE_WINDOW_RECORD), "{expr}");
            assert!(expr.contains(OBJECTIVE_RATIO_RECORD), "{expr}");
        }
    }

    /// The kinds are added per probe after taking each kind's largest count among instances,
    /// compared with the probe's limit, and `mismatches_for` is the alert's `for`.
    #[test]
    fn reconcile_mismatches_add_up_the_kinds_once_and_compare_with_the_limit() {
        let options = RulesOptions {
            mismatches_for: Duration::from_secs(15 * 60),
            ..RulesOptions::default()
        };
        let doc = load(&render(&options, RulesFormat::Prometheus));
        let rules = rules_of(&doc);
        let alert = rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(RECONCILE_MISMATCHED))
            .expect("ConsistencyReconcileMismatches");
        assert_eq!(alert["for"].as_str(), Some("15m"));
        let expr = alert["expr"].as_str().expect("expr");
        assert!(
            expr.contains(
                "sum by (budget, probe) (\n    max by (budget, probe, kind) \
                 (lagbudget_reconcile_mismatches{job=\"lagbudget\"})\n  )\n    > on (budget, probe)\n  \
                 max by (budget, probe) (lagbudget_reconcile_max_mismatches{job=\"lagbudget\"})"
            ),
            "{expr}"
        );
        let description = alert["annotations"]["description"]
            .as_str()
            .expect("description");
        for kind in ["missing", "stale", "extra"] {
            assert!(
                description.contains(&format!("kind=\"{kind}\"")),
                "{kind}: {description}"
            );
        }
        assert!(description.contains("sample_keys"), "{description}");
    }

    /// Every `lagbudget_…` name in the rules is a metric const of `metrics.rs` (or the metric
    /// part of a recording rule named here), so a typo or a rename cannot hide in a string.
    #[test]
    fn every_metric_referenced_is_a_const_of_metrics_rs() {
        let known = [
            metrics::LAG_SECONDS,
            metrics::BUDGET_SECONDS,
            metrics::BUDGET_USED_RATIO,
            metrics::STATE,
            metrics::STATE_SINCE,
            metrics::PROBE_UP,
            metrics::PROBE_STALE,
            metrics::PROBE_LAST_DURATION,
            metrics::PROBE_DURATION,
            metrics::PROBE_LAST_SUCCESS,
            metrics::PROBE_ERRORS,
            metrics::PROGRESS_TIMESTAMP,
            metrics::STALLED,
            metrics::EVALUATED_SECONDS,
            metrics::OVER_SECONDS,
            metrics::BUDGET_INFO,
            metrics::OBJECTIVE_RATIO,
            metrics::OBJECTIVE_WINDOW,
            metrics::NEGATIVE_LAG,
            metrics::POSITION_REGRESSIONS,
            metrics::KAFKA_GROUP_MEMBERS,
            metrics::KAFKA_DATA_LOSS,
            metrics::KAFKA_TIMESTAMP_TYPE,
            metrics::PARTITION_LAG,
            metrics::PARTITION_BACKLOG,
            metrics::BUILD_INFO,
            metrics::RELOAD_SUCCESSFUL,
            metrics::RELOAD_SUCCESS_TIMESTAMP,
            metrics::MONOTONIC_READS,
            metrics::MONOTONIC_READ_VIOLATIONS,
            metrics::MONOTONIC_VIOLATION_BUDGET,
            metrics::RECONCILE_MISMATCHES,
            metrics::RECONCILE_MAX_MISMATCHES,
            // Matched as a prefix (`__name__=~"lagbudget_backlog_.+"`): the unit is in the name.
            metrics::BACKLOG_PREFIX,
        ];
        let doc = load(&render(&RulesOptions::default(), RulesFormat::Prometheus));
        let records: Vec<&str> = rules_of(&doc)
            .iter()
            .filter_map(|r| r["record"].as_str())
            .collect();
        assert_eq!(records.len(), OVER_RATIO_WINDOWS.len() + 4, "{records:?}");
        let text = strings(&doc).join("\n");
        let mut names = 0;
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            let token = token.trim_matches(':');
            if token.contains(":lagbudget_") {
                assert!(
                    records.contains(&token),
                    "{token} is not a recording rule of this file"
                );
            } else if token.starts_with("lagbudget_") {
                names += 1;
                assert!(
                    known.contains(&token),
                    "{token} is not a const in metrics.rs"
                );
            }
        }
        assert!(names > 20, "the rules name metrics ({names} found)");
        // Placeholders of the templates are all filled in.
        let placeholder = regex::Regex::new("<[A-Z_]+>").expect("regex");
        assert!(!placeholder.is_match(&text), "{text}");
    }

    /// The rules are generic: the only `budget` matcher is a template's `%s`.
    #[test]
    fn no_budget_is_named() {
        let doc = load(&render(&RulesOptions::default(), RulesFormat::Prometheus));
        for text in strings(&doc) {
            for (at, _) in text.match_indices("budget=") {
                let rest = &text[at + "budget=".len()..];
                assert!(
                    rest.starts_with("\"%s\"") || rest.starts_with("{{ $labels.budget }}"),
                    "a budget is named: {}",
                    &text[at..(at + 40).min(text.len())]
                );
            }
            assert!(!text.contains("budget!="));
            assert!(!text.contains("budget=~"));
        }
    }

    #[test]
    fn options_reach_the_rules() {
        let options = RulesOptions {
            job_selector: r#"job="lb", env="prod""#.to_owned(),
            dashboard_url_base: "https://grafana.example.com/".to_owned(),
            at_risk_for: Duration::from_millis(1500),
            keep_firing_for: Duration::ZERO,
            ..RulesOptions::default()
        };
        assert_eq!(options.validate(), Ok(()));
        let doc = load(&render(&options, RulesFormat::Prometheus));
        let text = strings(&doc).join("\n");
        assert!(text.contains(r#"lagbudget_state{job="lb", env="prod",state="breach"}"#));
        assert!(text.contains(r#"absent(up{job="lb", env="prod"})"#));
        assert!(text.contains(
            "https://grafana.example.com/d/lagbudget-budget/lagbudget-budget?var-budget="
        ));
        assert!(!text.contains(r#"job="lagbudget""#));
        let rules = rules_of(&doc);
        let at_risk = rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(AT_RISK))
            .expect("AtRisk");
        assert_eq!(at_risk["for"].as_str(), Some("1s500ms"));
        assert!(rules.iter().all(|r| r["keep_firing_for"].is_badvalue()));
    }

    #[test]
    fn invalid_options_are_rejected_with_a_reason() {
        for selector in [
            "",
            "  ",
            "{job=\"x\"}",
            "job=`x`",
            "job=\"a\u{2028}b\"",
            "job=\"\u{85}\"",
        ] {
            let options = RulesOptions {
                job_selector: selector.to_owned(),
                ..RulesOptions::default()
            };
            let error = options.validate().expect_err(selector);
            assert!(error.contains("--job-selector"), "{error}");
        }
        for base in [
            "http://grafana {{",
            "http://gra\u{7}fana",
            "http://gra\u{2028}fana",
        ] {
            let options = RulesOptions {
                dashboard_url_base: base.to_owned(),
                ..RulesOptions::default()
            };
            let error = options.validate().expect_err(base);
            assert!(error.contains("--dashboard-url-base"), "{error}");
        }
        assert_eq!(RulesOptions::default().validate(), Ok(()));
    }

    #[test]
    fn durations_use_prometheus_syntax() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (60_000, "1m"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (86_400_000 + 1, "1d1ms"),
        ] {
            assert_eq!(prometheus_duration(Duration::from_millis(ms)), text);
        }
    }
}
