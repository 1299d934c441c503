//! Keep-alive connection pools to upstream targets, built directly on
//! hyper's HTTP/1 client connections.
//!
//! Each worker thread runs its own event loop, so each pool keeps one idle
//! list per worker and per target: a connection is created, used and reused
//! on one thread, like nginx's per-worker upstream keep-alive. A connection
//! goes back to its idle list when the response body has been read to the
//! end; one whose body was abandoned is closed instead. Pools are shared
//! between snapshots through the [`UpstreamRegistry`], so reloads keep them warm.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use super::replay::HeadCopy;
use super::Target;
use crate::clock::Tick;
use crate::proxy::body::ProxyBody;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Records which worker the current thread is; called once when a worker starts.
pub fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// The current thread's worker index (0 outside workers).
pub fn worker_index() -> usize {
    WORKER.with(Cell::get)
}

/// What shapes an upstream's connections; a change builds a new pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Upstream name.
    pub upstream: String,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long idle connections are kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per target and worker.
    pub max_idle_per_target: usize,
    /// Fingerprint of the TLS settings and files (`None`: plain TCP).
    pub tls: Option<u64>,
    /// Speak HTTP/2 to the targets (multiplexed, one connection per address).
    pub http2: bool,
}

/// Why an upstream exchange failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection was not established within the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connection failed (refused, unreachable, no address).
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed (reset, invalid response, request body error).
    #[error("upstream exchange failed: {0}")]
    Http(#[source] hyper::Error),
}

/// Runs the HTTP/1.1 handshake on `io` and drives the connection on its own task.
async fn http_handshake<I>(io: I) -> Result<SendRequest<ProxyBody>, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Runs the HTTP/2 handshake on `io` and drives the connection on its own task.
async fn h2_handshake<I>(io: I) -> Result<http2::SendRequest<ProxyBody>, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// A failed send: the error, and the request when it was never sent (so it
/// may go to another target whatever its method).
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: UpstreamError,
    /// The request, if no byte of it reached the upstream.
    pub unsent: Option<Request<ProxyBody>>,
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Tick,
}

/// Idle connections of one worker, by target address.
#[derive(Default)]
struct WorkerSlot {
    dests: Vec<(Dest, Vec<Idle>)>,
    /// HTTP/2 upstreams: one shared, multiplexed connection per destination.
    h2: Vec<(Dest, http2::SendRequest<ProxyBody>)>,
}

/// Where pooled connections lead: a target's configured address, or, for a
/// target given as a DNS name, one of its resolved addresses (so each address
/// keeps its own connections, and a new address gets traffic at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// The target's `host:port` as configured (an IP, or a name not resolved yet).
    Configured(Arc<str>),
    /// One resolved address of a target given as a name.
    Resolved(SocketAddr),
}

impl WorkerSlot {
    fn list(&mut self, dest: &Dest) -> &mut Vec<Idle> {
        let found = self.dests.iter().position(|(d, _)| match (d, dest) {
            (Dest::Configured(a), Dest::Configured(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => d == dest,
        });
        let i = found.unwrap_or_else(|| {
            self.dests.push((dest.clone(), Vec::new()));
            self.dests.len() - 1
        });
        &mut self.dests[i].1
    }
}

/// The connection pool of one upstream.
pub struct Pool {
    key: PoolKey,
    tls: Option<Arc<super::tls::UpstreamTls>>,
    // One slot per worker; only that worker's thread locks it, so the lock is
    // never contended (it exists to make the pool shareable between snapshots).
    slots: Vec<Mutex<WorkerSlot>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Pool {
    fn new(key: PoolKey, workers: usize, tls: Option<Arc<super::tls::UpstreamTls>>) -> Pool {
        Pool {
            key,
            tls,
            slots: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    fn slot(&self) -> MutexGuard<'_, WorkerSlot> {
        let i = WORKER.with(Cell::get) % self.slots.len();
        self.slots[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used live idle connection to `address`, if any.
    fn checkout(&self, dest: &Dest) -> Option<SendRequest<ProxyBody>> {
        let mut slot = self.slot();
        let list = slot.list(dest);
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < self.key.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    fn checkin(&self, dest: &Dest, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Tick::now();
        let mut slot = self.slot();
        let list = slot.list(dest);
        // The oldest entries sit at the front; drop those past the idle timeout.
        let stale = list
            .iter()
            .take_while(|i| now.since(i.since) >= self.key.idle_timeout)
            .count();
        list.drain(..stale);
        if list.len() < self.key.max_idle_per_target {
            list.push(Idle { sender, since: now });
        }
    }

    async fn connect(
        &self,
        target: &Target,
        dest: &Dest,
    ) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream = self.tcp_connect(target, dest).await?;
        match &self.tls {
            None => http_handshake(stream).await,
            Some(tls) => http_handshake(self.tls_connect(tls, target, stream).await?).await,
        }
    }

    /// Connects TCP to `dest` within the connect timeout. A resolved address
    /// is tried first, then the name's other addresses, so one dead address
    /// of several does not fail the request.
    async fn tcp_connect(&self, target: &Target, dest: &Dest) -> Result<TcpStream, UpstreamError> {
        let connecting = async {
            let first = match dest {
                Dest::Configured(address) => return TcpStream::connect(&**address).await,
                Dest::Resolved(a) => *a,
            };
            let mut last = match TcpStream::connect(first).await {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            let others = target
                .resolved
                .as_ref()
                .map(|r| r.addrs())
                .unwrap_or_default();
            for a in others.iter().filter(|a| **a != first) {
                match TcpStream::connect(*a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let stream = tokio::time::timeout(self.key.connect_timeout, connecting)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// The TLS handshake with a target, within the connect timeout; a failed
    /// verification is a connect failure.
    async fn tls_connect(
        &self,
        tls: &super::tls::UpstreamTls,
        target: &Target,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let name = tls.name_for(&target.address).ok_or_else(|| {
            UpstreamError::Connect(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no TLS name to verify",
            ))
        })?;
        let handshake = tokio_rustls::TlsConnector::from(tls.config.clone()).connect(name, stream);
        tokio::time::timeout(self.key.connect_timeout, handshake)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(|e| {
                tracing::debug!(target = %target.address, error = %e, "upstream TLS handshake failed");
                UpstreamError::Connect(e)
            })
    }

    /// The HTTP/2 path of [`Pool::send`]: requests share one connection per
    /// destination and worker; a broken one is replaced on the next request,
    /// and a request the old one never took is sent on the new one.
    async fn send_h2(
        &self,
        target: &Target,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        for fresh in [false, true] {
            let dest = match target.resolved.as_ref().and_then(|r| r.pick()) {
                Some(a) => Dest::Resolved(a),
                None => Dest::Configured(target.address.clone()),
            };
            let cached = if fresh { None } else { self.h2_cached(&dest) };
            let mut sender = match cached {
                Some(s) => s,
                // Boxed: connecting is rare, and its futures (TLS, handshake)
                // would otherwise make every request's future larger.
                None => match Box::pin(self.connect_h2(target, &dest)).await {
                    Ok(s) => s,
                    Err(error) => {
                        return Err(SendError {
                            error,
                            unsent: Some(req),
                        })
                    }
                },
            };
            if sender.ready().await.is_err() {
                self.h2_forget(&dest);
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|body| PooledBody { body, ret: None })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        self.h2_forget(&dest);
                        req = unsent;
                    }
                    unsent => {
                        return Err(SendError {
                            error: UpstreamError::Http(e.into_error()),
                            unsent,
                        })
                    }
                },
            }
        }
        let error =
            UpstreamError::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        Err(SendError {
            error,
            unsent: None,
        })
    }

    fn h2_cached(&self, dest: &Dest) -> Option<http2::SendRequest<ProxyBody>> {
        let slot = self.slot();
        slot.h2
            .iter()
            .find(|(d, s)| d == dest && !s.is_closed())
            .map(|(_, s)| s.clone())
    }

    fn h2_forget(&self, dest: &Dest) {
        self.slot().h2.retain(|(d, _)| d != dest);
    }

    async fn connect_h2(
        &self,
        target: &Target,
        dest: &Dest,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let stream = self.tcp_connect(target, dest).await?;
        let sender = match &self.tls {
            None => h2_handshake(stream).await?,
            Some(tls) => h2_handshake(self.tls_connect(tls, target, stream).await?).await?,
        };
        let mut slot = self.slot();
        slot.h2.retain(|(d, _)| d != dest);
        slot.h2.push((dest.clone(), sender.clone()));
        Ok(sender)
    }

    /// Sends `req` to `target` over a pooled connection (or a new one) and
    /// returns the response; its body returns the connection to the pool
    /// once read to the end.
    ///
    /// A pooled connection may have been closed by the upstream just as the
    /// request went out (the keep-alive race). A request it could not take is
    /// retried on another connection, since it was never sent; one it took but
    /// never answered is replayed on another connection only when it is
    /// `replayable` (idempotent with an empty body), as nginx and Envoy do.
    /// It is replayed from `copy` when the caller kept one (for its retry
    /// policy), so that the request is not copied twice.
    #[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
    pub fn send<'a>(
        self: &'a Arc<Self>,
        target: &'a Target,
        mut req: Request<ProxyBody>,
        replayable: bool,
        copy: Option<&'a HeadCopy>,
    ) -> impl Future<Output = Result<Response<PooledBody>, SendError>> + 'a {
        // Not an `async fn`: those copy each argument into the future's
        // locals on the first poll, and a request is about 250 bytes.
        async move {
            if self.key.http2 {
                // Boxed so that HTTP/1 requests' futures do not carry its size.
                return Box::pin(self.send_h2(target, req)).await;
            }
            let mut reuse_attempts = 0;
            loop {
                let dest = match target.resolved.as_ref().and_then(|r| r.pick()) {
                    Some(a) => Dest::Resolved(a),
                    None => Dest::Configured(target.address.clone()),
                };
                let pooled = if reuse_attempts < 3 {
                    self.checkout(&dest)
                } else {
                    None
                };
                let (mut sender, reused) = match pooled {
                    Some(s) => (s, true),
                    // Boxed: a new connection is the rare case, and its futures
                    // (TCP, TLS, handshake: about 3.5 KB) would otherwise be part
                    // of every request's future, held for each client connection.
                    None => match Box::pin(self.connect(target, &dest)).await {
                        Ok(s) => (s, false),
                        Err(error) => {
                            return Err(SendError {
                                error,
                                unsent: Some(req),
                            })
                        }
                    },
                };
                reuse_attempts += usize::from(reused);
                if sender.ready().await.is_err() {
                    if reused {
                        continue;
                    }
                    let error = UpstreamError::Connect(std::io::Error::from(
                        std::io::ErrorKind::ConnectionReset,
                    ));
                    return Err(SendError {
                        error,
                        unsent: Some(req),
                    });
                }
                let own;
                let replay = match copy {
                    _ if !(reused && replayable) => None,
                    Some(c) => Some(c),
                    None => {
                        own = HeadCopy::of(&req);
                        Some(&own)
                    }
                };
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        let ret = Some((self.clone(), dest, sender));
                        return Ok(resp.map(|body| PooledBody { body, ret }));
                    }
                    Err(mut e) => match (e.take_message(), replay) {
                        (Some(unsent), _) if reused => req = unsent,
                        (None, Some(copy)) if stale_symptom(e.error()) => {
                            let Some(copy) = copy.request() else {
                                return Err(SendError {
                                    error: UpstreamError::Http(e.into_error()),
                                    unsent: None,
                                });
                            };
                            tracing::debug!(target = %target.address, "pooled connection closed under a request; replaying it");
                            req = copy;
                        }
                        (unsent, _) => {
                            return Err(SendError {
                                error: UpstreamError::Http(e.into_error()),
                                unsent,
                            })
                        }
                    },
                }
            }
        }
    }
}

/// Whether a failure before any response byte looks like a pooled connection
/// the upstream had closed: a reset, an early close, a cancelled exchange.
/// A malformed response is the upstream's answer, not staleness.
fn stale_symptom(e: &hyper::Error) -> bool {
    !(e.is_parse() || e.is_parse_status() || e.is_user() || e.is_timeout())
}

/// A response body from a pooled connection; reading it to the end returns
/// the connection to the pool.
pub struct PooledBody {
    body: Incoming,
    ret: Option<(Arc<Pool>, Dest, SendRequest<ProxyBody>)>,
}

impl PooledBody {
    /// Keeps the connection out of the pool (it was upgraded to another protocol).
    pub fn detach(mut self) {
        self.ret = None;
    }

    fn release(&mut self) {
        if let Some((pool, dest, sender)) = self.ret.take() {
            pool.checkin(&dest, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.ret = None,
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (204, HEAD, `content-length: 0`) may never be polled.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

/// Upstream state that outlives snapshots: connection pools by their shaping
/// settings, and per-target stats by upstream and target address. An entry
/// is dropped once no snapshot uses it.
#[derive(Debug, Default)]
pub struct UpstreamRegistry {
    pools: Mutex<HashMap<PoolKey, Weak<Pool>>>,
    stats: Mutex<HashMap<(String, String), Weak<super::TargetStats>>>,
    counters: Mutex<HashMap<String, Weak<std::sync::atomic::AtomicU32>>>,
    resolved: Mutex<HashMap<String, Weak<super::dns::Resolved>>>,
}

impl UpstreamRegistry {
    /// The shared address set of the target `address` (a `host:port` name).
    /// Runs only when a snapshot is compiled.
    pub fn resolved(&self, address: &str) -> Arc<super::dns::Resolved> {
        let mut map = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(r) = map.get(address).and_then(Weak::upgrade) {
            return r;
        }
        let r = Arc::new(super::dns::Resolved::new(address));
        map.insert(address.to_string(), Arc::downgrade(&r));
        r
    }

    /// The in-flight counter named `key` (like `upstream:users`), shared by
    /// every snapshot that limits it. Runs only when a snapshot is compiled.
    pub fn counter(&self, key: &str) -> Arc<std::sync::atomic::AtomicU32> {
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(c) = map.get(key).and_then(Weak::upgrade) {
            return c;
        }
        let c: Arc<std::sync::atomic::AtomicU32> = Arc::default();
        map.insert(key.to_string(), Arc::downgrade(&c));
        c
    }

    /// The live stats of `address` in `upstream`, or fresh ones. Runs only
    /// when a snapshot is compiled.
    pub fn stats(&self, upstream: &str, address: &str) -> Arc<super::TargetStats> {
        let mut map = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (upstream.to_string(), address.to_string());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(super::TargetStats::default());
        map.insert(key, Arc::downgrade(&s));
        s
    }

    /// Returns the live pool for `key`, or creates one with a slot per worker.
    /// Runs only when a snapshot is compiled, never per request.
    pub fn get(
        &self,
        key: PoolKey,
        workers: usize,
        tls: Option<Arc<super::tls::UpstreamTls>>,
    ) -> Arc<Pool> {
        let mut map = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(p) = map.get(&key).and_then(Weak::upgrade) {
            return p;
        }
        let pool = Arc::new(Pool::new(key.clone(), workers, tls));
        map.insert(key, Arc::downgrade(&pool));
        pool
    }
}
