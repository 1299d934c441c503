//! Read-only views of the running gateway: the configuration revision and
//! store (`/api/status`), and the health of every upstream's targets with
//! its circuit breaker (`/api/health`, `/api/upstreams/{name}/health`).

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::{tagged, ApiError};
use crate::admin::auth::Caller;
use crate::admin::AdminState;
use crate::config::document::etag;
use crate::gateway::ConfigSource;
use crate::upstream::stats::now_ns;
use crate::upstream::Upstream;

/// `GET /api/status`.
pub async fn status(State(state): State<AdminState>, caller: Caller) -> Result<Response, ApiError> {
    let snap = state.shared.snapshot.load_full();
    let (store, etcd_revision) = match state.gateway.get().map(|g| g.source()) {
        Some(ConfigSource::Cluster { cluster, .. }) => ("etcd", Some(cluster.shared().1)),
        Some(s) => (s.kind(), None),
        None => ("unknown", None),
    };
    let built: jiff::Timestamp = snap
        .built_at
        .try_into()
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": snap.revision,
        "loaded_at": built.to_string(),
        "etag": etag(&snap.raw),
        "store": store,
        "etcd_revision": etcd_revision,
        "draining": state.draining.load(std::sync::atomic::Ordering::Relaxed),
        "connections": state.tracker.active(),
        "counts": {
            "listeners": snap.listeners.len(),
            "routes": snap.routes.len(),
            "upstreams": snap.upstreams.len(),
        },
        "caller": {"name": caller.name, "role": caller.role.as_str()},
    });
    Ok(tagged(StatusCode::OK, body, None, snap.revision))
}

fn upstream_view(u: &Upstream, now: u64) -> Value {
    let targets: Vec<Value> = u
        .targets
        .iter()
        .zip(&u.stats)
        .enumerate()
        .map(|(i, (t, s))| {
            json!({
                "address": &*t.address,
                "weight": t.weight,
                "healthy": u.takes_traffic(i, now),
                "in_flight": s.in_flight(),
                "ejections": s.ejections_total(),
            })
        })
        .collect();
    let circuit = u.guards.breaker.as_ref().map(|b| match b.state(now) {
        0 => "closed",
        1 => "half_open",
        _ => "open",
    });
    json!({
        "name": &*u.name,
        "available": targets.iter().filter(|t| t["healthy"] == json!(true)).count(),
        "circuit": circuit,
        "targets": targets,
    })
}

/// `GET /api/health`: every upstream.
pub async fn health(
    State(state): State<AdminState>,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let snap = state.shared.snapshot.load_full();
    let now = now_ns();
    let data: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| upstream_view(u, now))
        .collect();
    Ok(tagged(
        StatusCode::OK,
        json!({"data": data}),
        None,
        snap.revision,
    ))
}

/// `GET /api/upstreams/{name}/health`.
pub async fn upstream_health(
    State(state): State<AdminState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snap = state.shared.snapshot.load_full();
    let u = snap
        .upstreams
        .iter()
        .find(|u| *u.name == *name)
        .ok_or_else(|| ApiError::not_found(&format!("upstreams/{name}")))?;
    Ok(tagged(
        StatusCode::OK,
        upstream_view(u, now_ns()),
        None,
        snap.revision,
    ))
}
