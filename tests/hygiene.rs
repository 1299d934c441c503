//! Client-side protocol hygiene: size limits, malformed and ambiguous
//! framing, request-smuggling shapes, slow clients. Each gets a clear status,
//! and the gateway keeps serving.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_millis(1500);

async fn setup() -> (portcullis::Gateway, std::net::SocketAddr, Upstream) {
    let up = echo_upstream().await;
    let yaml = format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n    max_header_size: 2KiB\n    max_headers: 20\n    max_uri_length: 64\n    max_body_size: 1KiB\n    header_read_timeout: 400ms\n    body_read_timeout: 300ms\nupstreams:\n  - name: echo\n    targets: [{{ address: '{}' }}]\nroutes:\n  - name: api-host\n    match: {{ hosts: [api.example.com] }}\n    respond: {{ body: api-host }}\n  - name: big\n    match: {{ paths: ['/big'] }}\n    upstream: echo\n    max_body_size: 4KiB\n  - name: all\n    upstream: echo\n",
        up.addr
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    (gw, a, up)
}

fn status_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_size_count_and_uri_limits() {
    let (gw, a, _up) = setup().await;
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(4096)
    );
    let (text, closed) = raw(a, big.as_bytes(), WAIT).await;
    assert_eq!(
        status_line(&text),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert!(closed);
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (text, _) = raw(
        a,
        format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(
        status_line(&text),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let long = format!("/{}", "p".repeat(100));
    let got = get(a, &long).await;
    assert_eq!(got.status, 414);
    assert_eq!(got.code(), "uri_too_long");
    assert_eq!(get(a, "/fine").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_by_length_and_by_stream() {
    let (gw, a, up) = setup().await;
    // Declared too large: 413 before any body is read, no 100-continue.
    let (text, closed) = raw(
        a,
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
    assert!(closed);
    // Chunked, no length: cut when the stream crosses the limit.
    let chunk = format!("800\r\n{}\r\n", "b".repeat(0x800));
    let req = format!(
        "POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let (text, _) = raw(a, req.as_bytes(), WAIT).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // The route override raises the limit.
    let (text, _) = raw(a, req.replace("/x", "/big").as_bytes(), WAIT).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(up.requests.load(Ordering::SeqCst) >= 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused() {
    let (gw, a, up) = setup().await;
    // Content-Length with Transfer-Encoding: the body is read as chunked
    // (RFC 9112 §6.1), the length discarded and the connection closed after
    // one response, so the smuggled request behind it is never served.
    let (text, closed) = raw(
        a,
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "exactly one response: {text}"
    );
    assert!(closed, "connection closed after an ambiguous request");
    assert!(!text.contains("/smuggled"), "{text}");
    for (req, want) in [
        // Codings other than plain chunked.
        (
            "POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        (
            "POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: identity\r\n\r\n",
            "400",
        ),
        (
            "POST /x HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
        ),
        // Conflicting or malformed lengths.
        (
            "POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            "400",
        ),
        (
            "POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: +3\r\n\r\nabc",
            "400",
        ),
        // Malformed header lines.
        ("GET /x HTTP/1.1\r\nhost: x\r\nbad header: 1\r\n\r\n", "400"),
        ("GET /x HTTP/1.1\r\nhost: x\r\nx-ctl: a\x01b\r\n\r\n", "400"),
        (
            "GET /x HTTP/1.1\r\nhost: x\r\nx-fold: a\r\n  folded\r\n\r\n",
            "400",
        ),
        // Host problems.
        ("GET /x HTTP/1.1\r\n\r\n", "400"),
        ("GET /x HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", "400"),
        ("GET /x HTTP/1.1\r\nhost: a b\r\n\r\n", "400"),
        // Request targets.
        (
            "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
            "405",
        ),
        ("OPTIONS * HTTP/1.1\r\nhost: x\r\n\r\n", "400"),
        ("GET /x HTTP/9.9\r\nhost: x\r\n\r\n", "505"),
    ] {
        let (text, _) = raw(a, req.as_bytes(), WAIT).await;
        let line = status_line(&text);
        let ok = line.split(' ').nth(1) == Some(want)
            || (want == "505" && line.split(' ').nth(1) == Some("400"));
        assert!(ok, "{req:?} -> {line:?} (want {want})");
    }
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        1,
        "only the first, framed request reached the upstream"
    );
    assert_eq!(get(a, "/still-ok").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_routes_by_its_authority() {
    let (gw, a, _up) = setup().await;
    let (text, _) = raw(
        a,
        b"GET http://api.example.com/anything HTTP/1.1\r\nhost: other.example.com\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("api-host"), "{text}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let (gw, a, _up) = setup().await;
    // Slowloris: a head that never completes is closed after header_read_timeout.
    let t = Instant::now();
    let (_, closed) = raw(
        a,
        b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: 1\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        closed && t.elapsed() < Duration::from_secs(2),
        "closed={closed} after {:?}",
        t.elapsed()
    );
    // Idle keep-alive connections are closed by the same timer.
    let t = Instant::now();
    let (text, closed) = raw(
        a,
        b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200") && closed && t.elapsed() < Duration::from_secs(2));
    // A body that stops arriving fails with 408.
    let (text, _) = raw(
        a,
        b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhalf",
        WAIT,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    gw.shutdown().await;
}
