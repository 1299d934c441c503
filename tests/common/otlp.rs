//! A real OTLP trace receiver for tests: OTLP/HTTP (`POST /v1/traces`,
//! protobuf) and OTLP/gRPC (`TraceService/Export` over HTTP/2). Messages are
//! decoded with definitions written here from the OpenTelemetry protos, not
//! with the gateway's own, so the wire format is checked independently.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::TcpListener;

#[derive(Clone, PartialEq, Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "10")]
    pub dropped_attributes_count: u32,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
    pub value: Option<Value>,
}

// The names mirror the proto's oneof fields.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
}

impl Span {
    /// An attribute's value as text (integers formatted).
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.attributes, key)
    }
}

/// An attribute's value as text.
pub fn attr(list: &[KeyValue], key: &str) -> Option<String> {
    let v = list.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
    })
}

/// What the receiver got: each export request with its resource attributes.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub spans: Vec<Span>,
    pub resources: Vec<Vec<KeyValue>>,
    pub requests: usize,
    /// TCP connections the exporter opened.
    pub connections: usize,
    pub content_types: Vec<String>,
    /// `x-collector-token` of each export (header or gRPC metadata).
    pub tokens: Vec<String>,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Received>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Waits until at least `n` spans arrived (up to 10 s) and returns them.
    pub async fn wait_spans(&self, n: usize) -> Vec<Span> {
        for _ in 0..200 {
            {
                let g = self.got.lock().expect("lock");
                if g.spans.len() >= n {
                    return g.spans.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let g = self.got.lock().expect("lock");
        panic!("expected {n} spans, got {}: {:#?}", g.spans.len(), g.spans);
    }

    /// A snapshot of everything received.
    pub fn received(&self) -> Received {
        self.got.lock().expect("lock").clone()
    }
}

fn record(
    got: &Mutex<Received>,
    req: ExportTraceServiceRequest,
    content_type: String,
    token: String,
) {
    let mut g = got.lock().expect("lock");
    g.requests += 1;
    g.content_types.push(content_type);
    g.tokens.push(token);
    for rs in req.resource_spans {
        g.resources
            .push(rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            g.spans.extend(ss.spans);
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(req: Request<Incoming>, got: Arc<Mutex<Received>>, grpc: bool) -> Response<Body> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let token = req
        .headers()
        .get("x-collector-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.expect("body").to_bytes();
    if grpc {
        assert_eq!(
            path,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        assert_eq!(body[0], 0, "uncompressed gRPC frame");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let msg = ExportTraceServiceRequest::decode(&body[5..5 + len]).expect("valid protobuf");
        record(&got, msg, content_type, token);
        // An empty ExportTraceServiceResponse, then the status in trailers.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        return Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(super::IterStream(frames.into_iter())).boxed())
            .expect("response");
    }
    if path != "/v1/traces" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::default().boxed())
            .expect("response");
    }
    let msg = ExportTraceServiceRequest::decode(body).expect("valid protobuf");
    record(&got, msg, content_type, token);
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::default().boxed())
        .expect("response")
}

/// Starts a receiver speaking OTLP/HTTP, or OTLP/gRPC when `grpc`.
pub async fn start(grpc: bool) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got: Arc<Mutex<Received>> = Arc::default();
    let g = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            g.lock().expect("lock").connections += 1;
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let g = g.clone();
                    async move { Ok::<_, Infallible>(handle(req, g, grpc).await) }
                });
                if grpc {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            });
        }
    });
    Receiver {
        addr,
        got,
        task: task.abort_handle(),
    }
}
