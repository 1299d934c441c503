//! Concurrency limits: at most N requests in flight per upstream or per
//! route. A permit is taken before the upstream is called and released when
//! the response body ends, fails or is abandoned. Counters are kept across
//! reloads (by name), so a reload does not let a burst past the limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A compiled limit: a shared counter and its maximum.
#[derive(Debug, Clone)]
pub struct Limiter {
    max: u32,
    current: Arc<AtomicU32>,
}

/// Holds one unit of a limit until dropped.
#[derive(Debug)]
pub struct Permit(Arc<AtomicU32>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// A limit of `max` over the shared `current` counter.
    pub fn new(max: u32, current: Arc<AtomicU32>) -> Limiter {
        Limiter { max, current }
    }

    /// A permit, or `None` when `max` requests are already in flight.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.current.clone()))
    }
}

/// Everything an upstream response holds until its body ends: the target's
/// in-flight count and the upstream's and route's permits.
#[derive(Debug)]
pub struct Held {
    /// The chosen target's in-flight count.
    pub target: super::stats::InFlight,
    /// The upstream's permit, when it has a limit.
    pub upstream: Option<Permit>,
    /// The route's permit, when it has a limit.
    pub route: Option<Permit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_and_released() {
        let l = Limiter::new(2, Arc::default());
        let a = l.try_acquire().expect("first");
        let _b = l.try_acquire().expect("second");
        assert!(l.try_acquire().is_none());
        drop(a);
        assert!(l.try_acquire().is_some());
    }
}
