//! The one JSON shape of every error the gateway itself produces:
//! `{"error": {"status", "code", "message", "request_id"}}`. Messages never
//! carry internals (upstream addresses, file paths).

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, ResponseBody};

/// An error answered by the gateway instead of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct GatewayError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, like `route_not_found`.
    pub code: &'static str,
    /// Human-readable explanation, safe to show to clients.
    pub message: String,
    /// Ask hyper to close the client connection after this response.
    pub close: bool,
}

impl GatewayError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            code,
            message: message.into(),
            close: false,
        }
    }

    /// Marks the connection to be closed after the response (for framing errors).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Renders the JSON response.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let body = serde_json::json!({
            "error": {
                "status": self.status.as_u16(),
                "code": self.code,
                "message": self.message,
                "request_id": request_id.to_str().unwrap_or(""),
            }
        });
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
