//! The configuration document as data: loading one that arrived as JSON (an
//! Admin API write, the cluster store), writing one back as YAML (the file
//! store, `config export`), its resources by kind and name, and content tags
//! for optimistic concurrency.
//!
//! The Admin API and the stores work on the *raw* document: the one the user
//! wrote, `${NAME}` references kept. It goes through the same
//! substitution, deserialization and validation as a file on every load.

use serde_json::{Map, Value};

use super::error::{ConfigError, ConfigErrors};
use super::yaml::{self, Positions};
use super::{deserialize_document, validate, LoadedConfig};

/// A kind of resource the Admin API manages: a top-level section of the
/// document whose items are identified by one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The URL segment and section name, like `routes`.
    pub section: &'static str,
    /// How an item is identified: a field name, or `None` for global plugins
    /// (one-key mappings identified by their plugin name).
    pub id_field: Option<&'static str>,
}

/// Listeners, by name.
pub const LISTENERS: Kind = Kind {
    section: "listeners",
    id_field: Some("name"),
};
/// Shared TLS certificates, by name.
pub const CERTIFICATES: Kind = Kind {
    section: "certificates",
    id_field: Some("name"),
};
/// Upstreams, by name.
pub const UPSTREAMS: Kind = Kind {
    section: "upstreams",
    id_field: Some("name"),
};
/// Routes, by name.
pub const ROUTES: Kind = Kind {
    section: "routes",
    id_field: Some("name"),
};
/// Consumers, by name.
pub const CONSUMERS: Kind = Kind {
    section: "consumers",
    id_field: Some("name"),
};
/// Global plugins, by plugin name.
pub const PLUGINS: Kind = Kind {
    section: "plugins",
    id_field: None,
};

/// Every resource kind, in document order.
pub const KINDS: [Kind; 6] = [
    LISTENERS,
    CERTIFICATES,
    UPSTREAMS,
    ROUTES,
    CONSUMERS,
    PLUGINS,
];

impl Kind {
    /// The kind whose section is `section`.
    pub fn find(section: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.section == section)
    }

    /// The identifier of `item`, when it has one.
    pub fn id_of(&self, item: &Value) -> Option<String> {
        match self.id_field {
            Some(f) => item.get(f).and_then(Value::as_str).map(str::to_string),
            None => match item.as_object() {
                Some(m) if m.len() == 1 => m.keys().next().cloned(),
                _ => None,
            },
        }
    }

    /// The items of this kind in `doc` (empty when the section is absent).
    pub fn items<'a>(&self, doc: &'a Value) -> &'a [Value] {
        doc.get(self.section)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The item named `id` and its index.
    pub fn get<'a>(&self, doc: &'a Value, id: &str) -> Option<(usize, &'a Value)> {
        self.items(doc)
            .iter()
            .enumerate()
            .find(|(_, it)| self.id_of(it).as_deref() == Some(id))
    }

    /// The section's list in `doc`, created when absent. `doc` must be a
    /// mapping (the caller checked).
    pub fn items_mut<'a>(&self, doc: &'a mut Value) -> &'a mut Vec<Value> {
        if !doc.is_object() {
            *doc = Value::Object(Map::new());
        }
        let map = match doc {
            Value::Object(m) => m,
            _ => unreachable!("made a mapping just above"),
        };
        let entry = map
            .entry(self.section)
            .or_insert_with(|| Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = Value::Array(Vec::new());
        }
        match entry {
            Value::Array(a) => a,
            _ => unreachable!("made a list just above"),
        }
    }
}

/// Parses, substitutes `${NAME}` references in, deserializes and validates a
/// raw document that arrived as JSON. Errors carry document paths (no lines:
/// there is no source text).
pub fn load_value(
    raw: Value,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let mut errors = Vec::new();
    if !(raw.is_object() || raw.is_null()) {
        errors.push(ConfigError::at(
            "",
            None,
            "the document must be a JSON object with `listeners`, `upstreams`, `routes`, `consumers` and `plugins`",
        ));
    }
    let mut value = raw.clone();
    substitute_env(&mut value, "", env, &mut errors);
    let positions = Positions::default();
    let doc = if errors.is_empty() {
        deserialize_document(value, &positions, &mut errors)
    } else {
        Default::default()
    };
    if errors.is_empty() {
        errors.extend(validate::validate(&doc, &positions));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors {
            source_name: source_name.to_string(),
            errors,
        });
    }
    Ok(LoadedConfig {
        doc,
        raw,
        positions,
        source_name: source_name.to_string(),
    })
}

/// Replaces `${NAME}` and `${NAME:-default}` in every string. A string that
/// is exactly one reference takes the type of its value (as an unquoted YAML
/// scalar does), so `port: ${PORT}` works the same from a file and from JSON.
pub fn substitute_env(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match v {
        Value::String(s) if s.contains("${") => match yaml::expand(s, env) {
            Ok(out) => {
                let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                *v = if whole {
                    typed(out)
                } else {
                    Value::String(out)
                };
            }
            Err(msg) => errors.push(ConfigError::at(path, None, msg)),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                substitute_env(item, &yaml::join(path, k), env, errors);
            }
        }
        _ => {}
    }
}

fn typed(text: String) -> Value {
    use yaml::Kind as ScalarKind;
    match yaml::plain_scalar(text) {
        ScalarKind::Null => Value::Null,
        ScalarKind::Bool(b) => Value::Bool(b),
        ScalarKind::Int(i) => Value::Number(i.into()),
        ScalarKind::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ScalarKind::Str(s) => Value::String(s),
        _ => Value::Null,
    }
}

/// A strong entity tag for `v`: a quoted hex digest of its JSON text. Equal
/// content gives equal tags on every node.
pub fn etag(v: &Value) -> String {
    let text = serde_json::to_vec(v).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &text);
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

/// Applies a JSON merge patch (RFC 7396) to `target`: `null` removes a
/// field, mappings merge, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Writes `v` as block-style YAML that reads back to the same JSON value.
/// Strings are plain where YAML would read them back as the same string,
/// and double-quoted (JSON escapes, which YAML accepts) otherwise.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(m: &Map<String, Value>, depth: usize, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first entry of a mapping inside a list follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            indent(depth, out);
        }
        out.push_str(&string(k));
        out.push(':');
        write_value(v, depth, out);
    }
}

fn write_seq(a: &[Value], depth: usize, out: &mut String) {
    for v in a {
        indent(depth, out);
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => write_map(m, depth + 2, out),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(inner, depth + 2, out);
            }
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// Writes the value of a mapping entry whose `key:` is already written.
fn write_value(v: &Value, depth: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, depth + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(a, depth, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn string(s: &str) -> String {
    if plain_safe(s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

/// Whether `s` written unquoted reads back as the same string. A string that
/// is exactly one `${NAME}` reference is written unquoted on purpose: its
/// value then takes its own type, as it did when it was read.
fn plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1 {
        return !s.contains(": ") && !s.contains(" #") && !s.contains('\n');
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first.is_whitespace() {
        return false;
    }
    if s.ends_with(' ') || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if s.chars().any(|c| c.is_control()) {
        return false;
    }
    matches!(yaml::plain_scalar(s.to_string()), yaml::Kind::Str(_))
        && !matches!(
            s,
            "yes" | "no" | "on" | "off" | "Yes" | "No" | "On" | "Off" | "YES" | "NO" | "ON" | "OFF"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(v: &Value) -> Value {
        let text = to_yaml(v);
        let root = yaml::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        yaml::to_json(&root, "", &mut Positions::default(), &mut Vec::new())
    }

    #[test]
    fn yaml_reads_back_to_the_same_value() {
        let v = json!({
            "listeners": [{"name": "public", "address": "127.0.0.1:8080"}],
            "routes": [{
                "name": "r",
                "match": {"paths": ["/a", "/b/{id}"], "methods": []},
                "respond": {"status": 200, "body": "line 1\nline \"2\": #x", "headers": {}},
                "plugins": [{"cors": {"origins": ["*"]}}],
            }],
            "odd": ["true", "123", "1.5", "null", "", " lead", "a: b", "- x", "yes", "~", "#c", "${PORT}", "x ${A}", "ünï"],
            "nested": [[1, 2], [], {}],
            "n": null, "f": 1.25, "b": false,
        });
        assert_eq!(roundtrip(&v), v);
    }

    #[test]
    fn env_references_stay_plain_and_typed() {
        let v = json!({"gateway": {"workers": "${WORKERS}"}});
        let text = to_yaml(&v);
        assert!(text.contains("workers: ${WORKERS}"), "{text}");
        let mut sub = v.clone();
        let mut errors = Vec::new();
        substitute_env(&mut sub, "", &|_| Some("3".into()), &mut errors);
        assert_eq!(sub["gateway"]["workers"], json!(3));
        let mut missing = v;
        substitute_env(&mut missing, "", &|_| None, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "gateway.workers");
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn etags_follow_content() {
        assert_eq!(etag(&json!({"a": 1})), etag(&json!({"a": 1})));
        assert_ne!(etag(&json!({"a": 1})), etag(&json!({"a": 2})));
        assert!(etag(&json!(1)).starts_with('"'));
    }

    #[test]
    fn kinds_find_items_by_id() {
        let doc = json!({"routes": [{"name": "a"}, {"name": "b"}], "plugins": [{"cors": {}}]});
        let routes = Kind::find("routes").expect("routes");
        assert_eq!(routes.get(&doc, "b").map(|(i, _)| i), Some(1));
        let plugins = Kind::find("plugins").expect("plugins");
        assert_eq!(plugins.get(&doc, "cors").map(|(i, _)| i), Some(0));
        assert!(Kind::find("nope").is_none());
    }

    #[test]
    fn json_documents_get_the_same_checks_as_files() {
        let bad = json!({"routes": [{"name": "r", "match": {"paths": ["nope"]}, "respond": {"status": 200}}]});
        let err = load_value(bad, "<api>", &|_| None).expect_err("invalid");
        assert!(
            err.errors.iter().any(|e| e.path.starts_with("routes[0]")),
            "{err}"
        );
        let unknown = json!({"routez": []});
        let err = load_value(unknown, "<api>", &|_| None).expect_err("unknown section");
        assert_eq!(err.errors[0].path, "routez");
        let not_map = json!([1]);
        assert!(load_value(not_map, "<api>", &|_| None).is_err());
    }
}
