//! `quota`: a long-window allowance per consumer (or other key), per hour,
//! day, week or month, aligned to the calendar in a configured time zone
//! (a monthly quota renews at midnight on the 1st there, whatever the
//! month's length or daylight-saving changes). Counters live in Redis so
//! they survive restarts and are shared by every node; `store: local` keeps
//! them in the process (lost on restart). Responses say what is left in
//! `X-Quota-Limit`, `X-Quota-Remaining` and `X-Quota-Reset`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, StatusCode};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Deserialize;

use super::context::{Access, Identity};
use super::limits::key::{KeySpec, OnMissing};
use super::limits::local::LocalStore;
use super::limits::redis::{Redis, RedisDoc, RedisFailure};
use super::limits::{ceil_secs, scripts, unavailable, OnRedisError, Store};
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::clock::Clock;
use crate::proxy::errors::GatewayError;

static LIMIT: HeaderName = HeaderName::from_static("x-quota-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
static RESET: HeaderName = HeaderName::from_static("x-quota-reset");

/// A quota's calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// From the top of each hour.
    Hour,
    /// From local midnight.
    Day,
    /// From local midnight on Monday.
    Week,
    /// From local midnight on the 1st.
    Month,
}

impl Period {
    /// The configuration name (`day`, …), used in keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Requests per period.
    limit: i64,
    /// `hour`, `day`, `week` or `month`.
    period: Period,
    /// IANA time zone the calendar is read in (default `UTC`).
    #[serde(default = "utc")]
    time_zone: String,
    /// Larger (or smaller) allowances for consumer groups; the first
    /// listed group the caller belongs to applies.
    #[serde(default)]
    groups: serde_json::Map<String, serde_json::Value>,
    /// What is counted by (default `consumer`).
    #[serde(default)]
    key: Option<serde_json::Value>,
    /// When a key source is absent: `ip` (default), `allow` or `deny`.
    #[serde(default)]
    on_missing_key: OnMissing,
    /// `redis` (default) or `local`.
    #[serde(default = "redis_store")]
    store: Store,
    /// The Redis server or cluster.
    #[serde(default)]
    redis: Option<RedisDoc>,
    /// When Redis fails or is slow: `allow` (default) or `deny`.
    #[serde(default)]
    on_redis_error: OnRedisError,
    /// Send the `X-Quota-*` headers (default true).
    #[serde(default = "yes")]
    headers: bool,
    /// Most keys kept in memory with `store: local` (default 100000).
    #[serde(default = "max_keys")]
    max_keys: usize,
}

fn utc() -> String {
    "UTC".into()
}
fn redis_store() -> Store {
    Store::Redis
}
fn yes() -> bool {
    true
}
fn max_keys() -> usize {
    100_000
}

/// One period: `[start, end)` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant of the period.
    pub start: u64,
    /// First instant of the next period.
    pub end: u64,
}

/// The compiled plugin.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    groups: Vec<(String, u64)>,
    period: Period,
    tz: TimeZone,
    key: KeySpec,
    on_missing: OnMissing,
    store: Backend,
    on_redis_error: OnRedisError,
    headers: bool,
    namespace: String,
    clock: Clock,
    current: ArcSwap<Window>,
    /// Decision counters, when metrics are recorded.
    counters: Option<crate::observability::metrics::DecisionCounters>,
}

#[derive(Debug)]
enum Backend {
    Local(Arc<LocalStore>),
    Redis(Arc<Redis>),
}

/// Builds `quota` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    let positive = |field: String, n: i64| {
        if n < 1 {
            Err((field, format!("a quota admits at least 1 request, not {n}")))
        } else {
            Ok(n as u64)
        }
    };
    let limit = positive("limit".into(), c.limit)?;
    let mut groups = Vec::new();
    for (name, v) in &c.groups {
        let field = format!("groups.{name}");
        let n = v.as_i64().ok_or_else(|| {
            (
                field.clone(),
                "a group's quota is a number of requests".to_string(),
            )
        })?;
        groups.push((name.clone(), positive(field, n)?));
    }
    let tz = TimeZone::get(&c.time_zone).map_err(|_| {
        (
            "time_zone".to_string(),
            format!(
                "unknown time zone `{}`; use an IANA name like `UTC` or `Europe/Berlin`",
                c.time_zone
            ),
        )
    })?;
    let key = KeySpec::parse(c.key.as_ref(), "consumer")?;
    let period_name = c.period.name();
    let store = match (c.store, &c.redis) {
        (Store::Redis, Some(doc)) => Backend::Redis(Redis::shared(doc, cx)?),
        (Store::Redis, None) => {
            return Err((
                "redis".into(),
                "a quota is kept in Redis (so it survives restarts): add `redis: { url: \
                 redis://host:port }`, or set `store: local` to keep it in memory"
                    .into(),
            ))
        }
        (Store::Local, None) => {
            if c.max_keys == 0 {
                return Err(("max_keys".into(), "keep at least one key".into()));
            }
            let identity = format!("quota|{}|{period_name}|{}", cx.owner, c.time_zone);
            Backend::Local(cx.state.get(&identity, || LocalStore::new(c.max_keys)))
        }
        (Store::Hybrid, _) => {
            return Err((
                "store".into(),
                "a quota is kept in `redis` or `local`, not `hybrid`".into(),
            ))
        }
        (Store::Local, Some(_)) => {
            return Err((
                "redis".into(),
                "`store: local` does not use Redis; remove `redis` or set `store: redis`".into(),
            ))
        }
    };
    let namespace = match &store {
        Backend::Redis(r) => format!("{}:quota:{}:{period_name}", r.prefix, cx.owner),
        Backend::Local(_) => String::new(),
    };
    let clock = cx.state.clock().clone();
    let current = window_at(c.period, &tz, clock.now_nanos());
    Ok(Arc::new(Quota {
        limit,
        groups,
        period: c.period,
        tz,
        key,
        on_missing: c.on_missing_key,
        store,
        on_redis_error: c.on_redis_error,
        headers: c.headers,
        namespace,
        clock,
        current: ArcSwap::from_pointee(current),
        counters: cx
            .state
            .recording_metrics()
            .map(|m| crate::observability::metrics::DecisionCounters::new(&m, cx.owner, "quota")),
    }))
}

/// The calendar period holding `now` (nanoseconds since the epoch).
pub fn window_at(period: Period, tz: &TimeZone, now: u64) -> Window {
    let ts = Timestamp::from_nanosecond(i128::from(now)).unwrap_or(Timestamp::UNIX_EPOCH);
    let zoned = ts.to_zoned(tz.clone());
    let bounds = || -> Result<(Zoned, Zoned), jiff::Error> {
        let day = zoned.start_of_day()?;
        Ok(match period {
            Period::Hour => {
                let start = zoned
                    .with()
                    .minute(0)
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()?;
                let end = start.checked_add(1.hour())?;
                (start, end)
            }
            Period::Day => (day.clone(), day.tomorrow()?.start_of_day()?),
            Period::Week => {
                let back = i64::from(zoned.weekday().to_monday_zero_offset());
                let start = day.checked_sub(back.days())?.start_of_day()?;
                let end = start.checked_add(7.days())?.start_of_day()?;
                (start, end)
            }
            Period::Month => {
                let start = zoned.first_of_month()?.start_of_day()?;
                let end = start.checked_add(1.month())?.start_of_day()?;
                (start, end)
            }
        })
    };
    let nanos = |z: &Zoned| z.timestamp().as_nanosecond().max(0) as u64;
    match bounds() {
        Ok((s, e)) => Window {
            start: nanos(&s),
            end: nanos(&e),
        },
        // Only at the ends of jiff's range (years ±9999): one fixed day.
        Err(_) => Window {
            start: now,
            end: now.saturating_add(86_400_000_000_000),
        },
    }
}

impl Plugin for Quota {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn phase(&self) -> Phase {
        Phase::Limits
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let limit = self.limit_for(cx.identity.as_ref());
        let key = match self.key.resolve(cx, self.on_missing, "quota") {
            Ok(Some(k)) => k,
            Ok(None) => return Step::Continue,
            Err(e) => return Step::Reject(e),
        };
        let now = self.clock.now_nanos();
        let window = self.window(now);
        match &self.store {
            Backend::Local(store) => {
                let used = store.update(&key, now, 1, |cells| {
                    let cell = &mut cells[0];
                    if cell.a != window.start {
                        cell.a = window.start;
                        cell.b = 0;
                    }
                    let admitted = cell.b < limit;
                    if admitted {
                        cell.b += 1;
                    }
                    ((admitted, cell.b), window.end)
                });
                self.answer(cx, used, limit, now, window).into()
            }
            Backend::Redis(redis) => Step::Wait(Box::pin(async move {
                let key = format!("{}:{}:{key}", self.namespace, window.start / 1_000_000_000);
                let args = [limit, window.end / 1_000_000_000];
                let started = cx.span_start();
                let answer = redis.eval(&scripts::QUOTA, &[key], &args).await;
                let failure = answer.as_ref().err().map(|e| e.to_string());
                cx.span_end(started, "quota redis", Vec::new(), failure);
                match answer {
                    Ok(v) if v.len() == 2 => {
                        self.answer(cx, (v[0] == 1, v[1].max(0) as u64), limit, now, window)
                    }
                    other => {
                        let err = match other {
                            Err(e) => e,
                            Ok(_) => RedisFailure::Redis(
                                (redis::ErrorKind::Parse, "unexpected script answer").into(),
                            ),
                        };
                        redis.warn("quota", self.on_redis_error.describe(), &err);
                        if let Some(c) = &self.counters {
                            c.error.inc();
                        }
                        match self.on_redis_error {
                            OnRedisError::Allow => {
                                // Let through: counted like rate_limit's fail-open.
                                if let Some(c) = &self.counters {
                                    c.allowed.inc();
                                }
                                Ok(())
                            }
                            OnRedisError::Deny => Err(unavailable("quota")),
                        }
                    }
                }
            })),
        }
    }
}

impl Quota {
    /// The allowance of this caller: the first listed group they are in,
    /// else the default.
    fn limit_for(&self, identity: Option<&Identity>) -> u64 {
        if let Some(id) = identity {
            for (group, limit) in &self.groups {
                if id.groups().any(|g| **g == **group) {
                    return *limit;
                }
            }
        }
        self.limit
    }

    /// The current period, recomputed only when one ends.
    fn window(&self, now: u64) -> Window {
        let w = **self.current.load();
        if (w.start..w.end).contains(&now) {
            return w;
        }
        let fresh = window_at(self.period, &self.tz, now);
        self.current.store(Arc::new(fresh));
        fresh
    }

    /// Headers on admission, 429 when the allowance is used up.
    fn answer(
        &self,
        cx: &mut Access<'_>,
        (admitted, used): (bool, u64),
        limit: u64,
        now: u64,
        window: Window,
    ) -> Result<(), GatewayError> {
        let reset = ceil_secs(window.end.saturating_sub(now));
        let headers = [
            (LIMIT.clone(), HeaderValue::from(limit)),
            (
                REMAINING.clone(),
                HeaderValue::from(limit.saturating_sub(used)),
            ),
            (RESET.clone(), HeaderValue::from(reset)),
        ];
        if let Some(c) = &self.counters {
            if admitted { &c.allowed } else { &c.rejected }.inc();
        }
        if admitted {
            if self.headers {
                cx.response_headers.extend(headers);
            }
            return Ok(());
        }
        let mut e = GatewayError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "the quota of {limit} requests per {} is used up; it renews in {reset}s",
                self.period.name()
            ),
        )
        .with_header(http::header::RETRY_AFTER, HeaderValue::from(reset.max(1)));
        if self.headers {
            for (n, v) in headers {
                e = e.with_header(n, v);
            }
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        let ts: Timestamp = s.parse().unwrap();
        ts.as_nanosecond() as u64
    }

    #[test]
    fn periods_follow_the_calendar_of_the_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let utc = TimeZone::UTC;
        // 30 Nov 23:30 UTC is already 1 Dec in Berlin.
        let now = at("2026-11-30T23:30:00Z");
        let m = window_at(Period::Month, &berlin, now);
        assert_eq!(m.start, at("2026-11-30T23:00:00Z"));
        assert_eq!(m.end, at("2026-12-31T23:00:00Z"));
        let m = window_at(Period::Month, &utc, now);
        assert_eq!(
            (m.start, m.end),
            (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z"))
        );
        // The day of the spring DST change has 23 hours.
        let d = window_at(Period::Day, &berlin, at("2026-03-29T12:00:00Z"));
        assert_eq!(d.end - d.start, 23 * 3_600_000_000_000);
        // Weeks start on Monday: 22 Nov 2026 is a Sunday.
        let w = window_at(Period::Week, &utc, at("2026-11-22T10:00:00Z"));
        assert_eq!(
            (w.start, w.end),
            (at("2026-11-16T00:00:00Z"), at("2026-11-23T00:00:00Z"))
        );
        let h = window_at(Period::Hour, &utc, at("2026-11-22T10:59:59Z"));
        assert_eq!(
            (h.start, h.end),
            (at("2026-11-22T10:00:00Z"), at("2026-11-22T11:00:00Z"))
        );
    }
}
