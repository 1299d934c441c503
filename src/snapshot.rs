//! The compiled, immutable runtime form of a configuration: per-listener
//! routers, routes with their actions, upstreams with their pools. Built once
//! per accepted document and published with one atomic pointer swap; requests
//! in flight keep the snapshot they started with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use ipnet::IpNet;

use crate::config::validate::{parse_cidr, parse_target};
use crate::config::{self, ConfigError, Document, HostHeader, LoadedConfig, TimeoutsDoc};
use crate::proxy::template::Template;
use crate::routing::{Conditions, HostPattern, PathPattern, RouteSpec, Router, ValueTest};
use crate::server::tls::{self, TlsSettings};
use crate::upstream::balancer::p2c::WeightedDraw;
use crate::upstream::breaker::{Breaker, BreakerPolicy};
use crate::upstream::dns;
use crate::upstream::health::HealthCheck;
use crate::upstream::limits::Limiter;
use crate::upstream::retry::{RetryBudget, RetryPolicy};
use crate::upstream::tls as upstream_tls;
use crate::upstream::{
    Balancer, EjectionPolicy, Guards, PassiveHealth, PoolKey, Target, Timeouts, Transport,
    Upstream, UpstreamRegistry,
};

/// Process-wide settings of a snapshot.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker threads requested (0 = one per core). Applied at start only.
    pub workers: usize,
    /// Grace period for draining on shutdown.
    pub shutdown_grace: Duration,
    /// Add `Via` headers.
    pub via: bool,
    /// The request ID header name.
    pub request_id_header: HeaderName,
    /// Config file poll interval (zero disables watching).
    pub watch_interval: Duration,
    /// The admin listener's address, when configured.
    pub admin: Option<SocketAddr>,
    /// `/readyz` requires a healthy target in every upstream.
    pub require_healthy_upstreams: bool,
    /// Who may use the Admin API, and its TLS.
    pub admin_access: Arc<crate::admin::auth::AdminAccess>,
}

/// Client-side protocol limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes (431 beyond).
    pub max_header_size: usize,
    /// Most header fields (431 beyond).
    pub max_headers: usize,
    /// Longest request target (414 beyond).
    pub max_uri_length: usize,
    /// Largest request body (413 beyond), unless the route overrides it.
    pub max_body_size: u64,
    /// Time for a complete request head (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Longest pause within a request body (408 beyond).
    pub body_read_timeout: Duration,
    /// Accept HTTP/2 (ALPN `h2`, or h2c prior knowledge).
    pub http2: bool,
    /// Most concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Accept WebSocket upgrades.
    pub websocket: bool,
}

/// The identity of a listening socket across reloads: its address, or for
/// port 0 (a fresh free port each bind) its name. A reload that keeps the key
/// keeps the socket and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerKey(u64);

impl ListenerKey {
    /// The key of a listener named `name` on `address`.
    pub fn of(name: &str, address: SocketAddr) -> ListenerKey {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        if address.port() == 0 {
            (0u8, name).hash(&mut h);
        } else {
            (1u8, address).hash(&mut h);
        }
        ListenerKey(h.finish())
    }
}

/// A compiled listener.
#[derive(Debug)]
pub struct Listener {
    /// Name from the config.
    pub name: Arc<str>,
    /// Socket identity across reloads.
    pub key: ListenerKey,
    /// Address to bind.
    pub address: SocketAddr,
    /// Protocol limits.
    pub limits: Limits,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Routes served on this listener.
    pub router: Router,
    /// TLS termination, when configured.
    pub tls: Option<TlsSettings>,
    /// Redirect every request to HTTPS on this port.
    pub redirect_to_https: Option<u16>,
}

/// What a matched route does.
#[derive(Debug)]
pub enum Action {
    /// Proxy to an upstream.
    Proxy(ProxyAction),
    /// Proxy to one of several upstreams.
    Split(SplitAction),
    /// Answer with a fixed response.
    Respond(RespondAction),
    /// Answer with a redirect.
    Redirect(RedirectAction),
}

/// A traffic split between upstreams.
#[derive(Debug)]
pub struct SplitAction {
    /// Upstream names with the proxy action to each, in config order.
    pub choices: Vec<(String, ProxyAction)>,
    /// The weighted draw over `choices`.
    pub draw: WeightedDraw,
    /// A header whose value names a choice.
    pub header: Option<HeaderName>,
    /// A cookie whose value names a choice.
    pub cookie: Option<String>,
    /// Set `cookie` to a choice made by weight.
    pub sticky: bool,
}

impl SplitAction {
    /// Picks a choice for a request: the one its header or cookie names,
    /// else one by weight. The flag is true when the pick was by weight (so
    /// a sticky split should set its cookie).
    pub fn choose(&self, headers: &http::HeaderMap) -> Option<(usize, bool)> {
        let named = |v: &str| self.choices.iter().position(|(n, _)| n == v);
        if let Some(i) = self
            .header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(named)
        {
            return Some((i, false));
        }
        if let Some(name) = &self.cookie {
            let pinned = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| named(v));
            if let Some(i) = pinned {
                return Some((i, false));
            }
        }
        self.draw.draw_one().map(|i| (i, true))
    }
}

/// Proxying options of a route.
#[derive(Debug)]
pub struct ProxyAction {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// The connection pool (the upstream's, or the route's own when it overrides the connect timeout).
    pub pool: Arc<crate::upstream::Pool>,
    /// Remove the matched prefix from the upstream path.
    pub strip_prefix: bool,
    /// Host header policy.
    pub host_header: HostHeader,
    /// Effective timeouts.
    pub timeouts: Timeouts,
    /// Retries may replay non-idempotent (body-less) requests on this route.
    pub retry_non_idempotent: bool,
    /// Most requests in flight on this route, when limited.
    pub limit: Option<Limiter>,
    /// Translate gRPC-Web requests into gRPC and the responses back.
    pub grpc_web: bool,
}

/// A fixed response.
#[derive(Debug)]
pub struct RespondAction {
    /// Status.
    pub status: StatusCode,
    /// Headers, parsed.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body template.
    pub body: Template,
    /// The body is JSON, so captures are escaped as JSON string content.
    pub json: bool,
}

/// A redirect.
#[derive(Debug)]
pub struct RedirectAction {
    /// 301/302/303/307/308.
    pub status: StatusCode,
    /// Location template.
    pub location: Template,
    /// Append the request's query string.
    pub keep_query: bool,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name from the config.
    pub name: Arc<str>,
    /// Path patterns (for captures and prefix stripping after a match).
    pub paths: Vec<PathPattern>,
    /// What to do.
    pub action: Action,
    /// Body limit override.
    pub max_body_size: Option<u64>,
    /// The access plugins (global and the route's own), in run order.
    pub chain: Arc<crate::plugins::Chain>,
}

/// The immutable configuration every request reads.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every accepted configuration.
    pub revision: u64,
    /// When this snapshot was built.
    pub built_at: SystemTime,
    /// Process-wide settings.
    pub settings: Settings,
    /// Listeners, in config order.
    pub listeners: Vec<Listener>,
    /// Routes, in config order; routers refer to them by index.
    pub routes: Vec<Route>,
    /// Upstreams, in config order.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Consumers and their credentials.
    pub consumers: Arc<crate::plugins::Consumers>,
    /// Headers that carry the caller's identity upstream.
    pub identity_headers: crate::plugins::compile::IdentityHeaders,
    /// Background work the plugins need while this snapshot is live.
    pub background: Vec<(String, Arc<dyn crate::plugins::Background>)>,
    /// What is recorded about requests (metrics, access log, traces).
    pub observe: crate::observability::Observe,
    /// The document this snapshot was compiled from, as written (`${NAME}`
    /// references kept): what the Admin API shows and edits.
    pub raw: Arc<serde_json::Value>,
}

impl Snapshot {
    /// The listener with socket identity `key`, if this snapshot still has it.
    pub fn listener(&self, key: ListenerKey) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.key == key)
    }
}

fn resolve(doc: &TimeoutsDoc, base: Timeouts) -> Timeouts {
    Timeouts {
        connect: doc.connect.map_or(base.connect, |d| d.0),
        read: doc.read.map_or(base.read, |d| d.0),
        total: doc.total.map(|d| d.0).or(base.total),
    }
}

/// Compiles a validated document. Errors here are rare (validation catches
/// them first) but are still reported with their position, never panicked on.
pub fn compile(
    loaded: &LoadedConfig,
    revision: u64,
    workers: usize,
    pools: &UpstreamRegistry,
    plugin_state: &crate::plugins::StateStore,
) -> Result<Snapshot, Vec<ConfigError>> {
    let doc: &Document = &loaded.doc;
    let mut errors = Vec::new();
    let mut err = |path: String, msg: String| {
        errors.push(ConfigError::at(&path, loaded.positions.find(&path), msg));
    };

    let g = &doc.gateway;
    let settings = Settings {
        workers: g.workers,
        shutdown_grace: g.shutdown_grace.0,
        via: g.via,
        request_id_header: HeaderName::from_bytes(
            g.request_id_header.to_ascii_lowercase().as_bytes(),
        )
        .unwrap_or(HeaderName::from_static("x-request-id")),
        watch_interval: g.watch_interval.0,
        admin: doc.admin.as_ref().and_then(|a| a.address.parse().ok()),
        require_healthy_upstreams: doc
            .admin
            .as_ref()
            .is_some_and(|a| a.ready_requires_healthy_upstreams),
        admin_access: Arc::default(),
    };
    let mut settings = settings;

    // Relative file paths (certificates) are taken from the configuration
    // file's folder; an inline document uses the working directory.
    let config_dir = match loaded.source_name.starts_with('<') {
        true => std::path::PathBuf::from("."),
        false => std::path::Path::new(&loaded.source_name)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| std::path::PathBuf::from("."), |p| p.to_path_buf()),
    };
    if let Some(a) = &doc.admin {
        match crate::admin::auth::compile(a, &config_dir) {
            Ok(access) => settings.admin_access = Arc::new(access),
            Err(list) => {
                for (path, msg) in list {
                    err(path, msg);
                }
            }
        }
    }
    let mut shared_certs = Vec::new();
    for (i, c) in doc.certificates.iter().enumerate() {
        match tls::load_certificate(&c.cert, &c.key, &config_dir) {
            Ok(loaded) => shared_certs.push(loaded),
            Err((field, msg)) => err(format!("certificates[{i}].{field}"), msg),
        }
    }
    plugin_state.set_recording(crate::observability::recording(doc));
    // Made before the plugins, which pre-make their decision counters from it.
    let _ = plugin_state.metrics(&doc.observability.metrics.latency_buckets);
    let plugins = match crate::plugins::compile::compile(doc, &config_dir, plugin_state) {
        Ok(p) => p,
        Err(list) => {
            for (path, msg) in list {
                err(path, msg);
            }
            crate::plugins::compile::Compiled::default()
        }
    };
    let mut upstreams: Vec<(Arc<Upstream>, PoolKey)> = Vec::new();
    for (i, u) in doc.upstreams.iter().enumerate() {
        let mut targets = Vec::new();
        for (j, t) in u.targets.iter().enumerate() {
            let parsed = parse_target(&t.address).and_then(|_| {
                let authority = t
                    .address
                    .parse()
                    .map_err(|e| format!("invalid address: {e}"))?;
                let host_header = HeaderValue::from_str(&t.address).map_err(|e| e.to_string())?;
                Ok((authority, host_header))
            });
            match parsed {
                Ok((authority, host_header)) => targets.push(Target {
                    address: t.address.as_str().into(),
                    authority,
                    host_header,
                    weight: t.weight,
                    resolved: dns::is_name(&t.address).then(|| pools.resolved(&t.address)),
                }),
                Err(e) => err(format!("upstreams[{i}].targets[{j}].address"), e),
            }
        }
        let timeouts = resolve(&u.timeouts, Timeouts::DEFAULT);
        let tls = match &u.tls {
            None => None,
            Some(t) => match upstream_tls::build(&u.name, t, &config_dir, u.http2) {
                Ok(t) => Some(Arc::new(t)),
                Err((field, msg)) => {
                    err(
                        format!(
                            "upstreams[{i}].tls{}{field}",
                            if field.is_empty() { "" } else { "." }
                        ),
                        msg,
                    );
                    continue;
                }
            },
        };
        let key = PoolKey {
            upstream: u.name.clone(),
            connect_timeout: timeouts.connect,
            idle_timeout: u.idle_timeout.0,
            max_idle_per_target: u.max_idle_per_target,
            tls: tls.as_ref().map(|t| t.fingerprint),
            http2: u.http2,
        };
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let addresses: Vec<&str> = targets.iter().map(|t| &*t.address).collect();
        let balancer = match Balancer::build(&u.load_balancing, &weights, &addresses, workers) {
            Ok(b) => b,
            Err(e) => {
                err(format!("upstreams[{i}].load_balancing"), e);
                continue;
            }
        };
        let stats = targets
            .iter()
            .map(|t| pools.stats(&u.name, &t.address))
            .collect();
        let ph = &u.passive_health;
        let health = PassiveHealth {
            policy: EjectionPolicy {
                consecutive_failures: ph.consecutive_failures,
                base_ns: ph.ejection.0.as_nanos() as u64,
                max_ns: ph.max_ejection.0.as_nanos() as u64,
                half_open_requests: ph.half_open_requests,
            },
            max_ejected: targets.len() * ph.max_ejected_percent.min(100) as usize / 100,
            failure_statuses: ph
                .failure_statuses
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
        };
        upstreams.push((
            Arc::new(Upstream::new(
                &u.name,
                targets,
                stats,
                balancer,
                Guards {
                    health,
                    retry: RetryPolicy::new(&u.retries),
                    budget: RetryBudget::new(u.retries.budget_percent),
                    limit: (u.max_in_flight > 0).then(|| {
                        Limiter::new(
                            u.max_in_flight,
                            pools.counter(&format!("upstream:{}", u.name)),
                        )
                    }),
                    check: u
                        .health_check
                        .as_ref()
                        .and_then(|h| HealthCheck::new(h).ok())
                        .map(Arc::new),
                    breaker: u
                        .circuit_breaker
                        .as_ref()
                        .map(|b| Breaker::new(BreakerPolicy::new(b))),
                },
                Transport {
                    dns_refresh: u.dns_refresh.0,
                    tls,
                    http2: u.http2,
                },
                timeouts,
            )),
            key,
        ));
        if let Some(up) = upstreams.last_mut().and_then(|(u, _)| Arc::get_mut(u)) {
            // Fresh and not shared yet, so the handles can be set in place.
            up.metrics = plugin_state.recording_metrics().map(|m| {
                Arc::new(crate::observability::metrics::UpstreamMetrics::new(
                    up.name.clone(),
                    m,
                ))
            });
        }
    }

    let mut routes = Vec::new();
    let mut specs: Vec<(Vec<String>, RouteSpec)> = Vec::new();
    for (i, r) in doc.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        let mut paths = Vec::new();
        for (j, s) in r.matcher.paths.iter().enumerate() {
            match PathPattern::parse(s) {
                Ok(pat) => paths.push(pat),
                Err(e) => err(format!("{p}.match.paths[{j}]"), e),
            }
        }
        let hosts: Vec<HostPattern> = r
            .matcher
            .hosts
            .iter()
            .filter_map(|h| HostPattern::parse(h).ok())
            .collect();
        let captures: Vec<String> = paths.iter().flat_map(PathPattern::capture_names).collect();
        let conditions = match compile_conditions(&r.matcher) {
            Ok(c) => c,
            Err((path, e)) => {
                err(format!("{p}.match.{path}"), e);
                Conditions::default()
            }
        };
        let route_limit = (r.max_in_flight > 0)
            .then(|| Limiter::new(r.max_in_flight, pools.counter(&format!("route:{}", r.name))));
        // A proxy action to the upstream `name`, with this route's settings.
        let proxy_to = |name: &str| -> Option<ProxyAction> {
            let (up, key) = upstreams.iter().find(|(u, _)| &*u.name == name)?;
            let timeouts = resolve(&r.timeouts, up.timeouts);
            let key = PoolKey {
                connect_timeout: timeouts.connect,
                ..key.clone()
            };
            Some(ProxyAction {
                upstream: up.clone(),
                pool: pools.get(key, workers, up.transport.tls.clone()),
                strip_prefix: r.strip_prefix,
                host_header: r.host_header,
                timeouts,
                retry_non_idempotent: r.retry_non_idempotent,
                limit: route_limit.clone(),
                grpc_web: r.grpc_web,
            })
        };
        let action = if let Some(name) = &r.upstream {
            let Some(a) = proxy_to(name) else {
                err(
                    format!("{p}.upstream"),
                    format!("unknown upstream `{name}`"),
                );
                continue;
            };
            Action::Proxy(a)
        } else if let Some(split) = &r.split {
            let mut choices = Vec::new();
            for (j, s) in split.upstreams.iter().enumerate() {
                match proxy_to(&s.upstream) {
                    Some(a) => choices.push((s.upstream.clone(), a)),
                    None => err(
                        format!("{p}.split.upstreams[{j}].upstream"),
                        format!("unknown upstream `{}`", s.upstream),
                    ),
                }
            }
            let weights: Vec<u32> = split.upstreams.iter().map(|s| s.weight).collect();
            Action::Split(SplitAction {
                draw: WeightedDraw::new(&weights),
                choices,
                header: split
                    .header
                    .as_deref()
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
                cookie: split.cookie.clone(),
                sticky: split.sticky,
            })
        } else if let Some(resp) = &r.respond {
            let body_text = match (&resp.body, &resp.json) {
                (Some(b), _) => b.clone(),
                (None, Some(j)) => j.to_string(),
                (None, None) => String::new(),
            };
            let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
            if resp.json.is_some() {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
            }
            for (k, v) in &resp.headers {
                match (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    (Ok(k), Ok(v)) => {
                        headers.retain(|(n, _)| *n != k);
                        headers.push((k, v));
                    }
                    _ => err(format!("{p}.respond.headers.{k}"), "invalid header".into()),
                }
            }
            let json = headers.iter().any(|(n, v)| {
                *n == http::header::CONTENT_TYPE
                    && v.to_str()
                        .is_ok_and(|v| v.to_ascii_lowercase().contains("json"))
            });
            Action::Respond(RespondAction {
                json,
                status: StatusCode::from_u16(resp.status).unwrap_or(StatusCode::OK),
                headers,
                body: Template::parse(&body_text, &captures, false).unwrap_or_else(|e| {
                    err(format!("{p}.respond.body"), e);
                    Template::parse("", &[], false).expect("an empty template always parses")
                }),
            })
        } else if let Some(red) = &r.redirect {
            Action::Redirect(RedirectAction {
                status: StatusCode::from_u16(red.status).unwrap_or(StatusCode::FOUND),
                location: Template::parse(&red.location, &captures, true).unwrap_or_else(|e| {
                    err(format!("{p}.redirect.location"), e);
                    Template::parse("/", &[], false).expect("a plain template always parses")
                }),
                keep_query: red.keep_query,
            })
        } else {
            err(p.clone(), "a route needs an action".into());
            continue;
        };
        specs.push((
            r.listeners.clone(),
            RouteSpec {
                route: routes.len() as u32,
                priority: r.priority,
                hosts,
                paths: paths.clone(),
                conditions,
            },
        ));
        routes.push(Route {
            name: r.name.as_str().into(),
            paths,
            action,
            max_body_size: r.max_body_size.map(|s| s.0),
            chain: plugins.chains.get(i).cloned().unwrap_or_default(),
        });
    }

    let mut listeners = Vec::new();
    for (i, l) in doc.listeners.iter().enumerate() {
        let Ok(address) = l.address.parse::<SocketAddr>() else {
            err(format!("listeners[{i}].address"), "not IP:PORT".into());
            continue;
        };
        let router_specs: Vec<RouteSpec> = specs
            .iter()
            .filter(|(ls, _)| ls.is_empty() || ls.contains(&l.name))
            .map(|(_, s)| s.clone())
            .collect();
        listeners.push(Listener {
            name: l.name.as_str().into(),
            key: ListenerKey::of(&l.name, address),
            address,
            limits: Limits {
                max_header_size: l.max_header_size.0 as usize,
                max_headers: l.max_headers,
                max_uri_length: l.max_uri_length.0 as usize,
                max_body_size: l.max_body_size.0,
                header_read_timeout: l.header_read_timeout.0,
                body_read_timeout: l.body_read_timeout.0,
                http2: l.http2,
                max_concurrent_streams: l.max_concurrent_streams,
                websocket: l.websocket,
            },
            trusted_proxies: l
                .trusted_proxies
                .iter()
                .filter_map(|t| parse_cidr(t))
                .collect(),
            redirect_to_https: l.redirect_to_https,
            tls: match &l.tls {
                None => None,
                Some(t) => match tls::build(t, &config_dir, l.http2, &shared_certs) {
                    Ok(s) => Some(s),
                    Err((field, msg)) => {
                        err(format!("listeners[{i}].tls.{field}"), msg);
                        None
                    }
                },
            },
            router: Router::new(router_specs),
        });
    }
    let keys: Vec<(ListenerKey, Arc<str>)> =
        listeners.iter().map(|l| (l.key, l.name.clone())).collect();
    let observe = match crate::observability::compile(doc, &config_dir, plugin_state, &keys) {
        Ok(o) => Some(o),
        Err(list) => {
            for (path, msg) in list {
                err(path, msg);
            }
            None
        }
    };
    let (true, Some(observe)) = (errors.is_empty(), observe) else {
        return Err(errors);
    };
    Ok(Snapshot {
        raw: Arc::new(loaded.raw.clone()),
        observe,
        revision,
        built_at: SystemTime::now(),
        settings,
        listeners,
        routes,
        upstreams: upstreams.into_iter().map(|(u, _)| u).collect(),
        consumers: plugins.consumers,
        identity_headers: plugins.identity_headers,
        background: plugins.background,
    })
}

/// Compiles method, header and query conditions; the error names the failing field.
fn compile_conditions(m: &config::MatchDoc) -> Result<Conditions, (String, String)> {
    let methods = if m.methods.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for (j, s) in m.methods.iter().enumerate() {
            let method = Method::from_bytes(s.to_ascii_uppercase().as_bytes()).map_err(|_| {
                (
                    format!("methods[{j}]"),
                    format!("`{s}` is not an HTTP method"),
                )
            })?;
            out.push(method);
        }
        Some(out)
    };
    let test = |f: &config::FieldMatchDoc, path: String| -> Result<ValueTest, (String, String)> {
        match (&f.value, &f.regex, f.present) {
            (Some(v), None, None) => Ok(ValueTest::Equals(v.clone())),
            (None, Some(r), None) => regex::Regex::new(r)
                .map(ValueTest::Regex)
                .map_err(|e| (format!("{path}.regex"), e.to_string())),
            (None, None, Some(p)) => Ok(ValueTest::Present(p)),
            _ => Err((
                path,
                "give exactly one of `value`, `regex` or `present`".into(),
            )),
        }
    };
    let mut headers = Vec::new();
    for (j, f) in m.headers.iter().enumerate() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| {
            (
                format!("headers[{j}].name"),
                "invalid header name".to_string(),
            )
        })?;
        headers.push((name, test(f, format!("headers[{j}]"))?));
    }
    let mut query = Vec::new();
    for (j, f) in m.query.iter().enumerate() {
        query.push((f.name.clone(), test(f, format!("query[{j}]"))?));
    }
    Ok(Conditions {
        methods,
        headers,
        query,
    })
}
