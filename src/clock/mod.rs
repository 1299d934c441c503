//! The gateway's wall clock, for logic that counts time in windows (rate
//! limits, quotas). Production reads the system clock; tests use a manual
//! clock they advance explicitly, so window arithmetic is tested exactly
//! instead of with sleeps.
//!
//! Time is wall-clock time since the UNIX epoch, not a monotonic instant:
//! gateway nodes that share counters in Redis must agree on window
//! boundaries, which only a synchronised wall clock gives them.
//!
//! [`Tick`] is the other clock here: monotonic, for timing requests; and
//! [`deadline`] times out waits on it without a tokio timer per wait.

pub mod deadline;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at `start_unix_nanos` until advanced.
    pub fn manual(start_unix_nanos: u64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start_unix_nanos))),
        }
    }

    /// Nanoseconds since the UNIX epoch.
    pub fn now_nanos(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            // A clock before 1970 is a broken host; count it as the epoch.
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Sets a manual clock; does nothing to the system clock.
    pub fn set(&self, unix_nanos: u64) {
        if let Some(t) = &self.manual {
            t.store(unix_nanos, Ordering::Relaxed);
        }
    }
}

/// A reading of the monotonic clock (the one `std::time::Instant` reads),
/// as nanoseconds: for timing every request (arrival, the upstream's part,
/// the end), where `Instant` costs more. Its subtraction normalises two
/// `timespec`s and checks the order (about 40 instructions, against one
/// here), and a request takes four to eight of them; a reading is a vDSO
/// call either way. [`deadline`] keeps its deadlines as ticks; timers that
/// tokio runs take `Instant`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// Now.
    pub fn now() -> Tick {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        // Monotonic time counts from boot: never negative, and u64
        // nanoseconds last 584 years of uptime.
        Tick((t.tv_sec as u64).wrapping_mul(1_000_000_000) + t.tv_nsec as u64)
    }

    /// The time from `earlier` to this reading; zero if `earlier` is later.
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Nanoseconds since an arbitrary start (the host's boot).
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from this reading to now.
    pub fn elapsed(self) -> Duration {
        Tick::now().since(self)
    }
}

/// A reading moved later by a duration (deadlines, and tests).
impl std::ops::Add<Duration> for Tick {
    type Output = Tick;

    fn add(self, d: Duration) -> Tick {
        Tick(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        assert_eq!(c.now_nanos(), 1_000);
        c.advance(Duration::from_nanos(500));
        assert_eq!(c.clone().now_nanos(), 1_500, "clones share the time");
        c.set(7);
        assert_eq!(c.now_nanos(), 7);
        assert!(Clock::system().now_nanos() > 1_600_000_000_000_000_000);
    }

    #[test]
    fn ticks_read_the_clock_instant_reads() {
        let (i0, t0) = (std::time::Instant::now(), Tick::now());
        std::thread::sleep(Duration::from_millis(20));
        let (t1, i1) = (Tick::now(), std::time::Instant::now());
        let (ticked, instant) = (t1.since(t0), i1.duration_since(i0));
        assert!(ticked >= Duration::from_millis(20), "{ticked:?}");
        // Read inside the Instant pair, so never longer than it.
        assert!(ticked <= instant, "{ticked:?} vs {instant:?}");
        assert_eq!(
            t0.since(t1),
            Duration::ZERO,
            "backwards is zero, not a panic"
        );
        assert_eq!(
            (t0 + Duration::from_millis(5)).since(t0),
            Duration::from_millis(5)
        );
        assert!(t0.elapsed() >= ticked);
    }
}
