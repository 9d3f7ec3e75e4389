//! The HTTP client of one `http` source, shared by every probe that reads it: one connection
//! pool, at most `max_connections` requests in flight, a body cap enforced while the body
//! streams in, and every failure mapped to a bounded reason. The RabbitMQ management client
//! reads its answers with the same capped reader and names transport errors the same way.
//! Both kinds that read JSON answers (`http_watermark`, `canary`) say with the same helpers
//! where a JSON pointer that finds nothing stops.
//!
//! A request holds one of the source's slots; waiting for a slot, connecting (at most
//! `CONNECT_TIMEOUT`), the TLS handshake, sending and reading the body all count against the
//! run's deadline. Header values, the bearer token and the basic-auth password are marked
//! sensitive for the HTTP stack and masked in every part of an answer quoted in a message.

pub mod config;

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::pool::Slots;
use super::{ErrorReason, ProbeError};
use crate::model::{HttpAuth, HttpSource, Secret, SecretSet};

/// Longest a TCP connect may take, within the run's deadline: a host that does not answer is
/// `connect`, not a whole timeout spent waiting for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of an answer's body a message quotes, at most.
const SNIPPET_CHARS: usize = 60;

pub struct HttpClient {
    /// The source's URL without a trailing slash.
    base: String,
    https: bool,
    http: reqwest::Client,
    basic: Option<(String, Secret)>,
    /// Whether `headers` sets a Content-Type (a POST body is sent as JSON otherwise).
    sets_content_type: bool,
    max_body: u64,
    redirects: u64,
    slots: Slots,
    /// This source's own secret values, masked in the parts of answers a message quotes before
    /// the message is cut to length (the daemon scrubs whole messages again later).
    secrets: SecretSet,
}

/// An answer, whatever its status, with its body read in full (within `max_body`).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The start of the body, on one line, cut and free of the source's secrets: what a
    /// message may quote.
    pub snippet: String,
    /// What was asked, for messages: `GET /orders/_search` (the path without its query).
    pub request: String,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        content_type(&self.headers)
    }

    /// Fails with `http_status` unless the status is 2xx, saying what answered and why.
    pub fn require_success(&self, redirects: u64) -> Result<(), ProbeError> {
        if self.status.is_success() {
            return Ok(());
        }
        let hint = if self.status.is_redirection() {
            if redirects == 0 {
                " (redirects are not followed; `redirects` on the source allows some)".to_owned()
            } else {
                format!(" (after {redirects} redirects)")
            }
        } else {
            String::new()
        };
        let quoted = if self.snippet.is_empty() {
            String::new()
        } else {
            format!(": {:?}", self.snippet)
        };
        Err(ProbeError::new(
            ErrorReason::HttpStatus,
            format!(
                "HTTP {} for {}{hint}{quoted}",
                status_text(self.status),
                self.request
            ),
        ))
    }

    /// The body as JSON, or `decode` saying what it was instead (HTML, text, nothing).
    pub fn json(&self) -> Result<serde_json::Value, ProbeError> {
        serde_json::from_slice(&self.body).map_err(|_| {
            let start = if self.body.is_empty() {
                "it is empty".to_owned()
            } else {
                format!("it starts with {:?}", self.snippet)
            };
            ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "the answer to {} is not JSON (HTTP {}, content-type {}, {} bytes): {start}",
                    self.request,
                    self.status.as_u16(),
                    self.content_type(),
                    self.body.len()
                ),
            )
        })
    }
}

impl HttpClient {
    /// Builds the client, with its CA certificates and client identity; connects to nothing.
    pub fn new(
        source: &str,
        spec: &HttpSource,
        max_connections: usize,
    ) -> Result<Self, ProbeError> {
        let invalid = |what: &str| {
            // Validation checked every one of these already; this guards a reload race only.
            ProbeError::new(
                ErrorReason::Connect,
                format!("source {source}: invalid {what}"),
            )
        };
        let mut secrets = SecretSet::default();
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            secrets.insert(value.expose());
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("header"))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| invalid("header"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut basic = None;
        match &spec.auth {
            Some(HttpAuth::Bearer(token)) => {
                secrets.insert(token.expose());
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| invalid("bearer_token"))?;
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
            Some(HttpAuth::Basic { username, password }) => {
                secrets.insert(password.expose());
                basic = Some((username.clone(), password.clone()));
            }
            None => {}
        }
        let sets_content_type = headers.contains_key(header::CONTENT_TYPE);
        let redirect = match spec.redirects {
            0 => reqwest::redirect::Policy::none(),
            n => reqwest::redirect::Policy::limited(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("lagbudget/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .redirect(redirect)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(max_connections);
        if let Some(ca) = &spec.ca {
            let certificates = reqwest::Certificate::from_pem_bundle(&ca.pem).map_err(|e| {
                ProbeError::new(
                    ErrorReason::Connect,
                    format!("ca_file {}: {}", ca.path, error_chain(&e)),
                )
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(identity) = &spec.identity {
            let identity =
                reqwest::Identity::from_pem(identity.pem.expose().as_bytes()).map_err(|_| {
                    ProbeError::new(
                        ErrorReason::Connect,
                        format!(
                            "client_cert {} and client_key {} are not a certificate and its \
                             private key",
                            identity.cert_path, identity.key_path
                        ),
                    )
                })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| {
            ProbeError::new(
                ErrorReason::Connect,
                format!("source {source}: {}", error_chain(&e)),
            )
        })?;
        Ok(Self {
            base: spec.url.clone(),
            https: spec.url.starts_with("https:"),
            http,
            basic,
            sets_content_type,
            max_body: spec.max_body,
            redirects: spec.redirects,
            slots: Slots::new(source, max_connections, "request slots"),
            secrets,
        })
    }

    /// Redirects this source follows, at most.
    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    /// Sends one request for `path` (appended to the source's URL, with its query) and reads
    /// the answer, whatever its status, by `deadline`. A POST `body` is sent as JSON unless the
    /// source's headers set another Content-Type.
    pub async fn fetch(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        deadline: Instant,
    ) -> Result<Answer, ProbeError> {
        let url = Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            // Validation checked the path; this guards a reload race only.
            ProbeError::new(ErrorReason::Query, format!("invalid path: {e}"))
        })?;
        let request = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let _permit = self.slots.acquire(deadline).await?;
        let mut builder = self.http.request(method, url);
        if let Some((username, password)) = &self.basic {
            builder = builder.basic_auth(username, Some(password.expose()));
        }
        if let Some(body) = body {
            if !self.sets_content_type {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body.to_owned());
        }
        let left = deadline.saturating_duration_since(crate::clock::instant());
        let too_slow = || {
            ProbeError::new(
                ErrorReason::Timeout,
                format!("{request} was not answered before the deadline"),
            )
        };
        match timeout_at(deadline, async {
            let mut response = builder
                .timeout(left)
                .send()
                .await
                .map_err(|e| self.transport_error(&e, &request))?;
            let status = response.status();
            let body = match read_body(&mut response, self.max_body).await {
                Ok(body) => body,
                Err(BodyError::Transport(e)) => return Err(self.transport_error(&e, &request)),
                Err(BodyError::TooLarge) => {
                    return Err(ProbeError::new(
                        ErrorReason::Decode,
                        format!(
                            "the answer to {request} is larger than max_body ({} bytes; HTTP \
                             {}, content-type {}): not read further",
                            self.max_body,
                            status.as_u16(),
                            content_type(response.headers())
                        ),
                    ));
                }
            };
            let snippet = self.secrets.scrub(&snippet(&body));
            Ok(Answer {
                status,
                headers: response.headers().clone(),
                body,
                snippet: shorten(&snippet, SNIPPET_CHARS),
                request: request.clone(),
            })
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(too_slow()),
        }
    }

    /// One GET of the source's URL: any answer shows that the address, TLS and the server
    /// work (which paths answer is each probe's own check); refused credentials fail.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let answer = self.fetch(Method::GET, "/", None, deadline).await?;
        if matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::PROXY_AUTHENTICATION_REQUIRED
        ) {
            return Err(ProbeError::new(
                ErrorReason::HttpStatus,
                format!(
                    "HTTP {} for {}: the credentials were refused",
                    status_text(answer.status),
                    answer.request
                ),
            ));
        }
        Ok(format!(
            "answers HTTP {} at its url{}",
            status_text(answer.status),
            if self.https { " over TLS" } else { "" }
        ))
    }

    /// Maps a transport error to a bounded reason: a TLS failure and a refused connection are
    /// `connect` (the message says which), running out of time `timeout`, a redirect past the
    /// limit `http_status`.
    fn transport_error(&self, error: &reqwest::Error, request: &str) -> ProbeError {
        let chain = error_chain(error);
        if error.is_timeout() {
            return ProbeError::new(
                ErrorReason::Timeout,
                format!("{request} was not answered before the deadline: {chain}"),
            );
        }
        if error.is_redirect() {
            return ProbeError::new(
                ErrorReason::HttpStatus,
                format!(
                    "{request}: more than {} redirects (`redirects` on the source)",
                    self.redirects
                ),
            );
        }
        if self.https && is_tls_failure(error) {
            // A server that refuses our certificate says so in an alert after the handshake,
            // when the request is sent: still a TLS failure, not the service's answer.
            return ProbeError::new(
                ErrorReason::Connect,
                format!("TLS with the server failed for {request}: {chain}"),
            );
        }
        ProbeError::new(ErrorReason::Connect, format!("{request}: {chain}"))
    }
}

/// Why reading a body stopped.
pub(crate) enum BodyError {
    /// The body is larger than allowed; reading stopped there.
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a response's body chunk by chunk, stopping as soon as it would exceed `max` bytes (or
/// at once when its Content-Length says it will), so a huge answer is never held in memory.
pub(crate) async fn read_body(
    response: &mut reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > max) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The Content-Type of an answer, for messages.
pub(crate) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("none")
}

/// `503 Service Unavailable`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Whether a transport error comes from TLS rather than from reaching the host: rustls reports
/// its own failures (an unknown issuer, a wrong name, an answer that is not TLS) as invalid data
/// under the connector's error, and the server's refusals as alerts that name them.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::InvalidData {
                return true;
            }
        }
        let text = current.to_string().to_ascii_lowercase();
        if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|word| text.contains(word))
        {
            return true;
        }
        next = current.source();
    }
    false
}

/// An error's chain of causes ("tcp connect error: Connection refused") without reqwest's own
/// level, which names the URL: configuration the user already knows.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    if parts.len() > 1 && parts[0].contains(" for url (") {
        parts.remove(0);
    }
    parts.join(": ")
}

/// The start of a body on one line: control characters and runs of white space become one
/// space.
fn snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(4 * SNIPPET_CHARS)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// Where a pointer that finds nothing stops: the deepest part of it that exists, and what is
/// there, so that `check --connect` can say what to fix.
pub(crate) fn where_it_stops(json: &Value, pointer: &str) -> String {
    let mut at = String::new();
    let mut value = json;
    for token in pointer.split('/').skip(1) {
        let next = format!("{at}/{token}");
        match json.pointer(&next) {
            Some(found) => {
                at = next;
                value = found;
            }
            None => break,
        }
    }
    let place = if at.is_empty() { "the answer" } else { &at };
    format!("{place} is {}", describe(value))
}

/// A JSON value's shape, for messages (keys, never values).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(items) if items.is_empty() => "an empty array".to_owned(),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Object(map) if map.is_empty() => "an empty object".to_owned(),
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().take(6).map(String::as_str).collect();
            let more = if map.len() > keys.len() { ", …" } else { "" };
            shorten(
                &format!("an object with keys {}{more}", keys.join(", ")),
                120,
            )
        }
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(
            snippet(b"<!DOCTYPE html>\n<html>\r\n\t<body>"),
            "<!DOCTYPE html> <html> <body>"
        );
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("abc", 3), "abc");
    }

    #[test]
    fn non_success_answers_name_the_status_and_quote_a_little() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            snippet: shorten(&snippet(body.as_bytes()), SNIPPET_CHARS),
            request: "GET /orders/_search".to_owned(),
        };
        let error = answer(500, "oops").require_success(0).expect_err("500");
        assert_eq!(error.reason, ErrorReason::HttpStatus);
        assert_eq!(
            error.message,
            "HTTP 500 Internal Server Error for GET /orders/_search: \"oops\""
        );
        let moved = answer(301, "").require_success(0).expect_err("301");
        assert!(
            moved.message.contains("redirects are not followed"),
            "{moved}"
        );
        assert!(answer(204, "").require_success(0).is_ok());
        let html = answer(200, "<!DOCTYPE html><html>")
            .json()
            .expect_err("html");
        assert_eq!(html.reason, ErrorReason::Decode);
        assert!(
            html.message
                .contains("is not JSON (HTTP 200, content-type none, 21 bytes): it starts with \"<!DOCTYPE html><html>\""),
            "{html}"
        );
        assert_eq!(answer(200, "{\"v\":1}").json().expect("json")["v"], 1);
    }
}
