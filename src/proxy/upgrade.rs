//! Protocol upgrades (WebSocket): the client's `Upgrade` request goes
//! upstream with its upgrade headers; when the upstream agrees (`101
//! Switching Protocols`), both upgraded connections are bridged byte for
//! byte until either side closes or both stay silent for the idle timeout.
//! The bridge holds the request's permits and in-flight count for its whole
//! life, so `max_in_flight` also caps open WebSockets.
//!
//! WebSocket over HTTP/2 (RFC 8441) arrives as an extended CONNECT with
//! `:protocol: websocket` and no key. Upstreams get the HTTP/1.1 handshake
//! (with a key the gateway makes and checks), and the client gets `200`
//! once the upstream has switched: after that the HTTP/2 stream carries the
//! same WebSocket frames as the upgraded HTTP/1.1 connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::upstream::limits::Held;

/// The upgrade protocol a request asks for, when it is a WebSocket upgrade
/// (`Connection: upgrade` and `Upgrade: websocket` on HTTP/1.1).
pub fn websocket_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    let h = req.headers();
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = h.get(header::UPGRADE)?;
    (asks
        && req.version() == http::Version::HTTP_11
        && upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"))
    .then(|| upgrade.clone())
}

/// Whether `req` opens a WebSocket over HTTP/2: an extended CONNECT
/// (RFC 8441) whose `:protocol` is `websocket`.
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        && req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A client's pending upgrade: its connection once the response is sent,
/// and, for WebSocket over HTTP/2, the key the gateway sent upstream.
pub struct ClientUpgrade {
    /// Resolves to the client's side of the bridge.
    pub on: OnUpgrade,
    /// `Sec-WebSocket-Key` made for an HTTP/2 client (`None` on HTTP/1.1,
    /// whose own key and accept travel end to end).
    pub h2_key: Option<HeaderValue>,
}

/// Marks the `200` that tells an HTTP/2 client its WebSocket is open, so it
/// is never confused with an upstream's ordinary `200`.
#[derive(Debug, Clone, Copy)]
pub struct Switched;

/// Turns an HTTP/2 extended CONNECT's headers into an HTTP/1.1 WebSocket
/// handshake's (the method becomes GET elsewhere) and returns the key sent.
pub fn h1_handshake(h: &mut HeaderMap) -> HeaderValue {
    restore_headers(h, HeaderValue::from_static("websocket"));
    let mut nonce = [0u8; 16];
    // The key only has to be unpredictable enough to tell handshakes apart;
    // a failing system RNG (never seen in practice) leaves it fixed.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    let key = HeaderValue::from_str(&STANDARD.encode(nonce))
        .expect("base64 is always a valid header value");
    h.insert(header::SEC_WEBSOCKET_KEY, key.clone());
    h.entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
    key
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with
/// (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    STANDARD.encode(ctx.finish())
}

/// Puts the upgrade headers back after hop-by-hop stripping.
pub fn restore_headers(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// Bridges the client's and the upstream's upgraded connections once both
/// upgrades complete. Runs on its own task.
pub async fn bridge(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, held: Held) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(
                client_ok = c.is_ok(),
                upstream_ok = u.is_ok(),
                "upgrade did not complete"
            );
            return;
        }
    };
    copy_until_idle(TokioIo::new(client), TokioIo::new(upstream), idle).await;
    drop(held);
}

/// Copies both ways until both sides have closed, either fails, or neither
/// sends anything for `idle`. Each direction runs on its own, so a slow
/// reader on one side never stops the other direction, and a side that
/// closes its half (FIN, or END_STREAM over HTTP/2) is passed on as a
/// half-close while the other direction keeps flowing.
async fn copy_until_idle(a: TokioIo<Upgraded>, b: TokioIo<Upgraded>, idle: Duration) {
    let start = tokio::time::Instant::now();
    // Milliseconds from `start` to the last byte copied either way.
    let last = AtomicU64::new(0);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    let both = async {
        tokio::try_join!(
            pump(a_read, b_write, &last, start),
            pump(b_read, a_write, &last, start)
        )
    };
    let watchdog = async {
        loop {
            let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    };
    tokio::select! {
        _ = both => {}
        () = watchdog => {}
    }
    // Dropping the halves closes both connections.
}

/// Copies `from` into `to` until `from` ends (then half-closes `to`) or
/// either fails, noting when bytes last moved.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    last: &AtomicU64,
    start: tokio::time::Instant,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(ms, Ordering::Relaxed);
    }
}
