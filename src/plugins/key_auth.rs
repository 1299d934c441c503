//! `key_auth`: API keys from a header (default `x-api-key`) or, when
//! enabled, a query parameter. Keys are kept as SHA-256 digests and compared
//! in constant time; the key is removed before the request goes upstream
//! unless `keep_credentials` is set.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::context::{Access, Identity};
use super::credentials::{remove_query_param, sha256, single_header, single_query};
use super::{invalid_credentials, BuildContext, BuildError, Phase, Plugin, Step};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Header carrying the key; `null` to accept only the query parameter.
    #[serde(default = "default_header")]
    header: Option<String>,
    /// Query parameter carrying the key (off by default: URLs end up in logs).
    #[serde(default)]
    query: Option<String>,
    /// Pass the key on to the upstream.
    #[serde(default)]
    keep_credentials: bool,
    /// Consumer used when no key is presented.
    #[serde(default)]
    anonymous: Option<String>,
}

fn default_header() -> Option<String> {
    Some("x-api-key".into())
}

/// The compiled plugin.
#[derive(Debug)]
pub struct KeyAuth {
    header: Option<HeaderName>,
    query: Option<String>,
    keep: bool,
    anonymous: Option<String>,
}

/// Builds `key_auth` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    super::check_anonymous(&c.anonymous, cx)?;
    if c.header.is_none() && c.query.is_none() {
        return Err((
            String::new(),
            "give `header` or `query` (or both): where the key is read from".into(),
        ));
    }
    let header = c
        .header
        .as_deref()
        .map(|h| super::header_name("header", h))
        .transpose()?;
    if c.query.as_deref() == Some("") {
        return Err(("query".into(), "the query parameter name is empty".into()));
    }
    Ok(Arc::new(KeyAuth {
        header,
        query: c.query,
        keep: c.keep_credentials,
        anonymous: c.anonymous,
    }))
}

static CHALLENGE: HeaderValue = HeaderValue::from_static("Key realm=\"portcullis\"");

impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key_auth"
    }

    fn phase(&self) -> Phase {
        Phase::Authentication
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(CHALLENGE.clone())
    }

    fn anonymous(&self) -> Option<&str> {
        self.anonymous.as_deref()
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let reject = |m: String| Step::Reject(invalid_credentials(m, Some(CHALLENGE.clone())));
        let from_header = match &self.header {
            Some(h) => match single_header(cx.headers(), h) {
                Ok(v) => v.map(|k| sha256(k.as_bytes())),
                Err(m) => return reject(m.message("the API key")),
            },
            None => None,
        };
        let (digest, in_query) = match (from_header, &self.query) {
            (Some(d), _) => (d, false),
            (None, Some(q)) => match single_query(cx.req.uri().query(), q) {
                Ok(Some(k)) => (sha256(k.as_bytes()), true),
                Ok(None) => return Step::Continue,
                Err(m) => return reject(m.message("the API key")),
            },
            (None, None) => return Step::Continue,
        };
        let Some(consumer) = cx.consumers.by_api_key(&digest).cloned() else {
            return reject("the API key is not valid".into());
        };
        if !self.keep {
            if in_query {
                if let Some(q) = &self.query {
                    remove_query_param(cx.req.uri_mut(), q);
                }
            } else if let Some(h) = &self.header {
                cx.req.headers_mut().remove(h);
            }
        }
        cx.identity = Some(Identity::of(consumer, "key_auth"));
        Step::Continue
    }
}
