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
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} values)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
