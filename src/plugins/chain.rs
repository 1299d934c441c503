//! A route's plugin chain: the global plugins and the route's own (a route's
//! plugin replaces a global one of the same name), sorted by phase, built
//! once per snapshot. Runs the access step for each request: authentication
//! is "first match wins" with an optional anonymous fallback, and the
//! consumer's own plugins join the later phases once the consumer is known.

use std::ops::Range;
use std::sync::Arc;

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use super::context::{Access, Identity};
use super::{Consumer, Phase, Plugin, Step};
use crate::proxy::body::ResponseBody;
use crate::proxy::errors::GatewayError;

/// How the access step ended early.
pub enum Stop {
    /// With a gateway error (401, 403, 429, …).
    Reject(GatewayError),
    /// With a response a plugin made (a CORS preflight).
    Respond(Box<Response<ResponseBody>>),
}

/// The compiled plugins of one route.
#[derive(Debug, Default)]
pub struct Chain {
    plugins: Vec<Arc<dyn Plugin>>,
    /// Where the authentication plugins are in `plugins`.
    auth: Range<usize>,
    /// The consumer used when no credential is presented.
    anonymous: Option<Arc<Consumer>>,
    /// The challenges of the authentication plugins, for the 401.
    challenges: Vec<HeaderValue>,
}

impl Chain {
    /// Combines global and route plugins into one chain.
    pub fn new(
        global: &[Arc<dyn Plugin>],
        route: &[Arc<dyn Plugin>],
        consumers: &super::Consumers,
    ) -> Chain {
        let mut plugins: Vec<Arc<dyn Plugin>> = global
            .iter()
            .filter(|g| !route.iter().any(|r| r.name() == g.name()))
            .chain(route)
            .cloned()
            .collect();
        // Stable: globals before route plugins within a phase, then declaration order.
        plugins.sort_by_key(|p| p.phase());
        let start = plugins
            .iter()
            .position(|p| p.phase() >= Phase::Authentication)
            .unwrap_or(plugins.len());
        let end = plugins
            .iter()
            .position(|p| p.phase() > Phase::Authentication)
            .unwrap_or(plugins.len());
        let auth = start..end;
        let anonymous = plugins[auth.clone()]
            .iter()
            .find_map(|p| p.anonymous())
            .and_then(|name| consumers.by_name(name).cloned());
        let mut challenges: Vec<HeaderValue> = Vec::new();
        for c in plugins[auth.clone()].iter().filter_map(|p| p.challenge()) {
            if !challenges.contains(&c) {
                challenges.push(c);
            }
        }
        Chain {
            plugins,
            auth,
            anonymous,
            challenges,
        }
    }

    /// Whether the chain has an authentication plugin.
    pub fn authenticates(&self) -> bool {
        !self.auth.is_empty()
    }

    /// Whether the route has no plugins (the request skips the access step).
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Runs the access step; `Ok` means the request goes on to its action.
    pub async fn run(&self, cx: &mut Access<'_>) -> Result<(), Stop> {
        for p in &self.plugins[..self.auth.start] {
            step(p.as_ref(), cx).await?;
        }
        if !self.auth.is_empty() {
            for p in &self.plugins[self.auth.clone()] {
                step(p.as_ref(), cx).await?;
                if cx.identity.is_some() {
                    break;
                }
            }
            if cx.identity.is_none() {
                match &self.anonymous {
                    Some(c) => {
                        let mut id = Identity::of(c.clone(), "anonymous");
                        id.anonymous = true;
                        cx.identity = Some(id);
                    }
                    None => return Err(Stop::Reject(self.unauthenticated())),
                }
            }
        }
        let rest = &self.plugins[self.auth.end..];
        let consumer = cx.identity.as_ref().and_then(|i| i.consumer.clone());
        let own: &[Arc<dyn Plugin>] = consumer.as_deref().map_or(&[], |c| &c.plugins);
        if own.is_empty() {
            for p in rest {
                step(p.as_ref(), cx).await?;
            }
            return Ok(());
        }
        // The consumer's plugins replace the route's of the same name and
        // join the phase order; its address rules run first, right now.
        let mut merged: Vec<&Arc<dyn Plugin>> = rest
            .iter()
            .filter(|r| !own.iter().any(|o| o.name() == r.name()))
            .chain(own)
            .collect();
        merged.sort_by_key(|p| p.phase());
        for p in merged {
            step(p.as_ref(), cx).await?;
        }
        Ok(())
    }

    /// The 401 for a request without any accepted credential.
    fn unauthenticated(&self) -> GatewayError {
        let mut e = GatewayError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "credentials are required for this route",
        );
        for c in &self.challenges {
            e = e.with_header(WWW_AUTHENTICATE, c.clone());
        }
        e
    }
}

async fn step(p: &dyn Plugin, cx: &mut Access<'_>) -> Result<(), Stop> {
    match p.access(cx) {
        Step::Continue => Ok(()),
        Step::Reject(e) => Err(Stop::Reject(e)),
        Step::Respond(r) => Err(Stop::Respond(r)),
        Step::Wait(f) => f.await.map_err(Stop::Reject),
    }
}
