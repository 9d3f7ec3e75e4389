//! What only an `http_watermark` probe knows beyond lag: the answer's status and size and what
//! its cache headers say (`Age`, `Cache-Control`, `Last-Modified`, `ETag`), including whether a
//! cache served it stale. These describe the cache entry, not the data, so they are shown
//! beside the lag and never change it; the metric families it exports and the `http` object
//! the API shows for it. Shown, like lag, only while the probe is fresh.

use reqwest::header::{self, HeaderMap};
use serde::Serialize;

use crate::families::{Exposition, FamilyBuilder, Labels, bool_value, gauge};

pub const HTTP_RESPONSE_AGE: &str = "lagbudget_http_response_age_seconds";
pub const HTTP_SERVED_STALE: &str = "lagbudget_http_served_stale";
pub const HTTP_RESPONSE_BYTES: &str = "lagbudget_http_response_bytes";

/// `Last-Modified` and `ETag` values are shown up to this many characters.
const MAX_VALIDATOR_CHARS: usize = 80;

/// The last answer of an `http_watermark` probe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpDetail {
    /// The HTTP status (a 2xx: anything else fails the run).
    pub status: u16,
    /// Bytes of the body.
    pub response_bytes: u64,
    /// The `Age` header: seconds the answer spent in caches.
    pub age_seconds: Option<u64>,
    /// How long the answer may be served fresh: `s-maxage`, else `max-age`, of
    /// `Cache-Control`.
    pub max_age_seconds: Option<u64>,
    /// `Age` is above that: a cache served the answer stale (stale-while-revalidate,
    /// stale-if-error, grace). Known only when both are.
    pub served_stale: Option<bool>,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

impl HttpDetail {
    /// What an answer's status, size and headers say.
    pub fn of(status: u16, response_bytes: u64, headers: &HeaderMap) -> Self {
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|value| crate::probe::http::shorten(value.trim(), MAX_VALIDATOR_CHARS))
        };
        let age_seconds = headers
            .get(header::AGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        let max_age_seconds = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let max_age_seconds = freshness_lifetime(&max_age_seconds);
        let served_stale = age_seconds
            .zip(max_age_seconds)
            .map(|(age, max_age)| age > max_age);
        Self {
            status,
            response_bytes,
            age_seconds,
            max_age_seconds,
            served_stale,
            last_modified: text(header::LAST_MODIFIED),
            etag: text(header::ETAG),
        }
    }

    /// The `http` object of the probe in the API.
    pub fn status(&self) -> HttpStatus {
        HttpStatus {
            status: self.status,
            response_bytes: self.response_bytes,
            age_seconds: self.age_seconds,
            max_age_seconds: self.max_age_seconds,
            served_stale: self.served_stale,
            last_modified: self.last_modified.clone(),
            etag: self.etag.clone(),
        }
    }
}

/// A shared cache's freshness lifetime from `Cache-Control` (RFC 9111): `s-maxage`, else
/// `max-age`.
fn freshness_lifetime(cache_control: &str) -> Option<u64> {
    let directive = |name: &str| {
        cache_control.split(',').find_map(|directive| {
            let (key, value) = directive.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
    };
    directive("s-maxage").or_else(|| directive("max-age"))
}

/// The `http` object of an `http_watermark` probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct HttpStatus {
    pub status: u16,
    pub response_bytes: u64,
    pub age_seconds: Option<u64>,
    pub max_age_seconds: Option<u64>,
    pub served_stale: Option<bool>,
    pub last_modified: Option<String>,
    pub etag: Option<String>,
}

/// The families only `http_watermark` probes fill, from fresh probes' details.
pub struct Families {
    age: FamilyBuilder,
    stale: FamilyBuilder,
    bytes: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            age: gauge(
                HTTP_RESPONSE_AGE,
                "The Age header of the last answer of an http_watermark probe: how long it sat \
                 in caches (the cache entry's age, not the data's lag); absent without the \
                 header.",
            ),
            stale: gauge(
                HTTP_SERVED_STALE,
                "1 when the last answer of an http_watermark probe was served stale (Age above \
                 s-maxage or max-age: stale-while-revalidate, stale-if-error, grace); absent \
                 when either header is missing.",
            ),
            bytes: gauge(
                HTTP_RESPONSE_BYTES,
                "Bytes of the body of the last answer of an http_watermark probe.",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &HttpDetail) {
        if let Some(age) = detail.age_seconds {
            self.age.push(labels, age as f64);
        }
        if let Some(stale) = detail.served_stale {
            self.stale.push(labels, bool_value(stale));
        }
        self.bytes.push(labels, detail.response_bytes as f64);
    }

    pub fn finish(self, out: &mut Exposition) {
        for family in [self.age, self.stale, self.bytes] {
            family.finish(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn cache_headers_describe_the_entry() {
        let stale = HttpDetail::of(
            200,
            42,
            &headers(&[
                ("age", "75"),
                ("cache-control", "public, max-age=60"),
                ("cache-control", "stale-while-revalidate=600"),
                ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("etag", "\"33a64df5\""),
            ]),
        );
        assert_eq!(stale.age_seconds, Some(75));
        assert_eq!(stale.max_age_seconds, Some(60));
        assert_eq!(stale.served_stale, Some(true));
        assert_eq!(stale.etag.as_deref(), Some("\"33a64df5\""));
        let shared = HttpDetail::of(
            200,
            1,
            &headers(&[("age", "75"), ("cache-control", "max-age=10, s-maxage=120")]),
        );
        assert_eq!(
            (shared.max_age_seconds, shared.served_stale),
            (Some(120), Some(false))
        );
        let origin = HttpDetail::of(200, 1, &headers(&[("cache-control", "no-cache")]));
        assert_eq!(
            (origin.age_seconds, origin.max_age_seconds, origin.served_stale),
            (None, None, None),
            "unknown is never fresh"
        );
    }
}
