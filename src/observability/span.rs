//! W3C trace context (`traceparent`, `tracestate`) and the spans of one
//! request: parsed or started when the request arrives, carried upstream,
//! and handed to the exporter when the response ends.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};

use super::otlp::Exporter;
use crate::clock::Tick;

/// `traceparent` (W3C Trace Context), made once: parsing a name costs.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context).
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What a span measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the gateway (a plugin's call).
    Internal,
    /// The request as the gateway received it.
    Server,
    /// The call to the upstream.
    Client,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
}

/// A finished span, ready for export.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The parent span (absent for a trace's root).
    pub parent: Option<[u8; 8]>,
    /// The caller's `tracestate`, passed on unchanged.
    pub trace_state: Option<String>,
    /// Operation name.
    pub name: String,
    /// Server, client or internal.
    pub kind: SpanKind,
    /// Start, Unix nanoseconds.
    pub start_unix_ns: u64,
    /// End, Unix nanoseconds.
    pub end_unix_ns: u64,
    /// Attributes (OpenTelemetry semantic convention names).
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether the trace was sampled (exported spans of unsampled traces are errors).
    pub sampled: bool,
}

/// A span timed inside a request (a plugin's I/O, the upstream call); the
/// trace and parent are filled in when the request ends.
#[derive(Debug, Clone)]
pub struct ChildSpan {
    /// Operation name.
    pub name: &'static str,
    /// This span.
    pub span_id: [u8; 8],
    /// Server, client or internal.
    pub kind: SpanKind,
    /// Start, Unix nanoseconds.
    pub start_unix_ns: u64,
    /// End, Unix nanoseconds.
    pub end_unix_ns: u64,
    /// Attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The current time in Unix nanoseconds.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The Unix time of `at` (a moment just read from the monotonic clock), in
/// nanoseconds, without reading the wall clock again: derived from a pair
/// of readings this thread took at most a second earlier. Requests need
/// both clocks when they arrive; reading one instead of two saves a clock
/// read per request, and a step of the wall clock shows within a second.
pub fn unix_ns_at(at: Tick) -> u64 {
    ANCHOR.with(|anchor| {
        if let Some((then, ns)) = anchor.get() {
            let d = at.since(then);
            if at >= then && d < Duration::from_secs(1) {
                return ns + d.as_nanos() as u64;
            }
        }
        let ns = unix_ns();
        anchor.set(Some((at, ns)));
        ns
    })
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
    /// A monotonic instant and the Unix time read right after it (see [`unix_ns_at`]).
    static ANCHOR: Cell<Option<(Tick, u64)>> = const { Cell::new(None) };
}

/// A per-thread seed from the operating system's generator.
fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness: the time and thread still differ between threads.
        use std::hash::{BuildHasher, RandomState};
        return RandomState::new().hash_one((unix_ns(), std::thread::current().id()));
    }
    u64::from_le_bytes(b)
}

/// A random non-zero 64-bit number (splitmix64; IDs need uniqueness, not secrecy).
fn next_u64() -> u64 {
    RNG.with(|s| loop {
        let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if z != 0 {
            return z;
        }
    })
}

/// A new span ID.
pub fn new_span_id() -> [u8; 8] {
    next_u64().to_be_bytes()
}

fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

/// Writes `bytes` as lowercase hex into `out`, which must be twice as long
/// (trace and span IDs, request IDs: written in place, without allocating).
/// Every request writes 64 to 128 hex digits, so four bytes are converted
/// at a time in one word rather than a digit at a time.
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    let mut outs = out.chunks_exact_mut(8);
    let mut ins = bytes.chunks_exact(4);
    for (o, i) in (&mut outs).zip(&mut ins) {
        o.copy_from_slice(&hex4(u32::from_le_bytes([i[0], i[1], i[2], i[3]])).to_le_bytes());
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in outs
        .into_remainder()
        .chunks_exact_mut(2)
        .zip(ins.remainder())
    {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Four bytes (the first in the low bits) as eight lowercase hex digits
/// (the first in the low byte).
fn hex4(x: u32) -> u64 {
    const LOW: u64 = 0x000f_000f_000f_000f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Byte i moves to bits 16i..16i+8; its high nibble becomes digit 2i,
    // its low nibble digit 2i+1.
    let x = u64::from(x);
    let spread = (x & 0xffff) | (x & 0xffff_0000) << 16;
    let spread = (spread | spread << 8) & 0x00ff_00ff_00ff_00ff;
    let nibbles = (spread >> 4) & LOW | (spread & LOW) << 8;
    // Digits 10..15 carry into bit 4 when 6 is added: they become letters.
    let letters = ((nibbles + ONES * 6) >> 4) & ONES;
    nibbles + ONES * u64::from(b'0') + letters * u64::from(b'a' - b'0' - 10)
}

/// Parses a `traceparent` value per W3C Trace Context level 1: trace ID,
/// parent span ID and flags. `None` for anything malformed (uppercase hex,
/// all-zero IDs, version `ff`, a version-00 value with extra fields).
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = parse_hex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace = parse_hex::<16>(&v[3..35])?;
    let parent = parse_hex::<8>(&v[36..52])?;
    let flags = parse_hex::<1>(&v[53..55])?[0];
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags))
}

/// A request's place in a trace.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The trace (the caller's, or new).
    pub trace_id: [u8; 16],
    /// The gateway's server span for this request.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// Whether this trace is recorded.
    pub sampled: bool,
    /// The caller's `tracestate`, passed on unchanged (only with a valid parent).
    pub trace_state: Option<HeaderValue>,
}

impl TraceContext {
    /// Continues the caller's trace, or starts one (a malformed
    /// `traceparent` starts a new trace, as the spec requires). Takes the
    /// request's first `traceparent` and `tracestate` values.
    pub fn start(
        traceparent: Option<&HeaderValue>,
        tracestate: Option<&HeaderValue>,
        tracer: &Tracer,
    ) -> TraceContext {
        let incoming = traceparent.and_then(|v| parse_traceparent(v.as_bytes()));
        match incoming {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: new_span_id(),
                parent: Some(parent),
                sampled: flags & 1 == 1,
                trace_state: tracestate.filter(|v| v.len() <= 512).cloned(),
            },
            None => {
                let trace_id = new_trace_id();
                TraceContext {
                    sampled: tracer.sample(&trace_id),
                    trace_id,
                    span_id: new_span_id(),
                    parent: None,
                    trace_state: None,
                }
            }
        }
    }

    /// The `traceparent` that names `span` (the upstream call) as the parent.
    pub fn traceparent(&self, span: &[u8; 8]) -> HeaderValue {
        // Written into a stack buffer: this runs for every traced request.
        let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut v[3..35], &self.trace_id);
        hex_into(&mut v[36..52], span);
        v[54] = if self.sampled { b'1' } else { b'0' };
        crate::proxy::headers::shared_value(v)
    }
}

/// Per-configuration tracing: the sampler and the export queue.
#[derive(Debug)]
pub struct Tracer {
    /// New traces whose random low 64 bits fall under this are sampled.
    threshold: u64,
    always: bool,
    /// Export failed requests' spans even when not sampled.
    pub always_sample_errors: bool,
    /// The export queue.
    pub exporter: Exporter,
}

impl Tracer {
    /// A tracer sampling `ratio` of new traces.
    pub fn new(ratio: f64, always_sample_errors: bool, exporter: Exporter) -> Tracer {
        Tracer {
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
            always_sample_errors,
            exporter,
        }
    }

    /// The head sampling decision for a new trace, from its random bits
    /// (so every node decides the same for the same trace ID).
    pub fn sample(&self, trace_id: &[u8; 16]) -> bool {
        if self.always {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        u64::from_be_bytes(low) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        let mut out = vec![0; bytes.len() * 2];
        hex_into(&mut out, bytes);
        String::from_utf8(out).expect("hex digits")
    }

    #[test]
    fn traceparent_parses_per_w3c() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, f) = parse_traceparent(ok).expect("valid");
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&p), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        // A future version may append fields after a dash.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn unix_time_from_the_monotonic_clock_tracks_the_wall_clock() {
        let earlier = Tick::now();
        std::thread::sleep(Duration::from_millis(2));
        let first = Tick::now();
        let a = unix_ns_at(first);
        let wall = unix_ns();
        assert!(a <= wall && wall - a < 50_000_000, "{a} vs {wall}");
        // Later moments of the same second come from the anchor, in order.
        let later = first + Duration::from_millis(300);
        assert_eq!(unix_ns_at(later), a + 300_000_000);
        // An earlier moment, or one a second on, takes a new reading.
        let before = unix_ns_at(earlier);
        assert!(before >= a, "a new anchor reads the wall clock again");
    }

    #[test]
    fn hex_matches_the_formatter_for_every_length() {
        let bytes: Vec<u8> = (0..=255).rev().collect();
        for len in [0, 1, 3, 4, 5, 8, 16, 255, 256] {
            let expect: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex(&bytes[..len]), expect, "{len} bytes");
        }
        for b in 0..=255u8 {
            assert_eq!(hex(&[b, b, b, b]), format!("{b:02x}").repeat(4));
        }
    }

    #[test]
    fn ids_are_unique_and_non_zero() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
    }
}
