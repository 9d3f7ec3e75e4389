//! The JSON Schema (draft 2020-12) of the config file, generated from the key tables.
//!
//! The schema is for editor completion and early feedback; the decoder stays the authority.
//! Patterns also accept any string holding `${…}`, and integers such a string, because those
//! values are only known after interpolation, which editors do not do.

use serde_json::{Map, Value, json};

use super::tables::{DefaultValue, Key, ROOT, Table, Type};
use super::values::{NAME_PATTERN, RESERVED_LABELS};
use crate::model::format_duration;

/// A string holding an interpolation such as `${VAR}`, which only the daemon can check.
const INTERPOLATED: &str = ".*\\$\\{[^}]+\\}.*";

pub(crate) fn json_schema() -> Value {
    let mut definitions = Map::new();
    collect_definitions(&ROOT, &mut definitions);
    let mut schema = Map::new();
    schema.insert(
        "$schema".to_owned(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    schema.insert("title".to_owned(), json!("lagbudget configuration"));
    if let Value::Object(root) = table_schema(&ROOT) {
        schema.extend(root);
    }
    schema.insert("$defs".to_owned(), Value::Object(definitions));
    Value::Object(schema)
}

/// Adds every table reachable from `table` (not `table` itself, which is the root) to `$defs`.
fn collect_definitions(table: &'static Table, definitions: &mut Map<String, Value>) {
    let variants = table.kinds.map_or(&[][..], |kinds| kinds.variants);
    for key in table.keys.iter().chain(variants) {
        let nested = match key.ty {
            Type::Table(nested)
            | Type::TableMap(nested)
            | Type::TableList { table: nested, .. } => nested,
            _ => continue,
        };
        if !definitions.contains_key(nested.id) {
            definitions.insert(nested.id.to_owned(), table_schema(nested));
            collect_definitions(nested, definitions);
        }
    }
}

fn table_schema(table: &Table) -> Value {
    let variants = table.kinds.map_or(&[][..], |kinds| kinds.variants);
    let properties: Map<String, Value> = table
        .keys
        .iter()
        .chain(variants)
        .map(|key| (key.name.to_owned(), key_schema(key)))
        .collect();
    let required: Vec<&str> = table
        .keys
        .iter()
        .filter(|key| key.required)
        .map(|key| key.name)
        .collect();
    let mut schema = Map::new();
    schema.insert("type".to_owned(), json!("object"));
    schema.insert("description".to_owned(), json!(table.doc));
    schema.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".to_owned(), json!(required));
    }
    schema.insert("additionalProperties".to_owned(), json!(false));
    // Exactly one kind key, and exactly one of the `one_of` keys: each alternative requires
    // one, and `oneOf` fails when two match.
    let variant_names: Vec<&str> = variants.iter().map(|variant| variant.name).collect();
    let mut exactly_one: Vec<Value> = [variant_names.as_slice(), table.one_of]
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

fn key_schema(key: &Key) -> Value {
    let mut schema = match type_schema(key.ty) {
        Value::Object(schema) => schema,
        _ => Map::new(),
    };
    schema.insert("description".to_owned(), json!(key.doc));
    if let Some(default) = key.default {
        let default = match default {
            DefaultValue::Duration(duration) => json!(format_duration(duration)),
            DefaultValue::Percent(percent) => json!(format!("{percent}%")),
            DefaultValue::Integer(integer) => json!(integer),
            DefaultValue::Str(text) => json!(text),
            DefaultValue::SocketAddr(address) => json!(address.to_string()),
            DefaultValue::Bool(flag) => json!(flag),
        };
        schema.insert("default".to_owned(), default);
    }
    Value::Object(schema)
}

fn type_schema(ty: Type) -> Value {
    match ty {
        Type::String { non_empty: true } => json!({ "type": "string", "minLength": 1 }),
        Type::String { non_empty: false } | Type::SocketAddr => json!({ "type": "string" }),
        Type::Name => json!({ "type": "string", "pattern": NAME_PATTERN }),
        Type::Duration { .. } => json!({
            "type": "string",
            "pattern": format!("^(?:(?:[0-9]+(?:ms|[dhms]))+|{INTERPOLATED})$"),
        }),
        Type::Percent { .. } => json!({
            "type": "string",
            "pattern": format!("^(?:[0-9]+(?:\\.[0-9]+)?%|{INTERPOLATED})$"),
        }),
        Type::Integer { min, max } => {
            let mut integer = json!({ "type": "integer", "minimum": min });
            if let (Some(max), Value::Object(integer)) = (max, &mut integer) {
                integer.insert("maximum".to_owned(), json!(max));
            }
            json!({
                "anyOf": [
                    integer,
                    { "type": "string", "pattern": format!("^{INTERPOLATED}$") },
                ],
            })
        }
        Type::Enum(choices) => json!({ "enum": choices }),
        Type::Bool => json!({
            "anyOf": [
                { "type": "boolean" },
                { "type": "string", "pattern": format!("^{INTERPOLATED}$") },
            ],
        }),
        Type::StringList { non_empty: false } => {
            json!({ "type": "array", "items": { "type": "string" } })
        }
        Type::StringList { non_empty: true } => json!({
            "type": "array",
            "items": { "type": "string", "minLength": 1 },
            "minItems": 1,
        }),
        Type::Labels => json!({
            "type": "object",
            "propertyNames": {
                "pattern": "^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$",
                "not": { "enum": RESERVED_LABELS },
            },
            "additionalProperties": { "type": "string" },
        }),
        Type::StringMap { reserved } => {
            let names: Vec<&str> = reserved.iter().map(|reserved| reserved.name).collect();
            // Values are read as strings; YAML numbers and booleans are written as they are.
            json!({
                "type": "object",
                "propertyNames": { "minLength": 1, "not": { "enum": names } },
                "additionalProperties": { "type": ["string", "number", "boolean"] },
            })
        }
        Type::Table(table) => json!({ "$ref": reference(table) }),
        Type::TableList { table, non_empty } => {
            let mut list = json!({ "type": "array", "items": { "$ref": reference(table) } });
            if let (true, Value::Object(list)) = (non_empty, &mut list) {
                list.insert("minItems".to_owned(), json!(1));
            }
            list
        }
        Type::TableMap(table) => json!({
            "type": "object",
            "propertyNames": { "pattern": NAME_PATTERN },
            "additionalProperties": { "$ref": reference(table) },
        }),
    }
}

fn reference(table: &Table) -> String {
    format!("#/$defs/{}", table.id)
}
