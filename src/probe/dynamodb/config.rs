//! The `dynamodb` source kind's config: its table, its model and how its keys are read.

use std::fmt;

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::{config_table, written};
use crate::config::tables::SourceKindConfig;
use crate::config::value::{Count, NonEmpty, Scalar, SecretString};
use crate::model::{Secret, SourceKind};
use crate::probe::http::config::base_url;

/// An AWS region's DynamoDB (and DynamoDB Streams), or a server that speaks its API.
#[derive(Clone, PartialEq)]
pub struct DynamodbSource {
    /// The region requests are signed for (`eu-west-1`).
    pub region: String,
    /// Where both APIs are sent instead of AWS's regional endpoints (`http://127.0.0.1:5000`),
    /// without a trailing slash.
    pub endpoint: Option<String>,
    /// Keys written in the config; `None` reads the environment and the shared credentials
    /// file at each request.
    pub keys: Option<DynamodbKeys>,
}

/// An access key written in the config (from `${VAR}` or `${file:…}`), kept secret.
#[derive(Clone, PartialEq)]
pub struct DynamodbKeys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl fmt::Debug for DynamodbSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamodbSource")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Debug for DynamodbKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DynamodbKeys(***)")
    }
}

config_table! {
    /// Amazon DynamoDB and DynamoDB Streams, through their JSON APIs, signed with SigV4.
    ///
    /// Without `access_key_id` and `secret_access_key`, the keys are read at each request from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, then from the shared
    /// credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE
    /// or `default`). ECS task roles, instance metadata (IMDS) and web identity tokens are not
    /// supported yet.
    pub(crate) struct DynamodbSourceConfig = "dynamodb" {
        /// AWS region, such as eu-west-1: requests are signed for it and, without `endpoint`,
        /// sent to its endpoints.
        region: NonEmpty<Region>,
        /// Base URL to send both APIs to instead of AWS's (a local or compatible server), such
        /// as http://127.0.0.1:5000; without credentials, query or path.
        endpoint: Option<EndpointUrl>,
        /// Access key ID; put it in ${VAR} or ${file:/path}. Never printed. Needs
        /// `secret_access_key`.
        access_key_id: Option<SecretString>,
        /// Secret access key; put it in ${VAR} or ${file:/path}. Never printed. Needs
        /// `access_key_id`.
        secret_access_key: Option<SecretString>,
        /// Session token of temporary keys; put it in ${VAR} or ${file:/path}. Never printed.
        /// Needs both keys.
        session_token: Option<SecretString>,
        /// Requests in flight at once, shared by every probe of this source.
        max_connections: Count<1, 64> = 4,
    }
}

impl SourceKindConfig for DynamodbSourceConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let id = written!(self.access_key_id);
        let secret = written!(self.secret_access_key);
        let problem = match (id, secret, written!(self.session_token)) {
            (Some(span), None, _) => Some((
                span,
                "access_key_id",
                "`access_key_id` needs `secret_access_key`",
            )),
            (None, Some(span), _) => Some((
                span,
                "secret_access_key",
                "`secret_access_key` needs `access_key_id`",
            )),
            (None, None, Some(span)) => Some((
                span,
                "session_token",
                "`session_token` needs `access_key_id` and `secret_access_key`",
            )),
            _ => None,
        };
        match problem {
            Some((span, key, message)) => {
                ctx.error(span, &self.keys.path_of(key), message);
                false
            }
            None => true,
        }
    }

    fn resolve(&self) -> Option<(SourceKind, usize)> {
        let keys = match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some(DynamodbKeys {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: self.session_token.clone(),
            }),
            _ => None,
        };
        let source = DynamodbSource {
            region: self.region.clone()?,
            endpoint: self.endpoint.clone(),
            keys,
        };
        Some((
            SourceKind::Dynamodb(source),
            usize::try_from(self.max_connections?).ok()?,
        ))
    }
}

/// An AWS region name: lower-case letters, digits and dashes (`eu-west-1`).
pub(crate) struct Region;

impl Scalar for Region {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<String> {
        let value = &text.value;
        let valid = value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        if valid {
            return Some(value.clone());
        }
        ctx.error(
            text.span,
            &text.path,
            format!(
                "invalid region {}: expected lower-case letters, digits and dashes, such as \
                 eu-west-1",
                text.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        serde_json::json!({ "type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$" })
    }
}

/// A base URL for both APIs: http or https, a host, no credentials, path, query or fragment.
/// Read without a trailing slash.
pub(crate) struct EndpointUrl;

impl Scalar for EndpointUrl {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<String> {
        let problem = match base_url(&url.value, "`access_key_id` and `secret_access_key`", "") {
            Err(problem) => Some(problem),
            // Requests are signed for `/`: a path would be signed and sent as it is, which no
            // DynamoDB endpoint expects.
            Ok(parsed) if parsed.path() != "/" => Some("it has a path".to_owned()),
            Ok(_) => None,
        };
        match problem {
            Some(problem) => {
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid endpoint {}: {problem}; expected such as http://127.0.0.1:5000",
                        url.quoted()
                    ),
                );
                None
            }
            None => Some(url.value.trim_end_matches('/').to_owned()),
        }
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn dynamodb_sources_resolve_to_the_model() {
        let text = r#"
sources:
  local:
    dynamodb: { region: eu-west-1, endpoint: "http://127.0.0.1:5000/", access_key_id: "${AK}", secret_access_key: "${SK}", session_token: "${ST}" }
  aws: { dynamodb: { region: us-east-1, max_connections: 2 } }
"#;
        let env = |name: &str| match name {
            "AK" => Some("AKIDDYNAMOSECRET".to_owned()),
            "SK" => Some("ddb-secret-key-value".to_owned()),
            "ST" => Some("ddb-session-token-value".to_owned()),
            _ => None,
        };
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let local = &config.sources["local"];
        assert_eq!(local.max_connections, 4);
        let SourceKind::Dynamodb(ddb) = &local.kind else {
            panic!("local is not a dynamodb source");
        };
        assert_eq!(ddb.region, "eu-west-1");
        assert_eq!(ddb.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        let keys = ddb.keys.as_ref().expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKIDDYNAMOSECRET");
        assert_eq!(keys.secret_access_key.expose(), "ddb-secret-key-value");
        assert_eq!(
            keys.session_token.as_ref().map(Secret::expose),
            Some("ddb-session-token-value")
        );
        let debug = format!("{ddb:?}");
        for secret in [
            "AKIDDYNAMOSECRET",
            "ddb-secret-key-value",
            "ddb-session-token-value",
        ] {
            assert!(!debug.contains(secret), "{debug}");
            assert_eq!(config.secrets.scrub(secret), "***");
        }
        let SourceKind::Dynamodb(aws) = &config.sources["aws"].kind else {
            panic!("aws is not a dynamodb source");
        };
        assert_eq!(aws.endpoint, None);
        assert_eq!(aws.keys, None);
        assert_eq!(config.sources["aws"].max_connections, 2);
    }

    #[test]
    fn dynamodb_source_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  a: { dynamodb: { endpoint: "http://127.0.0.1:5000" } }
  b: { dynamodb: { region: "EU west", endpoint: "ftp://x" } }
  c: { dynamodb: { region: eu-west-1, access_key_id: "${AK}" } }
  d: { dynamodb: { region: eu-west-1, session_token: t, endpoint: "http://x:1/dynamo" } }
"#;
        let env = |name: &str| (name == "AK").then(|| "AKIDNEVERSHOWN".to_owned());
        let expected = [
            "3:18: sources.a.dynamodb: missing required key `region`",
            "4:28: sources.b.dynamodb.region: invalid region \"EU west\": expected lower-case letters, digits and dashes, such as eu-west-1",
            "4:49: sources.b.dynamodb.endpoint: invalid endpoint \"ftp://x\": scheme \"ftp\" is not http or https; expected such as http://127.0.0.1:5000",
            "5:39: sources.c.dynamodb.access_key_id: `access_key_id` needs `secret_access_key`",
            "6:39: sources.d.dynamodb.session_token: `session_token` needs `access_key_id` and `secret_access_key`",
            "6:67: sources.d.dynamodb.endpoint: invalid endpoint \"http://x:1/dynamo\": it has a path; expected such as http://127.0.0.1:5000",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("AKIDNEVERSHOWN")));
    }
}
