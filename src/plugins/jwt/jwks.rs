//! A JWKS key set fetched from a URL and kept fresh: refreshed in the
//! background on a fixed interval, and on demand when a token names an
//! unknown `kid` (at most once per `min_refresh_interval`, so forged `kid`s
//! cannot turn the gateway into a flood against the key server). Shared by
//! every route using the same URL and kept across reloads.

use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Method;
use jsonwebtoken::Algorithm;

use super::keys::{self, Key};
use crate::plugins::http_client::Endpoint;
use crate::plugins::Background;

/// The fetched keys of one JWKS URL.
#[derive(Debug)]
pub struct Jwks {
    endpoint: Endpoint,
    allowed: Vec<Algorithm>,
    refresh: Duration,
    min_interval: Duration,
    keys: RwLock<Option<Arc<Vec<Key>>>>,
    generation: std::sync::atomic::AtomicU64,
    last_attempt: Mutex<Option<Instant>>,
    single_flight: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// A key set not fetched yet.
    pub fn new(
        endpoint: Endpoint,
        allowed: Vec<Algorithm>,
        refresh: Duration,
        min_interval: Duration,
    ) -> Jwks {
        Jwks {
            endpoint,
            allowed,
            refresh,
            min_interval,
            keys: RwLock::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            last_attempt: Mutex::new(None),
            single_flight: tokio::sync::Mutex::new(()),
        }
    }

    /// Increases with every successfully fetched key set.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current keys; `None` until a fetch has succeeded.
    pub fn keys(&self) -> Option<Arc<Vec<Key>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches the key set now, unless another fetch is running (then waits
    /// for it) or one was attempted within `min_refresh_interval` and
    /// `force` is false. Returns whether fresh keys may be available now.
    pub async fn refresh(&self, force: bool) -> bool {
        let recent = |me: &Jwks| {
            me.last_attempt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < me.min_interval)
        };
        if !force && recent(self) {
            // A fetch may be running right now (the first one, at start):
            // wait for it rather than answer without keys.
            drop(self.single_flight.lock().await);
            return self.keys().is_some();
        }
        let _flight = self.single_flight.lock().await;
        // Another request fetched while this one waited.
        if !force && recent(self) {
            return true;
        }
        *self.last_attempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        static ACCEPT: HeaderValue = HeaderValue::from_static("application/json");
        let fetched = self
            .endpoint
            .call(
                Method::GET,
                &[(header::ACCEPT, ACCEPT.clone())],
                Bytes::new(),
            )
            .await;
        let parsed = fetched
            .map_err(|e| e.to_string())
            .and_then(|body| keys::from_jwks(&body, &self.allowed));
        match parsed {
            Ok(keys) => {
                tracing::debug!(target: "portcullis::jwt", url = %self.endpoint.url(), keys = keys.len(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keys));
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                true
            }
            Err(error) => {
                // The previous keys stay in use until a fetch succeeds.
                tracing::warn!(target: "portcullis::jwt", url = %self.endpoint.url(), %error, "cannot fetch the JWKS key set; keeping the previous keys");
                false
            }
        }
    }
}

impl Background for Jwks {
    fn run(self: Arc<Self>) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            loop {
                let ok = self.refresh(true).await;
                // Until the first success, retry at the on-demand pace.
                let wait = if ok || self.keys().is_some() {
                    self.refresh
                } else {
                    self.min_interval
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}
