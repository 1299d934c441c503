//! `oauth2_introspection`: opaque bearer tokens checked with the
//! authorization server's RFC 7662 introspection endpoint, authenticated
//! with the gateway's client credentials. Active answers are cached for at
//! most their `exp` (and `cache_ttl`), inactive ones for `negative_ttl`;
//! the call has a timeout and a server that is down or slow fails closed.
//! Required scopes are checked per route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::context::{Access, Identity};
use super::credentials::{sha256, single_header, with_scheme};
use super::http_client::Endpoint;
use super::{invalid_credentials, BuildContext, BuildError, Phase, Plugin, Step};
use crate::config::units::HumanDuration;
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: HumanDuration,
    #[serde(default = "default_cache_ttl")]
    cache_ttl: HumanDuration,
    #[serde(default = "default_negative_ttl")]
    negative_ttl: HumanDuration,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_consumer_claim")]
    consumer_claim: String,
    #[serde(default)]
    require_consumer: bool,
    #[serde(default)]
    keep_credentials: bool,
    #[serde(default)]
    anonymous: Option<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default = "default_unavailable")]
    unavailable_status: u16,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_negative_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_unavailable() -> u16 {
    503
}

/// Most cached answers per introspection endpoint.
const CACHE_MAX: usize = 50_000;
/// The largest token sent to the server.
const MAX_TOKEN: usize = 8 * 1024;

#[derive(Debug, Clone)]
struct Answer {
    active: bool,
    claims: Arc<Map<String, Value>>,
    until: Instant,
}

/// Cached introspection answers of one endpoint and client, by the SHA-256
/// of the token; kept across reloads.
#[derive(Debug, Default)]
pub struct AnswerCache {
    entries: Mutex<HashMap<[u8; 32], Answer>>,
}

impl AnswerCache {
    fn get(&self, key: &[u8; 32]) -> Option<Answer> {
        let m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).filter(|a| a.until > Instant::now()).cloned()
    }

    fn put(&self, key: [u8; 32], answer: Answer) {
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CACHE_MAX {
            let now = Instant::now();
            m.retain(|_, a| a.until > now);
            if m.len() >= CACHE_MAX {
                m.clear();
            }
        }
        m.insert(key, answer);
    }
}

/// The compiled plugin.
#[derive(Debug)]
pub struct Introspection {
    endpoint: Endpoint,
    authorization: Option<HeaderValue>,
    cache: Arc<AnswerCache>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    scopes: Vec<String>,
    consumer_claim: String,
    require_consumer: bool,
    keep: bool,
    anonymous: Option<String>,
    unavailable: StatusCode,
}

/// Builds `oauth2_introspection` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    super::check_anonymous(&c.anonymous, cx)?;
    let endpoint = Endpoint::new(&c.url, c.ca.as_deref(), cx.config_dir, c.timeout.0)
        .map_err(|m| ("url".to_string(), m))?;
    let authorization = match (&c.client_id, &c.client_secret) {
        (Some(id), Some(secret)) => {
            // RFC 6749 §2.3.1: form-encode, then base64.
            let pair = format!("{}:{}", form_encode(id), form_encode(secret));
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            );
            Some(
                HeaderValue::from_str(&v)
                    .map_err(|_| ("client_id".to_string(), "must be text".to_string()))?,
            )
        }
        (None, None) => None,
        _ => {
            return Err((
                "client_secret".into(),
                "give both `client_id` and `client_secret`, or neither".into(),
            ))
        }
    };
    let unavailable = match c.unavailable_status {
        401 => StatusCode::UNAUTHORIZED,
        503 => StatusCode::SERVICE_UNAVAILABLE,
        _ => return Err(("unavailable_status".into(), "must be 401 or 503".into())),
    };
    let identity = format!("{}|{:?}", c.url, c.client_id);
    Ok(Arc::new(Introspection {
        endpoint,
        authorization,
        cache: cx.state.get(&identity, AnswerCache::default),
        cache_ttl: c.cache_ttl.0,
        negative_ttl: c.negative_ttl.0,
        scopes: c.scopes,
        consumer_claim: c.consumer_claim,
        require_consumer: c.require_consumer,
        keep: c.keep_credentials,
        anonymous: c.anonymous,
        unavailable,
    }))
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

static CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"portcullis\"");
static FORM: HeaderValue = HeaderValue::from_static("application/x-www-form-urlencoded");
static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Introspection {
    async fn introspect(&self, token: &str) -> Result<Answer, GatewayError> {
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (header::CONTENT_TYPE, FORM.clone()),
            (header::ACCEPT, JSON.clone()),
        ];
        if let Some(a) = &self.authorization {
            headers.push((header::AUTHORIZATION, a.clone()));
        }
        let body = format!("token={}&token_type_hint=access_token", form_encode(token));
        let unavailable = |why: String| {
            tracing::warn!(target: "portcullis::oauth2", url = %self.endpoint.url(), error = %why, "token introspection failed; refusing the request");
            GatewayError::new(
                self.unavailable,
                "auth_unavailable",
                "the token cannot be checked right now; retry shortly",
            )
            .with_header(header::WWW_AUTHENTICATE, CHALLENGE.clone())
        };
        let raw = self
            .endpoint
            .call(Method::POST, &headers, Bytes::from(body))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let claims: Map<String, Value> = serde_json::from_slice(&raw)
            .map_err(|e| unavailable(format!("the answer is not a JSON object: {e}")))?;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = claims.get("exp").and_then(Value::as_u64);
        let active = claims.get("active").and_then(Value::as_bool) == Some(true)
            && exp.is_none_or(|e| e > now_unix);
        let ttl = if active {
            let left = exp.map_or(self.cache_ttl, |e| Duration::from_secs(e - now_unix));
            left.min(self.cache_ttl)
        } else {
            self.negative_ttl
        };
        Ok(Answer {
            active,
            claims: Arc::new(claims),
            until: Instant::now() + ttl,
        })
    }

    fn accept(&self, cx: &mut Access<'_>, answer: &Answer) -> Result<(), GatewayError> {
        if !answer.active {
            return Err(invalid_credentials(
                "the token is not active",
                Some(CHALLENGE.clone()),
            ));
        }
        let granted: Vec<&str> = answer
            .claims
            .get("scope")
            .and_then(Value::as_str)
            .map_or(Vec::new(), |s| s.split_whitespace().collect());
        if let Some(missing) = self.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
            let challenge = format!(
                "Bearer realm=\"portcullis\", error=\"insufficient_scope\", scope=\"{}\"",
                self.scopes.join(" ").replace(['"', '\\'], "")
            );
            let mut e = GatewayError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the token lacks the scope `{missing}`"),
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                e = e.with_header(header::WWW_AUTHENTICATE, v);
            }
            return Err(e);
        }
        let subject = answer
            .claims
            .get(&self.consumer_claim)
            .and_then(Value::as_str);
        let consumer = subject.and_then(|s| cx.consumers.by_subject(s)).cloned();
        let identity = match consumer {
            Some(c) => Identity::of(c, "oauth2_introspection"),
            None if self.require_consumer => {
                return Err(invalid_credentials(
                    "the token does not belong to a known consumer",
                    Some(CHALLENGE.clone()),
                ))
            }
            None => Identity::subject_only(subject.unwrap_or_default(), "oauth2_introspection"),
        };
        if !self.keep {
            cx.req.headers_mut().remove(header::AUTHORIZATION);
        }
        cx.identity = Some(identity);
        Ok(())
    }
}

impl Plugin for Introspection {
    fn name(&self) -> &'static str {
        "oauth2_introspection"
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
        let token = match single_header(cx.headers(), &header::AUTHORIZATION) {
            Ok(Some(v)) => match with_scheme(v, "Bearer") {
                Some(t) if !t.is_empty() => t.to_string(),
                Some(_) => return reject("the bearer token is empty".into()),
                None => return Step::Continue,
            },
            Ok(None) => return Step::Continue,
            Err(m) => return reject(m.message("the Authorization header")),
        };
        if token.len() > MAX_TOKEN {
            return reject(format!("the token is larger than {MAX_TOKEN} bytes"));
        }
        let key = sha256(token.as_bytes());
        if let Some(answer) = self.cache.get(&key) {
            return Step::from(self.accept(cx, &answer));
        }
        Step::Wait(Box::pin(async move {
            let started = cx.span_start();
            let answer = self.introspect(&token).await;
            let failure = answer.as_ref().err().map(|e| e.code.to_string());
            cx.span_end(started, "oauth2_introspection", Vec::new(), failure);
            let answer = answer?;
            self.cache.put(key, answer.clone());
            self.accept(cx, &answer)
        }))
    }
}
