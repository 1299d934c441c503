//! Header rules of a proxy: hop-by-hop headers stop here (RFC 9110 §7.6.1),
//! and the client's address, scheme and host travel upstream in
//! `X-Forwarded-*` and `Forwarded` (RFC 7239).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(&PROXY_CONNECTION);
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Facts about the client connection that are forwarded upstream.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The immediate peer's address.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy whose forwarding headers are kept and extended.
    pub trusted: bool,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for (`Host` or the absolute-form authority).
    pub host: Option<&'a HeaderValue>,
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded`. From an untrusted peer
/// any incoming values are replaced, so clients cannot spoof their address.
pub fn set_forwarded(headers: &mut HeaderMap, c: &ClientInfo<'_>) {
    let peer = c.peer.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).filter(|_| c.trusted) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        None => None,
    };
    headers.insert(
        X_FORWARDED_FOR.clone(),
        xff.unwrap_or_else(|| {
            HeaderValue::from_str(&peer).expect("an IP address is a valid header value")
        }),
    );
    if !(c.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(c.proto));
    }
    if !(c.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match c.host {
            Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    let node = match c.peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(_) => format!("\"[{peer}]\""),
    };
    let mut elem = format!("for={node};proto={}", c.proto);
    if let Some(h) = c.host.and_then(|h| h.to_str().ok()) {
        elem.push_str(";host=\"");
        elem.push_str(&h.replace(['"', '\\'], ""));
        elem.push('"');
    }
    let fwd = match headers.get(header::FORWARDED).filter(|_| c.trusted) {
        Some(prev) => format!("{}, {elem}", prev.to_str().unwrap_or("")),
        None => elem,
    };
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert(header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret".parse().expect("value"),
        );
        h.insert("x-secret", "1".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert(header::TE, "trailers".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_replace_or_extend() {
        let host = HeaderValue::from_static("api.example.com");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().expect("value"));
        h.insert("x-forwarded-proto", "https".parse().expect("value"));
        let untrusted = ClientInfo {
            peer: "10.0.0.1".parse().expect("ip"),
            trusted: false,
            proto: "http",
            host: Some(&host),
        };
        set_forwarded(&mut h, &untrusted);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.1;proto=http;host=\"api.example.com\""
        );

        let trusted = ClientInfo {
            peer: "::1".parse().expect("ip"),
            trusted: true,
            ..untrusted
        };
        set_forwarded(&mut h, &trusted);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert!(h["forwarded"]
            .to_str()
            .expect("ascii")
            .ends_with(", for=\"[::1]\";proto=http;host=\"api.example.com\""));
    }
}
