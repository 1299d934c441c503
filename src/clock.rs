//! The gateway's wall clock, for logic that counts time in windows (rate
//! limits, quotas). Production reads the system clock; tests use a manual
//! clock they advance explicitly, so window arithmetic is tested exactly
//! instead of with sleeps.
//!
//! Time is wall-clock time since the UNIX epoch, not a monotonic instant:
//! gateway nodes that share counters in Redis must agree on window
//! boundaries, which only a synchronised wall clock gives them.

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
}
