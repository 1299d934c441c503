//! `basic_auth`: HTTP Basic credentials checked against the bcrypt or
//! argon2 hashes of `consumers[].credentials.basic`. Hash checks are slow by
//! design, so they run on the blocking pool, at most one per core at a time,
//! and a successful check is remembered for a while (keyed by a SHA-256 of
//! the credentials and the stored hash) so a busy client costs one hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::context::{Access, Identity};
use super::credentials::{sha256, single_header, with_scheme, PasswordHash};
use super::{invalid_credentials, BuildContext, BuildError, Phase, Plugin, Step};
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The realm named in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    realm: String,
    /// Pass the `Authorization` header on to the upstream.
    #[serde(default)]
    keep_credentials: bool,
    /// Consumer used when no credentials are presented.
    #[serde(default)]
    anonymous: Option<String>,
}

fn default_realm() -> String {
    "portcullis".into()
}

/// How long a successful check is remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// Most remembered checks (older ones are dropped first when full).
const REMEMBER_MAX: usize = 10_000;

/// Verified credentials, shared by every `basic_auth` instance and kept across reloads.
#[derive(Debug)]
pub struct VerifyCache {
    ok: Mutex<HashMap<[u8; 32], Instant>>,
    slots: Semaphore,
}

impl Default for VerifyCache {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        VerifyCache {
            ok: Mutex::new(HashMap::new()),
            slots: Semaphore::new(cores),
        }
    }
}

impl VerifyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.ok.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        self.lock().get(key).is_some_and(|t| t.elapsed() < REMEMBER)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut m = self.lock();
        if m.len() >= REMEMBER_MAX {
            m.retain(|_, t| t.elapsed() < REMEMBER);
            if m.len() >= REMEMBER_MAX {
                m.clear();
            }
        }
        m.insert(key, Instant::now());
    }
}

/// The compiled plugin.
#[derive(Debug)]
pub struct BasicAuth {
    challenge: HeaderValue,
    keep: bool,
    anonymous: Option<String>,
    cache: Arc<VerifyCache>,
}

/// Builds `basic_auth` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    super::check_anonymous(&c.anonymous, cx)?;
    let challenge = HeaderValue::from_str(&format!(
        "Basic realm=\"{}\", charset=\"UTF-8\"",
        c.realm.replace(['"', '\\'], "")
    ))
    .map_err(|_| {
        (
            "realm".to_string(),
            "must be visible ASCII text".to_string(),
        )
    })?;
    Ok(Arc::new(BasicAuth {
        challenge,
        keep: c.keep_credentials,
        anonymous: c.anonymous,
        cache: cx.state.get("basic_auth", VerifyCache::default),
    }))
}

impl BasicAuth {
    fn reject(&self, m: impl Into<String>) -> GatewayError {
        invalid_credentials(m, Some(self.challenge.clone()))
    }

    /// Checks a password on the blocking pool, at most one per core at a
    /// time; waiting longer than [`SLOT_WAIT`] for a turn answers 503.
    /// `None` checks against a dummy hash (for unknown usernames).
    async fn check(
        &self,
        hash: Option<Arc<PasswordHash>>,
        password: String,
    ) -> Result<bool, GatewayError> {
        let busy = || {
            GatewayError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "credentials cannot be checked right now; retry shortly",
            )
        };
        let _slot = tokio::time::timeout(SLOT_WAIT, self.cache.slots.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => h.verify(&password),
            None => bcrypt::verify(&password, dummy_hash()).unwrap_or(false),
        })
        .await
        .map_err(|_| busy())
    }
}

/// The longest a request waits for a turn to check a password.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// A hash checked for unknown usernames (made once, on the blocking pool,
/// at bcrypt's common cost of 10).
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("portcullis-dummy-password", 10).unwrap_or_default())
}

impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic_auth"
    }

    fn phase(&self) -> Phase {
        Phase::Authentication
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn anonymous(&self) -> Option<&str> {
        self.anonymous.as_deref()
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let value = match single_header(cx.headers(), &header::AUTHORIZATION) {
            Ok(Some(v)) => v,
            Ok(None) => return Step::Continue,
            Err(m) => return Step::Reject(self.reject(m.message("the Authorization header"))),
        };
        // Another scheme (a bearer token) is another plugin's credential.
        let Some(encoded) = with_scheme(value, "Basic") else {
            return Step::Continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Step::Reject(self.reject("the Basic credentials are malformed"));
        };
        let Some((hash, consumer)) = cx.consumers.by_username(user).cloned() else {
            // An unknown user costs a hash check too, so the response time
            // does not tell which usernames exist.
            let password = password.to_string();
            return Step::Wait(Box::pin(async move {
                let _ = self.check(None, password).await?;
                Err(self.reject("the username or password is wrong"))
            }));
        };
        let key = {
            let stored: &str = match &*hash {
                PasswordHash::Bcrypt(h) | PasswordHash::Argon2(h) => h,
            };
            sha256(format!("{user}\0{password}\0{stored}").as_bytes())
        };
        let accept = move |cx: &mut Access<'_>| {
            if !self.keep {
                cx.req.headers_mut().remove(header::AUTHORIZATION);
            }
            cx.identity = Some(Identity::of(consumer, "basic_auth"));
        };
        if self.cache.remembered(&key) {
            accept(cx);
            return Step::Continue;
        }
        let password = password.to_string();
        Step::Wait(Box::pin(async move {
            if !self.check(Some(hash), password).await? {
                return Err(self.reject("the username or password is wrong"));
            }
            self.cache.remember(key);
            accept(cx);
            Ok(())
        }))
    }
}
