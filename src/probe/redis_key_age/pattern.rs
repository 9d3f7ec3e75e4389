//! A `SCAN … MATCH` glob of entity cache keys, and the entity id in a key: the part the glob's
//! first `*` matched (`product:*` on `product:42` is `42`), which the source-side query joins on.
//!
//! Redis matches with its own glob (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes). Redis does the
//! matching; lagbudget only needs to find, in a key Redis returned, what the first `*` stands
//! for. The glob is translated once into an anchored regular expression whose first `*` is a
//! lazy capture group, so `cache:*:*` on `cache:a:b:c` gives `a`.

use regex::Regex;

/// A glob of entity cache keys, checked and translated when the config is loaded.
#[derive(Debug, Clone)]
pub struct KeyPattern {
    regex: Regex,
    /// Whether the glob has a `*` (else the id is the whole key).
    captures: bool,
}

impl KeyPattern {
    /// Translates `glob`; the error says what in it cannot be a pattern of several keys.
    pub fn new(glob: &str) -> Result<Self, String> {
        let mut out = String::from("(?s)^");
        let mut chars = glob.chars().peekable();
        let mut captures = false;
        let mut wildcard = false;
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    wildcard = true;
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    if captures {
                        out.push_str(".*");
                    } else {
                        out.push_str("(.*?)");
                        captures = true;
                    }
                }
                '?' => {
                    wildcard = true;
                    out.push('.');
                }
                '[' => {
                    wildcard = true;
                    class(&mut chars, &mut out)?;
                }
                // A trailing `\` is a literal backslash in Redis' matcher.
                '\\' => push_literal(&mut out, chars.next().unwrap_or('\\')),
                other => push_literal(&mut out, other),
            }
        }
        if !wildcard {
            return Err("has no wildcard (*, ? or [...]), so it names one key: use `key`".into());
        }
        out.push('$');
        let regex = Regex::new(&out).map_err(|e| format!("cannot be read as a glob: {e}"))?;
        Ok(Self { regex, captures })
    }

    /// The entity id in `key`: what the first `*` matched, or the whole key when the glob has
    /// no `*` (or the key, not valid UTF-8 and read lossily, no longer matches).
    pub fn id_of<'k>(&self, key: &'k str) -> &'k str {
        if !self.captures {
            return key;
        }
        self.regex
            .captures(key)
            .and_then(|found| found.get(1))
            .map_or(key, |id| id.as_str())
    }
}

/// A `[...]` class after its `[`: members, `a-z` ranges (Redis swaps reversed ones), `^` to
/// negate and `\` escapes, as Redis reads them.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) -> Result<(), String> {
    let mut members = String::new();
    let negated = chars.peek() == Some(&'^');
    if negated {
        chars.next();
    }
    loop {
        let Some(c) = chars.next() else {
            return Err("has a `[` without its `]`".into());
        };
        let first = match c {
            ']' => break,
            '\\' => chars
                .next()
                .ok_or_else(|| "has a `[` without its `]`".to_owned())?,
            other => other,
        };
        let mut ahead = chars.clone();
        match (ahead.next(), ahead.next()) {
            (Some('-'), Some(last)) if last != ']' => {
                chars.next();
                chars.next();
                let (low, high) = if first <= last {
                    (first, last)
                } else {
                    (last, first)
                };
                push_class_member(&mut members, low);
                members.push('-');
                push_class_member(&mut members, high);
            }
            _ => push_class_member(&mut members, first),
        }
    }
    match (members.is_empty(), negated) {
        (true, false) => Err("has an empty `[]`, which matches no key".into()),
        // `[^]` matches any one character.
        (true, true) => {
            out.push('.');
            Ok(())
        }
        (false, negated) => {
            out.push('[');
            if negated {
                out.push('^');
            }
            out.push_str(&members);
            out.push(']');
            Ok(())
        }
    }
}

fn push_literal(out: &mut String, c: char) {
    out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
}

fn push_class_member(out: &mut String, c: char) {
    if c.is_ascii_punctuation() {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(glob: &str, key: &str) -> String {
        KeyPattern::new(glob)
            .unwrap_or_else(|e| panic!("{glob}: {e}"))
            .id_of(key)
            .to_owned()
    }

    #[test]
    fn the_id_is_what_the_first_star_matched() {
        assert_eq!(id("product:*", "product:42"), "42");
        assert_eq!(id("product:*", "product:"), "");
        assert_eq!(id("cache:*:v2", "cache:a:b:v2"), "a:b");
        assert_eq!(id("cache:*:*", "cache:a:b:c"), "a");
        assert_eq!(id("cache:**", "cache:x"), "x");
        assert_eq!(id("*.json", "a.b.json"), "a.b");
        assert_eq!(id("p?:*", "p1:9"), "9");
        assert_eq!(id("p[0-9]:*", "p7:x"), "x");
        assert_eq!(id("p[^a]:*", "p7:x"), "x");
        assert_eq!(id("p[9-0]:*", "p7:x"), "x", "Redis swaps reversed ranges");
        assert_eq!(id("a\\*b:*", "a*b:1"), "1", "an escaped * is a literal");
        assert_eq!(id("line\n*", "line\nnext\nmore"), "next\nmore");
        // Regex syntax in the glob is literal.
        assert_eq!(id("(x)|y.+:*", "(x)|y.+:1"), "1");
        assert_eq!(id("k[.]*", "k.z"), "z");
    }

    #[test]
    fn without_a_star_the_id_is_the_whole_key() {
        assert_eq!(id("product:?", "product:1"), "product:1");
        assert_eq!(id("product:[12]", "product:2"), "product:2");
    }

    #[test]
    fn globs_that_name_one_key_or_none_are_refused() {
        let error = |glob: &str| KeyPattern::new(glob).expect_err(glob);
        assert!(error("catalog:version").contains("use `key`"));
        assert!(error("catalog\\*").contains("use `key`"));
        assert!(error("p[0-9").contains("without its `]`"));
        assert!(error("p[").contains("without its `]`"));
        assert!(error("p[]").contains("empty"));
    }
}
