//! Non-path route conditions: methods, headers and query parameters, compiled
//! once per snapshot (header names parsed, regexes built).

use http::header::HeaderName;
use http::{HeaderMap, Method};
use regex::Regex;

/// How a header or query value is tested.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Equal to this value.
    Equals(String),
    /// Matches this regex.
    Regex(Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

impl ValueTest {
    fn check(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueTest::Present(want), v) => *want == v.is_some(),
            (ValueTest::Equals(e), Some(v)) => e.as_bytes() == v,
            (ValueTest::Regex(r), Some(v)) => std::str::from_utf8(v).is_ok_and(|s| r.is_match(s)),
            (_, None) => false,
        }
    }
}

/// The method, header and query conditions of one route.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Allowed methods; `None` allows every method.
    pub methods: Option<Vec<Method>>,
    /// Header tests; every one must hold (names are case-insensitive).
    pub headers: Vec<(HeaderName, ValueTest)>,
    /// Query tests on percent-decoded names and values; every one must hold.
    pub query: Vec<(String, ValueTest)>,
}

impl Conditions {
    /// Methods listed in a 405's `Allow` when a route accepts any method.
    pub const STANDARD_METHODS: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];

    /// How many conditions there are; more conditions rank a route as more specific.
    pub fn count(&self) -> usize {
        usize::from(self.methods.is_some()) + self.headers.len() + self.query.len()
    }

    /// True when `m` is allowed. `HEAD` is allowed wherever `GET` is, as
    /// RFC 9110 §9.3.2 expects (the response body is dropped for `HEAD`).
    pub fn matches_method(&self, m: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.contains(m) || (*m == Method::HEAD && ms.contains(&Method::GET)))
    }

    /// Adds this route's allowed methods to `out`, without duplicates.
    pub fn allowed_methods(&self, out: &mut Vec<Method>) {
        let list: &[Method] = self.methods.as_deref().unwrap_or(&Self::STANDARD_METHODS);
        for m in list {
            if !out.contains(m) {
                out.push(m.clone());
            }
            if *m == Method::GET && !out.contains(&Method::HEAD) {
                out.push(Method::HEAD);
            }
        }
    }

    /// True when every header and query condition holds.
    pub fn matches_fields(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let headers_ok = self.headers.iter().all(|(name, test)| match test {
            // Any one of repeated headers may satisfy the test.
            ValueTest::Present(_) => test.check(headers.get(name).map(|v| v.as_bytes())),
            _ => headers
                .get_all(name)
                .iter()
                .any(|v| test.check(Some(v.as_bytes()))),
        });
        headers_ok
            && self.query.iter().all(|(name, test)| {
                let mut values = query_values(query.unwrap_or(""), name);
                match test {
                    ValueTest::Present(_) => {
                        test.check(values.next().as_deref().map(str::as_bytes))
                    }
                    _ => values.any(|v| test.check(Some(v.as_bytes()))),
                }
            })
    }
}

/// Percent-decoded values of parameter `name` in a query string (`+` is a space).
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k.as_bytes(), true) == name).then(|| percent_decode(v.as_bytes(), true))
    })
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (query
/// strings; gRPC's `grpc-message` keeps `+`). Invalid escapes are kept as
/// written; bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(b: &[u8], plus_is_space: bool) -> String {
    if !b.iter().any(|&c| c == b'%' || (plus_is_space && c == b'+')) {
        return String::from_utf8_lossy(b).into_owned();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode(b"a%20b+c", true), "a b c");
        assert_eq!(percent_decode(b"a%20b+c", false), "a b+c");
        assert_eq!(percent_decode(b"100%", true), "100%");
        assert_eq!(percent_decode(b"%zz", true), "%zz");
        assert_eq!(percent_decode(b"%41", true), "A");
        assert_eq!(percent_decode(b"caf%C3%A9 %E2%9C%93", false), "café ✓");
        assert_eq!(percent_decode(b"bad %FF", false), "bad \u{fffd}");
        let v: Vec<_> = query_values("a=1&b=2&a=x%20y&c", "a").collect();
        assert_eq!(v, vec!["1", "x y"]);
        assert_eq!(query_values("c", "c").next().as_deref(), Some(""));
    }

    #[test]
    fn field_conditions() {
        let c = Conditions {
            methods: Some(vec![Method::GET]),
            headers: vec![
                (
                    HeaderName::from_static("x-env"),
                    ValueTest::Equals("canary".into()),
                ),
                (
                    HeaderName::from_static("x-debug"),
                    ValueTest::Present(false),
                ),
            ],
            query: vec![(
                "v".into(),
                ValueTest::Regex(Regex::new("^[0-9]+$").expect("regex")),
            )],
        };
        let mut h = HeaderMap::new();
        h.insert("x-env", "canary".parse().expect("value"));
        assert!(c.matches_fields(&h, Some("v=2")));
        assert!(!c.matches_fields(&h, Some("v=x")));
        assert!(!c.matches_fields(&h, None));
        h.insert("x-debug", "1".parse().expect("value"));
        assert!(!c.matches_fields(&h, Some("v=2")));
        assert!(c.matches_method(&Method::GET) && !c.matches_method(&Method::POST));
        assert!(c.matches_method(&Method::HEAD), "HEAD follows GET");
        assert_eq!(c.count(), 4);
    }
}
