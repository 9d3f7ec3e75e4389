//! `${VAR}`, `${VAR:-default}`, `${file:/path}` and `$$` in scalar values.
//!
//! Interpolation runs on parsed scalars rather than on the file's text, so a value can never
//! change the YAML structure and every line number stays true. Messages never contain a value
//! that was substituted, only the names and paths written in the file.

use std::path::Path;

/// The outcome of interpolating one scalar.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interpolated {
    pub value: String,
    /// Whether any `${…}` was substituted (a `$$` alone does not count).
    pub substituted: bool,
    /// Values read from the environment or from files: these must never be printed.
    pub secrets: Vec<String>,
    pub errors: Vec<String>,
}

/// Interpolates `raw`. Relative `${file:…}` paths are read relative to `dir`, the directory of
/// the config file that holds the reference, the same way `include` patterns are resolved.
pub(crate) fn interpolate(
    raw: &str,
    env: &dyn Fn(&str) -> Option<String>,
    dir: &Path,
) -> Interpolated {
    let mut out = Interpolated::default();
    let mut rest = raw;
    while let Some(dollar) = rest.find('$') {
        out.value.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.value.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.errors
                    .push("unterminated \"${\" (write \"$$\" for a literal \"$\")".to_owned());
                return out;
            };
            substitute(&body[..end], env, dir, &mut out);
            rest = &body[end + 1..];
        } else {
            // A lone `$` (as in SQL's `$1`) is literal: only `${` and `$$` are special.
            out.value.push('$');
            rest = after;
        }
    }
    out.value.push_str(rest);
    out
}

/// Replaces one `${inner}` reference.
fn substitute(
    inner: &str,
    env: &dyn Fn(&str) -> Option<String>,
    dir: &Path,
    out: &mut Interpolated,
) {
    out.substituted = true;
    if let Some(file) = inner.strip_prefix("file:") {
        if file.is_empty() {
            out.errors
                .push("\"${file:}\" needs a path, such as ${file:/run/secrets/x}".to_owned());
            return;
        }
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(mut contents) => {
                // Secret files usually end with a newline that is not part of the secret.
                if contents.ends_with('\n') {
                    contents.pop();
                    if contents.ends_with('\r') {
                        contents.pop();
                    }
                }
                out.value.push_str(&contents);
                out.secrets.push(contents);
            }
            Err(error) => out.errors.push(format!(
                "cannot read secret file {}: {error}",
                path.display()
            )),
        }
        return;
    }
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_variable_name(name) {
        out.errors.push(format!(
            "invalid interpolation \"${{{inner}}}\": expected ${{VAR}}, ${{VAR:-default}} or \
             ${{file:/path}}"
        ));
        return;
    }
    // As in the shell, `:-` also replaces a variable that is set but empty.
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => out.value.push_str(default),
        (Some(value), _) => {
            out.value.push_str(&value);
            out.secrets.push(value);
        }
        (None, Some(default)) => out.value.push_str(default),
        (None, None) => out
            .errors
            .push(format!("environment variable {name} is not set")),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("hunter22".to_owned()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("5433".to_owned()),
            _ => None,
        }
    }

    fn run(raw: &str) -> Interpolated {
        interpolate(raw, &env, Path::new("/nonexistent"))
    }

    #[test]
    fn values_are_substituted() {
        let cases = [
            ("plain", "plain", false),
            ("password=${PASSWORD}", "password=hunter22", true),
            ("${PORT}${PORT}", "54335433", true),
            ("${MISSING:-fallback}", "fallback", true),
            ("${EMPTY:-fallback}", "fallback", true),
            ("${PASSWORD:-fallback}", "hunter22", true),
            ("${EMPTY}", "", true),
            ("${MISSING:-}", "", true),
            ("costs $$5", "costs $5", false),
            ("$$${PORT}", "$5433", true),
            ("$${PORT}", "${PORT}", false),
            ("WHERE id > $1", "WHERE id > $1", false),
            ("ends with $", "ends with $", false),
        ];
        for (raw, value, substituted) in cases {
            let out = run(raw);
            assert_eq!(out.errors, Vec::<String>::new(), "{raw}");
            assert_eq!(out.value, value, "{raw}");
            assert_eq!(out.substituted, substituted, "{raw}");
        }
    }

    #[test]
    fn environment_values_are_secrets_but_defaults_are_not() {
        assert_eq!(run("a${PASSWORD}b${PORT}").secrets, ["hunter22", "5433"]);
        assert_eq!(
            run("${MISSING:-written-in-file}").secrets,
            Vec::<String>::new()
        );
    }

    #[test]
    fn problems_are_reported_without_values() {
        let cases = [
            (
                "${ORDERS_DB_PASSWORD}",
                "environment variable ORDERS_DB_PASSWORD is not set",
            ),
            (
                "${PASSWORD",
                "unterminated \"${\" (write \"$$\" for a literal \"$\")",
            ),
            (
                "${1X}",
                "invalid interpolation \"${1X}\": expected ${VAR}, ${VAR:-default} or \
                 ${file:/path}",
            ),
            (
                "${}",
                "invalid interpolation \"${}\": expected ${VAR}, ${VAR:-default} or \
                 ${file:/path}",
            ),
            (
                "${file:}",
                "\"${file:}\" needs a path, such as ${file:/run/secrets/x}",
            ),
            (
                "${file:/nonexistent/secret}",
                "cannot read secret file /nonexistent/secret: No such file or directory (os \
                 error 2)",
            ),
        ];
        for (raw, message) in cases {
            assert_eq!(run(raw).errors, [message], "{raw}");
        }
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (contents, value) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret\n\n", "s3cret\n"),
            ("s3cret", "s3cret"),
        ] {
            std::fs::write(dir.path().join("pw"), contents).expect("write secret");
            // A relative path is read relative to the config file's directory.
            let out = interpolate("${file:pw}", &env, dir.path());
            assert_eq!(out.errors, Vec::<String>::new());
            assert_eq!(out.value, value);
            assert_eq!(out.secrets, [value]);
        }
    }
}
