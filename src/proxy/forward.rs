//! The upstream phase: pick a target, rewrite the request for it (hop-by-hop
//! headers, forwarding headers, Host policy, request ID), send it over a
//! pooled connection with timeouts, and stream the response back.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{empty, BodyError, GuardedBody, ResponseBody};
use super::errors::GatewayError;
use super::headers::{set_forwarded, strip_hop_by_hop, ClientInfo};
use super::pipeline::ConnInfo;
use crate::config::HostHeader;
use crate::routing::PathPattern;
use crate::snapshot::{Listener, ProxyAction, Snapshot};
use crate::upstream::balancer::consistent_hash::KeySource;
use crate::upstream::pool::UpstreamError;
use crate::upstream::stats::now_ns;

static VIA: HeaderValue = HeaderValue::from_static("1.1 portcullis");

/// The latency a failed exchange counts as, for `ewma` (1 s).
const FAILURE_PENALTY_NS: u64 = 1_000_000_000;

/// Everything the upstream phase needs besides the request.
pub struct Forward<'a> {
    /// The route's proxy settings.
    pub action: &'a ProxyAction,
    /// The listener the request came in on.
    pub listener: &'a Listener,
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// The snapshot of this request.
    pub snap: &'a Snapshot,
    /// The request ID.
    pub rid: &'a HeaderValue,
    /// The path to send upstream when it differs from the client's
    /// (normalized, or prefix stripped); `None` sends the client's unchanged.
    pub path: Option<&'a str>,
    /// Request body limit.
    pub body_limit: u64,
    /// The matched path pattern and the normalized path, for hash keys on captures.
    pub matched: (Option<&'a PathPattern>, &'a str),
}

fn timeout_error(what: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("the upstream did not {what} in time"),
    )
}

/// Maps a failed upstream exchange to the client-facing error.
fn classify(err: &UpstreamError) -> GatewayError {
    let http = match err {
        UpstreamError::ConnectTimeout => return timeout_error("accept the connection"),
        UpstreamError::Connect(_) => {
            return GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the upstream could not be reached",
            )
        }
        UpstreamError::Http(e) => e,
    };
    match BodyError::find(http) {
        Some(BodyError::TooLarge(limit)) => GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
        .closing(),
        Some(BodyError::Idle(_)) => GatewayError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body stopped arriving",
        )
        .closing(),
        Some(BodyError::Deadline) => timeout_error("answer"),
        None => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the upstream closed the connection or sent an invalid response",
        ),
    }
}

/// Proxies `req` upstream and returns the upstream's response (or a gateway error).
pub async fn forward(
    req: Request<Incoming>,
    f: Forward<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let started = Instant::now();
    let a = f.action;
    let (mut parts, body) = req.into_parts();
    let picked = match a.upstream.balancer.hash_key() {
        Some(k) => {
            let (pattern, path) = f.matched;
            let capture = |name: &str| {
                let (caps, _) = pattern?.captures(path)?;
                caps.get(name).map(str::to_string)
            };
            let src = KeySource {
                client_ip: f.conn.peer.ip(),
                headers: &parts.headers,
                query: parts.uri.query(),
                capture: &capture,
            };
            a.upstream.pick(&k.extract(&src))
        }
        None => a.upstream.pick(&[]),
    };
    let idx = picked.ok_or_else(|| {
        GatewayError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_upstream_target",
            "no upstream target is available",
        )
    })?;
    let target = &a.upstream.targets[idx];
    let stats = &a.upstream.stats[idx];
    // Counted in flight until the response body ends (or the exchange fails).
    let load = stats.start();

    let bad_target = || {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "bad_request_target",
            "the request target is invalid",
        )
    };
    let pq = match (f.path, parts.uri.query()) {
        (None, _) => parts.uri.path_and_query().cloned().ok_or_else(bad_target)?,
        (Some(p), Some(q)) => {
            PathAndQuery::try_from(format!("{p}?{q}")).map_err(|_| bad_target())?
        }
        (Some(p), None) => PathAndQuery::try_from(p).map_err(|_| bad_target())?,
    };
    let client_host: Option<HeaderValue> = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    // Origin-form on the wire; the target is chosen by the connection.
    parts.uri = Uri::from(pq);
    parts.version = Version::HTTP_11;

    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    // The gateway already answered (or skipped) `100-continue` for the client.
    h.remove(header::EXPECT);
    let peer = f.conn.peer.ip();
    set_forwarded(
        h,
        &ClientInfo {
            peer: &f.conn.peer_value,
            forwarded_for: &f.conn.forwarded_for,
            trusted: f.listener.trusted_proxies.iter().any(|n| n.contains(&peer)),
            proto: f.conn.scheme,
            host: client_host.as_ref(),
        },
    );
    h.insert(f.snap.settings.request_id_header.clone(), f.rid.clone());
    let host = match (a.host_header, client_host) {
        (HostHeader::Preserve, Some(h)) => h,
        _ => target.host_header.clone(),
    };
    h.insert(header::HOST, host);
    if f.snap.settings.via {
        h.append(header::VIA, VIA.clone());
    }

    // Idempotent and body-less: safe to replay if a pooled connection dies under it.
    let replayable = body.is_end_stream() && parts.method.is_idempotent();
    let body = if body.is_end_stream() {
        empty()
    } else {
        GuardedBody::new(
            body,
            Some(f.body_limit),
            Some(f.listener.limits.body_read_timeout),
            None,
        )
        .boxed()
    };
    let up_req = Request::from_parts(parts, body);

    let t = a.timeouts;
    let deadline = t.total.map(|d| started + d);
    let head_wait: Duration = match t.total {
        Some(total) => t.read.min(total),
        None => t.read,
    };
    let sent = a.upstream.balancer.decay_ns().map(|d| (d, now_ns()));
    let outcome = tokio::time::timeout(head_wait, a.pool.send(target, up_req, replayable)).await;
    if let Some((decay, at)) = sent {
        // Latency-aware balancing learns from the time to response headers;
        // a failure counts as a slow answer so a broken target is avoided.
        let now = now_ns();
        let rtt = match &outcome {
            Ok(Ok(_)) => now - at,
            _ => (now - at).max(FAILURE_PENALTY_NS),
        };
        stats.observe(rtt, now, decay);
    }
    let resp = match outcome {
        Err(_) => return Err(timeout_error("answer")),
        Ok(Err(e)) => {
            tracing::debug!(target: "portcullis::proxy", upstream = %a.upstream.name, target = %target.address, error = ?e, "upstream exchange failed");
            return Err(classify(&e));
        }
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = GuardedBody::new(body, None, Some(t.read), deadline);
    Ok(Response::from_parts(
        parts,
        ResponseBody::Upstream {
            body,
            load: Some(load),
        },
    ))
}
