//! The `postgres_logical` kind's config: its table, its model and what it checks.

use serde_json::Value;

use crate::config::decode::{Ctx, Text};
use crate::config::table::{Table, config_table};
use crate::config::tables::{ProbeEntry, ProbeKindConfig, ProbeScope, single};
use crate::config::value::{NonEmpty, ReadsSource, Scalar, SourceRef};
use crate::model::ProbeKind;
use crate::probe::postgres::config::PostgresSourceConfig;

/// A logical replication slot on a PostgreSQL primary: its byte backlog, and its lag in
/// seconds from an LSN→time map the probe builds from its own samples.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresLogical {
    pub source: String,
    /// The slot's name as PostgreSQL spells it (checked at load: `[a-z0-9_]{1,63}`).
    pub slot: String,
}

config_table! {
    /// A logical replication slot: backlog in bytes, and lag from an LSN-to-time map lagbudget
    /// builds from its own samples.
    ///
    /// The slot is on a PostgreSQL primary (publications, Debezium, pg_recvlogical…).
    /// Backlog is the WAL the slot's consumer has not confirmed, in bytes; lag is the age of
    /// the oldest transaction committed after the slot's confirmed position, read from a map
    /// of WAL positions to times that lagbudget samples itself (read-only). Unknown until that
    /// map reaches back to the slot's position.
    pub(crate) struct PostgresLogicalConfig = "postgres_logical" {
        /// Name of the postgres source (the primary the slot lives on).
        source: SourceRef<PostgresLogical>,
        /// Name of the logical replication slot, as in pg_replication_slots.slot_name.
        slot: NonEmpty<SlotName>,
    }
}

impl ReadsSource for PostgresLogical {
    const KIND: &'static str = <PostgresLogicalConfig as Table>::TABLE.id;
    const SOURCE: &'static str = <PostgresSourceConfig as Table>::TABLE.id;
}

/// A name PostgreSQL accepts for a replication slot: anything else cannot name one.
pub(crate) struct SlotName;

impl Scalar for SlotName {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, slot: &Text) -> Option<String> {
        if is_valid_slot_name(&slot.value) {
            return Some(slot.value.clone());
        }
        ctx.error(
            slot.span,
            &slot.path,
            format!("invalid slot name {}: {SLOT_RULE}", slot.quoted()),
        );
        None
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

impl ProbeKindConfig for PostgresLogicalConfig {
    fn resolve(&self, _: &mut Ctx<'_>, _: &ProbeScope) -> Vec<ProbeEntry> {
        let kind = || {
            Some(ProbeKind::PostgresLogical(PostgresLogical {
                source: self.source.as_ref()?.value.clone(),
                slot: self.slot.clone()?,
            }))
        };
        single(kind())
    }
}

/// Whether `text` is a name PostgreSQL accepts for a replication slot (its
/// `ReplicationSlotValidateName`): anything else cannot name an existing slot.
fn is_valid_slot_name(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

const SLOT_RULE: &str = "PostgreSQL slot names are 1 to 63 lower-case letters, digits and '_'";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors_of, load_text};

    #[test]
    fn logical_slot_probes_resolve_to_the_model() {
        let text = r#"
sources:
  orders-db: { postgres: { dsn: host=primary } }
budgets:
  - name: cdc
    max_lag: 1m
    probes:
      - name: debezium
        postgres_logical: { source: orders-db, slot: debezium_orders }
"#;
        let config = load_text(text, &|_| None).unwrap_or_else(|e| panic!("unexpected:\n{e}"));
        let probe = &config.budgets[0].probes[0];
        assert_eq!(
            probe.kind,
            ProbeKind::PostgresLogical(PostgresLogical {
                source: "orders-db".to_owned(),
                slot: "debezium_orders".to_owned(),
            })
        );
        assert_eq!(probe.kind_key(), "postgres_logical");
    }

    #[test]
    fn slot_names_are_checked_as_postgresql_checks_them() {
        let text = r#"
sources:
  db: { postgres: { dsn: host=db } }
budgets:
  - name: b
    max_lag: 1m
    probes:
      - name: upper
        postgres_logical: { source: db, slot: Orders }
      - name: empty
        postgres_logical: { source: db, slot: "" }
      - name: long
        postgres_logical: { source: db, slot: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa }
"#;
        let expected = [
            "9:47: budgets[0].probes[0].postgres_logical.slot: invalid slot name \"Orders\": PostgreSQL slot names are 1 to 63 lower-case letters, digits and '_'",
            "11:47: budgets[0].probes[1].postgres_logical.slot: must not be empty",
            "13:47: budgets[0].probes[2].postgres_logical.slot: invalid slot name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": PostgreSQL slot names are 1 to 63 lower-case letters, digits and '_'",
        ];
        let actual = errors_of(text, &|_| None);
        assert_eq!(actual, expected, "\n{}", actual.join("\n"));
    }
}
