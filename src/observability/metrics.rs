//! Prometheus metrics recorded on the request path. The families live for
//! the whole process (counters survive reloads); each snapshot holds
//! handles per route and upstream, created on first use, so recording a
//! request is a few atomic adds and never a lookup by name.

use std::sync::{Arc, OnceLock};

use http::Method;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set of `N` (name, value) pairs; values come from config names.
pub type Labels<const N: usize> = [(&'static str, Arc<str>); N];

/// Makes latency histograms with the configured buckets.
#[derive(Debug, Clone)]
pub struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type Counters<const N: usize> = Family<Labels<N>, Counter>;
type Histograms = Family<Labels<1>, Histogram, Buckets>;

/// Every metric family the gateway records into, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    buckets: Arc<[f64]>,
    /// Requests by route, method and status class.
    pub requests: Counters<3>,
    /// Requests by route, consumer and status class (when enabled).
    pub consumer_requests: Counters<3>,
    /// Time from the request's arrival to the end of the response, by route.
    pub request_duration: Histograms,
    /// Time from sending upstream to the upstream's response headers, by upstream.
    pub upstream_duration: Histograms,
    /// Request body bytes received, by route.
    pub request_bytes: Counters<1>,
    /// Response body bytes sent, by route.
    pub response_bytes: Counters<1>,
    /// Requests being handled now.
    pub in_flight: Gauge,
    /// Retried upstream attempts, by upstream.
    pub retries: Counters<1>,
    /// Rate limiting decisions, by owner, plugin and decision.
    pub rate_limit: Counters<3>,
    /// Configuration loads, by result (`success`, `failure`).
    pub reloads: Counters<1>,
    /// TLS handshakes that failed, by listener.
    pub tls_failures: Counters<1>,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Access log writes that failed.
    pub access_log_errors: Counter,
    /// Spans sent to the collector.
    pub spans_exported: Counter,
    /// Spans not sent, by reason (`queue_full`, `export_failed`).
    pub spans_dropped: Counters<1>,
}

impl Metrics {
    /// Registers every family; `buckets` are the latency histogram bounds (seconds).
    pub fn new(buckets: &[f64]) -> Metrics {
        let buckets: Arc<[f64]> = buckets.into();
        let hist = || Family::new_with_constructor(Buckets(buckets.clone()));
        let m = Metrics {
            registry: Registry::default(),
            buckets: buckets.clone(),
            requests: Family::default(),
            consumer_requests: Family::default(),
            request_duration: hist(),
            upstream_duration: hist(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            in_flight: Gauge::default(),
            retries: Family::default(),
            rate_limit: Family::default(),
            reloads: Family::default(),
            tls_failures: Family::default(),
            access_log_dropped: Counter::default(),
            access_log_errors: Counter::default(),
            spans_exported: Counter::default(),
            spans_dropped: Family::default(),
        };
        let mut r = Registry::with_prefix("portcullis");
        r.register(
            "requests",
            "Requests by route, method and status class",
            m.requests.clone(),
        );
        r.register(
            "consumer_requests",
            "Requests by route, consumer and status class (observability.metrics.consumer_label)",
            m.consumer_requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route",
            m.request_duration.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to the response headers (retries included), by upstream",
            m.upstream_duration.clone(),
        );
        r.register(
            "request_body_bytes",
            "Request body bytes received, by route",
            m.request_bytes.clone(),
        );
        r.register(
            "response_body_bytes",
            "Response body bytes sent, by route",
            m.response_bytes.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being handled now",
            m.in_flight.clone(),
        );
        r.register(
            "upstream_retries",
            "Upstream attempts that were retries, by upstream",
            m.retries.clone(),
        );
        r.register(
            "rate_limit_decisions",
            "Rate limiting decisions, by owner (route:<name>, consumer:<name> or global), plugin and decision (allowed, rejected, error)",
            m.rate_limit.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration loads, by result",
            m.reloads.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_failures.clone(),
        );
        r.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        r.register(
            "access_log_write_errors",
            "Access log writes that failed",
            m.access_log_errors.clone(),
        );
        r.register(
            "trace_spans_exported",
            "Spans accepted by the collector",
            m.spans_exported.clone(),
        );
        r.register(
            "trace_spans_dropped",
            "Spans not exported, by reason (queue_full, export_failed)",
            m.spans_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The histogram bounds the families were made with.
    pub fn buckets(&self) -> &[f64] {
        &self.buckets
    }

    /// Appends the registered families in the Prometheus text format
    /// (without the closing `# EOF`).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        encode_registry(out, &self.registry)
    }
}

/// The label value of a method: the common ones by name, the rest `other`.
fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The status class label (`2xx`) of a status code.
pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

fn class_index(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, 5) - 1
}

/// One route's handles, made on first use so routes never called add no
/// series (a snapshot may have thousands of routes).
#[derive(Debug)]
pub struct RouteMetrics {
    name: Arc<str>,
    metrics: Arc<Metrics>,
    requests: [[OnceLock<Counter>; 5]; 8],
    duration: OnceLock<Histogram>,
    request_bytes: OnceLock<Counter>,
    response_bytes: OnceLock<Counter>,
}

impl RouteMetrics {
    /// Handles for the route named `name`.
    pub fn new(name: Arc<str>, metrics: Arc<Metrics>) -> RouteMetrics {
        RouteMetrics {
            name,
            metrics,
            requests: Default::default(),
            duration: OnceLock::new(),
            request_bytes: OnceLock::new(),
            response_bytes: OnceLock::new(),
        }
    }

    /// Counts one finished request.
    pub fn record(
        &self,
        method: &Method,
        status: u16,
        seconds: f64,
        bytes_in: u64,
        bytes_out: u64,
        consumer: Option<&Arc<str>>,
    ) {
        let (mi, ci) = (method_index(method), class_index(status));
        let m = &self.metrics;
        self.requests[mi][ci]
            .get_or_init(|| {
                m.requests.get_or_create_owned(&[
                    ("route", self.name.clone()),
                    ("method", METHODS[mi].into()),
                    ("status", CLASSES[ci].into()),
                ])
            })
            .inc();
        self.duration
            .get_or_init(|| {
                m.request_duration
                    .get_or_create_owned(&[("route", self.name.clone())])
            })
            .observe(seconds);
        if bytes_in > 0 {
            self.request_bytes
                .get_or_init(|| {
                    m.request_bytes
                        .get_or_create_owned(&[("route", self.name.clone())])
                })
                .inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.response_bytes
                .get_or_init(|| {
                    m.response_bytes
                        .get_or_create_owned(&[("route", self.name.clone())])
                })
                .inc_by(bytes_out);
        }
        if let Some(c) = consumer {
            m.consumer_requests
                .get_or_create(&[
                    ("route", self.name.clone()),
                    ("consumer", c.clone()),
                    ("status", CLASSES[ci].into()),
                ])
                .inc();
        }
    }
}

/// One upstream's handles.
#[derive(Debug)]
pub struct UpstreamMetrics {
    name: Arc<str>,
    metrics: Arc<Metrics>,
    duration: OnceLock<Histogram>,
    retries: OnceLock<Counter>,
}

impl UpstreamMetrics {
    /// Handles for the upstream named `name`.
    pub fn new(name: Arc<str>, metrics: Arc<Metrics>) -> UpstreamMetrics {
        UpstreamMetrics {
            name,
            metrics,
            duration: OnceLock::new(),
            retries: OnceLock::new(),
        }
    }

    /// Records the time to the upstream's response headers.
    pub fn observe(&self, seconds: f64) {
        self.duration
            .get_or_init(|| {
                self.metrics
                    .upstream_duration
                    .get_or_create_owned(&[("upstream", self.name.clone())])
            })
            .observe(seconds);
    }

    /// Counts a retried attempt.
    pub fn retried(&self) {
        self.retries
            .get_or_init(|| {
                self.metrics
                    .retries
                    .get_or_create_owned(&[("upstream", self.name.clone())])
            })
            .inc();
    }
}

/// Pre-made counters for a limiting plugin's decisions on one route.
#[derive(Debug, Clone)]
pub struct DecisionCounters {
    /// Requests let through.
    pub allowed: Counter,
    /// Requests refused.
    pub rejected: Counter,
    /// Checks that failed (store unreachable).
    pub error: Counter,
}

impl DecisionCounters {
    /// The counters of plugin `plugin` attached to `owner` (`route:<name>`,
    /// `consumer:<name>` or `global`).
    pub fn new(metrics: &Metrics, owner: &str, plugin: &'static str) -> DecisionCounters {
        let c = |d: &'static str| {
            metrics.rate_limit.get_or_create_owned(&[
                ("owner", owner.into()),
                ("plugin", plugin.into()),
                ("decision", d.into()),
            ])
        };
        DecisionCounters {
            allowed: c("allowed"),
            rejected: c("rejected"),
            error: c("error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_count_into_the_shared_families() {
        let m = Arc::new(Metrics::new(&[0.1, 1.0]));
        let r = RouteMetrics::new("users".into(), m.clone());
        r.record(&Method::GET, 200, 0.05, 0, 10, None);
        r.record(&Method::GET, 204, 0.5, 3, 0, None);
        r.record(
            &Method::from_bytes(b"PURGE").expect("method"),
            503,
            2.0,
            0,
            0,
            None,
        );
        // A second snapshot's handles continue the same series.
        let again = RouteMetrics::new("users".into(), m.clone());
        again.record(&Method::GET, 201, 0.01, 0, 0, Some(&"app".into()));
        let mut out = String::new();
        m.encode(&mut out).expect("encodes");
        assert!(
            out.contains(r#"portcullis_requests_total{route="users",method="GET",status="2xx"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"portcullis_requests_total{route="users",method="other",status="5xx"} 1"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"portcullis_request_duration_seconds_bucket{le="0.1",route="users"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"portcullis_response_body_bytes_total{route="users"} 10"#),
            "{out}"
        );
        assert!(
            out.contains(
                r#"portcullis_consumer_requests_total{route="users",consumer="app",status="2xx"} 1"#
            ),
            "{out}"
        );
        assert_eq!(status_class(99), "1xx");
        assert_eq!(status_class(999), "5xx");
    }
}
