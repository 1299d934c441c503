//! The request headers the pipeline reads, found in one pass over the
//! request's headers when it arrives. A lookup by name hashes the name (byte
//! by byte for names that are not standard, like `x-request-id` or
//! `traceparent`) and probes the table: 80 to 140 instructions each, and a
//! request was looked up five to nine times before it went upstream. The
//! pass costs a few instructions per header, and most requests carry few.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::headers::Census;

/// What one pass over a request's headers found; borrowed from the request
/// while it is still whole (before routing).
#[derive(Debug, Default)]
pub struct Arrival<'h> {
    /// The first `Host` value.
    pub host: Option<&'h HeaderValue>,
    /// Whether `Host` came more than once.
    pub more_hosts: bool,
    /// The first value of the configured request ID header.
    pub request_id: Option<&'h HeaderValue>,
    /// The first `Content-Type`.
    pub content_type: Option<&'h HeaderValue>,
    /// The first `User-Agent` (for the access log).
    pub user_agent: Option<&'h HeaderValue>,
    /// The first `traceparent` (W3C trace context).
    pub traceparent: Option<&'h HeaderValue>,
    /// The first `tracestate`.
    pub tracestate: Option<&'h HeaderValue>,
    /// `Transfer-Encoding`: absent, or whether it is a single plain `chunked`.
    pub transfer_encoding: Option<bool>,
    /// The headers the forward step removes or reads.
    pub census: Census,
}

impl<'h> Arrival<'h> {
    /// Looks at every header once; `request_id` is the configured request
    /// ID header's name.
    pub fn of(headers: &'h HeaderMap, request_id: &HeaderName) -> Arrival<'h> {
        let mut a = Arrival::default();
        let first = |slot: &mut Option<&'h HeaderValue>, v: &'h HeaderValue| {
            slot.get_or_insert(v);
        };
        for (k, v) in headers {
            // Before the names below: the configured name may be any header.
            if k == request_id {
                first(&mut a.request_id, v);
            }
            match k.as_str() {
                "host" => {
                    a.more_hosts |= a.host.is_some();
                    first(&mut a.host, v);
                }
                "content-type" => first(&mut a.content_type, v),
                "user-agent" => first(&mut a.user_agent, v),
                "traceparent" => first(&mut a.traceparent, v),
                "tracestate" => {
                    first(&mut a.tracestate, v);
                    a.census.note(k);
                }
                "transfer-encoding" => {
                    // More than one is refused like any other coding.
                    let plain = v.as_bytes().eq_ignore_ascii_case(b"chunked");
                    a.transfer_encoding = Some(a.transfer_encoding.is_none() && plain);
                    a.census.note(k);
                }
                _ => a.census.note(k),
            }
        }
        a
    }

    /// The part routing and the forward step use, owned, so the request can
    /// move on.
    pub fn seen(&self) -> Seen {
        Seen {
            host: self.host.cloned(),
            more_hosts: self.more_hosts,
            transfer_encoding: self.transfer_encoding,
            census: self.census,
        }
    }
}

/// The facts of [`Arrival`] that travel with the request past the point
/// where it is borrowed whole.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The first `Host` value.
    pub host: Option<HeaderValue>,
    /// Whether `Host` came more than once.
    pub more_hosts: bool,
    /// `Transfer-Encoding`: absent, or whether it is a single plain `chunked`.
    pub transfer_encoding: Option<bool>,
    /// The headers the forward step removes or reads, as they arrived.
    pub census: Census,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn one_pass_finds_what_lookups_would() {
        let rid = HeaderName::from_static("x-request-id");
        let h = map(&[
            ("Host", "example.com"),
            ("User-Agent", "curl/8"),
            ("Content-Type", "application/grpc"),
            ("X-Request-Id", "abc"),
            ("traceparent", "00-aa-bb-01"),
            ("tracestate", "k=v"),
            ("accept", "*/*"),
        ]);
        let a = Arrival::of(&h, &rid);
        assert_eq!(a.host, h.get(header::HOST));
        assert!(!a.more_hosts);
        assert_eq!(a.user_agent, h.get(header::USER_AGENT));
        assert_eq!(a.content_type, h.get(header::CONTENT_TYPE));
        assert_eq!(a.request_id, h.get(&rid));
        assert_eq!(
            a.traceparent.map(HeaderValue::as_bytes),
            Some(&b"00-aa-bb-01"[..])
        );
        assert_eq!(a.tracestate.map(HeaderValue::as_bytes), Some(&b"k=v"[..]));
        assert_eq!(a.transfer_encoding, None);
        assert!(a.census.tracestate && !a.census.hop_by_hop && !a.census.te);
    }

    #[test]
    fn first_values_win_and_repeats_are_noticed() {
        let rid = HeaderName::from_static("x-correlation-id");
        let h = map(&[
            ("host", "a.example"),
            ("host", "b.example"),
            ("x-correlation-id", "one"),
            ("x-correlation-id", "two"),
            ("x-request-id", "not the configured one"),
        ]);
        let a = Arrival::of(&h, &rid);
        assert_eq!(a.host.map(HeaderValue::as_bytes), Some(&b"a.example"[..]));
        assert!(a.more_hosts);
        assert_eq!(a.request_id.map(HeaderValue::as_bytes), Some(&b"one"[..]));
        // Any header can be the request ID header, and still count as itself.
        let a = Arrival::of(&h, &header::HOST);
        assert_eq!(
            a.request_id.map(HeaderValue::as_bytes),
            Some(&b"a.example"[..])
        );
        assert!(a.more_hosts);
        let h = map(&[("from", "me")]);
        let a = Arrival::of(&h, &header::FROM);
        assert_eq!(a.request_id.map(HeaderValue::as_bytes), Some(&b"me"[..]));
    }

    #[test]
    fn transfer_encoding_is_plain_only_when_single_chunked() {
        let rid = HeaderName::from_static("x-request-id");
        let te = |values: &[&str]| {
            let pairs: Vec<(&str, &str)> =
                values.iter().map(|v| ("transfer-encoding", *v)).collect();
            let h = map(&pairs);
            let a = Arrival::of(&h, &rid);
            assert!(a.census.hop_by_hop);
            a.transfer_encoding
        };
        assert_eq!(te(&["chunked"]), Some(true));
        assert_eq!(te(&["Chunked"]), Some(true));
        assert_eq!(te(&["gzip, chunked"]), Some(false));
        assert_eq!(te(&["chunked", "chunked"]), Some(false));
        assert_eq!(te(&["gzip"]), Some(false));
    }

    #[test]
    fn census_matches_a_census_of_the_same_headers() {
        let rid = HeaderName::from_static("x-request-id");
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "expect",
            "grpc-timeout",
            "tracestate",
            "accept",
        ] {
            let h = map(&[(name, "x")]);
            let (a, c) = (Arrival::of(&h, &rid).census, Census::of(&h));
            assert_eq!(
                (
                    a.hop_by_hop,
                    a.te,
                    a.expect,
                    a.grpc_timeout,
                    a.tracestate,
                    a.upgrade
                ),
                (
                    c.hop_by_hop,
                    c.te,
                    c.expect,
                    c.grpc_timeout,
                    c.tracestate,
                    c.upgrade
                ),
                "{name}"
            );
        }
    }
}
