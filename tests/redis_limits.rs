//! Limits kept in a real Redis (standalone and a three-node Cluster),
//! shared by two real gateway instances: exactness under concurrency, the
//! failure policies when Redis stops, hangs or was never there, and quotas
//! that survive a gateway restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{free_port, RedisCluster, RedisServer};
use common::*;
use http::StatusCode;
use portcullis::clock::Clock;
use portcullis::Gateway;

/// 2026-11-22T10:00:00Z.
const T0: u64 = 1_795_341_600 * 1_000_000_000;

/// A config whose `/probe` route fails closed until Redis answers, beside
/// the route under test.
fn config(redis: &str, plugin: &str) -> String {
    format!(
        "{}consumers:\n  - {{ name: ada, groups: [gold], credentials: {{ api_keys: [ada-key-12345678] }} }}\nroutes:\n  - name: probe\n    match: {{ paths: ['=/probe'] }}\n    respond: {{}}\n    plugins:\n      - rate_limit: {{ limit: 1000000, window: 1s, key: ip, store: redis, on_redis_error: deny, redis: {redis} }}\n  - name: limited\n    match: {{ paths: ['/t'] }}\n    respond: {{ json: {{ ok: true }} }}\n    plugins:\n      - key_auth: {{ anonymous: ada }}\n      - {plugin}\n",
        listeners(2)
    )
}

fn standalone(server: &RedisServer, extra: &str) -> String {
    format!("{{ url: '{}'{extra} }}", server.url())
}

/// Waits until the gateway at `a` talks to Redis.
async fn connected(a: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(a, "/probe").await.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "the gateway never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two gateway nodes on the same config and clock, both talking to Redis.
async fn two_nodes(yaml: &str, clock: &Clock) -> (Gateway, Gateway, SocketAddr, SocketAddr) {
    let (one, two) = (start_with_clock(yaml, clock), start_with_clock(yaml, clock));
    let (a, b) = (addr(&one, "main"), addr(&two, "main"));
    connected(a).await;
    connected(b).await;
    (one, two, a, b)
}

async fn admitted(a: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(get_with(a, path, headers).await.status == StatusCode::OK);
    }
    ok
}

#[tokio::test]
async fn two_gateways_sharing_redis_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    for algorithm in ["fixed_window", "sliding_window", "token_bucket"] {
        let clock = Clock::manual(T0);
        let yaml = config(
            &standalone(&redis, ""),
            &format!(
                "rate_limit: {{ limit: 100, window: 1m, key: route, algorithm: {algorithm}, store: redis, redis: {} }}",
                standalone(&redis, "")
            ),
        );
        let (one, two, a, b) = two_nodes(&yaml, &clock).await;
        // 64 clients at once, half on each node, 400 requests for 100 places.
        let mut tasks = Vec::new();
        for i in 0..64 {
            let target = if i % 2 == 0 { a } else { b };
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..6 + usize::from(i < 16) {
                    ok += usize::from(get(target, "/t").await.status == StatusCode::OK);
                }
                ok
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 100, "{algorithm}: no overshoot across two nodes");
        clock.advance(Duration::from_secs(120));
        assert_eq!(
            admitted(a, "/t", &[], 60).await + admitted(b, "/t", &[], 60).await,
            100,
            "{algorithm}"
        );
        one.shutdown().await;
        two.shutdown().await;
        redis.cli(&["flushall"]);
    }
}

#[tokio::test]
async fn redis_limits_count_together_with_headers_and_groups() {
    let redis = RedisServer::start();
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &config(
            &standalone(&redis, ""),
            &format!(
                "rate_limit:\n          key: ip\n          store: redis\n          algorithm: fixed_window\n          redis: {}\n          limits: [{{ limit: 2, window: 1s }}, {{ limit: 5, window: 1h }}]\n          groups:\n            gold: [{{ limit: 3, window: 1s, store: local }}, {{ limit: 4, window: 1h }}]",
                standalone(&redis, "")
            ),
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    connected(a).await;
    // The anonymous caller is `ada` (gold): 3 per second locally, 4 per hour in Redis.
    let mut gold = 0;
    for _ in 0..3 {
        gold += admitted(a, "/t", &[], 5).await;
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(
        gold, 4,
        "the hourly Redis limit; refusals did not count locally"
    );
    let r = get(a, "/t").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["ratelimit-policy"], "3;w=1, 4;w=3600");
    assert_eq!(r.headers["ratelimit-limit"], "4");
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 3000
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn failure_policies_apply_when_redis_stops_and_counting_resumes_after() {
    let mut redis = RedisServer::start();
    let clock = Clock::manual(T0);
    let url = standalone(&redis, "");
    let plugin = |policy: &str| {
        format!(
            "rate_limit: {{ limit: 3, window: 1m, key: ip, store: redis, on_redis_error: {policy}, redis: {url} }}"
        )
    };
    let open = start_with_clock(&config(&url, &plugin("allow")), &clock);
    let a = addr(&open, "main");
    connected(a).await;
    assert_eq!(admitted(a, "/t", &[], 5).await, 3);
    redis.stop();
    // Fail open: everything passes, uncounted, without RateLimit headers.
    for _ in 0..5 {
        let r = get(a, "/t").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.headers.get("ratelimit-remaining").is_none());
    }
    redis.restart();
    // The restarted Redis is empty: counters start over (documented).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(a, "/t").await;
        if r.headers.get("ratelimit-remaining").is_some() {
            assert_eq!(r.headers["ratelimit-remaining"], "2");
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open.shutdown().await;

    let closed = start_with_clock(&config(&url, &plugin("deny")), &clock);
    let a = addr(&closed, "main");
    connected(a).await;
    redis.stop();
    let r = get(a, "/t").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "limit_store_unavailable");
    assert_eq!(r.headers["retry-after"], "1");
    closed.shutdown().await;
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() {
    let redis = RedisServer::start();
    let clock = Clock::manual(T0);
    // The probe uses the same settings as the route, hence the same
    // connections: `connected` then waits for the ones under test (with
    // other settings they are a pool of their own, which may connect later
    // and fail the request at once instead of after the timeout).
    let hung = standalone(&redis, ", timeout: 150ms");
    let gw = start_with_clock(
        &config(
            &hung,
            &format!(
                "rate_limit: {{ limit: 3, window: 1m, key: ip, store: redis, on_redis_error: deny, redis: {hung} }}"
            ),
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    connected(a).await;
    redis.pause();
    let started = Instant::now();
    let r = get(a, "/t").await;
    let waited = started.elapsed();
    redis.resume();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited >= Duration::from_millis(140) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_unreachable_at_start_then_appearing() {
    let port = free_port();
    let url = format!("{{ url: 'redis://127.0.0.1:{port}' }}");
    let clock = Clock::manual(T0);
    let gw = start_with_clock(
        &config(
            &url,
            &format!("rate_limit: {{ limit: 2, window: 1m, key: ip, store: redis, redis: {url} }}"),
        ),
        &clock,
    );
    let a = addr(&gw, "main");
    // Serving at once: fail open on the route, fail closed on the probe.
    assert_eq!(get(a, "/t").await.status, StatusCode::OK);
    assert_eq!(
        get(a, "/probe").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let _redis = RedisServer::start_at(port);
    connected(a).await;
    assert_eq!(
        admitted(a, "/t", &[], 4).await,
        2,
        "counting once Redis is there"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn quotas_in_redis_survive_a_gateway_restart() {
    let redis = RedisServer::start();
    let clock = Clock::manual(T0);
    let yaml = config(
        &standalone(&redis, ""),
        &format!(
            "quota: {{ limit: 3, period: month, redis: {} }}",
            standalone(&redis, "")
        ),
    );
    let first = start_with_clock(&yaml, &clock);
    let a = addr(&first, "main");
    connected(a).await;
    let r = get(a, "/t").await;
    assert_eq!(r.headers["x-quota-remaining"], "2");
    assert_eq!(admitted(a, "/t", &[], 1).await, 1);
    first.shutdown().await;
    drop(first);

    let second = start_with_clock(&yaml, &clock);
    let a = addr(&second, "main");
    connected(a).await;
    let r = get(a, "/t").await;
    assert_eq!(
        r.headers["x-quota-remaining"], "0",
        "the count came back from Redis"
    );
    let r = get(a, "/t").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "quota_exceeded");
    // 1 December 00:00 UTC: a new month.
    clock.set(1_796_083_200 * 1_000_000_000);
    assert_eq!(admitted(a, "/t", &[], 4).await, 3);
    let ttl: i64 = redis
        .cli(&["--scan", "--pattern", "portcullis:quota:*"])
        .lines()
        .map(|k| redis.cli(&["ttl", k]).parse::<i64>().unwrap())
        .min()
        .unwrap();
    assert!(ttl > 0, "quota keys expire (ttl {ttl})");
    second.shutdown().await;
}

#[tokio::test]
async fn redis_cluster_keeps_every_key_exact() {
    let cluster = RedisCluster::start();
    let seeds = format!(
        "{{ cluster: [{}] }}",
        cluster
            .urls()
            .iter()
            .map(|u| format!("'{u}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let clock = Clock::manual(T0);
    let yaml = config(
        &seeds,
        &format!(
            "rate_limit: {{ key: 'header:x-client', store: redis, redis: {seeds}, limits: [{{ limit: 3, window: 1m }}, {{ limit: 4, window: 1h, algorithm: token_bucket }}] }}"
        ),
    );
    let (one, two, a, b) = two_nodes(&yaml, &clock).await;
    // Many clients hash to slots on every node.
    for c in 0..24 {
        let id = format!("client-{c}");
        let h = [("x-client", id.as_str())];
        let n = admitted(a, "/t", &h, 3).await + admitted(b, "/t", &h, 3).await;
        assert_eq!(n, 3, "{id}");
    }
    let keys: usize = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["dbsize"]).parse::<usize>().unwrap())
        .filter(|n| *n > 0)
        .count();
    assert_eq!(keys, 3, "counters are spread over all three nodes");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn hybrid_counters_sync_in_batches_with_bounded_overshoot() {
    let redis = RedisServer::start();
    let clock = Clock::manual(T0);
    let yaml = config(
        &standalone(&redis, ""),
        &format!(
            "rate_limit: {{ limit: 100, window: 1m, key: route, algorithm: fixed_window, store: hybrid, sync_interval: 50ms, redis: {} }}",
            standalone(&redis, "")
        ),
    );
    let (one, two, a, b) = two_nodes(&yaml, &clock).await;
    // Each node admits on what it knows; between syncs it cannot see the other.
    let (ra, rb) = tokio::join!(admitted(a, "/t", &[], 60), admitted(b, "/t", &[], 60));
    let first = ra + rb;
    assert!(
        (100..=120).contains(&first),
        "admitted {first}: the overshoot is bounded by one node's share"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Once synced, both nodes know the window is used up.
    assert_eq!(
        admitted(a, "/t", &[], 10).await + admitted(b, "/t", &[], 10).await,
        0
    );
    let key = redis.cli(&["--scan", "--pattern", "*:hybrid:*"]);
    let total: usize = redis.cli(&["get", key.trim()]).parse().unwrap();
    assert_eq!(total, first, "every admission reached Redis exactly once");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn quota_failure_policies_apply_when_redis_was_never_there() {
    let url = format!("{{ url: 'redis://127.0.0.1:{}' }}", free_port());
    let clock = Clock::manual(T0);
    for (policy, status) in [
        ("allow", StatusCode::OK),
        ("deny", StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let gw = start_with_clock(
            &config(
                &url,
                &format!(
                    "quota: {{ limit: 1, period: day, on_redis_error: {policy}, redis: {url} }}"
                ),
            ),
            &clock,
        );
        let a = addr(&gw, "main");
        for _ in 0..3 {
            let r = get(a, "/t").await;
            assert_eq!(r.status, status, "{policy}");
            assert!(
                r.headers.get("x-quota-remaining").is_none(),
                "{policy}: nothing was counted"
            );
        }
        if policy == "deny" {
            assert_eq!(get(a, "/t").await.code(), "limit_store_unavailable");
        }
        gw.shutdown().await;
    }
}
