//! Proxying end to end: paths, headers, pooling, streaming, request IDs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};

fn config(up: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        "{}upstreams:\n  - name: echo\n    targets: [{{ address: '{up}' }}]\nroutes:\n  - name: api\n    match: {{ paths: ['/api'] }}\n    upstream: echo\n    strip_prefix: true\n  - name: keep\n    match: {{ paths: ['/keep'] }}\n    upstream: echo\n    host_header: preserve\n{extra_route}",
        listeners(2)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_stripped_prefix_query_and_forwarding_headers() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr, ""));
    let a = addr(&gw, "main");
    let got = send(
        Request::get(format!("http://{a}/api/users/7?x=1&y=%20"))
            .header("host", "api.example.com")
            .header("x-forwarded-for", "6.6.6.6")
            .header("connection", "x-private")
            .header("x-private", "secret")
            .header("proxy-connection", "keep-alive")
            .header("x-request-id", "client-id-1")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let echo = got.json();
    assert_eq!(echo["uri"], "/users/7?x=1&y=%20");
    let h = &echo["headers"];
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "untrusted peer's XFF is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;proto=http;host=\"api.example.com\""
    );
    assert_eq!(
        h["host"],
        up.addr.to_string(),
        "host rewritten to the upstream's by default"
    );
    assert_eq!(h["x-request-id"], "client-id-1");
    assert!(
        h.get("x-private").is_none() && h.get("proxy-connection").is_none(),
        "{h}"
    );
    // Response side: hop-by-hop gone, request id echoed.
    assert!(got.headers.get("x-hop").is_none());
    assert_eq!(got.headers["x-request-id"], "client-id-1");
    assert_eq!(got.headers["x-upstream"], "echo");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_preserve_request_id_generation_and_via() {
    let up = echo_upstream().await;
    let yaml = config(up.addr, "").replace("workers: 2", "workers: 2, via: true");
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let got = get_host(a, "Shop.Example.com:8443", "/keep/x").await;
    let echo = got.json();
    assert_eq!(echo["uri"], "/keep/x", "no strip_prefix on this route");
    assert_eq!(echo["headers"]["host"], "Shop.Example.com:8443");
    assert_eq!(echo["headers"]["via"], "1.1 portcullis");
    assert_eq!(got.headers["via"], "1.1 portcullis");
    let rid = got.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(rid.len(), 32);
    assert_eq!(echo["headers"]["x-request-id"], rid.as_str());
    // A malformed incoming ID is replaced.
    let got = send(
        Request::get(format!("http://{a}/keep"))
            .header("x-request-id", "bad id with spaces")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_ne!(got.headers["x-request-id"], "bad id with spaces");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_extend_forwarding_headers() {
    let up = echo_upstream().await;
    let yaml = config(up.addr, "").replace(
        "address: 127.0.0.1:0 }",
        "address: 127.0.0.1:0, trusted_proxies: ['127.0.0.0/8'] }",
    );
    let gw = start(&yaml);
    let got = send(
        Request::get(format!("http://{}/api", addr(&gw, "main")))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    let h = &got.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let up = echo_upstream().await;
    let yaml = config(up.addr, "").replace("workers: 2", "workers: 1");
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    for _ in 0..20 {
        assert_eq!(get(a, "/api/x").await.status, 200);
    }
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 20);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "keep-alive reuses one connection"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    // Upstream counts the bytes it receives and streams back as many.
    let up = upstream_with(|req: Request<hyper::body::Incoming>| async move {
        let n = req
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
        http::Response::new(Full::new(Bytes::from(vec![b'z'; n])))
    })
    .await;
    let gw = start(&config(up.addr, ""));
    let a = addr(&gw, "main");
    // 8 MiB chunked upload without Content-Length, in 64 KiB chunks.
    let chunks = (0..128).map(|_| {
        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(vec![b'a'; 64 * 1024])))
    });
    let body = StreamBody::new(IterStream(chunks));
    let req = Request::post(format!("http://{a}/api/upload"))
        .body(body)
        .expect("request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client.request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), 8 * 1024 * 1024);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_and_not_forwarded() {
    let up = echo_upstream().await;
    let gw = start(&config(up.addr, ""));
    let a = addr(&gw, "main");
    let (text, _) = raw(
        a,
        b"POST /api/e HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\nhello",
        Duration::from_millis(800),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\"body\":\"hello\""), "{text}");
    assert!(
        !text.contains("\"expect\""),
        "Expect is not sent upstream: {text}"
    );
    gw.shutdown().await;
}

/// A request replayed on a new connection, after its pooled one closed
/// under it, goes out as it first did: the client's headers (repeated ones
/// in order), the gateway's forwarding headers and the request ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_is_sent_unchanged() {
    replayed_unchanged("").await;
}

/// The same, when the upstream's retry policy keeps its own copy of the
/// request: the replay is made from that copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_is_sent_unchanged_from_the_retry_copy() {
    replayed_unchanged("    retries: { attempts: 1, on: [error, 503] }\n").await;
}

async fn replayed_unchanged(upstream_extra: &str) {
    let up = raw_upstream(Misbehave::EchoOnceThenClose).await;
    let yaml = config(up, "").replace("workers: 2", "workers: 1").replacen(
        &format!("targets: [{{ address: '{up}' }}]\n"),
        &format!("targets: [{{ address: '{up}' }}]\n{upstream_extra}"),
        1,
    );
    assert!(yaml.contains(upstream_extra), "{yaml}");
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let req = |id: &str| {
        Request::get(format!("http://{a}/api/x?q=1&r=%20"))
            .header("x-request-id", id)
            .header("accept", "text/html")
            .header("accept", "application/json")
            .header("x-a-rather-long-custom-header-name", &b"v\xc3\xa9 \tw"[..])
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    // The first request opens the connection; the second, sent at once,
    // finds it pooled, and the upstream closes it without reading.
    let first = send(req("first")).await;
    let second = send(req("second")).await;
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (200, 200));
    let lines = |body: &str| -> Vec<String> {
        body.split("\r\n")
            .map(|l| l.replace("second", "first"))
            .collect()
    };
    assert!(
        second.body.contains("x-request-id: second"),
        "{}",
        second.body
    );
    assert_eq!(lines(&first.body), lines(&second.body));
    for want in [
        "GET /x?q=1&r=%20 HTTP/1.1",
        "accept: text/html",
        "accept: application/json",
        "x-forwarded-for: 127.0.0.1",
    ] {
        assert!(first.body.contains(want), "{want} in {}", first.body);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_closed_by_the_upstream_are_replaced() {
    let up = raw_upstream(Misbehave::AnswerOnceThenClose).await;
    let gw = start(&config(up, "").replace("workers: 2", "workers: 1"));
    let a = addr(&gw, "main");
    for i in 0..10 {
        let got = get(a, "/api/x").await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "ok"),
            "request {i}"
        );
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    // A POST with a body is never replayed: it may have had side effects.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let post = || {
        Request::post(format!("http://{a}/api/x"))
            .body(Full::new(Bytes::from_static(b"data")))
            .expect("request")
    };
    assert_eq!(send(post()).await.status, 200);
    assert_eq!(
        send(post()).await.status,
        502,
        "the second POST lands on the doomed pooled connection"
    );
    gw.shutdown().await;
}
