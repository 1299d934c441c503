//! `concurrency_limit`: at most `max` requests in flight per key (route,
//! consumer, client IP, …). A request holds its slot until its response is
//! done: the body fully sent, failed, or dropped because the client went
//! away. Beyond `max`, requests get 429 (or 503) at once; they never queue.
//!
//! Counts are per gateway process and survive reloads (requests still
//! running on the old snapshot keep their slots).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::context::Access;
use super::limits::key::{KeySpec, OnMissing};
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::proxy::errors::GatewayError;

const SHARDS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Most requests in flight per key.
    max: i64,
    /// What requests are grouped by (default `route`).
    #[serde(default)]
    key: Option<serde_json::Value>,
    /// When a key source is absent: `ip` (default), `allow` or `deny`.
    #[serde(default)]
    on_missing_key: OnMissing,
    /// The status beyond `max`: 429 (default) or 503.
    #[serde(default = "default_status")]
    status: u16,
}

fn default_status() -> u16 {
    429
}

/// The compiled plugin.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: u32,
    key: KeySpec,
    on_missing: OnMissing,
    status: StatusCode,
    slots: Arc<Slots>,
    /// Decision counters, when metrics are recorded.
    counters: Option<crate::observability::metrics::DecisionCounters>,
}

/// Builds `concurrency_limit` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    if c.max < 1 || c.max > i64::from(u32::MAX) {
        return Err((
            "max".into(),
            format!("`max` is at least 1 request in flight, not {}", c.max),
        ));
    }
    let status = match c.status {
        429 => StatusCode::TOO_MANY_REQUESTS,
        503 => StatusCode::SERVICE_UNAVAILABLE,
        s => {
            return Err((
                "status".into(),
                format!("the status is 429 or 503, not {s}"),
            ))
        }
    };
    let key = KeySpec::parse(c.key.as_ref(), "route")?;
    // Kept by owner and key, not `max`: a reload that changes `max` still
    // sees the requests already in flight.
    let identity = format!("{}|{key:?}", cx.owner);
    let slots = cx.state.get(&identity, Slots::default);
    Ok(Arc::new(ConcurrencyLimit {
        max: c.max as u32,
        key,
        on_missing: c.on_missing_key,
        status,
        slots,
        counters: cx.state.recording_metrics().map(|m| {
            crate::observability::metrics::DecisionCounters::new(&m, cx.owner, "concurrency_limit")
        }),
    }))
}

impl Plugin for ConcurrencyLimit {
    fn name(&self) -> &'static str {
        "concurrency_limit"
    }

    fn phase(&self) -> Phase {
        Phase::Limits
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let key = match self.key.resolve(cx, self.on_missing, "concurrency_limit") {
            Ok(Some(k)) => k,
            Ok(None) => return Step::Continue,
            Err(e) => return Step::Reject(e),
        };
        let slot = Slots::acquire(&self.slots, key, self.max);
        if let Some(c) = &self.counters {
            if slot.is_some() {
                &c.allowed
            } else {
                &c.rejected
            }
            .inc();
        }
        match slot {
            Some(slot) => {
                cx.holds.push(Box::new(slot));
                Step::Continue
            }
            None => Step::Reject(
                GatewayError::new(
                    self.status,
                    "too_many_concurrent_requests",
                    format!(
                        "{} requests are already in flight here; retry shortly",
                        self.max
                    ),
                )
                .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1")),
            ),
        }
    }
}

/// In-flight counts by key; a key with nothing in flight takes no memory.
#[derive(Debug)]
pub struct Slots {
    shards: Box<[Mutex<Counts>]>,
    hasher: RandomState,
}

/// Requests in flight by key, within one shard.
type Counts = HashMap<Box<str>, u32>;

impl Default for Slots {
    fn default() -> Self {
        Slots {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Slots {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Counts> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        // Plain counts; a panic mid-update cannot leave them inconsistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `key` unless `max` are taken.
    pub fn acquire(this: &Arc<Slots>, key: String, max: u32) -> Option<Slot> {
        let key: Box<str> = key.into();
        {
            let mut shard = this.shard(&key);
            let n = shard.entry(key.clone()).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    shard.remove(&key);
                }
                return None;
            }
            *n += 1;
        }
        Some(Slot {
            slots: this.clone(),
            key,
        })
    }

    /// Requests in flight for `key` now.
    pub fn in_flight(&self, key: &str) -> u32 {
        self.shard(key).get(key).copied().unwrap_or(0)
    }
}

/// One request's place; released on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: Box<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut shard = self.slots.shard(&self.key);
        if let Some(n) = shard.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_released_on_drop_and_keys_forgotten() {
        let s = Arc::new(Slots::default());
        let a = Slots::acquire(&s, "k".into(), 2).expect("first");
        let b = Slots::acquire(&s, "k".into(), 2).expect("second");
        assert!(Slots::acquire(&s, "k".into(), 2).is_none());
        assert_eq!(s.in_flight("k"), 2);
        drop(a);
        let c = Slots::acquire(&s, "k".into(), 2).expect("a slot came back");
        drop((b, c));
        assert_eq!(s.in_flight("k"), 0);
        assert!(s.shards.iter().all(|m| m.lock().unwrap().is_empty()));
    }
}
