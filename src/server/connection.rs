//! Serving one client connection with hyper's HTTP/1.1 server, configured
//! from the listener's limits, and draining it gracefully on shutdown or when
//! its listener is removed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use std::net::SocketAddr;

use crate::proxy::body::ResponseBody;
use crate::proxy::{handle, ConnInfo, Shared};
use crate::server::client_cert::ClientIdentity;
use crate::snapshot::{Limits, ListenerKey};

/// Counts open client connections so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct ConnTracker {
    active: AtomicUsize,
    drained: Notify,
}

/// Held by a connection task; leaving decrements the count.
#[derive(Debug)]
pub struct ConnGuard(Arc<ConnTracker>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl ConnTracker {
    /// Registers a new connection.
    pub fn enter(self: &Arc<Self>) -> ConnGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    /// Open connections now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until no connection is open or `limit` passes; true when drained.
    pub async fn wait_drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.drained.notified();
            if self.active() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active() == 0;
            }
        }
    }
}

/// Serves a freshly accepted connection: terminates TLS when its listener
/// has it (the handshake is bounded by the header-read timeout), then serves
/// HTTP until the client leaves, an error occurs, or `stop` fires (then
/// in-flight requests finish and the connection closes).
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    key: ListenerKey,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    guard: ConnGuard,
) {
    let _ = stream.set_nodelay(true);
    let (limits, tls) = {
        let snap = shared.snapshot.load();
        let Some(l) = snap.listener(key) else { return };
        (l.limits, l.tls.as_ref().map(|t| t.config.clone()))
    };
    match tls {
        None => {
            let info = ConnInfo::new(peer, key, "http");
            if limits.http2 && starts_with_h2_preface(&stream, limits.header_read_timeout).await {
                serve_h2(stream, info, limits, shared, stop, guard).await
            } else {
                serve_http(stream, info, limits, shared, stop, guard).await
            }
        }
        Some(config) => {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(tls)) => {
                    let mut info = ConnInfo::new(peer, key, "https");
                    // Only verified certificates reach here; keep what they say.
                    info.client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| ClientIdentity::from_der(der))
                        .map(Arc::new);
                    info.tls_version = match tls.get_ref().1.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
                        Some(rustls::ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
                        _ => None,
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(tls, info, limits, shared, stop, guard).await
                    } else {
                        serve_http(tls, info, limits, shared, stop, guard).await
                    }
                }
                Ok(Err(e)) => {
                    shared.snapshot.load().observe.tls_failure(key);
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    shared.snapshot.load().observe.tls_failure(key);
                    tracing::debug!(peer = %peer, "TLS handshake timed out")
                }
            }
        }
    }
}

/// Whether a cleartext connection opens with the HTTP/2 preface (h2c with
/// prior knowledge). `PRI` is reserved for exactly this (RFC 9113 §3.4), so
/// four bytes decide; waiting for them is bounded by the header timeout.
async fn starts_with_h2_preface(stream: &TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4];
    let peek = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(n) if n >= 4 => return buf == *b"PRI ",
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(wait, peek).await.unwrap_or(false)
}

/// A hyper server connection that can be asked to finish gracefully.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn begin_shutdown(self: Pin<&mut Self>);
}

impl<I, S> Graceful for http1::Connection<I, S>
where
    http1::Connection<I, S>: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = ResponseBody>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    http1::UpgradeableConnection<I, S>: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = ResponseBody>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    http2::Connection<I, S, TokioExecutor>: Future<Output = Result<(), hyper::Error>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = ResponseBody>,
    S::Future: Send + 'static,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a client connection until it ends, or, once `stop` fires, lets its
/// in-flight requests finish and closes it.
async fn drive<C: Graceful>(conn: C, mut stop: watch::Receiver<bool>, peer: SocketAddr) {
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().begin_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "client connection ended with an error");
    }
}

/// Serves HTTP/2 on `io`, with the listener's stream and header limits and
/// hyper's guards against reset floods.
async fn serve_h2<I>(
    io: I,
    info: ConnInfo,
    limits: Limits,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _guard: ConnGuard,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_size as u32)
        // Rapid reset (CVE-2023-44487): few resets pending accept, and a cap
        // on streams the server itself must reset.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    if limits.websocket {
        // Advertise RFC 8441 so clients may open WebSockets over HTTP/2.
        builder.enable_connect_protocol();
    }
    let peer = info.peer;
    let info = Arc::new(info);
    let svc = service_fn(move |req| {
        let (shared, info) = (shared.clone(), info.clone());
        async move { Ok::<_, Infallible>(handle(req, &info, &shared).await) }
    });
    drive(builder.serve_connection(TokioIo::new(io), svc), stop, peer).await;
}

async fn serve_http<I>(
    io: I,
    info: ConnInfo,
    limits: Limits,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _guard: ConnGuard,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(8192) * 2 + 64 * 1024);
    if limits.max_headers != 100 {
        // hyper's default is 100 on the stack; other values cost a heap buffer.
        builder.max_headers(limits.max_headers);
    }
    let peer = info.peer;
    let info = Arc::new(info);
    let svc = service_fn(move |req| {
        let (shared, info) = (shared.clone(), info.clone());
        async move { Ok::<_, Infallible>(handle(req, &info, &shared).await) }
    });
    // Upgrade support costs hyper some work on every request (about 0.5 µs
    // measured), so listeners that never carry WebSockets can turn it off.
    if limits.websocket {
        drive(
            builder
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
            stop,
            peer,
        )
        .await;
    } else {
        drive(builder.serve_connection(TokioIo::new(io), svc), stop, peer).await;
    }
}
