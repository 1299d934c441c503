//! Built-in route actions that answer without an upstream: `respond` (a
//! fixed response, for mock APIs and health endpoints) and `redirect`.

use http::header::{self, HeaderValue};
use http::Response;

use super::body::{full, ResponseBody};
use crate::routing::{Captures, PathPattern};
use crate::snapshot::{RedirectAction, RespondAction};

fn captures(pattern: Option<&PathPattern>, path: &str) -> Captures {
    pattern
        .and_then(|p| p.captures(path))
        .map(|(c, _)| c)
        .unwrap_or_default()
}

/// Builds the fixed response of a `respond` route.
pub fn respond(
    a: &RespondAction,
    pattern: Option<&PathPattern>,
    path: &str,
) -> Response<ResponseBody> {
    let body = if a.body.is_static() {
        a.body.render(&Captures::default(), false)
    } else {
        a.body.render(&captures(pattern, path), a.json)
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = a.status;
    let h = resp.headers_mut();
    for (k, v) in &a.headers {
        h.append(k.clone(), v.clone());
    }
    if !h.contains_key(header::CONTENT_TYPE) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// Builds the response of a `redirect` route.
pub fn redirect(
    a: &RedirectAction,
    pattern: Option<&PathPattern>,
    path: &str,
    query: Option<&str>,
) -> Response<ResponseBody> {
    let mut location = a.location.render(&captures(pattern, path), false);
    // A relative location must stay on this site: captures such as `/evil.com`
    // could otherwise turn `/{rest}` into `//evil.com` (or `/\evil.com`, which
    // browsers read the same way), an open redirect.
    if location.starts_with('/') {
        let rest = location.trim_start_matches(['/', '\\']);
        if rest.len() + 1 < location.len() {
            location = format!("/{rest}");
        }
    }
    if let (true, Some(q)) = (a.keep_query, query) {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(q);
    }
    let mut resp = Response::new(full(""));
    *resp.status_mut() = a.status;
    // Captures come from a parsed URI path, so they are valid header bytes; a
    // location that still fails becomes `/` rather than an invalid header.
    let value = HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}
