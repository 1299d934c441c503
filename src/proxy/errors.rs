//! The one JSON shape of every error the gateway itself produces:
//! `{"error": {"status", "code", "message", "request_id"}}`. Messages never
//! carry internals (upstream addresses, file paths).

use http::header::HeaderName;
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
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Itemised problems (validation errors), rendered as `details`.
    pub details: Vec<String>,
}

impl GatewayError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            code,
            message: message.into(),
            close: false,
            headers: Vec::new(),
            details: Vec::new(),
        }
    }

    /// Lists the individual problems behind the error.
    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// Adds a response header (appended, so several challenges can coexist).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Marks the connection to be closed after the response (for framing errors).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The gRPC status code for this error (the gRPC spec's HTTP mapping,
    /// with limits as `RESOURCE_EXHAUSTED` and timeouts as `DEADLINE_EXCEEDED`).
    pub fn grpc_code(&self) -> u8 {
        match self.status.as_u16() {
            400 | 415 => 3,             // INVALID_ARGUMENT
            401 => 16,                  // UNAUTHENTICATED
            403 => 7,                   // PERMISSION_DENIED
            404 | 405 => 12,            // UNIMPLEMENTED
            408 | 504 => 4,             // DEADLINE_EXCEEDED
            413 | 414 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
            502 | 503 => 14,            // UNAVAILABLE
            _ => 13,                    // INTERNAL
        }
    }

    /// Renders the error for a gRPC or gRPC-Web client: HTTP 200 with
    /// `grpc-status` and `grpc-message` and no body (a trailers-only
    /// response), with the client's `content_type` (`application/grpc`,
    /// `application/grpc-web+proto`, …).
    pub fn into_grpc_response(self, content_type: &'static str) -> Response<ResponseBody> {
        let mut resp = Response::new(full(""));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_code())),
        );
        // grpc-message is percent-encoded UTF-8.
        let msg: String = self
            .message
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && b != b'%' || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&msg) {
            h.insert("grpc-message", v);
        }
        if let Ok(v) = HeaderValue::from_str(self.code) {
            h.insert("x-portcullis-error", v);
        }
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }

    /// Renders the JSON response.
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let mut body = serde_json::json!({
            "error": {
                "status": self.status.as_u16(),
                "code": self.code,
                "message": self.message,
                "request_id": request_id.to_str().unwrap_or(""),
            }
        });
        if !self.details.is_empty() {
            body["error"]["details"] = serde_json::json!(self.details);
        }
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
        for (name, value) in self.headers {
            h.append(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_grpc_codes() {
        let code = |s: u16| {
            GatewayError::new(StatusCode::from_u16(s).expect("status"), "x", "").grpc_code()
        };
        assert_eq!(
            [400, 401, 403, 404, 413, 415, 429, 503, 504, 500].map(code),
            [3, 16, 7, 12, 8, 3, 8, 14, 4, 13]
        );
    }
}
