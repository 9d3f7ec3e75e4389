//! `redis_stream_group`: lag of a Redis stream consumer group, on Redis' own clock.
//!
//! Each run evaluates one read-only Lua script (`#!lua flags=no-writes`, so the server itself
//! refuses any write, and it runs on read-only replicas). A script rather than a pipeline or
//! `MULTI`: the first undelivered entry is `XRANGE key (<last-delivered-id> + COUNT 1`, which
//! needs the group's last-delivered-id from `XINFO GROUPS` first, and a script is the only way
//! to chain that in one round trip and one atomic snapshot together with `TIME`. It never uses
//! `XREADGROUP`, which would deliver entries to a consumer.
//!
//! The oldest entry not yet visible downstream is the smaller of the group's smallest pending ID
//! (delivered, not acknowledged: `XPENDING`) and the first entry after its last-delivered-id;
//! lag is `TIME` minus that ID's milliseconds. Backlog is pending plus undelivered entries.
//! `XINFO GROUPS` gives the undelivered count (`lag`) except after `XDEL`, `XTRIM` or `XSETID`
//! made it unknowable (NULL): then the script counts entries with bounded `XRANGE` pages, and
//! beyond `UNDELIVERED_COUNT_CAP` the backlog is unknown, never guessed.

pub mod config;

use std::sync::Arc;

use redis::{Script, Value};
use tokio::time::Instant;

use super::redis::RedisClient;
use super::{Backlog, BacklogUnit, ErrorReason, ProbeError, Sample};
use crate::clock::unix_now;
use crate::model::RedisStreamGroup;

/// The most undelivered entries the script counts itself when Redis cannot say. A script blocks
/// the server while it runs; 10 000 entries in pages of 1 000 take a few milliseconds.
const UNDELIVERED_COUNT_CAP: u64 = 10_000;

const SNAPSHOT: &str = r"#!lua flags=no-writes
-- lagbudget redis_stream_group: one read-only snapshot of a consumer group.
-- KEYS[1]: the stream; ARGV[1]: the group; ARGV[2]: the most undelivered entries to count.
local stream, group, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now = redis.call('TIME')
local kind = redis.call('TYPE', stream)['ok']
if kind == 'none' then return {'no_stream'} end
if kind ~= 'stream' then return {'wrong_type', kind} end
local info
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == group then info = f break end
end
if not info then return {'no_group'} end
local last = info['last-delivered-id']
local pending = redis.call('XPENDING', stream, group)
local after = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)[1]
local undelivered = info['lag']
if type(undelivered) ~= 'number' then
  -- NULL after XDEL, XTRIM or XSETID: count, but no further than cap (-1: more than cap).
  undelivered = 0
  local from = '(' .. last
  while undelivered <= cap do
    local page = redis.call('XRANGE', stream, from, '+', 'COUNT', 1000)
    if #page == 0 then break end
    undelivered = undelivered + #page
    from = '(' .. page[#page][1]
  end
  if undelivered > cap then undelivered = -1 end
end
local holding, idlest, idle = 0, false, 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] > 0 then
    holding = holding + 1
    if not idlest or f['idle'] > idle then idlest, idle = f['name'], f['idle'] end
  end
end
return {'ok', now[1], now[2], last, pending[1], pending[2] or false,
        after and after[1] or false, undelivered, holding, idlest, idle}
";

/// A stream entry ID: `<milliseconds>-<sequence>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    millis: u64,
    seq: u64,
}

impl EntryId {
    fn parse(text: &str) -> Option<Self> {
        let (millis, seq) = text.split_once('-')?;
        Some(Self {
            millis: millis.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

/// What the script saw, decoded.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Redis `TIME`, in milliseconds since the epoch.
    now_millis: f64,
    last_delivered: EntryId,
    pending: u64,
    smallest_pending: Option<EntryId>,
    first_undelivered: Option<EntryId>,
    /// `None`: more than `UNDELIVERED_COUNT_CAP` and Redis cannot count them.
    undelivered: Option<u64>,
    /// Consumers holding pending entries, and the longest idle among them (name, ms).
    holding: u64,
    idlest: Option<(String, u64)>,
}

pub struct RedisStreamGroupProbe {
    spec: RedisStreamGroup,
    client: Arc<RedisClient>,
    script: Script,
    /// A backlog limit applies, so a backlog that cannot be counted makes the run unknown.
    needs_backlog: bool,
    /// The previous position (smallest pending / last delivered) and when, on the daemon's
    /// clock, it last changed: the group's progress as a whole.
    previous: Option<(String, f64)>,
}

impl RedisStreamGroupProbe {
    pub fn new(spec: RedisStreamGroup, client: Arc<RedisClient>, needs_backlog: bool) -> Self {
        Self {
            spec,
            client,
            script: Script::new(SNAPSHOT),
            needs_backlog,
            previous: None,
        }
    }

    pub async fn run(&mut self, deadline: Instant) -> Result<Sample, ProbeError> {
        let snapshot = self.snapshot(deadline).await?;
        let mut sample = measure(&self.spec, &snapshot, self.needs_backlog)?;
        // Progress: the group moved when its position changed; a consumer that holds pending
        // entries moved when it was last active (`idle` is a duration, so no clock meets
        // another). The oldest of those is the group's progress, so one idle consumer sitting
        // on its entries is a stall even while others keep delivering.
        let now = unix_now();
        let position = sample.position.clone().unwrap_or_default();
        let moved_at = match &self.previous {
            Some((previous, at)) if *previous == position => *at,
            _ => now,
        };
        self.previous = Some((position, moved_at));
        let consumer_active_at = snapshot
            .idlest
            .as_ref()
            .map(|(_, idle_ms)| now - *idle_ms as f64 / 1000.0);
        let progress_at = consumer_active_at.map_or(moved_at, |at| at.min(moved_at));
        sample.progress_age_seconds = Some((now - progress_at).max(0.0));
        Ok(sample)
    }

    /// Runs the script once: checks the stream, the group and the permissions it needs
    /// (`EVALSHA`/`EVAL`, `TYPE`, `TIME`, `XINFO`, `XPENDING`, `XRANGE`).
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let snapshot = self.snapshot(deadline).await?;
        Ok(format!(
            "stream and group readable, {} pending, last delivered {}",
            snapshot.pending, snapshot.last_delivered
        ))
    }

    async fn snapshot(&self, deadline: Instant) -> Result<Snapshot, ProbeError> {
        let mut connection = self.client.connection(deadline).await?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&self.spec.stream)
            .arg(&self.spec.group)
            .arg(UNDELIVERED_COUNT_CAP);
        let answer = self
            .client
            .call(
                "the snapshot script",
                deadline,
                invocation.invoke_async::<Vec<Value>>(&mut connection),
            )
            .await?;
        decode(&self.spec, &answer)
    }
}

/// Lag, backlog and position from a snapshot.
fn measure(
    spec: &RedisStreamGroup,
    snapshot: &Snapshot,
    needs_backlog: bool,
) -> Result<Sample, ProbeError> {
    let backlog = match snapshot.undelivered {
        Some(undelivered) => Some(snapshot.pending + undelivered),
        None if needs_backlog || !spec.id_time => {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "more than {UNDELIVERED_COUNT_CAP} undelivered entries and Redis cannot count \
                     them (entries were deleted or trimmed): backlog unknown"
                ),
            ));
        }
        None => None,
    };
    let oldest = match (snapshot.smallest_pending, snapshot.first_undelivered) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Non-time IDs carry no age: no lag at all (never a 0 for "unknown"), backlog only.
    let (lag_seconds, clamped) = match oldest {
        _ if !spec.id_time => (None, false),
        Some(id) => {
            let lag = (snapshot.now_millis - id.millis as f64) / 1000.0;
            if lag < 0.0 {
                (Some(0.0), true)
            } else {
                (Some(lag), false)
            }
        }
        None => (Some(0.0), false),
    };
    let smallest = snapshot
        .smallest_pending
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    let mut detail = match backlog {
        Some(_) => format!(
            "{} pending, {} undelivered",
            snapshot.pending,
            snapshot.undelivered.unwrap_or_default()
        ),
        None => format!(
            "{} pending, more than {UNDELIVERED_COUNT_CAP} undelivered",
            snapshot.pending
        ),
    };
    if let Some(id) = oldest {
        detail.push_str(&format!(", oldest {id}"));
    }
    if let Some((name, idle_ms)) = &snapshot.idlest {
        detail.push_str(&format!(
            ", {} consumers hold entries, {name} idle {:.1}s",
            snapshot.holding,
            *idle_ms as f64 / 1000.0
        ));
    }
    if !spec.id_time {
        detail.push_str(" (id_time: false, backlog only)");
    }
    Ok(Sample {
        lag_seconds,
        backlog: backlog.map(|value| Backlog {
            unit: BacklogUnit::Messages,
            value: value as f64,
        }),
        position: Some(format!("{smallest}/{}", snapshot.last_delivered)),
        detail: Some(detail),
        negative_lag_clamped: clamped,
        ..Sample::default()
    })
}

fn decode(spec: &RedisStreamGroup, answer: &[Value]) -> Result<Snapshot, ProbeError> {
    let status = answer.first().and_then(text).unwrap_or_default();
    match status.as_str() {
        "ok" => {}
        "no_stream" => {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!("stream {:?} does not exist", spec.stream),
            ));
        }
        "no_group" => {
            return Err(ProbeError::new(
                ErrorReason::NoData,
                format!(
                    "stream {:?} has no consumer group {:?}",
                    spec.stream, spec.group
                ),
            ));
        }
        "wrong_type" => {
            let kind = answer.get(1).and_then(text).unwrap_or_default();
            return Err(ProbeError::new(
                ErrorReason::Query,
                format!("key {:?} is a {kind}, not a stream", spec.stream),
            ));
        }
        _ => {
            return Err(ProbeError::new(
                ErrorReason::Decode,
                "unexpected answer from the snapshot script",
            ));
        }
    }
    let bad = |what: &str| ProbeError::new(ErrorReason::Decode, format!("unreadable {what}"));
    let field = |index: usize| answer.get(index).unwrap_or(&Value::Nil);
    let number = |index: usize, what: &str| -> Result<i64, ProbeError> {
        integer(field(index)).ok_or_else(|| bad(what))
    };
    let id = |index: usize, what: &str| -> Result<Option<EntryId>, ProbeError> {
        match field(index) {
            Value::Nil => Ok(None),
            value => text(value)
                .and_then(|t| EntryId::parse(&t))
                .map(Some)
                .ok_or_else(|| bad(what)),
        }
    };
    let seconds = number(1, "TIME")?;
    let micros = number(2, "TIME")?;
    let last_delivered = id(3, "last-delivered-id")?.ok_or_else(|| bad("last-delivered-id"))?;
    let pending = u64::try_from(number(4, "pending count")?).map_err(|_| bad("pending count"))?;
    let smallest_pending = id(5, "smallest pending ID")?;
    let first_undelivered = id(6, "first undelivered ID")?;
    let undelivered = match number(7, "undelivered count")? {
        -1 => None,
        n => Some(u64::try_from(n).map_err(|_| bad("undelivered count"))?),
    };
    let holding = u64::try_from(number(8, "consumer count")?).map_err(|_| bad("consumer count"))?;
    let idlest = match field(9) {
        Value::Nil => None,
        name => {
            let name = text(name).ok_or_else(|| bad("consumer name"))?;
            let idle = u64::try_from(number(10, "idle time")?).map_err(|_| bad("idle time"))?;
            Some((name, idle))
        }
    };
    Ok(Snapshot {
        now_millis: seconds as f64 * 1000.0 + micros as f64 / 1000.0,
        last_delivered,
        pending,
        smallest_pending,
        first_undelivered,
        undelivered,
        holding,
        idlest,
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// The registry's view of this kind (`probe/mod.rs`).
impl super::Kind for RedisStreamGroupProbe {
    const KEY: &'static str = "redis_stream_group";
    type Settings = RedisStreamGroup;

    fn new(
        probe: &crate::model::Probe,
        settings: &RedisStreamGroup,
        sources: &super::SourceHandles,
    ) -> Result<Self, ProbeError> {
        Ok(Self::new(
            settings.clone(),
            sources.redis(&settings.source)?,
            probe.max_backlog.is_some(),
        ))
    }

    async fn run(&mut self, deadline: Instant) -> Result<super::Reading, ProbeError> {
        RedisStreamGroupProbe::run(self, deadline).await.map(super::Reading::from)
    }

    async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        RedisStreamGroupProbe::check(self, deadline).await
    }

    fn source(settings: &RedisStreamGroup) -> &str {
        &settings.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id_time: bool) -> RedisStreamGroup {
        RedisStreamGroup {
            source: "cache".to_owned(),
            stream: "orders".to_owned(),
            group: "mailer".to_owned(),
            id_time,
        }
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn answer(pending: &str, after: &str, undelivered: i64) -> Vec<Value> {
        let id = |t: &str| if t.is_empty() { Value::Nil } else { bulk(t) };
        vec![
            bulk("ok"),
            bulk("1000"),
            bulk("500000"),
            bulk("990000-0"),
            Value::Int(if pending.is_empty() { 0 } else { 2 }),
            id(pending),
            id(after),
            Value::Int(undelivered),
            Value::Int(1),
            bulk("worker-1"),
            Value::Int(4000),
        ]
    }

    #[test]
    fn lag_is_the_age_of_the_older_of_pending_and_undelivered() {
        let cases = [
            // (smallest pending, first undelivered, undelivered count) => (lag, backlog)
            ("990000-0", "995000-0", 3, 10.5, Some(5.0)),
            ("", "995000-0", 3, 5.5, Some(3.0)),
            ("990000-0", "", 0, 10.5, Some(2.0)),
            ("", "", 0, 0.0, Some(0.0)),
            // Redis' clock behind the ID: clamped and flagged, never negative.
            ("", "1000600-0", 1, 0.0, Some(1.0)),
        ];
        for (pending, after, undelivered, lag, backlog) in cases {
            let snapshot = decode(&spec(true), &answer(pending, after, undelivered)).expect("ok");
            let sample = measure(&spec(true), &snapshot, false).expect("sample");
            assert_eq!(sample.lag_seconds, Some(lag), "{pending} {after}");
            assert_eq!(
                sample.backlog.map(|b| b.value),
                backlog,
                "{pending} {after}"
            );
            assert_eq!(sample.negative_lag_clamped, after == "1000600-0");
        }
    }

    #[test]
    fn an_uncountable_backlog_is_unknown_where_it_matters() {
        let snapshot = decode(&spec(true), &answer("", "995000-0", -1)).expect("ok");
        let sample = measure(&spec(true), &snapshot, false).expect("lag still known");
        assert_eq!(sample.lag_seconds, Some(5.5));
        assert_eq!(sample.backlog, None);
        let error = measure(&spec(true), &snapshot, true).expect_err("max_backlog set");
        assert_eq!(error.reason, ErrorReason::NoData);
        let error = measure(&spec(false), &snapshot, false).expect_err("backlog only");
        assert_eq!(error.reason, ErrorReason::NoData);
    }

    #[test]
    fn non_time_ids_report_backlog_only() {
        let snapshot = decode(&spec(false), &answer("5-0", "7-0", 4)).expect("ok");
        let sample = measure(&spec(false), &snapshot, false).expect("sample");
        assert_eq!(sample.lag_seconds, None);
        assert!(!sample.negative_lag_clamped);
        assert_eq!(sample.backlog.map(|b| b.value), Some(6.0));
    }

    #[test]
    fn missing_things_and_garbage_are_bounded_errors() {
        let cases = [
            (vec![bulk("no_stream")], ErrorReason::NoData),
            (vec![bulk("no_group")], ErrorReason::NoData),
            (vec![bulk("wrong_type"), bulk("hash")], ErrorReason::Query),
            (vec![bulk("what")], ErrorReason::Decode),
            (vec![], ErrorReason::Decode),
            (vec![bulk("ok"), bulk("x")], ErrorReason::Decode),
        ];
        for (answer, reason) in cases {
            let error = decode(&spec(true), &answer).expect_err("error");
            assert_eq!(error.reason, reason, "{answer:?}");
        }
        let mut bad_id = answer("99x", "", 0);
        bad_id[5] = bulk("99x");
        assert_eq!(
            decode(&spec(true), &bad_id).expect_err("bad id").reason,
            ErrorReason::Decode
        );
    }
}
