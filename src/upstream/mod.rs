//! Upstreams: named pools of targets, the target choice for each request, and
//! the pooled HTTP/1.1 clients that reach them.
//!
//! Connection pools live outside the snapshot, in a [`PoolRegistry`] keyed by
//! the upstream's name and the settings that shape its connections, so a
//! reload that leaves an upstream unchanged keeps its warm keep-alive pool.

pub mod pool;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;

pub use pool::{Pool, PoolKey, PoolRegistry};

/// One backend of an upstream, with everything a request needs precomputed.
#[derive(Debug)]
pub struct Target {
    /// `host:port` as configured.
    pub address: Arc<str>,
    /// The same, parsed for request URIs.
    pub authority: Authority,
    /// The `Host` header used when the route rewrites it to the upstream's.
    pub host_header: HeaderValue,
    /// Share of traffic; 0 means draining (never chosen).
    pub weight: u32,
}

/// Resolved timeouts for one route's upstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Until response headers, and between response body chunks.
    pub read: Duration,
    /// The whole exchange; `None` for no limit.
    pub total: Option<Duration>,
}

impl Timeouts {
    /// Defaults when neither the route nor the upstream sets a value.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(60),
        total: None,
    };
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Upstream {
    /// Name from the config.
    pub name: Arc<str>,
    /// All targets, in config order.
    pub targets: Vec<Target>,
    /// Target indices in weighted round-robin order (weight-0 targets absent).
    schedule: Vec<u32>,
    next: AtomicUsize,
    /// The upstream's own timeouts (defaults filled in).
    pub timeouts: Timeouts,
}

impl Upstream {
    /// Builds an upstream; the schedule interleaves targets by weight
    /// (weights reduced by their greatest common divisor).
    pub fn new(name: &str, targets: Vec<Target>, timeouts: Timeouts) -> Upstream {
        Upstream {
            name: name.into(),
            schedule: weighted_schedule(&targets.iter().map(|t| t.weight).collect::<Vec<_>>()),
            targets,
            next: AtomicUsize::new(0),
            timeouts,
        }
    }

    /// Picks the next target, or `None` when every target has weight 0.
    pub fn pick(&self) -> Option<&Target> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let idx = self.schedule[n % self.schedule.len()];
        self.targets.get(idx as usize)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Interleaved weighted order: each round visits every target whose remaining
/// weight is positive, so `[3, 1]` gives `0 1 0 0` rather than `0 0 0 1`.
fn weighted_schedule(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut left: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let mut out = Vec::new();
    while left.iter().any(|w| *w > 0) {
        for (i, w) in left.iter_mut().enumerate() {
            if *w > 0 {
                out.push(i as u32);
                *w -= 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_respects_weights_and_draining() {
        assert_eq!(weighted_schedule(&[1, 1]), vec![0, 1]);
        assert_eq!(weighted_schedule(&[3, 1]), vec![0, 1, 0, 0]);
        assert_eq!(weighted_schedule(&[2, 0, 4]), vec![0, 2, 2]);
        assert!(weighted_schedule(&[0, 0]).is_empty());
    }
}
