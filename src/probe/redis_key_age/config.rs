//! The `redis_key_age` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Spanned, Text};
use crate::config::table::{Table, config_table, written};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{Choice, Count, NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::oldest_pending::OldestPending;
use crate::probe::oldest_pending::config::OldestPendingConfig;
use crate::probe::redis::config::RedisSourceConfig;

use super::pattern::KeyPattern;

/// A cache in Redis that shows which version of its source it holds: one key for the whole
/// cache, or a key per entity.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisKeyAge {
    pub source: String,
    pub keys: CacheKeys,
    /// The hash field holding the version, when the key (each key of a pattern) is a hash.
    pub field: Option<String>,
    pub mode: KeyAgeMode,
}

/// Which keys hold the cache's version.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheKeys {
    /// One key (or hash field) for the whole cache.
    Key(String),
    /// Entity caches: a glob, read `sample` keys per run with `SCAN` (checked at load).
    Pattern { pattern: String, sample: u64 },
}

/// How the value read becomes lag.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAgeMode {
    /// The value is a source version; the source says how old the oldest newer change is.
    OldestPending(OldestPending),
    /// The value is the cache's build time; lag is now − that time, which reads an idle source
    /// as lag, so it is opt-in (one key only).
    SinceBuild,
}

impl KeyAgeMode {
    pub fn key(&self) -> &'static str {
        match self {
            KeyAgeMode::OldestPending(_) => ModeKey::OldestPending.key(),
            KeyAgeMode::SinceBuild => ModeKey::SinceBuild.key(),
        }
    }
}

/// The `mode` keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModeKey {
    OldestPending,
    SinceBuild,
}

impl Choice for ModeKey {
    const ALL: &'static [Self] = &[ModeKey::OldestPending, ModeKey::SinceBuild];

    fn key(self) -> &'static str {
        match self {
            ModeKey::OldestPending => "oldest_pending",
            ModeKey::SinceBuild => "since_build",
        }
    }
}

/// Keys read per run with `pattern`, at most.
pub const MAX_SAMPLE: u64 = 10_000;

config_table! {
    /// A cache in Redis: lag is the age of the oldest source change newer than the version the
    /// cache holds.
    ///
    /// The cache must hold a version of its source (a sequence, the source's updated-at):
    /// one key or hash field for the whole cache (`key`), or one per entity cache (`pattern`,
    /// a bounded SCAN sample per run, the cursor kept between runs). lagbudget passes the
    /// version(s) to `oldest_pending` on the source database, so an idle source reads 0 and a
    /// cache stuck on old data a growing lag. A missing key is a miss, counted, never
    /// staleness.
    pub(crate) struct RedisKeyAgeConfig = "redis_key_age" {
        /// Name of the redis source to read.
        source: SourceRef<RedisKeyAge>,
        /// The key holding the whole cache's source version (with `mode: since_build`, its
        /// build time). Set exactly one of key and pattern.
        key: Option<NonEmpty<String>>,
        /// A SCAN MATCH glob of entity cache keys, each holding its entity's version, such as
        /// `product:*`; the part the first `*` matches is the entity's id. Set exactly one of
        /// key and pattern.
        pattern: Option<NonEmpty<KeyGlob>>,
        /// The hash field holding the version, when the key (or each key of the pattern) is a
        /// hash. Unset: the key is a string.
        field: Option<NonEmpty<String>>,
        /// Keys read per run with `pattern` (the SCAN COUNT hint), 1 to 10000; a pass over
        /// the keyspace takes about keys / sample runs. Only with `pattern`.
        sample: Spanned<Count<1, MAX_SAMPLE>> = 500,
        /// The query on a postgres or mysql source that, given the version(s) read, returns the
        /// time of the oldest newer source change. Required in mode `oldest_pending`.
        oldest_pending: Option<OldestPendingConfig>,
        /// `oldest_pending`: lag is the age of the oldest source change newer than the cached
        /// version. `since_build`: the key holds the time the cache was built and lag is now -
        /// that time, which reads an idle source as lag; only with `key` and without
        /// oldest_pending.
        mode: Spanned<ModeKey> = "oldest_pending",
    }
    exactly_one_of(key, pattern);
}

impl ReadsSource for RedisKeyAge {
    const KIND: &'static str = <RedisKeyAgeConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <RedisSourceConfig as Table>::TABLE.id;
}

/// A glob of entity cache keys that matches more than one key (checked with `KeyPattern`).
pub(crate) struct KeyGlob;

impl Scalar for KeyGlob {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, glob: &Text) -> Option<String> {
        match KeyPattern::new(&glob.value) {
            Ok(_) => Some(glob.value.clone()),
            Err(problem) => {
                ctx.error(
                    glob.span,
                    &glob.path,
                    format!("pattern {} {problem}", glob.quoted()),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        <NonEmpty<String>>::json_schema()
    }
}

impl ProbeKindConfig for RedisKeyAgeConfig {
    fn check(&self, ctx: &mut Ctx<'_>) -> bool {
        let mut ok = true;
        let pattern = written!(self.pattern);
        if let (Some(span), None) = (written!(self.sample), pattern) {
            ctx.error(
                span,
                &self.keys.path_of("sample"),
                "`sample` applies only to `pattern`: with `key` every run reads that one key",
            );
            ok = false;
        }
        let Some(mode) = &self.mode else {
            return ok;
        };
        let oldest_pending = written!(self.oldest_pending);
        match mode.value {
            ModeKey::OldestPending if oldest_pending.is_none() => {
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    "missing `oldest_pending`: a version alone cannot say how far behind the \
                     source it is; add `oldest_pending` (the query that returns the oldest \
                     source change newer than $1), or, for a key holding the cache's build \
                     time, opt into `mode: since_build`, which reads an idle source as lag",
                );
                false
            }
            ModeKey::SinceBuild if oldest_pending.is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    "`mode: since_build` ignores `oldest_pending`: remove one of them",
                );
                false
            }
            ModeKey::SinceBuild if pattern.is_some() => {
                ctx.error(
                    mode.span,
                    &mode.path,
                    "`mode: since_build` needs `key`: with `pattern` each run would report the \
                     oldest build time among whichever keys it sampled; compare each entity's \
                     version with `oldest_pending` instead",
                );
                false
            }
            _ => ok,
        }
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            let keys = match (&self.key, &self.pattern) {
                (Some(key), None) => CacheKeys::Key(key.clone()),
                (None, Some(pattern)) => CacheKeys::Pattern {
                    pattern: pattern.clone(),
                    sample: self.sample.as_ref()?.value,
                },
                _ => return None,
            };
            let mode = match self.mode.as_ref()?.value {
                ModeKey::OldestPending => {
                    KeyAgeMode::OldestPending(self.oldest_pending.as_ref()?.settings()?)
                }
                ModeKey::SinceBuild => KeyAgeMode::SinceBuild,
            };
            Some(ProbeKind::RedisKeyAge(RedisKeyAge {
                source: self.source.as_ref()?.value.clone(),
                keys,
                field: self.field.clone(),
                mode,
            }))
        };
        single(kind())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{errors_of, load_text};

    const CACHES: &str = r#"
sources:
  cache: { redis: { url: "redis://127.0.0.1:6379" } }
  catalog-db: { postgres: { dsn: "host=db user=lagbudget dbname=catalog" } }
  shop-db: { mysql: { url: "mysql://lagbudget@shop:3306/shop" } }
budgets:
  - name: catalog
    max_lag: 30s
    probes:
      - name: catalog-cache
        redis_key_age:
          source: cache
          key: "catalog:version"
          oldest_pending: { source: catalog-db, query: "SELECT min(changed_at), count(*) FROM catalog_changes WHERE seq > $1" }
      - name: products
        redis_key_age:
          source: cache
          pattern: "product:*"
          field: version
          sample: 200
          oldest_pending: { source: shop-db, query: "SELECT 1" }
      - name: prices
        redis_key_age: { source: cache, pattern: "price:*", oldest_pending: { source: catalog-db, query: "SELECT 1" } }
      - name: built
        redis_key_age: { source: cache, key: "menu", field: built_at, mode: since_build }
"#;

    #[test]
    fn redis_key_age_probes_resolve_to_the_model() {
        let config = load_text(CACHES, &|_| None).unwrap_or_else(|e| panic!("errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        let catalog_db = |query: &str| {
            KeyAgeMode::OldestPending(OldestPending {
                source: "catalog-db".to_owned(),
                query: query.to_owned(),
            })
        };
        assert_eq!(
            probes[0].kind,
            ProbeKind::RedisKeyAge(RedisKeyAge {
                source: "cache".to_owned(),
                keys: CacheKeys::Key("catalog:version".to_owned()),
                field: None,
                mode: catalog_db(
                    "SELECT min(changed_at), count(*) FROM catalog_changes WHERE seq > $1"
                ),
            })
        );
        assert_eq!(probes[0].kind_key(), "redis_key_age");
        assert_eq!(probes[0].max_lag, Some(Duration::from_secs(30)));
        // The measured source first, then the database asked.
        assert_eq!(probes[0].source_names(), ["cache", "catalog-db"]);
        assert_eq!(
            probes[1].kind,
            ProbeKind::RedisKeyAge(RedisKeyAge {
                source: "cache".to_owned(),
                keys: CacheKeys::Pattern {
                    pattern: "product:*".to_owned(),
                    sample: 200,
                },
                field: Some("version".to_owned()),
                mode: KeyAgeMode::OldestPending(OldestPending {
                    source: "shop-db".to_owned(),
                    query: "SELECT 1".to_owned(),
                }),
            })
        );
        let ProbeKind::RedisKeyAge(prices) = &probes[2].kind else {
            panic!("prices is not a redis_key_age probe");
        };
        assert_eq!(
            prices.keys,
            CacheKeys::Pattern {
                pattern: "price:*".to_owned(),
                sample: 500,
            },
            "sample defaults to 500"
        );
        let ProbeKind::RedisKeyAge(built) = &probes[3].kind else {
            panic!("built is not a redis_key_age probe");
        };
        assert_eq!(built.mode, KeyAgeMode::SinceBuild);
        assert_eq!(built.mode.key(), "since_build");
        assert_eq!(built.field.as_deref(), Some("built_at"));
        assert_eq!(probes[3].source_names(), ["cache"]);
    }

    #[test]
    fn the_schema_documents_the_shapes_and_the_sample_bounds() {
        let schema = crate::config::json_schema();
        let table = &schema["$defs"]["redis_key_age"];
        assert_eq!(table["required"], serde_json::json!(["source"]));
        assert_eq!(
            table["oneOf"],
            serde_json::json!([{ "required": ["key"] }, { "required": ["pattern"] }])
        );
        let sample = &table["properties"]["sample"];
        assert_eq!(sample["default"], 500);
        assert_eq!(sample["anyOf"][0]["maximum"], MAX_SAMPLE);
        assert_eq!(table["properties"]["mode"]["default"], "oldest_pending");
        assert_eq!(
            table["properties"]["oldest_pending"]["$ref"],
            "#/$defs/oldest_pending"
        );
    }

    #[test]
    fn redis_key_age_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://127.0.0.1:6379" } }
  db: { postgres: { dsn: "host=db" } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: both
        redis_key_age: { source: cache, key: k, pattern: "p:*", oldest_pending: { source: db, query: q } }
      - name: neither
        redis_key_age: { source: cache, oldest_pending: { source: db, query: q } }
      - name: sample-with-key
        redis_key_age: { source: cache, key: k, sample: 10, oldest_pending: { source: db, query: q } }
      - name: no-comparison
        redis_key_age: { source: cache, key: k }
      - name: both-modes
        redis_key_age: { source: cache, key: k, mode: since_build, oldest_pending: { source: db, query: q } }
      - name: built-pattern
        redis_key_age: { source: cache, pattern: "p:*", mode: since_build }
      - name: bad-values
        redis_key_age: { source: db, pattern: "p:[", sample: 0, field: "", mode: since_bild, oldest_pending: { source: cache, query: "" } }
      - name: one-key-pattern
        redis_key_age: { source: cache, pattern: "catalog:version", sample: 20000, oldest_pending: { source: db, query: q } }
"#;
        let expected = [
            "10:49: budgets[0].probes[0].redis_key_age.pattern: `key` and `pattern` cannot both be set: set exactly one of them",
            "12:24: budgets[0].probes[1].redis_key_age: missing `key` or `pattern`: set exactly one of them",
            "14:49: budgets[0].probes[2].redis_key_age.sample: `sample` applies only to `pattern`: with `key` every run reads that one key",
            "16:24: budgets[0].probes[3].redis_key_age: missing `oldest_pending`: a version alone cannot say how far behind the source it is; add `oldest_pending` (the query that returns the oldest source change newer than $1), or, for a key holding the cache's build time, opt into `mode: since_build`, which reads an idle source as lag",
            "18:55: budgets[0].probes[4].redis_key_age.mode: `mode: since_build` ignores `oldest_pending`: remove one of them",
            "20:63: budgets[0].probes[5].redis_key_age.mode: `mode: since_build` needs `key`: with `pattern` each run would report the oldest build time among whichever keys it sampled; compare each entity's version with `oldest_pending` instead",
            "22:34: budgets[0].probes[6].redis_key_age.source: source \"db\" is a postgres source; redis_key_age needs redis",
            "22:47: budgets[0].probes[6].redis_key_age.pattern: pattern \"p:[\" has a `[` without its `]`",
            "22:62: budgets[0].probes[6].redis_key_age.sample: must be between 1 and 10000, found 0",
            "22:72: budgets[0].probes[6].redis_key_age.field: must not be empty",
            "22:82: budgets[0].probes[6].redis_key_age.mode: invalid value \"since_bild\": expected one of oldest_pending, since_build",
            "22:120: budgets[0].probes[6].redis_key_age.oldest_pending.source: source \"cache\" is a redis source; oldest_pending needs postgres or mysql",
            "22:134: budgets[0].probes[6].redis_key_age.oldest_pending.query: must not be empty",
            "24:50: budgets[0].probes[7].redis_key_age.pattern: pattern \"catalog:version\" has no wildcard (*, ? or [...]), so it names one key: use `key`",
            "24:77: budgets[0].probes[7].redis_key_age.sample: must be between 1 and 10000, found 20000",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
