//! OTLP trace export: the protobuf messages of
//! `opentelemetry/proto/collector/trace/v1` (only the fields the gateway
//! writes, with their official numbers) and the exporter, which batches
//! spans on its own thread and sends them over OTLP/HTTP or OTLP/gRPC.
//! The request path only pushes into a bounded queue; a collector that is
//! down or slow costs dropped spans (counted), never request latency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use prost::Message;
use tokio::sync::Notify;

use super::span::{AttrValue, SpanData, SpanKind};
use crate::config::{OtlpProtocol, TracingDoc};
use crate::plugins::http_client::Endpoint;

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    /// Spans grouped by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    /// The process that made the spans.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Spans grouped by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`.
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    /// `service.name` and the configured attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`.
#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    /// The instrumentation scope (`portcullis`).
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// The spans.
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `InstrumentationScope`.
#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    /// Scope name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Scope version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `Span`.
#[derive(Clone, PartialEq, Message)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// W3C `tracestate`.
    #[prost(string, tag = "3")]
    pub trace_state: String,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    /// Operation name.
    #[prost(string, tag = "5")]
    pub name: String,
    /// `SpanKind`: 1 internal, 2 server, 3 client.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    /// Unix nanoseconds.
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    /// Unix nanoseconds.
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    /// Attributes.
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    /// Outcome.
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags (bit 0: sampled).
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

/// `Status`.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    /// Description of an error.
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// Attribute name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Attribute value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue` (the scalar cases).
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    /// The value.
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
    pub value: Option<any_value::Value>,
}

/// The cases of [`AnyValue`].
pub mod any_value {
    /// One scalar value.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// Text.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// Boolean.
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        /// Integer.
        #[prost(int64, tag = "3")]
        IntValue(i64),
        /// Floating point.
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }
}

fn kv(key: &str, v: AttrValue) -> KeyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// Encodes spans as one `ExportTraceServiceRequest`.
pub fn encode(resource: &[KeyValue], spans: Vec<SpanData>) -> Vec<u8> {
    let spans = spans
        .into_iter()
        .map(|s| Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            trace_state: s.trace_state.unwrap_or_default(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name,
            kind: match s.kind {
                SpanKind::Internal => 1,
                SpanKind::Server => 2,
                SpanKind::Client => 3,
            },
            start_time_unix_nano: s.start_unix_ns,
            end_time_unix_nano: s.end_unix_ns,
            attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
            status: Some(match s.error {
                Some(message) => Status { message, code: 2 },
                None => Status {
                    message: String::new(),
                    code: 0,
                },
            }),
            flags: u32::from(s.sampled),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.to_vec(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "portcullis".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

/// Checks the endpoint, CA and headers of `doc` without starting anything.
pub fn check(doc: &TracingDoc, base: &std::path::Path) -> Result<(), String> {
    Target::new(doc, base).map(|_| ())
}

/// Spans waiting for the export thread, shared with the request path.
#[derive(Debug, Default)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    /// Spans pushed and not yet taken (checked without the lock).
    queued: AtomicUsize,
    /// Wakes the export thread before its tick: a full batch, or the end.
    wake: Notify,
    /// Set when the exporter is dropped: the thread sends what is left and ends.
    closed: AtomicBool,
}

/// The request path's end of the export queue.
#[derive(Debug)]
pub struct Exporter {
    queue: Arc<Queue>,
    capacity: usize,
    batch: usize,
    metrics: Arc<super::metrics::Metrics>,
}

impl Exporter {
    /// Starts the export thread for `doc`. It ends (after a last flush)
    /// when the exporter is dropped, which happens when no snapshot uses
    /// these settings any more.
    pub fn start(
        doc: &TracingDoc,
        base: &std::path::Path,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Result<Exporter, String> {
        let target = Target::new(doc, base)?;
        let mut resource = vec![kv("service.name", AttrValue::Str(doc.service_name.clone()))];
        resource.extend(
            doc.resource
                .iter()
                .map(|(k, v)| kv(k, AttrValue::Str(v.clone()))),
        );
        let queue = Arc::new(Queue::default());
        let job = Job {
            queue: queue.clone(),
            target,
            resource,
            batch: doc.batch_size,
            every: doc.export_interval.0,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("portcullis-otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(job.run()),
                    Err(e) => tracing::error!(error = %e, "cannot start the trace exporter"),
                }
            })
            .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
        Ok(Exporter {
            queue,
            capacity: doc.queue_size,
            batch: doc.batch_size,
            metrics,
        })
    }

    /// Queues one request's spans, or drops them (counted) when the queue is
    /// full. The export thread is woken only when a batch fills up; other
    /// spans wait for its next tick. Waking it for every sampled request
    /// cost the worker a context switch each time (about 1% of CPU at 1%
    /// sampling).
    pub fn push(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let q = &*self.queue;
        let before = q.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.capacity {
            q.queued.fetch_sub(n, Ordering::Relaxed);
            self.metrics
                .spans_dropped
                .get_or_create(&[("reason", "queue_full".into())])
                .inc_by(n as u64);
            return;
        }
        q.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(spans);
        if before < self.batch && before + n >= self.batch {
            q.wake.notify_one();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.wake.notify_one();
    }
}

/// Where and how batches are sent.
struct Target {
    endpoint: Endpoint,
    protocol: OtlpProtocol,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    fn new(doc: &TracingDoc, base: &std::path::Path) -> Result<Target, String> {
        let uri: http::Uri = doc
            .endpoint
            .parse()
            .map_err(|_| format!("invalid endpoint `{}`", doc.endpoint))?;
        let given = uri.path().trim_end_matches('/');
        let path = match doc.protocol {
            OtlpProtocol::Http if given.is_empty() => "/v1/traces".to_string(),
            OtlpProtocol::Http => given.to_string(),
            OtlpProtocol::Grpc => {
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export".to_string()
            }
        };
        let url = format!(
            "{}://{}{path}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let ca = doc.ca.as_deref();
        let endpoint = match doc.protocol {
            OtlpProtocol::Http => Endpoint::new(&url, ca, base, doc.timeout.0)?,
            OtlpProtocol::Grpc => Endpoint::new_http2(&url, ca, base, doc.timeout.0)?,
        };
        let mut headers = Vec::new();
        for (k, v) in &doc.headers {
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("invalid value for `{k}`"))?;
            headers.push((name, value));
        }
        Ok(Target {
            endpoint,
            protocol: doc.protocol,
            path,
            headers,
        })
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match self.protocol {
            OtlpProtocol::Http => {
                let mut headers = self.headers.clone();
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                ));
                self.endpoint
                    .call(http::Method::POST, &headers, body.into())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            OtlpProtocol::Grpc => self
                .endpoint
                .grpc_unary(&self.path, &self.headers, &body)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

struct Job {
    queue: Arc<Queue>,
    target: Target,
    resource: Vec<KeyValue>,
    batch: usize,
    every: Duration,
    metrics: Arc<super::metrics::Metrics>,
}

impl Job {
    async fn run(self) {
        let mut pending: Vec<SpanData> = Vec::new();
        // The first tick one interval from now, not at once: this thread may
        // start after the first requests, and an immediate tick would send
        // their spans early (and, in a loaded test run, look like a wake-up
        // that should not have happened).
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warning: Option<tokio::time::Instant> = None;
        loop {
            // A tick, a full batch or the end: everything queued goes.
            tokio::select! {
                () = self.queue.wake.notified() => {}
                _ = tick.tick() => {}
            }
            // Read before taking: spans pushed before the close are taken below.
            let closed = self.queue.closed.load(Ordering::Acquire);
            {
                let mut spans = self.queue.spans.lock().unwrap_or_else(|e| e.into_inner());
                self.queue.queued.fetch_sub(spans.len(), Ordering::Relaxed);
                pending.append(&mut spans);
            }
            while !pending.is_empty() {
                let n = pending.len().min(self.batch);
                let spans: Vec<SpanData> = pending.drain(..n).collect();
                let body = encode(&self.resource, spans);
                match self.target.send(body).await {
                    Ok(()) => {
                        self.metrics.spans_exported.inc_by(n as u64);
                    }
                    Err(e) => {
                        self.metrics
                            .spans_dropped
                            .get_or_create(&[("reason", "export_failed".into())])
                            .inc_by(n as u64);
                        // One warning per minute at most: a collector that is
                        // down would otherwise flood the log.
                        let now = tokio::time::Instant::now();
                        if last_warning.is_none_or(|t| now - t > Duration::from_secs(60)) {
                            last_warning = Some(now);
                            tracing::warn!(collector = %self.target.endpoint.url(), error = %e, spans = n, "trace export failed; spans dropped");
                        }
                    }
                }
            }
            if closed {
                return;
            }
        }
    }
}
