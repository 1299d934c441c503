//! The Admin API (`/api`): the configuration's resources (listeners,
//! certificates, upstreams and their targets, routes, consumers and their
//! credentials, global plugins) with list, get, create, replace, patch and
//! delete; the whole document (`/api/config`, used by `portcullis config`);
//! read-only runtime views (`/api/status`, `/api/health`); and the OpenAPI
//! document (`/api/openapi.json`).
//!
//! Every write changes the document as a whole and goes through the same
//! validation, compile and atomic swap as a file reload ([`commit`]).
//! Resources carry an `ETag`; writes with `If-Match` fail with 412 when the
//! resource changed meanwhile.

pub mod commit;
pub mod resources;
pub mod runtime;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::auth::{self, Caller, Denied};
use super::AdminState;
use crate::config::control::AdminRole;

/// The API routes, mounted under `/api`.
pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/status", get(runtime::status))
        .route("/health", get(runtime::health))
        .route(
            "/config",
            get(resources::get_config).put(resources::put_config),
        )
        .route(
            "/upstreams/{name}/targets",
            get(resources::list_targets).post(resources::add_target),
        )
        .route(
            "/upstreams/{name}/targets/{address}",
            axum::routing::delete(resources::delete_target),
        )
        .route("/upstreams/{name}/health", get(runtime::upstream_health))
        .route(
            "/consumers/{name}/credentials",
            get(resources::get_credentials)
                .put(resources::put_credentials)
                .patch(resources::patch_credentials),
        )
        .route("/{kind}", get(resources::list).post(resources::create))
        .route(
            "/{kind}/{id}",
            get(resources::get_one)
                .put(resources::replace)
                .patch(resources::patch)
                .delete(resources::delete),
        )
}

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// One problem in a rejected document: where (the document path and, when
/// it is inside the resource written, the field in it) and what.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldError {
    /// Path in the whole document, like `routes[3].match.paths[0]`.
    pub path: String,
    /// Path inside the written resource, like `match.paths[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// An Admin API error, answered as the gateway's JSON error shape.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Per-field problems (invalid documents).
    pub errors: Vec<FieldError>,
    /// More facts, like the routes that still use an upstream.
    pub details: Option<Box<Value>>,
}

impl ApiError {
    /// An error without field details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            details: None,
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} does not exist"),
        )
    }

    /// 412 for a write whose `If-Match` no longer matches.
    pub fn precondition(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("{what} changed since you read it (its ETag differs from If-Match); read it again and retry"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            json!({"status": self.status.as_u16(), "code": self.code, "message": self.message});
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        if let Some(d) = self.details {
            body["details"] = *d;
        }
        let mut resp = (self.status, axum::Json(json!({"error": body}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
            );
        }
        resp
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Caller, ApiError> {
        let access = state.shared.snapshot.load().settings.admin_access.clone();
        access
            .authenticate(&parts.headers, auth::peer(parts))
            .map_err(|d| match d {
                Denied::Missing => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the Admin API needs credentials: send `Authorization: Bearer <token>`",
                ),
                Denied::Wrong => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "these credentials are not valid for the Admin API",
                ),
                Denied::NoneConfigured => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the Admin API has no credentials configured; add `admin.tokens` (or `admin.clients` with mTLS) to the configuration",
                ),
            })
    }
}

/// A caller allowed to write.
#[derive(Debug)]
pub struct Writer(pub Caller);

impl FromRequestParts<AdminState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Writer, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role != AdminRole::ReadWrite {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "`{}` has the read_only role; writes need a read_write credential",
                    caller.name
                ),
            ));
        }
        Ok(Writer(caller))
    }
}

/// Reads a JSON body of at most the configured size.
pub async fn read_json(state: &AdminState, body: axum::body::Body) -> Result<Value, ApiError> {
    let limit = state.shared.snapshot.load().settings.admin_access.max_body;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes (`admin.max_body_size`)"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Checks `If-Match` and `If-None-Match` against the current tag of the
/// target (`None` when it does not exist).
pub fn preconditions(
    headers: &HeaderMap,
    current: Option<&str>,
    what: &str,
) -> Result<(), ApiError> {
    if let Some(m) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let ok = match current {
            None => false,
            Some(tag) => {
                m.trim() == "*"
                    || m.split(',')
                        .any(|t| t.trim().trim_start_matches("W/") == tag)
            }
        };
        if !ok {
            return Err(ApiError::precondition(what));
        }
    }
    if let Some(m) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if current.is_some() && (m.trim() == "*" || current.is_some_and(|tag| m.contains(tag))) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("{what} already exists (If-None-Match)"),
            ));
        }
    }
    Ok(())
}

/// A JSON response with an `ETag` and the configuration revision.
pub fn tagged(status: StatusCode, body: Value, etag: Option<String>, revision: u64) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert(header::ETAG, tag);
    }
    resp.headers_mut()
        .insert("x-config-revision", HeaderValue::from(revision));
    resp
}
