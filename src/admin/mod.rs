//! The admin listener: a separate HTTP server (never one of the public
//! listeners) with `/metrics` (Prometheus), `/healthz` (the process is
//! alive), `/readyz` (the configuration is loaded, listeners are bound,
//! not draining, optionally every upstream has a healthy target) and
//! `/log-level` (read or change the diagnostic log's filter). Bind it to
//! loopback or a private network: it has no authentication of its own yet.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::observability::scrape::{self, Live};
use crate::proxy::Shared;
use crate::server::ConnTracker;
use crate::upstream::stats::now_ns;

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The current snapshot.
    pub shared: Arc<Shared>,
    /// Open client connections.
    pub tracker: Arc<ConnTracker>,
    /// Set when shutdown begins: `/readyz` fails so load balancers stop
    /// sending new traffic while in-flight requests drain.
    pub draining: Arc<AtomicBool>,
}

/// A bound admin listener; dropping it stops the server.
#[derive(Debug)]
pub struct AdminServer {
    /// The configured address.
    pub configured: SocketAddr,
    /// The bound address (differs for port 0).
    pub local: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AdminServer {
    /// Binds `addr` and serves the admin endpoints on `handle`'s runtime.
    pub fn start(
        addr: SocketAddr,
        handle: &tokio::runtime::Handle,
        state: AdminState,
    ) -> std::io::Result<AdminServer> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let task = handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve the admin listener");
                    return;
                }
            };
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle_request(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(AdminServer {
            configured: addr,
            local,
            task: task.abort_handle(),
        })
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        json!({"error": {"status": status.as_u16(), "code": code, "message": message}}),
    )
}

/// Answers one admin request.
pub async fn handle_request(req: Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let allowed: &[Method] = match req.uri().path() {
        "/metrics" | "/healthz" | "/readyz" => &[Method::GET, Method::HEAD],
        "/log-level" => &[Method::GET, Method::PUT],
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "admin endpoints: /metrics, /healthz, /readyz, /log-level",
            )
        }
    };
    if !allowed.contains(req.method()) {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed here",
        );
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = header::HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return resp;
    }
    match req.uri().path() {
        "/metrics" => metrics(state),
        "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/readyz" => ready(state),
        _ if req.method() == Method::PUT => set_log_level(req).await,
        _ => match crate::observability::log_level() {
            Some(filter) => json_response(StatusCode::OK, json!({"filter": filter})),
            None => error(
                StatusCode::NOT_FOUND,
                "log_not_managed",
                "this process did not install the diagnostic log (embedded use)",
            ),
        },
    }
}

fn metrics(state: &AdminState) -> Response<Full<Bytes>> {
    // One snapshot for the whole scrape: a reload meanwhile is seen whole or not at all.
    let snap = state.shared.snapshot.load_full();
    let Some(m) = &snap.observe.metrics else {
        return error(
            StatusCode::NOT_FOUND,
            "metrics_disabled",
            "metrics are off; set `observability.metrics.enabled: true`",
        );
    };
    let mut out = String::with_capacity(16 * 1024);
    let live = Live {
        connections: state.tracker.active(),
        started: scrape::process_start(),
    };
    let encoded = m
        .encode(&mut out)
        .and_then(|()| scrape::encode(&snap, &live, &mut out))
        .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut out));
    if encoded.is_err() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_failed",
            "the metrics could not be encoded",
        );
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

fn ready(state: &AdminState) -> Response<Full<Bytes>> {
    let snap = state.shared.snapshot.load_full();
    let mut reasons = Vec::new();
    if state.draining.load(Ordering::Relaxed) {
        reasons.push("shutting down: draining in-flight requests".to_string());
    }
    if snap.settings.require_healthy_upstreams {
        let now = now_ns();
        for u in &snap.upstreams {
            let healthy = (0..u.targets.len()).any(|i| u.takes_traffic(i, now));
            if !healthy {
                reasons.push(format!("upstream `{}` has no healthy target", u.name));
            }
        }
    }
    if reasons.is_empty() {
        json_response(
            StatusCode::OK,
            json!({"status": "ready", "revision": snap.revision}),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "revision": snap.revision, "reasons": reasons}),
        )
    }
}

async fn set_log_level(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "send the filter as at most 4 KiB of text",
            )
        }
    };
    // Plain text (`debug`) or JSON (`{"filter": "debug"}`).
    let text = String::from_utf8_lossy(&body);
    let spec = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => match v.get("filter").and_then(|f| f.as_str()) {
            Some(f) => f.to_string(),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_filter",
                    "send the filter as text, or JSON like {\"filter\": \"debug\"}",
                )
            }
        },
        Err(_) => text.trim().to_string(),
    };
    if spec.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_filter",
            "the filter is empty; send a level like `debug`",
        );
    }
    match crate::observability::set_log_level(&spec) {
        Ok(()) => json_response(StatusCode::OK, json!({"filter": spec})),
        Err(e) if crate::observability::log_level().is_none() => {
            error(StatusCode::NOT_FOUND, "log_not_managed", &e)
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_filter", &e),
    }
}
