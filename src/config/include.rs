//! `include:` patterns to the files they name, in the order they are loaded.

use std::path::{Path, PathBuf};

use super::decode::{Ctx, Text};

/// Expands the main file's `include` patterns, relative to its directory `dir`.
///
/// Each pattern's matches are loaded in sorted order, patterns in the order written, and a file
/// matched twice (or the main file itself, matched by a broad pattern) only once. A pattern
/// without glob characters names one file, which must exist: a typo there would otherwise
/// silently drop a team's budgets. A glob that matches nothing is fine (an empty `budgets.d/`).
/// Problems are reported at the pattern, in the main file.
pub(crate) fn expand(
    ctx: &mut Ctx<'_>,
    main: &Path,
    dir: &Path,
    patterns: &[Text],
) -> Vec<PathBuf> {
    let main = std::fs::canonicalize(main).ok();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut canonical: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let matches = if pattern.value.contains(['*', '?', '[']) {
            glob_matches(ctx, dir, pattern)
        } else {
            literal_match(ctx, dir, pattern)
        };
        for path in matches {
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if main.as_ref() == Some(&real) || canonical.contains(&real) {
                continue;
            }
            canonical.push(real);
            files.push(path);
        }
    }
    files
}

fn literal_match(ctx: &mut Ctx<'_>, dir: &Path, pattern: &Text) -> Vec<PathBuf> {
    let path = dir.join(&pattern.value);
    if path.is_file() {
        return vec![path];
    }
    let message = if path.exists() {
        format!("included path {} is not a file", path.display())
    } else {
        format!("included file {} does not exist", path.display())
    };
    ctx.error(pattern.span, &pattern.path, message);
    Vec::new()
}

fn glob_matches(ctx: &mut Ctx<'_>, dir: &Path, pattern: &Text) -> Vec<PathBuf> {
    let full = if Path::new(&pattern.value).is_absolute() {
        pattern.value.clone()
    } else {
        let Some(dir) = dir.to_str() else {
            ctx.error(
                pattern.span,
                &pattern.path,
                format!(
                    "cannot expand {}: the config file's directory is not valid UTF-8",
                    pattern.quoted()
                ),
            );
            return Vec::new();
        };
        // The directory is taken literally, even if its name has glob characters.
        let dir = glob::Pattern::escape(dir);
        Path::new(&dir)
            .join(&pattern.value)
            .to_string_lossy()
            .into_owned()
    };
    let paths = match glob::glob(&full) {
        Ok(paths) => paths,
        Err(error) => {
            ctx.error(
                pattern.span,
                &pattern.path,
                format!("invalid glob pattern {}: {}", pattern.quoted(), error.msg),
            );
            return Vec::new();
        }
    };
    let mut matches = Vec::new();
    for entry in paths {
        match entry {
            // Directories matched by a broad pattern are not config files; skip them.
            Ok(path) if path.is_file() => matches.push(path),
            Ok(_) => {}
            Err(error) => ctx.error(
                pattern.span,
                &pattern.path,
                format!("cannot read {}: {}", error.path().display(), error.error()),
            ),
        }
    }
    matches.sort();
    matches
}
