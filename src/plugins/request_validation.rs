//! `request_validation`: checks a request before it reaches the upstream:
//! its JSON body against a JSON Schema (drafts 4 to 2020-12; no remote
//! `$ref` is ever fetched), and its query parameters and headers against
//! rules (required, a regex, a list of values). Requests without a body are
//! checked only when their method carries one (POST, PUT, PATCH). A failing
//! request gets 400
//! with every problem listed in `error.details`. Only this plugin buffers
//! the body, within the route's body limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{header, HeaderName, StatusCode};
use serde::Deserialize;

use super::context::Access;
use super::credentials::decode;
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// JSON Schema the body must satisfy (the body must then be JSON).
    #[serde(default)]
    body_schema: Option<serde_json::Value>,
    /// Rules per query parameter.
    #[serde(default)]
    query: BTreeMap<String, RuleDoc>,
    /// Rules per header.
    #[serde(default)]
    headers: BTreeMap<String, RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    #[serde(default)]
    required: bool,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    required: bool,
    pattern: Option<regex::Regex>,
    values: Vec<String>,
}

impl Rule {
    fn check(&self, what: &str, value: Option<&str>, out: &mut Vec<String>) {
        let Some(v) = value else {
            if self.required {
                out.push(format!("{what} is required"));
            }
            return;
        };
        if let Some(p) = &self.pattern {
            if !p.is_match(v) {
                out.push(format!("{what} does not match `{}`", p.as_str()));
            }
        }
        if !self.values.is_empty() && !self.values.iter().any(|x| x == v) {
            out.push(format!("{what} must be one of: {}", self.values.join(", ")));
        }
    }
}

/// The compiled plugin.
#[derive(Debug)]
pub struct RequestValidation {
    schema: Option<jsonschema::Validator>,
    query: Vec<(String, Rule)>,
    headers: Vec<(HeaderName, Rule)>,
}

fn rule(field: String, doc: &RuleDoc) -> Result<Rule, BuildError> {
    let pattern = doc
        .pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| (format!("{field}.pattern"), format!("invalid regex: {e}")))?;
    Ok(Rule {
        required: doc.required,
        pattern,
        values: doc.values.clone(),
    })
}

/// Builds `request_validation` from its configuration.
pub fn build(
    v: &serde_json::Value,
    _cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    if c.body_schema.is_none() && c.query.is_empty() && c.headers.is_empty() {
        return Err((
            String::new(),
            "give `body_schema`, `query` or `headers`: what to validate".into(),
        ));
    }
    let schema = c
        .body_schema
        .as_ref()
        .map(|s| {
            jsonschema::validator_for(s).map_err(|e| {
                (
                    "body_schema".to_string(),
                    format!("not a valid JSON Schema: {e}"),
                )
            })
        })
        .transpose()?;
    let mut query = Vec::new();
    for (name, doc) in &c.query {
        query.push((name.clone(), rule(format!("query.{name}"), doc)?));
    }
    let mut headers = Vec::new();
    for (name, doc) in &c.headers {
        let field = format!("headers.{name}");
        headers.push((super::header_name(&field, name)?, rule(field, doc)?));
    }
    Ok(Arc::new(RequestValidation {
        schema,
        query,
        headers,
    }))
}

/// Most problems listed in one answer.
const MAX_DETAILS: usize = 20;

fn invalid(mut details: Vec<String>) -> GatewayError {
    details.truncate(MAX_DETAILS);
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "validation_failed",
        "the request is not valid; see `details`",
    )
    .with_details(details)
}

impl RequestValidation {
    fn check_head(&self, cx: &Access<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let q = cx.req.uri().query().unwrap_or("");
        for (name, rule) in &self.query {
            let values: Vec<String> = q
                .split('&')
                .filter_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k).as_deref() == Some(name.as_str())).then(|| decode(v))
                })
                .map(|v| v.unwrap_or_default())
                .collect();
            if values.len() > 1 {
                out.push(format!("query parameter `{name}` is given more than once"));
                continue;
            }
            rule.check(
                &format!("query parameter `{name}`"),
                values.first().map(String::as_str),
                &mut out,
            );
        }
        for (name, rule) in &self.headers {
            let mut all = cx.headers().get_all(name).iter();
            let first = all.next();
            if all.next().is_some() {
                out.push(format!("header `{name}` is given more than once"));
                continue;
            }
            match first.map(|v| v.to_str()) {
                Some(Err(_)) => out.push(format!("header `{name}` is not valid text")),
                Some(Ok(v)) => rule.check(&format!("header `{name}`"), Some(v), &mut out),
                None => rule.check(&format!("header `{name}`"), None, &mut out),
            }
        }
        out
    }
}

impl Plugin for RequestValidation {
    fn name(&self) -> &'static str {
        "request_validation"
    }

    fn phase(&self) -> Phase {
        Phase::Validation
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let problems = self.check_head(cx);
        if !problems.is_empty() {
            return Step::Reject(invalid(problems));
        }
        let Some(schema) = &self.schema else {
            return Step::Continue;
        };
        // A body-less GET or DELETE has nothing to validate; a POST, PUT or
        // PATCH without a body does not satisfy a body schema.
        if http_body::Body::is_end_stream(cx.req.body()) {
            let m = cx.req.method();
            if m == http::Method::POST || m == http::Method::PUT || m == http::Method::PATCH {
                return Step::Reject(invalid(vec!["a JSON body is required".into()]));
            }
            return Step::Continue;
        }
        let json = cx
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !json {
            return Step::Reject(GatewayError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "this route expects a JSON body (`Content-Type: application/json`)",
            ));
        }
        Step::Wait(Box::pin(async move {
            let body = cx.read_body().await?;
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| invalid(vec![format!("the body is not valid JSON: {e}")]))?;
            let problems: Vec<String> = schema
                .iter_errors(&value)
                .take(MAX_DETAILS)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    let at = if at.is_empty() { "/".to_string() } else { at };
                    format!("{at}: {e}")
                })
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(invalid(problems))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_capped_and_rules_report_each_problem() {
        let many: Vec<String> = (0..30).map(|i| format!("problem {i}")).collect();
        assert_eq!(invalid(many).details.len(), MAX_DETAILS);
        let rule = Rule {
            required: true,
            pattern: Some(regex::Regex::new("^[a-z]+$").expect("regex")),
            values: vec!["abc".into()],
        };
        let mut out = Vec::new();
        rule.check("x", None, &mut out);
        rule.check("x", Some("abc"), &mut out);
        rule.check("x", Some("AB1"), &mut out);
        assert_eq!(
            out,
            [
                "x is required",
                "x does not match `^[a-z]+$`",
                "x must be one of: abc"
            ]
        );
    }
}
