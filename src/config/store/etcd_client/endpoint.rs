//! etcd client URLs, checked once, and opening an HTTP/2 connection to
//! one: over TCP for `http://`, over TLS (ALPN `h2`) for `https://`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{EtcdError, KEEPALIVE};
use crate::upstream::tls::UpstreamTls;

/// One validated client URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Host for connecting (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Whether to speak TLS.
    pub tls: bool,
}

/// Checks one client URL; `tls`: whether TLS settings were given (an
/// `https://` URL needs them).
pub fn parse_endpoint(raw: &str, tls: bool) -> Result<Endpoint, EtcdError> {
    let bad = |reason: String| EtcdError::InvalidEndpoint {
        endpoint: raw.to_string(),
        reason,
    };
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|e| bad(format!("not a URL ({e})")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") if tls => true,
        Some("https") => return Err(bad("an https:// endpoint needs TLS settings".into())),
        Some(other) => return Err(bad(format!("scheme `{other}` is not http or https"))),
        None => return Err(bad("the scheme is missing".into())),
    };
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
    let scheme = if https { "https" } else { "http" };
    Ok(Endpoint {
        url: format!("{scheme}://{}", authority.as_str()),
        host: host.to_string(),
        port,
        tls: https,
    })
}

/// Where a connection's task records why the connection failed: the
/// endpoint's URL and the error with its causes.
pub type Ended = Arc<Mutex<Option<(String, String)>>>;

/// TCP connect, TLS for `https://` endpoints, and the HTTP/2 handshake;
/// the connection runs on its own task, which records in `ended` why it
/// failed.
pub async fn open_connection<B>(
    endpoint: &Endpoint,
    tls: Option<&UpstreamTls>,
    ping_timeout: Duration,
    ended: Ended,
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
    match tls.filter(|_| endpoint.tls) {
        Some(tls) => {
            let name = tls
                .name_for(&format!("{}:{}", endpoint.host, endpoint.port))
                .ok_or_else(|| format!("`{}` is not a name TLS can verify", endpoint.host))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            handshake(stream, &endpoint.url, ping_timeout, ended).await
        }
        None => handshake(tcp, &endpoint.url, ping_timeout, ended).await,
    }
}

async fn handshake<IO, B>(
    io: IO,
    url: &str,
    ping_timeout: Duration,
    ended: Ended,
) -> Result<(SendRequest<B>, JoinHandle<()>), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(ping_timeout.max(Duration::from_secs(1)))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let url = url.to_string();
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            let why = super::with_causes(&e);
            tracing::debug!(endpoint = %url, error = %why, "etcd connection ended");
            *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some((url, why));
        }
    });
    Ok((sender, task))
}
