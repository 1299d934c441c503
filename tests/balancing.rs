//! Load balancing against several real upstreams: each algorithm's promised
//! distribution (within tolerances), draining, latency awareness and
//! stickiness.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;

/// An upstream that answers with its own name after `delay`.
async fn named(name: &'static str, delay: Duration) -> Upstream {
    upstream_with(move |_req| async move {
        tokio::time::sleep(delay).await;
        Response::new(Full::new(Bytes::from_static(name.as_bytes())))
    })
    .await
}

fn config(lb: &str, targets: &[(&Upstream, u32)], paths: &str) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(u, w)| format!("{{ address: '{}', weight: {w} }}", u.addr))
        .collect();
    format!(
        "{}upstreams:\n  - name: pool\n    targets: [{}]\n    load_balancing: {lb}\nroutes:\n  - name: r\n    match: {{ paths: ['{paths}'] }}\n    upstream: pool\n",
        listeners(1),
        list.join(", ")
    )
}

/// Closed-loop load: `concurrency` clients, each sending its next request as
/// soon as the previous one is answered, `n` requests in all.
async fn tally(
    a: std::net::SocketAddr,
    n: usize,
    concurrency: usize,
    path: &str,
) -> HashMap<String, usize> {
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..n / concurrency {
                    seen.push(get(a, &path).await.body);
                }
                seen
            })
        })
        .collect();
    let mut counts = HashMap::new();
    for c in clients {
        for body in c.await.expect("client") {
            *counts.entry(body).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_follows_weights_exactly() {
    let (a, b) = (
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
    );
    let gw = start(&config("round_robin", &[(&a, 3), (&b, 1)], "/"));
    let counts = tally(addr(&gw, "main"), 40, 1, "/").await;
    assert_eq!((counts["a"], counts["b"]), (30, 10), "{counts:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_two_spreads_evenly_and_skips_draining_targets() {
    let ups = [
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
        named("c", Duration::ZERO).await,
    ];
    let gw = start(&config(
        "random_two",
        &[(&ups[0], 1), (&ups[1], 1), (&ups[2], 0)],
        "/",
    ));
    let counts = tally(addr(&gw, "main"), 400, 4, "/").await;
    assert!(!counts.contains_key("c"), "{counts:?}");
    for name in ["a", "b"] {
        let share = counts[name] as f64 / 400.0;
        assert!((0.35..=0.65).contains(&share), "{name}: {counts:?}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_requests_and_ewma_avoid_a_slow_target() {
    for lb in ["least_requests", "ewma"] {
        let slow = named("slow", Duration::from_millis(60)).await;
        let fast = named("fast", Duration::from_millis(1)).await;
        let gw = start(&config(lb, &[(&slow, 1), (&fast, 1)], "/"));
        // Warm up so ewma has samples of both.
        tally(addr(&gw, "main"), 8, 4, "/").await;
        let counts = tally(addr(&gw, "main"), 120, 6, "/").await;
        let fast_share = counts.get("fast").copied().unwrap_or(0) as f64 / 120.0;
        assert!(fast_share >= 0.7, "{lb}: {counts:?}");
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky_per_key_and_spreads_keys() {
    let ups = [
        named("a", Duration::ZERO).await,
        named("b", Duration::ZERO).await,
        named("c", Duration::ZERO).await,
    ];
    let targets = [(&ups[0], 1), (&ups[1], 1), (&ups[2], 1)];
    let gw = start(&config(
        "{ consistent_hash: { key: 'header:x-user' } }",
        &targets,
        "/",
    ));
    let a = addr(&gw, "main");
    let mut owner = HashMap::new();
    for user in 0..150 {
        for _ in 0..2 {
            let req = Request::get(format!("http://{a}/"))
                .header("x-user", format!("u{user}"))
                .body(Full::default())
                .expect("request");
            let body = send(req).await.body;
            let first = owner.entry(user).or_insert_with(|| body.clone());
            assert_eq!(*first, body, "user {user} stays on one target");
        }
    }
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for t in owner.values() {
        *per_target.entry(t.as_str()).or_default() += 1;
    }
    for name in ["a", "b", "c"] {
        assert!(
            per_target.get(name).copied().unwrap_or(0) >= 25,
            "{per_target:?}"
        );
    }
    gw.shutdown().await;

    // On a path capture: the same id always reaches the same target.
    let gw = start(&config(
        "{ consistent_hash: { key: 'capture:id' } }",
        &targets,
        "/users/{id}",
    ));
    let a = addr(&gw, "main");
    for id in 0..20 {
        let first = get(a, &format!("/users/{id}")).await.body;
        for _ in 0..3 {
            assert_eq!(get(a, &format!("/users/{id}")).await.body, first);
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_knowledge_survives_a_reload() {
    let slow = named("slow", Duration::from_millis(60)).await;
    let fast = named("fast", Duration::from_millis(1)).await;
    let yaml = config("ewma", &[(&slow, 1), (&fast, 1)], "/");
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    tally(a, 8, 4, "/").await;
    apply(
        &gw,
        &yaml.replace("paths: ['/']", "paths: ['/'], methods: [GET]"),
    )
    .expect("applies");
    // Right after the reload the slow target is still known to be slow.
    let counts = tally(a, 40, 4, "/").await;
    assert!(counts.get("fast").copied().unwrap_or(0) >= 30, "{counts:?}");
    gw.shutdown().await;
}
