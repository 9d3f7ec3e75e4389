//! Scalar grammars of the config file: durations, percentages, names, and key suggestions.
//!
//! Error messages here never repeat the input: callers quote the text as written in the file,
//! which keeps interpolated (possibly secret) values out of every message.

use std::time::Duration;

/// Units in the order they must appear in a compound duration, with their size in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const UNIT_HINT: &str = "use ms, s, m, h or d";

/// Parses a duration such as `500ms`, `30s`, `5m`, `2h`, `28d` or a compound `1h30m`.
///
/// Units go from largest to smallest, each at most once, so that a duration reads one way only.
/// A bare number is an error: `30` could mean seconds or milliseconds, and guessing wrong by a
/// factor of a thousand is how budgets end up unenforced.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut total: u64 = 0;
    let mut previous_unit: Option<usize> = None;
    while at < bytes.len() {
        let digits_start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        if digits_start == at {
            return Err(if bytes[at].is_ascii_alphabetic() {
                "expected a number before the unit".to_owned()
            } else {
                "expected a whole number and a unit, such as 500ms, 30s, 5m, 2h, 28d or 1m30s"
                    .to_owned()
            });
        }
        let number: u64 = text[digits_start..at]
            .parse()
            .map_err(|_| "duration is too large".to_owned())?;
        let unit_start = at;
        while at < bytes.len() && bytes[at].is_ascii_alphabetic() {
            at += 1;
        }
        let unit = &text[unit_start..at];
        if unit.is_empty() {
            return Err(match bytes.get(at) {
                None => format!("missing unit ({UNIT_HINT})"),
                Some(b'.') => "fractions are not supported: use a smaller unit, such as 1500ms \
                               instead of 1.5s"
                    .to_owned(),
                Some(_) => format!("expected a unit after the number ({UNIT_HINT})"),
            });
        }
        let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit ({UNIT_HINT})"));
        };
        if previous_unit.is_some_and(|previous| rank <= previous) {
            return Err(
                "units must go from largest to smallest, each at most once, such as 1h30m"
                    .to_owned(),
            );
        }
        previous_unit = Some(rank);
        total = number
            .checked_mul(UNITS[rank].1)
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| "duration is too large".to_owned())?;
    }
    Ok(Duration::from_millis(total))
}

/// Parses a percentage such as `80%` or `99.9%` into a ratio (0.8, 0.999).
///
/// The digits are read as an exact integer and divided once, so `99.9%` becomes exactly the
/// `f64` nearest to 0.999 rather than an accumulation of rounding errors.
pub(crate) fn parse_percent(text: &str) -> Result<f64, String> {
    const SHAPE: &str = "expected a number followed by %, such as 80% or 99.9%";
    let Some(number) = text.strip_suffix('%') else {
        return Err(SHAPE.to_owned());
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(fraction)
        || (number.contains('.') && fraction.is_empty())
    {
        return Err(SHAPE.to_owned());
    }
    // 15 significant digits is all an f64 holds exactly; more would be false precision.
    if whole.len() + fraction.len() > 15 {
        return Err("too many digits".to_owned());
    }
    let mantissa: u64 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| SHAPE.to_owned())?;
    let scale = i32::try_from(fraction.len() + 2).map_err(|_| SHAPE.to_owned())?;
    Ok(mantissa as f64 / 10f64.powi(scale))
}

/// Whether `text` is a valid budget, probe or source name: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub(crate) fn is_valid_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

pub(crate) const NAME_RULE: &str =
    "names start with a letter or digit and contain only letters, digits, '_', '.' and '-'";

/// The regular expression of [`is_valid_name`], for the JSON schema.
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.-]*$";

/// Whether `text` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_valid_label_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// Label names lagbudget sets itself on some series, so a budget's own labels may not take them.
pub(crate) const RESERVED_LABELS: [&str; 11] = [
    "budget",
    "probe",
    "replica",
    "state",
    "reason",
    "owner",
    "severity",
    "runbook_url",
    "kind",
    "job",
    "instance",
];

/// Levenshtein distance, for "did you mean" suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The candidate closest to `word` within edit distance 2, if any.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_compound() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("28d", 28 * 86_400_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
            ("0ms", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_durations_say_what_is_wrong() {
        let cases = [
            ("30", "missing unit (use ms, s, m, h or d)"),
            ("", "empty duration"),
            ("5x", "unknown unit (use ms, s, m, h or d)"),
            ("5sec", "unknown unit (use ms, s, m, h or d)"),
            (
                "1.5s",
                "fractions are not supported: use a smaller unit, such as 1500ms instead of 1.5s",
            ),
            ("s", "expected a number before the unit"),
            (
                "-5s",
                "expected a whole number and a unit, such as 500ms, 30s, 5m, 2h, 28d or 1m30s",
            ),
            (
                "5 s",
                "expected a unit after the number (use ms, s, m, h or d)",
            ),
            (
                "30s1m",
                "units must go from largest to smallest, each at most once, such as 1h30m",
            ),
            (
                "1s1s",
                "units must go from largest to smallest, each at most once, such as 1h30m",
            ),
            ("99999999999999999999s", "duration is too large"),
            ("999999999999999d", "duration is too large"),
        ];
        for (text, message) in cases {
            assert_eq!(parse_duration(text), Err(message.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn percentages_become_exact_ratios() {
        let cases = [
            ("80%", 0.8),
            ("99.9%", 0.999),
            ("99.99%", 0.9999),
            ("100%", 1.0),
            ("0%", 0.0),
            ("0.5%", 0.005),
            ("150%", 1.5),
        ];
        for (text, ratio) in cases {
            assert_eq!(parse_percent(text), Ok(ratio), "{text}");
        }
    }

    #[test]
    fn malformed_percentages_are_rejected() {
        for text in ["80", "0.8", "%", ".5%", "5.%", "-5%", "5 %", "1e2%", "80%%"] {
            assert_eq!(
                parse_percent(text),
                Err("expected a number followed by %, such as 80% or 99.9%".to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn names_and_label_names_follow_their_charsets() {
        for good in ["orders-db", "a", "0", "loyalty.points_v2"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ä"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        for good in ["service", "_x", "tier2", "__meta"] {
            assert!(is_valid_label_name(good), "{good}");
        }
        for bad in ["", "1x", "a-b", "a.b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn suggestions_pick_the_closest_key_within_two_edits() {
        let keys = ["name", "interval", "timeout", "max_lag"];
        assert_eq!(suggest("nmae", keys), Some("name"));
        assert_eq!(suggest("intervall", keys), Some("interval"));
        assert_eq!(suggest("maxlag", keys), Some("max_lag"));
        assert_eq!(suggest("description", keys), None);
    }
}
