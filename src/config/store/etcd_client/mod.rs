//! A small etcd v3 client: gRPC over cleartext HTTP/2 (`http://` client
//! URLs), with only what the configuration store needs — read one key,
//! compare-and-swap one key, and watch one key. The protobuf messages are
//! declared by hand (official field numbers from etcd's
//! `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto`) so building
//! needs no `protoc`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::routing::conditions::percent_decode;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
/// Largest gRPC message accepted from etcd.
const MAX_MESSAGE: usize = 64 << 20;
/// HTTP/2 ping interval on busy connections (etcd refuses pings under 5 s).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The etcd protobuf messages, with only the fields this client uses
/// (others are skipped when decoding, as protobuf allows).
mod pb;

/// One stored key's value and its modification revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The etcd revision of the key's last modification.
    pub mod_revision: i64,
}

/// The result of [`EtcdClient::put_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written; `revision` is the key's new `mod_revision`.
    Written {
        /// The etcd revision of the write.
        revision: i64,
    },
    /// The key's revision was not the expected one; nothing was written.
    Conflict {
        /// What the key holds now (`None`: it does not exist).
        current: Option<Stored>,
    },
}

/// A change of the watched key, delivered by [`Watch::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written.
    Put(Stored),
    /// The key was deleted at `revision`.
    Deleted {
        /// The etcd revision of the deletion.
        revision: i64,
    },
}

/// Everything that can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint given to [`EtcdClient::new`] is unusable.
    #[error("invalid etcd endpoint `{endpoint}`: {reason} (expected http://host:port, e.g. http://127.0.0.1:2379)")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No endpoint could be connected, or the connection was lost.
    #[error("etcd unreachable (tried {endpoints}): {reason}; check that etcd is running and listening on these client URLs")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What failed, per endpoint.
        reason: String,
    },
    /// etcd answered with a non-zero gRPC status.
    #[error("etcd answered gRPC status {code}: {message}{}", status_hint(*code))]
    Status {
        /// The gRPC status code.
        code: u32,
        /// The (decoded) `grpc-message`.
        message: String,
    },
    /// etcd did not answer within the configured timeout.
    #[error("etcd did not answer within the configured timeout; check the cluster's health and load, or raise the timeout")]
    Timeout,
    /// etcd's answer was not what the protocol says.
    #[error("unexpected answer from etcd: {0}; check that the endpoint is an etcd v3 client URL")]
    Protocol(String),
    /// The watch's start revision was compacted away.
    #[error("etcd compacted the history the watch needs (compact revision {revision}); read the key again and watch from its revision + 1")]
    Compacted {
        /// etcd's compaction revision.
        revision: i64,
    },
    /// etcd canceled the watch for another reason.
    #[error("etcd canceled the watch: {reason}")]
    WatchCanceled {
        /// etcd's `cancel_reason`.
        reason: String,
    },
}

fn status_hint(code: u32) -> &'static str {
    match code {
        7 | 16 => "; this client does not authenticate, so etcd auth must be disabled",
        14 => "; the member may have no leader (check cluster health)",
        8 => "; the value may exceed etcd's --max-request-bytes",
        _ => "",
    }
}

/// One validated client URL.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `http://host:port`.
    url: String,
    /// Host for connecting (IPv6 without brackets).
    host: String,
    port: u16,
}

fn parse_endpoint(raw: &str) -> Result<Endpoint, EtcdError> {
    let bad = |reason: String| EtcdError::InvalidEndpoint {
        endpoint: raw.to_string(),
        reason,
    };
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|e| bad(format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "TLS (https) is not supported; use an http:// URL".into()
            ))
        }
        Some(other) => return Err(bad(format!("scheme `{other}` is not http"))),
        None => return Err(bad("the scheme is missing".into())),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("the host is missing".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported".into()));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("the host is missing".into()));
    }
    let port = authority
        .port_u16()
        .ok_or_else(|| bad("the port is missing (etcd's client port is usually 2379)".into()))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query is not allowed".into()));
    }
    Ok(Endpoint {
        url: format!("http://{}", authority.as_str()),
        host: host.to_string(),
        port,
    })
}

/// A connection to one endpoint.
struct Connected<B> {
    sender: SendRequest<B>,
    endpoint: usize,
    task: JoinHandle<()>,
}

/// The cached connection for unary calls.
#[derive(Default)]
struct ConnState {
    /// Sender, endpoint index, generation.
    current: Option<(SendRequest<Full<Bytes>>, usize, u64)>,
    generation: u64,
    /// The endpoint connecting starts from (past one that hung).
    start: usize,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    timeout: Duration,
    conn: Mutex<ConnState>,
}

/// An etcd v3 client over the given endpoints; cheap to clone (clones share
/// one cached HTTP/2 connection for unary calls).
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoint_list())
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl EtcdClient {
    /// Creates a client; runs when the store is configured. Endpoints look
    /// like `"http://127.0.0.1:2379"` and are validated here (scheme http,
    /// host and port required). No connection is made until the first call;
    /// every call is bounded by `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<EtcdClient, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                timeout,
                conn: Mutex::new(ConnState::default()),
            }),
        })
    }

    /// Reads `key` (linearizable); `None` when it does not exist.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Stored>, EtcdError> {
        let request = pb::RangeRequest { key: key.to_vec() };
        let response: pb::RangeResponse = self.unary(RANGE, &request, true).await?;
        Ok(response.kvs.into_iter().next().map(stored))
    }

    /// Writes only if the key's mod_revision is still `expected` (0 = the
    /// key must not exist yet). One Txn: compare MOD == expected, on success
    /// put, on failure read the key to report what it holds now. After
    /// `Timeout`, or `Unreachable` for a request already sent, the write
    /// may or may not have happened: read the key to find out.
    pub async fn put_if(
        &self,
        key: &[u8],
        value: &[u8],
        expected: i64,
    ) -> Result<CasOutcome, EtcdError> {
        let response: pb::TxnResponse = self
            .unary(TXN, &cas_request(key, value, expected), false)
            .await?;
        if response.succeeded {
            let header = response
                .header
                .ok_or_else(|| EtcdError::Protocol("Txn answer without a header".into()))?;
            return Ok(CasOutcome::Written {
                revision: header.revision,
            });
        }
        let range = response
            .responses
            .into_iter()
            .next()
            .and_then(|op| op.response_range)
            .ok_or_else(|| EtcdError::Protocol("failed Txn without its range answer".into()))?;
        Ok(CasOutcome::Conflict {
            current: range.kvs.into_iter().next().map(stored),
        })
    }

    /// Opens a watch on exactly `key` starting at `start_revision` (events
    /// with revision >= it; 0 = from now) on its own connection. Opening,
    /// up to etcd confirming the watch, is bounded by the timeout; the
    /// stream itself is not (HTTP/2 pings detect a dead connection).
    pub async fn watch(&self, key: &[u8], start_revision: i64) -> Result<Watch, EtcdError> {
        let deadline = Instant::now() + self.inner.timeout;
        let mut used = None;
        let create = pb::WatchRequest {
            create_request: Some(pb::WatchCreateRequest {
                key: key.to_vec(),
                start_revision,
            }),
        };
        let open = async {
            let start = self.inner.conn.lock().await.start;
            let conn = self.connect::<ChannelBody>(deadline, start).await?;
            used = Some(conn.endpoint);
            let url = self.inner.endpoints[conn.endpoint].url.clone();
            let (requests, rx) = mpsc::channel(4);
            // Cannot fail: the channel is new and has room.
            let _ = requests.try_send(encode_frame(&create));
            let mut sender = conn.sender;
            let response = sender
                .send_request(grpc_request(&url, WATCH, ChannelBody(rx))?)
                .await
                .map_err(|e| unreachable(&url, format!("opening the watch failed: {e}")))?;
            let (parts, body) = response.into_parts();
            if let Some(status) = check_head(&parts, &url)? {
                status?;
                return Err(EtcdError::Protocol(
                    "watch answered without a stream".into(),
                ));
            }
            let mut watch = Watch {
                body,
                decoder: FrameDecoder::default(),
                pending: VecDeque::new(),
                url,
                _requests: requests,
                _sender: sender,
                connection: conn.task,
            };
            loop {
                let Some(response) = watch.read_response().await? else {
                    return Err(EtcdError::Protocol(
                        "the watch stream ended before etcd confirmed it".into(),
                    ));
                };
                let created = response.created;
                watch.absorb(response)?;
                if created {
                    return Ok(watch);
                }
            }
        };
        let result = timeout_at(deadline, open)
            .await
            .unwrap_or(Err(EtcdError::Timeout));
        self.after(&result, used).await;
        result
    }

    fn endpoint_list(&self) -> String {
        let urls: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.url.as_str())
            .collect();
        urls.join(", ")
    }

    /// One unary call on the cached connection, bounded by the timeout.
    /// A call that never left is retried once on a fresh connection; one
    /// lost in flight is retried only if `idempotent`. An endpoint that
    /// hangs or has no leader is skipped by the following calls.
    async fn unary<M: Message + Default>(
        &self,
        path: &str,
        request: &impl Message,
        idempotent: bool,
    ) -> Result<M, EtcdError> {
        let body = encode_frame(request);
        let deadline = Instant::now() + self.inner.timeout;
        let mut used = None;
        let call = async {
            let mut retried = false;
            loop {
                let (mut sender, endpoint, generation) = self.cached(deadline).await?;
                used = Some(endpoint);
                let url = &self.inner.endpoints[endpoint].url;
                let request = grpc_request(url, path, Full::new(body.clone()))?;
                match sender.try_send_request(request).await {
                    Ok(response) => return read_unary(response, url).await,
                    Err(mut err) => {
                        self.forget(generation).await;
                        let unsent = err.take_message().is_some();
                        tracing::debug!(endpoint = %url, error = %err.into_error(), unsent, "etcd request failed");
                        if !retried && (unsent || idempotent) {
                            retried = true;
                            continue;
                        }
                        return Err(unreachable(url, "the connection was lost while the request was in flight; whether it was applied is unknown".into()));
                    }
                }
            }
        };
        let result = timeout_at(deadline, call)
            .await
            .unwrap_or(Err(EtcdError::Timeout));
        self.after(&result, used).await;
        let bytes = result?;
        M::decode(bytes)
            .map_err(|e| EtcdError::Protocol(format!("cannot decode the {path} answer: {e}")))
    }

    /// The cached connection, reconnecting when there is none or it closed.
    async fn cached(
        &self,
        deadline: Instant,
    ) -> Result<(SendRequest<Full<Bytes>>, usize, u64), EtcdError> {
        let mut state = self.inner.conn.lock().await;
        if let Some((sender, endpoint, generation)) = &state.current {
            if !sender.is_closed() {
                return Ok((sender.clone(), *endpoint, *generation));
            }
        }
        let conn = self.connect(deadline, state.start).await?;
        state.generation += 1;
        let entry = (conn.sender, conn.endpoint, state.generation);
        state.current = Some(entry.clone());
        Ok(entry)
    }

    /// Drops the cached connection if it is still generation `generation`.
    async fn forget(&self, generation: u64) {
        let mut state = self.inner.conn.lock().await;
        if matches!(&state.current, Some((_, _, g)) if *g == generation) {
            state.current = None;
        }
    }

    /// After a call that timed out or found no leader at `endpoint`: later
    /// connections start from the next endpoint (a frozen or partitioned
    /// member still accepts TCP, so connecting alone would not skip it).
    async fn after<T>(&self, result: &Result<T, EtcdError>, endpoint: Option<usize>) {
        let (Err(EtcdError::Timeout | EtcdError::Status { code: 14, .. }), Some(endpoint)) =
            (result, endpoint)
        else {
            return;
        };
        let mut state = self.inner.conn.lock().await;
        state.start = (endpoint + 1) % self.inner.endpoints.len();
        if matches!(&state.current, Some((_, e, _)) if *e == endpoint) {
            state.current = None;
        }
    }

    /// Connects to the first endpoint that accepts, in order from `start`
    /// (wrapping); each attempt gets an equal share of the time left.
    async fn connect<B>(&self, deadline: Instant, start: usize) -> Result<Connected<B>, EtcdError>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let endpoints = &self.inner.endpoints;
        let mut failures = Vec::new();
        for tried in 0..endpoints.len() {
            let index = (start + tried) % endpoints.len();
            let endpoint = &endpoints[index];
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / (endpoints.len() - tried) as u32;
            let failure = match timeout(share, open_connection(endpoint, self.inner.timeout)).await
            {
                Ok(Ok((sender, task))) => {
                    return Ok(Connected {
                        sender,
                        endpoint: index,
                        task,
                    })
                }
                Ok(Err(reason)) => reason,
                Err(_) => format!("no connection within {share:?}"),
            };
            tracing::debug!(endpoint = %endpoint.url, reason = %failure, "etcd endpoint failed");
            failures.push(format!("{}: {failure}", endpoint.url));
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoint_list(),
            reason: failures.join("; "),
        })
    }
}

/// TCP connect and HTTP/2 handshake; the connection runs on its own task.
async fn open_connection<B>(
    endpoint: &Endpoint,
    ping_timeout: Duration,
) -> Result<(SendRequest<B>, JoinHandle<()>), String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(ping_timeout.max(Duration::from_secs(1)))
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let url = endpoint.url.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(endpoint = %url, error = %e, "etcd connection ended");
        }
    });
    Ok((sender, task))
}

fn unreachable(url: &str, reason: String) -> EtcdError {
    EtcdError::Unreachable {
        endpoints: url.to_string(),
        reason,
    }
}

fn stored(kv: pb::KeyValue) -> Stored {
    Stored {
        value: kv.value,
        mod_revision: kv.mod_revision,
    }
}

fn cas_request(key: &[u8], value: &[u8], expected: i64) -> pb::TxnRequest {
    let op = |request| pb::RequestOp {
        request: Some(request),
    };
    pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::CompareResult::Equal as i32,
            target: pb::CompareTarget::Mod as i32,
            key: key.to_vec(),
            target_union: Some(pb::TargetUnion::ModRevision(expected)),
        }],
        success: vec![op(pb::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
        }))],
        failure: vec![op(pb::Request::RequestRange(pb::RangeRequest {
            key: key.to_vec(),
        }))],
    }
}

fn grpc_request<B>(url: &str, path: &str, body: B) -> Result<Request<B>, EtcdError> {
    Request::post(format!("{url}{path}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .body(body)
        .map_err(|e| EtcdError::Protocol(format!("cannot build the request: {e}")))
}

/// A gRPC length-prefixed message: flag 0 (uncompressed), u32 BE length, bytes.
fn encode_frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(len + 5);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    // Cannot fail: the buffer has room for the whole message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Reassembles gRPC messages from body chunks cut anywhere.
#[derive(Default)]
struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, `None` until one is complete.
    fn next_message(&mut self) -> Result<Option<Bytes>, EtcdError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(EtcdError::Protocol(format!(
                "compressed gRPC message (flag {}) though no compression was offered",
                self.buf[0]
            )));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(EtcdError::Protocol(format!(
                "a {len}-byte message exceeds the {MAX_MESSAGE}-byte limit"
            )));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// The gRPC status in `headers`, if there is one.
fn grpc_status(headers: &HeaderMap) -> Option<Result<(), EtcdError>> {
    let raw = headers.get("grpc-status")?;
    let code = raw.to_str().ok().and_then(|s| s.trim().parse::<u32>().ok());
    Some(match code {
        Some(0) => Ok(()),
        Some(code) => Err(EtcdError::Status {
            code,
            // grpc-message is percent-encoded UTF-8.
            message: percent_decode(
                headers
                    .get("grpc-message")
                    .map_or(&[][..], |v| v.as_bytes()),
                false,
            ),
        }),
        None => Err(EtcdError::Protocol(format!(
            "unreadable grpc-status {raw:?}"
        ))),
    })
}

/// Checks the HTTP status and content type; returns the gRPC status when
/// the headers carry one (a trailers-only answer).
fn check_head(
    parts: &http::response::Parts,
    url: &str,
) -> Result<Option<Result<(), EtcdError>>, EtcdError> {
    if parts.status != StatusCode::OK {
        return Err(EtcdError::Protocol(format!(
            "HTTP status {} from {url}",
            parts.status
        )));
    }
    let content_type = parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
    if !content_type.is_some_and(|v| v.starts_with(b"application/grpc")) {
        return Err(EtcdError::Protocol(format!(
            "{url} did not answer with gRPC (content-type {content_type:?})"
        )));
    }
    Ok(grpc_status(&parts.headers))
}

async fn read_unary(response: Response<Incoming>, url: &str) -> Result<Bytes, EtcdError> {
    let (parts, body) = response.into_parts();
    let trailers_only = match check_head(&parts, url)? {
        Some(status) => status.map(|()| true)?,
        None => false,
    };
    let collected = Limited::new(body, MAX_MESSAGE + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                EtcdError::Protocol(format!("answer larger than {MAX_MESSAGE} bytes"))
            } else {
                unreachable(
                    url,
                    format!("the connection was lost while reading the answer: {e}"),
                )
            }
        })?;
    match collected.trailers().and_then(grpc_status) {
        Some(status) => status?,
        None if trailers_only => {}
        None => {
            return Err(EtcdError::Protocol(
                "the answer carried no grpc-status".into(),
            ))
        }
    }
    let mut decoder = FrameDecoder::default();
    decoder.push(&collected.to_bytes());
    let message = decoder
        .next_message()?
        .ok_or_else(|| EtcdError::Protocol("empty or truncated answer".into()))?;
    if !decoder.is_empty() {
        return Err(EtcdError::Protocol(
            "more than one message in a unary answer".into(),
        ));
    }
    Ok(message)
}

/// The request body of a watch: frames sent through the channel; it stays
/// open (the stream is not half-closed) while the sender lives.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// An open watch on one key, from [`EtcdClient::watch`]; its own HTTP/2
/// connection, closed when this is dropped.
pub struct Watch {
    body: Incoming,
    decoder: FrameDecoder,
    pending: VecDeque<WatchEvent>,
    url: String,
    _requests: mpsc::Sender<Bytes>,
    _sender: SendRequest<ChannelBody>,
    connection: JoinHandle<()>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.url)
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Watch {
    /// Next event, waiting as long as needed; `Ok(None)` when the server
    /// closed the stream; `Err` when the connection is lost
    /// ([`EtcdError::Unreachable`]) or the watch was canceled
    /// ([`EtcdError::Compacted`] when its start revision was compacted).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, EtcdError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match self.read_response().await? {
                Some(response) => self.absorb(response)?,
                None => return Ok(None),
            }
        }
    }

    /// Queues the response's events; progress and `created` answers carry none.
    fn absorb(&mut self, response: pb::WatchResponse) -> Result<(), EtcdError> {
        self.pending.extend(response_events(response)?);
        Ok(())
    }

    /// The next whole `WatchResponse`; `None` at the end of the stream.
    async fn read_response(&mut self) -> Result<Option<pb::WatchResponse>, EtcdError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return pb::WatchResponse::decode(message).map(Some).map_err(|e| {
                    EtcdError::Protocol(format!("cannot decode a watch answer: {e}"))
                });
            }
            let frame = match self.body.frame().await {
                None if self.decoder.is_empty() => return Ok(None),
                None => {
                    return Err(EtcdError::Protocol(
                        "the watch stream ended inside a message".into(),
                    ))
                }
                Some(Err(e)) => {
                    return Err(unreachable(
                        &self.url,
                        format!("the watch connection was lost: {e}"),
                    ))
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => self.decoder.push(&data),
                Err(frame) => {
                    if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                        status?;
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// The events of one `WatchResponse`, or why the watch ended.
fn response_events(response: pb::WatchResponse) -> Result<Vec<WatchEvent>, EtcdError> {
    if response.compact_revision > 0 {
        return Err(EtcdError::Compacted {
            revision: response.compact_revision,
        });
    }
    if response.canceled {
        let reason = match response.cancel_reason {
            r if r.is_empty() => "no reason given".to_string(),
            r => r,
        };
        return Err(EtcdError::WatchCanceled { reason });
    }
    response.events.into_iter().map(watch_event).collect()
}

fn watch_event(event: pb::Event) -> Result<WatchEvent, EtcdError> {
    let kv = event
        .kv
        .ok_or_else(|| EtcdError::Protocol("watch event without its key-value".into()))?;
    match pb::EventType::try_from(event.r#type) {
        Ok(pb::EventType::Put) => Ok(WatchEvent::Put(stored(kv))),
        Ok(pb::EventType::Delete) => Ok(WatchEvent::Deleted {
            revision: kv.mod_revision,
        }),
        Err(_) => Err(EtcdError::Protocol(format!(
            "unknown watch event type {}",
            event.r#type
        ))),
    }
}

#[cfg(test)]
mod tests;
