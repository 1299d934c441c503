//! Connections kept open between one endpoint's calls (JWKS key sets,
//! token introspection, OTLP exports). Without them every uncached
//! introspection would wait for a TCP connection, and over HTTPS a TLS
//! handshake, and the authorization server would take a new socket for
//! each. HTTP/1.1 connections wait in a small stack, the most recently used
//! on top (the one least likely to have been closed by the server); one
//! HTTP/2 connection is shared by all calls.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};

/// Idle HTTP/1.1 connections kept per endpoint. More calls at once open
/// more connections; past this many, the extra ones close when done.
pub const MAX_IDLE: usize = 16;

/// How long an idle connection is kept. A server that closes it sooner
/// (its own keep-alive timeout: 5 s in many frameworks, 75 s in nginx) is
/// usually noticed before reuse; when it is not, the call is sent again on
/// a new connection (see `Endpoint::round_trip`).
pub const IDLE_FOR: Duration = Duration::from_secs(60);

/// What a call's request body is.
pub type Body = Full<Bytes>;

/// One open connection, ready to send a request on.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    Http1(http1::SendRequest<Body>),
    /// HTTP/2: shared by every call.
    Http2(http2::SendRequest<Body>),
}

impl Sender {
    /// Sends `req`; the response's body is still to be read.
    pub async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
    }
}

/// The connections an endpoint keeps; shared by its clones.
#[derive(Debug, Default)]
pub struct Connections {
    http1: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    http2: Mutex<Option<http2::SendRequest<Body>>>,
}

/// Locks `m`. A panic while it was held cannot leave the list half
/// changed (each change is one push, pop or assignment), so a poisoned
/// lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connections {
    /// A kept connection ready for a request, or `None` when there is none.
    /// Closed and stale connections met on the way are dropped.
    pub async fn take(&self, http2: bool) -> Option<Sender> {
        if http2 {
            let mut s = lock(&self.http2).clone().filter(|s| !s.is_closed())?;
            // Waits for a free stream when the server's limit is reached.
            return match s.ready().await {
                Ok(()) => Some(Sender::Http2(s)),
                Err(_) => {
                    self.forget_http2();
                    None
                }
            };
        }
        loop {
            let (mut s, since) = lock(&self.http1).pop()?;
            if s.is_closed() || since.elapsed() > IDLE_FOR {
                continue;
            }
            // Resolves once the connection has finished with its last
            // response; fails when it has closed meanwhile.
            if s.ready().await.is_ok() {
                return Some(Sender::Http1(s));
            }
        }
    }

    /// Keeps `sender` for later calls; its last response has been read.
    pub fn put(&self, sender: Sender) {
        match sender {
            Sender::Http1(s) => {
                if s.is_closed() {
                    return;
                }
                let now = Instant::now();
                let mut idle = lock(&self.http1);
                idle.retain(|(s, since)| !s.is_closed() && now - *since <= IDLE_FOR);
                if idle.len() >= MAX_IDLE {
                    idle.remove(0);
                }
                idle.push((s, now));
            }
            Sender::Http2(s) => {
                let mut shared = lock(&self.http2);
                if shared.as_ref().is_none_or(|k| k.is_closed()) && !s.is_closed() {
                    *shared = Some(s);
                }
            }
        }
    }

    /// Drops the shared HTTP/2 connection after it failed a call.
    pub fn forget_http2(&self) {
        *lock(&self.http2) = None;
    }

    /// Idle HTTP/1.1 connections kept now.
    #[cfg(test)]
    pub fn idle_http1(&self) -> usize {
        lock(&self.http1).len()
    }
}
