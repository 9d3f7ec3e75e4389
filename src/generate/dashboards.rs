//! Grafana dashboards (`lagbudget dashboards`): an overview of every budget and a per-budget
//! drill-down, plus a file provisioning them (README.md, "Alerts, dashboards and the status
//! page").
//!
//! Every query is built from the metric name consts in `metrics.rs`, and the dashboards are
//! generic: they list no budget, so a budget added by a reload appears at once. Queries never
//! fill missing data with `or vector(0)`: a probe that cannot see leaves a gap or an empty cell,
//! because unknown must look unknown. Series are aggregated with `max by (…)` (or summed, for
//! the time counters, whose ratio stays sound) so that two daemons scraped at once still give
//! one line per budget or probe. `panel_queries` hands the queries, variables filled in, to a
//! test that runs them against a real Prometheus.
//!
//! Each dashboard is a list of `grafana::Row`s, one function per row and per panel. The rows
//! that only some probe kinds fill come from `probe::dashboard_rows`, collapsed: this file
//! knows no probe kind.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::evaluate::BudgetState;
use crate::metrics::{
    BACKLOG_PREFIX, BUDGET_INFO, BUDGET_SECONDS, BUDGET_USED_RATIO, BUILD_INFO, CLOCK_SKEW,
    EVALUATED_SECONDS, LAG_SECONDS, NEGATIVE_LAG, OBJECTIVE_RATIO, OBJECTIVE_WINDOW, OVER_SECONDS,
    POSITION_REGRESSIONS, PROBE_DURATION, PROBE_ERRORS, PROBE_LAST_DURATION, PROBE_LAST_SUCCESS,
    PROBE_STALE, PROBE_UP, PROGRESS_TIMESTAMP, READ_YOUR_WRITES_CHECKS, READ_YOUR_WRITES_MISSES,
    RELOAD_SUCCESS_TIMESTAMP, RELOAD_SUCCESSFUL, STALLED, STATE, STATE_SINCE,
};
use crate::probe::{BacklogUnit, dashboard_rows};

use super::grafana::{
    Row, Tap, color_background, column, count_stat, datasource_variable, decimals, instant,
    interpolate, layout, leaf_panels, links_property, mappings, mappings_value, no_value,
    query_variable, range_target, ref_id, stat, state_timeline, table, table_legend, table_target,
    thresholds, thresholds_property, timeseries, unit, with_links, with_threshold_line,
};

/// The overview of every budget.
pub const OVERVIEW_UID: &str = "lagbudget-overview";
/// The per-budget drill-down; `?var-budget=NAME` selects the budget.
pub const BUDGET_UID: &str = "lagbudget-budget";

const OVERVIEW_FILE: &str = "lagbudget-overview.json";
const BUDGET_FILE: &str = "lagbudget-budget.json";
const PROVISIONING_FILE: &str = "provisioning.yaml";

/// Titles whose slugs are the uids, so `/d/{uid}/{uid}` is each dashboard's canonical URL.
const OVERVIEW_TITLE: &str = "lagbudget: overview";
const BUDGET_TITLE: &str = "lagbudget: budget";

const SCHEMA_VERSION: u32 = 39;
const REFRESH: &str = "30s";
const TAG: &str = "lagbudget";

/// Matchers of the drill-down: the selected budget, and the selected probes of it.
const BUDGET_MATCH: &str = r#"budget="$budget""#;
const PROBE_MATCH: &str = r#"budget="$budget", probe=~"$probe""#;
/// Windows of the burn-rate panel: the alert rules' fast (5m/1h) and slow (30m/6h) pairs.
const BURN_WINDOWS: [&str; 4] = ["5m", "30m", "1h", "6h"];

/// One file of the generated output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub name: &'static str,
    pub contents: String,
}

/// The dashboards and their provisioning file, as committed under `dashboards/`.
pub fn render() -> Vec<GeneratedFile> {
    vec![
        GeneratedFile {
            name: OVERVIEW_FILE,
            contents: to_json(&overview_dashboard()),
        },
        GeneratedFile {
            name: BUDGET_FILE,
            contents: to_json(&budget_dashboard()),
        },
        GeneratedFile {
            name: PROVISIONING_FILE,
            contents: provisioning(),
        },
    ]
}

/// Writes every file of `render` into `dir` (created if missing); returns the paths written.
pub fn write_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    render()
        .into_iter()
        .map(|file| {
            let path = dir.join(file.name);
            std::fs::write(&path, file.contents)?;
            Ok(path)
        })
        .collect()
}

/// Every panel query of every dashboard, with `$budget` replaced by `budget`, `$probe` by `.*`
/// (all probes) and Grafana's `$__range`/`$__rate_interval`/`$__interval` by `range`, so a test
/// can run them against Prometheus: (dashboard uid, panel title, expr). One entry per target,
/// including the panels of collapsed rows.
pub fn panel_queries(budget: &str, range: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for dashboard in [overview_dashboard(), budget_dashboard()] {
        let uid = dashboard["uid"].as_str().unwrap_or_default().to_owned();
        for panel in leaf_panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let filled = interpolate(expr, |name| match name {
                    "budget" => Some(budget.to_owned()),
                    "probe" => Some(".*".to_owned()),
                    "__range" | "__rate_interval" | "__interval" => Some(range.to_owned()),
                    _ => None,
                });
                out.push((uid.clone(), title.to_owned(), filled));
            }
        }
    }
    out
}

fn to_json(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value always serializes");
    text.push('\n');
    text
}

fn provisioning() -> String {
    format!(
        r#"# Grafana dashboard provider for lagbudget (generated by `lagbudget dashboards`; do not edit).
#
# Put this file in Grafana's provisioning directory, e.g.
#   /etc/grafana/provisioning/dashboards/lagbudget.yaml
# and {OVERVIEW_FILE} and {BUDGET_FILE} in the folder named by `path` below.
# The dashboards use the default Prometheus data source unless their `datasource` variable is
# changed. Grafana rereads the folder every 30 s; edits made in the UI are not saved back.
apiVersion: 1
providers:
  - name: lagbudget
    orgId: 1
    folder: lagbudget
    folderUid: lagbudget
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 30
    options:
      path: /var/lib/grafana/dashboards/lagbudget
      foldersFromFilesStructure: false
"#
    )
}

// ---------------------------------------------------------------------------------------------
// The overview.

fn overview_dashboard() -> Value {
    dashboard(
        OVERVIEW_UID,
        OVERVIEW_TITLE,
        "Every consistency budget: its state and since when, lag against budget, time within \
         budget, probes that cannot see and stalled feeds. Generated by `lagbudget dashboards`.",
        vec![datasource_variable()],
        vec![json!({
            "title": "Budget drill-down",
            "type": "link",
            "url": format!("/d/{BUDGET_UID}/{BUDGET_UID}"),
            "icon": "dashboard",
            "tooltip": "One budget: each probe's lag against its budget, backlog, probe health, error budget",
            "keepTime": true,
            "includeVars": true,
            "asDropdown": false,
            "targetBlank": false,
            "tags": [],
        })],
        vec![budgets_row(), daemons_row()],
    )
}

/// Every budget at once, above any title bar: how many are in each bad state, the table of
/// budgets, lag against budget and burn rate over time, and the probes that cannot see or
/// are stalled.
fn budgets_row() -> Row {
    Row::top()
        .line(4, state_counts())
        .line(10, vec![(24, budgets_table())])
        .line(8, vec![(12, worst_used_ratio()), (12, burn_rate_1h())])
        .line(8, vec![(12, stale_table()), (12, stalled_table())])
}

/// The lagbudget processes themselves: version and reload health, and how long probe runs
/// take.
fn daemons_row() -> Row {
    Row::expanded("lagbudget daemons")
        .line(7, vec![(12, daemons_table()), (12, duration_quantiles())])
}

/// Counts of budgets in breach, unknown and at risk, of stale and stalled probes, and of the
/// daemons scraped.
fn state_counts() -> Vec<(u32, Value)> {
    let mut stats = Vec::new();
    for state in [BudgetState::Breach, BudgetState::Unknown, BudgetState::Warn] {
        let (title, description, color) = match state {
            BudgetState::Breach => (
                "Budgets in breach",
                "Budgets whose state is `breach`: lag over budget for longer than `breach_after`.",
                "red",
            ),
            BudgetState::Unknown => (
                "Budgets unknown",
                "Budgets whose state is `unknown`: a probe cannot see (stale), so nobody knows \
                 whether the budget holds.",
                "purple",
            ),
            _ => (
                "Budgets at risk",
                "Budgets whose state is `warn`: lag above `warn_at` of the budget.",
                "orange",
            ),
        };
        let expr = format!(
            r#"sum(max by (budget) ({STATE}{{state="{}"}}))"#,
            state.as_str()
        );
        stats.push((4, count_stat(title, description, &expr, color)));
    }
    stats.push((
        4,
        count_stat(
            "Stale probes",
            "Probes without a successful run for 3 intervals (or never): their lag is unknown.",
            &format!("sum(max by (budget, probe, replica) ({PROBE_STALE}))"),
            "purple",
        ),
    ));
    stats.push((
        4,
        count_stat(
            "Stalled probes",
            "Probes whose view is behind and has not advanced for the stall limit.",
            &format!("sum(max by (budget, probe, replica) ({STALLED}))"),
            "orange",
        ),
    ));
    stats.push((
        4,
        stat(
            "Daemons scraped",
            "lagbudget processes Prometheus scrapes (`lagbudget_build_info`). \"No data\" means \
             none is scraped, and every other panel is then blind too.",
            vec![instant("A", &format!("count({BUILD_INFO})"), "daemons")],
            "none",
            thresholds(&[("red", None), ("green", Some(1.0))]),
        ),
    ));
    stats
}

fn worst_used_ratio() -> Value {
    let used = timeseries(
        "Lag against budget (worst probe)",
        "Each budget's worst probe: lag ÷ budget (or backlog ÷ max backlog, the larger), \
         `max by (budget) (lagbudget_budget_used_ratio)`. Above the dashed line at 100% the \
         budget is exceeded. A gap means no probe of the budget can see: unknown, not zero. \
         Click a line to open the budget.",
        vec![range_target(
            "A",
            &format!("max by (budget) ({BUDGET_USED_RATIO})"),
            "{{budget}}",
        )],
        "percentunit",
    );
    with_links(
        with_threshold_line(used, 1.0),
        &budget_link("${__field.labels.budget}"),
    )
}

fn burn_rate_1h() -> Value {
    let burn = timeseries(
        "Error budget burn rate (1h)",
        "How fast each budget with an objective spends its error budget, over the last hour: \
         (Δover ÷ Δevaluated) ÷ (1 − objective), from the time counters \
         `lagbudget_budget_over_seconds_total` and `lagbudget_budget_evaluated_seconds_total`, \
         summed over every daemon that evaluates the budget. 1 spends the budget exactly over \
         the objective window (dashed line); budgets without an objective are not shown.",
        vec![range_target(
            "A",
            &format!(
                "(sum by (budget) (rate({OVER_SECONDS}[1h])) / (sum by (budget) \
                 (rate({EVALUATED_SECONDS}[1h])) > 0)) / on (budget) (1 - max by (budget) \
                 ({OBJECTIVE_RATIO}))"
            ),
            "{{budget}}",
        )],
        "none",
    );
    with_links(
        with_threshold_line(burn, 1.0),
        &budget_link("${__field.labels.budget}"),
    )
}

fn budgets_table() -> Value {
    let targets = vec![
        table_target(
            "A",
            &format!(
                "max by (budget, state) ({STATE} == 1) * on (budget) group_left () \
                 (1000 * max by (budget) ({STATE_SINCE}))"
            ),
        ),
        table_target("B", &format!("max by (budget) ({BUDGET_USED_RATIO})")),
        table_target("C", &format!("max by (budget) ({LAG_SECONDS})")),
        table_target("D", &within_budget_expr("budget", "")),
        table_target("E", &format!("max by (budget) ({OBJECTIVE_RATIO})")),
        table_target(
            "F",
            &format!("max by (budget, owner, severity) ({BUDGET_INFO})"),
        ),
    ];
    let mut panel = table(
        "Budgets",
        "Every budget: its state and since when; its worst probe's lag and share of budget used \
         (lag ÷ budget or backlog ÷ max backlog, the larger; \"unknown\" while no probe can \
         see); the share of time within budget over the dashboard's time range (1 − \
         Δover ÷ Δevaluated of the time counters, where over means breach or unknown; set the \
         time range to the objective window to read it against the objective); the objective; \
         owner and severity. Click a budget to open it.",
        targets,
        &[
            ("budget", "Budget"),
            ("state", "State"),
            ("Value #A", "In state since"),
            ("Value #C", "Worst lag"),
            ("Value #B", "Budget used"),
            ("Value #D", "Within budget (time range)"),
            ("Value #E", "Objective"),
            ("owner", "Owner"),
            ("severity", "Severity"),
        ],
        &["Time", "Value #F"],
    );
    panel["options"]["sortBy"] = json!([{ "displayName": "Budget used", "desc": true }]);
    panel["fieldConfig"]["overrides"] = json!([
        column(
            "budget",
            vec![links_property(&budget_link("${__value.raw}"))]
        ),
        column("state", vec![state_mappings(), color_background()]),
        column(
            "Value #A",
            vec![unit("dateTimeFromNow"), no_value("unknown")]
        ),
        column("Value #C", vec![unit("s"), no_value("unknown")]),
        column(
            "Value #B",
            vec![
                unit("percentunit"),
                no_value("unknown"),
                thresholds_property(thresholds(&[
                    ("green", None),
                    ("orange", Some(0.8)),
                    ("red", Some(1.0))
                ])),
                json!({ "id": "custom.cellOptions", "value": { "type": "color-text" } }),
            ]
        ),
        column(
            "Value #D",
            vec![unit("percentunit"), decimals(3), no_value("not evaluated")]
        ),
        column(
            "Value #E",
            vec![unit("percentunit"), decimals(3), no_value("none")]
        ),
    ]);
    panel
}

fn stale_table() -> Value {
    flagged_probes_table(
        "Probes that cannot see",
        "Probes without a successful run for 3 intervals (or never), `lagbudget_probe_stale == \
         1`: their lag is unknown and their budget is `unknown` (or stays in `breach`). Last \
         success is empty when the probe never succeeded. Click a budget to open it.",
        PROBE_STALE,
        PROBE_LAST_SUCCESS,
        "Last success",
    )
}

fn stalled_table() -> Value {
    flagged_probes_table(
        "Stalled feeds",
        "Probes whose view is behind and whose position has not advanced for the stall limit, \
         `lagbudget_stalled == 1`, with when the position last advanced. Click a budget to open \
         it.",
        STALLED,
        PROGRESS_TIMESTAMP,
        "Last advanced",
    )
}

/// A table of the probes whose 0/1 `flag` metric is 1, with the time in `when` (unix seconds)
/// as a column titled `when_title`, and each budget linking to its drill-down.
fn flagged_probes_table(
    title: &str,
    description: &str,
    flag: &str,
    when: &str,
    when_title: &str,
) -> Value {
    table(
        title,
        description,
        vec![
            table_target(
                "A",
                &format!("max by (budget, probe, replica) ({flag}) == 1"),
            ),
            table_target(
                "B",
                &format!(
                    "1000 * max by (budget, probe, replica) ({when}) and on (budget, \
                     probe, replica) (max by (budget, probe, replica) ({flag}) == 1)"
                ),
            ),
        ],
        &[
            ("budget", "Budget"),
            ("probe", "Probe"),
            ("replica", "Replica"),
            ("Value #B", when_title),
        ],
        &["Time", "Value #A"],
    )
    .tap(|panel| {
        panel["fieldConfig"]["overrides"] = json!([
            column(
                "budget",
                vec![links_property(&budget_link("${__value.raw}"))]
            ),
            column("Value #B", vec![unit("dateTimeFromNow"), no_value("never")]),
        ]);
    })
}

fn daemons_table() -> Value {
    table(
        "Daemons",
        "Each scraped lagbudget process: version, git revision, whether its last config reload \
         succeeded and when the config was last loaded successfully.",
        vec![
            table_target(
                "A",
                &format!("max by (instance, version, revision) ({BUILD_INFO})"),
            ),
            table_target("B", &format!("min by (instance) ({RELOAD_SUCCESSFUL})")),
            table_target(
                "C",
                &format!("1000 * max by (instance) ({RELOAD_SUCCESS_TIMESTAMP})"),
            ),
        ],
        &[
            ("instance", "Instance"),
            ("version", "Version"),
            ("revision", "Revision"),
            ("Value #B", "Last reload"),
            ("Value #C", "Config loaded"),
        ],
        &["Time", "Value #A"],
    )
    .tap(|panel| {
        panel["fieldConfig"]["overrides"] = json!([
            column(
                "Value #B",
                vec![
                    mappings(&[(0.0, "failed", "red"), (1.0, "ok", "green")]),
                    color_background(),
                ]
            ),
            column("Value #C", vec![unit("dateTimeFromNow")]),
        ]);
    })
}

fn duration_quantiles() -> Value {
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (kind, le) \
             (rate({PROBE_DURATION}_bucket[$__rate_interval])))"
        )
    };
    timeseries(
        "Probe run duration by kind",
        "Median and 99th percentile of probe run durations by probe kind, across every budget \
         (`lagbudget_probe_duration_seconds`). Runs that approach the probes' timeouts end as \
         `timeout` errors.",
        vec![
            range_target("A", &quantile("0.5"), "{{kind}} p50"),
            range_target("B", &quantile("0.99"), "{{kind}} p99"),
        ],
        "s",
    )
}

// ---------------------------------------------------------------------------------------------
// The per-budget drill-down.

fn budget_dashboard() -> Value {
    let mut rows = vec![
        budget_state_row(),
        lag_row(),
        backlog_and_burn_rate_row(),
        probe_health_row(),
        clock_and_reads_row(),
    ];
    rows.extend(dashboard_rows(PROBE_MATCH));
    dashboard(
        BUDGET_UID,
        BUDGET_TITLE,
        "One consistency budget: state, each probe's lag against its budget, backlog, probe \
         health, error budget and burn rate, clock skew and read-your-writes; in collapsed \
         rows, what only some probe kinds report (PostgreSQL standbys, MySQL replicas, Kafka \
         groups and partitions). Generated by `lagbudget dashboards`.",
        vec![
            datasource_variable(),
            query_variable(
                "budget",
                "Budget",
                &format!("label_values({BUDGET_INFO}, budget)"),
                false,
            ),
            query_variable(
                "probe",
                "Probe",
                &format!("label_values({PROBE_UP}{{{BUDGET_MATCH}}}, probe)"),
                true,
            ),
        ],
        vec![json!({
            "title": "Overview",
            "type": "link",
            "url": format!("/d/{OVERVIEW_UID}/{OVERVIEW_UID}"),
            "icon": "dashboard",
            "tooltip": "Every budget",
            "keepTime": true,
            "includeVars": false,
            "asDropdown": false,
            "targetBlank": false,
            "tags": [],
        })],
        rows,
    )
}

/// The budget now, above any title bar: state and since when, budget used, time within budget,
/// error budget left, objective, and owner and routing labels.
fn budget_state_row() -> Row {
    Row::top()
        .line(
            4,
            vec![
                (4, state_stat()),
                (4, state_since_stat()),
                (4, used_now_stat()),
                (4, within_budget_stat()),
                (4, error_budget_left_stat()),
                (4, objective_stat()),
            ],
        )
        .line(4, vec![(24, info_table())])
}

/// Each probe's lag with its budget, and the share of its budget it uses.
fn lag_row() -> Row {
    Row::expanded("Lag against budget").line(9, vec![(12, lag_by_probe()), (12, used_by_probe())])
}

/// How far behind each probe's view is in positions, and how fast the budget spends its error
/// budget.
fn backlog_and_burn_rate_row() -> Row {
    Row::expanded("Backlog and error budget burn rate")
        .line(8, vec![(12, backlog()), (12, burn_rate())])
}

/// Whether each probe runs, sees and advances, how long its runs take, why they fail, and
/// results it had to clamp or positions that went back.
fn probe_health_row() -> Row {
    Row::expanded("Probe health")
        .line(8, vec![(24, health_timeline())])
        .line(
            8,
            vec![(12, since_success_and_progress()), (12, run_duration())],
        )
        .line(
            8,
            vec![(12, errors_by_reason()), (12, negatives_and_regressions())],
        )
}

/// Clock skew and read-your-writes misses: product-wide figures that any probe kind may report
/// (today the replica kinds do), so they are not a kind's row.
fn clock_and_reads_row() -> Row {
    Row::expanded("Clock skew and read-your-writes")
        .line(7, vec![(12, clock_skew()), (12, read_your_writes_misses())])
}

fn state_since_stat() -> Value {
    stat(
        "In this state since",
        "When the budget's current state began (`lagbudget_state_since_timestamp_seconds`).",
        vec![instant(
            "A",
            &format!("1000 * max({STATE_SINCE}{{{BUDGET_MATCH}}})"),
            "since",
        )],
        "dateTimeFromNow",
        thresholds(&[("text", None)]),
    )
}

fn used_now_stat() -> Value {
    stat(
        "Budget used now (worst probe)",
        "The worst probe's lag ÷ budget (or backlog ÷ max backlog, the larger). \"unknown\" \
         while no probe of the budget can see.",
        vec![instant(
            "A",
            &format!("max({BUDGET_USED_RATIO}{{{BUDGET_MATCH}}})"),
            "used",
        )],
        "percentunit",
        thresholds(&[("green", None), ("orange", Some(0.8)), ("red", Some(1.0))]),
    )
    .tap(|p| p["fieldConfig"]["defaults"]["noValue"] = json!("unknown"))
}

fn within_budget_stat() -> Value {
    stat(
        "Time within budget (time range)",
        "Share of the evaluated wall time the budget was within budget (not `breach` or \
         `unknown`) over the dashboard's time range: 1 − Δover ÷ Δevaluated of \
         `lagbudget_budget_over_seconds_total` and `lagbudget_budget_evaluated_seconds_total`, \
         summed over every daemon that evaluates it. Set the time range to the objective window \
         to compare with the objective.",
        vec![instant(
            "A",
            &within_budget_expr("", BUDGET_MATCH),
            "within",
        )],
        "percentunit",
        thresholds(&[("text", None)]),
    )
    .tap(|p| p["fieldConfig"]["defaults"]["decimals"] = json!(3))
}

fn error_budget_left_stat() -> Value {
    stat(
        "Error budget left (time range)",
        "Share of the error budget left over the dashboard's time range: 1 − (Δover ÷ \
         Δevaluated) ÷ (1 − objective). 100% is untouched, 0 spent, below 0 overspent. Set the \
         time range to the objective window to read it as the objective means it. Empty when \
         the budget has no objective.",
        vec![instant(
            "A",
            &format!(
                "1 - ({}) / (1 - max({OBJECTIVE_RATIO}{{{BUDGET_MATCH}}}))",
                over_share_expr("", BUDGET_MATCH, "$__range", "increase")
            ),
            "left",
        )],
        "percentunit",
        thresholds(&[("red", None), ("orange", Some(0.0)), ("green", Some(0.25))]),
    )
    .tap(|p| p["fieldConfig"]["defaults"]["decimals"] = json!(1))
}

fn objective_stat() -> Value {
    stat(
        "Objective",
        "The budget's objective: target share of time within budget, and its window. Empty \
         when the budget has none.",
        vec![
            instant(
                "A",
                &format!("max({OBJECTIVE_RATIO}{{{BUDGET_MATCH}}})"),
                "target",
            ),
            instant(
                "B",
                &format!("max({OBJECTIVE_WINDOW}{{{BUDGET_MATCH}}})"),
                "window",
            ),
        ],
        "percentunit",
        thresholds(&[("text", None)]),
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["decimals"] = json!(3);
        p["fieldConfig"]["overrides"] = json!([{
            "matcher": { "id": "byFrameRefID", "options": "B" },
            "properties": [unit("dtdurations")],
        }]);
        p["options"]["textMode"] = json!("value_and_name");
    })
}

fn lag_by_probe() -> Value {
    timeseries(
        "Lag by probe",
        "Each probe's lag (`lagbudget_lag_seconds`), and its budget as a red dashed line \
         (`lagbudget_budget_seconds`; probes may have budgets of their own). A gap means the \
         probe cannot see: its lag is unknown, not zero.",
        vec![
            range_target(
                "A",
                &format!("max by (probe, replica) ({LAG_SECONDS}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}}",
            ),
            range_target(
                "B",
                &format!("max by (probe, replica) ({BUDGET_SECONDS}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}} budget",
            ),
        ],
        "s",
    )
    .tap(|p| {
        p["fieldConfig"]["overrides"] = json!([{
            "matcher": { "id": "byFrameRefID", "options": "B" },
            "properties": [
                { "id": "custom.lineStyle", "value": { "fill": "dash", "dash": [10, 10] } },
                { "id": "custom.lineWidth", "value": 2 },
                { "id": "custom.fillOpacity", "value": 0 },
                { "id": "color", "value": { "mode": "fixed", "fixedColor": "red" } },
            ],
        }]);
    })
}

fn used_by_probe() -> Value {
    with_threshold_line(
        timeseries(
            "Budget used by probe",
            "Each probe's lag ÷ budget, or backlog ÷ max backlog when that is larger \
             (`lagbudget_budget_used_ratio`). Above the dashed line at 100% the probe is over \
             its budget. A gap means the probe cannot see.",
            vec![range_target(
                "A",
                &format!("max by (probe, replica) ({BUDGET_USED_RATIO}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}}",
            )],
            "percentunit",
        ),
        1.0,
    )
}

fn since_success_and_progress() -> Value {
    timeseries(
        "Time since last success and last progress",
        "Seconds since each probe's last successful run \
         (`lagbudget_probe_last_success_timestamp_seconds`) and since its view's position last \
         advanced (`lagbudget_progress_timestamp_seconds`). A view that is caught up and idle \
         does not advance either; only one that is behind as well is stalled.",
        vec![
            range_target(
                "A",
                &format!(
                    "time() - max by (probe, replica) ({PROBE_LAST_SUCCESS}{{{PROBE_MATCH}}})"
                ),
                "{{probe}} {{replica}} since last success",
            ),
            range_target(
                "B",
                &format!(
                    "time() - max by (probe, replica) ({PROGRESS_TIMESTAMP}{{{PROBE_MATCH}}})"
                ),
                "{{probe}} {{replica}} since position advanced",
            ),
        ],
        "s",
    )
}

fn run_duration() -> Value {
    timeseries(
        "Probe run duration",
        "Duration of each probe's last run (`lagbudget_probe_last_duration_seconds`), \
         successful or not.",
        vec![range_target(
            "A",
            &format!("max by (probe, replica) ({PROBE_LAST_DURATION}{{{PROBE_MATCH}}})"),
            "{{probe}} {{replica}}",
        )],
        "s",
    )
}

fn errors_by_reason() -> Value {
    timeseries(
        "Probe errors by reason",
        "Failed runs per second by bounded reason (`lagbudget_probe_errors_total`): connect, \
         timeout, pool_timeout, query, decode, no_data and the others. Every reason exists at 0 \
         from config load; the legend is sorted by the largest rate.",
        vec![range_target(
            "A",
            &format!(
                "max by (probe, replica, reason) \
                 (rate({PROBE_ERRORS}{{{PROBE_MATCH}}}[$__rate_interval]))"
            ),
            "{{probe}} {{replica}} {{reason}}",
        )],
        "short",
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["custom"]["axisLabel"] = json!("failed runs/s");
        p["options"]["legend"] = table_legend();
    })
}

fn negatives_and_regressions() -> Value {
    timeseries(
        "Clamped negative results and position regressions",
        "Results below zero that were clamped to 0 (`lagbudget_negative_lag_total`: clock skew \
         or timestamps in the future) and positions that went backwards \
         (`lagbudget_position_regressions_total`: failover, rewind, a reset consumer group), \
         counted per rate interval.",
        vec![
            range_target(
                "A",
                &format!(
                    "max by (probe, replica) \
                     (increase({NEGATIVE_LAG}{{{PROBE_MATCH}}}[$__rate_interval]))"
                ),
                "{{probe}} {{replica}} negative, clamped",
            ),
            range_target(
                "B",
                &format!(
                    "max by (probe, replica) (increase({POSITION_REGRESSIONS}\
                     {{{PROBE_MATCH}}}[$__rate_interval]))"
                ),
                "{{probe}} {{replica}} position went back",
            ),
        ],
        "short",
    )
}

fn clock_skew() -> Value {
    timeseries(
        "Clock skew",
        "Source clock minus daemon clock where a probe compares them \
         (`lagbudget_clock_skew_seconds`), estimated from the midpoint of a query's round trip. \
         Lag is measured on one clock where the method allows; a large skew matters where it \
         does not, and explains clamped negative results.",
        vec![range_target(
            "A",
            &format!("max by (probe, replica) ({CLOCK_SKEW}{{{PROBE_MATCH}}})"),
            "{{probe}} {{replica}}",
        )],
        "s",
    )
}

fn read_your_writes_misses() -> Value {
    timeseries(
        "Read-your-writes misses",
        "Share of reads at each replica, made `ryw_delay` after a write at the primary, that \
         did not see the write (`lagbudget_read_your_writes_misses_total` ÷ \
         `lagbudget_read_your_writes_checks_total`): what a user who is sent to that replica \
         right after saving would meet. Replica probes with `ryw_delay`, and each view of a \
         canary with `read_your_writes` (after `after`).",
        vec![range_target(
            "A",
            &format!(
                "max by (probe, replica) \
                 (rate({READ_YOUR_WRITES_MISSES}{{{PROBE_MATCH}}}[$__rate_interval])) \
                 / max by (probe, replica) \
                 (rate({READ_YOUR_WRITES_CHECKS}{{{PROBE_MATCH}}}[$__rate_interval]))"
            ),
            "{{probe}} {{replica}}",
        )],
        "percentunit",
    )
}

/// The budget's state as a number, so the stat can colour it: the codes follow the states'
/// precedence (breach highest), and `max` over daemons shows the worst.
fn state_stat() -> Value {
    let n = BudgetState::ALL.len();
    let terms: Vec<String> = BudgetState::ALL
        .iter()
        .enumerate()
        .map(|(i, state)| {
            format!(
                r#"{} * {STATE}{{{BUDGET_MATCH}, state="{}"}}"#,
                n - 1 - i,
                state.as_str()
            )
        })
        .collect();
    let codes: Vec<(f64, &str, &str)> = BudgetState::ALL
        .iter()
        .enumerate()
        .map(|(i, state)| ((n - 1 - i) as f64, state.as_str(), state_color(*state)))
        .collect();
    stat(
        "State",
        "The budget's state (`lagbudget_state`): ok, warn (lag above `warn_at`), breach (over \
         budget for `breach_after`; sticky while blind) or unknown (a probe cannot see). With \
         two daemons scraped, the worse state is shown.",
        vec![instant(
            "A",
            &format!("max({})", terms.join(" or ")),
            "state",
        )],
        "none",
        thresholds(&[("text", None)]),
    )
    .tap(|p| {
        p["fieldConfig"]["defaults"]["mappings"] = json!([mappings_value(&codes)]);
        p["options"]["colorMode"] = json!("background");
    })
}

fn info_table() -> Value {
    table(
        "Owner and routing",
        "The budget's owner, severity, runbook and its own routing labels \
         (`lagbudget_budget_info`), the labels alerts are routed by.",
        vec![table_target(
            "A",
            &format!("max without (instance, job) ({BUDGET_INFO}{{{BUDGET_MATCH}}})"),
        )],
        &[
            ("budget", "Budget"),
            ("owner", "Owner"),
            ("severity", "Severity"),
            ("runbook_url", "Runbook"),
        ],
        &["Time", "Value"],
    )
    .tap(|p| {
        p["fieldConfig"]["overrides"] = json!([column(
            "runbook_url",
            vec![links_property(&json!([{
                "title": "Open runbook",
                "url": "${__value.raw}",
                "targetBlank": true,
            }]))]
        )]);
    })
}

/// One query for every backlog unit: each unit's series gets a constant `unit` label
/// (`label_replace` with an empty regex), so a probe's backlog shows whichever unit it
/// measures and the panel has data as soon as any probe measures one.
fn backlog() -> Value {
    let expr = BacklogUnit::ALL
        .iter()
        .map(|unit| {
            format!(
                r#"label_replace(max by (probe, replica) ({BACKLOG_PREFIX}{}{{{PROBE_MATCH}}}), "unit", "{}", "", "")"#,
                unit.as_str(),
                unit.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(" or ");
    timeseries(
        "Backlog by probe",
        "Positions each probe's view is behind, in the probe's unit \
         (`lagbudget_backlog_messages`, `_bytes`, `_events`, `_rows`; the unit is in the \
         legend). Only probes that measure a backlog have one; a gap means the probe cannot \
         see.",
        vec![range_target("A", &expr, "{{probe}} {{replica}} ({{unit}})")],
        "short",
    )
    .tap(|p| {
        // Grafana matches the display name, which ends in the unit.
        let bytes = format!(".*\\({}\\)$", BacklogUnit::Bytes.as_str());
        p["fieldConfig"]["overrides"] = json!([{
            "matcher": { "id": "byRegexp", "options": bytes },
            "properties": [unit("bytes")],
        }]);
    })
}

fn burn_rate() -> Value {
    let targets = BURN_WINDOWS
        .iter()
        .enumerate()
        .map(|(i, window)| {
            range_target(
                &ref_id(i),
                &format!(
                    "({}) / (1 - max({OBJECTIVE_RATIO}{{{BUDGET_MATCH}}}))",
                    over_share_expr("", BUDGET_MATCH, window, "rate")
                ),
                window,
            )
        })
        .collect();
    with_threshold_line(
        timeseries(
            "Error budget burn rate",
            "How fast the budget spends its error budget over the alert rules' windows (fast \
             pair 5m/1h, slow pair 30m/6h): (Δover ÷ Δevaluated) ÷ (1 − objective), from \
             the time counters. At 1 (dashed line) the error budget lasts exactly the objective \
             window; the burn-rate alert fires when both windows of a pair exceed a factor \
             derived from the window. Empty when the budget has no objective.",
            targets,
            "none",
        ),
        1.0,
    )
}

fn health_timeline() -> Value {
    state_timeline(
        "Probe health",
        "For each probe: whether its last run succeeded (`lagbudget_probe_up`), whether it can \
         see (`lagbudget_probe_stale`: no success for 3 intervals), and whether its feed is \
         stalled (`lagbudget_stalled`: behind and not advancing for the stall limit).",
        vec![
            range_target(
                "A",
                &format!("max by (probe, replica) ({PROBE_UP}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}} last run",
            ),
            range_target(
                "B",
                &format!("max by (probe, replica) ({PROBE_STALE}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}} freshness",
            ),
            range_target(
                "C",
                &format!("max by (probe, replica) ({STALLED}{{{PROBE_MATCH}}})"),
                "{{probe}} {{replica}} progress",
            ),
        ],
        mappings(&[(0.0, "failed", "red"), (1.0, "ok", "green")]),
    )
    .tap(|p| {
        p["fieldConfig"]["overrides"] = json!([
            {
                "matcher": { "id": "byFrameRefID", "options": "B" },
                "properties": [mappings(&[
                    (0.0, "fresh", "green"),
                    (1.0, "stale: cannot see", "purple"),
                ])],
            },
            {
                "matcher": { "id": "byFrameRefID", "options": "C" },
                "properties": [mappings(&[
                    (0.0, "not stalled", "green"),
                    (1.0, "stalled", "orange"),
                ])],
            },
        ]);
    })
}

/// Share of evaluated time the budget was over (breach or unknown) in `window`: the time
/// counters summed over every daemon that evaluates the budget, so the ratio stays a ratio of
/// totals. Empty (not NaN) when nothing was evaluated.
fn over_share_expr(by: &str, matchers: &str, window: &str, function: &str) -> String {
    let grouping = if by.is_empty() {
        String::new()
    } else {
        format!(" by ({by})")
    };
    let selector = |metric: &str| {
        if matchers.is_empty() {
            metric.to_owned()
        } else {
            format!("{metric}{{{matchers}}}")
        }
    };
    format!(
        "sum{grouping} ({function}({}[{window}])) / (sum{grouping} ({function}({}[{window}])) > 0)",
        selector(OVER_SECONDS),
        selector(EVALUATED_SECONDS),
    )
}

/// Share of evaluated time within budget over the dashboard's time range.
fn within_budget_expr(by: &str, matchers: &str) -> String {
    format!(
        "1 - ({})",
        over_share_expr(by, matchers, "$__range", "increase")
    )
}

fn state_color(state: BudgetState) -> &'static str {
    match state {
        BudgetState::Breach => "red",
        BudgetState::Unknown => "purple",
        BudgetState::Warn => "orange",
        BudgetState::Ok => "green",
    }
}

// ---------------------------------------------------------------------------------------------
// The frame of both dashboards, state colours and links to the drill-down.

fn dashboard(
    uid: &str,
    title: &str,
    description: &str,
    variables: Vec<Value>,
    links: Vec<Value>,
    rows: Vec<Row>,
) -> Value {
    json!({
        "annotations": { "list": [{
            "builtIn": 1,
            "datasource": { "type": "grafana", "uid": "-- Grafana --" },
            "enable": true,
            "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }] },
        "description": description,
        "editable": true,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": null,
        "links": links,
        "panels": layout(rows),
        "refresh": REFRESH,
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG],
        "templating": { "list": variables },
        "time": { "from": "now-6h", "to": "now" },
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    })
}

/// Colours the `state` label column of a table by the state's name.
fn state_mappings() -> Value {
    let mut options = Map::new();
    for (i, state) in BudgetState::ALL.iter().enumerate() {
        options.insert(
            state.as_str().to_owned(),
            json!({ "color": state_color(*state), "index": i, "text": state.as_str() }),
        );
    }
    json!({ "id": "mappings", "value": [{ "type": "value", "options": options }] })
}

/// A data link to the drill-down of the budget named by `budget` (a Grafana data-link
/// variable), keeping the time range and data source.
fn budget_link(budget: &str) -> Value {
    json!([{
        "title": "Open budget",
        "url": format!(
            "/d/{BUDGET_UID}/{BUDGET_UID}?var-budget={budget}&${{datasource:queryparam}}&${{__url_time_range}}"
        ),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(render(), render());
        let names: Vec<_> = render().iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "lagbudget-overview.json",
                "lagbudget-budget.json",
                "provisioning.yaml"
            ]
        );
    }

    #[test]
    fn titles_slug_to_the_uids() {
        for (title, uid) in [(OVERVIEW_TITLE, OVERVIEW_UID), (BUDGET_TITLE, BUDGET_UID)] {
            let slug: Vec<String> = title
                .to_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            assert_eq!(slug.join("-"), uid);
        }
    }

    #[test]
    fn every_query_has_balanced_brackets_and_no_left_over_variable() {
        let queries = panel_queries("orders", "5m");
        assert!(queries.len() > 30, "{}", queries.len());
        for (uid, title, expr) in queries {
            let mut stack = Vec::new();
            let mut in_string = false;
            for c in expr.chars() {
                match c {
                    '"' => in_string = !in_string,
                    '(' | '{' | '[' if !in_string => stack.push(c),
                    ')' | '}' | ']' if !in_string => {
                        let open = stack.pop();
                        let expected = match c {
                            ')' => '(',
                            '}' => '{',
                            _ => '[',
                        };
                        assert_eq!(open, Some(expected), "{uid} / {title}: {expr}");
                    }
                    _ => {}
                }
            }
            assert!(stack.is_empty() && !in_string, "{uid} / {title}: {expr}");
            assert!(!expr.contains('$'), "{uid} / {title}: {expr}");
        }
    }

    #[test]
    fn panels_do_not_overlap_and_fit_the_grid() {
        for dashboard in [overview_dashboard(), budget_dashboard()] {
            let mut cells = std::collections::HashSet::new();
            let mut all = Vec::new();
            for panel in dashboard["panels"].as_array().into_iter().flatten() {
                all.push(panel);
                all.extend(panel["panels"].as_array().into_iter().flatten());
            }
            for panel in all {
                let g = &panel["gridPos"];
                let (x, y, w, h) = (
                    g["x"].as_u64().unwrap_or(99),
                    g["y"].as_u64().unwrap_or(0),
                    g["w"].as_u64().unwrap_or(0),
                    g["h"].as_u64().unwrap_or(0),
                );
                assert!(w > 0 && h > 0 && x + w <= 24, "{}", panel["title"]);
                for cx in x..x + w {
                    for cy in y..y + h {
                        assert!(cells.insert((cx, cy)), "{} overlaps", panel["title"]);
                    }
                }
            }
        }
    }

    #[test]
    fn kind_rows_are_collapsed_and_every_other_row_is_open() {
        let kind_rows = dashboard_rows(PROBE_MATCH);
        assert!(kind_rows.len() >= 3, "{}", kind_rows.len());
        let mut kind_titles = Vec::new();
        for row in &kind_rows {
            let title = row.title().expect("a kind's row has a title bar");
            assert!(row.is_collapsed(), "{title} is open");
            kind_titles.push(title.to_owned());
        }
        let mut seen = Vec::new();
        for dashboard in [overview_dashboard(), budget_dashboard()] {
            for row in dashboard["panels"].as_array().into_iter().flatten() {
                if row["type"] != "row" {
                    continue;
                }
                let title = row["title"].as_str().unwrap_or_default().to_owned();
                let is_kind = kind_titles.contains(&title);
                assert_eq!(row["collapsed"], is_kind, "{title}");
                let inside = row["panels"].as_array().map_or(0, Vec::len);
                assert_eq!(inside > 0, is_kind, "{title}: {inside} panels inside");
                if is_kind {
                    seen.push(title);
                }
            }
        }
        assert_eq!(
            seen, kind_titles,
            "every kind row, in order, in the drill-down"
        );
    }

    #[test]
    fn panel_queries_include_the_panels_of_collapsed_rows() {
        let titles: Vec<String> = panel_queries("b", "1m")
            .into_iter()
            .map(|(_, title, _)| title)
            .collect();
        let budget = budget_dashboard();
        let mut inside = 0;
        for row in budget["panels"].as_array().into_iter().flatten() {
            for panel in row["panels"].as_array().into_iter().flatten() {
                inside += 1;
                let title = panel["title"].as_str().unwrap_or_default();
                assert!(titles.iter().any(|t| t == title), "{title}");
            }
        }
        assert!(inside >= 8, "{inside}");
    }

    #[test]
    fn backlog_panel_covers_every_unit_in_one_query() {
        let exprs: Vec<String> = panel_queries("b", "1m")
            .into_iter()
            .filter(|(_, title, _)| title == "Backlog by probe")
            .map(|(_, _, expr)| expr)
            .collect();
        assert_eq!(exprs.len(), 1);
        for unit in BacklogUnit::ALL {
            let name = format!("{BACKLOG_PREFIX}{}{{", unit.as_str());
            assert!(exprs[0].contains(&name), "{name}");
            let label = format!(r#""unit", "{}""#, unit.as_str());
            assert!(exprs[0].contains(&label), "{label}");
        }
    }
}
