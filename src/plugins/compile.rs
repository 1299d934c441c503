//! Builds the plugin side of a snapshot: consumers (with their plugins),
//! global plugins, each route's chain, the identity headers, and the list
//! of background tasks the plugins need.

use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Background, BuildContext, BuildError, Chain, Consumers, Identity, StateStore};
use crate::config::{Document, IdentityHeadersDoc};

/// The plugin side of a snapshot.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Every consumer and its credentials.
    pub consumers: Arc<Consumers>,
    /// One chain per route, in the document's order.
    pub chains: Vec<Arc<Chain>>,
    /// Background tasks by stable key (JWKS refreshes).
    pub background: Vec<(String, Arc<dyn Background>)>,
    /// Where the identity goes upstream.
    pub identity_headers: IdentityHeaders,
}

/// Builds everything; all errors are collected, with full paths.
pub fn compile(
    doc: &Document,
    config_dir: &Path,
    state: &StateStore,
) -> Result<Compiled, Vec<BuildError>> {
    let mut errors = Vec::new();
    let mut background = Vec::new();
    let names: Vec<&str> = doc.consumers.iter().map(|c| c.name.as_str()).collect();
    let mut cx = BuildContext {
        path: "",
        owner: "global",
        config_dir,
        consumer_names: &names,
        state,
        background: &mut background,
    };
    let (consumers, e) = super::consumers::compile(&doc.consumers, &mut cx);
    errors.extend(e);
    let mut build_list =
        |list: &[crate::config::PluginDoc], at: &str, owner: &str, errors: &mut Vec<BuildError>| {
            let mut out = Vec::new();
            for (j, p) in list.iter().enumerate() {
                let path = format!("{at}[{j}]");
                match super::build(p, &mut cx.owned(&path, owner)) {
                    Ok(p) => out.push(p),
                    Err(e) => errors.extend(e),
                }
            }
            out
        };
    let global = build_list(&doc.plugins, "plugins", "global", &mut errors);
    duplicates(&global, "plugins", &mut errors);
    let mut chains = Vec::new();
    for (i, r) in doc.routes.iter().enumerate() {
        let at = format!("routes[{i}].plugins");
        let owner = format!("route:{}", r.name);
        let own = build_list(&r.plugins, &at, &owner, &mut errors);
        duplicates(&own, &at, &mut errors);
        let chain = Chain::new(&global, &own, &consumers);
        // An `acl` with nothing to identify the caller refuses everyone.
        if let Some(j) = own.iter().position(|p| p.name() == "acl") {
            if !chain.authenticates() {
                errors.push((
                    format!("{at}[{j}].acl"),
                    "`acl` needs an authentication plugin (key_auth, basic_auth, jwt, \
                     oauth2_introspection or mtls_auth) on the route or globally"
                        .into(),
                ));
            }
        }
        chains.push(Arc::new(chain));
    }
    let identity_headers = match IdentityHeaders::new(&doc.gateway.identity_headers) {
        Ok(h) => h,
        Err(e) => {
            errors.push(e);
            IdentityHeaders::default()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Compiled {
        consumers: Arc::new(consumers),
        chains,
        background,
        identity_headers,
    })
}

/// Reports plugins attached twice to the same list.
fn duplicates(list: &[Arc<dyn super::Plugin>], at: &str, errors: &mut Vec<BuildError>) {
    for (j, p) in list.iter().enumerate() {
        if list[..j].iter().any(|q| q.name() == p.name()) {
            errors.push((
                format!("{at}[{j}].{}", p.name()),
                format!("`{}` is attached twice here; keep one", p.name()),
            ));
        }
    }
}

/// The headers that carry the caller's identity upstream.
#[derive(Debug, Default, Clone)]
pub struct IdentityHeaders {
    consumer: Option<HeaderName>,
    groups: Option<HeaderName>,
    subject: Option<HeaderName>,
    anonymous: Option<HeaderName>,
}

impl IdentityHeaders {
    fn new(doc: &IdentityHeadersDoc) -> Result<IdentityHeaders, BuildError> {
        let name = |field: &str, v: &str| -> Result<Option<HeaderName>, BuildError> {
            if v.is_empty() {
                return Ok(None);
            }
            super::header_name(&format!("gateway.identity_headers.{field}"), v).map(Some)
        };
        Ok(IdentityHeaders {
            consumer: name("consumer", &doc.consumer)?,
            groups: name("groups", &doc.groups)?,
            subject: name("subject", &doc.subject)?,
            anonymous: name("anonymous", &doc.anonymous)?,
        })
    }

    /// Removes any client-sent copies, then describes `identity`. Runs on
    /// every proxied request.
    pub fn apply(&self, headers: &mut HeaderMap, identity: Option<&Identity>) {
        let names = [&self.consumer, &self.groups, &self.subject, &self.anonymous];
        // Clients seldom send these: one pass over the request's names, with
        // no hashing, spares four lookups (about 800 instructions) when none is there.
        if headers
            .keys()
            .any(|k| names.iter().any(|n| n.as_ref() == Some(k)))
        {
            for h in names.into_iter().flatten() {
                headers.remove(h);
            }
        }
        let Some(id) = identity else { return };
        let mut put = |name: &Option<HeaderName>, value: Option<HeaderValue>| {
            if let (Some(n), Some(v)) = (name, value) {
                headers.insert(n.clone(), v);
            }
        };
        let text = |s: &str| HeaderValue::from_str(s).ok();
        // A consumer's own values were made with the snapshot; only token
        // subjects and token groups are rendered per request.
        let own = id.consumer.as_ref().map(|c| &c.header_values);
        put(&self.consumer, own.and_then(|v| v.0.clone()));
        let groups = match (own, id.extra_groups.is_empty()) {
            (Some(v), true) => v.1.clone(),
            _ => {
                let all: Vec<&str> = id.groups().map(|g| &**g).collect();
                (!all.is_empty()).then(|| text(&all.join(","))).flatten()
            }
        };
        put(&self.groups, groups);
        let subject = match own {
            Some(v) if id.consumer.as_ref().is_some_and(|c| c.name == id.subject) => v.0.clone(),
            _ => (!id.subject.is_empty())
                .then(|| text(&id.subject))
                .flatten(),
        };
        put(&self.subject, subject);
        if id.anonymous {
            put(&self.anonymous, Some(HeaderValue::from_static("true")));
        }
    }
}
