//! The alert runbooks (docs/src/runbooks/*.md), built into the binary and served as HTML at
//! `GET /runbooks` and `GET /runbooks/{AlertName}`, so that the generated rules' default
//! `runbook_url` (`http://lagbudget:9464/runbooks/<AlertName>`) works wherever the daemon is
//! reachable, without a docs site.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

use crate::generate::rules::{
    AT_RISK, BURN_RATE, DAEMON_DOWN, EXCEEDED, FEED_STALLED, LAG_UNKNOWN, MONOTONIC_VIOLATED,
    RECONCILE_MISMATCHED, RELOAD_FAILED,
};

macro_rules! runbook {
    ($alert:expr, $file:literal) => {
        (
            $alert,
            include_str!(concat!("../docs/src/runbooks/", $file, ".md")),
        )
    };
}

/// Every alert of the generated rules with its runbook's markdown, in the rules' order. A
/// test checks that this is every name of `rules::ALERT_NAMES`; `include_str!` fails the build
/// when a file is missing.
pub const RUNBOOKS: [(&str, &str); 9] = [
    runbook!(EXCEEDED, "ConsistencyBudgetExceeded"),
    runbook!(AT_RISK, "ConsistencyBudgetAtRisk"),
    runbook!(LAG_UNKNOWN, "ConsistencyLagUnknown"),
    runbook!(FEED_STALLED, "ConsistencyFeedStalled"),
    runbook!(BURN_RATE, "ConsistencyBudgetBurnRate"),
    runbook!(MONOTONIC_VIOLATED, "ConsistencyMonotonicReadsViolated"),
    runbook!(RECONCILE_MISMATCHED, "ConsistencyReconcileMismatches"),
    runbook!(DAEMON_DOWN, "LagbudgetDown"),
    runbook!(RELOAD_FAILED, "LagbudgetConfigReloadFailed"),
];

const INDEX: &str = include_str!("../docs/src/runbooks/index.md");

/// The index page: the book's runbooks/index.md as HTML.
pub fn index_html() -> String {
    page("Runbooks", INDEX)
}

/// One alert's runbook as HTML, or `None` for a name that is no alert of the rules.
pub fn runbook_html(alert: &str) -> Option<String> {
    RUNBOOKS
        .iter()
        .find(|(name, _)| *name == alert)
        .map(|(name, markdown)| page(name, markdown))
}

fn page(title: &str, markdown: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · lagbudget runbook</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <nav><a href=\"/runbooks\">Runbooks</a> · <a href=\"/\">Status</a></nav>\n<main>\n{}</main>\n\
         </body>\n</html>\n",
        to_html(markdown),
        title = escape(title),
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:0 auto;\
    padding:1rem;color-scheme:light dark}pre{overflow-x:auto;padding:.5rem;\
    background:rgba(127,127,127,.15)}code{font-size:.95em}table{border-collapse:collapse}\
    td,th{border:1px solid rgba(127,127,127,.4);padding:.2rem .5rem;vertical-align:top}";

/// Markdown to HTML. Links to another runbook point at the daemon's `/runbooks/{AlertName}`;
/// links to other pages of the book or files of the repository are not served by the daemon,
/// so they become their text (no dead link); absolute URLs stay.
fn to_html(markdown: &str) -> String {
    let mut dropped_links = Vec::new();
    let events =
        Parser::new_ext(markdown, Options::ENABLE_TABLES).filter_map(|event| match event {
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                let target = served_target(&dest_url);
                dropped_links.push(target.is_none());
                target.map(|dest_url| {
                    Event::Start(Tag::Link {
                        link_type,
                        dest_url,
                        title,
                        id,
                    })
                })
            }
            Event::End(TagEnd::Link) => {
                let dropped = dropped_links.pop().unwrap_or(false);
                (!dropped).then_some(Event::End(TagEnd::Link))
            }
            other => Some(other),
        });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// Where a link of a runbook points on the daemon, or `None` when the daemon does not serve
/// its target.
fn served_target(dest: &str) -> Option<CowStr<'static>> {
    if dest.contains("://") || dest.starts_with("mailto:") {
        return Some(CowStr::from(dest.to_owned()));
    }
    let (path, anchor) = dest.split_once('#').unwrap_or((dest, ""));
    let anchor = if anchor.is_empty() {
        String::new()
    } else {
        format!("#{anchor}")
    };
    if path.is_empty() {
        return Some(CowStr::from(anchor));
    }
    let name = path.strip_suffix(".md")?;
    if name == "index" {
        return Some(CowStr::from(format!("/runbooks{anchor}")));
    }
    RUNBOOKS
        .iter()
        .any(|(alert, _)| *alert == name)
        .then(|| CowStr::from(format!("/runbooks/{name}{anchor}")))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::rules::ALERT_NAMES;

    #[test]
    fn every_alert_of_the_rules_has_its_runbook() {
        let names: Vec<&str> = RUNBOOKS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ALERT_NAMES);
        for (name, markdown) in RUNBOOKS {
            assert!(
                markdown.starts_with(&format!("# {name}\n")),
                "{name}'s runbook opens on its name"
            );
        }
    }

    #[test]
    fn links_to_runbooks_are_served_and_links_elsewhere_become_text() {
        let html = to_html(
            "See [stalled](ConsistencyFeedStalled.md#first-checks), [index](index.md), \
             [states](../budget-states.md), [here](#why) and [site](https://example.com/x).",
        );
        assert!(
            html.contains(
                r##"<a href="/runbooks/ConsistencyFeedStalled#first-checks">stalled</a>"##
            ),
            "{html}"
        );
        assert!(html.contains(r#"<a href="/runbooks">index</a>"#), "{html}");
        assert!(html.contains(" states, "), "{html}");
        assert!(!html.contains("budget-states"), "{html}");
        assert!(html.contains(r##"<a href="#why">here</a>"##), "{html}");
        assert!(
            html.contains(r#"<a href="https://example.com/x">site</a>"#),
            "{html}"
        );
    }

    #[test]
    fn a_runbook_page_is_html_with_its_title_and_an_unknown_alert_has_none() {
        let html = runbook_html(DAEMON_DOWN).expect("LagbudgetDown has a runbook");
        assert!(html.contains("<title>LagbudgetDown · lagbudget runbook</title>"));
        assert!(html.contains("<h1>LagbudgetDown</h1>"), "{html}");
        assert!(html.contains("<h2>What it means</h2>"), "{html}");
        assert!(runbook_html("NoSuchAlert").is_none());
        assert!(index_html().contains("<table>"));
    }
}
