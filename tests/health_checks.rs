//! Active health checks against real upstreams that go down, come back,
//! answer the wrong body, or hang.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;

/// An upstream answering its name, whose `/healthz` follows `healthy`.
async fn with_health(name: &'static str, healthy: Arc<AtomicBool>) -> Upstream {
    upstream_with(move |req: http::Request<hyper::body::Incoming>| {
        let healthy = healthy.clone();
        async move {
            if req.uri().path() == "/healthz" {
                let ok = healthy.load(Ordering::SeqCst);
                let mut r = Response::new(Full::new(Bytes::from_static(if ok {
                    b"status: ok"
                } else {
                    b"status: degraded"
                })));
                *r.status_mut() = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return r;
            }
            Response::new(Full::new(Bytes::from_static(name.as_bytes())))
        }
    })
    .await
}

fn config(targets: &[std::net::SocketAddr], check: &str) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|a| format!("{{ address: '{a}' }}"))
        .collect();
    format!(
        "{}upstreams:\n  - name: pool\n    targets: [{}]\n    timeouts: {{ read: 300ms }}\n    health_check: {check}\nroutes:\n  - name: r\n    match: {{ paths: ['/'] }}\n    upstream: pool\n",
        listeners(1),
        list.join(", ")
    )
}

const FAST: &str = "{ path: /healthz, interval: 50ms, timeout: 30ms, healthy_threshold: 2, unhealthy_threshold: 2 }";

async fn tally(a: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(get(a, "/").await.body).or_insert(0) += 1;
    }
    counts
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_leaves_rotation_and_comes_back() {
    let (ha, hb) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    let (a, b) = (
        with_health("a", ha.clone()).await,
        with_health("b", hb.clone()).await,
    );
    let yaml = config(&[a.addr, b.addr], FAST);
    let gw = start(&yaml);
    let g = addr(&gw, "main");
    assert_eq!(tally(g, 20).await.len(), 2, "both serve");
    hb.store(false, Ordering::SeqCst);
    eventually("b is taken out", async || {
        !tally(g, 10).await.contains_key("b")
    })
    .await;
    assert_eq!(tally(g, 30).await.get("a"), Some(&30));
    // The verdict survives a reload that keeps the target.
    apply(
        &gw,
        &yaml.replace("paths: ['/']", "paths: ['/'], methods: [GET]"),
    )
    .expect("applies");
    assert_eq!(tally(g, 10).await.get("a"), Some(&10));
    hb.store(true, Ordering::SeqCst);
    eventually("b is back", async || tally(g, 20).await.contains_key("b")).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_down_is_a_fast_503() {
    let healthy = Arc::new(AtomicBool::new(false));
    let (a, b) = (
        with_health("a", healthy.clone()).await,
        with_health("b", healthy.clone()).await,
    );
    let gw = start(&config(&[a.addr, b.addr], FAST));
    let g = addr(&gw, "main");
    eventually("all down", async || get(g, "/").await.status == 503).await;
    let t = Instant::now();
    let got = get(g, "/").await;
    assert_eq!(
        (got.status.as_u16(), got.code().as_str()),
        (503, "no_healthy_upstream")
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_matching_and_hanging_targets() {
    let healthy = Arc::new(AtomicBool::new(true));
    let a = with_health("a", healthy.clone()).await;
    let hang = raw_upstream(Misbehave::Hang).await;
    let check = "{ path: /healthz, body_contains: 'status: ok', interval: 50ms, timeout: 30ms, healthy_threshold: 1, unhealthy_threshold: 1 }";
    let gw = start(&config(&[a.addr, hang], check));
    let g = addr(&gw, "main");
    // The hanging target never answers its probe and is taken out.
    eventually("the hanging target is out", async || {
        tally(g, 6).await.get("a") == Some(&6)
    })
    .await;
    // A 200 with the wrong body is a failure too.
    healthy.store(false, Ordering::SeqCst);
    eventually("all down", async || get(g, "/").await.status == 503).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unworkable_checks_are_rejected() {
    let a = with_health("a", Arc::new(AtomicBool::new(true))).await;
    for (check, needle) in [
        (
            "{ path: /h, interval: 1s, timeout: 1s }",
            "shorter than `interval`",
        ),
        ("{ path: h }", "must start with '/'"),
        ("{ path: /h, healthy_threshold: 0 }", "between 1 and 100"),
        ("{ path: /h, statuses: [99] }", "not an HTTP status"),
        ("{ path: /h, interval: 1ms, timeout: 0s }", "at least 10ms"),
    ] {
        let err = portcullis::config::load_str(&config(&[a.addr], check), "t", &|_| None)
            .expect_err(check)
            .to_string();
        assert!(err.contains(needle), "{check}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_health_body_is_judged_on_its_beginning() {
    let big = upstream_with(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/healthz" {
            let mut body = b"status: ok\n".to_vec();
            body.extend(std::iter::repeat_n(b'x', 200 * 1024));
            return Response::new(Full::new(Bytes::from(body)));
        }
        Response::new(Full::new(Bytes::from_static(b"big")))
    })
    .await;
    let check = "{ path: /healthz, body_contains: 'status: ok', interval: 50ms, timeout: 40ms, healthy_threshold: 1, unhealthy_threshold: 1 }";
    let gw = start(&config(&[big.addr], check));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(addr(&gw, "main"), "/").await.body,
        "big",
        "a 200KiB body starting with the text passes"
    );
    gw.shutdown().await;
}
