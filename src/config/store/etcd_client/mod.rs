//! A small etcd v3 client: gRPC over HTTP/2, in cleartext (`http://`
//! client URLs) or over TLS (`https://`, with client certificates for
//! etcd's `--client-cert-auth`), with only what the configuration store needs — read one key,
//! compare-and-swap one key, and watch one key. The protobuf messages are
//! declared by hand (official field numbers from etcd's
//! `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto`) so building
//! needs no `protoc`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::routing::conditions::percent_decode;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use prost::Message;

use crate::upstream::tls::UpstreamTls;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};

const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const WATCH: &str = "/etcdserverpb.Watch/Watch";
const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
/// Largest gRPC message accepted from etcd.
const MAX_MESSAGE: usize = 64 << 20;
/// HTTP/2 ping interval on busy connections (etcd refuses pings under 5 s).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The etcd protobuf messages, with only the fields this client uses
/// (others are skipped when decoding, as protobuf allows).
mod pb;

/// Client URLs, and connecting to one.
mod endpoint;

/// The watch stream and its events.
mod watch;

/// User name and password authentication.
mod auth;

pub use auth::Credentials;
use auth::{token_refused, Token, TOKEN_HEADER};

use watch::ChannelBody;
pub use watch::Watch;

use endpoint::{open_connection, parse_endpoint, Endpoint};

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
    #[error("invalid etcd endpoint `{endpoint}`: {reason} (expected http://host:port or https://host:port, e.g. http://127.0.0.1:2379)")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No endpoint could be connected, or the connection was lost.
    #[error(
        "etcd unreachable (tried {endpoints}): {reason}; {}",
        unreachable_hint(endpoints, reason)
    )]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What failed, per endpoint.
        reason: String,
    },
    /// etcd answered with a non-zero gRPC status.
    #[error("etcd answered gRPC status {code}: {message}{}", status_hint(*code, message))]
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

fn unreachable_hint(endpoints: &str, reason: &str) -> &'static str {
    let closed = [
        "broken pipe",
        "connection reset",
        "connection closed",
        "alert",
    ];
    if reason.contains("TLS handshake failed") {
        "check `cluster.etcd.tls`: `ca` must hold the CA that signed etcd's certificate, and `server_name` (default: the endpoint's host) a name in it"
    } else if endpoints.contains("https://") && closed.iter().any(|c| reason.contains(c)) {
        "etcd closed the TLS connection after the handshake: when it runs with --client-cert-auth, set `cluster.etcd.tls.client_certificate` to a certificate signed by its --trusted-ca-file"
    } else {
        "check that etcd is running and listening on these client URLs"
    }
}

fn status_hint(code: u32, message: &str) -> &'static str {
    match code {
        3 if message.contains("user name is empty") => {
            "; etcd has authentication on: set `cluster.etcd.username` and `password`"
        }
        3 if message.contains("authentication failed") => {
            "; check `cluster.etcd.username` and `password`"
        }
        9 if message.contains("authentication is not enabled") => {
            "; etcd has authentication off: remove `cluster.etcd.username` and `password`"
        }
        7 => "; the etcd user needs read and write permission on the prefix's keys",
        16 => "; check `cluster.etcd.username` and `password`",
        14 => "; the member may have no leader (check cluster health)",
        8 => "; the value may exceed etcd's --max-request-bytes",
        _ => "",
    }
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
    /// Who to authenticate as, when etcd has authentication on.
    credentials: Option<Credentials>,
    /// The token from the last authentication.
    token: Token,
    /// Why the last connection that failed ended (its URL, the error): a
    /// call that finds its connection closed reports it, since hyper's
    /// own error then says only "connection closed" (etcd refusing a
    /// client certificate shows only here, after the TLS handshake).
    ended: Arc<std::sync::Mutex<Option<(String, String)>>>,
    /// TLS for `https://` endpoints.
    tls: Option<UpstreamTls>,
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
    /// like `"http://127.0.0.1:2379"` or `"https://etcd-1:2379"` and are
    /// validated here (scheme, host and port required); `https://` ones
    /// need `tls`. With `credentials`, calls authenticate first (etcd's
    /// user authentication). No connection is made until the first call; every call
    /// is bounded by `timeout`.
    pub fn new(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<UpstreamTls>,
        credentials: Option<Credentials>,
    ) -> Result<EtcdClient, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let endpoints = endpoints
            .iter()
            .map(|e| parse_endpoint(e, tls.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                credentials,
                token: Token::default(),
                ended: Arc::default(),
                tls,
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
            let mut reauthenticated = false;
            let (task, url, requests, sender, body) = loop {
                let token = self.token(deadline).await?;
                let start = self.inner.conn.lock().await.start;
                let conn = self.connect::<ChannelBody>(deadline, start).await?;
                used = Some(conn.endpoint);
                let url = self.inner.endpoints[conn.endpoint].url.clone();
                let (requests, rx) = mpsc::channel(4);
                // Cannot fail: the channel is new and has room.
                let _ = requests.try_send(encode_frame(&create));
                let mut sender = conn.sender;
                let request = grpc_request(&url, WATCH, ChannelBody(rx), token.as_ref())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| unreachable(&url, format!("opening the watch failed: {e}")))?;
                let (parts, body) = response.into_parts();
                match check_head(&parts, &url)? {
                    Some(Err(EtcdError::Status { code, message }))
                        if token_refused(code, &message) && !reauthenticated =>
                    {
                        self.forget_token(token.as_ref()).await;
                        reauthenticated = true;
                        continue;
                    }
                    Some(status) => {
                        status?;
                        return Err(EtcdError::Protocol(
                            "watch answered without a stream".into(),
                        ));
                    }
                    None => {}
                }
                break (conn.task, url, requests, sender, body);
            };
            let mut watch = Watch {
                body,
                decoder: FrameDecoder::default(),
                pending: VecDeque::new(),
                url,
                _requests: requests,
                _sender: sender,
                connection: task,
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
            let mut reauthenticated = false;
            loop {
                let token = self.token(deadline).await?;
                let (mut sender, endpoint, generation) = self.cached(deadline).await?;
                used = Some(endpoint);
                let url = &self.inner.endpoints[endpoint].url;
                let request = grpc_request(url, path, Full::new(body.clone()), token.as_ref())?;
                match sender.try_send_request(request).await {
                    Ok(response) => match read_unary(response, url).await {
                        Err(EtcdError::Status { code, message })
                            if token_refused(code, &message) && !reauthenticated =>
                        {
                            self.forget_token(token.as_ref()).await;
                            reauthenticated = true;
                            continue;
                        }
                        answer => return answer,
                    },
                    Err(mut err) => {
                        self.forget(generation).await;
                        let unsent = err.take_message().is_some();
                        let mut error = with_causes(&err.into_error());
                        if let Some(why) = self.why_ended(url).await {
                            error = format!("{error}: {why}");
                        }
                        tracing::debug!(endpoint = %url, %error, unsent, "etcd request failed");
                        if !retried && (unsent || idempotent) {
                            retried = true;
                            continue;
                        }
                        return Err(unreachable(url, format!("the connection was lost while the request was in flight ({error}); whether it was applied is unknown")));
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

    /// Why the connection to `url` ended, if it ended with an error; waits
    /// briefly for its task to say (it may still be finishing).
    async fn why_ended(&self, url: &str) -> Option<String> {
        for _ in 0..10 {
            {
                let mut ended = self.inner.ended.lock().unwrap_or_else(|e| e.into_inner());
                if ended.as_ref().is_some_and(|(u, _)| u == url) {
                    return ended.take().map(|(_, why)| why);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
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
            let opening = open_connection(
                endpoint,
                self.inner.tls.as_ref(),
                self.inner.timeout,
                self.inner.ended.clone(),
            );
            let failure = match timeout(share, opening).await {
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

/// `e` and the errors under it, like `connection error: received fatal
/// alert: CertificateRequired` (a TLS refusal shows only there).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

fn grpc_request<B>(
    url: &str,
    path: &str,
    body: B,
    token: Option<&HeaderValue>,
) -> Result<Request<B>, EtcdError> {
    let mut request = Request::post(format!("{url}{path}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers");
    if let Some(t) = token {
        request = request.header(TOKEN_HEADER, t);
    }
    request
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

#[cfg(test)]
mod tests;
