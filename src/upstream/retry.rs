//! Retry policy and budget of an upstream.
//!
//! The budget is a token bucket filled by traffic: every first attempt
//! deposits `budget_percent` hundredths of a retry and every retry withdraws
//! one whole retry. Retries therefore add at most that share of load, and
//! during an outage, when everything fails, they stop instead of multiplying
//! the load (as in Finagle's and linkerd's retry budgets). The bucket starts
//! with a reserve of 10 retries, so a quiet upstream can still retry a few
//! requests, and banks at most 100, which bounds the burst after a long
//! healthy spell.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::config::{RetriesDoc, RetryCondition, RetryOn};

/// One retry, in budget tokens.
const RETRY: i64 = 100;
/// The bucket starts with this many retries, so a quiet upstream can retry.
const RESERVE: i64 = 10 * RETRY;
/// The most retries traffic can bank for a later burst.
const CAP: i64 = 100 * RETRY;

/// When and how often to retry (compiled from the config).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Retry when the connection could not be made (safe for every method).
    pub on_connect_failure: bool,
    /// Retry replayable requests whose exchange failed after sending.
    pub on_error: bool,
    /// Retry replayable requests that got no response headers in time.
    pub on_timeout: bool,
    /// Retry replayable requests answered with these statuses.
    pub on_statuses: Vec<StatusCode>,
    backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    /// Compiles the `retries` section.
    pub fn new(doc: &RetriesDoc) -> RetryPolicy {
        let has = |c: RetryCondition| doc.on.contains(&RetryOn::Condition(c));
        RetryPolicy {
            attempts: doc.attempts,
            on_connect_failure: has(RetryCondition::ConnectFailure),
            on_error: has(RetryCondition::Error),
            on_timeout: has(RetryCondition::Timeout),
            on_statuses: doc
                .on
                .iter()
                .filter_map(|o| match o {
                    RetryOn::Status(s) => StatusCode::from_u16(*s).ok(),
                    RetryOn::Condition(_) => None,
                })
                .collect(),
            backoff: doc.backoff.0,
            max_backoff: doc.max_backoff.0,
        }
    }

    /// Whether any condition needs the request again after it was sent
    /// (so a copy of a replayable request must be kept).
    pub fn may_replay(&self) -> bool {
        self.attempts > 0 && (self.on_error || self.on_timeout || !self.on_statuses.is_empty())
    }

    /// The wait before retry number `n` (1-based): a random time up to
    /// `backoff × 2^(n-1)`, capped at `max_backoff` ("full jitter"), so
    /// clients retrying together do not arrive together.
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(1 << n.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = ceiling.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(super::balancer::random_u64() % nanos)
    }
}

/// The retry budget of one upstream.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicI64,
    deposit: i64,
}

impl RetryBudget {
    /// A budget letting retries add `percent` % of the traffic.
    pub fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            tokens: AtomicI64::new(RESERVE),
            deposit: i64::from(percent.min(100)),
        }
    }

    /// A first attempt was made: earn a share of a retry.
    pub fn deposit(&self) {
        // Read first: at the cap (the steady state) nothing is written, so
        // the counter is not bounced between cores on every request.
        if self.tokens.load(Ordering::Relaxed) < CAP {
            let _ = self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some((t + self.deposit).min(CAP))
                });
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= RETRY).then_some(t - RETRY)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_retries_at_a_share_of_traffic() {
        let b = RetryBudget::new(20);
        // The reserve allows ten retries even without traffic.
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // Then 100 requests earn 20 retries.
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!((0..50).filter(|_| b.withdraw()).count(), 20);
        // An outage where every request fails and retries: retries stay near 20%.
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                retries += 1;
            }
        }
        assert!((195..=205).contains(&retries), "{retries}");
        let none = RetryBudget::new(0);
        for _ in 0..100 {
            none.deposit();
        }
        assert_eq!(
            (0..20).filter(|_| none.withdraw()).count(),
            10,
            "only the reserve"
        );
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = RetryPolicy::new(&RetriesDoc::default());
        for n in 1..10 {
            let d = p.backoff(n);
            assert!(d < Duration::from_millis(250), "{n}: {d:?}");
        }
        assert!(p.backoff(1) < Duration::from_millis(25));
        assert!(
            !p.may_replay(),
            "connect failures need no copy of the request"
        );
    }
}
