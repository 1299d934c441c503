//! `rate_limit`, `quota` and `concurrency_limit` with in-process counters,
//! through the real gateway, with a manual clock: exactly N admitted per
//! window for every algorithm, the headers, keys, groups and bad configs.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use portcullis::clock::Clock;

/// 2026-11-22T10:00:00Z: window-aligned for seconds, minutes and hours.
const T0: u64 = 1_795_341_600 * 1_000_000_000;

fn routes(plugins: &str) -> String {
    format!(
        "{}consumers:\n  - {{ name: gold-user, groups: [gold], credentials: {{ api_keys: [gold-key-123456] }} }}\n  - {{ name: free-user, groups: [free], credentials: {{ api_keys: [free-key-123456] }} }}\nroutes:\n  - name: limited\n    match: {{ paths: ['/t/{{tenant}}'] }}\n    respond: {{ json: {{ ok: true }} }}\n    plugins:\n{plugins}",
        listeners(2)
    )
}

async fn statuses(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_with(addr, path, headers).await.status.as_u16());
    }
    out
}

fn count(v: &[u16], status: u16) -> usize {
    v.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn every_algorithm_admits_exactly_the_limit_per_window() {
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        let clock = Clock::manual(T0);
        let gw = start_with_clock(
            &routes(&format!(
                "      - rate_limit: {{ limit: 5, window: 1m, key: ip, algorithm: {algorithm} }}\n"
            )),
            &clock,
        );
        let a = addr(&gw, "main");
        let first = statuses(a, "/t/x", &[], 8).await;
        assert_eq!(
            first,
            [200, 200, 200, 200, 200, 429, 429, 429],
            "{algorithm}"
        );
        // Two full windows later everything is available again.
        clock.advance(Duration::from_secs(120));
        let again = statuses(a, "/t/x", &[], 8).await;
        assert_eq!(count(&again, 200), 5, "{algorithm}: {again:?}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn headers_count_down_and_refusals_say_when_to_retry() {
    let clock = Clock::manual(T0 + 15_000_000_000);
    let gw = start_with_clock(
        &routes("      - rate_limit: { limit: 3, window: 1m, key: ip, algorithm: fixed_window }\n"),
        &clock,
    );
    let a = addr(&gw, "main");
    for left in ["2", "1", "0"] {
        let r = get(a, "/t/x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["ratelimit-limit"], "3");
        assert_eq!(r.headers["ratelimit-remaining"], left);
        assert_eq!(
            r.headers["ratelimit-reset"], "45",
            "the minute ends in 45 s"
        );
        assert_eq!(r.headers["ratelimit-policy"], "3;w=60");
    }
    let r = get(a, "/t/x").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "rate_limited");
    assert_eq!(r.headers["retry-after"], "45");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert!(r.json()["error"]["request_id"].is_string());
    clock.advance(Duration::from_secs(44));
    assert_eq!(get(a, "/t/x").await.headers["retry-after"], "1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(get(a, "/t/x").await.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn headers_can_be_turned_off_but_retry_after_stays() {
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &routes("      - rate_limit: { limit: 1, window: 1m, key: ip, algorithm: fixed_window, headers: false }\n"),
        &clock,
    );
    let a = addr(&gw, "main");
    let ok = get(a, "/t/x").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("ratelimit")));
    let refused = get(a, "/t/x").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["retry-after"], "60");
    assert!(refused
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("ratelimit")));
    gw.shutdown().await;
}

#[tokio::test]
async fn several_limits_apply_together_and_the_tightest_is_reported() {
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &routes(
            "      - rate_limit:\n          key: ip\n          algorithm: fixed_window\n          limits:\n            - { limit: 2, window: 1s }\n            - { limit: 5, window: 1h }\n",
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    let mut admitted = 0;
    for _ in 0..10 {
        let got = statuses(a, "/t/x", &[], 3).await;
        admitted += count(&got, 200);
        assert!(count(&got, 200) <= 2, "2 per second: {got:?}");
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(admitted, 5, "5 per hour in all; refusals did not count");
    let r = get(a, "/t/x").await;
    assert_eq!(r.headers["ratelimit-policy"], "2;w=1, 5;w=3600");
    assert_eq!(
        r.headers["ratelimit-limit"], "5",
        "the hourly limit refused"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn consumer_groups_get_their_own_limits() {
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &routes(
            "      - key_auth: {}\n      - rate_limit:\n          limit: 2\n          window: 1m\n          groups:\n            gold: [{ limit: 4, window: 1m }]\n",
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    let gold = statuses(a, "/t/x", &[("x-api-key", "gold-key-123456")], 6).await;
    let free = statuses(a, "/t/x", &[("x-api-key", "free-key-123456")], 6).await;
    assert_eq!(count(&gold, 200), 4, "{gold:?}");
    assert_eq!(count(&free, 200), 2, "{free:?}");
    let r = get_with(a, "/t/x", &[("x-api-key", "gold-key-123456")]).await;
    assert_eq!(r.headers["ratelimit-policy"], "4;w=60");
    gw.shutdown().await;
}

#[tokio::test]
async fn keys_from_headers_and_captures_count_separately() {
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &routes("      - rate_limit: { limit: 2, window: 1m, key: ['header:x-team', 'capture:tenant'] }\n"),
        &clock,
    );
    let a = addr(&gw, "main");
    let h = [("x-team", "red")];
    assert_eq!(count(&statuses(a, "/t/one", &h, 4).await, 200), 2);
    assert_eq!(
        count(&statuses(a, "/t/two", &h, 4).await, 200),
        2,
        "other capture"
    );
    let blue = [("x-team", "blue")];
    assert_eq!(
        count(&statuses(a, "/t/one", &blue, 4).await, 200),
        2,
        "other header"
    );
    // A value cannot imitate a combination of parts.
    let forged = [("x-team", "red|p3:one")];
    assert_eq!(count(&statuses(a, "/t/one", &forged, 4).await, 200), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_absent_key_falls_back_as_configured() {
    let clock = Clock::manual(T0);
    for (policy, expect) in [
        ("ip", vec![200, 429, 429]),
        ("allow", vec![200, 200, 200]),
        ("deny", vec![400, 400, 400]),
    ] {
        let gw = start_with_clock(
            &routes(&format!(
                "      - rate_limit: {{ limit: 1, window: 1m, key: 'header:x-team', on_missing_key: {policy} }}\n"
            )),
            &clock,
        );
        let a = addr(&gw, "main");
        assert_eq!(statuses(a, "/t/x", &[], 3).await, expect, "{policy}");
        if policy == "deny" {
            assert_eq!(get(a, "/t/x").await.code(), "limit_key_missing");
        }
        gw.shutdown().await;
    }
    // `consumer` without a consumer counts by IP (anonymous callers too).
    let gw = start_with_clock(
        &routes("      - rate_limit: { limit: 1, window: 1m }\n"),
        &clock,
    );
    let a = addr(&gw, "main");
    assert_eq!(statuses(a, "/t/x", &[], 2).await, [200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_callers_get_resource_exhausted() {
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &routes("      - rate_limit: { limit: 1, window: 1m, key: ip }\n"),
        &clock,
    );
    let a = addr(&gw, "main");
    let call = || {
        Request::post(format!("http://{a}/t/x"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    };
    send(call()).await;
    let r = send(call()).await;
    assert_eq!(r.headers["grpc-status"], "8", "RESOURCE_EXHAUSTED");
    gw.shutdown().await;
}

#[tokio::test]
async fn counters_survive_a_reload_that_keeps_the_limit() {
    let clock = Clock::manual(T0);
    let yaml = routes("      - rate_limit: { limit: 3, window: 1m, key: ip }\n");
    let gw = start_with_clock(&yaml, &clock);
    let a = addr(&gw, "main");
    assert_eq!(count(&statuses(a, "/t/x", &[], 2).await, 200), 2);
    apply(
        &gw,
        &format!("{yaml}  - name: other\n    match: {{ paths: ['/o'] }}\n    respond: {{}}\n"),
    )
    .unwrap();
    assert_eq!(statuses(a, "/t/x", &[], 2).await, [200, 429]);
    gw.shutdown().await;
}

#[tokio::test]
async fn quota_renews_with_the_calendar() {
    // 23:30 UTC on 30 November: in Berlin, already December.
    let clock = Clock::manual(1_796_081_400 * 1_000_000_000);
    let gw = start_with_clock(
        &routes(
            "      - key_auth: {}\n      - quota: { limit: 2, period: day, time_zone: Europe/Berlin, store: local, groups: { gold: 3 } }\n",
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    let free = [("x-api-key", "free-key-123456")];
    let r = get_with(a, "/t/x", &free).await;
    assert_eq!(r.headers["x-quota-limit"], "2");
    assert_eq!(r.headers["x-quota-remaining"], "1");
    assert_eq!(
        r.headers["x-quota-reset"],
        (23 * 3600 + 1800).to_string(),
        "midnight in Berlin"
    );
    let r = get_with(a, "/t/x", &free).await;
    assert_eq!(r.headers["x-quota-remaining"], "0");
    let r = get_with(a, "/t/x", &free).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "quota_exceeded");
    assert_eq!(r.headers["retry-after"], (23 * 3600 + 1800).to_string());
    let gold = statuses(a, "/t/x", &[("x-api-key", "gold-key-123456")], 4).await;
    assert_eq!(count(&gold, 200), 3, "gold's quota is 3");
    clock.advance(Duration::from_secs(23 * 3600 + 1800));
    assert_eq!(
        get_with(a, "/t/x", &free).await.status,
        StatusCode::OK,
        "a new day"
    );
    gw.shutdown().await;
}

/// An upstream whose requests wait until `release` is notified.
async fn gated_upstream(release: Arc<tokio::sync::Semaphore>, seen: Arc<AtomicUsize>) -> Upstream {
    upstream_with(move |_req| {
        let (release, seen) = (release.clone(), seen.clone());
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            release.acquire().await.expect("open").forget();
            Response::new(Full::new(Bytes::from_static(b"done")))
        }
    })
    .await
}

#[tokio::test]
async fn concurrency_limit_frees_slots_when_requests_finish_or_are_cancelled() {
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let up = gated_upstream(release.clone(), seen.clone()).await;
    let yaml = format!(
        "{}upstreams:\n  - {{ name: slow, targets: [{{ address: '{}' }}] }}\nroutes:\n  - name: slow\n    upstream: slow\n    plugins:\n      - concurrency_limit: {{ max: 2, status: 503 }}\n",
        listeners(2),
        up.addr
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let one = tokio::spawn(get(a, "/"));
    let two = tokio::spawn(get(a, "/"));
    while seen.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let third = get(a, "/").await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.code(), "too_many_concurrent_requests");
    release.add_permits(2);
    assert_eq!(one.await.unwrap().status, StatusCode::OK);
    assert_eq!(two.await.unwrap().status, StatusCode::OK);
    // A client that gives up mid-request frees its slot too.
    let quitter = tokio::spawn(get(a, "/"));
    let stuck = tokio::spawn(get(a, "/"));
    while seen.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    quitter.abort();
    let _ = quitter.await;
    let mut freed = false;
    for _ in 0..100 {
        let r = tokio::spawn(get(a, "/"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        if seen.load(Ordering::SeqCst) >= 5 {
            freed = true;
            release.add_permits(2);
            assert_eq!(r.await.unwrap().status, StatusCode::OK);
            break;
        }
        let r = r.await.unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(freed, "the cancelled request's slot came back");
    assert_eq!(stuck.await.unwrap().status, StatusCode::OK);
    gw.shutdown().await;
}

#[test]
fn bad_limit_configs_are_refused_with_their_paths() {
    for (plugin, path, msg) in [
        (
            "rate_limit: { limit: 0, window: 1s }",
            "rate_limit.limit",
            "at least 1 request",
        ),
        (
            "rate_limit: { limit: -5, window: 1s }",
            "rate_limit.limit",
            "at least 1 request",
        ),
        (
            "rate_limit: { limit: 5, window: 0s }",
            "rate_limit.window",
            "at least 1ms",
        ),
        (
            "rate_limit: { limit: 5, window: 500us }",
            "rate_limit.window",
            "at least 1ms",
        ),
        (
            "rate_limit: { limit: 5, window: 60d }",
            "rate_limit.window",
            "quota",
        ),
        (
            "rate_limit: { limit: 5 }",
            "rate_limit.window",
            "needs a `window`",
        ),
        ("rate_limit: {}", "rate_limit", "give `limit` and `window`"),
        (
            "rate_limit: { limit: 5, window: 1s, key: user }",
            "rate_limit.key",
            "unknown key source `user`",
        ),
        (
            "rate_limit: { limit: 5, window: 1s, burst: 9 }",
            "rate_limit.burst",
            "token_bucket",
        ),
        (
            "rate_limit: { limit: 5, window: 1s, algorithm: leaky }",
            "rate_limit.algorithm",
            "unknown variant",
        ),
        (
            "rate_limit: { limit: 5, window: 1s, store: redis }",
            "rate_limit.store",
            "need a `redis:`",
        ),
        (
            "rate_limit: { limits: [{ limit: 1, window: 1s }, { limit: 0, window: 1m }] }",
            "rate_limit.limits[1].limit",
            "at least 1",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, groups: { gold: [{ limit: 1 }] } }",
            "rate_limit.groups.gold[0]",
            "window",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, groups: { gold: [] } }",
            "rate_limit.groups.gold",
            "at least one limit",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, redis: { url: 'redis://x' } }",
            "rate_limit.redis",
            "no limit is stored in Redis",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: { url: 'http://x' } }",
            "rate_limit.redis.url",
            "not a Redis URL",
        ),
        (
            "rate_limit: { limit: 10000000, window: 1s, algorithm: token_bucket }",
            "rate_limit.limit",
            "microsecond",
        ),
        (
            "rate_limit: { limit: 5, window: 1s, store: hybrid, redis: { url: 'redis://x' } }",
            "rate_limit.algorithm",
            "fixed windows only",
        ),
        (
            "rate_limit: { limit: 5, window: 1s, algorithm: fixed_window, store: hybrid, sync_interval: 1ms, redis: { url: 'redis://x' } }",
            "rate_limit.sync_interval",
            "at most every 10ms",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: {} }",
            "rate_limit.redis",
            "needs `url",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: { url: 'redis://a', cluster: ['redis://b'] } }",
            "rate_limit.redis",
            "not both",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: { url: 'redis://a', pool_size: 0 } }",
            "rate_limit.redis.pool_size",
            "between 1 and 64",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: { url: 'redis://a', timeout: 0s } }",
            "rate_limit.redis.timeout",
            "above zero",
        ),
        (
            "rate_limit: { limit: 1, window: 1s, store: redis, redis: { url: 'redis://a', tls: true } }",
            "rate_limit.redis",
            "unknown field `tls`",
        ),
        (
            "quota: { limit: 1, period: day, store: hybrid }",
            "quota.store",
            "not `hybrid`",
        ),
        (
            "quota: { limit: 10, period: fortnight }",
            "quota.period",
            "unknown variant",
        ),
        (
            "quota: { limit: 10, period: day }",
            "quota.redis",
            "add `redis",
        ),
        (
            "quota: { limit: 10, period: day, store: local, time_zone: Mars/Olympus }",
            "quota.time_zone",
            "unknown time zone",
        ),
        (
            "quota: { limit: 0, period: day, store: local }",
            "quota.limit",
            "at least 1",
        ),
        (
            "quota: { limit: 1, period: day, store: local, groups: { gold: lots } }",
            "quota.groups.gold",
            "number",
        ),
        (
            "concurrency_limit: { max: 0 }",
            "concurrency_limit.max",
            "at least 1",
        ),
        (
            "concurrency_limit: { max: 1, status: 500 }",
            "concurrency_limit.status",
            "429 or 503",
        ),
        (
            "concurrency_limit: { max: 1, key: [ip, 'capture:'] }",
            "concurrency_limit.key[1]",
            "unknown key source",
        ),
    ] {
        let yaml = format!(
            "listeners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nroutes:\n  - name: r\n    respond: {{}}\n    plugins:\n      - {plugin}\n"
        );
        let err = match portcullis::Gateway::start(portcullis::ConfigSource::Inline(yaml)) {
            Ok(_) => panic!("{plugin}: config should be refused"),
            Err(e) => e.to_string(),
        };
        let want = format!("routes[0].plugins[0].{path}");
        assert!(err.contains(&want), "{plugin}: wanted {want} in {err}");
        assert!(err.contains(msg), "{plugin}: wanted `{msg}` in {err}");
    }
}
