//! Table-driven decoding of the node tree, collecting every error instead of stopping.
//!
//! [`Fields::take`] checks a mapping against its [`Table`] (unknown keys, missing required
//! keys) and the typed getters read values as the table declares them, applying the table's
//! defaults. Every getter reports a problem and returns `None` rather than failing, so one run
//! finds all errors of all files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::interpolate::interpolate;
use super::path;
use super::syntax::{Entry, Mapping, Node, Scalar, Span};
use super::tables::{DefaultValue, Key, Table, Type};
use super::values::{
    NAME_RULE, RESERVED_LABELS, is_valid_label_name, is_valid_name, parse_duration, parse_percent,
    suggest,
};
use super::{ConfigError, ConfigErrors};
use crate::model::SecretSet;

/// One error before file names are attached and secrets scrubbed.
#[derive(Debug)]
struct Pending {
    file: usize,
    span: Span,
    path: String,
    message: String,
}

/// Shared state of one load: the environment, the files seen, secrets and errors.
pub(crate) struct Ctx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Display names of the files loaded, main file first.
    files: Vec<String>,
    /// Index of the file being decoded.
    pub file: usize,
    /// Directory of the file being decoded, for relative `${file:…}` paths.
    pub dir: PathBuf,
    pub secrets: SecretSet,
    errors: Vec<Pending>,
}

impl<'e> Ctx<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            env,
            files: Vec::new(),
            file: 0,
            dir: PathBuf::new(),
            secrets: SecretSet::default(),
            errors: Vec::new(),
        }
    }

    /// Makes `display` the file being decoded; later errors are reported against it.
    pub fn enter_file(&mut self, display: String, dir: &Path) {
        self.files.push(display);
        self.file = self.files.len() - 1;
        self.dir = dir.to_path_buf();
    }

    pub fn file_name(&self, file: usize) -> &str {
        self.files.get(file).map_or("", String::as_str)
    }

    /// Reports a problem in the file being decoded.
    pub fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.error_in(self.file, span, path, message);
    }

    pub fn error_in(&mut self, file: usize, span: Span, path: &str, message: impl Into<String>) {
        self.errors.push(Pending {
            file,
            span,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors in file then line order, each once, scrubbed of every secret seen.
    pub fn into_errors(self) -> ConfigErrors {
        let mut pending = self.errors;
        // Stable, so errors at one position keep the order they were found in.
        pending.sort_by_key(|error| (error.file, error.span));
        let mut errors: Vec<ConfigError> = Vec::with_capacity(pending.len());
        for error in pending {
            let error = ConfigError {
                file: self
                    .secrets
                    .scrub(self.files.get(error.file).map_or("", String::as_str)),
                line: error.span.line,
                column: error.span.column,
                path: self.secrets.scrub(path::display(&error.path)),
                message: self.secrets.scrub(&error.message),
            };
            // One mistake can be found through several probes (a budget-level interval
            // checked against each probe's max_lag); it is reported once.
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        ConfigErrors(errors)
    }

    /// Interpolates a scalar's value, remembering secrets and reporting problems.
    pub fn text(&mut self, scalar: &Scalar, path: &str) -> Option<Text> {
        let out = interpolate(&scalar.text, self.env, &self.dir);
        for secret in &out.secrets {
            self.secrets.insert(secret);
        }
        let ok = out.errors.is_empty();
        for message in out.errors {
            self.error(scalar.span, path, message);
        }
        ok.then(|| Text {
            value: out.value,
            raw: scalar.text.clone(),
            substituted: out.substituted,
            span: scalar.span,
            path: path.to_owned(),
        })
    }
}

/// A string value after interpolation, with what the file said and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Text {
    pub value: String,
    /// The text as written in the file, before interpolation.
    pub raw: String,
    pub substituted: bool,
    pub span: Span,
    pub path: String,
}

impl Text {
    /// The value for messages: quoted as written, so an interpolated value is never echoed.
    pub fn quoted(&self) -> String {
        format!("{:?}", self.raw)
    }

    /// A short form for messages: as written, quoted only when it was interpolated.
    pub fn shown(&self) -> String {
        if self.substituted {
            self.quoted()
        } else {
            self.raw.clone()
        }
    }
}

/// A decoded value with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub span: Span,
    pub path: String,
    /// How messages show this value (see [`Text::shown`]).
    pub shown: String,
}

impl<T> Spanned<T> {
    fn from_text(text: &Text, value: T) -> Self {
        Self {
            value,
            span: text.span,
            path: text.path.clone(),
            shown: text.shown(),
        }
    }
}

/// The keys of one mapping, checked against its table.
#[derive(Debug)]
pub(crate) struct Fields<'n> {
    table: &'static Table,
    pub path: String,
    pub span: Span,
    entries: Vec<(&'static Key, &'n Entry)>,
    /// Whether an unsupported variant key was found, so a missing kind is not reported twice.
    unknown_variant: bool,
}

impl<'n> Fields<'n> {
    /// Checks that `node` is a mapping whose keys `table` knows, and that required keys are
    /// present. Returns `None` only when `node` is not a mapping.
    pub fn take(
        ctx: &mut Ctx<'_>,
        node: &'n Node,
        table: &'static Table,
        path: &str,
    ) -> Option<Self> {
        let mapping = as_mapping(ctx, node, path)?;
        let mut fields = Fields {
            table,
            path: path.to_owned(),
            span: mapping.span,
            entries: Vec::new(),
            unknown_variant: false,
        };
        for entry in &mapping.entries {
            let name = entry.key.text.as_str();
            if let Some(key) = table.key(name) {
                fields.entries.push((key, entry));
                continue;
            }
            let key_path = path::key(path, name);
            match table.kinds {
                // A mapping under an unknown key of a tagged shape is almost certainly a kind
                // that does not exist (yet); say so rather than "unknown key", unless the key
                // is a near miss of a regular key.
                Some(kinds)
                    if matches!(entry.value, Node::Mapping(_))
                        && suggest(name, table.keys.iter().map(|key| key.name)).is_none() =>
                {
                    let supported: Vec<&str> =
                        kinds.variants.iter().map(|variant| variant.name).collect();
                    let mut message = format!(
                        "unknown {} kind `{name}`; supported: {}",
                        kinds.what,
                        supported.join(", ")
                    );
                    if let Some(close) = suggest(name, supported.iter().copied()) {
                        message.push_str(&format!("; did you mean `{close}`?"));
                    }
                    ctx.error(entry.key.span, &key_path, message);
                    fields.unknown_variant = true;
                }
                _ => {
                    let known = all_keys(table);
                    let message = match suggest(name, known.iter().copied()) {
                        Some(close) => format!("unknown key `{name}`; did you mean `{close}`?"),
                        None => format!("unknown key `{name}`; valid keys: {}", known.join(", ")),
                    };
                    ctx.error(entry.key.span, &key_path, message);
                }
            }
        }
        for key in table.keys.iter().filter(|key| key.required) {
            if fields.get(key.name).is_none() {
                ctx.error(
                    mapping.span,
                    path,
                    format!("missing required key `{}`", key.name),
                );
            }
        }
        fields.check_one_of(ctx);
        Some(fields)
    }

    /// Reports a mapping with none, or more than one, of its table's `one_of` keys.
    fn check_one_of(&self, ctx: &mut Ctx<'_>) {
        let one_of = self.table.one_of;
        if one_of.is_empty() {
            return;
        }
        let present: Vec<(&str, Span)> = one_of
            .iter()
            .filter_map(|name| self.key_span(name).map(|span| (*name, span)))
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
                    self.span,
                    &self.path,
                    format!("missing {alternatives}: set exactly one of them"),
                );
            }
            [_] => {}
            [(first, _), (second, span), ..] => {
                ctx.error(
                    *span,
                    &path::key(&self.path, second),
                    format!("`{first}` and `{second}` cannot both be set: set exactly one of them"),
                );
            }
        }
    }

    fn get(&self, name: &str) -> Option<(&'static Key, &'n Entry)> {
        self.entries
            .iter()
            .find(|(key, _)| key.name == name)
            .copied()
    }

    /// The entry for `name` with its path, if present. A name that is not in the table is a
    /// bug in the decoder, caught by the debug assertion in tests.
    fn lookup(&self, name: &str) -> Option<(&'static Key, &'n Node, String)> {
        debug_assert!(
            self.table.key(name).is_some(),
            "`{name}` is not a key of table `{}`",
            self.table.id
        );
        self.get(name)
            .map(|(key, entry)| (key, &entry.value, path::key(&self.path, name)))
    }

    /// The table's default for `name`, if it declares one.
    fn default(&self, name: &str) -> Option<DefaultValue> {
        self.table.key(name).and_then(|key| key.default)
    }

    /// Where the key `name` was written, if present.
    pub fn key_span(&self, name: &str) -> Option<Span> {
        self.get(name).map(|(_, entry)| entry.key.span)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A `Type::String` value.
    pub fn text(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Text> {
        let (key, node, path) = self.lookup(name)?;
        let Type::String { non_empty } = key.ty else {
            debug_assert!(false, "`{name}` is not a string");
            return None;
        };
        let text = scalar_text(ctx, node, &path, "a string")?;
        if non_empty && text.value.is_empty() {
            ctx.error(text.span, &path, "must not be empty");
            return None;
        }
        Some(text)
    }

    pub fn text_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> String {
        match (self.text(ctx, name), self.default(name)) {
            (Some(text), _) => text.value,
            (None, Some(DefaultValue::Str(default))) => default.to_owned(),
            (None, _) => String::new(),
        }
    }

    /// A `Type::Name` value.
    pub fn name(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Text> {
        let (key, node, path) = self.lookup(name)?;
        debug_assert!(matches!(key.ty, Type::Name), "`{name}` is not a name");
        let text = scalar_text(ctx, node, &path, "a string")?;
        check_name(ctx, &text).then_some(text)
    }

    /// A `Type::Duration` value.
    pub fn duration(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Spanned<Duration>> {
        let (key, node, path) = self.lookup(name)?;
        let Type::Duration { positive } = key.ty else {
            debug_assert!(false, "`{name}` is not a duration");
            return None;
        };
        let text = scalar_text(ctx, node, &path, "a duration such as 30s")?;
        let value = match parse_duration(&text.value) {
            Ok(value) => value,
            Err(reason) => {
                ctx.error(
                    text.span,
                    &path,
                    format!("invalid duration {}: {reason}", text.quoted()),
                );
                return None;
            }
        };
        if positive && value.is_zero() {
            ctx.error(text.span, &path, "must be greater than 0s");
            return None;
        }
        Some(Spanned::from_text(&text, value))
    }

    pub fn duration_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> Duration {
        match (self.duration(ctx, name), self.default(name)) {
            (Some(value), _) => value.value,
            (None, Some(DefaultValue::Duration(default))) => default,
            (None, _) => Duration::ZERO,
        }
    }

    /// A `Type::Percent` value as a ratio.
    pub fn percent_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> f64 {
        let default = match self.default(name) {
            Some(DefaultValue::Percent(percent)) => f64::from(percent) / 100.0,
            _ => 0.0,
        };
        self.percent(ctx, name)
            .map_or(default, |percent| percent.value)
    }

    pub fn percent(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Spanned<f64>> {
        let (key, node, path) = self.lookup(name)?;
        let Type::Percent { max_inclusive } = key.ty else {
            debug_assert!(false, "`{name}` is not a percentage");
            return None;
        };
        let text = scalar_text(ctx, node, &path, "a percentage such as 80%")?;
        let ratio = match parse_percent(&text.value) {
            Ok(ratio) => ratio,
            Err(reason) => {
                ctx.error(
                    text.span,
                    &path,
                    format!("invalid percentage {}: {reason}", text.quoted()),
                );
                return None;
            }
        };
        let in_range = ratio > 0.0
            && if max_inclusive {
                ratio <= 1.0
            } else {
                ratio < 1.0
            };
        if !in_range {
            let upper = if max_inclusive {
                "at most 100%"
            } else {
                "below 100%"
            };
            ctx.error(
                text.span,
                &path,
                format!(
                    "{} is out of range: must be above 0% and {upper}",
                    text.quoted()
                ),
            );
            return None;
        }
        Some(Spanned::from_text(&text, ratio))
    }

    /// A `Type::Integer` value, within the table's range.
    pub fn integer(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Spanned<i64>> {
        let (key, node, path) = self.lookup(name)?;
        let Type::Integer { min, max } = key.ty else {
            debug_assert!(false, "`{name}` is not an integer");
            return None;
        };
        let scalar = plain_scalar(ctx, node, &path, "an integer", |text| {
            text.trim().parse::<i64>().is_ok()
        })?;
        let text = ctx.text(scalar, &path)?;
        let Ok(value) = text.value.parse::<i64>() else {
            ctx.error(
                text.span,
                &path,
                format!("expected an integer, found {}", text.quoted()),
            );
            return None;
        };
        let range = match max {
            Some(max) if value < min || value > max => {
                Some(format!("must be between {min} and {max}"))
            }
            None if value < min => Some(format!("must be at least {min}")),
            _ => None,
        };
        if let Some(range) = range {
            ctx.error(text.span, &path, format!("{range}, found {}", text.shown()));
            return None;
        }
        Some(Spanned::from_text(&text, value))
    }

    pub fn integer_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> i64 {
        match (self.integer(ctx, name), self.default(name)) {
            (Some(value), _) => value.value,
            (None, Some(DefaultValue::Integer(default))) => default,
            (None, _) => 0,
        }
    }

    /// A `Type::SocketAddr` value.
    pub fn socket_addr_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<SocketAddr> {
        let default = match self.default(name) {
            Some(DefaultValue::SocketAddr(default)) => Some(default),
            _ => None,
        };
        let Some((key, node, path)) = self.lookup(name) else {
            return default;
        };
        debug_assert!(
            matches!(key.ty, Type::SocketAddr),
            "`{name}` is not an address"
        );
        let text = scalar_text(ctx, node, &path, "an address such as 0.0.0.0:9464")?;
        match text.value.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                ctx.error(
                    text.span,
                    &path,
                    format!(
                        "invalid socket address {}: expected IP:PORT, such as 0.0.0.0:9464",
                        text.quoted()
                    ),
                );
                None
            }
        }
    }

    /// A `Type::Enum` value.
    pub fn choice(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Spanned<&'static str>> {
        let (key, node, path) = self.lookup(name)?;
        let Type::Enum(choices) = key.ty else {
            debug_assert!(false, "`{name}` is not an enum");
            return None;
        };
        let text = scalar_text(ctx, node, &path, "a string")?;
        match choices.iter().find(|choice| **choice == text.value) {
            Some(choice) => Some(Spanned::from_text(&text, *choice)),
            None => {
                ctx.error(
                    text.span,
                    &path,
                    format!(
                        "invalid value {}: expected one of {}",
                        text.quoted(),
                        choices.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A `Type::Bool` value: YAML's `true` or `false`, or a quoted `${…}` that gives one.
    pub fn boolean(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Spanned<bool>> {
        let (key, node, path) = self.lookup(name)?;
        debug_assert!(matches!(key.ty, Type::Bool), "`{name}` is not a boolean");
        let scalar = plain_scalar(ctx, node, &path, "true or false", |text| {
            parse_bool(text).is_some()
        })?;
        let text = ctx.text(scalar, &path)?;
        let Some(value) = parse_bool(&text.value) else {
            ctx.error(
                text.span,
                &path,
                format!("expected true or false, found {}", text.quoted()),
            );
            return None;
        };
        Some(Spanned::from_text(&text, value))
    }

    pub fn bool_or_default(&self, ctx: &mut Ctx<'_>, name: &str) -> bool {
        match (self.boolean(ctx, name), self.default(name)) {
            (Some(value), _) => value.value,
            (None, Some(DefaultValue::Bool(default))) => default,
            (None, _) => false,
        }
    }

    /// The table's default of a `Type::Enum` key.
    pub fn choice_default(&self, name: &str) -> Option<&'static str> {
        match self.default(name) {
            Some(DefaultValue::Str(default)) => Some(default),
            _ => None,
        }
    }

    /// A `Type::StringList` value; invalid items are reported and left out.
    pub fn strings(&self, ctx: &mut Ctx<'_>, name: &str) -> Vec<Text> {
        let Some((key, node, path)) = self.lookup(name) else {
            return Vec::new();
        };
        let Type::StringList { non_empty } = key.ty else {
            debug_assert!(false, "`{name}` is not a list of strings");
            return Vec::new();
        };
        let items = list_items(ctx, node, &path);
        if non_empty && items.is_empty() && matches!(node, Node::Sequence(_)) {
            ctx.error(node.span(), &path, "must list at least one item");
        }
        let mut strings = Vec::with_capacity(items.len());
        for (item, item_path) in items {
            let Some(text) = scalar_text(ctx, item, &item_path, "a string") else {
                continue;
            };
            if non_empty && text.value.is_empty() {
                ctx.error(text.span, &item_path, "must not be empty");
                continue;
            }
            strings.push(text);
        }
        strings
    }

    /// A `Type::StringMap` value: each key with its value, in file order. Reserved keys and
    /// values that are not scalars are reported and left out.
    pub fn string_map(&self, ctx: &mut Ctx<'_>, name: &str) -> Vec<(String, Text)> {
        let Some((key, node, path)) = self.lookup(name) else {
            return Vec::new();
        };
        let Type::StringMap { reserved } = key.ty else {
            debug_assert!(false, "`{name}` is not a map of strings");
            return Vec::new();
        };
        let Some(mapping) = as_mapping(ctx, node, &path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in &mapping.entries {
            let property = entry.key.text.as_str();
            let entry_path = path::key(&path, property);
            if let Some(reserved) = reserved
                .iter()
                .find(|reserved| reserved.name.eq_ignore_ascii_case(property))
            {
                ctx.error(
                    entry.key.span,
                    &entry_path,
                    format!(
                        "property `{property}` is set by lagbudget: {}",
                        reserved.reason
                    ),
                );
                continue;
            }
            if property.is_empty() {
                ctx.error(entry.key.span, &entry_path, "empty property name");
                continue;
            }
            if let Some(value) = scalar_text(ctx, &entry.value, &entry_path, "a string") {
                out.push((property.to_owned(), value));
            }
        }
        out
    }

    /// A `Type::Labels` value; invalid labels are reported and left out.
    pub fn labels(&self, ctx: &mut Ctx<'_>, name: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let Some((key, node, path)) = self.lookup(name) else {
            return labels;
        };
        debug_assert!(matches!(key.ty, Type::Labels), "`{name}` is not labels");
        let Some(mapping) = as_mapping(ctx, node, &path) else {
            return labels;
        };
        for entry in &mapping.entries {
            let label = entry.key.text.as_str();
            let label_path = path::key(&path, label);
            let problem = if !is_valid_label_name(label) {
                Some(format!(
                    "invalid label name {label:?}: must match [a-zA-Z_][a-zA-Z0-9_]*"
                ))
            } else if label.starts_with("__") {
                Some(format!(
                    "invalid label name {label:?}: names starting with \"__\" are reserved for \
                     Prometheus"
                ))
            } else if RESERVED_LABELS.contains(&label) {
                Some(format!(
                    "label name {label:?} is reserved: lagbudget sets it itself"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                ctx.error(entry.key.span, &label_path, problem);
            }
            if let Some(value) = scalar_text(ctx, &entry.value, &label_path, "a string") {
                labels.insert(label.to_owned(), value.value);
            }
        }
        labels
    }

    /// A `Type::Table` value.
    pub fn table(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<Fields<'n>> {
        let (key, node, path) = self.lookup(name)?;
        let Type::Table(table) = key.ty else {
            debug_assert!(false, "`{name}` is not a table");
            return None;
        };
        Fields::take(ctx, node, table, &path)
    }

    /// A `Type::TableList` value; items that are not mappings are reported and left out.
    pub fn table_list(&self, ctx: &mut Ctx<'_>, name: &str) -> Vec<Fields<'n>> {
        let Some((key, node, path)) = self.lookup(name) else {
            return Vec::new();
        };
        let Type::TableList { table, non_empty } = key.ty else {
            debug_assert!(false, "`{name}` is not a list of tables");
            return Vec::new();
        };
        let items = list_items(ctx, node, &path);
        if non_empty && items.is_empty() && matches!(node, Node::Sequence(_)) {
            ctx.error(node.span(), &path, "must list at least one item");
        }
        items
            .into_iter()
            .filter_map(|(item, item_path)| Fields::take(ctx, item, table, &item_path))
            .collect()
    }

    /// A `Type::TableMap` value: each entry's name (already checked) with its fields.
    pub fn table_map(&self, ctx: &mut Ctx<'_>, name: &str) -> Vec<(&'n Scalar, Fields<'n>)> {
        let Some((key, node, path)) = self.lookup(name) else {
            return Vec::new();
        };
        let Type::TableMap(table) = key.ty else {
            debug_assert!(false, "`{name}` is not a map of tables");
            return Vec::new();
        };
        let Some(mapping) = as_mapping(ctx, node, &path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in &mapping.entries {
            let entry_path = path::key(&path, &entry.key.text);
            if !is_valid_name(&entry.key.text) {
                ctx.error(
                    entry.key.span,
                    &entry_path,
                    format!("invalid name {:?}: {NAME_RULE}", entry.key.text),
                );
            }
            if let Some(fields) = Fields::take(ctx, &entry.value, table, &entry_path) {
                out.push((&entry.key, fields));
            }
        }
        out
    }

    /// The one variant key of a tagged mapping (`postgres`, `sql_watermark`) and its fields.
    pub fn variant(&self, ctx: &mut Ctx<'_>) -> Option<(&'static str, Fields<'n>)> {
        let kinds = self.table.kinds?;
        let present: Vec<(&'static Key, &'n Entry)> = self
            .entries
            .iter()
            .filter(|(key, _)| {
                kinds
                    .variants
                    .iter()
                    .any(|variant| std::ptr::eq(variant, *key))
            })
            .copied()
            .collect();
        let supported: Vec<&str> = kinds.variants.iter().map(|variant| variant.name).collect();
        match present.as_slice() {
            [] => {
                if !self.unknown_variant {
                    ctx.error(
                        self.span,
                        &self.path,
                        format!(
                            "a {} needs exactly one kind key; supported: {}",
                            kinds.what,
                            supported.join(", ")
                        ),
                    );
                }
                None
            }
            [(key, entry)] => {
                let Type::Table(table) = key.ty else {
                    debug_assert!(false, "variant `{}` is not a table", key.name);
                    return None;
                };
                let path = path::key(&self.path, key.name);
                Fields::take(ctx, &entry.value, table, &path).map(|fields| (key.name, fields))
            }
            [(first, _), (second, entry), ..] => {
                ctx.error(
                    entry.key.span,
                    &path::key(&self.path, second.name),
                    format!(
                        "a {} needs exactly one kind key, found `{}` and `{}`",
                        kinds.what, first.name, second.name
                    ),
                );
                None
            }
        }
    }
}

/// The names of a table's keys and variants, for suggestions.
fn all_keys(table: &Table) -> Vec<&'static str> {
    let variants = table.kinds.map_or(&[][..], |kinds| kinds.variants);
    table
        .keys
        .iter()
        .chain(variants)
        .map(|key| key.name)
        .collect()
}

/// YAML's spellings of a boolean (the core schema's, not YAML 1.1's `yes`/`on`).
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Reports a name that breaks the `[A-Za-z0-9][A-Za-z0-9_.-]*` rule; true when it is valid.
fn check_name(ctx: &mut Ctx<'_>, text: &Text) -> bool {
    if is_valid_name(&text.value) {
        return true;
    }
    ctx.error(
        text.span,
        &text.path,
        format!("invalid name {}: {NAME_RULE}", text.quoted()),
    );
    false
}

/// A non-null scalar's interpolated text, or a type error naming what was expected.
fn scalar_text(ctx: &mut Ctx<'_>, node: &Node, path: &str, expected: &str) -> Option<Text> {
    match node {
        Node::Scalar(scalar) if !scalar.is_null() => ctx.text(scalar, path),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected {expected}, found {}", other.describe()),
            );
            None
        }
    }
}

/// A list's items with their paths, or a type error.
fn list_items<'n>(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Vec<(&'n Node, String)> {
    match node {
        Node::Sequence(sequence) => sequence
            .items
            .iter()
            .enumerate()
            .map(|(index, item)| (item, path::index(path, index)))
            .collect(),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected a list, found {}", other.describe()),
            );
            Vec::new()
        }
    }
}

/// The unquoted scalar of a typed (integer, boolean) value. Such values are YAML's own: a quoted
/// "5" or "true" is a string, as in every other YAML tool. A quoted interpolation is the
/// exception, since quoting `${…}` is common practice and its value is only known afterwards.
fn plain_scalar<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    expected: &str,
    valid_unquoted: impl Fn(&str) -> bool,
) -> Option<&'n Scalar> {
    match node {
        Node::Scalar(scalar) if scalar.quoted && !scalar.text.contains("${") => {
            let hint = if valid_unquoted(&scalar.text) {
                ": remove the quotes"
            } else {
                ""
            };
            ctx.error(
                scalar.span,
                path,
                format!(
                    "expected {expected}, found the string {:?}{hint}",
                    scalar.text
                ),
            );
            None
        }
        Node::Scalar(scalar) if !scalar.is_null() => Some(scalar),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected {expected}, found {}", other.describe()),
            );
            None
        }
    }
}

/// The mapping `node` must be, or an "expected a mapping" error at it.
fn as_mapping<'n>(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Option<&'n Mapping> {
    match node {
        Node::Mapping(mapping) => Some(mapping),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected a mapping, found {}", other.describe()),
            );
            None
        }
    }
}
