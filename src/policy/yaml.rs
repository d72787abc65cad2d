//! A YAML tree that keeps the position of every node, and a serde deserializer over it
//! that knows the field path of every value it hands out.
//!
//! Why not `serde_saphyr::from_str` straight into the raw structs: serde's internally
//! tagged enums (`#[serde(tag = "type")]`) buffer their content and lose every position
//! (saphyr then reports line 0, column 0), and serde's stock messages echo scalar values,
//! which could print a password written inline. So the syntax layer is serde-saphyr's
//! parser (`serde_saphyr::granit_parser`), and this module provides:
//! - [`parse_documents`]: events → one [`Node`] tree per `---` document, with YAML 1.2
//!   core-schema scalar resolution, anchors/aliases, duplicate-key detection, and
//!   recovery after a syntax error at the next document.
//! - [`NodeDe`]: a `serde::Deserializer` whose errors carry position and field path,
//!   whose messages never echo a string value, and which reads enums internally tagged
//!   by `type` (or a plain string for unit variants) without losing positions.
//! - [`Located`] (value + position + path) and [`Checked`] (an error barrier: the error
//!   is recorded and deserialization of the rest goes on, so one run reports many errors).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// A 1-based position in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line().max(1),
            column: span.start.col() + 1,
        }
    }
}

/// A resolved scalar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

/// One YAML node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A scalar: its text as written (after escapes) and its resolved type.
    Scalar(String, Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn count(&self) -> usize {
        match &self.value {
            Value::Scalar(..) => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
        }
    }

    /// The text of a scalar node.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(text, _) => Some(text),
            _ => None,
        }
    }

    /// Whether this is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Scalar(_, Scalar::Null))
    }

    /// A short description of what the node is, never its value.
    fn what(&self) -> &'static str {
        match &self.value {
            Value::Scalar(_, Scalar::Null) => "null",
            Value::Scalar(_, Scalar::Bool(_)) => "a boolean",
            Value::Scalar(_, Scalar::Int(_)) => "an integer",
            Value::Scalar(_, Scalar::Float(_)) => "a float",
            Value::Scalar(_, Scalar::Str) => "a literal string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The tree of a JSON value (a resource read from the API server): every node at
    /// position 0:0, since there is no text to point into.
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        let value = match value {
            J::Null => Value::Scalar(String::new(), Scalar::Null),
            J::Bool(b) => Value::Scalar(b.to_string(), Scalar::Bool(*b)),
            J::Number(n) => match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
                Some(i) => Value::Scalar(n.to_string(), Scalar::Int(i)),
                None => Value::Scalar(n.to_string(), Scalar::Float(n.as_f64().unwrap_or(f64::NAN))),
            },
            J::String(s) => Value::Scalar(s.clone(), Scalar::Str),
            J::Array(items) => Value::Seq(items.iter().map(Node::from_json).collect()),
            J::Object(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (Node::from_json(&J::String(k.clone())), Node::from_json(v)))
                    .collect(),
            ),
        };
        Node {
            pos: Pos::default(),
            value,
        }
    }
}

/// A problem found while building the tree (syntax errors, duplicate keys, …).
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
}

/// Upper bound on nodes per document, counting alias expansions (guards against
/// "billion laughs" documents).
const MAX_NODES: usize = 200_000;

fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i128>()
    {
        return Scalar::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && !oct.starts_with(['-', '+'])
        && let Ok(i) = i128::from_str_radix(oct, 8)
    {
        return Scalar::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && !hex.starts_with(['-', '+'])
        && let Ok(i) = i128::from_str_radix(hex, 16)
    {
        return Scalar::Int(i);
    }
    if is_core_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Scalar::Float(f);
    }
    Scalar::Str
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_core_float(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - s;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
    errors: Vec<SyntaxError>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            root: None,
            nodes: 0,
            errors: Vec::new(),
        }
    }

    /// The field path of the node about to be completed (for duplicate-key errors).
    fn current_path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
                Frame::Map { key: Some(k), .. } => {
                    path = child_path(&path, k.scalar_text().unwrap_or("?"))
                }
                Frame::Map { key: None, .. } => {}
            }
        }
        path
    }

    /// Attaches a finished node to its parent. `weight` is how many nodes it adds: 1 for
    /// a parsed node (its children were counted when they finished), the whole subtree
    /// for an alias expansion.
    fn complete(&mut self, node: Node, anchor: usize, weight: usize) -> Result<(), SyntaxError> {
        self.nodes += weight;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos: node.pos,
                path: "(yaml)".into(),
                message: format!(
                    "found more than {MAX_NODES} nodes (after expanding aliases), expected a policy"
                ),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { key, .. }) if key.is_none() => *key = Some(node),
            Some(Frame::Map { entries, key, .. }) => {
                let dup = key.as_ref().is_some_and(|k| {
                    k.scalar_text().is_some()
                        && entries
                            .iter()
                            .any(|(e, _)| e.scalar_text() == k.scalar_text())
                });
                // The path is only for the error: building it for every value cost more
                // than parsing.
                let path = if dup {
                    self.current_path()
                } else {
                    String::new()
                };
                if let Some(Frame::Map { entries, key, .. }) = self.stack.last_mut()
                    && let Some(k) = key.take()
                {
                    if dup {
                        self.errors.push(SyntaxError {
                            pos: k.pos,
                            path,
                            message: format!(
                                "found key `{}` a second time, expected each key once",
                                k.scalar_text().unwrap_or_default()
                            ),
                        });
                    } else {
                        entries.push((k, node));
                    }
                }
            }
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let pos = Pos::from_span(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = match tag.as_deref().map(|t| (t.core_suffix(), t.is_custom())) {
                    Some((Some("str"), _)) => Scalar::Str,
                    Some((Some("null" | "bool" | "int" | "float"), _)) | None => {
                        if style == ScalarStyle::Plain {
                            resolve_plain(&text)
                        } else {
                            Scalar::Str
                        }
                    }
                    Some(_) => {
                        // Custom tags (`!vault`, …) mean nothing to rotor.
                        return Err(SyntaxError {
                            pos,
                            path: self.current_path(),
                            message: "found a tagged scalar, expected no YAML tag".into(),
                        });
                    }
                };
                self.complete(
                    Node {
                        pos,
                        value: Value::Scalar(text.into_owned(), scalar),
                    },
                    anchor,
                    1,
                )
            }
            Event::SequenceStart(_, anchor, _) => {
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(_, anchor, _) => {
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => self.complete(
                    Node {
                        pos,
                        value: Value::Seq(items),
                    },
                    anchor,
                    1,
                ),
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => self.complete(
                    Node {
                        pos,
                        value: Value::Map(entries),
                    },
                    anchor,
                    1,
                ),
                None => Ok(()),
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.pos = pos;
                    let weight = node.count();
                    self.complete(node, 0, weight)
                }
                None => Err(SyntaxError {
                    pos,
                    path: self.current_path(),
                    message: "found an alias to an unknown anchor, expected a defined `&anchor`"
                        .into(),
                }),
            },
            _ => Ok(()),
        }
    }
}

/// One parsed document: its root (absent for an empty document) and the problems
/// found while building it.
pub(crate) struct Document {
    pub root: Option<Node>,
    pub errors: Vec<SyntaxError>,
}

/// Parses every `---` document of `text`. A syntax error ends its document (reported
/// there); parsing resumes at the next document.
pub(crate) fn parse_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut parser = Parser::new_from_str(text);
    let mut builder: Option<Builder> = None;
    loop {
        match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => match event {
                Event::DocumentStart(..) => builder = Some(Builder::new()),
                Event::DocumentEnd => {
                    if let Some(b) = builder.take() {
                        docs.push(Document {
                            root: b.root,
                            errors: b.errors,
                        });
                    }
                }
                Event::StreamEnd => break,
                event => {
                    let Some(b) = builder.as_mut() else { continue };
                    if let Err(e) = b.event(event, &span) {
                        let mut errors = std::mem::take(&mut b.errors);
                        errors.push(e);
                        builder = None;
                        docs.push(Document { root: None, errors });
                        if !matches!(parser.proceed_next_document(), Ok(true)) {
                            break;
                        }
                    }
                }
            },
            Some(Err(e)) => {
                let mut errors = builder.take().map(|b| b.errors).unwrap_or_default();
                errors.push(SyntaxError {
                    pos: Pos {
                        line: e.marker().line().max(1),
                        column: e.marker().col() + 1,
                    },
                    path: "(yaml)".into(),
                    message: format!("found invalid YAML: {}", e.info()),
                });
                docs.push(Document { root: None, errors });
                if !matches!(parser.proceed_next_document(), Ok(true)) {
                    break;
                }
            }
        }
    }
    docs
}

/// The path of key `key` under `parent` (`a.b`, or `a["tls.crt"]` for keys that are not
/// plain identifiers).
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        format!("{parent}[{key:?}]")
    } else if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// A deserialization error with position and field path.
#[derive(Debug, Clone)]
pub(crate) struct DeError {
    pub pos: Option<Pos>,
    pub path: Option<String>,
    pub message: String,
    /// Set by `missing_field`: the path gets this field appended when located.
    missing: Option<String>,
    /// Already recorded in the sink by a [`Checked`] barrier.
    pub reported: bool,
}

impl DeError {
    fn new(message: String) -> Self {
        DeError {
            pos: None,
            path: None,
            message,
            missing: None,
            reported: false,
        }
    }

    /// An error at a known place.
    pub fn at(pos: Pos, path: &str, message: impl Into<String>) -> Self {
        DeError {
            pos: Some(pos),
            path: Some(path.to_owned()),
            message: message.into(),
            missing: None,
            reported: false,
        }
    }

    fn reported() -> Self {
        DeError {
            reported: true,
            ..DeError::new("error reported already".into())
        }
    }

    /// Fills position and path if not known yet.
    fn locate(mut self, pos: Pos, key_pos: Option<Pos>, path: &str) -> Self {
        if self.pos.is_none() {
            match self.missing.take() {
                Some(field) => {
                    self.pos = Some(key_pos.unwrap_or(pos));
                    self.path = Some(child_path(path, &field));
                }
                None => {
                    self.pos = Some(pos);
                    self.path = Some(path.to_owned());
                }
            }
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// Describes an unexpected value without echoing strings (they may be secrets).
fn describe(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(_) => "a boolean".into(),
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer".into(),
        Unexpected::Float(_) => "a float".into(),
        Unexpected::Char(_) | Unexpected::Str(_) => "a literal string".into(),
        Unexpected::Bytes(_) => "bytes".into(),
        Unexpected::Unit => "null".into(),
        Unexpected::Option => "an optional value".into(),
        Unexpected::NewtypeStruct => "a newtype struct".into(),
        Unexpected::Seq => "a sequence".into(),
        Unexpected::Map => "a mapping".into(),
        Unexpected::Enum => "an enum".into(),
        Unexpected::UnitVariant => "a unit variant".into(),
        Unexpected::NewtypeVariant => "a newtype variant".into(),
        Unexpected::TupleVariant => "a tuple variant".into(),
        Unexpected::StructVariant => "a struct variant".into(),
        Unexpected::Other(other) => (*other).to_owned(),
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".into(),
        [one] => format!("`{one}`"),
        _ => format!("one of {}", super::validate::one_of(names)),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(format!("found {}, expected {exp}", describe(&unexp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        // Numbers are never secrets and say what is wrong ("found 70000, expected u16").
        let found = match unexp {
            Unexpected::Unsigned(n) => n.to_string(),
            Unexpected::Signed(n) => n.to_string(),
            other => describe(&other),
        };
        DeError::new(format!("found {found}, expected {exp}"))
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(format!("found {len} elements, expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("found `{variant}`, expected {}", one_of(expected)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!(
            "found unknown field `{field}`, expected {}",
            one_of(expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field.to_owned()),
            ..DeError::new(format!(
                "found no `{field}`, expected required field `{field}`"
            ))
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(format!("found `{field}` twice, expected it once"))
    }
}

// ---------------------------------------------------------------------------------------
// Deserializer

const LOCATED: &str = "$rotor::private::Located";
const CHECKED: &str = "$rotor::private::Checked";
const LOCATED_FIELDS: &[&str] = &["line", "column", "path", "value"];
const SCALAR_TEXT: &str = "$rotor::private::ScalarText";

/// Where [`Checked`] barriers record the errors they stop.
pub(crate) type Sink = RefCell<Vec<DeError>>;

/// A deserializer over one node. `path` is the node's field path; `key_pos` the position
/// of the key the node is the value of (missing-field errors point there).
#[derive(Clone)]
pub(crate) struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    key_pos: Option<Pos>,
    sink: &'a Sink,
    /// Hide the `type` key (the content of an internally tagged enum).
    skip_type: bool,
}

impl<'a> NodeDe<'a> {
    /// A deserializer for a document root.
    pub fn root(node: &'a Node, sink: &'a Sink) -> Self {
        NodeDe {
            node,
            path: String::new(),
            key_pos: None,
            sink,
            skip_type: false,
        }
    }

    fn child(&self, node: &'a Node, path: String, key_pos: Option<Pos>) -> Self {
        NodeDe {
            node,
            path,
            key_pos,
            sink: self.sink,
            skip_type: false,
        }
    }

    /// Where errors about this node point: the node, or its key when the value is
    /// null (`spec:` with nothing after it has no position of its own).
    fn pos(&self) -> Pos {
        match (&self.node.value, self.key_pos) {
            (Value::Scalar(_, Scalar::Null), Some(key)) => key,
            _ => self.node.pos,
        }
    }

    fn locate(&self, e: DeError) -> DeError {
        e.locate(self.pos(), self.key_pos, &self.path)
    }

    fn err(&self, message: String) -> DeError {
        DeError::at(self.pos(), &self.path, message)
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Scalar(text, scalar) => match scalar {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(*b),
                Scalar::Int(i) => {
                    if let Ok(u) = u64::try_from(*i) {
                        visitor.visit_u64(u)
                    } else if let Ok(s) = i64::try_from(*i) {
                        visitor.visit_i64(s)
                    } else {
                        visitor.visit_i128(*i)
                    }
                }
                Scalar::Float(f) => visitor.visit_f64(*f),
                Scalar::Str => visitor.visit_str(text),
            },
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                de: &self,
                items: items.iter().enumerate(),
            }),
            Value::Map(entries) => visitor.visit_map(MapAccess {
                de: &self,
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| self.locate(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none().map_err(|e| self.locate(e))
        } else {
            let this = self.clone();
            visitor.visit_some(self).map_err(|e| this.locate(e))
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match name {
            LOCATED => {
                let access = LocatedAccess {
                    de: self.clone(),
                    next: 0,
                };
                visitor.visit_map(access).map_err(|e| self.locate(e))
            }
            CHECKED => {
                let access = CheckedAccess {
                    de: Some(self.clone()),
                };
                visitor.visit_map(access).map_err(|e| self.locate(e))
            }
            _ => {
                let _ = fields;
                if let Value::Seq(_) = self.node.value {
                    // serde would accept a struct written as a sequence; YAML users never mean that.
                    return Err(self.locate(de::Error::invalid_type(Unexpected::Seq, &visitor)));
                }
                self.deserialize_any(visitor)
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name != SCALAR_TEXT {
            let this = self.clone();
            return visitor
                .visit_newtype_struct(self)
                .map_err(|e| this.locate(e));
        }
        match &self.node.value {
            Value::Scalar(_, Scalar::Null) => Err(self.err("found null, expected a value".into())),
            Value::Scalar(text, _) => visitor.visit_str(text).map_err(|e| self.locate(e)),
            _ => Err(self.err(format!("found {}, expected a scalar", self.node.what()))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar(text, Scalar::Str) => {
                let this = self.clone();
                visitor
                    .visit_enum(ScalarEnumAccess { name: text.clone() })
                    .map_err(|e| this.locate(e))
            }
            Value::Map(entries) => {
                let Some((type_key, type_value)) = entries
                    .iter()
                    .find(|(k, _)| k.scalar_text() == Some("type"))
                else {
                    return Err(DeError {
                        missing: Some("type".into()),
                        ..DeError::new("found no `type`, expected required field `type`".into())
                    }
                    .locate(self.node.pos, self.key_pos, &self.path));
                };
                let type_de = self.child(
                    type_value,
                    child_path(&self.path, "type"),
                    Some(type_key.pos),
                );
                let this = self.clone();
                visitor
                    .visit_enum(TaggedAccess {
                        content: self,
                        tag: type_de,
                    })
                    .map_err(|e| this.locate(e))
            }
            _ => Err(self.err(format!(
                "found {}, expected a mapping with a `type` field",
                self.node.what()
            ))),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

struct SeqAccess<'s, 'a, I> {
    de: &'s NodeDe<'a>,
    items: I,
}

impl<'de, 's, 'a, I> de::SeqAccess<'de> for SeqAccess<'s, 'a, I>
where
    I: Iterator<Item = (usize, &'a Node)>,
{
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let de = self.de.child(node, format!("{}[{i}]", self.de.path), None);
                seed.deserialize(de).map(Some)
            }
        }
    }
}

struct MapAccess<'s, 'a, I> {
    de: &'s NodeDe<'a>,
    entries: I,
    value: Option<(&'a Node, String, Pos)>,
}

impl<'de, 's, 'a, I> de::MapAccess<'de> for MapAccess<'s, 'a, I>
where
    I: Iterator<Item = &'a (Node, Node)>,
{
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        loop {
            let Some((key, value)) = self.entries.next() else {
                return Ok(None);
            };
            if self.de.skip_type && key.scalar_text() == Some("type") {
                continue;
            }
            let path = match key.scalar_text() {
                Some(text) => child_path(&self.de.path, text),
                None => format!("{}[?]", self.de.path),
            };
            self.value = Some((value, path.clone(), key.pos));
            let key_de = self.de.child(key, path, None);
            return seed.deserialize(key_de).map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((node, path, key_pos)) = self.value.take() else {
            return Err(self.de.err("value requested before key".into()));
        };
        seed.deserialize(self.de.child(node, path, Some(key_pos)))
    }
}

/// A unit variant written as a plain string (`strategy: single`).
struct ScalarEnumAccess {
    name: String,
}

impl<'de> de::EnumAccess<'de> for ScalarEnumAccess {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let key: de::value::StrDeserializer<'_, DeError> = self.name.as_str().into_deserializer();
        let variant = seed.deserialize(key)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for ScalarEnumAccess {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(DeError::new(
            "found a literal string, expected a mapping with a `type` field".into(),
        ))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::new(
            "found a literal string, expected a sequence".into(),
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(DeError::new(
            "found a literal string, expected a mapping with a `type` field".into(),
        ))
    }
}

/// Internally tagged enum: the variant comes from the `type` value, the content is the
/// same mapping without `type`.
struct TaggedAccess<'a> {
    content: NodeDe<'a>,
    tag: NodeDe<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for TaggedAccess<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let tag = self.tag.clone();
        let variant = seed.deserialize(self.tag).map_err(|e| tag.locate(e))?;
        let mut content = self.content;
        content.skip_type = true;
        Ok((variant, content))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match &self.node.value {
            Value::Map(entries) if entries.iter().any(|(k, _)| k.scalar_text() != Some("type")) => {
                Err(self.err("found fields besides `type`, expected none".into()))
            }
            _ => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let this = self.clone();
        seed.deserialize(self).map_err(|e| this.locate(e))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(self.err("found a mapping, expected a tuple variant".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// Feeds [`Located`]'s visitor: `line`, `column`, `path`, then `value`.
struct LocatedAccess<'a> {
    de: NodeDe<'a>,
    next: usize,
}

impl<'de, 'a> de::MapAccess<'de> for LocatedAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match LOCATED_FIELDS.get(self.next) {
            None => Ok(None),
            Some(name) => {
                let key: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let field = self.next;
        self.next += 1;
        match field {
            0 => seed.deserialize(self.de.node.pos.line.into_deserializer()),
            1 => seed.deserialize(self.de.node.pos.column.into_deserializer()),
            2 => seed.deserialize(self.de.path.as_str().into_deserializer()),
            _ => seed.deserialize(self.de.clone()),
        }
    }
}

/// Feeds [`Checked`]'s visitor one `value` entry; an error there is recorded in the sink
/// and replaced by a "reported" marker the visitor turns into `Checked(None)`.
struct CheckedAccess<'a> {
    de: Option<NodeDe<'a>>,
}

impl<'de, 'a> de::MapAccess<'de> for CheckedAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        if self.de.is_none() {
            return Ok(None);
        }
        let key: de::value::StrDeserializer<'_, DeError> = "value".into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(de) = self.de.take() else {
            return Err(DeError::new("value requested twice".into()));
        };
        let sink = de.sink;
        let this = de.clone();
        seed.deserialize(de).map_err(|e| {
            if !e.reported {
                sink.borrow_mut().push(this.locate(e));
            }
            DeError::reported()
        })
    }
}

// ---------------------------------------------------------------------------------------
// Wrappers

/// A value with the position and field path of its node.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub pos: Pos,
    pub path: String,
}

impl<T> Located<T> {
    /// An error at this value.
    pub fn error(&self, message: impl Into<String>) -> DeError {
        DeError::at(self.pos, &self.path, message)
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Located<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Located<T>, A::Error> {
                let mut pos = Pos::default();
                let mut path = String::new();
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "line" => pos.line = map.next_value()?,
                        "column" => pos.column = map.next_value()?,
                        "path" => path = map.next_value()?,
                        _ => value = Some(map.next_value()?),
                    }
                }
                match value {
                    Some(value) => Ok(Located { value, pos, path }),
                    None => Err(de::Error::missing_field("value")),
                }
            }
        }
        d.deserialize_struct(LOCATED, LOCATED_FIELDS, V(PhantomData))
    }
}

/// The text of a scalar as written, whatever its YAML type (`0600` stays `0600`, `600`
/// stays `600` rather than becoming a number). Only meaningful with [`NodeDe`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ScalarText(pub String);

impl<'de> de::Deserialize<'de> for ScalarText {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_owned()))
            }
        }
        d.deserialize_newtype_struct(SCALAR_TEXT, V)
    }
}

/// An error barrier: `None` when `T` failed to deserialize, the error having been
/// recorded in the sink. Only meaningful with [`NodeDe`].
#[derive(Debug, Clone)]
pub(crate) struct Checked<T>(pub Option<T>);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Checked<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a checked value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Checked<T>, A::Error> {
                if map.next_key::<String>()?.is_none() {
                    return Ok(Checked(None));
                }
                // The error, if any, was recorded by the deserializer.
                Ok(Checked(map.next_value::<T>().ok()))
            }
        }
        d.deserialize_struct(CHECKED, &["value"], V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn doc(text: &str) -> Node {
        let docs = parse_documents(text);
        assert_eq!(docs.len(), 1);
        assert!(docs[0].errors.is_empty(), "{:?}", docs[0].errors);
        docs[0].root.clone().unwrap()
    }

    #[test]
    fn resolves_core_schema_scalars() {
        assert_eq!(resolve_plain("null"), Scalar::Null);
        assert_eq!(resolve_plain("True"), Scalar::Bool(true));
        assert_eq!(resolve_plain("0600"), Scalar::Int(600));
        assert_eq!(resolve_plain("0o600"), Scalar::Int(0o600));
        assert_eq!(resolve_plain("0x1F"), Scalar::Int(31));
        assert_eq!(resolve_plain("1.5"), Scalar::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(resolve_plain("yes"), Scalar::Str);
        assert_eq!(resolve_plain("10m"), Scalar::Str);
        assert_eq!(resolve_plain("02:00-05:00"), Scalar::Str);
        assert_eq!(resolve_plain("."), Scalar::Str);
    }

    #[test]
    fn positions_are_one_based() {
        let root = doc("a: 1\nb:\n  c: hello\n");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        let Value::Map(inner) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(inner[0].1.pos, Pos { line: 3, column: 6 });
    }

    #[test]
    fn multi_document_and_recovery() {
        let docs = parse_documents("a: 1\n---\nb: [1, 2\n---\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[0].errors.is_empty());
        assert_eq!(docs[1].errors.len(), 1);
        assert!(docs[2].root.is_some());
    }

    #[test]
    fn duplicate_keys_are_reported() {
        let docs = parse_documents("a: 1\nb:\n  x: 1\n  x: 2\n");
        assert_eq!(docs[0].errors.len(), 1);
        assert_eq!(docs[0].errors[0].path, "b.x");
        assert_eq!(docs[0].errors[0].pos, Pos { line: 4, column: 3 });
    }

    #[test]
    fn aliases_are_expanded() {
        let root = doc("a: &x {k: v}\nb: *x\n");
        let Value::Map(entries) = &root.value else {
            panic!()
        };
        assert!(matches!(entries[1].1.value, Value::Map(_)));
        let docs = parse_documents(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        );
        assert!(docs.iter().any(|d| !d.errors.is_empty()));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)] // only deserialized, for its errors
    struct Outer {
        name: Located<String>,
        items: Vec<Checked<Item>>,
        #[serde(default)]
        count: Option<u16>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    enum Item {
        Plain(PlainItem),
        Other(PlainItem),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct PlainItem {
        secret: String,
    }

    #[test]
    fn errors_carry_position_and_path() {
        let text = "name: x\nitems:\n  - type: plain\n    secret: ok\n  - type: plain\n    secrett: nope\n  - type: nope\n  - secret: x\ncount: 70000\n";
        let root = doc(text);
        let sink = Sink::default();
        let err = Outer::deserialize(NodeDe::root(&root, &sink)).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("count"));
        assert_eq!(err.pos, Some(Pos { line: 9, column: 8 }));
        assert_eq!(err.message, "found 70000, expected u16");
        let errs = sink.into_inner();
        let got: Vec<_> = errs
            .iter()
            .map(|e| {
                (
                    e.path.clone().unwrap(),
                    e.pos.unwrap().line,
                    e.pos.unwrap().column,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("items[1].secrett".to_owned(), 6, 5),
                ("items[2].type".to_owned(), 7, 11),
                ("items[3].type".to_owned(), 8, 5),
            ]
        );
        assert!(errs[0].message.starts_with("found unknown field `secrett`"));
        assert_eq!(
            errs[1].message,
            "found `nope`, expected one of `plain`, `other`"
        );
    }

    #[test]
    fn strings_are_never_echoed() {
        let root = doc("name: [a]\nitems: []\n");
        let sink = Sink::default();
        let err = Outer::deserialize(NodeDe::root(&root, &sink)).unwrap_err();
        assert_eq!(err.message, "found a sequence, expected a string");
        let root = doc("name: x\nitems:\n  - type: plain\n    secret: {a: hunter2}\n");
        let _ = Outer::deserialize(NodeDe::root(&root, &sink));
        let errs = sink.into_inner();
        assert_eq!(errs[0].message, "found a mapping, expected a string");
        let root = doc("name: x\nitems: [{type: plain, secret: 5}]\ncount: hunter2\n");
        let sink = Sink::default();
        let err = Outer::deserialize(NodeDe::root(&root, &sink)).unwrap_err();
        assert_eq!(err.message, "found a literal string, expected u16");
        assert!(!sink.into_inner()[0].message.contains('5'));
    }

    #[test]
    fn missing_fields_point_at_the_parent_key() {
        let root = doc("name: x\nitems:\n  - type: plain\n");
        let sink = Sink::default();
        let _ = Outer::deserialize(NodeDe::root(&root, &sink));
        let errs = sink.into_inner();
        assert_eq!(errs[0].path.as_deref(), Some("items[0].secret"));
        assert_eq!(errs[0].pos, Some(Pos { line: 3, column: 5 }));
        let root = doc("items: []\n");
        let sink = Sink::default();
        let err = Outer::deserialize(NodeDe::root(&root, &sink)).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("name"));
    }
}
