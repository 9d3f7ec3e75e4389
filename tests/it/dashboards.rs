//! The Grafana dashboards under `dashboards/`: committed files match the generator, they are
//! well-formed Grafana JSON with a `$datasource` variable and stable uids, and every panel
//! query uses only metrics the daemon produces and parses as PromQL (`promtool`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use lagbudget::generate::dashboards::{self, BUDGET_UID, OVERVIEW_UID};
use serde_json::Value;

const REGENERATE: &str = "cargo run -- dashboards -o dashboards";

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn parsed() -> Vec<(String, Value)> {
    dashboards::render()
        .into_iter()
        .filter(|f| f.name.ends_with(".json"))
        .map(|f| {
            let value = serde_json::from_str(&f.contents)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", f.name));
            (f.name.to_owned(), value)
        })
        .collect()
}

/// Every panel that is not a row, including the panels of collapsed rows.
fn leaf_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

#[test]
fn committed_dashboards_are_current() {
    let dir = dashboards_dir();
    let mut stale = Vec::new();
    let generated = dashboards::render();
    for file in &generated {
        let path = dir.join(file.name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == file.contents => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{} cannot be read: {e}", path.display())),
        }
    }
    // A file the generator no longer writes would be provisioned all the same.
    let names: BTreeSet<&str> = generated.iter().map(|f| f.name).collect();
    for entry in std::fs::read_dir(&dir).expect("dashboards/ exists") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if name != "README.md" && !names.contains(name.as_ref()) {
            stale.push(format!("dashboards/{name} is not generated any more"));
        }
    }
    assert!(
        stale.is_empty(),
        "the committed dashboards are stale:\n  {}\nregenerate them with:\n    {REGENERATE}",
        stale.join("\n  ")
    );
}

#[test]
fn dashboards_are_grafana_json_with_a_datasource_variable_and_stable_uids() {
    let dashboards = parsed();
    let uids: Vec<&str> = dashboards
        .iter()
        .map(|(_, d)| d["uid"].as_str().expect("uid"))
        .collect();
    assert_eq!(uids, [OVERVIEW_UID, BUDGET_UID]);
    for (name, dashboard) in &dashboards {
        let uid = dashboard["uid"].as_str().expect("uid");
        assert_eq!(name, &format!("{uid}.json"), "file named after its uid");
        assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
        assert_eq!(
            dashboard["tags"],
            serde_json::json!(["lagbudget"]),
            "{name}"
        );
        assert_eq!(dashboard["refresh"], "30s", "{name}");
        assert!(dashboard["id"].is_null(), "{name}: no database id");

        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("variables");
        let datasource = variables
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(datasource["type"], "datasource", "{name}");
        assert_eq!(datasource["query"], "prometheus", "{name}");
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                variable["datasource"]["uid"], "${datasource}",
                "{name}: variable {}",
                variable["name"]
            );
        }

        let mut ids = BTreeSet::new();
        let mut titles = BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            assert!(ids.insert(panel["id"].as_u64().expect("panel id")));
            for child in panel["panels"].as_array().into_iter().flatten() {
                assert!(ids.insert(child["id"].as_u64().expect("panel id")));
            }
        }
        for panel in leaf_panels(dashboard) {
            let title = panel["title"].as_str().expect("panel title");
            assert!(titles.insert(title), "{name}: two panels titled {title:?}");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?}"
            );
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: panel {title:?} explains itself"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no target");
            let mut refs = BTreeSet::new();
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{name}: {title:?}"
                );
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{name}: {title:?}"
                );
                assert!(refs.insert(target["refId"].as_str().expect("refId")));
            }
        }
    }

    // The two link to each other: the overview to the drill-down, with the budget from its
    // panels' data links, and back.
    let (overview, budget) = (&dashboards[0].1, &dashboards[1].1);
    let drill_down = format!("/d/{BUDGET_UID}/");
    assert!(
        overview["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(&drill_down)))
    );
    assert!(
        overview.to_string().contains(&format!(
            "/d/{BUDGET_UID}/{BUDGET_UID}?var-budget=${{__value.raw}}"
        )),
        "the budgets table links each budget to its drill-down"
    );
    assert!(
        budget["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["url"] == format!("/d/{OVERVIEW_UID}/{OVERVIEW_UID}"))
    );
    let budget_variable = budget["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "budget")
        .expect("a budget variable");
    assert_eq!(
        budget_variable["query"],
        format!("label_values({}, budget)", lagbudget::metrics::BUDGET_INFO)
    );

    let provisioning = dashboards::render()
        .into_iter()
        .find(|f| f.name == "provisioning.yaml")
        .expect("a provisioning file");
    for needle in ["apiVersion: 1", "providers:", "type: file", "path: /"] {
        assert!(provisioning.contents.contains(needle), "{needle}");
    }
}

/// Metric names the daemon produces: the `lagbudget_*` string consts of `src/metrics.rs` and of
/// every `src/probe/<kind>/detail.rs`, a prefix const (ending in `_`) completed with each backlog
/// unit, and the series of the histograms.
fn known_metric_names() -> BTreeSet<String> {
    // The common metrics are named in metrics.rs, a kind's own families in its detail.rs.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("metrics.rs")];
    for entry in std::fs::read_dir(root.join("probe")).expect("src/probe") {
        let detail = entry.expect("entry").path().join("detail.rs");
        if detail.is_file() {
            files.push(detail);
        }
    }
    let source: String = files
        .iter()
        .map(|file| std::fs::read_to_string(file).expect("source file"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = BTreeSet::new();
    for line in source.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((_, value)) = rest.split_once("&str = \"") else {
            continue;
        };
        let Some((value, _)) = value.split_once('"') else {
            continue;
        };
        if !value.starts_with("lagbudget_") {
            continue;
        }
        if value.ends_with('_') {
            for unit in lagbudget::probe::BacklogUnit::ALL {
                names.insert(format!("{value}{}", unit.as_str()));
            }
        } else {
            names.insert(value.to_owned());
        }
    }
    assert!(
        names.contains(lagbudget::metrics::PROBE_DURATION),
        "metrics.rs was read"
    );
    for histogram in [
        lagbudget::metrics::PROBE_DURATION,
        lagbudget::metrics::CANARY_VISIBILITY,
    ] {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{histogram}{suffix}"));
        }
    }
    names
}

/// The identifiers of a PromQL expression outside string literals that name lagbudget metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut in_string = false;
    let mut word = String::new();
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with("lagbudget_") {
            names.push(std::mem::take(&mut word));
        }
        word.clear();
        in_string = c == '"';
    }
    if word.starts_with("lagbudget_") {
        names.push(word);
    }
    names
}

#[test]
fn every_panel_query_is_complete_and_uses_only_metrics_the_daemon_produces() {
    let queries = dashboards::panel_queries("orders", "5m");
    let targets: usize = parsed()
        .iter()
        .flat_map(|(_, d)| leaf_panels(d))
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(queries.len(), targets, "one query per target");

    let known = known_metric_names();
    for (uid, title, expr) in &queries {
        assert!(uid == OVERVIEW_UID || uid == BUDGET_UID, "{uid}: {title}");
        let squeezed: String = expr
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        assert!(
            !squeezed.contains("orvector("),
            "{uid} / {title} hides missing data: {expr}"
        );
        assert!(
            !expr.contains('$'),
            "{uid} / {title}: unreplaced variable in {expr}"
        );
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{uid} / {title}: no lagbudget metric in {expr}"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "{uid} / {title}: {name} is not a metric of src/metrics.rs or a kind's detail.rs: {expr}"
            );
        }
    }

    // Variables query metrics too.
    for (name, dashboard) in parsed() {
        for variable in dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
        {
            let Some(query) = variable["query"]
                .as_str()
                .filter(|_| variable["type"] == "query")
            else {
                continue;
            };
            let names = metric_names(query);
            assert!(!names.is_empty(), "{name}: variable query {query}");
            for metric in names {
                assert!(known.contains(&metric), "{name}: {metric} in {query}");
            }
        }
    }

    // The drill-down is about the budget it was given.
    for (uid, title, expr) in queries.iter().filter(|(uid, ..)| uid == BUDGET_UID) {
        assert!(
            expr.contains(r#"budget="orders""#),
            "{uid} / {title}: {expr}"
        );
    }
}

#[test]
fn every_panel_query_parses_as_promql() {
    // promtool checks the syntax of recording rules; each query becomes one.
    let queries = dashboards::panel_queries("orders", "5m");
    let mut rules = String::from("groups:\n  - name: dashboard_queries\n    rules:\n");
    for (i, (_, _, expr)) in queries.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(expr).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("queries.yaml");
    std::fs::write(&path, rules).expect("writing the rule file");
    let output = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool must be installed for this test (Debian package `prometheus`): {e}")
        });
    assert!(
        output.status.success(),
        "promtool rejects a dashboard query:\n{}{}\nqueries: {queries:#?}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn metric_names_skip_label_values() {
    assert_eq!(
        metric_names(r#"max by (a) (lagbudget_x{state="lagbudget_y", b="\"q"}[5m]) / lagbudget_z"#),
        ["lagbudget_x", "lagbudget_z"]
    );
}
