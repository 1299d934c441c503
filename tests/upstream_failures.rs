//! An upstream that is down, resets, hangs, answers garbage or dies mid-body:
//! the client always gets a clean 502/504 or a detectably truncated response,
//! never a hang, and the gateway keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};

fn config(target: SocketAddr, timeouts: &str) -> String {
    format!(
        "{}upstreams:\n  - name: u\n    targets: [{{ address: '{target}' }}]\n    timeouts: {timeouts}\nroutes:\n  - name: r\n    match: {{ paths: ['/'] }}\n    upstream: u\n  - name: fast\n    match: {{ paths: ['/fast'] }}\n    upstream: u\n    timeouts: {{ read: 100ms }}\n  - name: ok\n    match: {{ paths: ['=/ok'] }}\n    respond: {{ body: fine }}\n",
        listeners(1)
    )
}

async fn assert_still_serving(a: SocketAddr) {
    let got = get(a, "/ok").await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "fine"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_json() {
    // Bind then drop to get a port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = start(&config(dead, "{ connect: 1s }"));
    let a = addr(&gw, "main");
    let got = get(a, "/x").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.code(), "upstream_unreachable");
    assert!(
        !got.body.contains(&dead.port().to_string()),
        "no upstream address leaks: {}",
        got.body
    );
    assert_eq!(
        got.json()["error"]["request_id"],
        got.headers["x-request-id"].to_str().expect("ascii")
    );
    assert_still_serving(a).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_garbage_are_502() {
    for how in [Misbehave::Reset, Misbehave::Garbage] {
        let up = raw_upstream(how).await;
        let gw = start(&config(up, "{ read: 2s }"));
        let a = addr(&gw, "main");
        let got = get(a, "/x").await;
        assert_eq!(got.status, 502, "{how:?}: {}", got.body);
        assert_eq!(got.code(), "upstream_error", "{how:?}");
        assert_still_serving(a).await;
        gw.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_upstream_is_504_after_read_timeout() {
    let up = raw_upstream(Misbehave::Hang).await;
    let gw = start(&config(up, "{ read: 300ms }"));
    let a = addr(&gw, "main");
    let t = Instant::now();
    let got = get(a, "/x").await;
    assert_eq!(got.status, 504);
    assert_eq!(got.code(), "upstream_timeout");
    assert!(
        t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    // The route's own read timeout overrides the upstream's.
    let t = Instant::now();
    assert_eq!(get(a, "/fast").await.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(280),
        "route override applies: {:?}",
        t.elapsed()
    );
    assert_still_serving(a).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_bounds_the_exchange() {
    let up = raw_upstream(Misbehave::Hang).await;
    let gw = start(&config(up, "{ read: 10s, total: 200ms }"));
    let t = Instant::now();
    assert_eq!(get(addr(&gw, "main"), "/x").await.status, 504);
    assert!(t.elapsed() < Duration::from_secs(2));
    gw.shutdown().await;
}

/// A response cut short by the upstream must reach the client as an error,
/// not as a complete-looking body.
async fn assert_truncated(a: SocketAddr) {
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(
            Request::get(format!("http://{a}/x"))
                .body(Full::default())
                .expect("request"),
        ),
    )
    .await
    .expect("headers in time")
    .expect("headers arrive");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .expect("body ends in time, no hang");
    assert!(body.is_err(), "truncation is visible to the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_body_truncates_visibly() {
    let up = raw_upstream(Misbehave::CloseMidBody).await;
    let gw = start(&config(up, "{ read: 2s }"));
    assert_truncated(addr(&gw, "main")).await;
    assert_still_serving(addr(&gw, "main")).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stalling_mid_body_is_cut_after_read_timeout() {
    let up = raw_upstream(Misbehave::StallMidBody).await;
    let gw = start(&config(up, "{ read: 300ms }"));
    assert_truncated(addr(&gw, "main")).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_timeout_cuts_a_stalled_body_before_the_read_timeout() {
    // The headers arrive in time; the body then stalls. The read timeout
    // (10 s) would wait far longer: the total timeout cuts the body.
    let up = raw_upstream(Misbehave::StallMidBody).await;
    let gw = start(&config(up, "{ read: 10s, total: 300ms }"));
    let t = Instant::now();
    assert_truncated(addr(&gw, "main")).await;
    assert!(
        t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(3),
        "cut by the total timeout: {:?}",
        t.elapsed()
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504() {
    // A listener with a backlog of 1 that never accepts: once its queue is
    // full, further SYNs are dropped and connects hang until the timeout.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into())
        .expect("bind");
    sock.listen(0).expect("listen");
    let full: SocketAddr = sock.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        let _ = s.connect(&full.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gw = start(&config(full, "{ connect: 200ms, read: 5s }"));
    let t = Instant::now();
    let got = get(addr(&gw, "main"), "/x").await;
    assert_eq!(got.status, 504, "{}", got.body);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_targets_get_no_traffic_and_an_all_drained_pool_is_refused() {
    let up = echo_upstream().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let yaml = format!(
        "{}upstreams:\n  - name: u\n    targets: [{{ address: '{dead}', weight: 0 }}, {{ address: '{}' }}]\nroutes:\n  - name: r\n    upstream: u\n",
        listeners(1),
        up.addr
    );
    let gw = start(&yaml);
    for _ in 0..10 {
        assert_eq!(
            get(addr(&gw, "main"), "/").await.status,
            200,
            "the draining target is never picked"
        );
    }
    let all_zero = yaml.replace(
        &format!("{{ address: '{}' }}", up.addr),
        &format!("{{ address: '{}', weight: 0 }}", up.addr),
    );
    let err = apply(&gw, &all_zero).expect_err("rejected");
    assert!(
        err.to_string().contains("every target has weight 0"),
        "{err}"
    );
    gw.shutdown().await;
}
