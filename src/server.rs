//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/api/v1/budgets[/{name}]`, the status page at `/`,
//! and `POST /-/reload` when the lifecycle API is enabled. Everything answers from memory: each
//! answer takes one `Snapshot` of the state (one `now`, one evaluation) and renders it after the
//! lock is released.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::model::HttpSettings;
use crate::shared::Shared;
use crate::status::{BacklogStatus, BudgetList, BudgetStatus};

/// A request to reload, with an optional channel for the outcome (from `POST /-/reload`).
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    /// `Some` only when started with `--web.enable-lifecycle`.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

/// The router, without a server: tests call it directly.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/budgets", get(list_budgets))
        .route("/api/v1/budgets/{name}", get(one_budget))
        .route("/-/reload", post(reload))
        .route("/runbooks", get(runbook_index))
        .route("/runbooks/{alert}", get(runbook))
        .with_state(state)
}

async fn metrics_handler(State(app): State<AppState>) -> Response {
    let body = app.shared.render_metrics();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(app): State<AppState>) -> Response {
    let state = app.shared.state();
    let (total, waiting) = state
        .budgets
        .iter()
        .flat_map(|b| b.probes.iter())
        .fold((0, 0), |(t, w), p| {
            (t + 1, w + usize::from(p.history.runs == 0))
        });
    if waiting == 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {waiting} of {total} probes have not run yet\n"),
        )
            .into_response()
    }
}

/// `Cache-Control` and, for allowed origins, CORS headers for an API answer.
fn api_headers(http: &HttpSettings, request: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cache = format!("max-age={}", http.api_cache_max_age.as_secs());
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    let origin = request.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if let Some(origin) = origin {
        let allowed = http
            .cors_allowed_origins
            .iter()
            .any(|a| a == "*" || a == origin);
        if allowed {
            if let Ok(value) = HeaderValue::from_str(origin) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            }
        }
    }
    if !http.cors_allowed_origins.is_empty() {
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    headers
}

async fn list_budgets(State(app): State<AppState>, request: HeaderMap) -> Response {
    let snapshot = app.shared.snapshot(None);
    let headers = api_headers(&snapshot.config.http, &request);
    let list = BudgetList {
        budgets: snapshot.budgets.iter().map(BudgetStatus::new).collect(),
    };
    (headers, axum::Json(list)).into_response()
}

async fn one_budget(
    State(app): State<AppState>,
    Path(name): Path<String>,
    request: HeaderMap,
) -> Response {
    let snapshot = app.shared.snapshot(Some(&name));
    let headers = api_headers(&snapshot.config.http, &request);
    match snapshot.budgets.first().map(BudgetStatus::new) {
        Some(status) => (headers, axum::Json(status)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            headers,
            axum::Json(serde_json::json!({ "error": format!("no budget named {name:?}") })),
        )
            .into_response(),
    }
}

async fn runbook_index() -> Html<String> {
    Html(crate::runbooks::index_html())
}

async fn runbook(Path(alert): Path<String>) -> Response {
    match crate::runbooks::runbook_html(&alert) {
        Some(html) => Html(html).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no runbook for an alert named {alert:?}; see /runbooks\n"),
        )
            .into_response(),
    }
}

async fn reload(State(app): State<AppState>) -> Response {
    let Some(reloads) = app.reload else {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled; start with --web.enable-lifecycle\n",
        )
            .into_response();
    };
    let (reply, answer) = oneshot::channel();
    if reloads
        .send(ReloadRequest { reply: Some(reply) })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match answer.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("{summary}\n")).into_response(),
        Ok(Err(errors)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload rejected; the running config stays:\n{errors}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// A small server-rendered page: every budget, its state and since when, lag against budget,
/// and each probe's freshness and last error. Refreshes itself; no JavaScript.
async fn status_page(State(app): State<AppState>) -> Html<String> {
    let snapshot = app.shared.snapshot(None);
    let (budgets, since): (Vec<BudgetStatus>, Vec<f64>) = snapshot
        .budgets
        .iter()
        .map(|b| (BudgetStatus::new(b), snapshot.now.since(b.tracker.since)))
        .unzip();
    Html(render_status_page(&budgets, &since))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "unknown".to_owned(), human_duration)
}

/// A probe's lag on the status page; a fresh probe that only counts shows its backlog, never
/// "unknown" (it is not) and never 0 (it did not measure one).
fn probe_lag(lag: Option<f64>, backlog: Option<&BacklogStatus>) -> String {
    match (lag, backlog) {
        (Some(lag), _) => human_duration(lag),
        (None, Some(backlog)) => format!("backlog {} {}", backlog.value, backlog.unit),
        (None, None) => "unknown".to_owned(),
    }
}

/// `12.3 s` under a minute; `5 m 20 s`, `2 h 5 m` or `3 d 4 h` above, to read at a glance.
fn human_duration(seconds: f64) -> String {
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

/// The page for `budgets`; `in_state[i]` is how long budget `i` has been in its state.
pub fn render_status_page(budgets: &[BudgetStatus], in_state: &[f64]) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>lagbudget</title><style>\
         body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
         table{border-collapse:collapse;width:100%}td,th{padding:.3rem .6rem;text-align:left;\
         border-bottom:1px solid #ddd;vertical-align:top}\
         .ok{color:#137333}.warn{color:#b06000}.breach{color:#c5221f;font-weight:bold}\
         .unknown{color:#5f6368;font-weight:bold}small{color:#5f6368}\
         </style></head><body><h1>lagbudget</h1>\
         <table><tr><th>budget</th><th>state</th><th>since</th><th>lag / budget</th>\
         <th>probes</th></tr>",
    );
    for (i, b) in budgets.iter().enumerate() {
        let state = b.state_str();
        let held = in_state
            .get(i)
            .map(|s| format!("<br><small>for {}</small>", human_duration(s.max(0.0))))
            .unwrap_or_default();
        let lag = match (b.lag_seconds, b.last_lag_seconds) {
            (None, Some(last)) => format!(
                "unknown <small>(last seen {})</small>",
                human_duration(last)
            ),
            // Fresh probes that only count (a queue without message times): no lag to show,
            // and "unknown" would be false.
            (None, None)
                if !b.probes.is_empty() && b.probes.iter().all(|p| p.backlog.is_some()) =>
            {
                "backlog only".to_owned()
            }
            (lag, _) => seconds(lag),
        };
        let budget = match (b.max_lag_seconds, b.max_backlog) {
            (None, Some(max)) => format!("max backlog {max}"),
            (max_lag, _) => seconds(max_lag),
        };
        let _ = write!(
            html,
            "<tr><td>{}<br><small>{}</small></td><td class=\"{state}\">{state}</td>\
             <td>{}{held}</td><td>{lag} / {}</td><td>",
            escape(&b.name),
            escape(b.owner.as_deref().unwrap_or("")),
            escape(&b.since),
            budget,
        );
        for p in &b.probes {
            let freshness = match (p.stale, p.up, p.stalled) {
                (true, _, _) => "stale",
                (false, true, true) => "fresh, stalled",
                (false, true, false) => "fresh",
                (false, false, _) => "down",
            };
            let _ = write!(
                html,
                "{}{}: {} ({freshness})",
                escape(&p.name),
                p.replica
                    .as_deref()
                    .map(|r| format!(" → {}", escape(r)))
                    .unwrap_or_default(),
                probe_lag(p.lag_seconds, p.backlog.as_ref())
            );
            if let Some(e) = &p.error {
                let _ = write!(
                    html,
                    " <small>{}: {}</small>",
                    e.reason_str(),
                    escape(&e.message)
                );
            }
            html.push_str("<br>");
        }
        html.push_str("</td></tr>");
    }
    html.push_str("</table></body></html>\n");
    html
}

impl BudgetStatus {
    fn state_str(&self) -> &'static str {
        self.state.as_str()
    }
}

impl crate::status::ErrorStatus {
    fn reason_str(&self) -> &'static str {
        self.reason.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::{AppState, BacklogStatus, app, human_duration, probe_lag};
    use crate::shared::Shared;
    use crate::state::{DaemonState, probe_key};
    use crate::testing::{MIXED, at, config, sample};
    use axum::body::Body;
    use axum::http::{Request, Response, StatusCode, header};
    use std::sync::Arc;
    use tower::ServiceExt as _;

    /// The daemon's shared state for `MIXED`, answering at 20 s; the probes' tasks.
    fn shared() -> (Arc<Shared>, Vec<(crate::state::ProbeKey, u64)>) {
        let mut next = 0;
        let (state, diff) = DaemonState::new(config(MIXED), at(0.0), &mut next);
        let tasks = diff.start.iter().map(|(p, t)| (probe_key(p), *t)).collect();
        (
            Arc::new(Shared::with_clock(state, Box::new(|| at(20.0)))),
            tasks,
        )
    }

    async fn call(shared: &Arc<Shared>, request: Request<Body>) -> Response<Body> {
        let router = app(AppState {
            shared: shared.clone(),
            reload: None,
        });
        router.oneshot(request).await.expect("the router answers")
    }

    async fn get(shared: &Arc<Shared>, uri: &str) -> Response<Body> {
        call(
            shared,
            Request::get(uri).body(Body::empty()).expect("request"),
        )
        .await
    }

    async fn text(response: Response<Body>) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    async fn json(response: Response<Body>) -> serde_json::Value {
        serde_json::from_str(&text(response).await).expect("json")
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let (shared, _) = shared();
        let response = get(&shared, "/healthz").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "ok\n");
    }

    #[tokio::test]
    async fn readyz_waits_for_every_probe_to_run_once() {
        let (shared, tasks) = shared();
        let response = get(&shared, "/readyz").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            text(response).await,
            "not ready: 5 of 5 probes have not run yet\n"
        );
        for (key, task) in &tasks[..4] {
            shared.record(key, *task, 0.1, Ok(sample(1.0).into()));
        }
        let response = get(&shared, "/readyz").await;
        assert_eq!(
            text(response).await,
            "not ready: 1 of 5 probes have not run yet\n"
        );
        // A failed run counts as having run.
        let (key, task) = &tasks[4];
        let error = crate::probe::ProbeError::new(crate::probe::ErrorReason::Connect, "refused");
        shared.record(key, *task, 0.1, Err(error));
        let response = get(&shared, "/readyz").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "ready\n");
    }

    #[tokio::test]
    async fn an_unknown_budget_is_404_and_an_unmeasured_one_has_null_lag() {
        let (shared, tasks) = shared();
        let response = get(&shared, "/api/v1/budgets/nope").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "max-age=5",
            "errors carry the API headers too"
        );
        assert_eq!(
            json(response).await,
            serde_json::json!({ "error": "no budget named \"nope\"" })
        );

        let budget = json(get(&shared, "/api/v1/budgets/checkout").await).await;
        assert_eq!(budget["state"], "unknown");
        assert_eq!(budget["within_budget"], false);
        assert!(budget["lag_seconds"].is_null(), "{budget}");
        assert!(budget["last_lag_seconds"].is_null());
        assert!(budget["used_ratio"].is_null());
        assert!(budget["probes"][0]["lag_seconds"].is_null());
        assert_eq!(budget["probes"][0]["up"], false);

        // Once every probe of `other` has run, its lag is known at the answer's instant.
        let (key, task) = &tasks[4];
        shared.record(key, *task, 0.1, Ok(sample(3.0).into()));
        let other = json(get(&shared, "/api/v1/budgets/other").await).await;
        assert_eq!(other["lag_seconds"], 3.0);
        assert_eq!(other["used_ratio"], 0.05);
        assert_eq!(other["state"], "ok");
        assert_eq!(other["since"], "1970-01-01T00:00:20.000Z");
        let list = json(get(&shared, "/api/v1/budgets").await).await;
        let names: Vec<&str> = list["budgets"]
            .as_array()
            .expect("list")
            .iter()
            .map(|b| b["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["checkout", "other"]);
    }

    #[tokio::test]
    async fn api_answers_carry_cache_control_and_cors_for_allowed_origins() {
        let (shared, _) = shared();
        let with_origin = |origin: &str| {
            Request::get("/api/v1/budgets")
                .header(header::ORIGIN, origin)
                .body(Body::empty())
                .expect("request")
        };
        let allowed = call(&shared, with_origin("https://app.example")).await;
        assert_eq!(allowed.status(), StatusCode::OK);
        let headers = allowed.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "max-age=5");
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(headers[header::VARY], "Origin");
        let other = call(&shared, with_origin("https://evil.example")).await;
        assert!(
            other
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        assert_eq!(other.headers()[header::VARY], "Origin");
    }

    #[tokio::test]
    async fn reload_is_forbidden_without_the_lifecycle_api() {
        let (shared, _) = shared();
        let request = Request::post("/-/reload")
            .body(Body::empty())
            .expect("request");
        let response = call(&shared, request).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(text(response).await.contains("--web.enable-lifecycle"));
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let (shared, _) = shared();
        let response = get(&shared, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = text(response).await;
        assert!(body.contains("# TYPE lagbudget_probe_errors_total counter\n"));
        assert!(body.contains("lagbudget_state{budget=\"other\",state=\"unknown\"} 1\n"));
    }

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
}
