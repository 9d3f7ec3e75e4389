//! The error collector of one load, and the scalar readers every value grammar starts from.
//!
//! Nothing here stops at a problem: [`Ctx`] collects errors (with the file, position and YAML
//! path they belong to), every reader reports what is wrong and returns `None`, and the caller
//! carries on, so one run finds all errors of all files.

use std::path::{Path, PathBuf};

use super::interpolate::interpolate;
use super::path;
use super::syntax::{Mapping, Node, Scalar, Span};
use super::{ConfigError, ConfigErrors};
use crate::model::SecretSet;

/// One error before file names are attached and secrets scrubbed.
#[derive(Debug)]
struct Pending {
    file: usize,
    span: Span,
    path: String,
    message: String,
}

/// A value that names a source, checked against the sources of every file once all are read.
#[derive(Debug)]
pub(crate) struct Reference {
    pub file: usize,
    pub name: Text,
    /// The probe kind that names it (`sql_watermark`).
    pub by: &'static str,
    /// The source kinds it may be (`postgres`; `postgres` or `mysql`).
    pub needs: &'static [&'static str],
}

/// Shared state of one load: the environment, the files seen, secrets, source references and
/// errors.
pub(crate) struct Ctx<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    /// Display names of the files loaded, main file first.
    files: Vec<String>,
    /// Index of the file being decoded or resolved; 0 is the main file.
    pub file: usize,
    /// Directory of the file being decoded, for relative `${file:…}` paths.
    pub dir: PathBuf,
    pub secrets: SecretSet,
    references: Vec<Reference>,
    errors: Vec<Pending>,
}

impl<'e> Ctx<'e> {
    pub fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            env,
            files: Vec::new(),
            file: 0,
            dir: PathBuf::new(),
            secrets: SecretSet::default(),
            references: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Makes `display` the file being decoded; later errors are reported against it.
    pub fn enter_file(&mut self, display: String, dir: &Path) {
        self.files.push(display);
        self.file = self.files.len() - 1;
        self.dir = dir.to_path_buf();
    }

    /// Whether the file being decoded is the main one.
    pub fn in_main_file(&self) -> bool {
        self.file == 0
    }

    pub fn file_name(&self, file: usize) -> &str {
        self.files.get(file).map_or("", String::as_str)
    }

    /// Reports a problem in the current file.
    pub fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        self.error_in(self.file, span, path, message);
    }

    pub fn error_in(&mut self, file: usize, span: Span, path: &str, message: impl Into<String>) {
        self.errors.push(Pending {
            file,
            span,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Remembers that `by` names the source `name`, which must be one of the `needs` kinds.
    pub fn refer(&mut self, name: Text, by: &'static str, needs: &'static [&'static str]) {
        self.references.push(Reference {
            file: self.file,
            name,
            by,
            needs,
        });
    }

    pub fn take_references(&mut self) -> Vec<Reference> {
        std::mem::take(&mut self.references)
    }

    /// The errors in file then line order, each once, scrubbed of every secret seen.
    pub fn into_errors(self) -> ConfigErrors {
        let mut pending = self.errors;
        // Stable, so errors at one position keep the order they were found in.
        pending.sort_by_key(|error| (error.file, error.span));
        let mut errors: Vec<ConfigError> = Vec::with_capacity(pending.len());
        for error in pending {
            let error = ConfigError {
                file: self
                    .secrets
                    .scrub(self.files.get(error.file).map_or("", String::as_str)),
                line: error.span.line,
                column: error.span.column,
                path: self.secrets.scrub(path::display(&error.path)),
                message: self.secrets.scrub(&error.message),
            };
            // One mistake can be found through several probes (a budget-level interval
            // checked against each probe's max_lag); it is reported once.
            if !errors.contains(&error) {
                errors.push(error);
            }
        }
        ConfigErrors(errors)
    }

    /// The password part of a URL's user info (or a token, when there is no password), as
    /// written (percent-encoded or not), joins the secrets, so that no message quoting the URL
    /// can show it.
    pub fn remember_url_password(&mut self, url: &str) {
        let Some((_, rest)) = url.split_once("://") else {
            return;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let Some((user_info, _)) = authority.rsplit_once('@') else {
            return;
        };
        match user_info.split_once(':') {
            Some((_, password)) => self.secrets.insert(password),
            None => self.secrets.insert(user_info),
        }
    }

    /// Interpolates a scalar's value, remembering secrets and reporting problems.
    pub fn text(&mut self, scalar: &Scalar, path: &str) -> Option<Text> {
        let out = interpolate(&scalar.text, self.env, &self.dir);
        for secret in &out.secrets {
            self.secrets.insert(secret);
        }
        let ok = out.errors.is_empty();
        for message in out.errors {
            self.error(scalar.span, path, message);
        }
        ok.then(|| Spanned {
            value: out.value,
            raw: scalar.text.clone(),
            substituted: out.substituted,
            span: scalar.span,
            path: path.to_owned(),
        })
    }
}

/// A decoded value with what the file said for it and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spanned<T> {
    pub value: T,
    /// The scalar as written in the file, before interpolation.
    pub raw: String,
    /// Whether `raw` had a `${…}` that was substituted.
    pub substituted: bool,
    pub span: Span,
    pub path: String,
}

/// A string value after interpolation, with what the file said and where.
pub(crate) type Text = Spanned<String>;

impl<T> Spanned<T> {
    /// The value for messages: quoted as written, so an interpolated value is never echoed.
    pub fn quoted(&self) -> String {
        format!("{:?}", self.raw)
    }

    /// A short form for messages: as written, quoted only when it was interpolated.
    pub fn shown(&self) -> String {
        if self.substituted {
            self.quoted()
        } else {
            self.raw.clone()
        }
    }

    /// The same position with another value.
    pub fn with<U>(&self, value: U) -> Spanned<U> {
        Spanned {
            value,
            raw: self.raw.clone(),
            substituted: self.substituted,
            span: self.span,
            path: self.path.clone(),
        }
    }
}

/// A non-null scalar's interpolated text, or a type error naming what was expected.
pub(crate) fn scalar_text(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    expected: &str,
) -> Option<Text> {
    match node {
        Node::Scalar(scalar) if !scalar.is_null() => ctx.text(scalar, path),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected {expected}, found {}", other.describe()),
            );
            None
        }
    }
}

/// The interpolated text of a typed (integer, boolean) value. Such values are YAML's own: a
/// quoted "5" or "true" is a string, as in every other YAML tool. A quoted interpolation is the
/// exception, since quoting `${…}` is common practice and its value is only known afterwards.
pub(crate) fn plain_scalar_text(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    expected: &str,
    valid_unquoted: impl Fn(&str) -> bool,
) -> Option<Text> {
    match node {
        Node::Scalar(scalar) if scalar.quoted && !scalar.text.contains("${") => {
            let hint = if valid_unquoted(&scalar.text) {
                ": remove the quotes"
            } else {
                ""
            };
            ctx.error(
                scalar.span,
                path,
                format!(
                    "expected {expected}, found the string {:?}{hint}",
                    scalar.text
                ),
            );
            None
        }
        other => scalar_text(ctx, other, path, expected),
    }
}

/// A list's items with their paths, or a type error.
pub(crate) fn list_items<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
) -> Option<Vec<(&'n Node, String)>> {
    match node {
        Node::Sequence(sequence) => Some(
            sequence
                .items
                .iter()
                .enumerate()
                .map(|(index, item)| (item, path::index(path, index)))
                .collect(),
        ),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected a list, found {}", other.describe()),
            );
            None
        }
    }
}

/// The mapping `node` must be, or an "expected a mapping" error at it.
pub(crate) fn as_mapping<'n>(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Option<&'n Mapping> {
    match node {
        Node::Mapping(mapping) => Some(mapping),
        other => {
            ctx.error(
                other.span(),
                path,
                format!("expected a mapping, found {}", other.describe()),
            );
            None
        }
    }
}
