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

/// The two metric types rendered from state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric family: its header, then one line per series.
pub struct FamilyBuilder {
    header: String,
    name: String,
    body: String,
}

impl FamilyBuilder {
    pub fn new(name: &str, help: &str, kind: Kind) -> Self {
        let mut header = String::with_capacity(name.len() * 2 + help.len() + 24);
        if !help.is_empty() {
            let _ = writeln!(header, "# HELP {name} {}", escape(help, false));
        }
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(header, "# TYPE {name} {kind}");
        Self {
            header,
            name: name.to_owned(),
            body: String::new(),
        }
    }

    /// Adds one series.
    pub fn push(&mut self, labels: &Labels, value: f64) {
        let body = &mut self.body;
        body.push_str(&self.name);
        let mut separator = '{';
        for (name, value) in labels {
            body.push(separator);
            body.push_str(name);
            body.push_str("=\"");
            body.push_str(&escape(value, true));
            body.push('"');
            separator = ',';
        }
        if !labels.is_empty() {
            body.push('}');
        }
        body.push(' ');
        push_value(body, value);
        body.push('\n');
    }

    /// Appends the family to `out`. A family with no series is left out: the text format has
    /// no use for an empty one.
    pub fn finish(self, out: &mut String) {
        if !self.body.is_empty() {
            out.push_str(&self.header);
            out.push_str(&self.body);
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
                let mut family = FamilyBuilder::new("lagbudget_x", help, kind);
                for (labels, value) in &labelled {
                    family.push(labels, *value);
                }
                let mut ours = String::new();
                family.finish(&mut ours);
                assert_eq!(
                    ours,
                    reference("lagbudget_x", help, reference_kind, &labelled),
                    "{kind:?}, help {help:?}"
                );
            }
        }
    }

    #[test]
    fn a_family_without_series_writes_nothing() {
        let mut out = String::new();
        gauge("lagbudget_empty", "Nothing.").finish(&mut out);
        assert_eq!(out, "");
    }
}
