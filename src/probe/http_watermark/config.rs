//! The `http_watermark` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{Choice, NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::http::config::HttpSourceConfig;
use crate::probe::oldest_pending::OldestPending;
use crate::probe::oldest_pending::config::OldestPendingConfig;

/// A view answering HTTP that shows which version of its source it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpWatermark {
    pub source: String,
    /// Appended to the source's URL; may carry a query.
    pub path: String,
    pub method: HttpMethod,
    /// The JSON body of a POST.
    pub body: Option<String>,
    /// Where the answer holds the value read.
    pub value: ValueAt,
    pub mode: HttpWatermarkMode,
}

/// Where in an answer the value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueAt {
    /// An RFC 6901 JSON pointer into the JSON body.
    Pointer(String),
    /// A response header.
    Header(String),
}

/// How the value read becomes lag.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpWatermarkMode {
    /// The value is a source version; the source says how old the oldest newer change is.
    OldestPending(OldestPending),
    /// The value is the time of the data the view shows; lag is now − that time, which reads
    /// an idle source as lag, so it is opt-in.
    SinceVersion,
    /// The view is a queue: the value is the enqueue time of its oldest pending item, and
    /// `count_pointer` the number of pending items, which must read 0 for "no item" to mean 0.
    QueueAge { count_pointer: String },
}

impl HttpWatermarkMode {
    pub fn key(&self) -> &'static str {
        match self {
            HttpWatermarkMode::OldestPending(_) => ModeKey::OldestPending.key(),
            HttpWatermarkMode::SinceVersion => ModeKey::SinceVersion.key(),
            HttpWatermarkMode::QueueAge { .. } => ModeKey::QueueAge.key(),
        }
    }
}

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    pub fn as_reqwest(self) -> reqwest::Method {
        match self {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        }
    }
}

impl Choice for HttpMethod {
    const ALL: &'static [Self] = &[HttpMethod::Get, HttpMethod::Post];

    fn key(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// The `mode` keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeKey {
    OldestPending,
    SinceVersion,
    QueueAge,
}

impl Choice for ModeKey {
    const ALL: &'static [Self] = &[
        ModeKey::OldestPending,
        ModeKey::SinceVersion,
        ModeKey::QueueAge,
    ];

    fn key(self) -> &'static str {
        match self {
            ModeKey::OldestPending => "oldest_pending",
            ModeKey::SinceVersion => "since_version",
            ModeKey::QueueAge => "queue_age",
        }
    }
}

config_table! {
    /// A view answering HTTP (a search index, a cache in front of a service, a service's JSON
    /// endpoint): lag is the age of the oldest source change newer than the version it shows.
    ///
    /// Each run sends one request to the `http` source and reads a version (a source
    /// sequence, the source's updated-at, a version header) by JSON pointer or from a
    /// response header; `oldest_pending` asks the source database for the oldest change
    /// newer than it, on that database's clock, so an idle source reads 0 and a view stuck
    /// on old data a growing lag. Cache headers (Age, Last-Modified, ETag) describe the
    /// cache entry, not the data: they are shown beside the lag, never used as it.
    pub(crate) struct HttpWatermarkConfig = "http_watermark" {
        /// Name of the http source to ask.
        source: SourceRef<HttpWatermark>,
        /// Path appended to the source's url, with an optional query, such as
        /// /orders/_search or /tasks?indexUids=orders&statuses=enqueued,processing,failed.
        path: NonEmpty<RequestPath>,
        /// GET or POST.
        method: Spanned<HttpMethod> = "GET",
        /// The body of a POST, JSON (checked when the config is loaded), sent as
        /// application/json. Only with method POST.
        body: Option<Spanned<JsonText>>,
        /// RFC 6901 JSON pointer to the value in the JSON answer, such as
        /// /hits/hits/0/_source/source_seq. Set exactly one of pointer and header.
        pointer: Option<JsonPointer>,
        /// Response header holding the value, such as X-Source-Version. Set exactly one of
        /// pointer and header.
        header: Option<ResponseHeader>,
        /// The query on a postgres or mysql source that, given the version read, returns the
        /// time of the oldest newer source change. Required in mode `oldest_pending`.
        oldest_pending: Option<OldestPendingConfig>,
        /// Mode queue_age only, and required there: JSON pointer to the number of pending
        /// items (Meilisearch: /total). "No oldest item" counts as an empty queue only when
        /// it reads 0; it is also the probe's backlog, in events.
        count_pointer: Option<JsonPointer>,
        /// `oldest_pending`: lag is the age of the oldest source change newer than the
        /// version read. `since_version`: the value is the time of the data the view shows
        /// and lag is now - that time, which reads an idle source as lag. `queue_age`: the
        /// pointer reads the enqueue time of the oldest pending item of a queue and lag is
        /// now - that time, 0 when `count_pointer` reads 0.
        mode: Spanned<ModeKey> = "oldest_pending",
    }
    exactly_one_of(pointer, header);
}

impl ReadsSource for HttpWatermark {
    const KIND: &'static str = <HttpWatermarkConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <HttpSourceConfig as Table>::TABLE.id;
}

impl ProbeKindConfig for HttpWatermarkConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        if let (Some(method), Some(span)) = (&self.method, written!(self.body)) {
            if method.value != HttpMethod::Post {
                ctx.error(
                    span,
                    &self.keys.path_of("body"),
                    "`body` is sent only with `method: POST`",
                );
                ok = false;
            }
        }
        let Some(mode) = &self.mode else {
            return ok;
        };
        let oldest_pending = written!(self.oldest_pending);
        let count_pointer = written!(self.count_pointer);
        if let (Some(span), false) = (count_pointer, mode.value == ModeKey::QueueAge) {
            ctx.error(
                span,
                &self.keys.path_of("count_pointer"),
                "`count_pointer` applies only to `mode: queue_age`",
            );
            ok = false;
        }
        match mode.value {
            ModeKey::OldestPending if oldest_pending.is_none() => {
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    "missing `oldest_pending`: a version alone cannot say how far behind the \
                     source it is; add `oldest_pending` (the query that returns the oldest \
                     source change newer than $1), or, for a value that is the time of the \
                     data shown, opt into `mode: since_version`, which reads an idle source as \
                     lag",
                );
                false
            }
            ModeKey::SinceVersion | ModeKey::QueueAge if oldest_pending.is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    format!(
                        "`mode: {}` ignores `oldest_pending`: remove one of them",
                        mode.value.key()
                    ),
                );
                false
            }
            ModeKey::QueueAge if written!(self.header).is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    "`mode: queue_age` reads the oldest item's enqueue time by `pointer`, \
                     beside `count_pointer` in the same answer; not from a header",
                );
                false
            }
            ModeKey::QueueAge if count_pointer.is_none() => {
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    "missing `count_pointer`: `mode: queue_age` counts a queue as empty only \
                     when the number of pending items reads 0, never because an item is \
                     missing from a malformed answer",
                );
                false
            }
            _ => ok,
        }
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            let value = match (&self.pointer, &self.header) {
                (Some(pointer), None) => ValueAt::Pointer(pointer.clone()),
                (None, Some(header)) => ValueAt::Header(header.clone()),
                _ => return None,
            };
            let mode = match self.mode.as_ref()?.value {
                ModeKey::OldestPending => {
                    HttpWatermarkMode::OldestPending(self.oldest_pending.as_ref()?.settings()?)
                }
                ModeKey::SinceVersion => HttpWatermarkMode::SinceVersion,
                ModeKey::QueueAge => HttpWatermarkMode::QueueAge {
                    count_pointer: self.count_pointer.clone()?,
                },
            };
            Some(ProbeKind::HttpWatermark(HttpWatermark {
                source: self.source.as_ref()?.value.clone(),
                path: self.path.clone()?,
                method: self.method.as_ref()?.value,
                body: self.body.as_ref().map(|body| body.value.clone()),
                value,
                mode,
            }))
        };
        single(kind())
    }
}

/// A path with an optional query, appended to the source's URL: it starts with `/` and has no
/// fragment.
pub(crate) struct RequestPath;

impl Scalar for RequestPath {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, path: &Text) -> Option<String> {
        let problem = if !path.value.starts_with('/') {
            Some("it must start with /".to_owned())
        } else if path.value.contains('#') {
            Some("it has a fragment (#…), which is never sent".to_owned())
        } else if path.value.chars().any(char::is_whitespace) {
            Some("it has white space; write %20".to_owned())
        } else {
            reqwest::Url::parse(&format!("http://host{}", path.value))
                .err()
                .map(|e| e.to_string())
        };
        match problem {
            Some(problem) => {
                ctx.error(
                    path.span,
                    &path.path,
                    format!(
                        "invalid path {}: {problem}; expected such as /orders/_search",
                        path.quoted()
                    ),
                );
                None
            }
            None => Some(path.value.clone()),
        }
    }

    fn json_schema() -> Value {
        serde_json::json!({ "type": "string", "pattern": "^/" })
    }
}

/// A JSON document, checked when the config is loaded and sent as written.
pub(crate) struct JsonText;

impl Scalar for JsonText {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<String> {
        match serde_json::from_str::<Value>(&text.value) {
            Ok(_) => Some(text.value.clone()),
            Err(error) => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!("`body` is not JSON: {error}"),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// An RFC 6901 JSON pointer: empty (the whole document) or `/`-separated reference tokens,
/// in which `~` is only written as `~0` (a `~`) or `~1` (a `/`).
pub(crate) struct JsonPointer;

impl Scalar for JsonPointer {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, pointer: &Text) -> Option<String> {
        let value = &pointer.value;
        let problem = if !value.is_empty() && !value.starts_with('/') {
            Some("it must start with / (an empty pointer is the whole document)")
        } else if value
            .split('~')
            .skip(1)
            .any(|after| !after.starts_with(['0', '1']))
        {
            Some("`~` must be written ~0, and a `/` inside a key ~1")
        } else {
            None
        };
        match problem {
            Some(problem) => {
                ctx.error(
                    pointer.span,
                    &pointer.path,
                    format!(
                        "invalid JSON pointer {}: {problem}; expected such as \
                         /hits/hits/0/_source/source_seq",
                        pointer.quoted()
                    ),
                );
                None
            }
            None => Some(value.clone()),
        }
    }

    fn json_schema() -> Value {
        serde_json::json!({ "type": "string", "pattern": "^(/|$)" })
    }
}

/// A response header's name, as the HTTP client reads it.
pub(crate) struct ResponseHeader;

impl Scalar for ResponseHeader {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        if reqwest::header::HeaderName::from_bytes(name.value.as_bytes()).is_ok() {
            return Some(name.value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid header name {}: letters, digits and !#$%&'*+-.^_`|~ only, such as \
                 X-Source-Version",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        <NonEmpty<String>>::json_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    const VIEWS: &str = r#"
sources:
  search: { http: { url: "http://search:9200", headers: { Authorization: "Bearer ${SEARCH_TOKEN}" } } }
  meili: { http: { url: "http://meili:7700", bearer_token: "${MEILI_KEY}" } }
  orders-db: { postgres: { dsn: "host=db user=lagbudget dbname=orders" } }
  shop-db: { mysql: { url: "mysql://lagbudget@shop:3306/shop" } }
budgets:
  - name: search
    max_lag: 5s
    probes:
      - name: search-index
        http_watermark:
          source: search
          path: /orders/_search
          method: POST
          body: '{"size":1,"sort":[{"source_seq":"desc"}],"_source":["source_seq"]}'
          pointer: /hits/hits/0/_source/source_seq
          oldest_pending: { source: orders-db, query: "SELECT min(created_at), count(*) FROM orders WHERE id > $1" }
      - name: page-cache
        http_watermark:
          source: search
          path: /catalog?lang=en
          header: X-Source-Version
          oldest_pending: { source: shop-db, query: "SELECT min(changed_at) FROM changes WHERE seq > ?" }
      - name: meili-queue
        http_watermark:
          source: meili
          path: /tasks?indexUids=orders&statuses=enqueued,processing,failed&limit=1&reverse=true
          pointer: /results/0/enqueuedAt
          count_pointer: /total
          mode: queue_age
      - name: built-at
        http_watermark: { source: search, path: /status, pointer: /built_at, mode: since_version }
"#;

    #[test]
    fn http_watermarks_resolve_to_the_model() {
        let env = |name: &str| Some(format!("{name}-value"));
        let config = load_text(VIEWS, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let kinds: Vec<&HttpWatermark> = config.budgets[0]
            .probes
            .iter()
            .map(|probe| match &probe.kind {
                ProbeKind::HttpWatermark(w) => w,
                other => panic!("not an http_watermark: {other:?}"),
            })
            .collect();
        let search = kinds[0];
        assert_eq!(search.method, HttpMethod::Post);
        assert_eq!(search.path, "/orders/_search");
        assert!(search.body.as_deref().is_some_and(|b| b.contains("source_seq")));
        assert_eq!(
            search.value,
            ValueAt::Pointer("/hits/hits/0/_source/source_seq".into())
        );
        assert!(matches!(&search.mode, HttpWatermarkMode::OldestPending(p) if p.source == "orders-db"));
        assert_eq!(kinds[1].method, HttpMethod::Get, "GET by default");
        assert_eq!(kinds[1].value, ValueAt::Header("X-Source-Version".into()));
        assert!(matches!(&kinds[1].mode, HttpWatermarkMode::OldestPending(p) if p.source == "shop-db"));
        assert_eq!(
            kinds[2].mode,
            HttpWatermarkMode::QueueAge {
                count_pointer: "/total".into()
            }
        );
        assert_eq!(kinds[3].mode, HttpWatermarkMode::SinceVersion);
        let probe = &config.budgets[0].probes[0];
        assert_eq!(probe.kind.sources(), ["search", "orders-db"]);
        assert_eq!(config.budgets[0].probes[2].kind.sources(), ["meili"]);
    }

    #[test]
    fn http_watermark_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  search: { http: { url: "http://search:9200" } }
  db: { postgres: { dsn: "host=db user=lagbudget dbname=orders" } }
  cache: { redis: { url: "redis://cache:6379" } }
budgets:
  - name: b
    max_lag: 5s
    probes:
      - name: a
        http_watermark: { source: search, path: orders, pointer: hits, body: "{}" }
      - name: b
        http_watermark: { source: search, path: "/x#y", header: "X Version", pointer: /v, method: PUT }
      - name: c
        http_watermark: { source: cache, path: /x, method: POST, body: "{nope", pointer: "/a~2b", oldest_pending: { source: db, query: "SELECT 1" } }
      - name: d
        http_watermark: { source: search, path: /x, pointer: /v, mode: since_version, count_pointer: /total, oldest_pending: { source: db, query: "SELECT 1" } }
      - name: e
        http_watermark: { source: search, path: /tasks, pointer: /results/0/enqueuedAt, mode: queue_age }
      - name: f
        http_watermark: { source: search, path: /tasks, header: X-Oldest, count_pointer: /total, mode: queue_age }
"#;
        let actual = errors_of(text, &|_| None);
        let expected = [
            "11:25: budgets[0].probes[0].http_watermark: missing `oldest_pending`: a version alone cannot say how far behind the source it is; add `oldest_pending` (the query that returns the oldest source change newer than $1), or, for a value that is the time of the data shown, opt into `mode: since_version`, which reads an idle source as lag",
            "11:49: budgets[0].probes[0].http_watermark.path: invalid path \"orders\": it must start with /; expected such as /orders/_search",
            "11:66: budgets[0].probes[0].http_watermark.pointer: invalid JSON pointer \"hits\": it must start with / (an empty pointer is the whole document); expected such as /hits/hits/0/_source/source_seq",
            "11:72: budgets[0].probes[0].http_watermark.body: `body` is sent only with `method: POST`",
            "13:25: budgets[0].probes[1].http_watermark: missing `oldest_pending`: a version alone cannot say how far behind the source it is; add `oldest_pending` (the query that returns the oldest source change newer than $1), or, for a value that is the time of the data shown, opt into `mode: since_version`, which reads an idle source as lag",
            "13:49: budgets[0].probes[1].http_watermark.path: invalid path \"/x#y\": it has a fragment (#…), which is never sent; expected such as /orders/_search",
            "13:57: budgets[0].probes[1].http_watermark.header: `pointer` and `header` cannot both be set: set exactly one of them",
            "13:65: budgets[0].probes[1].http_watermark.header: invalid header name \"X Version\": letters, digits and !#$%&'*+-.^_`|~ only, such as X-Source-Version",
            "13:99: budgets[0].probes[1].http_watermark.method: invalid value \"PUT\": expected one of GET, POST",
            "15:35: budgets[0].probes[2].http_watermark.source: source \"cache\" is a redis source; http_watermark needs http",
            "15:72: budgets[0].probes[2].http_watermark.body: `body` is not JSON: key must be a string at line 1 column 2",
            "15:90: budgets[0].probes[2].http_watermark.pointer: invalid JSON pointer \"/a~2b\": `~` must be written ~0, and a `/` inside a key ~1; expected such as /hits/hits/0/_source/source_seq",
            "17:72: budgets[0].probes[3].http_watermark.mode: `mode: since_version` ignores `oldest_pending`: remove one of them",
            "17:87: budgets[0].probes[3].http_watermark.count_pointer: `count_pointer` applies only to `mode: queue_age`",
            "19:25: budgets[0].probes[4].http_watermark: missing `count_pointer`: `mode: queue_age` counts a queue as empty only when the number of pending items reads 0, never because an item is missing from a malformed answer",
            "21:104: budgets[0].probes[5].http_watermark.mode: `mode: queue_age` reads the oldest item's enqueue time by `pointer`, beside `count_pointer` in the same answer; not from a header",
        ];
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
