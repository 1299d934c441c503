//! The configuration document as users write it: the nouns of Kong and
//! APISIX (listeners, upstreams, routes, consumers, plugins). These types
//! mirror the YAML; the runtime form is built from them in `snapshot`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};

/// A whole configuration document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Process-wide settings.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Where clients connect.
    #[serde(default)]
    pub listeners: Vec<ListenerDoc>,
    /// Certificates every TLS listener offers (chosen by SNI).
    #[serde(default)]
    pub certificates: Vec<NamedCertificateDoc>,
    /// Named pools of backend targets.
    #[serde(default)]
    pub upstreams: Vec<UpstreamDoc>,
    /// Match rules and what to do with a matched request.
    #[serde(default)]
    pub routes: Vec<RouteDoc>,
    /// Known callers: identity, credentials and groups.
    #[serde(default)]
    pub consumers: Vec<ConsumerDoc>,
    /// Plugins applied to every route.
    #[serde(default)]
    pub plugins: Vec<PluginDoc>,
    /// The admin listener (metrics, health, log level); none when absent.
    pub admin: Option<super::observability::AdminDoc>,
    /// Metrics, access logs and traces.
    #[serde(default)]
    pub observability: super::observability::ObservabilityDoc,
    /// Cluster mode: the shared configuration lives in etcd.
    pub cluster: Option<super::control::ClusterDoc>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Worker threads (one event loop each); `0` means one per available core.
    /// Takes effect at start; a reload that changes it logs a warning.
    pub workers: usize,
    /// How long shutdown waits for in-flight requests before closing them.
    pub shutdown_grace: HumanDuration,
    /// Add a `Via` header to requests and responses.
    pub via: bool,
    /// Header that carries the request ID (generated when absent).
    pub request_id_header: String,
    /// How often the config file is checked for changes (`0s` disables watching; SIGHUP still reloads).
    pub watch_interval: HumanDuration,
    /// Headers that tell the upstream who is calling.
    pub identity_headers: IdentityHeadersDoc,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            workers: 0,
            shutdown_grace: HumanDuration(std::time::Duration::from_secs(30)),
            via: false,
            request_id_header: "x-request-id".into(),
            watch_interval: HumanDuration(std::time::Duration::from_secs(1)),
            identity_headers: IdentityHeadersDoc::default(),
        }
    }
}

/// A listening socket and the protocol limits applied to its clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerDoc {
    /// Unique name, used by routes to restrict themselves to this listener.
    pub name: String,
    /// `IP:PORT` to bind, like `0.0.0.0:8080` or `[::1]:8080`; port 0 picks a free port.
    pub address: String,
    /// Peers (CIDRs) whose `X-Forwarded-*` and `Forwarded` headers are trusted and extended;
    /// from anyone else those headers are replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest request head (request line plus headers) accepted; larger gets 431.
    #[serde(default = "defaults::max_header_size")]
    pub max_header_size: ByteSize,
    /// Most header fields in one request; more gets 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Longest request target (path and query); longer gets 414.
    #[serde(default = "defaults::max_uri_length")]
    pub max_uri_length: ByteSize,
    /// Largest request body; larger gets 413. Routes may lower or raise it.
    #[serde(default = "defaults::max_body_size")]
    pub max_body_size: ByteSize,
    /// Time allowed for a complete request head, counted from when the connection is
    /// ready for it; it therefore also closes idle keep-alive connections (slowloris guard).
    #[serde(default = "defaults::header_read_timeout")]
    pub header_read_timeout: HumanDuration,
    /// Longest pause while receiving a request body before the request fails with 408.
    #[serde(default = "defaults::body_read_timeout")]
    pub body_read_timeout: HumanDuration,
    /// Accept HTTP/2: over TLS when the client offers `h2` in ALPN, and in
    /// cleartext with prior knowledge (h2c).
    #[serde(default = "defaults::yes")]
    pub http2: bool,
    /// Most concurrent streams per HTTP/2 connection.
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Accept WebSocket (HTTP/1.1 upgrade) requests. Off saves about 0.5 µs
    /// of CPU per request on listeners that never carry WebSockets.
    #[serde(default = "defaults::yes")]
    pub websocket: bool,
    /// Terminate TLS on this listener.
    pub tls: Option<TlsDoc>,
    /// Answer every request with a 308 redirect to `https://` on this port
    /// (for a plain-HTTP listener in front of a TLS one).
    pub redirect_to_https: Option<u16>,
}

/// TLS settings of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsDoc {
    /// Certificates with their keys (PEM files; relative paths are taken from
    /// the configuration file's folder). The one whose names cover the
    /// client's SNI name is served; the first is the default.
    pub certificates: Vec<CertificateDoc>,
    /// Oldest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default = "defaults::tls_min_version")]
    pub min_version: String,
    /// Send `Strict-Transport-Security: max-age=…` on every response.
    pub hsts: Option<HumanDuration>,
    /// Ask clients for certificates (mTLS).
    pub client_auth: Option<ClientAuthDoc>,
    /// What a client gets when its SNI name is covered by no certificate,
    /// or when it sends none.
    #[serde(default)]
    pub unknown_sni: UnknownSni,
}

/// The answer to a TLS client asking for a name no certificate covers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// The first certificate (the client will then check whether it fits).
    #[default]
    Default,
    /// Fail the handshake (rustls sends an `access_denied` alert), so no
    /// certificate reveals the hosted names; clients without SNI fail too.
    Reject,
}

/// Client certificate verification on a TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthDoc {
    /// PEM bundle of the CAs that issue client certificates.
    pub ca: String,
    /// Refuse the handshake without a valid certificate (default); `false`
    /// accepts clients without one (a certificate that is sent must still verify).
    #[serde(default = "defaults::yes")]
    pub required: bool,
    /// Forward the verified identity upstream in this header (Envoy's
    /// `x-forwarded-client-cert` format); any value the client sent is removed.
    pub forward_header: Option<String>,
}

/// TLS to an upstream's targets (and to etcd: `cluster.etcd.tls`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsDoc {
    /// PEM bundle of CAs to trust (default: the system's roots).
    pub ca: Option<String>,
    /// Name to send as SNI and to verify (default: each target's host).
    pub server_name: Option<String>,
    /// Client certificate for mTLS to the backend.
    pub client_certificate: Option<CertificateDoc>,
    /// Accept any certificate. Logs a warning; for tests and migrations only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateDoc {
    /// PEM file with the certificate, then any intermediates; or the PEM
    /// text itself (a value starting with `-----BEGIN`).
    pub cert: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1), or the PEM text.
    pub key: String,
}

/// A named certificate shared by every TLS listener (the top-level
/// `certificates` section): offered by SNI after the listener's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCertificateDoc {
    /// Unique name, used by the Admin API.
    pub name: String,
    /// PEM file or PEM text with the certificate chain.
    pub cert: String,
    /// PEM file or PEM text with the private key.
    pub key: String,
}

/// A named pool of targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDoc {
    /// Unique name, referenced by routes.
    pub name: String,
    /// The backends: `host:port` with an optional weight.
    pub targets: Vec<TargetDoc>,
    /// How a target is chosen for each request.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Timeouts for requests to this upstream (routes may override).
    #[serde(default)]
    pub timeouts: TimeoutsDoc,
    /// Outlier detection: targets that keep failing are taken out for a while.
    #[serde(default)]
    pub passive_health: PassiveHealthDoc,
    /// Retrying failed requests on another target.
    #[serde(default)]
    pub retries: RetriesDoc,
    /// Most requests in flight to this upstream (all routes together); more get 503. 0: no limit.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Active health checking: an HTTP probe to every target on an interval.
    pub health_check: Option<HealthCheckDoc>,
    /// Stop sending traffic for a while when too many requests fail (off unless set).
    pub circuit_breaker: Option<CircuitBreakerDoc>,
    /// How often targets given as DNS names are re-resolved.
    #[serde(default = "defaults::dns_refresh")]
    pub dns_refresh: HumanDuration,
    /// Speak TLS to the targets.
    pub tls: Option<UpstreamTlsDoc>,
    /// Speak HTTP/2 to the targets (required for gRPC): requests are
    /// multiplexed over one connection per address and worker.
    #[serde(default)]
    pub http2: bool,
    /// Idle keep-alive connections kept per target, per worker thread (each
    /// worker keeps its own pool, as nginx workers do).
    #[serde(default = "defaults::max_idle_per_target")]
    pub max_idle_per_target: usize,
    /// How long an idle pooled connection is kept.
    #[serde(default = "defaults::pool_idle_timeout")]
    pub idle_timeout: HumanDuration,
}

/// One backend of an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDoc {
    /// `host:port` or `IP:PORT`.
    pub address: String,
    /// Share of traffic relative to the other targets; 0 drains the target.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// Load-balancing algorithms. Written as a name (`least_requests`, `ewma`)
/// or as a one-key mapping with settings (`{ consistent_hash: { key: header:x-user } }`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", remote = "LoadBalancing")]
pub enum LoadBalancing {
    /// Smooth weighted round robin (nginx's): weights interleave evenly.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight relative to its weight.
    LeastRequests,
    /// Two targets drawn at random by weight; the one with fewer in flight wins.
    RandomTwo,
    /// Peak-EWMA latency times load, over two random targets (Finagle, linkerd).
    Ewma(#[serde(default)] EwmaDoc),
    /// A ketama ring over a request key; adding or removing a target moves
    /// only that target's share of keys.
    ConsistentHash(HashDoc),
}

impl<'de> Deserialize<'de> for LoadBalancing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LoadBalancing;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a balancer name or a one-key mapping with its settings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LoadBalancing, E> {
                match s {
                    "round_robin" => Ok(LoadBalancing::RoundRobin),
                    "least_requests" => Ok(LoadBalancing::LeastRequests),
                    "random_two" => Ok(LoadBalancing::RandomTwo),
                    "ewma" => Ok(LoadBalancing::Ewma(EwmaDoc::default())),
                    "consistent_hash" => Err(E::custom(
                        "`consistent_hash` needs a key: `{ consistent_hash: { key: client_ip } }`",
                    )),
                    other => Err(E::unknown_variant(
                        other,
                        &[
                            "round_robin",
                            "least_requests",
                            "random_two",
                            "ewma",
                            "consistent_hash",
                        ],
                    )),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LoadBalancing, A::Error> {
                LoadBalancing::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(V)
    }
}

/// Passive health checking (outlier detection): a target that fails
/// `consecutive_failures` requests in a row is ejected for `ejection`, longer
/// each time it is ejected again, never longer than `max_ejection`, and never
/// so many that more than `max_ejected_percent` of the pool is out.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthDoc {
    /// Failures in a row that eject a target; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection period; the n-th ejection in a row lasts n times this.
    pub ejection: HumanDuration,
    /// Longest ejection period.
    pub max_ejection: HumanDuration,
    /// Most of the pool that may be ejected at once, in percent.
    pub max_ejected_percent: u32,
    /// Trial requests let through when an ejection ends; one success brings
    /// the target back, one failure ejects it again (half-open).
    pub half_open_requests: u32,
    /// Response statuses that count as failures (besides connection errors and timeouts).
    pub failure_statuses: Vec<u16>,
}

impl Default for PassiveHealthDoc {
    fn default() -> Self {
        PassiveHealthDoc {
            consecutive_failures: 5,
            ejection: HumanDuration(std::time::Duration::from_secs(10)),
            max_ejection: HumanDuration(std::time::Duration::from_secs(300)),
            max_ejected_percent: 50,
            half_open_requests: 1,
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// The upstream circuit breaker.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerDoc {
    /// Open when at least this share of the window's requests failed, in percent.
    pub failure_percent: u32,
    /// ... and the window holds at least this many requests.
    pub min_requests: u32,
    /// The counting window.
    pub window: HumanDuration,
    /// How long the circuit stays open before trials.
    pub open_for: HumanDuration,
    /// Trial requests let through when half-open.
    pub half_open_requests: u32,
}

impl Default for CircuitBreakerDoc {
    fn default() -> Self {
        CircuitBreakerDoc {
            failure_percent: 50,
            min_requests: 20,
            window: HumanDuration(std::time::Duration::from_secs(10)),
            open_for: HumanDuration(std::time::Duration::from_secs(5)),
            half_open_requests: 3,
        }
    }
}

/// An active HTTP health check, sent to every target of the upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckDoc {
    /// Path to request, like `/healthz`.
    pub path: String,
    /// Method of the probe (default GET).
    #[serde(default = "defaults::probe_method")]
    pub method: String,
    /// `Host` header of the probe (default: the target's `host:port`).
    pub host: Option<String>,
    /// Statuses that mean healthy (default: any 2xx or 3xx).
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// Text the response body must contain (its first 64KiB are read).
    pub body_contains: Option<String>,
    /// Time between probes of one target.
    #[serde(default = "defaults::probe_interval")]
    pub interval: HumanDuration,
    /// Time a probe may take; must be shorter than `interval`.
    #[serde(default = "defaults::probe_timeout")]
    pub timeout: HumanDuration,
    /// Successes in a row that bring a down target back.
    #[serde(default = "defaults::two")]
    pub healthy_threshold: u32,
    /// Failures in a row that take a target down.
    #[serde(default = "defaults::three")]
    pub unhealthy_threshold: u32,
}

/// Retries of failed requests, always on a different target.
///
/// `connect_failure` retries are safe for every method (nothing was sent).
/// The other conditions only retry requests that can be replayed: an
/// idempotent method (or a route with `retry_non_idempotent`) and no body.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesDoc {
    /// Extra attempts after the first; 0 turns retries off.
    pub attempts: u32,
    /// When to retry: `connect_failure`, `error` (reset or invalid response),
    /// `timeout` (no response headers within the read timeout), or a status code.
    pub on: Vec<RetryOn>,
    /// Retries may add at most this share of the upstream's traffic, in
    /// percent, so retries cannot amplify an outage.
    pub budget_percent: u32,
    /// First backoff; each retry waits a random time up to base × 2^(n-1).
    pub backoff: HumanDuration,
    /// Longest backoff.
    pub max_backoff: HumanDuration,
}

impl Default for RetriesDoc {
    fn default() -> Self {
        RetriesDoc {
            attempts: 2,
            on: vec![RetryOn::Condition(RetryCondition::ConnectFailure)],
            budget_percent: 20,
            backoff: HumanDuration(std::time::Duration::from_millis(25)),
            max_backoff: HumanDuration(std::time::Duration::from_millis(250)),
        }
    }
}

/// One retry condition: a named condition or a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// A named condition.
    Condition(RetryCondition),
    /// A response status, like 503.
    Status(u16),
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`connect_failure`, `error`, `timeout` or a status code like 503")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RetryOn, E> {
                match s {
                    "connect_failure" => Ok(RetryOn::Condition(RetryCondition::ConnectFailure)),
                    "error" => Ok(RetryOn::Condition(RetryCondition::Error)),
                    "timeout" => Ok(RetryOn::Condition(RetryCondition::Timeout)),
                    other => Err(E::unknown_variant(
                        other,
                        &["connect_failure", "error", "timeout", "a status like 503"],
                    )),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RetryOn, E> {
                u16::try_from(n)
                    .map(RetryOn::Status)
                    .map_err(|_| E::custom(format!("`{n}` is not an HTTP status")))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RetryOn, E> {
                Err(E::custom(format!("`{n}` is not an HTTP status")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Named retry conditions.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryCondition {
    /// The TCP connection could not be made.
    ConnectFailure,
    /// The exchange failed after sending: reset, early close, invalid response.
    Error,
    /// No response headers within the read timeout.
    Timeout,
}

/// Settings of the `ewma` balancer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EwmaDoc {
    /// How fast old latency samples fade (the decay time constant).
    pub decay: HumanDuration,
}

impl Default for EwmaDoc {
    fn default() -> Self {
        EwmaDoc {
            decay: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

/// Settings of the `consistent_hash` balancer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HashDoc {
    /// What to hash: `client_ip`, `header:NAME`, `cookie:NAME`, `query:NAME`
    /// or `capture:NAME` (a path capture). When the request lacks it, the
    /// client IP is used.
    pub key: String,
}

/// Upstream timeouts; each is optional and falls back to the upstream's, then the default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsDoc {
    /// Establishing a TCP connection to a target (default 5s).
    pub connect: Option<HumanDuration>,
    /// Waiting for response headers, and any pause between body chunks (default 60s).
    pub read: Option<HumanDuration>,
    /// The whole exchange, from sending the request to the last response byte (default: none).
    pub total: Option<HumanDuration>,
}

/// A route: match conditions, one action, and its options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    /// Unique name, used in logs, metrics and errors.
    pub name: String,
    /// Higher runs first; among equal priorities the most specific match wins.
    #[serde(default)]
    pub priority: i32,
    /// Listener names this route is served on (empty: all listeners).
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What requests this route takes.
    #[serde(default, rename = "match")]
    pub matcher: MatchDoc,
    /// Proxy to this upstream.
    pub upstream: Option<String>,
    /// Split traffic between several upstreams (canary, blue-green).
    pub split: Option<SplitDoc>,
    /// Answer with a fixed response (a mock API).
    pub respond: Option<RespondDoc>,
    /// Answer with a redirect.
    pub redirect: Option<RedirectDoc>,
    /// Remove the matched path prefix before proxying (`/api/users` on `/api` goes up as `/users`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Which `Host` the upstream sees.
    #[serde(default)]
    pub host_header: HostHeader,
    /// Overrides of the upstream's timeouts for this route.
    #[serde(default)]
    pub timeouts: TimeoutsDoc,
    /// Overrides the listener's request body limit for this route.
    pub max_body_size: Option<ByteSize>,
    /// Most requests in flight on this route; more get 503. 0: no limit.
    #[serde(default)]
    pub max_in_flight: u32,
    /// Allow retries of non-idempotent methods (POST, PATCH) on this route;
    /// only body-less requests are ever replayed.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Accept gRPC-Web from browsers (binary and text) and speak gRPC to the
    /// upstream, which must have `http2: true`.
    #[serde(default)]
    pub grpc_web: bool,
    /// Plugins applied to this route.
    #[serde(default)]
    pub plugins: Vec<PluginDoc>,
}

/// A traffic split: each request goes to one of several upstreams, by
/// weight, unless a header or cookie names one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitDoc {
    /// The upstreams and their shares.
    pub upstreams: Vec<SplitTargetDoc>,
    /// A request header whose value, when it names one of the upstreams, picks it (beta users, tests).
    pub header: Option<String>,
    /// A cookie whose value, when it names one of the upstreams, picks it.
    pub cookie: Option<String>,
    /// Set `cookie` to the upstream chosen by weight, so a client stays on its side of the split.
    #[serde(default)]
    pub sticky: bool,
}

/// One side of a split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTargetDoc {
    /// Upstream name.
    pub upstream: String,
    /// Share of traffic relative to the others (0 sends none by weight; a header or cookie can still pick it).
    pub weight: u32,
}

/// Host header policy toward the upstream.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// Send the target's `host:port` (as nginx and Kong do by default).
    #[default]
    Upstream,
    /// Send the client's `Host` unchanged.
    Preserve,
}

/// Match conditions; all given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    /// Hosts: exact (`api.example.com`) or leading wildcard (`*.example.com`). Empty: any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Paths: prefix `/api`, exact `=/health`, regex `~^/v[0-9]+/`, template `/users/{id}`,
    /// catch-all `/files/{*rest}`. Empty: any path.
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP methods. Empty: any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<FieldMatchDoc>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query: Vec<FieldMatchDoc>,
}

/// A condition on a header or query parameter: exactly one of `value`, `regex`, `present`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMatchDoc {
    /// Header or parameter name (headers are case-insensitive).
    pub name: String,
    /// Equals this value.
    pub value: Option<String>,
    /// Matches this regex (unanchored unless it says `^…$`).
    pub regex: Option<String>,
    /// `true`: must be present (any value); `false`: must be absent.
    pub present: Option<bool>,
}

/// A fixed response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondDoc {
    /// Status code (default 200).
    #[serde(default = "defaults::status_ok")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Text body; `{name}` is replaced by the path capture `name`.
    pub body: Option<String>,
    /// JSON body, written as YAML; sets `content-type: application/json`.
    pub json: Option<serde_json::Value>,
}

/// A redirect response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectDoc {
    /// 301, 302, 303, 307 or 308 (default 302).
    #[serde(default = "defaults::status_found")]
    pub status: u16,
    /// Target; `{name}` is replaced by the path capture `name`.
    pub location: String,
    /// Append the request's query string to the location.
    #[serde(default)]
    pub keep_query: bool,
}

/// A caller of the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerDoc {
    /// Unique name.
    pub name: String,
    /// Groups used by access control.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Credentials that identify this consumer.
    #[serde(default)]
    pub credentials: CredentialsDoc,
    /// Plugins that apply once this consumer is identified (replacing the
    /// route's plugin of the same name).
    #[serde(default)]
    pub plugins: Vec<PluginDoc>,
}

/// A consumer's credentials. Checked by the authentication plugins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsDoc {
    /// API keys for `key_auth`: the key (use `${ENV}` references, not inline
    /// secrets) or `sha256:` and the hex SHA-256 of the key.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Username and password hash pairs for `basic_auth`.
    #[serde(default)]
    pub basic: Vec<BasicCredentialDoc>,
    /// Token subjects (`jwt` and `oauth2_introspection` claim values) that
    /// identify this consumer.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Client certificates for `mtls_auth`: a subject (`CN=app,O=Example`),
    /// a SAN (`DNS:app.example.com`) or `sha256:` and a fingerprint.
    #[serde(default)]
    pub certificates: Vec<String>,
}

/// A `basic_auth` credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicCredentialDoc {
    /// The username.
    pub username: String,
    /// A bcrypt (`$2b$…`) or argon2 (`$argon2id$…`) hash; never plain text.
    pub password: String,
}

/// Headers that carry the authenticated identity to the upstream. Incoming
/// copies are always removed, so clients cannot claim an identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersDoc {
    /// The consumer's name (empty to not send it).
    pub consumer: String,
    /// The caller's groups, comma-separated.
    pub groups: String,
    /// The token subject or consumer name.
    pub subject: String,
    /// Set to `true` on requests let in as the anonymous consumer.
    pub anonymous: String,
}

impl Default for IdentityHeadersDoc {
    fn default() -> Self {
        IdentityHeadersDoc {
            consumer: "x-consumer-name".into(),
            groups: "x-consumer-groups".into(),
            subject: "x-authenticated-subject".into(),
            anonymous: "x-anonymous-consumer".into(),
        }
    }
}

/// A plugin attachment: a one-key mapping `{plugin_name: config}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct PluginDoc(pub BTreeMap<String, serde_json::Value>);

mod defaults {
    use super::{ByteSize, HumanDuration};
    use std::time::Duration;
    pub fn max_header_size() -> ByteSize {
        ByteSize(16 * 1024)
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn max_uri_length() -> ByteSize {
        ByteSize(8 * 1024)
    }
    pub fn max_body_size() -> ByteSize {
        ByteSize(10 * 1024 * 1024)
    }
    pub fn header_read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn body_read_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn max_idle_per_target() -> usize {
        256
    }
    pub fn pool_idle_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(60))
    }
    pub fn max_concurrent_streams() -> u32 {
        100
    }
    pub fn yes() -> bool {
        true
    }
    pub fn tls_min_version() -> String {
        "1.2".into()
    }
    pub fn dns_refresh() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn probe_method() -> String {
        "GET".into()
    }
    pub fn probe_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn probe_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(2))
    }
    pub fn two() -> u32 {
        2
    }
    pub fn three() -> u32 {
        3
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn status_ok() -> u16 {
        200
    }
    pub fn status_found() -> u16 {
        302
    }
}
