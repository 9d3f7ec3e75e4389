//! The `dynamodb_stream` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::dynamodb::config::DynamodbSourceConfig;

/// A DynamoDB Streams consumer that checkpoints in a KCL lease table: lag is the age of the
/// oldest stream record after its checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamodbStream {
    pub source: String,
    /// The table whose stream is consumed.
    pub table: String,
    /// The consumer's lease table (KCL: the application name), in the same region.
    pub lease_table: String,
}

config_table! {
    /// A DynamoDB Streams consumer that checkpoints in a KCL-style lease table: lag is the age
    /// of the oldest stream record after its checkpoints.
    ///
    /// Per shard of the table's latest stream, the first record after the lease's checkpoint
    /// (`leaseKey` = shard ID, `checkpoint` = sequence number, TRIM_HORIZON, LATEST or
    /// SHARD_END) is read with GetShardIterator AFTER_SEQUENCE_NUMBER and GetRecords Limit=1;
    /// lag is now − its ApproximateCreationDateTime (whole seconds at AWS). Streams has no
    /// record counts, so no backlog is reported.
    pub(crate) struct DynamodbStreamConfig = "dynamodb_stream" {
        /// Name of the dynamodb source (the region) of the table and its lease table.
        source: SourceRef<DynamodbStream>,
        /// The table whose stream the consumer reads; its latest stream is measured.
        table: NonEmpty<TableName>,
        /// The consumer's lease table, such as the KCL application name.
        lease_table: NonEmpty<TableName>,
    }
}

impl ReadsSource for DynamodbStream {
    const KIND: &'static str = <DynamodbStreamConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <DynamodbSourceConfig as Table>::TABLE.id;
}

impl ProbeKindConfig for DynamodbStreamConfig {
    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::DynamodbStream(DynamodbStream {
                source: self.source.as_ref()?.value.clone(),
                table: self.table.clone()?,
                lease_table: self.lease_table.clone()?,
            }))
        };
        single(kind())
    }
}

/// A DynamoDB table name: 3 to 255 of letters, digits, `_`, `-` and `.`. DynamoDB rejects
/// anything else; saying so at load beats a `ValidationException` at every run.
pub(crate) struct TableName;

impl Scalar for TableName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, name: &Text) -> Option<String> {
        let value = &name.value;
        let valid_chars = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid_chars && (3..=255).contains(&value.len()) {
            return Some(value.clone());
        }
        ctx.error(
            name.span,
            &name.path,
            format!(
                "invalid table name {}: DynamoDB table names are 3 to 255 letters, digits, '_', \
                 '-' or '.'",
                name.quoted()
            ),
        );
        None
    }

    fn json_schema() -> Value {
        serde_json::json!({ "type": "string", "pattern": "^[A-Za-z0-9_.-]{3,255}$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn dynamodb_stream_probes_resolve_to_the_model() {
        let text = r#"
sources:
  aws: { dynamodb: { region: eu-west-1 } }
budgets:
  - name: search
    max_lag: 5s
    probes:
      - name: orders-stream
        dynamodb_stream: { source: aws, table: orders, lease_table: orders-indexer }
"#;
        let config = load_text(text, &|_| None).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"));
        let probe = &config.budgets[0].probes[0];
        assert_eq!(
            probe.kind,
            ProbeKind::DynamodbStream(DynamodbStream {
                source: "aws".to_owned(),
                table: "orders".to_owned(),
                lease_table: "orders-indexer".to_owned(),
            })
        );
        assert_eq!(probe.kind_key(), "dynamodb_stream");
        assert_eq!(probe.source_name(), "aws");
    }

    #[test]
    fn dynamodb_stream_mistakes_are_reported_where_they_are_written() {
        let text = r#"
sources:
  cache: { redis: { url: "redis://cache-1" } }
  aws: { dynamodb: { region: eu-west-1 } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: bad-names
        dynamodb_stream: { source: aws, table: "or ders", lease_table: ab }
      - name: on-redis
        dynamodb_stream: { source: cache, table: orders }
"#;
        let expected = [
            "10:48: budgets[0].probes[0].dynamodb_stream.table: invalid table name \"or ders\": DynamoDB table names are 3 to 255 letters, digits, '_', '-' or '.'",
            "10:72: budgets[0].probes[0].dynamodb_stream.lease_table: invalid table name \"ab\": DynamoDB table names are 3 to 255 letters, digits, '_', '-' or '.'",
            "12:26: budgets[0].probes[1].dynamodb_stream: missing required key `lease_table`",
            "12:36: budgets[0].probes[1].dynamodb_stream.source: source \"cache\" is a redis source; dynamodb_stream needs dynamodb",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
