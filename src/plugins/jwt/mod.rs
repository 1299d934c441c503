//! `jwt`: bearer tokens signed with HS256/384/512, RS256/384/512,
//! PS256/384/512, ES256/384 or EdDSA. Keys are configured inline, from
//! files, or fetched from a JWKS URL. Each key verifies only its own
//! algorithms, so `alg: none` and RSA/HMAC confusion are refused. Checks
//! `exp`, `nbf`, `iat` (with leeway), `iss`, `aud` and required claims; maps a
//! claim to a consumer and can forward claims as headers.

pub mod cache;
pub mod jwks;
pub mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::context::{Access, Identity};
use super::credentials::{remove_query_param, sha256, single_header, single_query, with_scheme};
use super::http_client::Endpoint;
use super::{invalid_credentials, BuildContext, BuildError, Phase, Plugin, Step};
use crate::config::units::{ByteSize, HumanDuration};
use crate::proxy::errors::GatewayError;
use jwks::Jwks;
use keys::{Key, KeyDoc, ASYMMETRIC};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    keys: Vec<KeyDoc>,
    #[serde(default)]
    jwks: Option<JwksDoc>,
    /// Algorithms JWKS keys may verify (a key's own `alg` narrows further).
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    issuer: Vec<String>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway: HumanDuration,
    #[serde(default)]
    max_age: Option<HumanDuration>,
    #[serde(default = "default_required")]
    required_claims: Vec<String>,
    #[serde(default = "default_consumer_claim")]
    consumer_claim: String,
    #[serde(default)]
    require_consumer: bool,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    #[serde(default = "default_header")]
    header: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    cookie: Option<String>,
    #[serde(default)]
    keep_credentials: bool,
    #[serde(default)]
    anonymous: Option<String>,
    #[serde(default = "default_max_token")]
    max_token_size: ByteSize,
    #[serde(default = "default_unavailable")]
    unavailable_status: u16,
    /// Verified tokens remembered (0 turns the cache off).
    #[serde(default = "default_cache_size")]
    verified_cache_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwksDoc {
    url: String,
    #[serde(default = "default_refresh")]
    refresh: HumanDuration,
    #[serde(default = "default_min_refresh")]
    min_refresh_interval: HumanDuration,
    #[serde(default = "default_timeout")]
    timeout: HumanDuration,
    #[serde(default)]
    ca: Option<String>,
}

fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_required() -> Vec<String> {
    vec!["exp".into()]
}
fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_header() -> Option<String> {
    Some("authorization".into())
}
fn default_max_token() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_unavailable() -> u16 {
    503
}
fn default_cache_size() -> usize {
    10_000
}
fn default_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_min_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// The compiled plugin.
#[derive(Debug)]
pub struct Jwt {
    keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    /// The checks for each algorithm (only `algorithms` differs).
    validations: Vec<(Algorithm, Validation)>,
    verified: Arc<cache::Verified>,
    leeway: u64,
    max_age: Option<u64>,
    consumer_claim: String,
    require_consumer: bool,
    groups_claim: Option<String>,
    claims_to_headers: Vec<(String, HeaderName)>,
    /// Claims every token must carry (checked here: the library knows only
    /// the registered ones).
    required: Vec<String>,
    header: Option<HeaderName>,
    query: Option<String>,
    cookie: Option<String>,
    keep: bool,
    anonymous: Option<String>,
    max_token: usize,
    unavailable: StatusCode,
}

/// Builds `jwt` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    super::check_anonymous(&c.anonymous, cx)?;
    let mut keys = Vec::new();
    for (i, k) in c.keys.iter().enumerate() {
        let key = keys::from_doc(k, cx.config_dir).map_err(|(f, m)| {
            let at = if f.is_empty() {
                format!("keys[{i}]")
            } else {
                format!("keys[{i}].{f}")
            };
            (at, m)
        })?;
        keys.push(key);
    }
    let allowed = match &c.algorithms {
        Some(list) => {
            let mut out = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let alg = keys::algorithm(a).map_err(|m| (format!("algorithms[{i}]"), m))?;
                if !ASYMMETRIC.contains(&alg) {
                    return Err((
                        format!("algorithms[{i}]"),
                        "JWKS keys are public keys; HMAC algorithms are only for configured `keys`"
                            .into(),
                    ));
                }
                out.push(alg);
            }
            out
        }
        None => ASYMMETRIC.to_vec(),
    };
    let jwks = match &c.jwks {
        Some(j) => {
            let endpoint = Endpoint::new(&j.url, j.ca.as_deref(), cx.config_dir, j.timeout.0)
                .map_err(|m| ("jwks.url".to_string(), m))?;
            if j.refresh.0 < Duration::from_secs(1)
                || j.min_refresh_interval.0 < Duration::from_secs(1)
            {
                return Err((
                    "jwks.refresh".into(),
                    "refresh intervals must be at least 1s".into(),
                ));
            }
            let identity = format!(
                "{}|{:?}|{:?}|{:?}|{:?}|{:?}",
                j.url, j.ca, allowed, j.refresh.0, j.min_refresh_interval.0, j.timeout.0
            );
            let set = cx.state.get(&identity, || {
                Jwks::new(
                    endpoint,
                    allowed.clone(),
                    j.refresh.0,
                    j.min_refresh_interval.0,
                )
            });
            cx.background
                .push((format!("jwks:{identity}"), set.clone()));
            Some(set)
        }
        None => None,
    };
    if keys.is_empty() && jwks.is_none() {
        return Err((String::new(), "give `keys`, `jwks`, or both".into()));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = c.leeway.0.as_secs();
    validation.validate_nbf = true;
    let mut required: std::collections::HashSet<String> =
        c.required_claims.iter().cloned().collect();
    validation.validate_exp = required.contains("exp");
    if !c.issuer.is_empty() {
        validation.set_issuer(&c.issuer);
        required.insert("iss".into());
    }
    if c.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&c.audience);
        required.insert("aud".into());
    }
    if c.max_age.is_some() {
        required.insert("iat".into());
    }
    let required_list: Vec<String> = required.iter().cloned().collect();
    validation.required_spec_claims = required;
    let validations = ASYMMETRIC
        .iter()
        .chain(&[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])
        .map(|a| {
            let mut v = validation.clone();
            v.algorithms = vec![*a];
            (*a, v)
        })
        .collect();
    let mut claims_to_headers = Vec::new();
    for (claim, h) in &c.claims_to_headers {
        claims_to_headers.push((
            claim.clone(),
            super::header_name(&format!("claims_to_headers.{claim}"), h)?,
        ));
    }
    if c.header.is_none() && c.query.is_none() && c.cookie.is_none() {
        return Err((
            String::new(),
            "give `header`, `query` or `cookie`: where the token is read from".into(),
        ));
    }
    let unavailable = match c.unavailable_status {
        401 => StatusCode::UNAUTHORIZED,
        503 => StatusCode::SERVICE_UNAVAILABLE,
        _ => return Err(("unavailable_status".into(), "must be 401 or 503".into())),
    };
    Ok(Arc::new(Jwt {
        keys,
        jwks,
        validations,
        // Kept across reloads for exactly this configuration (the checks a
        // cached token passed are the configuration's).
        verified: cx.state.get(&format!("jwt-verified|{v}"), || {
            cache::Verified::new(c.verified_cache_size)
        }),
        leeway: c.leeway.0.as_secs(),
        max_age: c.max_age.map(|d| d.0.as_secs()),
        consumer_claim: c.consumer_claim,
        require_consumer: c.require_consumer,
        groups_claim: c.groups_claim,
        claims_to_headers,
        required: required_list,
        header: c
            .header
            .as_deref()
            .map(|h| super::header_name("header", h))
            .transpose()?,
        query: c.query,
        cookie: c.cookie,
        keep: c.keep_credentials,
        anonymous: c.anonymous,
        max_token: c.max_token_size.0 as usize,
        unavailable,
    }))
}

static CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"portcullis\"");

/// Where the token was found (to remove it before proxying).
enum Source {
    Header,
    Query,
    Cookie,
}

fn reject(m: impl Into<String>) -> GatewayError {
    invalid_credentials(m, Some(CHALLENGE.clone()))
}

/// Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jwt {
    /// The generation of the fetched key set (0 without JWKS).
    fn generation(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |j| j.generation())
    }

    /// Finds the token; `Ok(None)` when this request carries none.
    fn token(&self, cx: &Access<'_>) -> Result<Option<(String, Source)>, GatewayError> {
        if let Some(h) = &self.header {
            match single_header(cx.headers(), h) {
                Ok(Some(v)) if *h == header::AUTHORIZATION => {
                    // Another scheme (Basic) is another plugin's credential.
                    if let Some(t) = with_scheme(v, "Bearer") {
                        return Ok(Some((t.to_string(), Source::Header)));
                    }
                }
                Ok(Some(v)) => return Ok(Some((v.to_string(), Source::Header))),
                Ok(None) => {}
                Err(m) => return Err(reject(m.message("the token header"))),
            }
        }
        if let Some(q) = &self.query {
            match single_query(cx.req.uri().query(), q) {
                Ok(Some(t)) => return Ok(Some((t, Source::Query))),
                Ok(None) => {}
                Err(m) => return Err(reject(m.message("the token parameter"))),
            }
        }
        if let Some(name) = &self.cookie {
            let mut found = None;
            for v in cx.headers().get_all(header::COOKIE) {
                let Ok(s) = v.to_str() else { continue };
                for pair in s.split(';') {
                    if let Some((k, val)) = pair.trim().split_once('=') {
                        if k == name {
                            if found.is_some() {
                                return Err(reject("the token cookie was sent more than once"));
                            }
                            found = Some(val.to_string());
                        }
                    }
                }
            }
            if let Some(t) = found {
                return Ok(Some((t, Source::Cookie)));
            }
        }
        Ok(None)
    }

    /// Verifies `token` with the first of `keys` that fits its header.
    fn verify(
        &self,
        digest: [u8; 32],
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        keys: &[Key],
    ) -> Option<Result<Arc<Map<String, Value>>, GatewayError>> {
        let mut tried = false;
        let mut last = None;
        // A named key is used if present; a token naming an unknown key may
        // still fit a configured key that has no `kid`.
        let by_kid = kid.is_some() && keys.iter().any(|k| k.kid.as_deref() == kid);
        for k in keys {
            if !k.algorithms.contains(&alg) {
                continue;
            }
            if by_kid && k.kid.as_deref() != kid || !by_kid && kid.is_some() && k.kid.is_some() {
                continue;
            }
            tried = true;
            let v = self
                .validations
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, v)| v)?;
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, v) {
                Ok(data) => {
                    let claims = Arc::new(data.claims);
                    if let Err(e) = self.check_times(&claims) {
                        return Some(Err(e));
                    }
                    let now = now();
                    let exp = claims.get("exp").and_then(Value::as_u64);
                    let until = exp
                        .map_or(u64::MAX, |e| e + self.leeway)
                        .min(now + cache::MAX_LIFETIME);
                    self.verified
                        .put(digest, claims.clone(), until, self.generation());
                    return Some(Ok(claims));
                }
                Err(e) => {
                    let done = !matches!(e.kind(), ErrorKind::InvalidSignature);
                    last = Some(reject(describe(e.kind())));
                    // Only a signature mismatch may mean another key fits.
                    if done {
                        break;
                    }
                }
            }
        }
        if tried {
            last.map(Err)
        } else {
            None
        }
    }

    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), GatewayError> {
        if let Some(missing) = self
            .required
            .iter()
            .find(|c| !claims.contains_key(c.as_str()))
        {
            return Err(reject(format!(
                "the token lacks the required claim `{missing}`"
            )));
        }
        if let Some(iat) = claims.get("iat") {
            let Some(iat) = iat.as_u64() else {
                return Err(reject("the token's `iat` is not a number"));
            };
            let now = now();
            if iat > now + self.leeway {
                return Err(reject("the token was issued in the future"));
            }
            if let Some(max) = self.max_age {
                if now.saturating_sub(iat) > max + self.leeway {
                    return Err(reject("the token is too old"));
                }
            }
        }
        Ok(())
    }

    /// Sets the identity from verified claims and prepares the upstream request.
    fn accept(
        &self,
        cx: &mut Access<'_>,
        claims: &Map<String, Value>,
        source: Source,
    ) -> Result<(), GatewayError> {
        let subject = claims.get(&self.consumer_claim).and_then(claim_text);
        let consumer = subject
            .as_deref()
            .and_then(|s| cx.consumers.by_subject(s))
            .cloned();
        let mut identity = match (consumer, subject) {
            (Some(c), _) => Identity::of(c, "jwt"),
            (None, _) if self.require_consumer => {
                return Err(reject("the token does not belong to a known consumer"));
            }
            (None, s) => Identity::subject_only(&s.unwrap_or_default(), "jwt"),
        };
        if let Some(g) = self.groups_claim.as_ref().and_then(|g| claims.get(g)) {
            let groups: Vec<Arc<str>> = match g {
                Value::Array(a) => a.iter().filter_map(Value::as_str).map(Arc::from).collect(),
                Value::String(s) => s.split_whitespace().map(Arc::from).collect(),
                _ => Vec::new(),
            };
            identity.extra_groups.extend(groups);
        }
        let req = &mut *cx.req;
        for (claim, name) in &self.claims_to_headers {
            // A client's own copy is never passed on.
            req.headers_mut().remove(name);
            if let Some(v) = claims.get(claim).and_then(claim_text) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    req.headers_mut().insert(name.clone(), v);
                }
            }
        }
        if !self.keep {
            match source {
                Source::Header => {
                    if let Some(h) = &self.header {
                        req.headers_mut().remove(h);
                    }
                }
                Source::Query => {
                    if let Some(q) = &self.query {
                        remove_query_param(req.uri_mut(), q);
                    }
                }
                Source::Cookie => {
                    if let Some(name) = &self.cookie {
                        strip_cookie(req.headers_mut(), name);
                    }
                }
            }
        }
        cx.identity = Some(identity);
        Ok(())
    }
}

/// A claim as header text: strings as they are, numbers and booleans printed.
fn claim_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strip_cookie(headers: &mut http::HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split_once('=').is_none_or(|(k, _)| k != name))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is not meant for this audience".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted".into(),
        ErrorKind::InvalidSignature => "the token's signature is not valid".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not allowed for its key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token lacks the required claim `{c}`"),
        _ => "the token is malformed".into(),
    }
}

impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
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
        // A client's own copies of the claim headers never pass, whether or
        // not this plugin ends up authenticating the request.
        for (_, name) in &self.claims_to_headers {
            cx.req.headers_mut().remove(name);
        }
        let (token, source) = match self.token(cx) {
            Ok(Some(t)) => t,
            Ok(None) => return Step::Continue,
            Err(e) => return Step::Reject(e),
        };
        if token.len() > self.max_token {
            return Step::Reject(reject(format!(
                "the token is larger than {} bytes",
                self.max_token
            )));
        }
        let header = match jsonwebtoken::decode_header(&token) {
            Ok(h) => h,
            Err(_) => return Step::Reject(reject(
                "the token is malformed or uses an algorithm that is not accepted (such as `none`)",
            )),
        };
        let (alg, kid) = (header.alg, header.kid);
        let digest = sha256(token.as_bytes());
        if let Some(claims) = self.verified.get(&digest, now(), self.generation()) {
            return Step::from(
                self.check_times(&claims)
                    .and_then(|()| self.accept(cx, &claims, source)),
            );
        }
        let configured = self.verify(digest, &token, alg, kid.as_deref(), &self.keys);
        // A configured key's verdict is final unless a JWKS may hold a key that fits.
        let configured = match (configured, &self.jwks) {
            (Some(Ok(claims)), _) => Some(Ok(claims)),
            (Some(Err(e)), None) => Some(Err(e)),
            (Some(Err(e)), Some(_)) => {
                let from_set = self
                    .jwks
                    .as_ref()
                    .and_then(|s| s.keys())
                    .and_then(|keys| self.verify(digest, &token, alg, kid.as_deref(), &keys));
                Some(from_set.unwrap_or(Err(e)))
            }
            (None, _) => None,
        };
        if let Some(r) = configured {
            return Step::from(r.and_then(|claims| self.accept(cx, &claims, source)));
        }
        let Some(set) = &self.jwks else {
            return Step::Reject(reject(
                "no key of this gateway verifies this token (unknown `kid` or algorithm)",
            ));
        };
        if let Some(keys) = set.keys() {
            if let Some(r) = self.verify(digest, &token, alg, kid.as_deref(), &keys) {
                return Step::from(r.and_then(|claims| self.accept(cx, &claims, source)));
            }
        }
        // An unknown key: the set may have rotated. Fetch it (rate-limited) and retry once.
        Step::Wait(Box::pin(async move {
            set.refresh(false).await;
            let Some(keys) = set.keys() else {
                return Err(GatewayError::new(
                    self.unavailable,
                    "auth_unavailable",
                    "the keys to verify tokens cannot be fetched right now; retry shortly",
                )
                .with_header(header::WWW_AUTHENTICATE, CHALLENGE.clone()));
            };
            match self.verify(digest, &token, alg, kid.as_deref(), &keys) {
                Some(r) => r.and_then(|claims| self.accept(cx, &claims, source)),
                None => Err(reject(
                    "no key of this gateway verifies this token (unknown `kid` or algorithm)",
                )),
            }
        }))
    }
}
