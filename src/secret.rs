//! Secrets: a string that never prints, and the set of every secret value a config
//! interpolated, used to scrub any text that leaves the process. A leaf.

use std::fmt;

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secret values a config interpolated (from `${VAR}`, `${file:…}` and DSN passwords).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretSet(Vec<String>);

impl SecretSet {
    /// Remembers a value as secret. Very short values are ignored: scrubbing "1" out of every
    /// message would mangle text and protects nothing.
    pub fn insert(&mut self, value: &str) {
        if value.len() >= 4 && !self.0.iter().any(|known| known == value) {
            self.0.push(value.to_owned());
            // Longest first, so a secret that contains another is replaced whole.
            self.0.sort_by_key(|known| std::cmp::Reverse(known.len()));
        }
    }

    /// Replaces every known secret value in `text` with `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// Like [`SecretSet::scrub`], for a text that was cut short and ends with `cut_mark`: the
    /// cut may have split a secret, leaving its first characters just before the mark, which
    /// no whole-value match finds. Those (from [`MIN_CUT_PREFIX`] characters on) become `***`
    /// too.
    pub fn scrub_cut(&self, text: &str, cut_mark: &str) -> String {
        let out = self.scrub(text);
        let Some(kept) = out.strip_suffix(cut_mark) else {
            return out;
        };
        let dangling = self
            .0
            .iter()
            .filter_map(|secret| {
                // The longest proper prefix of the secret that ends the kept text.
                secret
                    .char_indices()
                    .map(|(at, _)| at)
                    .skip(MIN_CUT_PREFIX)
                    .filter(|&at| kept.ends_with(&secret[..at]))
                    .last()
            })
            .max();
        match dangling {
            Some(len) => format!("{}***{cut_mark}", &kept[..kept.len() - len]),
            None => out,
        }
    }
}

/// The shortest start of a secret that [`SecretSet::scrub_cut`] masks at a cut: shorter ones
/// say nothing about the secret and would mask ordinary words' endings.
pub const MIN_CUT_PREFIX: usize = 3;

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} values)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_by_truncation_is_masked_too() {
        let mut secrets = SecretSet::default();
        secrets.insert("hunter22-long");
        assert_eq!(
            secrets.scrub_cut("auth failed for pw hunte…", "…"),
            "auth failed for pw ***…"
        );
        assert_eq!(
            secrets.scrub_cut("pw hunter22-long and hun…", "…"),
            "pw *** and ***…"
        );
        // Shorter than MIN_CUT_PREFIX, or not at the cut, or no cut: left as it is.
        assert_eq!(secrets.scrub_cut("the hu…", "…"), "the hu…");
        assert_eq!(
            secrets.scrub_cut("hunter, then more…", "…"),
            "hunter, then more…"
        );
        assert_eq!(secrets.scrub_cut("ends in hunt", "…"), "ends in hunt");
    }

    #[test]
    fn scrub_replaces_every_known_secret() {
        let mut secrets = SecretSet::default();
        secrets.insert("hunter22");
        secrets.insert("hunter22-long");
        secrets.insert("ab");
        assert_eq!(
            secrets.scrub("pw=hunter22-long and hunter22; ab stays"),
            "pw=*** and ***; ab stays"
        );
    }
}
