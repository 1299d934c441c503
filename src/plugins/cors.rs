//! `cors`: cross-origin resource sharing. Answers preflights itself (they
//! never reach the upstream or the authentication phase) and adds the
//! `Access-Control-*` headers to responses for allowed origins. Origins are
//! exact (`https://app.example.com`), wildcard subdomains
//! (`https://*.example.com`), regexes (`~^https://.*\.dev$`) or `*`.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;

use super::context::Access;
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::config::units::HumanDuration;
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Allowed origins.
    origins: Vec<String>,
    /// Allowed methods (default: GET, HEAD, POST, PUT, PATCH, DELETE).
    #[serde(default)]
    methods: Option<Vec<String>>,
    /// Allowed request headers; absent or `["*"]`: whatever the preflight asks.
    #[serde(default)]
    headers: Option<Vec<String>>,
    /// Response headers the browser may read.
    #[serde(default)]
    expose_headers: Vec<String>,
    /// Allow cookies and credentials (`Access-Control-Allow-Credentials`).
    #[serde(default)]
    credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default)]
    max_age: Option<HumanDuration>,
}

#[derive(Debug)]
enum Origin {
    Any,
    Exact(String),
    /// `scheme://` and the suffix after `*` (like `.example.com`).
    Subdomains(String, String),
    Regex(regex::Regex),
}

impl Origin {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Origin::Any => true,
            Origin::Exact(o) => o.eq_ignore_ascii_case(origin),
            Origin::Subdomains(scheme, suffix) => {
                let lower = origin.to_ascii_lowercase();
                lower.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host[..host.len() - suffix.len()].contains(['/', '@', ':'])
                })
            }
            Origin::Regex(r) => r.is_match(origin),
        }
    }
}

/// The compiled plugin.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    any: bool,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: Option<Vec<String>>,
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn origin(i: usize, s: &str) -> Result<Origin, BuildError> {
    let field = format!("origins[{i}]");
    if s == "*" {
        return Ok(Origin::Any);
    }
    if let Some(re) = s.strip_prefix('~') {
        return regex::Regex::new(re)
            .map(Origin::Regex)
            .map_err(|e| (field, format!("invalid regex: {e}")));
    }
    let Some((scheme, host)) = s.split_once("://") else {
        return Err((
            field,
            format!("`{s}` is not an origin; write `https://app.example.com`, `https://*.example.com`, `~regex` or `*`"),
        ));
    };
    if host.is_empty() || host.contains('/') {
        return Err((
            field,
            format!("`{s}`: an origin has no path (and no trailing `/`)"),
        ));
    }
    match host.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => Ok(Origin::Subdomains(
            format!("{}://", scheme.to_ascii_lowercase()),
            suffix.to_ascii_lowercase(),
        )),
        Some(_) => Err((
            field,
            "a wildcard origin looks like `https://*.example.com`".into(),
        )),
        None if host.contains('*') => Err((
            field,
            "a wildcard origin looks like `https://*.example.com`".into(),
        )),
        None => Ok(Origin::Exact(s.to_string())),
    }
}

fn list_value(field: &str, items: &[String]) -> Result<HeaderValue, BuildError> {
    HeaderValue::from_str(&items.join(", ")).map_err(|_| {
        (
            field.to_string(),
            "entries must be visible ASCII text".into(),
        )
    })
}

/// Builds `cors` from its configuration.
pub fn build(
    v: &serde_json::Value,
    _cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    if c.origins.is_empty() {
        return Err(("origins".into(), "list at least one allowed origin".into()));
    }
    let origins = c
        .origins
        .iter()
        .enumerate()
        .map(|(i, s)| origin(i, s))
        .collect::<Result<Vec<_>, _>>()?;
    let any = origins.iter().any(|o| matches!(o, Origin::Any));
    if any && c.credentials {
        return Err((
            "credentials".into(),
            "browsers refuse credentials with the origin `*`; list the allowed origins instead"
                .into(),
        ));
    }
    let names: Vec<String> = c.methods.unwrap_or_else(|| {
        ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
            .map(String::from)
            .to_vec()
    });
    let mut methods = Vec::new();
    for (i, m) in names.iter().enumerate() {
        methods.push(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                (
                    format!("methods[{i}]"),
                    format!("`{m}` is not an HTTP method"),
                )
            })?,
        );
    }
    let upper: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
    let headers = c
        .headers
        .filter(|h| !(h.len() == 1 && h[0] == "*"))
        .map(|h| h.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>());
    for (i, h) in headers.iter().flatten().enumerate() {
        super::header_name(&format!("headers[{i}]"), h)?;
    }
    Ok(Arc::new(Cors {
        origins,
        any,
        methods_value: list_value("methods", &upper)?,
        methods,
        headers_value: headers
            .as_deref()
            .map(|h| list_value("headers", h))
            .transpose()?,
        headers,
        expose: (!c.expose_headers.is_empty())
            .then(|| list_value("expose_headers", &c.expose_headers))
            .transpose()?,
        credentials: c.credentials,
        max_age: c.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
    }))
}

static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static STAR: HeaderValue = HeaderValue::from_static("*");

impl Cors {
    fn allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.matches(origin))
    }

    /// `Access-Control-Allow-Origin` for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any && !self.credentials {
            STAR.clone()
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, origin: &HeaderValue, cx: &Access<'_>) -> Step<'static> {
        let refuse =
            |m: String| Step::Reject(GatewayError::new(StatusCode::FORBIDDEN, "cors_rejected", m));
        let h = cx.headers();
        let wanted = h
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        match wanted {
            Some(m) if self.methods.contains(&m) => {}
            _ => return refuse("this method is not allowed for cross-origin requests".into()),
        }
        let requested = h
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(allowed) = &self.headers {
            for name in requested
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                    return refuse(format!(
                        "the header `{name}` is not allowed for cross-origin requests"
                    ));
                }
            }
        }
        let mut resp = Response::new(crate::proxy::body::full(""));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let out = resp.headers_mut();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        let allow_headers = match &self.headers_value {
            Some(v) => Some(v.clone()),
            None => h.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(v) = allow_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(v) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Step::Respond(Box::new(resp))
    }
}

/// Whether a request is a CORS preflight (routed by the method it announces).
pub fn is_preflight(method: &Method, headers: &http::HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn phase(&self) -> Phase {
        Phase::Cors
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        // Responses differ by origin unless every origin gets `*`.
        let vary = !self.any || self.credentials;
        let Some(origin) = cx.headers().get(header::ORIGIN).cloned() else {
            if vary {
                cx.response_headers
                    .push((header::VARY, VARY_ORIGIN.clone()));
            }
            return Step::Continue;
        };
        let allowed = origin.to_str().is_ok_and(|o| self.allowed(o));
        if is_preflight(cx.req.method(), cx.headers()) {
            if !allowed {
                return Step::Reject(GatewayError::new(
                    StatusCode::FORBIDDEN,
                    "cors_rejected",
                    "this origin is not allowed to make cross-origin requests here",
                ));
            }
            return self.preflight(&origin, cx);
        }
        let add = &mut cx.response_headers;
        if vary {
            add.push((header::VARY, VARY_ORIGIN.clone()));
        }
        // A disallowed origin gets no CORS headers: the browser hides the
        // response from the page. The request itself still proceeds, as a
        // plain (non-browser) client could send it anyway.
        if allowed {
            add.push((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin(&origin),
            ));
            if self.credentials {
                add.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
            }
            if let Some(v) = &self.expose {
                add.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone()));
            }
        }
        Step::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let sub = origin(0, "https://*.example.com").expect("pattern");
        assert!(sub.matches("https://app.example.com"));
        assert!(sub.matches("https://a.b.example.com"));
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("http://app.example.com"));
        assert!(!sub.matches("https://evil.com/.example.com"));
        assert!(!sub.matches("https://app.example.com.evil.com"));
        let exact = origin(0, "https://App.example.com").expect("exact");
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        let re = origin(0, r"~^https://[a-z]+\.dev$").expect("regex");
        assert!(re.matches("https://abc.dev"));
        assert!(origin(0, "app.example.com").is_err());
        assert!(origin(0, "https://app.example.com/").is_err());
        assert!(origin(0, "https://a*.example.com").is_err());
        assert!(origin(0, "~(").is_err());
    }
}
