//! `rate_limit`: requests per window, per key (consumer, client IP, header,
//! path capture, route, or a combination), with several limits at once and
//! per-group overrides. Counters live in this process (`local`) or in Redis
//! (`redis`, shared by every node). Admitted responses carry `RateLimit-*`
//! headers; refused requests get 429 with `Retry-After` (gRPC callers get
//! `RESOURCE_EXHAUSTED`). See `docs/rate-limiting.md`.

pub mod config;

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use self::config::{compile_set, default_limits, Config, LimitDoc, LimitSet};
use super::context::{Access, Identity};
use super::limits::algorithm::{Decision, Rate};
use super::limits::key::{KeySpec, OnMissing};
use super::limits::redis::Redis;
use super::limits::{ceil_secs, scripts, stable_hash, unavailable, OnRedisError};
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::clock::Clock;
use crate::observability::metrics::DecisionCounters;
use crate::proxy::errors::GatewayError;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The compiled plugin.
#[derive(Debug)]
pub struct RateLimit {
    key: KeySpec,
    on_missing: OnMissing,
    /// The defaults first, then one set per group, in the configured order.
    sets: Vec<LimitSet>,
    redis: Option<Arc<Redis>>,
    on_redis_error: OnRedisError,
    headers: bool,
    owner: Arc<str>,
    clock: Clock,
    /// Decision counters, when metrics are recorded.
    counters: Option<DecisionCounters>,
}

/// Builds `rate_limit` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    let key = KeySpec::parse(c.key.as_ref(), "consumer")?;
    if c.max_keys == 0 {
        return Err(("max_keys".into(), "keep at least one key".into()));
    }
    let defaults = default_limits(&c)?;
    let at = if c.limits.is_empty() { "" } else { "limits" };
    let shared = match &c.redis {
        Some(doc) => Some(Redis::shared(doc, cx)?),
        None => None,
    };
    let mut sets = vec![compile_set(
        "default",
        &defaults,
        at,
        &c,
        shared.as_ref(),
        cx,
    )?];
    for (group, value) in &c.groups {
        let at = format!("groups.{group}");
        let docs: Vec<LimitDoc> = super::parse(value).map_err(|(f, m)| {
            let f = if f.is_empty() {
                at.clone()
            } else {
                format!("{at}{}{f}", if f.starts_with('[') { "" } else { "." })
            };
            (f, m)
        })?;
        sets.push(compile_set(group, &docs, &at, &c, shared.as_ref(), cx)?);
    }
    let uses_redis = sets
        .iter()
        .any(|s| !s.redis.is_empty() || s.hybrid.is_some());
    if shared.is_some() && !uses_redis {
        return Err((
            "redis".into(),
            "no limit is stored in Redis; set `store: redis` (or `hybrid`) or remove `redis`"
                .into(),
        ));
    }
    let redis = shared;
    let prefix_owner = match &redis {
        Some(r) => format!("{}:rl:{}", r.prefix, cx.owner),
        None => cx.owner.to_string(),
    };
    Ok(Arc::new(RateLimit {
        key,
        on_missing: c.on_missing_key,
        sets,
        redis,
        on_redis_error: c.on_redis_error,
        headers: c.headers,
        owner: Arc::from(prefix_owner),
        clock: cx.state.clock().clone(),
        counters: cx
            .state
            .recording_metrics()
            .map(|m| DecisionCounters::new(&m, cx.owner, "rate_limit")),
    }))
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn phase(&self) -> Phase {
        Phase::Limits
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let set = self.set_for(cx.identity.as_ref());
        let key = match self.key.resolve(cx, self.on_missing, "rate_limit") {
            Ok(Some(k)) => k,
            Ok(None) => return Step::Continue,
            Err(e) => return Step::Reject(e),
        };
        let now = self.clock.now_nanos();
        let mut decisions = Vec::with_capacity(set.local.len() + set.redis.len());
        if let Some(store) = &set.local_store {
            if !store.check(&key, now, &set.local, &mut decisions) {
                return Step::Reject(self.refusal(set, &set.local, &decisions));
            }
        }
        if let Some(hybrid) = &set.hybrid {
            let before = decisions.len();
            if !hybrid.check(&key, now, &mut decisions) {
                if let Some(store) = &set.local_store {
                    store.refund(&key, now, &set.local);
                }
                return Step::Reject(self.refusal(set, hybrid.rates(), &decisions[before..]));
            }
        }
        let Some(redis) = self.redis.as_ref().filter(|_| !set.redis.is_empty()) else {
            self.admit(cx, set, &decisions);
            return Step::Continue;
        };
        Step::Wait(Box::pin(async move {
            let (keys, args) = self.redis_call(set, &key, now);
            let started = cx.span_start();
            let answer = redis.eval(&scripts::RATE_LIMIT, &keys, &args).await;
            let failure = answer.as_ref().err().map(|e| e.to_string());
            cx.span_end(started, "rate_limit redis", Vec::new(), failure);
            let refund = || {
                if let Some(store) = &set.local_store {
                    store.refund(&key, now, &set.local);
                }
                if let Some(hybrid) = &set.hybrid {
                    hybrid.refund(&key, now);
                }
            };
            match answer {
                Ok(v) if v.len() == 1 + 4 * set.redis.len() => {
                    let remote: Vec<Decision> = v[1..].chunks(4).map(decision).collect();
                    if v[0] != 1 {
                        refund();
                        return Err(self.refusal(set, &set.redis, &remote));
                    }
                    decisions.extend(remote);
                    self.admit(cx, set, &decisions);
                    Ok(())
                }
                other => {
                    let err = match other {
                        Err(e) => e,
                        Ok(_) => super::limits::redis::RedisFailure::Redis(
                            (redis::ErrorKind::Parse, "unexpected script answer").into(),
                        ),
                    };
                    redis.warn("rate_limit", self.on_redis_error.describe(), &err);
                    if let Some(c) = &self.counters {
                        c.error.inc();
                    }
                    match self.on_redis_error {
                        OnRedisError::Allow => {
                            self.admit(cx, set, &decisions);
                            Ok(())
                        }
                        OnRedisError::Deny => {
                            refund();
                            Err(unavailable("rate_limit"))
                        }
                    }
                }
            }
        }))
    }
}

/// One limit's answer from the script (times in microseconds).
fn decision(v: &[i64]) -> Decision {
    let us = |x: i64| (x.max(0) as u64).saturating_mul(1_000);
    Decision {
        allowed: v[0] == 1,
        remaining: v[1].max(0) as u64,
        reset: us(v[2]),
        retry_after: us(v[3]),
    }
}

impl RateLimit {
    /// The limits for this caller: the first configured group they belong
    /// to, else the defaults.
    fn set_for(&self, identity: Option<&Identity>) -> &LimitSet {
        if let Some(id) = identity.filter(|_| self.sets.len() > 1) {
            for set in &self.sets[1..] {
                if id.groups().any(|g| **g == *set.name) {
                    return set;
                }
            }
        }
        &self.sets[0]
    }

    /// The script's keys and arguments for `key` under `set`'s Redis limits.
    /// The keys share a hash tag (one cluster slot).
    fn redis_call(&self, set: &LimitSet, key: &str, now: u64) -> (Vec<String>, Vec<u64>) {
        let tag = stable_hash(&[&self.owner, &set.name, key]);
        let mut keys = Vec::with_capacity(set.redis.len());
        let mut args = Vec::with_capacity(1 + 4 * set.redis.len());
        args.push(now / 1_000);
        for (i, r) in set.redis.iter().enumerate() {
            keys.push(format!(
                "{}:{{{tag:016x}}}:{}:{i}:{}{}:{key}",
                self.owner,
                set.name,
                r.algorithm.name(),
                r.window / 1_000_000
            ));
            args.extend([
                u64::from(r.algorithm.script_code()),
                r.limit,
                r.window / 1_000,
                r.burst,
            ]);
        }
        (keys, args)
    }

    /// Adds the `RateLimit-*` headers of the tightest limit to the response.
    /// `decisions` follow `set.all` (local, hybrid, then Redis limits).
    fn admit(&self, cx: &mut Access<'_>, set: &LimitSet, decisions: &[Decision]) {
        if let Some(c) = &self.counters {
            c.allowed.inc();
        }
        if !self.headers {
            return;
        }
        let tightest = set
            .all
            .iter()
            .zip(decisions)
            .min_by(|(_, a), (_, b)| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)));
        if let Some((rate, d)) = tightest {
            cx.response_headers.extend(headers(set, rate, d));
        }
    }

    /// The 429 for the limit that refused longest.
    fn refusal(&self, set: &LimitSet, rates: &[Rate], decisions: &[Decision]) -> GatewayError {
        if let Some(c) = &self.counters {
            c.rejected.inc();
        }
        let worst = rates
            .iter()
            .zip(decisions)
            .filter(|(_, d)| !d.allowed)
            .max_by_key(|(_, d)| d.retry_after);
        let Some((rate, d)) = worst else {
            return GatewayError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded",
            );
        };
        let retry = ceil_secs(d.retry_after).max(1);
        let mut e = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit exceeded: {} requests per {}; retry in {retry}s",
                rate.limit,
                humantime::format_duration(std::time::Duration::from_nanos(rate.window))
            ),
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(retry));
        if self.headers {
            for (n, v) in headers(set, rate, d) {
                e = e.with_header(n, v);
            }
        }
        e
    }
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy` for one limit.
fn headers(set: &LimitSet, rate: &Rate, d: &Decision) -> [(HeaderName, HeaderValue); 4] {
    let quota = match rate.algorithm {
        super::limits::algorithm::Algorithm::TokenBucket => rate.burst,
        _ => rate.limit,
    };
    [
        (LIMIT.clone(), HeaderValue::from(quota)),
        (REMAINING.clone(), HeaderValue::from(d.remaining)),
        (RESET.clone(), HeaderValue::from(ceil_secs(d.reset))),
        (POLICY.clone(), set.policy.clone()),
    ]
}
