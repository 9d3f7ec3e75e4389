//! YAML text to a tree of spanned nodes: the only code that talks to the YAML parser.
//!
//! The tree keeps every scalar's text exactly as parsed (before interpolation), its style and
//! its position, so later stages can point at the line a user wrote and quote what they wrote.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::path;

/// A position in a file; both numbers are 1-based, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    pub line: usize,
    pub column: usize,
}

impl Span {
    /// The first character of a file, for errors about a whole file.
    pub const START: Span = Span { line: 1, column: 1 };

    fn from_marker(marker: Marker) -> Span {
        Span {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Scalar(Scalar),
    Mapping(Mapping),
    Sequence(Sequence),
}

impl Node {
    pub fn span(&self) -> Span {
        match self {
            Node::Scalar(scalar) => scalar.span,
            Node::Mapping(mapping) => mapping.span,
            Node::Sequence(sequence) => sequence.span,
        }
    }

    /// How a type mismatch names what it found: "a mapping", "null", "an integer", …
    pub fn describe(&self) -> &'static str {
        match self {
            Node::Mapping(_) => "a mapping",
            Node::Sequence(_) => "a list",
            Node::Scalar(scalar) if scalar.quoted => "a string",
            Node::Scalar(scalar) if scalar.is_null() => "null",
            Node::Scalar(scalar) => match scalar.text.as_str() {
                "true" | "false" | "True" | "False" | "TRUE" | "FALSE" => "a boolean",
                text if text.parse::<i64>().is_ok() => "an integer",
                text if text.parse::<f64>().is_ok() => "a number",
                _ => "a string",
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    /// The value as YAML parsed it (quotes and escapes resolved), before interpolation.
    pub text: String,
    /// Quoted or block scalars are always strings; only plain ones can be null or numbers.
    pub quoted: bool,
    pub span: Span,
}

impl Scalar {
    /// YAML's spellings of null for a plain scalar, including an empty value (`key:`).
    pub fn is_null(&self) -> bool {
        !self.quoted && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mapping {
    /// Entries in file order, duplicates already removed (the first one wins).
    pub entries: Vec<Entry>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: Scalar,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    pub items: Vec<Node>,
    pub span: Span,
}

/// A problem found while building the tree, with the YAML path where it was found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub span: Span,
    pub path: String,
    pub message: String,
}

/// The parsed document (an empty file is an empty mapping) and every problem found.
///
/// A YAML syntax error stops parsing and yields no document; other problems (duplicate keys,
/// non-string keys, a second document) leave a usable tree so decoding can report more.
pub(crate) fn parse(text: &str) -> (Option<Node>, Vec<SyntaxError>) {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(error) = parser.load(&mut builder, true) {
        let span = Span::from_marker(*error.marker());
        let message = format!("YAML syntax error: {}", error.info());
        return (
            None,
            vec![SyntaxError {
                span,
                path: String::new(),
                message,
            }],
        );
    }
    let root = builder.root.unwrap_or(Node::Mapping(Mapping {
        entries: Vec::new(),
        span: Span::START,
    }));
    (Some(root), builder.errors)
}

/// A collection under construction.
#[derive(Debug)]
enum Frame {
    Sequence {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
        path: String,
    },
    Mapping {
        entries: Vec<Entry>,
        span: Span,
        anchor: usize,
        path: String,
        /// The key waiting for its value; `Err` holds the span of a key that was not a scalar,
        /// whose value is then dropped.
        key: Option<Result<Scalar, Span>>,
    },
}

/// Receives parser events and assembles the node tree.
#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Completed nodes by anchor id, so an alias can be replaced by a copy of its anchor.
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    errors: Vec<SyntaxError>,
}

impl Builder {
    /// The YAML path of the node that comes next in the innermost collection.
    fn next_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Sequence { items, path, .. }) => path::index(path, items.len()),
            Some(Frame::Mapping { key, path, .. }) => match key {
                Some(Ok(key)) => path::key(path, &key.text),
                // The node is itself a key (or the value of a rejected key): its own path is
                // the mapping's.
                _ => path.clone(),
            },
        }
    }

    fn error(&mut self, span: Span, path: String, message: String) {
        self.errors.push(SyntaxError {
            span,
            path,
            message,
        });
    }

    /// Adds a finished node to the collection it belongs to, or makes it the document.
    fn push(&mut self, mut node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(frame) = self.stack.last_mut() else {
            // Only the first document counts; a second one was already reported.
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        let problem = match frame {
            Frame::Sequence { items, .. } => {
                items.push(node);
                None
            }
            Frame::Mapping {
                entries,
                span,
                path,
                key,
                ..
            } => match key.take() {
                None => {
                    // A block mapping's start event is reported after its first key; the key is
                    // where the mapping visibly begins.
                    if entries.is_empty() && node.span() < *span {
                        *span = node.span();
                    }
                    match node {
                        Node::Scalar(scalar) => {
                            *key = Some(Ok(scalar));
                            None
                        }
                        other => {
                            *key = Some(Err(other.span()));
                            Some(SyntaxError {
                                span: other.span(),
                                path: path.clone(),
                                message: "mapping keys must be strings, not collections".to_owned(),
                            })
                        }
                    }
                }
                Some(Err(_)) => None,
                Some(Ok(key_scalar)) => {
                    // An empty value (`key:`) is reported at the start of the next line; point
                    // at the key instead, which is where the user left the value out.
                    if let Node::Scalar(value) = &mut node {
                        if value.is_null() && value.text.is_empty() {
                            value.span = key_scalar.span;
                        }
                    }
                    let first = entries
                        .iter()
                        .find(|entry| entry.key.text == key_scalar.text);
                    match first {
                        Some(first) => Some(SyntaxError {
                            span: key_scalar.span,
                            path: path::key(path, &key_scalar.text),
                            message: format!(
                                "duplicate key `{}` (first at line {})",
                                key_scalar.text, first.key.span.line
                            ),
                        }),
                        None => {
                            entries.push(Entry {
                                key: key_scalar,
                                value: node,
                            });
                            None
                        }
                    }
                }
            },
        };
        self.errors.extend(problem);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let span = Span::from_marker(marker);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.error(
                        span,
                        String::new(),
                        "expected one YAML document, found more than one (remove the `---` \
                         separator)"
                            .to_owned(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let scalar = Scalar {
                    text,
                    quoted: style != TScalarStyle::Plain,
                    span,
                };
                self.push(Node::Scalar(scalar), anchor);
            }
            Event::SequenceStart(anchor, _tag) => {
                let path = self.next_path();
                self.stack.push(Frame::Sequence {
                    items: Vec::new(),
                    span,
                    anchor,
                    path,
                });
            }
            Event::MappingStart(anchor, _tag) => {
                let path = self.next_path();
                self.stack.push(Frame::Mapping {
                    entries: Vec::new(),
                    span,
                    anchor,
                    path,
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Sequence {
                    items,
                    span,
                    anchor,
                    ..
                }) => self.push(Node::Sequence(Sequence { items, span }), anchor),
                Some(Frame::Mapping {
                    entries,
                    span,
                    anchor,
                    ..
                }) => self.push(Node::Mapping(Mapping { entries, span }), anchor),
                // The parser always balances start and end events.
                None => {}
            },
            Event::Alias(anchor) => {
                let node = match self.anchors.get(&anchor) {
                    Some(node) => node.clone(),
                    None => {
                        // The parser rejects unknown anchors itself, so this is an alias inside
                        // its own anchor: a cycle that has no finite value.
                        let path = self.next_path();
                        self.error(
                            span,
                            path,
                            "alias refers to an anchor that contains it".to_owned(),
                        );
                        Node::Scalar(Scalar {
                            text: String::new(),
                            quoted: false,
                            span,
                        })
                    }
                };
                self.push(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, line: usize, column: usize) -> Node {
        Node::Scalar(Scalar {
            text: text.to_owned(),
            quoted: false,
            span: Span { line, column },
        })
    }

    #[test]
    fn nodes_keep_one_based_positions() {
        let (root, errors) = parse("a: 1\nb:\n  c: [x, \"y\"]\n");
        assert_eq!(errors, []);
        let Some(Node::Mapping(root)) = root else {
            panic!("expected a mapping");
        };
        assert_eq!(root.span, Span { line: 1, column: 1 });
        assert_eq!(root.entries[0].value, scalar("1", 1, 4));
        let Node::Mapping(b) = &root.entries[1].value else {
            panic!("expected a mapping");
        };
        assert_eq!(b.span, Span { line: 3, column: 3 });
        let Node::Sequence(c) = &b.entries[0].value else {
            panic!("expected a list");
        };
        assert_eq!(c.span, Span { line: 3, column: 6 });
        assert_eq!(c.items[0], scalar("x", 3, 7));
        let Node::Scalar(y) = &c.items[1] else {
            panic!("expected a scalar");
        };
        assert!(y.quoted);
        assert_eq!(
            y.span,
            Span {
                line: 3,
                column: 10
            }
        );
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_wins() {
        let (root, errors) = parse("a:\n  b: 1\n  b: 2\n");
        assert_eq!(
            errors,
            [SyntaxError {
                span: Span { line: 3, column: 3 },
                path: "a.b".to_owned(),
                message: "duplicate key `b` (first at line 2)".to_owned(),
            }]
        );
        let Some(Node::Mapping(root)) = root else {
            panic!("expected a mapping");
        };
        let Node::Mapping(a) = &root.entries[0].value else {
            panic!("expected a mapping");
        };
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.entries[0].value, scalar("1", 2, 6));
    }

    #[test]
    fn aliases_copy_their_anchor() {
        let (root, errors) = parse("a: &x {b: 1}\nc: *x\n");
        assert_eq!(errors, []);
        let Some(Node::Mapping(root)) = root else {
            panic!("expected a mapping");
        };
        assert_eq!(root.entries[0].value, root.entries[1].value);
    }

    #[test]
    fn empty_values_point_at_their_key() {
        let (root, _) = parse("a:\nb: 1\n");
        let Some(Node::Mapping(root)) = root else {
            panic!("expected a mapping");
        };
        assert_eq!(root.entries[0].value, scalar("", 1, 1));
    }

    #[test]
    fn syntax_errors_stop_parsing_with_a_position() {
        let (root, errors) = parse("a: [1, 2\n");
        assert_eq!(root, None);
        assert_eq!(
            errors,
            [SyntaxError {
                span: Span { line: 2, column: 1 },
                path: String::new(),
                message: "YAML syntax error: while parsing a flow sequence, expected ',' or ']'"
                    .to_owned(),
            }]
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_mapping() {
        for text in ["", "# nothing yet\n"] {
            let (root, errors) = parse(text);
            assert_eq!(errors, []);
            assert_eq!(
                root,
                Some(Node::Mapping(Mapping {
                    entries: Vec::new(),
                    span: Span::START,
                }))
            );
        }
    }

    #[test]
    fn a_second_document_is_an_error() {
        let (_, errors) = parse("a: 1\n---\nb: 2\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].span, Span { line: 2, column: 1 });
    }
}
