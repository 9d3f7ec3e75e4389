//! The RabbitMQ management HTTP API client of one `rabbitmq` source, shared by every probe that
//! reads it: one HTTP connection pool, at most `max_connections` requests in flight, and every
//! answer mapped to JSON or to a bounded reason.
//!
//! A request holds one of the source's slots; waiting for a slot, connecting, sending and
//! reading the body all count against the run's deadline. Credentials go in a Basic
//! `Authorization` header, never in the URL, so they cannot appear in an error message.

pub mod config;

use reqwest::{StatusCode, Url, header};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::http::{BodyError, content_type, error_chain, read_body};
use super::pool::Slots;
use super::{ErrorReason, ProbeError};
use crate::model::{RabbitmqSource, Secret};

/// The management API answers a queue's statistics in a few hundred bytes (we ask for the
/// columns we read); anything much larger is not the API we expect.
const MAX_BODY_BYTES: u64 = 1 << 20;

pub struct RabbitmqClient {
    base: Url,
    username: String,
    password: Secret,
    http: reqwest::Client,
    slots: Slots,
}

/// What a successful request found.
#[derive(Debug)]
pub enum Answer {
    Found(Value),
    /// HTTP 404: the queue or vhost does not exist (the caller knows which it asked for).
    NotFound,
}

impl RabbitmqClient {
    /// Builds the client; connects to nothing.
    pub fn new(
        source: &str,
        spec: &RabbitmqSource,
        max_connections: usize,
    ) -> Result<Self, ProbeError> {
        let base = Url::parse(&spec.url).map_err(|_| {
            // Validation parsed this URL already.
            ProbeError::new(ErrorReason::Connect, "invalid management API url")
        })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("lagbudget/", env!("CARGO_PKG_VERSION")))
            // A redirect would be followed with our credentials to wherever it points; the API
            // does not redirect, so one is reported instead.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(max_connections)
            .build()
            .map_err(|e| ProbeError::new(ErrorReason::Connect, error_chain(&e)))?;
        Ok(Self {
            base,
            username: spec.username.clone(),
            password: spec.password.clone(),
            http,
            slots: Slots::new(source, max_connections, "request slots"),
        })
    }

    /// GETs `{url}/api/{segments…}` (each segment percent-encoded, so a vhost `/` becomes
    /// `%2F`) with an optional query, and returns the decoded JSON body by `deadline`.
    pub async fn get(
        &self,
        segments: &[&str],
        query: Option<&str>,
        deadline: Instant,
    ) -> Result<Answer, ProbeError> {
        self.request(reqwest::Method::GET, segments, query, None, deadline)
            .await
    }

    /// Sends `body` as JSON with `method` (POST, PUT) to `{url}/api/{segments…}`: the canary's
    /// publish, get and queue declaration. An answer without a body is `Found(Null)`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &Value,
        deadline: Instant,
    ) -> Result<Answer, ProbeError> {
        self.request(method, segments, None, Some(body), deadline)
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: Option<&str>,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Answer, ProbeError> {
        let _permit = self.slots.acquire(deadline).await?;
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| ProbeError::new(ErrorReason::Connect, "management API url has no path"))?
            .pop_if_empty()
            .push("api")
            .extend(segments);
        url.set_query(query);
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&self.username, Some(self.password.expose()))
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        match timeout_at(deadline, async {
            let response = request.send().await.map_err(|e| request_error(&e))?;
            self.read(response).await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                "the management API did not answer before the deadline",
            )),
        }
    }

    async fn read(&self, mut response: reqwest::Response) -> Result<Answer, ProbeError> {
        let status = response.status();
        let content_type = content_type(response.headers()).to_owned();
        let body = match read_body(&mut response, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(BodyError::Transport(e)) => return Err(request_error(&e)),
            Err(BodyError::TooLarge) => {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    format!(
                        "the answer is larger than {MAX_BODY_BYTES} bytes (HTTP {status}, \
                         content-type {content_type}): not a management API answer"
                    ),
                ));
            }
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(Answer::NotFound);
        }
        if !status.is_success() {
            // The API explains refusals as `{"error": …, "reason": …}`; show the reason when
            // there is one, never the body of something else.
            let why = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            let (reason, what) = match status {
                StatusCode::UNAUTHORIZED => (
                    ErrorReason::Connect,
                    format!("the management API refused user {:?}", self.username),
                ),
                StatusCode::FORBIDDEN => (
                    ErrorReason::Query,
                    format!(
                        "user {:?} may not read this (it needs the monitoring tag, or \
                         management and access to the vhost)",
                        self.username
                    ),
                ),
                _ => (
                    ErrorReason::Query,
                    "the management API answered an error".to_owned(),
                ),
            };
            return Err(ProbeError::new(
                reason,
                format!("{what} (HTTP {}){why}", status.as_u16()),
            ));
        }
        if body.is_empty() {
            // PUT and DELETE answer 201 or 204 without a body.
            return Ok(Answer::Found(Value::Null));
        }
        serde_json::from_slice(&body)
            .map(Answer::Found)
            .map_err(|e| {
                ProbeError::new(
                    ErrorReason::Decode,
                    format!(
                        "the answer is not JSON (HTTP {}, content-type {content_type}): {e}",
                        status.as_u16()
                    ),
                )
            })
    }

    /// Reads `/api/overview`: the `check --connect` answer for this source.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let overview = match self.get(&["overview"], None, deadline).await? {
            Answer::Found(overview) => overview,
            Answer::NotFound => {
                return Err(ProbeError::new(
                    ErrorReason::Query,
                    "no /api/overview here (HTTP 404): is this the management API's base url?",
                ));
            }
        };
        let version = overview
            .get("rabbitmq_version")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProbeError::new(
                    ErrorReason::Decode,
                    "/api/overview has no rabbitmq_version: not a RabbitMQ management API",
                )
            })?;
        Ok(format!("RabbitMQ {version}, management API answers"))
    }
}

/// Maps a transport error to a bounded reason. The message is the error's chain of causes
/// ("tcp connect error: Connection refused") without the URL, which is configuration the
/// user already knows.
fn request_error(error: &reqwest::Error) -> ProbeError {
    let reason = if error.is_timeout() {
        ErrorReason::Timeout
    } else {
        ErrorReason::Connect
    };
    ProbeError::new(reason, error_chain(error))
}
