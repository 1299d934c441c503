//! Service discovery by DNS: targets given as names follow their DNS
//! answers, keep connections to addresses that remain, and keep the last
//! good answer when lookups fail. DNS answers are scripted.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;
use portcullis::upstream::dns::Lookup;
use portcullis::{ConfigSource, Gateway};

async fn named(name: &'static str) -> Upstream {
    upstream_with(move |_req| async move {
        Response::new(Full::new(Bytes::from_static(name.as_bytes())))
    })
    .await
}

/// A scripted resolver: answers whatever `answer` holds; `None` fails.
fn scripted(answer: Arc<Mutex<Option<Vec<SocketAddr>>>>) -> Lookup {
    Arc::new(move |_name: String| {
        let a = answer.lock().expect("lock").clone();
        Box::pin(async move { a.ok_or_else(|| std::io::Error::other("SERVFAIL")) })
    })
}

async fn bodies(a: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(a, "/").await.body);
    }
    out
}

async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ok().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_follow_dns_answers_and_keep_the_last_good_one() {
    let (a, b) = (named("a").await, named("b").await);
    let answer = Arc::new(Mutex::new(Some(vec![a.addr])));
    let yaml = format!(
        "{}upstreams:\n  - name: svc\n    targets: [{{ address: 'svc.internal:80' }}]\n    dns_refresh: 50ms\nroutes:\n  - name: r\n    upstream: svc\n",
        listeners(1)
    );
    let gw = Gateway::start_with_lookup(ConfigSource::Inline(yaml), scripted(answer.clone()))
        .expect("starts");
    let g = addr(&gw, "main");
    eventually("a serves", async || {
        bodies(g, 4).await.iter().all(|b| b == "a")
    })
    .await;

    // A second address appears: new connections spread over both.
    *answer.lock().expect("lock") = Some(vec![a.addr, b.addr]);
    eventually("b joins", async || {
        let c = portcullis_client_burst(g).await;
        c.contains(&"a".to_string()) && c.contains(&"b".to_string())
    })
    .await;

    // The first address leaves: its pooled connections are not reused, and
    // connections to the address that remains are kept.
    let b_conns = b.connections.load(Ordering::SeqCst);
    *answer.lock().expect("lock") = Some(vec![b.addr]);
    eventually("a leaves", async || {
        bodies(g, 6).await.iter().all(|x| x == "b")
    })
    .await;
    let a_hits = a.requests.load(Ordering::SeqCst);
    assert!(bodies(g, 20).await.iter().all(|x| x == "b"));
    assert_eq!(
        a.requests.load(Ordering::SeqCst),
        a_hits,
        "nothing reaches the removed address"
    );
    assert!(
        b.connections.load(Ordering::SeqCst) <= b_conns + 1,
        "b's connections were kept"
    );

    // Lookups fail: the last good answer stays in use.
    *answer.lock().expect("lock") = None;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(bodies(g, 10).await.iter().all(|x| x == "b"));
    gw.shutdown().await;
}

/// Several concurrent requests, so that more than one pooled connection is used.
async fn portcullis_client_burst(g: SocketAddr) -> Vec<String> {
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { get(g, "/").await.body }))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_name_resolves_and_dead_addresses_are_skipped() {
    let a = named("a").await;
    // `localhost` may resolve to ::1 as well, where nothing listens: the
    // connect moves on to the address that accepts.
    let yaml = format!(
        "{}upstreams:\n  - name: svc\n    targets: [{{ address: 'localhost:{}' }}]\n    dns_refresh: 50ms\nroutes:\n  - name: r\n    upstream: svc\n",
        listeners(1),
        a.addr.port()
    );
    let gw = start(&yaml);
    let g = addr(&gw, "main");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(bodies(g, 10).await.iter().all(|x| x == "a"));
    gw.shutdown().await;
}
