//! The upstream phase: pick a target, rewrite the request for it (hop-by-hop
//! headers, forwarding headers, Host policy, request ID), send it over a
//! pooled connection with timeouts, and stream the response back.

use std::future::Future;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::clock::{deadline, Tick};

use super::arrival::Seen;
use super::body::{
    empty, BodyError, ClientBody, FailureSlot, GuardedBody, ProxyBody, ResponseBody,
};
use super::errors::GatewayError;
use super::headers::{set_forwarded, strip_hop_by_hop, Census, ClientInfo};
use super::pipeline::ConnInfo;
use super::upgrade::ClientUpgrade;
use super::{grpc_web, upgrade};
use crate::config::HostHeader;
use crate::observability::request::Record;
use crate::observability::span::{
    new_span_id, unix_ns, AttrValue, ChildSpan, SpanKind, TRACEPARENT, TRACESTATE,
};
use crate::routing::PathPattern;
use crate::snapshot::{Listener, ProxyAction, Snapshot};
use crate::upstream::balancer::consistent_hash::KeySource;
use crate::upstream::limits::{Held, Permit};
use crate::upstream::pool::{PooledBody, SendError, UpstreamError};
use crate::upstream::replay::HeadCopy;
use crate::upstream::stats::now_ns;

static VIA: HeaderValue = HeaderValue::from_static("1.1 portcullis");

/// Parsed once: a `&str` name would be parsed on every request.
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

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
    /// The request's record for the log phase (upstream, timing, spans).
    pub record: &'a mut Record,
    /// The headers as they arrived, when nothing changed them since (no
    /// plugins ran); `None` looks again.
    pub seen: Option<Seen>,
}

fn timeout_error(what: &str) -> GatewayError {
    GatewayError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!("the upstream did not {what} in time"),
    )
}

/// The copy of a request about to be retried, as a request again. Its
/// parts were valid when copied, so this does not fail in practice.
fn resend(copy: &HeadCopy) -> Result<Request<ProxyBody>, GatewayError> {
    copy.request().ok_or_else(|| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the request could not be rebuilt to retry it",
        )
    })
}

/// Why the request body failed during a failed exchange: from the error
/// chain, or from the body's own record (HTTP/2 upstreams lose the cause).
fn body_failure(err: &UpstreamError, slot: Option<&FailureSlot>) -> Option<BodyError> {
    slot.and_then(FailureSlot::get).or_else(|| match err {
        UpstreamError::Http(h) => BodyError::find(h),
        _ => None,
    })
}

/// Maps a failed upstream exchange to the client-facing error; `body` is
/// why the request body failed, when it did.
fn classify(err: &UpstreamError, body: Option<BodyError>) -> GatewayError {
    match err {
        UpstreamError::ConnectTimeout => return timeout_error("accept the connection"),
        UpstreamError::Connect(_) => {
            return GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the upstream could not be reached",
            )
        }
        UpstreamError::Http(_) => {}
    }
    match body {
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
        Some(BodyError::Malformed(why)) => {
            GatewayError::new(StatusCode::BAD_REQUEST, "bad_request_body", why)
        }
        None => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "the upstream closed the connection or sent an invalid response",
        ),
    }
}

/// Proxies `req` upstream and returns the upstream's response (or a gateway error).
#[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
pub fn forward(
    mut req: Request<ClientBody>,
    f: Forward<'_>,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + '_ {
    // Not an `async fn`: those copy each argument into the future's locals
    // on the first poll (see `pipeline::handle`).
    async move {
        // Which headers below need a lookup, after the plugins had their say.
        let (census, seen_host) = match f.seen {
            Some(s) => (s.census, Some(s.host)),
            None => (Census::of(req.headers()), None),
        };
        // A WebSocket upgrade keeps its upgrade headers and, on `101`, is bridged.
        // Over HTTP/2 (extended CONNECT) there is no protocol header to keep:
        // the upstream gets a fresh HTTP/1.1 handshake.
        let websocket = f.listener.limits.websocket;
        let extended_connect = websocket && upgrade::is_extended_connect(&req);
        let upgrade = if extended_connect {
            Some((None, hyper::upgrade::on(&mut req)))
        } else if websocket && census.upgrade {
            upgrade::websocket_upgrade(&req)
                .map(|proto| (Some(proto), hyper::upgrade::on(&mut req)))
        } else {
            None
        };
        let a = f.action;
        // Admission first, so a request that will be refused costs little.
        let full = |what: &str| {
            // Debug level: under overload every rejected request would log.
            tracing::debug!(target: "portcullis::proxy", upstream = %a.upstream.name, limit = what, "concurrency limit reached; answering 503");
            GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "concurrency_limit",
                format!("too many requests in flight to this {what}; retry shortly"),
            )
        };
        let route_permit = match &a.limit {
            Some(l) => Some(l.try_acquire().ok_or_else(|| full("route"))?),
            None => None,
        };
        let upstream_permit = match &a.upstream.guards.limit {
            Some(l) => Some(l.try_acquire().ok_or_else(|| full("service"))?),
            None => None,
        };
        let permits = (upstream_permit, route_permit);
        if let Some(b) = &a.upstream.guards.breaker {
            if !b.admit(now_ns()) {
                return Err(GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "circuit_open",
                "the service is failing, so requests to it are paused for a moment; retry shortly",
            ));
            }
        }
        let (mut parts, body) = req.into_parts();
        // The hash key is taken before the headers are rewritten (only `consistent_hash` has one).
        let key: Vec<u8> = match a.upstream.balancer.hash_key() {
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
                k.extract(&src).into_owned()
            }
            None => Vec::new(),
        };

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
            None => match seen_host {
                Some(host) => host,
                None => parts.headers.get(header::HOST).cloned(),
            },
        };
        // Origin-form on the wire; the target is chosen by the connection.
        parts.uri = Uri::from(pq);
        let http2 = a.upstream.transport.http2;
        parts.version = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if extended_connect {
            parts.method = http::Method::GET;
        }
        // gRPC needs `te: trailers`, which hop-by-hop stripping removes.
        let te_trailers = census.te
            && parts
                .headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        // A gRPC deadline bounds the whole exchange like the route's total timeout.
        let grpc_deadline = census
            .grpc_timeout
            .then(|| parts.headers.get(&GRPC_TIMEOUT))
            .flatten()
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let grpc_web = if a.grpc_web {
            grpc_web::detect(&parts.headers)
        } else {
            None
        };

        let h = &mut parts.headers;
        if census.hop_by_hop {
            strip_hop_by_hop(h);
        }
        // The forwarding headers, the request ID and trace context are added
        // below: grow the map once rather than once per insert.
        h.reserve(8);
        if http2 && te_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if grpc_web.is_some() {
            grpc_web::request_headers(h);
        }
        // The gateway already answered (or skipped) `100-continue` for the client.
        if census.expect {
            h.remove(header::EXPECT);
        }
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
        // The upstream call is a child span: the upstream sees it as its parent.
        let client_span = f.record.trace.as_ref().map(|t| {
            let id = new_span_id();
            h.insert(TRACEPARENT.clone(), t.traceparent(&id));
            match &t.trace_state {
                Some(ts) => h.insert(TRACESTATE.clone(), ts.clone()),
                None if census.tracestate => h.remove(&TRACESTATE),
                None => None,
            };
            id
        });
        if let Some(name) = f
            .listener
            .tls
            .as_ref()
            .and_then(|t| t.client_cert_header.as_ref())
        {
            // Never pass on a client's own claim; only the verified identity.
            h.remove(name);
            if let Some(v) = f.conn.client_cert.as_ref().and_then(|c| c.header_value()) {
                h.insert(name.clone(), v);
            }
        }
        let client_upgrade = upgrade.map(|(proto, on)| {
            let h2_key = match proto {
                Some(p) => {
                    upgrade::restore_headers(h, p);
                    None
                }
                None => Some(upgrade::h1_handshake(h)),
            };
            ClientUpgrade { on, h2_key }
        });
        if f.snap.settings.via {
            h.append(header::VIA, VIA.clone());
        }
        let preserved_host = match a.host_header {
            HostHeader::Preserve => client_host,
            HostHeader::Upstream => None,
        };

        // A body-less request can be sent again: after a stale pooled connection
        // (idempotent methods) or by a retry policy (also non-idempotent methods
        // when the route allows it).
        let body_less = body.is_end_stream();
        let idempotent = parts.method.is_idempotent();
        // Only HTTP/2 upstreams lose the cause of a failed request body.
        let body_failure = (http2 && !body_less).then(FailureSlot::default);
        let body = if body_less {
            empty()
        } else {
            GuardedBody::new(
                body,
                Some(f.body_limit),
                Some(f.listener.limits.body_read_timeout),
                None,
            )
            .recording(body_failure.clone())
            .boxed()
        };
        let body = match grpc_web {
            Some(mode) => grpc_web::request_body(body, mode, body_failure.clone()),
            None => body,
        };
        let limit = match (a.timeouts.total, grpc_deadline) {
            (Some(t), Some(g)) => Some(t.min(g)),
            (t, g) => t.or(g),
        };
        // The clock is read only when a deadline or the log phase needs it.
        let now = limit.is_some().then(Tick::now);
        let call = Call {
            a,
            key: &key,
            preserved_host,
            stale_replayable: body_less && idempotent,
            retry_replayable: body_less && (idempotent || a.retry_non_idempotent),
            deadline: limit.zip(now).map(|(d, now)| now + d),
            body_failure,
        };
        a.upstream.guards.budget.deposit();
        let mut last = None;
        let sent = f.record.on.then(Tick::now);
        if sent.is_some() {
            // Named before the call, so a request abandoned during it is
            // logged with the upstream it was waiting for.
            f.record.upstream = Some(a.upstream.name.clone());
        }
        let exchange = call.attempts(
            Request::from_parts(parts, body),
            permits,
            client_upgrade,
            &mut last,
        );
        let result = match call.deadline {
            Some(d) => deadline::timeout_at(d, exchange)
                .await
                .unwrap_or_else(|_| Err(timeout_error("answer"))),
            None => exchange.await,
        };
        let result = match grpc_web {
            Some(mode) => result.map(|r| grpc_web::response(r, mode)),
            None => result,
        };
        // To an HTTP/2 client any 2xx opens the tunnel, so an upstream that
        // answers the handshake normally instead of switching is an error.
        let result = match result {
        Ok(r)
            if extended_connect
                && r.status().is_success()
                && r.extensions().get::<upgrade::Switched>().is_none() =>
        {
            Err(GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("the upstream answered the WebSocket handshake with {} instead of switching protocols", r.status()),
            ))
        }
        r => r,
    };
        if let Some(sent) = sent {
            let up = &a.upstream;
            let took = sent.elapsed();
            if let Some(m) = &up.metrics {
                m.observe(took.as_secs_f64());
            }
            let rec = &mut *f.record;
            rec.upstream_time = Some(took);
            rec.target = last.map(|(i, _)| up.targets[i].address.clone());
            // Unsampled traces keep the span only when it may be exported for an error.
            let failed = result
                .as_ref()
                .map_or(true, |r| r.status().is_server_error());
            let keep = rec.trace.as_ref().is_some_and(|t| t.sampled)
                || (failed
                    && f.snap
                        .observe
                        .tracer
                        .as_ref()
                        .is_some_and(|t| t.always_sample_errors));
            if let Some(span_id) = client_span.filter(|_| keep) {
                // Timed by the monotonic clock; the wall clock is read only
                // for spans that are exported.
                let end = unix_ns();
                let mut attributes =
                    vec![("portcullis.upstream", AttrValue::Str(up.name.to_string()))];
                if let Some(t) = &rec.target {
                    attributes.push(("server.address", AttrValue::Str(t.to_string())));
                }
                if let Some((_, n)) = last {
                    attributes.push(("http.request.resend_count", AttrValue::Int(n as i64 - 1)));
                }
                let error = match &result {
                    Ok(r) => {
                        attributes.push((
                            "http.response.status_code",
                            AttrValue::Int(i64::from(r.status().as_u16())),
                        ));
                        r.status()
                            .is_server_error()
                            .then(|| format!("status {}", r.status()))
                    }
                    Err(e) => Some(e.code.to_string()),
                };
                rec.spans.push(ChildSpan {
                    name: "upstream",
                    span_id,
                    kind: SpanKind::Client,
                    start_unix_ns: end.saturating_sub(took.as_nanos() as u64),
                    end_unix_ns: end,
                    attributes,
                    error,
                });
            }
        }
        result
    }
}

/// One upstream call: the settings every attempt shares.
struct Call<'a> {
    a: &'a ProxyAction,
    key: &'a [u8],
    preserved_host: Option<HeaderValue>,
    stale_replayable: bool,
    retry_replayable: bool,
    deadline: Option<Tick>,
    /// The request body's own record of why it failed (HTTP/2 upstreams).
    body_failure: Option<FailureSlot>,
}

impl Call<'_> {
    /// Tries targets until one answers, a failure is not retryable, or the
    /// retry policy or budget says stop. Every attempt goes to a target not
    /// tried before (while there are any) and feeds passive health.
    #[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
    fn attempts<'s>(
        &'s self,
        mut req: Request<ProxyBody>,
        permits: (Option<Permit>, Option<Permit>),
        mut client_upgrade: Option<ClientUpgrade>,
        last: &'s mut Option<(usize, usize)>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + 's {
        // Not an `async fn` (see `pipeline::handle`).
        async move {
            let up = &self.a.upstream;
            let policy = &up.guards.retry;
            let mut tried = [usize::MAX; 8];
            let mut n = 0usize;
            let mut last_error: Option<GatewayError> = None;
            loop {
                let Some(idx) = up.pick(self.key, &tried[..n.min(tried.len())]) else {
                    return Err(last_error.unwrap_or_else(|| {
                        GatewayError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no_healthy_upstream",
                            "no healthy upstream target is available",
                        )
                    }));
                };
                if n < tried.len() {
                    tried[n] = idx;
                }
                n += 1;
                // The target tried last and how many attempts so far (log phase).
                *last = Some((idx, n));
                let (target, stats) = (&up.targets[idx], &up.stats[idx]);
                let host = self
                    .preserved_host
                    .clone()
                    .unwrap_or_else(|| target.host_header.clone());
                if up.transport.http2 {
                    // HTTP/2 carries the host as `:authority`, from the URI.
                    let mut uri = std::mem::take(req.uri_mut()).into_parts();
                    uri.scheme = Some(if up.transport.tls.is_some() {
                        Scheme::HTTPS
                    } else {
                        Scheme::HTTP
                    });
                    uri.authority = Authority::try_from(host.as_bytes()).ok();
                    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
                    req.headers_mut().remove(header::HOST);
                } else {
                    req.headers_mut().insert(header::HOST, host);
                }
                let may_retry = n as u32 <= policy.attempts;
                let copy = (may_retry && self.retry_replayable && policy.may_replay())
                    .then(|| HeadCopy::of(&req));
                // Counted in flight until the response body ends (or the exchange fails).
                let load = stats.start();
                stats.begin_attempt();
                let sent_at = up.balancer.decay_ns().map(|d| (d, now_ns()));
                // Without a tokio timer per request (see `clock::deadline`).
                let outcome = deadline::timeout(
                    self.a.timeouts.read,
                    self.a
                        .pool
                        .send(target, req, self.stale_replayable, copy.as_ref()),
                )
                .await;
                if let Some((decay, at)) = sent_at {
                    // Latency-aware balancing learns from the time to response headers;
                    // a failure counts as a slow answer so a broken target is avoided.
                    let now = now_ns();
                    let ok = matches!(&outcome, Ok(Ok(r)) if !up.is_failure_status(r.status()));
                    stats.observe(
                        if ok {
                            now - at
                        } else {
                            (now - at).max(FAILURE_PENALTY_NS)
                        },
                        now,
                        decay,
                    );
                }
                let again = match outcome {
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        up.record(idx, up.is_failure_status(status));
                        match copy {
                            Some(c)
                                if may_retry
                                    && policy.on_statuses.contains(&status)
                                    && up.guards.budget.withdraw() =>
                            {
                                last_error = Some(GatewayError::new(
                                    StatusCode::BAD_GATEWAY,
                                    "upstream_error",
                                    format!("the upstream answered {status} on every attempt"),
                                ));
                                resend(&c)?
                            }
                            _ => {
                                let held = Held {
                                    target: load,
                                    upstream: permits.0,
                                    route: permits.1,
                                };
                                if status == StatusCode::SWITCHING_PROTOCOLS {
                                    return match client_upgrade.take() {
                                    Some(client) => switch_protocols(resp, client, held, self.a.timeouts.read),
                                    // A switch nobody asked for cannot be relayed.
                                    None => Err(GatewayError::new(
                                        StatusCode::BAD_GATEWAY,
                                        "upstream_error",
                                        "the upstream switched protocols without an upgrade request",
                                    )),
                                };
                                }
                                return Ok(finish(resp, held, self.a.timeouts.read, self.deadline));
                            }
                        }
                    }
                    Ok(Err(SendError { error, unsent })) => {
                        let body = body_failure(&error, self.body_failure.as_ref());
                        let gateway_error = classify(&error, body);
                        if matches!(
                            body,
                            Some(
                                BodyError::TooLarge(_)
                                    | BodyError::Idle(_)
                                    | BodyError::Malformed(_)
                            )
                        ) {
                            // The client's body failed, not the upstream: no
                            // retry, and the target's health is not charged.
                            return Err(gateway_error);
                        }
                        up.record(idx, true);
                        tracing::debug!(target: "portcullis::proxy", upstream = %up.name, target = %target.address, error = ?error, "upstream exchange failed");
                        let retry = match (&error, unsent) {
                            (
                                UpstreamError::Connect(_) | UpstreamError::ConnectTimeout,
                                Some(r),
                            ) if policy.on_connect_failure => Some(r),
                            (UpstreamError::Http(_), _) if policy.on_error => {
                                copy.as_ref().map(resend).transpose()?
                            }
                            _ => None,
                        };
                        match retry {
                            Some(r) if may_retry && up.guards.budget.withdraw() => {
                                last_error = Some(gateway_error);
                                r
                            }
                            _ => return Err(gateway_error),
                        }
                    }
                    Err(_elapsed) => {
                        up.record(idx, true);
                        match copy {
                            Some(c)
                                if may_retry
                                    && policy.on_timeout
                                    && up.guards.budget.withdraw() =>
                            {
                                last_error = Some(timeout_error("answer"));
                                resend(&c)?
                            }
                            _ => return Err(timeout_error("answer")),
                        }
                    }
                };
                tracing::debug!(target: "portcullis::proxy", upstream = %up.name, attempt = n + 1, "retrying on another target");
                if let Some(m) = &up.metrics {
                    m.retried();
                }
                tokio::time::sleep(policy.backoff(n as u32)).await;
                req = again;
            }
        }
    }
}

/// Relays the upstream's `101 Switching Protocols` (as `200` to an HTTP/2
/// client, once the upstream's accept matches the key the gateway sent) and
/// bridges both upgraded connections on their own task, idle-limited by the
/// read timeout.
fn switch_protocols(
    mut resp: Response<PooledBody>,
    client: ClientUpgrade,
    held: Held,
    idle: Duration,
) -> Result<Response<ResponseBody>, GatewayError> {
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, body) = resp.into_parts();
    body.detach();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    match &client.h2_key {
        None => {
            if let Some(p) = protocol {
                upgrade::restore_headers(&mut parts.headers, p);
            }
        }
        Some(key) => {
            let accept = parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            let expected = upgrade::accept_for(key.as_bytes());
            if accept.as_ref().map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
                return Err(GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream answered the WebSocket handshake with a wrong Sec-WebSocket-Accept",
                ));
            }
            parts.status = StatusCode::OK;
            parts.extensions.insert(upgrade::Switched);
        }
    }
    tokio::spawn(upgrade::bridge(client.on, upstream, idle, held));
    Ok(Response::from_parts(parts, super::body::full("")))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), per the gRPC over HTTP/2 spec.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Turns the upstream's response into the client's: hop-by-hop headers
/// removed, body guarded by the read timeout and the deadline, and the
/// target's in-flight count held until the body ends.
fn finish(
    resp: Response<PooledBody>,
    held: Held,
    read: Duration,
    deadline: Option<Tick>,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = GuardedBody::new(body, None, Some(read), deadline);
    Response::from_parts(
        parts,
        ResponseBody::Upstream {
            body,
            held: Some(held),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::parse_grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_per_spec() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        for bad in [
            &b""[..],
            b"m",
            b"10",
            b"10x",
            b"123456789m",
            b"-1S",
            b"1.5S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
