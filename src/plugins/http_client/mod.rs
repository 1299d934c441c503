//! A small HTTP client for what the gateway calls out to: JWKS key sets,
//! OAuth2 token introspection and the OTLP trace collector. HTTP/1.1 or
//! HTTP/2, HTTPS verified against the system roots or a given CA,
//! connections kept between calls (see [`connections`]), a whole-call
//! timeout and a response size cap.

mod connections;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Collected, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use connections::{Body, Connections, Sender};

/// The largest response body read (key sets and introspection answers are small).
const MAX_RESPONSE: usize = 1024 * 1024;

/// Why a call failed. Messages are for the gateway's log, not for clients.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be used.
    #[error("invalid URL `{0}`: use http:// or https:// with a host")]
    Url(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS or the exchange failed.
    #[error("{0}")]
    Io(String),
    /// The answer was not 2xx.
    #[error("answered with status {0}")]
    Status(StatusCode),
}

/// Where and how a plugin calls out.
#[derive(Debug, Clone)]
pub struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    /// Speak HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS).
    http2: bool,
    /// The whole call's time limit.
    pub timeout: Duration,
    /// Connections kept between calls, shared by this endpoint's clones.
    connections: Arc<Connections>,
}

impl Endpoint {
    /// Checks `url` and prepares TLS (system roots, or the PEM bundle `ca`
    /// relative to `base`).
    pub fn new(
        url: &str,
        ca: Option<&str>,
        base: &Path,
        timeout: Duration,
    ) -> Result<Endpoint, String> {
        Endpoint::build(url, ca, base, timeout, false)
    }

    /// Like [`Endpoint::new`], for an HTTP/2 (gRPC) server.
    pub fn new_http2(
        url: &str,
        ca: Option<&str>,
        base: &Path,
        timeout: Duration,
    ) -> Result<Endpoint, String> {
        Endpoint::build(url, ca, base, timeout, true)
    }

    fn build(
        url: &str,
        ca: Option<&str>,
        base: &Path,
        timeout: Duration,
        http2: bool,
    ) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| FetchError::Url(url.into()).to_string())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(FetchError::Url(url.into()).to_string()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| FetchError::Url(url.into()).to_string())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let doc = crate::config::UpstreamTlsDoc {
                ca: ca.map(str::to_string),
                server_name: None,
                client_certificate: None,
                insecure_skip_verify: false,
            };
            let built = crate::upstream::tls::build(url, &doc, base, http2)
                .map_err(|(_, msg)| format!("TLS settings: {msg}"))?;
            Some(built.config)
        } else {
            if ca.is_some() {
                return Err("`ca` is only used with an https:// URL".into());
            }
            None
        };
        Ok(Endpoint {
            uri,
            host,
            port,
            tls,
            http2,
            timeout,
            connections: Arc::default(),
        })
    }

    /// The URL, for logs.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// Sends one request and reads the whole answer (2xx only).
    pub async fn call(
        &self,
        method: Method,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Bytes, FetchError> {
        tokio::time::timeout(self.timeout, self.exchange(method, headers, body))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn exchange(
        &self,
        method: Method,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Bytes, FetchError> {
        let pq = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let (parts, body) = self.round_trip(method, pq, headers, body).await?;
        if !parts.status.is_success() {
            return Err(FetchError::Status(parts.status));
        }
        Ok(body.to_bytes())
    }

    /// Makes one unary gRPC call to `path` (like `/pkg.Service/Method`)
    /// with an encoded protobuf `message`; returns the reply message.
    /// A non-zero `grpc-status` is an error carrying its message.
    pub async fn grpc_unary(
        &self,
        path: &str,
        extra: &[(header::HeaderName, HeaderValue)],
        message: &[u8],
    ) -> Result<Bytes, FetchError> {
        let call = async {
            let mut framed = Vec::with_capacity(message.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(message);
            let mut headers = extra.to_vec();
            headers.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            ));
            headers.push((header::TE, HeaderValue::from_static("trailers")));
            let (parts, collected) = self
                .round_trip(Method::POST, path, &headers, framed.into())
                .await?;
            if !parts.status.is_success() {
                return Err(FetchError::Status(parts.status));
            }
            // A trailers-only answer carries the status in the headers.
            let trailers = collected.trailers().cloned().unwrap_or(parts.headers);
            let status = trailers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if status != "0" {
                let message = trailers
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                return Err(FetchError::Io(format!("gRPC status {status}: {message}")));
            }
            let data = collected.to_bytes();
            Ok(data.slice(5.min(data.len())..))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    /// Sends one request and reads its whole answer, on a kept connection
    /// when there is one; the connection is kept again once the answer is
    /// read. A kept connection that fails before any answer (the server
    /// closed it just as it was reused) is dropped and the request sent
    /// once more, on a new connection. The calls made here (key sets,
    /// introspection, span exports) are safe to repeat.
    async fn round_trip(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(http::response::Parts, Collected<Bytes>), FetchError> {
        let io = |e: &dyn std::fmt::Display| FetchError::Io(e.to_string());
        let mut reuse = true;
        loop {
            let kept = match reuse {
                true => self.connections.take(self.http2).await,
                false => None,
            };
            let reused = kept.is_some();
            let mut sender = match kept {
                Some(s) => s,
                None => self.connect().await?,
            };
            let req = self.request(method.clone(), path, headers, body.clone())?;
            let resp = match sender.send(req).await {
                Ok(resp) => resp,
                Err(_) if reused => {
                    if self.http2 {
                        self.connections.forget_http2();
                    }
                    reuse = false;
                    continue;
                }
                Err(e) => return Err(io(&e)),
            };
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| io(&e))?;
            self.connections.put(sender);
            return Ok((parts, collected));
        }
    }

    /// The request for `path` on this endpoint.
    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Request<Body>, FetchError> {
        let authority = self
            .uri
            .authority()
            .map_or(self.host.as_str(), |a| a.as_str());
        let mut req = Request::builder().method(method);
        if self.http2 {
            // HTTP/2 carries the authority in the URI (`:authority`).
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            req = req.uri(format!("{scheme}://{authority}{path}"));
        } else {
            req = req.uri(path).header(header::HOST, authority);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.body(Full::new(body))
            .map_err(|e| FetchError::Io(e.to_string()))
    }

    /// A new connection (TCP, then TLS for https://), its task spawned.
    async fn connect(&self) -> Result<Sender, FetchError> {
        let io = |e: &dyn std::fmt::Display| FetchError::Io(e.to_string());
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| io(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| io(&e))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io(&e))?;
                handshake(stream, self.http2).await
            }
            None => handshake(tcp, self.http2).await,
        }
    }
}

/// Starts HTTP/1.1 or HTTP/2 on `stream`; the connection runs in a task
/// of its own until its sender is dropped (or the server closes it).
async fn handshake<S>(stream: S, http2: bool) -> Result<Sender, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = |e: hyper::Error| FetchError::Io(e.to_string());
    if http2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .map_err(io)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return Ok(Sender::Http2(sender));
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::Http1(sender))
}

#[cfg(test)]
mod tests;
