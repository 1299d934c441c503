//! `request_size_limit`: a per-route (or per-consumer) request body limit,
//! lower than the listener's. A declared `Content-Length` above it is refused
//! before the body is read (no `100 Continue`); a streamed body is cut off
//! with 413 when it crosses the limit.

use std::sync::Arc;

use http::{header, StatusCode};
use serde::Deserialize;

use super::context::Access;
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::config::units::ByteSize;
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The largest body accepted, like `1mb`.
    max: ByteSize,
}

/// The compiled plugin.
#[derive(Debug)]
pub struct RequestSizeLimit {
    max: u64,
}

/// Builds `request_size_limit` from its configuration.
pub fn build(
    v: &serde_json::Value,
    _cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    Ok(Arc::new(RequestSizeLimit { max: c.max.0 }))
}

impl Plugin for RequestSizeLimit {
    fn name(&self) -> &'static str {
        "request_size_limit"
    }

    fn phase(&self) -> Phase {
        Phase::Limits
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        cx.body_limit = cx.body_limit.min(self.max);
        let declared = cx
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cx.body_limit) {
            return Step::Reject(
                GatewayError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than {} bytes", cx.body_limit),
                )
                .closing(),
            );
        }
        Step::Continue
    }
}
