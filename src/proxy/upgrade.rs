//! Protocol upgrades (WebSocket over HTTP/1.1): the client's `Upgrade`
//! request goes upstream with its upgrade headers; when the upstream agrees
//! (`101 Switching Protocols`), both upgraded connections are bridged byte
//! for byte until either side closes or both stay silent for the idle
//! timeout. The bridge holds the request's permits and in-flight count for
//! its whole life, so `max_in_flight` also caps open WebSockets.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::Request;
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

/// Copies both ways until one side closes, fails, or neither sends anything
/// for `idle`.
async fn copy_until_idle(mut a: TokioIo<Upgraded>, mut b: TokioIo<Upgraded>, idle: Duration) {
    let mut from_a = vec![0u8; 16 * 1024];
    let mut from_b = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = tokio::time::timeout(idle, a.read(&mut from_a)) => match r {
                Ok(Ok(n)) if n > 0 => if b.write_all(&from_a[..n]).await.is_err() { break },
                _ => break,
            },
            r = tokio::time::timeout(idle, b.read(&mut from_b)) => match r {
                Ok(Ok(n)) if n > 0 => if a.write_all(&from_b[..n]).await.is_err() { break },
                _ => break,
            },
        }
    }
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
}
