//! The Redis connection shared by the limit plugins (`rate_limit`, `quota`)
//! whose counters live in Redis: a standalone server or a Redis Cluster,
//! a few multiplexed connections per gateway, a bounded wait per check.
//!
//! The connection is made by a background task, never on the request
//! path: a request that finds Redis unreachable (at start or later) gets
//! the plugin's failure policy at once instead of waiting for a connect.
//! Once connected, the connection re-establishes itself after errors.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Deserialize;

use crate::config::units::HumanDuration;
use crate::plugins::{Background, BuildContext, BuildError};

/// `redis:` in a limit plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisDoc {
    /// A standalone server: `redis://[user:password@]host:port[/db]`.
    #[serde(default)]
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster, as `redis://host:port` URLs.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// The longest a check waits for Redis (default `100ms`); then the
    /// plugin's failure policy applies.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Multiplexed connections per gateway process (default 2).
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Prefix of every key the gateway writes (default `portcullis`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

fn default_pool() -> usize {
    2
}

fn default_prefix() -> String {
    "portcullis".into()
}

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// No connection yet (Redis unreachable since start, or still connecting).
    #[error("not connected to Redis yet")]
    NotConnected,
    /// Redis did not answer within the configured timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

enum Target {
    Single(redis::Client),
    Cluster(Box<redis::cluster::ClusterClient>),
}

#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A shared Redis connection (kept across reloads while its settings stay).
pub struct Redis {
    target: Target,
    describe: String,
    timeout: Duration,
    pool_size: usize,
    /// Prefix of every key.
    pub prefix: String,
    conns: ArcSwapOption<Vec<Conn>>,
    next: AtomicUsize,
    last_warning: AtomicU64,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("target", &self.describe)
            .field("connected", &self.conns.load().is_some())
            .finish()
    }
}

impl Redis {
    /// The connection for `doc`, shared with every plugin using the same
    /// settings, with its background connector registered.
    pub fn shared(doc: &RedisDoc, cx: &mut BuildContext<'_>) -> Result<Arc<Redis>, BuildError> {
        let timeout = doc.timeout.0;
        if timeout.is_zero() {
            return Err((
                "redis.timeout".into(),
                "the timeout must be above zero".into(),
            ));
        }
        if doc.pool_size == 0 || doc.pool_size > 64 {
            return Err((
                "redis.pool_size".into(),
                "pool_size is between 1 and 64".into(),
            ));
        }
        let (target, describe) = match (&doc.url, doc.cluster.is_empty()) {
            (Some(url), true) => (
                Target::Single(redis::Client::open(url.as_str()).map_err(|e| {
                    (
                        "redis.url".to_string(),
                        format!("not a Redis URL ({e}); write redis://host:port"),
                    )
                })?),
                redact(url),
            ),
            (None, false) => {
                let client = redis::cluster::ClusterClient::builder(doc.cluster.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| {
                        (
                            "redis.cluster".to_string(),
                            format!("not a list of Redis URLs ({e}); write redis://host:port"),
                        )
                    })?;
                let nodes: Vec<String> = doc.cluster.iter().map(|u| redact(u)).collect();
                (
                    Target::Cluster(Box::new(client)),
                    format!("cluster {}", nodes.join(",")),
                )
            }
            (Some(_), false) => {
                return Err((
                    "redis".into(),
                    "give either `url` (standalone) or `cluster` (seed nodes), not both".into(),
                ))
            }
            (None, true) => {
                return Err((
                    "redis".into(),
                    "needs `url: redis://host:port` or `cluster: [redis://host:port, …]`".into(),
                ))
            }
        };
        let identity = format!(
            "{:?}|{:?}|{timeout:?}|{}|{}",
            doc.url, doc.cluster, doc.pool_size, doc.prefix
        );
        let redis = cx.state.get(&identity, || Redis {
            target,
            describe,
            timeout,
            pool_size: doc.pool_size,
            prefix: doc.prefix.clone(),
            conns: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            last_warning: AtomicU64::new(0),
        });
        cx.background.push((
            format!("redis:{identity}"),
            redis.clone() as Arc<dyn Background>,
        ));
        Ok(redis)
    }

    /// Whether a connection is established.
    pub fn is_connected(&self) -> bool {
        self.conns.load().is_some()
    }

    async fn connect(&self) -> Result<Vec<Conn>, redis::RedisError> {
        let mut conns = Vec::with_capacity(self.pool_size);
        for _ in 0..self.pool_size {
            conns.push(match &self.target {
                Target::Single(client) => {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_secs(2));
                    Conn::Single(client.get_connection_manager_with_config(config).await?)
                }
                Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            });
        }
        Ok(conns)
    }

    /// Runs `script` with `keys` and `args`, within the timeout. One round
    /// trip (the script is loaded once per server, on first use).
    pub async fn eval(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, RedisFailure> {
        let Some(conns) = self.conns.load_full() else {
            return Err(RedisFailure::NotConnected);
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(k);
        }
        for a in args {
            invocation.arg(*a);
        }
        let call = async {
            match conns[i].clone() {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        }
    }

    /// Logs a failure, at most once every ten seconds per connection (a
    /// Redis outage must not flood the log at the request rate).
    pub fn warn(&self, plugin: &str, policy: &str, err: &RedisFailure) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                redis = %self.describe,
                plugin,
                "{err}; requests are {policy} until Redis answers again"
            );
        }
    }
}

impl Background for Redis {
    /// Connects, retrying with backoff until Redis is reachable. Once
    /// connected, the connections reconnect on their own.
    fn run(self: Arc<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(100);
            while !self.is_connected() {
                match self.connect().await {
                    Ok(conns) => {
                        self.conns.store(Some(Arc::new(conns)));
                        tracing::info!(redis = %self.describe, "connected to Redis");
                    }
                    Err(e) => {
                        tracing::warn!(
                            redis = %self.describe,
                            "cannot connect to Redis ({e}); retrying in {delay:?}"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }
}

/// A URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("redis://:secret@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
    }
}
