//! Formatting one access log line: the configured fields of an [`Entry`],
//! as one JSON object and a newline. Runs on the request's worker when the
//! response is done, straight into that worker's line buffer, so it avoids
//! the formatting machinery (`write!`, floats) and any allocation for the
//! common fields.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::config::observability::ACCESS_LOG_FIELDS;
use crate::observability::span::hex_into;

/// What is known about a finished request, borrowed from the log phase for
/// as long as its line is being formatted.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Arrival, Unix nanoseconds.
    pub time_unix_ns: u64,
    /// The request ID.
    pub request_id: &'a HeaderValue,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The listener's name.
    pub listener: Option<&'a str>,
    /// HTTP version.
    pub protocol: Version,
    /// Method.
    pub method: &'a Method,
    /// Host, from the request target or `Host`.
    pub host: Option<&'a HeaderValue>,
    /// The request target as received.
    pub uri: Option<&'a Uri>,
    /// The matched route.
    pub route: Option<&'a Arc<str>>,
    /// The upstream's name.
    pub upstream: Option<&'a str>,
    /// The target that answered.
    pub upstream_target: Option<&'a str>,
    /// Response status.
    pub status: u16,
    /// The gateway's error code, when the gateway answered with an error.
    pub error: Option<&'static str>,
    /// Request body bytes received.
    pub request_bytes: u64,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Arrival to the end of the response.
    pub duration: Duration,
    /// Sending upstream to its response headers (retries included).
    pub upstream_duration: Option<Duration>,
    /// Arrival to the response headers, less the upstream's part.
    pub gateway_duration: Duration,
    /// The authenticated consumer.
    pub consumer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a HeaderValue>,
    /// `TLSv1.3` or `TLSv1.2` on TLS connections.
    pub tls_version: Option<&'static str>,
    /// The trace, when tracing is on.
    pub trace_id: Option<[u8; 16]>,
    /// The gateway's span.
    pub span_id: Option<[u8; 8]>,
    /// The configured request headers, in order.
    pub headers: &'a [Option<HeaderValue>],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    RequestId,
    ClientIp,
    Listener,
    Protocol,
    Method,
    Host,
    Path,
    Query,
    Route,
    Upstream,
    UpstreamTarget,
    Status,
    Error,
    RequestBytes,
    ResponseBytes,
    DurationMs,
    UpstreamMs,
    GatewayMs,
    Consumer,
    UserAgent,
    TlsVersion,
    TraceId,
    SpanId,
}

/// In the order of [`ACCESS_LOG_FIELDS`].
const FIELDS: [Field; 24] = [
    Field::Time,
    Field::RequestId,
    Field::ClientIp,
    Field::Listener,
    Field::Protocol,
    Field::Method,
    Field::Host,
    Field::Path,
    Field::Query,
    Field::Route,
    Field::Upstream,
    Field::UpstreamTarget,
    Field::Status,
    Field::Error,
    Field::RequestBytes,
    Field::ResponseBytes,
    Field::DurationMs,
    Field::UpstreamMs,
    Field::GatewayMs,
    Field::Consumer,
    Field::UserAgent,
    Field::TlsVersion,
    Field::TraceId,
    Field::SpanId,
];

/// How lines are formatted: the chosen fields with their keys already
/// rendered (`{"time":` for the first, `,"status":` for the others), the
/// header fields, and the query parameters whose values are redacted.
#[derive(Debug)]
pub struct Format {
    fields: Vec<(Field, Vec<u8>)>,
    headers: Vec<Vec<u8>>,
    redact: Vec<String>,
}

impl Format {
    /// The format for `fields` (all of them when `None`; unknown names were
    /// refused by validation and are skipped), the logged request `headers`
    /// and the redacted query parameters.
    pub fn new(fields: Option<&[String]>, headers: &[HeaderName], redact: &[String]) -> Format {
        let names: Vec<&str> = match fields {
            Some(f) => f.iter().map(String::as_str).collect(),
            None => ACCESS_LOG_FIELDS.to_vec(),
        };
        let mut first = true;
        let mut key = |name: &str| {
            let mut k = Vec::with_capacity(name.len() + 4);
            k.push(if first { b'{' } else { b',' });
            first = false;
            push_str(&mut k, name);
            k.push(b':');
            k
        };
        let fields = names
            .iter()
            .filter_map(|n| {
                let i = ACCESS_LOG_FIELDS.iter().position(|k| k == n)?;
                Some((FIELDS[i], key(n)))
            })
            .collect();
        Format {
            fields,
            headers: headers
                .iter()
                .map(|h| key(&format!("header.{h}")))
                .collect(),
            redact: redact.iter().map(|k| k.to_ascii_lowercase()).collect(),
        }
    }

    /// Appends the line for `e` to `out`.
    pub fn write(&self, e: &Entry<'_>, out: &mut Vec<u8>, clock: &mut TimeCache) {
        out.reserve(1024);
        for (field, key) in &self.fields {
            out.extend_from_slice(key);
            match field {
                Field::Time => clock.write(out, e.time_unix_ns),
                Field::RequestId => push_value(out, Some(e.request_id)),
                Field::ClientIp => push_ip(out, e.client_ip),
                Field::Listener => push_opt(out, e.listener),
                Field::Protocol => push_str(
                    out,
                    match e.protocol {
                        Version::HTTP_09 => "HTTP/0.9",
                        Version::HTTP_10 => "HTTP/1.0",
                        Version::HTTP_2 => "HTTP/2.0",
                        Version::HTTP_3 => "HTTP/3.0",
                        _ => "HTTP/1.1",
                    },
                ),
                Field::Method => push_str(out, e.method.as_str()),
                Field::Host => push_value(out, e.host),
                Field::Path => push_opt(out, e.uri.map(Uri::path)),
                Field::Query => match e.uri.and_then(Uri::query) {
                    Some(q) if self.redact.is_empty() => push_str(out, q),
                    Some(q) => push_str(out, &redact(q, &self.redact)),
                    None => out.extend_from_slice(b"null"),
                },
                Field::Route => push_opt(out, e.route.map(|r| &**r)),
                Field::Upstream => push_opt(out, e.upstream),
                Field::UpstreamTarget => push_opt(out, e.upstream_target),
                Field::Status => push_int(out, u64::from(e.status)),
                Field::Error => push_opt(out, e.error),
                Field::RequestBytes => push_int(out, e.request_bytes),
                Field::ResponseBytes => push_int(out, e.response_bytes),
                Field::DurationMs => push_ms(out, e.duration),
                Field::UpstreamMs => match e.upstream_duration {
                    Some(d) => push_ms(out, d),
                    None => out.extend_from_slice(b"null"),
                },
                Field::GatewayMs => push_ms(out, e.gateway_duration),
                Field::Consumer => push_opt(out, e.consumer),
                Field::UserAgent => push_value(out, e.user_agent),
                Field::TlsVersion => push_opt(out, e.tls_version),
                Field::TraceId => push_hex(out, e.trace_id.as_ref().map(|t| &t[..])),
                Field::SpanId => push_hex(out, e.span_id.as_ref().map(|s| &s[..])),
            }
        }
        for (key, value) in self.headers.iter().zip(e.headers) {
            out.extend_from_slice(key);
            push_value(out, value.as_ref());
        }
        if self.fields.is_empty() && self.headers.is_empty() {
            out.push(b'{');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Whether `s` holds a byte JSON must escape: a control character, `"` or
/// `\`. Checks eight bytes at a time, since every line passes its request
/// ID, host, path and user agent through here.
fn needs_escape(s: &[u8]) -> bool {
    special(s, false)
}

/// [`needs_escape`], or (with `ascii`) any byte above 0x7f: header values
/// may hold bytes that are not UTF-8, and plain ASCII can be copied as is.
fn special(s: &[u8], ascii: bool) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Exact (no false positives) for "some byte is below n", n <= 128.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let w = u64::from_le_bytes(b);
        if below(w, 0x20)
            || below(w ^ (ONES * 0x22), 1)
            || below(w ^ (ONES * 0x5c), 1)
            || (ascii && w & HIGH != 0)
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || (ascii && b > 0x7f))
}

/// A JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Most values need no escaping: copy them as they are.
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A header value as a JSON string; bytes that are not UTF-8 become U+FFFD.
fn push_value(out: &mut Vec<u8>, v: Option<&HeaderValue>) {
    let Some(v) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    let b = v.as_bytes();
    // One pass decides for the common case: ASCII with nothing to escape.
    if !special(b, true) {
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    push_str(out, &String::from_utf8_lossy(b));
}

fn push_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microsecond precision), like `0.985`.
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    // u64 arithmetic: a u128 division is a library call.
    let us = d.as_secs() * 1_000_000 + (u64::from(d.subsec_nanos()) + 500) / 1000;
    let (ms, frac) = (us / 1000, (us % 1000) as u16);
    push_int(out, ms);
    out.push(b'.');
    push_digits3(out, frac);
}

fn push_digits3(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(*octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

fn push_hex(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    let at = out.len();
    out.resize(at + bytes.len() * 2, 0);
    hex_into(&mut out[at..], bytes);
    out.push(b'"');
}

/// The formatted time, redone only when the second changes.
#[derive(Debug, Default)]
pub struct TimeCache {
    second: i64,
    text: Vec<u8>,
}

impl TimeCache {
    /// Writes `"2026-11-22T10:00:00.123Z"` for `unix_ns`.
    fn write(&mut self, out: &mut Vec<u8>, unix_ns: u64) {
        let second = (unix_ns / 1_000_000_000) as i64;
        if self.text.is_empty() || second != self.second {
            let ts = jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            self.text = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string().into_bytes();
            self.second = second;
        }
        out.push(b'"');
        out.extend_from_slice(&self.text);
        out.push(b'.');
        push_digits3(out, ((unix_ns / 1_000_000) % 1000) as u16);
        out.extend_from_slice(b"Z\"");
    }
}

/// The query with the values of sensitive parameters replaced.
fn redact(query: &str, names: &[String]) -> String {
    let mut out = String::with_capacity(query.len() + 8);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
        if names.iter().any(|n| n.eq_ignore_ascii_case(k)) {
            out.push_str(k);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_query_values_are_redacted() {
        let names = vec!["api_key".to_string(), "token".to_string()];
        assert_eq!(
            redact("a=1&API_KEY=s3cret&token&b=2", &names),
            "a=1&API_KEY=REDACTED&token=REDACTED&b=2"
        );
    }

    #[test]
    fn escaping_is_detected_at_every_position() {
        for len in 0..20 {
            let plain = "a".repeat(len);
            assert!(!needs_escape(plain.as_bytes()));
            assert!(!needs_escape("é€ü~\x7f".repeat(len).as_bytes()));
            assert!(special(format!("{plain}é").as_bytes(), true));
            assert!(!special(format!("{plain}\x7f").as_bytes(), true));
            for i in 0..len {
                for bad in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                    let mut s = plain.clone().into_bytes();
                    s[i] = bad;
                    assert!(needs_escape(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn numbers_durations_addresses_and_escapes_are_valid_json() {
        let rid = HeaderValue::from_static("abc");
        let ua = HeaderValue::from_bytes(b"caf\xe9 \"x\"").expect("obs-text is a valid value");
        let uri: Uri = "/p%22?token=t&x=1".parse().expect("uri");
        let headers = [None, Some(HeaderValue::from_static("acme"))];
        let route: Arc<str> = "r".into();
        let e = Entry {
            time_unix_ns: 1_700_000_000_123_456_789,
            request_id: &rid,
            client_ip: "10.0.0.255".parse().expect("ip"),
            listener: Some("main"),
            protocol: Version::HTTP_2,
            method: &Method::POST,
            host: None,
            uri: Some(&uri),
            route: Some(&route),
            upstream: None,
            upstream_target: Some("[::1]:80"),
            status: 502,
            error: Some("upstream_error"),
            request_bytes: 0,
            response_bytes: 18_446_744_073_709_551_615,
            duration: Duration::from_nanos(1_234_567_890),
            upstream_duration: Some(Duration::from_nanos(999_999)),
            gateway_duration: Duration::ZERO,
            consumer: None,
            user_agent: Some(&ua),
            tls_version: None,
            trace_id: Some([0xab; 16]),
            span_id: None,
            headers: &headers,
        };
        let names = [
            HeaderName::from_static("x-a"),
            HeaderName::from_static("x-b"),
        ];
        let format = Format::new(None, &names, &["token".into()]);
        let mut out = Vec::new();
        format.write(&e, &mut out, &mut TimeCache::default());
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["client_ip"], "10.0.0.255");
        assert_eq!(v["protocol"], "HTTP/2.0");
        assert_eq!(v["path"], "/p%22");
        assert_eq!(v["query"], "token=REDACTED&x=1");
        assert_eq!(v["status"], 502);
        assert_eq!(v["response_bytes"], u64::MAX);
        assert_eq!(v["duration_ms"].to_string(), "1234.568");
        assert_eq!(v["upstream_ms"].as_f64(), Some(1.0));
        assert_eq!(v["gateway_ms"].as_f64(), Some(0.0));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(r#""upstream_ms":1.000,"gateway_ms":0.000,"#),
            "{text}"
        );
        assert_eq!(v["user_agent"], "caf\u{fffd} \"x\"");
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], serde_json::Value::Null);
        assert_eq!(v["header.x-a"], serde_json::Value::Null);
        assert_eq!(v["header.x-b"], "acme");

        let v6 = Entry {
            client_ip: "2001:db8::1".parse().expect("ip"),
            ..e
        };
        let picked = Format::new(Some(&["client_ip".into(), "status".into()]), &[], &[]);
        out.clear();
        picked.write(&v6, &mut out, &mut TimeCache::default());
        assert_eq!(out, b"{\"client_ip\":\"2001:db8::1\",\"status\":502}\n");
    }
}
