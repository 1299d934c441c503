//! The `admin` and `observability` sections as users write them: where the
//! admin listener is (metrics, health, log level), what is recorded per
//! request (metrics, access log) and where traces go. Checked here; compiled
//! by `observability::compile`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::units::HumanDuration;

/// The admin listener: `/metrics`, `/healthz`, `/readyz` and `/log-level`.
/// Kept off the public listeners; bind it to loopback or a private network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDoc {
    /// `IP:PORT` to bind, like `127.0.0.1:9901` (the default: loopback
    /// only); port 0 picks a free port.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// `/readyz` also requires at least one healthy target in every upstream.
    #[serde(default)]
    pub ready_requires_healthy_upstreams: bool,
    /// Bearer tokens for the Admin API (`/api/…`).
    #[serde(default)]
    pub tokens: Vec<super::control::AdminTokenDoc>,
    /// Client certificate subjects allowed when `tls.client_auth` is set.
    #[serde(default)]
    pub clients: Vec<super::control::AdminClientDoc>,
    /// Serve the admin listener over TLS; with `client_auth`, callers can
    /// authenticate with a certificate listed in `clients`.
    pub tls: Option<super::model::TlsDoc>,
    /// File that receives one JSON line per Admin API write (relative to the
    /// config file's folder); the diagnostic log gets them too.
    pub audit_log: Option<String>,
    /// Largest Admin API request body; larger gets 413.
    #[serde(default = "super::control::default_admin_body")]
    pub max_body_size: super::units::ByteSize,
}

/// What the gateway records about the traffic it carries.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilityDoc {
    /// Prometheus metrics, served on the admin listener.
    pub metrics: MetricsDoc,
    /// One JSON line per request.
    pub access_log: Option<AccessLogDoc>,
    /// W3C trace context and OTLP export.
    pub tracing: Option<TracingDoc>,
}

/// Metric settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsDoc {
    /// Record metrics (they are served only when `admin` is set).
    pub enabled: bool,
    /// Also count requests by consumer name. Off by default: one series per
    /// route, consumer and status class can be many.
    pub consumer_label: bool,
    /// Upper bounds of the latency histogram buckets, in seconds, ascending.
    pub latency_buckets: Vec<f64>,
}

impl Default for MetricsDoc {
    fn default() -> Self {
        MetricsDoc {
            enabled: true,
            consumer_label: false,
            latency_buckets: vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        }
    }
}

/// The access log.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogDoc {
    /// `stdout`, `stderr`, or a file path (relative to the config file's
    /// folder), reopened on `SIGUSR1` for log rotation.
    #[serde(default = "stdout")]
    pub output: String,
    /// The fields written, in this order; all of them when absent.
    pub fields: Option<Vec<String>>,
    /// Request headers to log as `header.<name>` fields. Credentials
    /// (`authorization`, cookies, API-key headers) are refused.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters whose values are written as `REDACTED`.
    #[serde(default = "default_redact")]
    pub redact_query: Vec<String>,
    /// Lines waiting to be written at most; beyond that, lines are dropped
    /// (and counted) rather than slowing requests down.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".into()
}

fn stdout() -> String {
    "stdout".into()
}

fn default_buffer() -> usize {
    16 * 1024
}

fn default_redact() -> Vec<String> {
    [
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "id_token",
        "password",
        "secret",
        "signature",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Where spans go and which requests are traced.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingDoc {
    /// The OTLP collector: `http://host:4318` (protocol `http`, spans are
    /// POSTed to `/v1/traces`) or `http://host:4317` (protocol `grpc`).
    pub endpoint: String,
    /// `http` (OTLP/HTTP, protobuf) or `grpc` (OTLP/gRPC).
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Share of new traces recorded, from 0 to 1. A caller's sampling
    /// decision (`traceparent` flags) is followed.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// Export the spans of failed requests (5xx, gateway errors) even when
    /// the trace was not sampled.
    #[serde(default = "yes")]
    pub always_sample_errors: bool,
    /// `service.name` of the spans.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// More resource attributes, like `deployment.environment: prod`.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Headers sent with every export (collector credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for one export call.
    #[serde(default = "export_timeout")]
    pub timeout: HumanDuration,
    /// Spans sent per export call at most.
    #[serde(default = "batch_size")]
    pub batch_size: usize,
    /// Spans waiting for export at most; beyond that they are dropped and counted.
    #[serde(default = "queue_size")]
    pub queue_size: usize,
    /// How often pending spans are sent.
    #[serde(default = "export_interval")]
    pub export_interval: HumanDuration,
    /// A PEM CA bundle for an `https://` endpoint (system roots otherwise).
    pub ca: Option<String>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    #[default]
    Http,
    /// OTLP/gRPC.
    Grpc,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn service_name() -> String {
    "portcullis".into()
}
fn export_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn batch_size() -> usize {
    512
}
fn queue_size() -> usize {
    8192
}
fn export_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

/// The access log fields, in their default order.
pub const ACCESS_LOG_FIELDS: &[&str] = &[
    "time",
    "request_id",
    "client_ip",
    "listener",
    "protocol",
    "method",
    "host",
    "path",
    "query",
    "route",
    "upstream",
    "upstream_target",
    "status",
    "error",
    "request_bytes",
    "response_bytes",
    "duration_ms",
    "upstream_ms",
    "gateway_ms",
    "consumer",
    "user_agent",
    "tls_version",
    "trace_id",
    "span_id",
];

/// Request headers that carry credentials; the access log never writes them.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-amz-security-token",
];

/// Checks the `admin` and `observability` sections; `err(path, message)`
/// receives every problem.
pub fn check(
    admin: Option<&AdminDoc>,
    obs: &ObservabilityDoc,
    listeners: &[SocketAddr],
    err: &mut dyn FnMut(&str, String),
) {
    if let Some(a) = admin {
        match a.address.parse::<SocketAddr>() {
            Err(_) => err(
                "admin.address",
                format!(
                    "`{}` is not an IP:PORT address; write it like `127.0.0.1:9901`",
                    a.address
                ),
            ),
            Ok(addr) if addr.port() != 0 && listeners.contains(&addr) => err(
                "admin.address",
                format!("{addr} is also a public listener's address; give the admin listener its own port"),
            ),
            Ok(_) => {}
        }
        super::control::check_admin_access(&a.tokens, &a.clients, err);
    }
    let m = &obs.metrics;
    if m.latency_buckets.is_empty() {
        err(
            "observability.metrics.latency_buckets",
            "list at least one bucket bound (seconds)".into(),
        );
    }
    if m.latency_buckets
        .iter()
        .any(|b| !b.is_finite() || *b <= 0.0)
        || m.latency_buckets.windows(2).any(|w| w[0] >= w[1])
    {
        err(
            "observability.metrics.latency_buckets",
            "bucket bounds must be positive seconds in ascending order, like [0.005, 0.05, 0.5]"
                .into(),
        );
    }
    if let Some(log) = &obs.access_log {
        check_access_log(log, err);
    }
    if let Some(t) = &obs.tracing {
        check_tracing(t, err);
    }
}

fn check_access_log(log: &AccessLogDoc, err: &mut dyn FnMut(&str, String)) {
    let p = "observability.access_log";
    if log.output.trim().is_empty() {
        err(
            &format!("{p}.output"),
            "use `stdout`, `stderr` or a file path".into(),
        );
    }
    if let Some(fields) = &log.fields {
        if fields.is_empty() {
            err(
                &format!("{p}.fields"),
                "list at least one field, or leave `fields` out for all of them".into(),
            );
        }
        for (i, f) in fields.iter().enumerate() {
            if !ACCESS_LOG_FIELDS.contains(&f.as_str()) {
                err(
                    &format!("{p}.fields[{i}]"),
                    format!(
                        "unknown field `{f}`; known fields: {}",
                        ACCESS_LOG_FIELDS.join(", ")
                    ),
                );
            }
        }
    }
    for (i, h) in log.headers.iter().enumerate() {
        let path = format!("{p}.headers[{i}]");
        let lower = h.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            err(&path, format!("`{h}` is not a valid header name"));
        } else if SENSITIVE_HEADERS.contains(&lower.as_str()) {
            err(
                &path,
                format!("`{h}` carries credentials and is never logged; remove it"),
            );
        }
    }
    if log.buffer == 0 || log.buffer > 1_000_000 {
        err(&format!("{p}.buffer"), "between 1 and 1000000 lines".into());
    }
}

fn check_tracing(t: &TracingDoc, err: &mut dyn FnMut(&str, String)) {
    let p = "observability.tracing";
    match t.endpoint.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
            if t.ca.is_some() && u.scheme_str() != Some("https") {
                err(
                    &format!("{p}.ca"),
                    "`ca` is only used with an https:// endpoint".into(),
                );
            }
        }
        _ => err(
            &format!("{p}.endpoint"),
            format!(
                "`{}` is not an http:// or https:// URL; write it like `http://127.0.0.1:4318`",
                t.endpoint
            ),
        ),
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        err(
            &format!("{p}.sample_ratio"),
            format!(
                "{} is not between 0 and 1; use 0.01 for one trace in a hundred",
                t.sample_ratio
            ),
        );
    }
    if t.service_name.trim().is_empty() {
        err(&format!("{p}.service_name"), "must not be empty".into());
    }
    for name in t.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            err(
                &format!("{p}.headers.{name}"),
                format!("`{name}` is not a valid header name"),
            );
        }
    }
    for (name, value) in &t.headers {
        if http::HeaderValue::from_str(value).is_err() {
            err(
                &format!("{p}.headers.{name}"),
                "the value must be visible ASCII text".into(),
            );
        }
    }
    if t.timeout.0.is_zero() {
        err(&format!("{p}.timeout"), "must be more than 0s".into());
    }
    if t.export_interval.0 < std::time::Duration::from_millis(10) {
        err(
            &format!("{p}.export_interval"),
            "must be at least 10ms".into(),
        );
    }
    if t.batch_size == 0 || t.batch_size > 100_000 {
        err(
            &format!("{p}.batch_size"),
            "between 1 and 100000 spans".into(),
        );
    }
    if t.queue_size < t.batch_size || t.queue_size > 10_000_000 {
        err(
            &format!("{p}.queue_size"),
            "at least `batch_size` and at most 10000000 spans".into(),
        );
    }
}
