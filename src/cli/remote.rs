//! A minimal Admin API client for the `config` commands: one HTTP/1.1
//! request per connection to `http://host:port`.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// An Admin API answer.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The `ETag` header, when sent.
    pub etag: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The error message of a JSON error body, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                let mut out = e.get("message")?.as_str()?.to_string();
                for f in e
                    .get("errors")
                    .and_then(|x| x.as_array())
                    .into_iter()
                    .flatten()
                {
                    out.push_str(&format!(
                        "\n  {}: {}",
                        f.get("path").and_then(|p| p.as_str()).unwrap_or(""),
                        f.get("message").and_then(|p| p.as_str()).unwrap_or("")
                    ));
                }
                Some(out)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// Sends one request to the admin listener at `base` (`http://host:port`).
pub async fn call(
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: Option<Vec<u8>>,
) -> Result<Answer, String> {
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("`{base}` is not a URL like http://127.0.0.1:9901: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{base}`: the config commands speak plain http:// to the admin listener"
        ));
    }
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot reach the admin listener at {base}: {e}; is the gateway running with `admin.address` set?"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("{host}:{port}"));
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let etag = resp
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer { status, etag, body })
}
