//! Grafana JSON building blocks shared by every dashboard and row: the grid layout, panels
//! (time series, stat, state timeline, table), their targets, thresholds, value mappings,
//! field overrides and the `$datasource` variable. Nothing here knows a metric, a budget or a
//! probe kind; `dashboards.rs` and the probe kinds' rows say what to show.

use serde_json::{Map, Value, json};

/// The datasource every panel, target and query variable uses.
const DATASOURCE_VAR: &str = "${datasource}";

/// Every panel that is not a row, including those inside collapsed rows.
pub fn leaf_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// Replaces Grafana variables (`$name` and `${name}`) for which `value` has an answer and
/// leaves every other `$` as it is.
pub fn interpolate(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if braced[..end].chars().all(is_name) => (&braced[..end], end + 2),
                _ => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            (&after[..end], end)
        };
        match value(name).filter(|_| !name.is_empty()) {
            Some(v) => {
                out.push_str(&v);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A row of a dashboard: a title bar and the lines of panels under it, each line a height and
/// panels with their widths on Grafana's 24-column grid. A collapsed row shows only its title
/// bar until it is opened and carries its panels inside the row object, as Grafana stores
/// them. The lines at the top of a dashboard, above any title bar, are `Row::top`.
#[derive(Debug, Clone)]
pub struct Row {
    title: Option<String>,
    collapsed: bool,
    lines: Vec<(u32, Vec<(u32, Value)>)>,
}

impl Row {
    /// The lines above the first title bar; only the first row of a dashboard may be one.
    pub fn top() -> Row {
        Row {
            title: None,
            collapsed: false,
            lines: Vec::new(),
        }
    }

    /// A row that is open when the dashboard loads.
    pub fn expanded(title: &str) -> Row {
        Row {
            title: Some(title.to_owned()),
            collapsed: false,
            lines: Vec::new(),
        }
    }

    /// A row that shows only its title bar until it is opened.
    pub fn collapsed(title: &str) -> Row {
        Row {
            collapsed: true,
            ..Row::expanded(title)
        }
    }

    /// Adds a line of panels `height` high, placed left to right with their widths.
    pub fn line(mut self, height: u32, panels: Vec<(u32, Value)>) -> Row {
        debug_assert!(
            panels.iter().map(|(width, _)| width).sum::<u32>() <= 24,
            "a line wider than the grid"
        );
        self.lines.push((height, panels));
        self
    }

    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    pub fn is_collapsed(&self) -> bool {
        self.collapsed
    }
}

/// The panels of `rows`, top to bottom: rows as Grafana row panels (a collapsed one with its
/// panels inside), every panel with its grid position, ids 1, 2, … in reading order (rows and
/// the panels inside them too), and table overrides matched to renamed columns. Panels inside
/// a collapsed row keep the place they take when it is open, so no two panels overlap.
pub fn layout(rows: Vec<Row>) -> Vec<Value> {
    let mut panels: Vec<Value> = Vec::new();
    let mut y = 0;
    for (index, row) in rows.into_iter().enumerate() {
        debug_assert!(
            index == 0 || row.title.is_some(),
            "only the first row may have no title bar"
        );
        let mut children = Vec::new();
        if let Some(title) = &row.title {
            panels.push(json!({
                "type": "row",
                "title": title,
                "collapsed": row.collapsed,
                "gridPos": { "h": 1, "w": 24, "x": 0, "y": y },
                "panels": [],
            }));
            y += 1;
        }
        for (height, line) in row.lines {
            let mut x = 0;
            for (width, mut panel) in line {
                panel["gridPos"] = json!({ "h": height, "w": width, "x": x, "y": y });
                x += width;
                children.push(panel);
            }
            y += height;
        }
        match panels.last_mut() {
            Some(bar) if row.collapsed => bar["panels"] = Value::Array(children),
            _ => panels.extend(children),
        }
    }
    let mut id = 0;
    for panel in &mut panels {
        id += 1;
        panel["id"] = json!(id);
        match_renamed_columns(panel);
        if let Some(children) = panel.get_mut("panels").and_then(Value::as_array_mut) {
            for child in children {
                id += 1;
                child["id"] = json!(id);
                match_renamed_columns(child);
            }
        }
    }
    panels
}

/// Small convenience to adjust a value in an expression.
pub trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": DATASOURCE_VAR })
}

pub fn datasource_variable() -> Value {
    json!({
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": false,
        "multi": false,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": false,
    })
}

pub fn query_variable(name: &str, label: &str, query: &str, multi: bool) -> Value {
    let mut variable = json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource(),
        "definition": query,
        "query": query,
        "current": {},
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": false,
        "sort": 1,
    });
    if multi {
        variable["allValue"] = json!(".*");
    }
    variable
}

pub fn range_target(ref_id: &str, expr: &str, legend: &str) -> Value {
    json!({
        "datasource": datasource(),
        "editorMode": "code",
        "expr": expr,
        "instant": false,
        "legendFormat": legend,
        "range": true,
        "refId": ref_id,
    })
}

pub fn instant(ref_id: &str, expr: &str, legend: &str) -> Value {
    json!({
        "datasource": datasource(),
        "editorMode": "code",
        "expr": expr,
        "instant": true,
        "legendFormat": legend,
        "range": false,
        "refId": ref_id,
    })
}

pub fn table_target(ref_id: &str, expr: &str) -> Value {
    json!({
        "datasource": datasource(),
        "editorMode": "code",
        "expr": expr,
        "format": "table",
        "instant": true,
        "legendFormat": "__auto",
        "range": false,
        "refId": ref_id,
    })
}

pub fn ref_id(index: usize) -> String {
    char::from(b'A' + u8::try_from(index).expect("fewer than 26 targets")).to_string()
}

fn panel(kind: &str, title: &str, description: &str, targets: Vec<Value>) -> Value {
    json!({
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource(),
        "targets": targets,
        "fieldConfig": { "defaults": {}, "overrides": [] },
        "options": {},
    })
}

pub fn timeseries(title: &str, description: &str, targets: Vec<Value>, unit: &str) -> Value {
    let mut p = panel("timeseries", title, description, targets);
    p["fieldConfig"]["defaults"] = json!({
        "color": { "mode": "palette-classic" },
        "custom": {
            "axisBorderShow": false,
            "axisPlacement": "auto",
            "drawStyle": "line",
            "fillOpacity": 0,
            "gradientMode": "none",
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "pointSize": 4,
            "showPoints": "never",
            "spanNulls": false,
            "stacking": { "group": "A", "mode": "none" },
            "thresholdsStyle": { "mode": "off" },
        },
        "mappings": [],
        "thresholds": thresholds(&[("green", None)]),
        "unit": unit,
    });
    p["options"] = json!({
        "legend": { "calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": true },
        "tooltip": { "mode": "multi", "sort": "desc" },
    });
    p
}

/// A heatmap of a Prometheus histogram's buckets, one row per bucket (`le`) as the daemon
/// exports them: the targets should return per-bucket increases with `format: heatmap`.
pub fn heatmap(title: &str, description: &str, targets: Vec<Value>, unit: &str) -> Value {
    let mut p = panel("heatmap", title, description, targets);
    p["fieldConfig"]["defaults"] = json!({
        "custom": {
            "hideFrom": { "legend": false, "tooltip": false, "viz": false },
            "scaleDistribution": { "type": "linear" },
        },
    });
    p["options"] = json!({
        "calculate": false,
        "cellGap": 1,
        "color": {
            "exponent": 0.5,
            "fill": "dark-orange",
            "mode": "scheme",
            "reverse": false,
            "scale": "exponential",
            "scheme": "Oranges",
            "steps": 64,
        },
        "exemplars": { "color": "rgba(255,0,255,0.7)" },
        "filterValues": { "le": 1e-9 },
        "legend": { "show": true },
        "rowsFrame": { "layout": "le" },
        "tooltip": { "mode": "single", "showColorScale": false, "yHistogram": true },
        "yAxis": { "axisPlacement": "left", "reverse": false, "unit": unit },
    });
    p
}

/// `target` returning one series per histogram bucket, for a [`heatmap`].
pub fn heatmap_target(ref_id: &str, expr: &str) -> Value {
    json!({
        "datasource": datasource(),
        "editorMode": "code",
        "expr": expr,
        "format": "heatmap",
        "instant": false,
        "legendFormat": "{{le}}",
        "range": true,
        "refId": ref_id,
    })
}

/// Draws `value` as a red dashed threshold line.
pub fn with_threshold_line(mut panel: Value, value: f64) -> Value {
    let defaults = &mut panel["fieldConfig"]["defaults"];
    defaults["thresholds"] = thresholds(&[("transparent", None), ("red", Some(value))]);
    defaults["custom"]["thresholdsStyle"] = json!({ "mode": "dashed" });
    panel
}

pub fn with_links(mut panel: Value, links: &Value) -> Value {
    panel["fieldConfig"]["defaults"]["links"] = links.clone();
    panel
}

pub fn table_legend() -> Value {
    json!({
        "calcs": ["max", "lastNotNull"],
        "displayMode": "table",
        "placement": "right",
        "showLegend": true,
        "sortBy": "Max",
        "sortDesc": true,
    })
}

pub fn stat(
    title: &str,
    description: &str,
    targets: Vec<Value>,
    unit: &str,
    thresholds: Value,
) -> Value {
    let mut p = panel("stat", title, description, targets);
    p["fieldConfig"]["defaults"] = json!({
        "color": { "mode": "thresholds" },
        "mappings": [],
        "thresholds": thresholds,
        "unit": unit,
    });
    p["options"] = json!({
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
        "showPercentChange": false,
        "textMode": "value",
        "wideLayout": true,
    });
    p
}

/// A stat counting budgets or probes in some condition, coloured when any are.
pub fn count_stat(title: &str, description: &str, expr: &str, color: &str) -> Value {
    stat(
        title,
        description,
        vec![instant("A", expr, title)],
        "none",
        thresholds(&[("green", None), (color, Some(1.0))]),
    )
    .tap(|p| p["fieldConfig"]["defaults"]["decimals"] = json!(0))
}

pub fn state_timeline(
    title: &str,
    description: &str,
    targets: Vec<Value>,
    default_mappings: Value,
) -> Value {
    let mut p = panel("state-timeline", title, description, targets);
    p["fieldConfig"]["defaults"] = json!({
        "color": { "mode": "thresholds" },
        "custom": { "fillOpacity": 80, "lineWidth": 0 },
        "mappings": default_mappings["value"].clone(),
        "thresholds": thresholds(&[("text", None)]),
    });
    p["options"] = json!({
        "alignValue": "left",
        "legend": { "displayMode": "list", "placement": "bottom", "showLegend": false },
        "mergeValues": true,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": { "mode": "single", "sort": "none" },
    });
    p
}

/// An instant table that merges its queries' rows on their common labels, then keeps, orders
/// and renames the columns in `columns` and drops those in `hidden`.
pub fn table(
    title: &str,
    description: &str,
    targets: Vec<Value>,
    columns: &[(&str, &str)],
    hidden: &[&str],
) -> Value {
    let mut p = panel("table", title, description, targets);
    p["fieldConfig"]["defaults"] = json!({
        "color": { "mode": "thresholds" },
        "custom": { "align": "auto", "cellOptions": { "type": "auto" }, "inspect": false },
        "mappings": [],
        "thresholds": thresholds(&[("text", None)]),
    });
    p["options"] = json!({
        "cellHeight": "sm",
        "footer": { "countRows": false, "fields": "", "reducer": ["sum"], "show": false },
        "showHeader": true,
    });
    let mut index = Map::new();
    let mut rename = Map::new();
    for (i, (field, name)) in columns.iter().enumerate() {
        index.insert((*field).to_owned(), json!(i));
        rename.insert((*field).to_owned(), json!(name));
    }
    let exclude: Map<String, Value> = hidden
        .iter()
        .map(|f| ((*f).to_owned(), json!(true)))
        .collect();
    p["transformations"] = json!([
        { "id": "merge", "options": {} },
        {
            "id": "organize",
            "options": {
                "excludeByName": exclude,
                "indexByName": index,
                "renameByName": rename,
            },
        },
    ]);
    p
}

pub fn thresholds(steps: &[(&str, Option<f64>)]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(color, value)| json!({ "color": color, "value": value }))
        .collect();
    json!({ "mode": "absolute", "steps": steps })
}

/// A `value` mapping of numbers to texts and colours, as a field config property.
pub fn mappings(codes: &[(f64, &str, &str)]) -> Value {
    json!({ "id": "mappings", "value": [mappings_value(codes)] })
}

pub fn mappings_value(codes: &[(f64, &str, &str)]) -> Value {
    let mut options = Map::new();
    for (i, (value, text, color)) in codes.iter().enumerate() {
        options.insert(
            value.to_string(),
            json!({ "color": color, "index": i, "text": text }),
        );
    }
    json!({ "type": "value", "options": options })
}

/// Points the `byName` overrides of a table at the columns' names after its `organize`
/// transformation renamed them: Grafana matches overrides against display names.
fn match_renamed_columns(panel: &mut Value) {
    let renames = panel["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["id"] == "organize")
        .map(|t| t["options"]["renameByName"].clone())
        .unwrap_or(Value::Null);
    let Some(overrides) = panel["fieldConfig"]["overrides"].as_array_mut() else {
        return;
    };
    for o in overrides {
        if o["matcher"]["id"] != "byName" {
            continue;
        }
        let field = o["matcher"]["options"].as_str().unwrap_or_default();
        if let Some(display) = renames[field].as_str() {
            o["matcher"]["options"] = json!(display);
        }
    }
}

/// A column override by the column's field name (before any renaming; see
/// `match_renamed_columns`).
pub fn column(name: &str, properties: Vec<Value>) -> Value {
    json!({ "matcher": { "id": "byName", "options": name }, "properties": properties })
}

pub fn unit(unit: &str) -> Value {
    json!({ "id": "unit", "value": unit })
}

pub fn decimals(n: u32) -> Value {
    json!({ "id": "decimals", "value": n })
}

pub fn no_value(text: &str) -> Value {
    json!({ "id": "noValue", "value": text })
}

pub fn color_background() -> Value {
    json!({ "id": "custom.cellOptions", "value": { "type": "color-background", "mode": "basic" } })
}

pub fn thresholds_property(thresholds: Value) -> Value {
    json!({ "id": "thresholds", "value": thresholds })
}

pub fn links_property(links: &Value) -> Value {
    json!({ "id": "links", "value": links })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "budget" => Some("orders".to_owned()),
            "__range" => Some("5m".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn interpolate_replaces_known_variables_in_both_forms() {
        assert_eq!(
            interpolate(r#"x{budget="$budget"}[$__range]"#, vars),
            r#"x{budget="orders"}[5m]"#
        );
        assert_eq!(interpolate("${budget}-${__range}", vars), "orders-5m");
        assert_eq!(
            interpolate("$other ${other} $ $1 ${", vars),
            "$other ${other} $ $1 ${"
        );
        assert_eq!(interpolate("$budgets", vars), "$budgets");
        assert_eq!(interpolate("end $", vars), "end $");
    }

    #[test]
    fn a_collapsed_row_carries_its_panels_and_an_open_row_leaves_them_after_it() {
        let panel = |title: &str| json!({ "title": title });
        let panels = layout(vec![
            Row::top().line(4, vec![(12, panel("a")), (12, panel("b"))]),
            Row::expanded("open").line(8, vec![(24, panel("c"))]),
            Row::collapsed("shut").line(6, vec![(24, panel("d"))]),
            Row::collapsed("shut too").line(5, vec![(8, panel("e"))]),
        ]);
        let summary: Vec<(Value, Value, Value, usize)> = panels
            .iter()
            .map(|p| {
                let inside = p["panels"].as_array().map_or(0, Vec::len);
                (
                    p["title"].clone(),
                    p["id"].clone(),
                    p["gridPos"]["y"].clone(),
                    inside,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (json!("a"), json!(1), json!(0), 0),
                (json!("b"), json!(2), json!(0), 0),
                (json!("open"), json!(3), json!(4), 0),
                (json!("c"), json!(4), json!(5), 0),
                (json!("shut"), json!(5), json!(13), 1),
                (json!("shut too"), json!(7), json!(20), 1),
            ]
        );
        assert_eq!(panels[2]["collapsed"], false);
        assert_eq!(panels[4]["collapsed"], true);
        let inner = &panels[4]["panels"][0];
        assert_eq!((&inner["title"], &inner["id"]), (&json!("d"), &json!(6)));
        assert_eq!(
            inner["gridPos"],
            json!({ "h": 6, "w": 24, "x": 0, "y": 14 })
        );
        assert_eq!(panels[1]["gridPos"]["x"], 12);
    }
}
