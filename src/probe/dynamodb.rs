//! The DynamoDB and DynamoDB Streams client of one `dynamodb` source, shared by every probe that
//! reads it: one HTTP connection pool, at most `max_connections` requests in flight, every
//! request a SigV4-signed JSON POST, and every answer mapped to JSON or to a bounded reason.
//!
//! A request holds one of the source's slots; waiting for a slot, connecting, sending and
//! reading the body all count against the run's deadline. Keys only ever go into the signature
//! (and the session token into its header): no message holds them.
//!
//! Errors: a transport failure, and an answer that refuses the keys (unknown key, bad
//! signature, expired token), are `connect`; throttling (`ThrottlingException`,
//! `ProvisionedThroughputExceededException`, `RequestLimitExceeded`,
//! `LimitExceededException`) is `timeout`, since the source could not answer this run in time
//! and a later run may succeed without anyone changing anything; every other AWS error
//! (`ResourceNotFoundException`, `AccessDeniedException`, validation, server errors) is
//! `query`, with its `__type` and `message`.

pub mod config;
pub mod credentials;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::{Url, header};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::http::{BodyError, content_type, error_chain, read_body};
use super::pool::Slots;
use super::{ErrorReason, ProbeError};
use crate::model::DynamodbSource;
use config::DynamodbKeys;

/// DescribeStream and GetRecords answers stay well below this (GetRecords returns at most 1 MB
/// of records, plus JSON framing).
const MAX_BODY_BYTES: u64 = 4 << 20;

/// The content type of both JSON APIs.
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// How long an AWS error message may be in ours.
const MAX_MESSAGE_CHARS: usize = 200;

/// Which of the two APIs a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Dynamodb,
    Streams,
}

impl Api {
    fn target_prefix(self) -> &'static str {
        match self {
            Api::Dynamodb => "DynamoDB_20120810",
            Api::Streams => "DynamoDBStreams_20120810",
        }
    }
}

pub struct DynamoClient {
    region: String,
    dynamodb_url: Url,
    streams_url: Url,
    keys: Option<DynamodbKeys>,
    http: reqwest::Client,
    slots: Slots,
}

impl DynamoClient {
    /// Builds the client; connects to nothing and reads no keys yet.
    pub fn new(
        source: &str,
        spec: &DynamodbSource,
        max_connections: usize,
    ) -> Result<Self, ProbeError> {
        let (dynamodb, streams) = match &spec.endpoint {
            Some(endpoint) => (format!("{endpoint}/"), format!("{endpoint}/")),
            None => (
                format!("https://dynamodb.{}.amazonaws.com/", spec.region),
                format!("https://streams.dynamodb.{}.amazonaws.com/", spec.region),
            ),
        };
        let parse = |url: &str| {
            Url::parse(url).map_err(|_| {
                // Validation parsed the endpoint and the region already.
                ProbeError::new(ErrorReason::Connect, "invalid DynamoDB endpoint")
            })
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("lagbudget/", env!("CARGO_PKG_VERSION")))
            // The APIs do not redirect; a redirect would resend a signed request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(max_connections)
            .build()
            .map_err(|e| ProbeError::new(ErrorReason::Connect, error_chain(&e)))?;
        Ok(Self {
            region: spec.region.clone(),
            dynamodb_url: parse(&dynamodb)?,
            streams_url: parse(&streams)?,
            keys: spec.keys.clone(),
            http,
            slots: Slots::new(source, max_connections, "request slots"),
        })
    }

    /// Sends `operation` (`ListTables`, `DescribeStream`…) of `api` with `body`, and returns
    /// the decoded answer by `deadline`.
    pub async fn call(
        &self,
        api: Api,
        operation: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, ProbeError> {
        let _permit = self.slots.acquire(deadline).await?;
        let keys = credentials::resolve(self.keys.as_ref(), &|name| std::env::var(name).ok())
            .map_err(|why| ProbeError::new(ErrorReason::Connect, why))?;
        let url = match api {
            Api::Dynamodb => &self.dynamodb_url,
            Api::Streams => &self.streams_url,
        };
        let target = format!("{}.{operation}", api.target_prefix());
        let payload = serde_json::to_vec(body)
            .map_err(|e| ProbeError::new(ErrorReason::Query, format!("request body: {e}")))?;
        let signed = self.sign(&keys, url, &target, &payload)?;
        let mut request = self
            .http
            .post(url.clone())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-amz-target", &target);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let request = request.body(payload);
        match timeout_at(deadline, async {
            let response = request.send().await.map_err(|e| request_error(&e))?;
            read(response, &target).await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ProbeError::new(
                ErrorReason::Timeout,
                format!("{target} did not answer before the deadline"),
            )),
        }
    }

    /// The SigV4 headers (Authorization, X-Amz-Date, X-Amz-Security-Token) of one POST.
    fn sign(
        &self,
        keys: &credentials::Keys,
        url: &Url,
        target: &str,
        payload: &[u8],
    ) -> Result<Vec<(String, String)>, ProbeError> {
        let signing_error = |what: &str| {
            // The signer's errors name a bad input, never a key; the message stays generic
            // all the same.
            ProbeError::new(
                ErrorReason::Connect,
                format!("could not sign the request: {what}"),
            )
        };
        let identity = Credentials::new(
            keys.access_key_id.expose(),
            keys.secret_access_key.expose(),
            keys.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "lagbudget",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            // DynamoDB Streams signs as `dynamodb` too.
            .name("dynamodb")
            .time(crate::clock::system_now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| signing_error("incomplete signing parameters"))?
            .into();
        let headers = [("content-type", CONTENT_TYPE), ("x-amz-target", target)];
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(payload),
        )
        .map_err(|_| signing_error("invalid request"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|_| signing_error("the signer failed"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    /// `ListTables` with `Limit: 1`: the `check --connect` answer for this source.
    pub async fn check(&self, deadline: Instant) -> Result<String, ProbeError> {
        let answer = self
            .call(
                Api::Dynamodb,
                "ListTables",
                &serde_json::json!({ "Limit": 1 }),
                deadline,
            )
            .await?;
        let tables = answer
            .get("TableNames")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ProbeError::new(
                    ErrorReason::Decode,
                    "ListTables answered without TableNames: not a DynamoDB API",
                )
            })?;
        let more = if answer.get("LastEvaluatedTableName").is_some() {
            " or more"
        } else {
            ""
        };
        Ok(format!(
            "DynamoDB answers in {}, {}{more} tables",
            self.region,
            tables.len()
        ))
    }
}

/// Reads one answer: its JSON on success, else the AWS error it names.
async fn read(mut response: reqwest::Response, target: &str) -> Result<Value, ProbeError> {
    let status = response.status();
    let content_type = content_type(response.headers()).to_owned();
    let body = match read_body(&mut response, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(BodyError::Transport(e)) => return Err(request_error(&e)),
        Err(BodyError::TooLarge) => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "the answer to {target} is larger than {MAX_BODY_BYTES} bytes (HTTP {}, \
                     content-type {content_type}): not a DynamoDB answer",
                    status.as_u16()
                ),
            ));
        }
    };
    let json = serde_json::from_slice::<Value>(&body);
    if !status.is_success() {
        return Err(match json {
            Ok(error) => aws_error(status.as_u16(), target, &error),
            Err(_) => ProbeError::new(
                ErrorReason::Query,
                format!(
                    "{target} answered HTTP {} (content-type {content_type}) without an AWS \
                     error",
                    status.as_u16()
                ),
            ),
        });
    }
    json.map_err(|e| {
        ProbeError::new(
            ErrorReason::Decode,
            format!(
                "the answer to {target} is not JSON (HTTP {}, content-type {content_type}): {e}",
                status.as_u16()
            ),
        )
    })
}

/// An AWS error answer (`{"__type": "com.amazonaws.dynamodb.v20120810#Name", "message": …}`)
/// as a bounded reason: see the module's doc.
fn aws_error(status: u16, target: &str, error: &Value) -> ProbeError {
    let kind = error
        .get("__type")
        .and_then(Value::as_str)
        .map(|t| t.rsplit('#').next().unwrap_or(t))
        .unwrap_or("unknown error");
    let message = error
        .get("message")
        .or_else(|| error.get("Message"))
        .and_then(Value::as_str)
        .map(|full| {
            let mut m: String = full.chars().take(MAX_MESSAGE_CHARS).collect();
            if m.len() < full.len() {
                m.push('…');
            }
            format!(": {m}")
        })
        .unwrap_or_default();
    let reason = match kind {
        "ThrottlingException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => ErrorReason::Timeout,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "IncompleteSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId" => ErrorReason::Connect,
        _ => ErrorReason::Query,
    };
    ProbeError::new(
        reason,
        format!("{target} failed (HTTP {status}): {kind}{message}"),
    )
}

/// Whether `error` is the AWS error `kind` (`TrimmedDataAccessException`…) as [`aws_error`]
/// words it: for callers that treat one error as an answer rather than a failure.
pub fn is_aws_error(error: &ProbeError, kind: &str) -> bool {
    error.message.split_once("): ").is_some_and(|(_, rest)| {
        rest.strip_prefix(kind)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with(':'))
    })
}

/// Maps a transport error to a bounded reason, without the URL.
fn request_error(error: &reqwest::Error) -> ProbeError {
    let reason = if error.is_timeout() {
        ErrorReason::Timeout
    } else {
        ErrorReason::Connect
    };
    ProbeError::new(reason, error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_map_to_bounded_reasons() {
        let error = |kind: &str, message: &str| {
            aws_error(
                400,
                "DynamoDB_20120810.DescribeTable",
                &serde_json::json!({
                    "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
                    "message": message,
                }),
            )
        };
        let missing = error("ResourceNotFoundException", "Requested resource not found");
        assert_eq!(missing.reason, ErrorReason::Query);
        assert_eq!(
            missing.message,
            "DynamoDB_20120810.DescribeTable failed (HTTP 400): ResourceNotFoundException: \
             Requested resource not found"
        );
        assert_eq!(
            error("ThrottlingException", "slow down").reason,
            ErrorReason::Timeout
        );
        assert_eq!(
            error("UnrecognizedClientException", "bad token").reason,
            ErrorReason::Connect
        );
        assert!(is_aws_error(&missing, "ResourceNotFoundException"));
        assert!(!is_aws_error(&missing, "ResourceNotFound"));
        assert!(!is_aws_error(
            &error("ThrottlingException", "x"),
            "ResourceNotFoundException"
        ));
        let long = error("ValidationException", &"x".repeat(1000));
        assert!(long.message.chars().count() < 300, "{}", long.message);
        assert!(long.message.ends_with('…'));
    }
}
