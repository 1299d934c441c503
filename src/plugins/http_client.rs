//! A small HTTP/1.1 client for plugins that call out: JWKS key sets and
//! OAuth2 token introspection. One connection per call (these calls are
//! rare and cached), HTTPS verified against the system roots or a given CA,
//! a whole-call timeout and a response size cap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

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
        let resp = self.send_request(method, pq, headers, body).await?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| FetchError::Io(e.to_string()))?;
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
            let resp = self
                .send_request(Method::POST, path, &headers, framed.into())
                .await?;
            if !resp.status().is_success() {
                return Err(FetchError::Status(resp.status()));
            }
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| FetchError::Io(e.to_string()))?;
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

    async fn send_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
        let io = |e: &dyn std::fmt::Display| FetchError::Io(e.to_string());
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| io(&e))?;
        let _ = tcp.set_nodelay(true);
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
        let req = req.body(Full::new(body)).map_err(|e| io(&e))?;
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| io(&e))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io(&e))?;
                send(stream, req, self.http2).await
            }
            None => send(tcp, req, self.http2).await,
        }
    }
}

async fn send<S>(
    stream: S,
    req: Request<Full<Bytes>>,
    http2: bool,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = |e: hyper::Error| FetchError::Io(e.to_string());
    if http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .map_err(io)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return sender.send_request(req).await.map_err(io);
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(io)
}
