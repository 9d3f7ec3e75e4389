//! Tables: one mapping shape of the config file, declared once with [`config_table!`].
//!
//! A declaration gives the Rust struct (one field per key, typed by the key's grammar), the
//! static [`TableInfo`] (key names, docs, defaults and schema fragments, used for unknown-key
//! checks, "did you mean" and `lagbudget schema`) and the decoder. Decoding a table reports
//! every problem and keeps going: a field holds its value, or `None` when the key is absent or
//! its value was invalid (already reported). Whether a key was written at all, valid or not,
//! is [`written!`].

use std::marker::PhantomData;

use serde_json::Value;

use super::decode::{Ctx, as_mapping};
use super::grammar::suggest;
use super::path;
use super::schema::Defs;
use super::syntax::{Entry, Mapping, Node, Scalar, Sequence, Span};
use super::value::ConfigValue;

/// Declares a config table: a struct whose fields are the keys of one YAML mapping.
///
/// ```ignore
/// config_table! {
///     /// A Kafka consumer group: lag is the age of the first record at or after each
///     /// partition's committed offset.
///     ///
///     /// Further paragraphs describe the table; the first one alone its kind key.
///     pub(crate) struct KafkaConsumerGroupConfig = "kafka_consumer_group" {
///         /// Name of the kafka source to read.
///         source: SourceRef<KafkaConsumerGroup>,
///         /// The topics the group consumes.
///         topics: Option<NonEmpty<Vec<Spanned<Topic>>>>,
///         /// A regular expression matched against whole topic names.
///         topic_pattern: Option<NonEmpty<TopicPattern>>,
///         /// Export per-partition lag series.
///         partition_detail: bool = false,
///     }
///     exactly_one_of(topics, topic_pattern);
/// }
/// ```
///
/// A key's type is its grammar (see `value.rs`): a plain grammar is a required key, `Option<G>`
/// an optional one, and `G = default` one with a default, given as a scalar the way a file
/// would write it (or `{}` for an empty table); the decoder reads the default with the same
/// grammar, and the schema documents it as written. `Tagged<dyn Trait>` is not a key but the
/// table's kind keys (`postgres: {…}`, `sql_watermark: {…}`), of which exactly one must be set.
/// After the fields, `exactly_one_of(…);` names keys of which exactly one must be set, and
/// `main_file_only(…);` keys an included file may not set. Doc comments are the descriptions:
/// the struct's for the table, each field's for its key, and a kind table's first paragraph
/// for its kind key.
macro_rules! config_table {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $name:ident = $id:literal {
            $(
                $(#[doc = $field_doc:literal])*
                $field:ident : $ty:ty $(= $default:tt)?
            ),* $(,)?
        }
        $(exactly_one_of($($one:ident),+ $(,)?);)?
        $(main_file_only($($main:ident),+ $(,)?);)?
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug)]
        $vis struct $name {
            $(
                $(#[doc = $field_doc])*
                pub $field: Option<<$ty as $crate::config::table::Field>::Out>,
            )*
            /// Where this mapping was written, and which of its keys (not every table's
            /// checks need them).
            #[allow(dead_code)]
            pub keys: $crate::config::table::Keys,
        }

        impl $crate::config::table::Table for $name {
            const TABLE: $crate::config::table::TableInfo = $crate::config::table::TableInfo {
                id: $id,
                doc: $crate::config::table::Doc(&[$($doc),*]),
                fields: &[$(
                    $crate::config::table::FieldInfo {
                        name: stringify!($field),
                        doc: $crate::config::table::Doc(&[$($field_doc),*]),
                        shape: $crate::config::table::config_table!(@shape $ty $(= $default)?),
                        schema: |defs| {
                            $crate::config::table::config_table!(@schema defs $ty $(= $default)?)
                        },
                    }
                ),*],
                one_of: &[$($(stringify!($one)),+)?],
                main_only: &[$($(stringify!($main)),+)?],
            };
        }

        impl $crate::config::value::ConfigValue for $name {
            type Out = Self;

            fn decode(
                ctx: &mut $crate::config::decode::Ctx<'_>,
                node: &$crate::config::syntax::Node,
                path: &str,
            ) -> Option<Self> {
                let reader = $crate::config::table::Reader::take(
                    ctx,
                    node,
                    &<Self as $crate::config::table::Table>::TABLE,
                    path,
                )?;
                let mut table = Self {
                    $($field: $crate::config::table::config_table!(
                        @decode ctx reader $field $ty $(= $default)?
                    ),)*
                    keys: reader.into_keys(),
                };
                table.keys.complete(
                    &<Self as $crate::config::table::Table>::TABLE,
                    &[$(table.$field.is_some()),*],
                );
                Some(table)
            }

            fn schema(defs: &mut $crate::config::schema::Defs) -> serde_json::Value {
                defs.table(&<Self as $crate::config::table::Table>::TABLE)
            }
        }

        // The keys named in `exactly_one_of` and `main_file_only` are fields of the table.
        const _: fn(&$name) = |table| {
            let _ = table;
            $($(let _ = &table.$one;)+)?
            $($(let _ = &table.$main;)+)?
        };
    };
    (@shape $ty:ty) => {
        <$ty as $crate::config::table::Field>::SHAPE
    };
    (@shape $ty:ty = $default:tt) => {
        $crate::config::table::Shape::Key { required: false }
    };
    (@schema $defs:ident $ty:ty) => {
        <$ty as $crate::config::table::Field>::schema($defs)
    };
    (@schema $defs:ident $ty:ty = $default:tt) => {
        $crate::config::table::with_default(
            <$ty as $crate::config::value::ConfigValue>::schema($defs),
            serde_json::json!($default),
        )
    };
    (@decode $ctx:ident $reader:ident $field:ident $ty:ty) => {
        <$ty as $crate::config::table::Field>::decode($ctx, &$reader, stringify!($field))
    };
    (@decode $ctx:ident $reader:ident $field:ident $ty:ty = $default:tt) => {
        $reader.decode_or_default::<$ty>($ctx, stringify!($field), serde_json::json!($default))
    };
}
pub(crate) use config_table;

/// Lists the kinds a `Tagged<dyn Trait>` key set accepts: `config_kinds!("probe": dyn
/// ProbeKindConfig { SqlWatermarkConfig, … })`. Each kind is a table whose id is its key.
macro_rules! config_kinds {
    ($what:literal: dyn $kind:path { $($ty:ty),+ $(,)? }) => {
        impl $crate::config::table::Tag for dyn $kind {
            const VARIANTS: $crate::config::table::Variants = $crate::config::table::Variants {
                what: $what,
                tables: &[$(&<$ty as $crate::config::table::Table>::TABLE),+],
            };

            fn decode_variant(
                ctx: &mut $crate::config::decode::Ctx<'_>,
                key: &str,
                node: &$crate::config::syntax::Node,
                path: &str,
            ) -> Option<(Box<Self>, bool)> {
                $(
                    if key == <$ty as $crate::config::table::Table>::TABLE.id {
                        let config =
                            <$ty as $crate::config::value::ConfigValue>::decode(ctx, node, path)?;
                        let complete = config.keys.complete;
                        return Some((Box::new(config) as Box<Self>, complete));
                    }
                )+
                None
            }
        }
    };
}
pub(crate) use config_kinds;

/// Where the key `field` of a decoded table was written, whether its value was valid or not:
/// `written!(table.field)`. Naming the field (not a string) makes a typo a compile error.
macro_rules! written {
    ($table:ident . $field:ident) => {{
        let _ = &$table.$field;
        $table.keys.span_of(stringify!($field))
    }};
}
pub(crate) use written;

/// A table's doc comment, one string per line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doc(pub &'static [&'static str]);

impl Doc {
    /// The whole text on one line.
    pub fn text(&self) -> String {
        self.paragraphs().join(" ")
    }

    /// The first paragraph.
    pub fn summary(&self) -> String {
        self.paragraphs().into_iter().next().unwrap_or_default()
    }

    fn paragraphs(&self) -> Vec<String> {
        let mut paragraphs: Vec<Vec<&str>> = vec![Vec::new()];
        for line in self.0.iter().map(|line| line.trim()) {
            match paragraphs.last_mut() {
                Some(last) if !line.is_empty() => last.push(line),
                _ => paragraphs.push(Vec::new()),
            }
        }
        paragraphs
            .into_iter()
            .filter(|lines| !lines.is_empty())
            .map(|lines| lines.join(" "))
            .collect()
    }
}

/// What a declaration knows about one table, for checking keys and generating the schema.
#[derive(Debug)]
pub(crate) struct TableInfo {
    /// The table's name under `$defs` in the schema; a kind's table is named by its key.
    pub id: &'static str,
    pub doc: Doc,
    pub fields: &'static [FieldInfo],
    /// Keys of which exactly one must be present. Empty: none.
    pub one_of: &'static [&'static str],
    /// Keys only the main file may set.
    pub main_only: &'static [&'static str],
}

#[derive(Debug)]
pub(crate) struct FieldInfo {
    pub name: &'static str,
    pub doc: Doc,
    pub shape: Shape,
    /// The key's schema, with its default if it has one.
    pub schema: fn(&mut Defs) -> Value,
}

/// How a field appears in its mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// A key of its own.
    Key { required: bool },
    /// One of several kind keys, each a table.
    Variants(&'static Variants),
}

/// The kinds a tagged table may have (`postgres`, `kafka`, …).
#[derive(Debug)]
pub(crate) struct Variants {
    /// What a kind is called in messages: "source", "probe".
    pub what: &'static str,
    /// One table per kind; its id is the kind's key.
    pub tables: &'static [&'static TableInfo],
}

impl TableInfo {
    /// The fields that are keys of their own, with whether each is required.
    pub fn keys(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.fields.iter().filter_map(|field| match field.shape {
            Shape::Key { required } => Some((field.name, required)),
            Shape::Variants(_) => None,
        })
    }

    pub fn variants(&self) -> Option<&'static Variants> {
        self.fields.iter().find_map(|field| match field.shape {
            Shape::Variants(variants) => Some(variants),
            Shape::Key { .. } => None,
        })
    }

    /// Every key and kind key, for "did you mean" and "valid keys".
    fn all_keys(&self) -> Vec<&'static str> {
        let variants = self.variants().map_or(&[][..], |variants| variants.tables);
        self.keys()
            .map(|(name, _)| name)
            .chain(variants.iter().map(|table| table.id))
            .collect()
    }
}

/// A declared table: its static description.
pub(crate) trait Table {
    const TABLE: TableInfo;
}

/// Where a decoded table and its keys were written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Keys {
    /// The file it was written in (0 is the main file).
    pub file: usize,
    pub span: Span,
    pub path: String,
    /// Each key written, valid or not, with where.
    written: Vec<(&'static str, Span)>,
    /// Whether every key written was valid and every required key written.
    pub complete: bool,
}

impl Keys {
    /// Where `key` was written, if it was; see [`written!`].
    pub fn span_of(&self, key: &str) -> Option<Span> {
        self.written
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, span)| *span)
    }

    /// The YAML path of `key` in this table.
    pub fn path_of(&self, key: &str) -> String {
        path::key(&self.path, key)
    }

    /// Records whether the table is complete, given which of `table`'s fields hold a value.
    pub fn complete(&mut self, table: &TableInfo, valued: &[bool]) {
        self.complete = table.fields.iter().zip(valued).all(|(field, valued)| {
            let required = matches!(field.shape, Shape::Key { required: true });
            *valued || !(required || self.span_of(field.name).is_some())
        });
    }
}

/// A mapping being decoded as a table: its keys already checked.
pub(crate) struct Reader<'n> {
    table: &'static TableInfo,
    keys: Keys,
    entries: Vec<&'n Entry>,
    /// Whether an unsupported kind key was found, so a missing kind is not reported twice.
    unknown_variant: bool,
}

impl<'n> Reader<'n> {
    /// Checks that `node` is a mapping whose keys `table` knows, that required keys are
    /// present, exactly one of its `one_of` keys, and no main-file key in an included file.
    /// `None` only when `node` is not a mapping.
    pub fn take(
        ctx: &mut Ctx<'_>,
        node: &'n Node,
        table: &'static TableInfo,
        path: &str,
    ) -> Option<Self> {
        let mapping = as_mapping(ctx, node, path)?;
        let mut reader = Reader {
            table,
            keys: Keys {
                file: ctx.file,
                span: mapping.span,
                path: path.to_owned(),
                written: Vec::new(),
                complete: false,
            },
            entries: Vec::new(),
            unknown_variant: false,
        };
        let all_keys = table.all_keys();
        for entry in &mapping.entries {
            let name = entry.key.text.as_str();
            let key_path = path::key(path, name);
            if let Some(known) = all_keys.iter().find(|known| **known == name) {
                if table.main_only.contains(known) && !ctx.in_main_file() {
                    ctx.error(
                        entry.key.span,
                        &key_path,
                        format!("`{name}` is only allowed in the main file"),
                    );
                    continue;
                }
                reader.keys.written.push((known, entry.key.span));
                reader.entries.push(entry);
                continue;
            }
            match table.variants() {
                // A mapping under an unknown key of a tagged shape is almost certainly a kind
                // that does not exist (yet); say so rather than "unknown key", unless the key
                // is a near miss of a regular key.
                Some(variants)
                    if matches!(entry.value, Node::Mapping(_))
                        && suggest(name, table.keys().map(|(key, _)| key)).is_none() =>
                {
                    let supported: Vec<&str> =
                        variants.tables.iter().map(|table| table.id).collect();
                    let mut message = format!(
                        "unknown {} kind `{name}`; supported: {}",
                        variants.what,
                        supported.join(", ")
                    );
                    if let Some(close) = suggest(name, supported.iter().copied()) {
                        message.push_str(&format!("; did you mean `{close}`?"));
                    }
                    ctx.error(entry.key.span, &key_path, message);
                    reader.unknown_variant = true;
                }
                _ => {
                    let message = match suggest(name, all_keys.iter().copied()) {
                        Some(close) => format!("unknown key `{name}`; did you mean `{close}`?"),
                        None => {
                            format!("unknown key `{name}`; valid keys: {}", all_keys.join(", "))
                        }
                    };
                    ctx.error(entry.key.span, &key_path, message);
                }
            }
        }
        for (key, required) in table.keys() {
            if required && reader.keys.span_of(key).is_none() {
                ctx.error(mapping.span, path, format!("missing required key `{key}`"));
            }
        }
        reader.check_one_of(ctx);
        Some(reader)
    }

    /// Reports a mapping with none, or more than one, of its table's `one_of` keys.
    fn check_one_of(&self, ctx: &mut Ctx<'_>) {
        let one_of = self.table.one_of;
        if one_of.is_empty() {
            return;
        }
        let present: Vec<(&str, Span)> = one_of
            .iter()
            .filter_map(|name| self.keys.span_of(name).map(|span| (*name, span)))
            .collect();
        let quoted: Vec<String> = one_of.iter().map(|name| format!("`{name}`")).collect();
        match present.as_slice() {
            [] => {
                let alternatives = match quoted.split_last() {
                    Some((last, [])) => last.clone(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                };
                ctx.error(
                    self.keys.span,
                    &self.keys.path,
                    format!("missing {alternatives}: set exactly one of them"),
                );
            }
            [_] => {}
            [(first, _), (second, span), ..] => {
                ctx.error(
                    *span,
                    &self.keys.path_of(second),
                    format!("`{first}` and `{second}` cannot both be set: set exactly one of them"),
                );
            }
        }
    }

    /// The value written for `key`, with its path.
    fn node(&self, key: &str) -> Option<(&'n Node, String)> {
        self.entries
            .iter()
            .find(|entry| entry.key.text == key)
            .map(|entry| (&entry.value, self.keys.path_of(key)))
    }

    /// Decodes `key` with `G`, or its default (a scalar or `{}` as a file would write it) at
    /// the mapping when the key is absent.
    pub fn decode_or_default<G: ConfigValue>(
        &self,
        ctx: &mut Ctx<'_>,
        key: &str,
        default: Value,
    ) -> Option<G::Out> {
        match self.node(key) {
            Some((node, path)) => G::decode(ctx, node, &path),
            None => {
                let node = default_node(&default, self.keys.span);
                G::decode(ctx, &node, &self.keys.path_of(key))
            }
        }
    }

    /// The one kind key of a tagged mapping (`postgres`, `sql_watermark`) and its table.
    fn variant<K: ?Sized + Tag>(&self, ctx: &mut Ctx<'_>) -> Option<Variant<K>> {
        let variants = &K::VARIANTS;
        let present: Vec<(&'static str, &Entry)> = self
            .entries
            .iter()
            .filter_map(|entry| {
                let table = variants
                    .tables
                    .iter()
                    .find(|table| table.id == entry.key.text)?;
                Some((table.id, *entry))
            })
            .collect();
        let supported: Vec<&str> = variants.tables.iter().map(|table| table.id).collect();
        match present.as_slice() {
            [] => {
                if !self.unknown_variant {
                    ctx.error(
                        self.keys.span,
                        &self.keys.path,
                        format!(
                            "a {} needs exactly one kind key; supported: {}",
                            variants.what,
                            supported.join(", ")
                        ),
                    );
                }
                None
            }
            [(key, entry)] => {
                let path = self.keys.path_of(key);
                let (config, complete) = K::decode_variant(ctx, key, &entry.value, &path)?;
                Some(Variant {
                    key,
                    config,
                    complete,
                })
            }
            [(first, _), (second, entry), ..] => {
                ctx.error(
                    entry.key.span,
                    &self.keys.path_of(second),
                    format!(
                        "a {} needs exactly one kind key, found `{first}` and `{second}`",
                        variants.what
                    ),
                );
                None
            }
        }
    }

    pub fn into_keys(self) -> Keys {
        self.keys
    }
}

/// The node a default stands for: a plain scalar, or an empty mapping or list.
fn default_node(default: &Value, span: Span) -> Node {
    let scalar = |text: String| {
        Node::Scalar(Scalar {
            text,
            quoted: false,
            span,
        })
    };
    match default {
        Value::Object(_) => Node::Mapping(Mapping {
            entries: Vec::new(),
            span,
        }),
        Value::Array(_) => Node::Sequence(Sequence {
            items: Vec::new(),
            span,
        }),
        Value::String(text) => scalar(text.clone()),
        other => scalar(other.to_string()),
    }
}

/// A key's schema with its default.
pub(crate) fn with_default(mut schema: Value, default: Value) -> Value {
    if let Value::Object(object) = &mut schema {
        object.insert("default".to_owned(), default);
    }
    schema
}

/// How one field of a table is read: a key of its own (`G` required, `Option<G>` optional),
/// or the table's kind keys (`Tagged<K>`).
pub(crate) trait Field {
    type Out;
    const SHAPE: Shape;
    fn decode(ctx: &mut Ctx<'_>, reader: &Reader<'_>, key: &'static str) -> Option<Self::Out>;
    fn schema(defs: &mut Defs) -> Value;
}

impl<G: ConfigValue> Field for G {
    type Out = G::Out;
    const SHAPE: Shape = Shape::Key { required: true };

    fn decode(ctx: &mut Ctx<'_>, reader: &Reader<'_>, key: &'static str) -> Option<G::Out> {
        let (node, path) = reader.node(key)?;
        G::decode(ctx, node, &path)
    }

    fn schema(defs: &mut Defs) -> Value {
        G::schema(defs)
    }
}

impl<G: ConfigValue> Field for Option<G> {
    type Out = G::Out;
    const SHAPE: Shape = Shape::Key { required: false };

    fn decode(ctx: &mut Ctx<'_>, reader: &Reader<'_>, key: &'static str) -> Option<G::Out> {
        <G as Field>::decode(ctx, reader, key)
    }

    fn schema(defs: &mut Defs) -> Value {
        G::schema(defs)
    }
}

/// The kinds of a tagged table: `dyn Trait` lists them with [`config_kinds!`].
pub(crate) trait Tag {
    const VARIANTS: Variants;
    /// Decodes the table of the kind `key` (one of `VARIANTS`), and whether it is complete.
    fn decode_variant(
        ctx: &mut Ctx<'_>,
        key: &str,
        node: &Node,
        path: &str,
    ) -> Option<(Box<Self>, bool)>;
}

/// The field of a tagged table that holds its kind: exactly one of `K`'s kind keys.
pub(crate) struct Tagged<K: ?Sized>(PhantomData<Box<K>>);

/// The kind of a tagged table, and that kind's own table.
#[derive(Debug)]
pub(crate) struct Variant<K: ?Sized> {
    pub key: &'static str,
    pub config: Box<K>,
    /// Whether the kind's table is complete (see [`Keys::complete`]).
    pub complete: bool,
}

impl<K: ?Sized + Tag> Field for Tagged<K> {
    type Out = Variant<K>;
    const SHAPE: Shape = Shape::Variants(&K::VARIANTS);

    fn decode(ctx: &mut Ctx<'_>, reader: &Reader<'_>, _: &'static str) -> Option<Variant<K>> {
        reader.variant(ctx)
    }

    fn schema(_: &mut Defs) -> Value {
        // The kind keys are properties of the table itself (see `schema.rs`).
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::decode::Spanned;
    use crate::config::syntax;
    use crate::config::value::{Count, Name};

    config_table! {
        /// A table for tests.
        ///
        /// Its second paragraph.
        struct Sample = "sample" {
            /// Required.
            name: Spanned<Name>,
            /// Optional.
            limit: Option<Count<1, 10>>,
            /// With a default.
            wait: Duration = "5s",
            /// One of a…
            a: Option<String>,
            /// … or b.
            b: Option<String>,
        }
        exactly_one_of(a, b);
    }

    /// Decodes `text` as a `Sample`, with its errors as `line:column: path: message`.
    fn decode(text: &str) -> (Option<Sample>, Vec<String>) {
        let env = |_: &str| None;
        let mut ctx = Ctx::new(&env);
        ctx.enter_file("sample.yaml".to_owned(), std::path::Path::new(""));
        let (root, _) = syntax::parse(text);
        let sample = <Sample as ConfigValue>::decode(&mut ctx, &root.expect("a document"), "");
        let errors = ctx.into_errors().0.into_iter();
        let errors = errors.map(|e| format!("{}:{}: {}: {}", e.line, e.column, e.path, e.message));
        (sample, errors.collect())
    }

    #[test]
    fn a_table_decodes_its_keys_and_applies_defaults() {
        let (sample, errors) = decode("name: x\nlimit: 3\na: yes\n");
        assert_eq!(errors, Vec::<String>::new());
        let sample = sample.expect("a mapping");
        assert_eq!(sample.name.map(|name| name.value).as_deref(), Some("x"));
        assert_eq!(sample.limit, Some(3));
        assert_eq!(sample.wait, Some(Duration::from_secs(5)));
        assert_eq!(sample.b, None);
        assert!(written!(sample.limit).is_some() && written!(sample.wait).is_none());
        assert!(sample.keys.complete);
    }

    #[test]
    fn a_table_reports_every_problem_and_keeps_what_is_valid() {
        let (sample, errors) = decode("limit: 11\nwait: 5\na: s\nb: t\nlmit: 1\n");
        assert_eq!(
            errors,
            [
                "1:1: (root): missing required key `name`",
                "1:8: limit: must be between 1 and 10, found 11",
                "2:7: wait: invalid duration \"5\": missing unit (use ms, s, m, h or d)",
                "4:1: b: `a` and `b` cannot both be set: set exactly one of them",
                "5:1: lmit: unknown key `lmit`; did you mean `limit`?",
            ]
        );
        let sample = sample.expect("a mapping");
        assert_eq!((sample.limit, sample.wait), (None, None));
        assert_eq!(sample.a.as_deref(), Some("s"));
        // Written, though invalid: checks that depend on a key's presence still see it.
        assert_eq!(written!(sample.limit).map(|span| span.line), Some(1));
        assert!(!sample.keys.complete);
    }

    #[test]
    fn a_table_documents_itself_in_the_schema() {
        let mut defs = Defs::default();
        assert_eq!(
            <Sample as ConfigValue>::schema(&mut defs),
            serde_json::json!({ "$ref": "#/$defs/sample" })
        );
        let schema = crate::config::schema::table_schema(&Sample::TABLE, &mut defs);
        assert_eq!(
            schema["description"],
            "A table for tests. Its second paragraph."
        );
        assert_eq!(schema["required"], serde_json::json!(["name"]));
        assert_eq!(schema["properties"]["wait"]["default"], "5s");
        assert_eq!(schema["properties"]["limit"]["description"], "Optional.");
        assert_eq!(
            schema["oneOf"],
            serde_json::json!([{ "required": ["a"] }, { "required": ["b"] }])
        );
        assert_eq!(Sample::TABLE.doc.summary(), "A table for tests.");
    }
}
