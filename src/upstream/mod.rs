//! Upstreams: named pools of targets, the target choice for each request, and
//! the pooled HTTP/1.1 clients that reach them.
//!
//! Connection pools live outside the snapshot, in a [`UpstreamRegistry`] keyed by
//! the upstream's name and the settings that shape its connections, so a
//! reload that leaves an upstream unchanged keeps its warm keep-alive pool.

pub mod balancer;
pub mod pool;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;

pub use balancer::Balancer;
pub use pool::{Pool, PoolKey, UpstreamRegistry};
pub use stats::TargetStats;

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
    /// Target weights, by index (0 = draining).
    weights: Vec<u32>,
    /// Load and latency of each target, by index; shared across reloads.
    pub stats: Vec<Arc<TargetStats>>,
    /// How a target is chosen.
    pub balancer: Balancer,
    /// The upstream's own timeouts (defaults filled in).
    pub timeouts: Timeouts,
}

impl Upstream {
    /// Builds an upstream from its targets, their shared stats and a balancer.
    pub fn new(
        name: &str,
        targets: Vec<Target>,
        stats: Vec<Arc<TargetStats>>,
        balancer: Balancer,
        timeouts: Timeouts,
    ) -> Upstream {
        Upstream {
            name: name.into(),
            weights: targets.iter().map(|t| t.weight).collect(),
            targets,
            stats,
            balancer,
            timeouts,
        }
    }

    /// Picks a target index for a request with hash key `key` (used only by
    /// `consistent_hash`), or `None` when every target has weight 0.
    pub fn pick(&self, key: &[u8]) -> Option<usize> {
        self.balancer.pick(&self.weights, &self.stats, key)
    }
}
