//! The upstream circuit breaker: when too large a share of an upstream's
//! recent requests fail, stop sending it traffic for a while (open), then
//! let a few trial requests through (half-open): one success closes the
//! circuit, one failure opens it again. While open, requests get an
//! immediate 503 instead of piling onto a failing service.
//!
//! Lock-free: a closed breaker costs one load to admit and two atomic adds
//! to record. Time is passed in, so the state machine is tested with a
//! synthetic clock. Off unless `circuit_breaker` is configured.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::config::CircuitBreakerDoc;

/// Compiled breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    failure_percent: u64,
    min_requests: u32,
    window_ns: u64,
    open_ns: u64,
    half_open_requests: u32,
}

impl BreakerPolicy {
    /// Compiles the `circuit_breaker` section.
    pub fn new(doc: &CircuitBreakerDoc) -> BreakerPolicy {
        BreakerPolicy {
            failure_percent: u64::from(doc.failure_percent),
            min_requests: doc.min_requests.max(1),
            window_ns: doc.window.0.as_nanos() as u64,
            open_ns: doc.open_for.0.as_nanos() as u64,
            half_open_requests: doc.half_open_requests.max(1),
        }
    }
}

/// A state change, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened (or reopened after a failed trial).
    Opened,
    /// A trial passed and the circuit closed.
    Closed,
}

/// The breaker of one upstream.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    tripped: AtomicBool,
    open_until: AtomicU64,
    trials: AtomicU32,
    window_start: AtomicU64,
    total: AtomicU32,
    failed: AtomicU32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Breaker {
        Breaker {
            policy,
            tripped: AtomicBool::new(false),
            open_until: AtomicU64::new(0),
            trials: AtomicU32::new(0),
            window_start: AtomicU64::new(0),
            total: AtomicU32::new(0),
            failed: AtomicU32::new(0),
        }
    }

    /// Whether a request may go to the upstream at `now`: always when
    /// closed; never while open; within the trial quota when half-open.
    pub fn admit(&self, now: u64) -> bool {
        if !self.tripped.load(Ordering::Acquire) {
            return true;
        }
        let until = self.open_until.load(Ordering::Acquire);
        if now < until {
            return false;
        }
        let take = || {
            self.trials
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(1))
                .is_ok()
        };
        if take() {
            return true;
        }
        // Trials whose outcome never came back (the client left, the deadline
        // passed) must not leave the circuit half-open forever: after another
        // open period without a verdict, a new round of trials starts.
        if now >= until + self.policy.open_ns {
            self.open(now - self.policy.open_ns);
            return take();
        }
        false
    }

    /// The state at `now`, for metrics: 0 closed, 1 half-open, 2 open.
    pub fn state(&self, now: u64) -> u8 {
        if !self.tripped.load(Ordering::Acquire) {
            0
        } else if now < self.open_until.load(Ordering::Acquire) {
            2
        } else {
            1
        }
    }

    fn open(&self, now: u64) {
        self.open_until
            .store(now + self.policy.open_ns, Ordering::Release);
        self.trials
            .store(self.policy.half_open_requests, Ordering::Release);
        self.tripped.store(true, Ordering::Release);
    }

    /// Records an exchange's outcome at `now`; returns a state change.
    pub fn record(&self, failed: bool, now: u64) -> Option<Transition> {
        if self.tripped.load(Ordering::Acquire) {
            if now < self.open_until.load(Ordering::Acquire) {
                return None; // a late result from before the circuit opened
            }
            // Half-open: this was a trial.
            if failed {
                self.open(now);
                return Some(Transition::Opened);
            }
            self.total.store(0, Ordering::Release);
            self.failed.store(0, Ordering::Release);
            self.window_start.store(now, Ordering::Release);
            return self
                .tripped
                .swap(false, Ordering::AcqRel)
                .then_some(Transition::Closed);
        }
        let start = self.window_start.load(Ordering::Acquire);
        if now.saturating_sub(start) >= self.policy.window_ns
            && self
                .window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.total.store(0, Ordering::Release);
            self.failed.store(0, Ordering::Release);
        }
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if !failed {
            return None;
        }
        let failures = self.failed.fetch_add(1, Ordering::AcqRel) + 1;
        let tripping = total >= self.policy.min_requests
            && u64::from(failures) * 100 >= self.policy.failure_percent * u64::from(total);
        if tripping && !self.tripped.swap(true, Ordering::AcqRel) {
            self.open(now);
            return Some(Transition::Opened);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::HumanDuration;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy::new(&CircuitBreakerDoc {
            failure_percent: 50,
            min_requests: 10,
            window: HumanDuration(Duration::from_secs(1)),
            open_for: HumanDuration(Duration::from_millis(100)),
            half_open_requests: 2,
        }))
    }

    #[test]
    fn opens_on_failure_rate_then_half_opens_and_closes() {
        let b = breaker();
        // Below min_requests nothing trips, whatever the rate.
        for _ in 0..9 {
            assert_eq!(b.record(true, MS), None);
        }
        assert!(b.admit(MS));
        assert_eq!(
            b.record(true, MS),
            Some(Transition::Opened),
            "10 of 10 failed"
        );
        assert!(!b.admit(50 * MS), "open");
        // Half-open: two trials, then no more until one reports.
        assert!(b.admit(101 * MS) && b.admit(101 * MS));
        assert!(!b.admit(101 * MS));
        assert_eq!(
            b.record(true, 102 * MS),
            Some(Transition::Opened),
            "a failed trial reopens"
        );
        assert!(!b.admit(150 * MS));
        assert!(b.admit(203 * MS));
        assert_eq!(b.record(false, 203 * MS), Some(Transition::Closed));
        assert!(b.admit(203 * MS));
    }

    #[test]
    fn trials_that_never_report_do_not_wedge_the_circuit() {
        let b = breaker();
        for _ in 0..10 {
            b.record(true, MS);
        }
        assert!(
            b.admit(101 * MS) && b.admit(101 * MS),
            "both trials taken, never reported"
        );
        assert!(
            !b.admit(150 * MS),
            "within the next open period: still waiting"
        );
        assert!(b.admit(202 * MS), "a new round of trials");
        assert_eq!(b.record(false, 203 * MS), Some(Transition::Closed));
    }

    #[test]
    fn a_healthy_share_or_an_old_window_does_not_trip() {
        let b = breaker();
        for i in 0..100 {
            assert_eq!(
                b.record(i % 3 == 0, MS),
                None,
                "a third failing stays under 50%"
            );
        }
        // Failures spread over windows never reach min_requests in one window.
        let c = breaker();
        for w in 0..10u64 {
            for _ in 0..5 {
                assert_eq!(c.record(true, w * 1000 * MS + 1), None);
            }
        }
    }
}
