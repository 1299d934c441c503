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
    /// The listener, route, upstream and target names need no JSON
    /// escaping: checked once per snapshot (see [`is_plain`]) instead of
    /// on every line.
    pub names_plain: bool,
}

/// Declares the fields once, in the order of [`ACCESS_LOG_FIELDS`] (a test
/// holds the two together): the `Field` enum, their names, and
/// `write_all`, which writes every field with its key as a constant. That
/// is the default format; with constant keys and no per-field dispatch it
/// takes about a third fewer instructions than the general loop.
macro_rules! fields {
    ($($field:ident = $name:literal),+ $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Field {
            $($field),+
        }

        /// Every field, with its name.
        const FIELDS: &[(Field, &str)] = &[$((Field::$field, $name)),+];

        /// Writes every field in order; the first key's comma becomes `{`.
        fn write_all(out: &mut Line<'_>, e: &Entry<'_>, query: Option<&str>, clock: &mut TimeCache) {
            let first = out.at;
            $(
                out.extend_from_slice(concat!(",\"", $name, "\":").as_bytes());
                push_field(out, Field::$field, e, query, clock);
            )+
            out.buf[first] = b'{';
        }
    };
}

fields! {
    Time = "time",
    RequestId = "request_id",
    ClientIp = "client_ip",
    Listener = "listener",
    Protocol = "protocol",
    Method = "method",
    Host = "host",
    Path = "path",
    Query = "query",
    Route = "route",
    Upstream = "upstream",
    UpstreamTarget = "upstream_target",
    Status = "status",
    Error = "error",
    RequestBytes = "request_bytes",
    ResponseBytes = "response_bytes",
    DurationMs = "duration_ms",
    UpstreamMs = "upstream_ms",
    GatewayMs = "gateway_ms",
    Consumer = "consumer",
    UserAgent = "user_agent",
    TlsVersion = "tls_version",
    TraceId = "trace_id",
    SpanId = "span_id",
}

/// How lines are formatted: the chosen fields with their keys already
/// rendered (`{"time":` for the first, `,"status":` for the others), the
/// header fields, and the query parameters whose values are redacted.
#[derive(Debug)]
pub struct Format {
    /// Every field, in the default order: written by `write_all`.
    all: bool,
    fields: Vec<(Field, Vec<u8>)>,
    headers: Vec<Vec<u8>>,
    redact: Vec<String>,
    /// The bytes a line takes besides its text (see [`Format::bound`]).
    fixed: usize,
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
        let all = names.iter().eq(FIELDS.iter().map(|(_, n)| n));
        let mut first = true;
        let mut key = |name: &str| {
            let mut k = Vec::with_capacity(name.len() + 4);
            k.push(if first { b'{' } else { b',' });
            first = false;
            // Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut k, name);
            k.push(b':');
            k
        };
        let fields: Vec<(Field, Vec<u8>)> = names
            .iter()
            .filter_map(|n| {
                let (field, _) = FIELDS.iter().find(|(_, k)| k == n)?;
                Some((*field, key(n)))
            })
            .collect();
        let headers: Vec<Vec<u8>> = headers
            .iter()
            .map(|h| key(&format!("header.{h}")))
            .collect();
        // Keys, `}\n`, and room for each value's fixed-width part (numbers,
        // times, addresses, IDs, quotes); text is counted per line.
        let fixed = fields
            .iter()
            .map(|(_, k)| k)
            .chain(&headers)
            .map(|k| k.len() + FIXED_WIDTH)
            .sum::<usize>()
            + 3;
        Format {
            all,
            fields,
            headers,
            redact: redact.iter().map(|k| k.to_ascii_lowercase()).collect(),
            fixed,
        }
    }

    /// The most bytes the line for `e` can take: the fixed part, and six
    /// bytes for each byte of text (`\u001f` is the longest escape).
    fn bound(&self, e: &Entry<'_>, query: Option<&str>) -> usize {
        let text = |s: Option<&[u8]>| s.map_or(0, <[u8]>::len);
        let value = |v: Option<&HeaderValue>| v.map_or(0, HeaderValue::len);
        let chars = e.request_id.len()
            + text(e.listener.map(str::as_bytes))
            + e.method.as_str().len()
            + value(e.host)
            + text(e.uri.map(|u| u.path().as_bytes()))
            + text(query.map(str::as_bytes))
            + text(e.route.map(|r| r.as_bytes()))
            + text(e.upstream.map(str::as_bytes))
            + text(e.upstream_target.map(str::as_bytes))
            + text(e.error.map(str::as_bytes))
            + text(e.consumer.map(str::as_bytes))
            + value(e.user_agent)
            + text(e.tls_version.map(str::as_bytes))
            + e.headers.iter().map(|v| value(v.as_ref())).sum::<usize>();
        self.fixed + 6 * chars
    }

    /// Appends the line for `e` to `lines`.
    pub fn write(&self, e: &Entry<'_>, lines: &mut Lines, clock: &mut TimeCache) {
        let redacted;
        let query = match e.uri.and_then(Uri::query) {
            Some(q) if !self.redact.is_empty() => {
                redacted = redact(q, &self.redact);
                Some(redacted.as_str())
            }
            q => q,
        };
        let out = &mut lines.line(self.bound(e, query));
        if self.all {
            write_all(out, e, query, clock);
        } else {
            for (field, key) in &self.fields {
                out.extend_from_slice(key);
                push_field(out, *field, e, query, clock);
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
        let n = out.at;
        lines.used += n;
    }
}

/// Writes the value of `field`. Inlined into `write_all` once per field,
/// where `field` is a constant and the match disappears.
#[inline(always)]
fn push_field(
    out: &mut Line<'_>,
    field: Field,
    e: &Entry<'_>,
    query: Option<&str>,
    clock: &mut TimeCache,
) {
    match field {
        Field::Time => clock.write(out, e.time_unix_ns),
        // Generated, or checked to be plain ASCII (`request_id::from_client`).
        Field::RequestId => push_plain(out, e.request_id.as_bytes()),
        Field::ClientIp => push_ip(out, e.client_ip),
        Field::Listener => push_name(out, e.listener, e.names_plain),
        Field::Protocol => push_plain(
            out,
            match e.protocol {
                Version::HTTP_09 => b"HTTP/0.9",
                Version::HTTP_10 => b"HTTP/1.0",
                Version::HTTP_2 => b"HTTP/2.0",
                Version::HTTP_3 => b"HTTP/3.0",
                _ => b"HTTP/1.1",
            },
        ),
        // A token: `http` refuses quotes, backslashes and controls.
        Field::Method => push_plain(out, e.method.as_str().as_bytes()),
        Field::Host => push_value(out, e.host),
        Field::Path => push_opt(out, e.uri.map(Uri::path)),
        Field::Query => push_opt(out, query),
        Field::Route => push_name(out, e.route.map(|r| &**r), e.names_plain),
        Field::Upstream => push_name(out, e.upstream, e.names_plain),
        Field::UpstreamTarget => push_name(out, e.upstream_target, e.names_plain),
        Field::Status => push_int(out, u64::from(e.status)),
        // The gateway's own codes, like `upstream_timeout`.
        Field::Error => match e.error {
            Some(code) => push_plain(out, code.as_bytes()),
            None => out.extend_from_slice(b"null"),
        },
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
        Field::TlsVersion => match e.tls_version {
            Some(v) => push_plain(out, v.as_bytes()),
            None => out.extend_from_slice(b"null"),
        },
        Field::TraceId => push_hex(out, e.trace_id.as_ref().map(|t| &t[..])),
        Field::SpanId => push_hex(out, e.span_id.as_ref().map(|s| &s[..])),
    }
}

/// The most bytes any value takes besides its text: a time, an IPv6
/// address or a trace ID with quotes, a number, `null`.
const FIXED_WIDTH: usize = 48;

/// Formatted lines: a buffer kept zero-filled to its full length, whose
/// first `used` bytes hold lines. A line is written into the free part
/// through a [`Line`] cursor, after making room for its bound once, so
/// each piece of a line costs a bounds check instead of a capacity check
/// and a length update through the buffer (measured: about a sixth of the
/// formatting's instructions went to those).
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    used: usize,
}

impl Lines {
    /// The lines written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.used]
    }

    /// Forgets the lines; the buffer stays, filled.
    pub fn clear(&mut self) {
        self.used = 0;
    }

    /// The size of the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// A cursor over at least `room` free bytes.
    fn line(&mut self, room: usize) -> Line<'_> {
        if self.buf.len() - self.used < room {
            let len = (self.used + room).max(2 * self.buf.len()).max(16 * 1024);
            self.buf.resize(len, 0);
        }
        Line {
            buf: &mut self.buf[self.used..],
            at: 0,
        }
    }
}

/// One line being written into room made for it (see [`Lines`]).
struct Line<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Line<'_> {
    fn push(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    fn extend_from_slice(&mut self, s: &[u8]) {
        let end = self.at + s.len();
        self.buf[self.at..end].copy_from_slice(s);
        self.at = end;
    }
}

/// For the rare values written through `write!` or serde_json (escaped
/// text, IPv6 addresses); the line's bound leaves room for them.
impl std::io::Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = b.len().min(self.buf.len() - self.at);
        self.extend_from_slice(&b[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    let hit = |w: u64| {
        below(w, 0x20)
            || below(w ^ (ONES * 0x22), 1)
            || below(w ^ (ONES * 0x5c), 1)
            || (ascii && w & HIGH != 0)
    };
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        u64::from_le_bytes(w)
    };
    let half = |b: &[u8]| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let n = s.len();
    // Short strings (names, methods, codes) take one word, without a
    // loop over their bytes: loaded in overlapping pieces, the rest
    // padded with spaces, which never need escaping.
    const SPACES: u64 = ONES * 0x20;
    match n {
        0 => return false,
        1..=3 => {
            let w = u64::from(s[0]) | u64::from(s[n / 2]) << 8 | u64::from(s[n - 1]) << 16;
            return hit(w | SPACES << 24);
        }
        4..=7 => return hit(half(s) | half(&s[n - 4..]) << 32),
        _ => {}
    }
    let mut words = s.chunks_exact(8);
    if words.any(|w| hit(word(w))) {
        return true;
    }
    // The last eight bytes, overlapping ones already checked.
    n % 8 != 0 && hit(word(&s[n - 8..]))
}

/// A JSON string known to need no escaping (the gateway's own text).
fn push_plain(out: &mut Line<'_>, s: &[u8]) {
    debug_assert!(!needs_escape(s), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

/// A JSON string.
fn push_str(out: &mut Line<'_>, s: &str) {
    // Most values need no escaping: copy them as they are.
    if !needs_escape(s.as_bytes()) {
        push_plain(out, s.as_bytes());
        return;
    }
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether `s` can be written into a line without escaping.
pub fn is_plain(s: &str) -> bool {
    !needs_escape(s.as_bytes())
}

/// A configured name, unchecked when its snapshot found every name plain.
fn push_name(out: &mut Line<'_>, s: Option<&str>, plain: bool) {
    match s {
        Some(s) if plain => push_plain(out, s.as_bytes()),
        s => push_opt(out, s),
    }
}

fn push_opt(out: &mut Line<'_>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A header value as a JSON string; bytes that are not UTF-8 become U+FFFD.
fn push_value(out: &mut Line<'_>, v: Option<&HeaderValue>) {
    let Some(v) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    let b = v.as_bytes();
    // One pass decides for the common case: ASCII with nothing to escape.
    if !special(b, true) {
        push_plain(out, b);
        return;
    }
    push_str(out, &String::from_utf8_lossy(b));
}

fn push_int(out: &mut Line<'_>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (microsecond precision), like `0.985`.
fn push_ms(out: &mut Line<'_>, d: Duration) {
    // u64 arithmetic: a u128 division is a library call.
    let us = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add((u64::from(d.subsec_nanos()) + 500) / 1000);
    let (ms, frac) = (us / 1000, (us % 1000) as u16);
    // Most requests take under 10 ms: one digit, without itoa.
    if ms < 10 {
        out.push(b'0' + ms as u8);
    } else {
        push_int(out, ms);
    }
    out.push(b'.');
    push_digits3(out, frac);
}

fn push_digits3(out: &mut Line<'_>, n: u16) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

fn push_ip(out: &mut Line<'_>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Written by hand into one buffer: every line has an address.
            let mut text = [0u8; 17];
            text[0] = b'"';
            let mut n = 1;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    text[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    text[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                text[n] = b'0' + octet % 10;
                n += 1;
            }
            text[n] = b'"';
            out.extend_from_slice(&text[..=n]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "\"{v6}\"");
        }
    }
}

fn push_hex(out: &mut Line<'_>, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    let end = out.at + bytes.len() * 2;
    hex_into(&mut out.buf[out.at..end], bytes);
    out.at = end;
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
    fn write(&mut self, out: &mut Line<'_>, unix_ns: u64) {
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
mod tests;
