//! Header rules of a proxy: hop-by-hop headers stop here (RFC 9110 §7.6.1),
//! and the client's address, scheme and host travel upstream in
//! `X-Forwarded-*` and `Forwarded` (RFC 7239).

use bytes::BytesMut;
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

/// One name against the hop-by-hop list, by its text: a match on strings
/// compiles to a switch on the length and one comparison, where comparing
/// with each `HeaderName` in turn took nine.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
/// Runs on every proxied request and response. Most messages carry none, or
/// only `Connection: keep-alive` (or `close`), so one pass over the names
/// decides what to do.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names and values in the one pass: whether `Connection` names other
    // headers is known without looking it up again.
    let (mut found, mut only_plain_connection) = (false, true);
    for (k, v) in headers.iter().filter(|(k, _)| is_hop_by_hop(k)) {
        found = true;
        only_plain_connection &= k == header::CONNECTION
            && (v.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                || v.as_bytes().eq_ignore_ascii_case(b"close"));
    }
    if !found {
        return;
    }
    if only_plain_connection {
        headers.remove(header::CONNECTION);
        return;
    }
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

/// Which of the request headers the forward step reads or removes a request
/// carries, found in one pass over its names. Most requests carry none of
/// them, and a lookup by name costs a hash of the name and a probe (about
/// 60 to 200 instructions each), where the pass costs a few per header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Census {
    /// A hop-by-hop header (see [`strip_hop_by_hop`]).
    pub hop_by_hop: bool,
    /// `TE`.
    pub te: bool,
    /// `Expect`.
    pub expect: bool,
    /// `grpc-timeout`.
    pub grpc_timeout: bool,
    /// `tracestate`.
    pub tracestate: bool,
    /// `Upgrade` (a WebSocket handshake carries it).
    pub upgrade: bool,
}

impl Census {
    /// Looks at every name in `headers` once.
    pub fn of(headers: &HeaderMap) -> Census {
        let mut c = Census::default();
        for k in headers.keys() {
            c.note(k);
        }
        c
    }

    /// Counts one header name in (the pass of [`Census::of`], or of
    /// `arrival::Arrival::of`).
    pub fn note(&mut self, k: &HeaderName) {
        match k.as_str() {
            "te" => {
                self.te = true;
                self.hop_by_hop = true;
            }
            "expect" => self.expect = true,
            "grpc-timeout" => self.grpc_timeout = true,
            "tracestate" => self.tracestate = true,
            "upgrade" => {
                self.upgrade = true;
                self.hop_by_hop = true;
            }
            _ => self.hop_by_hop |= is_hop_by_hop(k),
        }
    }
}

/// A header value made from `bytes`, cheap to clone: its clones share one
/// allocation. A value built by copying a slice is backed by a `Vec`, and
/// its first clone allocates again to make it shareable; values the gateway
/// makes per request (request ID, `traceparent`) are cloned into the
/// upstream request, its replay copy and the log record.
///
/// # Panics
/// When `bytes` is not a valid header value; callers pass hex digits and
/// dashes.
pub fn shared_value<const N: usize>(bytes: [u8; N]) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(bytes))
        .expect("the gateway's own values are visible ASCII")
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Facts about the client connection that are forwarded upstream.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The immediate peer's IP, as a header value.
    pub peer: &'a HeaderValue,
    /// `for=<peer>;proto=<scheme>`, precomputed per connection.
    pub forwarded_for: &'a [u8],
    /// Whether the peer is a trusted proxy whose forwarding headers are kept and extended.
    pub trusted: bool,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The host the client asked for (`Host` or the absolute-form authority).
    pub host: Option<&'a HeaderValue>,
}

fn join(prev: &HeaderValue, next: &[u8]) -> Option<HeaderValue> {
    let mut v = BytesMut::with_capacity(prev.len() + 2 + next.len());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(b", ");
    v.extend_from_slice(next);
    HeaderValue::from_maybe_shared(v.freeze()).ok()
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded`. From an untrusted peer
/// any incoming values are replaced, so clients cannot spoof their address.
pub fn set_forwarded(headers: &mut HeaderMap, c: &ClientInfo<'_>) {
    // Looked up only for a trusted peer: from others they are replaced anyway.
    let trusted_prev = |h: &HeaderMap, name: &HeaderName| {
        if c.trusted {
            h.get(name).cloned()
        } else {
            None
        }
    };
    let xff =
        trusted_prev(headers, &X_FORWARDED_FOR).and_then(|prev| join(&prev, c.peer.as_bytes()));
    headers.insert(
        X_FORWARDED_FOR.clone(),
        xff.unwrap_or_else(|| c.peer.clone()),
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
    let mut elem = BytesMut::with_capacity(c.forwarded_for.len() + 40);
    elem.extend_from_slice(c.forwarded_for);
    if let Some(h) = c.host {
        elem.extend_from_slice(b";host=\"");
        elem.extend(h.as_bytes().iter().filter(|b| **b != b'"' && **b != b'\\'));
        elem.extend_from_slice(b"\"");
    }
    let fwd = match trusted_prev(headers, &header::FORWARDED) {
        Some(prev) => join(&prev, &elem),
        None => HeaderValue::from_maybe_shared(elem.freeze()).ok(),
    };
    if let Some(v) = fwd {
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
        // A lone hop-by-hop header other than `Connection` is removed too.
        let mut h = HeaderMap::new();
        h.insert(header::TE, "trailers".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // A plain `Connection` line does not hide a second one that names
        // a header (the pass judges every line, not the first).
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "keep-alive".parse().expect("value"));
        h.append(header::CONNECTION, "X-Secret".parse().expect("value"));
        h.insert("x-secret", "1".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn the_text_match_and_the_removal_list_name_the_same_headers() {
        // `is_hop_by_hop` spells the names out for speed; the removal list
        // holds them as `HeaderName`s. Neither may gain one the other lacks.
        let listed: Vec<HeaderName> = HOP_BY_HOP
            .into_iter()
            .chain([PROXY_CONNECTION.clone()])
            .collect();
        assert!(listed.iter().all(is_hop_by_hop));
        for name in [
            "connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            assert!(
                listed.iter().any(|h| h.as_str() == name),
                "{name} not removed"
            );
        }
        assert!(!is_hop_by_hop(&header::HOST));
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-connection")));
    }

    #[test]
    fn the_census_sees_each_header_the_forward_step_reads() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "a".parse().expect("value"));
        h.insert("x-other", "1".parse().expect("value"));
        let c = Census::of(&h);
        assert!(!(c.hop_by_hop || c.te || c.expect || c.grpc_timeout || c.tracestate || c.upgrade));
        for (name, check) in [
            (
                "te",
                (|c: Census| c.te && c.hop_by_hop) as fn(Census) -> bool,
            ),
            ("expect", |c| c.expect && !c.hop_by_hop),
            ("grpc-timeout", |c| c.grpc_timeout),
            ("tracestate", |c| c.tracestate),
            ("connection", |c| c.hop_by_hop),
            ("keep-alive", |c| c.hop_by_hop),
            ("proxy-connection", |c| c.hop_by_hop),
            ("transfer-encoding", |c| c.hop_by_hop),
            ("upgrade", |c| c.upgrade && c.hop_by_hop),
        ] {
            let mut h = h.clone();
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                "1".parse().expect("value"),
            );
            assert!(check(Census::of(&h)), "{name}");
        }
    }

    #[test]
    fn connection_naming_other_headers_is_not_the_plain_case() {
        // `Connection: keep-alive` alone is removed and nothing else.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        // A `Connection` that names a header takes it along.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "x-gone".parse().expect("value"));
        h.insert("x-gone", "1".parse().expect("value"));
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
        let peer = HeaderValue::from_static("10.0.0.1");
        let untrusted = ClientInfo {
            peer: &peer,
            forwarded_for: b"for=10.0.0.1;proto=http",
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

        let v6 = HeaderValue::from_static("::1");
        let trusted = ClientInfo {
            peer: &v6,
            forwarded_for: b"for=\"[::1]\";proto=http",
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
