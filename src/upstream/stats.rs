//! Per-target load and latency: requests in flight and a peak-EWMA latency
//! estimate. Shared by every worker and kept across reloads (by upstream and
//! target address), so a reload does not forget which target is slow.
//!
//! Time is passed in as nanoseconds, so the arithmetic is tested with a
//! synthetic clock; [`now_ns`] is the real one.

use std::sync::atomic::{AtomicU32, Ordering};
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

/// Load and latency of one target.
#[derive(Debug, Default)]
pub struct TargetStats {
    in_flight: AtomicU32,
    rtt: Mutex<Rtt>,
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
