//! `rate_limit`'s configuration and its compiled limit sets (the defaults,
//! and one per consumer group with its own limits).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use crate::config::units::HumanDuration;
use crate::plugins::limits::algorithm::{Algorithm, Rate};
use crate::plugins::limits::hybrid::HybridStore;
use crate::plugins::limits::key::OnMissing;
use crate::plugins::limits::local::LocalStore;
use crate::plugins::limits::redis::{Redis, RedisDoc};
use crate::plugins::limits::{OnRedisError, Store};
use crate::plugins::{Background, BuildContext, BuildError};

/// The document under `rate_limit:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shorthand for a single limit: requests per `window`.
    #[serde(default)]
    pub limit: Option<i64>,
    /// The shorthand limit's window.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// The shorthand limit's burst (token bucket only).
    #[serde(default)]
    pub burst: Option<i64>,
    /// The default algorithm of every limit (default `sliding_window`).
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Several limits at once, like 10 per second and 1000 per hour.
    #[serde(default)]
    pub limits: Vec<LimitDoc>,
    /// Limits for callers in a consumer group, replacing the defaults; the
    /// first listed group the caller belongs to applies.
    #[serde(default)]
    pub groups: serde_json::Map<String, serde_json::Value>,
    /// What requests are counted by (default `consumer`).
    #[serde(default)]
    pub key: Option<serde_json::Value>,
    /// When a key source is absent: `ip` (default), `allow` or `deny`.
    #[serde(default)]
    pub on_missing_key: OnMissing,
    /// The default store of every limit (default `local`).
    #[serde(default)]
    pub store: Store,
    /// The Redis server or cluster of `store: redis` limits.
    #[serde(default)]
    pub redis: Option<RedisDoc>,
    /// When Redis fails or is slow: `allow` (default) or `deny`.
    #[serde(default)]
    pub on_redis_error: OnRedisError,
    /// Send `RateLimit-*` headers (default true).
    #[serde(default = "yes")]
    pub headers: bool,
    /// Most keys kept in memory per local limit set (default 100000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// How often `store: hybrid` counters sync with Redis (default 100ms).
    #[serde(default = "default_sync")]
    pub sync_interval: HumanDuration,
}

fn default_sync() -> HumanDuration {
    HumanDuration(Duration::from_millis(100))
}

fn yes() -> bool {
    true
}

fn default_max_keys() -> usize {
    100_000
}

/// One entry of `limits:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitDoc {
    /// Requests admitted per window.
    pub limit: i64,
    /// The window, like `1s` or `1h`.
    pub window: HumanDuration,
    /// Bucket capacity for `token_bucket` (default: `limit`).
    #[serde(default)]
    pub burst: Option<i64>,
    /// Overrides the plugin's algorithm.
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    /// Overrides the plugin's store.
    #[serde(default)]
    pub store: Option<Store>,
}

/// The limits that apply to one kind of caller.
#[derive(Debug)]
pub struct LimitSet {
    /// `default` or the group's name; part of every counter's key.
    pub name: Arc<str>,
    /// Limits counted in this process.
    pub local: Vec<Rate>,
    /// Their counters.
    pub local_store: Option<Arc<LocalStore>>,
    /// Limits counted in Redis.
    pub redis: Vec<Rate>,
    /// Limits counted here and synced with Redis in batches.
    pub hybrid: Option<Arc<HybridStore>>,
    /// `RateLimit-Policy`, like `10;w=1, 1000;w=3600`.
    pub policy: HeaderValue,
    /// Every limit in the order a check decides them: local, hybrid, Redis.
    pub all: Vec<Rate>,
}

/// Longest window a rate limit may have; longer allowances are quotas.
const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// Compiles one list of limits (`at` is its field path).
pub fn compile_set(
    name: &str,
    docs: &[LimitDoc],
    at: &str,
    c: &Config,
    shared: Option<&Arc<Redis>>,
    cx: &mut BuildContext<'_>,
) -> Result<LimitSet, BuildError> {
    if docs.is_empty() {
        return Err((at.into(), "list at least one limit".into()));
    }
    let mut local = Vec::new();
    let mut redis = Vec::new();
    let mut hybrid = Vec::new();
    let mut policy = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let field = |f: &str| {
            if at.is_empty() {
                f.to_string()
            } else {
                format!("{at}[{i}].{f}")
            }
        };
        if d.limit < 1 {
            return Err((
                field("limit"),
                format!("a limit admits at least 1 request, not {}", d.limit),
            ));
        }
        let window = d.window.0;
        if window < Duration::from_millis(1) {
            return Err((
                field("window"),
                "the window must be at least 1ms (the counters' resolution)".into(),
            ));
        }
        if window > MAX_WINDOW {
            return Err((
                field("window"),
                "a rate-limit window is at most 31 days; use the `quota` plugin for \
                 monthly allowances"
                    .into(),
            ));
        }
        let algorithm = d
            .algorithm
            .or(c.algorithm)
            .unwrap_or(Algorithm::SlidingWindow);
        let burst = match (d.burst, algorithm) {
            (None, _) => d.limit,
            (Some(b), Algorithm::TokenBucket) if b >= 1 => b,
            (Some(b), Algorithm::TokenBucket) => {
                return Err((field("burst"), format!("the burst is at least 1, not {b}")))
            }
            (Some(_), a) => {
                return Err((
                    field("burst"),
                    format!("`burst` applies to `token_bucket` only, not `{}`", a.name()),
                ))
            }
        };
        let window_ns = window.as_nanos() as u64;
        let rate = Rate {
            algorithm,
            limit: d.limit as u64,
            window: window_ns,
            burst: burst as u64,
        };
        let store = d.store.unwrap_or(c.store);
        if algorithm == Algorithm::TokenBucket && window_ns / rate.limit < 1_000 {
            return Err((
                field("limit"),
                "a token bucket refills at most one token per microsecond; use a \
                 window-based algorithm for higher rates"
                    .into(),
            ));
        }
        if store != Store::Local && c.redis.is_none() {
            return Err((
                field("store"),
                "`store: redis` and `store: hybrid` need a `redis:` connection on the plugin"
                    .into(),
            ));
        }
        if store == Store::Hybrid && algorithm != Algorithm::FixedWindow {
            return Err((
                field("algorithm"),
                format!(
                    "`store: hybrid` counts fixed windows only, not `{}`",
                    algorithm.name()
                ),
            ));
        }
        policy.push(format!(
            "{};w={}",
            if algorithm == Algorithm::TokenBucket {
                rate.burst
            } else {
                rate.limit
            },
            window.as_secs_f64().ceil().max(1.0) as u64
        ));
        match store {
            Store::Local => local.push(rate),
            Store::Redis => redis.push(rate),
            Store::Hybrid => hybrid.push(rate),
        }
    }
    let all: Vec<Rate> = local.iter().chain(&hybrid).chain(&redis).copied().collect();
    let hybrid = match shared.filter(|_| !hybrid.is_empty()) {
        None => None,
        Some(r) => {
            let interval = c.sync_interval.0;
            if interval < Duration::from_millis(10) {
                return Err(("sync_interval".into(), "sync at most every 10ms".into()));
            }
            let identity = format!(
                "{}|{name}|{hybrid:?}|{}|{interval:?}|{}",
                cx.owner, c.max_keys, r.prefix
            );
            let namespace = format!("{}:rl:{}:{name}:hybrid", r.prefix, cx.owner);
            let store = cx.state.get(&identity, || {
                HybridStore::new(
                    hybrid,
                    r.clone(),
                    namespace,
                    interval,
                    c.max_keys,
                    cx.state.clock().clone(),
                )
            });
            cx.background.push((
                format!("hybrid:{identity}"),
                store.clone() as Arc<dyn Background>,
            ));
            Some(store)
        }
    };
    let local_store = (!local.is_empty()).then(|| {
        let identity = format!("{}|{name}|{local:?}|{}", cx.owner, c.max_keys);
        cx.state.get(&identity, || LocalStore::new(c.max_keys))
    });
    let policy = HeaderValue::from_str(&policy.join(", "))
        .map_err(|_| (at.to_string(), "cannot describe these limits".to_string()))?;
    Ok(LimitSet {
        name: Arc::from(name),
        local,
        local_store,
        redis,
        hybrid,
        policy,
        all,
    })
}

/// The default list: the shorthand or `limits:`, not both.
pub fn default_limits(c: &Config) -> Result<Vec<LimitDoc>, BuildError> {
    match (c.limit, c.window, c.limits.is_empty()) {
        (Some(limit), Some(window), true) => Ok(vec![LimitDoc {
            limit,
            window,
            burst: c.burst,
            algorithm: None,
            store: None,
        }]),
        (None, None, false) if c.burst.is_none() => Ok(c.limits.clone()),
        (None, None, true) => Err((
            String::new(),
            "give `limit` and `window` (one limit) or `limits: [...]` (several)".into(),
        )),
        (Some(_), None, _) => Err(("window".into(), "`limit` needs a `window`".into())),
        (None, Some(_), _) => Err(("limit".into(), "`window` needs a `limit`".into())),
        _ => Err((
            "limits".into(),
            "give either `limit`/`window`/`burst` or `limits`, not both".into(),
        )),
    }
}
