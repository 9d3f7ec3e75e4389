//! The JSON Schema (draft 2020-12) of the config file, generated from the table declarations.
//!
//! The schema is for editor completion and early feedback; the decoder stays the authority.
//! Patterns also accept any string holding `${…}`, and integers such a string, because those
//! values are only known after interpolation, which editors do not do.

use serde_json::{Map, Value, json};

use super::table::{Shape, Table, TableInfo};
use super::tables::FileConfig;

/// The tables a schema refers to, under `$defs`, and which table holds each name.
#[derive(Debug, Default)]
pub(crate) struct Defs(Map<String, Value>, Vec<&'static TableInfo>);

impl Defs {
    /// A reference to `table`, adding it (and the tables it refers to) to `$defs`.
    pub fn table(&mut self, table: &'static TableInfo) -> Value {
        // Two tables of one name would share one definition, and the schema would describe
        // one of them under the other's keys.
        if let Some(other) = self.1.iter().find(|other| other.id == table.id) {
            let keys = |table: &TableInfo| table.fields.iter().map(|f| f.name).collect::<Vec<_>>();
            assert!(
                other.doc.text() == table.doc.text() && keys(other) == keys(table),
                "two config tables are named {:?} in the schema's $defs",
                table.id
            );
        } else {
            self.1.push(table);
        }
        if !self.0.contains_key(table.id) {
            // A placeholder first, so that a table that refers to itself ends.
            self.0.insert(table.id.to_owned(), Value::Null);
            let schema = table_schema(table, self);
            self.0.insert(table.id.to_owned(), schema);
        }
        json!({ "$ref": format!("#/$defs/{}", table.id) })
    }
}

pub(crate) fn json_schema() -> Value {
    let mut defs = Defs::default();
    let root = table_schema(&FileConfig::TABLE, &mut defs);
    let mut schema = Map::new();
    schema.insert(
        "$schema".to_owned(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    schema.insert("title".to_owned(), json!("lagbudget configuration"));
    if let Value::Object(root) = root {
        schema.extend(root);
    }
    schema.insert("$defs".to_owned(), Value::Object(defs.0));
    Value::Object(schema)
}

pub(crate) fn table_schema(table: &'static TableInfo, defs: &mut Defs) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut kinds = Vec::new();
    for field in table.fields {
        match field.shape {
            Shape::Key {
                required: is_required,
            } => {
                let mut schema = (field.schema)(defs);
                if let Value::Object(schema) = &mut schema {
                    schema.insert("description".to_owned(), json!(field.doc.text()));
                }
                properties.insert(field.name.to_owned(), schema);
                if is_required {
                    required.push(field.name);
                }
            }
            Shape::Variants(variants) => {
                for kind in variants.tables {
                    let mut schema = defs.table(kind);
                    if let Value::Object(schema) = &mut schema {
                        schema.insert("description".to_owned(), json!(kind.doc.summary()));
                    }
                    properties.insert(kind.id.to_owned(), schema);
                    kinds.push(kind.id);
                }
            }
        }
    }
    let mut schema = Map::new();
    schema.insert("type".to_owned(), json!("object"));
    schema.insert("description".to_owned(), json!(table.doc.text()));
    schema.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".to_owned(), json!(required));
    }
    schema.insert("additionalProperties".to_owned(), json!(false));
    // Exactly one kind key, and exactly one of the `one_of` keys: each alternative requires
    // one, and `oneOf` fails when two match.
    let mut exactly_one: Vec<Value> = [kinds.as_slice(), table.one_of]
        .into_iter()
        .filter(|names| !names.is_empty())
        .map(|names| {
            let alternatives: Vec<Value> = names
                .iter()
                .map(|name| json!({ "required": [name] }))
                .collect();
            Value::Array(alternatives)
        })
        .collect();
    if exactly_one.len() == 1 {
        schema.insert("oneOf".to_owned(), exactly_one.remove(0));
    } else if !exactly_one.is_empty() {
        let all: Vec<Value> = exactly_one
            .into_iter()
            .map(|alternatives| json!({ "oneOf": alternatives }))
            .collect();
        schema.insert("allOf".to_owned(), Value::Array(all));
    }
    Value::Object(schema)
}
