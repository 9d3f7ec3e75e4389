//! `http_watermark`: lag of a view answering HTTP (a search index, a cache in front of a
//! service, a service's own JSON endpoint), as the age of the oldest source change newer than
//! the version the view shows, asked of the source database on its own clock.
//!
//! An HTTP answer says *what* it shows (a source sequence in a document, a version header),
//! never how far behind that is; and its cache headers (`Age`, `Last-Modified`, `ETag`) date
//! the cache entry, not the data. So each run sends one request (GET, or POST with a JSON
//! body), reads the version by JSON pointer or from a response header, and hands it to the
//! shared source-side comparison (`oldest_pending`): an idle source has no newer change and
//! reads 0, a view stuck on old data (a cache serving an old object, stale-while-revalidate
//! included) reads a growing lag. The cache headers go into the probe's detail only.
//!
//! Two opt-in modes read the value as a time instead: `since_version` (lag = now − the time
//! of the data shown, which reads an idle source as lag) and `queue_age`, for views that are
//! queues (Meilisearch's tasks): lag = now − the enqueue time of the oldest pending item, and
//! 0 only when the answer's count of pending items reads 0 — a missing item in a malformed
//! answer is never taken for an empty queue.

pub mod config;
pub mod dashboard;
pub mod detail;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::time::Instant;

use super::http::{Answer, HttpClient, describe, shorten, where_it_stops};
use super::oldest_pending::{Shape, SourceComparison, parse_timestamp};
use super::{Backlog, BacklogUnit, Detail, ErrorReason, ProbeError, Reading, Sample};
use crate::clock::unix_now;
use crate::model::{HttpWatermark, HttpWatermarkMode, ValueAt};
use detail::HttpDetail;

/// Values are quoted in details and messages up to this many characters.
const MAX_VALUE_CHARS: usize = 64;

pub struct HttpWatermarkProbe {
    client: Arc<HttpClient>,
    spec: HttpWatermark,
    /// The source-side comparison; `None` in modes `since_version` and `queue_age`.
    comparison: Option<SourceComparison>,
    /// The previous value read, to count positions that go backwards.
    previous: Option<String>,
}

/// What an answer holds where the probe looks: the value as text, or why there is none.
enum Found {
    Value(String),
    Nothing(String),
}

/// What an answer means in the probe's mode, before the source is asked anything.
enum Meaning {
    /// A source version, for `oldest_pending`.
    Version(String),
    /// The time of the data shown (`since_version`).
    Time { text: String, at: f64 },
    /// A queue: how many items wait, and when the oldest was enqueued (none when empty).
    Queue {
        count: u64,
        oldest: Option<(String, f64)>,
    },
}

impl HttpWatermarkProbe {
    pub fn new(
        spec: &HttpWatermark,
        client: Arc<HttpClient>,
        comparison: Option<SourceComparison>,
    ) -> Self {
        Self {
            client,
            spec: spec.clone(),
            comparison,
            previous: None,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        let answer = self.ask(deadline).await?;
        let detail = HttpDetail::of(
            answer.status.as_u16(),
            answer.body.len() as u64,
            &answer.headers,
        );
        let mut sample = match self.interpret(&answer)? {
            Meaning::Version(version) => {
                let comparison = self.comparison.as_ref().ok_or_else(|| {
                    ProbeError::new(ErrorReason::Query, "mode oldest_pending needs oldest_pending")
                })?;
                let pending = comparison.one(&version, deadline).await?;
                Sample {
                    lag_seconds: Some(pending.lag_seconds),
                    backlog: pending.count.map(|n| Backlog {
                        unit: BacklogUnit::Rows,
                        value: n as f64,
                    }),
                    detail: Some(match pending.count {
                        Some(n) => format!("version {}, {n} newer source changes", quoted(&version)),
                        None => format!("version {}", quoted(&version)),
                    }),
                    position: Some(version),
                    negative_lag_clamped: pending.negative_lag_clamped,
                    ..Sample::default()
                }
            }
            Meaning::Time { text, at } => {
                let (lag, clamped) = clamp(unix_now() - at);
                Sample {
                    lag_seconds: Some(lag),
                    detail: Some(format!("data of {}", quoted(&text))),
                    position: Some(text),
                    negative_lag_clamped: clamped,
                    ..Sample::default()
                }
            }
            Meaning::Queue { count, oldest } => {
                let backlog = Some(Backlog {
                    unit: BacklogUnit::Events,
                    value: count as f64,
                });
                match oldest {
                    Some((text, at)) => {
                        let (lag, clamped) = clamp(unix_now() - at);
                        Sample {
                            lag_seconds: Some(lag),
                            backlog,
                            detail: Some(format!(
                                "{count} pending, the oldest enqueued at {}",
                                quoted(&text)
                            )),
                            position: Some(text),
                            negative_lag_clamped: clamped,
                            ..Sample::default()
                        }
                    }
                    None => Sample {
                        lag_seconds: Some(0.0),
                        backlog,
                        detail: Some("queue empty".to_owned()),
                        position: Some("empty".to_owned()),
                        ..Sample::default()
                    },
                }
            }
        };
        if let Some(position) = &sample.position {
            sample.position_regressed = self
                .previous
                .as_deref()
                .is_some_and(|previous| went_back(previous, position));
            self.previous = Some(position.clone());
        }
        Ok(Reading {
            sample,
            detail: Some(Detail::HttpWatermark(detail)),
        })
    }

    /// Sends the probe's request and reads what it reads, naming what failed (status, TLS,
    /// JSON, pointer, header, a value that is not a time), then checks that the source accepts
    /// `oldest_pending`. Measures nothing.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let answer = self.ask(deadline).await?;
        let mut found = format!(
            "HTTP {}, {} bytes, ",
            answer.status.as_u16(),
            answer.body.len()
        );
        match self.interpret(&answer)? {
            Meaning::Version(version) => {
                found.push_str(&format!("version {}", quoted(&version)));
            }
            Meaning::Time { text, .. } => found.push_str(&format!("data of {}", quoted(&text))),
            Meaning::Queue {
                count,
                oldest: Some((text, _)),
            } => found.push_str(&format!(
                "{count} pending, the oldest enqueued at {}",
                quoted(&text)
            )),
            Meaning::Queue { oldest: None, .. } => found.push_str("queue empty"),
        }
        if let Some(comparison) = &self.comparison {
            comparison.check(Shape::OneVersion, deadline).await?;
            found.push_str("; oldest_pending accepted");
        }
        Ok(found)
    }

    /// The probe's one request, answered 2xx.
    async fn ask(&self, deadline: Instant) -> Result<Answer, ProbeError> {
        let answer = self
            .client
            .fetch(
                self.spec.method.as_reqwest(),
                &self.spec.path,
                self.spec.body.as_deref(),
                deadline,
            )
            .await?;
        answer.require_success(self.client.redirects())?;
        Ok(answer)
    }

    /// What the answer means in the probe's mode.
    fn interpret(&self, answer: &Answer) -> Result<Meaning, ProbeError> {
        let json = match (&self.spec.value, &self.spec.mode) {
            (ValueAt::Pointer(_), _) | (_, HttpWatermarkMode::QueueAge { .. }) => {
                Some(answer.json()?)
            }
            _ => None,
        };
        let found = match (&self.spec.value, &json) {
            (ValueAt::Pointer(pointer), Some(json)) => at_pointer(json, pointer)?,
            (ValueAt::Header(name), _) => in_header(answer, name)?,
            (ValueAt::Pointer(_), None) => Found::Nothing("no JSON".to_owned()),
        };
        let no_version = |why: String| {
            ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "{why}: the answer to {} (HTTP {}, {} bytes) shows no version",
                    answer.request,
                    answer.status.as_u16(),
                    answer.body.len()
                ),
            )
        };
        match &self.spec.mode {
            HttpWatermarkMode::OldestPending(_) => match found {
                Found::Value(version) => Ok(Meaning::Version(version)),
                Found::Nothing(why) => Err(no_version(why)),
            },
            HttpWatermarkMode::SinceVersion => match found {
                Found::Value(text) => {
                    let at = as_time(&text, "mode since_version")?;
                    Ok(Meaning::Time { text, at })
                }
                Found::Nothing(why) => Err(no_version(why)),
            },
            HttpWatermarkMode::QueueAge { count_pointer } => {
                let json = json.as_ref().ok_or_else(|| {
                    ProbeError::new(ErrorReason::Decode, "mode queue_age reads JSON")
                })?;
                let count = pending_count(json, count_pointer)?;
                match found {
                    Found::Value(text) => {
                        let at = as_time(&text, "mode queue_age")?;
                        Ok(Meaning::Queue {
                            count,
                            oldest: Some((text, at)),
                        })
                    }
                    Found::Nothing(_) if count == 0 => Ok(Meaning::Queue {
                        count,
                        oldest: None,
                    }),
                    Found::Nothing(why) => Err(ProbeError::new(
                        ErrorReason::NoData,
                        format!(
                            "{why}, but count_pointer {count_pointer} reads {count} pending \
                             items: the oldest one's enqueue time is unknown"
                        ),
                    )),
                }
            }
        }
    }
}

/// The value at `pointer`: a string or a number (its text is the version); nothing for a
/// missing or null value; `decode` for anything else.
fn at_pointer(json: &Value, pointer: &str) -> Result<Found, ProbeError> {
    match json.pointer(pointer) {
        None => Ok(Found::Nothing(format!(
            "pointer {pointer} finds nothing ({})",
            where_it_stops(json, pointer)
        ))),
        Some(Value::Null) => Ok(Found::Nothing(format!("pointer {pointer} finds null"))),
        Some(Value::String(text)) => Ok(Found::Value(text.clone())),
        Some(Value::Number(number)) => Ok(Found::Value(number.to_string())),
        Some(other) => Err(ProbeError::new(
            ErrorReason::Decode,
            format!(
                "pointer {pointer} finds {}, not a version (a string or a number)",
                describe(other)
            ),
        )),
    }
}

/// The value of header `name`; nothing when it is absent or empty.
fn in_header(answer: &Answer, name: &str) -> Result<Found, ProbeError> {
    let Some(value) = answer.headers.get(name) else {
        return Ok(Found::Nothing(format!("header {name} is not in the answer")));
    };
    let text = value.to_str().map_err(|_| {
        ProbeError::new(
            ErrorReason::Decode,
            format!("header {name} holds bytes that are not text"),
        )
    })?;
    match text.trim() {
        "" => Ok(Found::Nothing(format!("header {name} is empty"))),
        text => Ok(Found::Value(text.to_owned())),
    }
}

/// The count of pending items at `pointer`: a whole number, or a string of one.
fn pending_count(json: &Value, pointer: &str) -> Result<u64, ProbeError> {
    let found = json.pointer(pointer).ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            format!(
                "count_pointer {pointer} finds nothing ({}): not the answer expected, so \
                 whether the queue is empty is unknown",
                where_it_stops(json, pointer)
            ),
        )
    })?;
    let count = match found {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    count.ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            format!(
                "count_pointer {pointer} finds {}, not a count of pending items",
                describe(found)
            ),
        )
    })
}

/// A value read as a time (unix seconds or milliseconds, or RFC 3339), as unix seconds.
fn as_time(text: &str, mode: &str) -> Result<f64, ProbeError> {
    let at = parse_timestamp(text).map_err(|problem| {
        ProbeError::new(
            ErrorReason::Decode,
            format!("{mode} reads the value as a time, but {problem}"),
        )
    })?;
    Ok(unix_seconds(at))
}

fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

fn clamp(seconds: f64) -> (f64, bool) {
    if seconds < 0.0 {
        (0.0, true)
    } else {
        (seconds, false)
    }
}

fn quoted(value: &str) -> String {
    format!("{:?}", shorten(value, MAX_VALUE_CHARS))
}

/// Whether the value went backwards: both numbers, or both times, and the new one is smaller.
fn went_back(previous: &str, current: &str) -> bool {
    if let (Ok(previous), Ok(current)) = (previous.parse::<f64>(), current.parse::<f64>()) {
        return current < previous;
    }
    match (parse_timestamp(previous), parse_timestamp(current)) {
        (Ok(previous), Ok(current)) => current < previous,
        _ => false,
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for HttpWatermarkProbe {
    const KEY: &'static str = "http_watermark";
    type Settings = HttpWatermark;

    fn new(
        _probe: &crate::model::Probe,
        settings: &HttpWatermark,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        let client = sources.http(&settings.source)?;
        let comparison = match &settings.mode {
            HttpWatermarkMode::OldestPending(spec) => Some(SourceComparison::new(spec, sources)?),
            HttpWatermarkMode::SinceVersion | HttpWatermarkMode::QueueAge { .. } => None,
        };
        Ok(Self::new(settings, client, comparison))
    }

    async fn run(&mut self, deadline: Instant) -> Result<Reading, ProbeError> {
        HttpWatermarkProbe::run(self, deadline).await
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        HttpWatermarkProbe::check(self, deadline).await
    }

    fn source(settings: &HttpWatermark) -> &str {
        &settings.source
    }

    fn sources(settings: &HttpWatermark) -> Vec<&str> {
        let mut sources = vec![settings.source.as_str()];
        if let HttpWatermarkMode::OldestPending(spec) = &settings.mode {
            sources.push(spec.source.as_str());
        }
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn pointers_read_strings_and_numbers_and_say_where_they_stop() {
        let answer = json(
            r#"{"hits":{"total":{"value":0},"hits":[]},"v":"abc","n":1234,"b":true,"z":null}"#,
        );
        assert!(matches!(at_pointer(&answer, "/v"), Ok(Found::Value(v)) if v == "abc"));
        assert!(matches!(at_pointer(&answer, "/n"), Ok(Found::Value(v)) if v == "1234"));
        assert!(matches!(at_pointer(&answer, "/z"), Ok(Found::Nothing(why)) if why == "pointer /z finds null"));
        let Ok(Found::Nothing(why)) = at_pointer(&answer, "/hits/hits/0/_source/source_seq") else {
            panic!("an empty index shows nothing");
        };
        assert_eq!(
            why,
            "pointer /hits/hits/0/_source/source_seq finds nothing (/hits/hits is an empty array)"
        );
        let Ok(Found::Nothing(why)) = at_pointer(&answer, "/version") else {
            panic!("missing");
        };
        assert!(why.ends_with("(the answer is an object with keys b, hits, n, v, z)"), "{why}");
        let error = at_pointer(&answer, "/hits").err().expect("an object");
        assert_eq!(error.reason, ErrorReason::Decode);
        assert!(error.message.contains("finds an object with keys hits, total"), "{error}");
        assert!(at_pointer(&answer, "/b").is_err());
    }

    #[test]
    fn counts_are_whole_numbers_and_their_absence_is_not_zero() {
        let answer = json(r#"{"total":3,"s":"0","f":1.5,"results":[]}"#);
        assert_eq!(pending_count(&answer, "/total").expect("count"), 3);
        assert_eq!(pending_count(&answer, "/s").expect("count"), 0);
        assert_eq!(
            pending_count(&answer, "/f").expect_err("fraction").reason,
            ErrorReason::Decode
        );
        let missing = pending_count(&answer, "/count").expect_err("missing");
        assert_eq!(missing.reason, ErrorReason::Decode);
        assert!(missing.message.contains("unknown"), "{missing}");
    }

    #[test]
    fn positions_that_go_back_are_noticed() {
        assert!(went_back("10", "9"));
        assert!(!went_back("9", "10"));
        assert!(went_back("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"));
        assert!(!went_back("v2", "v1"), "opaque versions are not ordered");
    }
}
