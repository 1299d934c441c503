//! `acl`: allow or deny consumer groups on a route. Runs after
//! authentication; a request without an identity is refused with 401, one
//! whose groups are not allowed with 403.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use super::context::Access;
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Groups allowed (any one suffices).
    #[serde(default)]
    allow: Vec<String>,
    /// Groups refused (any one refuses; checked before `allow`).
    #[serde(default)]
    deny: Vec<String>,
}

/// The compiled plugin.
#[derive(Debug)]
pub struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Builds `acl` from its configuration.
pub fn build(
    v: &serde_json::Value,
    _cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    if c.allow.is_empty() && c.deny.is_empty() {
        return Err((
            String::new(),
            "give `allow` or `deny` (lists of consumer groups)".into(),
        ));
    }
    Ok(Arc::new(Acl {
        allow: c.allow,
        deny: c.deny,
    }))
}

impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn phase(&self) -> Phase {
        Phase::Authorization
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        let Some(id) = &cx.identity else {
            return Step::Reject(GatewayError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this route needs an authenticated caller; add an authentication plugin before `acl`",
            ));
        };
        let has = |list: &[String]| id.groups().any(|g| list.iter().any(|l| **l == **g));
        let denied = has(&self.deny) || (!self.allow.is_empty() && !has(&self.allow));
        if denied {
            return Step::Reject(GatewayError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this consumer is not allowed to use this route",
            ));
        }
        Step::Continue
    }
}
