//! Plugins: the unit of policy. A plugin is attached globally (`plugins:`), to
//! a route (`routes[].plugins`) or to a consumer (`consumers[].plugins`), as a
//! one-key mapping `{plugin_name: config}`. Each has a typed configuration,
//! is built once per snapshot, and runs in one fixed [`Phase`] of the access
//! step, between routing and the route's action. See `docs/plugins.md`.
//!
//! Adding a plugin: one file (or folder) here plus one line in [`REGISTRY`].

pub mod acl;
pub mod basic_auth;
pub mod chain;
pub mod compile;
pub mod concurrency_limit;
pub mod consumers;
pub mod context;
pub mod cors;
pub mod credentials;
pub mod http_client;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod limits;
pub mod mtls_auth;
pub mod oauth2_introspection;
pub mod quota;
pub mod rate_limit;
pub mod request_size_limit;
pub mod request_validation;
pub mod state;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use http::HeaderValue;
use serde::de::DeserializeOwned;

pub use chain::Chain;
pub use consumers::{Consumer, Consumers};
pub use context::{Access, Identity};
pub use state::{Background, StateStore};

use crate::proxy::errors::GatewayError;

/// Where a plugin runs within the access step. The order is fixed: cheap
/// network rules first, then CORS (a preflight needs no credentials), then
/// authentication, authorization, limits and finally request validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Client address rules (`ip_restriction`).
    IpRules,
    /// Cross-origin resource sharing (`cors`).
    Cors,
    /// Who is calling (`key_auth`, `basic_auth`, `jwt`, …); first match wins.
    Authentication,
    /// May the caller use this route (`acl`).
    Authorization,
    /// How much (`rate_limit`, `quota`, `concurrency_limit`,
    /// `request_size_limit`).
    Limits,
    /// Is the request well formed (`request_validation`).
    Validation,
}

/// A boxed future of a plugin that waits (for a key set, an introspection
/// call or a password hash).
pub type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), GatewayError>> + Send + 'a>>;

/// What a plugin's access hook decided.
pub enum Step<'a> {
    /// Go on with the next plugin.
    Continue,
    /// Answer the request now with this error (the upstream never sees it).
    Reject(GatewayError),
    /// Answer the request now with this response (a CORS preflight).
    Respond(Box<http::Response<crate::proxy::body::ResponseBody>>),
    /// Wait for this, then go on (or answer with its error).
    Wait(Pending<'a>),
}

impl From<Result<(), GatewayError>> for Step<'_> {
    /// A finished check: go on, or answer with its error.
    fn from(r: Result<(), GatewayError>) -> Self {
        match r {
            Ok(()) => Step::Continue,
            Err(e) => Step::Reject(e),
        }
    }
}

/// A compiled plugin instance. Built once per snapshot; shared by every
/// request of the routes it is attached to.
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The name users write in the configuration.
    fn name(&self) -> &'static str;

    /// The phase it runs in.
    fn phase(&self) -> Phase;

    /// Runs for each request of the routes it is attached to, in phase order.
    /// Authentication plugins set `cx.identity` when they recognise a
    /// credential, leave it unset when theirs is absent, and reject a
    /// credential that is present but wrong.
    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a>;

    /// For authentication plugins: the `WWW-Authenticate` challenge sent when
    /// no accepted credential was presented.
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// For authentication plugins: the consumer used when no credential was
    /// presented (`anonymous`), by name.
    fn anonymous(&self) -> Option<&str> {
        None
    }
}

/// What a plugin's build step can use.
pub struct BuildContext<'a> {
    /// Where the plugin is attached, like `routes[2].plugins[0].jwt`.
    pub path: &'a str,
    /// Who the plugin is attached to: `global`, `route:<name>` or
    /// `consumer:<name>`. Names, not list positions, so counters kept under
    /// it (rate limits) survive reordering and match across nodes.
    pub owner: &'a str,
    /// Relative file paths in plugin configs are taken from here.
    pub config_dir: &'a Path,
    /// The names of the configured consumers (for `anonymous`).
    pub consumer_names: &'a [&'a str],
    /// State kept across reloads, by stable identity.
    pub state: &'a StateStore,
    /// Background tasks the plugin needs (key set refreshes); the gateway
    /// runs one per key while a snapshot needs it.
    pub background: &'a mut Vec<(String, Arc<dyn Background>)>,
}

impl BuildContext<'_> {
    /// The same context for the attachment at `path` (a list entry).
    pub fn at<'b>(&'b mut self, path: &'b str) -> BuildContext<'b> {
        BuildContext {
            path,
            owner: self.owner,
            config_dir: self.config_dir,
            consumer_names: self.consumer_names,
            state: self.state,
            background: self.background,
        }
    }

    /// The same context for an attachment at `path` owned by `owner`.
    pub fn owned<'b>(&'b mut self, path: &'b str, owner: &'b str) -> BuildContext<'b> {
        let mut cx = self.at(path);
        cx.owner = owner;
        cx
    }
}

/// A problem in a plugin's configuration: the field below the plugin's own
/// path (empty for the plugin itself) and what is wrong.
pub type BuildError = (String, String);

/// Builds a plugin from its configuration.
type Build = fn(&serde_json::Value, &mut BuildContext<'_>) -> Result<Arc<dyn Plugin>, BuildError>;

/// Every plugin this build knows. Adding a plugin is one line here.
const REGISTRY: &[(&str, Build)] = &[
    ("ip_restriction", ip_restriction::build),
    ("cors", cors::build),
    ("key_auth", key_auth::build),
    ("basic_auth", basic_auth::build),
    ("jwt", jwt::build),
    ("oauth2_introspection", oauth2_introspection::build),
    ("mtls_auth", mtls_auth::build),
    ("acl", acl::build),
    ("rate_limit", rate_limit::build),
    ("quota", quota::build),
    ("concurrency_limit", concurrency_limit::build),
    ("request_size_limit", request_size_limit::build),
    ("request_validation", request_validation::build),
];

/// Reads a plugin's typed configuration; a type error names the field.
pub fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, BuildError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// Checks the shape of one plugin attachment (a one-key mapping naming a
/// known plugin); the configuration itself is checked when it is built.
pub fn check_doc(doc: &crate::config::PluginDoc, path: &str, err: &mut dyn FnMut(&str, String)) {
    if doc.0.len() != 1 {
        err(
            path,
            "a plugin entry is a one-key mapping, like `- key_auth: {}`".into(),
        );
        return;
    }
    for name in doc.0.keys() {
        if !REGISTRY.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
            err(
                &format!("{path}.{name}"),
                format!(
                    "unknown plugin `{name}`; known plugins: {}",
                    known.join(", ")
                ),
            );
        }
    }
}

/// Builds one attachment; errors are reported with their full path.
pub fn build(
    doc: &crate::config::PluginDoc,
    cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, Vec<BuildError>> {
    let Some((name, config)) = doc.0.iter().next().filter(|_| doc.0.len() == 1) else {
        return Err(vec![(
            cx.path.to_string(),
            "a plugin entry is a one-key mapping, like `- key_auth: {}`".into(),
        )]);
    };
    let path = format!("{}.{name}", cx.path);
    let Some((_, build)) = REGISTRY.iter().find(|(n, _)| n == name) else {
        return Err(vec![(path, format!("unknown plugin `{name}`"))]);
    };
    let built = build(config, &mut cx.at(&path)).map_err(|(field, msg)| {
        let at = if field.is_empty() {
            path.clone()
        } else {
            format!("{path}.{field}")
        };
        vec![(at, msg)]
    });
    built
}

/// Checks an `anonymous` consumer name against the configured consumers.
pub fn check_anonymous(name: &Option<String>, cx: &BuildContext<'_>) -> Result<(), BuildError> {
    match name {
        Some(n) if !cx.consumer_names.contains(&n.as_str()) => Err((
            "anonymous".into(),
            format!("no consumer is named `{n}`; add it under `consumers`"),
        )),
        _ => Ok(()),
    }
}

/// The 401 for a credential that is present but not accepted.
pub fn invalid_credentials(
    message: impl Into<String>,
    challenge: Option<HeaderValue>,
) -> GatewayError {
    let e = GatewayError::new(
        http::StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        message,
    );
    match challenge {
        Some(c) => e.with_header(http::header::WWW_AUTHENTICATE, c),
        None => e,
    }
}

/// Parses a header name from a plugin configuration.
pub fn header_name(field: &str, name: &str) -> Result<http::HeaderName, BuildError> {
    http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
        (
            field.to_string(),
            format!("`{name}` is not a valid header name"),
        )
    })
}
