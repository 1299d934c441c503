//! Test harness: the real gateway on port 0, real upstream servers (a
//! well-behaved echo server and raw TCP servers that misbehave on purpose)
//! and real clients (hyper, and raw sockets for malformed requests).
#![allow(dead_code)]

pub mod certs;
pub mod etcd;
pub mod grpc;
pub mod otlp;
pub mod redis;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::{config, ConfigSource, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the gateway on an inline document.
pub fn start(yaml: &str) -> Gateway {
    Gateway::start(ConfigSource::Inline(yaml.to_string())).expect("gateway starts")
}

/// Starts the gateway with a manual clock (rate limits, quotas).
pub fn start_with_clock(yaml: &str, clock: &portcullis::clock::Clock) -> Gateway {
    Gateway::start_with(
        ConfigSource::Inline(yaml.to_string()),
        portcullis::StartOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .expect("gateway starts")
}

/// GET `path` with extra request headers.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::default()).expect("request")).await
}

/// Applies a new inline document to a running gateway.
pub fn apply(gw: &Gateway, yaml: &str) -> Result<u64, portcullis::ApplyError> {
    let loaded = config::load_str(yaml, "<test>", &|_| None)?;
    gw.apply(loaded)
}

/// The bound address of listener `name`.
pub fn addr(gw: &Gateway, name: &str) -> SocketAddr {
    gw.listener_addr(name).expect("listener is bound")
}

/// A running test upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Requests served so far.
    pub requests: Arc<AtomicUsize>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Upstream {
    /// Kills the server at once: stops accepting and drops every open
    /// connection, in-flight requests included (like a crashed process).
    pub fn kill(&self) {
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> futures_like::BoxFut + Send + Sync>;

/// A tiny boxed-future alias so handlers can be async closures.
pub mod futures_like {
    use super::*;
    /// The future a handler returns.
    pub type BoxFut =
        std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>;
}

/// Starts an upstream that answers every request with `handler`.
pub async fn upstream_with<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |r| Box::pin(handler(r)));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let (c, r, t) = (connections.clone(), requests.clone(), tasks.clone());
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let r = r.clone();
            let conn = tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    r.fetch_add(1, Ordering::SeqCst);
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
            t.lock().expect("lock").push(conn.abort_handle());
        }
    });
    tasks.lock().expect("lock").push(accept.abort_handle());
    Upstream {
        addr,
        connections,
        requests,
        tasks,
    }
}

/// An upstream that answers with JSON describing the request it received:
/// `{method, uri, headers: {name: value}, body}`.
pub async fn echo_upstream() -> Upstream {
    upstream_with(|req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut headers = BTreeMap::new();
        for (k, v) in &parts.headers {
            headers
                .entry(k.as_str().to_string())
                .and_modify(|e: &mut String| {
                    e.push_str(" | ");
                    e.push_str(v.to_str().unwrap_or("?"));
                })
                .or_insert_with(|| v.to_str().unwrap_or("?").to_string());
        }
        let json = serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body_len": body.len(),
            "body": String::from_utf8_lossy(&body[..body.len().min(1000)]),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", "echo")
            .header("connection", "x-hop")
            .header("x-hop", "must not reach the client")
            .body(Full::new(Bytes::from(json.to_string())))
            .expect("response")
    })
    .await
}

/// How a raw TCP upstream misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehave {
    /// Accept, read the request, close without answering.
    Reset,
    /// Accept and never answer.
    Hang,
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// Promise 100 body bytes, send 10, close.
    CloseMidBody,
    /// Send headers and the first body chunk, then stall forever.
    StallMidBody,
    /// Answer one request as if keeping the connection alive, then close it
    /// shortly after without reading more (a server whose keep-alive timeout
    /// is shorter than the gateway's, or that restarted).
    AnswerOnceThenClose,
    /// [`Misbehave::AnswerOnceThenClose`], answering with the request's
    /// head as it arrived (what the gateway sent) for a body.
    EchoOnceThenClose,
}

/// Starts a raw TCP upstream that misbehaves as told.
pub async fn raw_upstream(how: Misbehave) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                match how {
                    Misbehave::Reset => {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        drop(s);
                    }
                    Misbehave::Hang => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Misbehave::Garbage => {
                        let _ = s.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Misbehave::CloseMidBody => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                            .await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Misbehave::AnswerOnceThenClose => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    Misbehave::EchoOnceThenClose => {
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                        let _ = s.write_all(head.as_bytes()).await;
                        let _ = s.write_all(&buf[..n]).await;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    Misbehave::StallMidBody => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n").await;
                        let _ = s.flush().await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            });
        }
    });
    addr
}

/// A cleartext HTTP/2 (prior knowledge) connection to `addr`, driven by a
/// task of its own.
pub async fn h2c<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// A hyper client for tests.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response with its body read.
#[derive(Debug)]
pub struct Got {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Got {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The error code of a gateway JSON error.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Sends `req` and reads the whole response.
pub async fn send(req: Request<Full<Bytes>>) -> Got {
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("response within 10s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `path` from `addr` (Host header `host` when given).
pub async fn get(addr: SocketAddr, path: &str) -> Got {
    send(
        Request::get(format!("http://{addr}{path}"))
            .body(Full::default())
            .expect("request"),
    )
    .await
}

/// GET with a Host header.
pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> Got {
    send(
        Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(Full::default())
            .expect("request"),
    )
    .await
}

/// Writes raw bytes and reads what comes back until the server closes or
/// `wait` passes. Returns the text and whether the server closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The standard two-listener test config header with `workers` threads.
pub fn listeners(workers: usize) -> String {
    format!("gateway: {{ workers: {workers}, shutdown_grace: 5s }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:0 }}\n")
}

/// A stream over an iterator, for streamed request and response bodies.
pub struct IterStream<I>(pub I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// Runs curl with `args` (after `-sS --max-time 5`) and returns what it
/// printed (`-w` output last); fails the test when curl fails.
pub async fn curl(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(&args)
            .output()
            .expect("curl runs (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("curl task")
}
