//! The operational endpoints of the admin listener: `/metrics`,
//! `/healthz`, `/readyz` and `/log-level`. They stay reachable without
//! credentials (probes and scrapers), except changing the log level.

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{header, StatusCode};
use serde_json::json;

use super::AdminState;
use crate::observability::scrape::{self, Live};
use crate::upstream::stats::now_ns;
use std::sync::atomic::Ordering;

/// A JSON response.
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The gateway's JSON error shape.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"error": {"status": status.as_u16(), "code": code, "message": message}}),
    )
}

/// `GET /metrics`: OpenMetrics text of one snapshot.
pub async fn metrics(State(state): State<AdminState>) -> Response {
    let state = &state;
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
    let mut resp = Response::new(Body::from(out));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

/// `GET /readyz`: 200 when ready for traffic, 503 with the reasons otherwise.
pub async fn ready(State(state): State<AdminState>) -> Response {
    let state = &state;
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

/// `PUT /log-level`: changes the diagnostic log's filter (`debug`, or
/// `{"filter": "portcullis=debug"}`); needs a read-write caller when
/// Admin API credentials are configured.
pub async fn set_log_level(
    State(state): State<AdminState>,
    parts: http::request::Parts,
    body: Body,
) -> Response {
    let access = state.shared.snapshot.load().settings.admin_access.clone();
    if access.configured() {
        match access.authenticate(&parts.headers, super::auth::peer(&parts)) {
            Ok(c) if c.role == crate::config::control::AdminRole::ReadWrite => {}
            Ok(_) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "changing the log level needs a read_write credential",
                )
            }
            Err(_) => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer <token>` with a read_write token",
                )
            }
        }
    }
    let body = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => b,
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

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// `GET /log-level`: the diagnostic log's filter.
pub async fn log_level() -> Response {
    match crate::observability::log_level() {
        Some(filter) => json_response(StatusCode::OK, json!({"filter": filter})),
        None => error(
            StatusCode::NOT_FOUND,
            "log_not_managed",
            "this process did not install the diagnostic log (embedded use)",
        ),
    }
}
