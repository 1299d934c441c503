//! gRPC through the gateway: HTTP/2 on both sides, streams and trailers
//! intact, gateway errors as gRPC statuses, and `grpc-timeout` deadlines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::grpc::{grpc_frame, grpc_upstream};
use common::*;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

struct Call {
    status: u16,
    headers: HeaderMap,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

async fn call(gw: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Call {
    let mut sender = h2c(gw).await;
    let mut req = Request::post(format!("http://grpc.example.com{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(grpc_frame(b"hello"))).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Call {
        status: parts.status.as_u16(),
        headers: parts.headers,
        data: collected.to_bytes(),
        trailers,
    }
}

fn config(up: SocketAddr) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nupstreams:\n  - {{ name: svc, targets: [{{ address: '{up}' }}], http2: true }}\n  - {{ name: gone, targets: [{{ address: '{dead}' }}], http2: true }}\nroutes:\n  - {{ name: greeter, match: {{ paths: ['/helloworld.Greeter'] }}, upstream: svc }}\n  - {{ name: down, match: {{ paths: ['/down.Service'] }}, upstream: gone }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_keep_their_trailers() {
    let up = grpc_upstream().await;
    let gw = start(&config(up));
    let a = addr(&gw, "main");
    let unary = call(a, "/helloworld.Greeter/SayHello", &[]).await;
    assert_eq!(unary.status, 200);
    assert_eq!(unary.headers["content-type"], "application/grpc");
    assert_eq!(&unary.data[5..], b"reply 0 to 10 bytes");
    let t = unary.trailers.expect("trailers");
    assert_eq!(
        (
            t["grpc-status"].to_str().expect("ascii"),
            t["grpc-message"].to_str().expect("ascii")
        ),
        ("0", "done"),
        "te: trailers reached the service"
    );
    let stream = call(a, "/helloworld.Greeter/Stream", &[("x-count", "3")]).await;
    assert_eq!(stream.data.len(), 3 * (5 + "reply 0 to 10 bytes".len()));
    assert_eq!(stream.trailers.expect("trailers")["grpc-status"], "0");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_are_grpc_statuses_and_deadlines_hold() {
    let up = grpc_upstream().await;
    let gw = start(&config(up));
    let a = addr(&gw, "main");
    let down = call(a, "/down.Service/Call", &[]).await;
    assert_eq!(
        (
            down.status,
            down.headers["grpc-status"].to_str().expect("ascii")
        ),
        (200, "14"),
        "UNAVAILABLE"
    );
    assert!(down.headers.contains_key("grpc-message"));
    let missing = call(a, "/no.Such/Method", &[]).await;
    assert_eq!(missing.headers["grpc-status"], "12", "UNIMPLEMENTED");
    let t = Instant::now();
    let late = call(
        a,
        "/helloworld.Greeter/Slow",
        &[("x-delay-ms", "2000"), ("grpc-timeout", "200m")],
    )
    .await;
    assert_eq!(late.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_grpc_statuses() {
    let up = grpc_upstream().await;
    let yaml = config(up).replace(
        "  - { name: greeter, match: { paths: ['/helloworld.Greeter'] }, upstream: svc }\n",
        "  - { name: greeter, match: { paths: ['/helloworld.Greeter'] }, upstream: svc, plugins: [ { key_auth: {} }, { acl: { allow: [callers] } } ] }\n",
    ) + "consumers:\n  - { name: app, groups: [callers], credentials: { api_keys: ['grpc-key-0123456789'] } }\n  - { name: other, credentials: { api_keys: ['other-key-0123456789'] } }\n";
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let none = call(a, "/helloworld.Greeter/SayHello", &[]).await;
    assert_eq!(none.headers["grpc-status"], "16", "UNAUTHENTICATED");
    let denied = call(
        a,
        "/helloworld.Greeter/SayHello",
        &[("x-api-key", "other-key-0123456789")],
    )
    .await;
    assert_eq!(denied.headers["grpc-status"], "7", "PERMISSION_DENIED");
    let ok = call(
        a,
        "/helloworld.Greeter/SayHello",
        &[("x-api-key", "grpc-key-0123456789")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap_or("")),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_over_the_body_limit_is_resource_exhausted() {
    let up = grpc_upstream().await;
    let yaml = config(up).replace(
        "  - { name: greeter,",
        "  - { name: small, match: { paths: ['/small.Service'] }, upstream: svc, max_body_size: 64B }\n  - { name: greeter,",
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let mut sender = h2c(a).await;
    // Streamed, so no content-length: the limit trips while forwarding.
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..3)
        .map(|_| Ok(hyper::body::Frame::data(grpc_frame(&[7; 40]))))
        .collect();
    let req = Request::post("http://grpc.example.com/small.Service/Upload")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(IterStream(
            frames.into_iter(),
        )))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(
        resp.headers()["grpc-status"],
        "8",
        "RESOURCE_EXHAUSTED: {:?}",
        resp.headers()
    );
    assert_eq!(resp.headers()["x-portcullis-error"], "body_too_large");
    gw.shutdown().await;
}
