//! What a plugin sees of a request during the access step, and the caller's
//! identity that authentication establishes for later phases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Request;
use ipnet::IpNet;

use super::consumers::{Consumer, Consumers};
use http::StatusCode;

use crate::proxy::body::{BodyError, ClientBody, GuardedBody};
use crate::proxy::errors::GatewayError;
use crate::proxy::pipeline::ConnInfo;
use crate::routing::PathPattern;

/// Who is calling, once an authentication plugin (or the anonymous
/// fallback) has said so.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The configured consumer, when the credential maps to one. A JWT or an
    /// introspected token may be valid without naming a known consumer.
    pub consumer: Option<Arc<Consumer>>,
    /// The consumer's name, or the token's subject when there is no consumer.
    pub subject: Arc<str>,
    /// Groups the token carries, besides the consumer's own.
    pub extra_groups: Vec<Arc<str>>,
    /// The plugin that authenticated the request (`key_auth`, `jwt`, …).
    pub method: &'static str,
    /// Set for the anonymous fallback consumer (no credential was presented).
    pub anonymous: bool,
}

impl Identity {
    /// An authenticated caller that maps to no configured consumer.
    pub fn subject_only(subject: &str, method: &'static str) -> Identity {
        Identity {
            consumer: None,
            subject: Arc::from(subject),
            extra_groups: Vec::new(),
            method,
            anonymous: false,
        }
    }

    /// Every group of the caller: the consumer's, then the token's.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<str>> {
        self.consumer
            .iter()
            .flat_map(|c| c.groups.iter())
            .chain(&self.extra_groups)
    }

    /// The identity of a known consumer.
    pub fn of(consumer: Arc<Consumer>, method: &'static str) -> Identity {
        Identity {
            subject: consumer.name.clone(),
            extra_groups: Vec::new(),
            consumer: Some(consumer),
            method,
            anonymous: false,
        }
    }
}

/// One request as the access plugins see it.
pub struct Access<'r> {
    /// The request; plugins may read and change its head (strip a credential,
    /// add a header for the upstream). Its body is not read here.
    pub req: &'r mut Request<ClientBody>,
    /// The client connection (peer address, verified client certificate).
    pub conn: &'r ConnInfo,
    /// The listener's trusted proxies, for the client address.
    pub trusted_proxies: &'r [IpNet],
    /// The matched route's name.
    pub route: &'r str,
    /// The snapshot's consumers and their credentials.
    pub consumers: &'r Consumers,
    /// Who is calling; set by the authentication phase.
    pub identity: Option<Identity>,
    /// The request body limit; `request_size_limit` lowers it.
    pub body_limit: u64,
    /// Longest pause within the request body (for plugins that read it).
    pub body_read_timeout: std::time::Duration,
    /// Headers added to whatever response the request gets (CORS); `Vary`
    /// is appended, the others replace what the upstream sent.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the client speaks gRPC (errors become gRPC statuses).
    pub grpc: bool,
    /// The matched route's path pattern, for path captures.
    pub matched: Option<&'r PathPattern>,
    /// Kept until the response is done (its body sent, failed or dropped):
    /// concurrency slots are released when these drop.
    pub holds: Vec<Hold>,
    /// Whether the request is traced; plugins that call out time their
    /// calls with [`Access::span_start`] and [`Access::span_end`].
    pub tracing: bool,
    /// Spans timed by plugins, exported with the request's trace.
    pub spans: Vec<crate::observability::span::ChildSpan>,
    client_ip: Option<IpAddr>,
}

/// Something held for the life of a request's response (a concurrency slot).
pub type Hold = Box<dyn std::any::Any + Send + Sync>;

impl<'r> Access<'r> {
    /// Starts the access step for one request.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        req: &'r mut Request<ClientBody>,
        conn: &'r ConnInfo,
        trusted_proxies: &'r [IpNet],
        route: &'r str,
        consumers: &'r Consumers,
        body_limit: u64,
        body_read_timeout: std::time::Duration,
        grpc: bool,
    ) -> Access<'r> {
        Access {
            req,
            conn,
            trusted_proxies,
            route,
            consumers,
            identity: None,
            body_limit,
            body_read_timeout,
            response_headers: Vec::new(),
            grpc,
            matched: None,
            holds: Vec::new(),
            tracing: false,
            spans: Vec::new(),
            client_ip: None,
        }
    }

    /// The client's address: the peer, or when the peer is a trusted proxy
    /// the first untrusted address in `X-Forwarded-For` from the right.
    pub fn client_ip(&mut self) -> IpAddr {
        if let Some(ip) = self.client_ip {
            return ip;
        }
        let ip = client_address(self.conn.peer, self.req.headers(), self.trusted_proxies);
        self.client_ip = Some(ip);
        ip
    }

    /// A path capture of the matched route, like `id` of `/users/{id}`.
    pub fn capture(&self, name: &str) -> Option<String> {
        let path = crate::routing::normalize::normalize_path(self.req.uri().path());
        let (caps, _) = self.matched?.captures(&path)?;
        caps.get(name).map(str::to_string)
    }

    /// Starts timing a call out (a span), when the request is traced.
    pub fn span_start(&self) -> Option<u64> {
        self.tracing.then(crate::observability::span::unix_ns)
    }

    /// Ends the span begun by [`Access::span_start`]: `name` like
    /// `oauth2_introspection`, with attributes and the failure, if any.
    pub fn span_end(
        &mut self,
        started: Option<u64>,
        name: &'static str,
        attributes: Vec<(&'static str, crate::observability::span::AttrValue)>,
        error: Option<String>,
    ) {
        let Some(start) = started else { return };
        self.spans.push(crate::observability::span::ChildSpan {
            name,
            span_id: crate::observability::span::new_span_id(),
            kind: crate::observability::span::SpanKind::Internal,
            start_unix_ns: start,
            end_unix_ns: crate::observability::span::unix_ns(),
            attributes,
            error,
        });
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.req.headers()
    }

    /// Reads the whole request body (within the body limit and read
    /// timeout) and keeps it, so it is still sent upstream. For plugins that
    /// must see all of it; everyone else streams.
    pub async fn read_body(&mut self) -> Result<bytes::Bytes, GatewayError> {
        use http_body_util::BodyExt;
        let taken = std::mem::replace(self.req.body_mut(), ClientBody::Buffered { data: None });
        let data = match taken {
            ClientBody::Buffered { data } => data.unwrap_or_default(),
            stream @ ClientBody::Stream { .. } => {
                // The body itself, so its bytes are counted as they arrive.
                let guarded = GuardedBody::new(
                    stream,
                    Some(self.body_limit),
                    Some(self.body_read_timeout),
                    None,
                );
                match guarded.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => {
                        return Err(match BodyError::find(e.as_ref()) {
                            Some(BodyError::TooLarge(limit)) => GatewayError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "body_too_large",
                                format!("the request body is larger than {limit} bytes"),
                            ),
                            Some(_) => GatewayError::new(
                                StatusCode::REQUEST_TIMEOUT,
                                "body_timeout",
                                "the request body stopped arriving",
                            ),
                            None => GatewayError::new(
                                StatusCode::BAD_REQUEST,
                                "body_unreadable",
                                "the request body could not be read",
                            ),
                        }
                        .closing())
                    }
                }
            }
        };
        *self.req.body_mut() = ClientBody::Buffered {
            data: Some(data.clone()),
        };
        Ok(data)
    }
}

/// The client address behind any trusted proxies (see [`Access::client_ip`]).
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer.ip();
    if !is_trusted(&client) {
        return client;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        // An unparsable entry ends the walk: what is left of it is unverifiable.
        let Some(ip) = parse_forwarded_ip(entry.trim()) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// Reads `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("value"));
        h
    }

    #[test]
    fn client_address_trusts_only_configured_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().expect("addr");
        let stranger: SocketAddr = "203.0.113.9:4000".parse().expect("addr");
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_address(stranger, &xff("1.1.1.1"), &trusted),
            stranger.ip()
        );
        // Through trusted hops, the first untrusted address from the right.
        assert_eq!(
            client_address(proxy, &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &trusted),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_address(proxy, &xff("[2001:db8::1]:443"), &trusted),
            "2001:db8::1".parse::<IpAddr>().expect("ip")
        );
        // Garbage stops the walk at the last verified hop.
        assert_eq!(
            client_address(proxy, &xff("1.1.1.1, garbage"), &trusted),
            proxy.ip()
        );
        assert_eq!(
            client_address(proxy, &HeaderMap::new(), &trusted),
            proxy.ip()
        );
    }
}
