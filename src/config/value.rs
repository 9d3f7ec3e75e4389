//! The grammars a table's keys are declared with: each says how one YAML value is read, what
//! it decodes to, and its JSON Schema.
//!
//! A grammar is a type used only as a name (`Percent`, `NonEmpty<Vec<Topic>>`); what decoding
//! gives is its [`ConfigValue::Out`] (an `f64`, a `Vec<String>`). Grammars compose:
//! `Spanned<G>` keeps where a scalar was written, `NonEmpty<G>` rejects an empty string or
//! list, `Vec<G>` reads a list of `G`, `Map<G>` a mapping of names to `G`. Every `decode`
//! reports each problem it finds and returns `None` rather than stopping.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::decode::{Ctx, Spanned, Text, as_mapping, list_items, plain_scalar_text, scalar_text};
use super::grammar::{
    NAME_PATTERN, NAME_RULE, RESERVED_LABELS, is_valid_label_name, is_valid_name, parse_duration,
    parse_percent,
};
use super::path;
use super::schema::Defs;
use super::syntax::{Node, Span};
use crate::model::Secret;

/// A string holding an interpolation such as `${VAR}`, which only the daemon can check.
const INTERPOLATED: &str = ".*\\$\\{[^}]+\\}.*";

/// How one YAML value is read.
pub(crate) trait ConfigValue {
    /// What a valid value decodes to.
    type Out;
    /// Decodes `node`, reporting every problem at `path`; `None` when it is invalid.
    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out>;
    /// The JSON Schema of a valid value (tables register themselves in `defs`).
    fn schema(defs: &mut Defs) -> Value;
}

/// A value written as one YAML scalar: its text (interpolated), then parsed.
pub(crate) trait Scalar {
    type Out;
    /// How a type error names what was expected.
    const EXPECTED: &'static str = "a string";
    /// The scalar's interpolated text; typed values override this to reject quoted ones.
    fn text(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Text> {
        scalar_text(ctx, node, path, Self::EXPECTED)
    }
    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<Self::Out>;
    fn json_schema() -> Value;
}

impl<S: Scalar> ConfigValue for S {
    type Out = S::Out;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<S::Out> {
        let text = S::text(ctx, node, path)?;
        S::parse(ctx, &text)
    }

    fn schema(_: &mut Defs) -> Value {
        S::json_schema()
    }
}

/// A keyword value: one of a closed set of words, each meaning one `Self`.
pub(crate) trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    fn key(self) -> &'static str;
}

impl<C: Choice> Scalar for C {
    type Out = C;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<C> {
        let found = C::ALL.iter().copied().find(|c| c.key() == text.value);
        if found.is_none() {
            let keys: Vec<&str> = C::ALL.iter().map(|c| c.key()).collect();
            ctx.error(
                text.span,
                &text.path,
                format!(
                    "invalid value {}: expected one of {}",
                    text.quoted(),
                    keys.join(", ")
                ),
            );
        }
        found
    }

    fn json_schema() -> Value {
        let keys: Vec<&str> = C::ALL.iter().map(|c| c.key()).collect();
        json!({ "enum": keys })
    }
}

/// Any string.
impl Scalar for String {
    type Out = String;

    fn parse(_: &mut Ctx<'_>, text: &Text) -> Option<String> {
        Some(text.value.clone())
    }

    fn json_schema() -> Value {
        json!({ "type": "string" })
    }
}

/// A scalar `G` with where it was written and what the file said: the grammar `Spanned<G>`
/// decodes to a `Spanned<G::Out>`.
impl<G: Scalar> ConfigValue for Spanned<G> {
    type Out = Spanned<G::Out>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Spanned<G::Out>> {
        let text = G::text(ctx, node, path)?;
        let value = G::parse(ctx, &text)?;
        Some(text.with(value))
    }

    fn schema(_: &mut Defs) -> Value {
        G::json_schema()
    }
}

/// A `G` that may not be empty: a string with at least one character, or (as
/// `NonEmpty<Vec<G>>`) a list with at least one item.
pub(crate) struct NonEmpty<G>(PhantomData<G>);

impl<G: Scalar> Scalar for NonEmpty<G> {
    type Out = G::Out;
    const EXPECTED: &'static str = G::EXPECTED;

    fn text(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Text> {
        G::text(ctx, node, path)
    }

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<G::Out> {
        if text.value.is_empty() {
            ctx.error(text.span, &text.path, "must not be empty");
            return None;
        }
        G::parse(ctx, text)
    }

    fn json_schema() -> Value {
        with(G::json_schema(), "minLength", json!(1))
    }
}

impl<G: ConfigValue> ConfigValue for NonEmpty<Vec<G>> {
    type Out = Vec<G::Out>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<G::Out>> {
        if matches!(node, Node::Sequence(list) if list.items.is_empty()) {
            ctx.error(node.span(), path, "must list at least one item");
            return None;
        }
        <Vec<G>>::decode(ctx, node, path)
    }

    fn schema(defs: &mut Defs) -> Value {
        with(<Vec<G>>::schema(defs), "minItems", json!(1))
    }
}

/// A list; invalid items are reported and left out.
impl<G: ConfigValue> ConfigValue for Vec<G> {
    type Out = Vec<G::Out>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<G::Out>> {
        let items = list_items(ctx, node, path)?;
        Some(
            items
                .into_iter()
                .filter_map(|(item, item_path)| G::decode(ctx, item, &item_path))
                .collect(),
        )
    }

    fn schema(defs: &mut Defs) -> Value {
        json!({ "type": "array", "items": G::schema(defs) })
    }
}

/// `true` or `false` (YAML's core spellings, not YAML 1.1's `yes`/`on`), or a quoted `${…}`
/// that gives one.
impl Scalar for bool {
    type Out = bool;
    const EXPECTED: &'static str = "true or false";

    fn text(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Text> {
        plain_scalar_text(ctx, node, path, Self::EXPECTED, |text| {
            parse_bool(text).is_some()
        })
    }

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<bool> {
        let value = parse_bool(&text.value);
        if value.is_none() {
            ctx.error(
                text.span,
                &text.path,
                format!("expected true or false, found {}", text.quoted()),
            );
        }
        value
    }

    fn json_schema() -> Value {
        json!({
            "anyOf": [
                { "type": "boolean" },
                { "type": "string", "pattern": format!("^{INTERPOLATED}$") },
            ],
        })
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A duration such as `30s`, `0s` included.
impl Scalar for Duration {
    type Out = Duration;
    const EXPECTED: &'static str = "a duration such as 30s";

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<Duration> {
        match parse_duration(&text.value) {
            Ok(value) => Some(value),
            Err(reason) => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!("invalid duration {}: {reason}", text.quoted()),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        json!({
            "type": "string",
            "pattern": format!("^(?:(?:[0-9]+(?:ms|[dhms]))+|{INTERPOLATED})$"),
        })
    }
}

/// A duration longer than `0s`.
pub(crate) struct PositiveDuration;

impl Scalar for PositiveDuration {
    type Out = Duration;
    const EXPECTED: &'static str = Duration::EXPECTED;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<Duration> {
        let value = Duration::parse(ctx, text)?;
        if value.is_zero() {
            ctx.error(text.span, &text.path, "must be greater than 0s");
            return None;
        }
        Some(value)
    }

    fn json_schema() -> Value {
        Duration::json_schema()
    }
}

/// A percentage such as `99.9%`, as a ratio: above 0% (or, with `FROM_0`, from 0%), and at
/// most 100% (or, with `UP_TO_100` false, below it).
pub(crate) struct Percent<const UP_TO_100: bool = true, const FROM_0: bool = false>;

/// A share that cannot be the whole, such as an objective's target.
pub(crate) type PercentBelow100 = Percent<false>;

/// A share that may be none at all, such as a limit where `0%` means "never".
pub(crate) type PercentFrom0 = Percent<true, true>;

impl<const UP_TO_100: bool, const FROM_0: bool> Scalar for Percent<UP_TO_100, FROM_0> {
    type Out = f64;
    const EXPECTED: &'static str = "a percentage such as 80%";

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<f64> {
        let ratio = match parse_percent(&text.value) {
            Ok(ratio) => ratio,
            Err(reason) => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!("invalid percentage {}: {reason}", text.quoted()),
                );
                return None;
            }
        };
        let (above_lower, lower) = if FROM_0 {
            (ratio >= 0.0, "at least 0%")
        } else {
            (ratio > 0.0, "above 0%")
        };
        let (in_range, upper) = if UP_TO_100 {
            (above_lower && ratio <= 1.0, "at most 100%")
        } else {
            (above_lower && ratio < 1.0, "below 100%")
        };
        if !in_range {
            ctx.error(
                text.span,
                &text.path,
                format!(
                    "{} is out of range: must be {lower} and {upper}",
                    text.quoted()
                ),
            );
            return None;
        }
        Some(ratio)
    }

    fn json_schema() -> Value {
        json!({
            "type": "string",
            "pattern": format!("^(?:[0-9]+(?:\\.[0-9]+)?%|{INTERPOLATED})$"),
        })
    }
}

/// A whole number from `MIN` to `MAX` (unbounded by default).
pub(crate) struct Count<const MIN: u64, const MAX: u64 = { u64::MAX }>;

impl<const MIN: u64, const MAX: u64> Scalar for Count<MIN, MAX> {
    type Out = u64;
    const EXPECTED: &'static str = "an integer";

    fn text(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Text> {
        plain_scalar_text(ctx, node, path, Self::EXPECTED, |text| {
            text.trim().parse::<i64>().is_ok()
        })
    }

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<u64> {
        let Ok(value) = text.value.parse::<i64>() else {
            ctx.error(
                text.span,
                &text.path,
                format!("expected an integer, found {}", text.quoted()),
            );
            return None;
        };
        let range = if MAX == u64::MAX {
            format!("must be at least {MIN}")
        } else {
            format!("must be between {MIN} and {MAX}")
        };
        match u64::try_from(value) {
            Ok(value) if (MIN..=MAX).contains(&value) => Some(value),
            _ => {
                ctx.error(
                    text.span,
                    &text.path,
                    format!("{range}, found {}", text.shown()),
                );
                None
            }
        }
    }

    fn json_schema() -> Value {
        let mut integer = json!({ "type": "integer", "minimum": MIN });
        if MAX != u64::MAX {
            integer = with(integer, "maximum", json!(MAX));
        }
        json!({
            "anyOf": [
                integer,
                { "type": "string", "pattern": format!("^{INTERPOLATED}$") },
            ],
        })
    }
}

/// An IP address and port.
impl Scalar for SocketAddr {
    type Out = SocketAddr;
    const EXPECTED: &'static str = "an address such as 0.0.0.0:9464";

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<SocketAddr> {
        let address = text.value.parse().ok();
        if address.is_none() {
            ctx.error(
                text.span,
                &text.path,
                format!(
                    "invalid socket address {}: expected IP:PORT, such as 0.0.0.0:9464",
                    text.quoted()
                ),
            );
        }
        address
    }

    fn json_schema() -> Value {
        json!({ "type": "string" })
    }
}

/// A budget, probe or source name: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub(crate) struct Name;

impl Scalar for Name {
    type Out = String;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<String> {
        if is_valid_name(&text.value) {
            return Some(text.value.clone());
        }
        ctx.error(
            text.span,
            &text.path,
            format!("invalid name {}: {NAME_RULE}", text.quoted()),
        );
        None
    }

    fn json_schema() -> Value {
        json!({ "type": "string", "pattern": NAME_PATTERN })
    }
}

/// A string that is a secret: it joins the values scrubbed from every message.
pub(crate) struct SecretString;

impl Scalar for SecretString {
    type Out = Secret;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<Secret> {
        ctx.secrets.insert(&text.value);
        Some(Secret::new(text.value.clone()))
    }

    fn json_schema() -> Value {
        String::json_schema()
    }
}

/// A probe kind's model type, as the kind that names sources and the source kind it reads.
pub(crate) trait ReadsSource {
    /// The probe kind's key (`sql_watermark`).
    const KIND: &'static str;
    /// The key of the source kind it reads (`postgres`).
    const SOURCE: &'static str;
    /// Every source kind it can read: `SOURCE`, unless a reference accepts several kinds.
    const SOURCES: &'static [&'static str] = &[Self::SOURCE];
}

/// The name of the source a `P` probe reads. Every reference is checked once all files are
/// read (it exists, and is of the kind `P` reads), even when the rest of its probe is invalid.
pub(crate) struct SourceRef<P>(PhantomData<P>);

impl<P: ReadsSource> Scalar for SourceRef<P> {
    type Out = Text;

    fn parse(ctx: &mut Ctx<'_>, text: &Text) -> Option<Text> {
        let name = <NonEmpty<String>>::parse(ctx, text)?;
        ctx.refer(text.with(name), P::KIND, P::SOURCES);
        Some(text.clone())
    }

    fn json_schema() -> Value {
        <NonEmpty<String>>::json_schema()
    }
}

/// Prometheus label names to strings; invalid labels are reported and left out.
pub(crate) struct Labels;

impl ConfigValue for Labels {
    type Out = BTreeMap<String, String>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let mapping = as_mapping(ctx, node, path)?;
        let mut labels = BTreeMap::new();
        for entry in &mapping.entries {
            let label = entry.key.text.as_str();
            let label_path = path::key(path, label);
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
            if let Some(value) = String::decode(ctx, &entry.value, &label_path) {
                labels.insert(label.to_owned(), value);
            }
        }
        Some(labels)
    }

    fn schema(_: &mut Defs) -> Value {
        json!({
            "type": "object",
            "propertyNames": {
                "pattern": "^(?!__)[a-zA-Z_][a-zA-Z0-9_]*$",
                "not": { "enum": RESERVED_LABELS },
            },
            "additionalProperties": { "type": "string" },
        })
    }
}

/// The keys of a [`StringMap`] that the config may not set, each with the reason.
pub(crate) trait Reserved {
    /// Each name, and what completes "property `name` is set by lagbudget: …".
    const RESERVED: &'static [(&'static str, &'static str)];
}

/// Free-form keys (`security.protocol`) to scalar values, read as strings, in file order.
/// `R`'s keys (in any case) are rejected; they and values that are not scalars are reported
/// and left out.
pub(crate) struct StringMap<R>(PhantomData<R>);

impl<R: Reserved> ConfigValue for StringMap<R> {
    type Out = Vec<(String, Text)>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let mapping = as_mapping(ctx, node, path)?;
        let mut out = Vec::new();
        for entry in &mapping.entries {
            let property = entry.key.text.as_str();
            let entry_path = path::key(path, property);
            let reserved = R::RESERVED
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(property));
            if let Some((_, reason)) = reserved {
                ctx.error(
                    entry.key.span,
                    &entry_path,
                    format!("property `{property}` is set by lagbudget: {reason}"),
                );
            } else if property.is_empty() {
                ctx.error(entry.key.span, &entry_path, "empty property name");
            } else if let Some(value) = Text::decode(ctx, &entry.value, &entry_path) {
                out.push((property.to_owned(), value));
            }
        }
        Some(out)
    }

    fn schema(_: &mut Defs) -> Value {
        let names: Vec<&str> = R::RESERVED.iter().map(|(name, _)| *name).collect();
        // Values are read as strings; YAML numbers and booleans are written as they are.
        json!({
            "type": "object",
            "propertyNames": { "minLength": 1, "not": { "enum": names } },
            "additionalProperties": { "type": ["string", "number", "boolean"] },
        })
    }
}

/// One entry of a [`Map`]: its name (a key of the mapping) and value.
#[derive(Debug)]
pub(crate) struct Named<T> {
    pub name: String,
    /// Where the name is written.
    pub span: Span,
    pub path: String,
    pub value: T,
}

/// Names (`[A-Za-z0-9][A-Za-z0-9_.-]*`) to values, in file order. An invalid name is reported
/// and its value still read; invalid values are reported and left out.
pub(crate) struct Map<G>(PhantomData<G>);

impl<G: ConfigValue> ConfigValue for Map<G> {
    type Out = Vec<Named<G::Out>>;

    fn decode(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Self::Out> {
        let mapping = as_mapping(ctx, node, path)?;
        let mut out = Vec::new();
        for entry in &mapping.entries {
            let name = &entry.key;
            let entry_path = path::key(path, &name.text);
            if !is_valid_name(&name.text) {
                ctx.error(
                    name.span,
                    &entry_path,
                    format!("invalid name {:?}: {NAME_RULE}", name.text),
                );
            }
            if let Some(value) = G::decode(ctx, &entry.value, &entry_path) {
                out.push(Named {
                    name: name.text.clone(),
                    span: name.span,
                    path: entry_path,
                    value,
                });
            }
        }
        Some(out)
    }

    fn schema(defs: &mut Defs) -> Value {
        json!({
            "type": "object",
            "propertyNames": { "pattern": NAME_PATTERN },
            "additionalProperties": G::schema(defs),
        })
    }
}

/// `schema` with one more keyword.
fn with(mut schema: Value, keyword: &str, value: Value) -> Value {
    if let Value::Object(object) = &mut schema {
        object.insert(keyword.to_owned(), value);
    }
    schema
}
