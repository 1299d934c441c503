//! Keep-alive connection pools to upstream targets.
//!
//! Each worker thread runs its own event loop, so each pool holds one hyper
//! client per worker: a connection is created, used and reused on one thread,
//! like nginx's per-worker upstream keep-alive. Pools are shared between
//! snapshots through the [`PoolRegistry`].

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::proxy::body::ProxyBody;

/// The hyper client type used to reach upstreams.
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Records which worker the current thread is; called once when a worker starts.
pub fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// What shapes an upstream's connections; a change builds a new pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Upstream name.
    pub upstream: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long idle connections are kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per target.
    pub max_idle_per_target: usize,
}

/// One client per worker thread for one upstream.
#[derive(Debug)]
pub struct Pool {
    clients: Vec<UpstreamClient>,
}

impl Pool {
    fn new(key: &PoolKey, workers: usize) -> Pool {
        let clients = (0..workers.max(1))
            .map(|_| {
                let mut conn = HttpConnector::new();
                conn.set_nodelay(true);
                conn.set_connect_timeout(Some(key.connect_timeout));
                conn.set_keepalive(Some(Duration::from_secs(60)));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(key.idle_timeout)
                    .pool_max_idle_per_host(key.max_idle_per_target)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(conn)
            })
            .collect();
        Pool { clients }
    }

    /// The client for the calling worker thread.
    pub fn client(&self) -> &UpstreamClient {
        let i = WORKER.with(Cell::get);
        &self.clients[i % self.clients.len()]
    }
}

/// Pools by key, shared across snapshots; a pool is dropped once no snapshot uses it.
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: Mutex<HashMap<PoolKey, Weak<Pool>>>,
}

impl PoolRegistry {
    /// Returns the live pool for `key`, or creates one with a client per worker.
    /// Runs only when a snapshot is compiled, never per request.
    pub fn get(&self, key: PoolKey, workers: usize) -> Arc<Pool> {
        let mut map = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(p) = map.get(&key).and_then(Weak::upgrade) {
            return p;
        }
        let pool = Arc::new(Pool::new(&key, workers));
        map.insert(key, Arc::downgrade(&pool));
        pool
    }
}
