//! Load balancers: how an upstream picks a target for each request. Each
//! algorithm lives in its own file; they share the per-target stats (requests
//! in flight, latency estimate) and skip weight-0 (draining) targets.

pub mod consistent_hash;
pub mod least_requests;
pub mod p2c;
pub mod round_robin;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::stats::TargetStats;
use crate::config::LoadBalancing;
pub use consistent_hash::{HashKey, Ring};

/// A compiled balancer.
#[derive(Debug)]
pub enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin(round_robin::SmoothWrr),
    /// Fewest in flight per weight.
    LeastRequests,
    /// Power of two choices on in-flight per weight.
    RandomTwo(p2c::WeightedDraw),
    /// Power of two choices on peak-EWMA latency times load.
    Ewma {
        /// Weighted draw of the two candidates.
        draw: p2c::WeightedDraw,
        /// Latency decay time constant, in nanoseconds.
        decay_ns: f64,
    },
    /// Ketama ring over a request key.
    ConsistentHash {
        /// The ring.
        ring: Ring,
        /// What to hash.
        key: HashKey,
    },
}

impl Balancer {
    /// Builds the balancer for targets with these weights and addresses.
    pub fn build(
        doc: &LoadBalancing,
        weights: &[u32],
        addresses: &[&str],
        workers: usize,
    ) -> Result<Balancer, String> {
        Ok(match doc {
            LoadBalancing::RoundRobin => {
                Balancer::RoundRobin(round_robin::SmoothWrr::new(weights, workers))
            }
            LoadBalancing::LeastRequests => Balancer::LeastRequests,
            LoadBalancing::RandomTwo => Balancer::RandomTwo(p2c::WeightedDraw::new(weights)),
            LoadBalancing::Ewma(e) => {
                if e.decay.0.is_zero() {
                    return Err("ewma decay must be greater than zero".into());
                }
                Balancer::Ewma {
                    draw: p2c::WeightedDraw::new(weights),
                    decay_ns: e.decay.0.as_nanos() as f64,
                }
            }
            LoadBalancing::ConsistentHash(h) => Balancer::ConsistentHash {
                ring: Ring::new(weights, addresses),
                key: HashKey::parse(&h.key)?,
            },
        })
    }

    /// Picks a target index among those `avail` accepts, or `None` when no
    /// target with weight above 0 is available. `key` is the request's hash
    /// key (only `consistent_hash` uses it).
    pub fn pick(
        &self,
        weights: &[u32],
        stats: &[Arc<TargetStats>],
        key: &[u8],
        avail: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(weights, avail),
            Balancer::LeastRequests => least_requests::pick(weights, stats, avail),
            Balancer::RandomTwo(draw) => draw.pick_two(
                |i| (stats[i].in_flight() as f64 + 1.0) / weights[i] as f64,
                avail,
            ),
            Balancer::Ewma { draw, decay_ns } => {
                let now = super::stats::now_ns();
                let cost = |i: usize| {
                    let s = &stats[i];
                    (s.estimate_ns(now, *decay_ns) + 1.0) * (s.in_flight() as f64 + 1.0)
                        / weights[i] as f64
                };
                draw.pick_two(cost, avail)
            }
            Balancer::ConsistentHash { ring, .. } => ring.pick(key, avail),
        }
    }

    /// The hash key to extract from requests, for `consistent_hash`.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self {
            Balancer::ConsistentHash { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The latency decay, for balancers that learn from response times.
    pub fn decay_ns(&self) -> Option<f64> {
        match self {
            Balancer::Ewma { decay_ns, .. } => Some(*decay_ns),
            _ => None,
        }
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish() | 1
    });
}

/// A fast per-thread random number (xorshift64*); not for cryptography.
pub fn random_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}
