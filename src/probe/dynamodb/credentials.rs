//! Where a `dynamodb` source's keys come from: the config's, else the first two steps of AWS's
//! standard chain (the environment, then the shared credentials file). ECS task roles,
//! instance metadata (IMDS) and web identity tokens are not supported yet.
//!
//! Keys are looked up at each request, so rotated keys in the environment or the file are
//! picked up without a reload. No message here ever holds a key: only variable names, the
//! file's path and the profile's name.

use std::path::PathBuf;

use super::config::DynamodbKeys;
use crate::model::Secret;

/// Keys to sign one request with.
#[derive(Clone)]
pub struct Keys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl From<&DynamodbKeys> for Keys {
    fn from(keys: &DynamodbKeys) -> Self {
        Keys {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
            session_token: keys.session_token.clone(),
        }
    }
}

/// The keys of the config, else of the environment, else of the shared credentials file;
/// `env` reads an environment variable. The error says what was tried, never a value.
pub fn resolve(
    configured: Option<&DynamodbKeys>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Keys, String> {
    if let Some(keys) = configured {
        return Ok(keys.into());
    }
    let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let mut tried = Vec::new();
    match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => {
            return Ok(Keys {
                access_key_id: Secret::new(id),
                secret_access_key: Secret::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
            });
        }
        (Some(_), None) => {
            tried.push("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_owned())
        }
        (None, Some(_)) => {
            tried.push("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_owned())
        }
        (None, None) => tried.push("no AWS_ACCESS_KEY_ID in the environment".to_owned()),
    }
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
    match credentials_file(&var) {
        None => tried.push(
            "no shared credentials file (neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set)"
                .to_owned(),
        ),
        Some(path) => match std::fs::read_to_string(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tried.push(format!("no {}", path.display()));
            }
            Err(error) => tried.push(format!("{}: {error}", path.display())),
            Ok(text) => match profile_keys(&text, &profile) {
                Ok(keys) => return Ok(keys),
                Err(why) => tried.push(format!("{}: profile {profile:?} {why}", path.display())),
            },
        },
    }
    Err(format!(
        "no AWS credentials found (ECS, IMDS and web identity are not supported yet): none in \
         the source's config; {}",
        tried.join("; ")
    ))
}

/// AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials.
fn credentials_file(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = var("AWS_SHARED_CREDENTIALS_FILE") {
        let path = match (path.strip_prefix("~/"), var("HOME")) {
            (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
            _ => PathBuf::from(path),
        };
        return Some(path);
    }
    var("HOME").map(|home| PathBuf::from(home).join(".aws").join("credentials"))
}

/// The keys of `[profile]` in a shared credentials file (INI: `[name]` sections of
/// `key = value` lines, `#` and `;` comments). The error completes "profile NAME …".
fn profile_keys(text: &str, profile: &str) -> Result<Keys, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(value.to_owned()),
            "aws_secret_access_key" => secret = Some(value.to_owned()),
            "aws_session_token" => token = Some(value.to_owned()),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Keys {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }),
        _ if !found => Err("is not in it".to_owned()),
        _ => Err("has no aws_access_key_id and aws_secret_access_key".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn configured_keys_come_first_then_the_environment() {
        let configured = DynamodbKeys {
            access_key_id: Secret::new("AKCONFIG"),
            secret_access_key: Secret::new("sk-config"),
            session_token: None,
        };
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKENV"),
            ("AWS_SECRET_ACCESS_KEY", "sk-env"),
            ("AWS_SESSION_TOKEN", "tok-env"),
        ]);
        let keys = resolve(Some(&configured), &env).expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKCONFIG");
        let keys = resolve(None, &env).expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKENV");
        assert_eq!(keys.secret_access_key.expose(), "sk-env");
        assert_eq!(
            keys.session_token.as_ref().map(Secret::expose),
            Some("tok-env")
        );
    }

    #[test]
    fn the_shared_credentials_file_is_read_by_profile() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "# comment\n[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key=sk-default\n\n\
             [ci]\naws_access_key_id = AKCI\naws_secret_access_key = sk-ci\naws_session_token = tok-ci\n\
             [broken]\naws_access_key_id = AKBROKEN-SECRET\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf-8");
        let keys = resolve(None, &env_of(&[("AWS_SHARED_CREDENTIALS_FILE", file)])).expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKDEFAULT");
        assert_eq!(keys.secret_access_key.expose(), "sk-default");
        assert!(keys.session_token.is_none());
        let keys = resolve(
            None,
            &env_of(&[("AWS_SHARED_CREDENTIALS_FILE", file), ("AWS_PROFILE", "ci")]),
        )
        .expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKCI");
        assert_eq!(
            keys.session_token.as_ref().map(Secret::expose),
            Some("tok-ci")
        );
        let home = dir.path().to_str().expect("utf-8");
        std::fs::create_dir(dir.path().join(".aws")).expect("mkdir");
        std::fs::copy(&path, dir.path().join(".aws/credentials")).expect("copy");
        let keys = resolve(None, &env_of(&[("HOME", home), ("AWS_PROFILE", "ci")])).expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKCI");

        let error = resolve(
            None,
            &env_of(&[
                ("AWS_SHARED_CREDENTIALS_FILE", file),
                ("AWS_PROFILE", "broken"),
                ("AWS_ACCESS_KEY_ID", "AKENV-HALF-SECRET"),
            ]),
        )
        .err()
        .expect("no keys");
        assert_eq!(
            error,
            format!(
                "no AWS credentials found (ECS, IMDS and web identity are not supported yet): \
                 none in the source's config; AWS_ACCESS_KEY_ID is set but \
                 AWS_SECRET_ACCESS_KEY is not; {file}: profile \"broken\" has no \
                 aws_access_key_id and aws_secret_access_key"
            )
        );
        assert!(!error.contains("AKBROKEN") && !error.contains("AKENV-HALF"));
        let error = resolve(
            None,
            &env_of(&[
                ("AWS_SHARED_CREDENTIALS_FILE", file),
                ("AWS_PROFILE", "nope"),
            ]),
        )
        .err()
        .expect("no keys");
        assert!(
            error.contains("no AWS_ACCESS_KEY_ID in the environment; /")
                && error.contains("profile \"nope\" is not in it"),
            "{error}"
        );
        let missing = dir.path().join("missing");
        let error = resolve(
            None,
            &env_of(&[(
                "AWS_SHARED_CREDENTIALS_FILE",
                missing.to_str().expect("utf-8"),
            )]),
        )
        .err()
        .expect("no keys");
        assert!(
            error.ends_with(&format!("; no {}", missing.display())),
            "{error}"
        );
    }
}
