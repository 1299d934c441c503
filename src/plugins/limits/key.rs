//! What a limit counts by: the consumer, the client IP, a header, a path
//! capture, the route, or several of them together. Parsed once per
//! snapshot; turned into a key string per request.

use std::fmt::Write as _;

use http::HeaderName;

use crate::plugins::context::Access;
use crate::plugins::BuildError;
use crate::proxy::errors::GatewayError;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The authenticated consumer (or token subject); absent for anonymous
    /// and unauthenticated callers.
    Consumer,
    /// The client address (behind trusted proxies).
    Ip,
    /// The matched route: one counter for everyone on it.
    Route,
    /// A request header's value.
    Header(HeaderName),
    /// A path capture of the matched route, like `{tenant}`.
    Capture(String),
}

/// What to do when a key source is absent on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Count by client IP instead (the default).
    #[default]
    Ip,
    /// Let the request through without counting it.
    Allow,
    /// Refuse it with 400.
    Deny,
}

/// A compiled key: its sources, in order.
#[derive(Debug, Clone)]
pub struct KeySpec {
    sources: Vec<KeySource>,
}

/// Keys longer than this are replaced by their SHA-256 (header values may
/// be kilobytes long; memory per key stays small).
const MAX_KEY_LEN: usize = 160;

impl KeySpec {
    /// Parses `key:` (one source or a list). Sources: `consumer`, `ip`,
    /// `route`, `header:<name>`, `capture:<name>`.
    pub fn parse(value: Option<&serde_json::Value>, default: &str) -> Result<KeySpec, BuildError> {
        let items: Vec<(String, &str)> = match value {
            None => vec![("key".into(), default)],
            Some(serde_json::Value::String(s)) => vec![("key".into(), s.as_str())],
            Some(serde_json::Value::Array(list)) if !list.is_empty() => {
                let mut items = Vec::new();
                for (i, v) in list.iter().enumerate() {
                    let s = v.as_str().ok_or_else(|| {
                        (format!("key[{i}]"), "a key source is a string".to_string())
                    })?;
                    items.push((format!("key[{i}]"), s));
                }
                items
            }
            Some(_) => {
                return Err((
                    "key".into(),
                    "`key` is a source (`consumer`, `ip`, `route`, `header:<name>`, \
                     `capture:<name>`) or a non-empty list of them"
                        .into(),
                ))
            }
        };
        let mut sources = Vec::new();
        for (field, s) in items {
            let source = match s.split_once(':') {
                None if s == "consumer" => KeySource::Consumer,
                None if s == "ip" => KeySource::Ip,
                None if s == "route" => KeySource::Route,
                Some(("header", name)) if !name.is_empty() => {
                    KeySource::Header(crate::plugins::header_name(&field, name)?)
                }
                Some(("capture", name)) if !name.is_empty() => KeySource::Capture(name.into()),
                _ => {
                    return Err((
                        field,
                        format!(
                            "unknown key source `{s}`; use `consumer`, `ip`, `route`, \
                             `header:<name>` or `capture:<name>`"
                        ),
                    ))
                }
            };
            if sources.contains(&source) {
                return Err((field, format!("key source `{s}` is listed twice")));
            }
            sources.push(source);
        }
        Ok(KeySpec { sources })
    }

    /// Whether the key names the consumer (per-consumer limits).
    pub fn uses_consumer(&self) -> bool {
        self.sources.contains(&KeySource::Consumer)
    }

    /// The request's key, or `None` when a source is absent. Each part is
    /// length-prefixed, so no value can imitate another source's part.
    pub fn key(&self, cx: &mut Access<'_>) -> Option<String> {
        let mut key = String::with_capacity(48);
        for source in &self.sources {
            match source {
                KeySource::Consumer => {
                    let id = cx.identity.as_ref().filter(|i| !i.anonymous)?;
                    part(&mut key, 'c', &id.subject);
                }
                KeySource::Ip => {
                    let ip = cx.client_ip();
                    let _ = write!(key, "i{ip}|");
                }
                KeySource::Route => part(&mut key, 'r', cx.route),
                KeySource::Header(name) => {
                    let v = cx.headers().get(name)?.to_str().ok()?;
                    part(&mut key, 'h', v);
                }
                KeySource::Capture(name) => {
                    let v = cx.capture(name)?;
                    part(&mut key, 'p', &v);
                }
            }
        }
        if key.len() > MAX_KEY_LEN {
            let digest = crate::plugins::credentials::sha256(key.as_bytes());
            key = digest.iter().fold(String::from("#"), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        }
        Some(key)
    }

    /// The request's key under the `on_missing` policy: `Ok(None)` lets the
    /// request through uncounted, `Err` is the 400 of `deny`.
    pub fn resolve(
        &self,
        cx: &mut Access<'_>,
        on_missing: OnMissing,
        plugin: &str,
    ) -> Result<Option<String>, GatewayError> {
        if let Some(k) = self.key(cx) {
            return Ok(Some(k));
        }
        match on_missing {
            OnMissing::Ip => Ok(Some(format!("i{}|", cx.client_ip()))),
            OnMissing::Allow => Ok(None),
            OnMissing::Deny => Err(super::key_missing(plugin)),
        }
    }
}

fn part(key: &mut String, tag: char, value: &str) {
    let _ = write!(key, "{tag}{}:{value}|", value.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sources_parse_alone_and_in_lists() {
        let k = KeySpec::parse(Some(&json!(["consumer", "header:X-Tenant"])), "ip").unwrap();
        assert_eq!(
            k.sources,
            [
                KeySource::Consumer,
                KeySource::Header(HeaderName::from_static("x-tenant"))
            ]
        );
        assert!(k.uses_consumer());
        let d = KeySpec::parse(None, "ip").unwrap();
        assert_eq!(d.sources, [KeySource::Ip]);
    }

    #[test]
    fn bad_sources_name_the_field() {
        for (v, field, msg) in [
            (json!("user"), "key", "unknown key source `user`"),
            (json!(["ip", "header:"]), "key[1]", "unknown key source"),
            (json!(["ip", "ip"]), "key[1]", "listed twice"),
            (json!([]), "key", "non-empty list"),
            (json!(["ip", 3]), "key[1]", "is a string"),
            (json!("header:bad name"), "key", "not a valid header name"),
        ] {
            let (f, m) = KeySpec::parse(Some(&v), "ip").unwrap_err();
            assert_eq!(f, field, "{v}");
            assert!(m.contains(msg), "{v}: {m}");
        }
    }
}
