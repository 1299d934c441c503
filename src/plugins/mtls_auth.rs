//! `mtls_auth`: the verified client certificate of an mTLS listener
//! identifies the consumer. A consumer lists the certificates it owns under
//! `credentials.certificates`: a subject (`CN=app,O=Example`), a SAN
//! (`DNS:app.example.com`, `URI:spiffe://…`) or a `sha256:` fingerprint.

use std::sync::Arc;

use http::HeaderValue;
use serde::Deserialize;

use super::context::{Access, Identity};
use super::{invalid_credentials, BuildContext, BuildError, Phase, Plugin, Step};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Accept a verified certificate that maps to no consumer, identified
    /// by its subject (default: refuse it with 401).
    #[serde(default)]
    allow_unknown: bool,
    /// Consumer used when no certificate is presented.
    #[serde(default)]
    anonymous: Option<String>,
}

/// The compiled plugin.
#[derive(Debug)]
pub struct MtlsAuth {
    allow_unknown: bool,
    anonymous: Option<String>,
}

/// Builds `mtls_auth` from its configuration.
pub fn build(
    v: &serde_json::Value,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    super::check_anonymous(&c.anonymous, cx)?;
    Ok(Arc::new(MtlsAuth {
        allow_unknown: c.allow_unknown,
        anonymous: c.anonymous,
    }))
}

static CHALLENGE: HeaderValue = HeaderValue::from_static("Mutual realm=\"portcullis\"");

impl Plugin for MtlsAuth {
    fn name(&self) -> &'static str {
        "mtls_auth"
    }

    fn phase(&self) -> Phase {
        Phase::Authentication
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(CHALLENGE.clone())
    }

    fn anonymous(&self) -> Option<&str> {
        self.anonymous.as_deref()
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        // Only listeners with `client_auth` verify certificates; elsewhere
        // there is never one, so the credential is simply absent.
        let Some(cert) = cx.conn.client_cert.clone() else {
            return Step::Continue;
        };
        cx.identity = match cx.consumers.by_certificate(&cert).cloned() {
            Some(c) => Some(Identity::of(c, "mtls_auth")),
            None if self.allow_unknown => Some(Identity::subject_only(&cert.subject, "mtls_auth")),
            None => {
                return Step::Reject(invalid_credentials(
                    "the client certificate does not belong to a known consumer",
                    Some(CHALLENGE.clone()),
                ))
            }
        };
        Step::Continue
    }
}
