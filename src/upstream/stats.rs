//! Per-target load, latency and passive health: requests in flight, a
//! peak-EWMA latency estimate, consecutive failures and ejection. Shared by
//! every worker and kept across reloads (by upstream and target address), so
//! a reload forgets neither which target is slow nor which one is ejected.
//!
//! Time is passed in as nanoseconds, so the arithmetic is tested with a
//! synthetic clock; [`now_ns`] is the real one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Nanoseconds on the monotonic clock (since boot; see [`crate::clock::Tick`]).
pub fn now_ns() -> u64 {
    crate::clock::Tick::now().as_nanos()
}

#[derive(Debug, Default)]
struct Rtt {
    estimate_ns: f64,
    updated_ns: u64,
}

/// Load, latency and health of one target.
#[derive(Debug, Default)]
pub struct TargetStats {
    in_flight: AtomicU32,
    rtt: Mutex<Rtt>,
    consecutive_failures: AtomicU32,
    /// Ejected while `now < ejected_until` (nanoseconds; 0: never ejected).
    ejected_until: AtomicU64,
    /// Ejections in a row, which lengthen the next one.
    ejections: AtomicU32,
    /// Marked down by the active health check.
    down: std::sync::atomic::AtomicBool,
    /// The circuit is not closed: open until `ejected_until`, then half-open.
    tripped: std::sync::atomic::AtomicBool,
    /// Trial requests left in the half-open state.
    trials: AtomicU32,
    /// Ejections since the process started (metrics).
    ejections_total: AtomicU64,
}

/// How long half-open trials may go without a verdict before the target is
/// offered again (10 s).
pub const TRIAL_VERDICT_NS: u64 = 10_000_000_000;

/// When repeated failures eject a target (compiled from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Failures in a row that eject; 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection period, in nanoseconds.
    pub base_ns: u64,
    /// Longest ejection period, in nanoseconds.
    pub max_ns: u64,
    /// Trial requests let through when an ejection ends (half-open).
    pub half_open_requests: u32,
}

/// Counts a request in flight until dropped (when the response body ends,
/// fails or is abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<TargetStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TargetStats {
    /// True while the active health check holds the target down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Sets the active health verdict.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Whether a balancer may pick this target now: its circuit is closed,
    /// or half-open with trials left. Reads the clock only for a target whose
    /// circuit is not closed.
    pub fn is_available(&self) -> bool {
        if !self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        self.is_available_at(now_ns())
    }

    /// [`Self::is_available`] at a given time. Half-open trials whose
    /// outcome never came back (the client left, a deadline passed) must not
    /// keep the target out forever: [`TRIAL_VERDICT_NS`] after the ejection
    /// ended, the target is available again until a result decides.
    pub fn is_available_at(&self, now: u64) -> bool {
        if !self.tripped.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        now >= until && (self.trials.load(Ordering::Relaxed) > 0 || now >= until + TRIAL_VERDICT_NS)
    }

    /// True while the circuit is open (ejected, no trials yet) at `now`.
    pub fn is_open_at(&self, now: u64) -> bool {
        self.tripped.load(Ordering::Relaxed) && now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// A request is about to be sent: in the half-open state it uses up one
    /// of the trials.
    pub fn begin_attempt(&self) {
        if self.tripped.load(Ordering::Relaxed) {
            let _ = self
                .trials
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1));
        }
    }

    /// A request succeeded: the failure streak ends, and a half-open circuit
    /// closes. Returns true when it closed.
    pub fn record_success(&self) -> bool {
        // Skip the writes in the common case so healthy targets' counters are
        // not bounced between cores.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        self.tripped.load(Ordering::Relaxed) && self.tripped.swap(false, Ordering::Relaxed)
    }

    /// A request failed at `now`; returns the new open period when the
    /// target's circuit opens.
    ///
    /// Closed: after `consecutive_failures` in a row, if `may_eject` allows
    /// it (the pool's cap), the circuit opens for n × base (the n-th opening
    /// in a row; back to 1× after a full `max` without one), at most `max`.
    /// Half-open: a failed trial reopens it at once for the next, longer
    /// period (or closes it when the cap forbids, so it is never stuck).
    pub fn record_failure(
        &self,
        now: u64,
        policy: &EjectionPolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<u64> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let tripped = self.tripped.load(Ordering::Relaxed);
        if tripped && self.is_open_at(now) {
            return None;
        }
        let half_open = tripped;
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !half_open && n < policy.consecutive_failures {
            return None;
        }
        if !may_eject() {
            self.tripped.store(false, Ordering::Relaxed);
            return None;
        }
        let last_until = self.ejected_until.load(Ordering::Relaxed);
        let streak = if last_until != 0 && now.saturating_sub(last_until) < policy.max_ns {
            self.ejections.load(Ordering::Relaxed) + 1
        } else {
            1
        };
        let period = policy
            .base_ns
            .saturating_mul(u64::from(streak))
            .min(policy.max_ns);
        self.ejections.store(streak, Ordering::Relaxed);
        self.ejected_until.store(now + period, Ordering::Relaxed);
        self.trials
            .store(policy.half_open_requests.max(1), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.tripped.store(true, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        Some(period)
    }

    /// Ejections since the process started.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more request in flight.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn rtt(&self) -> std::sync::MutexGuard<'_, Rtt> {
        self.rtt.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latency estimate at `now`: it decays toward zero while no samples
    /// arrive, so a target that was slow is tried again after a while.
    pub fn estimate_ns(&self, now: u64, decay_ns: f64) -> f64 {
        let mut r = self.rtt();
        if now > r.updated_ns {
            r.estimate_ns *= (-((now - r.updated_ns) as f64) / decay_ns).exp();
            r.updated_ns = now;
        }
        r.estimate_ns
    }

    /// Records a latency sample. A sample above the estimate replaces it at
    /// once (the "peak" in peak-EWMA: slowness is believed immediately);
    /// lower samples are averaged in with a weight that grows with the time
    /// since the last update.
    pub fn observe(&self, rtt_ns: u64, now: u64, decay_ns: f64) {
        let mut r = self.rtt();
        let rtt = rtt_ns as f64;
        if rtt > r.estimate_ns {
            r.estimate_ns = rtt;
        } else {
            let w = (-(now.saturating_sub(r.updated_ns) as f64) / decay_ns).exp();
            r.estimate_ns = r.estimate_ns * w + rtt * (1.0 - w);
        }
        r.updated_ns = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const DECAY: f64 = 10.0 * SEC as f64;

    #[test]
    fn peaks_are_believed_at_once_and_fade_with_time() {
        let s = TargetStats::default();
        s.observe(100_000_000, SEC, DECAY); // 100 ms
        assert_eq!(s.estimate_ns(SEC, DECAY), 100_000_000.0);
        // One decay constant later, about 37% remains.
        let later = s.estimate_ns(11 * SEC, DECAY);
        assert!((later - 36_787_944.0).abs() < 10_000.0, "{later}");
        // A fast sample right after a slow one moves the estimate only a little.
        let s = TargetStats::default();
        s.observe(100_000_000, SEC, DECAY);
        s.observe(1_000_000, SEC + 1_000_000, DECAY);
        assert!(s.estimate_ns(SEC + 1_000_000, DECAY) > 99_000_000.0);
    }

    #[test]
    fn the_target_circuit_opens_half_opens_and_closes() {
        let p = EjectionPolicy {
            consecutive_failures: 3,
            base_ns: 10 * SEC,
            max_ns: 25 * SEC,
            half_open_requests: 2,
        };
        let s = TargetStats::default();
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        assert!(!s.record_success(), "closed stays closed");
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        assert_eq!(
            s.record_failure(SEC, &p, || true),
            Some(10 * SEC),
            "third in a row opens"
        );
        assert!(!s.is_available_at(5 * SEC), "open");
        // Half-open after the period: two trials, then nothing until one reports.
        assert!(s.is_available_at(11 * SEC));
        s.begin_attempt();
        s.begin_attempt();
        assert!(!s.is_available_at(11 * SEC), "the trial quota is used up");
        // A failed trial reopens at once, for longer.
        assert_eq!(s.record_failure(11 * SEC, &p, || true), Some(20 * SEC));
        assert!(!s.is_available_at(12 * SEC));
        // The next period is capped at max; a successful trial closes.
        assert!(s.is_available_at(31 * SEC));
        s.begin_attempt();
        assert_eq!(s.record_failure(31 * SEC, &p, || true), Some(25 * SEC));
        s.begin_attempt();
        assert!(s.record_success(), "a passing trial closes the circuit");
        assert!(s.is_available_at(57 * SEC));
        // A long healthy spell resets the growth.
        for _ in 0..2 {
            s.record_failure(200 * SEC, &p, || true);
        }
        assert_eq!(s.record_failure(200 * SEC, &p, || true), Some(10 * SEC));
        // The pool's cap can refuse an opening; a refused half-open trial closes.
        let t = TargetStats::default();
        for _ in 0..5 {
            assert_eq!(t.record_failure(SEC, &p, || false), None);
        }
        assert!(t.is_available_at(SEC));
        assert!(s.is_available_at(211 * SEC));
        s.begin_attempt();
        assert_eq!(s.record_failure(211 * SEC, &p, || false), None);
        assert!(
            s.is_available_at(211 * SEC),
            "never stuck half-open without trials"
        );
        // Trials that never report: after the verdict window the target is offered again.
        let u = TargetStats::default();
        for _ in 0..3 {
            u.record_failure(SEC, &p, || true);
        }
        u.begin_attempt();
        u.begin_attempt();
        assert!(!u.is_available_at(12 * SEC));
        assert!(u.is_available_at(11 * SEC + TRIAL_VERDICT_NS));
        let off = EjectionPolicy {
            consecutive_failures: 0,
            ..p
        };
        assert_eq!(t.record_failure(SEC, &off, || true), None);
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let s = Arc::new(TargetStats::default());
        let a = s.start();
        let b = s.start();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(s.in_flight(), 0);
    }
}
