//! The admin listener: a separate HTTP server (never one of the public
//! listeners, loopback by default) built with axum. It serves:
//!
//! * the operational endpoints (`/metrics`, `/healthz`, `/readyz`,
//!   `/log-level`, see [`ops`]), open to probes and scrapers;
//! * the Admin API under `/api` (see [`api`]): the configuration's
//!   resources, runtime state and an OpenAPI document, for callers with a
//!   bearer token or a client certificate ([`auth`]); every write is
//!   audited ([`audit`]).
//!
//! With `admin.tls` it speaks TLS, and with `client_auth` it verifies client
//! certificates, whose subjects `admin.clients` maps to roles.

pub mod api;
pub mod audit;
pub mod auth;
pub mod ops;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::gateway::GatewayHandle;
use crate::proxy::Shared;
use crate::server::client_cert::ClientIdentity;
use crate::server::ConnTracker;

/// What the admin endpoints read and change.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The current snapshot.
    pub shared: Arc<Shared>,
    /// Open client connections.
    pub tracker: Arc<ConnTracker>,
    /// Set when shutdown begins: `/readyz` fails so load balancers stop
    /// sending new traffic while in-flight requests drain.
    pub draining: Arc<AtomicBool>,
    /// The gateway, for applying Admin API writes.
    pub gateway: GatewayHandle,
    /// Admin API writes happen one at a time on a node.
    pub writes: Arc<tokio::sync::Mutex<()>>,
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

/// Every admin route.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::ready))
        .route("/log-level", get(ops::log_level).put(ops::set_log_level))
        .nest("/api", api::router())
        .fallback(|| async {
            ops::error(
                http::StatusCode::NOT_FOUND,
                "not_found",
                "admin endpoints: /metrics, /healthz, /readyz, /log-level, /api (see /api/openapi.json)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ops::error(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed here; see /api/openapi.json",
            )
        })
        .with_state(state)
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
        let app = router(state.clone());
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
                // TLS settings are read per connection: a reload that
                // changes them applies to the next connection.
                let tls = state
                    .shared
                    .snapshot
                    .load()
                    .settings
                    .admin_access
                    .tls
                    .clone();
                tokio::spawn(serve(stream, tls, app.clone()));
            }
        });
        Ok(AdminServer {
            configured: addr,
            local,
            task: task.abort_handle(),
        })
    }
}

/// Serves one admin connection, in TLS when configured.
async fn serve(stream: tokio::net::TcpStream, tls: Option<Arc<rustls::ServerConfig>>, app: Router) {
    let Some(config) = tls else {
        serve_http(TokioIo::new(stream), None, app).await;
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| ClientIdentity::from_der(c))
        .map(Arc::new);
    serve_http(TokioIo::new(tls), peer, app).await;
}

async fn serve_http<I>(io: I, peer: Option<Arc<ClientIdentity>>, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        if let Some(p) = &peer {
            req.extensions_mut().insert(p.clone());
        }
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .await;
}
