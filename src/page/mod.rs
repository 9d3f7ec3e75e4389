//! The status page: the overview at `/` and one page per budget at `/budgets/{name}`, rendered
//! on the server from one `Snapshot` (the same evaluation `/metrics` and the API show) and the
//! history the state keeps (`crate::history`). Plain HTML with inline SVG charts (`svg`): it
//! works without JavaScript; a small optional script re-fetches the page and swaps its content
//! so that refreshing keeps the reader's scroll position (without scripts a `<noscript>` meta
//! refresh reloads the page instead).
//!
//! The honesty rules of the API hold here too: unknown is shown as unknown, never 0; a probe
//! that only counts shows its backlog; a run that failed is a gap in a chart, not a zero.
//! Every user-provided string (names, descriptions, owners, error messages) is escaped.

pub mod svg;

use std::fmt::Write as _;

use crate::evaluate::{BudgetState, used_ratio};
use crate::history::{DAY_SECONDS, Point, SUMMARY_BUCKET_SECONDS};
use crate::model::Probe;
use crate::sample::{Backlog, BacklogUnit, Sample};
use crate::state::{BudgetSnapshot, ProbeEntry, Snapshot};
use crate::status::{BacklogStatus, BudgetStatus, ProbeStatus, rfc3339};
use svg::{Chart, Line};

/// Seconds between refreshes of an open page.
pub const REFRESH_SECONDS: u32 = 10;

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "unknown".to_owned(), human_duration)
}

/// A probe's lag on the status page; a fresh probe that only counts shows its backlog, never
/// "unknown" (it is not) and never 0 (it did not measure one).
pub fn probe_lag(lag: Option<f64>, backlog: Option<&BacklogStatus>) -> String {
    match (lag, backlog) {
        (Some(lag), _) => human_duration(lag),
        (None, Some(backlog)) => format!("backlog {} {}", backlog.value, backlog.unit),
        (None, None) => "unknown".to_owned(),
    }
}

/// `12.3 s` under a minute; `5 m 20 s`, `2 h 5 m` or `3 d 4 h` above, to read at a glance.
pub fn human_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let whole = seconds.round() as u64;
    let (days, hours, minutes, secs) = (
        whole / 86_400,
        whole % 86_400 / 3_600,
        whole % 3_600 / 60,
        whole % 60,
    );
    match (days, hours, minutes) {
        (0, 0, _) if secs == 0 => format!("{minutes} m"),
        (0, 0, _) => format!("{minutes} m {secs} s"),
        (0, _, 0) => format!("{hours} h"),
        (0, _, _) => format!("{hours} h {minutes} m"),
        (_, 0, _) => format!("{days} d"),
        _ => format!("{days} d {hours} h"),
    }
}

fn percent(ratio: f64, decimals: usize) -> String {
    format!("{:.*}%", decimals, ratio * 100.0)
}

/// A state as text with a shape beside it: never colour alone.
fn badge(state: BudgetState) -> String {
    let shape = match state {
        BudgetState::Ok => "●",
        BudgetState::Warn => "▲",
        BudgetState::Unknown => "◆",
        BudgetState::Breach => "■",
    };
    let state = state.as_str();
    format!(
        "<span class=\"badge {state}\"><span aria-hidden=\"true\">{shape}</span> \
         <b>{state}</b></span>"
    )
}

/// The page around `main`: theme, layout, and the refresh that keeps the scroll position.
fn layout(title: &str, main: &str, generated: f64) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <header><a class=\"home\" href=\"/\">lagbudget</a></header>\
         <main id=\"content\" data-generated=\"{}\">{main}</main>\
         <footer>Rendered {}; refreshes every {REFRESH_SECONDS} s. \
         <a href=\"/api/v1/budgets\">JSON API</a> · <a href=\"/metrics\">metrics</a></footer>\
         <script>{SCRIPT}</script></body></html>\n",
        escape(title),
        rfc3339(generated),
        rfc3339(generated),
    )
}

/// Re-fetches the page and swaps `#content`, so a refresh keeps the scroll position; on any
/// failure it leaves the page as it is and tries again at the next tick.
const SCRIPT: &str = "setInterval(function(){fetch(location.href,{cache:'no-store'})\
.then(function(r){return r.ok?r.text():null}).then(function(t){if(!t)return;\
var d=new DOMParser().parseFromString(t,'text/html');var n=d.getElementById('content');\
var o=document.getElementById('content');if(n&&o){o.replaceWith(n);}}).catch(function(){});},\
10000);";

const STYLE: &str = "\
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;\
--ok:#1a7f37;--warn:#9a6700;--breach:#cf222e;--unknown:#59636e;--series:#0969da;--band:#0969da33}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;\
--line:#3d444d;--card:#151b23;--ok:#3fb950;--warn:#d29922;--breach:#f85149;--unknown:#9198a1;\
--series:#4493f8;--band:#4493f833}}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.45 system-ui,sans-serif}\
header,main,footer{max-width:72rem;margin:0 auto;padding:.75rem 1rem}\
footer{color:var(--muted);font-size:.85rem}a{color:var(--series)}\
.home{font-weight:700;font-size:1.2rem;text-decoration:none}\
h1,h2,h3{margin:.2rem 0;overflow-wrap:anywhere}h2 a{text-decoration:none}\
.budgets{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,22rem),1fr));gap:1rem}\
.card{background:var(--card);border:1px solid var(--line);border-radius:.5rem;padding:.75rem;\
min-width:0;overflow-wrap:anywhere}\
.card.breach{border-left:.4rem solid var(--breach)}.card.unknown{border-left:.4rem dashed var(--unknown)}\
.card.warn{border-left:.4rem double var(--warn)}.card.ok{border-left:.4rem solid var(--ok)}\
.badge{white-space:nowrap}.badge.ok{color:var(--ok)}.badge.warn{color:var(--warn)}\
.badge.breach{color:var(--breach)}.badge.unknown{color:var(--unknown)}\
.muted,small{color:var(--muted)}p{margin:.3rem 0}\
svg{display:block;width:100%;margin:.3rem 0}svg.chart{height:5rem}svg.chart.big{height:9rem}\
svg.strip{height:1.5rem}\
.plot{fill:none;stroke:var(--line)}\
.budget-line{stroke:var(--breach);stroke-width:1.5;stroke-dasharray:6 4;vector-effect:non-scaling-stroke}\
.warn-line{stroke:var(--warn);stroke-width:1.5;stroke-dasharray:1 3;vector-effect:non-scaling-stroke}\
.series{fill:none;stroke:var(--series);stroke-width:2;vector-effect:non-scaling-stroke}\
circle.series{fill:var(--series)}\
.s1{stroke-dasharray:6 3}.s2{stroke-dasharray:2 2}.s3{stroke-dasharray:8 2 2 2}\
.band{fill:var(--band)}\
.st-ok{fill:var(--ok)}.st-warn{fill:var(--warn)}.st-breach{fill:var(--breach)}\
.st-unknown{fill:var(--unknown)}.st-none{fill:var(--line)}\
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.8rem}\
.table{overflow-x:auto}table{border-collapse:collapse;width:100%}\
td,th{padding:.3rem .5rem;text-align:left;border-bottom:1px solid var(--line);vertical-align:top;\
overflow-wrap:anywhere}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.4rem 0}\
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}\
.probe{border-top:1px solid var(--line);padding-top:.6rem;margin-top:.6rem}";

/// Where a chart of the `span` seconds before `now` starts: not before the budget was first
/// evaluated, so that a daemon (or the demo) that started a minute ago draws that minute across
/// the whole chart instead of a sliver at its right edge.
fn chart_start(budget_started: Option<f64>, now: f64, span: f64) -> f64 {
    let start = now - span;
    budget_started
        .filter(|&started| started > start)
        .map_or(start, |started| started.min(now - 1.0))
}

/// "last hour" for the default window, else "last 30 m".
fn window_words(window: f64) -> String {
    if (window - 3600.0).abs() < 0.5 {
        "last hour".to_owned()
    } else {
        format!("last {}", human_duration(window))
    }
}

/// A run's share of `probe`'s budget, by the evaluation's own rule (`used_ratio`); `None` for
/// a run that measured nothing.
fn point_ratio(probe: &Probe, point: &Point) -> Option<f64> {
    if point.lag().is_none() && point.backlog().is_none() {
        return None;
    }
    let sample = Sample {
        lag_seconds: point.lag(),
        // The unit does not change the ratio.
        backlog: point.backlog().map(|value| Backlog {
            unit: BacklogUnit::Rows,
            value,
        }),
        ..Sample::default()
    };
    Some(used_ratio(probe, &sample))
}

/// The lag (or, for a probe budgeted by backlog only, the backlog) a chart of `probe` draws,
/// with the threshold it is drawn against and what the values are.
fn measure(probe: &Probe) -> Measure {
    match (probe.max_lag, probe.max_backlog) {
        (None, Some(max)) => Measure {
            value: Point::backlog,
            threshold: Some(max as f64),
            what: "backlog",
        },
        (max_lag, _) => Measure {
            value: Point::lag,
            threshold: max_lag.map(|d| d.as_secs_f64()),
            what: "lag",
        },
    }
}

/// What a probe's chart draws (see `measure`).
struct Measure {
    value: fn(&Point) -> Option<f64>,
    threshold: Option<f64>,
    what: &'static str,
}

/// The value of `measure` as text: seconds for lag, a count for backlog.
fn measured(what: &str, value: f64) -> String {
    if what == "lag" {
        human_duration(value)
    } else {
        format!("{value}")
    }
}

/// How many points the overview's sparkline has at most.
const SPARKLINE_COLUMNS: usize = 60;

/// One column of a sparkline: its runs, the latest run's time, the largest share measured
/// (`None` if every run of the column failed: a gap).
#[derive(Debug, Clone, Copy, Default)]
struct Column {
    runs: usize,
    at: f64,
    largest: Option<f64>,
}

/// The last-hour sparkline of a budget: the largest share of its budget any probe used, with
/// the budget at 100% and the warn level.
fn sparkline(budget: &BudgetSnapshot, now: f64) -> String {
    let window = budget.probes.first().map_or(3600.0, |p| p.series.window());
    let from = chart_start(budget.timeline.started_at(), now, window);
    // One line for the budget: per column the largest share any probe used, so that the
    // overview of thousands of probes stays small (a few dozen points a budget).
    let mut columns: Vec<Column> = vec![Column::default(); SPARKLINE_COLUMNS];
    let width = (now - from).max(1e-9) / SPARKLINE_COLUMNS as f64;
    let (mut runs, mut failed, mut worst) = (0, 0, None::<f64>);
    for probe in budget.probes.iter() {
        for point in probe.series.recent(now).filter(|p| p.at >= from) {
            runs += 1;
            failed += usize::from(point.failed);
            let index = (((point.at - from) / width) as usize).min(SPARKLINE_COLUMNS - 1);
            let column = &mut columns[index];
            column.runs += 1;
            column.at = column.at.max(point.at);
            if let Some(ratio) = point_ratio(&probe.spec, point) {
                column.largest = Some(column.largest.map_or(ratio, |l: f64| l.max(ratio)));
                worst = Some(worst.map_or(ratio, |w: f64| w.max(ratio)));
            }
        }
    }
    let lines = vec![Line {
        points: columns
            .iter()
            .filter(|c| c.runs > 0)
            .map(|c| (c.at, c.largest))
            .collect(),
    }];
    let words = window_words(now - from);
    let title = format!("Lag of {} against its budget, {words}", budget.spec.name);
    let desc = match worst {
        None => format!(
            "Nothing measured in the {words}: {runs} runs, {failed} failed. Drawn as a share \
             of the budget, with the budget at 100% (dashed) and warn at {} (dotted).",
            percent(budget.spec.warn_at, 0)
        ),
        Some(worst) => format!(
            "Largest share of the budget used in the {words}: {}; {runs} runs, {failed} \
             failed (gaps). The budget is the dashed line at 100%, warn the dotted line at {}.",
            percent(worst, 0),
            percent(budget.spec.warn_at, 0)
        ),
    };
    let chart = Chart {
        title: &title,
        desc: &desc,
        from,
        to: now,
        height: 60.0,
        lines,
        bands: Vec::new(),
        threshold: Some(1.0),
        warn: (budget.spec.warn_at < 1.0).then_some(budget.spec.warn_at),
    };
    format!(
        "{}<div class=\"axis\"><span>−{}</span><span>lag ÷ budget</span>\
         <span>now</span></div>",
        chart.render(),
        human_duration(now - from)
    )
}

/// The 24-hour strip of a budget's states.
fn day_strip(budget: &BudgetSnapshot, now: f64) -> String {
    let from = chart_start(budget.timeline.started_at(), now, DAY_SECONDS);
    let stretches = budget.timeline.strip(now, budget.tracker.state);
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for stretch in &stretches {
        let name = stretch.state.map_or("not measured", BudgetState::as_str);
        match totals.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += stretch.to - stretch.from,
            None => totals.push((name, stretch.to - stretch.from)),
        }
    }
    let desc = totals
        .iter()
        .map(|(name, total)| format!("{name} {}", human_duration(*total)))
        .collect::<Vec<_>>()
        .join(", ");
    let title = format!(
        "States of {} over the last {}",
        budget.spec.name,
        human_duration(now - from)
    );
    format!(
        "{}<div class=\"axis\"><span>−{}</span><span>state: taller is worse</span>\
         <span>now</span></div>",
        svg::strip(&stretches, from, now, &title, &desc),
        human_duration(now - from)
    )
}

/// Time within budget and error budget left over the objective window.
fn objective(budget: &BudgetSnapshot, now: crate::clock::Now) -> String {
    let Some(objective) = budget.spec.objective else {
        return "<p class=\"objective muted\">No objective set.</p>".to_owned();
    };
    let window = objective.window.as_secs_f64();
    let aim = format!(
        "objective {} over {}",
        percent(objective.target, 2),
        human_duration(window)
    );
    match budget
        .timeline
        .objective(&budget.tracker, now, window, objective.target)
    {
        None => format!("<p class=\"objective\">Nothing evaluated yet ({aim}).</p>"),
        Some(figures) => {
            let covered = if figures.covered_seconds + 1.0 < window {
                format!(
                    " (the {} this daemon has evaluated so far)",
                    human_duration(figures.covered_seconds)
                )
            } else {
                String::new()
            };
            format!(
                "<p class=\"objective\">Within budget <b>{}</b> of the objective window{covered}; \
                 {aim}. Error budget left: <b>{}</b>{}.</p>",
                percent(figures.within_ratio, 3),
                percent(figures.error_budget_left, 1),
                if figures.error_budget_left < 0.0 {
                    " (overspent)"
                } else {
                    ""
                },
            )
        }
    }
}

/// A budget's lag against its limit: unknown while any probe is stale (with the last seen),
/// the backlog for probes that only count.
fn budget_lag(status: &BudgetStatus) -> String {
    let lag = match (status.lag_seconds, status.last_lag_seconds) {
        (None, Some(last)) => format!(
            "unknown <small>(last seen {})</small>",
            human_duration(last)
        ),
        // Fresh probes that only count (a queue without message times): no lag to show,
        // and "unknown" would be false.
        (None, None)
            if !status.probes.is_empty() && status.probes.iter().all(|p| p.backlog.is_some()) =>
        {
            "backlog only".to_owned()
        }
        (lag, _) => seconds(lag),
    };
    let limit = match (status.max_lag_seconds, status.max_backlog) {
        (None, Some(max)) => format!("max backlog {max}"),
        (max_lag, _) => seconds(max_lag),
    };
    format!("{lag} / {limit}")
}

fn freshness(p: &ProbeStatus) -> &'static str {
    match (p.stale, p.up, p.stalled) {
        (true, _, _) => "stale",
        (false, true, true) => "fresh, stalled",
        (false, true, false) => "fresh",
        (false, false, _) => "down",
    }
}

fn probe_name(p: &ProbeStatus) -> String {
    match &p.replica {
        Some(replica) => format!("{} → {}", escape(&p.name), escape(replica)),
        None => escape(&p.name),
    }
}

fn state_since(status: &BudgetStatus, in_state: f64) -> String {
    let since = escape(&status.since);
    format!(
        "{} since <time datetime=\"{since}\">{since}</time> <small>(for {})</small>",
        badge(status.state),
        human_duration(in_state.max(0.0)),
    )
}

/// The overview: every budget with its state, owner, sparkline, strip and objective.
pub fn overview(snapshot: &Snapshot) -> String {
    let now = snapshot.now;
    let mut main = String::from("<h1>Consistency budgets</h1>");
    if snapshot.budgets.is_empty() {
        main.push_str("<p>No budgets are configured.</p>");
    }
    let counts: Vec<String> = BudgetState::ALL
        .iter()
        .map(|state| {
            let n = snapshot
                .budgets
                .iter()
                .filter(|b| b.tracker.state == *state)
                .count();
            format!("{n} {}", state.as_str())
        })
        .collect();
    let _ = write!(
        main,
        "<p class=\"muted\">{}</p><div class=\"budgets\">",
        counts.join(" · ")
    );
    for budget in &snapshot.budgets {
        let status = BudgetStatus::new(budget);
        let name = escape(&status.name);
        let _ = write!(
            main,
            "<section class=\"card {}\" data-budget=\"{name}\"><h2><a href=\"/budgets/{}\">{name}</a></h2>\
             <p class=\"state\">{}</p>",
            status.state.as_str(),
            escape(&url_segment(&status.name)),
            state_since(&status, now.since(budget.tracker.since)),
        );
        if let Some(owner) = &status.owner {
            let _ = write!(main, "<p>Owner: {}</p>", escape(owner));
        }
        if let Some(description) = &status.description {
            let _ = write!(main, "<p class=\"muted\">{}</p>", escape(description));
        }
        let _ = write!(
            main,
            "<p class=\"lag\">Lag {}</p>{}{}{}<ul class=\"probes\">",
            budget_lag(&status),
            sparkline(budget, now.unix),
            day_strip(budget, now.unix),
            objective(budget, now),
        );
        for p in &status.probes {
            let _ = write!(
                main,
                "<li>{}: {} ({})",
                probe_name(p),
                probe_lag(p.lag_seconds, p.backlog.as_ref()),
                freshness(p)
            );
            if let Some(e) = &p.error {
                let _ = write!(
                    main,
                    " <small>{}: {}</small>",
                    e.reason.as_str(),
                    escape(&e.message)
                );
            }
            main.push_str("</li>");
        }
        main.push_str("</ul></section>");
    }
    main.push_str("</div>");
    layout("lagbudget", &main, now.unix)
}

/// A budget name as one URL path segment: percent-encodes what is not unreserved.
fn url_segment(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The chart of one probe (every replica of it as its own line) over the history window.
fn probe_chart(entries: &[&ProbeEntry], started: Option<f64>, now: f64, warn_at: f64) -> String {
    let spec = &entries[0].spec;
    let Measure {
        value,
        threshold,
        what,
    } = measure(spec);
    let from = chart_start(started, now, entries[0].series.window());
    let words = window_words(now - from);
    let mut lines = Vec::new();
    let mut summary = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let points: Vec<(f64, Option<f64>)> =
            entry.series.recent(now).map(|p| (p.at, value(p))).collect();
        let values: Vec<f64> = points.iter().filter_map(|p| p.1).collect();
        let failed = points.len() - values.len();
        let who = entry.spec.replica.as_deref().map_or_else(String::new, |r| {
            format!("replica {r} ({}): ", dash_name(index))
        });
        summary.push(match values.iter().copied().reduce(f64::max) {
            Some(max) => format!(
                "{who}{} runs, largest {what} {}, {failed} without a value",
                points.len(),
                measured(what, max)
            ),
            None => format!("{who}{} runs, none measured a {what}", points.len()),
        });
        lines.push(Line { points });
    }
    let limit = threshold.map_or_else(
        || "no limit".to_owned(),
        |t| format!("budget {} (dashed line)", measured(what, t)),
    );
    let title = format!("{} of probe {}, {words}", capitalise(what), spec.name);
    let desc = format!("{}; {limit}.", summary.join("; "));
    let chart = Chart {
        title: &title,
        desc: &desc,
        from,
        to: now,
        height: 120.0,
        lines,
        bands: Vec::new(),
        threshold,
        warn: threshold.filter(|_| warn_at < 1.0).map(|t| t * warn_at),
    };
    let rendered = chart
        .render()
        .replacen("class=\"chart\"", "class=\"chart big\"", 1);
    format!(
        "{rendered}<div class=\"axis\"><span>−{}</span><span>{what}, top {}</span>\
         <span>now</span></div>",
        human_duration(now - from),
        measured(what, chart.y_max()),
    )
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

/// How the `index`th line of a chart is drawn, for legends.
fn dash_name(index: usize) -> &'static str {
    ["solid", "dashed", "dotted", "dash-dot"][index % 4]
}

/// The 24-hour min/max chart of one probe from the summary buckets.
fn probe_day_chart(entries: &[&ProbeEntry], started: Option<f64>, now: f64) -> String {
    let from = chart_start(started, now, DAY_SECONDS);
    let spec = &entries[0].spec;
    let Measure {
        threshold, what, ..
    } = measure(spec);
    let mut bands = Vec::new();
    for entry in entries {
        for bucket in entry.series.day(now) {
            let range = if what == "lag" {
                bucket.lag_range()
            } else {
                bucket.max_backlog().map(|v| (v, v))
            };
            if let Some((min, max)) = range {
                bands.push((
                    bucket.start,
                    bucket.start + SUMMARY_BUCKET_SECONDS,
                    min,
                    max,
                ));
            }
        }
    }
    let largest = bands.iter().map(|b| b.3).reduce(f64::max);
    let title = format!(
        "{} of probe {}, last {}",
        capitalise(what),
        spec.name,
        human_duration(now - from)
    );
    let desc = match largest {
        Some(max) => format!(
            "Smallest to largest {what} per 5 minutes; largest {}{}.",
            measured(what, max),
            threshold.map_or_else(String::new, |t| format!(
                "; budget {} (dashed line)",
                measured(what, t)
            ))
        ),
        None => format!("No {what} measured in the last 24 hours."),
    };
    let chart = Chart {
        title: &title,
        desc: &desc,
        from,
        to: now,
        height: 60.0,
        lines: Vec::new(),
        bands,
        threshold,
        warn: None,
    };
    format!(
        "{}<div class=\"axis\"><span>−{}</span><span>{what} per 5 min, min to max</span>\
         <span>now</span></div>",
        chart.render(),
        human_duration(now - from)
    )
}

/// The page of the one budget in `snapshot`, or `None` if it has none.
pub fn budget(snapshot: &Snapshot) -> Option<String> {
    let budget = snapshot.budgets.first()?;
    let now = snapshot.now;
    let status = BudgetStatus::new(budget);
    let name = escape(&status.name);
    let mut main = format!(
        "<h1>{name}</h1><p class=\"state\">{}</p>",
        state_since(&status, now.since(budget.tracker.since))
    );
    if let Some(owner) = &status.owner {
        let _ = write!(main, "<p>Owner: {}</p>", escape(owner));
    }
    if let Some(description) = &status.description {
        let _ = write!(main, "<p class=\"muted\">{}</p>", escape(description));
    }
    if let Some(runbook) = &status.runbook_url {
        let _ = write!(main, "<p><a href=\"{0}\">Runbook</a></p>", escape(runbook));
    }
    let _ = write!(
        main,
        "<p class=\"lag\">Lag {}</p>{}{}<h2>Probes</h2>",
        budget_lag(&status),
        day_strip(budget, now.unix),
        objective(budget, now),
    );

    let started = budget.timeline.started_at();
    // Probes in config order, the replicas of one probe together.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, entry) in budget.probes.iter().enumerate() {
        match groups.iter_mut().find(|(name, _)| *name == entry.spec.name) {
            Some((_, members)) => members.push(index),
            None => groups.push((entry.spec.name.clone(), vec![index])),
        }
    }
    for (probe, members) in &groups {
        let entries: Vec<&ProbeEntry> = members.iter().map(|&i| &budget.probes[i]).collect();
        let first = &status.probes[members[0]];
        let _ = write!(
            main,
            "<section class=\"probe\" data-probe=\"{}\"><h3>{}</h3>\
             <p class=\"muted\">{} on {}</p>{}{}",
            escape(probe),
            escape(probe),
            first.kind,
            escape(&first.source),
            probe_chart(&entries, started, now.unix, budget.spec.warn_at),
            probe_day_chart(&entries, started, now.unix),
        );
        for (index, &member) in members.iter().enumerate() {
            let p = &status.probes[member];
            main.push_str("<dl>");
            if let Some(replica) = &p.replica {
                let _ = write!(
                    main,
                    "<dt>Replica</dt><dd>{} <small>({} line)</small></dd>",
                    escape(replica),
                    dash_name(index)
                );
            }
            let backlog = p.backlog.as_ref().map_or_else(
                || "unknown".to_owned(),
                |b| format!("{} {}", b.value, b.unit),
            );
            let _ = write!(
                main,
                "<dt>Lag</dt><dd>{}</dd><dt>Backlog</dt><dd>{backlog}</dd>\
                 <dt>Freshness</dt><dd>{}</dd><dt>Stalled</dt><dd>{}</dd>\
                 <dt>Last success</dt><dd>{}</dd><dt>Runs</dt><dd>{}</dd>",
                match (p.lag_seconds, p.last_lag_seconds) {
                    (Some(lag), _) => human_duration(lag),
                    (None, Some(last)) if p.backlog.is_none() => format!(
                        "unknown <small>(last seen {})</small>",
                        human_duration(last)
                    ),
                    (None, _) => probe_lag(None, p.backlog.as_ref()),
                },
                freshness(p),
                if p.stalled { "yes" } else { "no" },
                p.last_success.as_deref().map_or("never".to_owned(), escape),
                p.runs,
            );
            match &p.error {
                Some(e) => {
                    let _ = write!(
                        main,
                        "<dt>Last error</dt><dd class=\"error\"><b>{}</b>: {}</dd>",
                        e.reason.as_str(),
                        escape(&e.message)
                    );
                }
                None => main.push_str("<dt>Last error</dt><dd>none</dd>"),
            }
            main.push_str("</dl>");
        }
        main.push_str("</section>");
    }

    main.push_str("<h2>State changes, last 24 hours</h2>");
    let changes: Vec<_> = budget.timeline.changes(now.unix).collect();
    if changes.is_empty() {
        main.push_str("<p class=\"transitions-empty\">No state change in the last 24 hours.</p>");
    } else {
        main.push_str(
            "<div class=\"table\"><table class=\"transitions\"><thead><tr><th>time (UTC)</th>\
             <th>from</th><th>to</th></tr></thead><tbody>",
        );
        for change in changes {
            let _ = write!(
                main,
                "<tr><td><time>{}</time></td><td>{}</td><td>{}</td></tr>",
                rfc3339(change.at),
                badge(change.from),
                badge(change.to)
            );
        }
        main.push_str("</tbody></table></div>");
    }
    Some(layout(
        &format!("{} · lagbudget", status.name),
        &main,
        now.unix,
    ))
}

/// The page for a budget name that is not configured.
pub fn not_found(name: &str, now: f64) -> String {
    let main = format!(
        "<h1>No budget named “{}”</h1><p>It is not in the running config. \
         <a href=\"/\">All budgets</a></p>",
        escape(name)
    );
    layout("Not found · lagbudget", &main, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::Shared;
    use crate::state::{DaemonState, probe_key};
    use crate::testing::{MIXED, at, config, sample};

    #[test]
    fn a_backlog_only_probe_shows_its_backlog_not_unknown_or_zero() {
        let backlog = BacklogStatus {
            unit: "messages",
            value: 3.0,
        };
        assert_eq!(probe_lag(Some(2.5), Some(&backlog)), "2.5 s");
        assert_eq!(probe_lag(None, Some(&backlog)), "backlog 3 messages");
        assert_eq!(probe_lag(None, None), "unknown");
    }

    #[test]
    fn durations_read_at_a_glance() {
        let cases = [
            (3.0, "3.0 s"),
            (59.94, "59.9 s"),
            (60.0, "1 m"),
            (320.0, "5 m 20 s"),
            (3600.0, "1 h"),
            (7500.0, "2 h 5 m"),
            (86_400.0, "1 d"),
            (273_600.0, "3 d 4 h"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
    }

    #[test]
    fn user_strings_are_escaped_and_names_are_one_path_segment() {
        assert_eq!(
            escape("<b onclick='x'>\"&"),
            "&lt;b onclick=&#39;x&#39;&gt;&quot;&amp;"
        );
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
    }

    /// `MIXED` with runs recorded: the overview and a budget page show what happened.
    #[test]
    fn pages_show_states_charts_and_state_changes() {
        let mut next = 0;
        let (state, diff) = DaemonState::new(config(MIXED), at(0.0), &mut next);
        let shared = Shared::with_clock(state, Box::new(|| at(20.0)));
        for (probe, task) in &diff.start {
            let lag = if probe.budget == "other" { 3.0 } else { 1.0 };
            shared.record(&probe_key(probe), *task, 0.1, Ok(sample(lag).into()));
        }
        let page = overview(&shared.snapshot(None));
        assert!(page.contains("data-budget=\"checkout\""), "{page}");
        assert!(page.contains(">ok<"), "{page}");
        assert!(page.contains("class=\"budget-line\""), "{page}");
        assert!(page.contains("role=\"img\""), "{page}");
        assert!(
            page.contains("<noscript><meta http-equiv=\"refresh\""),
            "{page}"
        );
        let one = budget(&shared.snapshot(Some("other"))).expect("other");
        assert!(one.contains("<table class=\"transitions\">"), "{one}");
        assert!(one.contains(">unknown<") && one.contains(">ok<"), "{one}");
        assert!(one.contains("<dt>Lag</dt><dd>3.0 s</dd>"), "{one}");
        assert!(budget(&shared.snapshot(Some("nope"))).is_none());
        assert!(not_found("<x>", 0.0).contains("&lt;x&gt;"));
    }
}
