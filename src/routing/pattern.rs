//! Path and host patterns as users write them, parsed and checked once when a
//! snapshot is built.
//!
//! Paths: `/api` is a prefix on segment boundaries (`/api`, `/api/x`, not
//! `/apix`); `=/health` is exact; `~^/v[0-9]+/` is a regex; `/users/{id}` is a
//! template matching exactly those segments; `/files/{*rest}` captures the
//! remainder (which may be empty).

use regex::Regex;

/// One segment of a template path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(Box<str>),
    /// Captures one non-empty segment under this name.
    Param(Box<str>),
    /// Captures the rest of the path (zero or more segments); always last.
    CatchAll(Box<str>),
}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// Segment-boundary prefix; segments exclude the empty root (`/` has none).
    Prefix(Vec<Box<str>>),
    /// The whole path must be equal.
    Exact(Box<str>),
    /// Segment template, possibly ending in a catch-all.
    Template(Vec<Segment>),
    /// A regex over the path; named groups become captures.
    Regex(Regex),
}

/// How specific a path pattern is; larger wins among routes of equal priority.
/// Exact beats fixed-length template beats prefix beats regex. A template
/// ending in a catch-all matches like a prefix, so it ranks among prefixes by
/// the length of its fixed part (`/a/b` beats `/a/{*rest}`; `/a/{id}/{*r}`
/// ties with `/a/x`, and a tie falls to declaration order). Regexes rank by
/// pattern length, a rough proxy for how much they constrain.
pub fn specificity(p: &PathPattern) -> u32 {
    match p {
        PathPattern::Exact(s) => 3_000_000 + s.len() as u32,
        PathPattern::Template(segs) if matches!(segs.last(), Some(Segment::CatchAll(_))) => {
            let fixed: u32 = segs[..segs.len() - 1]
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => l.len() as u32 + 1,
                    _ => 2,
                })
                .sum();
            1_000_000 + fixed
        }
        PathPattern::Template(segs) => {
            let literals = segs
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count() as u32;
            2_000_000 + literals * 1000 + segs.len() as u32 * 10
        }
        PathPattern::Prefix(segs) => {
            1_000_000 + segs.iter().map(|s| s.len() as u32 + 1).sum::<u32>()
        }
        PathPattern::Regex(r) => r.as_str().len().min(999_999) as u32,
    }
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl PathPattern {
    /// Parses a path as written in `match.paths`. The error explains the fix.
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if let Some(re) = s.strip_prefix('~') {
            return Regex::new(re)
                .map(PathPattern::Regex)
                .map_err(|e| format!("invalid regex: {}", one_line(&e.to_string())));
        }
        let (exact, body) = match s.strip_prefix('=') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if !body.starts_with('/') {
            return Err("path must start with '/' (or '=/' for exact, '~' for a regex)".into());
        }
        if body
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#')
        {
            return Err("path must not contain spaces, '?' or '#'; match query parameters with `match.query`".into());
        }
        if exact {
            if body.contains(['{', '}']) {
                return Err(
                    "an exact path (`=`) cannot hold `{captures}`; drop the `=` for a template"
                        .into(),
                );
            }
            return Ok(PathPattern::Exact(body.into()));
        }
        if !body.contains(['{', '}']) {
            let segs = body
                .split('/')
                .filter(|s| !s.is_empty())
                .map(Into::into)
                .collect();
            return Ok(PathPattern::Prefix(segs));
        }
        let raw: Vec<&str> = body[1..].split('/').collect();
        let mut segs = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in raw.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (catch, name) = match inner.strip_prefix('*') {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                if !valid_name(name) {
                    return Err(format!(
                        "capture name `{name}` in `{{{inner}}}` must be letters, digits or `_`, not starting with a digit"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("capture `{name}` appears twice"));
                }
                names.push(name);
                if catch {
                    if i + 1 != raw.len() {
                        return Err(format!("catch-all `{{*{name}}}` must be the last segment"));
                    }
                    Segment::CatchAll(name.into())
                } else {
                    Segment::Param(name.into())
                }
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "segment `{part}` mixes text and a capture; a capture must be a whole segment like `{{id}}`"
                ));
            } else {
                Segment::Literal((*part).into())
            };
            segs.push(seg);
        }
        Ok(PathPattern::Template(segs))
    }

    /// Names of the captures this pattern produces.
    pub fn capture_names(&self) -> Vec<String> {
        match self {
            PathPattern::Template(segs) => segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::CatchAll(n) => Some(n.to_string()),
                    Segment::Literal(_) => None,
                })
                .collect(),
            PathPattern::Regex(r) => r.capture_names().flatten().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// Matches `path` and returns its captures and the length of the matched
    /// prefix (what `strip_prefix` removes), or `None`.
    pub fn captures(&self, path: &str) -> Option<(Captures, usize)> {
        let mut caps = Captures::default();
        match self {
            PathPattern::Exact(p) => (path == &**p).then_some((caps, path.len())),
            PathPattern::Prefix(segs) => {
                let mut at = 0;
                for seg in segs {
                    let rest = path[at..].strip_prefix('/')?;
                    let rest = rest.strip_prefix(&**seg)?;
                    if !(rest.is_empty() || rest.starts_with('/')) {
                        return None;
                    }
                    at = path.len() - rest.len();
                }
                Some((caps, at))
            }
            PathPattern::Template(segs) => {
                let mut at = 0;
                for seg in segs {
                    let rest = path[at..].strip_prefix('/')?;
                    let end = rest.find('/').unwrap_or(rest.len());
                    let part = &rest[..end];
                    match seg {
                        Segment::Literal(l) if part == &**l => {}
                        Segment::Literal(_) => return None,
                        Segment::Param(_) if part.is_empty() => return None,
                        Segment::Param(n) => caps.push(n, part),
                        Segment::CatchAll(n) => {
                            caps.push(n, rest);
                            return Some((caps, at));
                        }
                    }
                    at = path.len() - rest.len() + end;
                }
                (at == path.len()).then_some((caps, at))
            }
            PathPattern::Regex(r) => {
                let m = r.captures(path)?;
                for name in r.capture_names().flatten() {
                    if let Some(v) = m.name(name) {
                        caps.push(name, v.as_str());
                    }
                }
                let whole = m
                    .get(0)
                    .map_or(0, |g| if g.start() == 0 { g.end() } else { 0 });
                Some((caps, whole))
            }
        }
    }
}

/// Named values captured from a request path, available to later phases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures(Vec<(Box<str>, String)>);

impl Captures {
    fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.into(), value.to_string()));
    }
    /// The value captured under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A host pattern: exact, leading wildcard, or any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `api.example.com` (lowercase, no port).
    Exact(Box<str>),
    /// `*.example.com`, stored as `.example.com`; matches one or more labels before it.
    Suffix(Box<str>),
}

impl HostPattern {
    /// Parses a host as written in `match.hosts`.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let lower = s.to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let ok_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(ok_label) {
            return Err(format!(
                "`{s}` is not a host name; write `api.example.com` or `*.example.com` (no scheme, port or path)"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> Option<(Captures, usize)> {
        PathPattern::parse(p).expect("valid").captures(path)
    }

    #[test]
    fn prefix_respects_segment_boundaries() {
        assert!(m("/api", "/api").is_some());
        assert!(m("/api", "/api/").is_some());
        assert_eq!(m("/api", "/api/x").map(|c| c.1), Some(4));
        assert!(m("/api", "/apix").is_none());
        assert!(m("/", "/anything").is_some());
        assert!(m("/a/b/", "/a/b").is_some());
    }

    #[test]
    fn exact_template_catchall_regex() {
        assert!(m("=/health", "/health").is_some());
        assert!(m("=/health", "/health/").is_none());
        let (c, _) = m("/users/{id}", "/users/42").expect("match");
        assert_eq!(c.get("id"), Some("42"));
        assert!(m("/users/{id}", "/users/42/x").is_none());
        assert!(m("/users/{id}", "/users/").is_none());
        let (c, n) = m("/files/{*rest}", "/files/a/b.txt").expect("match");
        assert_eq!((c.get("rest"), n), (Some("a/b.txt"), 6));
        assert_eq!(
            m("/files/{*rest}", "/files").map(|c| c.0.get("rest").map(str::to_string)),
            None
        );
        assert_eq!(
            m("/files/{*rest}", "/files/").and_then(|c| c.0.get("rest").map(str::to_string)),
            Some(String::new())
        );
        let (c, _) = m("~^/v(?P<ver>[0-9]+)/", "/v2/items").expect("match");
        assert_eq!(c.get("ver"), Some("2"));
    }

    #[test]
    fn bad_patterns_explain_themselves() {
        for (bad, needle) in [
            ("api", "must start with '/'"),
            ("~([", "invalid regex"),
            ("/a/{id}/{id}", "twice"),
            ("/a/{*r}/b", "last segment"),
            ("/a/x{id}", "whole segment"),
            ("/a/{1x}", "capture name"),
            ("=/a/{id}", "exact path"),
            ("/a b", "spaces"),
        ] {
            let err = PathPattern::parse(bad).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            HostPattern::parse("API.example.com"),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.example.com"),
            Ok(HostPattern::Suffix(".example.com".into()))
        );
        for bad in ["", "http://x", "a..b", "x:80", "*.", "a/b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specificity_orders_kinds() {
        let s = |p: &str| specificity(&PathPattern::parse(p).expect("valid"));
        assert!(s("=/a") > s("/a/{id}"));
        assert!(s("/a/{id}") > s("/a/b/c"));
        assert!(s("/a/b") > s("/a"));
        assert!(s("/a") > s("~^/a"));
        assert!(s("/a/{id}") > s("/a/{*rest}"));
        assert!(
            s("/a/b") > s("/a/{*rest}"),
            "a longer prefix beats a shorter catch-all"
        );
        assert!(s("/a/b/{*rest}") > s("/a"));
    }
}
