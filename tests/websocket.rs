//! WebSocket over HTTP/1.1 and HTTP/2 (RFC 8441): the upgrade is proxied,
//! bytes flow both ways, idle sockets are closed, and `max_in_flight` caps
//! open sockets.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that accepts WebSocket upgrades on `/ws` and echoes bytes
/// back as `echo:<bytes>`; other paths get a plain 200.
async fn ws_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"plain",
                        ))));
                    };
                    if !req.uri().path().starts_with("/ws") {
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"plain",
                        ))));
                    }
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let Ok(up) = on.await else { return };
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0
                                || io.write_all(&[b"echo:", &buf[..n]].concat()).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut()
                        .insert("upgrade", "websocket".parse().expect("value"));
                    resp.headers_mut()
                        .insert("connection", "upgrade".parse().expect("value"));
                    let accept = if req.uri().path() == "/ws-bad-accept" {
                        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()
                    } else {
                        portcullis::proxy::upgrade::accept_for(key.as_bytes())
                    };
                    resp.headers_mut()
                        .insert("sec-websocket-accept", accept.parse().expect("value"));
                    if let Some(p) = req.headers().get("sec-websocket-protocol") {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", p.clone());
                    }
                    Ok(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

const HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";

/// Opens a WebSocket through the gateway; returns the stream and the response head.
async fn open(a: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(a).await.expect("connect");
    s.write_all(HANDSHAKE).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn config(up: SocketAddr, route_extra: &str) -> String {
    format!(
        "{}upstreams:\n  - {{ name: ws, targets: [{{ address: '{up}' }}] }}\nroutes:\n  - name: r\n    upstream: ws\n{route_extra}",
        listeners(1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_proxied_both_ways() {
    let up = ws_upstream().await;
    let gw = start(&config(up, ""));
    let a = addr(&gw, "main");
    let (mut s, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("sec-websocket-accept"),
        "{head}"
    );
    for msg in ["hello", "second frame"] {
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
    }
    // A client that closes its half after a last message still gets the
    // answer: the half-close is passed on, and the other direction flows.
    s.write_all(b"last words").await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(rest, b"echo:last words");
    // Requests without the upgrade still proxy normally on the same route.
    assert_eq!(get(a, "/other").await.body, "plain");
    // An upgrade the upstream refuses: its own answer is passed through.
    let refused = String::from_utf8_lossy(HANDSHAKE).replace("GET /ws ", "GET /refuse ");
    let (text, _) = raw(a, refused.as_bytes(), Duration::from_millis(500)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("plain") && !text.contains("upgrade: websocket"),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_close_and_max_in_flight_caps_open_ones() {
    let up = ws_upstream().await;
    let gw = start(&config(
        up,
        "    timeouts: { read: 300ms }\n    max_in_flight: 1\n",
    ));
    let a = addr(&gw, "main");
    let (mut first, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A second socket is over the route's limit while the first is open.
    let (_, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // Silence for longer than the read timeout closes the bridge.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), first.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle socket was closed");
    // Its permit is free again.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_can_be_turned_off_per_listener() {
    let up = ws_upstream().await;
    let yaml = config(up, "").replace(
        "address: 127.0.0.1:0 }",
        "address: 127.0.0.1:0, websocket: false }",
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    // The upgrade headers are not forwarded, and a 101 the upstream sends anyway is refused.
    let (_, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(get(a, "/other").await.body, "plain");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_runs_on_the_handshake() {
    let up = ws_upstream().await;
    let yaml = format!(
        "{}consumers:\n  - {{ name: app, credentials: {{ api_keys: ['ws-key-0123456789'] }} }}\n",
        config(up, "    plugins: [ { key_auth: {} } ]\n")
    );
    let gw = start(&yaml);
    let a = addr(&gw, "main");
    let (_s, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let mut s = TcpStream::connect(a).await.expect("connect");
    let keyed = String::from_utf8_lossy(HANDSHAKE)
        .replace("host: x\r\n", "host: x\r\nx-api-key: ws-key-0123456789\r\n");
    s.write_all(keyed.as_bytes()).await.expect("write");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("head in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf[..n], b"echo:ping");
}

/// An HTTP/2 (h2c) connection to the gateway, past its SETTINGS: extended
/// CONNECT may only be sent once the server has announced it.
async fn h2(a: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let mut sender = h2c(a).await;
    let first = sender
        .send_request(
            Request::get(format!("http://{a}/other"))
                .body(Empty::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(first.status(), 200);
    sender
}

/// Opens a WebSocket over HTTP/2 (RFC 8441) on `path`.
async fn connect_ws(
    sender: &mut SendRequest<Empty<Bytes>>,
    a: SocketAddr,
    path: &str,
) -> Response<Incoming> {
    let mut req = Request::connect(format!("http://{a}{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(Empty::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("response")
}

async fn echoes(resp: Response<Incoming>, msg: &str) -> TokioIo<hyper::upgrade::Upgraded> {
    let mut io = TokioIo::new(
        hyper::upgrade::on(resp)
            .await
            .expect("the stream is a tunnel"),
    );
    io.write_all(msg.as_bytes()).await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), io.read(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
    io
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_are_proxied_both_ways() {
    let up = ws_upstream().await;
    // Routed like the HTTP/1.1 handshake: a GET.
    let gw = start(&config(
        up,
        "    match: { methods: [GET] }\n    max_in_flight: 2\n",
    ));
    let a = addr(&gw, "main");
    let mut sender = h2(a).await;
    // An upstream that answers without switching, or with a wrong accept.
    let plain = connect_ws(&mut sender, a, "/plain").await;
    assert_eq!(
        plain.status(),
        502,
        "a 2xx would open a tunnel nobody serves"
    );
    let bad = connect_ws(&mut sender, a, "/ws-bad-accept").await;
    assert_eq!(bad.status(), 502);

    let resp = connect_ws(&mut sender, a, "/ws").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    for gone in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(
            !resp.headers().contains_key(gone),
            "{gone}: {:?}",
            resp.headers()
        );
    }
    let mut first = echoes(resp, "hello").await;
    // A second socket shares the connection.
    let second = echoes(connect_ws(&mut sender, a, "/ws").await, "again").await;
    // A third is over the route's max_in_flight while both are open.
    assert_eq!(connect_ws(&mut sender, a, "/ws").await.status(), 503);
    first.write_all(b"still").await.expect("write");
    let mut buf = [0u8; 64];
    let n = first.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"echo:still");
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = connect_ws(&mut sender, a, "/ws").await;
    assert_eq!(again.status(), 200, "closed sockets free their slots");
    // HTTP/1.1 handshakes keep working beside HTTP/2 ones.
    let (_s, head) = open(a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    gw.shutdown().await;
}
