//! HTTP: `/metrics`, `/healthz`, `/readyz`, `/api/v1/budgets[/{name}]`, the status page at `/`
//! and `/budgets/{name}` (rendered by `page`), the API's OpenAPI document at
//! `/api/v1/openapi.json`, the embeddable "updating…" example at `/examples/updating`, and
//! `POST /-/reload` when the lifecycle API is enabled. Everything answers from memory: each
//! answer takes one `Snapshot` of the state (one `now`, one evaluation) and renders it after the
//! lock is released.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::model::HttpSettings;
use crate::page;
use crate::shared::Shared;
use crate::status::{BudgetList, BudgetStatus};

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
        .route("/", get(overview))
        .route("/budgets/{name}", get(budget_page))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/budgets", get(list_budgets))
        .route("/api/v1/budgets/{name}", get(one_budget))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/examples/updating", get(example_updating))
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

/// The OpenAPI document of this API, checked in (`src/openapi.json`) so that it says exactly
/// what it means; `tests/it/openapi.rs` runs schemathesis against a live daemon with it.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The embeddable "Points are updating…" example; docs/src/embedding.md explains it.
pub const EXAMPLE_UPDATING: &str = include_str!("examples/updating.html");

async fn openapi(State(app): State<AppState>, request: HeaderMap) -> Response {
    // Under /api/v1/ like the budgets, so with the same cache and CORS headers: tools in a
    // browser on an allowed origin may read it too.
    let config = app.shared.state().config.clone();
    let mut headers = api_headers(&config.http, &request);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (headers, OPENAPI).into_response()
}

async fn example_updating() -> Html<&'static str> {
    Html(EXAMPLE_UPDATING)
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

/// The status page's overview (`page::overview`).
async fn overview(State(app): State<AppState>) -> Html<String> {
    Html(page::overview(&app.shared.snapshot(None)))
}

/// One budget's page (`page::budget`), or a 404 page for a name that is not configured.
async fn budget_page(State(app): State<AppState>, Path(name): Path<String>) -> Response {
    let snapshot = app.shared.snapshot(Some(&name));
    match page::budget(&snapshot) {
        Some(html) => Html(html).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(page::not_found(&name, snapshot.now.unix)),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{AppState, app};
    use crate::evaluate::BudgetState;
    use crate::probe::{BacklogUnit, ErrorReason};
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
    async fn budget_pages_are_html_and_an_unknown_name_is_a_404_page() {
        let (shared, _) = shared();
        let response = get(&shared, "/budgets/checkout").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(text(response).await.contains("<h1>checkout</h1>"));
        let response = get(&shared, "/budgets/%3Cnope%3E").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = text(response).await;
        assert!(body.contains("No budget named “&lt;nope&gt;”"), "{body}");
        let response = get(&shared, "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(text(response).await.contains("data-budget=\"other\""));
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

    /// The enums the document lists are the daemon's, so a new state, reason or backlog unit
    /// cannot be left out of it (schemathesis only sees the values a live daemon happens to
    /// answer with).
    #[tokio::test]
    async fn the_openapi_document_is_served_and_lists_every_state_reason_and_unit() {
        let (shared, _) = shared();
        let response = get(&shared, "/api/v1/openapi.json").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=5");
        let document = json(response).await;
        assert!(
            document["openapi"]
                .as_str()
                .expect("version")
                .starts_with("3.")
        );
        let schemas = &document["components"]["schemas"];
        let strings = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .expect("enum")
                .iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect()
        };
        let states: Vec<&str> = BudgetState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(strings(&schemas["BudgetState"]["enum"]), states);
        let reasons: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(strings(&schemas["ErrorReason"]["enum"]), reasons);
        let units: Vec<&str> = BacklogUnit::ALL.iter().map(|u| u.as_str()).collect();
        let backlog = &schemas["Probe"]["properties"]["backlog"]["oneOf"][0];
        assert_eq!(strings(&backlog["properties"]["unit"]["enum"]), units);
        for path in [
            "/",
            "/metrics",
            "/healthz",
            "/readyz",
            "/api/v1/budgets",
            "/api/v1/budgets/{name}",
            "/api/v1/openapi.json",
            "/examples/updating",
            "/-/reload",
        ] {
            assert!(
                document["paths"].get(path).is_some(),
                "{path} is documented"
            );
        }
    }

    /// Whether `value` has the shape `schema` (within the OpenAPI document `doc`) gives it:
    /// every key a documented property (or admitted by `additionalProperties`), every required
    /// property present, `null` only where allowed, scalar types and enums. Only the keywords
    /// `src/openapi.json` uses; schemathesis validates fully, against a live daemon.
    fn conforms(
        doc: &serde_json::Value,
        schema: &serde_json::Value,
        value: &serde_json::Value,
        at: &str,
    ) -> Result<(), String> {
        use serde_json::Value;
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            let name = target.trim_start_matches("#/components/schemas/");
            return conforms(doc, &doc["components"]["schemas"][name], value, at);
        }
        if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
            return choices
                .iter()
                .find(|choice| conforms(doc, choice, value, at).is_ok())
                .map(|_| ())
                .ok_or_else(|| format!("{at}: {value} matches no choice of {schema}"));
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            if !choices.contains(value) {
                return Err(format!("{at}: {value} is not one of {choices:?}"));
            }
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let typed = types.is_empty()
            || types.contains(&kind)
            || (kind == "integer" && types.contains(&"number"));
        if !typed {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
                }
            }
            Value::Object(fields) => {
                for required in schema["required"].as_array().into_iter().flatten() {
                    let required = required.as_str().unwrap_or_default();
                    if !fields.contains_key(required) {
                        return Err(format!("{at}: required {required} is missing"));
                    }
                }
                for (key, field) in fields {
                    let at = format!("{at}.{key}");
                    match (
                        schema["properties"].get(key),
                        &schema["additionalProperties"],
                    ) {
                        (Some(property), _) => conforms(doc, property, field, &at)?,
                        (None, Value::Bool(false)) => {
                            return Err(format!("{at} is not in the document"));
                        }
                        (None, extra @ Value::Object(_)) => conforms(doc, extra, field, &at)?,
                        (None, _) => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Each kind's object, as the API serialises it, has the shape the document gives it under
    /// the kind's key in a probe (the live schemathesis run sees only the kinds the machine's
    /// services can run cheaply). A kind added later whose object is not documented is still
    /// accepted by the probe's `additionalProperties`; document it here and in the file.
    #[test]
    fn every_kinds_object_has_the_documented_shape() {
        use crate::probe::DetailStatus;
        use crate::probe::canary::detail::CanaryStatus;
        use crate::probe::dynamodb_stream::detail::StreamStatus;
        use crate::probe::http_watermark::detail::HttpStatus;
        use crate::probe::kafka_consumer_group::detail::{KafkaStatus, PartitionStatus};
        use crate::probe::reconcile::detail::{
            Mismatches, ReconcileStatus, SampleKey, SweepStatus,
        };
        use crate::probe::redis_key_age::detail::{CacheStatus, StaleKey};
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("json");
        let kafka = |timestamp_type, members| KafkaStatus {
            members,
            data_loss: false,
            timestamp_type,
            partitions_total: 3,
            partitions: vec![PartitionStatus {
                topic: "orders".into(),
                partition: 1,
                lag_seconds: 4.5,
                backlog_messages: 12,
            }],
        };
        let cache = |pattern: bool| CacheStatus {
            shape: if pattern { "pattern" } else { "key" },
            keys_read: 2,
            keys_missing: 1,
            stale_keys: pattern.then_some(1),
            stalest: vec![StaleKey {
                key: "product:7".into(),
                lag_seconds: 9.3,
            }],
            sampled_keys_total: 10,
            misses_total: 1,
            scan_passes_total: pattern.then_some(1),
            pass_keys_scanned: pattern.then_some(500),
        };
        let http = |known: bool| HttpStatus {
            status: 200,
            response_bytes: 13,
            age_seconds: known.then_some(4),
            max_age_seconds: known.then_some(1),
            served_stale: known.then_some(true),
            last_modified: known.then(|| "Sun, 06 Dec 2026 06:00:00 GMT".into()),
            etag: known.then(|| "\"v1\"".into()),
        };
        let reconcile = |sweep: bool| ReconcileStatus {
            mismatches: Mismatches {
                missing: 1,
                stale: 0,
                extra: sweep.then_some(2),
            },
            not_visible: 4,
            sweep: sweep.then(|| SweepStatus {
                running: true,
                rows: 35_000,
                progress_ratio: Some(0.35),
                last_completed: Some("2026-12-06T01:00:12.418Z".into()),
                last_rows: Some(100_000),
                completed: 3,
            }),
            sample: if sweep {
                vec![SampleKey {
                    kind: "missing",
                    key: "100412".into(),
                }]
            } else {
                Vec::new()
            },
        };
        let stream = |behind: bool| StreamStatus {
            data_loss: behind,
            shards: 12,
            shards_behind: usize::from(behind) * 2,
            shards_unmeasured: 0,
            oldest_shard: behind.then(|| "shardId-00000001733480000000-1a2b3c4d".into()),
        };
        let canary = |seen: bool| CanaryStatus {
            visible_seq: seen.then_some(1_764_979_200_571),
            unseen_markers: 1,
            markers_seen: 448,
        };
        let objects = [
            DetailStatus::Kafka(kafka(Some("CreateTime"), Some(2))),
            DetailStatus::Kafka(kafka(None, None)),
            DetailStatus::Cache(cache(true)),
            DetailStatus::Cache(cache(false)),
            DetailStatus::Http(http(true)),
            DetailStatus::Http(http(false)),
            DetailStatus::Canary(canary(true)),
            DetailStatus::Canary(canary(false)),
            DetailStatus::Reconcile(reconcile(true)),
            DetailStatus::Reconcile(reconcile(false)),
            DetailStatus::DynamodbStream(stream(true)),
            DetailStatus::DynamodbStream(stream(false)),
        ];
        let probe = &doc["components"]["schemas"]["Probe"]["properties"];
        for object in objects {
            let json = serde_json::to_value(&object).expect("json");
            let (key, value) = json
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one key");
            let schema = probe
                .get(key)
                .unwrap_or_else(|| panic!("the probe documents {key}"));
            conforms(&doc, schema, value, key).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The budgets the server answers with (every state but breach and warn here; schemathesis
    /// sees those against a live daemon) have the documented shape, and a wrong field fails.
    #[tokio::test]
    async fn budget_answers_have_the_documented_shape() {
        let (shared, tasks) = shared();
        let (key, task) = &tasks[4];
        shared.record(key, *task, 0.1, Ok(sample(3.0).into()));
        let error = crate::probe::ProbeError::new(crate::probe::ErrorReason::Connect, "refused");
        let (key, task) = &tasks[0];
        shared.record(key, *task, 0.1, Err(error));
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("json");
        let list_schema = serde_json::json!({ "$ref": "#/components/schemas/BudgetList" });
        let mut list = json(get(&shared, "/api/v1/budgets").await).await;
        conforms(&doc, &list_schema, &list, "list").unwrap_or_else(|e| panic!("{e}"));
        let not_found = json(get(&shared, "/api/v1/budgets/nope").await).await;
        let not_found_schema = serde_json::json!({ "$ref": "#/components/schemas/NotFound" });
        conforms(&doc, &not_found_schema, &not_found, "404").unwrap_or_else(|e| panic!("{e}"));
        // The check is not vacuous: an undocumented field and a wrong type are found.
        list["budgets"][0]["surprise"] = serde_json::json!(1);
        assert!(conforms(&doc, &list_schema, &list, "list").is_err());
        list["budgets"][0]
            .as_object_mut()
            .expect("budget")
            .remove("surprise");
        list["budgets"][0]["probes"][0]["up"] = serde_json::json!("yes");
        assert!(conforms(&doc, &list_schema, &list, "list").is_err());
    }

    #[tokio::test]
    async fn the_updating_example_is_served_as_html() {
        let (shared, _) = shared();
        let response = get(&shared, "/examples/updating?budget=checkout").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let page = text(response).await;
        assert!(page.contains("Points are updating…"), "{page}");
        assert!(page.contains("encodeURIComponent(budget)"), "{page}");
    }
}
