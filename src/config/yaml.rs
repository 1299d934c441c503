//! YAML front end: parses text into a tree that remembers where every node
//! came from, substitutes `${ENV}` references, and lowers the tree to a
//! `serde_json::Value` plus a map from document paths to source positions.
//!
//! Why a tree of our own: serde deserializers stop at the first error and most
//! lose positions. Keeping positions beside the value lets every later check
//! (types, references, regexes) report `routes[2].match.paths[0] (line 31, col 9)`.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{ConfigError, Pos};

/// One YAML node with the position of its first character.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value of this node.
    pub kind: Kind,
    /// Where the node starts in the source (1-based line and column).
    pub pos: Pos,
    /// True for an unquoted scalar: only those are typed (and re-typed after
    /// `${ENV}` substitution); a quoted `"${PORT}"` stays text.
    pub plain: bool,
}

/// The value of a [`Node`], typed by the YAML 1.2 core schema.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer scalar.
    Int(i64),
    /// A floating-point scalar.
    Float(f64),
    /// Any other scalar, or a quoted one.
    Str(String),
    /// A block or flow sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order, keys kept with their positions.
    Map(Vec<(Node, Node)>),
}

/// Source positions of every value in a document, keyed by its path
/// (`routes[2].match.paths[0]`).
#[derive(Debug, Default, Clone)]
pub struct Positions {
    map: HashMap<String, Pos>,
}

impl Positions {
    /// The position of `path`, or of its closest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Builds [`Node`]s from parser events.
#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<Node>, usize)>, // container, pending map key, anchor id
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    errors: Vec<ConfigError>,
    documents: usize,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((top, key, _)) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        match &mut top.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
            _ => unreachable!("only containers are pushed on the stack"),
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(&mark);
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.errors.push(ConfigError::at(
                        "",
                        Some(pos),
                        "the file holds several YAML documents (`---`); put the whole configuration in one",
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain && tag.is_none();
                let kind = if plain {
                    plain_scalar(text)
                } else {
                    Kind::Str(text)
                };
                self.push_value(Node { kind, pos, plain }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    kind: Kind::Seq(Vec::new()),
                    pos,
                    plain: false,
                },
                None,
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    kind: Kind::Map(Vec::new()),
                    pos,
                    plain: false,
                },
                None,
                anchor,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut node, _, anchor)) = self.stack.pop() {
                    // A block mapping is announced at its first `:`; point at its first key instead.
                    if let Kind::Map(entries) = &node.kind {
                        if let Some((k, _)) = entries.first() {
                            if (k.pos.line, k.pos.col) < (node.pos.line, node.pos.col) {
                                node.pos = k.pos;
                            }
                        }
                    }
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => Node {
                        kind: n.kind.clone(),
                        pos,
                        plain: n.plain,
                    },
                    None => Node {
                        kind: Kind::Null,
                        pos,
                        plain: false,
                    },
                };
                self.push_value(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Types a plain (unquoted) scalar by the YAML 1.2 core schema.
pub(crate) fn plain_scalar(text: String) -> Kind {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Kind::Int(i);
        }
    }
    let looks_float = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            return Kind::Float(f);
        }
    }
    Kind::Str(text)
}

/// Parses one YAML document. Syntax errors come back with their position.
pub fn parse(src: &str) -> Result<Node, Vec<ConfigError>> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(src);
    if let Err(e) = parser.load(&mut builder, true) {
        let pos = pos_of(e.marker());
        return Err(vec![ConfigError::at(
            "",
            Some(pos),
            format!("malformed YAML: {}", e.info()),
        )]);
    }
    if !builder.errors.is_empty() {
        return Err(builder.errors);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        pos: Pos { line: 1, col: 1 },
        plain: false,
    }))
}

/// Replaces `${NAME}` and `${NAME:-default}` in every scalar with the value of
/// the environment variable; `$${` stands for a literal `${`. Plain scalars are
/// re-typed after substitution so `port: ${PORT}` is a number.
pub fn substitute_env(
    node: &mut Node,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match &mut node.kind {
        Kind::Str(s) if s.contains("${") => match expand(s, env) {
            Ok(out) => {
                // An unquoted scalar that was one reference takes the type of its value.
                let whole = node.plain
                    && s.starts_with("${")
                    && s.ends_with('}')
                    && s.matches("${").count() == 1;
                node.kind = if whole {
                    plain_scalar(out)
                } else {
                    Kind::Str(out)
                };
            }
            Err(msg) => errors.push(ConfigError::at(path, Some(node.pos), msg)),
        },
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let child = join(path, &key_text(k));
                substitute_env(v, &child, env, errors);
            }
        }
        _ => {}
    }
}

pub(crate) fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {s:?}; write `${{NAME}}`"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "`${{{inner}}}` is not a valid environment reference; names use letters, digits and `_`"
            ));
        }
        // As in the shell, `:-` also replaces a variable that is set but empty.
        match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set; set it or give a default with `${{{name}:-value}}`"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Joins a parent path and a map key: `routes[0]` + `name` = `routes[0].name`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn key_text(k: &Node) -> String {
    match &k.kind {
        Kind::Str(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Null => "null".into(),
        Kind::Seq(_) | Kind::Map(_) => "<complex key>".into(),
    }
}

/// Lowers a node to JSON, recording each value's position under its path.
/// Duplicate keys and non-string keys are reported as errors.
pub fn to_json(
    node: &Node,
    path: &str,
    positions: &mut Positions,
    errors: &mut Vec<ConfigError>,
) -> Value {
    positions.map.insert(path.to_string(), node.pos);
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Int(i) => Value::Number((*i).into()),
        Kind::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| to_json(n, &format!("{path}[{i}]"), positions, errors))
                .collect(),
        ),
        Kind::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                if matches!(k.kind, Kind::Seq(_) | Kind::Map(_)) {
                    errors.push(ConfigError::at(
                        path,
                        Some(k.pos),
                        "mapping keys must be plain text",
                    ));
                    continue;
                }
                let key = key_text(k);
                let child = join(path, &key);
                if map.contains_key(&key) {
                    errors.push(ConfigError::at(
                        &child,
                        Some(k.pos),
                        format!("key `{key}` appears twice in the same mapping"),
                    ));
                    continue;
                }
                let value = to_json(v, &child, positions, errors);
                map.insert(key, value);
            }
            Value::Object(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(src: &str) -> (Value, Positions) {
        let node = parse(src).expect("valid yaml");
        let mut pos = Positions::default();
        let mut errs = Vec::new();
        let v = to_json(&node, "", &mut pos, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        (v, pos)
    }

    #[test]
    fn scalars_are_typed_by_core_schema() {
        let (v, _) = lower("a: 1\nb: true\nc: '1'\nd: ~\ne: 1.5\nf: hello\ng: -3\nh: 1.2.3");
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], true);
        assert_eq!(v["c"], "1");
        assert!(v["d"].is_null());
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], "hello");
        assert_eq!(v["g"], -3);
        assert_eq!(v["h"], "1.2.3");
    }

    #[test]
    fn positions_are_recorded_per_path() {
        let (_, pos) = lower("routes:\n  - name: a\n    match:\n      paths: [\"/x\", \"y\"]\n");
        let p = pos.find("routes[0].match.paths[1]").expect("position");
        assert_eq!((p.line, p.col), (4, 21));
        let p = pos.find("routes[0].name").expect("position");
        assert_eq!((p.line, p.col), (2, 11));
        // Unknown children fall back to their closest ancestor.
        assert_eq!(pos.find("routes[0].name.nope").map(|p| p.line), Some(2));
    }

    #[test]
    fn env_substitution_types_and_defaults() {
        let mut node = parse("a: ${PORT}\nb: \"x-${NAME}-y\"\nc: ${MISSING:-dflt}\nd: $${LITERAL}\ne: \"${PORT}\"\nf: ${EMPTY:-dflt}")
            .expect("yaml");
        let env = |k: &str| match k {
            "PORT" => Some("8080".to_string()),
            "NAME" => Some("n".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let mut errs = Vec::new();
        substitute_env(&mut node, "", &env, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let v = to_json(&node, "", &mut Positions::default(), &mut errs);
        assert_eq!(v["a"], 8080);
        assert_eq!(v["b"], "x-n-y");
        assert_eq!(v["c"], "dflt");
        assert_eq!(v["d"], "${LITERAL}");
        assert_eq!(v["e"], "8080", "a quoted reference stays text");
        assert_eq!(v["f"], "dflt", "`:-` replaces an empty value");
    }

    #[test]
    fn env_errors_are_positioned() {
        let mut node =
            parse("listeners:\n  - address: ${NOPE}\n  - address: ${bad name}").expect("yaml");
        let mut errs = Vec::new();
        substitute_env(&mut node, "", &|_| None, &mut errs);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].path, "listeners[0].address");
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!(errs[0].pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn malformed_yaml_and_duplicate_keys_are_reported() {
        let err = parse("a: [1, 2\nb: 3").expect_err("malformed");
        assert!(err[0].message.starts_with("malformed YAML"));
        assert!(err[0].pos.is_some());
        let node = parse("a: 1\na: 2").expect("yaml");
        let mut errs = Vec::new();
        to_json(&node, "", &mut Positions::default(), &mut errs);
        assert!(errs[0].message.contains("twice"), "{errs:?}");
        assert!(parse("a: 1\n---\nb: 2").is_err());
    }

    #[test]
    fn anchors_and_aliases_expand() {
        let (v, _) = lower("t: &t {x: 1}\nu: *t");
        assert_eq!(v["u"]["x"], 1);
    }
}
