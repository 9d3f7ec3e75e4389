//! Canary markers over HTTP: the writer sends one request per marker to a service (by default
//! a POST of the marker as JSON), and a view is a request whose JSON answer holds the seq it
//! shows at a JSON pointer (a read model, a search index, a cache in front of a service).
//!
//! Both go through the `http` source's shared client, as `http_watermark` does: its URL,
//! headers and credentials, TLS, connection slots, body cap and mapping of failures to bounded
//! reasons.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::config::{Canary, ReadTarget, WriteTarget};
use super::{Marker, fill_placeholders, rfc3339, seq_from_json, with_instance};
use crate::probe::http::{Answer, HttpClient, where_it_stops};
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

fn client(handle: &SourceHandle) -> Result<Arc<HttpClient>, ProbeError> {
    match handle {
        SourceHandle::Http(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "an http canary target needs an http source",
        )),
    }
}

/// `template` with `$instance`, `$probe`, `$seq` and `$written_at` (each not followed by a
/// letter, digit or `_`) replaced by the marker's values, in one pass: a value is never read
/// again as a placeholder.
fn fill(template: &str, marker: &Marker<'_>) -> String {
    let seq = marker.seq.to_string();
    let written_at = rfc3339(marker.written_at);
    let values = [marker.instance, marker.probe, &seq, &written_at];
    fill_placeholders(
        template,
        &["$instance", "$probe", "$seq", "$written_at"],
        |index, out| out.push_str(values[index]),
    )
}

/// Sends one request per marker.
pub struct HttpWriter {
    client: Arc<HttpClient>,
    method: Method,
    /// The path, `$instance` replaced; `$seq` is replaced per marker.
    path: String,
    /// The body template; `None`: the marker as JSON for a POST, no body for a GET.
    body: Option<String>,
}

impl HttpWriter {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let WriteTarget::Http { path, method, body } = &spec.write.target else {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                "an http source takes a canary write with `path` only",
            ));
        };
        Ok(Self {
            client: client(handle)?,
            method: method.as_reqwest(),
            path: with_instance(path, &spec.instance),
            body: body.clone(),
        })
    }

    /// One request; any answer but a 2xx is a failed write (`http_status`, quoting the start
    /// of the answer), as are the client's own failures (`connect`, `timeout`, `decode`).
    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        let path = fill(&self.path, marker);
        let body = match &self.body {
            Some(template) => Some(fill(template, marker)),
            None if self.method == Method::POST => Some(marker.json()),
            None => None,
        };
        let answer = self
            .client
            .fetch(self.method.clone(), &path, body.as_deref(), deadline)
            .await?;
        answer.require_success(self.client.redirects())
    }

    /// Whether the source answers at its URL (which writes nothing); the marker request itself
    /// is not sent.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let server = self.client.check(deadline).await?;
        Ok(format!(
            "{server}; markers are sent as {} {}",
            self.method, self.path
        ))
    }
}

/// Asks an HTTP view for the seq it shows.
pub struct HttpReader {
    client: Arc<HttpClient>,
    method: Method,
    /// The path, `$instance` replaced.
    path: String,
    /// The body, `$instance` replaced.
    body: Option<String>,
    pointer: String,
}

impl HttpReader {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let ReadTarget::Http {
            path,
            method,
            body,
            pointer,
        } = &spec.read.target
        else {
            return Err(ProbeError::new(
                ErrorReason::Connect,
                "an http source is read as a canary view with `path` only",
            ));
        };
        Ok(Self {
            client: client(handle)?,
            method: method.as_reqwest(),
            path: with_instance(path, &spec.instance),
            body: body.as_ref().map(|body| with_instance(body, &spec.instance)),
            pointer: pointer.clone(),
        })
    }

    /// The seq the view shows, read at the pointer.
    ///
    /// "Shows no marker of this instance yet" (`None`) is a 404, or `null` at the pointer:
    /// the path names this instance's marker, and a read model that has not applied the
    /// first one answers "not found" or an empty field. Either keeps the lag growing from the
    /// writer's first marker (never 0), and `give_up` turns it into `no_data` in the end; a
    /// misspelt path reads the same way, which `check --connect` shows as "no marker (HTTP
    /// 404)". Every other answer but a 2xx is an error (`http_status`), and so is a 2xx whose
    /// JSON has nothing at the pointer (`decode`, saying where the pointer stops): a view
    /// answering in another shape is misread, not behind.
    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let answer = self.ask(deadline).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.seq_in(&answer)
    }

    async fn ask(&self, deadline: Instant) -> Result<Answer, ProbeError> {
        self.client
            .fetch(
                self.method.clone(),
                &self.path,
                self.body.as_deref(),
                deadline,
            )
            .await
    }

    fn seq_in(&self, answer: &Answer) -> Result<Option<i64>, ProbeError> {
        answer.require_success(self.client.redirects())?;
        seq_at(&answer.json()?, &self.pointer, &answer.request)
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let answer = self.ask(deadline).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(format!(
                "shows no marker of this instance yet (HTTP 404 for {})",
                answer.request
            ));
        }
        Ok(match self.seq_in(&answer)? {
            Some(seq) => format!("shows marker seq {seq}"),
            None => format!(
                "shows no marker of this instance yet ({} is null)",
                self.pointer
            ),
        })
    }
}

/// The seq at `pointer` in a view's JSON answer: `None` for `null`, `decode` when the pointer
/// finds nothing or something that is not an integer.
fn seq_at(json: &Value, pointer: &str, request: &str) -> Result<Option<i64>, ProbeError> {
    match json.pointer(pointer) {
        None => Err(ProbeError::new(
            ErrorReason::Decode,
            format!(
                "pointer {pointer} finds nothing in the answer to {request} ({})",
                where_it_stops(json, pointer)
            ),
        )),
        Some(Value::Null) => Ok(None),
        Some(value) => seq_from_json(value).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once_and_only_as_whole_words() {
        let marker = Marker {
            instance: "h1",
            probe: "orders/visible",
            seq: 42,
            written_at: 1_700_000_000.123_4,
        };
        assert_eq!(
            fill("/canary/$instance/$seq?x=$seqs&p=$probe", &marker),
            "/canary/h1/42?x=$seqs&p=orders/visible"
        );
        assert_eq!(
            fill(r#"{"at":"$written_at","n":$seq,"cost":"$5"}"#, &marker),
            r#"{"at":"2023-11-14T22:13:20.123Z","n":42,"cost":"$5"}"#
        );
        let dollar = Marker {
            instance: "$seq",
            ..marker
        };
        assert_eq!(fill("$instance", &dollar), "$seq", "a value is not filled again");
    }

    #[test]
    fn seqs_are_read_at_the_pointer_and_null_is_no_marker() {
        let json: Value =
            serde_json::from_str(r#"{"order":{"seq":"7"},"none":null,"n":8}"#).expect("json");
        assert_eq!(seq_at(&json, "/order/seq", "GET /v").ok(), Some(Some(7)));
        assert_eq!(seq_at(&json, "/n", "GET /v").ok(), Some(Some(8)));
        assert_eq!(seq_at(&json, "/none", "GET /v").ok(), Some(None));
        let missing = seq_at(&json, "/order/version", "GET /v").expect_err("missing");
        assert_eq!(missing.reason, ErrorReason::Decode);
        assert!(
            missing.message.contains("(/order is an object with keys seq)"),
            "{missing}"
        );
        let object = seq_at(&json, "/order", "GET /v").expect_err("an object");
        assert_eq!(object.reason, ErrorReason::Decode);
    }
}
