//! Live reload: atomic swaps, rejected documents, listener changes, in-flight
//! requests finishing on their snapshot, 1,000 reloads under load, and
//! graceful shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Response;
use http_body_util::Full;

fn doc(body: &str, extra_listener: &str) -> String {
    format!(
        "{}{extra_listener}routes:\n  - name: r\n    match: {{ paths: ['/'] }}\n    respond: {{ body: '{body}' }}\n",
        listeners(2)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_documents_swap_and_invalid_ones_are_rejected() {
    let gw = start(&doc("one", ""));
    let a = addr(&gw, "main");
    assert_eq!(get(a, "/").await.body, "one");
    assert_eq!(gw.snapshot().revision, 1);
    assert_eq!(apply(&gw, &doc("two", "")).expect("applies"), 2);
    assert_eq!(get(a, "/").await.body, "two");
    assert_eq!(addr(&gw, "main"), a, "the listener socket is kept");
    let bad = doc("three", "").replace("paths: ['/']", "paths: ['nope']");
    let err = apply(&gw, &bad).expect_err("invalid document");
    assert!(
        err.to_string().contains("routes[0].match.paths[0]"),
        "{err}"
    );
    assert_eq!(get(a, "/").await.body, "two", "old snapshot keeps serving");
    assert_eq!(gw.snapshot().revision, 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_live() {
    let gw = start(&doc("x", ""));
    apply(
        &gw,
        &doc("x", "  - { name: extra, address: 127.0.0.1:0 }\n"),
    )
    .expect("applies");
    let extra = addr(&gw, "extra");
    assert_eq!(get(extra, "/").await.body, "x");
    apply(&gw, &doc("x", "")).expect("applies");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(extra).await.is_err(),
        "removed listener no longer accepts"
    );
    assert_eq!(get(addr(&gw, "main"), "/").await.body, "x");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_rejects_the_reload() {
    let gw = start(&doc("old", ""));
    // Occupy a port without SO_REUSEPORT so the gateway cannot share it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let next = doc(
        "new",
        &format!("  - {{ name: clash, address: 127.0.0.1:{port} }}\n"),
    );
    let err = apply(&gw, &next).expect_err("bind fails");
    let msg = err.to_string();
    assert!(
        msg.contains("listener `clash` cannot bind") && msg.contains(&port.to_string()),
        "{msg}"
    );
    assert_eq!(
        get(addr(&gw, "main"), "/").await.body,
        "old",
        "nothing changed"
    );
    assert_eq!(gw.snapshot().revision, 1);
    gw.shutdown().await;
    // At start the same problem is a clear error.
    let err = portcullis::Gateway::start(portcullis::ConfigSource::Inline(next))
        .err()
        .expect("start fails");
    assert!(err.to_string().contains("cannot bind"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_their_snapshot() {
    let slow = upstream_with(|_req| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Response::new(Full::new(Bytes::from_static(b"slow done")))
    })
    .await;
    let with_proxy = format!(
        "{}upstreams:\n  - name: slow\n    targets: [{{ address: '{}' }}]\nroutes:\n  - name: r\n    match: {{ paths: ['/'] }}\n    upstream: slow\n",
        listeners(2),
        slow.addr
    );
    let gw = start(&with_proxy);
    let a = addr(&gw, "main");
    let pending = tokio::spawn(async move { get(a, "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    apply(&gw, &doc("replaced", "")).expect("applies");
    assert_eq!(get(a, "/").await.body, "replaced");
    let got = pending.await.expect("task");
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "slow done"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_reloads_under_load_lose_no_request() {
    let up = echo_upstream().await;
    let proxying = |n: usize| {
        format!(
            "{}upstreams:\n  - name: echo\n    targets: [{{ address: '{}' }}]\nroutes:\n  - name: proxied\n    match: {{ paths: ['/p'] }}\n    upstream: echo\n  - name: r{n}\n    match: {{ paths: ['/'] }}\n    respond: {{ body: 'rev{n}' }}\n",
            listeners(2),
            up.addr
        )
    };
    let gw = Arc::new(start(&proxying(0)));
    let a = addr(&gw, "main");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 2 == 0 { "/p" } else { "/" };
                let req = http::Request::get(format!("http://{a}{path}"))
                    .body(Full::default())
                    .expect("request");
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("error {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let t = Instant::now();
    for n in 1..=1000 {
        let loaded =
            portcullis::config::load_str(&proxying(n), "<test>", &|_| None).expect("valid");
        gw.apply(loaded).expect("applies");
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "1000 reloads in {:?}; {ok} requests ok, {failed} failed",
        t.elapsed()
    );
    assert_eq!(failed, 0);
    assert!(ok > 100, "load actually ran: {ok}");
    assert_eq!(get(a, "/").await.body, "rev1000");
    assert!(
        up.connections.load(Ordering::SeqCst) <= 8,
        "the upstream pool survives reloads"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_then_stops() {
    let slow = upstream_with(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::new(Full::new(Bytes::from_static(b"finished")))
    })
    .await;
    let yaml = format!(
        "{}upstreams:\n  - name: slow\n    targets: [{{ address: '{}' }}]\nroutes:\n  - name: r\n    upstream: slow\n",
        listeners(2),
        slow.addr
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let pending = tokio::spawn(async move { get(a, "/").await });
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(gw.active_connections() >= 1);
    assert!(gw.shutdown().await, "drained within the grace period");
    let got = pending.await.expect("task");
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "finished"));
    assert!(
        tokio::net::TcpStream::connect(a).await.is_err(),
        "no longer accepting"
    );
}
