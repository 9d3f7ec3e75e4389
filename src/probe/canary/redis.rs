//! Canary markers in Redis: the marker as JSON in a key (`SET`), or as an entry of a capped
//! stream (`XADD`); read back with `GET` (an integer, or JSON read at a pointer) or
//! `XREVRANGE` (the newest entry of this instance and probe).
//!
//! lagbudget's own key, for a bare `{source}`, is `lagbudget:canary:<instance>:<budget/probe>`:
//! one key per instance, overwritten by every write, so nothing accumulates.

use std::sync::Arc;

use tokio::time::Instant;

use super::config::{Canary, ReadTarget, WriteTarget};
use super::{Marker, seq_from_json, seq_of_marker, with_instance};
use crate::probe::redis::RedisClient;
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// Entries kept in a stream lagbudget writes to (`MAXLEN ~`): enough for every instance's
/// newest marker to be among the entries a reader looks at.
const STREAM_CAP: usize = 1000;
/// Entries a stream reader looks at, newest first, for this instance's newest marker.
const STREAM_READ: usize = 1000;

/// The key of lagbudget's own marker for one instance and probe.
pub fn managed_key(instance: &str, probe: &str) -> String {
    format!("lagbudget:canary:{instance}:{probe}")
}

fn client(handle: &SourceHandle) -> Result<Arc<RedisClient>, ProbeError> {
    match handle {
        SourceHandle::Redis(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "a redis canary target needs a redis source",
        )),
    }
}

enum Write {
    Key(String),
    Stream(String),
}

/// Writes markers to a Redis key or stream.
pub struct RedisWriter {
    client: Arc<RedisClient>,
    write: Write,
}

impl RedisWriter {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let write = match &spec.write.target {
            WriteTarget::RedisStream(stream) => Write::Stream(with_instance(stream, &spec.instance)),
            WriteTarget::RedisKey(key) => Write::Key(with_instance(key, &spec.instance)),
            _ => Write::Key(managed_key(&spec.instance, probe)),
        };
        Ok(Self {
            client: client(handle)?,
            write,
        })
    }

    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        let mut connection = self.client.connection(deadline).await?;
        match &self.write {
            Write::Key(key) => {
                let mut set = redis::cmd("SET");
                set.arg(key).arg(marker.json());
                self.client.call("SET", deadline, set.query_async::<()>(&mut connection)).await
            }
            Write::Stream(stream) => {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_CAP)
                    .arg("*")
                    .arg("instance")
                    .arg(marker.instance)
                    .arg("probe")
                    .arg(marker.probe)
                    .arg("seq")
                    .arg(marker.seq)
                    .arg("written_at")
                    .arg(super::rfc3339(marker.written_at));
                self.client
                    .call(
                    "XADD",
                    deadline,
                    xadd.query_async::<String>(&mut connection),
                )
                .await
                .map(|_| ())
            }
        }
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let server = self.client.check(deadline).await?;
        Ok(match &self.write {
            Write::Key(key) => format!("{server}; markers are SET at key {key}"),
            Write::Stream(stream) => format!("{server}; markers are added to stream {stream}"),
        })
    }
}

enum Read {
    /// `GET`, the seq at `pointer` when the value is JSON.
    Key { key: String, pointer: String },
    Stream(String),
}

/// Reads the newest marker a Redis key or stream shows.
pub struct RedisReader {
    client: Arc<RedisClient>,
    read: Read,
    instance: String,
    probe: String,
}

impl RedisReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let read = match &spec.read.target {
            ReadTarget::RedisStream(stream) => Read::Stream(with_instance(stream, &spec.instance)),
            ReadTarget::RedisKey { key, pointer } => Read::Key {
                key: with_instance(key, &spec.instance),
                pointer: pointer.clone().unwrap_or_else(|| "/seq".to_owned()),
            },
            _ => Read::Key {
                key: managed_key(&spec.instance, probe),
                pointer: "/seq".to_owned(),
            },
        };
        Ok(Self {
            client: client(handle)?,
            read,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
        })
    }

    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let mut connection = self.client.connection(deadline).await?;
        match &self.read {
            Read::Key { key, pointer } => {
                let mut get = redis::cmd("GET");
                get.arg(key);
                let value: Option<String> =
                    self.client.call("GET", deadline, get.query_async(&mut connection)).await?;
                value.map(|value| seq_in_value(&value, pointer)).transpose()
            }
            Read::Stream(stream) => {
                let mut range = redis::cmd("XREVRANGE");
                range.arg(stream).arg("+").arg("-").arg("COUNT").arg(STREAM_READ);
                let entries: Vec<(String, Vec<(String, String)>)> = self
                    .client
                    .call(
                    "XREVRANGE",
                    deadline,
                    range.query_async(&mut connection),
                )
                .await?;
                Ok(entries
                    .iter()
                    .filter_map(|(_, fields)| seq_in_entry(fields, &self.instance, &self.probe))
                    .max())
            }
        }
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let seq = self.read(deadline).await?;
        Ok(match seq {
            Some(seq) => format!("shows marker seq {seq}"),
            None => "shows no marker of this instance yet".to_owned(),
        })
    }
}

/// The seq in a key's value: an integer as text, or JSON with the seq at `pointer`.
fn seq_in_value(value: &str, pointer: &str) -> Result<i64, ProbeError> {
    if let Ok(seq) = value.trim().parse::<i64>() {
        return Ok(seq);
    }
    let json: serde_json::Value = serde_json::from_str(value).map_err(|_| {
        ProbeError::new(
            ErrorReason::Decode,
            "the key holds neither an integer nor JSON",
        )
    })?;
    let at = json.pointer(pointer).ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            format!("the key's JSON has nothing at {pointer}"),
        )
    })?;
    seq_from_json(at)
}

/// The seq of a stream entry of this instance and probe: fields `instance`, `probe` and `seq`
/// (what lagbudget's `XADD` writes), or one field holding the marker as JSON (what a pipeline
/// forwarding the marker message writes).
fn seq_in_entry(fields: &[(String, String)], instance: &str, probe: &str) -> Option<i64> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    if let (Some(i), Some(p), Some(seq)) = (field("instance"), field("probe"), field("seq")) {
        return (i == instance && p == probe)
            .then(|| seq.trim().parse().ok())
            .flatten();
    }
    fields.iter().find_map(|(_, value)| {
        let json: serde_json::Value = serde_json::from_str(value).ok()?;
        seq_of_marker(&json, instance, probe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_integers_or_json_at_a_pointer() {
        assert_eq!(seq_in_value("42", "/seq").ok(), Some(42));
        assert_eq!(seq_in_value(r#"{"seq": 43}"#, "/seq").ok(), Some(43));
        assert_eq!(
            seq_in_value(r#"{"order": {"seq": "44"}}"#, "/order/seq").ok(),
            Some(44)
        );
        let error = seq_in_value(r#"{"other": 1}"#, "/seq").expect_err("no seq");
        assert_eq!(error.reason, ErrorReason::Decode);
        let error = seq_in_value("not json", "/seq").expect_err("not json");
        assert_eq!(error.reason, ErrorReason::Decode);
    }

    #[test]
    fn stream_entries_of_other_instances_are_not_ours() {
        let entry = |instance: &str, seq: &str| {
            vec![
                ("instance".to_owned(), instance.to_owned()),
                ("probe".to_owned(), "b/p".to_owned()),
                ("seq".to_owned(), seq.to_owned()),
            ]
        };
        assert_eq!(seq_in_entry(&entry("h1", "7"), "h1", "b/p"), Some(7));
        assert_eq!(seq_in_entry(&entry("h2", "7"), "h1", "b/p"), None);
        let forwarded = vec![(
            "marker".to_owned(),
            r#"{"instance":"h1","probe":"b/p","seq":9}"#.to_owned(),
        )];
        assert_eq!(seq_in_entry(&forwarded, "h1", "b/p"), Some(9));
    }
}
