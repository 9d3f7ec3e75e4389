//! Canary markers in DynamoDB, for global tables: the writer puts one item per instance and
//! probe (`PutItem`) in the table of the write source's region, overwritten by every write, so
//! nothing accumulates; each view is an eventually consistent `GetItem` of that item in the
//! table of its own source's region (a global table is one table name in several regions).
//!
//! The item, keyed by a string partition key (`key_attribute`, default `id`):
//!
//! ```text
//! { "id": {"S": "<instance>/<budget>/<probe>"}, "instance": {"S": …}, "probe": {"S": …},
//!   "seq": {"N": "<seq>"}, "written_at": {"S": "<RFC 3339>"} }
//! ```
//!
//! Reads are eventually consistent on purpose: that is what a user of the view's region sees,
//! and a strongly consistent read of a replica would hide the very lag being measured (and
//! is not offered across regions anyway).
//!
//! lagbudget creates no tables: a global table's replicas, key and capacity are its owner's.
//! A missing table (`ResourceNotFoundException`) is a `query` error saying so, at every write
//! or read and at `check --connect`, which also checks the key schema with `DescribeTable`.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Marker;
use super::config::{Canary, DynamodbItem, ReadTarget, WriteTarget};
use crate::probe::dynamodb::{Api, DynamoClient, is_aws_error};
use crate::probe::{ErrorReason, ProbeError, SourceHandle};

/// The attributes of a marker item besides its key.
const ATTRIBUTES: [&str; 4] = ["instance", "probe", "seq", "written_at"];

/// Whether `name` may be the key attribute: not one of the marker's other attributes, which
/// would overwrite the key.
pub fn is_free_key_attribute(name: &str) -> bool {
    !ATTRIBUTES.contains(&name)
}

fn client(handle: &SourceHandle) -> Result<Arc<DynamoClient>, ProbeError> {
    match handle {
        SourceHandle::Dynamodb(client) => Ok(client.clone()),
        _ => Err(ProbeError::new(
            ErrorReason::Connect,
            "a dynamodb canary target needs a dynamodb source",
        )),
    }
}

/// The value of the marker item's key: `<instance>/<budget>/<probe>`. Instance names hold no
/// `/`, so two instances or probes never share an item.
pub fn item_key(instance: &str, probe: &str) -> String {
    format!("{instance}/{probe}")
}

/// The marker as a DynamoDB item.
fn encode(marker: &Marker<'_>, key_attribute: &str) -> Value {
    let mut item = serde_json::Map::new();
    item.insert(
        key_attribute.to_owned(),
        json!({ "S": item_key(marker.instance, marker.probe) }),
    );
    item.insert("instance".into(), json!({ "S": marker.instance }));
    item.insert("probe".into(), json!({ "S": marker.probe }));
    item.insert("seq".into(), json!({ "N": marker.seq.to_string() }));
    item.insert(
        "written_at".into(),
        json!({ "S": super::rfc3339(marker.written_at) }),
    );
    Value::Object(item)
}

/// The seq of a `GetItem` answer: `None` when the view has no item yet (`{}`), else the `N`
/// of its `seq` attribute. An item of another instance or probe under this key is not ours.
fn decode(answer: &Value, instance: &str, probe: &str) -> Result<Option<i64>, ProbeError> {
    let Some(item) = answer.get("Item") else {
        return Ok(None);
    };
    let text = |name: &str| item.get(name).and_then(|v| v.get("S")).and_then(Value::as_str);
    if text("instance").is_some_and(|i| i != instance) || text("probe").is_some_and(|p| p != probe)
    {
        return Ok(None);
    }
    let seq = item.get("seq").ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            "the marker item has no `seq` attribute",
        )
    })?;
    seq_of_number(seq).map(Some)
}

/// A seq from a DynamoDB Number attribute, `{"N": "123"}` (numbers travel as strings).
fn seq_of_number(attribute: &Value) -> Result<i64, ProbeError> {
    attribute
        .get("N")
        .and_then(Value::as_str)
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            let shown: String = attribute.to_string().chars().take(40).collect();
            ProbeError::new(
                ErrorReason::Decode,
                format!("the marker item's seq {shown} is not an integer Number (N)"),
            )
        })
}

/// `error` with what to do when it says the table does not exist in this region.
fn explain_missing(error: ProbeError, source: &str, target: &DynamodbItem) -> ProbeError {
    if !is_aws_error(&error, "ResourceNotFoundException") {
        return error;
    }
    ProbeError::new(
        error.reason,
        format!(
            "table {} does not exist in the region of source {source} \
             (ResourceNotFoundException): lagbudget creates no tables; create it, or a replica \
             of the global table in this region, with the string partition key `{}`",
            target.table, target.key_attribute
        ),
    )
}

/// `DescribeTable`: the table exists and its partition (HASH) key is the key attribute, a
/// string, with no sort key (the marker item has only the one key). Returns its status and
/// the regions of its replicas, if it is a global table.
async fn describe(
    client: &DynamoClient,
    source: &str,
    target: &DynamodbItem,
    deadline: Instant,
) -> Result<String, ProbeError> {
    let answer = client
        .call(
            Api::Dynamodb,
            "DescribeTable",
            &json!({ "TableName": target.table }),
            deadline,
        )
        .await
        .map_err(|e| explain_missing(e, source, target))?;
    let table = answer.get("Table").ok_or_else(|| {
        ProbeError::new(
            ErrorReason::Decode,
            "DescribeTable answered without a Table: not a DynamoDB API",
        )
    })?;
    check_key_schema(table, target)?;
    let status = table
        .get("TableStatus")
        .and_then(Value::as_str)
        .unwrap_or("status unknown");
    let replicas: Vec<&str> = table
        .get("Replicas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("RegionName").and_then(Value::as_str))
        .collect();
    let replicas = if replicas.is_empty() {
        String::new()
    } else {
        format!(", replicas in {}", replicas.join(", "))
    };
    Ok(format!(
        "table {} {status} (key {}){replicas}",
        target.table, target.key_attribute
    ))
}

/// The key schema of a `DescribeTable` table against the marker item's key.
fn check_key_schema(table: &Value, target: &DynamodbItem) -> Result<(), ProbeError> {
    let keys: Vec<(&str, &str)> = table
        .get("KeySchema")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|k| {
            Some((
                k.get("AttributeName")?.as_str()?,
                k.get("KeyType")?.as_str()?,
            ))
        })
        .collect();
    let attribute_type = |name: &str| {
        table
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|d| d.get("AttributeName").and_then(Value::as_str) == Some(name))
            .and_then(|d| d.get("AttributeType").and_then(Value::as_str))
    };
    let wrong = |why: String| {
        ProbeError::new(
            ErrorReason::Query,
            format!(
                "table {} cannot hold the canary's item: {why}; the canary needs a table whose \
                 only key is the string partition key `{}` (set `key_attribute` to the table's)",
                target.table, target.key_attribute
            ),
        )
    };
    let hash = keys.iter().find(|(_, kind)| *kind == "HASH").map(|(name, _)| *name);
    match hash {
        Some(name) if name == target.key_attribute => {}
        Some(name) => return Err(wrong(format!("its partition key is `{name}`"))),
        None => return Err(wrong("DescribeTable shows no partition key".to_owned())),
    }
    if let Some((sort, _)) = keys.iter().find(|(_, kind)| *kind == "RANGE") {
        return Err(wrong(format!("it has the sort key `{sort}` too")));
    }
    match attribute_type(&target.key_attribute) {
        Some("S") => Ok(()),
        Some(other) => Err(wrong(format!(
            "its partition key is of type {other}, not S (string)"
        ))),
        None => Err(wrong(
            "DescribeTable does not give the partition key's type".to_owned(),
        )),
    }
}

/// Puts this instance's marker item.
pub struct DynamodbWriter {
    client: Arc<DynamoClient>,
    source: String,
    target: DynamodbItem,
}

impl DynamodbWriter {
    pub fn new(spec: &Canary, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let target = match &spec.write.target {
            WriteTarget::Dynamodb(target) => target.clone(),
            _ => DynamodbItem::managed(),
        };
        Ok(Self {
            client: client(handle)?,
            source: spec.write.source.clone(),
            target,
        })
    }

    pub async fn write(&mut self, marker: &Marker<'_>, deadline: Instant) -> Result<(), ProbeError> {
        let request = json!({
            "TableName": self.target.table,
            "Item": encode(marker, &self.target.key_attribute),
        });
        self.client
            .call(Api::Dynamodb, "PutItem", &request, deadline)
            .await
            .map(|_| ())
            .map_err(|e| explain_missing(e, &self.source, &self.target))
    }

    /// `DescribeTable` only: `check --connect` writes nothing.
    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let table = describe(&self.client, &self.source, &self.target, deadline).await?;
        Ok(format!("{table}; markers are put as one item per instance"))
    }
}

/// Reads this instance's marker item, eventually consistent.
pub struct DynamodbReader {
    client: Arc<DynamoClient>,
    source: String,
    target: DynamodbItem,
    instance: String,
    probe: String,
}

impl DynamodbReader {
    pub fn new(spec: &Canary, probe: &str, handle: &SourceHandle) -> Result<Self, ProbeError> {
        let target = match &spec.read.target {
            ReadTarget::Dynamodb(target) => target.clone(),
            _ => DynamodbItem::managed(),
        };
        Ok(Self {
            client: client(handle)?,
            source: spec.read.source.clone(),
            target,
            instance: spec.instance.clone(),
            probe: probe.to_owned(),
        })
    }

    pub async fn read(&mut self, deadline: Instant) -> Result<Option<i64>, ProbeError> {
        let request = json!({
            "TableName": self.target.table,
            "Key": {
                &self.target.key_attribute: { "S": item_key(&self.instance, &self.probe) },
            },
            // What a user in this region sees: see the module's doc.
            "ConsistentRead": false,
        });
        let answer = self
            .client
            .call(Api::Dynamodb, "GetItem", &request, deadline)
            .await
            .map_err(|e| explain_missing(e, &self.source, &self.target))?;
        decode(&answer, &self.instance, &self.probe)
    }

    pub async fn check(&mut self, deadline: Instant) -> Result<String, ProbeError> {
        let table = describe(&self.client, &self.source, &self.target, deadline).await?;
        Ok(match self.read(deadline).await? {
            Some(seq) => format!("{table}; shows marker seq {seq}"),
            None => format!("{table}; shows no marker of this instance yet"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(key: &str) -> DynamodbItem {
        DynamodbItem {
            table: "lagbudget-canary".into(),
            key_attribute: key.into(),
        }
    }

    #[test]
    fn the_item_is_keyed_by_instance_and_probe_and_holds_the_marker() {
        let marker = Marker {
            instance: "host-1",
            probe: "orders/visible",
            seq: 1_700_000_000_123,
            written_at: 1_700_000_000.123_4,
        };
        let item = encode(&marker, "pk");
        assert_eq!(
            item,
            json!({
                "pk": { "S": "host-1/orders/visible" },
                "instance": { "S": "host-1" },
                "probe": { "S": "orders/visible" },
                "seq": { "N": "1700000000123" },
                "written_at": { "S": "2023-11-14T22:13:20.123Z" },
            })
        );
        // What GetItem gives back is read as the same seq.
        let answer = json!({ "Item": item });
        assert_eq!(
            decode(&answer, "host-1", "orders/visible").ok(),
            Some(Some(1_700_000_000_123))
        );
    }

    #[test]
    fn no_item_is_no_marker_and_another_instances_item_is_not_ours() {
        assert_eq!(decode(&json!({}), "h1", "b/p").ok(), Some(None));
        let other = json!({ "Item": {
            "id": { "S": "h1/b/p" },
            "instance": { "S": "h2" },
            "probe": { "S": "b/p" },
            "seq": { "N": "5" },
        }});
        assert_eq!(decode(&other, "h1", "b/p").ok(), Some(None));
    }

    #[test]
    fn seqs_are_integer_numbers() {
        assert_eq!(seq_of_number(&json!({ "N": "123" })).ok(), Some(123));
        for bad in [
            json!({ "N": "1.5" }),
            json!({ "S": "123" }),
            json!({ "N": 123 }),
            json!("123"),
        ] {
            let error = seq_of_number(&bad).expect_err("not an integer Number");
            assert_eq!(error.reason, ErrorReason::Decode, "{bad}");
        }
        let error = decode(&json!({ "Item": { "id": { "S": "h1/b/p" } } }), "h1", "b/p")
            .expect_err("no seq");
        assert_eq!(error.reason, ErrorReason::Decode);
    }

    #[test]
    fn the_key_schema_must_be_one_string_partition_key() {
        let table = |keys: Value, types: Value| {
            json!({ "KeySchema": keys, "AttributeDefinitions": types })
        };
        let good = table(
            json!([{ "AttributeName": "id", "KeyType": "HASH" }]),
            json!([{ "AttributeName": "id", "AttributeType": "S" }]),
        );
        assert!(check_key_schema(&good, &target("id")).is_ok());
        let other_name = check_key_schema(&good, &target("pk")).expect_err("wrong key");
        assert_eq!(other_name.reason, ErrorReason::Query);
        assert!(
            other_name.message.contains("its partition key is `id`")
                && other_name.message.contains("`key_attribute`"),
            "{}",
            other_name.message
        );
        let number = table(
            json!([{ "AttributeName": "id", "KeyType": "HASH" }]),
            json!([{ "AttributeName": "id", "AttributeType": "N" }]),
        );
        let error = check_key_schema(&number, &target("id")).expect_err("a number key");
        assert!(error.message.contains("of type N"), "{}", error.message);
        let sorted = table(
            json!([
                { "AttributeName": "id", "KeyType": "HASH" },
                { "AttributeName": "at", "KeyType": "RANGE" },
            ]),
            json!([
                { "AttributeName": "id", "AttributeType": "S" },
                { "AttributeName": "at", "AttributeType": "N" },
            ]),
        );
        let error = check_key_schema(&sorted, &target("id")).expect_err("a sort key");
        assert!(error.message.contains("sort key `at`"), "{}", error.message);
    }

    #[test]
    fn a_missing_table_says_lagbudget_does_not_create_it() {
        let missing = ProbeError::new(
            ErrorReason::Query,
            "DynamoDB_20120810.GetItem failed (HTTP 400): ResourceNotFoundException: \
             Requested resource not found",
        );
        let explained = explain_missing(missing, "aws-us", &target("id"));
        assert_eq!(explained.reason, ErrorReason::Query);
        assert!(
            explained.message.contains("table lagbudget-canary does not exist")
                && explained.message.contains("source aws-us")
                && explained.message.contains("lagbudget creates no tables"),
            "{}",
            explained.message
        );
        let other = ProbeError::new(ErrorReason::Query, "AccessDeniedException: no");
        assert_eq!(
            explain_missing(other, "aws-us", &target("id")).message,
            "AccessDeniedException: no"
        );
    }
}
