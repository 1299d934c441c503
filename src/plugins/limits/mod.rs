//! What the limit plugins (`rate_limit`, `quota`, `concurrency_limit`)
//! share: the counting rules, the key a request is counted by, in-process
//! counters, the Redis connection and its scripts, and the policy when
//! Redis fails. See `docs/rate-limiting.md`.

pub mod algorithm;
pub mod hybrid;
pub mod key;
pub mod local;
pub mod redis;
pub mod scripts;

use http::{HeaderValue, StatusCode};

use crate::proxy::errors::GatewayError;

/// Where a limit's counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// In this gateway process: fastest, but each node counts alone.
    #[default]
    Local,
    /// In Redis, shared by every node.
    Redis,
    /// Decided in this process, synced with Redis in batches (fixed
    /// windows only; may overshoot, see [`hybrid`]).
    Hybrid,
}

/// What a request gets when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Let it through (fail open), with a warning in the log.
    #[default]
    Allow,
    /// Refuse it with 503 (fail closed).
    Deny,
}

impl OnRedisError {
    /// How the log describes requests under this policy.
    pub fn describe(self) -> &'static str {
        match self {
            OnRedisError::Allow => "let through uncounted",
            OnRedisError::Deny => "refused with 503",
        }
    }
}

/// The 503 of a limit that fails closed.
pub fn unavailable(plugin: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "limit_store_unavailable",
        format!("the {plugin} counters cannot be reached; try again shortly"),
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// The 400 when a key source is absent and the policy is `deny`.
pub fn key_missing(plugin: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::BAD_REQUEST,
        "limit_key_missing",
        format!("the request lacks what {plugin} counts by (a header, capture or consumer)"),
    )
}

/// Whole seconds, rounded up, from nanoseconds (for `Retry-After` and
/// `RateLimit-Reset`).
pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// A stable 64-bit FNV-1a hash, the same on every node (Redis hash tags).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_separate_parts() {
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(2_000_000_000), 2);
    }
}
