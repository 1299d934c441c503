//! The log phase of one request: what the pipeline learns about it on the
//! way (route, consumer, upstream, spans) is collected in a [`Record`], and
//! when the response body is finished or abandoned, [`Finish`] turns it
//! into metrics, an access log line and spans. Skipped entirely when the
//! snapshot records nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Request, Uri, Version};

use super::access_log::Entry;
use super::span::{unix_ns_at, AttrValue, ChildSpan, SpanData, SpanKind, TraceContext};
use super::Observe;
use crate::clock::Tick;
use crate::proxy::arrival::Arrival;
use crate::snapshot::{ListenerKey, Snapshot};

/// What the pipeline found out about a request, for the log phase.
#[derive(Debug, Default)]
pub struct Record {
    /// Whether anything is recorded (the pipeline skips the bookkeeping otherwise).
    pub on: bool,
    /// The matched route's index in the snapshot.
    pub route: Option<u32>,
    /// The configured consumer that called (metrics label).
    pub consumer: Option<Arc<str>>,
    /// Who called: the consumer, or a token's subject (access log).
    pub subject: Option<Arc<str>>,
    /// The upstream's name.
    pub upstream: Option<Arc<str>>,
    /// The target that answered last.
    pub target: Option<Arc<str>>,
    /// Sending upstream to its response headers, retries included.
    pub upstream_time: Option<Duration>,
    /// The gateway's error code, when it answered with an error.
    pub error: Option<&'static str>,
    /// The trace of this request, when tracing is on.
    pub trace: Option<TraceContext>,
    /// Spans timed during the request (plugins' calls, the upstream call).
    pub spans: Vec<ChildSpan>,
    /// Request body bytes, counted as they stream (when recording).
    pub request_bytes: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// The request facts the log phase needs, copied before the request moves on.
#[derive(Debug)]
pub struct Start {
    at: Tick,
    unix_ns: u64,
    method: Method,
    version: Version,
    /// Made only for the access log and sampled spans. Kept inline: the
    /// record moves into the response body's allocation anyway, and a box
    /// of its own cost every logged request an allocation.
    extras: Option<Extras>,
}

/// What only the access log (and sampled spans) need.
#[derive(Debug, Default)]
struct Extras {
    uri: Uri,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    headers: Vec<Option<HeaderValue>>,
}

impl Start {
    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.at.elapsed()
    }

    /// Notes the request's arrival; copies what the access log needs only
    /// when there is one. `sampled`: the request's spans will be exported
    /// (they carry the path).
    pub fn new<B>(
        req: &Request<B>,
        arrival: &Arrival<'_>,
        observe: &Observe,
        sampled: bool,
    ) -> Start {
        let extras = match &observe.access_log {
            Some(log) => Some(Extras {
                uri: req.uri().clone(),
                host: match req.uri().authority() {
                    Some(a) => HeaderValue::from_str(a.as_str()).ok(),
                    None => arrival.host.cloned(),
                },
                user_agent: arrival.user_agent.cloned(),
                headers: log
                    .headers
                    .iter()
                    .map(|h| req.headers().get(h).cloned())
                    .collect(),
            }),
            None if sampled => Some(Extras {
                uri: req.uri().clone(),
                ..Extras::default()
            }),
            None => None,
        };
        let at = Tick::now();
        Start {
            at,
            unix_ns: if observe.access_log.is_some() || observe.tracer.is_some() {
                unix_ns_at(at)
            } else {
                0
            },
            method: req.method().clone(),
            version: req.version(),
            extras,
        }
    }
}

/// Records a request when its response is done. Dropped with the response
/// body: after the last byte, on an error, or when the client goes away;
/// or, when the client goes away before the response, with the pipeline.
#[derive(Debug)]
pub struct Finish {
    /// The snapshot the request ran on (for its metric handles and sinks).
    snap: Arc<Snapshot>,
    /// Arrival facts.
    start: Start,
    /// What the pipeline found.
    pub record: Record,
    /// Response status; 0 until the response is ready.
    status: u16,
    /// Time to the response headers.
    head_time: Duration,
    /// Response body bytes sent so far.
    pub bytes_out: u64,
    /// The request ID.
    request_id: HeaderValue,
    /// The client's address.
    client_ip: IpAddr,
    /// The listener (its name is looked up only for the access log).
    listener: ListenerKey,
    /// The TLS version of the connection.
    tls_version: Option<&'static str>,
}

/// The status recorded for a request whose client went away before its
/// response was ready (nginx's "client closed request"; no response is
/// sent with it).
const CLIENT_CLOSED: u16 = 499;

impl Finish {
    /// The record of a request that has just arrived, run on `snap`.
    pub fn new(
        snap: Arc<Snapshot>,
        start: Start,
        record: Record,
        request_id: HeaderValue,
        client_ip: IpAddr,
        listener: ListenerKey,
        tls_version: Option<&'static str>,
    ) -> Finish {
        Finish {
            snap,
            start,
            record,
            status: 0,
            head_time: Duration::ZERO,
            bytes_out: 0,
            request_id,
            client_ip,
            listener,
            tls_version,
        }
    }

    /// Notes the response's status and the time to its headers, when the
    /// response is ready to be sent.
    pub fn responded(&mut self, status: u16) {
        self.status = status;
        self.head_time = self.start.elapsed();
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let total = self.start.at.elapsed();
        if self.status == 0 {
            // Abandoned before the response: the whole time was the gateway's
            // (or the upstream's, as `upstream_time` tells).
            self.status = CLIENT_CLOSED;
            self.head_time = total;
            self.record.error.get_or_insert("client_closed_request");
        }
        let obs = &self.snap.observe;
        let rec = &mut self.record;
        let bytes_in = rec
            .request_bytes
            .as_ref()
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed));
        if let Some(m) = &obs.metrics {
            m.in_flight.dec();
            let handles = rec
                .route
                .and_then(|i| obs.routes.get(i as usize))
                .or(obs.unmatched.as_ref());
            if let Some(h) = handles {
                h.record(
                    &self.start.method,
                    self.status,
                    total.as_secs_f64(),
                    bytes_in,
                    self.bytes_out,
                    rec.consumer.as_ref().filter(|_| obs.consumer_label),
                );
            }
        }
        let route_name = rec
            .route
            .and_then(|i| self.snap.routes.get(i as usize))
            .map(|r| &r.name);
        // Server-side failures; a client's 4xx is not the service failing.
        let failed = self.status >= 500;
        if let (Some(tracer), Some(trace)) = (&obs.tracer, &rec.trace) {
            if trace.sampled || (tracer.always_sample_errors && failed) {
                let mut spans = Vec::with_capacity(1 + rec.spans.len());
                let mut attributes = vec![
                    (
                        "http.request.method",
                        AttrValue::Str(self.start.method.to_string()),
                    ),
                    (
                        "http.response.status_code",
                        AttrValue::Int(i64::from(self.status)),
                    ),
                    (
                        "network.protocol.version",
                        AttrValue::Str(
                            match self.start.version {
                                Version::HTTP_2 => "2",
                                Version::HTTP_10 => "1.0",
                                _ => "1.1",
                            }
                            .into(),
                        ),
                    ),
                    ("client.address", AttrValue::Str(self.client_ip.to_string())),
                    (
                        "http.request_id",
                        AttrValue::Str(
                            String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
                        ),
                    ),
                ];
                if let Some(r) = route_name {
                    attributes.push(("http.route", AttrValue::Str(r.to_string())));
                }
                if let Some(s) = &rec.subject {
                    attributes.push(("enduser.id", AttrValue::Str(s.to_string())));
                }
                if let Some(x) = &self.start.extras {
                    attributes.push(("url.path", AttrValue::Str(x.uri.path().to_string())));
                }
                let trace_state = trace
                    .trace_state
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                spans.push(SpanData {
                    trace_id: trace.trace_id,
                    span_id: trace.span_id,
                    parent: trace.parent,
                    trace_state: trace_state.clone(),
                    name: match route_name {
                        Some(r) => format!("{} {r}", self.start.method),
                        None => self.start.method.to_string(),
                    },
                    kind: SpanKind::Server,
                    start_unix_ns: self.start.unix_ns,
                    end_unix_ns: self.start.unix_ns + total.as_nanos() as u64,
                    attributes,
                    error: failed.then(|| {
                        rec.error
                            .map_or_else(|| format!("status {}", self.status), str::to_string)
                    }),
                    sampled: trace.sampled,
                });
                for c in rec.spans.drain(..) {
                    spans.push(SpanData {
                        trace_id: trace.trace_id,
                        span_id: c.span_id,
                        parent: Some(trace.span_id),
                        trace_state: trace_state.clone(),
                        name: c.name.to_string(),
                        kind: c.kind,
                        start_unix_ns: c.start_unix_ns,
                        end_unix_ns: c.end_unix_ns,
                        attributes: c.attributes,
                        error: c.error,
                        sampled: trace.sampled,
                    });
                }
                tracer.exporter.push(spans);
            }
        }
        if let Some(log) = &obs.access_log {
            let upstream = rec.upstream_time;
            let x = self.start.extras.as_ref();
            log.push(&Entry {
                time_unix_ns: self.start.unix_ns,
                request_id: &self.request_id,
                client_ip: self.client_ip,
                listener: self.snap.listener(self.listener).map(|l| &*l.name),
                protocol: self.start.version,
                method: &self.start.method,
                host: x.and_then(|x| x.host.as_ref()),
                uri: x.map(|x| &x.uri),
                route: route_name,
                upstream: rec.upstream.as_deref(),
                upstream_target: rec.target.as_deref(),
                status: self.status,
                error: rec.error,
                request_bytes: bytes_in,
                response_bytes: self.bytes_out,
                duration: total,
                upstream_duration: upstream,
                gateway_duration: self.head_time.saturating_sub(upstream.unwrap_or_default()),
                consumer: rec.subject.as_deref(),
                user_agent: x.and_then(|x| x.user_agent.as_ref()),
                tls_version: self.tls_version,
                trace_id: rec.trace.as_ref().map(|t| t.trace_id),
                span_id: rec.trace.as_ref().map(|t| t.span_id),
                headers: x.map_or(&[], |x| &x.headers[..]),
                names_plain: obs.names_plain,
            });
        }
    }
}
