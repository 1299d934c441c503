//! Text with `{capture}` placeholders, used by the `respond` body and the
//! `redirect` location. Parsed once per snapshot; rendered per request.
//!
//! Only `{name}` where `name` is a capture of the route's paths is a
//! placeholder, so JSON bodies with braces pass through untouched.

use crate::routing::Captures;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Capture(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl Template {
    /// Parses `s`; with `strict`, a `{name}` that is no capture is an error
    /// (for redirect locations, where it is surely a typo).
    pub fn parse(s: &str, captures: &[String], strict: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            let name = &rest[open + 1..close];
            if is_ident(name) && captures.iter().any(|c| c == name) {
                text.push_str(&rest[..open]);
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Capture(name.to_string()));
            } else if strict && is_ident(name) {
                return Err(format!(
                    "`{{{name}}}` is not a capture of this route's paths (captures: {})",
                    if captures.is_empty() {
                        "none".to_string()
                    } else {
                        captures.join(", ")
                    }
                ));
            } else {
                // Not a placeholder: keep the `{` and look again right after it,
                // so `{"id": "{id}"}` still finds `{id}`.
                text.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
                continue;
            }
            rest = &rest[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// True when the template has no placeholders.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders with `caps`; a capture absent from this match renders empty.
    /// With `json`, captured text is escaped for use inside a JSON string, so a
    /// path like `/users/a"b` cannot break (or inject into) a JSON body.
    pub fn render(&self, caps: &Captures, json: bool) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Capture(n) => {
                    let v = caps.get(n).unwrap_or("");
                    if json {
                        let quoted = serde_json::Value::from(v).to_string();
                        out.push_str(&quoted[1..quoted.len() - 1]);
                    } else {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::PathPattern;

    #[test]
    fn renders_captures_and_leaves_json_alone() {
        let pat = PathPattern::parse("/users/{id}").expect("valid");
        let names = pat.capture_names();
        let (caps, _) = pat.captures("/users/7").expect("match");
        let t = Template::parse(r#"{"id": "{id}", "x": {y}}"#, &names, false).expect("parse");
        assert_eq!(t.render(&caps, true), r#"{"id": "7", "x": {y}}"#);
        let (caps, _) = pat.captures("/users/a\"b\\").expect("match");
        assert_eq!(t.render(&caps, true), r#"{"id": "a\"b\\", "x": {y}}"#);
        assert!(Template::parse("/u/{idd}", &names, true).is_err());
        assert!(Template::parse("plain", &names, true)
            .expect("parse")
            .is_static());
    }
}
