//! Upstreams: named pools of targets, the target choice for each request, and
//! the pooled HTTP/1.1 clients that reach them.
//!
//! Connection pools live outside the snapshot, in a [`UpstreamRegistry`] keyed by
//! the upstream's name and the settings that shape its connections, so a
//! reload that leaves an upstream unchanged keeps its warm keep-alive pool.

pub mod balancer;
pub mod breaker;
pub mod dns;
pub mod health;
pub mod limits;
pub mod pool;
pub mod replay;
pub mod retry;
pub mod stats;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::HeaderValue;

pub use balancer::Balancer;
pub use pool::{Pool, PoolKey, UpstreamRegistry};
pub use stats::{EjectionPolicy, TargetStats};

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
    /// For a target given as a name: its re-resolved addresses.
    pub resolved: Option<Arc<dns::Resolved>>,
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

/// Passive health settings of an upstream (compiled).
#[derive(Debug, Clone)]
pub struct PassiveHealth {
    /// When failures eject a target.
    pub policy: EjectionPolicy,
    /// Most targets that may be ejected at once.
    pub max_ejected: usize,
    /// Statuses counted as failures.
    pub failure_statuses: Vec<http::StatusCode>,
}

/// What protects an upstream and its clients from each other: passive
/// health, retries and their budget, and the concurrency limit.
#[derive(Debug)]
pub struct Guards {
    /// Outlier detection.
    pub health: PassiveHealth,
    /// When to retry.
    pub retry: retry::RetryPolicy,
    /// How much retrying traffic allows.
    pub budget: retry::RetryBudget,
    /// Most requests in flight, when limited.
    pub limit: Option<limits::Limiter>,
    /// The active health check, when configured.
    pub check: Option<Arc<health::HealthCheck>>,
    /// The upstream circuit breaker, when configured.
    pub breaker: Option<breaker::Breaker>,
}

/// How an upstream's targets are reached.
#[derive(Debug, Clone)]
pub struct Transport {
    /// How often targets given as names are re-resolved.
    pub dns_refresh: std::time::Duration,
    /// TLS to the targets, when configured.
    pub tls: Option<Arc<tls::UpstreamTls>>,
    /// Speak HTTP/2 to the targets.
    pub http2: bool,
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
    /// Load, latency and health of each target, by index; shared across reloads.
    pub stats: Vec<Arc<TargetStats>>,
    /// How a target is chosen.
    pub balancer: Balancer,
    /// Passive and active health, retries, limit and breaker.
    pub guards: Guards,
    /// How targets are reached: DNS refresh and TLS.
    pub transport: Transport,
    /// The upstream's own timeouts (defaults filled in).
    pub timeouts: Timeouts,
    /// Metric handles, when metrics are recorded.
    pub metrics: Option<Arc<crate::observability::metrics::UpstreamMetrics>>,
}

impl Upstream {
    /// Builds an upstream from its targets, their shared stats and a balancer.
    pub fn new(
        name: &str,
        targets: Vec<Target>,
        stats: Vec<Arc<TargetStats>>,
        balancer: Balancer,
        guards: Guards,
        transport: Transport,
        timeouts: Timeouts,
    ) -> Upstream {
        Upstream {
            name: name.into(),
            weights: targets.iter().map(|t| t.weight).collect(),
            targets,
            stats,
            balancer,
            guards,
            transport,
            timeouts,
            metrics: None,
        }
    }

    /// Picks a target index for a request with hash key `key` (used only by
    /// `consistent_hash`), skipping ejected targets and those in `tried`.
    /// `None` when no target is available.
    pub fn pick(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        let avail = |i: usize| {
            let s = &self.stats[i];
            !s.is_down() && s.is_available() && !tried.contains(&i)
        };
        self.balancer.pick(&self.weights, &self.stats, key, avail)
    }

    /// Records how an exchange with target `i` went: a success ends its
    /// failure streak; a failure may eject it (within the pool's cap).
    pub fn record(&self, i: usize, failed: bool) {
        if let Some(b) = &self.guards.breaker {
            match b.record(failed, stats::now_ns()) {
                Some(breaker::Transition::Opened) => {
                    tracing::warn!(upstream = %self.name, "circuit breaker opened: too many requests failed")
                }
                Some(breaker::Transition::Closed) => {
                    tracing::info!(upstream = %self.name, "circuit breaker closed: the trial request passed")
                }
                None => {}
            }
        }
        let s = &self.stats[i];
        if !failed {
            if s.record_success() {
                tracing::info!(upstream = %self.name, target = %self.targets[i].address, "trial request passed; target is back in rotation");
            }
            return;
        }
        let now = stats::now_ns();
        let may_eject = || {
            self.stats.iter().filter(|t| t.is_open_at(now)).count() < self.guards.health.max_ejected
        };
        if let Some(period) = s.record_failure(now, &self.guards.health.policy, may_eject) {
            tracing::warn!(
                upstream = %self.name,
                target = %self.targets[i].address,
                seconds = period as f64 / 1e9,
                "target ejected after {} failures in a row",
                self.guards.health.policy.consecutive_failures
            );
        }
    }

    /// Whether target `i` takes traffic at `now`: weighted, not held down
    /// by health checks, not ejected (metrics and readiness report this).
    pub fn takes_traffic(&self, i: usize, now: u64) -> bool {
        let s = &self.stats[i];
        self.targets[i].weight > 0 && !s.is_down() && !s.is_open_at(now)
    }

    /// True when `status` counts as a failure for passive health.
    pub fn is_failure_status(&self, status: http::StatusCode) -> bool {
        self.guards.health.failure_statuses.contains(&status)
    }
}
