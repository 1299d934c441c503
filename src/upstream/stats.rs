//! Per-target load, latency and passive health: requests in flight, a
//! peak-EWMA latency estimate, consecutive failures and ejection. Shared by
//! every worker and kept across reloads (by upstream and target address), so
//! a reload forgets neither which target is slow nor which one is ejected.
//!
//! Time is passed in as nanoseconds, so the arithmetic is tested with a
//! synthetic clock; [`now_ns`] is the real one.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Nanoseconds since the first call in this process (a monotonic clock).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
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
}

/// When repeated failures eject a target (compiled from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Failures in a row that eject; 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection period, in nanoseconds.
    pub base_ns: u64,
    /// Longest ejection period, in nanoseconds.
    pub max_ns: u64,
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

    /// True while the target is ejected. Reads the clock only for a target
    /// that has been ejected at some point.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ns() < until
    }

    /// A request succeeded: the failure streak ends.
    pub fn record_success(&self) {
        // Skip the write in the common case so healthy targets' counters are
        // not bounced between cores.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed at `now`. When this completes a streak and
    /// `may_eject` allows it (the pool's ejection cap), the target is ejected;
    /// returns for how long. The n-th ejection in a row lasts n × base; a
    /// target that stayed in for a full `max` since its last ejection starts
    /// again at base.
    pub fn record_failure(
        &self,
        now: u64,
        policy: &EjectionPolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<u64> {
        if policy.consecutive_failures == 0 {
            return None;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < policy.consecutive_failures || self.is_ejected_at(now) || !may_eject() {
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
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Some(period)
    }

    /// Like [`Self::is_ejected`], at a given time (for tests and decisions already holding `now`).
    pub fn is_ejected_at(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
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
    fn failure_streaks_eject_for_growing_periods() {
        let p = EjectionPolicy {
            consecutive_failures: 3,
            base_ns: 10 * SEC,
            max_ns: 25 * SEC,
        };
        let s = TargetStats::default();
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        s.record_success();
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        assert_eq!(s.record_failure(SEC, &p, || true), None);
        assert_eq!(
            s.record_failure(SEC, &p, || true),
            Some(10 * SEC),
            "third in a row ejects"
        );
        assert!(s.is_ejected_at(5 * SEC) && !s.is_ejected_at(11 * SEC));
        // Failing again soon after returning: a longer ejection, then capped.
        for _ in 0..2 {
            s.record_failure(12 * SEC, &p, || true);
        }
        assert_eq!(s.record_failure(12 * SEC, &p, || true), Some(20 * SEC));
        for _ in 0..2 {
            s.record_failure(33 * SEC, &p, || true);
        }
        assert_eq!(
            s.record_failure(33 * SEC, &p, || true),
            Some(25 * SEC),
            "capped at max"
        );
        // A long healthy spell resets the growth.
        for _ in 0..2 {
            s.record_failure(200 * SEC, &p, || true);
        }
        assert_eq!(s.record_failure(200 * SEC, &p, || true), Some(10 * SEC));
        // The pool's cap can refuse an ejection; disabled policies never eject.
        let t = TargetStats::default();
        for _ in 0..5 {
            assert_eq!(t.record_failure(SEC, &p, || false), None);
        }
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
