//! The `redis_stream_group` kind's config: its table, its model and what it checks.

use crate::config::decode::{Ctx, Spanned};
use crate::config::table::{Table, config_table};
use crate::config::tables::{BacklogOnly, ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{NonEmpty, ReadsSource, SourceRef};
use crate::model::ProbeKind;
use crate::probe::redis::config::RedisSourceConfig;

/// A Redis stream consumer group: lag is the age of the oldest entry the group has not
/// acknowledged (pending) or not yet delivered, from its ID's milliseconds on Redis' clock.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStreamGroup {
    pub source: String,
    /// The stream's key.
    pub stream: String,
    /// The consumer group (lagbudget never reads through it, so it delivers nothing).
    pub group: String,
    /// Entry IDs are Redis' time-based IDs (`<milliseconds>-<seq>`), so their age is lag. With
    /// explicit non-time IDs the probe reports backlog only.
    pub id_time: bool,
}

config_table! {
    /// A Redis stream consumer group: lag is the age of the oldest entry it has not
    /// acknowledged or not yet been delivered.
    ///
    /// Lag is Redis TIME minus the milliseconds of the oldest entry the group has not
    /// acknowledged (XPENDING) or not yet delivered (the first entry after its
    /// last-delivered-id), read in one read-only script; backlog is pending plus undelivered
    /// entries. lagbudget never reads through the group, so it delivers nothing.
    pub(crate) struct RedisStreamGroupConfig = "redis_stream_group" {
        /// Name of the redis source to read.
        source: SourceRef<RedisStreamGroup>,
        /// The stream's key.
        stream: NonEmpty<String>,
        /// The consumer group.
        group: NonEmpty<String>,
        /// Entry IDs are Redis' time-based IDs (`<milliseconds>-<seq>`), so an entry's age is
        /// known. Set false for streams written with explicit non-time IDs: the probe then
        /// reports backlog only, and needs max_backlog rather than max_lag.
        id_time: Spanned<bool> = true,
    }
}

impl ReadsSource for RedisStreamGroup {
    const KIND: &'static str = <RedisStreamGroupConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <RedisSourceConfig as Table>::TABLE.id;
}

impl ProbeKindConfig for RedisStreamGroupConfig {
    fn backlog_only(&self) -> Option<BacklogOnly<'_>> {
        let flag = self.id_time.as_ref().filter(|flag| !flag.value)?;
        Some(BacklogOnly {
            flag,
            key: "id_time",
            why: "with `id_time: false` entry IDs carry no time",
        })
    }

    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::RedisStreamGroup(RedisStreamGroup {
                source: self.source.as_ref()?.value.clone(),
                stream: self.stream.clone()?,
                group: self.group.clone()?,
                id_time: self.id_time.as_ref()?.value,
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

    const QUEUES: &str = r#"
sources:
  cache: { redis: { url: "redis://lagbudget:${REDIS_PASSWORD}@cache-1:6380/2" } }
  local: { redis: { url: "redis://127.0.0.1" } }
budgets:
  - name: mail
    max_lag: 30s
    probes:
      - name: outbox
        redis_stream_group: { source: cache, stream: "outbox:mail", group: mailer }
      - name: audit-log
        max_backlog: 100
        redis_stream_group: { source: local, stream: audit, group: archiver, id_time: false }
"#;

    #[test]
    fn redis_stream_group_probes_resolve_to_the_model() {
        let env =
            |name: &str| (name == "REDIS_PASSWORD").then(|| "redis-secret-password".to_owned());
        let config = load_text(QUEUES, &env).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let probes = &config.budgets[0].probes;
        assert_eq!(
            probes[0].kind,
            ProbeKind::RedisStreamGroup(RedisStreamGroup {
                source: "cache".to_owned(),
                stream: "outbox:mail".to_owned(),
                group: "mailer".to_owned(),
                id_time: true,
            })
        );
        assert_eq!(probes[0].kind_key(), "redis_stream_group");
        assert_eq!(probes[0].max_lag, Some(Duration::from_secs(30)));
        // Backlog only: the budget's max_lag does not apply, nor shorten its interval.
        assert_eq!(probes[1].max_lag, None);
        assert_eq!(probes[1].max_backlog, Some(100));
        assert_eq!(probes[1].interval, Duration::from_secs(10));
    }

    #[test]
    fn redis_stream_group_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://:hunter2-secret@cache-1" } }
  tls: { redis: { url: "redis://cache-2:6380" } }
  env: { redis: { url: "${REDIS_URL}" } }
  db: { postgres: { dsn: host=db } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: lag-on-ids
        max_lag: 10s
        redis_stream_group: { source: cache, stream: s, group: g, id_time: false }
      - name: no-backlog
        redis_stream_group: { source: cache, stream: s, group: g, id_time: false }
      - name: quoted
        redis_stream_group: { source: db, stream: s, group: g, id_time: "false" }
      - name: missing
        redis_stream_group: { source: cache, group: g }
"#;
        let env =
            |name: &str| (name == "REDIS_URL").then(|| "redis://:env-secret@cache-3".to_owned());
        let expected = [
            "12:18: budgets[0].probes[0].max_lag: max_lag cannot be measured here: with `id_time: false` entry IDs carry no time, so this probe reports backlog only; use max_backlog",
            "13:76: budgets[0].probes[0].redis_stream_group.id_time: `id_time: false` reports backlog only: set max_backlog on this probe or its budget (a max_lag does not apply to it)",
            "15:76: budgets[0].probes[1].redis_stream_group.id_time: `id_time: false` reports backlog only: set max_backlog on this probe or its budget (a max_lag does not apply to it)",
            "17:39: budgets[0].probes[2].redis_stream_group.source: source \"db\" is a postgres source; redis_stream_group needs redis",
            "17:73: budgets[0].probes[2].redis_stream_group.id_time: expected true or false, found the string \"false\": remove the quotes",
            "19:29: budgets[0].probes[3].redis_stream_group: missing required key `stream`",
        ];
        let actual = errors_of(text, &env);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
        assert!(!actual.iter().any(|line| line.contains("secret")));
    }

    #[test]
    fn an_unknown_key_does_not_hide_what_the_valid_keys_mean() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://cache-1" } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: typo
        redis_stream_group: { source: cache, stream: s, group: g, id_time: false, grup: g }
"#;
        let expected = [
            "9:76: budgets[0].probes[0].redis_stream_group.id_time: `id_time: false` reports backlog only: set max_backlog on this probe or its budget (a max_lag does not apply to it)",
            "9:83: budgets[0].probes[0].redis_stream_group.grup: unknown key `grup`; did you mean `group`?",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
