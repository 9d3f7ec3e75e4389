//! Metric families built from labelled values, written in the Prometheus text format: what
//! `/metrics` rendering and the probe kinds' detail families (`probe/<kind>/detail.rs`) share. A
//! leaf: it imports nothing of the crate.
//!
//! The text is byte for byte what the `prometheus` crate's `TextEncoder` writes for the same
//! gauges and counters (a test below keeps it so), but written directly: building the crate's
//! `proto` families first, two allocated strings per label of every series, cost most of a
//! scrape at a thousand budgets.

use std::fmt::Write as _;

/// One series' labels, in order: `(name, value)`.
pub type Labels<'a> = [(&'a str, &'a str)];

/// The metric types rendered from state: gauges and counters, and the histograms some kinds'
/// details carry as bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// The text of a whole answer, family after family. A family is either written straight into
/// it (`family`, when all its series are known together) or collected apart and appended when
/// complete (`FamilyBuilder`, when its series come from many places).
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// An exposition with room for `bytes` of text: a scrape of thousands of probes writes
    /// megabytes, and a buffer that doubles its way there copies them several times over.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
        }
    }

    /// Appends text already in the exposition format.
    pub fn push_text(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Starts a family written straight into the text. Its header is written with its first
    /// series; a family that gets none leaves nothing behind.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> FamilyWriter<'_> {
        FamilyWriter {
            header: Some(header(name, help, kind)),
            name: name.to_owned(),
            out: &mut self.text,
        }
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// A family being written straight into an `Exposition`.
pub struct FamilyWriter<'a> {
    header: Option<String>,
    name: String,
    out: &'a mut String,
}

impl FamilyWriter<'_> {
    fn begin(&mut self) {
        if let Some(header) = self.header.take() {
            self.out.push_str(&header);
        }
    }

    /// Adds one series.
    pub fn push(&mut self, labels: &Labels, value: f64) {
        self.begin();
        push_series(self.out, &self.name, labels, value);
    }

    /// Adds one series labelled `set`, then `extra`.
    pub fn push_with(&mut self, set: &LabelSet, extra: &Labels, value: f64) {
        self.begin();
        push_series_with(self.out, &self.name, set, extra, value);
    }
}

/// `# HELP` (unless `help` is empty, as `TextEncoder` does) and `# TYPE` lines.
fn header(name: &str, help: &str, kind: Kind) -> String {
    let mut header = String::with_capacity(name.len() * 2 + help.len() + 24);
    if !help.is_empty() {
        let _ = writeln!(header, "# HELP {name} {}", escape(help, false));
    }
    let kind = match kind {
        Kind::Gauge => "gauge",
        Kind::Counter => "counter",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(header, "# TYPE {name} {kind}");
    header
}

fn push_series(out: &mut String, name: &str, labels: &Labels, value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        push_labels(out, labels, "{");
        out.push('}');
    }
    out.push(' ');
    push_value(out, value);
    out.push('\n');
}

fn push_series_with(out: &mut String, name: &str, set: &LabelSet, extra: &Labels, value: f64) {
    if set.0.is_empty() {
        return push_series(out, name, extra, value);
    }
    out.push_str(name);
    out.push('{');
    out.push_str(&set.0);
    push_labels(out, extra, ",");
    out.push_str("} ");
    push_value(out, value);
    out.push('\n');
}

/// Labels escaped once, for the many series of one probe.
pub struct LabelSet(String);

impl LabelSet {
    pub fn new(labels: &Labels) -> Self {
        let mut text = String::with_capacity(64);
        push_labels(&mut text, labels, "");
        Self(text)
    }
}

/// Appends `name="value"` pairs, `,`-separated, with `separator` before the first.
fn push_labels(out: &mut String, labels: &Labels, mut separator: &'static str) {
    for (name, value) in labels {
        out.push_str(separator);
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(&escape(value, true));
        out.push('"');
        separator = ",";
    }
}

/// One metric family whose series come from many places (the kinds' detail families, filled
/// probe by probe): collected apart, appended to an `Exposition` when complete.
pub struct FamilyBuilder {
    header: String,
    name: String,
    body: String,
}

impl FamilyBuilder {
    pub fn new(name: &str, help: &str, kind: Kind) -> Self {
        Self {
            header: header(name, help, kind),
            name: name.to_owned(),
            body: String::new(),
        }
    }

    /// Adds one series.
    pub fn push(&mut self, labels: &Labels, value: f64) {
        push_series(&mut self.body, &self.name, labels, value);
    }

    /// Adds one series labelled `set`, then `extra`.
    pub fn push_with(&mut self, set: &LabelSet, extra: &Labels, value: f64) {
        push_series_with(&mut self.body, &self.name, set, extra, value);
    }

    /// Adds one series of the family's name with `suffix` (`_bucket`, `_sum`, `_count` of a
    /// histogram), labelled `set`, then `extra`.
    pub fn push_suffixed(&mut self, suffix: &str, set: &LabelSet, extra: &Labels, value: f64) {
        let name = format!("{}{suffix}", self.name);
        push_series_with(&mut self.body, &name, set, extra, value);
    }

    /// Appends the family to `out`. A family with no series is left out: the text format has
    /// no use for an empty one.
    pub fn finish(self, out: &mut Exposition) {
        if !self.body.is_empty() {
            out.text.push_str(&self.header);
            out.text.push_str(&self.body);
        }
    }
}

pub fn gauge(name: &str, help: &str) -> FamilyBuilder {
    FamilyBuilder::new(name, help, Kind::Gauge)
}

pub fn counter(name: &str, help: &str) -> FamilyBuilder {
    FamilyBuilder::new(name, help, Kind::Counter)
}

/// `labels` and one more.
pub fn with_label<'a>(labels: &Labels<'a>, extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.extend_from_slice(labels);
    all.push(extra);
    all
}

pub fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// A sample value as `f64`'s `Display` writes it (what `TextEncoder` writes), with a shortcut for
/// whole numbers, which most series are (flags, counters at 0).
fn push_value(out: &mut String, value: f64) {
    // Below 2^53 every whole f64 is an exact integer, printed with the same digits; -0.0 prints
    // as "-0" and so takes the general path.
    let whole =
        value.fract() == 0.0 && value.abs() < 9.0e15 && !(value == 0.0 && value.is_sign_negative());
    if whole {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Escapes `\` and newlines (and `"` in label values) as the text format wants.
fn escape(text: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let special = |b: u8| b == b'\\' || b == b'\n' || (quote && b == b'"');
    if !text.bytes().any(special) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if quote => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
    use prometheus::{Encoder, TextEncoder};

    /// The same family through the `prometheus` crate's proto types and text encoder.
    fn reference(
        name: &str,
        help: &str,
        kind: MetricType,
        series: &[(Vec<(&str, &str)>, f64)],
    ) -> String {
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        let metrics = series
            .iter()
            .map(|(labels, value)| {
                let pairs = labels
                    .iter()
                    .map(|(n, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name((*n).to_owned());
                        pair.set_value((*v).to_owned());
                        pair
                    })
                    .collect();
                let mut metric = Metric::from_label(pairs);
                if kind == MetricType::COUNTER {
                    let mut counter = Counter::default();
                    counter.set_value(*value);
                    metric.set_counter(counter);
                } else {
                    let mut gauge = Gauge::default();
                    gauge.set_value(*value);
                    metric.set_gauge(gauge);
                }
                metric
            })
            .collect();
        family.set_metric(metrics);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&[family], &mut out)
            .expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_text_is_what_the_prometheus_encoder_writes() {
        let values = [
            0.0,
            -0.0,
            1.0,
            12.0,
            -3.0,
            1.5,
            0.1 + 0.2,
            1e-7,
            123_456_789.125,
            1_795_305_209.123,
            9.5e15,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let labelled: Vec<(Vec<(&str, &str)>, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let labels = match i % 3 {
                    0 => vec![],
                    1 => vec![("budget", "checkout"), ("probe", "orders")],
                    _ => vec![("owner", "a \"b\" \\ c\nd"), ("runbook_url", "")],
                };
                (labels, *v)
            })
            .collect();
        for (kind, reference_kind) in [
            (Kind::Gauge, MetricType::GAUGE),
            (Kind::Counter, MetricType::COUNTER),
        ] {
            for help in [
                "",
                "Plain help.",
                "Help with \\ and\nnewline and \"quotes\".",
            ] {
                let expected = reference("lagbudget_x", help, reference_kind, &labelled);
                // A family collected apart, series by series.
                let mut built = FamilyBuilder::new("lagbudget_x", help, kind);
                for (labels, value) in &labelled {
                    built.push(labels, *value);
                }
                let mut out = Exposition::new();
                built.finish(&mut out);
                assert_eq!(out.into_text(), expected, "{kind:?}, help {help:?}");
                // The same with the first label escaped once in a set.
                let mut with_sets = FamilyBuilder::new("lagbudget_x", help, kind);
                for (labels, value) in &labelled {
                    let (set, extra) = match labels.split_first() {
                        Some((first, rest)) => (LabelSet::new(&[*first]), rest),
                        None => (LabelSet::new(&[]), &[][..]),
                    };
                    with_sets.push_with(&set, extra, *value);
                }
                let mut out = Exposition::new();
                with_sets.finish(&mut out);
                assert_eq!(out.into_text(), expected, "sets, {kind:?}, help {help:?}");
                // Written straight into the exposition.
                let mut out = Exposition::new();
                let mut writer = out.family("lagbudget_x", help, kind);
                for (labels, value) in &labelled {
                    writer.push(labels, *value);
                }
                assert_eq!(out.into_text(), expected, "writer, {kind:?}, help {help:?}");
            }
        }
    }

    #[test]
    fn a_family_without_series_writes_nothing() {
        let mut out = Exposition::new();
        gauge("lagbudget_empty", "Nothing.").finish(&mut out);
        out.family("lagbudget_empty", "Nothing.", Kind::Gauge);
        assert_eq!(out.into_text(), "");
    }
}
