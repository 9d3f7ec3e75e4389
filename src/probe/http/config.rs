//! The `http` source kind's config: its table, its model and how its settings are read. The
//! files it names (CA certificates, the client certificate and key) are read when the config is
//! loaded, so that a mistake is reported with the file and a reload picks up a renewed
//! certificate.

use std::collections::BTreeSet;
use std::fmt;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::schema::Defs;
use crate::config::syntax::Node;
use crate::config::table::{config_table, written};
use crate::config::tables::SourceKindConfig;
use crate::config::value::{
    ConfigValue, Count, NonEmpty, Reserved, Scalar, SecretString, StringMap,
};
use crate::model::{Secret, SourceKind};

/// A service answering HTTP: its base URL and how lagbudget is to talk to it.
#[derive(Clone, PartialEq)]
pub struct HttpSource {
    /// The base URL without a trailing slash, ready for a probe's path (`/orders/_search`) to
    /// be appended.
    pub url: String,
    /// Headers sent with every request, in file order. Their values are secrets.
    pub headers: Vec<(String, Secret)>,
    pub auth: Option<HttpAuth>,
    /// CA certificates trusted for https besides the bundled web PKI roots.
    pub ca: Option<PemFile>,
    /// The client certificate and key of mutual TLS.
    pub identity: Option<ClientIdentity>,
    /// The largest response body read, in bytes.
    pub max_body: u64,
    /// Redirects followed, at most; 0 follows none.
    pub redirects: u64,
}

/// How requests authenticate, besides whatever `headers` carry.
#[derive(Clone, PartialEq)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic …`.
    Basic { username: String, password: Secret },
}

/// A PEM file as it was when the config was loaded.
#[derive(Clone, PartialEq)]
pub struct PemFile {
    /// The path as written in the config.
    pub path: String,
    pub pem: Vec<u8>,
}

/// A client certificate (chain) and its private key, as PEM.
#[derive(Clone, PartialEq)]
pub struct ClientIdentity {
    pub cert_path: String,
    pub key_path: String,
    /// The certificate file followed by the key file: what `reqwest::Identity::from_pem`
    /// reads. Holds the private key, so it is never printed.
    pub pem: Secret,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .field("bytes", &self.pem.len())
            .finish()
    }
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.auth.as_ref().map(|auth| match auth {
            HttpAuth::Bearer(_) => "bearer".to_owned(),
            HttpAuth::Basic { username, .. } => format!("basic {username}"),
        });
        f.debug_struct("HttpSource")
            .field("url", &self.url)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("auth", &auth)
            .field("ca", &self.ca.as_ref().map(|ca| &ca.path))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|id| (&id.cert_path, &id.key_path)),
            )
            .field("max_body", &self.max_body)
            .field("redirects", &self.redirects)
            .finish()
    }
}

config_table! {
    /// A service answering HTTP: a search engine, a cache in front of a service, a service's
    /// own JSON endpoint.
    ///
    /// One HTTP client per source, shared by every probe that reads it, with at most
    /// `max_connections` requests in flight. Every request is bounded by its probe's timeout;
    /// redirects are not followed unless `redirects` allows some.
    pub(crate) struct HttpSourceConfig = "http" {
        /// Base URL, such as http://search:9200 (http or https, optionally with a path
        /// prefix); a probe's `path` is appended to it. Without credentials, query or
        /// fragment.
        url: NonEmpty<BaseUrl>,
        /// Headers sent with every request, such as Authorization: "Bearer ${SEARCH_TOKEN}".
        /// Every value is a secret: never printed, and masked wherever it could appear.
        headers: Option<Headers>,
        /// A token sent as `Authorization: Bearer <token>`; put it in ${VAR} or
        /// ${file:/path}. Never printed.
        bearer_token: Option<SecretString>,
        /// A user and password sent as `Authorization: Basic …`.
        basic_auth: Option<BasicAuthConfig>,
        /// PEM file of CA certificates trusted for https, besides the bundled web PKI roots.
        /// Read when the config is loaded; a relative path is relative to this file's
        /// directory.
        ca_file: Option<PemPath>,
        /// PEM file of the client certificate (and its chain) for mutual TLS; needs
        /// client_key. Read when the config is loaded.
        client_cert: Option<PemPath>,
        /// PEM file of the client certificate's private key (PKCS#8, RSA or EC); needs
        /// client_cert. Read when the config is loaded; never printed.
        client_key: Option<PemPath>,
        /// The largest response body read, such as 512KiB or 1MiB (1KiB to 64MiB). The cap
        /// is enforced while the body streams in: a larger answer fails the run (decode)
        /// without being read whole.
        max_body: ByteSize = "1MiB",
        /// Redirects followed, at most (0 to 10). 0: a 3xx answer fails the run
        /// (http_status). A redirect to another host drops the Authorization header, but the
        /// other `headers` go along.
        redirects: Count<0, 10> = 0,
        /// Requests in flight at once, shared by every probe of this source.
        max_connections: Count<1, 64> = 4,
    }
}

config_table! {
    /// A user and password sent as `Authorization: Basic …`.
    pub(crate) struct BasicAuthConfig = "basic_auth" {
        /// The user.
        username: NonEmpty<String>,
        /// Its password; put it in ${VAR} or ${file:/path}. Never printed.
        password: SecretString,
    }
}

impl SourceKindConfig for HttpSourceConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        // One way to authenticate: two would send two Authorization headers, of which the
        // server reads one.
        let authorization_header = self.headers.as_ref().and_then(|headers| {
            headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("authorization"))
        });
        let mut ways: Vec<(&str, crate::config::syntax::Span, String)> = Vec::new();
        if let Some(header) = authorization_header {
            ways.push(("an Authorization header", header.span, header.path.clone()));
        }
        if let Some(span) = written!(self.bearer_token) {
            ways.push(("`bearer_token`", span, self.keys.path_of("bearer_token")));
        }
        if let Some(span) = written!(self.basic_auth) {
            ways.push(("`basic_auth`", span, self.keys.path_of("basic_auth")));
        }
        ways.sort_by_key(|(_, span, _)| *span);
        if let [(first, ..), (second, span, path), ..] = ways.as_slice() {
            ctx.error(
                *span,
                path,
                format!("{first} and {second} cannot both be set: authenticate one way"),
            );
            ok = false;
        }
        match (written!(self.client_cert), written!(self.client_key)) {
            (Some(span), None) => {
                ctx.error(
                    span,
                    &self.keys.path_of("client_cert"),
                    "`client_cert` needs `client_key`: the private key of that certificate",
                );
                ok = false;
            }
            (None, Some(span)) => {
                ctx.error(
                    span,
                    &self.keys.path_of("client_key"),
                    "`client_key` needs `client_cert`: the certificate of that key",
                );
                ok = false;
            }
            _ => {}
        }
        if let Some(ca) = &self.ca_file {
            match reqwest::Certificate::from_pem_bundle(&ca.value.pem) {
                Ok(certificates) if !certificates.is_empty() => {}
                _ => {
                    ctx.error(
                        ca.span,
                        &ca.path,
                        format!(
                            "ca_file {}: no PEM certificate in it (expected \"-----BEGIN \
                             CERTIFICATE-----\" blocks)",
                            ca.value.path
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            ok &= check_identity(ctx, cert, key);
        }
        ok
    }

    fn resolve(&self) -> Option<(SourceKind, usize)> {
        let auth = match (&self.bearer_token, &self.basic_auth) {
            (Some(token), None) => Some(HttpAuth::Bearer(token.clone())),
            (None, Some(basic)) => Some(HttpAuth::Basic {
                username: basic.username.clone()?,
                password: basic.password.clone()?,
            }),
            _ => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(identity_of(&cert.value, &key.value)),
            _ => None,
        };
        let source = HttpSource {
            url: self.url.clone()?,
            headers: self
                .headers
                .iter()
                .flatten()
                .map(|header| (header.name.clone(), header.value.clone()))
                .collect(),
            auth,
            ca: self.ca_file.as_ref().map(|ca| ca.value.clone()),
            identity,
            max_body: self.max_body?,
            redirects: self.redirects?,
        };
        Some((
            SourceKind::Http(source),
            usize::try_from(self.max_connections?).ok()?,
        ))
    }
}

/// The certificate file, then the key file, as one PEM text.
fn identity_of(cert: &PemFile, key: &PemFile) -> ClientIdentity {
    let mut pem = String::from_utf8_lossy(&cert.pem).into_owned();
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&String::from_utf8_lossy(&key.pem));
    ClientIdentity {
        cert_path: cert.path.clone(),
        key_path: key.path.clone(),
        pem: Secret::new(pem),
    }
}

/// Checks that the certificate file holds certificates and the key file a private key, naming
/// the file that does not.
fn check_identity(ctx: &mut Ctx<'_>, cert: &Spanned<PemFile>, key: &Spanned<PemFile>) -> bool {
    if !matches!(reqwest::Certificate::from_pem_bundle(&cert.value.pem), Ok(c) if !c.is_empty()) {
        ctx.error(
            cert.span,
            &cert.path,
            format!(
                "client_cert {}: no PEM certificate in it (expected \"-----BEGIN \
                 CERTIFICATE-----\" blocks)",
                cert.value.path
            ),
        );
        return false;
    }
    let identity = identity_of(&cert.value, &key.value);
    if reqwest::Identity::from_pem(identity.pem.expose().as_bytes()).is_err() {
        // The parser's message says nothing about which file; the key's contents are never
        // quoted.
        ctx.error(
            key.span,
            &key.path,
            format!(
                "client_key {}: no private key in it (expected a PKCS#8 \"PRIVATE KEY\", \
                 \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" PEM block)",
                key.value.path
            ),
        );
        return false;
    }
    true
}

/// `value` parsed as the base URL of an HTTP API — http or https, a host, no credentials (they
/// belong in `credentials_go_in`, where they are kept secret), no query or fragment
/// (`query_hint` follows that complaint) — or what is wrong with it. The `http`, `rabbitmq` and
/// `dynamodb` sources share these rules and add their own. The parser's messages never quote the
/// URL, so an interpolated password is not echoed.
pub(crate) fn base_url(
    value: &str,
    credentials_go_in: &str,
    query_hint: &str,
) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(value).map_err(|error| error.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", parsed.scheme()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "it holds credentials; put them in {credentials_go_in}"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("it has a query or fragment{query_hint}"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(parsed)
}

/// A base URL: http or https, a host, no credentials (they belong in `bearer_token`,
/// `basic_auth` or `headers`, where they are kept secret), no query or fragment. Read without a
/// trailing slash, ready for a probe's path to be appended.
pub(crate) struct BaseUrl;

impl Scalar for BaseUrl {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, url: &Text) -> Option<String> {
        // Remember a password before anything can fail, so that no later message shows it.
        ctx.remember_url_password(&url.value);
        let problem = base_url(
            &url.value,
            "`bearer_token`, `basic_auth` or `headers`",
            "; a probe's `path` may carry a query",
        )
        .err();
        match problem {
            Some(problem) => {
                ctx.error(
                    url.span,
                    &url.path,
                    format!(
                        "invalid url {}: {problem}; expected such as http://search:9200",
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

/// One header of `headers`: its name as written, where, and its value, a secret.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub name: String,
    pub span: crate::config::syntax::Span,
    pub path: String,
    pub value: Secret,
}

/// Headers the HTTP client manages itself.
pub(crate) struct ManagedByTheClient;

impl Reserved for ManagedByTheClient {
    const RESERVED: &'static [(&'static str, &'static str)] = &[
        ("content-length", "the HTTP client sets it from the body"),
        ("transfer-encoding", "the HTTP client sets it from the body"),
        ("connection", "the HTTP client manages its connections"),
    ];
}

/// Header names to values. Every value is a secret: it is never printed, and joins the values
/// masked in every message (with, for an `Authorization`-style "<scheme> <credentials>" value,
/// the credentials alone). Names and values are checked the way the HTTP client will send them;
/// a name given twice (in any case) is an error.
pub(crate) struct Headers;

impl ConfigValue for Headers {
    type Out = Vec<Header>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let mut headers: Vec<Header> = Vec::new();
        let mut seen = BTreeSet::new();
        for (name, value) in <StringMap<ManagedByTheClient>>::decode(ctx, node, path)? {
            ctx.secrets.insert(&value.value);
            if let Some((_, credentials)) = value.value.split_once(' ') {
                ctx.secrets.insert(credentials.trim());
            }
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                ctx.error(
                    value.span,
                    &value.path,
                    format!(
                        "invalid header name {name:?}: letters, digits and !#$%&'*+-.^_`|~ only"
                    ),
                );
                continue;
            }
            if HeaderValue::from_str(&value.value).is_err() {
                // Never quote the value: it is a secret.
                ctx.error(
                    value.span,
                    &value.path,
                    format!(
                        "invalid value of header {name}: it holds a character an HTTP header \
                         cannot carry (a line break or another control character)"
                    ),
                );
                continue;
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                ctx.error(
                    value.span,
                    &value.path,
                    format!("header {name} is given twice (header names ignore case)"),
                );
                continue;
            }
            headers.push(Header {
                name,
                span: value.span,
                path: value.path.clone(),
                value: Secret::new(value.value),
            });
        }
        Some(headers)
    }

    fn schema(defs: &mut Defs) -> Value {
        <StringMap<ManagedByTheClient>>::schema(defs)
    }
}

/// A PEM file, read when the config is loaded. A relative path is relative to the directory of
/// the file that names it, as `${file:…}` and `include` are.
pub(crate) struct PemPath;

impl ConfigValue for PemPath {
    type Out = Spanned<PemFile>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let text = <Spanned<NonEmpty<String>>>::decode(ctx, node, path)?;
        let file = ctx.dir.join(&text.value);
        match std::fs::read(&file) {
            Ok(pem) => Some(text.with(PemFile {
                path: text.value.clone(),
                pem,
            })),
            Err(error) => {
                let key = path.rsplit('.').next().unwrap_or(path);
                ctx.error(
                    text.span,
                    &text.path,
                    format!("cannot read {key} {}: {error}", file.display()),
                );
                None
            }
        }
    }

    fn schema(_: &mut Defs) -> Value {
        <NonEmpty<String>>::json_schema()
    }
}

/// A size in bytes with a unit: `512KiB`, `1MiB`, `4096B`; from 1 KiB to 64 MiB.
pub(crate) struct ByteSize;

const MIN_BODY: u64 = 1 << 10;
const MAX_BODY: u64 = 64 << 20;

impl Scalar for ByteSize {
    type Out = u64;
    const EXPECTED: &'static str = "a size such as 1MiB";

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<u64> {
        let value = text.value.trim();
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = value.split_at(digits);
        let multiplier = match unit {
            "B" => Some(1),
            "KiB" => Some(1 << 10),
            "MiB" => Some(1 << 20),
            "GiB" => Some(1 << 30),
            _ => None,
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .zip(multiplier)
            .and_then(|(number, multiplier)| number.checked_mul(multiplier));
        match bytes {
            None => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!(
                        "invalid size {}: expected a whole number with a unit B, KiB, MiB or \
                         GiB, such as 512KiB or 1MiB",
                        text.quoted()
                    ),
                );
                None
            }
            Some(bytes) if !(MIN_BODY..=MAX_BODY).contains(&bytes) => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!("must be between 1KiB and 64MiB, found {}", text.shown()),
                );
                None
            }
            Some(bytes) => Some(bytes),
        }
    }

    fn json_schema() -> Value {
        json!({
            "type": "string",
            "pattern": "^(?:[0-9]+(?:B|KiB|MiB|GiB)|.*\\$\\{[^}]+\\}.*)$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn http_sources_resolve_to_the_model() {
        let text = r#"
sources:
  search:
    http:
      url: "https://search.example.com/es/"
      headers: { Authorization: "Bearer ${SEARCH_TOKEN}", X-Tenant: "shop-1-secret", Accept: application/json }
      max_body: 512KiB
      redirects: 2
      max_connections: 8
  meili: { http: { url: "http://127.0.0.1:7700", bearer_token: "${MEILI_KEY}" } }
  plain: { http: { url: "http://orders:8080", basic_auth: { username: lb, password: "basic-pw-1234" } } }
"#;
        let env = |name: &str| match name {
            "SEARCH_TOKEN" => Some("search-token-value".to_owned()),
            "MEILI_KEY" => Some("meili-master-key".to_owned()),
            _ => None,
        };
        let config = load_text(text, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let search = &config.sources["search"];
        assert_eq!(search.max_connections, 8);
        let SourceKind::Http(http) = &search.kind else {
            panic!("search is not an http source");
        };
        assert_eq!(http.url, "https://search.example.com/es");
        assert_eq!(http.max_body, 512 << 10);
        assert_eq!(http.redirects, 2);
        let names: Vec<&str> = http.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Authorization", "X-Tenant", "Accept"]);
        assert_eq!(http.headers[0].1.expose(), "Bearer search-token-value");
        let debug = format!("{http:?}");
        assert!(!debug.contains("search-token-value") && !debug.contains("shop-1-secret"));
        // Every header value is masked, and so are the credentials of an Authorization value.
        assert_eq!(
            config
                .secrets
                .scrub("Bearer search-token-value, search-token-value, shop-1-secret"),
            "***, ***, ***"
        );

        let SourceKind::Http(meili) = &config.sources["meili"].kind else {
            panic!("meili is not an http source");
        };
        assert_eq!(meili.max_body, 1 << 20, "default 1MiB");
        assert_eq!(meili.redirects, 0, "redirects off by default");
        assert_eq!(config.sources["meili"].max_connections, 4);
        assert!(
            matches!(&meili.auth, Some(HttpAuth::Bearer(t)) if t.expose() == "meili-master-key")
        );
        let SourceKind::Http(plain) = &config.sources["plain"].kind else {
            panic!("plain is not an http source");
        };
        assert!(matches!(
            &plain.auth,
            Some(HttpAuth::Basic { username, password }) if username == "lb" && password.expose() == "basic-pw-1234"
        ));
        assert_eq!(config.secrets.scrub("basic-pw-1234"), "***");
    }

    #[test]
    fn http_source_mistakes_are_reported_where_they_are_written() {
        let dir = tempfile::tempdir().expect("dir");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let text = format!(
            r#"
sources:
  a: {{ http: {{ url: "ftp://search", max_body: 1MB }} }}
  b: {{ http: {{ url: "http://u:url-secret-pw@search:9200" }} }}
  c: {{ http: {{ url: "http://search:9200/?pretty", redirects: 11, max_body: 128MiB }} }}
  d: {{ http: {{ url: "http://search", bearer_token: "${{TOKEN}}", headers: {{ authorization: "Basic abcd" }} }} }}
  e: {{ http: {{ url: "http://search", bearer_token: t1234, basic_auth: {{ username: u, password: p }} }} }}
  f: {{ http: {{ url: "http://search", headers: {{ "bad name": x, Content-Length: "5", X-A: a, x-a: b }} }} }}
  g: {{ http: {{ url: "http://search", ca_file: /nonexistent/ca.pem, client_cert: {not_pem} }} }}
  h: {{ http: {{ url: "http://search", ca_file: {not_pem}, client_key: {not_pem} }} }}
"#,
            not_pem = not_pem.display()
        );
        let env = |name: &str| (name == "TOKEN").then(|| "token-secret-value".to_owned());
        let actual = errors_of(&text, &env);
        let expected = [
            "3:21: sources.a.http.url: invalid url \"ftp://search\": scheme \"ftp\" is not http or https; expected such as http://search:9200".to_owned(),
            "3:47: sources.a.http.max_body: invalid size \"1MB\": expected a whole number with a unit B, KiB, MiB or GiB, such as 512KiB or 1MiB".to_owned(),
            "4:21: sources.b.http.url: invalid url \"http://u:***@search:9200\": it holds credentials; put them in `bearer_token`, `basic_auth` or `headers`; expected such as http://search:9200".to_owned(),
            "5:21: sources.c.http.url: invalid url \"http://search:9200/?pretty\": it has a query or fragment; a probe's `path` may carry a query; expected such as http://search:9200".to_owned(),
            "5:62: sources.c.http.redirects: must be between 0 and 10, found 11".to_owned(),
            "5:76: sources.c.http.max_body: must be between 1KiB and 64MiB, found 128MiB".to_owned(),
            "6:90: sources.d.http.headers.authorization: `bearer_token` and an Authorization header cannot both be set: authenticate one way".to_owned(),
            "7:59: sources.e.http.basic_auth: `bearer_token` and `basic_auth` cannot both be set: authenticate one way".to_owned(),
            "8:61: sources.f.http.headers[\"bad name\"]: invalid header name \"bad name\": letters, digits and !#$%&'*+-.^_`|~ only".to_owned(),
            "8:64: sources.f.http.headers.Content-Length: property `Content-Length` is set by lagbudget: the HTTP client sets it from the body".to_owned(),
            "8:98: sources.f.http.headers.x-a: header x-a is given twice (header names ignore case)".to_owned(),
            "9:47: sources.g.http.ca_file: cannot read ca_file /nonexistent/ca.pem: No such file or directory (os error 2)".to_owned(),
            "9:68: sources.g.http.client_cert: `client_cert` needs `client_key`: the private key of that certificate".to_owned(),
            format!("10:47: sources.h.http.ca_file: ca_file {}: no PEM certificate in it (expected \"-----BEGIN CERTIFICATE-----\" blocks)", not_pem.display()),
            "10:72: sources.h.http.client_key: `client_key` needs `client_cert`: the certificate of that key".to_owned(),
        ];
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(
            !actual
                .iter()
                .any(|line| line.contains("url-secret-pw") || line.contains("token-secret-value"))
        );
    }
}
