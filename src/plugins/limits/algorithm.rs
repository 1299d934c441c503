//! The counting rules of `rate_limit`, as pure functions of a key's state
//! and the current time, so they are tested exactly with any clock. The Lua
//! scripts in [`super::scripts`] implement the same rules inside Redis.
//!
//! * `token_bucket` is GCRA: one "theoretical arrival time" per key; a
//!   request is admitted when the bucket (capacity `burst`, refilled at
//!   `limit / window`) holds a token.
//! * `fixed_window` counts admitted requests per aligned window.
//! * `sliding_window` is the weighted two-window approximation: the previous
//!   window's count, weighted by how much of it the sliding window still
//!   covers, plus the current window's count. It assumes the previous window's
//!   requests were spread evenly; see `docs/rate-limiting.md` for its error.

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// GCRA with a burst capacity.
    TokenBucket,
    /// Weighted two-window approximation.
    SlidingWindow,
    /// Aligned windows, counter reset at each boundary.
    FixedWindow,
}

impl Algorithm {
    /// The number the Redis script dispatches on.
    pub fn script_code(self) -> u8 {
        match self {
            Algorithm::TokenBucket => 1,
            Algorithm::SlidingWindow => 2,
            Algorithm::FixedWindow => 3,
        }
    }

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::FixedWindow => "fixed_window",
        }
    }
}

/// One compiled limit: `limit` requests per `window` nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How it counts.
    pub algorithm: Algorithm,
    /// Requests admitted per window.
    pub limit: u64,
    /// The window, in nanoseconds (at least one millisecond).
    pub window: u64,
    /// Token bucket capacity (at least 1); the other algorithms ignore it.
    pub burst: u64,
}

/// One key's state under one limit: three words whose meaning depends on
/// the algorithm (GCRA: `a` = theoretical arrival time; windows: `a` =
/// window index + 1, `b` = this window's count, `c` = the previous one's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// See the type's documentation.
    pub a: u64,
    /// See the type's documentation.
    pub b: u64,
    /// See the type's documentation.
    pub c: u64,
}

/// What one limit decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request fits.
    pub allowed: bool,
    /// Requests left (after this one, when admitted).
    pub remaining: u64,
    /// Nanoseconds until the limit is fully available again (the window's
    /// end; for a bucket, until it is full).
    pub reset: u64,
    /// When refused: nanoseconds until a request would fit.
    pub retry_after: u64,
}

impl Rate {
    /// GCRA's emission interval: the time one token takes to come back.
    fn interval(&self) -> u64 {
        (self.window / self.limit).max(1)
    }

    /// Decides one request at `now` and, when admitted, counts it in `cell`.
    pub fn check(&self, cell: &mut Cell, now: u64) -> Decision {
        match self.algorithm {
            Algorithm::TokenBucket => self.gcra(cell, now),
            Algorithm::FixedWindow => self.fixed(cell, now),
            Algorithm::SlidingWindow => self.sliding(cell, now),
        }
    }

    /// Takes back a request admitted at `now` (another limit refused it).
    pub fn refund(&self, cell: &mut Cell, now: u64) {
        match self.algorithm {
            Algorithm::TokenBucket => cell.a = cell.a.saturating_sub(self.interval()),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                if cell.a == now / self.window + 1 {
                    cell.b = cell.b.saturating_sub(1);
                }
            }
        }
    }

    /// When `cell` is indistinguishable from a fresh one (it may then be
    /// forgotten).
    pub fn expires(&self, cell: &Cell) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket => cell.a,
            Algorithm::FixedWindow => cell.a.saturating_mul(self.window),
            Algorithm::SlidingWindow => cell.a.saturating_add(1).saturating_mul(self.window),
        }
    }

    fn gcra(&self, cell: &mut Cell, now: u64) -> Decision {
        let t = self.interval();
        let tau = t.saturating_mul(self.burst);
        let tat = cell.a.max(now);
        let next = tat.saturating_add(t);
        if next - now > tau {
            return Decision {
                allowed: false,
                remaining: 0,
                reset: tat - now,
                retry_after: next - now - tau,
            };
        }
        cell.a = next;
        Decision {
            allowed: true,
            remaining: (tau - (next - now)) / t,
            reset: next - now,
            retry_after: 0,
        }
    }

    fn fixed(&self, cell: &mut Cell, now: u64) -> Decision {
        let index = now / self.window;
        if cell.a != index + 1 {
            *cell = Cell {
                a: index + 1,
                b: 0,
                c: 0,
            };
        }
        let reset = (index + 1) * self.window - now;
        if cell.b >= self.limit {
            return Decision {
                allowed: false,
                remaining: 0,
                reset,
                retry_after: reset,
            };
        }
        cell.b += 1;
        Decision {
            allowed: true,
            remaining: self.limit - cell.b,
            reset,
            retry_after: 0,
        }
    }

    fn sliding(&self, cell: &mut Cell, now: u64) -> Decision {
        let w = self.window as u128;
        let index = now / self.window;
        if cell.a != index + 1 {
            let prev = if cell.a == index { cell.b } else { 0 };
            *cell = Cell {
                a: index + 1,
                b: 0,
                c: prev,
            };
        }
        let elapsed = (now - index * self.window) as u128;
        let (limit, curr, prev) = (self.limit as u128, cell.b as u128, cell.c as u128);
        // Everything scaled by the window: prev·(w − elapsed)/w + curr + 1 ≤ limit.
        let weighted_prev = prev * (w - elapsed);
        let to_window_end = (w - elapsed) as u64;
        if weighted_prev + (curr + 1) * w > limit * w {
            let wait = if curr < limit {
                // Within this window, once the previous one weighs less.
                let need = w - ((limit - curr - 1) * w / prev);
                need.saturating_sub(elapsed)
            } else {
                // In the next window, this one's count becomes the weighted one.
                let need = w - ((limit - 1) * w / curr);
                (w - elapsed) + need
            };
            let wait = wait.max(1) as u64;
            return Decision {
                allowed: false,
                remaining: 0,
                reset: wait,
                retry_after: wait,
            };
        }
        cell.b += 1;
        let used = weighted_prev + (curr + 1) * w;
        Decision {
            allowed: true,
            remaining: ((limit * w - used) / w) as u64,
            reset: to_window_end,
            retry_after: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    /// A start time that is not window-aligned, to catch alignment slips.
    const T0: u64 = 1_700_000_000 * SEC;

    fn rate(algorithm: Algorithm, limit: u64, window: u64) -> Rate {
        Rate {
            algorithm,
            limit,
            window,
            burst: limit,
        }
    }

    fn admitted(r: &Rate, cell: &mut Cell, now: u64, tries: u64) -> u64 {
        (0..tries).filter(|_| r.check(cell, now).allowed).count() as u64
    }

    #[test]
    fn token_bucket_admits_the_burst_then_one_per_interval() {
        let r = Rate {
            burst: 5,
            ..rate(Algorithm::TokenBucket, 10, SEC)
        };
        let mut c = Cell::default();
        let first = r.check(&mut c, T0);
        assert_eq!((first.allowed, first.remaining), (true, 4));
        assert_eq!(admitted(&r, &mut c, T0, 100), 4, "burst of 5 in all");
        let refused = r.check(&mut c, T0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 100 * MS, "one token per 100 ms");
        assert_eq!(admitted(&r, &mut c, T0 + 99 * MS, 10), 0);
        assert_eq!(admitted(&r, &mut c, T0 + 100 * MS, 10), 1);
        // Over a long run the rate is exactly limit per window.
        let mut total = 0;
        for step in 1..=100 {
            total += admitted(&r, &mut c, T0 + 100 * MS + step * 10 * MS, 10);
        }
        assert_eq!(total, 10, "one second more, ten more tokens");
        assert_eq!(r.expires(&c), c.a);
    }

    #[test]
    fn token_bucket_refills_completely_after_idle() {
        let r = rate(Algorithm::TokenBucket, 3, SEC);
        let mut c = Cell::default();
        assert_eq!(admitted(&r, &mut c, T0, 10), 3);
        assert!(r.expires(&c) <= T0 + SEC);
        assert_eq!(admitted(&r, &mut c, T0 + SEC, 10), 3);
    }

    #[test]
    fn fixed_window_admits_exactly_limit_per_aligned_window() {
        let r = rate(Algorithm::FixedWindow, 5, SEC);
        let mut c = Cell::default();
        let start = T0 + 250 * MS;
        let d = r.check(&mut c, start);
        assert_eq!(
            (d.remaining, d.reset),
            (4, 750 * MS),
            "windows align to the epoch"
        );
        assert_eq!(admitted(&r, &mut c, start, 10), 4);
        let d = r.check(&mut c, T0 + 999 * MS);
        assert_eq!((d.allowed, d.retry_after), (false, MS));
        assert_eq!(admitted(&r, &mut c, T0 + SEC, 10), 5);
        assert_eq!(r.expires(&c), T0 + 2 * SEC);
        r.refund(&mut c, T0 + SEC);
        assert_eq!(admitted(&r, &mut c, T0 + SEC, 10), 1, "a refund frees one");
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let r = rate(Algorithm::SlidingWindow, 10, SEC);
        let mut c = Cell::default();
        assert_eq!(admitted(&r, &mut c, T0, 20), 10, "exactly the limit");
        let d = r.check(&mut c, T0 + 500 * MS);
        assert!(!d.allowed);
        // Next window, 10 · (1 − e) + 1 ≤ 10 once e ≥ 0.1 s.
        assert_eq!(d.retry_after, 600 * MS);
        assert_eq!(
            admitted(&r, &mut c, T0 + SEC, 20),
            0,
            "the previous window weighs 10"
        );
        assert_eq!(admitted(&r, &mut c, T0 + SEC + 100 * MS, 20), 1);
        // Halfway, the previous window weighs 5: 4 more fit beside the 1.
        assert_eq!(admitted(&r, &mut c, T0 + SEC + 500 * MS, 20), 4);
        let d = r.check(&mut c, T0 + SEC + 500 * MS);
        assert_eq!(d.retry_after, 100 * MS, "each 100 ms frees one");
        // Two windows on, nothing weighs.
        assert_eq!(admitted(&r, &mut c, T0 + 3 * SEC, 20), 10);
        assert_eq!(r.expires(&c), T0 + 5 * SEC);
    }

    #[test]
    fn sliding_window_remaining_counts_down() {
        let r = rate(Algorithm::SlidingWindow, 3, SEC);
        let mut c = Cell::default();
        let left: Vec<u64> = (0..3).map(|_| r.check(&mut c, T0).remaining).collect();
        assert_eq!(left, [2, 1, 0]);
    }

    #[test]
    fn limits_of_one_never_divide_by_zero() {
        for a in [
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let r = rate(a, 1, MS);
            let mut c = Cell::default();
            assert_eq!(admitted(&r, &mut c, T0, 5), 1, "{a:?}");
            let d = r.check(&mut c, T0);
            assert!(d.retry_after > 0 && d.retry_after <= 2 * MS, "{a:?}: {d:?}");
        }
    }

    #[test]
    fn a_clock_going_backwards_does_not_panic() {
        for a in [
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let r = rate(a, 2, SEC);
            let mut c = Cell::default();
            r.check(&mut c, T0 + 5 * SEC);
            let d = r.check(&mut c, T0);
            let _ = r.check(&mut c, T0 + SEC / 2);
            assert!(d.remaining <= 2, "{a:?}");
        }
    }
}
