//! The per-request pipeline: protocol checks, routing, then the route's
//! action (respond, redirect or proxy). Runs once per request on the snapshot
//! loaded when the request arrived; later phases (access, cache, transforms)
//! slot in between routing and the action.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::arrival::{Arrival, Seen};
use super::body::{ClientBody, ObservedBody, ResponseBody};
use super::errors::GatewayError;
use super::{actions, forward, request_id};
use crate::observability::request::{Finish, Record, Start};
use crate::observability::span::TraceContext;
use crate::plugins::chain::Stop;
use crate::plugins::{cors, Access};
use crate::routing::normalize::normalize_path;
use crate::routing::{Lookup, PathPattern, RouteInput};
use crate::snapshot::{Action, Listener, ListenerKey, Route, Snapshot};
use crate::upstream::balancer::HashKey;

/// State shared by every connection: the current snapshot.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot new requests use; swapped atomically on reload.
    pub snapshot: ArcSwap<Snapshot>,
}

/// Facts about one client connection, computed once when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener the connection arrived on (its key in the snapshot).
    pub listener: ListenerKey,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The peer's IP as a header value (`X-Forwarded-For`).
    pub peer_value: HeaderValue,
    /// `for=<peer>;proto=<scheme>`, the start of this hop's `Forwarded` element.
    pub forwarded_for: Bytes,
    /// The verified client certificate's identity (mTLS listeners).
    pub client_cert: Option<Arc<crate::server::client_cert::ClientIdentity>>,
    /// The negotiated TLS version (`TLSv1.3`), on TLS connections.
    pub tls_version: Option<&'static str>,
}

impl ConnInfo {
    /// Describes a newly accepted connection.
    pub fn new(peer: SocketAddr, listener: ListenerKey, scheme: &'static str) -> ConnInfo {
        let ip = peer.ip().to_string();
        let node = if peer.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.clone()
        };
        ConnInfo {
            peer,
            listener,
            scheme,
            peer_value: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            forwarded_for: Bytes::from(format!("for={node};proto={scheme}")),
            client_cert: None,
            tls_version: None,
        }
    }
}

static VIA: HeaderValue = HeaderValue::from_static("1.1 portcullis");

/// Handles one request end to end; never fails (errors become JSON responses).
#[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
pub fn handle<'a>(
    req: Request<Incoming>,
    conn: &'a ConnInfo,
    shared: &'a Shared,
) -> impl Future<Output = Response<ResponseBody>> + 'a {
    // Not an `async fn`: those copy each argument into the future's
    // locals on the first poll, and the request is about 250 bytes (and
    // stored twice in the future). See BENCHMARKS.md, "async fn arguments".
    async move {
        let snap: Arc<Snapshot> = shared.snapshot.load_full();
        let rid_name = &snap.settings.request_id_header;
        let arrival = Arrival::of(req.headers(), rid_name);
        let rid = request_id::from_client(arrival.request_id);
        // gRPC and gRPC-Web clients get errors as a gRPC status, in their encoding.
        let grpc = super::grpc_web::error_content_type(arrival.content_type);
        // The log phase, set up only when the snapshot records something: the
        // record is made once, in the allocation the response body will carry,
        // and the pipeline fills it in place. Were the request abandoned before
        // its response (the client went away), it is recorded as it drops.
        let mut observed = snap.observe.active().then(|| {
            if let Some(m) = &snap.observe.metrics {
                m.in_flight.inc();
            }
            let mut record = Record {
                on: true,
                ..Record::default()
            };
            if let Some(t) = &snap.observe.tracer {
                record.trace = Some(TraceContext::start(
                    arrival.traceparent,
                    arrival.tracestate,
                    t,
                ));
            }
            let sampled = record.trace.as_ref().is_some_and(|t| t.sampled);
            ObservedBody::new(Finish::new(
                snap.clone(),
                Start::new(&req, &arrival, &snap.observe, sampled),
                record,
                rid.clone(),
                conn.peer.ip(),
                conn.listener,
                conn.tls_version,
            ))
        });
        // Without a log phase the pipeline still writes to a record; it is
        // made only then (an empty one would still cost a drop).
        let seen = arrival.seen();
        let mut unrecorded = None;
        let rec = match &mut observed {
            Some(o) => o.record(),
            None => unrecorded.insert(Record::default()),
        };
        let mut resp = match snap.listener(conn.listener) {
            Some(listener) => {
                match route_and_act(req, seen, conn, &snap, listener, &rid, grpc, rec).await {
                    Ok(r) => r,
                    Err(e) => {
                        rec.error = Some(e.code);
                        render(e, grpc, &rid)
                    }
                }
            }
            None => {
                rec.error = Some("listener_closed");
                GatewayError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "listener_closed",
                    "this listener was removed from the configuration; reconnect",
                )
                .closing()
                .into_response(&rid)
            }
        };
        if let Some(mut o) = observed {
            o.responded(resp.status().as_u16());
            resp = resp.map(|b| b.observed(o));
        }
        let h = resp.headers_mut();
        h.insert(rid_name.clone(), rid);
        if snap.settings.via {
            h.append(header::VIA, VIA.clone());
        }
        if conn.scheme == "https" {
            let hsts = snap
                .listener(conn.listener)
                .and_then(|l| l.tls.as_ref())
                .and_then(|t| t.hsts.clone());
            if let Some(v) = hsts {
                h.insert(header::STRICT_TRANSPORT_SECURITY, v);
            }
        }
        resp
    }
}

/// The request's host for routing: the absolute-form authority wins over
/// `Host` (RFC 9112 §3.2.2); lowercase, without port.
fn request_host<'r>(
    req: &'r Request<Incoming>,
    seen: &'r Seen,
) -> Result<Option<Cow<'r, str>>, GatewayError> {
    let bad =
        |m: &str| GatewayError::new(StatusCode::BAD_REQUEST, "bad_host", m.to_string()).closing();
    let raw: Option<&str> = if let Some(a) = req.uri().authority() {
        Some(a.as_str())
    } else {
        if seen.more_hosts {
            return Err(bad("more than one Host header"));
        }
        match &seen.host {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| bad("Host header is not valid text"))?,
            ),
            None if req.version() == Version::HTTP_11 => {
                return Err(bad("HTTP/1.1 requests need a Host header"))
            }
            None => None,
        }
    };
    let Some(raw) = raw else { return Ok(None) };
    let (host, port) = if let Some(v6) = raw.strip_prefix('[') {
        let (h, rest) = v6
            .split_once(']')
            .ok_or_else(|| bad("Host header is malformed"))?;
        (
            h,
            rest.strip_prefix(':')
                .or(Some(rest).filter(|r| r.is_empty()))
                .ok_or_else(|| bad("Host header is malformed"))?,
        )
    } else {
        raw.rsplit_once(':').unwrap_or((raw, ""))
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) || host.is_empty() {
        return Err(bad("Host header is malformed"));
    }
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b == b'/' || b == b'@')
    {
        return Err(bad("Host header is malformed"));
    }
    Ok(Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }))
}

/// The 308 to the same URL over HTTPS, for listeners with `redirect_to_https`.
fn https_redirect(
    host: Option<&str>,
    port: u16,
    req: &Request<Incoming>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let host = host.ok_or_else(|| {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "a Host header is needed to redirect to HTTPS",
        )
    })?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{host}{pq}"),
        p => format!("https://{host}:{p}{pq}"),
    };
    let mut resp = Response::new(super::body::full(""));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let value = HeaderValue::from_str(&location).map_err(|_| {
        GatewayError::new(
            StatusCode::BAD_REQUEST,
            "bad_request_target",
            "the request target is invalid",
        )
    })?;
    resp.headers_mut().insert(header::LOCATION, value);
    Ok(resp)
}

/// Rejects request shapes the gateway does not accept, before routing.
fn check_request(
    req: &Request<Incoming>,
    seen: &Seen,
    listener: &Listener,
) -> Result<(), GatewayError> {
    // WebSocket over HTTP/2 is the one CONNECT accepted (RFC 8441).
    let websocket_h2 = listener.limits.websocket && super::upgrade::is_extended_connect(req);
    if req.method() == Method::CONNECT && !websocket_h2 {
        return Err(GatewayError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "connect_not_allowed",
            "CONNECT tunnels are not enabled on this gateway",
        ));
    }
    // hyper rejects a non-chunked final coding; anything besides plain `chunked`
    // would reach the upstream re-framed but still coded, so refuse it.
    // HTTP/1 framing only: HTTP/2 has no Transfer-Encoding (hyper refuses it).
    let http1 = req.version() <= Version::HTTP_11;
    if let Some(plain) = seen.transfer_encoding.filter(|_| http1) {
        if !plain {
            return Err(GatewayError::new(
                StatusCode::BAD_REQUEST,
                "bad_framing",
                "only `Transfer-Encoding: chunked` is accepted",
            )
            .closing());
        }
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > listener.limits.max_uri_length {
        return Err(GatewayError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is longer than {} bytes",
                listener.limits.max_uri_length
            ),
        ));
    }
    if req.uri().path() == "*" || !req.uri().path().starts_with('/') {
        return Err(GatewayError::new(
            StatusCode::BAD_REQUEST,
            "bad_request_target",
            "the request target must be a path",
        ));
    }
    Ok(())
}

#[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
#[allow(clippy::too_many_arguments)]
fn route_and_act<'a>(
    req: Request<Incoming>,
    seen: Seen,
    conn: &'a ConnInfo,
    snap: &'a Snapshot,
    listener: &'a Listener,
    rid: &'a HeaderValue,
    grpc: Option<&'static str>,
    rec: &'a mut Record,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + 'a {
    // Not an `async fn`, for the reason given at `handle`.
    async move {
        check_request(&req, &seen, listener)?;
        let host = request_host(&req, &seen)?;
        if let Some(port) = listener.redirect_to_https {
            return https_redirect(host.as_deref(), port, &req);
        }
        let path = normalize_path(req.uri().path());
        // A WebSocket over HTTP/2 is routed like its HTTP/1.1 handshake, a GET.
        let method = if req.method() == Method::CONNECT {
            &Method::GET
        } else {
            req.method()
        };
        let input = RouteInput {
            host: host.as_deref().unwrap_or(""),
            path: &path,
            method,
            headers: req.headers(),
            query: req.uri().query(),
        };
        let mut lookup = listener.router.lookup(&input);
        // A CORS preflight is routed like the request it announces, unless a
        // route takes OPTIONS itself.
        if !matches!(lookup, Lookup::Found(_)) && cors::is_preflight(req.method(), req.headers()) {
            let announced = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
            if let Some(method) = announced {
                let again = listener.router.lookup(&RouteInput {
                    method: &method,
                    ..input
                });
                if matches!(again, Lookup::Found(_)) {
                    lookup = again;
                }
            }
        }
        let m = match lookup {
            Lookup::Found(m) => m,
            Lookup::NotFound => {
                return Err(GatewayError::new(
                    StatusCode::NOT_FOUND,
                    "route_not_found",
                    "no route matches this request",
                ))
            }
            Lookup::MethodNotAllowed(allowed) => {
                let allow = allowed
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                rec.error = Some("method_not_allowed");
                let mut resp = GatewayError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} is not allowed here; allowed: {allow}", req.method()),
                )
                .into_response(rid);
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
                return Ok(resp);
            }
        };
        let route = &snap.routes[m.route as usize];
        rec.route = Some(m.route);
        let limit = route.max_body_size.unwrap_or(listener.limits.max_body_size);
        // A request hyper found to have no body declares none worth checking.
        let bodyless = http_body::Body::is_end_stream(req.body());
        let declared = (!bodyless)
            .then(|| req.headers().get(header::CONTENT_LENGTH))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            // Answered before the body is read, so no `100 Continue` is sent.
            return Err(GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
            .closing());
        }
        // Only bodies that exist are counted (no allocation for GET and the like).
        let mut req = if rec.on && !bodyless {
            let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            rec.request_bytes = Some(count.clone());
            req.map(|b| ClientBody::counted(b, count))
        } else {
            req.map(ClientBody::stream)
        };
        let mut body_limit = limit;
        let mut extra = Vec::new();
        let mut holds = Vec::new();
        let pattern = m.path.map(|i| &route.paths[i as usize]);
        if route.chain.is_empty() {
            // Clients never get to claim an identity, plugins or not.
            snap.identity_headers.apply(req.headers_mut(), None);
        } else {
            let mut cx = Access::new(
                &mut req,
                conn,
                &listener.trusted_proxies,
                &route.name,
                &snap.consumers,
                limit,
                listener.limits.body_read_timeout,
                grpc.is_some(),
            );
            cx.matched = pattern;
            cx.tracing = rec.trace.is_some();
            let outcome = route.chain.run(&mut cx).await;
            body_limit = cx.body_limit;
            extra = std::mem::take(&mut cx.response_headers);
            holds = std::mem::take(&mut cx.holds);
            rec.spans.append(&mut cx.spans);
            let identity = cx.identity.take();
            if let (true, Some(id)) = (rec.on, &identity) {
                rec.consumer = id.consumer.as_ref().map(|c| c.name.clone());
                rec.subject = Some(id.subject.clone());
            }
            let early = match outcome {
                Ok(()) => {
                    snap.identity_headers
                        .apply(req.headers_mut(), identity.as_ref());
                    None
                }
                Err(Stop::Reject(e)) => {
                    rec.error = Some(e.code);
                    Some(render(e, grpc, rid))
                }
                Err(Stop::Respond(r)) => Some(*r),
            };
            if let Some(mut resp) = early {
                add_headers(&mut resp, extra);
                return Ok(resp);
            }
        }
        // What arrived still holds when no plugin had the request.
        let seen = route.chain.is_empty().then_some(seen);
        let result = act(
            req, seen, conn, snap, listener, rid, route, pattern, body_limit, rec,
        )
        .await;
        if extra.is_empty() && holds.is_empty() {
            return result;
        }
        let mut resp = result.unwrap_or_else(|e| {
            rec.error = Some(e.code);
            render(e, grpc, rid)
        });
        add_headers(&mut resp, extra);
        Ok(resp.map(|b| b.holding(holds)))
    }
}

/// A gateway error as the client expects it (gRPC status or JSON).
fn render(
    e: GatewayError,
    grpc: Option<&'static str>,
    rid: &HeaderValue,
) -> Response<ResponseBody> {
    match grpc {
        Some(content_type) => e.into_grpc_response(content_type),
        None => e.into_response(rid),
    }
}

/// Adds the headers plugins asked for: `Vary` is appended, others replace.
fn add_headers(resp: &mut Response<ResponseBody>, extra: Vec<(HeaderName, HeaderValue)>) {
    let h = resp.headers_mut();
    for (name, value) in extra {
        if name == header::VARY {
            h.append(name, value);
        } else {
            h.insert(name, value);
        }
    }
}

/// Runs the route's action: respond, redirect or proxy (through a split).
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // an `async fn` would copy its arguments
fn act<'a>(
    req: Request<ClientBody>,
    seen: Option<Seen>,
    conn: &'a ConnInfo,
    snap: &'a Snapshot,
    listener: &'a Listener,
    rid: &'a HeaderValue,
    route: &'a Route,
    pattern: Option<&'a PathPattern>,
    limit: u64,
    rec: &'a mut Record,
) -> impl Future<Output = Result<Response<ResponseBody>, GatewayError>> + 'a {
    // Not an `async fn`, for the reason given at `handle`.
    async move {
        // Normalized again rather than carried over: the plugins held the
        // request mutably in between (a scan; it allocates only if it changes).
        let path = normalize_path(req.uri().path());
        let (a, set_cookie) = match &route.action {
            Action::Respond(a) => return Ok(actions::respond(a, pattern, &path)),
            Action::Redirect(a) => {
                return Ok(actions::redirect(a, pattern, &path, req.uri().query()))
            }
            Action::Proxy(a) => (a, None),
            Action::Split(s) => {
                let (i, by_weight) = s.choose(req.headers()).ok_or_else(|| {
                    GatewayError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no_healthy_upstream",
                        "no upstream takes traffic here",
                    )
                })?;
                let (name, a) = &s.choices[i];
                // A sticky split remembers a choice made by weight in its cookie.
                let cookie = match (&s.cookie, s.sticky && by_weight) {
                    (Some(c), true) => HeaderValue::from_str(&format!(
                        "{c}={name}; Path=/; HttpOnly; SameSite=Lax"
                    ))
                    .ok(),
                    _ => None,
                };
                (a, cookie)
            }
        };
        let strip = if a.strip_prefix {
            pattern
                .and_then(|p| p.captures(&path))
                .map_or(0, |(_, n)| n)
        } else {
            0
        };
        // Only a hash on a path capture needs the path after the request moves on.
        let capture_path = match a.upstream.balancer.hash_key() {
            Some(HashKey::Capture(_)) => Some(path.to_string()),
            _ => None,
        };
        // `None`: the client's path goes up unchanged (no copy needed).
        let upstream_path = match (&path, strip) {
            (Cow::Borrowed(_), 0) => None,
            _ => Some(match &path[strip..] {
                p if p.starts_with('/') => p.to_string(),
                // A regex may end mid-segment; keep the path absolute.
                p => format!("/{p}"),
            }),
        };
        let mut resp = forward::forward(
            req,
            forward::Forward {
                action: a,
                listener,
                conn,
                snap,
                rid,
                path: upstream_path.as_deref(),
                body_limit: limit,
                matched: (pattern, capture_path.as_deref().unwrap_or("")),
                record: rec,
                seen,
            },
        )
        .await?;
        if let Some(c) = set_cookie {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        Ok(resp)
    }
}
