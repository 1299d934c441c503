//! Service discovery by DNS: a target written as a name (`users.internal:9000`)
//! is re-resolved on an interval, and new connections rotate over the
//! addresses it resolves to. When the set changes, pooled connections to
//! addresses that remain are kept; those to addresses that left are not
//! reused. A failed or empty lookup keeps the last good set. Address sets are
//! kept across reloads (by `host:port`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

/// A DNS lookup of `host:port`: the system resolver in production, a
/// scripted one in tests.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver (`getaddrinfo`, on tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
    })
}

/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The current addresses of one `host:port`.
#[derive(Debug)]
pub struct Resolved {
    name: String,
    addrs: ArcSwap<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Resolved {
    /// An empty set for `name`; until the first lookup succeeds, connections
    /// resolve the name themselves.
    pub fn new(name: &str) -> Resolved {
        Resolved {
            name: name.to_string(),
            addrs: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The next address to connect to, in rotation; `None` before the first
    /// successful lookup.
    pub fn pick(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        if addrs.is_empty() {
            return None;
        }
        Some(addrs[self.next.fetch_add(1, Ordering::Relaxed) % addrs.len()])
    }

    /// Whether connections to `peer` may still be reused: it is in the set,
    /// or no set is known yet.
    pub fn allows(&self, peer: &SocketAddr) -> bool {
        let addrs = self.addrs.load();
        addrs.is_empty() || addrs.contains(peer)
    }

    /// Replaces the set with a successful lookup's result; returns true when
    /// it changed. An empty result keeps the last good set.
    pub fn update(&self, mut addrs: Vec<SocketAddr>) -> bool {
        if addrs.is_empty() {
            return false;
        }
        addrs.sort_unstable();
        addrs.dedup();
        if **self.addrs.load() == addrs {
            return false;
        }
        self.addrs.store(Arc::new(addrs));
        true
    }

    /// The current set.
    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs.load_full()
    }
}

/// Re-resolves `resolved` every `interval` until the task is aborted.
pub async fn run(resolved: Arc<Resolved>, lookup: Lookup, interval: Duration) {
    loop {
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(resolved.name.clone())).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => {
                if resolved.update(addrs) {
                    tracing::info!(target = %resolved.name, addrs = ?resolved.addrs(), "DNS answer changed");
                }
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "no addresses".to_string(),
                    Err(_) => "timed out".to_string(),
                };
                tracing::warn!(target = %resolved.name, error = %why, "DNS lookup failed; keeping the last good addresses");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Whether `address` (`host:port`) names a host rather than an IP literal.
pub fn is_name(address: &str) -> bool {
    address.parse::<SocketAddr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn sets_rotate_update_and_keep_the_last_good_answer() {
        let r = Resolved::new("svc:80");
        assert_eq!(r.pick(), None);
        assert!(
            r.allows(&a("10.0.0.9:80")),
            "nothing known yet: anything goes"
        );
        assert!(r.update(vec![a("10.0.0.2:80"), a("10.0.0.1:80"), a("10.0.0.1:80")]));
        assert!(
            !r.update(vec![a("10.0.0.1:80"), a("10.0.0.2:80")]),
            "same set, reordered"
        );
        let picks: Vec<_> = (0..4).map(|_| r.pick().expect("addr")).collect();
        assert_eq!(picks.iter().filter(|p| **p == a("10.0.0.1:80")).count(), 2);
        assert!(
            !r.update(Vec::new()),
            "an empty answer keeps the last good set"
        );
        assert_eq!(r.addrs().len(), 2);
        assert!(r.update(vec![a("10.0.0.2:80"), a("10.0.0.3:80")]));
        assert!(!r.allows(&a("10.0.0.1:80")) && r.allows(&a("10.0.0.2:80")));
        assert!(is_name("users.internal:80") && !is_name("10.0.0.1:80") && !is_name("[::1]:80"));
    }
}
