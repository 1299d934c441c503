//! WebSocket over HTTP/1.1: the upgrade is proxied, bytes flow both ways,
//! idle sockets are closed, and `max_in_flight` caps open sockets.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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
                    if req.uri().path() != "/ws" || !req.headers().contains_key("sec-websocket-key")
                    {
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
                    resp.headers_mut().insert(
                        "sec-websocket-accept",
                        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().expect("value"),
                    );
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
    // Requests without the upgrade still proxy normally on the same route.
    assert_eq!(get(a, "/other").await.body, "plain");
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
